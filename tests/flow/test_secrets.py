"""Secrets (Kafka passwords, a database URL's password) never in a repr, a message or a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.kafka.config import KafkaConfig
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from adapters.sqlalchemy import create_engine
from adapters.sqlalchemy.engine import DatabaseUrlError, parse_url, shown_url
from fsm.cli import main
from fsm.outbox import OutboxMessage, PublishError
from userstatus.app import FlowApp
from userstatus.demo import DemoOptions, init_schema
from userstatus.domain import UpdateUserStatusPayload, UserStatus

SASL = "sasl-s3cret"
SSL = "ssl-s3cret"
TOKEN = "t0ken-s3cret"
DB = "db-s3cret"

KAFKA = KafkaConfig(
    bootstrap_servers="127.0.0.1:1",
    security_protocol="SASL_SSL",
    sasl_mechanism="PLAIN",
    sasl_plain_username="app",
    sasl_plain_password=SASL,
    ssl_password=SSL,
    producer_extra={"sasl_oauth_token_provider": TOKEN, "linger_ms": 5},
    consumer_extra={"client_secret": TOKEN},
)
UNREACHABLE = f"postgresql+psycopg://app:{DB}@127.0.0.1:1/x?connect_timeout=1"
"""Nothing listens on port 1: connecting fails at once."""


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> tuple[int, str]:
    """Run `fsm argv`; its exit status, and stdout, stderr and the log lines together."""
    caplog.set_level("DEBUG")
    status = main(argv)
    out, err = capsys.readouterr()
    return status, "\n".join([out, err, caplog.text])


def leaked(text: str) -> list[str]:
    """The secrets (or their tails, for a password with an '@') found in `text`."""
    return [secret for secret in (SASL, SSL, TOKEN, DB, "ss-tail") if secret in text]


class TestKafkaConfigRepr:
    def test_repr_masks_the_passwords(self) -> None:
        """repr shows neither the SASL nor the SSL password, but says they are set."""
        shown = repr(KAFKA)
        assert leaked(shown) == []
        assert "sasl_plain_password='***'" in shown and "ssl_password='***'" in shown

    def test_str_and_format_mask_the_passwords(self) -> None:
        """str(), f-strings and %-formatting show no secret either."""
        assert leaked(str(KAFKA)) == []
        assert leaked(f"{KAFKA} {KAFKA!s}") == []
        assert leaked("%s %r" % (KAFKA, KAFKA)) == []  # noqa: UP031 - the style of log calls

    def test_extra_settings_named_like_secrets_are_masked(self) -> None:
        """Extras named with password, secret or token are masked; the others are shown."""
        shown = repr(KAFKA)
        assert "'sasl_oauth_token_provider': '***'" in shown
        assert "'client_secret': '***'" in shown
        assert "'linger_ms': 5" in shown

    def test_unset_passwords_show_as_none(self) -> None:
        """A password that is not set is shown as None, not as a mask."""
        assert "sasl_plain_password=None" in repr(KafkaConfig())

    def test_settings_still_carry_the_secrets(self) -> None:
        """kafka-python gets the real values: only what is shown is masked."""
        producer = KAFKA.producer_settings()
        consumer = KAFKA.consumer_settings()
        assert producer["sasl_plain_password"] == SASL and producer["ssl_password"] == SSL
        assert producer["sasl_oauth_token_provider"] == TOKEN
        assert consumer["sasl_plain_password"] == SASL and consumer["client_secret"] == TOKEN


class TestFlowAppRepr:
    def test_app_on_sqlite_shows_no_kafka_secret(self, tmp_path: Path) -> None:
        """A connected app's repr holds the Kafka settings, masked."""
        db_url = f"sqlite:///{tmp_path / 'secrets.sqlite3'}"
        init_schema(db_url)
        app = FlowApp.connect(db_url, KAFKA)
        try:
            assert "KafkaConfig(" in repr(app)
            assert leaked(repr(app)) == []
            assert leaked(str(app)) == []
        finally:
            app.close()

    def test_app_hides_the_database_password(self) -> None:
        """The engine in the app's repr shows its URL with the password hidden."""
        engine = create_engine(UNREACHABLE)  # connects only when used
        app = FlowApp(engine, KAFKA)
        try:
            assert "app:***@127.0.0.1:1" in repr(app)
            assert leaked(repr(app)) == []
        finally:
            app.close()

    def test_demo_options_show_no_secret(self) -> None:
        """The demo's options leave the URL out of their repr and mask the Kafka settings."""
        assert leaked(repr(DemoOptions(db_url=UNREACHABLE, kafka=KAFKA))) == []


