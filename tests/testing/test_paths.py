"""Path enumeration: shortest paths to states and rows, bounded paths to the finals, replay."""

from __future__ import annotations

import pytest

from fsm import CallbackError, Machine, State
from fsm.examples import attempts_left, payment, ping
from fsm.paths import (
    Path,
    PathStep,
    TooManyPaths,
    example,
    final_paths,
    path_tests,
    replay,
    row_paths,
    shortest_paths,
)
from fsm.testing import Stepper

from .machines import PublishFailed, Rejected, Saved, Sent, can_retry, flow

INSTANCES = {Rejected: Rejected("refused")}


class TestShortest:
    """Breadth-first paths from the initial state."""

    def test_to_every_state(self) -> None:
        """Each state maps to its shortest path; the initial one to the empty path."""
        paths = shortest_paths(flow)
        assert list(paths) == [s.name for s in flow.states]
        assert paths["received"].rows == ()
        assert paths["dead"].states == ("received", "saved", "publish_failed", "dead")

    def test_to_every_row(self) -> None:
        """One path per row, in table order, each ending with that row."""
        paths = row_paths(flow)
        assert [p.rows[-1] for p in paths] == list(flow.transitions)
        assert [len(p) for p in paths] == [1, 1, 2, 2, 3, 3]

    def test_readable_ids(self) -> None:
        """str(path) names states and triggers, ready for parametrize ids."""
        assert [str(p) for p in row_paths(ping)] == [
            "idle-start->busy",
            "idle-start->busy-pause->idle",
            "idle-start->busy-finish->done",
        ]


class TestFinalPaths:
    """All paths to a final state, bounded on cyclic machines."""

    def test_no_row_twice_by_default(self) -> None:
        """With the default bound a cycle that needs a row twice is not taken."""
        assert [p.id for p in final_paths(ping)] == ["idle-start->busy-finish->done"]

    def test_more_row_visits_take_cycles(self) -> None:
        """Allowing two visits per row adds the path around the pause cycle."""
        ids = [p.id for p in final_paths(ping, max_row_visits=2)]
        assert ids == [
            "idle-start->busy-pause->idle-start->busy-finish->done",
            "idle-start->busy-finish->done",
        ]

    def test_max_length(self) -> None:
        """max_length cuts longer paths."""
        assert final_paths(ping, max_row_visits=5, max_length=2) == final_paths(ping)

    def test_flow_paths(self) -> None:
        """Every final state of the flow is reached; the retry cycle is taken once."""
        ids = {p.id for p in final_paths(flow)}
        assert ids == {
            "received-Saved->saved-Sent->published",
            "received-Saved->saved-PublishFailed->publish_failed-retry->saved-Sent->published",
            "received-Saved->saved-PublishFailed->publish_failed-retry->dead",
            "received-Rejected->rejected",
        }

    def test_too_many(self) -> None:
        """Past the limit it raises instead of enumerating for ever."""
        with pytest.raises(TooManyPaths, match="more than 3 paths"):
            final_paths(ping, max_row_visits=10, limit=3)

    def test_bad_bounds(self) -> None:
        """Bounds below their minimum are refused with the allowed range."""
        with pytest.raises(ValueError, match="give 1 or more"):
            final_paths(ping, max_row_visits=0)
        with pytest.raises(ValueError, match="give 0 or more"):
            final_paths(ping, max_length=-1)

    def test_initial_final(self) -> None:
        """A machine whose initial state is final has the one empty path."""
        machine = Machine(
            "stop",
            states=[State("a", initial=True, final=True)],
            transitions=[],
        )
        assert [p.states for p in final_paths(machine)] == [("a",)]


def every_path(machine: Machine[str], max_row_visits: int) -> list[tuple[int, ...]]:
    """The rule written plainly, recursively: each path to a final state as row numbers,
    depth first in table order, no row used more than `max_row_visits` times."""
    finals = {s.name for s in machine.states if s.final}
    rows = list(machine.transitions)
    found: list[tuple[int, ...]] = []

    def walk(state: str, taken: tuple[int, ...]) -> None:
        for number, row in enumerate(rows):
            if row.source != state or taken.count(number) >= max_row_visits:
                continue
            if row.target in finals:
                found.append((*taken, number))
            else:
                walk(row.target, (*taken, number))

    walk(machine.initial.name, ())
    return found


