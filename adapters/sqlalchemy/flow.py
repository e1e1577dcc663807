"""What the reference flow asks of the database beyond the ports: per-key counts and reports."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from adapters.sqlalchemy.outbox import DEAD, PENDING, PUBLISHED, SqlOutbox
from adapters.sqlalchemy.tables import OutboxRow, RunRow
from adapters.sqlalchemy.uow import SqlUnitOfWork
from fsm.defaults import utc_now
from fsm.ports import InvalidRecord, LeftBehind


class KeyedSqlOutbox(SqlOutbox):
    """SqlOutbox plus the count of a key's pending messages (to keep per-key order)."""

    def __init__(self, session: Session, *, clock: Callable[[], datetime]) -> None:
        super().__init__(session, clock=clock)
        self._flow_session = session

    def pending_for_key(self, key: str) -> int:
        """How many messages of `key` are neither published nor dead."""
        count = self._flow_session.execute(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.key == key, OutboxRow.status == PENDING)
        ).scalar_one()
        return int(count)

    def hold(self, event_id: str, *, until: datetime) -> None:
        """Make a pending, unleased message unclaimable before `until`."""
        result = self._flow_session.execute(
            update(OutboxRow)
            .where(
                OutboxRow.event_id == event_id,
                OutboxRow.status == PENDING,
                OutboxRow.lease_owner.is_(None),
            )
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidRecord(f"outbox message {event_id!r} is not pending and unleased")


class FlowSqlUnitOfWork(SqlUnitOfWork):
    """SqlUnitOfWork whose outbox also answers `pending_for_key`."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(engine, clock=clock)
        self._flow_clock = clock

    @property
    def outbox(self) -> KeyedSqlOutbox:
        return KeyedSqlOutbox(self.session, clock=self._flow_clock)

    def left_behind(
        self, machine: str, *, limit: int, skip: Collection[str] = ()
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox event is published or dead."""
        rows = self.session.execute(
            select(
                RunRow.id,
                OutboxRow.event_id,
                OutboxRow.status,
                OutboxRow.attempts,
                OutboxRow.last_error,
            )
            .join(OutboxRow, OutboxRow.run_id == RunRow.id)
            .where(
                RunRow.machine == machine,
                RunRow.finished.is_(False),
                OutboxRow.status.in_((PUBLISHED, DEAD)),
                RunRow.id.not_in(list(skip)),
            )
            .order_by(RunRow.updated_at, RunRow.id)
            .limit(limit)
        )
        return [LeftBehind(*row) for row in rows]


def runs_by_state(session: Session, machine: str) -> dict[str, int]:
    """How many runs of `machine` are in each stored state label (fsm.persistence.state_label).

    Runs stored by older versions under an Enum state's name are counted under that name.
    """
    rows = session.execute(
        select(RunRow.state, func.count()).where(RunRow.machine == machine).group_by(RunRow.state)
    )
    return {state: int(count) for state, count in rows}
