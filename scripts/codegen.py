"""Generate ``src/codex_anyio/_protocol/_generated/`` from the pinned runtime's JSON Schema in ``schema/``.

    python scripts/codegen.py                  # regenerate the modules from schema/
    python scripts/codegen.py --refresh-schema # first rewrite schema/ with the pinned runtime
    python scripts/codegen.py --check          # exit 1 if the committed modules are stale

The input is the experimental bundle (a superset of the stable one); a type, field or method
absent from the stable bundle is marked "Experimental". Output is deterministic: sorted
definitions, no timestamps, formatted by ruff when it is installed.

Mapping rules (each chosen for forward compatibility with a newer runtime):

* object schemas become frozen, slotted, keyword-only classes deriving ``_model.Model``,
  with ``__slots__`` and ``__init__`` written out here (no class decorator runs at import);
  they are attrs classes to ``attrs.fields``/cattrs (built on first use); attributes are
  snake_case, the wire name is kept in field metadata (``wire``), the converter renames;
* named string enums become ``WireEnum`` classes (``str`` subclasses, members named as
  the official SDK names them); an unknown value becomes a pseudo-member and passes through;
  inline enums stay ``Literal``, and the converter lets unknown strings through;
* notification params whose fields are all plain JSON values also get ``_from_wire``, their
  structure hook written out (the converter's fast path for the per-event types);
* ``oneOf`` unions whose variants all carry a constant discriminator (``type``, ``method``,
  ``kind``) become one class per variant plus ``Unknown<Union>``, which the converter uses
  (with the raw payload) for a tag it does not know;
* other unions (a string or an object, untagged objects) stay raw JSON (``Any``): guessing by
  trial would be slow and could pick the wrong class;
* non-required fields default to None and are omitted on the wire when None; required fields
  are always sent (null when the schema allows it).
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema"
OUT = ROOT / "src" / "codex_anyio" / "_protocol" / "_generated"
BUNDLE = "codex_app_server_protocol.schemas.json"
DISCRIMINATORS = ("type", "method", "kind")


def load_definitions(path: Path) -> dict[str, Any]:
    bundle = json.loads(path.read_text())["definitions"]
    defs = {k: v for k, v in bundle.items() if k != "v2"}
    for name, schema in bundle.get("v2", {}).items():
        if name in defs and _strip_meta(defs[name]) != _strip_meta(schema):
            raise SystemExit(f"definition {name} differs between v1 and v2")
        defs[name] = schema
    return defs


def _strip_meta(schema: Any) -> Any:
    """A schema without its ``$schema``/``title``, to compare shared definitions."""
    if isinstance(schema, dict):
        return {k: v for k, v in schema.items() if k not in ("$schema", "title")}
    return schema


def snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name).lower()
    if name.startswith("_"):
        name = name.lstrip("_") + "_"
    if keyword.iskeyword(name) or name in {"self", "params"}:
        name += "_"
    if name[0].isdigit():
        name = "n_" + name
    return name


def pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9a-zA-Z]+", text) if part)


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def is_string_enum_union(variants: list[Any]) -> bool:
    return all(isinstance(v, dict) and "enum" in v and v.get("type") == "string" for v in variants)


def tag_of(variants: list[Any]) -> str | None:
    if not variants or not all(isinstance(v, dict) and "properties" in v for v in variants):
        return None
    for tag in DISCRIMINATORS:
        ok = True
        for v in variants:
            prop = v["properties"].get(tag)
            if not (isinstance(prop, dict) and len(prop.get("enum", [])) == 1):
                ok = False
                break
        if ok:
            return tag
    return None


class Generator:
    def __init__(self, defs: dict[str, Any], stable: dict[str, Any]) -> None:
        self.defs = defs
        self.stable = stable
        # Notification params: structured once per event, so they get a written-out
        # ``_from_wire`` when their fields need no conversion (see render_record).
        self.hot = {p for _, p in methods_of(defs, "ServerNotification") if p is not None}
        self.classes: list[str] = []  # rendered class source, in order
        self.class_names: list[str] = []
        self.aliases: dict[str, str] = {}  # name -> type expression
        self.alias_docs: dict[str, str] = {}
        self.unions: dict[str, tuple[str, dict[str, str], str]] = {}  # union -> (tag, map, unknown)
        self.enum_names: list[str] = []
        self.enums: dict[str, list[str]] = {}  # enum -> its wire values
        self.taken = set(defs)
        self.required: dict[str, dict[str, bool]] = {}
        self.fields_of: dict[str, list[tuple[str, str, str, bool]]] = {}

    # -- types ------------------------------------------------------------------------------

    def type_expr(self, s: Any) -> str:
        if s is True or s == {} or not isinstance(s, dict):
            return "Any"
        if "$ref" in s:
            return ref_name(s["$ref"])
        if "allOf" in s and len(s["allOf"]) == 1:
            return self.type_expr(s["allOf"][0])
        variants = s.get("oneOf") or s.get("anyOf")
        if variants:
            nullable = any(isinstance(v, dict) and v.get("type") == "null" for v in variants)
            rest = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
            if rest and is_string_enum_union(rest):
                values = [x for v in rest for x in v["enum"]]
                expr = "Literal[" + ", ".join(json.dumps(x) for x in values) + "]"
            elif len(rest) == 1:
                expr = self.type_expr(rest[0])
            else:
                expr = "Any"
            return f"{expr} | None" if nullable and expr != "Any" else expr
        if "enum" in s:
            values = [x for x in s["enum"] if x is not None]
            expr = "Literal[" + ", ".join(json.dumps(x) for x in values) + "]"
            return f"{expr} | None" if None in s["enum"] else expr
        types = s.get("type")
        if isinstance(types, list):
            nullable = "null" in types
            rest = [t for t in types if t != "null"]
            if len(rest) != 1:
                return "Any"
            expr = self.type_expr({**s, "type": rest[0]})
            return f"{expr} | None" if nullable and expr != "Any" else expr
        if types == "string":
            return "str"
        if types == "integer":
            return "int"
        if types == "number":
            return "float"
        if types == "boolean":
            return "bool"
        if types == "null":
            return "None"
        if types == "array":
            items = s.get("items")
            if isinstance(items, list):
                return "list[Any]"
            return f"list[{self.type_expr(items if items is not None else True)}]"
        if types == "object" or "properties" in s:
            extra = s.get("additionalProperties")
            if isinstance(extra, dict) and "properties" not in s:
                return f"dict[str, {self.type_expr(extra)}]"
            return "dict[str, Any]"
        return "Any"

    # -- definitions ------------------------------------------------------------------------

    def experimental_note(self, name: str, schema: dict[str, Any]) -> tuple[bool, list[str]]:
        stable = self.stable.get(name)
        if stable is None:
            return True, []
        stable_props = stable.get("properties", {}) if isinstance(stable, dict) else {}
        new = sorted(set(schema.get("properties", {})) - set(stable_props))
        return False, new

    def docstring(self, description: str | None, experimental: bool, new_fields: list[str]) -> str:
        lines = []
        if description:
            lines.extend(
                description.strip().replace("\\", "\\\\").replace('"""', "'''").splitlines()
            )
        if experimental:
            if lines:
                lines.append("")
            lines.append("Experimental: not in the stable schema.")
        elif new_fields:
            if lines:
                lines.append("")
            lines.append("Experimental fields: " + ", ".join(new_fields) + ".")
        if not lines:
            return ""
        body = "\n    ".join(line.rstrip() for line in lines)
        return f'    """{body}\n    """\n' if len(lines) > 1 else f'    """{body}"""\n'

    def render_class(
        self,
        name: str,
        schema: dict[str, Any],
        *,
        doc_name: str | None = None,
        tag: tuple[str, str] | None = None,
    ) -> None:
        props: dict[str, Any] = dict(schema.get("properties", {}))
        required = set(schema.get("required", []))
        # Properties plus a union of object shapes (e.g. an image by url *or* by fileId):
        # the alternatives' fields become optional fields of the one class.
        for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
            if isinstance(alternative, dict):
                for wire, prop in alternative.get("properties", {}).items():
                    props.setdefault(wire, prop)
        if doc_name is None:
            experimental, new_fields = self.experimental_note(name, schema)
        else:  # a union's variant: stable or not as its union is
            experimental, new_fields = doc_name not in self.stable, []
        doc = self.docstring(schema.get("description"), experimental, new_fields)
        used: set[str] = set()
        fields: list[tuple[str, str, str, bool]] = []
        record: list[Field] = []
        for wire in sorted(props, key=lambda w: (w not in required, w)):
            prop = props[wire]
            py = snake(wire)
            while py in used or py in RESERVED:
                py += "_"
            used.add(py)
            if tag is not None and wire == tag[0]:
                expr = f"Literal[{json.dumps(tag[1])}]"
                record.append(Field(py, wire, expr, True, json.dumps(tag[1]), None))
                fields.append((py, wire, expr, True))
                continue
            expr = self.type_expr(prop)
            pdesc = prop.get("description") if isinstance(prop, dict) else None
            if wire in required:
                record.append(Field(py, wire, expr, True, None, pdesc))
            else:
                if expr != "Any" and not expr.endswith("| None") and expr != "None":
                    expr = f"{expr} | None"
                record.append(Field(py, wire, expr, False, "None", pdesc))
            fields.append((py, wire, expr, wire in required))
        self.classes.append(render_record(name, doc, record, hot=name in self.hot))
        self.class_names.append(name)
        self.fields_of[name] = fields

    def render_enum(self, name: str, values: list[str]) -> None:
        """A ``WireEnum``: member names are snake_case of the values (the official SDK's)."""
        doc = (self.alias_docs.pop(name, "") or "").strip()
        experimental = name not in self.stable
        if experimental:
            doc = (doc + "\n\n" if doc else "") + "Experimental: not in the stable schema."
        lines = [f"class {name}(_WireEnum):"]
        if doc:
            text = doc.replace("\\", "\\\\").replace('"""', "'''")
            lines.append(
                '    """' + "\n    ".join(text.splitlines()) + '\n    """'
                if "\n" in text
                else f'    """{text}"""'
            )
            lines.append("")
        seen: set[str] = set()
        for value in values:
            member = snake(value)
            if member in seen or member in ENUM_RESERVED:
                raise SystemExit(f"enum {name}: member name {member!r} for {value!r} is taken")
            seen.add(member)
            shadows = "  # type: ignore[assignment]" if member in STR_ATTRIBUTES else ""
            lines.append(f"    {member} = {json.dumps(value)}{shadows}")
        self.classes.append("\n".join(lines) + "\n")
        self.enum_names.append(name)
        self.enums[name] = values

    def handle(self, name: str, schema: Any) -> None:
        if not isinstance(schema, dict):
            self.aliases[name] = "Any"
            return
        variants = schema.get("oneOf") or schema.get("anyOf")
        if "properties" in schema:
            self.render_class(name, schema)
            return
        if schema.get("type") == "object" and not variants:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                self.aliases[name] = f"dict[str, {self.type_expr(extra)}]"
                self.alias_docs[name] = schema.get("description", "")
            else:
                self.render_class(name, schema)
            return
        if name in KNOWN_VALUES and schema.get("type") == "string" and "enum" not in schema:
            self.alias_docs[name] = schema.get("description", "")
            self.render_enum(name, KNOWN_VALUES[name])
            return
        if "enum" in schema:
            values = schema["enum"]
            if all(isinstance(v, str) for v in values):
                self.alias_docs[name] = schema.get("description", "")
                self.render_enum(name, values)
                return
            self.aliases[name] = self.type_expr(schema)
            self.alias_docs[name] = schema.get("description", "")
            return
        if variants:
            if is_string_enum_union(variants):
                self.alias_docs[name] = schema.get("description", "")
                self.render_enum(name, [x for v in variants for x in v["enum"]])
                return
            tag = tag_of(variants)
            if tag is not None:
                mapping: dict[str, str] = {}
                for variant in variants:
                    value = variant["properties"][tag]["enum"][0]
                    vname = variant.get("title") or f"{pascal(value)}{name}"
                    if not vname.isidentifier() or (vname in self.taken and vname != name):
                        vname = f"{name}{pascal(value)}"
                    self.taken.add(vname)
                    merged = dict(variant)
                    if "description" not in merged and schema.get("description"):
                        merged["description"] = schema["description"]
                    self.render_class(vname, merged, doc_name=name, tag=(tag, value))
                    mapping[value] = vname
                unknown = f"Unknown{name}"
                if unknown in self.taken or unknown in mapping.values():
                    unknown = f"Unknown{name}Tag"  # the schema has a variant of that name
                self.taken.add(unknown)
                self.classes.append(
                    render_record(
                        unknown,
                        f'    """A {name} with a {tag} this client does not know: kept raw."""\n',
                        [
                            Field(snake(tag), tag, "str", True, None, None),
                            Field("raw", "raw", "dict[str, Any]", True, None, None),
                        ],
                        unknown=True,
                    )
                )
                self.class_names.append(unknown)
                self.unions[name] = (tag, mapping, unknown)
                self.aliases[name] = " | ".join([*mapping.values(), unknown])
                self.alias_docs[name] = schema.get("description", "")
                return
            self.aliases[name] = "Any"
            self.alias_docs[name] = (
                schema.get("description", "") + "\n\n"
            ).lstrip() + "An untagged union: kept as raw JSON."
            return
        self.aliases[name] = self.type_expr(schema)
        self.alias_docs[name] = schema.get("description", "")

    def run(self) -> None:
        for name in sorted(self.defs):
            self.handle(name, self.defs[name])

    # -- output -----------------------------------------------------------------------------

    def models_source(self, version: str) -> str:
        parts = [
            header(
                version,
                "The protocol's types: records (``Model``), enums (``WireEnum``), union aliases.",
            )
        ]
        parts.append(
            "from __future__ import annotations\n\n"
            "from typing import Any, Literal, TypeAlias\n\n"
            "from .._model import NO_NULLS as _NO_NULLS\n"
            "from .._model import NOTHING as _NOTHING\n"
            "from .._model import new as _new\n"
            "from .._model import Model as _Model\n"
            "from .._model import WireEnum as _WireEnum\n"
            "from .._model import setattr_of as _setattr_of\n"
            "from .._model import builder_of as _builder_of\n"
        )
        # Classes first: their annotations are strings, resolved on first use (attrs.fields).
        parts.extend(self.classes)
        # Aliases are runtime expressions, so they come after the classes, in dependency order.
        for name in self.alias_order():
            parts.append(f"{name}: TypeAlias = {self.aliases[name]}")
            doc = (self.alias_docs.get(name) or "").strip()
            if doc:
                doc = doc.replace("\\", "\\\\").replace('"""', "'''")
                parts.append('"""' + doc + '"""')
            parts.append("")
        names = sorted([*self.class_names, *self.enum_names, *self.aliases])
        parts.append("CLASSES: tuple[type, ...] = (" + ", ".join(sorted(self.class_names)) + ",)")
        parts.append("ENUMS: tuple[type, ...] = (" + ", ".join(sorted(self.enum_names)) + ",)")
        parts.append("")
        parts.append("__all__ = [" + ", ".join(json.dumps(n) for n in names) + "]")
        return "\n\n".join(p.rstrip("\n") if p else p for p in parts) + "\n"

    def alias_order(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise SystemExit(f"alias cycle through {name}")
            state[name] = 1
            expr = re.sub(r'"[^"]*"', "", self.aliases[name])
            for ident in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr):
                if ident in self.aliases and ident != name:
                    visit(ident)
            state[name] = 2
            order.append(name)

        for name in sorted(self.aliases):
            visit(name)
        return order

    def converter_source(self, version: str) -> str:
        unions = {
            name: (tag, mapping, unknown)
            for name, (tag, mapping, unknown) in sorted(self.unions.items())
        }
        lines = [
            header(version, "The cattrs converter for the generated models."),
            "from __future__ import annotations\n",
            "from typing import Any\n",
            "from .._convert import TaggedUnion, build_converter\n",
            "from . import models as m\n",
            "TAGGED_UNIONS: tuple[TaggedUnion, ...] = (",
        ]
        for _name, (tag, mapping, unknown) in unions.items():
            entries = ", ".join(f"{json.dumps(k)}: m.{v}" for k, v in sorted(mapping.items()))
            lines.append(f"    TaggedUnion({json.dumps(tag)}, {{{entries}}}, m.{unknown}),")
        lines.append(")\n")
        lines.append(
            "def make_converter(*, detailed_validation: bool = False) -> Any:\n"
            '    """A converter for every generated type; detailed validation off on the hot path."""\n'
            "    return build_converter(TAGGED_UNIONS, detailed_validation=detailed_validation)\n"
        )
        lines.append("converter = make_converter()\n")
        return "\n".join(lines)


