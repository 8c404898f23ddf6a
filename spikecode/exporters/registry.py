"""The exporter registry: format name → the function that writes it.

At the bottom of :mod:`spikecode.exporters`: the exporter modules register themselves
here, and the package imports them after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from spikecode.errors import SpikecodeError

__all__ = ["EXPORTERS", "get_exporter", "register_exporter"]

Exporter = TypeVar("Exporter", bound=Callable[..., Any])

#: Format name → export function.
EXPORTERS: dict[str, Callable[..., Any]] = {}


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
        if held is not None and held is not function:
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
        return EXPORTERS[name]
    except (KeyError, TypeError):
        raise SpikecodeError(
            f"unknown export format {name!r}; supported formats: {', '.join(sorted(EXPORTERS))}"
        ) from None
