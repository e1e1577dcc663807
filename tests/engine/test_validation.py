"""Definition-time validation: each rule alone, and every problem reported at once."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol

import pytest

from fsm import AsyncRequired, DefinitionError, Machine, Row, State
from fsm.validation import outcome_family, state_outcomes


def problems_of(states: list[State[Any]], rows: list[Any], name: str = "m") -> tuple[str, ...]:
    """The problems DefinitionError lists for this table (fails if it builds)."""
    with pytest.raises(DefinitionError) as caught:
        Machine(name, states=states, transitions=rows)
    assert caught.value.machine == name
    return caught.value.problems


def only(problems: tuple[str, ...]) -> str:
    """The single problem of a table that should have exactly one."""
    assert len(problems) == 1, problems
    return problems[0]


A, B, C = State("a", initial=True), State("b"), State("c", final=True)


@dataclass(frozen=True)
class Ok: ...


@dataclass(frozen=True)
class NotFound: ...


@dataclass(frozen=True)
class Illegal: ...


class Failure: ...


class Missing(Failure): ...


class Broken(Failure): ...


class Result:
    """A sealed-style base: only its subclasses are ever returned."""


class Good(Result): ...


class Bad(Result): ...


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Light(enum.Enum):
    RED = "red"


class TestStates:
    """Rules about the declared states."""

    def test_no_initial_state(self) -> None:
        """A machine without an initial state is refused."""
        problem = only(problems_of([State("a"), C], [("a", "go", "c")]))
        assert "no initial state" in problem

    def test_several_initial_states(self) -> None:
        """Two initial states are refused, both named."""
        states = [A, State("b", initial=True), C]
        problem = only(problems_of(states, [("a", "go", "c"), ("b", "go", "c")]))
        assert "several initial states ('a', 'b')" in problem

    def test_duplicate_state(self) -> None:
        """A state declared twice is refused."""
        problem = only(problems_of([A, C, State("c", final=True)], [("a", "go", "c")]))
        assert "state 'c' is declared twice" in problem

    def test_unusable_state_name(self) -> None:
        """None or an unhashable value cannot name a state."""
        problems = problems_of([A, C, State(None), State(["x"])], [("a", "go", "c")])
        assert sum("is not usable" in p for p in problems) == 2

    def test_not_a_state(self) -> None:
        """Something that is not a State in the states list is named."""
        not_a_state: Any = "b"
        problem = only(problems_of([A, C, not_a_state], [("a", "go", "c")]))
        assert "'b' is not a State" in problem

    def test_no_final_state(self) -> None:
        """A machine with no final state is refused."""
        problem = only(problems_of([A, State("b")], [("a", "go", "b"), ("b", "back", "a")]))
        assert "no final state" in problem

    def test_states_of_several_types(self) -> None:
        """States of two Enums, or Enum members beside strings, are refused with the types."""
        states: list[State[Any]] = [
            State(Colour.RED, initial=True),
            State(Light.RED),
            State("done", final=True),
        ]
        rows = [(Colour.RED, "go", Light.RED), (Light.RED, "go", "done")]
        assert only(problems_of(states, rows)) == (
            "states are of 3 types (Colour: Colour.RED; Light: Light.RED; str: 'done'); "
            "name every state with a member of one Enum, or every state with a string"
        )

    def test_empty_name(self) -> None:
        """The machine needs a name."""
        problem = only(problems_of([A, C], [("a", "go", "c")], name=""))
        assert "name" in problem


class TestRows:
    """Rules about single rows of the table."""

    def test_unknown_source_and_target(self) -> None:
        """Rows naming undeclared states are refused, listing the declared ones."""
        problems = problems_of([A, C], [("a", "go", "c"), ("x", "go", "c"), ("a", "jump", "y")])
        assert any("unknown source state 'x'; states: 'a', 'c'" in p for p in problems)
        assert any("unknown target state 'y'" in p for p in problems)

    def test_malformed_row(self) -> None:
        """A row that is not a 3- or 4-tuple is named with the expected shape."""
        problem = only(problems_of([A, C], [("a", "go", "c"), ("a", "c")]))
        assert "row 2 is ('a', 'c')" in problem and "(source, trigger, target[, guard])" in problem

    def test_unusable_trigger(self) -> None:
        """None or an unhashable value is not a trigger."""
        problems = problems_of([A, C], [("a", "go", "c"), ("a", None, "c"), ("a", ["x"], "c")])
        assert sum("is not usable" in p for p in problems) == 2

    def test_guard_not_callable(self) -> None:
        """A guard must be callable."""
        problem = only(problems_of([A, C], [("a", "go", "c", "yes")]))
        assert "guard 'yes' is not callable" in problem

    def test_shadowed_row(self) -> None:
        """A row after an unguarded row with the same source and trigger can never fire."""
        problem = only(problems_of([A, C], [("a", "go", "c"), ("a", "go", "c", lambda r: True)]))
        assert "can never fire" in problem and "('a', 'go', 'c')" in problem

    def test_guarded_rows_before_unguarded_are_fine(self) -> None:
        """Guarded rows first, an unguarded fallback last, is a valid table."""
        m = Machine(
            "m",
            states=[A, B, C],
            transitions=[
                ("a", "go", "b", lambda r: False),
                ("a", "go", "c"),
                ("b", "go", "c"),
            ],
        )
        assert m.start().send("go").state == "c"

    def test_guard_taking_other_than_the_run(self) -> None:
        """A guard that cannot be called with the run alone is refused, naming row and guard."""

        def two(run: object, other: object) -> bool:
            return True

        def none() -> bool:
            return True

        def extra(run: object, retries: int = 1) -> bool:
            return True

        rows = [("a", "go", "c", two), ("a", "go", "c", none), ("a", "go", "c")]
        problems = problems_of([A, C], rows)
        assert problems == (
            "row 1 ('a', 'go', 'c', two): guard two takes (run, other); a guard is called "
            "with one argument, the run",
            "row 2 ('a', 'go', 'c', none): guard none takes (); a guard is called with one "
            "argument, the run",
        )
        optional = Machine(
            "m",
            states=[A, C],
            transitions=[("a", "go", "c", bool), ("a", "go", "c", extra)],
        )
        assert optional.start().send("go").state == "c"  # bool's signature cannot be read

    def test_row_objects_are_accepted(self) -> None:
        """Row instances and tuples may be mixed."""
        m = Machine("m", states=[A, C], transitions=[Row("a", "go", "c")])
        assert m.transitions == (Row("a", "go", "c"),)


class TestGraph:
    """Rules about the shape of the whole graph."""

    def test_unreachable_state(self) -> None:
        """A state no row leads to from the initial one is refused."""
        states = [A, State("lost"), C]
        problems = problems_of(states, [("a", "go", "c"), ("lost", "go", "c")])
        assert only(problems) == "state 'lost' is unreachable from the initial state 'a'"

    def test_dead_end(self) -> None:
        """A non-final state without outgoing rows is refused."""
        problem = only(problems_of([A, B, C], [("a", "go", "b"), ("a", "end", "c")]))
        assert "state 'b' is not final and has no outgoing row" in problem

    def test_loop_without_exit(self) -> None:
        """A retry loop from which no final state can be reached is refused."""
        rows = [("a", "go", "b"), ("a", "end", "c"), ("b", "retry", "b")]
        problem = only(problems_of([A, B, C], rows))
        assert "state 'b' can never reach a final state" in problem

    def test_final_with_outgoing_row(self) -> None:
        """A final state with an outgoing row is refused."""
        problem = only(problems_of([A, C], [("a", "go", "c"), ("c", "again", "a")]))
        assert "final state 'c' has outgoing rows" in problem

    def test_final_with_action(self) -> None:
        """A final state cannot own an action: nothing could follow its outcome."""
        states = [A, State("c", final=True, action=lambda ctx: Ok())]
        problem = only(problems_of(states, [("a", "go", "c")]))
        assert "final state 'c' has action <lambda>" in problem


class TestOutcomes:
    """The sealed-class check on actions' closed return families."""

    def test_union_member_unhandled(self) -> None:
        """Each class of a Union return annotation needs a row from the state."""

        def act(context: dict[str, Any]) -> Ok | NotFound | Illegal:
            return Ok()

        states = [State("a", initial=True, action=act), C, State("f", final=True)]
        problem = only(problems_of(states, [("a", Ok, "c"), ("a", NotFound, "f")]))
        assert problem == (
            "state 'a': action act can return Illegal but no row from 'a' handles it"
        )

    def test_base_class_row_handles_subclasses(self) -> None:
        """A row on a base class handles every subclass named in the annotation."""

        def act(context: dict[str, Any]) -> Ok | Missing | Broken:
            return Broken()

        m = Machine(
            "m",
            states=[State("a", initial=True, action=act), C, State("f", final=True)],
            transitions=[("a", Ok, "c"), ("a", Failure, "f")],
        )
        assert m.start().state == "f"

    def test_sealed_base_needs_every_subclass(self) -> None:
        """An annotation naming a base class is handled when all its subclasses are."""

        def act(context: dict[str, Any]) -> Result:
            return Good()

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", Good, "c")]))
        assert "can return Result" in problem
        m = Machine("m", states=states, transitions=[("a", Good, "c"), ("a", Bad, "c")])
        assert m.start().state == "c"

    def test_enum_family(self) -> None:
        """Every member of an Enum return annotation needs a row."""

        def act(context: dict[str, Any]) -> Colour:
            return Colour.GREEN

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", Colour.RED, "c")]))
        assert "can return Colour.GREEN" in problem
        m = Machine(
            "m", states=states, transitions=[("a", Colour.RED, "c"), ("a", Colour.GREEN, "c")]
        )
        assert m.start().outcome is Colour.GREEN

    def test_literal_family(self) -> None:
        """Every value of a Literal return annotation needs a row."""

        def act(context: dict[str, Any]) -> Literal["ok", "retry"]:
            return "ok"

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", "ok", "c")]))
        assert "can return 'retry'" in problem

    def test_optional_needs_none_row(self) -> None:
        """`X | None` needs a row for None's type too."""

        def act(context: dict[str, Any]) -> Ok | None:
            return None

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", Ok, "c")]))
        assert "can return NoneType" in problem
        none_type: Any = type(None)  # mypy does not see type[None] as Hashable
        m = Machine("m", states=states, transitions=[("a", Ok, "c"), ("a", none_type, "c")])
        assert m.start().finished

    def test_open_annotations_are_not_checked(self) -> None:
        """Any, object and builtins like str name no closed family."""

        def as_str(context: dict[str, Any]) -> str:
            return "go"

        def as_any(context: dict[str, Any]) -> Any:
            return "go"

        for act in (as_str, as_any):
            m = Machine(
                "m",
                states=[State("a", initial=True, action=act), C],
                transitions=[("a", "go", "c")],
            )
            assert m.start().finished

    def test_unresolvable_annotation_is_a_problem(self) -> None:
        """An annotation that cannot be resolved is reported, never silently skipped."""

        def act(context: dict[str, Any]) -> Ok | Nowhere:  # type: ignore[name-defined]  # noqa: F821
            return Ok()

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", Ok, "c")]))
        assert problem == (
            "state 'a': action act names Nowhere in its return annotation, but no row from 'a' "
            "handles it (and it cannot be resolved from the action)"
        )

    def test_partial_and_callable_object_actions(self) -> None:
        """A functools.partial or a callable object declares its outcomes like a function."""

        def act(prefix: str, context: dict[str, Any]) -> Ok | NotFound:
            return Ok()

        class Act:
            def __call__(self, context: dict[str, Any]) -> Ok | NotFound:
                return Ok()

        for action in (functools.partial(act, "x"), Act()):
            states = [State("a", initial=True, action=action), C]
            problem = only(problems_of(states, [("a", Ok, "c")]))
            assert "can return NotFound" in problem
        assert "action partial(act)" in only(
            problems_of(
                [State("a", initial=True, action=functools.partial(act, "x")), C], [("a", Ok, "c")]
            )
        )

    def test_row_outside_the_family_can_never_fire(self) -> None:
        """From an action state, a row no outcome of the family matches is refused."""

        def act(context: dict[str, Any]) -> Ok:
            return Ok()

        states = [State("a", initial=True, action=act), C]
        problem = only(problems_of(states, [("a", Ok, "c"), ("a", "manual", "c")]))
        assert problem == "row ('a', 'manual', 'c') can never fire: act returns only Ok"

    def test_local_outcome_classes_resolve_through_the_table(self) -> None:
        """Outcome classes defined in a function resolve through the table's triggers."""

        @dataclass(frozen=True)
        class Local: ...

        def act(context: dict[str, Any]) -> Local:
            return Local()

        m = Machine(
            "m", states=[State("a", initial=True, action=act), C], transitions=[("a", Local, "c")]
        )
        assert m.start().finished


