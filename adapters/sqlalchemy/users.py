"""The user repository on SQLAlchemy: get, create, and a status update with a version check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.store import insert
from adapters.sqlalchemy.tables import STATUS_LENGTH, UserRow
from fsm.ports import ConcurrencyError, InvalidRecord, UserRecord


class SqlUserRepository:
    """Implements fsm.ports.UserRepository within a Session's current transaction."""

    def __init__(self, session: Session, *, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def get(self, user_id: int) -> UserRecord | None:
        checks.positive_int("user id", user_id)
        row = self._session.execute(
            select(UserRow).where(UserRow.id == user_id).execution_options(populate_existing=True)
        ).scalar_one_or_none()
        return None if row is None else _record(row)

    def create(self, user_id: int, status: str) -> UserRecord:
        checks.positive_int("user id", user_id)
        checks.text("status", status, STATUS_LENGTH)
        now = self._clock()
        row = UserRow(id=user_id, status=status, version=1, created_at=now, updated_at=now)
        try:
            insert(self._session, row)
        except IntegrityError as error:
            raise InvalidRecord(f"user {user_id} exists already") from error
        return _record(row)

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        checks.positive_int("user id", user_id)
        checks.text("status", status, STATUS_LENGTH)
        checks.positive_int("expected version", expected_version, 2**31 - 1)
        now = self._clock()
        result = self._session.execute(
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.version == expected_version)
            .values(status=status, version=expected_version + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            found = self._session.execute(
                select(UserRow.version).where(UserRow.id == user_id)
            ).scalar_one_or_none()
            raise ConcurrencyError("user", user_id, expected=expected_version, found=found)
        row = self._session.execute(
            select(UserRow).where(UserRow.id == user_id).execution_options(populate_existing=True)
        ).scalar_one()
        return _record(row)


def _record(row: UserRow) -> UserRecord:
    return UserRecord(
        id=row.id,
        status=row.status,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
