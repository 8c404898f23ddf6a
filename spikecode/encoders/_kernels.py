"""Numba kernels for the hot paths (private).

Every kernel works on 2-D C-contiguous ``[rows, features]`` arrays of exactly the dtypes
in its signature and runs ``prange`` over rows (tokens). The public functions in
:mod:`spikecode.threshold`, :mod:`spikecode.encoders.codec`, :mod:`spikecode.stats` and
:mod:`spikecode.linear` validate and convert their input once and then call these. Each
kernel has a plain NumPy twin in :mod:`spikecode.encoders._reference` that the tests
compare it with.

Values handed to the kernels are counts *after* the zero point (``v = c - zero_point``);
``code`` is one of the integer codes of :mod:`spikecode.encoders.schemes`.

Event order (the canonical order of a :class:`~spikecode.encoders.train.SpikeTrain`):
by row, then time step, then feature — one token's spikes step by step, the order an
event-driven core consumes them. The encoding kernels produce that order directly, one
step of one row after the other, writing each output array sequentially; no sort runs.
"""

from __future__ import annotations

import numpy as np

from spikecode._constants import SUM_LANES
from spikecode._numba import inline_helper, kernel, prange
from spikecode.encoders.schemes import TERNARY, TWOS

# For every byte: how many bits are set, and at which positions (lanes), padded with 0.
_SET_BIT_COUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.int64)
_SET_BIT_LANES = np.zeros((256, 8), dtype=np.int64)
for _byte in range(256):
    _lanes = [lane for lane in range(8) if _byte >> lane & 1]
    _SET_BIT_LANES[_byte, : len(_lanes)] = _lanes
del _byte, _lanes


@inline_helper
def _fold_lanes(acc, n):
    """Fold the SUM_LANES partial sums of an ``n``-element row in halves (SPEC §2).

    ``acc[l] += acc[l + h]`` for ``h = SUM_LANES/2, …, 1``; folds whose upper lanes lie
    past the row's end only add +0.0 and are skipped (exact). Returns the sum.
    """
    h = SUM_LANES // 2
    while h >= n and h > 1:  # acc[l + h] is +0.0 for every l: nothing to add
        h //= 2
    while h >= 1:
        for lane in range(h):
            acc[lane] += acc[lane + h]
        h //= 2
    return acc[0]


@inline_helper
def _abs_sum(row, acc):
    """``sum|row|`` in float64 in the one order of SPEC §2 (``acc``: SUM_LANES scratch).

    Lane ``l`` adds ``|row[j]|`` for ``j ≡ l (mod SUM_LANES)`` in increasing ``j``; then
    the lanes are folded in halves, ``acc[l] += acc[l + h]`` for ``h = SUM_LANES/2, …, 1``.
    Every lane is an independent chain, so the loop vectorizes (the one sequential chain
    this replaces bounded the fused pass). Folds whose upper lanes lie past the row's
    end only add +0.0 and are skipped (exact). The NumPy and PyTorch twins are
    ``_reference.abs_sum`` and ``spikecode.nn.functional.abs_sum``.
    """
    n = row.shape[0]
    full = n // SUM_LANES
    for lane in range(SUM_LANES):
        acc[lane] = 0.0
    for b in range(full):
        base = b * SUM_LANES
        for lane in range(SUM_LANES):
            acc[lane] += abs(np.float64(row[base + lane]))
    base = full * SUM_LANES
    for lane in range(n - base):
        acc[lane] += abs(np.float64(row[base + lane]))
    return _fold_lanes(acc, n)


@inline_helper
def _abs_sum_extremes(row, acc, lows, highs):
    """:func:`_abs_sum` of ``row`` (the same order, the same bits) and its extreme values.

    ``lows``/``highs`` are SUM_LANES scratch of the row's dtype; the minimum and maximum
    are taken in the same independent lanes as the sum, in the same loop, so the row is
    read once and the loop still vectorizes. Returns ``(sum|row|, min, max)``.
    """
    n = row.shape[0]
    full = n // SUM_LANES
    for lane in range(SUM_LANES):
        acc[lane] = 0.0
        lows[lane] = row[0]
        highs[lane] = row[0]
    for b in range(full):
        base = b * SUM_LANES
        for lane in range(SUM_LANES):
            a = row[base + lane]
            acc[lane] += abs(np.float64(a))
            lows[lane] = a if a < lows[lane] else lows[lane]
            highs[lane] = a if a > highs[lane] else highs[lane]
    base = full * SUM_LANES
    for lane in range(n - base):
        a = row[base + lane]
        acc[lane] += abs(np.float64(a))
        lows[lane] = a if a < lows[lane] else lows[lane]
        highs[lane] = a if a > highs[lane] else highs[lane]
    return _fold_lanes(acc, n), lows.min(), highs.max()


