"""The reliable flow's throughput against a hand-written loop, and the relay against raw produce.

Run with `make bench-flow` (or `python benchmarks/flow_throughput.py --db-url URL`). One
process starts the local broker (Tansu), uses the database of `--db-url` (default
$FSM_BENCH_DB_URL, else the test PostgreSQL) in a schema of its own, and times in one run,
interleaved in rounds so that the ratios hold on a noisy machine:

- hand-written: per update, UPDATE the user under its version check and INSERT the outbox
  row, COMMIT; send to Kafka and wait for the acknowledgement; UPDATE the row published,
  COMMIT (the same guarantees as the flow, none of its bookkeeping); on PostgreSQL, the
  same loop keeping the flow's run and history rows as well (the flow's limit);
- the flow: `FlowApp.orchestrator().perform(payload)`, one update at a time, then with N
  threads and with N processes (one orchestrator each, distinct users);
- the async flow: `AsyncFlowApp.orchestrator().perform(payload)` with N tasks in one event
  loop (one orchestrator per update, distinct users), against the flow's N threads;
- the relay draining a backlog of pending events (their runs in publish_failed), with one
  relay and with three, as threads of this process and as processes of their own, and one
  relay draining a backlog on 50 users (long queues: a claim finds 50 heads);
- on PostgreSQL, a relay written by hand keeping the relay's records (leases, the runs
  moved to published, their history rows), draining the same backlog: the relay's limit;
- raw produce: kafka-python sending the same number of messages, acks=all, idempotent,
  waiting only once at the end;
- on PostgreSQL, the peer for durable steps: DBOS Transact doing the same job as a workflow
  (benchmarks/dbos_peer.py);
- after the rounds, the peak memory (tracemalloc) of one relay draining a tenth of the
  backlog and the whole of it.

It prints rates, ratios, SQL statements per update and per relayed event, each of issue 15's
goals with its verdict, and checks at the end that every committed event was acknowledged
and every run is final.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import multiprocessing
import os
import platform
import statistics
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dbos_peer import dbos_updates  # benchmarks/ is this script's directory
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.engine import make_url

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.memory import FakePublisher
from adapters.sqlalchemy import TABLES, create_async_engine, create_engine, init_db
from adapters.sqlalchemy.outbox import message_row
from fsm.defaults import new_id
from fsm.outbox import OutboxMessage
from fsm.relay import RelaySettings
from fsm.retry import RetryPolicy
from userstatus.app import AsyncFlowApp, FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import UserStatusChanged
from userstatus.flow import FlowState
from userstatus.sql import FLOW_TABLES, users

DBOS = "DBOS Transact workflow, one at a time"
HAND = "hand-written loop"
HAND_RUNS = "hand-written loop with run records"
RAW = "raw produce (kafka-python)"
HAND_RELAY = "hand-written relay with run records"
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
    next_user: int = 1000
    """User ids start here: well clear of the small integers a stored row holds."""
    busy: dict[str, list[float]] = field(default_factory=dict)
    """How busy the machine was (0 to 1, all cores) during each kind of timing (see cpu)."""

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
    def cpu(self, name: str) -> Any:
        """Record under `name` how busy the whole machine's CPUs were (every process: the
        benchmark, PostgreSQL, the broker) while the block ran; nothing where /proc/stat
        is missing (not Linux)."""
        before = _cpu_times()
        yield
        after = _cpu_times()
        if before is not None and after is not None and after[0] > before[0]:
            total, idle = after[0] - before[0], after[1] - before[1]
            self.busy.setdefault(name, []).append(1 - idle / total)

    @contextmanager
    def counted(self) -> Any:
        before = self.counter.statements
        box = {"statements": 0}
        yield box
        box["statements"] = self.counter.statements - before


RELAY = RelaySettings(batch_size=200, idle_interval=0.05)
KEYS = 50
"""The few users of the backlog with long queues: each claim of 200 finds only 50 heads."""
WARM = 6
"""Updates a worker process makes before it is timed: its connection, the topic's metadata,
and the statements psycopg prepares at their fifth use, as this process's pooled
connections are by the time its threads are timed."""


def _cpu_times() -> tuple[int, int] | None:
    """The machine's CPU time so far, all cores, in clock ticks: (total, idle and iowait)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(ticks), ticks[3] + ticks[4]


