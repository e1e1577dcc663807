"""The engine's tables (runs, their history, the outbox) as Core Tables on a MetaData you choose.

`define_tables(your_metadata, prefix="fsm_", schema="payments")` adds them to your own
MetaData, next to your own tables, for your Alembic migrations; `TABLES` are the defaults
(no prefix, the connection's schema) on `metadata`, as `TABLES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import conv

from fsm.errors import FSMError

ID_LENGTH = 128
NAME_LENGTH = 200
TOPIC_LENGTH = 249  # Kafka's own limit on topic names
KEY_LENGTH = 255

NAMING_CONVENTION = {
    # Named constraints let Alembic autogenerate stable migrations on every backend.
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The default MetaData of the engine's tables (and nothing else)."""

NAMES = ("runs", "run_history", "outbox")
"""The engine's tables' names, before any prefix."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


class TableSettingsError(FSMError, ValueError):
    """A table prefix or schema that cannot be used, named with what is allowed."""


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


@dataclass(frozen=True)
class Tables:
    """The engine's tables on one MetaData."""

    metadata: MetaData
    runs: Table
    """One run of a machine: where it is, its context, a version for optimistic locking,
    and the claim of an external step in progress."""
    history: Table
    """One transition of a run; (run_id, seq) is the key, so a step cannot be stored twice."""
    outbox: Table
    """A message to publish; `id` orders the messages of one key (the order they were added)."""

    @property
    def all(self) -> tuple[Table, ...]:
        return (self.runs, self.history, self.outbox)


def define_tables(
    metadata: MetaData | None = None, *, prefix: str = "", schema: str | None = None
) -> Tables:
    """The engine's tables, added to `metadata` (a new MetaData if None).

    `prefix` starts each table's name (`fsm_` gives fsm_runs, fsm_run_history, fsm_outbox);
    `schema` puts them in that schema (PostgreSQL; None: the connection's search path).
    Constraint and index names are given in full, so they are the same on any MetaData.
    TableSettingsError for a prefix or schema that is not a lower-case SQL identifier.
    """
    for what, value in (("prefix", prefix), ("schema", schema)):
        if value is not None and (value or what == "schema") and not _IDENTIFIER.fullmatch(value):
            raise TableSettingsError(
                f"table {what} {value!r} is not usable; use lower-case letters, digits and "
                "'_', starting with a letter or '_'"
            )
    on = metadata if metadata is not None else MetaData()
    runs_name, history_name, outbox_name = (f"{prefix}{n}" for n in NAMES)
    runs = Table(
        runs_name,
        on,
        Column("id", String(ID_LENGTH)),
        Column("machine", String(NAME_LENGTH), nullable=False),
        Column("state", String(NAME_LENGTH), nullable=False),
        Column("context", JSONValue, nullable=False),
        Column("version", Integer, nullable=False),
        Column("finished", Boolean, nullable=False, default=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("claimed_by", String(NAME_LENGTH)),
        Column("claimed_until", UTCDateTime()),
        Column("attempt", Integer, nullable=False, default=0, server_default="0"),
        # When the waiting state's timeout is due (None: it has none); workers look it up.
        Column("due_at", UTCDateTime()),
        PrimaryKeyConstraint("id", name=conv(f"pk_{runs_name}")),
        Index(conv(f"ix_{runs_name}_machine_state"), "machine", "state"),
        Index(conv(f"ix_{runs_name}_machine_due_at"), "machine", "due_at"),
        schema=schema,
    )
    history = Table(
        history_name,
        on,
        Column(
            "run_id",
            String(ID_LENGTH),
            ForeignKey(
                runs.c.id,
                ondelete="CASCADE",
                name=conv(f"fk_{history_name}_run_id_{runs_name}"),
            ),
        ),
        Column("seq", Integer, autoincrement=False),
        Column("source", String(NAME_LENGTH), nullable=False),
        Column("trigger", String(NAME_LENGTH), nullable=False),
        Column("target", String(NAME_LENGTH), nullable=False),
        Column("outcome", JSONValue, nullable=True),
        Column("at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("run_id", "seq", name=conv(f"pk_{history_name}")),
        schema=schema,
    )
    outbox = Table(
        outbox_name,
        on,
        Column("id", AutoId, autoincrement=True),
        Column("event_id", String(ID_LENGTH), nullable=False),
        Column("topic", String(TOPIC_LENGTH), nullable=False),
        Column("key", String(KEY_LENGTH), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSONValue, nullable=False),
        # A list of [name, base64 value] pairs: header values are bytes.
        Column("status", String(16), nullable=False),  # pending, published or dead
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UTCDateTime(), nullable=False),
        Column("last_error", Text),
        Column("lease_owner", String(NAME_LENGTH)),
        Column("lease_expires_at", UTCDateTime()),
        Column("run_id", String(ID_LENGTH)),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("published_at", UTCDateTime()),
        Column("published_by", String(NAME_LENGTH)),
        # The owner that first marked the message published (a relay, or the immediate one).
        Column("dead_at", UTCDateTime()),
        PrimaryKeyConstraint("id", name=conv(f"pk_{outbox_name}")),
        UniqueConstraint("event_id", name=conv(f"uq_{outbox_name}_event_id")),
        CheckConstraint(
            "status in ('pending', 'published', 'dead')", name=conv(f"ck_{outbox_name}_status")
        ),
        # The claim reads the oldest pending messages and finds each key's head (lowest id)
        # among them; `add` counts a key's pending messages.
        Index(conv(f"ix_{outbox_name}_status_id"), "status", "id"),
        Index(conv(f"ix_{outbox_name}_status_key_id"), "status", "key", "id"),
        Index(conv(f"ix_{outbox_name}_status_next_attempt_at"), "status", "next_attempt_at"),
        Index(conv(f"ix_{outbox_name}_run_id"), "run_id"),
        schema=schema,
    )
    return Tables(on, runs, history, outbox)


TABLES = define_tables(metadata)
"""The default tables: no prefix, the connection's schema, on `metadata`."""
