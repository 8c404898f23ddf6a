"""Numba kernels of the packed bit-plane layout (private).

A train in the planes layout is ``planes`` uint8 ``[T, rows, ceil(F / 8)]`` plus, for the
codes that emit -1 (ternary, bitwise-bidirectional), a ``sign_plane`` uint8
``[rows, ceil(F / 8)]``. Bit ``i`` (value ``1 << i``) of byte ``j`` is feature ``8 j + i``,
the order of ``np.packbits(..., bitorder="little")``; padding bits past the last
feature are 0. A sign bit is 1 where the element's spikes are -1 (the sign of a count is
the same at every step under both signed codes) and 0 elsewhere, silent elements included.

Encoding works on groups of eight features: the eight values' bytes (their bits 8c..8c+7
for the bitwise codes, the thermometer ``min(max(|v| - 8c, 0), 8)`` ones for
binary/ternary) are packed into one 64-bit word and transposed as an 8 x 8 bit matrix
(three shift-and-mask rounds), which yields the eight steps' plane bytes at once. Every
kernel also counts the spikes of each (row, step) from the bytes it writes, so the event
offsets and the size of either layout are known without another pass.

Each kernel has a plain NumPy twin in :mod:`spikecode.encoders._reference` (dense train,
``np.packbits``) that the tests compare it with.
"""

from __future__ import annotations

import numpy as np

from spikecode._numba import inline_helper, kernel, prange
from spikecode.encoders._kernels import _SET_BIT_COUNT, _SET_BIT_LANES, _magnitude
from spikecode.encoders.schemes import TERNARY, TWOS


@inline_helper
def _transpose8(x):
    """Transpose the 8 x 8 bit matrix held in the bytes of ``x``.

    Byte ``b`` of the result holds bit ``b`` of each input byte ``l`` at bit ``l``.
    (Arithmetic shifts are harmless: every mask clears the bits they fill.)
    """
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AA
    x = x ^ t ^ (t << 7)
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCC
    x = x ^ t ^ (t << 14)
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0
    return x ^ t ^ (t << 28)


@inline_helper
def _emit_group(m8, lanes, unary, T, msb, planes, i, g, step_counts):
    """Write the plane bytes of one group of ``lanes`` <= 8 magnitudes ``m8``."""
    top = np.int64(0)
    for lane in range(lanes):
        if unary:
            top = max(top, m8[lane])
        else:
            top |= m8[lane]
    if top == 0:
        return
    chunks = (top + 7) // 8 if unary else (T + 7) // 8
    for c in range(chunks):
        x = np.int64(0)
        for lane in range(lanes):
            if unary:
                n = min(max(m8[lane] - 8 * c, 0), 8)
                byte = (np.int64(1) << n) - 1
            else:
                byte = (m8[lane] >> (8 * c)) & 255
            x |= byte << (8 * lane)
        if x == 0:
            continue
        x = _transpose8(x)
        for kk in range(min(8, T - 8 * c)):
            byte = (x >> (8 * kk)) & 255
            if byte != 0:
                b = 8 * c + kk
                t = T - 1 - b if (msb and not unary) else b
                planes[t, i, g] = byte
                step_counts[i, t] += _SET_BIT_COUNT[byte]


@inline_helper
def _value_magnitude(v, code, T):
    """What the planes of value ``v`` spell: ``|v|`` (unary: the number of spikes) or bits."""
    if code <= TERNARY:
        return v if v >= 0 else -v
    return _magnitude(v, code, T)


@kernel(
    "void(int32[:, ::1], int64, int64, int64, boolean, uint8[:, :, ::1], uint8[:, ::1],"
    " int64[:, ::1])"
)
def counts_planes(
    counts, code, T, zero_point, msb, planes, sign_plane, step_counts
):  # pragma: no cover - jit
    """Counts -> zeroed ``planes`` (and ``sign_plane`` when it has rows); spikes per step."""
    rows, cols = counts.shape
    unary = code <= TERNARY
    signed = sign_plane.shape[0] > 0
    groups = (cols + 7) // 8
    for i in prange(rows):
        m8 = np.zeros(8, dtype=np.int64)
        for g in range(groups):
            j0 = g * 8
            lanes = min(8, cols - j0)
            sbyte = 0
            for lane in range(lanes):
                v = np.int64(counts[i, j0 + lane]) - zero_point
                m8[lane] = _value_magnitude(v, code, T)
                if v < 0 and code != TWOS:
                    sbyte |= 1 << lane
            if signed:
                sign_plane[i, g] = sbyte
            _emit_group(m8, lanes, unary, T, msb, planes, i, g, step_counts)


