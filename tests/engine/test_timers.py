"""Timeouts on waiting states: declared with after=, checked with the table, drawn labelled."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fsm import DefinitionError, Machine, Row, State
from fsm.diagram import diagram
from fsm.examples import hold
from fsm.paths import row_paths
from fsm.timers import Timeout, check_timeouts, duration, timeout_of


def build(*states: State[str], rows: list[tuple[str, str, str]]) -> Machine[str]:
    return Machine("t", states=[*states, State("end", final=True)], transitions=rows)


class TestDeclaring:
    def test_a_trigger_named_or_the_default(self) -> None:
        """after=(span, trigger) names the trigger; after=span alone means "timeout"."""
        assert timeout_of(hold.state("authorized")) == Timeout(timedelta(days=7), "expire")
        plain = State("a", after=timedelta(hours=48))
        assert timeout_of(plain) == Timeout(timedelta(hours=48), "timeout")
        assert timeout_of(State("a")) is None

    def test_the_timeout_row_is_a_row_like_any_other(self) -> None:
        """Paths reach the timeout's row as they reach every row."""
        assert {str(p) for p in row_paths(hold)} == {
            "authorized-capture->captured",
            "authorized-expire->voided",
            "authorized-void->voided",
        }

    @pytest.mark.parametrize(
        ("span", "said"),
        [
            (timedelta(days=7), "7 days"),
            (timedelta(days=1), "1 day"),
            (timedelta(hours=48), "2 days"),
            (timedelta(hours=36), "36 hours"),
            (timedelta(minutes=90), "90 minutes"),
            (timedelta(seconds=1.5), "1.5 seconds"),
            (timedelta(seconds=1), "1 second"),
        ],
    )
    def test_spans_read_as_people_say_them(self, span: timedelta, said: str) -> None:
        assert duration(span) == said


class TestChecked:
    """Every timeout problem is reported with the rest of the table's, naming the way out."""

    def test_the_trigger_needs_a_row(self) -> None:
        with pytest.raises(DefinitionError) as error:
            build(
                State("a", initial=True, after=(timedelta(days=2), "escalate")),
                rows=[("a", "go", "end")],
            )
        assert error.value.problems == (
            "state 'a' times out through 'escalate', but no row from 'a' takes it; "
            "add ('a', 'escalate', target)",
        )

    def test_only_waiting_states_time_out(self) -> None:
        with pytest.raises(DefinitionError) as error:
            build(
                State(
                    "a", initial=True, action=lambda ctx: "x", outcomes=("x",), after=timedelta(1)
                ),
                rows=[("a", "x", "end")],
            )
        assert "state 'a' runs an action; only a waiting state" in str(error.value)

    def test_a_positive_span_and_a_well_formed_after(self) -> None:
        with pytest.raises(DefinitionError) as error:
            build(
                State("a", initial=True, after=(timedelta(0), "go")),
                State("b", after="soon", initial=False),  # type: ignore[arg-type]
                rows=[("a", "go", "end"), ("a", "b", "b"), ("b", "go", "end")],
            )
        problems = error.value.problems
        assert "state 'a': after=0:00:00 is not a positive span of time" in problems
        assert any(p.startswith("state 'b': after='soon' is not a timeout") for p in problems)

    def test_every_state_is_checked(self) -> None:
        """A state's problem does not hide the next state's: all are listed, in order."""
        states = [
            State("a", initial=True),
            State("b", after="soon"),  # type: ignore[arg-type]
            State("c", action=lambda ctx: "x", outcomes=("x",), after=timedelta(1)),
            State("d", after=(timedelta(hours=1), ["go"])),  # type: ignore[arg-type]
            State("e", after=(timedelta(hours=1), "late")),
            State("f", after=(timedelta(hours=1), "late")),
            State("end", final=True, after=timedelta(1)),
        ]
        rows = [Row("a", "go", "b"), Row("f", "late", "end")]
        assert check_timeouts(states, rows) == [
            "state 'b': after='soon' is not a timeout; "
            "give after=timedelta(...) or after=(timedelta(...), 'trigger')",
            "state 'c' runs an action; only a waiting state (no action, not final) can time out",
            "state 'd': timeout trigger ['go'] is not hashable",
            "state 'e' times out through 'late', but no row from 'e' takes it; "
            "add ('e', 'late', target)",
            "state 'end' is final; only a waiting state (no action, not final) can time out",
        ]


class TestDrawn:
    def test_timeout_rows_are_labelled_in_both_formats(self) -> None:
        """The row says when it fires; in DOT it is dashed too."""
        mermaid = diagram(hold, "mermaid")
        assert "authorized --> voided : expire (after 7 days)" in mermaid
        assert "authorized --> captured : capture\n" in mermaid
        dot = str(diagram(hold, "dot"))
        assert 'label="expire (after 7 days)"' in dot and "style=dashed" in dot
        assert dot.count("style=dashed") == 1
