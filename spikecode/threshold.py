"""Step 1 of SPEC §2: float activations -> integer spike counts.

Adaptive threshold, per token (features on the last axis)::

    Vth   = clip(mean(|x|) / k, vth_min, vth_max)      (report eq. 19 / 25)
    count = round(x / Vth)                             (report eq. 21)

Numerics (the same for NumPy, Numba and PyTorch, so all paths agree bit for bit):
the compute dtype is float64 for float64 input and float32 otherwise (float16 and
bfloat16 are upcast exactly); ``mean(|x|)`` is accumulated in float64 and ``Vth`` is
computed in float64, then cast to the compute dtype; the division and the rounding
(half to even) run in the compute dtype; counts are int32. For float32/16/bfloat16
input the threshold is the same to the last bit on every path, float64 input included: every path
forms ``sum|x|`` in one order (64 float64 lanes, folded in halves; SPEC §2).

NumPy input and CPU torch tensors run through a fused Numba kernel (a contiguous
float32/float64 tensor without a copy; float16/bfloat16 are upcast to float32 once);
tensors on other devices stay there and run through
:func:`spikecode.nn.functional.adaptive_counts`, whose sum of ``|x|`` follows the same
order (SPEC §2), so every path gives the same counts and thresholds bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode._constants import VTH_MAX, VTH_MIN
from spikecode._validate import (
    INT32_MAX,
    INT32_MIN,
    check_tensor,
    float_rows,
    is_torch,
    positive_finite,
    refuse_nonfinite_rows,
    threshold_options,
    to_numpy,
)
from spikecode.errors import SpikecodeError

__all__ = ["adaptive_counts", "clip_counts", "fixed_counts"]


def _clip_bounds(clip: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if clip is None:
        return None
    if isinstance(clip, int | np.integer) and not isinstance(clip, bool):
        if clip < 0:
            raise SpikecodeError(f"clip must be >= 0, not {clip}")
        return -int(clip), int(clip)
    try:
        low, high = (int(v) for v in clip)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise SpikecodeError(f"clip must be an int M or a (low, high) pair, not {clip!r}") from None
    if low > high:
        raise SpikecodeError(f"clip range is empty: low {low} > high {high}")
    return low, high


def adaptive_counts(
    x: Any,
    k: float = 3.0,
    *,
    clip: int | tuple[int, int] | None = None,
    vth_min: float = VTH_MIN,
    vth_max: float = VTH_MAX,
    return_clipped: bool = False,
) -> tuple[Any, Any] | tuple[Any, Any, int]:
    """Turn float activations into integer spike counts with the adaptive threshold.

    Parameters
    ----------
    x
        Activations, features on the last axis, any leading shape. NumPy (float16,
        float32, float64) or a torch tensor (also bfloat16, any device).
    k
        Firing-rate knob, ``> 0``: larger k, lower threshold, larger counts (SPEC §2;
        the report's default is 3).
    clip
        Optional clipping of the counts: ``M`` for ``[-M, M]`` or a ``(low, high)``
        pair. How many values were clipped is returned with ``return_clipped=True``.
    vth_min, vth_max
        Clamp of the threshold (the released code uses ``[1e-5, 1e4]``), so an all-zero
        token gets ``Vth = vth_min`` and counts 0.
    return_clipped
        Also return the number of clipped values.

    Returns
    -------
    counts
        int32, same shape as ``x`` (NumPy array, or torch tensor on ``x``'s device).
    vth
        Per-token threshold, shape ``x.shape[:-1]``, in the compute dtype.
    clipped
        Number of counts moved into the clip range (only with ``return_clipped``).

    Raises
    ------
    SpikecodeError
        Non-float or empty input, NaN/Inf, ``k <= 0``, a bad clamp, or counts beyond
        int32 without clipping.

    Examples
    --------
    >>> import numpy as np
    >>> counts, vth = adaptive_counts(np.array([[0.5, -1.0, 2.0, 0.0]], np.float32), k=2)
    >>> counts.tolist(), vth.tolist()
    ([[1, -2, 5, 0]], [0.4375])
    """
    k, vth_min, vth_max = threshold_options(k, vth_min, vth_max)
    bounds = _clip_bounds(clip)
    if is_torch(x):
        if x.device.type != "cpu":
            return _adaptive_counts_torch(x, k, bounds, vth_min, vth_max, return_clipped)
        # A CPU tensor takes the Numba kernel: float32/float64 through a zero-copy NumPy
        # view, float16/bfloat16 upcast once (exactly) to float32; results wrap back.
        import torch

        counts, vth, clipped = _adaptive_counts_numpy(x, k, bounds, vth_min, vth_max)
        counts, vth = torch.from_numpy(counts), torch.from_numpy(np.asarray(vth))
        return (counts, vth, clipped) if return_clipped else (counts, vth)
    counts, vth, clipped = _adaptive_counts_numpy(x, k, bounds, vth_min, vth_max)
    return (counts, vth, clipped) if return_clipped else (counts, vth)


def _adaptive_counts_numpy(
    x: Any, k: float, bounds: tuple[int, int] | None, vth_min: float, vth_max: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """The Numba path of :func:`adaptive_counts`: ``(counts, vth, clipped)``."""
    from spikecode.encoders import _kernels

    rows, shape = float_rows(x)
    low, high = bounds if bounds is not None else (INT32_MIN, INT32_MAX)
    counts = np.empty(rows.shape, dtype=np.int32)
    vth = np.empty(rows.shape[0], dtype=rows.dtype)
    flags = _kernels.adaptive_counts(
        rows, k, vth_min, vth_max, float(low), float(high), counts, vth
    )
    refuse_nonfinite_rows(rows, flags[:, 1], shape)
    clipped = int(flags[:, 0].sum())
    if bounds is None and clipped:
        raise SpikecodeError(
            f"{clipped} count(s) overflow int32 (k={k} is too large for these activations)",
            shape=shape,
        )
    return counts.reshape(shape), vth.reshape(shape[:-1]), clipped


def _adaptive_counts_torch(
    x: Any,
    k: float,
    bounds: tuple[int, int] | None,
    vth_min: float,
    vth_max: float,
    return_clipped: bool,
) -> tuple[Any, Any] | tuple[Any, Any, int]:
    from spikecode.nn import functional as F

    counts, vth = F.adaptive_counts(x, k, vth_min=vth_min, vth_max=vth_max)
    clipped = 0
    if bounds is not None:
        outside = (counts < bounds[0]) | (counts > bounds[1])
        clipped = int(outside.sum())
        counts = counts.clamp(bounds[0], bounds[1])
    return (counts, vth, clipped) if return_clipped else (counts, vth)


def clip_counts(counts: Any, clip: int | tuple[int, int]) -> tuple[Any, int]:
    """Clip integer counts into ``[-M, M]`` or ``[low, high]``.

    Returns
    -------
    (counts, clipped)
        The clipped counts (same type and dtype as the input) and how many values moved.
    """
    low, high = _clip_bounds(clip)  # type: ignore[misc]
    if is_torch(counts):
        import torch

        check_tensor(counts, "counts")
        if counts.dtype.is_complex or counts.dtype == torch.bool:
            raise SpikecodeError(f"counts must be numbers, not {counts.dtype}")
        if counts.dtype.is_floating_point and bool(counts.isnan().any()):
            raise SpikecodeError("counts contain NaN", shape=tuple(counts.shape))
        outside = int(((counts < low) | (counts > high)).sum())
        return counts.clamp(low, high), outside
    a = to_numpy(counts, "counts")
    if a.dtype.kind not in "iuf":
        raise SpikecodeError(
            f"counts must be an integer or float array, not {a.dtype}", shape=a.shape
        )
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise SpikecodeError("counts contain NaN", shape=a.shape)
    outside = int(np.count_nonzero((a < low) | (a > high)))
    return np.clip(a, low, high).astype(a.dtype, copy=False), outside


def fixed_counts(x: Any, vth: float, *, clip: int | tuple[int, int] | None = None) -> Any:
    """The fixed-threshold baseline the report argues against: ``round(x / Vth)``.

    One threshold for every token and channel (SPEC §2, last bullet), with the same
    numerics as :func:`adaptive_counts`. Returns int32 counts of ``x``'s shape and type.
    """
    vth = positive_finite(vth, "vth")
    if is_torch(x):
        from spikecode.nn import functional as F

        counts = F.fixed_counts(x, vth)
        return counts if clip is None else clip_counts(counts, clip)[0]
    rows, shape = float_rows(x)
    if not np.all(np.isfinite(rows)):
        raise SpikecodeError("activations contain NaN or Inf", shape=shape)
    q = np.rint(rows / rows.dtype.type(vth))
    bounds = _clip_bounds(clip)
    if bounds is not None:
        q = np.clip(q, *bounds)
    elif q.min() < INT32_MIN or q.max() > INT32_MAX:
        raise SpikecodeError(f"counts overflow int32 at vth={vth}", shape=shape)
    return q.astype(np.int32).reshape(shape)
