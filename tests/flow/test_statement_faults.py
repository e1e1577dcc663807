"""One fault at every statement and commit of the flow's steps, on SQLite and PostgreSQL.

Scenarios: perform() with the broker up, perform() with it down, a relay settling a
publish_failed run. A dry run at collection (scratch database, fake publishers: statements
depend only on publish outcomes) numbers each one's statements and commits; each case then
runs it on a fresh database and the real broker with one fault armed, lets a fault-free
relay recover (its clock past the lease and the publish hold) and checks every run is final
and agrees with its outbox row and its user. Ids read `sqlite-perform-broker-up-stmt-7-transient`.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from adapters.sqlalchemy import create_engine
from adapters.sqlalchemy.tables import TABLES
from fsm.outbox import OutboxMessage, Publisher, PublishError
from fsm.relay import RelayReport, RelaySettings
from tests.clock import Clock
from tests.conftest import POSTGRES_URL
from tests.faults.injector import Fault, FaultInjector
from tests.schemas import fresh_schema
from userstatus.app import FlowApp, publish_grace
from userstatus.demo import init_schema
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState
from userstatus.orchestrator import RunNotSettled

from .conftest import fast_config

F = FlowState
USER, OLD, NEW = 1, UserStatus.ACTIVE, UserStatus.SUSPENDED
FINAL = frozenset({F.PUBLISHED, F.UPDATE_FAILED, F.DEAD_LETTERED})
LEASE_SECONDS = 30.0
RELAY_SECONDS = 300.0
"""How long, on its hand-moved clock, a relay may work before giving up."""
SETTINGS = RelaySettings(
    batch_size=20,
    lease_seconds=LEASE_SECONDS,
    max_attempts=50,
    backoff_initial=0.05,
    backoff_max=0.2,
    idle_interval=1.0,  # on the hand-moved clock: a held lease runs out in 30 idle rounds
)
DOWN = KafkaConfig("127.0.0.1:1", request_timeout_ms=200, delivery_timeout_ms=200, max_block_ms=200)
"""A broker that does not answer; a publish to it fails in about 0.2 s."""
BACKENDS = ("sqlite", "postgresql")
FAULTED, RECOVERY = "relay-under-fault", "recovery-relay"
"""The owners of the relay a fault hits and of the one that recovers afterwards."""


# -- one case's world -----------------------------------------------------------------------


@dataclass
class World:
    """The flow on one fresh database: a hand-moved clock, the injector, two publishers."""

    app: FlowApp
    clock: Clock
    injector: FaultInjector
    up: Publisher
    down: Publisher


@dataclass
class Result:
    """What the faulted part did: perform()'s run state or exception, the relays' reports."""

    returned: FlowState | None = None
    raised: BaseException | None = None
    reports: dict[str, RelayReport] = field(default_factory=dict)
    """By relay owner."""


@contextmanager
def world_on(db_url: str, kafka: KafkaConfig, up: Publisher, down: Publisher) -> Iterator[World]:
    """The flow on `db_url` (tables created, user 1 active), closed afterwards."""
    init_schema(db_url)
    clock = Clock()
    app = FlowApp.connect(
        db_url,
        kafka,
        retry=RetryPolicy(attempts=1, deadline=1.0),
        relay_settings=SETTINGS,
        clock=clock,
    )
    try:
        with app.unit_of_work() as uow:
            uow.users.create(USER, OLD.value)
        injector = FaultInjector(app.engine)
        yield World(app, clock, injector, up, down)
    finally:
        app.close()


def perform(world: World, publisher: Publisher) -> Result:
    """One status update of user 1 through a new orchestrator."""
    orchestrator = world.app.orchestrator(publisher)
    try:
        run = orchestrator.perform(UpdateUserStatusPayload(USER, NEW))
    except Exception as error:  # allowed: what matters is what is stored afterwards
        return Result(raised=error)
    return Result(returned=run.state)


def run_relay(world: World, owner: str) -> RelayReport:
    """A relay on the world's clock (its idle waits move the clock), until nothing is pending."""
    relay = world.app.relay(world.up, owner=owner)
    relay.sleep = world.clock.sleep
    return relay.run(until_idle=True, max_seconds=RELAY_SECONDS)


