"""The operator's commands end to end (`fsm runs`, `fsm outbox`) through the real CLI, on a
database holding runs of the flow in every state a run is stored in, and of an example
machine, on SQLite and PostgreSQL; a dead-lettered event re-driven to the real broker."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update

from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer
from adapters.memory import FakePublisher
from adapters.sqlalchemy import SqlUnitOfWork
from fsm import PersistentMachine
from fsm.cli import main
from fsm.defaults import utc_now
from fsm.examples import hold, ping
from fsm.outbox import OutboxMessage
from fsm.persistence import default_worker
from tests.clock import Clock
from tests.flow.cli_support import one_line_error
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import TOPIC
from userstatus.flow import FlowState
from userstatus.orchestrator import RunNotSettled
from userstatus.relay import flow_runs

from .conftest import sql_app

FLOW = "userstatus.relay:flow_runs"
HOLD = "fsm.examples:hold"
PING = "fsm.examples:ping"


class Exploding:
    """A publisher whose call fails outright (not a PublishError): the process that took the
    step stops there, and the run stays in status_updated."""

    def publish(self, message: OutboxMessage) -> None:
        raise RuntimeError("the process died mid-publish")


@dataclass
class Seeded:
    """A database with runs in each stored state: run ids by state, and the app on it."""

    app: FlowApp
    url: str
    runs: dict[str, str]
    dead_event: str


def payload(user_id: int) -> UpdateUserStatusPayload:
    return UpdateUserStatusPayload(user_id, UserStatus.SUSPENDED)


@pytest.fixture
def seeded(db_url: str, broker: LocalBroker) -> Any:
    """The flow's runs in published, update_failed, status_updated, publish_failed and
    dead_lettered (received is never stored: a run is created with its first step), and
    hold's in authorized (one a week old, its timeout due), captured and voided."""
    app = sql_app(db_url, broker, max_attempts=1)
    with app.unit_of_work() as uow:
        for user_id in range(1, 6):
            uow.users.create(user_id, UserStatus.ACTIVE.value)
    down = FakePublisher()
    down.failing = True
    runs = {
        "published": app.orchestrator().perform(payload(1)).id,
        "update_failed": app.orchestrator().perform(payload(99)).id,
        "dead_lettered": app.orchestrator(down).perform(payload(2)).id,
    }
    relay = app.relay(down)
    with app.unit_of_work() as uow:  # the immediate publish's hold, let go for the relay
        uow.session.execute(update(uow.tables.outbox).values(next_attempt_at=utc_now()))
    report = relay.run(until_idle=True, max_seconds=30)
    assert len(report.dead_events) == 1
    runs["publish_failed"] = app.orchestrator(down).perform(payload(3)).id
    with pytest.raises(RunNotSettled) as stopped:
        app.orchestrator(Exploding()).perform(payload(4))
    runs["status_updated"] = stopped.value.run_id
    engine_uow = SqlUnitOfWork(app.engine)
    week_ago = Clock(utc_now() - timedelta(days=8))
    old = PersistentMachine(hold, engine_uow, clock=week_ago)
    runs["authorized_old"] = old.start().id
    holds = PersistentMachine(hold, engine_uow)
    runs["authorized"] = holds.start().id
    runs["captured"] = holds.start().send("capture").id
    runs["voided"] = holds.start().send("expire").id
    try:
        yield Seeded(app, db_url, runs, report.dead_events[0])
    finally:
        app.close()


def fsm(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `fsm argv`; expect success; its stdout."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def listed(capsys: pytest.CaptureFixture[str], url: str, *filters: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        fsm(capsys, "runs", "list", "--db-url", url, "--json", *filters)
    )["runs"]
    return found


def history(seeded: Seeded, run_id: str) -> list[tuple[str, str, str]]:
    uow = SqlUnitOfWork(seeded.app.engine)
    with uow:
        return [(h.source, h.trigger, h.target) for h in uow.runs.history(run_id)]


