"""DBOS Transact doing the benchmark's update-then-publish job: the durable-execution peer.

One update is one DBOS workflow of three durable operations, the job of the hand-written loop in
`flow_throughput.py` with DBOS's checkpoints around it:

1. a datasource transaction: UPDATE the user under its version check + INSERT the outbox row;
2. a step: kafka-python `send().get()` (acks=all, idempotent), its offset returned;
3. a datasource transaction: UPDATE the outbox row published.

DBOS 3.x has no `@DBOS.transaction` against an application database any more: a database
transaction inside a workflow is a `SQLAlchemyDatasource` transaction (`@ds.transaction`), whose
checkpoint row is written in the same transaction as the user's statements. Its default isolation
is SERIALIZABLE; READ COMMITTED is used here, as in the hand-written loop, since the version check
already guards the user's row.

Each call gets a PostgreSQL database of its own on the server of `db_url` (DBOS's system tables in
its `dbos` schema, the datasource's checkpoints, the benchmark's `users` and outbox tables), so
`pg_stat_database.xact_commit` counts only this peer's commits; it is dropped afterwards.

Standalone, `python benchmarks/dbos_peer.py --count 200` (or `make bench-dbos`) also times the
hand-written loop of flow_throughput.py in the same process, interleaved in rounds, each run in a
database of its own, and prints both rates, the ratio and commits per update.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.engine import make_url

from adapters.kafka.config import KafkaConfig
from adapters.sqlalchemy import TABLES, create_engine, init_db
from userstatus.sql import FLOW_TABLES, users

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STATUS = "suspended"
"""Each user is updated once, active to suspended, as in flow_throughput.py."""
IDLE_SECONDS = 3.0
"""How long launched DBOS is left idle to measure its background threads' commit rate."""
SETTLE_SECONDS = 1.0
"""A PostgreSQL backend flushes its statistics when it exits (and, idle, up to 10 s late): the
counts are read after the engines' pooled connections are closed, and this long after."""


@dataclass
class EngineCounter:
    """Commits, statements and pool checkouts SQLAlchemy saw on the engines it listens to.

    A checkout of a pooled connection with pool_pre_ping (DBOS's default for its system
    database, and this project's) runs `select 1` in autocommit: a transaction PostgreSQL
    counts as a commit, which neither the commit nor the statement event sees.
    """

    commits: int = 0
    statements: int = 0
    checkouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listen(self, engine: Engine) -> None:
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine.pool, "checkout", self._checkout)

    def _commit(self, *_: Any) -> None:
        with self.lock:
            self.commits += 1

    def _statement(self, *_: Any) -> None:
        with self.lock:
            self.statements += 1

    def _checkout(self, *_: Any) -> None:
        with self.lock:
            self.checkouts += 1

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.commits, self.statements, self.checkouts


@dataclass(frozen=True)
class Commits:
    """Over a timed run: commits as PostgreSQL counted them on the database, and commits and
    statements as SQLAlchemy saw them on the engines listened to."""

    database: int
    engine_commits: int
    statements: int
    checkouts: int
    background: float = 0.0
    """Of `database`, an estimate of what background threads committed: their rate while idle
    (measured just before) times the run's duration."""


@contextmanager
def own_database(db_url: str) -> Iterator[str]:
    """A new database on the PostgreSQL server of `db_url`, its URL; dropped afterwards."""
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"the DBOS peer needs PostgreSQL, not {url.get_backend_name()!r}")
    name = f"fsm_bench_dbos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


def database_commits(db_url: str, *settle: Engine) -> int:
    """`xact_commit` of the database of `db_url`, read from another database once the pooled
    connections of the `settle` engines are closed (their backends exit, flushing their counts)."""
    url = make_url(db_url)
    for engine in settle:
        engine.dispose()
    time.sleep(SETTLE_SECONDS)
    admin = create_engine(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.connect() as connection:
            return int(
                connection.execute(
                    text("select xact_commit from pg_stat_database where datname = :name"),
                    {"name": url.database},
                ).scalar_one()
            )
    finally:
        admin.dispose()


def typed(decorator: Any) -> Callable[[F], F]:
    """A DBOS decorator as it types with dbos installed; lint runs without it (bench extra)."""
    return cast(Callable[[F], F], decorator)


def add_users(engine: Engine, ids: list[int]) -> None:
    """Active users with these ids, at version 1."""
    at = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            users.insert(),
            [
                {
                    "id": i,
                    "status": "active",
                    "version": 1,
                    "created_at": at,
                    "updated_at": at,
                }
                for i in ids
            ],
        )


