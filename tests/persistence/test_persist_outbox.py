"""The SQLAlchemy outbox: per-key order, leases that expire, retries, dead letters."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from adapters.sqlalchemy import TABLES, SqlUnitOfWork
from adapters.sqlalchemy import outbox as sql_outbox
from adapters.sqlalchemy.outbox import message_row
from fsm.outbox import LeaseLost, OutboxMessage
from fsm.ports import InvalidRecord
from tests.clock import T0

LEASE = 30.0


def message(event_id: str, key: str = "k", **changes: object) -> OutboxMessage:
    """A message created at T0 unless told otherwise."""
    values: dict[str, object] = {
        "topic": "UserUpdateTopic",
        "key": key,
        "value": event_id.encode(),
        "created_at": T0,
    }
    values.update(changes)
    return OutboxMessage(event_id=event_id, **values)  # type: ignore[arg-type]


def add(engine: Engine, *messages: OutboxMessage) -> None:
    """Add messages in one committed transaction."""
    with SqlUnitOfWork(engine) as uow:
        for each in messages:
            uow.outbox.add(each)


def claim(engine: Engine, owner: str, *, seconds: float = 0, limit: int = 10) -> list[str]:
    """Claim (and commit the lease) at T0 + seconds; return the event ids."""
    with SqlUnitOfWork(engine) as uow:
        found = uow.outbox.claim(
            owner=owner, limit=limit, lease_seconds=LEASE, now=T0 + timedelta(seconds=seconds)
        )
    return [m.event_id for m in found]


class TestAddAndClaim:
    """What a claim returns: the due head of each key, leased to the claimer."""

    def test_message_round_trips(self, engine: Engine) -> None:
        """Every field, headers as bytes included, comes back as added."""
        sent = message("e1", headers=(("event-id", b"e1"), ("bin", b"\x00\xff")), run_id="r1")
        add(engine, sent)
        with SqlUnitOfWork(engine) as uow:
            (got,) = uow.outbox.claim(owner="a", limit=5, lease_seconds=LEASE, now=T0)
        assert got == sent

    def test_only_the_oldest_pending_message_of_each_key(self, engine: Engine) -> None:
        """Two keys with two messages each: the first claim gets one message per key."""
        add(engine, message("a1", "a"), message("b1", "b"), message("a2", "a"), message("b2", "b"))
        assert claim(engine, "r1") == ["a1", "b1"]

    def test_a_key_held_by_someone_else_is_skipped_entirely(self, engine: Engine) -> None:
        """While a1 is leased, neither a1 nor a2 is claimable; b's head still is."""
        add(engine, message("a1", "a"), message("a2", "a"))
        assert claim(engine, "r1") == ["a1"]
        add(engine, message("b1", "b"))
        assert claim(engine, "r2") == ["b1"]
        assert claim(engine, "r2") == []

    def test_next_message_after_publish(self, engine: Engine) -> None:
        """Once the head is published, the key's next message is claimable."""
        add(engine, message("a1", "a"), message("a2", "a"))
        claim(engine, "r1")
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_published("a1", owner="r1", now=T0)
        assert claim(engine, "r2") == ["a2"]

    def test_expired_lease_is_claimable_again(self, engine: Engine) -> None:
        """A relay that died holding a lease does not strand the key past the lease."""
        add(engine, message("a1", "a"), message("a2", "a"))
        assert claim(engine, "dead-relay") == ["a1"]
        assert claim(engine, "r2", seconds=LEASE - 1) == []
        assert claim(engine, "r2", seconds=LEASE) == ["a1"]
        with SqlUnitOfWork(engine) as uow:
            assert uow.outbox.get("a1").lease_owner == "r2"  # type: ignore[union-attr]

    def test_limit_and_creation_order(self, engine: Engine) -> None:
        """The limit caps a claim; keys are served oldest first."""
        add(engine, *[message(f"e{i}", f"k{i}") for i in range(5)])
        assert claim(engine, "r1", limit=2) == ["e0", "e1"]
        assert claim(engine, "r1", limit=10) == ["e2", "e3", "e4"]

    def test_empty_outbox(self, engine: Engine) -> None:
        """Nothing pending: an empty claim."""
        assert claim(engine, "r1") == []


