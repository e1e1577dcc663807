"""The reliable flow's throughput against a hand-written loop, and the relay against raw produce.

Run with `make bench-flow` (or `python benchmarks/flow_throughput.py --db-url URL`). One
process starts the local broker (Tansu), uses the database of `--db-url` (default
$FSM_BENCH_DB_URL, else the test PostgreSQL) in a schema of its own, and times in one run,
interleaved in rounds so that the ratios hold on a noisy machine:

- hand-written: per update, UPDATE the user under its version check and INSERT the outbox
  row, COMMIT; send to Kafka and wait for the acknowledgement; UPDATE the row published,
  COMMIT (the same guarantees as the flow, none of its bookkeeping);
- the flow: `FlowApp.orchestrator().perform(payload)`, one update at a time, then with N
  threads (one orchestrator each, distinct users);
- the async flow: `AsyncFlowApp.orchestrator().perform(payload)` with N tasks in one event
  loop (one orchestrator per update, distinct users), against the flow's N threads;
- the relay draining a backlog of pending events (their runs in publish_failed), with one
  relay and with three;
- raw produce: kafka-python sending the same number of messages, acks=all, idempotent,
  waiting only once at the end.

It prints rates, ratios, SQL statements per update and per relayed event, and checks at the
end that every committed event was acknowledged and every run is final.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.engine import make_url

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.memory import FakePublisher
from adapters.sqlalchemy import TABLES, create_async_engine, create_engine, init_db
from fsm.relay import RelaySettings
from fsm.retry import RetryPolicy
from userstatus.app import AsyncFlowApp, FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState
from userstatus.sql import FLOW_TABLES, users

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NEW = UserStatus.SUSPENDED
"""Each user is updated once, active to suspended."""


@dataclass
class Counter:
    """SQL statements the engine sent, counted by a cursor event."""

    statements: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, *_: Any) -> None:
        with self.lock:
            self.statements += 1


@dataclass
class Bench:
    engine: Engine
    kafka: KafkaConfig
    counter: Counter
    next_user: int = 1

    def users(self, count: int) -> list[int]:
        """`count` new active users."""
        ids = list(range(self.next_user, self.next_user + count))
        self.next_user += count
        with self.engine.begin() as connection:
            connection.execute(
                users.insert(),
                [
                    {
                        "id": i,
                        "status": "active",
                        "version": 1,
                        "created_at": now(),
                        "updated_at": now(),
                    }
                    for i in ids
                ],
            )
        return ids

    def app(self) -> FlowApp:
        return FlowApp(self.engine, self.kafka, relay_settings=RELAY)

    @contextmanager
    def counted(self) -> Any:
        before = self.counter.statements
        box = {"statements": 0}
        yield box
        box["statements"] = self.counter.statements - before


RELAY = RelaySettings(batch_size=200, idle_interval=0.05)


def now() -> Any:
    from fsm.defaults import utc_now

    return utc_now()


def hand_written(bench: Bench, count: int) -> float:
    """Updates per second of the loop a team would write by hand."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**bench.kafka.producer_settings())
    ids = bench.users(count)
    outbox = TABLES.outbox
    started = time.perf_counter()
    with bench.engine.connect() as connection:
        for user_id in ids:
            event_id = uuid.uuid4().hex
            status = NEW.value
            with connection.begin():
                changed = connection.execute(
                    text(
                        "update users set status = :status, version = version + 1, "
                        "updated_at = :now where id = :id and version = :version"
                    ),
                    {"status": status, "now": now(), "id": user_id, "version": 1},
                )
                assert changed.rowcount == 1
                connection.execute(
                    outbox.insert().values(
                        event_id=event_id,
                        topic="HandWritten",
                        key=str(user_id),
                        value=status.encode(),
                        headers=[],
                        status="pending",
                        attempts=0,
                        next_attempt_at=now(),
                        created_at=now(),
                    )
                )
            metadata = producer.send(
                "HandWritten", key=str(user_id).encode(), value=status.encode()
            ).get(timeout=10)
            assert metadata.offset >= 0
            with connection.begin():
                connection.execute(
                    outbox.update()
                    .where(outbox.c.event_id == event_id)
                    .values(status="published", published_at=now())
                )
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


def flow(bench: Bench, count: int, threads: int = 1) -> tuple[float, float]:
    """Updates per second of the flow with `threads` orchestrators; statements per update."""
    app = bench.app()
    per = count // threads
    batches = [bench.users(per) for _ in range(threads)]
    orchestrators = [app.orchestrator() for _ in range(threads)]
    failures: list[BaseException] = []

    def work(orchestrator: Any, ids: list[int]) -> None:
        try:
            for user_id in ids:
                run = orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))
                assert run.state == FlowState.PUBLISHED, (run.state, run.outcome)
        except BaseException as error:
            failures.append(error)

    with bench.counted() as counted:
        started = time.perf_counter()
        workers = [
            threading.Thread(target=work, args=(o, ids))
            for o, ids in zip(orchestrators, batches, strict=True)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    app.close()
    if failures:
        raise failures[0]
    return per * threads / elapsed, counted["statements"] / (per * threads)


# -- the async flow (issue 11): N tasks in one event loop against N threads -------------------


def async_flow(bench: Bench, count: int, tasks: int) -> float:
    """Updates per second of the async flow (AsyncFlowApp) with `tasks` concurrent tasks in
    one event loop, each with its own orchestrator, on distinct users: the sync flow's
    `flow(bench, count, threads=tasks)` in asyncio."""
    per = count // tasks
    batches = [bench.users(per) for _ in range(tasks)]
    url = bench.engine.url.render_as_string(hide_password=False)

    async def timed() -> float:
        app = AsyncFlowApp(create_async_engine(url), bench.kafka)

        async def work(ids: list[int]) -> None:
            for user_id in ids:
                run = await app.orchestrator().perform(UpdateUserStatusPayload(user_id, NEW))
                assert run.state == FlowState.PUBLISHED, (run.state, run.outcome)

        try:
            await work(bench.users(2))  # warm up: connections, the producer
            started = time.perf_counter()
            await asyncio.gather(*(work(ids) for ids in batches))
            return per * tasks / (time.perf_counter() - started)
        finally:
            await app.close()

    return asyncio.run(timed())


def backlog(bench: Bench, count: int) -> None:
    """`count` committed updates whose immediate publish failed: pending for the relay."""
    app = FlowApp(bench.engine, bench.kafka, retry=RetryPolicy(attempts=1))
    down = FakePublisher()
    down.failing = True
    orchestrator = app.orchestrator(down)
    for user_id in bench.users(count):
        orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))