class TestFinalPathsByTheRule:
    """final_paths against the rule written plainly, on machines whose loops it must
    leave and come back to: a row's count goes back down exactly when the walk leaves it."""

    loops = Machine(
        "loops",
        states=[State("s", initial=True), State("a"), State("b"), State("end", final=True)],
        transitions=[
            ("s", "go", "a"),
            ("a", "loop", "b"),
            ("b", "back", "a"),
            ("b", "skip", "b"),
            ("a", "stop", "end"),
            ("b", "stop", "end"),
        ],
    )

    @pytest.mark.parametrize("visits", [1, 2, 3])
    def test_every_path_once(self, visits: int) -> None:
        rows = list(self.loops.transitions)
        got = [
            tuple(rows.index(row) for row in path.rows)
            for path in final_paths(self.loops, max_row_visits=visits)
        ]
        assert got == every_path(self.loops, visits)
        assert len(got) == len(set(got))


class TestReplay:
    """replay() drives a Stepper along a path and checks each fired row."""

    @pytest.mark.parametrize("path", row_paths(flow), ids=str)
    def test_every_row_of_the_flow(self, path: object) -> None:
        """Each row's shortest path replays, given a context in which its guards agree."""
        assert isinstance(path, Path)
        attempts = 3 if path.target == "dead" else 0
        stepper = replay(path, context={"attempts": attempts}, instances=INSTANCES)
        assert stepper.history[-1].target == path.target

    def test_guard_taking_another_row_fails_readably(self) -> None:
        """When a guard sends the run elsewhere the failure names both rows."""
        path = next(p for p in row_paths(flow) if p.target == "saved" and len(p) == 3)
        with pytest.raises(AssertionError, match=r"should fire \('publish_failed', 'retry'"):
            replay(path, context={"attempts": 9})

    def test_class_without_default_needs_an_example(self) -> None:
        """A class trigger whose constructor needs arguments asks for instances=."""
        path = row_paths(flow)[1]
        with pytest.raises(TypeError, match=r"pass instances=\{Rejected: "):
            replay(path)

    def test_factories_are_called(self) -> None:
        """An instances entry may be a factory."""
        path = row_paths(flow)[1]
        stepper = replay(path, instances={Rejected: lambda: Rejected("made")})
        assert stepper.history[-1].outcome == Rejected("made")

    def test_an_instance_that_is_callable_is_used_as_it_is(self) -> None:
        """An instances entry that is already an instance of the trigger is the value, even
        when it can be called: only a factory (not an instance) is called."""

        class Retry:
            def __call__(self) -> str:
                return "called"

        given = Retry()
        assert example(Retry, {Retry: given}) is given
        assert isinstance(example(Retry, {Retry: Retry}), Retry)  # the class: a factory

    def test_outcome_values_are_used(self) -> None:
        """Zero-argument outcome classes are built by calling them."""
        stepper = replay(final_paths(flow)[0])
        assert [t.outcome for t in stepper.history] == [Saved(), Sent()]
        assert PublishFailed not in [type(t.outcome) for t in stepper.history]


RETRY, GIVE_UP = payment.transitions[4], payment.transitions[5]
"""capture_failed --retry [attempts_left]--> authorized, and the fallback to voided."""

TWICE_THEN_VOID = (
    "created-Authorized->authorized-CaptureFailed->capture_failed-retry->authorized"
    "-CaptureFailed->capture_failed-retry->voided"
)
"""The path on which the guard must first pass, then refuse."""


def by_id(paths: list[Path[str]], wanted: str) -> Path[str]:
    """The path with that id."""
    return next(path for path in paths if path.id == wanted)


class TestPathSteps:
    """A path says, per row, which guards must pass and which must refuse."""

    def test_the_fallback_row_needs_the_guard_to_refuse(self) -> None:
        """Through the guard, then the fallback: the guard passes at step 3, refuses at 5."""
        path = by_id(final_paths(payment, max_row_visits=2), TWICE_THEN_VOID)
        steps = path.steps
        assert [step.number for step in steps] == [1, 2, 3, 4, 5]
        assert steps[2] == PathStep(3, RETRY, ())
        assert steps[4] == PathStep(5, GIVE_UP, (RETRY,))
        assert [step.needs(attempts_left) for step in steps] == [None, None, True, None, False]

    def test_a_guard_of_another_row_is_not_asked(self) -> None:
        """A guard that no row of the step's trigger carries is not asked (None)."""
        step = final_paths(payment)[0].steps[0]
        assert step.needs(attempts_left) is None
        assert step.needs(can_retry) is None

    def test_only_rows_of_the_same_trigger_are_tried_before(self) -> None:
        """Rows of other triggers from the same source are not rivals."""
        machine = Machine(
            "rivals",
            states=[State("a", initial=True), State("b", final=True), State("c", final=True)],
            transitions=[
                ("a", "go", "b", attempts_left),
                ("a", "stop", "c", can_retry),
                ("a", "go", "c", can_retry),
                ("a", "go", "b"),
            ],
        )
        last = machine.transitions[3]
        assert Path(machine, (last,)).steps[0].refused == (
            machine.transitions[0],
            machine.transitions[2],
        )


