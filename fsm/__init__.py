"""Explicit finite-state machines for orchestrators: validated, run, drawn and tested."""

from fsm.definition import Action, Guard, Machine, Row, State
from fsm.errors import (
    CallbackError,
    DefinitionError,
    FSMError,
    GuardRejected,
    InvalidEvent,
    RestoreError,
    RunError,
    RunFinished,
    UnhandledOutcome,
)
from fsm.runtime import Listener, Run, Transition

__all__ = [
    "Action",
    "CallbackError",
    "DefinitionError",
    "FSMError",
    "Guard",
    "GuardRejected",
    "InvalidEvent",
    "Listener",
    "Machine",
    "RestoreError",
    "Row",
    "Run",
    "RunError",
    "RunFinished",
    "State",
    "Transition",
    "UnhandledOutcome",
]
