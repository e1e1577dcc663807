"""The machine the worker tests run: a reminder that expires, whose effect is a line in a file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from fsm import Machine, PersistentMachine, Run, State
from fsm.ports import UnitOfWork

EFFECTS = "FSM_TEST_EFFECTS"
"""The file each `note` appends its run's name to (one line per call)."""
SLOW_GUARD = "FSM_TEST_SLOW_GUARD"
"""Seconds the expire row's guard sleeps: holds a worker between its claim and the step."""
GUARD_MARK = "FSM_TEST_GUARD_MARK"
"""A file the expire row's guard creates before it sleeps: its process is inside the step."""
SLOW_NOTE = "FSM_TEST_SLOW_NOTE"
"""Seconds each note takes after writing its line: widens the window two workers resuming
one run would overlap in (the claim is what closes it)."""


@dataclass(frozen=True)
class Noted:
    """The expiry was written down."""


class ReminderSteps(Protocol):
    def note(self, context: dict[str, Any]) -> Noted:
        """Write the expiry down (outside the database: a line in a file)."""
        ...


def patient(run: Run[Any]) -> bool:
    """The guard of the expire row: sleeps $FSM_TEST_SLOW_GUARD seconds, then lets it fire."""
    if os.environ.get(GUARD_MARK):
        Path(os.environ[GUARD_MARK]).touch()
    time.sleep(float(os.environ.get(SLOW_GUARD) or 0))
    return True


reminder: Machine[str, ReminderSteps] = Machine(
    "reminder",
    steps=ReminderSteps,
    states=[
        State("waiting", initial=True, after=(timedelta(minutes=5), "expire")),
        State("expired", action=ReminderSteps.note),
        State("noted", final=True),
        State("paid", final=True),
    ],
    transitions=[
        ("waiting", "pay", "paid"),
        ("waiting", "expire", "expired", patient),
        ("expired", Noted, "noted"),
    ],
)


class FileSteps:
    """Appends the run's name to a file for each expiry noted."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def note(self, context: dict[str, Any]) -> Noted:
        with self.path.open("a") as file:
            file.write(f"{context['name']}\n")
        time.sleep(float(os.environ.get(SLOW_NOTE) or 0))
        return Noted()


class BrokenSteps:
    """Fails to note: leaves a run in `expired`, between two steps."""

    def note(self, context: dict[str, Any]) -> Noted:
        raise RuntimeError("the process stopped here")


def reminder_runs(uow: UnitOfWork, *, worker: str, lease: timedelta) -> PersistentMachine[str]:
    """The reminder's runs, noting into $FSM_TEST_EFFECTS (what `fsm worker` is given)."""
    steps = FileSteps(Path(os.environ[EFFECTS]))
    return PersistentMachine(reminder, uow, steps=steps, worker=worker, lease=lease)


def effects(path: Path) -> list[str]:
    """The names noted so far, in order."""
    return path.read_text().split() if path.exists() else []
