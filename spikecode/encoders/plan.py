"""Counts resolved against a code: number of steps, zero point, saturation (SPEC §3).

Every encoding path — :func:`~spikecode.encoders.codec.encode` from counts (Numba or
PyTorch), :func:`spikecode.encode_activations` from floats, :func:`spikecode.spike_stats`
— settles T, the zero point and saturation here, from the smallest and largest count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spikecode._validate import count_rows
from spikecode.encoders.schemes import Scheme, get_scheme
from spikecode.errors import LARGER, Remedy, SpikecodeError

__all__ = ["EncodingPlan", "plan_encoding", "resolve_range"]


@dataclass(frozen=True)
class EncodingPlan:
    """Counts validated and resolved against a code: what the kernels consume.

    Attributes
    ----------
    rows
        The counts as C-contiguous int32 ``[rows, features]`` (saturated if asked);
        None on the paths that never hold counts (fused from floats, PyTorch).
    shape
        Original shape of the counts.
    scheme
        The code.
    T
        Number of steps (minimal, or the fixed one asked for).
    zero_point
        Shift subtracted before coding (non-zero only for unsigned codes).
    clipped
        How many elements were saturated.
    """

    rows: np.ndarray | None
    shape: tuple[int, ...]
    scheme: Scheme
    T: int
    zero_point: int
    clipped: int


def _resolve_zero_point(spec: Scheme, zero_point: Any, low: int) -> int:
    if not spec.unsigned_counts:
        if zero_point not in ("auto", None, 0):
            raise SpikecodeError(
                "a zero point applies only to the unsigned codes (binary, bitwise); "
                f"{spec.name} carries signed counts",
                remedies=(Remedy("zero_point", None),),
                scheme=spec.name,
            )
        return 0
    if zero_point in ("auto", None):
        return min(0, low)
    return explicit_zero_point(spec, zero_point)


#: The largest magnitude of an explicit zero point: counts are int32, so ``count - zp``
#: then stays below 2**63 and the kernels' int64 values cannot wrap (a wrapped value
#: would never shift down to zero in their bit loops).
ZERO_POINT_LIMIT = 2**62


def explicit_zero_point(spec: Scheme, zero_point: Any) -> int:
    """The integer zero point a caller gave an unsigned code, checked (SPEC §3).

    Raises
    ------
    SpikecodeError
        ``zero_point`` is not an integer, or its magnitude exceeds
        :data:`ZERO_POINT_LIMIT`.
    """
    if isinstance(zero_point, bool) or not isinstance(zero_point, int | np.integer):
        raise SpikecodeError(f"zero_point must be 'auto' or an integer, not {zero_point!r}")
    zp = int(zero_point)
    if abs(zp) > ZERO_POINT_LIMIT:
        raise SpikecodeError(
            f"zero_point {zp} is out of range: it must lie within ±2**62, so that counts "
            "minus it fit in 64-bit integers",
            remedies=(Remedy("zero_point", "auto"),),
            scheme=spec.name,
        )
    return zp


def plan_encoding(
    counts: Any,
    scheme: str | Scheme,
    T: int | None = None,
    *,
    saturate: bool = False,
    zero_point: int | str | None = "auto",
) -> EncodingPlan:
    """Validate counts and settle T, zero point and saturation for ``scheme`` (SPEC §3).

    Parameters
    ----------
    counts
        Integer counts (NumPy, torch or array-like), features last.
    scheme
        One of :data:`spikecode.SCHEMES`.
    T
        Fixed number of steps; ``None`` for the minimal T of these counts.
    saturate
        With a fixed T too small for some counts: clip them to the code's range (and
        count them) instead of refusing.
    zero_point
        Unsigned codes only: ``"auto"`` (``min(0, min(counts))``) or an integer.

    Raises
    ------
    SpikecodeError
        Bad counts; a zero point for a signed code; values below the zero point for an
        unsigned code (clipped instead with ``saturate`` and a fixed T); counts beyond a
        fixed T without ``saturate``.
    """
    spec = get_scheme(scheme)
    rows, shape = count_rows(counts)
    T, zp, bounds = resolve_range(
        spec, int(rows.min()), int(rows.max()), T, saturate=saturate, zero_point=zero_point,
        shape=shape,
    )  # fmt: skip
    if bounds is None:
        return EncodingPlan(rows, shape, spec, T, zp, 0)
    outside = (rows < bounds[0]) | (rows > bounds[1])
    clipped = int(np.count_nonzero(outside))
    rows = np.clip(rows, *bounds).astype(np.int32)
    return EncodingPlan(rows, shape, spec, T, zp, clipped)


def resolve_range(
    spec: Scheme,
    low: int,
    high: int,
    T: int | None,
    *,
    saturate: bool,
    zero_point: int | str | None,
    shape: tuple[int, ...],
) -> tuple[int, int, tuple[int, int] | None]:
    """T, zero point and saturation bounds for counts from ``low`` to ``high`` (SPEC §3).

    Returns ``(T, zero_point, bounds)``: ``bounds`` is the ``(low, high)`` range counts
    must be clipped into, or None when every count fits. Raises as :func:`plan_encoding`.
    """
    zp = _resolve_zero_point(spec, zero_point, low)
    low_v, high_v = low - zp, high - zp
    if spec.unsigned_counts and low_v < 0 and not (saturate and T is not None):
        raise SpikecodeError(
            f"{spec.name} carries only non-negative values but counts go down to {low} "
            f"at zero point {zp}; use a signed code (ternary, bitwise-bidirectional, "
            "bitwise-twos-complement) or a zero point at or below the lowest count",
            remedies=(Remedy("zero_point", "auto"), Remedy("zero_point", low)),
            scheme=spec.name,
            shape=shape,
        )
    needed = spec.min_steps(max(abs(low_v), abs(high_v)))
    if T is None:
        return needed, zp, None
    T = spec.check_T(T)
    lo, hi = spec.value_range(T)
    if lo <= low_v and high_v <= hi:
        return T, zp, None
    if not saturate:
        raise SpikecodeError(
            f"{T} step{'' if T == 1 else 's'} cannot carry counts from {low} to {high} "
            f"under {spec.name} (range {lo + zp}..{hi + zp}; the minimal T is {needed})",
            remedies=(Remedy("T", LARGER), Remedy("T", None), Remedy("saturate", True)),
            scheme=spec.name,
            shape=shape,
        )
    return T, zp, (lo + zp, hi + zp)