class TestDeclaredOutcomes:
    """`State(..., outcomes=...)` names the family an action's annotation cannot."""

    def test_action_without_annotation_is_refused(self) -> None:
        """An action whose outcomes cannot be known is refused, saying how to declare them."""
        states = [State("a", initial=True, action=lambda ctx: Ok()), C]
        assert only(problems_of(states, [("a", Ok, "c")])) == (
            "state 'a': action <lambda> has no return annotation, so its outcomes cannot be "
            "checked; annotate its return with a closed family (A | B, an Enum, a Literal) or "
            "list them with State('a', ..., outcomes=(A, B))"
        )

    def test_outcomes_are_checked_like_an_annotation(self) -> None:
        """Each outcome listed needs a row, and a row none of them matches can never fire."""
        states = [State("a", initial=True, action=lambda ctx: Ok(), outcomes=(Ok, NotFound)), C]
        problems = problems_of(states, [("a", Ok, "c"), ("a", "manual", "c")])
        assert problems == (
            "state 'a': action <lambda> can return NotFound but no row from 'a' handles it",
            "row ('a', 'manual', 'c') can never fire: <lambda> returns only Ok, NotFound",
        )

    def test_enum_classes_members_and_values(self) -> None:
        """An Enum class stands for its members; Enum members and plain values are themselves."""
        action = State("a", initial=True, action=lambda ctx: "retry", outcomes=(Colour, "retry"))
        rows = [("a", Colour.RED, "c"), ("a", Colour.GREEN, "c"), ("a", "retry", "c")]
        assert Machine("m", states=[action, C], transitions=rows).start().finished

    def test_outcomes_disagreeing_with_the_annotation(self) -> None:
        """When both are given and name different families, the problem shows both."""

        def act(context: dict[str, Any]) -> Ok | NotFound:
            return Ok()

        states = [State("a", initial=True, action=act, outcomes=(Ok,)), C]
        assert only(problems_of(states, [("a", Ok, "c")])) == (
            "state 'a': action act: its return annotation names Ok, NotFound but outcomes= "
            "lists Ok; make them agree or drop one"
        )

    def test_outcomes_that_are_not_a_tuple(self) -> None:
        """outcomes= must be a non-empty tuple of triggers."""
        single: Any = Ok
        states = [State("a", initial=True, action=lambda ctx: Ok(), outcomes=single), C]
        assert "is not a non-empty tuple; list them as outcomes=(A, B)" in only(
            problems_of(states, [("a", Ok, "c")])
        )

    def test_outcomes_without_an_action(self) -> None:
        """A state without an action has nothing that could return its outcomes=."""
        states = [State("a", initial=True, outcomes=(Ok,)), C]
        assert only(problems_of(states, [("a", "go", "c")])) == (
            "state 'a' lists outcomes= but has no action to return them"
        )