KNOWN_VALUES = {
    # Strings the schema leaves open, for which the official SDK has an enum (its list, in its
    # order): an enum here too, so ``ReasoningEffort.high`` works; any other value still
    # passes through as a pseudo-member.
    "ReasoningEffort": ["none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra"],
}

RESERVED = frozenset(
    {"model_dump", "model_dump_json", "model_validate", "model_validate_json", "to_wire"}
)
"""Names of ``Model`` methods, which a field may not take."""
ENUM_RESERVED = frozenset({"name", "value", "mro"})
"""Names an enum member may not take. (A member may shadow a ``str`` method, as
``MergeStrategy.replace`` does: the official SDK's name wins over ``str.replace``.)"""
STR_ATTRIBUTES = frozenset(dir(str))


class Field:
    """One field of a record: names, type expression, requiredness, default source, doc."""

    def __init__(
        self, py: str, wire: str, expr: str, required: bool, default: str | None, doc: str | None
    ) -> None:
        self.py, self.wire, self.expr = py, wire, expr
        self.required, self.default, self.doc = required, default, doc


PLAIN = frozenset({"str", "int", "float", "bool", "Any"})
"""Field types whose JSON value is taken as it is: no conversion to structure them."""


def is_plain(expr: str) -> bool:
    expr = expr.removesuffix(" | None")
    return expr in PLAIN or (expr.startswith("Literal[") and "]" not in expr[:-1])


