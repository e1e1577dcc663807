"""What the engine can tell of other libraries' errors: transient or not, and a safe summary."""

from __future__ import annotations

from collections.abc import Iterator

from fsm.errors import CallbackError, FSMError
from fsm.ports import ConcurrencyError, RunClaimed

TRANSIENT_NAMES = frozenset({"OperationalError", "InterfaceError"})
"""PEP 249 classes for failures outside the program's control (a lost connection, a
terminated backend, a lock or serialization timeout): trying the same work again may pass.
SQLAlchemy's wrappers carry the same names, so no driver needs importing to tell."""

SUMMARY_LENGTH = 300


class TransientError(FSMError):
    """A failure worth trying again, raised by ports that are not DB-API (fakes, say)."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps: `.error` (CallbackError), `.orig` (DB-API), `__cause__`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "error", None)
        if not isinstance(inner, BaseException):
            inner = getattr(current, "orig", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__
        current = inner


def is_transient(error: BaseException) -> bool:
    """True when the error (or one it wraps) says the database failed, not the request.

    A lost connection, a terminated backend, "database is locked", a serialization failure,
    a commit whose acknowledgement was lost: the step rolled back (or committed, which the
    caller checks by reading again) and trying it again is safe and may pass.
    """
    chain = list(causes(error))
    if any(str(cause).startswith("no such ") for cause in chain):
        return False  # SQLite's OperationalError for a missing table or column: for good
    for cause in chain:
        if isinstance(cause, TransientError) or getattr(cause, "connection_invalidated", False):
            return True
        if any(klass.__name__ in TRANSIENT_NAMES for klass in type(cause).__mro__):
            return True
    return False


def is_retryable(error: BaseException) -> bool:
    """Transient, a version conflict (someone else wrote first) or a run another worker has
    claimed: reading what is stored and trying again (later) may pass."""
    return is_transient(error) or any(
        isinstance(c, ConcurrencyError | RunClaimed) for c in causes(error)
    )


def describe_error(error: BaseException) -> str:
    """The error's type and the first line of its message: no SQL, no bound parameters.

    Database errors print the statement and its parameters after the first line (and
    PostgreSQL's DETAIL line names key values); in a payments database those are customer
    data. What is stored or shown keeps the summary; the log at the place it happened keeps
    the whole error.
    """
    chain = list(causes(error))
    outer = next((e for e in chain if not isinstance(e, CallbackError)), error)
    innermost = chain[-1]
    name = type(outer).__name__
    if innermost is not outer:
        name = f"{name} ({type(innermost).__module__}.{type(innermost).__name__})"
    lines = str(innermost).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if first.startswith("(") and ")" in first:  # SQLAlchemy's "(driver.Error) message"
        first = first.split(")", 1)[1].strip()
    text = f"{name}: {first}" if first else name
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 3] + "..."
