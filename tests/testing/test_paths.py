"""Path enumeration: shortest paths to states and rows, bounded paths to the finals, replay."""

from __future__ import annotations

import pytest

from fsm import Machine, State
from fsm.examples import ping
from fsm.paths import Path, TooManyPaths, final_paths, replay, row_paths, shortest_paths

from .machines import PublishFailed, Rejected, Saved, Sent, flow

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

    def test_outcome_values_are_used(self) -> None:
        """Zero-argument outcome classes are built by calling them."""
        stepper = replay(final_paths(flow)[0])
        assert [t.outcome for t in stepper.history] == [Saved(), Sent()]
        assert PublishFailed not in [type(t.outcome) for t in stepper.history]
