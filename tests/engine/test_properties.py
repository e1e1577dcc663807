"""Property tests: random valid tables and event sequences against a plain reference interpreter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fsm import DefinitionError, GuardRejected, InvalidEvent, Machine, Run, RunFinished, State

EVENTS = ("a", "b", "c")
GUARDS: tuple[Callable[[Run[Any]], bool] | None, ...] = (
    None,
    lambda run: run.context["n"] % 2 == 0,
    lambda run: run.context["n"] % 3 == 0,
    lambda run: run.context["n"] > 5,
)

Row = tuple[str, str, str, int]  # source, event, target, guard index


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, list[Row]]:
    """A table over states s0..sN (sN final) with a spine that keeps it valid, plus extra rows."""
    count = draw(st.integers(2, 6))
    extras = draw(
        st.lists(
            st.tuples(
                st.integers(0, count - 2),
                st.sampled_from(EVENTS),
                st.integers(0, count - 1),
                st.integers(0, len(GUARDS) - 1),
            ),
            max_size=12,
        )
    )
    rows = [(f"s{s}", e, f"s{t}", g) for s, e, t, g in extras]
    rows += [(f"s{i}", "next", f"s{i + 1}", 0) for i in range(count - 1)]
    return count, rows


def reference(rows: list[Row], final: str, context: dict[str, Any], events: list[str]) -> list[str]:
    """The plain interpreter: first row in table order whose guard passes; outcomes as strings."""
    state, trace = "s0", []
    for event in events:
        if state == final:
            trace.append("finished")
            continue
        matching = [r for r in rows if r[0] == state and r[1] == event]
        if not matching:
            trace.append("invalid")
            continue
        for _, _, target, guard in matching:
            check = GUARDS[guard]
            if check is None or check(_Ctx(context)):  # type: ignore[arg-type]
                state = target
                trace.append(state)
                break
        else:
            trace.append("rejected")
    return trace


class _Ctx:
    """What a guard sees of a run in the reference interpreter: its context."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context


def engine(machine: Machine[str], context: dict[str, Any], events: list[str]) -> list[str]:
    """The engine's trace, checked against its own history on the way."""
    run, trace = machine.start(context), []
    for event in events:
        try:
            trace.append(run.send(event).state)
        except RunFinished:
            trace.append("finished")
        except InvalidEvent:
            trace.append("invalid")
        except GuardRejected:
            trace.append("rejected")
    moves = [step for step in trace if step not in ("finished", "invalid", "rejected")]
    assert [t.target for t in run.history] == moves
    return trace


class TestAgainstReference:
    """The engine and the reference interpreter agree on every generated run."""

    @settings(
        max_examples=300,
        suppress_health_check=[*settings().suppress_health_check, HealthCheck.filter_too_much],
    )
    @given(
        table=tables(),
        n=st.integers(0, 12),
        events=st.lists(st.sampled_from((*EVENTS, "next", "zzz")), max_size=15),
    )
    def test_same_trace(self, table: tuple[int, list[Row]], n: int, events: list[str]) -> None:
        """Every event leads to the same state (or the same refusal) in both."""
        count, rows = table
        final = f"s{count - 1}"
        states = [State(f"s{i}", initial=i == 0, final=i == count - 1) for i in range(count)]
        try:
            machine = Machine(
                "random", states=states, transitions=[(s, e, t, GUARDS[g]) for s, e, t, g in rows]
            )
        except DefinitionError:
            assume(False)  # shadowed rows and the like: validation's business, tested elsewhere
            raise
        context = {"n": n}
        assert engine(machine, context, events) == reference(rows, final, context, events)

    @settings(
        max_examples=200,
        suppress_health_check=[*settings().suppress_health_check, HealthCheck.filter_too_much],
    )
    @given(table=tables())
    def test_a_fixed_row_is_the_row_every_context_takes(self, table: tuple[int, list[Row]]) -> None:
        """Machine.fixed_row names a row exactly where the table's first matching row has no
        guard, and None wherever a guard must be asked or no row matches (a persistent
        runner then restores the run); a run at that state takes the named row whatever
        its context holds."""
        count, rows = table
        states = [State(f"s{i}", initial=i == 0, final=i == count - 1) for i in range(count)]
        try:
            machine = Machine(
                "random", states=states, transitions=[(s, e, t, GUARDS[g]) for s, e, t, g in rows]
            )
        except DefinitionError:
            assume(False)
            raise
        for source in (state.name for state in states):
            for event in (*EVENTS, "next", "zzz"):
                row = machine.fixed_row(source, event)
                matching = [r for r in rows if r[0] == source and r[1] == event]
                unguarded = bool(matching) and GUARDS[matching[0][3]] is None
                assert (row is not None) == (unguarded and source != f"s{count - 1}")
                if row is not None:
                    assert (row.source, row.trigger, row.target) == matching[0][:3]
                    for n in range(13):
                        run = machine.restore("r", source, {"n": n})
                        assert run.send(event).state == row.target
