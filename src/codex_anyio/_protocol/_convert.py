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

from ._model import WireEnum

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

    def make_structure(cls: type) -> Callable[[Any, Any], Any]:
        if not detailed_validation and "_from_wire" in vars(cls):  # its own, not inherited
            # Written out by codegen for hot notification params whose fields are plain JSON
            # values: the hook below's result without a keyword call and per-field hooks
            # (values are kept as sent, as for ``Literal`` fields: no ``str()`` coercion).
            hook: Callable[[Any, Any], Any] = getattr(cls, "_from_wire")  # noqa: B009
            return hook
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
