"""The base classes of the generated models: ``Model`` (records) and ``WireEnum`` (enums).

``scripts/codegen.py`` writes each record's ``__slots__`` and ``__init__`` out as plain
Python, so importing ~1,000 classes costs what loading their bytecode costs: no class
decorator generates and compiles methods at import (attrs did, for ~0.9 s). The shared
methods (``__eq__``, ``__hash__``, ``__repr__``, pickling, the frozen ``__setattr__``) live
here, read off each class's ``_SPEC``.

The models stay attrs classes to everything that asks: ``attrs.has``, ``attrs.fields``
(with the ``wire``/``required`` metadata), ``attrs.evolve``, ``attrs.asdict`` and cattrs'
generated hooks. ``__attrs_attrs__`` is built on first use, with resolved types, and cached
on the class. ``_wire_nulls`` (which optional fields arrived as an explicit null) is a slot,
not a field, so it stays out of ``attrs.fields``, ``attrs.asdict`` and equality.

The public, pydantic-named methods (``model_dump``, ``model_dump_json``, ``model_validate``,
``model_validate_json``) convert to and from the wire form; see their docstrings.
"""

from __future__ import annotations

import enum
import json as _json_module
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import attrs
from attrs.exceptions import FrozenInstanceError

from .. import _json

__all__ = [
    "NO_NULLS",
    "NOTHING",
    "Model",
    "WireEnum",
    "builder_of",
    "new",
    "setattr_of",
]

NOTHING: Any = attrs.NOTHING
"""The default of a field that has none (a required field)."""
NO_NULLS: frozenset[str] = frozenset()
"""``_wire_nulls`` of a model built in code: no field arrived as an explicit null."""
setattr_of: Callable[[object], Callable[[str, Any], None]] = object.__setattr__.__get__
"""``setattr_of(self)(name, value)`` sets a slot of a frozen model (what attrs' __init__ does)."""
new: Callable[[type[Any]], Any] = object.__new__
"""An instance without ``__init__``, for the written-out ``_from_wire`` structure hooks."""

_converter: Any = None
"""The converter of every generated model, given by :func:`use_converter`."""


def use_converter(converter: Any) -> None:
    """Give the models their converter (the generated one, built from the generated models).

    Called once, by ``codex_anyio._protocol`` when it is imported: the converter is built
    from the generated models, which are built on this module, so this module cannot import
    it without a cycle; it is handed down instead.
    """
    global _converter
    _converter = converter


def builder_of(cls: type[Any]) -> type[Any]:
    """A mutable twin of the frozen record ``cls``, for the structure hooks: the same slots on
    the same base, and the plain ``__setattr__``.

    A hook builds the instance on the twin with plain attribute stores (which CPython
    specialises for slots; through the frozen ``__setattr__`` every store is a call of the
    slot's ``__set__`` instead), then turns it into a ``cls`` with one ``__class__``
    assignment, which CPython allows because the two layouts are the same. Measured: a
    four-field notification 706 -> 460 ns; the gain grows with the fields. Nothing else
    ever sees a twin: it is not a subclass of ``cls`` and no instance stays one.
    """
    twin: type[Any] | None = cls.__dict__.get("_BUILDER")
    if twin is None:
        base = cls.__base__
        assert base is not None
        assert base.__dict__.get("__slots__") is not None
        twin = type(
            cls.__name__,
            (base,),
            {
                "__slots__": cls.__dict__["__slots__"],
                "__setattr__": object.__setattr__,
                "__delattr__": object.__delattr__,
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}._BUILDER",
            },
        )
        type.__setattr__(cls, "_BUILDER", twin)
    return twin


_M = TypeVar("_M", bound="Model")

Spec = tuple[tuple[str, str, bool, Any], ...]
"""Per field: Python name, wire name, required by the schema, default (NOTHING: none)."""


