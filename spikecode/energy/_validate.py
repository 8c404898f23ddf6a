"""Argument checks shared by the energy modules (one message style, SpikecodeError)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from spikecode.errors import SpikecodeError


def positive_int(value: Any, name: str, **context: Any) -> int:
    """Return ``value`` as an int, refusing bools, non-integers and values <= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise SpikecodeError(f"{name} must be a positive integer, got {value!r}", **context)
    return int(value)


def nonnegative_real(value: Any, name: str, **context: Any) -> float:
    """Return a finite number >= 0 (an int stays an int), refusing bools and the rest."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpikecodeError(f"{name} must be a number, got {value!r}", **context)
    if not math.isfinite(value) or value < 0:
        raise SpikecodeError(f"{name} must be finite and >= 0, got {value!r}", **context)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def check_block_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate a sequence of distinct positive block sizes."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise SpikecodeError(f"block sizes must be a sequence of positive integers, got {sizes!r}")
    checked = tuple(positive_int(b, "block size") for b in sizes)
    if len(set(checked)) != len(checked):
        raise SpikecodeError(f"block sizes repeat: {list(checked)}")
    return checked
