"""JSON codec for contexts and outcomes: tagged values, tags resolved only against known types."""

from __future__ import annotations

import base64
import dataclasses
import math
import re
import typing
import uuid
import weakref
from collections.abc import Hashable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import TYPE_CHECKING, Any

from fsm.errors import FSMError, RestoreError
from fsm.validation import state_outcomes

if TYPE_CHECKING:
    from fsm.definition import Machine

TAG = "$t"
"""The key that marks a tagged value: {"$t": tag, "v": payload}."""

JSON = Any
"""A JSON-compatible value: None, bool, int, float, str, list, dict with str keys."""

_BUILTIN_TAGS = (
    "datetime",
    "date",
    "time",
    "timedelta",
    "decimal",
    "uuid",
    "bytes",
    "tuple",
    "set",
    "frozenset",
    "dict",
    "float",
    "type",
)


_SURROGATE = re.compile("[\ud800-\udfff]")
"""Surrogate code points: Python strings may hold them, UTF-8 (and PostgreSQL) may not."""


class EncodeError(FSMError, ValueError):
    """A value cannot be stored: an unknown type, or text that is not Unicode. Nothing written."""

    def __init__(self, message: str, *, where: str) -> None:
        self.where = where
        super().__init__(f"cannot store {where}: {message}")


class DecodeError(RestoreError):
    """A stored run cannot be read back: corrupt JSON, an unknown type tag, a malformed value."""

    def __init__(self, message: str, *, machine: str, run_id: str, where: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}", machine=machine, run_id=run_id)


