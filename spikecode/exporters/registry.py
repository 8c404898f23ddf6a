"""The exporter registry: format name → the function that writes it.

At the bottom of :mod:`spikecode.exporters`: the exporter modules register themselves
here. The built-in formats are listed from the start, each by the module that defines it,
and that module is imported on first use (:func:`get_exporter`, or a call of the entry):
the ONNX exporter imports torch and onnx, which ``spikecode export events`` of the bundled
sample must not pay for (docs/developing.rst, "Imports").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from spikecode.errors import SpikecodeError

__all__ = ["EXPORTERS", "get_exporter", "register_exporter"]

Exporter = TypeVar("Exporter", bound=Callable[..., Any])


class _Deferred:
    """A built-in exporter not imported yet: calling it imports its module, then calls it."""

    def __init__(self, name: str, module: str) -> None:
        self.name, self.module = name, module

    def resolve(self) -> Callable[..., Any]:
        importlib.import_module(self.module)  # registers the real function under the name
        return EXPORTERS[self.name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<exporter {self.name!r} from {self.module}, not imported yet>"


#: The built-in formats and the module whose import registers each.
_BUILTIN = {
    "events": "spikecode.exporters.events",
    "lava": "spikecode.exporters.lava",
    "nir": "spikecode.exporters.nir",
    "onnx": "spikecode.exporters.onnx",
}

#: Format name → export function (a built-in one not imported yet: a callable that imports
#: it on first call).
EXPORTERS: dict[str, Callable[..., Any]] = {
    name: _Deferred(name, module) for name, module in _BUILTIN.items()
}


def register_exporter(name: str) -> Callable[[Exporter], Exporter]:
    """Register the decorated function as the exporter of format ``name``.

    Parameters
    ----------
    name
        Format name, e.g. ``"onnx"``; case-sensitive and unique.

    Returns
    -------
    callable
        A decorator that registers the function and returns it unchanged.

    Raises
    ------
    SpikecodeError
        If ``name`` is not a non-empty string or another function already holds it.
    """
    if not isinstance(name, str) or not name:
        raise SpikecodeError(f"an exporter name must be a non-empty string, not {name!r}")

    def decorator(function: Exporter) -> Exporter:
        held = EXPORTERS.get(name)
        if isinstance(held, _Deferred):
            # Only the built-in's own module (or a submodule) takes its place; anyone
            # else is refused, as when the built-ins were imported with the package.
            own = f"{function.__module__}.".startswith(f"{held.module}.")
            if not own:
                raise SpikecodeError(
                    f"format {name!r} already has an exporter", exporter=held.module
                )
        elif held is not None and held is not function:
            raise SpikecodeError(
                f"format {name!r} already has an exporter",
                exporter=f"{held.__module__}.{held.__qualname__}",
            )
        EXPORTERS[name] = function
        return function

    return decorator


def get_exporter(name: str) -> Callable[..., Any]:
    """Return the exporter registered for format ``name``.

    Raises
    ------
    SpikecodeError
        For an unknown format; the message lists the supported ones.
    """
    try:
        exporter = EXPORTERS[name]
    except (KeyError, TypeError):
        raise SpikecodeError(
            f"unknown export format {name!r}; supported formats: {', '.join(sorted(EXPORTERS))}"
        ) from None
    return exporter.resolve() if isinstance(exporter, _Deferred) else exporter