def now() -> Any:
    from fsm.defaults import utc_now

    return utc_now()


def hand_written(bench: Bench, count: int, runs: bool = False) -> float:
    """Updates per second of the loop a team would write by hand. With `runs`, on
    PostgreSQL, it keeps the flow's records besides: the run, created in the user's
    transaction with its first step's history row, then moved to published with its second
    in the outbox row's (a run's write and its history row are one statement, as in the
    flow), the outbox row the flow's event (its JSON value and headers, held from relays for
    a while). Still less than the flow does: no count of the user's pending events (the
    flow queues an update behind them), no lifecycle check in the user's UPDATE."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**bench.kafka.producer_settings())
    ids = bench.users(count)
    outbox = TABLES.outbox
    started = time.perf_counter()
    with bench.cpu(HAND_RUNS if runs else HAND), bench.engine.connect() as connection:
        for user_id in ids:
            with connection.begin():
                if runs:
                    event = UserStatusChanged(
                        uuid.uuid4().hex, user_id, UserStatus.ACTIVE, NEW, now(), new_id()
                    )
                    message = event.to_message("HandWritten")
                    row = message_row(message, created=now(), hold_until=now() + LEASE_TIME)
                    connection.execute(CREATE_RUN, _first_step(event))
                else:
                    message = OutboxMessage(
                        uuid.uuid4().hex, "HandWritten", str(user_id), NEW.value.encode()
                    )
                    row = message_row(message, created=now())
                changed = connection.execute(
                    text(
                        "update users set status = :status, version = version + 1, "
                        "updated_at = :now where id = :id and version = :version"
                    ),
                    {"status": NEW.value, "now": now(), "id": user_id, "version": 1},
                )
                assert changed.rowcount == 1
                connection.execute(outbox.insert(), row)
            metadata = producer.send(
                message.topic,
                key=message.key.encode(),
                value=message.value,
                headers=list(message.headers),
            ).get(timeout=10)
            assert metadata.offset >= 0
            with connection.begin():
                connection.execute(
                    outbox.update()
                    .where(outbox.c.event_id == message.event_id)
                    .values(status="published", published_at=now())
                )
                if runs:
                    moved = connection.execute(FINISH_RUN, _published(message, "status_updated"))
                    assert moved.rowcount == 1
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


HISTORY = (
    "insert into run_history (run_id, seq, source, trigger, target, outcome, at) select id, "
    "{seq}, {source}, {trigger}, {target}, cast({outcome} as jsonb), :now from run"
)
"""The history row of each run the CTE `run` before it returns (the hand-written statements)."""


def _published_step(source: str, outcome: str) -> str:
    """SQL inserting, for each run moved by the `run` CTE, its step from `source` to published."""
    return HISTORY.format(
        seq="(select max(seq) from run_history where run_id = run.id) + 1",
        source=source,
        trigger="'Published'",
        target="'published'",
        outcome=outcome,
    )


CREATE_RUN = text(
    "with run as (insert into runs (id, machine, state, context, version, finished, "
    "created_at, updated_at, claimed_by, claimed_until, attempt) values (:id, 'hand_written', "
    "'status_updated', cast(:context as jsonb), 1, false, :now, :now, 'hand', :until, 1) "
    "returning id) "
    + HISTORY.format(
        seq=1,
        source="'received'",
        trigger="'UserStatusUpdated'",
        target="'status_updated'",
        outcome=":outcome",
    )
)
FINISH_RUN = text(
    "with run as (update runs set state = 'published', version = version + 1, finished = true, "
    "updated_at = :now, claimed_by = null, claimed_until = null, attempt = 0 "
    "where id = :id and state = :source returning id) " + _published_step(":source", ":outcome")
)
"""A hand-written run's creation with its first step, and its move to published with the
step that took it there (the loop's from status_updated, the relay's from publish_failed)."""


def _first_step(event: UserStatusChanged) -> dict[str, Any]:
    """A hand-written run's first step: its context and outcome as JSON, the flow's."""
    user_id, status = event.user_id, event.new_status.value
    context = {
        "event": event.to_json(),
        "run_id": event.run_id,
        "request": uuid.uuid4().hex,
        "user_id": user_id,
        "new_status": status,
        "queued_behind": 0,
    }
    outcome = {"user_id": user_id, "new_status": status, "old_status": event.old_status.value}
    return {
        "id": event.run_id,
        "context": json.dumps(context),
        "outcome": json.dumps(outcome),
        "now": now(),
        "until": now() + LEASE_TIME,
    }


def _published(message: OutboxMessage, source: str) -> dict[str, Any]:
    """A hand-written run's move to published, from `source`, by `message`'s publish."""
    outcome = json.dumps({"event_id": message.event_id})
    return {"id": message.run_id, "source": source, "outcome": outcome, "now": now()}


def flow(bench: Bench, count: int, threads: int = 1) -> tuple[float, float]:
    """Updates per second of the flow with `threads` orchestrators; statements per update."""
    app = bench.app()
    per = count // threads
    batches = [bench.users(per) for _ in range(threads)]
    orchestrators = [app.orchestrator() for _ in range(threads)]
    for orchestrator in orchestrators:  # warm, as the processes: the producer, statements
        for user_id in bench.users(WARM):
            orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))
    failures: list[BaseException] = []

    def work(orchestrator: Any, ids: list[int]) -> None:
        try:
            for user_id in ids:
                run = orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))
                assert run.state == FlowState.PUBLISHED, (run.state, run.outcome)
        except BaseException as error:
            failures.append(error)

    with bench.counted() as counted, bench.cpu(f"flow, {threads} thread(s)"):
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


def flow_processes(bench: Bench, count: int, processes: int) -> float:
    """Updates per second of the flow in `processes` processes (one orchestrator each,
    distinct users), as a service scales past one interpreter's lock; timed from the moment
    every process is ready to the last one's end."""
    per = count // processes
    batches = [bench.users(per + WARM) for _ in range(processes)]
    elapsed, _ = in_processes(bench, _perform_all, batches)
    return per * processes / elapsed


