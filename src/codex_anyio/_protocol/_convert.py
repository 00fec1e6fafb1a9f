"""How the generated models convert to and from JSON: the cattrs rules, in one place.

``_generated/converter.py`` only lists the tagged unions; the rules live here so they are
read and tested as ordinary code:

* attrs classes rename snake_case attributes to the wire names kept in field metadata,
  ignore unknown keys (a newer runtime may add fields), and on the way out omit non-required
  fields that are None, except those that arrived as an explicit null (remembered in
  ``_wire_nulls``), so what the runtime sent round-trips exactly;
* a tagged union is structured by looking its tag up in a dict, never by trying each class;
  an unknown tag gives the union's ``Unknown...`` class with the raw payload;
* ``Literal`` types let any value through, so a new enum value is data, not an error;
* a generated record (without the detailed validation the tests use) is structured by a
  hook written out as Python source for its fields and compiled on first use
  (:func:`compile_structure`), ``X | None`` by a hook that resolves X's hook once;
* a ``WireEnum`` is structured by one dict lookup of its members (an unknown value becomes
  a pseudo-member, see ``_model.WireEnum``) and unstructured to its string.

Hooks are built lazily by cattrs, the first time a type is converted, and cached; import
stays cheap although the schema has ~900 types.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._model import NO_NULLS, NOTHING, Model, WireEnum, builder_of

__all__ = ["TaggedUnion", "build_converter"]

_NONE = type(None)


@attrs.frozen
class TaggedUnion:
    """A union whose variants all carry a constant ``tag`` field."""

    tag: str
    variants: Mapping[str, type]
    unknown: type


def _is_union(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType)


def _enum_value(value: Any) -> Any:
    """A member's string; anything else (a plain string given in code) as it is."""
    return value._value_ if isinstance(value, WireEnum) else value


_AS_SENT = frozenset({str, int, float, bool, Any})
"""Field types whose values are kept as sent (no ``str()`` or ``int()`` coercion, as in the
written-out ``_from_wire`` hooks)."""


def compilable(cls: type) -> bool:
    """A generated record (not a union's ``Unknown...`` class, whose ``raw`` is the payload)."""
    return issubclass(cls, Model) and bool(cls._SPEC) and not cls._UNKNOWN


def _as_sent(t: Any) -> bool:
    return t in _AS_SENT or get_origin(t) is Literal


def compile_structure(cls: type[Model], conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """A structure hook for ``cls`` written out as Python and compiled: for each field one
    dict lookup and a plain attribute store, on the record's mutable twin (``builder_of``),
    which becomes the record at the end; a value that needs converting (a model, a union, an
    enum, a list or dict of them) goes through its own hook, looked up on first use (a type
    may contain itself). What cattrs' generated hook plus the explicit-null bookkeeping did, in
    a third to a half of the time (``turn/completed`` 22.5 -> 9.4 us, ``item/completed``
    14.0 -> 5.3 us, a ``thread/start`` response 45 -> 15 us): no keyword call of
    ``__init__``, no dispatch per optional field, no second pass for explicit nulls.

    Why ``exec``: a hook that loops over the fields at run time costs what it saves (a loop
    iteration, a tuple unpack and a branch per field); straight-line code per class is what
    makes it fast, and it is what cattrs' own ``make_dict_structure_fn`` compiles too. Why at
    run time rather than in codegen (as the few ``_from_wire`` hooks are): written out for
    all ~1,000 records it would double ``models.py`` and its import time, for classes most
    programs never receive; compiled here, only the classes that arrive pay, once. The source
    is built only from the generated ``_SPEC`` (wire names through ``repr``), never from
    wire data. The tests check it builds what the detailed-validation converter builds, for
    every recorded message and for generated ones.

    A required field that is missing raises ``KeyError`` (as cattrs' does); an unknown key is
    ignored; which optional fields arrived as an explicit null is kept in ``_wire_nulls``.
    """
    fields = attrs.fields(cls)
    nullable = "_wire_nulls" in _slots_of(cls)
    types_: list[Any] = []
    hooks: list[Callable[[Any, Any], Any]] = []

    def lazy(index: int) -> Callable[[Any, Any], Any]:
        def first(value: Any, t: Any) -> Any:
            hook = hooks[index] = conv.get_structure_hook(t)
            return hook(value, t)

        return first

    body = ["def structure(o, _=None):", "    self = new(B)", "    nulls = None"]
    for i, f in enumerate(fields):
        key, t, name = repr(f.metadata["wire"]), f.type, f.name
        assert name.isidentifier()  # it names a slot: spliced into the source as is
        required = f.metadata.get("required", True)
        args = get_args(t) if _is_union(t) else ()
        inner = t
        if not required and len(args) == 2 and _NONE in args:
            inner = next(arg for arg in args if arg is not _NONE)
        if _as_sent(inner):
            convert = "v"
        else:
            types_.append(inner)
            hooks.append(lazy(len(hooks)))
            convert = f"h[{len(hooks) - 1}](v, T[{len(types_) - 1}])"
        if required and f.default is NOTHING:
            body.append(f"    v = o[{key}]")
            body.append(f"    self.{name} = {convert}")
        elif required:  # a union's tag: always sent, defaulted in code
            body.append(f"    v = o.get({key}, D[{i}])")
            body.append(f"    self.{name} = {convert}")
        else:
            body.append(f"    v = o.get({key})")
            body.append("    if v is None:")
            body.append(f"        self.{name} = None")
            if nullable:
                body.append(f"        if {key} in o:")
                body.append(f"            nulls = [{key}] if nulls is None else [*nulls, {key}]")
            body.append("    else:")
            body.append(f"        self.{name} = {convert}")
    if nullable:
        body.append("    self._wire_nulls = NO_NULLS if nulls is None else frozenset(nulls)")
    body.append("    self.__class__ = cls")
    body.append("    return self")
    scope: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "B": builder_of(cls),
        "D": [f.default for f in fields],
        "T": types_,
        "h": hooks,
        "NO_NULLS": NO_NULLS,
    }
    exec(compile("\n".join(body), f"<structure {cls.__qualname__}>", "exec"), scope)
    structure: Callable[[Any, Any], Any] = scope["structure"]
    return structure