def render_record(
    name: str, doc: str, fields: list[Field], *, unknown: bool = False, hot: bool = False
) -> str:
    """A ``Model`` subclass with its slots, ``_SPEC`` and a written-out keyword-only __init__.

    Optional fields (default None) get the ``_wire_nulls`` slot: which of them arrived as an
    explicit null, so they go back out as null (absent stays absent). A ``hot`` class whose
    fields are all plain JSON values also gets ``_from_wire``, its structure hook written out
    (no keyword call, no per-field hook): the converter uses it on the fast path.
    """
    nulls = any(not f.required for f in fields)
    slots = [f.py for f in fields] + (["_wire_nulls"] if nulls else [])
    out = [f"class {name}(_Model):", doc.rstrip("\n") if doc else ""]
    out.append(f"    __slots__ = ({''.join(json.dumps(n) + ', ' for n in slots)})")
    spec = "".join(
        f"({json.dumps(f.py)}, {json.dumps(f.wire)}, {f.required}, "
        f"{f.default if f.default is not None else '_NOTHING'}), "
        for f in fields
    )
    out.append(f"    _SPEC = ({spec})")
    if unknown:
        out.append("    _UNKNOWN = True")
    out.append("")
    for f in fields:
        out.append(f"    {f.py}: {f.expr}")
        if f.doc:
            text = f.doc.strip().replace("\\", "\\\\").replace('"""', "'''")
            out.append('    """' + "\n    ".join(text.splitlines()) + '"""')
    if nulls:
        out.append("    _wire_nulls: frozenset[str]")
    if fields:
        params = ", ".join(
            f"{f.py}: {f.expr}" + (f" = {f.default}" if f.default is not None else "")
            for f in fields
        )
        out.append("")
        out.append(f"    def __init__(self, *, {params}) -> None:")
        out.append("        _set = _setattr_of(self)")
        for f in fields:
            out.append(f"        _set({json.dumps(f.py)}, {f.py})")
        if nulls:
            out.append('        _set("_wire_nulls", _NO_NULLS)')
    if hot and fields and all(is_plain(f.expr) for f in fields):
        out.append("")
        out.append("    @staticmethod")
        out.append(f"    def _from_wire(o: dict[str, Any], _: Any = None) -> {name}:")
        # Built on the record's mutable twin with plain attribute stores (CPython specialises
        # them for slots), then made the record by one __class__ assignment: ~35 % faster
        # than calling each slot's __set__ past the frozen __setattr__ (see builder_of).
        out.append(f"        self: Any = _new(_BUILDER_{name})")
        if nulls:
            out.append("        nulls: list[str] = []")
        for f in fields:
            key = json.dumps(f.wire)
            if f.required and f.default is None:
                out.append(f"        self.{f.py} = o[{key}]")
            elif f.required:  # a union's tag: always sent, defaulted in code
                out.append(f"        self.{f.py} = o.get({key}, {f.default})")
            else:
                out.append(f"        value = o.get({key})")
                out.append(f"        if value is None and {key} in o:")
                out.append(f"            nulls.append({key})")
                out.append(f"        self.{f.py} = value")
        if nulls:
            out.append("        self._wire_nulls = frozenset(nulls) if nulls else _NO_NULLS")
        out.append(f"        self.__class__ = {name}")
        out.append("        return self  # type: ignore[no-any-return]")
        out.append("")
        out.append("")
        out.append(f"_BUILDER_{name} = _builder_of({name})")
    return "\n".join(line for line in out if line is not None) + "\n"