# -- the scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A fault-free set-up, then the part that runs with a fault armed."""

    prepare: Callable[[World], None]
    act: Callable[[World], Result]


def nothing(world: World) -> None:
    """No set-up beyond the world's own."""


def publish_failed_run(world: World) -> None:
    """A run in publish_failed, its event pending (the immediate publish failed)."""
    failing = FakePublisher()
    failing.failing = True
    assert perform(world, failing).returned == F.PUBLISH_FAILED


def relay_settles(world: World) -> Result:
    """A relay, the broker back, publishes the pending event and moves its run."""
    try:
        report = run_relay(world, FAULTED)
    except Exception as error:
        return Result(raised=error)
    return Result(reports={FAULTED: report})


SCENARIOS: dict[str, Scenario] = {
    "perform-broker-up": Scenario(nothing, lambda world: perform(world, world.up)),
    "perform-broker-down": Scenario(nothing, lambda world: perform(world, world.down)),
    "relay-settle": Scenario(publish_failed_run, relay_settles),
}


# -- the dry run: numbering each scenario's statements and commits, at collection ----------


@dataclass(frozen=True)
class DryRun:
    """A scenario's statements (their text) and commits, run without faults."""

    statements: tuple[str, ...]
    commits: int


@dataclass(frozen=True)
class Case:
    """One scenario with one fault, and what the dry run saw at that point."""

    scenario: str
    fault: Fault
    where: str

    def __str__(self) -> str:
        return f"{self.scenario}-{self.fault}"


@contextmanager
def scratch_database(backend: str) -> Iterator[str | None]:
    """An empty database of `backend` for the dry run; None if PostgreSQL does not answer."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/dry-run.sqlite3"
        return
    probe = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with probe.connect():
            pass
    except Exception:
        yield None
        return
    finally:
        probe.dispose()
    with fresh_schema(POSTGRES_URL, "fsm_dry") as url:
        yield url


def dry_run(db_url: str, kafka: KafkaConfig, up: Publisher, down: Publisher) -> dict[str, DryRun]:
    """Each scenario on its own fresh world with nothing armed: what it sent, counted."""
    found: dict[str, DryRun] = {}
    for name, scenario in SCENARIOS.items():
        with world_on(db_url, kafka, up, down) as world:
            scenario.prepare(world)
            world.injector.reset()
            scenario.act(world)
            found[name] = DryRun(tuple(world.injector.statements), world.injector.commits)
        _clear(db_url)
    return found


def _clear(db_url: str) -> None:
    """Drop the flow's tables, so the next scenario starts on an empty database."""
    from adapters.sqlalchemy import metadata
    from userstatus.sql import metadata as flow_metadata

    engine = create_engine(db_url)
    try:
        metadata.drop_all(engine)
        flow_metadata.drop_all(engine)
    finally:
        engine.dispose()


class BatchFake(FakePublisher):
    """A fake that publishes a batch as KafkaPublisher does (fsm.outbox.BatchPublisher): the
    relay then takes the same path, and sends the same statements, as with the real one."""

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        answers: list[Exception | None] = []
        for message in messages:
            try:
                self.publish(message)
            except PublishError as error:
                answers.append(error)
            else:
                answers.append(None)
        return answers


@functools.cache
def enumerated(backend: str) -> dict[str, DryRun] | None:
    """The dry runs of every scenario on `backend`, once per session (None: no PostgreSQL)."""
    working = BatchFake()
    failing = FakePublisher()
    failing.failing = True
    with scratch_database(backend) as db_url:
        if db_url is None:
            return None
        return dry_run(db_url, DOWN, working, failing)