def relay(bench: Bench, count: int, relays: int) -> tuple[float, float]:
    """Events per second draining a backlog of `count` with `relays` relays; statements per
    event."""
    backlog(bench, count)
    app = bench.app()
    workers = [app.relay(owner=f"bench-relay-{n}") for n in range(relays)]
    published: list[int] = []
    with bench.counted() as counted:
        started = time.perf_counter()
        threads = [
            threading.Thread(
                target=lambda r=r: published.append(
                    r.run(until_idle=True, max_seconds=600).published
                )
            )
            for r in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    app.close()
    assert sum(published) == count, (sum(published), count)
    return count / elapsed, counted["statements"] / count


def raw_produce(bench: Bench, count: int) -> float:
    """Messages per second kafka-python produces with one wait at the end."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**bench.kafka.producer_settings())
    started = time.perf_counter()
    futures = [
        producer.send("RawProduce", key=str(n % 50).encode(), value=b"x" * 200)
        for n in range(count)
    ]
    producer.flush()
    assert all(f.get(timeout=10).offset >= 0 for f in futures)
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


def check(bench: Bench) -> str:
    """Every run final, every outbox row published."""
    runs, outbox = TABLES.runs, TABLES.outbox
    with bench.engine.connect() as connection:
        rows = connection.execute(select(runs.c.state, func.count()).group_by(runs.c.state))
        states: dict[str, int] = {state: count for state, count in rows}
        pending = connection.execute(
            select(func.count()).select_from(outbox).where(outbox.c.status != "published")
        ).scalar_one()
    assert pending == 0, f"{pending} outbox rows not published"
    assert set(states) <= {"published"}, states
    return f"all {sum(states.values())} runs published, every outbox row published"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default=os.environ.get("FSM_BENCH_DB_URL", DEFAULT_DB))
    parser.add_argument("--updates", type=int, default=300, help="updates per timing")
    parser.add_argument("--backlog", type=int, default=1000, help="events per relay timing")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", default="1,2,4,8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the backlog's failed publishes are on purpose
    threads = [int(n) for n in args.threads.split(",")]

    with LocalBroker() as broker, schema(args.db_url) as url:
        engine = create_engine(url)
        init_db(engine, extra=FLOW_TABLES)
        counter = Counter()
        event.listen(engine, "before_cursor_execute", counter.hook)
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        bench = Bench(engine, kafka, counter)
        hand_written(bench, 20)  # warm up: topics, connections
        flow(bench, 20)
        rates: dict[str, list[float]] = {}
        statements: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            rates.setdefault("hand-written loop", []).append(hand_written(bench, args.updates))
            for n in threads:
                rate, per = flow(bench, args.updates, n)
                rates.setdefault(f"flow, {n} thread(s)", []).append(rate)
                statements.setdefault("per update (flow)", []).append(per)
            for n in threads:
                rate = async_flow(bench, args.updates, n)
                rates.setdefault(f"async flow, {n} task(s)", []).append(rate)
            for n in (1, 3):
                rate, per = relay(bench, args.backlog, n)
                rates.setdefault(f"relay draining {args.backlog}, {n} relay(s)", []).append(rate)
                statements.setdefault("per relayed event", []).append(per)
            rates.setdefault("raw produce (kafka-python)", []).append(
                raw_produce(bench, args.backlog)
            )
        verdict = check(bench)
        engine.dispose()

    shown = make_url(args.db_url).set(password=None).render_as_string()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; database {shown}; broker Tansu (local)"
    )
    print(f"{args.rounds} rounds, {args.updates} updates, backlog {args.backlog}; median rates\n")
    hand = statistics.median(rates["hand-written loop"])
    raw = statistics.median(rates["raw produce (kafka-python)"])
    print("| path | rate (/s) | ratio |\n|---|---:|---:|")
    for name, values in rates.items():
        rate = statistics.median(values)
        base = raw if name.startswith(("relay", "raw")) else hand
        against = "raw produce" if base is raw else "hand-written"
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x {against} |")
    for name, values in statements.items():
        print(f"\nSQL statements {name}: {statistics.median(values):.1f}")
    print(f"\ncheck: {verdict}")


@contextmanager
def schema(db_url: str) -> Any:
    """`db_url` itself for SQLite; for PostgreSQL a schema of its own, dropped afterwards."""
    if not db_url.startswith("postgresql"):
        yield db_url
        return
    name = f"fsm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(db_url)
    with admin.begin() as connection:
        connection.execute(text(f'create schema "{name}"'))
    try:
        yield (
            make_url(db_url)
            .update_query_dict({"options": f"-csearch_path={name}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'drop schema if exists "{name}" cascade'))
        admin.dispose()


if __name__ == "__main__":
    main()
