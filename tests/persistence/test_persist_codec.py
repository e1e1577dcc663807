"""The JSON codec: round-trips, known types only, clear errors naming the run and the place."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest

from fsm import Machine, State
from fsm.codec import Codec, DecodeError, EncodeError, type_tag
from tests.persistence.persist_support import Audited, Change, NoUser, Step, Updated


class Color(Enum):
    """An Enum the tests register by hand."""

    RED = 1
    BLUE = 2


@dataclass(frozen=True)
class Point:
    """A dataclass the tests register by hand."""

    x: int
    y: int


@dataclass(frozen=True)
class Painted:
    """An outcome naming other types only inside generic annotations."""

    colors: list[Color]
    at: Point | None


@dataclass(frozen=True)
class Chain:
    """An outcome whose field names its own type."""

    rest: Chain | None


@dataclass(frozen=True)
class Unregistered:
    """A dataclass no codec knows."""

    value: int


def roundtrip(codec: Codec, value: object) -> object:
    """Encode, go through real JSON text, decode."""
    text = json.dumps(codec.encode(value), allow_nan=False)
    return codec.decode(json.loads(text), machine="m", run_id="r1")


class TestRoundTrip:
    """Every supported value comes back equal and of the same type."""

    @pytest.mark.parametrize(
        "value",
        [
            None,
            True,
            0,
            -7,
            2**70,
            1.5,
            "text",
            "",
            [1, "a", None],
            {"a": {"b": [1, 2]}},
            datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2026, 1, 2, 3, 4, 5),
            date(2026, 2, 28),
            time(13, 14, 15),
            timedelta(days=-1, seconds=5, microseconds=7),
            Decimal("12345678901234567890.000000001"),
            Decimal("-0.10"),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            b"\x00\xffbytes",
            (1, (2, 3)),
            {1, 2, 3},
            frozenset({"a"}),
            {1: "one", (2, 3): "pair"},
            {"$t": "looks tagged", "v": 1},
        ],
    )
    def test_builtin_values(self, value: object) -> None:
        """Plain JSON, date/time types, Decimals, UUIDs, bytes, tuples, sets, odd dicts."""
        back = roundtrip(Codec(), value)
        assert back == value
        assert type(back) is type(value)

    def test_non_finite_floats(self) -> None:
        """NaN and infinities survive, even though JSON (and JSONB) refuse them bare."""
        back = roundtrip(Codec(), [math.inf, -math.inf, math.nan])
        assert isinstance(back, list)
        assert back[:2] == [math.inf, -math.inf] and math.isnan(back[2])

    def test_dataclasses_and_enums(self) -> None:
        """Registered dataclasses (nested) and Enum members come back as themselves."""
        codec = Codec([Point, Color])
        value = {"points": [Point(1, 2)], "color": Color.BLUE, "key": (Color.RED, Point(0, 0))}
        assert roundtrip(codec, value) == value

    def test_classes_as_values(self) -> None:
        """A registered class stored as a value (an event sent as a class) comes back."""
        assert roundtrip(Codec([Point]), Point) is Point

    def test_decimal_keeps_its_exponent(self) -> None:
        """Decimals are stored as text, so trailing zeros (money) are kept exactly."""
        back = roundtrip(Codec(), Decimal("1.50"))
        assert str(back) == "1.50"


class TestKnownTypes:
    """Only the machine's own types and registered ones are stored or read back."""

    def test_machine_types_are_known(self) -> None:
        """Outcome classes from annotations and triggers, Enum states and nested fields."""
        from adapters.sqlalchemy import create_engine
        from tests.persistence.persist_support import build_machine
        from userstatus.sql import FlowSqlUnitOfWork

        engine = create_engine("sqlite://")
        codec = Codec.for_machine(build_machine(FlowSqlUnitOfWork(engine)))
        for cls in (Step, Updated, NoUser, Audited, Change):
            assert codec.types[type_tag(cls)] is cls
        engine.dispose()

    def test_subclasses_of_a_trigger_class_are_known(self) -> None:
        """A row catching a base class knows the subclasses it catches."""

        class Failure(Exception):
            """Base."""

        @dataclass(frozen=True)
        class Timeout(Failure):
            """Sub."""

            seconds: int

        def act(context: dict[str, Any]) -> Failure:
            return Timeout(3)

        machine = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Failure, "z")],
        )
        codec = Codec.for_machine(machine)
        assert roundtrip(codec, Timeout(3)) == Timeout(3)

    def test_a_machine_s_codec_is_built_once_per_types(self) -> None:
        """for_machine answers the codec it built for the same machine and types (building
        one reads every action's type hints); other types or another machine, another."""
        machine = Machine(
            "m",
            states=[State("a", initial=True), State("z", final=True)],
            transitions=[("a", "go", "z")],
        )
        twin = Machine(
            "m",
            states=[State("a", initial=True), State("z", final=True)],
            transitions=[("a", "go", "z")],
        )
        codec = Codec.for_machine(machine, [Point])
        assert Codec.for_machine(machine, (Point,)) is codec
        assert Codec.for_machine(machine) is not codec
        assert Codec.for_machine(twin, [Point]) is not codec
        assert "Point" not in str(Codec.for_machine(machine).types)
        assert roundtrip(codec, Point(1, 2)) == Point(1, 2)

    def test_a_subclass_defined_after_a_first_codec_is_known(self) -> None:
        """The codec a machine shares knows the subclasses its trigger classes have now, not
        only those they had when its first codec was built."""

        @dataclass(frozen=True)
        class Declined:
            """Base."""

        machine = Machine(
            "m",
            states=[State("a", initial=True), State("z", final=True)],
            transitions=[("a", Declined, "z")],
        )
        first = Codec.for_machine(machine)

        @dataclass(frozen=True)
        class Late(Declined):
            """Defined after the first codec."""

        with pytest.raises(EncodeError):
            first.encode(Late())
        assert roundtrip(Codec.for_machine(machine), Late()) == Late()

    def test_a_dataclass_trigger_and_each_of_its_subclasses_are_known(self) -> None:
        """The row's class itself and every subclass, not only the last one found."""

        @dataclass(frozen=True)
        class Declined:
            """Base."""

        @dataclass(frozen=True)
        class Refused(Declined):
            """First sub."""

        @dataclass(frozen=True)
        class Expired(Declined):
            """Second sub."""

        def act(context: dict[str, Any]) -> Declined:
            return Refused()

        machine = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Declined, "z")],
        )
        codec = Codec.for_machine(machine)
        for cls in (Declined, Refused, Expired):
            assert codec.types[type_tag(cls)] is cls

    def test_types_inside_generic_field_annotations_are_known(self) -> None:
        """`list[Color]` and `Point | None` in an outcome's fields register Color and Point."""

        def act(context: dict[str, Any]) -> Painted:
            return Painted([Color.RED], None)

        machine = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Painted, "z")],
        )
        codec = Codec.for_machine(machine)
        value = Painted([Color.RED, Color.BLUE], Point(1, 2))
        assert roundtrip(codec, value) == value

    def test_an_outcome_naming_its_own_type_is_known(self) -> None:
        """A field of the outcome's own type: registered once, not followed for ever."""

        def act(context: dict[str, Any]) -> Chain:
            return Chain(None)

        machine = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Chain, "z")],
        )
        codec = Codec.for_machine(machine)
        assert roundtrip(codec, Chain(Chain(None))) == Chain(Chain(None))

    def test_unknown_type_is_refused_when_encoding(self) -> None:
        """An unregistered dataclass names its place and how to register it."""
        with pytest.raises(EncodeError, match=r"context\['items'\]\[1\]: type .*Unregistered"):
            Codec().encode({"items": [1, Unregistered(2)]}, where="context")

    def test_subclass_of_a_builtin_is_refused(self) -> None:
        """A str subclass is not silently stored as a plain string."""

        class Name(str):
            """A string subclass."""

        with pytest.raises(EncodeError, match="Name is not known"):
            Codec().encode(Name("x"))

    @pytest.mark.parametrize(
        ("value", "place"),
        [
            ({"s": "a\ud800b"}, r"context\['s'\]"),
            ({"\udfff": 1}, r"context key '\\udfff'"),
            ({"xs": ["ok", ("\ud83d\ude00",)]}, r"context\['xs'\]\[1\]\[0\]"),
            ({"p": Point(1, "\udc80")}, r"context\['p'\]\.y"),  # type: ignore[arg-type]
        ],
    )
    def test_lone_surrogate_is_refused(self, value: object, place: str) -> None:
        """A surrogate code point is not valid Unicode: refused, naming where it is."""
        with pytest.raises(EncodeError, match=place + r".*surrogate") as caught:
            Codec([Point]).encode(value, where="context")
        assert "\n" not in str(caught.value)

    def test_a_lone_surrogate_is_refused_with_the_way_out(self) -> None:
        """The whole message: the code point, its index, and how to get valid text."""
        with pytest.raises(EncodeError) as caught:
            Codec().encode("ab\udc80", where="context['s']")
        assert str(caught.value) == (
            "cannot store context['s']: the text holds the surrogate code point '\\udc80' at "
            "index 2, which is not valid Unicode (databases refuse it); decode its bytes "
            "properly, or with errors='replace'"
        )

    def test_unknown_tag_names_the_run(self) -> None:
        """A tag no type answers to is an error naming the run, never a guess or an import."""
        data = {"$t": "os.system", "v": {}}
        with pytest.raises(
            DecodeError, match=r"run r9 of machine 'm'.*unknown type tag 'os.system'"
        ):
            Codec([Point]).decode(data, machine="m", run_id="r9", where="context")

    def test_same_name_for_two_types_is_refused(self) -> None:
        """Two classes with the same module and qualified name cannot share a tag."""

        def make() -> type:
            @dataclass
            class Twin:
                """Defined twice."""

            return Twin

        with pytest.raises(Exception, match="share the stored name"):
            Codec([make(), make()])