def in_processes(
    bench: Bench,
    target: Callable[..., None],
    parts: Sequence[object],
    between: Callable[[], object] = lambda: None,
) -> tuple[float, list[Any]]:
    """`target(url, servers, part, (warm, ready), spans)` in a process of its own per part.
    Each warms up, waits at `warm`; `between()` runs once all are warm; then each waits at
    `ready` and puts (start, end, *more) on `spans`. The seconds from the first start to
    the last end, and each process's `more`."""
    url = bench.engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    barriers = context.Barrier(len(parts) + 1), context.Barrier(len(parts) + 1)
    spans: Any = context.Queue()
    workers = [
        context.Process(
            target=target, args=(url, bench.kafka.bootstrap_servers, part, barriers, spans)
        )
        for part in parts
    ]
    for worker in workers:
        worker.start()
    warm, ready = barriers
    warm.wait(timeout=120)
    between()
    ready.wait(timeout=120)
    times = [spans.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers), [w.exitcode for w in workers]
    elapsed = max(end for _, end, *_ in times) - min(start for start, *_ in times)
    return elapsed, [more for _, _, *more in times]


def _perform_all(url: str, servers: str, ids: list[int], barriers: Any, spans: Any) -> None:
    """In a worker process: the flow on its own engine, each user updated once; puts (start,
    end) on the wall clock on `spans`."""
    logging.basicConfig(level=logging.ERROR)
    engine = create_engine(url)
    app = FlowApp(engine, KafkaConfig(bootstrap_servers=servers), relay_settings=RELAY)
    orchestrator = app.orchestrator()
    try:
        for user_id in ids[:WARM]:  # connection, metadata, prepared statements
            orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))
        for barrier in barriers:  # warm, then ready
            barrier.wait(timeout=120)
        started = time.time()
        for user_id in ids[WARM:]:
            run = orchestrator.perform(UpdateUserStatusPayload(user_id, NEW))
            assert run.state == FlowState.PUBLISHED, (run.state, run.outcome)
        spans.put((started, time.time()))
    finally:
        app.close()
        engine.dispose()


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