def header(version: str, what: str) -> str:
    return (
        f'"""{what}\n\nGenerated by scripts/codegen.py from schema/ ({version}); do not edit.\n'
        'Regenerate with `nox -s codegen`.\n"""\n'
    )


# -- requests, notifications, methods --------------------------------------------------------


def methods_of(defs: dict[str, Any], union: str) -> list[tuple[str, str | None]]:
    result = []
    for variant in defs[union]["oneOf"]:
        method = variant["properties"]["method"]["enum"][0]
        params = variant["properties"].get("params", {})
        result.append((method, ref_name(params["$ref"]) if "$ref" in params else None))
    return result


def method_name(method: str) -> str:
    return "_".join(snake(part).rstrip("_") for part in method.split("/"))


RESPONSE_OVERRIDES = {
    # Methods whose response type follows neither XParams -> XResponse nor the method's name;
    # read off the runtime's Rust sources' naming and checked against the bundle.
    "account/gatewayOAuth/read": "GatewayOAuthReadResponse",
    "account/gatewayOAuth/login": "GatewayOAuthLoginResponse",
    "account/gatewayOAuth/cancel": "GatewayOAuthCancelResponse",
    "account/logout": "LogoutAccountResponse",
    "account/rateLimits/read": "GetAccountRateLimitsResponse",
    "account/usage/read": "GetAccountTokenUsageResponse",
    "account/workspaceMessages/read": "GetWorkspaceMessagesResponse",
    "config/mcpServer/reload": "McpServerRefreshResponse",
    "config/value/write": "ConfigWriteResponse",
    "config/batchWrite": "ConfigWriteResponse",
    "externalAgentConfig/import/readHistories": "ExternalAgentConfigImportHistoriesReadResponse",
}


