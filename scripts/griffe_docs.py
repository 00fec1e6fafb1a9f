"""A griffe extension for the docs build (``mkdocs.yml`` loads it; not part of the package).

What the API reference needs that griffe does not do for this code base:

* **attrs classes get their ``__init__``.** ``@attrs.frozen``/``@attrs.define`` write the
  constructor at run time, so griffe, reading the source, sees a class without parameters:
  the signature would be empty, and every ``:param x:`` of the class docstring would be
  reported as unknown (a strict build fails). The parameters are rebuilt from the annotated
  fields the way attrs builds them: in order, ``kw_only`` from the decorator, a leading
  underscore dropped, ``init=False`` fields left out, ``default=``/``factory=`` shown.
* **The sync client's methods appear.** ``thread_start = forward(AsyncCodex.thread_start,
  ...)`` is, statically, an attribute with no docstring; it becomes the method it is at run
  time: the async method's parameters and docstring, blocking, returning the sync wrapper.
* **Sphinx roles become optional links.** The docstrings are written for Sphinx and IDEs
  (``:class:`~codex_anyio.AsyncCodex```); mkdocstrings renders Markdown and would print the
  roles literally. Each becomes the name in code, linked through mkdocs-autorefs when the
  reference documents it; ``optional``, so a private helper or another project's class stays
  plain code instead of failing the build. A name is resolved as Sphinx would (a dotted path
  from the top, or a name in the scope of the object whose docstring it is), then spelled
  with the public name it is exported as (``codex_anyio._rpc._router.Limits`` is
  ``codex_anyio.Limits``); a name with no public spelling is plain code, never a private
  path. reST's ``text::`` before a literal block loses its second colon.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ATTRS_DECORATORS = frozenset(
    f"{module}.{name}"
    for module in ("attrs", "attr")
    for name in ("define", "frozen", "mutable", "s", "attrs")
)

PUBLIC_SUBMODULES = ("batch", "testing", "types")
"""Besides the package itself, the modules whose exports are public names."""

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj):`(?P<target>[^`]+)`")
LITERAL_BLOCK = re.compile(r"::\n\n(?= {4})")
"""reST's ``text::`` before an indented block: in Markdown the block is code already."""


# -- attrs -------------------------------------------------------------------------------------


def _call_arguments(expr: object) -> dict[str, str]:
    """Keyword arguments of a call expression, as source text."""
    if not isinstance(expr, griffe.ExprCall):
        return {}
    return {
        arg.name: str(arg.value) for arg in expr.arguments if isinstance(arg, griffe.ExprKeyword)
    }


def _attrs_decorator(cls: griffe.Class) -> griffe.Decorator | None:
    for decorator in cls.decorators:
        if decorator.callable_path in ATTRS_DECORATORS:
            return decorator
    return None


def _is_field(member: griffe.Object | griffe.Alias) -> bool:
    return (
        isinstance(member, griffe.Attribute)
        and member.annotation is not None
        and "instance-attribute" in member.labels
        and "property" not in member.labels
        and not str(member.annotation).startswith(("ClassVar", "typing.ClassVar"))
    )


def _field_parameter(field: griffe.Attribute, kw_only: bool) -> griffe.Parameter | None:
    value = field.value
    options = {}
    if isinstance(value, griffe.ExprCall) and str(value.function).endswith(("field", "ib")):
        options = _call_arguments(value)
        if options.get("init") == "False":
            return None
        factory = options.get("factory")
        value = f"{factory}()" if factory else options.get("default")
    name = options.get("alias", "").strip("'\"") or field.name.lstrip("_")
    kind = (
        griffe.ParameterKind.keyword_only
        if kw_only or options.get("kw_only") == "True"
        else griffe.ParameterKind.positional_or_keyword
    )
    return griffe.Parameter(
        name, annotation=field.annotation, kind=kind, default=value, docstring=field.docstring
    )


def add_attrs_init(cls: griffe.Class) -> None:
    """Give an attrs class the ``__init__`` attrs writes for it (unless it wrote its own)."""
    decorator = _attrs_decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    kw_only = _call_arguments(decorator.value).get("kw_only") == "True"
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for member in cls.members.values():
        if _is_field(member) and (parameter := _field_parameter(member, kw_only)) is not None:
            parameters.append(parameter)
    init = griffe.Function(
        "__init__",
        lineno=cls.lineno,
        endlineno=cls.lineno,
        parameters=griffe.Parameters(*parameters),
        returns="None",
        parent=cls,
    )
    cls.set_member("__init__", init)
    cls.labels.add("attrs")