class TestGuardedReplay:
    """Every path of a guarded machine replays: guards forced, or real with a context per step."""

    PATHS = final_paths(payment, max_row_visits=2)

    @pytest.mark.parametrize("path", PATHS, ids=str)
    def test_forced(self, path: Path[str]) -> None:
        """Forced, each path fires exactly its rows, whatever the context says."""
        stepper = replay(path, context={"attempts": 99}, guards="forced")
        assert stepper.history == [
            (row.source, row.trigger, row.target, stepper.history[n].outcome)
            for n, row in enumerate(path.rows)
        ]
        stepper.assert_finished()

    @pytest.mark.parametrize("path", PATHS, ids=str)
    def test_real_with_a_context_per_step(self, path: Path[str]) -> None:
        """Real guards agree with every path when each step's context says what it needs."""
        replay(path, context=lambda step: {"attempts": 0 if step.needs(attempts_left) else 3})

    def test_real_guard_disagreeing_is_named(self) -> None:
        """With one context for the whole path, the guard that passed where it must refuse
        is named with its row and the step."""
        path = by_id(self.PATHS, TWICE_THEN_VOID)
        with pytest.raises(AssertionError) as caught:
            replay(path, context={"attempts": 0})
        assert str(caught.value).splitlines()[0] == (
            f"path {TWICE_THEN_VOID}: step 5 should fire ('capture_failed', 'retry', 'voided') "
            "but guard attempts_left of ('capture_failed', 'retry', 'authorized', "
            "attempts_left) passed; the path needs it to refuse"
        )

    def test_real_guard_refusing_is_named(self) -> None:
        """A guard that refuses where the path needs it (every guard refused) is named too."""
        machine = Machine(
            "gate",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", "go", "b", attempts_left)],
        )
        with pytest.raises(
            AssertionError, match=r"guard attempts_left of .* refused; the path needs it to pass"
        ) as caught:
            replay(final_paths(machine)[0], context={"attempts": 5})
        assert type(caught.value.__cause__).__name__ == "GuardRejected"

    def test_context_function_sees_each_step_in_order(self) -> None:
        """The context function is called once per step, before it, with that step."""
        seen: list[int] = []

        def context(step: PathStep[str]) -> dict[str, int]:
            seen.append(step.number)
            return {}

        replay(final_paths(payment)[0], context=context)
        assert seen == [1, 2]

    def test_real_guard_raising_is_the_engines_error(self) -> None:
        """A real guard that raises is a CallbackError naming it, as in a run."""

        def broken(run: object) -> bool:
            raise LookupError("limits service down")

        machine = Machine(
            "broken",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", "go", "b", broken)],
        )
        with pytest.raises(CallbackError, match="guard broken raised LookupError"):
            replay(final_paths(machine)[0])
        replay(final_paths(machine)[0], guards="forced")

    def test_bad_guards_mode(self) -> None:
        """guards= is 'real' or 'forced'."""
        with pytest.raises(ValueError, match="give 'real' or 'forced'"):
            replay(final_paths(ping)[0], guards="fake")  # type: ignore[arg-type]