def dbos_updates(db_url: str, bootstrap_servers: str, count: int) -> tuple[float, float]:
    """DBOS's updates per second one at a time, and commits per update on the database.

    Commits are `pg_stat_database.xact_commit` deltas of the peer's own database (DBOS's system
    tables and the application tables live there), over the timed updates; they include what
    DBOS's background threads commit meanwhile. `dbos_run` gives both counts.
    """
    with own_database(db_url) as url:
        rate, commits = dbos_run(url, bootstrap_servers, count)
    return rate, commits.database / count


def dbos_run(
    url: str, bootstrap_servers: str, count: int, warm_up: int = 10
) -> tuple[float, Commits]:
    """Launch DBOS on the (empty, PostgreSQL) database of `url`, time `count` updates, destroy it.

    Checks that every update committed, every outbox row is published and the broker holds every
    message; raises AssertionError otherwise.
    """
    from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    app = create_engine(url)
    init_db(app, extra=FLOW_TABLES)
    topic = f"DbosPeer_{uuid.uuid4().hex[:8]}"
    kafka = KafkaConfig(bootstrap_servers=bootstrap_servers)
    producer = KafkaProducer(**kafka.producer_settings())
    outbox = TABLES.outbox
    counter = EngineCounter()
    config: DBOSConfig = {
        "name": "fsm-bench-dbos",
        "system_database_url": url,
        "log_level": "WARNING",
        "run_migrations": True,
    }
    dbos = DBOS(config=config)
    try:
        ds = SQLAlchemyDatasource.create(url)
        counter.listen(ds.engine)

        @typed(ds.transaction(isolation_level="READ COMMITTED"))
        def record(user_id: int, event_id: str) -> None:
            # The session's connection: its execute returns a CursorResult, which has a rowcount.
            connection = ds.sql_session().connection()
            changed = connection.execute(
                text(
                    "update users set status = :status, version = version + 1, "
                    "updated_at = now() where id = :id and version = :version"
                ),
                {"status": STATUS, "id": user_id, "version": 1},
            )
            assert changed.rowcount == 1, f"user {user_id} not at version 1"
            connection.execute(
                outbox.insert().values(
                    event_id=event_id,
                    topic=topic,
                    key=str(user_id),
                    value=STATUS.encode(),
                    headers=[],
                    status="pending",
                    attempts=0,
                    next_attempt_at=text("now()"),
                    created_at=text("now()"),
                )
            )

        @typed(DBOS.step())
        def publish(user_id: int) -> int:
            metadata = producer.send(topic, key=str(user_id).encode(), value=STATUS.encode())
            offset = int(metadata.get(timeout=10).offset)
            assert offset >= 0, f"no offset stored for user {user_id}: {offset}"
            return offset

        @typed(ds.transaction(isolation_level="READ COMMITTED"))
        def mark_published(event_id: str) -> None:
            marked = (
                ds.sql_session()
                .connection()
                .execute(
                    outbox.update()
                    .where(outbox.c.event_id == event_id)
                    .values(status="published", published_at=text("now()"))
                )
            )
            assert marked.rowcount == 1, f"outbox row {event_id} not found"

        # The event id is an input, recorded with the workflow: a workflow's own code must be
        # deterministic for a recovered run to replay it (a uuid4 drawn here would differ).
        @typed(DBOS.workflow())
        def update(user_id: int, event_id: str) -> int:
            record(user_id, event_id)
            offset = publish(user_id)
            mark_published(event_id)
            return offset

        DBOS.launch()
        sys_engine = _system_engine(dbos)
        engines = [app, ds.engine]
        if sys_engine is not None:
            counter.listen(sys_engine)
            engines.append(sys_engine)
        ids = list(range(1, warm_up + count + 1))
        add_users(app, ids)
        for user_id in ids[:warm_up]:
            update(user_id, uuid.uuid4().hex)
        idle_from = database_commits(url, *engines)
        idle_started = time.perf_counter()
        time.sleep(IDLE_SECONDS)
        before, seen = database_commits(url, *engines), counter.snapshot()
        idle_rate = (before - idle_from) / (time.perf_counter() - idle_started)
        started = time.perf_counter()
        offsets = [update(user_id, uuid.uuid4().hex) for user_id in ids[warm_up:]]
        elapsed = time.perf_counter() - started
        seen_after = counter.snapshot()
    finally:
        DBOS.destroy(destroy_registry=True)  # disposes the system database's engine
        producer.close()
    after = database_commits(url, ds.engine, app)
    _check(app, ids, offsets, outbox_table=outbox)
    consumer = KafkaConsumer(**kafka.consumer_settings())
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        stored = sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()
    assert stored == len(ids), f"the broker holds {stored} messages of {len(ids)}"
    app.dispose()
    return count / elapsed, _commits(after - before, seen, seen_after, idle_rate * elapsed)


