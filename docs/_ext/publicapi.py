"""``.. public-api:: module`` — the API reference of one module, generated from ``__all__``.

With the ``:submodules:`` flag, the module docstring of every public (not underscored)
submodule of a package follows, so that the design notes they hold are part of the
reference and ``:mod:`` references to them resolve.

The directive expands to an autosummary table of every public name followed by its
autodoc entries, so the reference follows the public surface (``__all__``) as it
changes; a name that is itself a module gets its own ``public-api`` block. A class or
function that an earlier block already documents (``spikecode.SpikeTrain`` is
``spikecode.encoders.SpikeTrain``) is documented once: later tables link to the first
entry, which avoids Sphinx's duplicate-description warning for re-exported classes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def public_names(module_name: str) -> list[str]:
    """Return ``module.__all__``, the public names; every public module defines it."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"{module_name} has no __all__; its public surface is undefined")
    return list(names)


def _key(obj: Any) -> str | None:
    # Classes and functions are identified by where they are defined; plain data has no
    # such identity and is documented wherever it is exported.
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return None


def _registry(env: BuildEnvironment) -> dict[str, tuple[str, str]]:
    # definition key -> (document, public full name it is documented under)
    if not hasattr(env, "publicapi_documented"):
        env.publicapi_documented = {}
    return env.publicapi_documented


class PublicAPI(SphinxDirective):
    """Autosummary table + autodoc entries for ``module.__all__``."""

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {"submodules": directives.flag}

    def run(self) -> list[nodes.Node]:
        """Expand into automodule, autosummary and one autodoc entry per public name."""
        name = self.arguments[0]
        module = importlib.import_module(name)
        names = public_names(name)
        submodules = [n for n in names if inspect.ismodule(getattr(module, n))]
        documented = _registry(self.env)
        entries: list[str] = []
        table: list[str] = []
        for n in names:
            if n in submodules:
                continue
            obj = getattr(module, n)
            key = _key(obj)
            if key is not None and key in documented:
                table.append(f"   ~{documented[key][1]}")
                continue
            full = f"{name}.{n}"
            if key is not None:
                documented[key] = (self.env.docname, full)
            # automodule made ``name`` the current module: its own names go unqualified
            # (newer autosummary warns about a name that repeats the current module).
            table.append(f"   {n}")
            kind = _kind(obj)
            entries += [f".. auto{kind}:: {full}"]
            if kind == "data":
                entries += _data_entry(name, n, obj)
            entries += [""]
        lines = [f".. automodule:: {name}", "   :no-members:", ""]
        if table:
            lines += [".. autosummary::", "", *table, ""]
        lines += entries
        for n in submodules:
            lines += [f".. rubric:: {name}.{n}", "", f".. public-api:: {name}.{n}", ""]
        if "submodules" in self.options and hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__):
                # A module named like a public name (calibration.evaluate, the module of
                # the function evaluate) would describe the same full name twice.
                if info.name.startswith("_") or info.name in names:
                    continue
                full = f"{name}.{info.name}"
                lines += [f".. rubric:: {full}", ""]
                lines += [f".. automodule:: {full}", "   :no-members:", ""]
        content = StringList(lines, source=self.get_source_info()[0])
        node = nodes.container()
        nested_parse_with_titles(self.state, content, node)
        return node.children


def _data_entry(module_name: str, name: str, obj: Any) -> list[str]:
    # A re-exported constant's doc comment lives in the module that defines it, where
    # autodoc (which reads the exporting module's source) does not look: find it there.
    # Long values (tables of schemes, energy tables) are described, not printed.
    lines = ["   :no-value:"] if len(repr(obj)) > 80 else []
    top = module_name.split(".")[0]
    for modname, module in sorted(sys.modules.items()):
        if modname.split(".")[0] != top or getattr(module, name, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except PycodeError:
            continue
        doc = docs.get(("", name))
        if doc:
            return [*lines, "", *(f"   {line}" for line in doc)]
    return lines


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _drop_type_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # autodoc falls back to the docstring of a constant's type ("Built-in immutable
    # sequence.", "str(object='') -> str"), which says nothing about the constant.
    if what not in ("data", "attribute") or inspect.isclass(obj) or not lines:
        return
    type_doc = getattr(type(obj), "__doc__", None)
    if type_doc and " ".join(" ".join(lines).split()) == " ".join(type_doc.split()):
        lines.clear()


def _import_object(target: str) -> Any:
    """The object a dotted name points at, or None (import the longest module prefix)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_alias(
    app: Sphinx, env: BuildEnvironment, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    # Docstrings name a class or function where it is defined
    # (spikecode.models.checkpoint.load_checkpoint); the reference documents it under its
    # public name (spikecode.models.load_checkpoint). Resolve the one to the other.
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("spikecode."):
        return None
    key = _key(_import_object(target))
    entry = _registry(env).get(key) if key is not None else None
    if entry is None or entry[1] == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], entry[1], node, contnode
    )


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    registry = _registry(env)
    for key in [k for k, (doc, _) in registry.items() if doc == docname]:
        del registry[key]


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: Any) -> None:
    _registry(env).update((k, v) for k, v in _registry(other).items() if v[0] in docnames)


def setup(app: Sphinx) -> dict[str, object]:
    """Register the directive and keep its registry consistent across (parallel) reads."""
    app.add_directive("public-api", PublicAPI)
    # before numpydoc (priority 500) rewrites the lines
    app.connect("autodoc-process-docstring", _drop_type_docstring, priority=400)
    app.connect("missing-reference", _resolve_alias)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
