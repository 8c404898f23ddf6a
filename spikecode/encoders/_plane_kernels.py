"""Numba kernels of the packed bit-plane layout (private).

A train in the planes layout is ``planes`` uint8 ``[T, rows, ceil(F / 8)]`` plus, for the
codes that emit -1 (ternary, bitwise-bidirectional), a ``sign_plane`` uint8
``[rows, ceil(F / 8)]``. Bit ``i`` (value ``1 << i``) of byte ``j`` is feature ``8 j + i``,
the order of ``np.packbits(..., bitorder="little")``; padding bits past the last
feature are 0. A sign bit is 1 where the element's spikes are -1 (the sign of a count is
the same at every step under both signed codes) and 0 elsewhere, silent elements included.

Encoding works on groups of eight features: the eight values' bytes (their bits 8c..8c+7
for the bitwise codes, the thermometer ``min(max(|v| - 8c, 0), 8)`` ones for
binary/ternary) are packed into one 64-bit word. For binary/ternary the word is
transposed as an 8 x 8 bit matrix (three shift-and-mask rounds), which yields the eight
steps' plane bytes at once; for the bitwise codes and the sign plane one multiplication
gathers one plane's byte, and only the planes the row's largest value reaches are
visited. Every
kernel also counts the spikes of each (row, step) from the bytes it writes, so the event
offsets and the size of either layout are known without another pass.

The float kernels know each row's extreme counts before dividing it (taken with the
row's ``sum|x|``), hence whether one byte per element holds every bit the row sets. Such
rows (nearly all: |v| <= 128 unary, <= 255 bitwise) are divided, rounded and reduced to
magnitude and sign bytes in one branch-free int32 loop, and each plane byte is gathered
from a group's word in loops over the groups without branches (they vectorize); other
rows go through int32 counts and the chunked path above.

Each kernel has a plain NumPy twin in :mod:`spikecode.encoders._reference` (dense train,
``np.packbits``) that the tests compare it with.
"""

from __future__ import annotations

import numpy as np

