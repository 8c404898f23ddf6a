"""Plain NumPy oracles for the Numba kernels (private; used by the tests).

Each function states its formula the obvious way — whole-array NumPy, a loop over time
steps at most — so that it can be read against SPEC and trusted. They are slow and
allocate dense trains; the kernels in :mod:`spikecode.encoders._kernels` must agree
with them exactly.
"""

from __future__ import annotations

import numpy as np

from spikecode._constants import SUM_LANES
from spikecode.encoders.schemes import Scheme


def abs_sum(x: np.ndarray) -> np.ndarray:
    """SPEC §2's ``sum|x|`` over the last axis in float64, in its one order.

    Zero-pad the row to whole blocks of ``SUM_LANES``; lane ``l`` is the running sum,
    block after block, of the blocks' element ``l``; the lanes are then folded in halves
    (``lane[:h] + lane[h:2h]``, h = SUM_LANES/2, …, 1). Padding adds +0.0 (exact).
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    blocks = -(-a.shape[-1] // SUM_LANES)
    padded = np.zeros((*a.shape[:-1], blocks * SUM_LANES))
    padded[..., : a.shape[-1]] = a
    padded = padded.reshape(*a.shape[:-1], blocks, SUM_LANES)
    lanes = np.zeros((*a.shape[:-1], SUM_LANES))
    for b in range(blocks):
        lanes = lanes + padded[..., b, :]
    h = SUM_LANES // 2
    while h >= 1:
        lanes = lanes[..., :h] + lanes[..., h : 2 * h]
        h //= 2
    return lanes[..., 0]


def adaptive_counts(
    x: np.ndarray, k: float, vth_min: float = 1e-5, vth_max: float = 1e4
) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §2: ``Vth = clip(mean|x| / k)``, ``c = round(x / Vth)`` (float64 mean)."""
    compute = np.float64 if x.dtype == np.float64 else np.float32
    xc = x.astype(compute)
    mean = abs_sum(x) / x.shape[-1]
    vth = np.clip(mean / k, vth_min, vth_max).astype(compute)
    counts = np.rint(xc / vth[..., None]).astype(np.int32)
    return counts, vth


def dense_train(
    counts: np.ndarray, scheme: Scheme, T: int, zero_point: int = 0, bit_order: str = "msb"
) -> np.ndarray:
    """SPEC §3 by definition: the int8 train ``[T, *counts.shape]``."""
    v = counts.astype(np.int64) - zero_point
    dense = np.zeros((T, *counts.shape), dtype=np.int8)
    if not scheme.bitwise:
        for t in range(T):
            dense[t] = np.sign(v) * (np.abs(v) > t)
        return dense
    if scheme.twos_complement:
        magnitude, sign = np.mod(v, 1 << T), np.ones_like(v)
    else:
        magnitude, sign = np.abs(v), np.sign(v)
    for b in range(T):
        t = T - 1 - b if bit_order == "msb" else b
        dense[t] = sign * ((magnitude >> b) & 1)
    return dense


def events_from_dense(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical events ``(t, index, polarity)`` ordered by (row, step, feature)."""
    T = dense.shape[0]
    features = dense.shape[-1] if dense.ndim > 1 else 1
    per_row = dense.reshape(T, -1, features).transpose(1, 0, 2)  # [rows, T, features]
    rows, t, cols = np.nonzero(per_row)
    index = rows.astype(np.int64) * features + cols
    return t.astype(np.int32), index, per_row[rows, t, cols].astype(np.int8)


def decode_dense(dense: np.ndarray, weights: np.ndarray, zero_point: int = 0) -> np.ndarray:
    """``zero_point + Σ_t w_t s_t``."""
    return zero_point + np.tensordot(weights, dense.astype(np.int64), axes=(0, 0))


def bit_length(m: np.ndarray) -> np.ndarray:
    """Number of binary digits of non-negative integers (0 -> 0)."""
    m = np.asarray(m, dtype=np.int64)
    out = np.zeros(m.shape, dtype=np.int64)
    while np.any(m):
        out += m > 0
        m = m >> 1
    return out


def spike_statistics(
    counts: np.ndarray,
    scheme: Scheme,
    T: int,
    zero_point: int = 0,
    window: int = 3,
) -> dict[str, int]:
    """SPEC §5's integer totals, from the dense train and per-element lengths."""
    dense = dense_train(counts, scheme, T, zero_point)
    spikes_per = np.abs(dense).sum(axis=0, dtype=np.int64)
    v = counts.astype(np.int64) - zero_point
    if not scheme.bitwise:
        length = np.abs(v)
    elif scheme.twos_complement:
        length = bit_length(np.where(v >= 0, v, -v - 1)) + 1
    else:
        length = bit_length(np.abs(v))
    occupied = (np.maximum(length, 1) + window - 1) // window * window
    if scheme.twos_complement:
        window_spikes = np.array(
            [
                bin(int(val) % (1 << int(w))).count("1")
                for val, w in zip(v.ravel(), occupied.ravel(), strict=True)
            ]
        )
    else:
        window_spikes = spikes_per
    return {
        "elements": int(counts.size),
        "spikes": int(spikes_per.sum()),
        "silent": int((spikes_per == 0).sum()),
        "within_7": int((np.abs(counts) <= 7).sum()),
        "window_spikes": int(window_spikes.sum()),
        "window_steps": int(occupied.sum()),
    }


def spike_linear(
    counts: np.ndarray,
    weight_q: np.ndarray,
    scales: np.ndarray,
    vth: np.ndarray,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §4 dense: integer ``W_q c`` per group, then ``Vth · Σ_g σ_g acc_g + b``.

    ``scales`` has shape ``[out, groups]``; returns ``(acc [rows, groups, out], y)``.
    """
    in_features = weight_q.shape[1]
    groups = scales.shape[1]
    size = in_features // groups
    c = counts.reshape(-1, in_features).astype(np.int64)
    w = weight_q.astype(np.int64)
    acc = np.stack(
        [
            c[:, g * size : (g + 1) * size] @ w[:, g * size : (g + 1) * size].T
            for g in range(groups)
        ],
        axis=1,
    )
    y = vth.reshape(-1, 1).astype(np.float64) * np.einsum(
        "rgo,og->ro", acc.astype(np.float64), scales.astype(np.float64)
    )
    if bias is not None:
        y = y + bias.astype(np.float64)
    return acc, y


def planes_from_dense(dense: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The planes layout by definition: ``np.packbits`` (little bit order) of the dense train.

    Returns ``(planes [T, rows, ceil(F/8)], sign_plane [rows, ceil(F/8)] or None)``; a sign
    bit is set where the element has a -1 spike.
    """
    T, features = dense.shape[0], dense.shape[-1]
    per_row = dense.reshape(T, -1, features)
    planes = np.packbits(per_row != 0, axis=-1, bitorder="little")
    if not signed:
        return planes, None
    return planes, np.packbits((per_row < 0).any(axis=0), axis=-1, bitorder="little")