class TestCorruptValues:
    """Malformed stored values raise DecodeError naming the run and where."""

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"$t": "datetime", "v": "not a date"}, "malformed datetime"),
            ({"$t": "decimal", "v": "1,5"}, "malformed decimal"),
            ({"$t": "bytes", "v": "***"}, "malformed bytes"),
            ({"$t": "tuple", "v": 3}, "malformed tuple"),
            ({"$t": "dict", "v": [[1]]}, "malformed dict"),
            ({"$t": "set", "v": [[1, 2]]}, "malformed set"),
            ({"$t": 5, "v": 1}, "not a string"),
            ({"$t": "date"}, "expected"),
            ({"$t": type_tag(Color), "v": "GREEN"}, "not a member"),
            ({"$t": type_tag(Point), "v": {"x": 1}}, "cannot rebuild"),
            ({"$t": type_tag(Point), "v": {"x": 1, "y": 2, "z": 3}}, "no fields"),
            ({"$t": type_tag(Point), "v": [1, 2]}, "needs an object"),
        ],
    )
    def test_malformed(self, data: object, message: str) -> None:
        """Each kind of corruption is reported, with the run's id."""
        with pytest.raises(DecodeError, match=message) as caught:
            Codec([Point, Color]).decode({"a": [data]}, machine="m", run_id="r1", where="context")
        assert caught.value.run_id == "r1"
        assert "context['a'][0]" in str(caught.value)