class TestClaimWindow:
    """A claim looks for heads among the oldest pending messages, then a wider window when
    too few of them are due heads: whatever the window, it answers as the rule says."""

    @staticmethod
    def expected(rows: list[dict[str, object]], now: object, limit: int) -> list[str]:
        """The rule, plainly: each key's oldest pending message, if due and not leased,
        oldest first, at most `limit`."""
        heads: dict[object, dict[str, object]] = {}
        for row in rows:  # in id order
            if row["status"] == "pending":
                heads.setdefault(row["key"], row)
        due = [
            row
            for row in heads.values()
            if row["next_attempt_at"] <= now  # type: ignore[operator]
            and (row["lease_owner"] is None or row["lease_expires_at"] <= now)  # type: ignore[operator]
        ]
        return [str(row["event_id"]) for row in due][:limit]

    @pytest.mark.parametrize("window", [(1, 2), (4, 8)], ids=["narrow", "default"])
    def test_random_outboxes_are_claimed_by_the_rule(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch, window: tuple[int, int]
    ) -> None:
        """Outboxes of 1 to 3 hot keys and many cold ones, published, dead, held and
        leased messages among them; the first window holds `window[0]` messages per one
        claimed. Each claim (committed, so later ones see its leases) is the rule's answer."""
        monkeypatch.setattr(sql_outbox, "CLAIM_WINDOW", window[0])
        monkeypatch.setattr(sql_outbox, "CLAIM_WINDOW_GROWTH", window[1])
        rng = random.Random(20261203)
        later, lease = T0 + timedelta(seconds=60), T0 + timedelta(seconds=LEASE)
        for trial in range(12):
            hot = [f"hot{n}" for n in range(rng.randint(1, 3))]
            rows = []
            for n in range(rng.randint(1, 120)):
                key = rng.choice(hot) if rng.random() < 0.7 else f"cold{rng.randint(0, 40)}"
                row = message_row(message(f"t{trial}-{n}", key), created=T0)
                row["status"] = rng.choice(["pending"] * 6 + ["published", "dead"])
                if rng.random() < 0.1:
                    row["next_attempt_at"] = later  # held, or waiting for a retry
                leased = rng.random() < 0.1
                row["lease_owner"], row["lease_expires_at"] = (
                    ("other", lease) if leased else (None, None)
                )
                rows.append(row)
            with engine.begin() as connection:
                connection.execute(TABLES.outbox.delete())
                connection.execute(TABLES.outbox.insert(), rows)
            for limit in (1, 3, 50):
                want = self.expected(rows, T0, limit)
                assert claim(engine, "r1", limit=limit) == want, (trial, limit)
                claimed = set(want)
                for row in rows:
                    if row["event_id"] in claimed:
                        row |= {"lease_owner": "r1", "lease_expires_at": lease}

    def test_a_few_long_queues_leave_no_key_behind(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two keys with 40 messages each ahead of a third key's one: a first window of 2
        holds only the first two keys, so the claim widens it until it finds the third."""
        monkeypatch.setattr(sql_outbox, "CLAIM_WINDOW", 1)
        add(engine, *[message(f"{k}{n}", k) for n in range(40) for k in "ab"], message("c0", "c"))
        assert claim(engine, "r1", limit=2) == ["a0", "b0"]
        assert claim(engine, "r2", limit=2) == ["c0"]

    def test_a_few_long_queues_are_searched_key_by_key(self, engine: Engine) -> None:
        """10 keys with 200 messages each: the oldest 80 (a claim of 20's first window)
        hold only 10 heads, so the claim finds each key's head key by key instead of
        reading wider windows until it has read all 2,000 (on PostgreSQL, the rows it
        read are counted, with the table analyzed: on a table this small never analyzed,
        PostgreSQL rightly reads it whole)."""
        add(engine, *[message(f"k{k}-{n}", f"k{k}") for n in range(200) for k in range(10)])
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.exec_driver_sql("analyze outbox")
        with SqlUnitOfWork(engine) as uow:
            read = _rows_read(uow)
            found = uow.outbox.claim(owner="r1", limit=20, lease_seconds=LEASE, now=T0)
            read = _rows_read(uow) - read
        assert [m.event_id for m in found] == [f"k{k}-0" for k in range(10)]
        if engine.dialect.name == "postgresql":
            assert read < 400, read

    def test_no_claim_statement_reads_the_outbox_twice(self, engine: Engine) -> None:
        """The search reads the oldest pending messages alone, and the heads it finds are
        then locked and leased by id: no statement joins the outbox with itself, so no plan
        can rescan the window once per pending row (PostgreSQL did, joined, with the stale
        statistics of a backlog added a moment before: 17 claims of 3,000 events took
        7.2 s). The claim's UPDATE reads the outbox twice: the ids to lock, once, before
        the update (an InitPlan; SQLite: a list subquery, not correlated), then the rows to
        lease."""
        add(engine, *[message(f"m{n}", f"k{n % 7}") for n in range(50)])
        reads: list[tuple[str, list[str]]] = []

        def explain(_c: object, cursor: Any, statement: str, parameters: Any, *_: object) -> None:
            verb = statement.lstrip().split()[0].upper()
            if verb not in ("SELECT", "WITH", "UPDATE"):
                return
            if engine.dialect.name == "postgresql":
                cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                nodes = list(_plan_nodes(cursor.fetchone()[0][0]["Plan"]))
                initplans = [
                    list(_plan_nodes(n))
                    for n in nodes
                    if n.get("Parent Relationship") == "InitPlan"
                ]
                assert not [n["Node Type"] for n in nodes if "Join" in n["Node Type"]]
                assert not [n for n in nodes if n["Node Type"] == "Nested Loop"]
                scans = [
                    "InitPlan" if any(n in sub for sub in initplans) else ""
                    for n in nodes
                    if n.get("Relation Name") == "outbox" and n["Node Type"] != "ModifyTable"
                ]
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                details = [row[3] for row in cursor.fetchall()]
                assert not [d for d in details if "CORRELATED" in d], details
                scans = [
                    "InitPlan" if "LIST SUBQUERY" in " ".join(details[:i]) else ""
                    for i, d in enumerate(details)
                    if d.startswith(("SCAN", "SEARCH")) and d.split()[1] == "outbox"
                ]
            reads.append((verb, scans))

        event.listen(engine, "before_cursor_execute", explain)
        try:
            assert len(claim(engine, "r1", limit=5)) == 5
        finally:
            event.remove(engine, "before_cursor_execute", explain)
        assert {verb for verb, _ in reads} == {"SELECT", "UPDATE"}, reads
        for verb, scans in reads:  # the UPDATE's second read runs once, before the update
            assert len(scans) == (2 if verb == "UPDATE" else 1), reads
            assert scans.count("InitPlan") == (1 if verb == "UPDATE" else 0), reads

    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_rows_found_by_id_are_found_by_its_index_whatever_the_statistics(
        self, engine: Engine
    ) -> None:
        """A broker outage: the table was analyzed when every message was published, then a
        backlog came. Counting no pending rows, PostgreSQL answered `status = 'pending'` from
        an index on status and read the whole backlog in each statement that locks, leases,
        renews or marks messages it knows by id (16-28 ms each with 100,000 pending). Each
        must find its rows by the id's (or the event id's) unique index alone."""
        outbox = TABLES.outbox
        rows = [
            message_row(message(f"p{n}", f"k{n}"), created=T0) | {"status": "published"}
            for n in range(10000)
        ]
        with engine.begin() as connection:
            connection.execute(outbox.insert(), rows)
            connection.exec_driver_sql("analyze outbox")
        add(engine, *[message(f"m{n}", f"k{n}") for n in range(10000)])
        indexes: dict[str, set[str]] = {}

        def explain(_c: object, cursor: Any, statement: str, parameters: Any, *_: object) -> None:
            if "row_number" in statement:  # the search: the oldest pending, by (status, id)
                return
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            nodes = _plan_nodes(cursor.fetchone()[0][0]["Plan"])
            names = {node["Index Name"] for node in nodes if "Index Name" in node}
            indexes.setdefault(statement, set()).update(names)

        event.listen(engine, "before_cursor_execute", explain)
        try:
            with SqlUnitOfWork(engine) as uow:
                got = uow.outbox.claim(owner="r1", limit=200, lease_seconds=LEASE, now=T0)
                ids = [m.event_id for m in got]
                uow.outbox.renew(*ids[:2], owner="r1", lease_seconds=LEASE, now=T0)
                uow.outbox.mark_published(*ids[2:100], owner="r1", now=T0)
                uow.outbox.mark_failed(ids[100], owner="r1", error="down", retry_at=T0)
                uow.outbox.mark_dead(ids[101], owner="r1", error="down", now=T0)
                uow.outbox.release(ids[102:], owner="r1")
                uow.outbox.redrive(ids[101], now=T0)
        finally:
            event.remove(engine, "before_cursor_execute", explain)
        assert len(got) == 200 and len(indexes) == 7, indexes  # the claim and the six
        unique = {f"pk_{outbox.name}", f"uq_{outbox.name}_event_id"}
        assert all(names and names <= unique for names in indexes.values()), indexes


def _rows_read(uow: SqlUnitOfWork) -> int:
    """PostgreSQL: the outbox rows this transaction has read so far (0 elsewhere)."""
    if uow.session.get_bind().dialect.name != "postgresql":
        return 0
    counts = (  # this test's schema alone: another run's schemas may have an outbox too
        "select seq_tup_read + idx_tup_fetch from pg_stat_xact_user_tables"
        " where relname = 'outbox' and schemaname = current_schema()"
    )
    return int(uow.session.execute(text(counts)).scalar_one())


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A PostgreSQL plan node (EXPLAIN's JSON) and every node under it."""
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


class TestFailuresAndDeadLetters:
    """mark_failed counts attempts and delays, mark_dead gives up, leases are checked."""

    def test_failed_message_waits_until_retry_at(self, engine: Engine) -> None:
        """The attempt and the error are kept; the key waits for retry_at, then resumes."""
        add(engine, message("a1", "a"), message("a2", "a"))
        claim(engine, "r1")
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_failed(
                "a1", owner="r1", error="broker down", retry_at=T0 + timedelta(seconds=60)
            )
        assert claim(engine, "r1", seconds=59) == []
        with SqlUnitOfWork(engine) as uow:
            (again,) = uow.outbox.claim(
                owner="r1", limit=5, lease_seconds=LEASE, now=T0 + timedelta(seconds=60)
            )
            entry = uow.outbox.get("a1")
        assert (again.event_id, again.attempts) == ("a1", 1)
        assert entry is not None and entry.last_error == "broker down"

    def test_dead_message_leaves_the_pending_set(self, engine: Engine) -> None:
        """A dead message stays stored, with its error, and the key moves on."""
        add(engine, message("a1", "a"), message("a2", "a"))
        claim(engine, "r1")
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_dead("a1", owner="r1", error="10 attempts", now=T0)
            assert uow.outbox.counts() == {"pending": 1, "published": 0, "dead": 1}
            entry = uow.outbox.get("a1")
        assert entry is not None and (entry.status, entry.dead_at) == ("dead", T0)
        assert claim(engine, "r1") == ["a2"]

    def test_lost_lease(self, engine: Engine) -> None:
        """A relay whose lease was taken over cannot fail or kill the message."""
        add(engine, message("a1", "a"))
        claim(engine, "slow")
        claim(engine, "fast", seconds=LEASE)
        with pytest.raises(LeaseLost, match="not leased to 'slow'"), SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_failed("a1", owner="slow", error="x", retry_at=T0)
        with pytest.raises(LeaseLost), SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_dead("a1", owner="slow", error="x", now=T0)

    def test_published_is_idempotent_and_needs_no_lease(self, engine: Engine) -> None:
        """The immediate publish after commit marks an unleased message; twice is fine."""
        add(engine, message("a1", "a"))
        for _ in range(2):
            with SqlUnitOfWork(engine) as uow:
                uow.outbox.mark_published("a1", owner="app", now=T0)
        with SqlUnitOfWork(engine) as uow:
            entry = uow.outbox.get("a1")
        assert entry is not None and (entry.status, entry.published_at) == ("published", T0)

    def test_publisher_is_a_column(self, engine: Engine) -> None:
        """Plain SQL reads who published a message first, and when."""
        add(engine, message("a1", "a"), message("a2", "a"))
        claim(engine, "relay-1")
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_published("a1", owner="relay-1", now=T0)
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_published("a1", owner="relay-2", now=T0 + timedelta(seconds=5))
        with engine.connect() as connection:
            rows = connection.execute(
                select(TABLES.outbox.c.event_id, TABLES.outbox.c.published_by).order_by(
                    TABLES.outbox.c.id
                )
            ).all()
        assert [tuple(row) for row in rows] == [("a1", "relay-1"), ("a2", None)]

    def test_unknown_event_id(self, engine: Engine) -> None:
        """Marking an id that is not stored is an error, not a silent no-op."""
        with pytest.raises(InvalidRecord, match="no outbox message"), SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_published("nope", owner="app", now=T0)


class TestBadMessages:
    """Bad messages are refused before any write."""

    @pytest.mark.parametrize(
        ("bad", "text"),
        [
            (message(""), "event id must not be empty"),
            (message("e", topic="has space"), "not a valid Kafka topic"),
            (message("e", topic="t" * 250), "at most 249"),
            (message("e", key=""), "key must not be empty"),
            (message("e", value="text"), "value must be bytes"),
            (message("e", headers=[("a", b"b")]), "headers must be a tuple"),
            (message("e", headers=(("a", "text"),)), "not a \\(name, bytes\\) pair"),
            (message("e", attempts=-1), "must not be negative"),
            (message("e", created_at=T0.replace(tzinfo=None)), "no time zone"),
        ],
    )
    def test_add(self, engine: Engine, bad: OutboxMessage, text: str) -> None:
        """Each bad field is named; the outbox stays empty."""
        with pytest.raises(InvalidRecord, match=text), SqlUnitOfWork(engine) as uow:
            uow.outbox.add(bad)
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(TABLES.outbox)).scalar() == 0

    def test_duplicate_event_id(self, engine: Engine) -> None:
        """An event id is unique."""
        add(engine, message("e1"))
        with pytest.raises(InvalidRecord, match="exists already"), SqlUnitOfWork(engine) as uow:
            uow.outbox.add(message("e1"))

    @pytest.mark.parametrize(
        ("owner", "limit", "lease", "text"),
        [("", 1, 1.0, "owner"), ("a", 0, 1.0, "limit"), ("a", 1, 0, "lease_seconds")],
    )
    def test_claim(self, engine: Engine, owner: str, limit: int, lease: float, text: str) -> None:
        """A claim with a bad owner, limit or lease is refused."""
        with pytest.raises(InvalidRecord, match=text), SqlUnitOfWork(engine) as uow:
            uow.outbox.claim(owner=owner, limit=limit, lease_seconds=lease, now=T0)

    @pytest.mark.parametrize(("owner", "text"), [("", "must not be empty"), ("r" * 201, "at most")])
    def test_publisher(self, engine: Engine, owner: str, text: str) -> None:
        """A publisher that the column cannot hold is refused; the message stays pending."""
        add(engine, message("e1"))
        with pytest.raises(InvalidRecord, match=text), SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_published("e1", owner=owner, now=T0)
        with SqlUnitOfWork(engine) as uow:
            assert uow.outbox.counts()["pending"] == 1


