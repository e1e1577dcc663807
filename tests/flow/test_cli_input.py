"""`fsm relay` and `fsm demo` refuse out-of-range flags in one line, before touching anything."""

from __future__ import annotations

import argparse

import pytest

from fsm.cli import UsageError
from tests.flow.cli_support import one_line_error
from userstatus.cli import kafka_config, relay_settings

# An address nobody listens on and an in-memory database: nothing here gets that far.
RELAY = ["relay", "--db-url", "sqlite://", "--bootstrap-servers", "127.0.0.1:1", "--until-idle"]


class TestRelayFlags:
    """Each relay flag names its allowed range when given a value outside it."""

    @pytest.mark.parametrize(
        ("flag", "value", "allowed"),
        [
            ("--lease-seconds", "nan", "a number above 0 and at most 86400"),
            ("--lease-seconds", "inf", "a number above 0 and at most 86400"),
            ("--lease-seconds", "1e400", "a number above 0 and at most 86400"),
            ("--lease-seconds", "1e15", "a number above 0 and at most 86400"),
            ("--lease-seconds", "0", "a number above 0 and at most 86400"),
            ("--max-age-hours", "1e20", "a number above 0 and at most 87600"),
            ("--max-age-hours", "inf", "a number above 0 and at most 87600"),
            ("--idle-interval", "1e20", "a number above 0 and at most 3600"),
            ("--idle-interval", "NaN", "a number above 0 and at most 3600"),
            ("--report-interval", "0", "a number above 0 and at most 86400"),
            ("--report-interval", "1e9", "a number above 0 and at most 86400"),
            ("--batch-size", "20000", "an integer from 1 to 10000"),
            ("--batch-size", "1.5", "an integer from 1 to 10000"),
            ("--batch-size", "0", "an integer from 1 to 10000"),
            ("--max-attempts", str(2**31), "an integer from 1 to 2147483647"),
            ("--max-attempts", "9" * 5000, "an integer from 1 to 2147483647"),
            ("--request-timeout-ms", "99999999999", "an integer from 1 to 2147483647"),
            ("--delivery-timeout-ms", "-5", "an integer from 1 to 2147483647"),
            ("--max-block-ms", "nan", "an integer from 1 to 2147483647"),
        ],
    )
    def test_out_of_range(
        self, capsys: pytest.CaptureFixture[str], flag: str, value: str, allowed: str
    ) -> None:
        """A value the relay could not work with is refused at parse time, naming the range."""
        line = one_line_error(capsys, [*RELAY, flag, value])
        assert line.startswith(f"fsm: error: argument {flag}: ")
        assert allowed in line
        assert len(line) < 200  # a 5000-digit value is not echoed back in full

    @pytest.mark.parametrize("owner", ["", "x" * 201, "a\x00b"])
    def test_bad_owner(self, capsys: pytest.CaptureFixture[str], owner: str) -> None:
        """An owner name the outbox would refuse at every claim is refused up front."""
        line = one_line_error(capsys, [*RELAY, "--owner", owner])
        assert line.startswith("fsm: error: argument --owner: ")
        assert "1 to 200 characters" in line

    def test_unknown_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        """argparse's own errors are one line too, pointing at --help."""
        line = one_line_error(capsys, [*RELAY, "--bogus"])
        assert "unrecognized arguments: --bogus" in line
        assert "--help)" in line

    def test_boundaries_are_allowed(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The largest allowed values pass the parser (the relay then fails on the database)."""
        argv = [*RELAY, "--lease-seconds", "86400", "--max-age-hours", "87600",
                "--idle-interval", "3600", "--batch-size", "10000",
                "--max-attempts", "2147483647", "--request-timeout-ms", "2147483647"]  # fmt: skip
        line = one_line_error(capsys, argv)
        assert "argument" not in line  # past the parser: sqlite:// has no tables


class TestDemoFlags:
    """`fsm demo` shares the Kafka flags and their bounds."""

    @pytest.mark.parametrize(
        ("flag", "value"),
        [
            ("--request-timeout-ms", "1e3"),
            ("--max-block-ms", "4294967296"),
            ("--max-block-ms", "0"),
        ],
    )
    def test_out_of_range(self, capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
        """A bad Kafka bound is refused before the demo starts a broker or a database."""
        line = one_line_error(capsys, ["demo", "--db-url", "nonsense", flag, value])
        assert line.startswith(f"fsm: error: argument {flag}: ")
        assert "an integer from 1 to 2147483647" in line


class TestSettingsErrors:
    """Whatever the parser lets through, a settings object that refuses it is a UsageError."""

    def test_relay_settings(self) -> None:
        """A ValueError or OverflowError building RelaySettings becomes one UsageError line."""
        args = argparse.Namespace(
            batch_size=10, lease_seconds=float("nan"), max_attempts=3, max_age_hours=1.0,
            idle_interval=1.0, report_interval=60.0,
        )  # fmt: skip
        with pytest.raises(UsageError, match=r"^relay settings: lease_seconds must be positive"):
            relay_settings(args)
        args.lease_seconds, args.max_age_hours = 1.0, 1e20
        with pytest.raises(UsageError, match=r"^relay settings: .*--max-age-hours"):
            relay_settings(args)

    def test_kafka_config(self) -> None:
        """A bad Kafka setting is one UsageError line naming it."""
        args = argparse.Namespace(
            bootstrap_servers=" , ", security_protocol="PLAINTEXT", sasl_mechanism=None,
            sasl_username=None, sasl_password=None, ssl_cafile=None, ssl_certfile=None,
            ssl_keyfile=None, request_timeout_ms=1, delivery_timeout_ms=1, max_block_ms=1,
        )  # fmt: skip
        with pytest.raises(UsageError, match=r"^Kafka settings: bootstrap_servers is empty"):
            kafka_config(args)