class TestAsync:
    """Async callables are valid definitions (an async run awaits them); a sync run refuses
    them when it is created, naming each one."""

    def test_async_action_family_is_read_from_its_annotation(self) -> None:
        """`async def f() -> A | B` names its family as a plain function's annotation does."""

        async def act(context: dict[str, Any]) -> Ok | NotFound:
            return Ok()

        states = [State("a", initial=True, action=act), C]
        assert only(problems_of(states, [("a", Ok, "c")])) == (
            "state 'a': action act can return NotFound but no row from 'a' handles it"
        )

    def test_a_sync_run_refuses_async_actions_and_guards_by_name(self) -> None:
        """Through functools.partial and a __call__ too; the definition itself is valid."""

        async def act(context: dict[str, Any]) -> Ok:
            return Ok()

        async def check(flag: bool, run: object) -> bool:
            return flag

        class Check:
            async def __call__(self, run: object) -> bool:
                return False

        machine = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("b"), C],
            transitions=[
                ("a", Ok, "b"),
                ("b", "go", "c", functools.partial(check, False)),
                ("b", "go", "c", Check()),
            ],
        )
        creators: list[Callable[[], object]] = [
            machine.create,
            machine.start,
            lambda: machine.restore("r", "b"),
        ]
        for create in creators:
            with pytest.raises(AsyncRequired) as refused:
                create()
            assert str(refused.value) == (
                "machine 'm': a sync run cannot await action act (state 'a'), guard "
                "partial(check) (row ('b', 'go', 'c', partial(check))), guard Check (row "
                "('b', 'go', 'c', Check)); run it with create_async, start_async or "
                "restore_async (AsyncPersistentMachine on a store), or make them plain def"
            )
            assert len(refused.value.callables) == 3


