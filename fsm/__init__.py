"""Explicit finite-state machines for orchestrators: validated, run, drawn and tested."""

from fsm.codec import Codec, DecodeError, EncodeError
from fsm.definition import Action, Binding, Guard, Machine, Row, State
from fsm.errors import (
    AsyncRequired,
    BindError,
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
from fsm.hooks import StepCommitted, StepFailed, watch_steps
from fsm.persistence import (
    AsyncPersistentMachine,
    AsyncPersistentRun,
    PersistentMachine,
    PersistentRun,
)
from fsm.ports import ConcurrencyError, RunExists, RunNotFound
from fsm.runtime import AsyncListener, AsyncRun, Listener, Rollback, Run, Transition

__all__ = [
    "Action",
    "AsyncListener",
    "AsyncPersistentMachine",
    "AsyncPersistentRun",
    "AsyncRequired",
    "AsyncRun",
    "BindError",
    "Binding",
    "CallbackError",
    "Codec",
    "ConcurrencyError",
    "DecodeError",
    "DefinitionError",
    "EncodeError",
    "FSMError",
    "Guard",
    "GuardRejected",
    "InvalidEvent",
    "Listener",
    "Machine",
    "PersistentMachine",
    "PersistentRun",
    "RestoreError",
    "Rollback",
    "Row",
    "Run",
    "RunError",
    "RunExists",
    "RunFinished",
    "RunNotFound",
    "State",
    "StepCommitted",
    "StepFailed",
    "Transition",
    "UnhandledOutcome",
    "watch_steps",
]