class TestShownUrl:
    def test_password_is_hidden(self) -> None:
        """The password of a URL that parses is replaced; the rest is kept."""
        assert shown_url(UNREACHABLE) == (
            "postgresql+psycopg://app:***@127.0.0.1:1/x?connect_timeout=1"
        )

    def test_unencoded_at_in_the_password_is_hidden(self) -> None:
        """All up to the last '@' is hidden, where SQLAlchemy would show the password's tail."""
        url = "postgresql+psycopg://app:p@ss-tail@127.0.0.1/x"
        assert shown_url(url) == "postgresql+psycopg://app:***@127.0.0.1/x"

    def test_unparsable_url_is_hidden(self) -> None:
        """A URL SQLAlchemy cannot read still shows without its password."""
        assert shown_url(f"postgres ql://app:{DB}@h/x") == "postgres ql://app:***@h/x"
        assert shown_url(f"app:{DB}@h/x") == "app:***@h/x"

    def test_urls_without_credentials_are_unchanged(self) -> None:
        """SQLite paths and password-less URLs, even with an '@' in them, show as given."""
        for url in ("sqlite:///fsm.sqlite3", "sqlite:////tmp/a@b/x.db", "postgresql://app@h/x"):
            assert shown_url(url) == url

    def test_parse_errors_hide_the_password(self) -> None:
        """DatabaseUrlError names the URL with the password hidden."""
        for url in (f"postgres ql://app:{DB}@h/x", f"postgresql://app:{DB}@h:port/x"):
            with pytest.raises(DatabaseUrlError, match="is not a SQLAlchemy URL") as caught:
                parse_url(url)
            assert leaked(str(caught.value)) == []

    def test_unencoded_at_is_refused(self) -> None:
        """A password with a bare '@' is refused, not read as part of the host."""
        with pytest.raises(DatabaseUrlError, match="write it as %40") as caught:
            create_engine("postgresql+psycopg://app:p@ss-tail@127.0.0.1:1/x")
        assert leaked(str(caught.value)) == []


class TestCliDatabaseErrors:
    @pytest.mark.parametrize(
        "argv",
        [
            ["relay", "--bootstrap-servers", "127.0.0.1:1"],
            ["db", "init"],
            ["demo", "--bootstrap-servers", "127.0.0.1:1"],
            ["diagram", "userstatus.flow:machine", "--run", "r1"],
        ],
        ids=["relay", "db-init", "demo", "diagram-run"],
    )
    def test_unreachable_database(
        self,
        argv: list[str],
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A database that refuses the connection is reported without its password."""
        status, output = run_cli([*argv, "--db-url", UNREACHABLE], capsys, caplog)
        assert status == 2, output
        assert "127.0.0.1" in output  # the cause is named
        assert leaked(output) == []

    @pytest.mark.parametrize(
        "url",
        [
            f"postgres ql://app:{DB}@127.0.0.1:1/x",  # does not parse
            f"postgresql+psycopg://app:{DB}@127.0.0.1:port/x",  # a port that is no number
            "postgresql+psycopg://app:p@ss-tail@127.0.0.1:1/x",  # SQLAlchemy misreads the host
            f"postgresql+pg8000://app:{DB}@127.0.0.1:1/x",  # a driver that is not installed
        ],
        ids=["unparsable", "bad-port", "unencoded-at", "no-driver"],
    )
    @pytest.mark.parametrize(
        "argv",
        [["relay", "--bootstrap-servers", "127.0.0.1:1"], ["db", "init"], ["demo"]],
        ids=["relay", "db-init", "demo"],
    )
    def test_unusable_url(
        self,
        argv: list[str],
        url: str,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A URL that cannot be used is named in the error with its password hidden."""
        status, output = run_cli([*argv, "--db-url", url], capsys, caplog)
        assert status == 2, output
        assert "--db-url" in output and "app:***@" in output
        assert leaked(output) == []


class TestCliKafkaSecrets:
    def test_bad_kafka_settings(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A refused Kafka setting is reported without the SASL password given with it."""
        monkeypatch.setenv("FSM_KAFKA_SASL_PASSWORD", SASL)
        argv = ["relay", "--bootstrap-servers", "127.0.0.1:1", "--sasl-mechanism", "NOPE"]
        status, output = run_cli([*argv, "--db-url", "sqlite://"], capsys, caplog)
        assert status == 2 and "sasl_mechanism" in output
        assert leaked(output) == []

    def test_failed_publishes_are_logged_without_secrets(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A relay whose SASL broker is unreachable logs its failures without the password."""
        db_url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        init_schema(db_url)
        app = FlowApp.connect(db_url, KAFKA, retry=RetryPolicy(attempts=1, deadline=1.0))
        with app.unit_of_work() as uow:
            uow.users.create(1, "active")
        failing = FakePublisher()
        failing.failing = True  # the immediate publish fails: the relay has it to do
        app.orchestrator(failing).perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
        app.close()
        monkeypatch.setenv("FSM_KAFKA_SASL_PASSWORD", SASL)
        argv = ["relay", "--db-url", db_url, "--bootstrap-servers", "127.0.0.1:1"]
        argv += ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN"]
        argv += ["--sasl-username", "app", "--max-block-ms", "300", "--delivery-timeout-ms"]
        argv += ["300", "--max-attempts", "1", "--until-idle"]
        status, output = run_cli(argv, capsys, caplog)
        assert status == 1, output  # the event was dead-lettered after its one attempt
        assert "dead-lettered 1" in output
        assert leaked(output) == []


class TestPublisherErrors:
    def test_a_misspelled_secret_setting_is_not_repeated(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """kafka-python repeats settings it does not know; the publish error masks them."""
        config = KafkaConfig(
            bootstrap_servers="127.0.0.1:1", producer_extra={"sasl_plain_pasword": SASL}
        )
        caplog.set_level("DEBUG")
        with pytest.raises(PublishError) as caught:
            KafkaPublisher(config).publish(OutboxMessage("e1", "T", "1", b"{}"))
        assert "pasword" in str(caught.value)  # the setting is named, its value is not
        assert leaked(str(caught.value)) == [] and leaked(caplog.text) == []