class Stage(enum.Enum):
    """Enum states stored by value; older versions stored their names."""

    NEW = "new"
    DONE = "done"


def alias_problems(
    states: list[State[Any]], aliases: Any = None, rows: list[Any] | None = None
) -> tuple[str, ...]:
    """The problems of a machine a -> b -> c with these states' and the machine's aliases."""
    with pytest.raises(DefinitionError) as caught:
        Machine(
            "m",
            states=states,
            transitions=rows if rows is not None else [("a", "go", "b"), ("b", Ok, "c")],
            aliases=aliases,
        )
    return caught.value.problems


class TestAliases:
    """Former names are names, are not stored names of today, and stand for one thing."""

    def test_state_aliases_not_a_tuple(self) -> None:
        """A bare string (which would read as its letters) is refused."""
        problem = only(alias_problems([A, State("b", aliases="old"), C]))  # type: ignore[arg-type]
        assert problem == (
            "state 'b': aliases='old' is not a tuple; list the state's former names, "
            "e.g. aliases=('old_name',)"
        )

    @pytest.mark.parametrize("alias", [3, "", None])
    def test_state_alias_not_a_name(self, alias: Any) -> None:
        """An alias is a non-empty string: stored labels are strings."""
        problem = only(alias_problems([A, State("b", aliases=(alias,)), C]))
        assert problem == (
            f"state 'b': alias {alias!r} is not a name; an alias is a former stored name of "
            "the state, a non-empty string"
        )

    def test_state_alias_is_a_current_label(self) -> None:
        """An alias that another state is stored under now would take that state's runs."""
        problem = only(alias_problems([A, State("b", aliases=("c",)), C]))
        assert problem == (
            "state 'b': alias 'c' is the stored name of state 'c' now; an alias must be a name "
            "no state has"
        )

    def test_alias_given_to_two_states(self) -> None:
        """One former name cannot stand for two states."""
        states = [A, State("b", aliases=("old",)), State("c", final=True, aliases=("old",))]
        assert only(alias_problems(states)) == (
            "former name 'old' is given to states 'b' and 'c'; it can stand for one state only"
        )

    def test_alias_that_is_an_enum_states_name(self) -> None:
        """An Enum state's member name is a former name of it (older versions stored it)."""
        states = [State(Stage.NEW, initial=True, aliases=("DONE",)), State(Stage.DONE, final=True)]
        problem = only(alias_problems(states, rows=[(Stage.NEW, "go", Stage.DONE)]))
        assert problem == (
            "former name 'DONE' is given to states Stage.NEW and Stage.DONE (an Enum state's "
            "member name counts: older versions stored it); it can stand for one state only"
        )

    def test_aliases_not_a_mapping(self) -> None:
        """The machine's aliases map former names to what they became."""
        problem = only(alias_problems([A, B, C], aliases=["Failed"]))
        assert problem == (
            "aliases=['Failed'] is not a mapping; map each former name to what it is "
            "now, e.g. aliases={'Failed': CaptureFailed}"
        )

    def test_alias_key_not_a_name(self) -> None:
        """A former stored name is a non-empty string."""
        problem = only(alias_problems([A, B, C], aliases={3: Ok}))
        assert problem == (
            "aliases: key 3 is not a name; a key is a former stored name, a trigger label "
            "('Failed') or a type tag ('payments.flow.Failed')"
        )

    def test_alias_key_is_a_current_trigger_label(self) -> None:
        """A trigger label stored today cannot also be a former one."""
        problem = only(alias_problems([A, B, C], aliases={"go": Ok}))
        assert problem == (
            "aliases: 'go' is the stored name of trigger 'go' now; an alias must be a name "
            "nothing is stored under today"
        )

    def test_alias_value_not_a_trigger_or_type(self) -> None:
        """A former name maps to a trigger of the table, or to a dataclass or Enum."""
        problem = only(alias_problems([A, B, C], aliases={"went": "gone"}))
        assert problem == (
            "aliases: 'went' maps to 'gone', which is neither a trigger of the table nor a "
            "dataclass or Enum; map a former name to what it became"
        )

    def test_valid_aliases(self) -> None:
        """Triggers, dataclasses and Enums as targets; an Enum state may alias its own name."""
        machine = Machine(
            "m",
            states=[
                State(Stage.NEW, initial=True, aliases=("NEW", "fresh")),
                State(Stage.DONE, final=True),
            ],
            transitions=[(Stage.NEW, "go", Stage.DONE)],
            aliases={"went": "go", "old.Point": Ok, "old.Stage": Stage},
        )
        assert machine.aliases == {"went": "go", "old.Point": Ok, "old.Stage": Stage}