def response_for(defs: dict[str, Any], params: str | None, method: str) -> str:
    if method in RESPONSE_OVERRIDES:
        return RESPONSE_OVERRIDES[method]
    if params is not None and params.endswith("Params"):
        candidate = params[: -len("Params")] + "Response"
        if candidate in defs:
            return candidate
    candidate = pascal(method.replace("/", " ")) + "Response"
    if candidate in defs:
        return candidate
    raise SystemExit(f"no response type for {method} (params {params})")


def key_of(defs: dict[str, Any], params: str, flat: str, nested: str) -> str | None:
    props = defs[params].get("properties", {})
    if flat in props:
        return flat
    inner = props.get(nested)
    if isinstance(inner, dict):
        target = ref_name(inner.get("$ref", "")) or None
        if target and "id" in defs.get(target, {}).get("properties", {}):
            return f"{nested}.id"
    return None


def registry_source(
    version: str, defs: dict[str, Any], stable: dict[str, Any]
) -> tuple[str, list[tuple[str, str | None, str, bool]]]:
    stable_client = {m for m, _ in methods_of(stable, "ClientRequest")}
    stable_server = {m for m, _ in methods_of(stable, "ServerRequest")}
    stable_notes = {m for m, _ in methods_of(stable, "ServerNotification")}
    client = [
        (m, p, response_for(defs, p, m), m not in stable_client)
        for m, p in methods_of(defs, "ClientRequest")
    ]
    server = [
        (m, p, response_for(defs, p, m), m not in stable_server)
        for m, p in methods_of(defs, "ServerRequest")
    ]
    notes = methods_of(defs, "ServerNotification")
    out = [
        header(version, "Registries: every request and notification of the pinned schema."),
        "from __future__ import annotations\n",
        "from collections.abc import Mapping\n",
        "from .._specs import NotificationSpec, RequestSpec",
        "from . import models as m\n",
        "CLIENT_REQUESTS: Mapping[str, RequestSpec] = {",
    ]

    def params_expr(p: str | None) -> str:
        return f"m.{p}" if p else "None"

    for method, params, response, exp in client:
        out.append(
            f"    {json.dumps(method)}: RequestSpec({json.dumps(method)}, {params_expr(params)}, "
            f"m.{response}, {exp}),"
        )
    out.append("}\n")
    out.append("SERVER_REQUESTS: Mapping[str, RequestSpec] = {")
    for method, params, response, exp in server:
        out.append(
            f"    {json.dumps(method)}: RequestSpec({json.dumps(method)}, {params_expr(params)}, "
            f"m.{response}, {exp}),"
        )
    out.append("}\n")
    out.append("NOTIFICATIONS: Mapping[str, NotificationSpec] = {")
    for method, params in notes:
        assert params is not None
        turn = key_of(defs, params, "turnId", "turn")
        thread = key_of(defs, params, "threadId", "thread")
        out.append(
            f"    {json.dumps(method)}: NotificationSpec({json.dumps(method)}, m.{params}, "
            f"{method not in stable_notes}, {json.dumps(turn) if turn else 'None'}, "
            f"{json.dumps(thread) if thread else 'None'}),"
        )
    out.append("}\n")
    client_notes = [m for m, _ in methods_of(defs, "ClientNotification")]
    out.append(f"CLIENT_NOTIFICATIONS: tuple[str, ...] = {tuple(client_notes)!r}\n")
    return "\n".join(out), client


