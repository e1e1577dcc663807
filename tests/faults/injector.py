"""A fault injector for SQLAlchemy engines: counts statements and commits, breaks one on cue.

- `transient` (a statement or a commit): the driver's OperationalError, as a terminated
  backend raises it; nothing of it reaches the database, SQLAlchemy treats it as a disconnect
  and drops the connection, so the database rolls the open transaction back.
- `lost-ack` (a commit): the commit really happens, then the same error is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

Point = Literal["stmt", "commit"]
Kind = Literal["transient", "lost-ack"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: at the `number`-th statement or commit after arming, of the given kind."""

    point: Point
    number: int
    kind: Kind = "transient"

    def __post_init__(self) -> None:
        if self.point not in ("stmt", "commit"):
            raise ValueError(f"point must be 'stmt' or 'commit', got {self.point!r}")
        if self.kind not in ("transient", "lost-ack"):
            raise ValueError(f"kind must be 'transient' or 'lost-ack', got {self.kind!r}")
        if self.point == "stmt" and self.kind == "lost-ack":
            raise ValueError("a lost acknowledgement is a commit's fault; use point='commit'")
        if isinstance(self.number, bool) or not isinstance(self.number, int) or self.number < 1:
            raise ValueError(f"number must be a positive integer, got {self.number!r}")

    def __str__(self) -> str:
        return f"{self.point}-{self.number}-{self.kind}"


class FaultInjector:
    """Counts an engine's statements and commits; fails the one a `Fault` names, once.

    Numbers start at 1 after each arm()/reset() and count every statement the engine sends
    (savepoints and SQLite's BEGIN IMMEDIATE included; `statements` keeps their text) and
    every commit. `fired` says what was broken, None until then. One thread at a time.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.commits = 0
        self.fault: Fault | None = None
        self.fired: str | None = None
        self._raised: BaseException | None = None
        event.listen(engine, "before_cursor_execute", self._before_execute)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "handle_error", self._on_error)

    def reset(self) -> None:
        """Disarm and start counting from zero."""
        self.statements = []
        self.commits = 0
        self.fault = None
        self.fired = None
        self._raised = None

    def arm(self, fault: Fault) -> None:
        """Start counting from zero, and break the statement or commit `fault` names."""
        self.reset()
        self.fault = fault

    def detach(self) -> None:
        """Remove the listeners from the engine."""
        event.remove(self.engine, "before_cursor_execute", self._before_execute)
        event.remove(self.engine, "commit", self._on_commit)
        event.remove(self.engine, "handle_error", self._on_error)

    # -- the listeners --------------------------------------------------------------------

    def _due(self, point: Point, number: int) -> Fault | None:
        fault = self.fault
        if fault is None or fault.point != point or fault.number != number:
            return None
        self.fault = None  # once
        return fault

    def _driver_error(self, what: str) -> BaseException:
        driver = self.engine.dialect.loaded_dbapi
        error: BaseException = driver.OperationalError(
            f"injected fault: the connection was lost ({what})"
        )
        self._raised = error
        return error

    def _before_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        self.statements.append(statement)
        number = len(self.statements)
        if self._due("stmt", number) is None:
            return
        self.fired = f"statement {number}: {_short(statement)}"
        # Raised as the driver would: SQLAlchemy wraps it in sqlalchemy.exc.OperationalError,
        # and _on_error makes it a disconnect, so the connection is invalidated.
        raise self._driver_error(f"statement {number}")

    def _on_error(self, context: ExceptionContext) -> None:
        if self._raised is not None and context.original_exception is self._raised:
            context.is_disconnect = True

    def _on_commit(self, conn: Connection) -> None:
        self.commits += 1
        number = self.commits
        fault = self._due("commit", number)
        if fault is None:
            return
        if fault.kind == "lost-ack":
            # The database commits; the acknowledgement never arrives.
            conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        self.fired = f"commit {number} ({fault.kind})"
        error = self._driver_error(f"commit {number}, {fault.kind}")
        # The commit event runs outside SQLAlchemy's own error handling, so do what it does
        # for a disconnect: drop the connection (the database rolls back what is not
        # committed) and raise the wrapped error.
        conn.invalidate(error)
        raise DBAPIError.instance(
            "COMMIT",
            None,
            error,
            self.engine.dialect.loaded_dbapi.Error,
            connection_invalidated=True,
            dialect=self.engine.dialect,
        )


def _short(statement: str) -> str:
    line = " ".join(statement.split())
    return line if len(line) <= 80 else line[:79] + "…"
