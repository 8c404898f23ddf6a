"""Spike coding on torch tensors: adaptive-threshold counts, STE fake-quant, W8ASpike linear.

Pure functions on :class:`torch.Tensor` (any device, any leading shape, features on the
last axis). They follow the package-wide numerics of Step 1 (SPEC §2):

- the *compute dtype* is float64 for float64 input and float32 otherwise (float16 and
  bfloat16 are upcast, exactly);
- ``mean(|x|)`` over the last axis is accumulated in float64, ``Vth = clip(mean / k,
  vth_min, vth_max)`` is formed in float64 and then cast to the compute dtype;
- ``counts = round(x / Vth)`` is taken in the compute dtype with round-half-to-even and
  stored as int32.

Every scalar that takes part in a division is turned into a tensor on the data's device
first: CUDA divides a tensor by a *Python* scalar as a multiplication by its reciprocal,
which can differ from the IEEE quotient in the last bit and would make GPU counts disagree
with CPU counts.

INT8 weights follow SPEC §4: symmetric, ``scale = max|w| / 127`` per output row or per
group of input columns.
"""

from __future__ import annotations

import torch

from spikecode._constants import SUM_LANES, VTH_MAX, VTH_MIN, auto_group_size
from spikecode._validate import (
    INT32_MAX,
    INT32_MIN,
    check_nonempty,
    check_tensor,
    positive_finite,
)
from spikecode.errors import SpikecodeError

__all__ = [
    "VTH_MAX",
    "VTH_MIN",
    "abs_sum",
    "adaptive_counts",
    "adaptive_threshold",
    "auto_group_size",
    "check_k",
    "dequantize_weight_int8",
    "fake_quantize_release_weight",
    "fixed_counts",
    "quantize_weight_int8",
    "release_weight_to_int8",
    "spike_quantize",
    "w8aspike_linear",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Largest integer up to which every integer is exactly representable in float32.
_FLOAT32_EXACT = 2.0**24
_INT8_MAX = 127


# --------------------------------------------------------------------------- checks


def _check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise SpikecodeError(f"{name} must be a torch.Tensor", type=type(x).__name__)
    return check_tensor(x, name)


def _check_activation(x: object, name: str = "x") -> torch.Tensor:
    """Validate an activation tensor at a public boundary (dtype, emptiness, finiteness)."""
    x = _check_tensor(x, name)
    if x.dtype not in _FLOAT_DTYPES:
        raise SpikecodeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}",
            dtype=x.dtype,
        )
    check_nonempty(tuple(x.shape), name)
    _check_finite(x, name)
    return x


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise SpikecodeError(
            f"{name} holds {bad} non-finite value(s) (NaN or Inf) out of {x.numel()}",
            shape=tuple(x.shape),
        )


def check_k(k: object) -> float:
    """Return ``k`` as a float after checking that it is a finite number > 0.

    Parameters
    ----------
    k
        The threshold divisor of SPEC §2 (larger ``k`` → lower threshold → larger counts).

    Returns
    -------
    float
        ``k`` as a Python float.

    Raises
    ------
    SpikecodeError
        If ``k`` is not a number, not finite or not > 0.
    """
    return positive_finite(k, "k")


