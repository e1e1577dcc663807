"""fsm.faults and fsm.retry: telling transient errors, summaries without data, the retry loop."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from fsm.errors import CallbackError
from fsm.faults import TransientError, causes, describe_error, is_retryable, is_transient
from fsm.ports import ConcurrencyError, RunClaimed
from fsm.retry import RetryPolicy, backoff, retry


def integrity_error() -> IntegrityError:
    """A real SQLAlchemy error carrying its SQL and parameters."""
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("create table t (id integer primary key, secret text)"))
        connection.execute(text("insert into t values (1, 'card 4111111111111111')"))
    try:
        with engine.begin() as connection:
            connection.execute(
                text("insert into t values (:id, :secret)"),
                {"id": 1, "secret": "card 4111111111111111"},
            )
    except IntegrityError as error:
        return error
    raise AssertionError("the insert should have failed")


class TestCauses:
    def test_what_an_error_wraps_is_followed(self) -> None:
        """A CallbackError's `error`, a DB-API wrapper's `orig` (built here without a
        `__cause__`), then `__cause__`, in that order."""
        root = sqlite3.OperationalError("database is locked")
        dbapi = DBAPIError("SELECT 1", {}, root)
        assert dbapi.__cause__ is None
        outer = RuntimeError("step failed")
        outer.__cause__ = CallbackError("action", "f", dbapi, machine="m", run_id="r", state="s")
        assert list(causes(outer)) == [outer, outer.__cause__, dbapi, root]

    def test_a_loop_of_causes_ends(self) -> None:
        """Errors that name each other as cause are each given once."""
        first, second = ValueError("a"), ValueError("b")
        first.__cause__, second.__cause__ = second, first
        assert list(causes(first)) == [first, second]


class TestIsTransient:
    def test_pep_249_operational_errors_are(self) -> None:
        """A lost connection (OperationalError) is transient, wrapped or not."""
        error = OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
        assert is_transient(error)
        assert is_transient(sqlite3.OperationalError("disk I/O error"))

    def test_a_wrapped_one_is_found(self) -> None:
        """The engine's CallbackError around a transient error is transient too."""
        wrapped = CallbackError(
            "action", "f", TransientError("gone"), machine="m", run_id="r", state="s"
        )
        assert is_transient(wrapped)

    def test_refusals_are_not(self) -> None:
        """A constraint violation or a programming error will fail the same way again."""
        assert not is_transient(integrity_error())
        assert not is_transient(ValueError("bad"))

    def test_a_missing_table_or_column_is_not(self) -> None:
        """SQLite reports a missing table or column as an OperationalError: it stays
        missing whatever is tried again, wrapped or not."""
        missing = sqlite3.OperationalError("no such table: fsm_runs")
        assert not is_transient(missing)
        assert not is_transient(OperationalError("SELECT 1", {}, missing))
        assert not is_transient(sqlite3.OperationalError("no such column: runs.due_at"))

    def test_an_invalidated_connection_is(self) -> None:
        """An error SQLAlchemy marks as having invalidated the connection (a disconnect
        the driver reported as something else) is transient."""
        lost = DBAPIError("SELECT 1", {}, Exception("server closed"), connection_invalidated=True)
        assert is_transient(lost)
        assert not is_transient(DBAPIError("SELECT 1", {}, Exception("bad")))


class TestIsRetryable:
    def test_a_conflict_or_a_claim_is_worth_trying_again(self) -> None:
        """Someone else wrote first, or holds the run: reading again and retrying may
        pass, wrapped or not; a refusal is not retried."""
        conflict = ConcurrencyError("run", "r", expected=1, found=2)
        claimed = RunClaimed("r", "web-1", datetime(2026, 1, 1, tzinfo=UTC), 1)
        wrapped = CallbackError("action", "f", claimed, machine="m", run_id="r", state="s")
        assert all(is_retryable(e) for e in (conflict, claimed, wrapped, TransientError("x")))
        assert not is_retryable(ValueError("bad"))