class _Bad(Exception):
    """Raised inside decoding; turned into DecodeError with the run's names at the top."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


def type_tag(cls: type) -> str:
    """The stored name of a registered type: its module and qualified name."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Codec:
    """Turns contexts and outcomes into JSON-compatible values and back.

    Plain JSON values pass through; datetimes, dates, times, timedeltas, Decimals, UUIDs,
    bytes, tuples, sets and dicts with non-string keys get a built-in tag; dataclasses and
    Enums get their type's tag and must be known: the machine's own outcome, trigger and
    state types (see `for_machine`) or types registered with `types=`. Decoding never
    imports a name from storage: an unknown tag is an error, never a guess. `aliases` maps
    former tags of types that were moved or renamed to the type (read, never written).
    """

    def __init__(
        self, types: Iterable[type] = (), aliases: Mapping[str, type] | None = None
    ) -> None:
        self._types: dict[str, type] = {}
        self._aliases: dict[str, type] = {}
        for cls in types:
            self._register(cls)
        self._alias(aliases or {})

    @classmethod
    def for_machine(cls, machine: Machine[Any], types: Iterable[type] = ()) -> Codec:
        """A codec knowing the machine's outcome/trigger classes and their subclasses, Enum
        types, and `types`.

        Shared: a machine's own classes are read once (its actions' type hints: 0.6 ms for
        the reference flow, which a service would pay per request, as it makes an
        orchestrator per request), and a codec is built once for each set of classes it is
        to know, so a subclass defined after a first codec gets a codec of its own."""
        if machine not in _MACHINES:
            _MACHINES[machine] = _classes_of(machine)
        roots, aliases, built = _MACHINES[machine]
        found = [sub for root in roots for sub in _with_subclasses(root)] + list(types)
        key = (cls, tuple(found))
        codec = built.get(key)
        if codec is None:
            codec = built[key] = cls()
            seen: set[type] = set()
            pending = [t for t in found if _storable(t)]
            while pending:
                current = pending.pop()
                if current in seen:
                    continue
                seen.add(current)
                codec._register(current)
                pending += _field_types(current)
            codec._alias(aliases)
        return codec

    @property
    def types(self) -> dict[str, type]:
        """The registered types by tag."""
        return dict(self._types)

    def _register(self, cls: type) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"register classes, not {cls!r}")
        tag = type_tag(cls)
        known = self._types.get(tag)
        if known is not None and known is not cls:
            raise FSMError(f"two different types share the stored name {tag!r}; rename one")
        self._types[tag] = cls

    def _alias(self, aliases: Mapping[str, type]) -> None:
        """Read each former tag as its type; a tag some type has today is refused."""
        for old, cls in aliases.items():
            self._register(cls)
            now = self._types.get(old)
            if now is not None:
                raise FSMError(
                    f"alias {old!r} of {type_tag(cls)} is the stored name of {type_tag(now)} "
                    "now; an alias must be a name no type has today"
                )
            self._aliases[old] = cls

    def _known(self, tag: str) -> type | None:
        """The type stored under `tag`: by its current name, else by a former one."""
        return self._types.get(tag) or self._aliases.get(tag)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, value: object, *, where: str = "value") -> JSON:
        """The JSON-compatible form of `value`; EncodeError naming `where` if it cannot be."""
        kind = type(value)
        if kind is str:
            return _text_value(value, where)  # type: ignore[arg-type]
        if value is None or kind is bool or kind is int:
            return value
        if kind is float:
            number: float = value  # type: ignore[assignment]
            if math.isfinite(number):
                return number
            return {TAG: "float", "v": repr(number)}
        if kind is list:
            items: list[object] = value  # type: ignore[assignment]
            return [
                item if _plain(item) else self.encode(item, where=f"{where}[{i}]")
                for i, item in enumerate(items)
            ]
        if kind is dict:
            return self._encode_dict(value, where)  # type: ignore[arg-type]
        if isinstance(value, Enum):
            return {TAG: self._tag_of(kind, where), "v": value.name}
        if isinstance(value, type):
            return {TAG: "type", "v": self._tag_of(value, where)}
        if dataclasses.is_dataclass(value):
            tag = self._tag_of(kind, where)
            fields = {
                f.name: self.encode(getattr(value, f.name), where=f"{where}.{f.name}")
                for f in dataclasses.fields(value)
                if f.init
            }
            return {TAG: tag, "v": fields}
        simple = _encode_simple(value)
        if simple is not None:
            return simple
        if kind in (tuple, set, frozenset):
            seq: Iterable[object] = value  # type: ignore[assignment]
            name = kind.__name__
            return {
                TAG: name,
                "v": [self.encode(item, where=f"{where}[{i}]") for i, item in enumerate(seq)],
            }
        raise EncodeError(self._unknown(kind), where=where)

    def _encode_dict(self, value: dict[object, object], where: str) -> JSON:
        if TAG not in value and all(type(key) is str for key in value):
            # A plain key or value is kept as it is: the place it would be named by, were
            # it wrong, is only spelt out for those that need a closer look.
            return {
                key if _plain(key) else _text_value(key, f"{where} key {key!r}"): (
                    item if _plain(item) else self.encode(item, where=f"{where}[{key!r}]")
                )
                for key, item in value.items()
                if isinstance(key, str)
            }
        pairs = [
            [
                self.encode(key, where=f"{where} key {key!r}"),
                self.encode(item, where=f"{where}[{key!r}]"),
            ]
            for key, item in value.items()
        ]
        return {TAG: "dict", "v": pairs}

    def _tag_of(self, cls: type, where: str) -> str:
        tag = type_tag(cls)
        if self._types.get(tag) is not cls:
            raise EncodeError(self._unknown(cls), where=where)
        return tag

    def _unknown(self, cls: type) -> str:
        known = ", ".join(sorted(self._types)) or "none"
        return (
            f"type {type_tag(cls)} is not known to this codec; store plain JSON values, "
            "datetimes, dates, Decimals, UUIDs, bytes, tuples, sets, or register the "
            f"dataclass/Enum with types=[...] (known types: {known})"
        )

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, data: JSON, *, machine: str, run_id: str, where: str = "value") -> object:
        """The value `data` stands for; DecodeError naming the run and the place if it is bad."""
        try:
            return self._decode(data, where)
        except _Bad as bad:
            raise DecodeError(str(bad), machine=machine, run_id=run_id, where=bad.where) from None

    def _decode(self, data: JSON, where: str) -> object:
        kind = type(data)
        if data is None or kind in (bool, str, int, float):
            return data
        if kind is list:
            return [
                item if type(item) in _SCALARS else self._decode(item, f"{where}[{i}]")
                for i, item in enumerate(data)
            ]
        if kind is not dict:
            raise _Bad(f"{kind.__name__} is not a JSON value", where)
        if TAG not in data:
            return {
                key: item if type(item) in _SCALARS else self._decode(item, f"{where}[{key!r}]")
                for key, item in data.items()
            }
        if set(data) != {TAG, "v"}:
            raise _Bad(f"a tagged value has keys {sorted(data)}; expected ['$t', 'v']", where)
        tag, payload = data[TAG], data["v"]
        if not isinstance(tag, str):
            raise _Bad(f"the type tag {tag!r} is not a string", where)
        try:
            if tag in _BUILTIN_TAGS:
                return self._decode_builtin(tag, payload, where)
            cls = self._known(tag)
            if cls is None:
                known = ", ".join(sorted(self._types)) or "none"
                raise _Bad(
                    f"unknown type tag {tag!r}; this machine knows {known} (register the type "
                    "with types=[...] if it is yours; if it was moved or renamed, add "
                    f"aliases={{{tag!r}: TheType}} to the Machine)",
                    where,
                )
            if issubclass(cls, Enum):
                if not isinstance(payload, str) or payload not in cls.__members__:
                    members = ", ".join(cls.__members__)
                    raise _Bad(f"{payload!r} is not a member of {tag} ({members})", where)
                return cls[payload]
            return self._decode_dataclass(cls, payload, where)
        except _Bad:
            raise
        except (TypeError, ValueError, InvalidOperation, KeyError) as error:
            raise _Bad(f"malformed {tag} value {payload!r}: {error}", where) from error

    def _decode_builtin(self, tag: str, payload: JSON, where: str) -> object:
        if tag == "datetime":
            return datetime.fromisoformat(_text(payload))
        if tag == "date":
            return date.fromisoformat(_text(payload))
        if tag == "time":
            return time.fromisoformat(_text(payload))
        if tag == "timedelta":
            days, seconds, micros = payload
            return timedelta(days=int(days), seconds=int(seconds), microseconds=int(micros))
        if tag == "decimal":
            return Decimal(_text(payload))
        if tag == "uuid":
            return uuid.UUID(_text(payload))
        if tag == "bytes":
            return base64.b64decode(_text(payload), validate=True)
        if tag == "float":
            number = float(_text(payload))
            if math.isfinite(number):
                raise ValueError("only nan, inf and -inf are tagged")
            return number
        if tag == "type":
            cls = self._known(_text(payload))
            if cls is None:
                raise _Bad(f"unknown type tag {payload!r} for a stored class", where)
            return cls
        if not isinstance(payload, list):
            raise ValueError(f"expected a list, got {type(payload).__name__}")
        if tag == "dict":
            pairs = [_pair(item) for item in payload]
            return {
                _hashable(self._decode(k, f"{where} key")): self._decode(v, f"{where}[{i}]")
                for i, (k, v) in enumerate(pairs)
            }
        items = [self._decode(item, f"{where}[{i}]") for i, item in enumerate(payload)]
        if tag == "tuple":
            return tuple(items)
        hashables = [_hashable(item) for item in items]
        return set(hashables) if tag == "set" else frozenset(hashables)

    def _decode_dataclass(self, cls: type, payload: JSON, where: str) -> object:
        if not isinstance(payload, dict):
            raise _Bad(f"{type_tag(cls)} needs an object of fields, got {payload!r}", where)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        extra = set(payload) - fields
        if extra:
            raise _Bad(
                f"{type_tag(cls)} has no fields {sorted(extra)}; its fields: {sorted(fields)}",
                where,
            )
        values = {name: self._decode(item, f"{where}.{name}") for name, item in payload.items()}
        try:
            return cls(**values)
        except Exception as error:  # a missing field, or the dataclass's own checks refusing
            raise _Bad(f"cannot rebuild {type_tag(cls)}: {error}", where) from error