class TestAllAtOnce:
    """Every problem of a bad table is listed in one error."""

    def test_every_problem_listed(self) -> None:
        """Seven problems of six kinds come back together, each named."""

        def act(context: dict[str, Any]) -> Ok | NotFound:
            return Ok()

        states = [
            State("a", initial=True, action=act),
            State("b", initial=True),
            State("dead"),
            State("c", final=True),
        ]
        rows = [
            ("a", Ok, "c"),
            ("a", Ok, "b"),
            ("b", "go", "ghost"),
            ("c", "again", "a"),
        ]
        with pytest.raises(DefinitionError) as caught:
            Machine("bad", states=states, transitions=rows)
        problems = caught.value.problems
        assert len(problems) == 7, problems
        expected = [
            "several initial states",
            "unknown target state 'ghost'",
            "final state 'c' has outgoing rows",
            "state 'dead' is not final and has no outgoing row",
            "can never fire",
            "can return NotFound",
        ]
        for fragment in expected:
            assert any(fragment in p for p in problems), (fragment, problems)
        text = str(caught.value)
        assert text.startswith(f"machine 'bad' has {len(problems)} problems:")
        assert all(f"  - {p}" in text for p in problems)

    def test_alias_problems_with_the_others(self) -> None:
        """Alias problems are listed in the same error as every other problem."""
        states = [A, State("b", aliases=("c",)), State("dead"), C]
        problems = alias_problems(states, aliases={"go": Ok})
        assert [p.split(":")[0] for p in problems] == [
            "state 'b'",
            "aliases",
            "state 'dead' is not final and has no outgoing row; add a row from it or mark it "
            "final=True",
            "state 'dead' is unreachable from the initial state 'a'",
        ]

    def test_root_cause_before_what_it_causes(self) -> None:
        """A missing outcome row is listed before the unreachable states it leaves behind."""

        def capture(context: dict[str, Any]) -> Ok | Failure:
            return Ok()

        states = [
            State("capture", initial=True, action=capture),
            State("captured", final=True),
            State("capture_failed"),
            State("voided", final=True),
        ]
        rows = [("capture", Ok, "captured"), ("capture_failed", "void", "voided")]
        assert problems_of(states, rows) == (
            "state 'capture': action capture can return Failure but no row from 'capture' "
            "handles it",
            "state 'capture_failed' is unreachable from the initial state 'capture'",
            "state 'voided' is unreachable from the initial state 'capture'",
        )


