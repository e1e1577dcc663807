"""The tables, on one exposed MetaData that users' own Alembic migrations can include."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 128
NAME_LENGTH = 200
TOPIC_LENGTH = 249  # Kafka's own limit on topic names
KEY_LENGTH = 255
STATUS_LENGTH = 64

metadata = MetaData(
    # Named constraints let Alembic autogenerate stable migrations on every backend.
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL and on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}; give an aware one (UTC)")
        value = value.astimezone(UTC)
        # SQLite stores text and compares it as text: one zone-less UTC form keeps order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONValue = JSON().with_variant(JSONB(), "postgresql")
"""JSON text on SQLite, JSONB on PostgreSQL (queryable: `context->>'user_id'`)."""

AutoId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite only auto-increments an INTEGER PRIMARY KEY."""


class Base(DeclarativeBase):
    """The declarative base of the adapter's tables; its metadata is `metadata`."""

    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class RunRow(Base):
    """One run of a machine: where it is, its context, and a version for optimistic locking."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    machine: Mapped[str] = mapped_column(String(NAME_LENGTH))
    state: Mapped[str] = mapped_column(String(NAME_LENGTH))
    context: Mapped[Any] = mapped_column(JSONValue)
    version: Mapped[int] = mapped_column(Integer)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    """The worker taking the run's external step, while it does."""
    claimed_until: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many times the current external step was claimed."""

    __table_args__ = (Index(None, "machine", "state"),)


class HistoryRow(Base):
    """One transition of a run; (run_id, seq) is unique, so a step cannot be stored twice."""

    __tablename__ = "run_history"

    run_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(NAME_LENGTH))
    trigger: Mapped[str] = mapped_column(String(NAME_LENGTH))
    target: Mapped[str] = mapped_column(String(NAME_LENGTH))
    outcome: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    at: Mapped[datetime]


class UserRow(Base):
    """A user of the reference flow: id, status, and a version for optimistic locking."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutboxRow(Base):
    """A message to publish; `id` orders the messages of one key (the order they were added)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    topic: Mapped[str] = mapped_column(String(TOPIC_LENGTH))
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[Any] = mapped_column(JSONValue)
    """A list of [name, base64 value] pairs: header values are bytes."""
    status: Mapped[str] = mapped_column(String(16))
    """pending, published or dead."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None]
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]
    published_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    """The owner that first marked the message published (a relay, or the immediate publish)."""
    dead_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status in ('pending', 'published', 'dead')", name="status"),
        # The claim looks for the head (lowest id) of each key among pending messages.
        Index(None, "status", "key", "id"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "run_id"),
    )


TABLES = ("runs", "run_history", "users", "outbox")