def cases(runs: dict[str, DryRun]) -> list[Case]:
    """Every statement with a transient fault, every commit with both kinds."""
    found: list[Case] = []
    for name, run in runs.items():
        for number, statement in enumerate(run.statements, 1):
            where = " ".join(statement.split())[:100]
            found.append(Case(name, Fault("stmt", number), where))
        for number in range(1, run.commits + 1):
            for kind in ("transient", "lost-ack"):
                found.append(Case(name, Fault("commit", number, kind), f"commit {number}"))
    return found


def case_params() -> list[object]:
    """Each backend's cases, with `db_url` (indirect) set to that backend."""
    params: list[object] = []
    for backend in BACKENDS:
        runs = enumerated(backend)
        if runs is None:  # the db_url fixture skips it, or fails under FSM_REQUIRE_POSTGRES
            params.append(pytest.param(backend, None, id=f"{backend}-not-enumerated"))
            continue
        params += [pytest.param(backend, case, id=f"{backend}-{case}") for case in cases(runs)]
    return params


# -- what must hold after recovery ----------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What the database holds: runs by state, outbox rows by event, the user's status."""

    runs: dict[str, FlowState]
    events: dict[str, tuple[str | None, str]]
    """event id -> (run id, outbox status)"""
    user_status: str

    def __str__(self) -> str:
        runs = ", ".join(f"{run_id[:8]} {state}" for run_id, state in self.runs.items())
        events = ", ".join(
            f"{event_id[:8]} of {str(run_id)[:8]} {status}"
            for event_id, (run_id, status) in self.events.items()
        )
        return f"runs: {runs or '-'}; outbox: {events or '-'}; user {USER}: {self.user_status}"


def stored(world: World) -> Stored:
    """Read the runs, the outbox and the user, with nothing armed."""
    with world.app.unit_of_work() as uow:
        session = uow.session
        rows = session.execute(select(TABLES.runs.c.id, TABLES.runs.c.state))
        runs = {run_id: FlowState(label) for run_id, label in rows}
        events = {
            event_id: (run_id, status)
            for event_id, run_id, status in session.execute(
                select(TABLES.outbox.c.event_id, TABLES.outbox.c.run_id, TABLES.outbox.c.status)
            )
        }
        user = uow.users.get(USER)
    assert user is not None
    return Stored(runs, events, user.status)


def recover(world: World) -> RelayReport:
    """Past the lease and the publish hold, a fault-free relay works until nothing is pending."""
    world.injector.reset()
    hold = publish_grace(world.app.retry, world.app.kafka).total_seconds()
    world.clock.advance(LEASE_SECONDS + hold + 1)
    return run_relay(world, RECOVERY)


def problems(result: Result, after: Stored) -> list[str]:
    """Every invariant the stored state or the faulted part broke, as one line each."""
    found: list[str] = []
    if result.raised is not None and not isinstance(result.raised, RunNotSettled):
        found.append(f"raised {result.raised!r}: perform() may raise only RunNotSettled")
    if result.returned is not None and result.returned not in FINAL | {F.PUBLISH_FAILED}:
        found.append(f"perform() returned a run in {result.returned}")
    if len(after.runs) > 1:
        found.append(f"{len(after.runs)} runs stored for one update")
    if len(after.events) > 1:
        found.append(f"{len(after.events)} outbox rows for one update")
    for run_id, state in after.runs.items():
        rows = sorted(status for run, status in after.events.values() if run == run_id)
        if state not in FINAL:
            found.append(f"run {run_id[:8]} left in {state} after recovery")
        expected = {F.PUBLISHED: ["published"], F.UPDATE_FAILED: [], F.DEAD_LETTERED: ["dead"]}
        if state in expected and rows != expected[state]:
            found.append(f"run {run_id[:8]} is {state} but its outbox rows are {rows}")
    for event_id, (owner, status) in after.events.items():
        run_state = after.runs.get(owner) if owner is not None else None
        if run_state is None:
            found.append(f"outbox row {event_id[:8]} ({status}) has no stored run")
        elif status == "published" and run_state != F.PUBLISHED:
            found.append(f"outbox row {event_id[:8]} is published but its run is {run_state}")
        elif status == "dead" and run_state != F.DEAD_LETTERED:
            found.append(f"outbox row {event_id[:8]} is dead but its run is {run_state}")
        elif status == "pending":
            found.append(f"outbox row {event_id[:8]} left pending after recovery")
    states = sorted(after.runs.values())
    committed = any(state in (F.PUBLISHED, F.DEAD_LETTERED) for state in states)
    if set(states) <= FINAL and (after.user_status == NEW.value) != committed:
        shown = ", ".join(states) or "none"
        found.append(f"user {USER} is {after.user_status} while its runs are: {shown}")
    for relay, report in result.reports.items():
        if report.unsettled_runs:
            runs = ", ".join(run_id[:8] for run_id in report.unsettled_runs)
            found.append(f"{relay} reported run(s) {runs} as needing an operator")
    return found