@inline_helper
def _magnitude(v, code, T):
    """What the code spells out: |v|, or v's T-bit two's-complement pattern."""
    if code == TWOS:
        return v & ((np.int64(1) << T) - 1)
    return v if v >= 0 else -v


@inline_helper
def _element_steps(v, code, T, msb, steps):
    """Write the time steps at which value ``v`` spikes into ``steps``.

    Returns ``(n, polarity)``: the number of steps written and the spike value (+1/-1).
    """
    if code <= TERNARY:  # binary / ternary: |v| spikes in the first |v| steps
        m = v if v >= 0 else -v
        for r in range(m):
            steps[r] = r
        return m, (1 if v >= 0 else -1)
    m = _magnitude(v, code, T)
    polarity = 1 if (v >= 0 or code == TWOS) else -1
    n = 0
    b = 0
    while m != 0:
        if m & 1:
            steps[n] = T - 1 - b if msb else b
            n += 1
        m >>= 1
        b += 1
    return n, polarity


@inline_helper
def _popcount(m):
    """Set bits of a non-negative int64 (branch-free SWAR)."""
    m = m - ((m >> 1) & 0x5555555555555555)
    m = (m & 0x3333333333333333) + ((m >> 2) & 0x3333333333333333)
    m = (m + (m >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (m * 0x0101010101010101) >> 56


@inline_helper
def _spike_total(v, code, T):
    """Number of spikes value ``v`` produces (without enumerating them)."""
    m = _magnitude(v, code, T)
    return m if code <= TERNARY else _popcount(m)


@kernel(
    "int64[:, ::1](float32[:, ::1], float64, float64, float64, float64, float64,"
    " int32[:, ::1], float32[::1])",
    "int64[:, ::1](float64[:, ::1], float64, float64, float64, float64, float64,"
    " int32[:, ::1], float64[::1])",
)
def adaptive_counts(x, k, vth_min, vth_max, lo, hi, counts, vth):  # pragma: no cover - jit
    """Fused float -> (counts, Vth) per row; SPEC §2 eq. 19/21.

    ``sum|x|`` is formed in float64 in the order of :func:`_abs_sum` (SPEC §2). Returns per
    row ``[clipped, non_finite]``: how many counts were clipped into ``[lo, hi]`` and
    whether the row's float64 sum of |x| was not finite.
    """
    rows, cols = x.shape
    flags = np.zeros((rows, 2), dtype=np.int64)
    for i in prange(rows):
        acc = np.empty(SUM_LANES, dtype=np.float64)
        total = _abs_sum(x[i], acc)
        if not np.isfinite(total):
            flags[i, 1] = 1
            vth[i] = np.nan
            continue
        threshold = min(max(total / cols / k, vth_min), vth_max)
        vth[i] = threshold  # stored in the compute dtype ...
        v = vth[i]  # ... and read back, so the division below runs in that dtype
        clipped = 0
        for j in range(cols):
            q = np.rint(x[i, j] / v)
            if q > hi:
                q = hi
                clipped += 1
            elif q < lo:
                q = lo
                clipped += 1
            counts[i, j] = np.int32(q)
        flags[i, 0] = clipped
    return flags


@kernel("int64[:, ::1](int32[:, ::1], int64, int64, int64, boolean)")
def step_spike_counts(counts, code, T, zero_point, msb):  # pragma: no cover - jit
    """Number of spikes of each (row, step): the segment sizes of a train, ``[rows, T]``."""
    rows, cols = counts.shape
    out = np.zeros((rows, T), dtype=np.int64)
    for i in prange(rows):
        if code <= TERNARY:
            # |v| spikes in the first |v| steps: n_t = #{|v| > t}, from a histogram of |v|
            # (slot 0 collects the silent elements, so the loop needs no branch).
            histogram = np.zeros(T + 1, dtype=np.int64)
            for j in range(cols):
                v = np.int64(counts[i, j]) - zero_point
                histogram[v if v >= 0 else -v] += 1
            above = 0
            for t in range(T - 1, -1, -1):
                above += histogram[t + 1]
                out[i, t] = above
        else:
            for t in range(T):
                b = T - 1 - t if msb else t
                n = 0
                for j in range(cols):
                    n += (_magnitude(np.int64(counts[i, j]) - zero_point, code, T) >> b) & 1
                out[i, t] = n
    return out


_FILL_SIGNATURES = tuple(
    f"void(int32[:, ::1], int64, int64, int64, boolean, int64[::1], {feature}[::1], int8[::1])"
    for feature in ("uint16", "int32")
)


@kernel(*_FILL_SIGNATURES)
def fill_events_bitwise(
    counts, code, T, zero_point, msb, step_ptr, feature_out, polarity_out
):  # pragma: no cover - jit
    """Write the events of the bitwise codes in canonical (row, step, feature) order.

    One pass over the row per step, eight features at a time: their bits form a byte,
    and a 256-entry table lists where that byte's set bits are, so each group costs a
    few shifts plus one store per spike, and empty groups (most of them, in the high
    bit planes) cost nothing more. The eight table entries are stored unconditionally
    and the position advances by the number of set bits; the stray stores past a step's
    last spike land on later spikes of the same row, which this thread writes
    afterwards. Near the end of a row's events the loop stores exactly, so no thread
    ever writes into another row. Signs are written per spike afterwards, only for the
    signed codes (``polarity_out`` is empty otherwise).
    """
    rows, cols = counts.shape
    groups = cols // 8
    signed = polarity_out.shape[0] > 0
    for i in prange(rows):
        magnitude = np.empty(cols, dtype=np.int64)
        sign = np.empty(cols, dtype=np.int8)
        for j in range(cols):
            v = np.int64(counts[i, j]) - zero_point
            magnitude[j] = _magnitude(v, code, T)
            sign[j] = 1 if (v >= 0 or code == TWOS) else -1
        row_end = step_ptr[(i + 1) * T]
        for t in range(T):
            b = T - 1 - t if msb else t
            start = step_ptr[i * T + t]
            end = step_ptr[i * T + t + 1]
            if start == end:
                continue
            pos = start
            roomy = end + 8 <= row_end
            for g in range(groups):
                j0 = g * 8
                byte = 0
                for lane in range(8):
                    byte |= ((magnitude[j0 + lane] >> b) & 1) << lane
                if byte == 0:
                    continue
                n = _SET_BIT_COUNT[byte]
                if roomy:
                    for lane in range(8):
                        feature_out[pos + lane] = j0 + _SET_BIT_LANES[byte, lane]
                else:
                    for lane in range(n):
                        feature_out[pos + lane] = j0 + _SET_BIT_LANES[byte, lane]
                pos += n
            for j in range(groups * 8, cols):
                if (magnitude[j] >> b) & 1:
                    feature_out[pos] = j
                    pos += 1
            if signed:  # per spike, not per feature and step
                for e in range(start, end):
                    polarity_out[e] = sign[feature_out[e]]


@kernel(*_FILL_SIGNATURES)
def fill_events_unary(
    counts, code, T, zero_point, msb, step_ptr, feature_out, polarity_out
):  # pragma: no cover - jit
    """Write the events of binary/ternary in canonical order, work proportional to spikes.

    An element with ``|v|`` spikes fires at steps ``0 .. |v|-1``; each step emits the
    still-active elements in feature order and keeps those that fire again. ``msb`` is
    unused (the signature is shared with the bitwise kernel).
    """
    rows, cols = counts.shape
    signed = polarity_out.shape[0] > 0
    for i in prange(rows):
        magnitude = np.empty(cols, dtype=np.int64)
        sign = np.empty(cols, dtype=np.int8)
        active = np.empty(cols, dtype=np.int64)
        n_active = 0
        for j in range(cols):
            v = np.int64(counts[i, j]) - zero_point
            magnitude[j] = v if v >= 0 else -v
            sign[j] = 1 if v >= 0 else -1
            active[n_active] = j
            n_active += magnitude[j] > 0
        pos = step_ptr[i * T]
        t = 0
        while n_active > 0:
            kept = 0
            for r in range(n_active):
                j = active[r]
                feature_out[pos] = j
                if signed:
                    polarity_out[pos] = sign[j]
                pos += 1
                active[kept] = j
                kept += magnitude[j] > t + 1
            n_active = kept
            t += 1


@kernel("void(int32[:, ::1], int64, int64, int64, boolean, int8[:, :, ::1])")
def fill_dense(counts, code, T, zero_point, msb, dense):  # pragma: no cover - jit
    """Write spikes into a zeroed dense ``[T, rows, features]`` int8 array."""
    rows, cols = counts.shape
    for i in prange(rows):
        steps = np.empty(T, dtype=np.int64)
        for j in range(cols):
            n, polarity = _element_steps(np.int64(counts[i, j]) - zero_point, code, T, msb, steps)
            for r in range(n):
                dense[steps[r], i, j] = polarity


@kernel("int64[:, ::1](int32[:, ::1], int64, int64, int64, int64)")
def stats_rows(counts, code, T, zero_point, window):  # pragma: no cover - jit
    """Per-row totals ``[spikes, silent, within_7, window_spikes, window_steps]``; SPEC §5."""
    rows, cols = counts.shape
    out = np.zeros((rows, 5), dtype=np.int64)
    for i in prange(rows):
        spikes = 0
        silent = 0
        within = 0
        w_spikes = 0
        w_steps = 0
        for j in range(cols):
            c = np.int64(counts[i, j])
            v = c - zero_point
            n = _spike_total(v, code, T)
            spikes += n
            if n == 0:
                silent += 1
            if -7 <= c <= 7:
                within += 1
            # Windowed occupancy: the element's own minimal length, rounded up to whole
            # windows (SPEC §5: ceil(bits(c)/w)*w with bits(0) = 1).
            if code <= TERNARY:
                length = v if v >= 0 else -v
                w_n = length
            elif code == TWOS:
                length = 1
                m = v if v >= 0 else -v - 1
                while m != 0:
                    m >>= 1
                    length += 1
                w_n = -1  # depends on the occupied width, computed below
            else:
                m = v if v >= 0 else -v
                length = 0
                while m != 0:
                    m >>= 1
                    length += 1
                w_n = n
            length = max(length, 1)
            occupied = (length + window - 1) // window * window
            if w_n < 0:  # two's complement sign-extends into the whole occupied width
                w_n = _popcount(v & ((np.int64(1) << occupied) - 1))
            w_spikes += w_n
            w_steps += occupied
        out[i, 0] = spikes
        out[i, 1] = silent
        out[i, 2] = within
        out[i, 3] = w_spikes
        out[i, 4] = w_steps
    return out


@kernel(
    *(
        f"void({feature}[::1], int8[::1], int64[::1], int64[::1], int64, int64[:, ::1])"
        for feature in ("uint16", "int32")
    )
)
def decode_rows(feature, polarity, step_ptr, weights, zero_point, counts):  # pragma: no cover
    """Accumulate ``zero_point + Σ_t w_t s_t`` per element, one row per thread."""
    rows = counts.shape[0]
    T = weights.shape[0]
    signed = polarity.shape[0] > 0
    for i in prange(rows):
        counts[i, :] = zero_point
        for t in range(T):
            w = weights[t]
            for e in range(step_ptr[i * T + t], step_ptr[i * T + t + 1]):
                counts[i, feature[e]] += polarity[e] * w if signed else w


@kernel(
    *(
        f"void({feature}[::1], int8[::1], int64[::1], int64[::1], int64,"
        " int8[:, ::1], int64[:, :, ::1])"
        for feature in ("uint16", "int32")
    )
)
def spike_linear_rows(
    feature, polarity, step_ptr, weights, group_size, weight_t, acc
):  # pragma: no cover - jit
    """Event-driven integer accumulation of SPEC §4, one row (token) per thread.

    For each step, every spike adds (or, at polarity -1, subtracts) the selected weight
    row ``weight_t[feature]`` (the transposed INT8 weight, shape ``[in, out]``) into a
    per-step partial sum: one addition per (spike x output). Each step's partial is then
    folded in with its step weight (1, or a power of two: a shift in hardware).
    ``acc`` has shape ``[rows, groups, out]``.
    """
    rows, groups, outs = acc.shape
    T = weights.shape[0]
    signed = polarity.shape[0] > 0
    for i in prange(rows):
        step = np.zeros((groups, outs), dtype=np.int64)
        for t in range(T):
            start = step_ptr[i * T + t]
            end = step_ptr[i * T + t + 1]
            if start == end:
                continue
            step[:, :] = 0
            for e in range(start, end):
                j = np.int64(feature[e])
                g = j // group_size
                if signed and polarity[e] < 0:
                    for o in range(outs):
                        step[g, o] -= weight_t[j, o]
                else:
                    for o in range(outs):
                        step[g, o] += weight_t[j, o]
            w = weights[t]
            for g in range(groups):
                for o in range(outs):
                    acc[i, g, o] += w * step[g, o]