def _check_bounds(vth_min: object, vth_max: object) -> tuple[float, float]:
    lo = positive_finite(vth_min, "vth_min")
    hi = positive_finite(vth_max, "vth_max")
    if lo > hi:
        raise SpikecodeError(f"vth_min ({lo}) must not exceed vth_max ({hi})")
    return lo, hi


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scalar(value: float, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return ``value`` as a 0-d tensor on ``like``'s device (exact division on CUDA too)."""
    return torch.full((), value, dtype=dtype, device=like.device)


def _int32_range_max(r: torch.Tensor, what: str) -> float:
    """Return max|r| of integer-valued ``r``; raise if some value does not fit int32."""
    lo, hi = torch.aminmax(r)
    lo, hi = float(lo), float(hi)
    if hi > INT32_MAX or lo < INT32_MIN:
        # Compare with 2**31, not INT32_MAX, which float32 would round up to 2**31.
        bad = int(((r >= 2.0**31) | (r < INT32_MIN)).sum())
        raise SpikecodeError(
            f"{bad} {what} do not fit int32 (largest magnitude {max(hi, -lo):.10g}); "
            "the threshold is too small for these values",
            shape=tuple(r.shape),
        )
    return max(hi, -lo)


# --------------------------------------------------------------------------- Step 1 core


def abs_sum(x: torch.Tensor) -> torch.Tensor:
    """``sum|x|`` over the last axis in float64, in SPEC §2's one summation order.

    The same float64 value, to the last bit, as the Numba kernels and the NumPy path:
    lane ``l`` (of ``SUM_LANES = 64``) adds the elements ``j ≡ l (mod 64)`` in increasing
    ``j``, then the lanes are folded in halves (``lanes[:h] + lanes[h:2h]``, h = 32, …,
    1). Each addition is an explicit elementwise tensor operation (``torch.sum`` fixes no
    order), so the result does not depend on the device; the last block is padded with
    +0.0, which adds nothing. Differentiable.

    Parameters
    ----------
    x
        Floating tensor ``[..., features]`` (any float dtype and device).

    Returns
    -------
    torch.Tensor
        float64, shape ``x.shape[:-1]``.
    """
    a = x.abs().to(torch.float64)
    features = a.shape[-1]
    blocks = -(-features // SUM_LANES)
    if blocks * SUM_LANES != features:
        a = torch.nn.functional.pad(a, (0, blocks * SUM_LANES - features))
    a = a.reshape(*a.shape[:-1], blocks, SUM_LANES)
    lanes = a[..., 0, :]
    for b in range(1, blocks):
        lanes = lanes + a[..., b, :]
    h = SUM_LANES // 2
    while h >= 1:
        lanes = lanes[..., :h] + lanes[..., h : 2 * h]
        h //= 2
    return lanes[..., 0]


def _threshold(x: torch.Tensor, k: float, vth_min: float, vth_max: float) -> torch.Tensor:
    """Vth of validated ``x`` (SPEC §2), differentiable, in the compute dtype."""
    mean = abs_sum(x) / _scalar(float(x.shape[-1]), x, torch.float64)
    vth = torch.clamp(mean / _scalar(k, mean, torch.float64), vth_min, vth_max)
    return vth.to(_compute_dtype(x.dtype))


def _spike_counts(
    x: torch.Tensor, k: float, vth_min: float, vth_max: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Float counts with a straight-through gradient, Vth, and max|count|.

    The returned counts equal ``round(x / Vth)`` exactly in value: with ``u = x / Vth``
    and ``r = round(u)``, ``r - u`` is exact (Sterbenz: ``r/2 <= u <= 2r`` whenever
    ``r != 0``) and so is ``u + (r - u) = r``. Their gradient is that of ``u`` (STE).
    """
    vth = _threshold(x, k, vth_min, vth_max)
    u = x.to(vth.dtype) / vth.unsqueeze(-1)
    r = torch.round(u)
    max_abs = _int32_range_max(r.detach(), "counts")
    counts = u + (r - u).detach() if u.requires_grad else r
    return counts, vth, max_abs


def adaptive_threshold(
    x: torch.Tensor, k: float = 3.0, *, vth_min: float = VTH_MIN, vth_max: float = VTH_MAX
) -> torch.Tensor:
    """Compute the per-token adaptive threshold ``Vth = clip(mean|x| / k)`` (SPEC §2).

    Parameters
    ----------
    x
        Activations ``[..., features]``, float16, bfloat16, float32 or float64, finite.
    k
        Threshold divisor, finite and > 0 (report default 3, sweep 2…4).
    vth_min, vth_max
        Clamp of the threshold, ``0 < vth_min <= vth_max`` (release values 1e-5, 1e4).

    Returns
    -------
    torch.Tensor
        ``Vth`` of shape ``x.shape[:-1]`` in the compute dtype (float64 for float64 input,
        float32 otherwise), on ``x``'s device. ``mean|x|`` is accumulated and divided in
        float64 before the cast. Differentiable with respect to ``x`` (zero gradient
        where the clamp is active).

    Raises
    ------
    SpikecodeError
        For a non-floating, empty or non-finite ``x``, or bad ``k`` / clamp bounds.
    """
    x = _check_activation(x)
    k = check_k(k)
    vth_min, vth_max = _check_bounds(vth_min, vth_max)
    return _threshold(x, k, vth_min, vth_max)


def adaptive_counts(
    x: torch.Tensor, k: float = 3.0, *, vth_min: float = VTH_MIN, vth_max: float = VTH_MAX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spike counts ``round(x / Vth)`` with the adaptive threshold (SPEC §2, eqs. 19/21).

    Parameters
    ----------
    x
        Activations ``[..., features]``, float16, bfloat16, float32 or float64, finite.
    k
        Threshold divisor, finite and > 0.
    vth_min, vth_max
        Clamp of the threshold, ``0 < vth_min <= vth_max``.

    Returns
    -------
    counts : torch.Tensor
        int32, shape ``x.shape``: ``round(x_c / Vth_c)`` in the compute dtype ``c``
        (float64 for float64 input, float32 otherwise), round-half-to-even.
    vth : torch.Tensor
        Shape ``x.shape[:-1]``, compute dtype (see :func:`adaptive_threshold`).

    Raises
    ------
    SpikecodeError
        For a non-floating, empty or non-finite ``x``, bad ``k`` or clamp bounds, or
        counts that overflow int32.

    Examples
    --------
    >>> import torch
    >>> counts, vth = adaptive_counts(torch.tensor([1.0, -2.0, 3.0, 0.0]), k=2.0)
    >>> vth.item(), counts.tolist()
    (0.75, [1, -3, 4, 0])
    """
    x = _check_activation(x)
    k = check_k(k)
    vth_min, vth_max = _check_bounds(vth_min, vth_max)
    with torch.no_grad():
        counts, vth, _ = _spike_counts(x, k, vth_min, vth_max)
    return counts.to(torch.int32), vth


def fixed_counts(x: torch.Tensor, vth: float) -> torch.Tensor:
    """Spike counts ``round(x / Vth)`` with one fixed threshold for every token.

    The non-adaptive baseline the report argues against (SPEC §2): a single ``Vth``
    cannot follow tokens whose magnitudes differ by orders of magnitude.

    Parameters
    ----------
    x
        Activations ``[..., features]``, float16, bfloat16, float32 or float64, finite.
    vth
        The threshold, a finite number > 0. It is cast to the compute dtype before the
        division (float64 for float64 input, float32 otherwise).

    Returns
    -------
    torch.Tensor
        int32 counts of shape ``x.shape``, round-half-to-even.

    Raises
    ------
    SpikecodeError
        For bad ``x`` or ``vth``, or counts that overflow int32.
    """
    x = _check_activation(x)
    vth = positive_finite(vth, "vth")
    dtype = _compute_dtype(x.dtype)
    with torch.no_grad():
        r = torch.round(x.to(dtype) / _scalar(vth, x, dtype))
        _int32_range_max(r, "counts")
    return r.to(torch.int32)


def spike_quantize(
    x: torch.Tensor, k: float = 3.0, *, vth_min: float = VTH_MIN, vth_max: float = VTH_MAX
) -> torch.Tensor:
    """Fake-quantize activations to ``Vth · round(x / Vth)`` with a straight-through gradient.

    The forward value is the reconstruction ``Vth · s_INT`` of SPEC §2 (report eq. 22
    without the weights). The backward pass uses the straight-through estimator (SPEC §2):
    with ``u = x / Vth``, ``y = Vth · (u + stopgrad(round(u) − u))``, so the rounding has
    gradient one while ``Vth`` stays differentiable through ``mean|x|``. Per token, with
    ``n`` features::

        dy_j / dx_i = δ_ij + ∂Vth/∂x_i · (round(u_j) − u_j)
        ∂Vth/∂x_i   = sign(x_i) / (n·k)    (0 where the clamp is active)

    i.e. identity plus a rank-one term from the rounding residual.

    Parameters
    ----------
    x
        Activations ``[..., features]``, float16, bfloat16, float32 or float64, finite.
    k
        Threshold divisor, finite and > 0.
    vth_min, vth_max
        Clamp of the threshold, ``0 < vth_min <= vth_max``.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``: ``Vth · counts`` computed in the compute dtype
        (equal to ``vth[..., None] * counts`` from :func:`adaptive_counts`), then cast
        back to ``x.dtype``.

    Raises
    ------
    SpikecodeError
        As :func:`adaptive_counts`.
    """
    x = _check_activation(x)
    k = check_k(k)
    vth_min, vth_max = _check_bounds(vth_min, vth_max)
    counts, vth, _ = _spike_counts(x, k, vth_min, vth_max)
    return (vth.unsqueeze(-1) * counts).to(x.dtype)


# --------------------------------------------------------------------------- INT8 weights


def _check_weight(w: object, name: str = "weight") -> torch.Tensor:
    w = _check_tensor(w, name)
    if w.dtype not in _FLOAT_DTYPES:
        raise SpikecodeError(f"{name} must be a floating tensor, got {w.dtype}", dtype=w.dtype)
    if w.ndim != 2 or w.numel() == 0:
        raise SpikecodeError(
            f"{name} must be a non-empty 2-D [out_features, in_features] tensor",
            shape=tuple(w.shape),
        )
    _check_finite(w, name)
    return w


def _n_groups(in_features: int, group_size: int | None) -> int:
    if group_size is None:
        return 1
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise SpikecodeError(f"group_size must be a positive int or None, got {group_size!r}")
    if in_features % group_size:
        raise SpikecodeError(
            f"in_features ({in_features}) is not divisible by group_size ({group_size})",
            in_features=in_features,
            group_size=group_size,
        )
    return in_features // group_size


def _round_to_int8(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``round(w / scale)`` as int8; ``scales`` are float32 ``[out, n_groups]``.

    The quotient is formed in float64 from the exact float64 images of ``w`` and of the
    float32 scale that will be stored, so it is the correctly rounded ``w / σ``.
    """
    out, n_in = w.shape
    n_groups = scales.shape[1]
    q = torch.round(
        w.to(torch.float64).reshape(out, n_groups, n_in // n_groups)
        / scales.to(torch.float64).unsqueeze(-1)
    ).reshape(out, n_in)
    outside = q.abs() > _INT8_MAX
    if bool(outside.any()):
        raise SpikecodeError(
            f"{int(outside.sum())} weight(s) round outside the symmetric INT8 range "
            f"[-127, 127] with these scales (largest |w / scale| = {float(q.abs().max()):.6g})",
            shape=tuple(w.shape),
        )
    return q.to(torch.int8)


def quantize_weight_int8(
    w: torch.Tensor, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a weight matrix to symmetric INT8 (SPEC §4).

    ``scale = max|w| / 127`` per output row (``group_size=None``) or per group of
    ``group_size`` consecutive input columns (the release uses 128); ``w_q = round(w /
    scale)`` with round-half-to-even, so ``|w_q| <= 127`` (-128 is never used). A row or
    group that is entirely zero gets ``scale = 1`` so that nothing divides by zero; its
    quantized weights are 0 whatever the scale.

    Parameters
    ----------
    w
        ``[out_features, in_features]`` floating weights, finite.
    group_size
        ``None`` for one scale per output row, else a divisor of ``in_features``.

    Returns
    -------
    w_q : torch.Tensor
        int8, ``[out_features, in_features]``, on ``w``'s device.
    scales : torch.Tensor
        float32, ``[out_features, n_groups]`` (``n_groups = 1`` per row). ``max|w| / 127``
        is computed in float64 and rounded once to float32; ``w_q`` is rounded against
        that stored float32 value.

    Raises
    ------
    SpikecodeError
        For a non-2-D, non-floating or non-finite ``w``, or a ``group_size`` that does not
        divide ``in_features``.
    """
    w = _check_weight(w)
    out, n_in = w.shape
    n_groups = _n_groups(n_in, group_size)
    amax = w.abs().to(torch.float64).reshape(out, n_groups, n_in // n_groups).amax(dim=-1)
    scales = torch.where(amax > 0, amax / _scalar(_INT8_MAX, amax, torch.float64), 1.0)
    scales = scales.to(torch.float32)
    return _round_to_int8(w, scales), scales


def _check_scales(scales: object, out: int, n_in: int) -> int:
    """Validate ``[out, n_groups]`` scales for an ``[out, n_in]`` weight; return the group size."""
    scales = _check_tensor(scales, "scales")
    if scales.dtype not in _FLOAT_DTYPES or scales.ndim != 2 or scales.shape[0] != out:
        raise SpikecodeError(
            f"scales must be a floating [out_features={out}, n_groups] tensor",
            dtype=scales.dtype,
            shape=tuple(scales.shape),
        )
    n_groups = scales.shape[1]
    if n_groups == 0 or n_in % n_groups:
        raise SpikecodeError(
            f"scales has {n_groups} group(s), which does not divide in_features ({n_in})",
            shape=tuple(scales.shape),
        )
    if not bool((torch.isfinite(scales) & (scales > 0)).all()):
        raise SpikecodeError("scales must be finite and > 0", shape=tuple(scales.shape))
    return n_in // n_groups


def _check_quantized(w_q: object, scales: object) -> int:
    """Validate an INT8 weight and its scales; return the group size."""
    w_q = _check_tensor(w_q, "w_q")
    if w_q.dtype != torch.int8 or w_q.ndim != 2 or w_q.numel() == 0:
        raise SpikecodeError(
            "w_q must be a non-empty 2-D int8 tensor", dtype=w_q.dtype, shape=tuple(w_q.shape)
        )
    return _check_scales(scales, *w_q.shape)


def _dequantize(w_q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``w_q · scale``, exact in float64 (8-bit × 24-bit products), rounded once to ``dtype``."""
    out, n_in = w_q.shape
    w = w_q.to(torch.float64).reshape(out, scales.shape[1], -1) * scales.to(
        torch.float64
    ).unsqueeze(-1)
    return w.reshape(out, n_in).to(dtype)


def dequantize_weight_int8(w_q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Rebuild float weights ``w_q · scale`` from INT8 weights and their scales (SPEC §4).

    Parameters
    ----------
    w_q
        int8 ``[out_features, in_features]``.
    scales
        Floating ``[out_features, n_groups]``; the group size ``in_features / n_groups``
        follows from the shape.

    Returns
    -------
    torch.Tensor
        float32 ``[out_features, in_features]`` (each product is exact in float64 and
        rounded once to float32).

    Raises
    ------
    SpikecodeError
        For a mismatch of dtypes or shapes, or non-positive scales.
    """
    _check_quantized(w_q, scales)
    return _dequantize(w_q, scales, torch.float32)


def _release_scales(w: torch.Tensor, scales: object) -> torch.Tensor:
    """Checkpoint scales ``[out, n_groups, 1]`` (or ``[out, n_groups]``) as float32 2-D."""
    scales = _check_tensor(scales, "scales")
    if scales.ndim == 3 and scales.shape[-1] == 1:
        scales = scales.squeeze(-1)
    if scales.ndim != 2:
        raise SpikecodeError(
            "scales must have shape [out_features, n_groups, 1] (release buffer "
            "weight_quantizer.scales) or [out_features, n_groups]",
            shape=tuple(scales.shape),
        )
    _check_scales(scales, *w.shape)
    return scales.to(device=w.device, dtype=torch.float32)


def release_weight_to_int8(
    w: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 weights from a released W8ASpike checkpoint: ``w_q = round(w / scale)`` (SPEC §4).

    The release keeps the weights in bf16 next to a buffer
    ``<layer>.weight_quantizer.scales`` of shape ``[out, in/128, 1]``.

    Parameters
    ----------
    w
        ``[out_features, in_features]`` floating weights (bf16 in the release).
    scales
        ``[out_features, n_groups, 1]`` or ``[out_features, n_groups]``, finite and > 0;
        the group size is ``in_features / n_groups``.

    Returns
    -------
    w_q : torch.Tensor
        int8 ``[out_features, in_features]``.
    scales : torch.Tensor
        float32 ``[out_features, n_groups]``. The quotient ``w / scale`` is formed in
        float64 from the stored values, i.e. correctly rounded; bf16 arithmetic, if the
        release used it at run time, could round a quotient near ``m + 0.5`` the other way.

    Raises
    ------
    SpikecodeError
        For bad shapes or dtypes, or weights that round outside [-127, 127].
    """
    w = _check_weight(w)
    scales = _release_scales(w, scales)
    return _round_to_int8(w, scales), scales


def fake_quantize_release_weight(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Apply the release's run-time rule ``round(w / scale) · scale`` (SPEC §4).

    Parameters
    ----------
    w
        ``[out_features, in_features]`` floating weights (bf16 in the release).
    scales
        ``[out_features, n_groups, 1]`` or ``[out_features, n_groups]``.

    Returns
    -------
    torch.Tensor
        Weights of ``w``'s shape and dtype: the exact product ``w_q · scale`` rounded
        once to ``w.dtype`` (the same value a bf16 multiplication gives).

    Raises
    ------
    SpikecodeError
        As :func:`release_weight_to_int8`.
    """
    w_q, scales = release_weight_to_int8(w, scales)
    return _dequantize(w_q, scales, w.dtype)


# --------------------------------------------------------------------------- W8ASpike linear


def _matmul_dtype(compute: torch.dtype, bound: float) -> torch.dtype:
    """Float dtype in which integer products summing to at most ``bound`` stay exact."""
    # TF32 / bf16 matmul modes round the operands, so only full-precision float32 is exact.
    exact_fp32 = bound < _FLOAT32_EXACT and torch.get_float32_matmul_precision() == "highest"
    return torch.float32 if compute == torch.float32 and exact_fp32 else torch.float64


def w8aspike_linear(
    x: torch.Tensor,
    w_q: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: float = 3.0,
    *,
    vth_min: float = VTH_MIN,
    vth_max: float = VTH_MAX,
) -> torch.Tensor:
    """Spike-driven INT8 linear layer ``y = Vth · σ · (W_q s_INT) + b`` (SPEC §4).

    The activation is spike-coded to ``s_INT = round(x / Vth)`` (SPEC §2); per group
    ``g`` of input columns the integer products ``a_g = W_q[:, g] · s_INT[g]`` are
    accumulated **exactly** (a float matmul on integer-valued operands, in float32 when
    ``127 · group_size · max|s| < 2**24`` and float32 matmuls run at full precision, else
    in float64, exact below ``2**53``). The rescale is then, in the compute dtype::

        y = Vth · (σ_0 · a_0 + σ_1 · a_1 + … ) + b      (groups in ascending order)

    Gradients reach ``x`` through the straight-through estimator of
    :func:`spike_quantize`; the INT8 weights are constants.

    Parameters
    ----------
    x
        Activations ``[..., in_features]``, float16, bfloat16, float32 or float64, finite.
    w_q
        int8 ``[out_features, in_features]``.
    scales
        Floating ``[out_features, n_groups]``, > 0; the group size ``in_features /
        n_groups`` follows from the shape (``n_groups = 1``: per-row scales).
    bias
        Optional floating ``[out_features]``.
    k
        Threshold divisor, finite and > 0.
    vth_min, vth_max
        Clamp of the threshold.

    Returns
    -------
    torch.Tensor
        ``[..., out_features]`` in ``x.dtype`` (computed in the compute dtype).

    Raises
    ------
    SpikecodeError
        For mismatched shapes or dtypes, bad ``x``, ``k`` or bounds, or int32 overflow.
    """
    x = _check_activation(x)
    group = _check_quantized(w_q, scales)
    out, n_in = w_q.shape
    if x.shape[-1] != n_in:
        raise SpikecodeError(
            f"x has {x.shape[-1]} features but the weight expects {n_in}",
            shape=tuple(x.shape),
        )
    if bias is not None:
        bias = _check_tensor(bias, "bias")
        if bias.dtype not in _FLOAT_DTYPES or tuple(bias.shape) != (out,):
            raise SpikecodeError(
                f"bias must be a floating [{out}] tensor", dtype=bias.dtype, shape=tuple(bias.shape)
            )
    k = check_k(k)
    vth_min, vth_max = _check_bounds(vth_min, vth_max)

    counts, vth, max_abs = _spike_counts(x, k, vth_min, vth_max)
    compute = vth.dtype
    mm = _matmul_dtype(compute, _INT8_MAX * group * max_abs)
    s = counts.to(mm)
    w = w_q.to(mm)
    sigma = scales.to(compute)
    total = None
    for g in range(n_in // group):
        cols = slice(g * group, (g + 1) * group)
        term = (s[..., cols] @ w[:, cols].T).to(compute) * sigma[:, g]
        total = term if total is None else total + term
    y = vth.unsqueeze(-1) * total
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(x.dtype)