class TestWholeMessages:
    """Each problem reads in full as the user sees it: what is wrong, and the way out."""

    def test_no_initial_and_no_final(self) -> None:
        """The two missing markers say which flag to set."""
        assert only(problems_of([State("a"), C], [("a", "go", "c")])) == (
            "no initial state; mark exactly one State(..., initial=True)"
        )
        assert only(problems_of([A, State("b")], [("a", "go", "b"), ("b", "back", "a")])) == (
            "no final state; mark at least one State(..., final=True)"
        )

    def test_states_of_two_types(self) -> None:
        """Two types are already one too many."""
        states: list[State[Any]] = [
            State(Colour.RED, initial=True),
            State("fail", final=True),
            State("done", final=True),
        ]
        rows = [(Colour.RED, "go", "done"), (Colour.RED, "no", "fail")]
        assert only(problems_of(states, rows)) == (
            "states are of 2 types (Colour: Colour.RED; str: 'fail', 'done'); name every state "
            "with a member of one Enum, or every state with a string"
        )

    def test_rows_naming_unknown_or_unusable_parts(self) -> None:
        """Unknown states list the declared ones; an unusable trigger or state says why."""
        rows: list[Any] = [
            ("a", "go", "c"),
            ("x", "go", "c"),
            ("a", ["t"], "c"),
            (["s"], "go", "c"),
        ]
        assert problems_of([A, C], rows) == (
            "row 2 ('x', 'go', 'c'): unknown source state 'x'; states: 'a', 'c'",
            "row 3 ('a', ['t'], 'c'): trigger ['t'] is not usable; a trigger is an event name, "
            "an Enum member or an outcome class",
            "row 4 (['s'], 'go', 'c'): unknown source state ['s']; states: 'a', 'c'",
        )

    def test_rows_when_no_state_is_usable(self) -> None:
        """With no usable state the list of states says none."""
        problems = problems_of([State(None, initial=True)], [("a", "go", "b")])
        assert "row 1 ('a', 'go', 'b'): unknown source state 'a'; states: none" in problems

    def test_guard_not_callable_and_shadowed_row(self) -> None:
        """The guard and the row that always wins are named."""
        assert only(problems_of([A, C], [("a", "go", "c", "yes")])) == (
            "row 1 ('a', 'go', 'c', 'yes'): guard 'yes' is not callable"
        )
        assert only(problems_of([A, C], [("a", "go", "c"), ("a", "go", "c", bool)])) == (
            "row ('a', 'go', 'c', bool) can never fire: the earlier row ('a', 'go', 'c') has "
            "no guard and always wins"
        )

    def test_graph_problems(self) -> None:
        """Dead ends, loops without exit and final states with actions, in full."""
        assert only(problems_of([A, B, C], [("a", "go", "b"), ("a", "end", "c")])) == (
            "state 'b' is not final and has no outgoing row; add a row from it or mark it "
            "final=True"
        )
        rows = [("a", "go", "b"), ("a", "end", "c"), ("b", "retry", "b")]
        assert only(problems_of([A, B, C], rows)) == (
            "state 'b' can never reach a final state (a loop with no way out)"
        )
        states = [A, State("c", final=True, action=lambda ctx: Ok())]
        assert only(problems_of(states, [("a", "go", "c")])) == (
            "final state 'c' has action <lambda>; a final state cannot follow an outcome"
        )

    def test_steps_not_a_class(self) -> None:
        """steps= takes the protocol class."""
        with pytest.raises(DefinitionError) as caught:
            Machine("m", steps="Steps", states=[A, C], transitions=[("a", "go", "c")])  # type: ignore[arg-type]
        assert caught.value.problems == (
            "steps='Steps' is not a class; give the protocol whose methods the actions are "
            "(action=Steps.method)",
        )


def charge(context: dict[str, Any], key: str) -> Ok | NotFound:
    """An external action: context and idempotency key."""
    return Ok()


def local(context: dict[str, Any]) -> Ok | NotFound:
    """A local action: the context only."""
    return Ok()


