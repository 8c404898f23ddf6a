"""Float activations straight to a spike train: Step 1 and Step 2 fused.

:func:`encode_activations` equals ``adaptive_counts(x, k)`` followed by
``encode(counts, scheme, ...)`` bit for bit — the same thresholds, counts, T, zero point
and spikes — without writing the int32 count array. NumPy input and CPU tensors run
through Numba. Where T and the zero point need not wait for the other rows (signed codes,
an explicit zero point) one pass encodes each row while it is in cache (see
:func:`_one_pass`); otherwise two passes run over the rows: the first sums ``|x|``
(float64, in SPEC §2's one order, so ``Vth`` is identical to
:func:`spikecode.adaptive_counts`) and takes each row's extreme values, whose counts give
the minimal T and the zero point; the second divides, rounds and writes the packed
bit-planes directly, counting the spikes as it goes. The events layout (when asked for, or
chosen by ``auto``) is then compacted from the planes. Tensors on other devices stay there:
:func:`spikecode.nn.functional.adaptive_counts` and the PyTorch planes of
``spikecode.encoders._torch``; only the packed planes travel to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode._validate import (
    INT32_MAX,
    INT32_MIN,
    float_rows,
    is_torch,
    refuse_nonfinite_rows,
    threshold_options,
)
from spikecode.encoders import _arrays, _plane_kernels
from spikecode.encoders.codec import finish_train
from spikecode.encoders.limits import DEFAULT_MAX_SPIKES
from spikecode.encoders.plan import EncodingPlan, explicit_zero_point, resolve_range
from spikecode.encoders.schemes import TWOS, check_bit_order, get_scheme
from spikecode.encoders.train import SpikeTrain, check_layout
from spikecode.errors import SpikecodeError
from spikecode.threshold import VTH_MAX, VTH_MIN

__all__ = ["encode_activations"]


def encode_activations(
    x: Any,
    k: float = 3.0,
    scheme: str = "bitwise-bidirectional",
    T: int | None = None,
    *,
    layout: str = "auto",
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str | None = "auto",
    vth_min: float = VTH_MIN,
    vth_max: float = VTH_MAX,
    return_counts: bool = False,
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
) -> tuple[SpikeTrain, Any] | tuple[SpikeTrain, Any, Any]:
    """Encode float activations into a spike train in one pass (SPEC §2 then §3).

    Parameters
    ----------
    x
        Activations, features last: NumPy float16/32/64 or a torch tensor (also bfloat16,
        any device).
    k, vth_min, vth_max
        The adaptive threshold, as for :func:`spikecode.adaptive_counts`.
    scheme, T, saturate, bit_order, zero_point, layout
        As for :func:`spikecode.encode` (``layout="auto"`` picks the smaller of events
        and planes from the spike count). Default scheme: the report's
        bitwise-bidirectional.
    max_spikes
        Refuse, before allocating, planes of more bytes than this (as
        :func:`spikecode.encode`; None for no bound).
    return_counts
        Also return the int32 counts (then they are written; otherwise no count array
        exists at any point on the NumPy path).

    Returns
    -------
    train : SpikeTrain
        Equal (``train.equals``) to ``encode(adaptive_counts(x, k)[0], scheme, ...)``.
    vth
        Per-token threshold, shape ``x.shape[:-1]``, compute dtype (NumPy array, or a
        tensor on ``x``'s device).
    counts
        Only with ``return_counts``: what :func:`spikecode.adaptive_counts` returns.

    Raises
    ------
    SpikecodeError
        As :func:`spikecode.adaptive_counts` and :func:`spikecode.encode`.
    """
    spec = get_scheme(scheme)
    layout = check_layout(layout, auto=True)
    bit_order = check_bit_order(bit_order)
    k, vth_min, vth_max = threshold_options(k, vth_min, vth_max)
    options = {"saturate": saturate, "zero_point": zero_point, "max_spikes": max_spikes}
    if is_torch(x) and x.device.type != "cpu":
        return _encode_torch(x, k, spec.name, T, layout, bit_order, vth_min, vth_max,
                             return_counts, options)  # fmt: skip
    # A CPU tensor takes the Numba kernels through a NumPy view of its data (no copy for
    # a contiguous float32/float64 tensor; float16/bfloat16 are upcast to float32 once).
    rows, shape = float_rows(x)
    train, vth, counts = _encode_rows(rows, shape, k, spec, T, layout, bit_order, vth_min,
                                      vth_max, return_counts, options)  # fmt: skip
    if is_torch(x):
        import torch

        vth = torch.from_numpy(np.asarray(vth))
        counts = None if counts is None else torch.from_numpy(counts)
    return (train, vth, counts) if return_counts else (train, vth)


def _encode_rows(
    rows: np.ndarray,
    shape: tuple[int, ...],
    k: float,
    spec: Any,
    T: int | None,
    layout: str,
    bit_order: str,
    vth_min: float,
    vth_max: float,
    return_counts: bool,
    options: dict[str, Any],
) -> tuple[SpikeTrain, np.ndarray, np.ndarray | None]:
    """:func:`encode_activations` of validated ``[rows, F]`` arrays: (train, vth, counts)."""
    saturate, zero_point = options["saturate"], options["zero_point"]
    max_spikes = options["max_spikes"]
    msb = bit_order == "msb"
    if not return_counts:
        fast = _one_pass(rows, shape, k, spec, T, layout, msb, bit_order, vth_min, vth_max,
                         options)  # fmt: skip
        if fast is not None:
            return fast[0], fast[1].reshape(shape[:-1]), None
    n_rows, features = rows.shape
    vth = np.empty(n_rows, dtype=rows.dtype)
    extremes = _plane_kernels.row_thresholds(rows, k, vth_min, vth_max, vth)
    refuse_nonfinite_rows(rows, extremes[:, 0], shape)
    low, high = float(extremes[:, 1].min()), float(extremes[:, 2].max())
    if low < INT32_MIN or high > INT32_MAX:
        raise SpikecodeError(
            f"count(s) overflow int32 (k={k} is too large for these activations)", shape=shape
        )
    T, zp, bounds = resolve_range(
        spec, int(low), int(high), T, shape=shape, saturate=saturate, zero_point=zero_point
    )
    lo, hi = bounds if bounds is not None else (INT32_MIN, INT32_MAX)
    width = _arrays.plane_width(features)
    _arrays.check_planes_size(EncodingPlan(None, shape, spec, T, zp, 0), width, max_spikes)
    # The kernel writes every byte of the bitwise planes (a zeroed allocation would be
    # written twice); unary planes of steps no row reaches stay untouched zero pages.
    zeroed = not spec.bitwise
    planes = (np.zeros if zeroed else np.empty)((T, n_rows, width), dtype=np.uint8)
    sign_plane = np.empty((n_rows if spec.signed else 0, width), dtype=np.uint8)
    counts = np.empty((n_rows if return_counts else 0, features), dtype=np.int32)
    totals = _plane_kernels.float_planes(
        rows, vth, extremes, float(lo), float(hi), spec.code, T, zp, msb, zeroed, planes,
        sign_plane, counts,
    ).sum(axis=0)  # fmt: skip
    plan = EncodingPlan(None, shape, spec, T, zp, int(totals[1]))
    train = finish_train(plan, bit_order, layout, planes, sign_plane, int(totals[0]))
    return train, vth.reshape(shape[:-1]), counts.reshape(shape) if return_counts else None


# Planes the one-pass encoding writes before T is known: one chunk of eight for the
# bitwise codes (|v| < 256, or -128 <= v < 128), eight chunks for binary/ternary (only
# the planes a row reaches are ever touched, so the rest stays unfaulted zero pages).
_BITWISE_CAPACITY = 8
_UNARY_CAPACITY = 64


def _one_pass(
    rows: np.ndarray,
    shape: tuple[int, ...],
    k: float,
    spec: Any,
    T: int | None,
    layout: str,
    msb: bool,
    bit_order: str,
    vth_min: float,
    vth_max: float,
    options: dict[str, Any],
) -> tuple[SpikeTrain, np.ndarray] | None:
    """The row-by-row encoding (Vth and planes from one read of each row), or None.

    T and the zero point depend on every row's extreme counts, so the planes are written
    for a *capacity* before they are known, as for a T that large: bit ``b`` of a value
    (unary: step ``b``) lands in plane ``b``, or ``capacity - 1 - b`` for MSB-first bitwise
    codes. Planes past the final T are empty (bits of magnitude ``>= 2^T``, steps past
    ``|v|``), except the two's-complement sign extension, whose spikes are taken off the
    count. The final planes are therefore the first T planes (the last T, MSB-first) of
    the buffer: a contiguous view, no copy. None, and the caller runs the two passes,
    whenever that cannot be exact: an auto zero point of binary/bitwise (it is the lowest
    count of all rows), T above the capacity, int32 overflow, NaN/Inf (the two-pass path
    raises the error), a bound ``max_spikes`` below the capacity's planes, or counts asked
    for.
    """
    zero_point = options["zero_point"]
    if spec.unsigned_counts:
        if zero_point in ("auto", None):
            return None  # the auto zero point is min(0, lowest count): not known yet
        zp = explicit_zero_point(spec, zero_point)
    elif zero_point in ("auto", None, 0):
        zp = 0
    else:
        return None  # the two-pass path raises the error
    n_rows, features = rows.shape
    width = _arrays.plane_width(features)
    lo, hi = INT32_MIN, INT32_MAX  # clipping there means int32 overflow: two passes
    saturate = False
    if T is not None:
        try:
            capacity = spec.check_T(T)
        except SpikecodeError:
            return None
        low_v, high_v = spec.value_range(capacity)
        if options["saturate"] and low_v + zp >= INT32_MIN and high_v + zp <= INT32_MAX:
            lo, hi, saturate = low_v + zp, high_v + zp, True  # resolve_range's bounds
    else:
        capacity = _UNARY_CAPACITY if not spec.bitwise else _BITWISE_CAPACITY
    try:
        _arrays.check_planes_size(
            EncodingPlan(None, shape, spec, capacity, zp, 0), width, options["max_spikes"]
        )
    except SpikecodeError:
        return None
    # As in the two passes: bitwise planes are written in full by the kernel (capacity 8,
    # or the T asked for); binary/ternary's unreached planes stay untouched zero pages.
    zeroed = not spec.bitwise
    planes = (np.zeros if zeroed else np.empty)((capacity, n_rows, width), dtype=np.uint8)
    sign_plane = np.empty((n_rows if spec.signed else 0, width), dtype=np.uint8)
    vth = np.empty(n_rows, dtype=rows.dtype)
    per_row = _plane_kernels.float_planes_one_pass(
        rows, k, vth_min, vth_max, float(lo), float(hi), spec.code, capacity, zp, msb,
        zeroed, planes, sign_plane, vth,
    )  # fmt: skip
    if per_row[:, 0].any() or (per_row[:, 5].any() and not saturate):
        return None  # NaN/Inf or int32 overflow: the two-pass path names the problem
    low, high = int(per_row[:, 1].min()), int(per_row[:, 2].max())
    T, zp_final, _ = resolve_range(
        spec, low, high, T, shape=shape, saturate=options["saturate"], zero_point=zero_point
    )
    if zp_final != zp or capacity < T:
        return None
    _arrays.check_planes_size(EncodingPlan(None, shape, spec, T, zp, 0), width,
                              options["max_spikes"])  # fmt: skip
    totals = per_row.sum(axis=0)
    spikes = int(totals[3])
    if spec.code == TWOS:  # planes T .. capacity-1 hold the sign extension of v < 0
        spikes -= (capacity - T) * int(totals[4])
    planes = planes[capacity - T :] if (msb and spec.bitwise) else planes[:T]
    plan = EncodingPlan(None, shape, spec, T, zp, int(totals[5]))
    return finish_train(plan, bit_order, layout, planes, sign_plane, spikes), vth


def _encode_torch(
    x: Any,
    k: float,
    scheme: str,
    T: int | None,
    layout: str,
    bit_order: str,
    vth_min: float,
    vth_max: float,
    return_counts: bool,
    options: dict[str, Any],
) -> tuple[SpikeTrain, Any] | tuple[SpikeTrain, Any, Any]:
    from spikecode.encoders.codec import encode
    from spikecode.nn import functional as F

    counts, vth = F.adaptive_counts(x, k, vth_min=vth_min, vth_max=vth_max)
    train = encode(counts, scheme, T, bit_order=bit_order, layout=layout, **options)
    return (train, vth, counts) if return_counts else (train, vth)