from spikecode._constants import SUM_LANES
from spikecode._numba import inline_helper, kernel, prange
from spikecode.encoders._kernels import _SET_BIT_COUNT, _SET_BIT_LANES, _abs_sum_extremes
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
def _popcount(m):
    """Set bits of an int64 (branch-free SWAR; the top bit counts too)."""
    m = m - ((m >> 1) & 0x5555555555555555)
    m = (m & 0x3333333333333333) + ((m >> 2) & 0x3333333333333333)
    m = (m + (m >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((m * 0x0101010101010101) >> 56) & 0xFF


@inline_helper
def _gather_bits(word):
    """Bit 0 of each byte ``l`` of ``word`` at bit ``l`` of one byte.

    The multiplication adds ``byte_l · 2^(56 - 7 l)`` for every pair of bytes and
    factors; only ``l = m`` lands in bits 56..63 (at ``56 + l``), and no two terms share
    a bit, so nothing carries into them.
    """
    return ((word * 0x0102040810204080) >> 56) & 255


@inline_helper
def _emit_bitwise(values, zero_point, lanes, code, T, msb, planes, i):
    """:func:`_emit_row` for the bitwise codes: plane by plane, only up to the row's bits.

    Each group's word holds eight bytes of magnitude bits; plane ``b``'s byte is bit
    ``b - 8c`` of each, gathered with one multiplication. Planes past the row's largest
    magnitude (except the two's-complement sign extension) are left as they are: zero.
    """
    groups = planes.shape[2]
    n = values.shape[0]
    words = lanes.view(np.int64)
    if code == TWOS:
        mask = (np.int64(1) << T) - 1
        bits = T
    else:
        mask = np.int64(-1)
        top = np.int64(0)
        for j in range(n):
            top |= abs(np.int64(values[j]) - zero_point)
        bits = 0
        while top:
            top >>= 1
            bits += 1
    total = 0
    for c in range((bits + 7) // 8):
        shift = 8 * c
        if code == TWOS:  # bits 8c .. 8c+7 of the T-bit two's complement
            for j in range(n):
                lanes[j] = ((np.int64(values[j]) & mask) >> shift) & 255
        else:  # bits 8c .. 8c+7 of |v|
            for j in range(n):
                lanes[j] = (abs(np.int64(values[j]) - zero_point) >> shift) & 255
        steps = min(8, bits - shift, T - shift)
        keep = np.int64(-1) if steps == 8 else ((np.int64(1) << steps) - 1) * 0x0101010101010101
        for g in range(groups):
            w = words[g]
            if w == 0:
                continue
            total += _popcount(w & keep)
            for kk in range(steps):
                b = shift + kk
                byte = _gather_bits((w >> kk) & 0x0101010101010101)
                planes[T - 1 - b if msb else b, i, g] = byte
    return total


@inline_helper
def _emit_row(values, zero_point, lanes, code, T, msb, planes, sign_plane, i):
    """Write row ``i``'s planes and sign bytes from its int32 counts; return its spikes.

    ``values`` is the row's counts (``[features]``), coded as ``v = c - zero_point``;
    ``lanes`` is zeroed uint8 scratch of ``8 · groups`` entries whose int64 view gives
    one word per group of eight features. Each chunk of eight steps first fills
    ``lanes`` with every value's byte for those steps in one branch-free loop per code,
    then transposes word by word.
    """
    groups = planes.shape[2]
    n = values.shape[0]
    words = lanes.view(np.int64)
    unary = code <= TERNARY
    if sign_plane.shape[0] > 0:  # ternary, bitwise-bidirectional: bit 0 of each lane
        for j in range(n):
            lanes[j] = np.int64(values[j]) - zero_point < 0
        for g in range(groups):
            sign_plane[i, g] = _gather_bits(words[g])
    if not unary:
        return _emit_bitwise(values, zero_point, lanes, code, T, msb, planes, i)
    top = np.int64(0)
    for j in range(n):
        top = max(top, abs(np.int64(values[j]) - zero_point))
    total = 0
    for c in range((top + 7) // 8):
        shift = 8 * c
        for j in range(n):  # the thermometer of |v| over steps 8c .. 8c+7
            m = abs(np.int64(values[j]) - zero_point)
            lanes[j] = (np.int64(1) << min(max(m - shift, 0), 8)) - 1
        steps = min(8, T - shift)
        keep = np.int64(-1) if steps == 8 else (np.int64(1) << (8 * steps)) - 1
        for g in range(groups):
            if words[g] == 0:
                continue
            x = _transpose8(words[g]) & keep
            total += _popcount(x)
            for kk in range(steps):
                planes[shift + kk, i, g] = (x >> (8 * kk)) & 255
    return total


#: Bit 0 of every byte of a 64-bit word.
_BYTE_LSB = 0x0101010101010101
#: Rows per parallel task of the float kernels: the scratch buffers are allocated once
#: per tile, not once per row (an allocation inside a prange loop costs about a row's
#: worth of packing at this width).
_ROW_TILE = 16


@inline_helper
def _quantize_row(row, v, lo, hi, clip, zero_point, code, T, lanes, signs):
    """``round(row / v)`` as one byte per element, in 32-bit lanes and without branches.

    With ``c`` the count (clipped into ``[lo, hi]``, bounds of the row's dtype, when
    ``clip``) and ``d = c - zero_point``: ``lanes[j]`` is the low byte of what the code
    spells out (``|d|``, or its T-bit two's-complement pattern) and ``signs[j]`` is 1
    where ``d < 0``. The caller guarantees from the row's extreme counts that ``|d|``
    is small and ``zero_point`` an int32, so the int32 arithmetic is exact. The division
    and rounding are those of ``_kernels.adaptive_counts`` (the row's dtype). One loop
    without branches, so that LLVM vectorizes the division and rounding with the
    packing. Returns the number of clipped values (0 unless ``clip``).
    """
    n = row.shape[0]
    zp = np.int32(zero_point)
    twos = code == TWOS
    mask = np.int32((np.int64(1) << T) - 1) if twos else np.int32(-1)
    if not clip:
        for j in range(n):
            d = np.int32(np.rint(row[j] / v)) - zp
            lanes[j] = (d & mask) if twos else abs(d)
            signs[j] = d < 0
        return 0
    clipped = 0
    for j in range(n):
        q = np.rint(row[j] / v)
        c = min(max(q, lo), hi)
        clipped += q != c
        d = np.int32(c) - zp
        lanes[j] = (d & mask) if twos else abs(d)
        signs[j] = d < 0
    return clipped


@inline_helper
def _byte_sum(w):
    """Sum of the eight bytes of an int64 (two SWAR folds; at most 2040)."""
    s = (w & 0x00FF00FF00FF00FF) + ((w >> 8) & 0x00FF00FF00FF00FF)
    return ((s * 0x0001000100010001) >> 48) & 0xFFFF


@inline_helper
def _bytes_planes(lanes, signs, code, T, msb, top, zeroed, planes, sign_plane, i):
    """Planes and sign bytes of row ``i`` from one byte per element; return its spikes.

    ``lanes`` and ``signs`` are what :func:`_quantize_row` or :func:`_count_bytes`
    write, zero past the row's elements (the padding of the last group).

    Needs every bit the row sets to be in its bytes: ``top`` (the row's largest
    magnitude) below 256 for the bitwise codes, at most 128 for binary/ternary (checked
    by the caller). Every loop runs over the groups of eight features with one word per
    group and no branch, so it vectorizes. Bitwise: plane ``b``'s byte gathers bit ``b``
    of the group's eight bytes with one multiplication. Unary: step ``t`` fires where
    ``|d| > t``; adding ``127 - t`` to every byte sets its bit 7 exactly then (no byte
    carries into the next while ``|d| <= 128``), and those bits are gathered; the spikes
    are the sum of ``min(|d|, T)``. Unless ``zeroed``, the row's planes the row does not
    reach are written 0 as well.
    """
    groups = planes.shape[2]
    words = lanes.view(np.int64)
    if sign_plane.shape[0] > 0:
        sign_words = signs.view(np.int64)
        out = sign_plane[i]
        for g in range(groups):
            out[g] = _gather_bits(sign_words[g])
    if code <= TERNARY:
        for t in range(min(top, T)):
            out = planes[t, i]
            add = (127 - t) * _BYTE_LSB
            for g in range(groups):
                out[g] = _gather_bits(((words[g] + add) >> 7) & _BYTE_LSB)
        if not zeroed:
            for t in range(min(top, T), T):
                planes[t, i, :] = 0
        spikes = np.int64(0)  # sum of min(|d|, T); the padding bytes are 0
        if top <= T:  # min(|d|, T) = |d|
            for g in range(groups):
                spikes += _byte_sum(words[g])
        else:
            for j in range(lanes.shape[0]):
                spikes += min(np.int64(lanes[j]), T)
        return spikes
    if code == TWOS:
        steps = T
    else:
        steps = 0
        while top >> steps:
            steps += 1
        steps = min(steps, T)
    keep = np.int64(-1) if steps >= 8 else ((np.int64(1) << steps) - 1) * _BYTE_LSB
    total = np.int64(0)
    for g in range(groups):
        total += _popcount(words[g] & keep)
    for b in range(steps):
        out = planes[T - 1 - b if msb else b, i]
        for g in range(groups):
            out[g] = _gather_bits((words[g] >> b) & _BYTE_LSB)
    if not zeroed:
        for b in range(steps, T):
            planes[T - 1 - b if msb else b, i, :] = 0
    return total


@inline_helper
def _float_row(row, v, qlow, qhigh, lo, hi, zero_point, code, T, msb, lanes, signs,
               values, bounds, zeroed, planes, sign_plane, i):  # fmt: skip
    """Row ``i`` of ``round(row / v)`` clipped to ``[lo, hi]`` into the planes.

    ``qlow``/``qhigh`` are the row's extreme counts before clipping (``rint`` of its
    extreme values over ``v``: division and rounding are monotonic). From them the
    clipped extremes and the largest magnitude ``top`` are known before the row is
    divided, and so is whether the fast way fits: :func:`_quantize_row` then
    :func:`_bytes_planes`, when every bit the row sets lies in one byte per element,
    the zero point is an int32 and a clipping bound in play is exact in the row's dtype.
    Otherwise (magnitudes of 256 and more, T above 8 for the two's complement, int32
    overflow) the counts go through ``values`` and :func:`_emit_row`. ``bounds`` is
    scratch of two entries of the row's dtype. ``zeroed``: whether ``planes`` arrive
    zeroed; otherwise every byte of the row's T planes is written. Returns
    ``(spikes, clipped, negative, low, high)`` with the extremes after clipping.
    """
    low = np.int64(min(max(qlow, lo), hi))
    high = np.int64(min(max(qhigh, lo), hi))
    top = max(abs(high - zero_point), abs(low - zero_point))
    clip = qlow < lo or qhigh > hi
    bounds[0] = low  # the clipped extremes in the row's dtype (rounded when inexact)
    bounds[1] = high
    lo_row = bounds[0]
    hi_row = bounds[1]
    fits = (
        np.int64(-(2**31)) <= zero_point < np.int64(2**31)
        and 0 <= top <= (128 if code <= TERNARY else 255)
        and (not clip or (lo_row == low and hi_row == high))
        and (code != TWOS or T <= 8)
    )
    groups = planes.shape[2]
    if fits:
        clipped = _quantize_row(row, v, lo_row, hi_row, clip, zero_point, code, T, lanes,
                                signs)  # fmt: skip
        spikes = _bytes_planes(lanes, signs, code, T, msb, top, zeroed, planes, sign_plane, i)
        sign_words = signs.view(np.int64)
        negative = np.int64(0)
        for g in range(groups):
            negative += _popcount(sign_words[g])
        return spikes, clipped, negative, low, high
    clipped = 0
    negative = 0
    for j in range(row.shape[0]):
        q = np.rint(row[j] / v)
        c = min(max(q, lo), hi)
        clipped += q != c
        values[j] = np.int32(c)
        negative += np.int64(values[j]) - zero_point < 0
    if not zeroed:  # _emit_row writes only the non-zero bytes
        planes[:, i, :] = 0
    spikes = _emit_row(values, zero_point, lanes, code, T, msb, planes, sign_plane, i)
    return spikes, clipped, negative, low, high


@inline_helper
def _count_bytes(values, zero_point, code, T, lanes, signs):
    """:func:`_quantize_row` for int32 counts: the bytes of ``d = c - zero_point``.

    ``lanes[j]`` is the low byte of ``|d|`` (two's complement: of its T-bit pattern) and
    ``signs[j]`` is 1 where ``d < 0``. The arithmetic is int64, exact for any int32
    count and int64 zero point the plan allows, so no precondition: the caller checks
    the returned largest ``|d|`` to see whether the bytes hold every bit of the row. One
    loop without branches (it vectorizes).
    """
    twos = code == TWOS
    mask = ((np.int64(1) << T) - 1) if twos else np.int64(-1)
    top = np.int64(0)
    for j in range(values.shape[0]):
        d = np.int64(values[j]) - zero_point
        m = abs(d)
        top = max(top, m)
        lanes[j] = (d & mask) if twos else m
        signs[j] = d < 0
    return top


@kernel("int64[::1](int32[:, ::1], int64, int64, int64, boolean, uint8[:, :, ::1], uint8[:, ::1])")
def counts_planes(counts, code, T, zero_point, msb, planes, sign_plane):  # pragma: no cover
    """Counts -> zeroed ``planes`` (and ``sign_plane`` when it has rows); spikes per row.

    A row whose bits all fit one byte per element (largest ``|d|`` at most 128 for
    binary/ternary, 255 for the bitwise codes; two's complement with ``T <= 8``) is
    reduced to bytes by :func:`_count_bytes` and packed by :func:`_bytes_planes`, as the
    float kernels do; other rows go through :func:`_emit_row`.
    """
    rows = counts.shape[0]
    width = planes.shape[2] * 8
    limit = 128 if code <= TERNARY else 255
    bytes_ok = code != TWOS or T <= 8
    spikes = np.zeros(rows, dtype=np.int64)
    for tile in prange((rows + _ROW_TILE - 1) // _ROW_TILE):
        lanes = np.zeros(width, dtype=np.uint8)  # the padding bytes stay 0
        signs = np.zeros(width, dtype=np.uint8)
        for i in range(tile * _ROW_TILE, min(rows, (tile + 1) * _ROW_TILE)):
            if bytes_ok:
                top = _count_bytes(counts[i], zero_point, code, T, lanes, signs)
                if top <= limit:
                    spikes[i] = _bytes_planes(lanes, signs, code, T, msb, top, True, planes,
                                              sign_plane, i)  # fmt: skip
                    continue
            # _emit_row rewrites every element's lane it reads; the padding stays 0
            spikes[i] = _emit_row(counts[i], zero_point, lanes, code, T, msb, planes,
                                  sign_plane, i)  # fmt: skip
    return spikes


@kernel(
    "float64[:, ::1](float32[:, ::1], float64, float64, float64, float32[::1])",
    "float64[:, ::1](float64[:, ::1], float64, float64, float64, float64[::1])",
)
def row_thresholds(x, k, vth_min, vth_max, vth):  # pragma: no cover - jit
    """Pass 1 of the two-pass encoding: Vth per row and the row's smallest and largest count.

    ``sum|x|`` in SPEC §2's one order (``_kernels._abs_sum_extremes``, the order of
    ``adaptive_counts``, so Vth is the same to the last bit). Division and rounding are
    monotonic, so the extreme counts are ``rint(min x / Vth)`` and ``rint(max x / Vth)``;
    the extremes are taken in the sum's loop, in the same SUM_LANES independent lanes
    (one read of the row; the loop vectorizes). Returns per row ``[non_finite, min
    count, max count]``.
    """
    rows, cols = x.shape
    out = np.zeros((rows, 3), dtype=np.float64)
    for i in prange(rows):
        acc = np.empty(SUM_LANES, dtype=np.float64)
        lows = np.empty(SUM_LANES, dtype=x.dtype)
        highs = np.empty(SUM_LANES, dtype=x.dtype)
        total, low, high = _abs_sum_extremes(x[i], acc, lows, highs)
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
        f"int64[:, ::1]({dtype}[:, ::1], float64, float64, float64, float64, float64, int64,"
        f" int64, int64, boolean, boolean, uint8[:, :, ::1], uint8[:, ::1], {dtype}[::1])"
        for dtype in ("float32", "float64")
    )
)
def float_planes_one_pass(
    x, k, vth_min, vth_max, lo, hi, code, T, zero_point, msb, zeroed, planes, sign_plane, vth
):  # pragma: no cover - jit
    """Both passes row by row: Vth, then ``round(x / Vth)`` straight into planes of T steps.

    The row is read a second time while it is still in cache. Used when T and the zero
    point need not wait for the other rows: ``T`` here is a capacity (the caller keeps the
    planes the final T needs, see ``encoders.fused``), counts are clipped into
    ``[lo, hi]``. Vth and the counts are those of ``_kernels.adaptive_counts`` (same sum
    order, dtype, division and rounding). ``planes`` arrive zeroed when ``zeroed``;
    otherwise every byte of a finite row's planes and sign bytes is written (the
    sign plane is always written in full). Returns per row ``[non_finite, min count,
    max count, spikes in the T planes, values below 0, clipped values]`` (counts after
    clipping; a non-finite row writes nothing).
    """
    rows, cols = x.shape
    width = planes.shape[2] * 8
    out = np.zeros((rows, 6), dtype=np.int64)
    for tile in prange((rows + _ROW_TILE - 1) // _ROW_TILE):
        acc = np.empty(SUM_LANES, dtype=np.float64)
        lows = np.empty(SUM_LANES, dtype=x.dtype)
        highs = np.empty(SUM_LANES, dtype=x.dtype)
        bounds = np.empty(2, dtype=x.dtype)
        values = np.empty(cols, dtype=np.int32)
        lanes = np.zeros(width, dtype=np.uint8)  # the padding bytes stay 0
        signs = np.zeros(width, dtype=np.uint8)
        for i in range(tile * _ROW_TILE, min(rows, (tile + 1) * _ROW_TILE)):
            total, low_x, high_x = _abs_sum_extremes(x[i], acc, lows, highs)
            if not np.isfinite(total):
                out[i, 0] = 1
                vth[i] = np.nan
                continue
            vth[i] = min(max(total / cols / k, vth_min), vth_max)
            v_row = vth[i]  # read back: the division runs in the compute dtype
            spikes, clipped, negative, low, high = _float_row(
                x[i], v_row, np.float64(np.rint(low_x / v_row)),
                np.float64(np.rint(high_x / v_row)), lo, hi, zero_point, code, T, msb,
                lanes, signs, values, bounds, zeroed, planes, sign_plane, i,
            )  # fmt: skip
            out[i, 1] = low
            out[i, 2] = high
            out[i, 3] = spikes
            out[i, 4] = negative
            out[i, 5] = clipped
    return out


@kernel(
    *(
        f"int64[:, ::1]({dtype}[:, ::1], {dtype}[::1], float64[:, ::1], float64, float64, int64,"
        " int64, int64, boolean, boolean, uint8[:, :, ::1], uint8[:, ::1], int32[:, ::1])"
        for dtype in ("float32", "float64")
    )
)
def float_planes(
    x, vth, extremes, lo, hi, code, T, zero_point, msb, zeroed, planes, sign_plane, counts
):  # pragma: no cover - jit
    """Pass 2: ``round(x / Vth)`` clipped to ``[lo, hi]`` straight into planes.

    ``extremes`` is :func:`row_thresholds`' result (each row's extreme counts, which
    tell before the row is divided how many bits it needs). The counts are those of
    ``_kernels.adaptive_counts`` (same dtype, division and rounding); they are stored
    (before saturation) only when ``counts`` has rows. Unless ``zeroed``, every byte
    of ``planes`` is written (of ``sign_plane`` always). Returns per row ``[spikes,
    clipped values]``.
    """
    rows, cols = x.shape
    width = planes.shape[2] * 8
    keep = counts.shape[0] > 0
    out = np.zeros((rows, 2), dtype=np.int64)
    for tile in prange((rows + _ROW_TILE - 1) // _ROW_TILE):
        bounds = np.empty(2, dtype=x.dtype)
        values = np.empty(cols, dtype=np.int32)
        lanes = np.zeros(width, dtype=np.uint8)  # the padding bytes stay 0
        signs = np.zeros(width, dtype=np.uint8)
        for i in range(tile * _ROW_TILE, min(rows, (tile + 1) * _ROW_TILE)):
            v_row = vth[i]
            if keep:  # the counts as adaptive_counts returns them, before saturation
                for j in range(cols):
                    counts[i, j] = np.int32(np.rint(x[i, j] / v_row))
            spikes, clipped, _, _, _ = _float_row(
                x[i], v_row, extremes[i, 1], extremes[i, 2], lo, hi, zero_point, code, T,
                msb, lanes, signs, values, bounds, zeroed, planes, sign_plane, i,
            )  # fmt: skip
            out[i, 0] = spikes
            out[i, 1] = clipped
    return out


@kernel("int64[:, ::1](uint8[:, :, ::1])")
def plane_step_counts(planes):  # pragma: no cover - jit
    """Spikes of each (row, step), ``[rows, T]``: the segment sizes of the events."""
    T, rows, groups = planes.shape
    out = np.zeros((rows, T), dtype=np.int64)
    for i in prange(rows):
        for t in range(T):
            n = 0
            for g in range(groups):
                n += _SET_BIT_COUNT[planes[t, i, g]]
            out[i, t] = n
    return out


_FEATURE_DTYPES = ("uint16", "int32")


@kernel(
    *(
        f"void(uint8[:, :, ::1], uint8[:, ::1], int64[::1], {feature}[::1], int8[::1])"
        for feature in _FEATURE_DTYPES
    )
)
def planes_to_events(planes, sign_plane, step_ptr, feature_out, polarity_out):  # pragma: no cover
    """Planes -> events in canonical (row, step, feature) order at offsets ``step_ptr``.

    Each non-zero byte stores the eight entries of its row of the set-bit table and
    advances by its number of set bits (as ``_kernels.fill_events_bitwise`` does): the
    stray stores land on later spikes of the same row, written afterwards; near the end
    of a row's events the stores are exact. ``polarity_out`` is empty for the codes
    without -1 spikes; signs are read per spike from the sign plane.
    """
    T, rows, groups = planes.shape
    signed = polarity_out.shape[0] > 0
    for i in prange(rows):
        row_end = step_ptr[(i + 1) * T]
        for t in range(T):
            pos = step_ptr[i * T + t]
            for g in range(groups):
                byte = planes[t, i, g]
                if byte == 0:
                    continue
                j0 = g * 8
                if pos + 8 <= row_end:
                    for lane in range(8):
                        feature_out[pos + lane] = j0 + _SET_BIT_LANES[byte, lane]
                else:
                    for r in range(_SET_BIT_COUNT[byte]):
                        feature_out[pos + r] = j0 + _SET_BIT_LANES[byte, r]
                pos += _SET_BIT_COUNT[byte]
        if signed:
            for e in range(step_ptr[i * T], row_end):
                f = np.int64(feature_out[e])
                polarity_out[e] = -1 if (sign_plane[i, f >> 3] >> (f & 7)) & 1 else 1


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