class TestRunsList:
    def test_every_state_is_listed(self, seeded: Seeded, capsys: Any) -> None:
        """Without filters, every stored run, in its stored state."""
        states = {r["id"]: r["state"] for r in listed(capsys, seeded.url)}
        assert {states[run_id] for run_id in seeded.runs.values()} == {
            "published",
            "update_failed",
            "status_updated",
            "publish_failed",
            "dead_lettered",
            "authorized",
            "captured",
            "voided",
        }

    def test_the_table_for_people(self, seeded: Seeded, capsys: Any) -> None:
        """A header and one aligned line per run; a finished run says so."""
        lines = fsm(capsys, "runs", "list", "--db-url", seeded.url).splitlines()
        assert lines[0].split() == ["ID", "MACHINE", "STATE", "IDLE", "UPDATED", "NOTE"]
        assert len(lines) == 1 + len(seeded.runs)
        captured = next(line for line in lines if seeded.runs["captured"] in line)
        assert captured.endswith("finished")
        assert lines[0].index("STATE") == captured.index("captured")

    def test_by_machine_and_state(self, seeded: Seeded, capsys: Any) -> None:
        """--machine NAME and --state keep those runs only."""
        found = listed(capsys, seeded.url, "--machine", "hold", "--state", "authorized")
        assert {r["id"] for r in found} == {
            seeded.runs["authorized"],
            seeded.runs["authorized_old"],
        }
        flow = listed(capsys, seeded.url, "--machine", "user_status_update")
        assert len(flow) == 5

    def test_older_than(self, seeded: Seeded, capsys: Any) -> None:
        """--older-than keeps the runs unchanged for longer than that."""
        found = listed(capsys, seeded.url, "--older-than", "7d")
        assert [r["id"] for r in found] == [seeded.runs["authorized_old"]]

    def test_stuck(self, seeded: Seeded, capsys: Any) -> None:
        """--stuck: a run left between steps past the grace, and a run whose timeout is due."""
        flow = listed(capsys, seeded.url, "--machine", FLOW, "--stuck", "--grace", "1s")
        assert [r["id"] for r in flow] == []  # the grace has not passed for status_updated
        import time

        time.sleep(1.1)
        flow = listed(capsys, seeded.url, "--machine", FLOW, "--stuck", "--grace", "1s")
        assert [r["id"] for r in flow] == [seeded.runs["status_updated"]]
        holds = listed(capsys, seeded.url, "--machine", HOLD, "--stuck")
        assert [r["id"] for r in holds] == [seeded.runs["authorized_old"]]

    def test_limit(self, seeded: Seeded, capsys: Any) -> None:
        """--limit caps the rows, least recently changed first."""
        found = listed(capsys, seeded.url, "--limit", "1")
        assert [r["id"] for r in found] == [seeded.runs["authorized_old"]]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--older-than", "5x"], "'5x' is not a duration; give a positive whole number"),
            (["--older-than", "0m"], "'0m' is not a duration"),
            (["--limit", "0"], "'0' is not a usable limit; give a whole number from 1"),
            (["--state", "nope"], "--state 'nope': no such state; known: authorized,"),
            (["--machine", "nope"], "--machine 'nope': no such machine; known: hold, user_"),
            (
                ["--machine", FLOW, "--state", "nope"],
                "no such state; known: dead_lettered, publish_failed, published, received,",
            ),
            (["--stuck"], "--stuck needs the definition: give --machine MODULE:ATTR"),
        ],
    )
    def test_bad_filters(self, seeded: Seeded, capsys: Any, args: list[str], message: str) -> None:
        """Each is one line naming what is allowed; exit 2."""
        assert message in one_line_error(capsys, ["runs", "list", "--db-url", seeded.url, *args])


