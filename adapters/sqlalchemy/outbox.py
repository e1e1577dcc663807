"""The transactional outbox on SQLAlchemy: add with the change, claim per key in order, lease."""

from __future__ import annotations

import base64
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Executable,
    Integer,
    Row,
    Table,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.store import among, dialect_of, insert_row
from adapters.sqlalchemy.tables import ID_LENGTH, KEY_LENGTH, NAME_LENGTH, TABLES, Tables
from fsm.outbox import LeaseLost, OutboxMessage
from fsm.ports import InvalidRecord

log = logging.getLogger(__name__)

PENDING, PUBLISHED, DEAD = "pending", "published", "dead"
CLAIM_WINDOW, CLAIM_WINDOW_GROWTH = 4, 8
"""A claim of `limit` messages reads the oldest `CLAIM_WINDOW * limit` pending ones first.
Too few of them are due heads: it finds every key's head key by key when fewer than that
many keys are pending, else reads `CLAIM_WINDOW_GROWTH` times as many each time."""
ERROR_LENGTH = 2000
"""Longer errors are cut: the row keeps the start, where the cause usually is."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A stored outbox row as operators see it: the message and its delivery state."""

    message: OutboxMessage
    status: str
    next_attempt_at: datetime
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    published_at: datetime | None
    published_by: str | None
    """The owner that first marked the message published."""
    dead_at: datetime | None