def backlog(bench: Bench, count: int, keys: int | None = None) -> None:
    """`count` committed updates whose immediate publish failed, pending for the relay: one
    made by the flow, the others copies of its rows (user, run, history, outbox row) with
    their own run and event ids, and a user each or, with `keys`, one of `keys` users (a
    few users with long queues), events encoded by the flow's own code. Making 10,000
    through the flow would take most of the run."""
    app = FlowApp(bench.engine, bench.kafka, retry=RetryPolicy(attempts=1))
    down = FakePublisher()
    down.failing = True
    [user] = bench.users(1)
    assert user >= 1000, "the copies replace the template's user id wherever it is a value"
    run = app.orchestrator(down).perform(UpdateUserStatusPayload(user, NEW))
    app.close()
    assert run.state == FlowState.PUBLISH_FAILED, run.state
    runs, history, outbox = TABLES.runs, TABLES.history, TABLES.outbox
    ids = bench.users(count - 1) if keys is None else bench.users(keys)
    with bench.engine.begin() as connection:  # after users(): SQLite has one writer
        [row] = connection.execute(select(runs).where(runs.c.id == run.id)).mappings()
        steps = list(
            connection.execute(select(history).where(history.c.run_id == run.id)).mappings()
        )
        [message] = connection.execute(select(outbox).where(outbox.c.run_id == run.id)).mappings()
        made = UserStatusChanged.from_json(row["context"]["event"])
        copies: dict[str, list[dict[str, Any]]] = {"runs": [], "history": [], "outbox": []}
        for n in range(count - 1):
            user_id = ids[n % len(ids)]
            copy = replace(made, event_id=uuid.uuid4().hex, user_id=user_id, run_id=new_id())
            names = {made.event_id: copy.event_id, made.run_id: copy.run_id, user: user_id}
            context = _renamed(row["context"], names) | {"event": copy.to_json()}
            copies["runs"].append(_renamed(dict(row), names) | {"context": context})
            copies["history"] += [_renamed(dict(step), names) for step in steps]
            # The template's delivery state (its failed attempt), the copy's own message.
            state = {k: v for k, v in message.items() if k not in ("id", "headers")}
            fresh = message_row(copy.to_message(message["topic"]), created=message["created_at"])
            copies["outbox"].append(_renamed(state, names) | fresh | _delivery(message))
        connection.execute(runs.insert(), copies["runs"])
        connection.execute(history.insert(), copies["history"])
        connection.execute(outbox.insert(), copies["outbox"])
        connection.execute(
            users.update()
            .where(users.c.id.in_(ids))
            .values(status=NEW.value, version=users.c.version + 1)
        )


def _delivery(row: Any) -> dict[str, Any]:
    """What an outbox row says of its delivery attempts so far."""
    names = ("status", "attempts", "next_attempt_at", "last_error")
    return {name: row[name] for name in names}


def _renamed(value: Any, names: dict[Any, Any]) -> Any:
    """`value` with every leaf equal to a key of `names` replaced (JSON values, rows)."""
    if isinstance(value, dict):
        return {key: _renamed(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, names) for item in value]
    if isinstance(value, str | int) and not isinstance(value, bool) and value in names:
        return names[value]
    return value


def relay(bench: Bench, count: int, relays: int, keys: int | None = None) -> tuple[float, float]:
    """Events per second draining a backlog of `count` (on `keys` users, else one each) with
    `relays` relays; statements per event."""
    app = bench.app()
    workers = [app.relay(owner=f"bench-relay-{n}") for n in range(relays)]
    for worker in workers:  # warm, each its own small backlog: the producer, statements
        backlog(bench, 10)
        worker.run(until_idle=True, max_seconds=600)
    backlog(bench, count, keys)
    published: list[int] = []
    name = f"relay draining {count:,}" + (f" on {keys} keys" if keys else "")
    with bench.counted() as counted, bench.cpu(f"{name}, {relays} relay(s)"):
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


