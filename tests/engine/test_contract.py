"""The contract snippets of the engine issue, run exactly as written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from fsm import DefinitionError, Machine, State


@dataclass(frozen=True)
class Updated: ...


@dataclass(frozen=True)
class UserNotFound:
    user_id: int


class TestContract:
    """The two snippets every other part of the project relies on."""

    def test_ping_snippet(self) -> None:
        """The guarded ping machine runs to done and records its path."""
        ping = Machine(
            "ping",
            states=[State("idle", initial=True), State("busy"), State("done", final=True)],
            transitions=[
                ("idle", "start", "busy"),
                ("busy", "pause", "idle"),
                ("busy", "finish", "done", lambda run: run.context.get("ok", True)),
            ],
        )
        run = ping.start(context={"ok": True})
        run.send("start")
        run.send("finish")
        assert run.state == "done" and run.finished
        assert [(t.source, t.trigger, t.target) for t in run.history] == [
            ("idle", "start", "busy"),
            ("busy", "finish", "done"),
        ]

    def test_outcome_snippet(self) -> None:
        """An action's outcome type picks the row; dropping a row fails the definition."""

        def update_status(context: dict[str, Any]) -> Updated | UserNotFound:
            if context["user_id"] in context["users"]:
                return Updated()
            return UserNotFound(context["user_id"])

        states = [
            State("received", initial=True, action=update_status),
            State("updated", final=True),
            State("failed", final=True),
        ]
        update = Machine(
            "update",
            states=states,
            transitions=[
                ("received", Updated, "updated"),
                ("received", UserNotFound, "failed"),
            ],
        )
        run = update.start(context={"user_id": 7, "users": {1}})
        assert run.state == "failed"
        assert run.outcome == UserNotFound(7)
        assert update.start(context={"user_id": 1, "users": {1}}).state == "updated"

        with pytest.raises(DefinitionError) as caught:
            Machine(
                "update",
                states=[*states[:2], State("failed", final=True)],
                transitions=[("received", Updated, "updated")],
            )
        assert (
            "state 'received': action update_status can return UserNotFound "
            "but no row from 'received' handles it"
        ) in caught.value.problems