def _slots_of(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())}


def build_converter(
    unions: tuple[TaggedUnion, ...], *, detailed_validation: bool = False
) -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=detailed_validation)
    unknown_classes = {union.unknown for union in unions}
    by_members = {frozenset([*u.variants.values(), u.unknown]): u for u in unions}

    def is_literal(t: Any) -> bool:
        return get_origin(t) is Literal

    conv.register_structure_hook_func(is_literal, lambda value, _: value)

    # Enums by class, not by predicate: cattrs' own hooks for ``str`` would match first.
    def structure_enum(value: Any, cls: type[WireEnum]) -> Any:
        member = cls._value2member_map_.get(value)
        return member if member is not None else cls(value)

    conv.register_structure_hook(WireEnum, structure_enum)
    conv.register_unstructure_hook(WireEnum, _enum_value)

    def tagged_union_of(t: Any) -> TaggedUnion | None:
        if not _is_union(t):
            return None
        return by_members.get(frozenset(set(get_args(t)) - {_NONE}))

    def make_union_hook(t: Any) -> Callable[[Any, Any], Any]:
        union = tagged_union_of(t)
        assert union is not None
        nullable = _NONE in get_args(t)
        tag, variants, unknown = union.tag, union.variants, union.unknown
        hooks: dict[type, Callable[[Any, Any], Any]] = {}

        def structure(value: Any, _: Any) -> Any:
            if value is None and nullable:
                return None
            tag_value = value.get(tag) if isinstance(value, dict) else None
            cls = variants.get(tag_value) if isinstance(tag_value, str) else None
            if cls is None:
                return unknown(**{tag: str(tag_value), "raw": value})
            hook = hooks.get(cls)
            if hook is None:
                hook = hooks[cls] = conv.get_structure_hook(cls)
            return hook(value, cls)

        return structure

    conv.register_structure_hook_factory(lambda t: tagged_union_of(t) is not None, make_union_hook)

    def is_optional(t: Any) -> bool:
        args = get_args(t) if _is_union(t) else ()
        return len(args) == 2 and _NONE in args and tagged_union_of(t) is None

    def make_optional_hook(t: Any) -> Callable[[Any, Any], Any]:
        # cattrs' own hook for ``X | None`` looks X's hook up again on every call (most
        # fields are optional: a quarter of a typical model's structuring time); this one
        # looks it up once, on first use (X may be a model whose hook is not built yet).
        inner = next(arg for arg in get_args(t) if arg is not _NONE)
        hook: Callable[[Any, Any], Any] | None = None

        def structure(value: Any, _: Any) -> Any:
            nonlocal hook
            if value is None:
                return None
            if hook is None:
                hook = conv.get_structure_hook(inner)
            return hook(value, inner)

        return structure

    conv.register_structure_hook_factory(is_optional, make_optional_hook)

    def make_structure(cls: type) -> Callable[[Any, Any], Any]:
        if not detailed_validation and "_from_wire" in vars(cls):  # its own, not inherited
            # Written out by codegen for hot notification params whose fields are plain JSON
            # values: the hook below's result without a keyword call and per-field hooks
            # (values are kept as sent, as for ``Literal`` fields: no ``str()`` coercion).
            hook: Callable[[Any, Any], Any] = getattr(cls, "_from_wire")  # noqa: B009
            return hook
        if not detailed_validation and compilable(cls):
            return compile_structure(cls, conv)
        fields = attrs.fields(cls)
        renames: dict[str, Any] = {
            f.name: override(rename=f.metadata["wire"])
            for f in fields
            if f.metadata.get("wire", f.name) != f.name
        }
        base: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls,
            conv,
            _cattrs_forbid_extra_keys=False,
            _cattrs_detailed_validation=detailed_validation,
            **renames,
        )
        optional = tuple(f.metadata["wire"] for f in fields if f.metadata.get("required") is False)
        if not optional:
            return base
        set_attr = object.__setattr__

        def structure(value: Any, cls: Any) -> Any:
            instance = base(value, cls)
            nulls = [key for key in optional if key in value and value[key] is None]
            if nulls:
                set_attr(instance, "_wire_nulls", frozenset(nulls))
            return instance

        return structure

    def make_unstructure(cls: type) -> Callable[[Any], Any]:
        if cls in unknown_classes:
            return lambda obj: obj.raw
        fields: dict[str, Any] = {}
        has_nulls = hasattr(cls, "_wire_nulls")  # a slot of generated models with optionals
        for f in attrs.fields(cls):
            wire = f.metadata.get("wire", f.name)
            fields[f.name] = override(
                rename=wire if wire != f.name else None,
                omit_if_default=not f.metadata.get("required", True),
            )
        base: Callable[[Any], Any] = make_dict_unstructure_fn(cls, conv, **fields)
        if not has_nulls:
            return base

        def unstructure(instance: Any) -> Any:
            data = base(instance)
            for key in instance._wire_nulls:
                data.setdefault(key, None)
            return data

        return unstructure

    conv.register_structure_hook_factory(attrs.has, make_structure)
    conv.register_unstructure_hook_factory(attrs.has, make_unstructure)
    return conv