def hand_written_relay(bench: Bench, count: int) -> float:
    """Events per second of a relay written by hand on PostgreSQL (its limit), draining a
    backlog of `count`, keeping what the relay keeps: per batch, each key's oldest pending
    message found among the oldest pending ones and leased in its own transaction (two
    statements, as the relay's claim); the batch sent, every acknowledgement awaited; then
    in one transaction the rows marked published and their runs moved to published with a
    history row each (two statements). Nothing of the engine: no events, steps or hooks."""
    from kafka import KafkaProducer

    backlog(bench, count)
    producer = KafkaProducer(**bench.kafka.producer_settings())
    size = RELAY.batch_size
    published = 0
    started = time.perf_counter()
    with bench.cpu(HAND_RELAY), bench.engine.connect() as connection:
        while published < count:
            with connection.begin():
                heads = connection.execute(
                    HEADS, {"now": now(), "window": 4 * size, "limit": size}
                ).scalars()
                leased = {"ids": list(heads), "owner": "hand", "now": now()}
                rows = connection.execute(LEASE, leased | {"until": now() + LEASE_TIME}).all()
            assert rows, f"nothing to claim, {count - published} events still to publish"
            futures = [
                producer.send(
                    row.topic,
                    key=row.key.encode(),
                    value=row.value,
                    headers=[(name, base64.b64decode(value)) for name, value in row.headers],
                )
                for row in rows
            ]
            producer.flush()
            assert all(future.get(timeout=10).offset >= 0 for future in futures)
            with connection.begin():
                marked = connection.execute(
                    MARK, {"ids": [row.id for row in rows], "owner": "hand", "now": now()}
                )
                assert marked.rowcount == len(rows)
                outcomes = [json.dumps({"event_id": row.event_id}) for row in rows]
                runs = [row.run_id for row in rows]
                moved = connection.execute(
                    SETTLE, {"runs": runs, "outcomes": outcomes, "now": now()}
                )
                assert moved.rowcount == len(rows)
            published += len(rows)
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


LEASE_TIME = timedelta(seconds=30)
HEADS = text(
    "select id from (select id, next_attempt_at, lease_owner, lease_expires_at, "
    "row_number() over (partition by key order by id) as n from (select id, key, "
    "next_attempt_at, lease_owner, lease_expires_at from outbox where status = 'pending' "
    "order by id limit :window) as oldest) as heads where n = 1 and next_attempt_at <= :now "
    "and (lease_owner is null or lease_expires_at <= :now) order by id limit :limit"
)
LEASE = text(  # status || '': by the id's index, as the relay's, whatever the statistics say
    "update outbox set lease_owner = :owner, lease_expires_at = :until where id = "
    "any(array(select id from outbox where id = any(:ids) and (status || '') = 'pending' and "
    "(lease_owner is null or lease_expires_at <= :now) for update skip locked)) "
    "returning id, event_id, topic, key, value, headers, run_id"
)
MARK = text(
    "update outbox set status = 'published', published_at = :now, published_by = :owner, "
    "lease_owner = null, lease_expires_at = null where id = any(:ids) and lease_owner = :owner"
)
SETTLE = text(
    "with given as (select * from unnest(cast(:runs as text[]), cast(:outcomes as text[])) "
    "as given(id, outcome)), run as (update runs set state = 'published', "
    "version = runs.version + 1, finished = true, updated_at = :now, claimed_by = null, "
    "claimed_until = null, attempt = 0, due_at = null from given where runs.id = given.id "
    "and runs.state = 'publish_failed' returning runs.id, given.outcome) "
    + _published_step("'publish_failed'", "run.outcome")
)
"""The hand-written relay's statements (PostgreSQL)."""


def relay_processes(bench: Bench, count: int, relays: int) -> float:
    """Events per second draining a backlog of `count` with `relays` relays, each in a process
    of its own (as `fsm relay` runs, one per pod or host). The processes first drain a small
    backlog together (connections, topic metadata, statement caches), then the timed one
    from the moment every process is ready to the last one's end."""
    backlog(bench, 10 * relays)
    elapsed, published = in_processes(
        bench, _relay_all, list(range(relays)), between=lambda: backlog(bench, count)
    )
    assert sum(n for (n,) in published) == count, published
    return count / elapsed