_MACHINES: weakref.WeakKeyDictionary[
    Machine[Any], tuple[list[type], dict[str, type], dict[tuple[type, tuple[type, ...]], Codec]]
] = weakref.WeakKeyDictionary()
"""For Codec.for_machine, by machine: its classes (see _classes_of), its aliases of types,
and the codecs built for it, by codec class and the classes each knows."""


def _classes_of(machine: Machine[Any]) -> tuple[list[type], dict[str, type], dict[Any, Codec]]:
    """The classes of a machine's states, triggers, aliases and actions' outcomes (read from
    their type hints), of their Enum members' types; its aliases of types; no codec yet."""
    values: list[object] = [state.name for state in machine.states]
    values += [row.trigger for row in machine.transitions]
    aliases = {old: new for old, new in machine.aliases.items() if isinstance(new, type)}
    values += aliases.values()
    for state in machine.states:
        if state.action is not None:
            own = [row.trigger for row in machine.rows_from(state.name)]
            values += state_outcomes(state, known=own) or ()
    roots = [v if isinstance(v, type) else type(v) for v in values if isinstance(v, type | Enum)]
    return list(dict.fromkeys(roots)), aliases, {}


_SCALARS = (type(None), bool, str, int, float)
"""The types of the JSON values that decode as themselves."""