class TestPathTests:
    """path_tests builds one parametrized test from a machine's paths."""

    def test_one_case_per_final_path(self) -> None:
        """The test is parametrized with final_paths, ids as Path.id."""
        test = path_tests(payment, max_row_visits=2)
        mark = next(m for m in test.pytestmark if m.name == "parametrize")  # type: ignore[attr-defined]
        assert [p.id for p in mark.args[1]] == [
            p.id for p in final_paths(payment, max_row_visits=2)
        ]
        for path in mark.args[1]:
            test(path)

    def test_a_failing_path_fails_its_case(self) -> None:
        """With real guards and one context, the fallback paths fail."""
        test = path_tests(payment, guards="real", context={"attempts": 0})
        mark = next(m for m in test.pytestmark if m.name == "parametrize")  # type: ignore[attr-defined]
        failed = []
        for path in mark.args[1]:
            try:
                test(path)
            except AssertionError:
                failed.append(path.id)
        assert failed == [
            "created-Authorized->authorized-CaptureFailed->capture_failed-retry->voided"
        ]

    def test_rows_on_no_path_are_refused(self) -> None:
        """A row that no generated path fires is named, with the bounds to raise."""
        with pytest.raises(ValueError, match=r"fires \('busy', 'pause', 'idle'\); raise them"):
            path_tests(ping)
        path_tests(ping, max_row_visits=2)


class TestBounds:
    """final_paths' bounds are exact."""

    def test_max_length_is_inclusive(self) -> None:
        """max_length=2 keeps the paths of two rows, and none of three; 0 keeps none here."""
        assert {p.id for p in final_paths(flow, max_length=2)} == {
            "received-Saved->saved-Sent->published",
            "received-Rejected->rejected",
        }
        assert final_paths(flow, max_length=0) == []

    def test_limit_is_inclusive(self) -> None:
        """Exactly `limit` paths is fine; one more raises, saying what to change."""
        assert len(final_paths(ping, max_row_visits=2, limit=2)) == 2
        with pytest.raises(TooManyPaths) as caught:
            final_paths(ping, max_row_visits=2, limit=1)
        assert str(caught.value) == (
            "machine 'ping' has more than 1 paths to its final states with max_row_visits=2, "
            "max_length=None; lower them or raise limit"
        )

    def test_a_row_is_free_again_after_backtracking(self) -> None:
        """A row left behind when its branch is exhausted can be taken on another branch."""
        machine = Machine(
            "diamond",
            states=[State("s", initial=True), State("a"), State("b"), State("d", final=True)],
            transitions=[("s", "m", "a"), ("s", "n", "a"), ("a", "p", "b"), ("b", "t", "d")],
        )
        assert [p.id for p in final_paths(machine)] == ["s-m->a-p->b-t->d", "s-n->a-p->b-t->d"]

    def test_row_visits_count_exactly(self) -> None:
        """With two visits per row, no path takes a row three times."""
        for path in final_paths(ping, max_row_visits=2):
            assert max(path.rows.count(row) for row in path.rows) <= 2
        assert len(final_paths(ping, max_row_visits=3)) == 3


class Failure:
    """An outcome with a row of its own..."""


class Timeout(Failure):
    """...and a subclass of it with another."""


class TestReplayMessages:
    """replay says where the run left the path."""

    def test_a_stepper_elsewhere(self) -> None:
        """A stepper not at the path's start fails on the first step, naming both states."""
        stepper = Stepper(ping, at="busy")
        with pytest.raises(AssertionError) as caught:
            replay(final_paths(ping)[0], stepper)
        assert str(caught.value).splitlines()[0] == (
            "path idle-start->busy-finish->done: step 1 starts from 'idle' but the run is in 'busy'"
        )

    def test_another_row_fired_without_a_guard_disagreeing(self) -> None:
        """An instance of a subclass with a row of its own takes that row: said as fired."""

        machine = Machine(
            "sub",
            states=[
                State("a", initial=True, action=lambda ctx: Failure(), outcomes=(Failure,)),
                State("f", final=True),
                State("t", final=True),
            ],
            transitions=[("a", Failure, "f"), ("a", Timeout, "t")],
        )
        with pytest.raises(AssertionError) as caught:
            replay(final_paths(machine)[0], instances={Failure: Timeout()})
        assert str(caught.value).splitlines()[0] == (
            "path a-Failure->f: step 1 should fire ('a', Failure, 'f') but fired "
            "('a', Timeout, 't')"
        )

    def test_path_tests_keeps_max_length(self) -> None:
        """path_tests passes max_length on: too short a bound leaves rows on no path."""
        with pytest.raises(ValueError) as caught:
            path_tests(payment, max_length=2)
        assert str(caught.value) == (
            "machine 'payment': no path to a final state with max_row_visits=1, max_length=2 "
            "fires ('authorized', CaptureFailed, 'capture_failed'), ('capture_failed', "
            "'retry', 'authorized', attempts_left), ('capture_failed', 'retry', 'voided'); "
            "raise them"
        )
