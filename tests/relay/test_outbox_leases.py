"""Outbox lease operations the relay relies on: renew, release, and dead staying dead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from adapters.memory import InMemoryOutbox, InMemoryUnitOfWork
from adapters.sqlalchemy import SqlUnitOfWork
from fsm.outbox import OutboxMessage
from fsm.ports import InvalidRecord

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


def message(event_id: str, key: str = "k") -> OutboxMessage:
    """A message created at T0."""
    return OutboxMessage(event_id, "UserUpdateTopic", key, event_id.encode(), created_at=T0)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


Transact = Callable[[Callable[[Any], Any]], Any]
"""Runs a function on an outbox within one committed transaction; returns its result."""


@pytest.fixture(params=["sql", "memory"])
def transact(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Transact]:
    """The SQL outbox (SQLite and PostgreSQL) or the in-memory one, behind one helper.

    The in-memory variant ignores the engine (it runs once per database: cheap).
    """
    uow: Any = (
        InMemoryUnitOfWork()
        if request.param == "memory"
        else SqlUnitOfWork(engine, clock=lambda: T0)
    )

    def run(work: Callable[[Any], Any]) -> Any:
        with uow:
            return work(uow.outbox)

    yield run


def claim(transact: Transact, owner: str, seconds: float = 0) -> list[str]:
    """Claim at T0 + seconds with a LEASE-long lease; the event ids."""
    found = transact(lambda o: o.claim(owner=owner, limit=10, lease_seconds=LEASE, now=at(seconds)))
    return [m.event_id for m in found]


def renew(transact: Transact, event_id: str, owner: str, seconds: float) -> bool:
    """Renew at T0 + seconds for LEASE seconds."""
    return bool(
        transact(lambda o: o.renew(event_id, owner=owner, lease_seconds=LEASE, now=at(seconds)))
    )


class TestRenew:
    def test_the_holder_renews_an_unexpired_lease(self, transact: Transact) -> None:
        """Renewing before expiry succeeds and pushes the expiry out from now."""
        transact(lambda o: o.add(message("e1")))
        assert claim(transact, "a") == ["e1"]
        assert renew(transact, "e1", "a", LEASE - 1)
        assert claim(transact, "b", LEASE + 1) == []  # the old expiry no longer frees it
        assert claim(transact, "b", 2 * LEASE) == ["e1"]

    def test_an_expired_lease_is_not_renewed(self, transact: Transact) -> None:
        """Once the lease ran out, renew says False even if nobody took it yet."""
        transact(lambda o: o.add(message("e1")))
        claim(transact, "a")
        assert not renew(transact, "e1", "a", LEASE)

    def test_someone_elses_lease_is_not_renewed(self, transact: Transact) -> None:
        """A relay whose lease was taken over cannot renew it, and the new holder keeps it."""
        transact(lambda o: o.add(message("e1")))
        claim(transact, "a")
        assert claim(transact, "b", LEASE + 1) == ["e1"]
        assert not renew(transact, "e1", "a", LEASE + 2)
        assert renew(transact, "e1", "b", LEASE + 2)

    def test_a_published_message_is_not_renewed(self, transact: Transact) -> None:
        """A message that left the pending set cannot be renewed by its old holder."""
        transact(lambda o: o.add(message("e1")))
        claim(transact, "a")
        transact(lambda o: o.mark_published("e1", owner="b", now=at(1)))
        assert not renew(transact, "e1", "a", 2)


class TestRelease:
    def test_release_frees_only_the_owners_pending_claims(self, transact: Transact) -> None:
        """Released claims are claimable at once; others' leases and unknown owners stay."""
        transact(lambda o: [o.add(message(e, e)) for e in ("e1", "e2", "e3")])
        assert claim(transact, "a") == ["e1", "e2", "e3"]
        transact(lambda o: o.mark_published("e3", owner="a", now=at(1)))
        assert transact(lambda o: o.release(["e1", "e3"], owner="b")) == 0
        assert transact(lambda o: o.release(["e1", "e3"], owner="a")) == 1
        assert claim(transact, "b", 2) == ["e1"]  # e2 is still a's until its lease ends

    def test_releasing_nothing_is_fine(self, transact: Transact) -> None:
        """An empty list releases nothing."""
        assert transact(lambda o: o.release([], owner="a")) == 0