def methods_source(
    version: str, gen: Generator, client: list[tuple[str, str | None, str, bool]]
) -> str:
    out = [
        header(version, "``ClientMethods``: one typed coroutine per client request."),
        "from __future__ import annotations\n",
        "from typing import Any, Literal\n",
        "from . import models as m\n",
        "\nclass ClientMethods:",
        '    """Typed wrappers, one per client request; ``CodexClient`` provides ``_call_typed``."""\n',
        "    async def _call_typed(self, method: str, params: object | None, response_type: Any) -> Any:",
        "        raise NotImplementedError\n",
    ]
    seen: set[str] = set()
    for method, params, response, exp in client:
        name = method_name(method)
        if name in seen:
            raise SystemExit(f"method name collision: {name}")
        seen.add(name)
        note = "\n\n        Experimental: not in the stable schema." if exp else ""
        desc = gen.defs.get(params or "", {}).get("description", "") if params else ""
        summary = f"``{method}``" + (f": {desc.strip().splitlines()[0]}" if desc else ".")
        summary = summary.replace("\\", "\\\\").replace('"""', "'''")
        if params is None:
            out.append(f"    async def {name}(self) -> m.{response}:")
            out.append(f'        """{summary}{note}\n        """')
            out.extend(_typed_return(method, "None", response))
            continue
        fields = gen.fields_of.get(params)
        if fields is None:  # params is an alias (e.g. raw JSON): accept it as is
            out.append(f"    async def {name}(self, params: Any = None, /) -> m.{response}:")
            out.append(f'        """{summary}{note}\n        """')
            out.extend(_typed_return(method, "params", response))
            continue
        args = [f"self, params: m.{params} | None = None, /"]
        if fields:
            args.append("*")
        for py, _wire, expr, _req in fields:
            typ = expr if expr == "Any" or expr.endswith("| None") else f"{expr} | None"
            args.append(f"{py}: {qualify(typ, gen)} = None")
        out.append(f"    async def {name}(")
        for a in args:
            out.append(f"        {a},")
        out.append(f"    ) -> m.{response}:")
        out.append(f'        """{summary}{note}\n        """')
        names = [py for py, *_ in fields]
        if names:
            kw = ", ".join(f'"{n}": {n}' for n in names)
            out.append(
                f"        given: dict[str, Any] = {{k: v for k, v in {{{kw}}}.items() if v is not None}}"
            )
            out.append("        if params is None:")
            out.append(f"            params = m.{params}(**given)")
            out.append("        elif given:")
            out.append(
                f'            raise TypeError("{name}() takes params or keyword arguments, not both")'
            )
        else:
            out.append("        if params is None:")
            out.append(f"            params = m.{params}()")
        out.extend(_typed_return(method, "params", response))
    return "\n".join(out)


