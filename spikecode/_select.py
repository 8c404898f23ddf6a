"""Layer selection by name: fnmatch patterns on module names, and the defaults (SPEC §1).

Here, not in :mod:`spikecode.models.capture` (which re-exports the public names), because
the deployment plan and the commands that read a stats file select layers by name too and
must not import torch to do it (docs/developing.rst, "Imports").
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from spikecode.errors import SpikecodeError

__all__ = ["DEFAULT_EXCLUDE", "DEFAULT_INCLUDE", "select_names"]

#: Every hookable layer is selected unless a pattern says otherwise.
DEFAULT_INCLUDE: tuple[str, ...] = ("*",)
#: The LM head stays as it is in SpikingBrain (SPEC §1); ``*.lm_head`` covers wrapped models.
DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head", "*.lm_head")

#: How many layer names an error message lists before it cuts the list short.
_NAMES_IN_ERRORS = 8


def _as_patterns(patterns: str | Iterable[str], argument: str) -> tuple[str, ...]:
    # A bare string would otherwise be iterated character by character.
    if isinstance(patterns, str):
        return (patterns,)
    result = tuple(patterns)
    if not all(isinstance(pattern, str) for pattern in result):
        raise SpikecodeError(f"{argument} patterns must be strings", patterns=result)
    return result


def select_names(
    names: Sequence[str], include: str | Iterable[str], exclude: str | Iterable[str] = ()
) -> list[str]:
    """The layer names that ``include`` patterns select and ``exclude`` patterns keep.

    fnmatch patterns on full names (``*`` crosses dots), in the order of ``names``.

    Raises
    ------
    SpikecodeError
        An include pattern that matches no name, or exclusions that leave nothing; the
        message lists the available names.
    """
    include = _as_patterns(include, "include")
    exclude = _as_patterns(exclude, "exclude")
    available = ", ".join(names[:_NAMES_IN_ERRORS])
    if len(names) > _NAMES_IN_ERRORS:
        available += f", … ({len(names)} in all)"
    # An include pattern that matches nothing is almost always a typo; exclude patterns
    # may match nothing so that generic defaults such as "lm_head" suit every model.
    for pattern in include:
        if not fnmatch.filter(names, pattern):
            raise SpikecodeError(
                f"include pattern {pattern!r} matches no linear layer; available: {available}",
                layers=len(names),
            )
    selected = [
        name
        for name in names
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in include)
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
    ]
    if not selected:
        raise SpikecodeError(
            f"the exclude patterns remove every selected layer; available: {available}",
            include=include,
            exclude=exclude,
        )
    return selected