def publication(transact: Transact, event_id: str) -> tuple[datetime | None, str | None]:
    """When and by whom a message was marked published, from either outbox."""

    def read(outbox: Any) -> tuple[datetime | None, str | None]:
        stored = (
            outbox.records[event_id] if isinstance(outbox, InMemoryOutbox) else outbox.get(event_id)
        )
        return stored.published_at, stored.published_by

    found: tuple[datetime | None, str | None] = transact(read)
    return found


class TestPublisher:
    def test_the_first_publish_is_kept(self, transact: Transact) -> None:
        """A second mark_published (another relay, later) keeps the first owner and time."""
        transact(lambda o: o.add(message("e1")))
        assert publication(transact, "e1") == (None, None)
        claim(transact, "a")
        transact(lambda o: o.mark_published("e1", owner="a", now=at(1)))
        transact(lambda o: o.mark_published("e1", owner="b", now=at(2)))
        assert publication(transact, "e1") == (at(1), "a")

    def test_a_dead_message_has_no_publisher(self, transact: Transact) -> None:
        """A late publish of a dead-lettered message records no publisher."""
        transact(lambda o: o.add(message("e1")))
        claim(transact, "a")
        transact(lambda o: o.mark_dead("e1", owner="a", error="gave up", now=at(1)))
        transact(lambda o: o.mark_published("e1", owner="late", now=at(2)))
        assert publication(transact, "e1") == (None, None)


class TestDeadStaysDead:
    def test_mark_published_leaves_a_dead_message_dead(
        self, transact: Transact, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A late publish of a dead-lettered message does not flip it to published."""
        transact(lambda o: o.add(message("e1")))
        claim(transact, "a")
        transact(lambda o: o.mark_dead("e1", owner="a", error="gave up", now=at(1)))
        transact(lambda o: o.mark_published("e1", owner="late", now=at(2)))
        assert transact(lambda o: o.counts()) == {"pending": 0, "published": 0, "dead": 1}


class TestOldestPending:
    def test_the_oldest_message_still_pending(self, transact: Transact) -> None:
        """oldest_pending is when the oldest pending message was added; None once none is."""
        assert transact(lambda o: o.oldest_pending()) is None
        added = [replace(message(f"e{n}"), created_at=at(s)) for n, s in enumerate((0, 60, 90))]
        transact(lambda o: [o.add(m) for m in added])
        assert transact(lambda o: o.oldest_pending()) == T0
        transact(lambda o: o.mark_published("e0", owner="a", now=at(100)))
        transact(lambda o: o.mark_dead("e1", owner="a", error="gave up", now=at(100)))
        assert transact(lambda o: o.oldest_pending()) == at(90)
        transact(lambda o: o.mark_published("e2", owner="a", now=at(100)))
        assert transact(lambda o: o.oldest_pending()) is None


class TestAdd:
    """`add` answers how many of the key's messages are pending before it, and holds only a
    message that heads its key (one statement on PostgreSQL)."""

    def test_a_held_head_is_not_claimed_before_its_hold(self, transact: Transact) -> None:
        assert transact(lambda o: o.add(message("a"), hold_until=at(60))) == 0
        assert claim(transact, "r1", seconds=59) == []
        assert claim(transact, "r1", seconds=60) == ["a"]

    def test_one_queued_behind_others_is_counted_and_not_held(self, transact: Transact) -> None:
        assert transact(lambda o: o.add(message("a"))) == 0
        assert transact(lambda o: o.add(message("b"), hold_until=at(60))) == 1
        assert transact(lambda o: o.add(message("c"), hold_until=at(60))) == 2
        assert transact(lambda o: o.add(message("x", key="other"))) == 0
        assert claim(transact, "r1") == ["a", "x"]
        transact(lambda o: o.mark_published("a", "x", owner="r1", now=at(1)))
        assert claim(transact, "r2", seconds=1) == ["b"]  # not held: due at once

    def test_an_event_id_taken_adds_nothing(self, transact: Transact) -> None:
        transact(lambda o: o.add(message("a")))
        with pytest.raises(InvalidRecord, match="exists"):
            transact(lambda o: o.add(replace(message("a"), key="other")))
        assert transact(lambda o: o.add(message("b", key="other"))) == 0