class TestConcurrentClaimers:
    """Several relays at once publish each message once, in order per key."""

    # Two open transactions in one thread: SQLite would make the second wait for the first.
    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_claim_in_flight_hides_the_whole_key(self, engine: Engine) -> None:
        """While one relay's claim is uncommitted (its rows locked), another gets no message of
        that key: SKIP LOCKED alone would hand it the key's second message."""
        add(engine, message("a1", "a"), message("a2", "a"), message("b1", "b"))
        first, second = SqlUnitOfWork(engine), SqlUnitOfWork(engine)
        with first:
            mine = first.outbox.claim(owner="r1", limit=1, lease_seconds=LEASE, now=T0)
            with second:
                theirs = second.outbox.claim(owner="r2", limit=10, lease_seconds=LEASE, now=T0)
        assert [m.event_id for m in mine] == ["a1"]
        assert [m.event_id for m in theirs] == ["b1"]

    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_claims_at_once_each_get_heads_of_their_own(self, engine: Engine) -> None:
        """While one relay's claim is uncommitted, another takes the next due heads, not
        nothing: relays draining a backlog together work side by side."""
        add(engine, *[message(f"{key}1", key) for key in "abcd"])
        first, second = SqlUnitOfWork(engine), SqlUnitOfWork(engine)
        with first:
            mine = first.outbox.claim(owner="r1", limit=2, lease_seconds=LEASE, now=T0)
            with second:
                theirs = second.outbox.claim(owner="r2", limit=2, lease_seconds=LEASE, now=T0)
        assert [m.event_id for m in mine] == ["a1", "b1"]
        assert [m.event_id for m in theirs] == ["c1", "d1"]

    KEYS = 3
    PER_KEY = 12
    RELAYS = 4

    def test_per_key_order_with_several_relays(self, engine: Engine) -> None:
        """Threads, each with its own session, claim, publish and mark until nothing is left."""
        add(
            engine,
            *[
                message(f"{key}-{n}", f"k{key}")
                for n in range(self.PER_KEY)
                for key in range(self.KEYS)
            ],
        )
        published: list[tuple[str, str]] = []
        errors: list[BaseException] = []
        claims = [0]
        progress = threading.Condition()

        def relay(name: str) -> None:
            uow = SqlUnitOfWork(engine)
            try:
                while True:
                    with uow:
                        batch = uow.outbox.claim(owner=name, limit=1, lease_seconds=LEASE, now=T0)
                        pending = uow.outbox.counts()["pending"]
                    with progress:
                        claims[0] += 1
                        seen = claims[0]
                        progress.notify_all()
                    if not batch:
                        if pending == 0:
                            return
                        continue
                    # Hold the message until the others have claimed a few times: a claim that
                    # handed out a key's next message now would publish it first.
                    with progress:
                        target = seen + self.RELAYS
                        progress.wait_for(lambda: claims[0] >= target, timeout=5)  # noqa: B023 - used before the loop moves on
                        published.append((batch[0].key, batch[0].event_id))
                    with uow:
                        uow.outbox.mark_published(batch[0].event_id, owner=name, now=T0)
            except BaseException as error:  # the main thread reports it
                errors.append(error)
                with progress:
                    claims[0] += 10**6  # release anyone waiting
                    progress.notify_all()

        threads = [threading.Thread(target=relay, args=(f"relay-{i}",)) for i in range(self.RELAYS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        by_key: dict[str, list[str]] = defaultdict(list)
        for key, event_id in published:
            by_key[key].append(event_id)
        assert len(published) == self.KEYS * self.PER_KEY  # each exactly once
        for number in range(self.KEYS):
            assert by_key[f"k{number}"] == [f"{number}-{n}" for n in range(self.PER_KEY)]


class TestErrorsKept:
    """Errors recorded on failed messages are stored safely."""

    def test_long_error_with_nul(self, engine: Engine) -> None:
        """A huge error with a NUL byte is cut and stored, not refused by the database."""
        add(engine, message("a1", "a"))
        claim(engine, "r1")
        with SqlUnitOfWork(engine) as uow:
            uow.outbox.mark_failed("a1", owner="r1", error="x\x00" + "y" * 5000, retry_at=T0)
        with SqlUnitOfWork(engine) as uow:
            entry = uow.outbox.get("a1")
        assert entry is not None and entry.last_error is not None
        assert entry.last_error.startswith("x\\x00yyy") and len(entry.last_error) == 2000
