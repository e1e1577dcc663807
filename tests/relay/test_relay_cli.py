"""`fsm relay` exit status: a clean SIGTERM is 0 even after dead letters; --until-idle says 1."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from adapters.sqlalchemy.tables import TABLES
from fsm.cli import main
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "127.0.0.1:1"
"""No broker listens here: every publish fails within the short bounds below."""
FAST = ["--request-timeout-ms", "300", "--delivery-timeout-ms", "500", "--max-block-ms", "300"]


def one_event_left_to_the_relay(db_url: str) -> None:
    """A committed update whose immediate publish failed (attempt 1 of the event)."""
    from adapters.sqlalchemy import create_engine, init_db
    from userstatus.sql import FLOW_TABLES

    engine = create_engine(db_url)
    init_db(engine, extra=FLOW_TABLES)
    app = FlowApp(engine, KafkaConfig(bootstrap_servers=UNREACHABLE), retry=RetryPolicy(attempts=1))
    with app.unit_of_work() as uow:
        uow.users.create(1, "active")
    down = FakePublisher()
    down.failing = True
    app.orchestrator(down).perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
    app.close()


def relay_args(db_url: str) -> list[str]:
    """`fsm relay` on `db_url` against no broker, giving up at the second attempt."""
    return ["relay", "--db-url", db_url, "--bootstrap-servers", UNREACHABLE, "--max-attempts", "2",
            "--idle-interval", "5", *FAST]  # fmt: skip


class TestExitStatus:
    def test_sigterm_after_a_dead_letter_exits_0(self, tmp_path: Path) -> None:
        """A long-running relay that dead-lettered an event still stops cleanly: status 0."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        one_event_left_to_the_relay(db_url)
        process = subprocess.Popen(
            [sys.executable, "-m", "fsm", *relay_args(db_url)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        watchdog = threading.Timer(30, process.kill)  # a relay that never gets there fails
        watchdog.start()
        try:
            for line in process.stderr:
                if "DEAD-LETTERED" in line:
                    break
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
        finally:
            watchdog.cancel()
        assert process.returncode == 0, err
        assert "dead-lettered 1" in err

    def test_until_idle_with_a_dead_letter_exits_1(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A one-off `--until-idle` run that dead-lettered something says so with status 1."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        one_event_left_to_the_relay(db_url)
        assert main([*relay_args(db_url), "--until-idle"]) == 1
        assert "DEAD-LETTERED" in caplog.text

    @pytest.mark.integration  # starts the broker itself, after the database is prepared
    def test_until_idle_with_a_run_needing_an_operator_exits_1(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An event published whose run can never move: `--until-idle` says so with status 1."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        one_event_left_to_the_relay(db_url)
        engine = create_engine(db_url)
        with engine.begin() as connection:  # a state the flow does not have
            connection.execute(update(TABLES.runs).values(state="no_such_state"))
        engine.dispose()
        with LocalBroker() as broker:
            args = ["relay", "--db-url", db_url, "--bootstrap-servers", broker.bootstrap_servers]
            assert main([*args, "--until-idle", *FAST]) == 1
        assert "1 run(s) need an operator" in caplog.text
        assert "was recorded as Published" in caplog.text


class TestShortLease:
    def test_a_lease_shorter_than_an_attempt_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--lease-seconds 10` is refused before anything starts: one line, status 2."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        assert main([*relay_args(db_url), "--lease-seconds", "10"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "lease_seconds 10 is shorter than one publish attempt" in err
        assert "give at least 20" in err
        assert not (tmp_path / "relay.sqlite3").exists()


class Exploding:
    """A publisher whose call fails outright: the process that took the step stops there."""

    def publish(self, message: object) -> None:
        raise RuntimeError("the process died mid-publish")


class TestWithAWorker:
    def test_the_worker_resumes_beside_the_relay_and_both_stop(self, tmp_path: Path) -> None:
        """`fsm relay --worker`: a run left in status_updated (its event held away from the
        relay) is resumed by the worker in the same process; SIGTERM stops both, status 0."""
        from adapters.sqlalchemy import create_engine, init_db
        from fsm.defaults import utc_now
        from userstatus.orchestrator import RunNotSettled
        from userstatus.sql import FLOW_TABLES

        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        engine = create_engine(db_url)
        init_db(engine, extra=FLOW_TABLES)
        app = FlowApp(engine, KafkaConfig(bootstrap_servers=UNREACHABLE))
        with app.unit_of_work() as uow:
            uow.users.create(1, "active")
        with pytest.raises(RunNotSettled) as stopped:
            app.orchestrator(Exploding()).perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
        run_id = stopped.value.run_id
        with app.unit_of_work() as uow:  # only the worker may move it: the event held away
            outbox = uow.tables.outbox
            later = utc_now() + timedelta(hours=1)
            uow.session.execute(update(outbox).values(next_attempt_at=later))
        args = [*relay_args(db_url), "--worker", "--worker-grace-seconds", "0.1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "fsm", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 30
            while app.runs().load(run_id).state != FlowState.PUBLISH_FAILED:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
        finally:
            process.kill()
            app.close()
        assert process.returncode == 0, err
        assert "resumed 1 runs" in err and "relay " in err and ": stopped;" in err, err