class TestActionsAndTheirCalls:
    """Actions are checked against the way the runtime will call them."""

    ROWS: ClassVar[list[Any]] = [("a", Ok, "c"), ("a", NotFound, "c")]

    def test_external_action_taking_only_the_context(self) -> None:
        """An external action must take the key too."""
        states = [State("a", initial=True, action=local, external=True), C]
        assert only(problems_of(states, self.ROWS)) == (
            "state 'a': action local takes (context); an external action is called with the "
            "context and the step's idempotency key"
        )

    def test_local_action_taking_the_key(self) -> None:
        """A local action is called with the context alone."""
        states = [State("a", initial=True, action=charge), C]
        assert only(problems_of(states, self.ROWS)) == (
            "state 'a': action charge takes (context, key); an action is called with the context"
        )

    def test_external_steps_method(self) -> None:
        """A protocol method is called with self first: (self, context, key) is right."""

        class Steps(Protocol):
            def charge(self, context: dict[str, Any], key: str) -> Ok | NotFound: ...

        machine = Machine(
            "m",
            steps=Steps,
            states=[State("a", initial=True, action=Steps.charge, external=True), C],
            transitions=self.ROWS,
        )
        assert machine.step_names == ("charge",)

    def test_external_without_action_and_action_not_callable(self) -> None:
        """Both are named with their state; problems of several states are all kept."""
        not_callable: Any = "charge"
        states = [
            State("a", initial=True, external=True),
            State("b", action=not_callable),
            State("d", action=local),
            C,
        ]
        rows = [("a", "go", "b"), ("b", "go", "d"), ("d", Ok, "c"), ("d", NotFound, "c")]
        assert problems_of(states, rows) == (
            "state 'a' is external=True but has no action to call",
            "state 'b': action 'charge' is not callable",
        )

    def test_outcome_checks_continue_past_states_without_actions(self) -> None:
        """A state without action before the action state does not end the outcome check."""
        states = [A, State("b", action=local), C]
        assert only(problems_of(states, [("a", "go", "b"), ("b", Ok, "c")])) == (
            "state 'b': action local can return NotFound but no row from 'b' handles it"
        )

    def test_outcome_checks_continue_past_open_families(self) -> None:
        """An action with an open annotation before another action state ends nothing."""

        def as_str(context: dict[str, Any]) -> str:
            return "go"

        states = [State("a", initial=True, action=as_str), State("b", action=local), C]
        rows = [("a", "go", "b"), ("b", Ok, "c")]
        assert only(problems_of(states, rows)) == (
            "state 'b': action local can return NotFound but no row from 'b' handles it"
        )

    def test_outcome_checks_continue_past_final_states(self) -> None:
        """A final state listed before the action state does not end the check either."""
        states = [C, State("a", initial=True, action=local)]
        assert only(problems_of(states, [("a", Ok, "c")])) == (
            "state 'a': action local can return NotFound but no row from 'a' handles it"
        )


class TestFamilies:
    """How a family is read from outcomes= and from annotations."""

    def test_open_annotation_with_outcomes(self) -> None:
        """An open annotation (-> str) leaves the family to outcomes=."""

        def act(context: dict[str, Any]) -> str:
            return "ok"

        states = [State("a", initial=True, action=act, outcomes=("ok", "no")), C]
        assert only(problems_of(states, [("a", "ok", "c")])) == (
            "state 'a': action act can return 'no' but no row from 'a' handles it"
        )

    def test_none_in_outcomes_is_none_type(self) -> None:
        """None listed in outcomes= is handled by a row on NoneType, as in an annotation."""
        none_type: Any = type(None)
        state = State("a", initial=True, action=lambda ctx: None, outcomes=(Ok, None))
        machine = Machine(
            "m", states=[state, C], transitions=[("a", Ok, "c"), ("a", none_type, "c")]
        )
        assert machine.start().finished
        assert state_outcomes(state) == (Ok, none_type)

    def test_unhashable_value_in_outcomes(self) -> None:
        """A value that cannot be a trigger is named."""
        listed: Any = (Ok, ["x"])
        state = State("a", initial=True, action=lambda ctx: Ok(), outcomes=listed)
        assert only(problems_of([state, C], [("a", Ok, "c")])) == (
            "state 'a': action <lambda>: outcomes= lists ['x'], which cannot be a trigger"
        )

    def test_unreadable_annotation(self) -> None:
        """An annotation that raises when read is reported with the error."""

        def act(context: dict[str, Any]) -> Ok:
            return Ok()

        act.__annotations__["return"] = "Ok | 1"  # int | Ok fails when evaluated

        problem = only(problems_of([State("a", initial=True, action=act), C], [("a", Ok, "c")]))
        assert problem.startswith("state 'a': action act: its return annotation cannot be read (")
        assert problem.endswith(
            "); define the outcome types where the action's module can see them"
        )
        assert "TypeError" in problem

    def test_annotated_return(self) -> None:
        """Annotated[X, ...] names X's family."""

        def act(context: dict[str, Any]) -> Annotated[Ok | NotFound, "doc"]:
            return Ok()

        states = [State("a", initial=True, action=act), C]
        assert only(problems_of(states, [("a", Ok, "c")])) == (
            "state 'a': action act can return NotFound but no row from 'a' handles it"
        )

    def test_local_enum_resolves_through_the_table(self) -> None:
        """A locally defined Enum in a string annotation resolves through the table's rows."""

        class Answer(enum.Enum):
            YES = "yes"
            NO = "no"

        def act(context: dict[str, Any]) -> Answer:
            return Answer.YES

        act.__annotations__["return"] = "Answer"
        states = [State("a", initial=True, action=act), C]
        assert only(problems_of(states, [("a", Answer.YES, "c")])) == (
            "state 'a': action act can return Answer.NO but no row from 'a' handles it"
        )

    def test_literal_values_handled_by_their_class(self) -> None:
        """A row on str handles every str value of a Literal; a row on another value, none."""

        def act(context: dict[str, Any]) -> Literal["ok", "retry"]:
            return "ok"

        states = [State("a", initial=True, action=act), C]
        assert Machine("m", states=states, transitions=[("a", str, "c")]).start().finished
        assert only(problems_of(states, [("a", str, "c"), ("a", "never", "c")])) == (
            "row ('a', 'never', 'c') can never fire: act returns only 'ok', 'retry'"
        )

    def test_unhashable_literal_value(self) -> None:
        """A Literal value that cannot be a dict key is compared, not looked up."""

        def act(context: dict[str, Any]) -> Ok:
            return Ok()

        act.__annotations__["return"] = Literal[["x"]]
        states = [State("a", initial=True, action=act), C]
        assert problems_of(states, [("a", "x", "c")]) == (
            "state 'a': action act can return ['x'] but no row from 'a' handles it",
            "row ('a', 'x', 'c') can never fire: act returns only ['x']",
        )
        assert Machine("m", states=states, transitions=[("a", list, "c")]).transitions

    def test_state_outcomes_resolve_local_classes_through_known(self) -> None:
        """Given the table's triggers, a locally defined outcome class resolves."""

        @dataclass(frozen=True)
        class Local: ...

        def act(context: dict[str, Any]) -> Local:
            return Local()

        act.__annotations__["return"] = "Local"
        assert state_outcomes(State("a", action=act), known=(Local, "go")) == (Local,)
        with pytest.raises(NameError):
            state_outcomes(State("a", action=act))

    def test_state_outcomes_and_outcome_family(self) -> None:
        """The toolkit reads a state's family: outcomes= first, else the annotation."""
        assert state_outcomes(State("a", action=local)) == (Ok, NotFound)
        assert state_outcomes(State("a", action=local, outcomes=(Ok,))) == (Ok,)
        assert state_outcomes(State("a", outcomes=(Colour,))) == (Colour.RED, Colour.GREEN)
        assert state_outcomes(State("a")) is None
        assert outcome_family(local) == (Ok, NotFound)
        assert outcome_family(lambda ctx: Ok()) is None

        def as_str(context: dict[str, Any]) -> str:
            return ""

        assert outcome_family(as_str) is None