class TestRunsShow:
    def test_history_context_and_path(self, seeded: Seeded, capsys: Any) -> None:
        """The run, its context, each step with its time and outcome, and how to draw it."""
        run_id = seeded.runs["dead_lettered"]
        out = fsm(capsys, "runs", "show", run_id, "--db-url", seeded.url)
        assert f"{run_id} of machine 'user_status_update'" in out
        assert '"user_id": 2' in out
        assert "path: received -> status_updated -> publish_failed -> dead_lettered" in out
        assert f"draw: fsm diagram userstatus.flow:machine --run {run_id} --db-url" in out
        steps = [
            line.split() for line in out.splitlines() if line.startswith("  ") and "--" not in line
        ]
        assert any(s[:1] == ["3"] and "DeadLettered" in s for s in steps), out

    def test_json(self, seeded: Seeded, capsys: Any) -> None:
        """--json: one document with the run, its context, history and path."""
        run_id = seeded.runs["captured"]
        shown = json.loads(fsm(capsys, "runs", "show", run_id, "--db-url", seeded.url, "--json"))
        assert shown["run"]["state"] == "captured" and shown["run"]["finished"] is True
        assert [s["trigger"] for s in shown["history"]] == ["capture"]
        assert shown["path"] == ["authorized", "captured"]

    def test_the_drawn_command_works(self, seeded: Seeded, capsys: Any) -> None:
        """The diagram command line it prints draws the run's path."""
        run_id = seeded.runs["published"]
        shown = json.loads(fsm(capsys, "runs", "show", run_id, "--db-url", seeded.url, "--json"))
        argv = [*shown["diagram"].split()[1:-2], "--format", "mermaid"]
        argv[argv.index("--db-url") + 1] = seeded.url
        assert "published" in fsm(capsys, *argv)

    def test_unknown_id(self, seeded: Seeded, capsys: Any) -> None:
        """A run that is not stored: one line."""
        line = one_line_error(capsys, ["runs", "show", "nope", "--db-url", seeded.url])
        assert "no stored run has id 'nope'" in line
        argv = ["runs", "send", "nope", "capture", "--machine", HOLD, "--db-url", seeded.url]
        assert "no stored run has id 'nope'" in one_line_error(capsys, argv)


