"""`fsm relay` and `fsm demo` from the command line: bad input, a clean stop, the main job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from adapters.kafka.broker import LocalBroker
from fsm.cli import main
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus

from .conftest import sql_app

ROOT = Path(__file__).resolve().parents[2]


class TestRelayCommand:
    def test_missing_bootstrap_servers(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without brokers the relay refuses to start with one line, exit status 2."""
        os.environ.pop("FSM_KAFKA_BOOTSTRAP_SERVERS", None)
        assert main(["relay", "--db-url", "sqlite://"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "--bootstrap-servers" in err

    def test_bad_security_protocol(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown security protocol is named with the allowed ones."""
        code = main(["relay", "--bootstrap-servers", "k:9092", "--security-protocol", "TLS"])
        assert code == 2
        assert "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in capsys.readouterr().err

    def test_bad_db_url(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A database URL that is not one is refused before anything connects."""
        assert main(["relay", "--bootstrap-servers", "k:9092", "--db-url", "nonsense"]) == 2
        assert "is not a SQLAlchemy URL" in capsys.readouterr().err

    def test_unreachable_database(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A database that does not answer is one line naming the cause, exit status 2."""
        url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
        assert main(["relay", "--bootstrap-servers", "k:9092", "--db-url", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fsm: error: cannot open the database: OperationalError")
        assert err.count("\n") == 1

    def test_until_idle_publishes_pending_events(self, tmp_path: Path, broker: LocalBroker) -> None:
        """`fsm relay --until-idle` publishes what an outage left pending, then exits 0."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        app = sql_app(db_url, broker)
        with app.unit_of_work() as uow:
            uow.users.create(1, "active")
        broker.stop()
        run = app.orchestrator().perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
        broker.start()
        args = ["relay", "--db-url", db_url, "--bootstrap-servers", broker.bootstrap_servers]
        assert main([*args, "--until-idle", "--idle-interval", "0.05"]) == 0
        assert app.runs().load(run.id).state == "published"
        app.close()

    def test_a_connection_dropped_at_start_is_tried_again(
        self,
        tmp_path: Path,
        broker: LocalBroker,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The database drops the relay's first connection (restarting, say): the relay
        tries again, logs why, and runs."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        assert main(["db", "init", "--db-url", db_url, "--with", "userstatus"]) == 0
        connect = FlowApp.connect
        dropped: list[str] = []

        def flaky(*args: Any, **options: Any) -> FlowApp:
            if not dropped:
                dropped.append("once")
                raise OperationalError("select 1", {}, Exception("server closed the connection"))
            return connect(*args, **options)

        monkeypatch.setattr(FlowApp, "connect", flaky)
        args = ["relay", "--db-url", db_url, "--bootstrap-servers", broker.bootstrap_servers]
        assert main([*args, "--until-idle"]) == 0
        assert dropped == ["once"]
        assert "opening the database failed (OperationalError" in caplog.text

    def test_sigterm_stops_cleanly(self, tmp_path: Path, broker: LocalBroker) -> None:
        """A running relay stops on SIGTERM within a second or so, exit status 0."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        assert main(["db", "init", "--db-url", db_url]) == 0
        process = subprocess.Popen(
            [sys.executable, "-m", "fsm", "relay", "--db-url", db_url,
             "--bootstrap-servers", broker.bootstrap_servers, "--idle-interval", "5"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        started = process.stderr.readline()
        assert "started" in started, started
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert time.monotonic() - sent < 3
        assert "stopped" in err


class TestRelayStopsWithoutLosing:
    def test_sigterm_mid_batch_loses_no_claimed_event(
        self, tmp_path: Path, broker: LocalBroker
    ) -> None:
        """SIGTERM while a batch is in hand: the relay exits, its claims come back later."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        app = sql_app(db_url, broker)
        with app.unit_of_work() as uow:
            for user_id in (1, 2, 3):
                uow.users.create(user_id, "active")
        broker.stop()
        runs = [
            app.orchestrator().perform(UpdateUserStatusPayload(u, UserStatus.CLOSED)).id
            for u in (1, 2, 3)
        ]
        process = subprocess.Popen(
            [sys.executable, "-m", "fsm", "relay", "--db-url", db_url,
             "--bootstrap-servers", broker.bootstrap_servers, "--lease-seconds", "60",
             "--request-timeout-ms", "500", "--delivery-timeout-ms", "800",
             "--max-block-ms", "500"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:  # wait until an attempt of the batch has failed
            if " failed: " in line and "attempt" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "stopped; published 0" in err
        with app.unit_of_work() as uow:
            assert uow.outbox.counts()["pending"] == 3  # nothing lost, nothing marked wrongly
        broker.start()
        time.sleep(0.6)  # the failed attempt's backoff; the other claims were released
        report = app.relay().run(until_idle=True, max_seconds=10)
        assert report.published == 3
        assert {app.runs().load(r).state for r in runs} == {"published"}
        app.close()


class TestDemoCommand:
    def test_demo_unreachable_database(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The demo pointed at a database that does not answer says so in one line."""
        url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
        assert main(["demo", "--json", "--db-url", url]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith("fsm: error: the demo cannot run: OperationalError")

    @pytest.mark.integration  # the demo starts and stops a broker of its own
    def test_demo_json_loses_nothing(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The main job on embedded defaults: one JSON object, zero events lost."""
        assert main(["demo", "--json"]) == 0
        out, err = capsys.readouterr()
        summary = json.loads(out)
        assert summary["events_lost"] == 0
        assert summary["events_published"] == summary["status_changes_committed"] > 0
        assert summary["runs_by_state"]["update_failed"] == 2  # a missing user, a closed one
        assert summary["runs_by_state"]["published"] == summary["events_published"]
        assert summary["duplicates"] >= 0
        assert summary["per_user_order_violations"] == 0
        assert "broker stopped" in err  # the outage really happened
        assert "publish_failed" in err