class _Fields(tuple):  # type: ignore[type-arg]
    """A tuple of ``attrs.Attribute`` with access by name, as ``attrs.fields`` returns."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        for field in self:
            if field.name == name:
                return field
        raise AttributeError(name)


def _build_fields(cls: type[Model]) -> _Fields:
    hints = typing.get_type_hints(cls)
    fields = _Fields(
        attrs.Attribute(  # type: ignore[call-arg]
            name=name,
            default=default,
            validator=None,
            repr=True,
            cmp=None,
            hash=None,
            init=True,
            inherited=False,
            metadata={"wire": wire, "required": required},
            type=hints.get(name),
            kw_only=True,
            eq=True,
            order=False,
            alias=name,
        )
        for name, wire, required, default in cls._SPEC
    )
    cls.__attrs_types_resolved__ = cls  # type: ignore[attr-defined]
    return fields


class _LazyFields:
    """``__attrs_attrs__`` of every model: built on first use, then cached on the class."""

    def __get__(self, instance: object, owner: type[Model]) -> _Fields:
        fields = _build_fields(owner)
        if owner is not Model:  # cached on the base, it would hide every subclass's fields
            type.__setattr__(owner, "__attrs_attrs__", fields)
        return fields


class Model:
    """A frozen, slotted protocol record (the base of every generated class)."""

    __slots__ = ("__weakref__",)
    _SPEC: ClassVar[Spec] = ()
    _UNKNOWN: ClassVar[bool] = False
    """True for a union's ``Unknown...`` class: its wire form is its ``raw`` payload."""

    if TYPE_CHECKING:
        __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]
    else:
        __attrs_attrs__ = _LazyFields()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, spec[0]) for spec in self._SPEC])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Model)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((self.__class__.__qualname__, *self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{spec[0]}={getattr(self, spec[0])!r}" for spec in self._SPEC)
        return f"{self.__class__.__qualname__}({inner})"

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _slots(type(self))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        set_slot = setattr_of(self)
        for name, value in state.items():
            set_slot(name, value)

    # -- pydantic-named conversions ----------------------------------------------------------

    def model_dump(
        self,
        *,
        mode: Literal["python", "json"] = "python",
        by_alias: bool = False,
        exclude_none: bool = False,
        exclude_unset: bool = False,
    ) -> dict[str, Any]:
        """This model as a dict, nested models as dicts, as pydantic's ``model_dump``.

        By default the keys are the Python attribute names and every field is present (None
        where absent); ``by_alias=True`` gives the wire (camelCase) names; ``exclude_none``
        drops None values; ``exclude_unset`` drops optional fields that are None and did not
        arrive as an explicit null. ``mode="json"`` gives enum members as their strings.
        ``model_dump(by_alias=True, exclude_unset=True, mode="json")`` is exactly the wire
        dict (what the runtime sent, or will be sent); ``to_wire()`` is the same, faster.
        """
        result: dict[str, Any] = _dump(self, mode == "json", by_alias, exclude_none, exclude_unset)
        return result

    def model_dump_json(
        self, *, by_alias: bool = False, exclude_none: bool = False, exclude_unset: bool = False
    ) -> str:
        """``model_dump(mode="json", ...)`` encoded as a JSON string."""
        data = _dump(self, True, by_alias, exclude_none, exclude_unset)
        return _json.dumps(data).decode()

    def to_wire(self) -> dict[str, Any]:
        """The wire dict: camelCase keys, absent optionals absent, explicit nulls kept."""
        wire: dict[str, Any] = _converter.unstructure(self)
        return wire

    @classmethod
    def model_validate(cls: type[_M], obj: Any) -> _M:
        """Build this model from a wire dict, or return ``obj`` if it is one.

        Keys are the wire (camelCase) names; a field given under its Python name instead is
        accepted too, at any depth (as the official models' ``populate_by_name``), so
        ``model_validate(value.model_dump())`` round-trips. Unknown keys are ignored (a newer
        runtime may add fields); unknown enum values and union tags pass through.
        """
        if isinstance(obj, cls):
            return obj
        value: _M = _converter.structure(_wire_keys(obj, cls), cls)
        return value

    @classmethod
    def model_validate_json(cls: type[_M], data: str | bytes | bytearray) -> _M:
        """``model_validate`` of a JSON document (the wire form)."""
        if isinstance(data, str):
            data = data.encode()
        return cls.model_validate(_json.loads(bytes(data)))


def _wire_keys(data: Any, tp: Any) -> Any:
    """``data`` with Python field names renamed to wire names, following the type ``tp``."""
    if isinstance(tp, type) and issubclass(tp, Model):
        if not isinstance(data, dict) or tp._UNKNOWN:
            return data
        out = dict(data)
        for field in attrs.fields(tp):
            name, wire = field.name, field.metadata["wire"]
            if name != wire and name in out and wire not in out:
                out[wire] = out.pop(name)
            if wire in out and out[wire] is not None:
                out[wire] = _wire_keys(out[wire], field.type)
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args and isinstance(data, list):
        return [_wire_keys(item, args[0]) for item in data]
    if origin is dict and len(args) == 2 and isinstance(data, dict):
        return {key: _wire_keys(item, args[1]) for key, item in data.items()}
    if args and origin is not Literal and isinstance(data, dict):  # a union
        for option in args:
            is_model = isinstance(option, type) and issubclass(option, Model)
            if is_model and _tag_matches(option, data):
                return _wire_keys(data, option)
    return data


def _tag_matches(cls: type[Model], data: dict[str, Any]) -> bool:
    """Whether ``data`` carries the constant tag of ``cls`` (a tagged union's variant)."""
    for name, wire, required, default in cls._SPEC:
        if required and default is not NOTHING:
            return bool(data.get(wire, data.get(name)) == default)
    return len(cls._SPEC) > 0 and not cls._UNKNOWN


def _slots(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        names.extend(s for s in klass.__dict__.get("__slots__", ()) if s != "__weakref__")
    return tuple(names)


def _dump(value: Any, json_mode: bool, by_alias: bool, no_none: bool, no_unset: bool) -> Any:
    if isinstance(value, Model):
        if value._UNKNOWN:
            return value.raw  # type: ignore[attr-defined]  # an unknown union member: raw JSON
        spec = value._SPEC
        nulls = getattr(value, "_wire_nulls", NO_NULLS)
        out: dict[str, Any] = {}
        for name, wire, required, _default in spec:
            item = getattr(value, name)
            if item is None and (no_none or (no_unset and not required and wire not in nulls)):
                continue
            key = wire if by_alias else name
            out[key] = _dump(item, json_mode, by_alias, no_none, no_unset)
        return out
    if isinstance(value, enum.Enum):
        return value.value if json_mode else value
    if isinstance(value, list | tuple):
        return [_dump(item, json_mode, by_alias, no_none, no_unset) for item in value]
    if isinstance(value, dict):
        return {k: _dump(v, json_mode, by_alias, no_none, no_unset) for k, v in value.items()}
    return value


class WireEnum(str, enum.Enum):
    """A string enum of the schema: members compare equal to their wire strings.

    A value this client does not know (a newer runtime's) becomes a pseudo-member of the enum
    (not listed by iteration) instead of an error, so it passes through and round-trips.
    ``str()`` and formatting give the wire string, on every Python version.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(str.__str__(self), format_spec)

    # The official SDK's enum-like schema types are pydantic models: the same names here.

    @classmethod
    def model_validate(cls, value: Any) -> Any:
        """The member for a wire string: ``ReasoningSummary.model_validate("auto")``."""
        return cls(value)

    @classmethod
    def model_validate_json(cls, data: str | bytes) -> Any:
        """The member for a JSON string (``'"auto"'``)."""
        return cls(_json_module.loads(data))

    def model_dump(self, **_options: Any) -> str:
        """The wire string."""
        return str.__str__(self)

    def model_dump_json(self, **_options: Any) -> str:
        """The wire string as JSON."""
        return _json_module.dumps(str.__str__(self))
