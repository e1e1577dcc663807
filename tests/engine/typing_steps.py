"""Checked by mypy in test_typing: a collaborator that does not match the machine's steps
protocol is an error wherever a run is given it (lines marked `# mypy: error`)."""

from datetime import timedelta
from typing import Any, Protocol

from adapters.memory import InMemoryUnitOfWork
from fsm import Machine, PersistentMachine, State


class Steps(Protocol):
    def charge(self, context: dict[str, Any], key: str) -> bool: ...


class Gateway:
    def charge(self, context: dict[str, Any], key: str) -> bool:
        return True


class Wrong:
    def charge(self, context: dict[str, Any]) -> bool:  # the key is missing
        return True


payments: Machine[str, Steps] = Machine(
    "payments",
    steps=Steps,
    states=[
        State("charging", initial=True, action=Steps.charge, external=True),
        State("done", final=True),
    ],
    transitions=[("charging", bool, "done")],
)
payments.start(steps=Gateway())
payments.start(steps=Wrong())  # mypy: error
payments.bind(Wrong())  # mypy: error
PersistentMachine(payments, InMemoryUnitOfWork(), steps=Gateway(), lease=timedelta(seconds=5))
PersistentMachine(payments, InMemoryUnitOfWork(), steps=Wrong())  # mypy: error