def _plain(value: object) -> bool:
    """A value stored as it is, with nothing to check: None, a bool, an int, ASCII text."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        return text.isascii()
    return value is None or kind is bool or kind is int


def _text_value(text: str, where: str) -> str:
    # Checked here, not by each store: SQLite would keep such text, PostgreSQL refuses it
    # with a driver error, and JSON would turn a pair of them into a different character.
    if not text.isascii():
        bad = _SURROGATE.search(text)
        if bad is not None:
            raise EncodeError(
                f"the text holds the surrogate code point {bad.group()!r} at index "
                f"{bad.start()}, which is not valid Unicode (databases refuse it); "
                "decode its bytes properly, or with errors='replace'",
                where=where,
            )
    return text


def _encode_simple(value: object) -> JSON | None:
    kind = type(value)
    if kind is datetime:
        return {TAG: "datetime", "v": value.isoformat()}  # type: ignore[attr-defined]
    if kind is date:
        return {TAG: "date", "v": value.isoformat()}  # type: ignore[attr-defined]
    if kind is time:
        return {TAG: "time", "v": value.isoformat()}  # type: ignore[attr-defined]
    if kind is timedelta:
        delta: timedelta = value  # type: ignore[assignment]
        return {TAG: "timedelta", "v": [delta.days, delta.seconds, delta.microseconds]}
    if kind is Decimal:
        return {TAG: "decimal", "v": str(value)}
    if kind is uuid.UUID:
        return {TAG: "uuid", "v": str(value)}
    if kind is bytes:
        return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}  # type: ignore[arg-type]
    return None


def _text(payload: JSON) -> str:
    if not isinstance(payload, str):
        raise ValueError(f"expected a string, got {type(payload).__name__}")
    return payload


def _pair(item: JSON) -> tuple[JSON, JSON]:
    if not isinstance(item, list) or len(item) != 2:
        raise ValueError(f"expected a [key, value] pair, got {item!r}")
    return item[0], item[1]


def _hashable(value: object) -> Hashable:
    hash(value)  # a list as a dict key or set member means the row was written by hand
    return value


def _storable(cls: type) -> bool:
    return (isinstance(cls, type) and issubclass(cls, Enum)) or dataclasses.is_dataclass(cls)


def _with_subclasses(cls: type) -> list[type]:
    found = [cls]
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        found += _with_subclasses(sub)
    return found


def _field_types(cls: type) -> list[type]:
    """Dataclasses and Enums named in a dataclass's field annotations (nested outcomes)."""
    if not dataclasses.is_dataclass(cls):
        return []
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: register such types by hand
        return []
    found: list[type] = []
    pending: list[object] = list(hints.values())
    while pending:
        hint = pending.pop()
        pending += typing.get_args(hint)
        if isinstance(hint, type) and _storable(hint):
            found.append(hint)
    return found
