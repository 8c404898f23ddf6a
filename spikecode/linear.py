"""The spike-driven linear layer of SPEC §4, event by event or bit-plane by bit-plane.

With a train ``s_t`` of counts ``c``, INT8 weights ``W_q`` and per-output (or
per-output-and-group) scales ``σ``::

    y = Vth · Σ_g σ_g · Σ_t w_t · (W_q,g s_t) + b  =  Vth · Σ_g σ_g · (W_q,g c) + b

Each ``W_q s_t`` with ``s_t`` in {-1, 0, 1} is a sum of the weight columns its spikes
select: one addition (or subtraction) per spike and output, no multiplication. The
step weight ``w_t`` is 1 (binary, ternary) or a power of two (bitwise: a shift).

A train in the events layout is accumulated spike by spike; one in the planes layout
bit-serially — per plane, the weight columns its set bits select are summed (sign bit
set: subtracted) — with the same integer result and the same number of additions.

Groups: the released W8ASpike checkpoints scale weights per output row *and* per group
of 128 input columns (``weight_quantizer.scales`` of shape ``[out, in/128, 1]``), so the
integer accumulation is kept per group and the float rescale happens once per group.

Zero points: a train of an unsigned code with ``zero_point = z`` carries ``c - z``; the
layer adds ``z · Σ_in W_q`` back as a constant per output, folded in like the bias (it
costs no per-spike addition and is not counted in :attr:`SpikeLinearResult.additions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spikecode._validate import to_numpy
from spikecode.encoders import _kernels, _plane_kernels
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError

__all__ = ["SpikeLinearResult", "spike_linear"]


@dataclass(frozen=True)
class SpikeLinearResult:
    """Output of :func:`spike_linear`.

    Attributes
    ----------
    output
        float64 ``[*train.shape[:-1], out]``: ``Vth · Σ_g σ_g acc_g + b``.
    accumulator
        int64 ``[*train.shape[:-1], groups, out]``: the exact integer ``W_q,g c`` per group.
    additions
        Integer additions performed: spikes x output features.
    """

    output: np.ndarray
    accumulator: np.ndarray
    additions: int


def _scales_2d(scales: Any, out_features: int, in_features: int) -> np.ndarray:
    s = to_numpy(scales, "scales").astype(np.float64)
    if s.ndim == 3 and s.shape[2] == 1:  # the release's [out, in/128, 1] buffer
        s = s[:, :, 0]
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != out_features:
        raise SpikecodeError(
            "scales must have shape [out], [out, groups] or [out, groups, 1]",
            shape=s.shape,
            out_features=out_features,
        )
    groups = s.shape[1]
    if in_features % groups:
        raise SpikecodeError(
            f"{groups} scale groups do not divide {in_features} input features", shape=s.shape
        )
    if not np.all(np.isfinite(s)):
        raise SpikecodeError("scales contain NaN or Inf", shape=s.shape)
    return s


def spike_linear(
    train: SpikeTrain,
    weight_q: Any,
    scales: Any,
    vth: Any,
    bias: Any = None,
) -> SpikeLinearResult:
    """Apply an INT8 linear layer to a spike train by accumulating weights per spike.

    Parameters
    ----------
    train
        Spike train of the layer's input counts, shape ``[..., in]``, in either layout.
    weight_q
        int8 weights ``[out, in]``.
    scales
        Per-row ``[out]`` or per-group ``[out, groups]`` (also ``[out, groups, 1]``)
        weight scales ``σ``.
    vth
        The input's threshold: a scalar or one per row (``train.shape[:-1]``).
    bias
        Optional float bias ``[out]``.

    Returns
    -------
    SpikeLinearResult
        Float output, the exact integer accumulator and the number of additions. The
        accumulator equals the dense ``W_q,g c`` exactly (SPEC §4).
    """
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"spike_linear expects a SpikeTrain, not {type(train).__name__}")
    w = to_numpy(weight_q, "weight_q")
    if w.dtype != np.int8 or w.ndim != 2:
        raise SpikecodeError("weight_q must be a 2-D int8 array [out, in]", shape=w.shape)
    out_features, in_features = w.shape
    if in_features != train.features:
        raise SpikecodeError(
            f"weight has {in_features} input features but the train has {train.features}",
            shape=w.shape,
        )
    s = _scales_2d(scales, out_features, in_features)
    groups = s.shape[1]
    lead = train.shape[:-1]
    v = to_numpy(vth, "vth").astype(np.float64)
    if v.ndim == 0:
        v = np.full(train.rows, float(v))
    elif v.shape != lead:
        raise SpikecodeError("vth must be a scalar or have shape train.shape[:-1]", shape=v.shape)
    b = None
    if bias is not None:
        b = to_numpy(bias, "bias").astype(np.float64)
        if b.shape != (out_features,):
            raise SpikecodeError(f"bias must have shape [{out_features}]", shape=b.shape)

    acc = np.zeros((train.rows, groups, out_features), dtype=np.int64)
    weight_t = np.ascontiguousarray(w.T)
    if train.layout == "planes":
        sign = train.sign_plane
        _plane_kernels.spike_linear_planes(
            train.planes,
            np.zeros((0, train.planes.shape[2]), np.uint8) if sign is None else sign,
            train.step_weights,
            in_features // groups,
            weight_t,
            acc,
        )
    else:
        _kernels.spike_linear_rows(
            train.feature,
            train.signs,
            train.step_ptr,
            train.step_weights,
            in_features // groups,
            weight_t,
            acc,
        )
    if train.zero_point:
        per_group = w.astype(np.int64).reshape(out_features, groups, -1).sum(axis=2)
        acc += train.zero_point * per_group.T[None]
    y = v.reshape(-1, 1) * np.einsum("rgo,og->ro", acc.astype(np.float64), s)
    if b is not None:
        y = y + b
    return SpikeLinearResult(
        output=y.reshape((*lead, out_features)),
        accumulator=acc.reshape((*lead, groups, out_features)),
        additions=train.n_spikes * out_features,
    )