class TestDescribeError:
    def test_no_sql_and_no_parameters(self) -> None:
        """The summary keeps the type and the first line; the statement and values stay out."""
        summary = describe_error(integrity_error())
        assert summary == "IntegrityError (sqlite3.IntegrityError): UNIQUE constraint failed: t.id"
        assert "4111" not in summary and "insert" not in summary.lower()

    def test_the_engine_wrapper_is_named_through(self) -> None:
        """A CallbackError is summarised by what it wraps."""
        wrapped = CallbackError(
            "action", "f", OSError("disk full"), machine="m", run_id="r", state="s"
        )
        assert describe_error(wrapped) == "OSError: disk full"

    @pytest.mark.parametrize(
        ("message", "summary"),
        [
            (
                "(psycopg.errors.AdminShutdown) terminating connection\n[SQL: UPDATE users]",
                "RuntimeError: terminating connection",
            ),
            ("(x.Error) value (3) refused", "RuntimeError: value (3) refused"),
            ("(no closing bracket", "RuntimeError: (no closing bracket"),
            ("", "RuntimeError"),
        ],
    )
    def test_the_first_line_without_the_drivers_prefix(self, message: str, summary: str) -> None:
        """A SQLAlchemy message carried as text ("(driver.Error) message", then the SQL)
        is summarised by its message alone; an empty message by the type alone."""
        assert describe_error(RuntimeError(message)) == summary

    def test_long_messages_are_cut(self) -> None:
        """A summary never exceeds 300 characters; one of exactly 300 is kept whole."""
        assert describe_error(ValueError("x" * 1000)) == "ValueError: " + "x" * 285 + "..."
        assert describe_error(ValueError("x" * 288)) == "ValueError: " + "x" * 288


class TestRetry:
    def test_retries_what_it_is_told_to_then_returns(self) -> None:
        """Two transient failures, then a result; the waits go to the injected sleep."""
        waits: list[float] = []
        calls: list[int] = []

        def flaky(attempt: int) -> str:
            calls.append(attempt)
            if attempt < 3:
                raise TransientError("again")
            return "done"

        policy = RetryPolicy(attempts=5, initial_backoff=0.1, jitter=0, deadline=10)
        assert retry(flaky, policy, retry_on=is_transient, sleep=waits.append) == "done"
        assert (calls, waits) == ([1, 2, 3], [0.1, 0.2])

    def test_an_error_it_refuses_is_raised_at_once(self) -> None:
        """A permanent error is not tried again."""
        calls: list[int] = []

        def broken(attempt: int) -> None:
            calls.append(attempt)
            raise ValueError("bad")

        with pytest.raises(ValueError):
            retry(broken, RetryPolicy(), retry_on=is_transient, sleep=lambda s: None)
        assert calls == [1]

    def test_gives_up_after_the_attempts(self) -> None:
        """The last error is raised once the policy's attempts are spent."""
        calls: list[int] = []

        def down(attempt: int) -> None:
            calls.append(attempt)
            raise TransientError(f"attempt {attempt}")

        with pytest.raises(TransientError, match="attempt 3"):
            retry(down, RetryPolicy(attempts=3), retry_on=is_transient, sleep=lambda s: None)
        assert calls == [1, 2, 3]

    def test_the_injected_clock_rand_and_on_retry_are_used(self) -> None:
        """`rand` spreads the waits, `on_retry` hears of each, and `clock` ends the tries."""
        now = [0.0]
        told: list[tuple[int, str, float]] = []

        def down(attempt: int) -> None:
            raise TransientError(f"attempt {attempt}")

        def sleep(seconds: float) -> None:
            now[0] += seconds

        policy = RetryPolicy(attempts=9, initial_backoff=1, max_backoff=8, jitter=0.5, deadline=2.5)
        with pytest.raises(TransientError, match="attempt 3"):
            retry(
                down,
                policy,
                retry_on=is_transient,
                sleep=sleep,
                clock=lambda: now[0],
                rand=lambda: 0.0,
                on_retry=lambda attempt, error, wait: told.append((attempt, str(error), wait)),
            )
        assert told == [(1, "attempt 1", 0.5), (2, "attempt 2", 1.0)]


class TestRetryPolicy:
    def test_a_wait_ending_at_the_deadline_is_allowed(self) -> None:
        """An attempt may start exactly at the deadline; one after it may not."""
        policy = RetryPolicy(attempts=5, deadline=2)
        assert not policy.gives_up(1, elapsed=1.5, upcoming_wait=0.5)
        assert policy.gives_up(1, elapsed=1.5, upcoming_wait=0.6)

    def test_every_problem_is_named(self) -> None:
        """A bad policy is refused with all its problems in one message."""
        with pytest.raises(ValueError) as refused:
            RetryPolicy(attempts=0, jitter=2)
        assert str(refused.value) == (
            "attempts must be at least 1, got 0; jitter must be a fraction from 0 to 1, got 2"
        )

    def test_jitter_may_be_the_whole_wait(self) -> None:
        """A jitter of 1 spreads a wait from nothing to twice itself, and is allowed."""
        assert RetryPolicy(jitter=1).wait(1, rand=lambda: 1.0) == 0.4

    def test_backoff_has_no_jitter_unless_asked(self) -> None:
        """backoff's waits are exact by default: initial, doubled per failure, capped."""
        assert [backoff(n, initial=0.5, maximum=3) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
