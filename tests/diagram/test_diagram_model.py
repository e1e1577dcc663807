"""The graph model: what a Machine and a run's path become before any renderer reads them."""

from __future__ import annotations

import itertools

import pytest

from fsm import Machine, State, Transition
from fsm.diagram import DiagramError, NodeKind, build_graph
from fsm.examples import ping, update
from tests.diagram.diagram_machines import IllegalStatusChange, Published, StatusUpdated, Step, flow


class TestNodes:
    """States become nodes in declaration order, with their kind, label and action."""

    def test_kinds_follow_the_definition(self) -> None:
        """Initial, normal, final and failure states get their own kind."""
        graph = build_graph(flow)
        kinds = {node.label: node.kind for node in graph.nodes}
        assert kinds["RECEIVED"] is NodeKind.INITIAL
        assert kinds["COMMITTED"] is NodeKind.NORMAL
        assert kinds["PUBLISHED"] is NodeKind.FINAL
        assert kinds["DEAD_LETTERED"] is NodeKind.FAILURE

    def test_a_failure_state_keeps_whether_it_is_final(self) -> None:
        """A final failure is drawn final; a failure that waits for a retry is not."""
        graph = build_graph(flow)
        final = {node.label: node.final for node in graph.nodes if node.failure}
        assert final == {
            "PUBLISH_FAILED": False,
            "DEAD_LETTERED": True,
            "NOT_FOUND": True,
            "ILLEGAL_CHANGE": True,
        }

    def test_enum_states_are_labelled_by_member_name_in_order(self) -> None:
        """Enum members show their name; the order is the declaration order."""
        graph = build_graph(flow)
        assert [node.label for node in graph.nodes] == [step.name for step in Step]

    def test_actions_and_descriptions_are_carried(self) -> None:
        """A state's action name and description reach the node."""
        node = build_graph(flow).initial
        assert (node.action, node.description) == ("update_user", "a status change asked")

    def test_ids_are_safe_and_unique(self) -> None:
        """Names that clash once made safe, or are renderer keywords, get distinct plain ids."""
        machine: Machine[str] = Machine(
            "clash",
            states=[State("a b", initial=True), State("a_b"), State("end"), State("9", final=True)],
            transitions=[("a b", "go", "a_b"), ("a_b", "go", "end"), ("end", "go", "9")],
        )
        ids = [node.id for node in build_graph(machine).nodes]
        assert ids == ["a_b", "a_b_2", "s_end", "s_9"]

    def test_ids_keep_ascii_letters_and_count_clashes_up(self) -> None:
        """Outer underscores go, non-ASCII letters become underscores, a third clash gets `_3`,
        and a name with nothing safe in it becomes `state` (a Mermaid keyword, so `s_state`)."""
        cafe = "caf\N{LATIN SMALL LETTER E WITH ACUTE}"
        names = ["a b", "a_b", "a-b", "_x_", cafe, "Xylo", "!!!"]
        machine: Machine[str] = Machine(
            "ids",
            states=[State(n, initial=n == names[0], final=n == names[-1]) for n in names],
            transitions=[(a, "go", b) for a, b in itertools.pairwise(names)],
        )
        ids = [node.id for node in build_graph(machine).nodes]
        assert ids == ["a_b", "a_b_2", "a_b_3", "x", "caf", "Xylo", "s_state"]

    def test_an_unknown_node_id_is_a_key_error_naming_it(self) -> None:
        """`graph.node` raises KeyError with the id asked for."""
        with pytest.raises(KeyError) as caught:
            build_graph(ping).node("nowhere")
        assert caught.value.args == ("nowhere",)


class TestEdges:
    """Rows become edges in table order, labelled by trigger and guard."""

    def test_every_row_is_an_edge_in_table_order(self) -> None:
        """One edge per row, with the source and target ids of its states."""
        graph = build_graph(flow)
        assert [(e.source, e.target) for e in graph.edges] == [
            (row.source.name, row.target.name) for row in flow.transitions
        ]

    def test_triggers_are_named_by_event_or_outcome_class(self) -> None:
        """An event string stays as it is; an outcome class shows its name."""
        assert [e.trigger for e in build_graph(update).edges] == ["Updated", "UserNotFound"]
        assert [e.trigger for e in build_graph(ping).edges] == ["start", "pause", "finish"]

    def test_guards_are_named_in_brackets(self) -> None:
        """A guarded row's label carries the guard's name in brackets."""
        labels = [e.label for e in build_graph(flow).edges if e.source == "PUBLISH_FAILED"]
        assert labels == ["relay [attempts_left]", "relay"]