# -- the tests ------------------------------------------------------------------------------


@dataclass
class Kafka:
    """The shared broker's settings and publishers: one that reaches it, one that cannot."""

    config: KafkaConfig
    up: KafkaPublisher
    down: KafkaPublisher


@pytest.fixture(scope="module")
def kafka() -> Iterator[Kafka]:
    """A real broker for the whole module, and the publishers every case shares."""
    with LocalBroker() as broker:
        config = fast_config(broker)
        shared = Kafka(config, KafkaPublisher(config), KafkaPublisher(DOWN))
        try:
            yield shared
        finally:
            shared.up.close()
            shared.down.close()


def backend_of(db_url: str) -> str:
    """sqlite or postgresql."""
    return make_url(db_url).get_backend_name()


class TestEnumeration:
    """The dry run at collection numbers what the real runs send."""

    @pytest.mark.parametrize("scenario", list(SCENARIOS))
    def test_real_broker_sends_what_the_dry_run_counted(
        self, db_url: str, scenario: str, kafka: Kafka
    ) -> None:
        """Unfaulted, against the real broker: the same statements and commits, all invariants."""
        runs = enumerated(backend_of(db_url))
        assert runs is not None, "PostgreSQL did not answer when the cases were enumerated"
        with world_on(db_url, kafka.config, kafka.up, kafka.down) as world:
            SCENARIOS[scenario].prepare(world)
            world.injector.reset()
            result = SCENARIOS[scenario].act(world)
            seen = DryRun(tuple(world.injector.statements), world.injector.commits)
            result.reports[RECOVERY] = recover(world)
            after = stored(world)
        assert seen == runs[scenario]
        assert problems(result, after) == []
        assert set(after.runs.values()) == {F.PUBLISHED}


class TestOneFault:
    """Any one fault, anywhere in a step: after recovery every run is final and consistent."""

    @pytest.mark.parametrize(("db_url", "case"), case_params(), indirect=["db_url"])
    def test_single_fault_then_recovery(self, db_url: str, case: Case | None, kafka: Kafka) -> None:
        """One fault armed in the scenario; after recovery the run and its outbox row agree."""
        if case is None:
            pytest.fail("PostgreSQL did not answer when the cases were enumerated")
        scenario = SCENARIOS[case.scenario]
        with world_on(db_url, kafka.config, kafka.up, kafka.down) as world:
            scenario.prepare(world)
            world.injector.arm(case.fault)
            result = scenario.act(world)
            fired = world.injector.fired
            ran = (len(world.injector.statements), world.injector.commits)
            result.reports[RECOVERY] = recover(world)
            after = stored(world)
        assert fired is not None, (
            f"{case}: the fault never fired; the run sent {ran[0]} statements and "
            f"{ran[1]} commits, the dry run had {case.where} there"
        )
        found = problems(result, after)
        raised = f"; perform() raised {result.raised!r}" if result.raised is not None else ""
        assert not found, (
            f"{backend_of(db_url)} {case} at {fired}{raised}\n  "
            + "\n  ".join(found)
            + f"\n  stored after recovery: {after}"
        )