def _typed_return(method: str, params: str, response: str) -> list[str]:
    """``_call_typed`` returns Any; the annotated assignment gives the typed result."""
    call = f"await self._call_typed({json.dumps(method)}, {params}, m.{response})"
    return [f"        result: m.{response} = {call}", "        return result\n"]


_IDENT = re.compile(r"\b([A-Z][A-Za-z0-9_]*)\b")


def qualify(expr: str, gen: Generator) -> str:
    """Prefix generated names with ``m.`` (leaving typing names and Literal strings alone).

    An enum also accepts its wire strings (``m.ReasoningEffort | Literal["low", ...]``), so a
    keyword argument can be given either way and type-check.
    """
    known = set(gen.class_names) | set(gen.aliases)

    def name(mt: re.Match[str]) -> str:
        ident = mt.group(1)
        if ident in gen.enums:
            values = ", ".join(json.dumps(v) for v in gen.enums[ident])
            return f"m.{ident} | Literal[{values}]"
        return f"m.{ident}" if ident in known else ident

    result = []
    for i, chunk in enumerate(re.split(r'("[^"]*")', expr)):
        result.append(chunk if i % 2 else _IDENT.sub(name, chunk))
    return "".join(result)


def refresh_schema() -> str:
    import codex_cli_bin

    codex = str(codex_cli_bin.bundled_codex_path())
    version = subprocess.run([codex, "--version"], check=True, capture_output=True, text=True)
    for flavour, extra in (("stable", []), ("experimental", ["--experimental"])):
        target = SCHEMA / flavour
        if target.exists():
            shutil.rmtree(target)
        subprocess.run(
            [codex, "app-server", "generate-json-schema", *extra, "--out", str(target)],
            check=True,
            capture_output=True,
        )
    text = version.stdout.strip()
    (SCHEMA / "VERSION").write_text(text + "\n")
    return text