@kernel(
    "float64[:, ::1](float32[:, ::1], float64, float64, float64, float32[::1])",
    "float64[:, ::1](float64[:, ::1], float64, float64, float64, float64[::1])",
)
def row_thresholds(x, k, vth_min, vth_max, vth):  # pragma: no cover - jit
    """Pass 1 of the fused encoding: Vth per row and the row's smallest and largest count.

    The sum of |x| runs in float64 in the order of ``_kernels.adaptive_counts`` (so Vth is
    the same to the last bit). Division and rounding are monotonic, so the extreme counts
    are ``rint(min x / Vth)`` and ``rint(max x / Vth)``. Returns per row
    ``[non_finite, min count, max count]``.
    """
    rows, cols = x.shape
    out = np.zeros((rows, 3), dtype=np.float64)
    for i in prange(rows):
        total = 0.0
        low = x[i, 0]
        high = x[i, 0]
        for j in range(cols):
            a = x[i, j]
            total += abs(np.float64(a))
            low = min(low, a)
            high = max(high, a)
        if not np.isfinite(total):
            out[i, 0] = 1.0
            vth[i] = np.nan
            continue
        vth[i] = min(max(total / cols / k, vth_min), vth_max)
        v = vth[i]
        out[i, 1] = np.rint(low / v)
        out[i, 2] = np.rint(high / v)
    return out


@kernel(
    *(
        f"int64[::1]({dtype}[:, ::1], {dtype}[::1], float64, float64, int64, int64, int64,"
        " boolean, uint8[:, :, ::1], uint8[:, ::1], int64[:, ::1], int32[:, ::1])"
        for dtype in ("float32", "float64")
    )
)
def float_planes(
    x, vth, lo, hi, code, T, zero_point, msb, planes, sign_plane, step_counts, counts
):  # pragma: no cover - jit
    """Pass 2: ``round(x / Vth)`` clipped to ``[lo, hi]`` straight into planes.

    The counts are those of ``_kernels.adaptive_counts`` (same dtype, division and
    rounding); they are stored (before saturation) only when ``counts`` has rows.
    Returns how many values were clipped per row.
    """
    rows, cols = x.shape
    unary = code <= TERNARY
    signed = sign_plane.shape[0] > 0
    groups = (cols + 7) // 8
    clipped = np.zeros(rows, dtype=np.int64)
    keep = counts.shape[0] > 0
    for i in prange(rows):
        m8 = np.zeros(8, dtype=np.int64)
        v_row = vth[i]
        n_clipped = 0
        for g in range(groups):
            j0 = g * 8
            lanes = min(8, cols - j0)
            sbyte = 0
            for lane in range(lanes):
                q = np.rint(x[i, j0 + lane] / v_row)
                if keep:
                    counts[i, j0 + lane] = np.int32(q)
                if q > hi:
                    q = hi
                    n_clipped += 1
                elif q < lo:
                    q = lo
                    n_clipped += 1
                v = np.int64(q) - zero_point
                m8[lane] = _value_magnitude(v, code, T)
                if v < 0 and code != TWOS:
                    sbyte |= 1 << lane
            if signed:
                sign_plane[i, g] = sbyte
            _emit_group(m8, lanes, unary, T, msb, planes, i, g, step_counts)
        clipped[i] = n_clipped
    return clipped


_FEATURE_DTYPES = ("uint16", "int32")


@kernel(
    *(
        f"void(uint8[:, :, ::1], uint8[:, ::1], int64[::1], {feature}[::1], int8[::1])"
        for feature in _FEATURE_DTYPES
    )
)
def planes_to_events(planes, sign_plane, step_ptr, feature_out, polarity_out):  # pragma: no cover
    """Planes -> events in canonical (row, step, feature) order at offsets ``step_ptr``.

    ``polarity_out`` is empty for the codes without -1 spikes.
    """
    T, rows, groups = planes.shape
    signed = polarity_out.shape[0] > 0
    for i in prange(rows):
        for t in range(T):
            pos = step_ptr[i * T + t]
            for g in range(groups):
                byte = planes[t, i, g]
                if byte == 0:
                    continue
                sbyte = sign_plane[i, g] if signed else 0
                for r in range(_SET_BIT_COUNT[byte]):
                    lane = _SET_BIT_LANES[byte, r]
                    feature_out[pos] = g * 8 + lane
                    if signed:
                        polarity_out[pos] = -1 if (sbyte >> lane) & 1 else 1
                    pos += 1


