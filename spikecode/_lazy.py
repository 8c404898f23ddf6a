"""Lazy package attributes: ``import spikecode`` costs milliseconds, not Numba's start-up.

A package ``__init__`` that re-exports names from its modules would import all of them
(and Numba, torch, ...) the moment anything under it is imported, the CLI's ``--help``
included. Instead it declares where each public name lives and installs
:func:`lazy_exports`; the module is imported on first access of one of its names
(PEP 562 module ``__getattr__``), then the value is cached in the package's namespace.
``from spikecode import encode`` and ``spikecode.encode`` work as before.

A public name may equal the name of the submodule that defines it
(``spikecode.calibration.evaluate``, the function, from the module of that name). Importing
the submodule binds it on the package; the package's class keeps the public name bound to
the function instead, as an eager ``from .evaluate import evaluate`` did.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for a package with lazily imported names.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Public name -> the module that defines it (absolute, e.g. ``"spikecode.stats"``).
    submodules
        Submodule names that ``package.<name>`` imports on first access (so that
        ``import spikecode; spikecode.calibration`` works without its own import).

    Returns
    -------
    (__getattr__, __dir__)
        To assign at the package's top level.
    """
    exports = dict(exports)
    subs = frozenset(submodules)
    if any(module == f"{package}.{name}" for name, module in exports.items()):
        # Only where a name is its submodule's: other packages stay plain modules.
        sys.modules[package].__class__ = _Package
        sys.modules[package].__lazy_exports__ = exports  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports, *subs})

    return __getattr__, __dir__


class _Package(types.ModuleType):
    """A package module whose public names win over submodules of the same name."""

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds ``package.name`` to the submodule after running it; the
        # public name is the object that submodule defines under the same name.
        exports = vars(self).get("__lazy_exports__", {})
        if isinstance(value, types.ModuleType) and exports.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)