def format_sources(files: dict[str, str]) -> dict[str, str]:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        raise SystemExit("ruff is needed to format the generated code (pip install ruff)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in files.items():
            (Path(tmp) / name).write_text(src)
        config = ["--config", "line-length=100", "--config", "target-version='py310'"]
        subprocess.run(
            [ruff, "format", "--quiet", "--no-cache", *config, tmp],
            check=True,
        )
        return {name: (Path(tmp) / name).read_text() for name in files}


def generate() -> dict[str, str]:
    version = (SCHEMA / "VERSION").read_text().strip()
    defs = load_definitions(SCHEMA / "experimental" / BUNDLE)
    stable = load_definitions(SCHEMA / "stable" / BUNDLE)
    gen = Generator(defs, stable)
    gen.run()
    registry, client = registry_source(version, defs, stable)
    files = {
        "models.py": gen.models_source(version),
        "converter.py": gen.converter_source(version),
        "registry.py": registry,
        "methods.py": methods_source(version, gen, client),
    }
    return format_sources(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh-schema", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.refresh_schema:
        print("schema/ written by", refresh_schema())
    files = generate()
    if args.check:
        stale = [
            n for n, src in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != src
        ]
        if stale:
            print("stale generated modules:", ", ".join(stale), "- run `nox -s codegen`")
            return 1
        print("generated modules are up to date")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        (OUT / name).write_text(src)
    print("wrote", ", ".join(sorted(files)), "to", OUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