@kernel(
    *(
        f"int64[::1]({feature}[::1], int8[::1], int64[::1], uint8[:, :, ::1], uint8[:, ::1])"
        for feature in _FEATURE_DTYPES
    )
)
def events_to_planes(feature, polarity, step_ptr, planes, sign_plane):  # pragma: no cover - jit
    """Events -> zeroed planes; returns per row 1 where an element fires both +1 and -1."""
    T, rows, groups = planes.shape
    signed = polarity.shape[0] > 0
    conflict = np.zeros(rows, dtype=np.int64)
    for i in prange(rows):
        positive = np.zeros(groups, dtype=np.uint8)
        for t in range(T):
            for e in range(step_ptr[i * T + t], step_ptr[i * T + t + 1]):
                f = np.int64(feature[e])
                bit = np.uint8(1 << (f & 7))
                planes[t, i, f >> 3] |= bit
                if signed:
                    if polarity[e] < 0:
                        sign_plane[i, f >> 3] |= bit
                    else:
                        positive[f >> 3] |= bit
        if signed:
            for g in range(groups):
                if positive[g] & sign_plane[i, g]:
                    conflict[i] = 1
    return conflict


@kernel("void(uint8[:, :, ::1], uint8[:, ::1], int64[::1], int64, int64[:, ::1])")
def decode_planes(planes, sign_plane, weights, zero_point, counts):  # pragma: no cover - jit
    """``zero_point + sign · Σ_t w_t bit_t`` per element, one row per thread."""
    T, rows, groups = planes.shape
    cols = counts.shape[1]
    signed = sign_plane.shape[0] > 0
    for i in prange(rows):
        acc = np.zeros(groups * 8, dtype=np.int64)
        for t in range(T):
            w = weights[t]
            for g in range(groups):
                byte = planes[t, i, g]
                for r in range(_SET_BIT_COUNT[byte]):
                    acc[g * 8 + _SET_BIT_LANES[byte, r]] += w
        for j in range(cols):
            negative = False
            if signed:
                negative = (sign_plane[i, j >> 3] >> (j & 7)) & 1 == 1
            counts[i, j] = zero_point + (-acc[j] if negative else acc[j])


@kernel("void(uint8[:, :, ::1], uint8[:, ::1], int64[::1], int64, int8[:, ::1], int64[:, :, ::1])")
def spike_linear_planes(
    planes, sign_plane, weights, group_size, weight_t, acc
):  # pragma: no cover - jit
    """Bit-serial SPEC §4: per plane, the weight rows its set bits select, summed.

    For each step every set bit adds (sign bit set: subtracts) the selected row
    ``weight_t[feature]`` of the transposed INT8 weight ``[in, out]`` into the step's
    partial sum — one addition per (spike x output) — and the partial is folded in with
    the step weight. ``acc`` has shape ``[rows, groups, out]``.
    """
    T, rows, n_bytes = planes.shape
    _, groups, outs = acc.shape
    signed = sign_plane.shape[0] > 0
    for i in prange(rows):
        step = np.zeros((groups, outs), dtype=np.int64)
        for t in range(T):
            step[:, :] = 0
            fired = False
            for gb in range(n_bytes):
                byte = planes[t, i, gb]
                if byte == 0:
                    continue
                fired = True
                sbyte = sign_plane[i, gb] if signed else 0
                for r in range(_SET_BIT_COUNT[byte]):
                    lane = _SET_BIT_LANES[byte, r]
                    j = np.int64(gb * 8 + lane)
                    g = j // group_size
                    if (sbyte >> lane) & 1:
                        for o in range(outs):
                            step[g, o] -= weight_t[j, o]
                    else:
                        for o in range(outs):
                            step[g, o] += weight_t[j, o]
            if not fired:
                continue
            w = weights[t]
            for g in range(groups):
                for o in range(outs):
                    acc[i, g, o] += w * step[g, o]
