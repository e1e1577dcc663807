"""The text renderers: DOT source and Mermaid stateDiagram-v2, plain and with a run's path."""

from __future__ import annotations

import re
import sys

import pytest

from fsm import Machine, State
from fsm.diagram import DiagramError, build_graph, to_dot, to_mermaid
from fsm.diagram.model import TIMES
from fsm.examples import ping, update
from tests.diagram.diagram_machines import flow


def dot_statements(source: str) -> dict[str, str]:
    """DOT node and edge statements keyed by what they name (`a` or `a -> b`): their attributes."""
    found = {}
    for line in source.splitlines():
        match = re.fullmatch(r"\t(\S+(?: -> \S+)?) \[(.*)\]", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def ping_run_graph() -> str:
    run = ping.start()
    for event in ("start", "pause", "start"):
        run.send(event)
    return to_dot(build_graph(ping, highlight=run))


class TestDot:
    """DOT source: every state and row, left to right, finals, failures and the initial marker."""

    def test_every_state_and_row_is_present(self) -> None:
        """Each state is a node statement and each row an edge statement, with its label."""
        statements = dot_statements(to_dot(build_graph(flow)))
        for state in flow.states:
            assert state.name.name in statements
        edges = [(key, value) for key, value in statements.items() if " -> " in key]
        rows = [e for e in edges if not e[0].startswith("__start__")]
        assert len(rows) == len(flow.transitions)
        assert 'label="relay [attempts_left]"' in statements["PUBLISH_FAILED -> RETRYING"]
        assert "label=UserNotFound" in statements["RECEIVED -> NOT_FOUND"]

    def test_layout_is_left_to_right_with_an_initial_marker(self) -> None:
        """The graph runs left to right and a point leads into the initial state."""
        source = to_dot(build_graph(update))
        assert "rankdir=LR" in source
        statements = dot_statements(source)
        assert "shape=point" in statements["__start__"]
        assert "__start__ -> received" in statements

    def test_finals_are_doubled_and_failures_red(self) -> None:
        """Final states get a double border; failure states and the rows into them are red."""
        statements = dot_statements(to_dot(build_graph(update)))
        assert "peripheries=2" in statements["updated"]
        assert "peripheries=2" in statements["failed"]
        assert "peripheries" not in statements["received"]
        assert 'color="#c62828"' in statements["failed"]
        assert 'color="#c62828"' not in statements["updated"]
        assert 'color="#c62828"' in statements["received -> failed"]

    def test_actions_are_shown_under_the_state_name(self) -> None:
        """A state with an action says `do / action` in smaller type."""
        statements = dot_statements(to_dot(build_graph(update)))
        assert "do / update_status" in statements["received"]

    def test_external_actions_are_marked(self) -> None:
        """An external action (it calls another system) says so; a local one does not."""

        def save(context: dict[str, object]) -> bool:
            return True

        def charge(context: dict[str, object], key: str) -> bool:
            return True

        gateway = Machine(
            "gateway",
            states=[
                State("saving", initial=True, action=save),
                State("charging", action=charge, external=True),
                State("done", final=True),
            ],
            transitions=[("saving", True, "charging"), ("charging", True, "done")],
        )
        statements = dot_statements(to_dot(build_graph(gateway)))
        assert "do / charge [external]" in statements["charging"]
        assert "do / save<" in statements["saving"]
        lines = to_mermaid(build_graph(gateway)).splitlines()
        assert "    charging : do / charge [external]" in lines
        assert "    saving : do / save" in lines

    def test_a_run_shows_counts_current_state_and_dims_the_rest(self) -> None:
        """Fired rows carry their count and are drawn thick; unvisited parts are dimmed."""
        statements = dot_statements(ping_run_graph())
        assert f'label="start {TIMES}2"' in statements["idle -> busy"]
        assert f'label="pause {TIMES}1"' in statements["busy -> idle"]
        assert "penwidth=2" in statements["idle -> busy"]
        assert 'label="finish [ok]"' in statements["busy -> done"]
        assert 'color="#b0bec5"' in statements["busy -> done"]
        assert "(current)" in statements["busy"] and "#fff59d" in statements["busy"]
        assert "(current)" not in statements["idle"]
        assert 'color="#b0bec5"' in statements["done"]

    def test_a_run_styles_every_state_and_row(self) -> None:
        """The whole style of each statement: the path blue (its start marker's edge too), the
        current state bold, yellow and thicker, fired rows thick, the rest dimmed."""
        statements = dot_statements(ping_run_graph())
        assert statements["__start__ -> idle"] == 'color="#1565c0"'
        assert statements["idle"] == (
            'label=<idle> color="#1565c0" fillcolor="#e3f2fd" fontcolor="#1565c0" penwidth=2'
        )
        assert statements["busy"] == (
            'label=<<B>busy</B><BR/><FONT POINT-SIZE="9">(current)</FONT>> '
            'color="#1565c0" fillcolor="#fff59d" fontcolor="#1565c0" penwidth=3'
        )
        assert statements["done"] == (
            'label=<done> color="#b0bec5" fillcolor=white fontcolor="#90a4ae" peripheries=2'
        )
        assert statements["idle -> busy"] == (
            f'label="start {TIMES}2" color="#1565c0" fontcolor="#1565c0" penwidth=2'
        )
        assert statements["busy -> done"] == (
            'label="finish [ok]" color="#b0bec5" fontcolor="#90a4ae"'
        )

    def test_a_run_keeps_failure_states_red(self) -> None:
        """A failure state the run passed through stays red on its own pink, thicker; the
        current one is yellow; one never reached is dimmed but keeps its fill."""
        run = flow.start({"failures": 1})
        run.send("relay")
        statements = dot_statements(to_dot(build_graph(flow, highlight=run)))
        assert statements["PUBLISH_FAILED"] == (
            'label=<PUBLISH_FAILED> color="#c62828" fillcolor="#ffebee" fontcolor="#c62828" '
            'penwidth=2 tooltip="committed, event not yet published"'
        )
        assert statements["DEAD_LETTERED"] == (
            'label=<DEAD_LETTERED> color="#b0bec5" fillcolor="#ffebee" fontcolor="#90a4ae" '
            "peripheries=2"
        )
        failed = update.start({"user_id": 9})
        statements = dot_statements(to_dot(build_graph(update, highlight=failed)))
        assert statements["failed"] == (
            'label=<<B>failed</B><BR/><FONT POINT-SIZE="9">(current)</FONT>> '
            'color="#c62828" fillcolor="#fff59d" fontcolor="#c62828" penwidth=3 peripheries=2'
        )

    def test_without_the_graphviz_package_dot_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DOT is built with the graphviz package; without it, the error names the extra."""
        monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` raises
        with pytest.raises(DiagramError) as caught:
            to_dot(build_graph(ping))
        assert str(caught.value) == (
            "DOT output needs the graphviz package: pip install 'fsm-orchestrator[diagrams]' "
            "(Mermaid output needs nothing)"
        )

    def test_awkward_names_are_quoted(self) -> None:
        """Quotes, angle brackets and ampersands in names stay text, not DOT or HTML syntax."""
        machine: Machine[str] = Machine(
            'say "hi"',
            states=[State("<a & b>", initial=True), State("z", final=True)],
            transitions=[("<a & b>", "<go>", "z")],
        )
        source = to_dot(build_graph(machine))
        assert "&lt;a &amp; b&gt;" in source
        assert 'label="<go>"' in source
        assert 'label="say \\"hi\\""' in source


class TestMermaid:
    """Mermaid stateDiagram-v2 text, which GitHub draws in Markdown."""

    def test_header_and_every_row(self) -> None:
        """A titled stateDiagram-v2, left to right, one transition line per row."""
        text = to_mermaid(build_graph(flow))
        lines = text.splitlines()
        assert lines[:5] == [
            "---",
            "title: user_status_update",
            "---",
            "stateDiagram-v2",
            "    direction LR",
        ]
        assert "    [*] --> RECEIVED" in lines
        assert "    PUBLISH_FAILED --> RETRYING : relay [attempts_left]" in lines
        assert "    RECEIVED --> NOT_FOUND : UserNotFound" in lines
        transitions = [line for line in lines if " --> " in line and "[*]" not in line]
        assert len(transitions) == len(flow.transitions)

    def test_finals_lead_to_the_end_marker_and_failures_are_classed(self) -> None:
        """Each final state has `--> [*]`; failure states share the failure class."""
        lines = to_mermaid(build_graph(flow)).splitlines()
        ends = [line.split()[0] for line in lines if line.endswith("--> [*]")]
        assert ends == ["PUBLISHED", "DEAD_LETTERED", "NOT_FOUND", "ILLEGAL_CHANGE"]
        assert "    class PUBLISH_FAILED,DEAD_LETTERED,NOT_FOUND,ILLEGAL_CHANGE failure" in lines
        assert any(line.startswith("    classDef failure fill:#ffebee") for line in lines)

    def test_actions_and_descriptions(self) -> None:
        """Actions become state descriptions; descriptions become notes."""
        lines = to_mermaid(build_graph(flow)).splitlines()
        assert "    RECEIVED : do / update_user" in lines
        assert "    note right of RECEIVED : a status change asked" in lines

    def test_a_run_shows_counts_and_classes(self) -> None:
        """Fired rows carry their count; states are classed current, visited or unvisited."""
        run = ping.start()
        for event in ("start", "pause", "start"):
            run.send(event)
        lines = to_mermaid(build_graph(ping, highlight=run)).splitlines()
        assert lines[1] == f"title: ping (run {run.id})"
        assert f"    idle --> busy : start {TIMES}2" in lines
        assert f"    busy --> idle : pause {TIMES}1" in lines
        assert "    busy --> done : finish [ok]" in lines
        assert "    class busy current" in lines
        assert "    class idle visited" in lines
        assert "    class done unvisited" in lines

    def test_a_run_ending_in_failure_keeps_the_failure_colour(self) -> None:
        """A current failure state is classed apart from a current normal state."""
        run = update.start({"user_id": 9})
        lines = to_mermaid(build_graph(update, highlight=run)).splitlines()
        assert "    class failed currentFailure" in lines
        assert f"    received --> failed : UserNotFound {TIMES}1" in lines

    def test_labels_differing_from_ids_and_syntax_characters(self) -> None:
        """A name that is not a plain id is declared with its label; `;#<>` (and `:` in notes)
        are escaped, as the Mermaid parser needs."""
        machine: Machine[str] = Machine(
            "odd",
            states=[State("a b", initial=True, description="see: x"), State("c", final=True)],
            transitions=[("a b", "x;y <#>", "c")],
        )
        lines = to_mermaid(build_graph(machine)).splitlines()
        assert '    state "a b" as a_b' in lines
        assert "    a_b --> c : x#59;y #lt;#35;#gt;" in lines
        assert "    note right of a_b : see#58; x" in lines

    def test_line_breaks_become_spaces(self) -> None:
        """A newline in a name or a description would end Mermaid's line: it is a space."""
        machine: Machine[str] = Machine(
            "two\nlines",
            states=[State("a\nb", initial=True, description="one\ntwo"), State("c", final=True)],
            transitions=[("a\nb", "go\non", "c")],
        )
        lines = to_mermaid(build_graph(machine)).splitlines()
        assert lines[1] == "title: two lines"
        assert '    state "a b" as a_b' in lines
        assert "    note right of a_b : one two" in lines
        assert "    a_b --> c : go on" in lines