class TestMessages:
    """The whole message of each refusal, and the place kept as `where`."""

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (
                {"$t": "float", "v": "1.5"},
                "malformed float value '1.5': only nan, inf and -inf are tagged",
            ),
            ({"$t": "type", "v": "x.Y"}, "unknown type tag 'x.Y' for a stored class"),
            ({"$t": "tuple", "v": 3}, "malformed tuple value 3: expected a list, got int"),
            ({"$t": "date", "v": 5}, "malformed date value 5: expected a string, got int"),
            (
                {"$t": "dict", "v": [[1]]},
                "malformed dict value [[1]]: expected a [key, value] pair, got [1]",
            ),
            ((1,), "tuple is not a JSON value"),
            (
                {"$t": type_tag(Color), "v": "GREEN"},
                f"'GREEN' is not a member of {type_tag(Color)} (RED, BLUE)",
            ),
        ],
    )
    def test_a_corrupt_value_is_named_in_full(self, data: object, message: str) -> None:
        """The run, the place and what is wrong with the stored value, word for word."""
        with pytest.raises(DecodeError) as caught:
            Codec([Point, Color]).decode({"a": [data]}, machine="m", run_id="r1", where="context")
        assert (
            str(caught.value) == f"cannot restore run r1 of machine 'm': context['a'][0]: {message}"
        )
        assert caught.value.where == "context['a'][0]"

    @pytest.mark.parametrize(
        ("types", "known"),
        [
            ((), "none"),
            ((Point, Color), f"{type_tag(Color)}, {type_tag(Point)}"),
        ],
    )
    def test_an_unknown_type_names_the_types_the_codec_knows(
        self, types: tuple[type, ...], known: str
    ) -> None:
        """The refusal lists what may be stored and the registered types, sorted, or none."""
        with pytest.raises(EncodeError) as caught:
            Codec(types).encode({"x": Unregistered(1)}, where="context")
        assert str(caught.value) == (
            f"cannot store context['x']: type {type_tag(Unregistered)} is not known to this "
            "codec; store plain JSON values, datetimes, dates, Decimals, UUIDs, bytes, tuples, "
            f"sets, or register the dataclass/Enum with types=[...] (known types: {known})"
        )
        assert caught.value.where == "context['x']"

    @pytest.mark.parametrize(
        ("data", "where"),
        [
            ({"$t": "dict", "v": [[{"$t": "date", "v": 1}, 2]]}, "context key"),
            ({"$t": "dict", "v": [[1, 2], [3, {"$t": "date", "v": 1}]]}, "context[1]"),
            ({"$t": "tuple", "v": [1, {"$t": "date", "v": 1}]}, "context[1]"),
            ({"$t": type_tag(Point), "v": {"x": 1, "y": {"$t": "date", "v": 1}}}, "context.y"),
        ],
    )
    def test_a_corrupt_value_inside_a_tagged_one_is_named_by_its_place(
        self, data: object, where: str
    ) -> None:
        """A key, a pair's value, an item or a field: the error names the place within."""
        with pytest.raises(DecodeError) as caught:
            Codec([Point]).decode(data, machine="m", run_id="r1", where="context")
        assert caught.value.where == where
        assert str(caught.value).startswith(f"cannot restore run r1 of machine 'm': {where}: ")

    def test_an_unknown_tag_in_a_codec_knowing_no_types_names_none_at_value(self) -> None:
        """Without `where=` the place is `value`; with no types registered they are "none"."""
        with pytest.raises(DecodeError) as caught:
            Codec().decode({"$t": "x.Y", "v": 1}, machine="m", run_id="r1")
        assert str(caught.value) == (
            "cannot restore run r1 of machine 'm': value: unknown type tag 'x.Y'; this machine "
            "knows none (register the type with types=[...] if it is yours; if it was moved or "
            "renamed, add aliases={'x.Y': TheType} to the Machine)"
        )

    @pytest.mark.parametrize(
        ("value", "where"),
        [
            ({Unregistered(1): 1}, "context key Unregistered(value=1)"),
            ({1: Unregistered(2)}, "context[1]"),
        ],
    )
    def test_a_dict_with_other_keys_names_the_key_or_the_value_refused(
        self, value: object, where: str
    ) -> None:
        """In a dict stored as pairs, an unknown key is named as a key, a value by its key."""
        with pytest.raises(EncodeError) as caught:
            Codec().encode(value, where="context")
        assert caught.value.where == where
        assert str(caught.value).startswith(f"cannot store {where}: type {type_tag(Unregistered)}")

    def test_only_classes_are_registered(self) -> None:
        """Anything else given as a type is refused, named."""
        with pytest.raises(TypeError, match=r"^register classes, not 3$"):
            Codec([3])  # type: ignore[list-item]

    @pytest.mark.parametrize(
        ("value", "where"),
        [
            (Unregistered(1), "value"),
            ({"c": Color.RED}, "context['c']"),
            ({"c": Color}, "context['c']"),
        ],
    )
    def test_an_unknown_value_enum_or_class_names_its_place(
        self, value: object, where: str
    ) -> None:
        """An Enum member or a class as a value is refused at its place; `value` by default."""
        codec = Codec()
        with pytest.raises(EncodeError) as caught:
            if where == "value":
                codec.encode(value)
            else:
                codec.encode(value, where="context")
        assert caught.value.where == where
        assert str(caught.value).startswith(f"cannot store {where}: type ")
