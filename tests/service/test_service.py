"""The example service over HTTP: its answers, and a bounded load with the broker stopped."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.sqlalchemy import TABLES
from examples.service.app import create_app
from fsm.defaults import utc_now
from tests.campaign.observer import Observer
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.sql import FlowSqlUnitOfWork, users

from .conftest import USERS, Service

STATUSES = ("active", "suspended")


def client_of(service: Service) -> httpx.AsyncClient:
    """A client of `service` that never reuses a connection idle for 1 s or more: uvicorn
    closes one idle for 5 s (its keep-alive timeout), httpx keeps one for 5 s by default,
    and a request sent on it as the server closes it fails (ReadError, or "Server
    disconnected") — the test's pauses between phases (draining, broker restarts) last
    that long."""
    return httpx.AsyncClient(
        base_url=service.url, timeout=60, limits=httpx.Limits(keepalive_expiry=1.0)
    )


def post(service: Service, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=30)


class TestAnswers:
    def test_update_get_and_resume(self, service: Service) -> None:
        """An update returns its run (published, with its event id); GET returns it with its
        history; resume on a finished run changes nothing."""
        answer = post(service, "/users/1/status", {"new_status": "suspended"})
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert run["state"] == "published" and run["event_id"]
        got = httpx.get(f"{service.url}/runs/{run['run_id']}", timeout=30).json()
        assert [(h["source"], h["target"]) for h in got["history"]] == [
            ("received", "status_updated"),
            ("status_updated", "published"),
        ]
        assert got["history"][1]["outcome"] == {"event_id": run["event_id"]}
        resumed = post(service, f"/runs/{run['run_id']}/events", {"event": "resume"})
        assert resumed.status_code == 200 and resumed.json()["history"] == got["history"]

    def test_bad_input_is_a_one_line_422_naming_the_field(self, service: Service) -> None:
        """Each bad payload is refused with 422 and one line naming what is wrong."""
        cases = [
            ("/users/1/status", {"new_status": "gone"}, "new_status must be one of "),
            ("/users/x/status", {"new_status": "active"}, "user_id must be a positive"),
            ("/users/1/status", {"status": "active"}, "unknown field 'status'; allowed"),
            ("/users/1/status", [1], "body: must be a JSON object"),
            ("/users/1/status", {"new_status": "active", "idempotency_key": 5}, "idempotency_key"),
            (
                "/users/1/status",
                {"new_status": "active", "idempotency_key": ""},
                "idempotency_key: ",
            ),
            ("/runs/r1/events", {"event": "publish"}, "event must be one of resume"),
        ]
        for path, body, message in cases:
            answer = post(service, path, body)
            assert answer.status_code == 422, (path, body, answer.text)
            assert message in answer.json()["error"] and "\n" not in answer.json()["error"]
        broken = httpx.post(f"{service.url}/users/1/status", content=b"{", timeout=30)
        assert broken.status_code == 422 and "body: not JSON" in broken.json()["error"]

    def test_conflicts_are_409_and_unknown_runs_404(self, service: Service) -> None:
        """An idempotency key reused for another change is a 409; an unknown run a 404."""
        first = post(
            service, "/users/2/status", {"new_status": "suspended", "idempotency_key": "k"}
        )
        assert first.status_code == 200
        again = post(
            service, "/users/2/status", {"new_status": "suspended", "idempotency_key": "k"}
        )
        assert again.json()["run_id"] == first.json()["run_id"]
        other = post(
            service, "/users/3/status", {"new_status": "suspended", "idempotency_key": "k"}
        )
        assert other.status_code == 409 and "a different change needs a new key" in other.text
        missing = httpx.get(f"{service.url}/runs/nope", timeout=30)
        assert missing.status_code == 404 and "nope" in missing.json()["error"]


@dataclass
class Load:
    """What the load's requests were answered."""

    codes: Counter[int] = field(default_factory=Counter)
    runs: list[str] = field(default_factory=list)
    lag: list[dict[str, float]] = field(default_factory=list)


async def phase(client: httpx.AsyncClient, load: Load, requests: int, rng: random.Random) -> None:
    """`requests` requests by 20 concurrent workers: mostly updates of 20 users, some with
    an idempotency key sent twice at once, some reads and resumes of earlier runs."""
    todo = list(range(requests))

    async def answered(method: str, path: str, body: object = None) -> dict[str, Any]:
        response = await client.request(method, path, json=body)
        load.codes[response.status_code] += 1
        assert response.status_code < 500, response.text
        return response.json() if response.status_code == 200 else {}

    async def worker() -> None:
        while todo:
            todo.pop()
            kind = rng.random()
            user, status = rng.randint(1, USERS), rng.choice(STATUSES)
            path, body = f"/users/{user}/status", {"new_status": status}
            if kind < 0.1 and load.runs:
                await answered("GET", f"/runs/{rng.choice(load.runs)}")
            elif kind < 0.15 and load.runs:
                await answered("POST", f"/runs/{rng.choice(load.runs)}/events", {"event": "resume"})
            elif kind < 0.3:  # a client's retry racing its first try: one applies
                body["idempotency_key"] = f"key-{rng.random()}"
                twice = await asyncio.gather(
                    answered("POST", path, body), answered("POST", path, body)
                )
                load.runs += [run["run_id"] for run in twice if run]
            else:
                run = await answered("POST", path, body)
                load.runs += [run["run_id"]] if run else []

    await asyncio.gather(*(worker() for _ in range(20)))
    load.lag.append((await client.get("/lag")).json())


async def drained(engine: Engine, timeout: float) -> bool:
    """True once no outbox row is pending and every run is final, as the relay's drain
    promises (checked every 0.2 s up to `timeout`)."""
    deadline = time.monotonic() + timeout
    unfinished = select(TABLES.runs.c.id).where(TABLES.runs.c.finished.is_(False)).limit(1)
    while time.monotonic() < deadline:
        with FlowSqlUnitOfWork(engine) as uow:
            pending = uow.outbox.counts().get("pending", 0)
        with engine.connect() as connection:
            running = connection.execute(unfinished).first()
        if not pending and running is None:
            return True
        await asyncio.sleep(0.2)
    return False


class TestLoad:
    @pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
    async def test_no_lost_update_and_no_stalled_loop_with_the_broker_stopped(
        self, engine: Engine, db_url: str, relaying_service: Service, broker: LocalBroker
    ) -> None:
        """400 requests, 20 at a time, in three phases: broker up, stopped, restarted; the
        service's own relay task publishes what failed. No 5xx; every committed event is on
        the topic as an independent consumer saw it, each user's in commit order; each
        user's status is its last event's; the loop is never held for a publish's bound."""
        service = relaying_service
        observer = Observer(broker.bootstrap_servers, TOPIC)
        observer.start()
        observer.open(1)
        load, rng = Load(), random.Random(11)
        async with client_of(service) as client:
            await phase(client, load, 140, rng)
            # The local broker keeps nothing across a restart: what the relay task publishes
            # to this one after the observer stopped reading it is lost to the check. Events
            # queued behind an earlier one of their user are the relay's, up to its idle
            # interval after the last answer: wait until it has published them all.
            assert await drained(engine, timeout=90), "the relay left phase 1's events pending"
            marks = {"phase 1 drained": utc_now()}
            assert observer.catch_up(15)
            observer.close()
            marks["observer closed"] = utc_now()
            broker.stop()
            marks["broker stopped"] = utc_now()
            await phase(client, load, 120, rng)
            broker.start()
            observer.open(2)
            await phase(client, load, 140, rng)
            assert await drained(engine, timeout=90), "the service's relay left events pending"
            load.lag.append((await client.get("/lag")).json())
        assert observer.catch_up(15)
        observer.stop()
        print(f"\nanswers {dict(load.codes)}; loop lag per phase {load.lag}")

        assert sum(load.codes.values()) >= 400 and not any(c >= 500 for c in load.codes)
        assert load.codes[409] > 0  # the racing retries
        # A send blocking the loop would hold it for a publish bound (800 ms, max_block_ms)
        # per request, one after another, while the broker is down: seconds. The 50 ms goal
        # is met by the publisher alone (tests/flow/test_kafka_async.py) and by this load on
        # SQLite at the 99th percentile; on PostgreSQL, on a machine whose run queue is
        # several times its cores, the loop is late by hundreds of ms under this load with
        # the broker up as well (docs/service.md has the figures): not asserted here.
        assert max(lag["max_ms"] for lag in load.lag) < 1000, load.lag
        outbox = TABLES.outbox
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    outbox.c.id,
                    outbox.c.event_id,
                    outbox.c.key,
                    outbox.c.value,
                    outbox.c.status,
                    outbox.c.attempts,
                    outbox.c.published_at,
                    outbox.c.published_by,
                ).order_by(outbox.c.id)
            ).all()
            statuses = dict(connection.execute(select(users.c.id, users.c.status)).all())
        assert rows and {row.status for row in rows} == {"published"}
        first_seen: dict[str, int] = {}
        for sighting in observer.sightings:
            first_seen.setdefault(sighting.event_id, sighting.seq)
        unseen = [
            f"{row.event_id} (key {row.key}, attempts {row.attempts}) published at "
            f"{row.published_at} by {row.published_by}"
            for row in rows
            if row.event_id not in first_seen
        ]
        assert not unseen, f"published but never on the topic: {unseen}; {marks}"
        for user in range(1, USERS + 1):
            mine = [row for row in rows if row.key == str(user)]
            seen_order = sorted(mine, key=lambda row: first_seen[row.event_id])
            assert [r.id for r in seen_order] == [r.id for r in mine], f"user {user} out of order"
            events = [UserStatusChanged.decode(row.value) for row in mine]
            assert all(a.new_status == b.old_status for a, b in pairwise(events))
            last = events[-1].new_status.value if events else "active"
            assert statuses[user] == last, f"user {user} is {statuses[user]}, last event {last}"


class TestRelayTask:
    @pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
    async def test_the_services_relay_publishes_what_failed(
        self, engine: Engine, relaying_service: Service, broker: LocalBroker
    ) -> None:
        """With `--relay`, updates committed while the broker is down are published by the
        service's own relay task once it is back: nothing is left pending."""
        async with client_of(relaying_service) as client:
            broker.stop()
            for user in (1, 2, 3):
                answer = await client.post(
                    f"/users/{user}/status", json={"new_status": "suspended"}
                )
                assert answer.json()["state"] == "publish_failed", answer.text
            broker.start()
            assert await drained(engine, timeout=90), "the service's relay left events pending"


class TestWarmUp:
    async def test_what_startup_made_is_frozen_before_serving(
        self, tmp_path: Path, broker: LocalBroker
    ) -> None:
        """The lifespan moves what startup made out of the collector's sight (gc.freeze)
        before the first request, and back once the service stops."""
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        app = create_app(f"sqlite:///{tmp_path / 'service.sqlite3'}", kafka, seed_users=1)
        assert gc.get_freeze_count() == 0
        try:
            async with app.router.lifespan_context(app):
                assert gc.get_freeze_count() > 0
            assert gc.get_freeze_count() == 0
        finally:
            gc.unfreeze()