# -- the sync client's forwarded methods -------------------------------------------------------


def _lookup(scope: griffe.Object, expr: object) -> griffe.Object | griffe.Alias | None:
    """The object an expression (``AsyncCodex.thread_start``, ``_thread_of``) names."""
    path = getattr(expr, "canonical_path", None)
    if not isinstance(path, str):
        return None
    collection = scope.modules_collection
    try:
        return collection[path]
    except KeyError:
        owner_path, _, name = path.rpartition(".")
        try:
            return collection[owner_path].all_members[name]
        except (KeyError, AttributeError):
            return None


def add_forwarded_methods(cls: griffe.Class) -> None:
    """Turn ``name = forward(AsyncClass.method[, wrap])`` into the method the sync class has.

    At run time ``forward`` makes a blocking method with the async method's signature and
    docstring, returning what ``wrap`` makes of the result; statically it is an attribute
    without a docstring, which the reference would leave out.
    """
    for name, member in list(cls.members.items()):
        call = getattr(member, "value", None)
        if not isinstance(call, griffe.ExprCall) or str(call.function) != "forward":
            continue
        target = _lookup(cls, call.arguments[0]) if call.arguments else None
        if target is None or not target.is_function:
            continue
        returns = target.returns
        if len(call.arguments) > 1 and (wrap := _lookup(cls, call.arguments[1])) is not None:
            returns = wrap.returns if wrap.is_function else returns
        method = griffe.Function(
            name,
            lineno=member.lineno,
            endlineno=member.endlineno,
            parameters=target.parameters,
            returns=returns,
            parent=cls,
        )
        if target.docstring is not None:
            method.docstring = griffe.Docstring(
                target.docstring.value,
                lineno=target.docstring.lineno,
                parent=method,
                parser=target.docstring.parser,
                parser_options=target.docstring.parser_options,
            )
        cls.set_member(name, method)


# -- Sphinx roles ------------------------------------------------------------------------------


def resolve(obj: griffe.Object, target: str) -> str:
    """The full path ``target`` names from ``obj``'s scope (``target`` itself if unknown)."""
    head, _, rest = target.partition(".")
    try:
        found = obj.resolve(head)
    except (griffe.NameResolutionError, AttributeError, KeyError):
        return target
    return f"{found}.{rest}" if rest else found


def public_names(pkg: griffe.Module) -> dict[str, str]:
    """Where each exported object lives privately -> the public name it is documented under."""
    names: dict[str, str] = {}
    modules = [pkg, *(pkg.members[m] for m in PUBLIC_SUBMODULES if m in pkg.members)]
    for module in modules:
        for name in module.exports or ():
            member = module.members.get(name)
            if member is not None and member.is_alias:
                names.setdefault(member.target_path, f"{module.path}.{name}")
    return names


def public_path(path: str, public: dict[str, str]) -> str | None:
    """``path`` spelled with public names, or None if it names something private."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in public:
            return ".".join([public[prefix], *parts[i:]])
    return None if any(part.startswith("_") for part in parts) else path


def rewrite_roles(obj: griffe.Object, text: str, public: dict[str, str]) -> str:
    def link(match: re.Match[str]) -> str:
        target = match["target"].strip()
        path = target.lstrip("~.")
        shown = path.rsplit(".", 1)[-1] if target.startswith("~") else path
        code = f"<code>{html.escape(shown)}</code>"
        identifier = public_path(resolve(obj, path), public)
        if identifier is None:
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    return LITERAL_BLOCK.sub(":\n\n", ROLE.sub(link, text))


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class CodexAnyioDocs(griffe.Extension):
    """Runs once the package is loaded: attrs constructors first, then the roles."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "codex_anyio":
            return
        for obj in list(_walk(pkg)):
            if isinstance(obj, griffe.Class):
                add_attrs_init(obj)
                add_forwarded_methods(obj)
        public = public_names(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite_roles(obj, obj.docstring.value, public)