class TestAliasesOfSeveralStates:
    """Former names are checked across every state, each alias on its own."""

    def test_different_aliases_do_not_clash(self) -> None:
        """Two states with a former name each is a valid machine."""
        states = [A, State("b", aliases=("old_b",)), State("c", final=True, aliases=("old_c",))]
        machine = Machine("m", states=states, transitions=[("a", "go", "b"), ("b", Ok, "c")])
        assert machine.state("c").aliases == ("old_c",)

    def test_a_clash_on_a_second_alias(self) -> None:
        """The clash is found on a state's second former name too."""
        states = [A, State("b", aliases=("x", "y")), State("c", final=True, aliases=("y",))]
        assert only(alias_problems(states)) == (
            "former name 'y' is given to states 'b' and 'c'; it can stand for one state only"
        )

    def test_wrong_aliases_on_two_states(self) -> None:
        """Each state's wrong alias is named."""
        states = [A, State("b", aliases=("",)), State("c", final=True, aliases=("a",))]
        assert alias_problems(states) == (
            "state 'b': alias '' is not a name; an alias is a former stored name of the state, "
            "a non-empty string",
            "state 'c': alias 'a' is the stored name of state 'a' now; an alias must be a name "
            "no state has",
        )

    def test_an_unhashable_alias_target(self) -> None:
        """A former name mapped to an unhashable value is neither trigger nor type."""
        assert only(alias_problems([A, B, C], aliases={"went": ["go"]})) == (
            "aliases: 'went' maps to ['go'], which is neither a trigger of the table nor a "
            "dataclass or Enum; map a former name to what it became"
        )


class TestCancel:
    def test_cancel_names_a_rows_trigger(self) -> None:
        """cancel= is kept when a row has that trigger."""
        machine = Machine(
            "m", states=[A, B, C], transitions=[("a", "go", "b"), ("b", "stop", "c")], cancel="stop"
        )
        assert machine.cancel == "stop"

    def test_a_trigger_without_a_row_is_refused(self) -> None:
        """cancel= naming no row's trigger lists the triggers there are."""
        with pytest.raises(DefinitionError) as caught:
            Machine("m", states=[A, C], transitions=[("a", "go", "c")], cancel="stop")
        assert only(caught.value.problems) == (
            "cancel='stop' is the trigger of no row; add a row for it from each state a run "
            "may be cancelled in, or name one of the triggers: 'go'"
        )

    def test_an_unhashable_cancel_is_refused(self) -> None:
        """A list can be no trigger: refused, not a TypeError."""
        with pytest.raises(DefinitionError) as caught:
            Machine("m", states=[A, C], transitions=[("a", "go", "c")], cancel=["go"])  # type: ignore[arg-type]
        assert "cancel=['go'] is the trigger of no row" in only(caught.value.problems)