class TestHighlight:
    """A run's path: visited states, how often each row fired, and the current state."""

    def test_a_run_counts_each_fired_row(self) -> None:
        """Rows fired twice say so; rows never fired stay at zero."""
        run = ping.start()
        for event in ("start", "pause", "start"):
            run.send(event)
        graph = build_graph(ping, highlight=run)
        assert [(e.label, e.fired) for e in graph.edges] == [
            ("start", 2),
            ("pause", 1),
            ("finish [ok]", 0),
        ]
        assert graph.highlighted and graph.run_id == run.id

    def test_visits_and_current_state(self) -> None:
        """The start counts as a visit; the run's state is the current one."""
        run = ping.start()
        for event in ("start", "pause", "start"):
            run.send(event)
        nodes = {n.label: n for n in build_graph(ping, highlight=run).nodes}
        assert {name: n.visits for name, n in nodes.items()} == {"idle": 2, "busy": 2, "done": 0}
        assert [name for name, n in nodes.items() if n.current] == ["busy"]

    def test_actions_followed_by_the_run_are_counted(self) -> None:
        """Rows fired by outcomes count like rows fired by events, loops included."""
        run = flow.start({"failures": 2})
        run.send("relay")
        fired = {(e.source, e.trigger): e.fired for e in build_graph(flow, highlight=run).edges}
        assert fired[("RECEIVED", "StatusUpdated")] == 1
        assert fired[("COMMITTED", "PublishError")] == 1
        assert fired[("RETRYING", "PublishError")] == 1
        assert fired[("COMMITTED", "Published")] == 0

    def test_stored_history_tuples_work_like_a_run(self) -> None:
        """(source, trigger, target, outcome) tuples, as a store returns them, highlight too."""
        records: list[tuple[Step, object, Step, object]] = [
            (Step.RECEIVED, StatusUpdated, Step.COMMITTED, StatusUpdated()),
            (Step.COMMITTED, "Published", Step.PUBLISHED, None),
        ]
        with pytest.raises(DiagramError, match="has no such row"):
            build_graph(flow, highlight=records)
        with pytest.raises(DiagramError) as caught:
            build_graph(flow, highlight=records)
        assert str(caught.value) == (
            "cannot highlight Step.COMMITTED --'Published'--> Step.PUBLISHED: "
            "machine 'user_status_update' has no such row"
        )
        records[1] = (Step.COMMITTED, Published, Step.PUBLISHED, Published())
        graph = build_graph(flow, highlight=records)
        assert graph.node("PUBLISHED").current
        assert graph.run_id is None

    def test_three_item_tuples_work_too(self) -> None:
        """(source, trigger, target) tuples, without the outcome, highlight as well."""
        graph = build_graph(ping, highlight=[("idle", "start", "busy")])
        assert [(n.label, n.visits, n.current) for n in graph.nodes] == [
            ("idle", 1, False),
            ("busy", 1, True),
            ("done", 0, False),
        ]

    def test_transition_records_work_and_current_can_be_given(self) -> None:
        """Transition records highlight; `current=` overrides the last target."""
        history = [Transition(Step.RECEIVED, IllegalStatusChange, Step.ILLEGAL_CHANGE, None)]
        graph = build_graph(flow, highlight=history, current=Step.RECEIVED)
        assert [n.label for n in graph.nodes if n.current] == ["RECEIVED"]
        assert graph.node("ILLEGAL_CHANGE").visits == 1

    def test_an_empty_history_marks_only_the_start(self) -> None:
        """A run that has not moved is in its initial state."""
        graph = build_graph(ping, highlight=[])
        assert [(n.label, n.visits, n.current) for n in graph.nodes] == [
            ("idle", 1, True),
            ("busy", 0, False),
            ("done", 0, False),
        ]

    def test_bad_records_and_unknown_current_state_are_refused(self) -> None:
        """Something that is not a transition, or a current state not in the machine, fails."""
        with pytest.raises(DiagramError, match="cannot highlight 'start'"):
            build_graph(ping, highlight=["start"])
        # A string of three characters is not a (source, trigger, target) tuple either.
        with pytest.raises(DiagramError) as caught:
            build_graph(ping, highlight=["abc"])
        assert str(caught.value) == (
            "cannot highlight 'abc': give a Run, Transition records "
            "or (source, trigger, target[, outcome]) tuples"
        )
        with pytest.raises(DiagramError) as caught:
            build_graph(ping, highlight=[], current="nowhere")
        assert str(caught.value) == (
            "current state 'nowhere' is not a state of 'ping'; states: 'idle', 'busy', 'done'"
        )