def _commits(
    database: int,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    background: float = 0.0,
) -> Commits:
    commits, statements, checkouts = (a - b for a, b in zip(after, before, strict=True))
    return Commits(database, commits, statements, checkouts, background)


def _system_engine(dbos: Any) -> Engine | None:
    """DBOS's system-database engine, to count its commits; private in DBOS, so maybe absent."""
    sys_db = getattr(dbos, "_sys_db", None)
    engine = getattr(sys_db, "engine", None)
    return engine if isinstance(engine, Engine) else None


def _check(app: Engine, ids: list[int], offsets: list[int], *, outbox_table: Any) -> None:
    """Every user updated once, every outbox row published, every publish acknowledged."""
    assert all(offset >= 0 for offset in offsets), "a publish without a stored offset"
    with app.connect() as connection:
        updated = connection.execute(
            text("select count(*) from users where status = :s and version = 2"), {"s": STATUS}
        ).scalar_one()
        rows = connection.execute(
            select(outbox_table.c.status, func.count()).group_by(outbox_table.c.status)
        ).all()
    assert updated == len(ids), f"{updated} users updated of {len(ids)}"
    assert dict(rows) == {"published": len(ids)}, f"outbox rows by status: {dict(rows)}"


def hand_written_run(url: str, bootstrap_servers: str, count: int) -> tuple[float, Commits]:
    """flow_throughput.hand_written on the database of `url` (tables created), with its commits."""
    from flow_throughput import Bench, Counter, hand_written

    engine = create_engine(url)
    init_db(engine, extra=FLOW_TABLES)
    counter = EngineCounter()
    counter.listen(engine)
    bench = Bench(engine, KafkaConfig(bootstrap_servers=bootstrap_servers), Counter())
    bench.next_user = 1_000_000  # clear of the DBOS peer's users
    hand_written(bench, 10)  # warm up: topic, connection
    before, seen = database_commits(url, engine), counter.snapshot()
    rate = hand_written(bench, count)
    seen_after = counter.snapshot()
    after = database_commits(url, engine)
    engine.dispose()
    return rate, _commits(after - before, seen, seen_after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default=os.environ.get("FSM_BENCH_DB_URL", DEFAULT_DB))
    parser.add_argument("--count", type=int, default=200, help="updates per timing")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from adapters.kafka.broker import LocalBroker

    results: dict[str, list[tuple[float, Commits]]] = {"hand-written loop": [], "DBOS workflow": []}
    runs: dict[str, Callable[[str, str, int], tuple[float, Commits]]] = {
        "hand-written loop": hand_written_run,
        "DBOS workflow": dbos_run,
    }
    with LocalBroker() as broker:
        for _ in range(args.rounds):
            for name, run in runs.items():
                with own_database(args.db_url) as url:
                    results[name].append(run(url, broker.bootstrap_servers, args.count))
    print(f"{args.rounds} rounds of {args.count} updates, one at a time; medians\n")
    print(
        "| path | updates/s | ratio | commits/update (database) | of which background "
        "| commits/update (SQLAlchemy) | pool checkouts/update | statements/update |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    hand = statistics.median(rate for rate, _ in results["hand-written loop"])
    for name, values in results.items():
        rate = statistics.median(r for r, _ in values)
        per = {
            what: statistics.median(getattr(c, what) for _, c in values) / args.count
            for what in ("database", "background", "engine_commits", "checkouts", "statements")
        }
        print(
            f"| {name} | {rate:,.0f} | {rate / hand:.2f}x | {per['database']:.1f} "
            f"| {per['background']:.1f} | {per['engine_commits']:.1f} | {per['checkouts']:.1f} "
            f"| {per['statements']:.1f} |"
        )
    for name, values in results.items():
        print(f"\n{name}, updates/s by round: " + ", ".join(f"{r:,.1f}" for r, _ in values))
    print(
        "\ncommits (database): pg_stat_database.xact_commit of the run's own database; of which "
        "background: DBOS's idle commit rate times the run's duration; (SQLAlchemy): commit "
        "events on the engines listened to; pool checkouts: on an engine with pool_pre_ping "
        "(DBOS's system database engine) each is a `select 1` in autocommit, which PostgreSQL "
        "counts as a commit; statements: SQLAlchemy's, background included"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