class SqlOutbox:
    """Implements fsm.ports.Outbox within a Session's current transaction.

    Everything takes effect when the unit of work commits: `add` with the change it
    announces; `claim` should be committed at once (before publishing) so other relays see
    the lease. Per-key order: only the oldest pending message of a key is ever claimable,
    and only while nobody holds an unexpired lease on it, so a key is published by one
    relay at a time, in the order its messages were added, even with several relays.
    """

    def __init__(
        self, session: Session, *, clock: Callable[[], datetime], tables: Tables = TABLES
    ) -> None:
        self._session = session
        self._clock = clock
        self._table = tables.outbox
        self._sql = _outbox_sql(tables, dialect_of(session))

    def add(self, message: OutboxMessage, *, hold_until: datetime | None = None) -> int:
        _check_message(message)
        if hold_until is not None:
            checks.aware("hold_until", hold_until)
        created = message.created_at or self._clock()
        if self._sql.add is not None:  # PostgreSQL: the count and the hold in the INSERT
            row = message_row(message, created=created, hold_until=hold_until)
            added = self._session.execute(self._sql.add, row).first()
            earlier = None if added is None else int(added.earlier)
        else:
            earlier = self.pending_for_key(message.key)
            hold = None if earlier else hold_until
            row = message_row(message, created=created, hold_until=hold)
            earlier = earlier if insert_row(self._session, self._table, **row) else None
        if earlier is None:
            # The value stays out: a stored error names the field, never the data.
            raise InvalidRecord("an outbox message with this event_id exists already")
        return earlier

    def claim(
        self, *, owner: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxMessage]:
        checks.text("owner", owner, NAME_LENGTH)
        checks.positive_int("limit", limit, 10_000)
        _check_lease(lease_seconds)
        checks.aware("now", now)
        # Each key's head is found among the oldest `window` pending messages: every key
        # there has its head there too, and the heads of the keys beyond are younger.
        window = CLAIM_WINDOW * limit
        heads = self._heads(now, window)
        full = len(heads) < limit and self._full(window)
        if full:
            # Too few due heads in a full window: a few keys with long queues fill it, or
            # its heads are leased or waiting. Fewer than `window` keys pending: every
            # key's head, found key by key (two index probes each, however long its
            # queue). That many or more: wider windows.
            found = self._session.execute(self._sql.key_heads, {"keys": window}).scalars().all()
            if len(found) < window:
                heads, full = list(found), False
        while full:
            window *= CLAIM_WINDOW_GROWTH
            heads = self._heads(now, window)
            full = len(heads) < limit and self._full(window)
        if not heads:
            return []
        # Locked and leased apart from the search, by id, in one statement: a plan that
        # cannot turn quadratic when the table's statistics are stale (a backlog just
        # added). The lease conditions are checked again on the locked rows, so a head
        # another relay claimed meanwhile drops out, and with every due head of the window
        # to choose from, relays claiming at once each get `limit` of their own.
        parameters = {
            "ids": heads,
            "now": now,
            "limit": limit,
            "b_owner": owner,
            "b_until": now + timedelta(seconds=lease_seconds),
        }
        rows = self._session.execute(self._sql.claim, parameters).all()
        return [_message(row) for row in sorted(rows, key=lambda row: row.id)]

    def _heads(self, now: datetime, window: int) -> list[int]:
        """The due heads among the oldest `window` pending messages (their ids)."""
        found = self._session.execute(self._sql.heads, {"now": now, "window": window})
        return list(found.scalars())

    def _full(self, window: int) -> bool:
        """Whether at least `window` messages are pending."""
        seen = self._session.execute(self._sql.window, {"window": window}).scalar_one()
        return bool(seen == window)

    def renew(self, *event_ids: str, owner: str, lease_seconds: float, now: datetime) -> set[str]:
        # One conditional UPDATE: the check and the extension cannot be split by another
        # relay's claim, which needs the lease expired first.
        for event_id in event_ids:
            checks.text("event id", event_id, ID_LENGTH)
        checks.text("owner", owner, NAME_LENGTH)
        _check_lease(lease_seconds)
        checks.aware("now", now)
        if not event_ids:
            return set()
        table = self._table
        c = table.c
        renewed = self._session.execute(
            update(table)
            .where(
                still(c.status, PENDING),
                c.event_id.in_(event_ids),
                c.lease_owner == owner,
                c.lease_expires_at > now,
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(c.event_id)
        )
        return set(renewed.scalars())

    def release(self, event_ids: list[str], *, owner: str) -> int:
        checks.text("owner", owner, NAME_LENGTH)
        for event_id in event_ids:
            checks.text("event id", event_id, ID_LENGTH)
        if not event_ids:
            return 0
        c = self._table.c
        return self._update(
            c.event_id.in_(list(event_ids)),
            c.lease_owner == owner,
            lease_owner=None,
            lease_expires_at=None,
        )

    def mark_published(self, *event_ids: str, owner: str, now: datetime) -> None:
        # No lease check: the broker has the message, whoever sent it (the immediate publish
        # after commit holds no lease; a relay whose lease expired still delivered it).
        # A dead message stays dead: operators act on that state, and its run says so.
        # Only a pending message changes, so the first publisher and its time are kept.
        for event_id in event_ids:
            checks.text("event id", event_id, ID_LENGTH)
        checks.text("owner", owner, NAME_LENGTH)
        checks.aware("now", now)
        if not event_ids:
            return
        result = self._session.execute(
            self._sql.published,
            {"ids": list(event_ids), "published_at": now, "published_by": owner},
        )
        if result.rowcount == len(set(event_ids)):  # type: ignore[attr-defined]
            return
        # Some were not pending. Unknown ids are an error; published already is fine.
        outbox = self._table
        rows = self._session.execute(
            select(outbox.c.event_id, outbox.c.status).where(outbox.c.event_id.in_(event_ids))
        )
        found = {row.event_id: row.status for row in rows}
        for event_id in event_ids:
            status = found.get(event_id)
            if status is None:
                raise InvalidRecord(f"no outbox message has event id {event_id!r}")
            if status == DEAD:
                log.warning(
                    "outbox message %s was published (by %s) after it was dead-lettered; it "
                    "stays dead",
                    event_id,
                    owner,
                )

    def mark_failed(self, event_id: str, *, owner: str, error: str, retry_at: datetime) -> None:
        checks.text("event id", event_id, ID_LENGTH)
        checks.aware("retry_at", retry_at)
        self._update_held(
            event_id,
            owner,
            attempts=self._table.c.attempts + 1,
            last_error=_cut(error),
            next_attempt_at=retry_at,
            lease_owner=None,
            lease_expires_at=None,
        )

    def mark_dead(self, event_id: str, *, owner: str, error: str, now: datetime) -> None:
        checks.text("event id", event_id, ID_LENGTH)
        checks.aware("now", now)
        self._update_held(
            event_id,
            owner,
            status=DEAD,
            last_error=_cut(error),
            dead_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )

    def get(self, event_id: str) -> OutboxEntry | None:
        """The stored message and its delivery state, or None."""
        outbox = self._table
        row = self._session.execute(
            select(outbox).where(outbox.c.event_id == event_id)
        ).one_or_none()
        return None if row is None else _entry(row)

    def entries(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Stored messages, oldest first: all, or those of one `status` (pending,
        published or dead), at most `limit`."""
        checks.positive_int("limit", limit, 10_000)
        outbox = self._table
        query = select(outbox).order_by(outbox.c.id).limit(limit)
        if status is not None:
            query = query.where(outbox.c.status == status)
        return [_entry(row) for row in self._session.execute(query)]

    def redrive(self, event_id: str, *, now: datetime) -> None:
        checks.text("event id", event_id, ID_LENGTH)
        checks.aware("now", now)
        c = self._table.c
        # The error and dead_at stay: what went wrong last time is worth keeping to read.
        result = self._session.execute(
            update(self._table)
            .where(c.event_id == event_id, still(c.status, DEAD))
            .values(status=PENDING, attempts=0, next_attempt_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            status = self._status(event_id)
            raise InvalidRecord(f"outbox message {event_id!r} is {status}, not dead")

    def pending_for_key(self, key: str) -> int:
        """How many messages of `key` are neither published nor dead."""
        count = self._session.execute(self._sql.pending_for_key, {"key": key}).scalar_one()
        return int(count)

    def counts(self) -> dict[str, int]:
        """How many messages are pending, published and dead."""
        found = dict.fromkeys((PENDING, PUBLISHED, DEAD), 0)
        outbox = self._table
        for status, count in self._session.execute(
            select(outbox.c.status, func.count()).group_by(outbox.c.status)
        ):
            found[status] = count
        return found

    def oldest_pending(self) -> datetime | None:
        """When the oldest message neither published nor dead was added; None if none is."""
        c = self._table.c
        oldest: datetime | None = self._session.execute(
            select(func.min(c.created_at)).where(c.status == PENDING)
        ).scalar_one()
        return oldest

    def _update_held(self, event_id: str, owner: str, **values: object) -> None:
        """Update a pending message held by `owner` (or by nobody); LeaseLost otherwise."""
        checks.text("owner", owner, NAME_LENGTH)
        c = self._table.c
        held = or_(c.lease_owner.is_(None), c.lease_owner == owner)
        if self._update(c.event_id == event_id, held, **values) == 0:
            self._status(event_id)
            raise LeaseLost(event_id, owner)

    def _update(self, *where: ColumnElement[bool], **values: object) -> int:
        """UPDATE the pending messages matching `where` (their event id) with `values`; how
        many changed."""
        table = self._table
        result = self._session.execute(
            update(table).where(still(table.c.status, PENDING), *where).values(**values)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _status(self, event_id: str) -> str:
        outbox = self._table
        status = self._session.execute(
            select(outbox.c.status).where(outbox.c.event_id == event_id)
        ).scalar_one_or_none()
        if status is None:
            raise InvalidRecord(f"no outbox message has event id {event_id!r}")
        return str(status)


def still(status: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    """`status = value`, checked on rows a statement finds by id or event id, in a form no
    index answers (`status || ''`), so that the id's unique index finds them. Given
    `status = 'pending'` to match an index on (status, ...), PostgreSQL took that index
    whenever the table's statistics counted no pending rows (a backlog added since the
    last ANALYZE, as in a broker outage) and read every pending row, for each claim, lease
    and mark: 16-28 ms a statement with 100,000 pending, against 1 ms."""
    return status.concat(literal_column("''")) == value


@dataclass(frozen=True, slots=True)
class _OutboxSql:
    """The outbox's statements on the hot paths, built once per tables and dialect (see
    adapters.sqlalchemy.store._RunSql); parameters by name."""

    heads: Executable
    """The ids of the claimable messages at `now` among the oldest `window` pending ones,
    oldest first: a read of the window alone, no join."""
    claim: Executable
    """Lease to `b_owner` until `b_until` the messages among `ids` (their `id`)
    still claimable at `now` and not locked by another claim, the oldest `limit` of them;
    their rows back, in no order."""
    window: Executable
    """How many of the oldest `window` pending messages there are (fewer: all of them)."""
    key_heads: Executable
    """The head (id) of each key with pending messages, at most `keys` of them, found key
    by key: the next key after the last, then its oldest pending message."""
    published: Executable
    """Mark the pending messages among `ids` (their `event_id`) published."""
    pending_for_key: Executable
    add: Executable | None
    """PostgreSQL: INSERT a message (`message_row`) held only if no message of its key is
    pending, RETURNING how many are (`earlier`); elsewhere None (a count, then an INSERT)."""


@functools.cache
def _outbox_sql(tables: Tables, dialect: str) -> _OutboxSql:
    outbox = tables.outbox
    c = outbox.c
    pending = update(outbox).where(still(c.status, PENDING))
    oldest = (
        select(c.id, c.key, c.next_attempt_at, c.lease_owner, c.lease_expires_at)
        .where(c.status == PENDING)
        .order_by(c.id)
        .limit(bindparam("window", type_=Integer))
    )
    # The head of a key is its oldest pending message, leased or not: a key whose head
    # someone else holds has no claimable message at all, which is what keeps the order.
    # Among the oldest pending messages, a key's oldest is its head (any older one would
    # be among them too): one pass over them, numbering each key's messages, no join.
    window = oldest.subquery("oldest")
    w = window.c
    place = func.row_number().over(partition_by=w.key, order_by=w.id).label("place")
    ranked = select(w.id, w.next_attempt_at, w.lease_owner, w.lease_expires_at, place).subquery()
    r = ranked.c
    now = bindparam("now", type_=c.next_attempt_at.type)

    def free(table: Any) -> ColumnElement[bool]:
        """Due and held by nobody at `now`."""
        lease = or_(table.lease_owner.is_(None), table.lease_expires_at <= now)
        return and_(table.next_attempt_at <= now, lease)

    # Key by key: each step finds the next key with pending messages after the last one (an
    # index probe on (status, key, id)), up to `keys` of them; then each key's oldest.
    first = select(func.min(c.key).label("key"), literal(1, Integer).label("n"))
    keys = first.where(c.status == PENDING).cte("pending_keys", recursive=True)
    after = select(func.min(c.key)).where(c.status == PENDING, c.key > keys.c.key)
    more = keys.c.n < bindparam("keys", type_=Integer)
    keys = keys.union_all(
        select(after.scalar_subquery(), keys.c.n + 1).where(keys.c.key.is_not(None), more)
    )
    oldest_of_key = select(func.min(c.id)).where(c.status == PENDING, c.key == keys.c.key)
    locked = (
        select(c.id)
        .where(among(c.id, "ids", dialect), still(c.status, PENDING), free(c))
        .order_by(c.id)
        .limit(bindparam("limit", type_=Integer))
        # PostgreSQL: relays claiming at once skip each other's heads instead of
        # waiting. SQLite ignores it; BEGIN IMMEDIATE (see engine.py) serialises them.
        .with_for_update(skip_locked=True, of=outbox)
        .scalar_subquery()
    )
    # The locked ids, selected once. On PostgreSQL `= ANY(ARRAY(...))`: an InitPlan, run
    # before the update and never again, its array then found by the primary key. `IN
    # (...)` may be planned as a join that runs the subquery again for each row, each run
    # skipping the rows the last one locked: it leased more than `limit`.
    if dialect == "postgresql":
        chosen = c.id == any_(func.array(locked, type_=ARRAY(c.id.type)))
    else:
        chosen = c.id.in_(locked)
    return _OutboxSql(
        heads=select(r.id).where(r.place == 1, free(r)).order_by(r.id),
        key_heads=select(oldest_of_key.scalar_subquery()).where(keys.c.key.is_not(None)),
        claim=pending.where(chosen)
        .values(
            lease_owner=bindparam("b_owner", type_=c.lease_owner.type),
            lease_expires_at=bindparam("b_until", type_=c.lease_expires_at.type),
        )
        .returning(*c),
        window=select(func.count()).select_from(window),
        published=pending.where(among(c.event_id, "ids", dialect)).values(
            status=PUBLISHED, lease_owner=None, lease_expires_at=None
        ),
        pending_for_key=select(func.count())
        .select_from(outbox)
        .where(c.key == bindparam("key", type_=c.key.type), c.status == PENDING),
        add=_add(outbox) if dialect == "postgresql" else None,
    )


def _add(outbox: Table) -> Executable:
    """See _OutboxSql.add. The subqueries see the table as it was before the INSERT."""
    c = outbox.c
    older = outbox.alias("earlier")
    same_key = older.c.key == bindparam("key", type_=c.key.type)
    pending = select(older.c.id).where(same_key, older.c.status == PENDING)
    names = message_row(OutboxMessage("", "", "", b""), created=datetime.min)
    values: dict[str, Any] = {name: bindparam(name, type_=c[name].type) for name in names}
    values["next_attempt_at"] = case(
        (pending.exists(), values["created_at"]), else_=values["next_attempt_at"]
    )
    earlier = select(func.count()).select_from(pending.subquery()).scalar_subquery()
    statement = postgresql.insert(outbox).values(values).on_conflict_do_nothing()
    return statement.returning(earlier.label("earlier"))


def _entry(row: Row[Any]) -> OutboxEntry:
    return OutboxEntry(
        message=_message(row),
        status=row.status,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        published_at=row.published_at,
        published_by=row.published_by,
        dead_at=row.dead_at,
    )


def message_row(
    message: OutboxMessage, *, created: datetime, hold_until: datetime | None = None
) -> dict[str, Any]:
    """The outbox row of a new message, as `add` inserts it (headers as base64 text)."""
    return {
        "event_id": message.event_id,
        "topic": message.topic,
        "key": message.key,
        "value": message.value,
        "headers": [
            [name, base64.b64encode(value).decode("ascii")] for name, value in message.headers
        ],
        "status": PENDING,
        "attempts": message.attempts,
        "next_attempt_at": hold_until or created,
        "run_id": message.run_id,
        "created_at": created,
    }


def _message(row: Row[Any]) -> OutboxMessage:
    return OutboxMessage(
        event_id=row.event_id,
        topic=row.topic,
        key=row.key,
        value=row.value,
        headers=tuple((name, base64.b64decode(value)) for name, value in row.headers),
        run_id=row.run_id,
        attempts=row.attempts,
        created_at=row.created_at,
    )


def _check_lease(lease_seconds: float) -> None:
    if (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, int | float)
        or not math.isfinite(lease_seconds)
        or lease_seconds <= 0
    ):
        raise InvalidRecord(f"lease_seconds must be a positive number, got {lease_seconds!r}")


def _cut(error: str) -> str:
    text = str(error).replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
    return text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 1] + "…"


def _check_message(message: OutboxMessage) -> None:
    if not isinstance(message, OutboxMessage):
        raise InvalidRecord(f"expected an OutboxMessage, got {type(message).__name__}")
    checks.text("event id", message.event_id, ID_LENGTH)
    checks.topic(message.topic)
    checks.text("key", message.key, KEY_LENGTH)
    if not isinstance(message.value, bytes):
        raise InvalidRecord(f"value must be bytes, got {type(message.value).__name__}")
    if not isinstance(message.headers, tuple):
        raise InvalidRecord(f"headers must be a tuple of (name, bytes), got {message.headers!r}")
    for header in message.headers:
        if not isinstance(header, tuple) or len(header) != 2 or not isinstance(header[1], bytes):
            raise InvalidRecord(f"header {header!r} is not a (name, bytes) pair")
        checks.text("header name", header[0], NAME_LENGTH)
    if message.run_id is not None:
        checks.text("run id", message.run_id, ID_LENGTH)
    if isinstance(message.attempts, bool) or not isinstance(message.attempts, int):
        raise InvalidRecord(f"attempts must be an integer, got {message.attempts!r}")
    if message.attempts < 0:
        raise InvalidRecord(f"attempts must not be negative, got {message.attempts}")
    if message.created_at is not None:
        checks.aware("created_at", message.created_at)