def _relay_all(url: str, servers: str, number: int, barriers: Any, spans: Any) -> None:
    """In a relay process: one relay on its own engine draining the warm-up backlog, then,
    once every process is ready, the timed one; puts (start, end, events published) on
    `spans`."""
    logging.basicConfig(level=logging.ERROR)
    engine = create_engine(url)
    app = FlowApp(engine, KafkaConfig(bootstrap_servers=servers), relay_settings=RELAY)
    worker = app.relay(owner=f"bench-relay-process-{number}")
    try:
        worker.run(until_idle=True, max_seconds=600)
        for barrier in barriers:  # warm, then ready
            barrier.wait(timeout=120)
        started = time.time()
        published = worker.run(until_idle=True, max_seconds=600).published
        spans.put((started, time.time(), published))
    finally:
        app.close()
        engine.dispose()


def raw_produce(bench: Bench, count: int) -> float:
    """Messages per second kafka-python produces with one wait at the end."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**bench.kafka.producer_settings())
    started = time.perf_counter()
    with bench.cpu(RAW):
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


def peak_memory(bench: Bench, count: int) -> float:
    """MiB at most allocated (tracemalloc) by one relay draining a backlog of `count`."""
    backlog(bench, count)
    app = bench.app()
    relay = app.relay(owner="bench-memory")
    tracemalloc.start()
    try:
        published = relay.run(until_idle=True, max_seconds=600).published
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        app.close()
    assert published == count, (published, count)
    return peak / 2**20


@dataclass(frozen=True)
class Goal:
    """One of issue 15's goals: a ratio of two measured rates (or sizes), and its bar."""

    name: str
    ratio: float
    bar: float
    at_most: bool = False

    def __str__(self) -> str:
        met = self.ratio <= self.bar if self.at_most else self.ratio >= self.bar
        sign = "<=" if self.at_most else ">="
        met_or_not = "met" if met else "NOT met"
        return f"| {self.name} | {self.ratio:.2f}x | {sign} {self.bar:.1f}x | {met_or_not} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", default=os.environ.get("FSM_BENCH_DB_URL", DEFAULT_DB))
    parser.add_argument("--updates", type=int, default=300, help="updates per timing")
    parser.add_argument("--backlog", type=int, default=10_000, help="events per relay timing")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", default="1,2,4,8")
    parser.add_argument("--processes", default="2,8", help="'' for none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the backlog's failed publishes are on purpose
    threads = [int(n) for n in args.threads.split(",")]
    processes = [int(n) for n in args.processes.split(",") if n]

    began = datetime.now(UTC)
    with LocalBroker() as broker, schema(args.db_url) as url:
        engine = create_engine(url)
        init_db(engine, extra=FLOW_TABLES)
        counter = Counter()
        event.listen(engine, "before_cursor_execute", counter.hook)
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        bench = Bench(engine, kafka, counter)
        hand_written(bench, 20)  # warm up: topics, connections
        flow(bench, 20)
        raw_produce(bench, 100)
        bench.busy.clear()
        rates: dict[str, list[float]] = {}
        statements: dict[str, list[float]] = {}
        commits: list[float] = []
        relays = f"relay draining {args.backlog:,}"
        postgres = args.db_url.startswith("postgresql")
        for _ in range(args.rounds):
            rates.setdefault(HAND, []).append(hand_written(bench, args.updates))
            if postgres:
                rate = hand_written(bench, args.updates, runs=True)
                rates.setdefault(HAND_RUNS, []).append(rate)
            for n in threads:
                rate, per = flow(bench, args.updates, n)
                rates.setdefault(f"flow, {n} thread(s)", []).append(rate)
                statements.setdefault("per update (flow)", []).append(per)
            for n in processes:
                rate = flow_processes(bench, args.updates, n)
                rates.setdefault(f"flow, {n} process(es)", []).append(rate)
            for n in threads:
                rate = async_flow(bench, args.updates, n)
                rates.setdefault(f"async flow, {n} task(s)", []).append(rate)
            for n in (1, 3):
                rate, per = relay(bench, args.backlog, n)
                rates.setdefault(f"{relays}, {n} relay(s)", []).append(rate)
                statements.setdefault("per relayed event", []).append(per)
            rate, _ = relay(bench, args.backlog, 1, keys=KEYS)
            rates.setdefault(f"{relays} on {KEYS} keys, 1 relay(s)", []).append(rate)
            rate = relay_processes(bench, args.backlog, 3)
            rates.setdefault(f"{relays}, 3 relay processes", []).append(rate)
            rates.setdefault(RAW, []).append(raw_produce(bench, args.backlog))
            if postgres:  # the hand-written relay's SQL and DBOS's system database
                rate = hand_written_relay(bench, args.backlog)
                rates.setdefault(HAND_RELAY, []).append(rate)
                rate, per = dbos_updates(args.db_url, broker.bootstrap_servers, args.updates)
                rates.setdefault(DBOS, []).append(rate)
                commits.append(per)
        small = max(args.backlog // 10, 5 * RELAY.batch_size)  # several batches
        peak_memory(bench, small)  # warm up: the first drain fills caches that stay
        memory = {size: peak_memory(bench, size) for size in (small, args.backlog)}
        verdict = check(bench)
        engine.dispose()

    median = {name: statistics.median(values) for name, values in rates.items()}
    shown = make_url(args.db_url).set(password=None).render_as_string()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; database {shown}; broker Tansu (local)"
    )
    print(f"run from {began:%Y-%m-%d %H:%M} to {datetime.now(UTC):%H:%M} UTC")
    print(f"{args.rounds} rounds, {args.updates} updates, backlog {args.backlog}; median rates\n")
    hand = median[HAND]
    raw = median[RAW]
    print("| path | rate (/s) | ratio |\n|---|---:|---:|")
    for name, rate in median.items():
        base = raw if _relayed(name) else hand
        against = "raw produce" if base is raw else "hand-written"
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x {against} |")
    for name, values in statements.items():
        print(f"\nSQL statements {name}: {statistics.median(values):.2f}")
    if bench.busy:
        print(f"\nCPU of the whole machine ({os.cpu_count()} cores, every process), medians:")
    for name, values in bench.busy.items():
        busy, rate = statistics.median(values), median[name]
        cores = busy * (os.cpu_count() or 1)
        unit = "event" if _relayed(name) else "update"
        print(f"- {name}: {busy:.0%} busy, {cores / rate * 1000:.2f} ms of CPU per {unit}")
    print(
        "\npeak memory of one relay draining (tracemalloc): "
        + ", ".join(f"{size:,} events {mib:.1f} MiB" for size, mib in memory.items())
    )
    one = median.get("flow, 1 thread(s)")
    eight = max(median.get("flow, 8 thread(s)", 0), median.get("flow, 8 process(es)", 0))
    goals = [
        Goal("relay vs raw produce", median[f"{relays}, 1 relay(s)"] / raw, 0.5),
        Goal(
            "3 relays (threads or processes) vs 1",
            max(median[f"{relays}, 3 relay(s)"], median[f"{relays}, 3 relay processes"])
            / median[f"{relays}, 1 relay(s)"],
            1.0,
        ),
        Goal(
            f"relay memory, {args.backlog:,} vs {small:,} events",
            memory[args.backlog] / memory[small],
            1.2,
            at_most=True,
        ),
    ]
    if one is not None:
        goals.insert(0, Goal("flow one at a time vs hand-written", one / hand, 1.0))
        if eight:
            goals.insert(1, Goal("8 workers (threads or processes) vs 1", eight / one, 2.0))
    print("\n| goal | ratio | bar | |\n|---|---:|---:|---|")
    for goal in goals:
        print(goal)
    limits: list[tuple[str, float | None, str]] = [
        ("the flow one at a time", one, HAND_RUNS),
        ("the relay", median[f"{relays}, 1 relay(s)"], HAND_RELAY),
    ]
    if HAND_RELAY in median:
        print("\nagainst the same records written by hand (the limits of the flow and the relay):")
    for name, measured, limit in limits:
        if measured is not None and limit in median:
            print(f"- {name} vs {limit}: {measured / median[limit]:.2f}x")
    if commits:
        print(f"\nDBOS commits per update (pg_stat_database): {statistics.median(commits):.1f}")
        if one is not None:
            print(f"the flow one at a time vs DBOS: {one / median[DBOS]:.2f}x")
    print(f"\ncheck: {verdict}")


def _relayed(name: str) -> bool:
    """Whether the timing of `name` counts events relayed (else updates)."""
    return name.startswith(("relay", "raw", HAND_RELAY))


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
