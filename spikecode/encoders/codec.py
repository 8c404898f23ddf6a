"""Step 2 of SPEC §3: integer counts -> spike trains, and back.

:func:`encode` expands counts into a sparse :class:`SpikeTrain` (events only, never a
dense float train); :func:`decode` restores the counts exactly; :func:`encode_dense`
writes the int8 dense train directly from counts. All three resolve the number of
steps, the zero point and saturation the same way, in :func:`plan_encoding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spikecode._validate import count_rows
from spikecode.encoders import _kernels
from spikecode.encoders.limits import DEFAULT_MAX_SPIKES, check_plan_size
from spikecode.encoders.schemes import Scheme, check_bit_order, get_scheme
from spikecode.encoders.train import SpikeTrain, feature_dtype
from spikecode.errors import LARGER, Remedy, SpikecodeError

__all__ = ["EncodingPlan", "decode", "encode", "encode_dense", "min_steps", "plan_encoding"]


@dataclass(frozen=True)
class EncodingPlan:
    """Counts validated and resolved against a code: what the kernels consume.

    Attributes
    ----------
    rows
        The counts as C-contiguous int32 ``[rows, features]`` (saturated if asked).
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

    rows: np.ndarray
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
    if isinstance(zero_point, bool) or not isinstance(zero_point, int | np.integer):
        raise SpikecodeError(f"zero_point must be 'auto' or an integer, not {zero_point!r}")
    return int(zero_point)


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
    low, high = int(rows.min()), int(rows.max())
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
        return EncodingPlan(rows, shape, spec, needed, zp, 0)
    T = spec.check_T(T)
    lo, hi = spec.value_range(T)
    if lo <= low_v and high_v <= hi:
        return EncodingPlan(rows, shape, spec, T, zp, 0)
    if not saturate:
        raise SpikecodeError(
            f"{T} step{'' if T == 1 else 's'} cannot carry counts from {low} to {high} "
            f"under {spec.name} "
            f"(range {lo + zp}..{hi + zp}; the minimal T is {needed})",
            remedies=(Remedy("T", LARGER), Remedy("T", None), Remedy("saturate", True)),
            scheme=spec.name,
            shape=shape,
        )
    outside = (rows < lo + zp) | (rows > hi + zp)
    clipped = int(np.count_nonzero(outside))
    rows = np.clip(rows, lo + zp, hi + zp).astype(np.int32)
    return EncodingPlan(rows, shape, spec, T, zp, clipped)


def min_steps(counts: Any, scheme: str, *, zero_point: int | str | None = "auto") -> int:
    """Minimal T that carries ``counts`` losslessly under ``scheme`` (SPEC §3 table)."""
    return plan_encoding(counts, scheme, None, zero_point=zero_point).T


def encode(
    counts: Any,
    scheme: str = "ternary",
    T: int | None = None,
    *,
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str | None = "auto",
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
) -> SpikeTrain:
    """Expand integer counts into a sparse spike train (SPEC §3).

    Parameters
    ----------
    counts
        Integer counts, features last (int32 range).
    scheme
        ``binary``, ``ternary``, ``bitwise``, ``bitwise-bidirectional`` or
        ``bitwise-twos-complement``.
    T
        Number of steps; ``None`` (default) for the minimal lossless T.
    saturate
        Clip counts a fixed T cannot carry (reported as ``train.clipped``) instead of
        raising.
    bit_order
        ``"msb"`` (default; step 0 carries the highest bit) or ``"lsb"``.
    zero_point
        For the unsigned codes: ``"auto"`` shifts signed counts by their minimum.
    max_spikes
        Refuse, before allocating, a train of more spikes or step offsets than this
        (default ``spikecode.encoders.limits.DEFAULT_MAX_SPIKES``, 2**28); None
        for no bound.

    Returns
    -------
    SpikeTrain
        Events in canonical order; ``decode(train)`` equals ``counts`` when nothing was
        clipped.

    Examples
    --------
    >>> import numpy as np
    >>> encode(np.array([5]), "bitwise").to_dense()[:, 0].tolist()
    [1, 0, 1]
    >>> encode(np.array([-5]), "bitwise-twos-complement", T=4).to_dense()[:, 0].tolist()
    [1, 0, 1, 1]
    """
    bit_order = check_bit_order(bit_order)
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    check_plan_size(plan, max_spikes)
    code, msb = plan.scheme.code, bit_order == "msb"
    per_step = _kernels.step_spike_counts(plan.rows, code, plan.T, plan.zero_point, msb)
    step_ptr = np.zeros(per_step.size + 1, dtype=np.int64)
    np.cumsum(per_step, out=step_ptr[1:])
    n = int(step_ptr[-1])
    feature = np.empty(n, dtype=feature_dtype(plan.rows.shape[1]))
    signs = np.empty(n if plan.scheme.signed else 0, dtype=np.int8)
    fill = _kernels.fill_events_bitwise if plan.scheme.bitwise else _kernels.fill_events_unary
    fill(plan.rows, code, plan.T, plan.zero_point, msb, step_ptr, feature, signs)
    return SpikeTrain(
        shape=plan.shape,
        T=plan.T,
        scheme=plan.scheme.name,
        step_ptr=step_ptr,
        feature=feature,
        signs=signs,
        bit_order=bit_order,
        zero_point=plan.zero_point,
        clipped=plan.clipped,
    )


def encode_dense(
    counts: Any,
    scheme: str = "ternary",
    T: int | None = None,
    *,
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str | None = "auto",
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
) -> np.ndarray:
    """Counts straight to the dense int8 train ``[T, *shape]`` (same rules as :func:`encode`).

    ``max_spikes`` bounds the dense array's ``T x elements`` entries (None: no bound).
    """
    bit_order = check_bit_order(bit_order)
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    check_plan_size(plan, max_spikes, dense=True)
    dense = np.zeros((plan.T, *plan.rows.shape), dtype=np.int8)
    _kernels.fill_dense(
        plan.rows, plan.scheme.code, plan.T, plan.zero_point, bit_order == "msb", dense
    )
    return dense.reshape((plan.T, *plan.shape))


def decode(train: SpikeTrain) -> np.ndarray:
    """Restore the integer counts of a train: ``zero_point + Σ_t w_t s_t`` (int32, ``shape``).

    Lossless: ``decode(encode(c, ...))`` equals ``c`` whenever nothing was clipped.
    """
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"decode expects a SpikeTrain, not {type(train).__name__}")
    counts = np.empty((train.rows, train.features), dtype=np.int64)
    _kernels.decode_rows(
        train.feature, train.signs, train.step_ptr, train.step_weights, train.zero_point, counts
    )
    info = np.iinfo(np.int32)
    if counts.min() < info.min or counts.max() > info.max:
        raise SpikecodeError(
            "decoded counts exceed the int32 range", scheme=train.scheme, T=train.T
        )
    return counts.astype(np.int32).reshape(train.shape)