class TestRunsSend:
    def test_an_event_takes_its_row(self, seeded: Seeded, capsys: Any) -> None:
        """The event is one step through the table, recorded in the history."""
        run_id = seeded.runs["authorized"]
        out = fsm(
            capsys, "runs", "send", run_id, "capture", "--machine", HOLD, "--db-url", seeded.url
        )
        assert f"run {run_id}: authorized --capture--> captured" in out
        assert history(seeded, run_id) == [("authorized", "capture", "captured")]

    def test_json(self, seeded: Seeded, capsys: Any) -> None:
        """--json: the run's state afterwards and each step the event led to."""
        run_id = seeded.runs["authorized"]
        argv = ["runs", "send", run_id, "expire", "--machine", HOLD, "--db-url", seeded.url]
        assert json.loads(fsm(capsys, *argv, "--json")) == {
            "run": run_id,
            "state": "voided",
            "finished": True,
            "steps": [{"source": "authorized", "trigger": "expire", "target": "voided"}],
        }

    @pytest.mark.parametrize(
        ("run", "event", "machine", "message"),
        [
            (
                "authorized",
                "nope",
                HOLD,
                "event 'nope' is not allowed here; allowed: 'capture', 'expire', 'void'",
            ),
            ("captured", "capture", HOLD, "captured"),
            ("authorized", "capture", FLOW, "belongs to machine 'hold', not 'user_status_upd"),
            (
                "publish_failed",
                "Published",
                FLOW,
                "Published is an outcome: actions and the relay report those, operators do not;"
                " events to send from 'publish_failed': none",
            ),
            ("authorized", "capture", "fsm.examples:nope", "has no attribute 'nope'"),
        ],
    )
    def test_refused_and_nothing_written(
        self, seeded: Seeded, capsys: Any, run: str, event: str, machine: str, message: str
    ) -> None:
        """Unknown events, finished runs, another machine's definition: one line, exit 2."""
        run_id = seeded.runs[run]
        before = history(seeded, run_id)
        argv = ["runs", "send", run_id, event, "--machine", machine, "--db-url", seeded.url]
        assert message in one_line_error(capsys, argv)
        assert history(seeded, run_id) == before

    def test_a_claimed_run_is_refused(self, seeded: Seeded, capsys: Any) -> None:
        """A run a worker holds is not moved under it: one line naming the holder."""
        run_id = seeded.runs["authorized"]
        worker = PersistentMachine(hold, SqlUnitOfWork(seeded.app.engine), worker="w1")
        assert worker.load(run_id).claim()
        argv = ["runs", "send", run_id, "capture", "--machine", HOLD, "--db-url", seeded.url]
        assert "is claimed by 'w1' until" in one_line_error(capsys, argv)
        assert history(seeded, run_id) == []

    def test_a_failed_step_is_one_line_with_logging_not_configured(
        self, engine: Engine, db_url: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no logging configured, as `fsm` starts, a step that fails is the command's
        one line: its WARNING on fsm.steps does not go out through logging's last resort."""
        run = PersistentMachine(ping, SqlUnitOfWork(engine)).start(context={"ok": False})
        run.send("start")
        monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own, for now
        monkeypatch.setattr(logging.getLogger("fsm.steps"), "handlers", [])
        argv = ["runs", "send", run.id, "finish", "--machine", PING, "--db-url", db_url]
        assert "every guard refused" in one_line_error(capsys, argv)


class TestRunsCancel:
    def test_cancel_is_the_machines_trigger(self, seeded: Seeded, capsys: Any) -> None:
        """hold declares cancel="void": the run takes its void row."""
        run_id = seeded.runs["authorized"]
        argv = ["runs", "cancel", run_id, "--machine", HOLD, "--db-url", seeded.url]
        assert f"run {run_id}: authorized --void--> voided" in fsm(capsys, *argv)
        assert history(seeded, run_id) == [("authorized", "void", "voided")]

    def test_a_machine_without_cancel_is_refused(self, seeded: Seeded, capsys: Any) -> None:
        """The flow declares no cancel: one line, nothing written."""
        run_id = seeded.runs["publish_failed"]
        before = history(seeded, run_id)
        argv = ["runs", "cancel", run_id, "--machine", FLOW, "--db-url", seeded.url]
        line = one_line_error(capsys, argv)
        assert "machine 'user_status_update' declares no cancel trigger" in line
        assert history(seeded, run_id) == before


class TestOutbox:
    def test_list_dead(self, seeded: Seeded, capsys: Any) -> None:
        """--dead lists the dead-lettered event, its run and its error."""
        out = fsm(capsys, "outbox", "list", "--dead", "--db-url", seeded.url)
        (row,) = [line for line in out.splitlines() if seeded.dead_event in line]
        assert "dead" in row and seeded.runs["dead_lettered"] in row and "broker unavailable" in row
        events = json.loads(fsm(capsys, "outbox", "list", "--db-url", seeded.url, "--json"))
        assert {e["status"] for e in events["events"]} == {"published", "pending", "dead"}

    def test_redrive_refusals(self, seeded: Seeded, capsys: Any) -> None:
        """A pending or unknown event, no machine, or none of both: one line, nothing written."""
        base = ["outbox", "redrive", "--db-url", seeded.url]
        assert "give one dead event's id, or --all-dead" in one_line_error(capsys, base)
        assert "no outbox event has id 'nope'" in one_line_error(capsys, [*base, "nope"])
        line = one_line_error(capsys, [*base, seeded.dead_event])
        assert "give its machine's definition as --machine MODULE:ATTR" in line
        line = one_line_error(capsys, [*base, seeded.dead_event, "--machine", HOLD])
        assert "belongs to machine 'user_status_update', not 'hold'" in line
        with SqlUnitOfWork(seeded.app.engine) as uow:
            pending = uow.outbox.entries(status="pending")[0].message.event_id
        line = one_line_error(capsys, [*base, pending, "--machine", FLOW])
        assert f"event {pending} is pending; only dead-lettered events are re-driven" in line
        assert history(seeded, seeded.runs["dead_lettered"])[-1][2] == "dead_lettered"

    def test_redriven_and_published(self, seeded: Seeded, capsys: Any) -> None:
        """The dead event goes back to pending, its run to publish_failed (in its history);
        the relay publishes it to the broker and the run ends published."""
        run_id = seeded.runs["dead_lettered"]
        argv = ["outbox", "redrive", "--all-dead", "--machine", FLOW, "--db-url", seeded.url]
        out = fsm(capsys, *argv)
        moved = f"run {run_id}: dead_lettered -> publish_failed"
        assert f"event {seeded.dead_event}: dead -> pending; {moved}" in out
        assert history(seeded, run_id)[-1] == ("dead_lettered", "Redriven", "publish_failed")
        report = seeded.app.relay().run(until_idle=True, max_seconds=30)
        assert report.published >= 1
        audit = AuditConsumer(seeded.app.kafka, TOPIC).read_all(
            expect={seeded.dead_event}, timeout=10, quiet=0.1
        )
        assert seeded.dead_event in audit.events
        assert flow_state(seeded, run_id) == FlowState.PUBLISHED
        shown = json.loads(fsm(capsys, "runs", "show", run_id, "--db-url", seeded.url, "--json"))
        assert [s["trigger"] for s in shown["history"]][-2:] == ["Redriven", "Published"]


def flow_state(seeded: Seeded, run_id: str) -> FlowState:
    runs = flow_runs(SqlUnitOfWork(seeded.app.engine), worker=default_worker())
    state: FlowState = runs.load(run_id).state
    return state
