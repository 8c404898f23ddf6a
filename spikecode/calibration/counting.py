"""Counting kernels of calibration and the spike statistics of a count histogram.

The fused CPU kernel :func:`_count_rows` computes, per row and for several k at once,
the threshold, the counts ``round(x / Vth)`` (SPEC §2), their exact histogram, the Vth
histogram and the block activity of the SPEC §6 memory model. Its plain NumPy oracle is
the torch path of :class:`spikecode.calibration.accumulator.LayerAccumulator` (the same
quantities with tensor operations), and the tests compare the two.

:func:`stats_from_histogram` turns a count histogram into the SPEC §5 totals of any code;
:func:`fake_quantize_weight` gives the INT8 fake-quantized weights of SPEC §4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from spikecode._constants import SUM_LANES, VTH_MAX, VTH_MIN, auto_group_size
from spikecode._numba import kernel, prange
from spikecode._validate import INT32_MAX, INT32_MIN
from spikecode.encoders import _kernels
from spikecode.encoders.codec import plan_encoding
from spikecode.errors import SpikecodeError
from spikecode.stats import SpikeStats

if TYPE_CHECKING:  # torch is imported where a tensor is used: merges of stats files need none
    import torch

__all__ = [
    "fake_quantize_weight",
    "stats_from_histogram",
    "stats_from_histograms",
    "weight_group_size",
]

# Counts with |c| <= _DENSE_LIMIT go to a dense histogram; larger ones (rare: a value
# hundreds of times the token's mean |x|) are collected exactly, value by value.
_DENSE_LIMIT = 1023
# Counts beyond it met in one kernel call, per thread chunk, kept value by value.
_SPILL = 4096
# The CPU kernel counts up to _GROUP values of k with one joint-table increment per
# element while |c| <= _JOINT_LIMIT at the largest k (see _count_rows).
_GROUP = 5
_JOINT_LIMIT = 63


# --------------------------------------------------------------------------- kernel


_KERNEL_ARGS = (
    "float64[::1], float64, float64, int64, int64, int64, int64[::1], int64[::1], float64[::1],"
    " int64[:, ::1], int64[:, :, ::1], int64[:, :, ::1], int64[:, :, ::1], int64[:, :, ::1],"
    " float64[:, :, ::1]"
)


@kernel(
    f"int64[::1](float32[:, ::1], float32[::1], {_KERNEL_ARGS}, float32[:, ::1])",
    f"int64[::1](float64[:, ::1], float64[::1], {_KERNEL_ARGS}, float64[:, ::1])",
)
def _count_rows(
    x,
    ratios,
    ks,
    vth_min,
    vth_max,
    joint_limit,
    wide_limit,
    base,
    block_sizes,
    source,
    edges,
    joint,
    wide,
    vth_hist,
    levels,
    spill,
    moments,
    vth,
):  # pragma: no cover - jit
    """Fused per-row statistics for five k at once; SPEC §2 counts, §5 histogram, §6 activity.

    ``ks`` ascending, exactly 5 (a smaller group repeats its smallest k in front),
    ``ratios[g] = ks[g] / ks[4]`` (4 values) in the compute dtype.

    Per row: ``mean|x|`` in float64 (``sum|x|`` in SPEC §2's one order, that of
    ``adaptive_counts``, so Vth is the same to the last bit) and the maxima of ``|x|``
    over blocks of every size;
    per k: ``Vth = clip(mean / k)`` (stored into ``vth[g, row]`` in the compute dtype and
    read back, so that the divisions below run in that dtype), its bin among the
    log-spaced ``edges`` and, in ``moments[chunk, g]``, the count, a shift (the chunk's
    first value), the sums of ``v - shift`` and of its square, the min and the max.

    Block activity: a block is fetched at some k when one of its counts is non-zero, i.e.
    when ``max|x| / Vth > 1/2`` (division is monotone, and round-half-to-even sends
    exactly ``|u| <= 1/2`` to 0), i.e. when ``max|x| > t``. A float32 quotient rounds
    above 1/2 exactly when it exceeds ``(1 + 2^-24) / 2`` (a tie rounds to the even 1/2),
    so ``t = Vth · (1 + 2^-24) / 2``, exact in float64; for float64 data ``t`` is the
    largest value whose quotient is ``<= 1/2``. Vth falls as k grows, so the thresholds
    fall too and a
    block active at some k is active at every larger k: its *level* (the number of k at
    which it is active) says all. ``levels[chunk, s, level]`` adds up the block lengths.
    ``block_sizes`` ascend; ``source[s]`` names a smaller size that divides size ``s``
    (its maxima are combined), or -1 for blocks of ``base`` channels.

    Counts: one histogram increment per element for the five k. With ``c_top`` the count
    at the largest k, every other count satisfies ``|c_g - c_top · r_g| <= (1 + r_g) / 2
    < 1`` (``|u_top - c_top| <= 1/2`` and ``u_g = u_top · r_g`` up to rounding), so
    ``d_g = c_g - rint(c_top · r_g)`` has ``|d_g| < 3/2``: it lies in {-1, 0, 1}, and
    ``(c_top, d_0, …, d_3)`` is one key of a joint table
    ``joint[chunk, (((c_top + L)·3 + d_0 + 1)·3 + d_1 + 1)·3 + …]`` (``L = joint_limit``;
    its last bin counts the other elements). Elements outside it (``|c_top| > L``, or a
    clamped threshold breaking the ratio) go, count by count, to ``wide[chunk, g]``
    (offset ``wide_limit``); counts beyond ``±wide_limit`` are written to
    ``spill[chunk, n] = (g, c)`` while there is room. Rows are split into
    ``joint.shape[0]`` parallel chunks, each with its own tables (no locking).

    Returns per chunk the number of counts beyond ``±wide_limit`` met by this call (more
    than ``spill.shape[1]`` means the spill buffer overflowed), then the number of rows
    whose ``sum |x|`` is not finite (skipped).
    """
    rows, cols = x.shape
    n_k = ks.shape[0]
    chunks = joint.shape[0]
    n_vth = vth_hist.shape[2]
    n_sizes = block_sizes.shape[0]
    n_base = (cols + base - 1) // base
    # Block maxima of every level in one array: the base blocks first, then each size.
    offset = np.zeros(n_sizes + 1, dtype=np.int64)
    offset[0] = n_base
    for s in range(n_sizes):
        offset[s + 1] = offset[s] + (cols + block_sizes[s] - 1) // block_sizes[s]
    length = np.zeros(offset[n_sizes], dtype=np.int64)
    for s in range(n_sizes):
        for b in range(offset[s + 1] - offset[s]):
            length[offset[s] + b] = min(block_sizes[s], cols - b * block_sizes[s])
    per = (rows + chunks - 1) // chunks
    capacity = spill.shape[1]
    log_k = np.log10(ks)
    log_first = np.log10(edges[0])
    bins_per_decade = n_vth / (np.log10(edges[n_vth]) - log_first)
    flags = np.zeros((chunks, 2), dtype=np.int64)
    sentinel = x.dtype.type(joint.shape[1] - 1)
    huge = x.dtype.type(1e30)
    half = x.dtype.type(0.5)
    infinity = x.dtype.type(np.inf)
    single = x.itemsize == 4
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    three = x.dtype.type(3.0)
    limit = x.dtype.type(joint_limit)
    for ch in prange(chunks):
        key = np.empty(cols, dtype=x.dtype)
        index = np.empty(cols, dtype=np.int32)
        maxima = np.empty(offset[n_sizes], dtype=x.dtype)
        threshold = np.empty(n_k, dtype=np.float64)
        lanes = np.empty(SUM_LANES, dtype=np.float64)
        table = joint[ch]
        for i in range(ch * per, min(rows, (ch + 1) * per)):
            # mean|x| in float64 in SPEC §2's one order (as adaptive_counts), and the
            # maxima of |x| over the base blocks
            row = x[i]
            total = _kernels._abs_sum(row, lanes)
            for blk in range(n_base):
                # a slice looped from 0 and a comparison (not ``max``) vectorize; a NaN
                # is skipped here, and its row below (its sum is not finite)
                part = row[blk * base : min(cols, (blk + 1) * base)]
                m = zero
                for j in range(part.shape[0]):
                    a = abs(part[j])
                    m = a if a > m else m
                maxima[blk] = m
            if not np.isfinite(total):
                flags[ch, 1] += 1
                continue
            for s in range(n_sizes):
                src = 0 if source[s] < 0 else offset[source[s]]
                src_end = n_base if source[s] < 0 else offset[source[s] + 1]
                step = block_sizes[s] // (base if source[s] < 0 else block_sizes[source[s]])
                for b in range(offset[s + 1] - offset[s]):
                    m = zero
                    for t in range(src + b * step, min(src_end, src + (b + 1) * step)):
                        m = max(m, maxima[t])
                    maxima[offset[s] + b] = m
            mean = total / cols
            log_mean = np.log10(mean) if mean > 0 else -np.inf
            for g in range(n_k):
                vth[g, i] = min(max(mean / ks[g], vth_min), vth_max)
                v = vth[g, i]
                v64 = np.float64(v)
                # Vth histogram bin (edges[b] <= v < edges[b + 1], clamped to the ends):
                # a guess from the logarithm, then exact comparisons with the edges.
                guess = (log_mean - log_k[g] - log_first) * bins_per_decade
                b = int(min(max(guess, 0.0), n_vth - 1.0)) if np.isfinite(guess) else 0
                while b > 0 and v64 < edges[b]:
                    b -= 1
                while b < n_vth - 1 and v64 >= edges[b + 1]:
                    b += 1
                vth_hist[ch, g, b] += 1
                # count, shift, sums of v - shift and (v - shift)^2, min, max
                stats = moments[ch, g]
                if stats[0] == 0.0:
                    stats[1] = v64
                stats[0] += 1.0
                stats[2] += v64 - stats[1]
                stats[3] += (v64 - stats[1]) * (v64 - stats[1])
                stats[4] = min(stats[4], v64)
                stats[5] = max(stats[5], v64)
                if single:
                    threshold[g] = v64 * (1.0 + 2.0**-24) * 0.5
                else:
                    t = v * half
                    while np.nextafter(t, infinity) / v <= half:
                        t = np.nextafter(t, infinity)
                    threshold[g] = t
            t0, t1, t2 = threshold[0], threshold[1], threshold[2]
            t3, t4 = threshold[3], threshold[4]
            for s in range(n_sizes):
                for b in range(offset[s], offset[s + 1]):
                    m = np.float64(maxima[b])
                    level = (m > t0) + (m > t1) + (m > t2) + (m > t3) + (m > t4)
                    levels[ch, s, level] += length[b]
            v0, v1, v2, v3, v4 = vth[0, i], vth[1, i], vth[2, i], vth[3, i], vth[4, i]
            r0, r1, r2, r3 = ratios[0], ratios[1], ratios[2], ratios[3]
            for j in range(cols):
                xj = row[j]
                c = np.rint(xj / v4)
                d0 = np.rint(xj / v0) - np.rint(c * r0)
                d1 = np.rint(xj / v1) - np.rint(c * r1)
                d2 = np.rint(xj / v2) - np.rint(c * r2)
                d3 = np.rint(xj / v3) - np.rint(c * r3)
                code = (((c + limit) * three + d0 + one) * three + d1 + one) * three + d2 + one
                code = code * three + d3 + one
                bad = max(
                    max(abs(c) - limit, zero),
                    max(max(abs(d0), abs(d1)), max(abs(d2), abs(d3))) - one,
                )
                # bad > 0 sends the element to the last bin (branch-free, vectorized)
                key[j] = min(code + bad * huge, sentinel)
            for j in range(cols):
                index[j] = np.int32(key[j])
            before = table[-1]
            for j in range(cols):
                table[index[j]] += 1
            if table[-1] == before:
                continue
            for j in range(cols):
                if key[j] != sentinel:
                    continue
                for g in range(n_k):
                    c = np.int64(np.rint(x[i, j] / vth[g, i]))
                    if -wide_limit <= c <= wide_limit:
                        wide[ch, g, c + wide_limit] += 1
                    else:
                        n = flags[ch, 0]
                        if n < capacity:
                            spill[ch, n, 0] = g
                            spill[ch, n, 1] = c
                        flags[ch, 0] = n + 1
    out = np.zeros(chunks + 1, dtype=np.int64)
    for ch in range(chunks):
        out[ch] = flags[ch, 0]
        out[chunks] += flags[ch, 1]
    return out


# --------------------------------------------------------------------------- statistics


def stats_from_histogram(
    values: np.ndarray, multiplicity: np.ndarray, scheme: str, *, window: int = 3
) -> SpikeStats:
    """SPEC §5 totals of a set of counts given as distinct values and their multiplicities.

    Equal to :func:`spikecode.spike_stats` on ``np.repeat(values, multiplicity)`` with
    the minimal T and the automatic zero point: both depend only on the smallest and
    largest count, which the distinct values share with the full set, and every total
    is a sum over elements.

    Parameters
    ----------
    values
        Distinct integer counts (int32 range).
    multiplicity
        How many elements hold each value (> 0).
    scheme, window
        As for :func:`spikecode.spike_stats`.
    """
    return stats_from_histograms([(values, multiplicity)], scheme, window=window)[0]


def stats_from_histograms(
    histograms: Sequence[tuple[np.ndarray, np.ndarray]], scheme: str, *, window: int = 3
) -> list[SpikeStats]:
    """:func:`stats_from_histogram` for many sets at once (one kernel call per T and zero point)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SpikecodeError(f"window must be a positive integer, not {window!r}")
    sets = []
    for values, multiplicity in histograms:
        values = np.asarray(values, dtype=np.int64)
        multiplicity = np.asarray(multiplicity, dtype=np.int64)
        if values.ndim != 1 or values.shape != multiplicity.shape or values.size == 0:
            raise SpikecodeError(
                "values and multiplicity must be equal-length non-empty 1-D arrays"
            )
        if np.any(multiplicity <= 0):
            raise SpikecodeError("multiplicities must be > 0")
        low, high = int(values.min()), int(values.max())
        if low < INT32_MIN or high > INT32_MAX:
            raise SpikecodeError("counts do not fit int32 (k is too large for these activations)")
        # T and the zero point depend only on the extremes (SPEC §3).
        plan = plan_encoding(np.array([[low, high]], dtype=np.int32), scheme)
        sets.append((values, multiplicity, plan))
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (_, _, plan) in enumerate(sets):
        groups.setdefault((plan.T, plan.zero_point), []).append(index)
    totals: list[np.ndarray | None] = [None] * len(sets)
    for (T, zero_point), members in groups.items():
        union = np.unique(np.concatenate([sets[i][0] for i in members]))
        plan = sets[members[0]][2]
        per_value = _kernels.stats_rows(
            union.astype(np.int32).reshape(-1, 1), plan.scheme.code, T, zero_point, window
        )
        for i in members:
            values, multiplicity, _ = sets[i]
            totals[i] = multiplicity @ per_value[np.searchsorted(union, values)]
    result = []
    for (_, multiplicity, plan), total in zip(sets, totals, strict=True):
        spikes, silent, within, w_spikes, w_steps = (int(v) for v in total)
        result.append(
            SpikeStats(
                scheme=plan.scheme.name,
                T=plan.T,
                window=window,
                elements=int(multiplicity.sum()),
                spikes=spikes,
                silent=silent,
                within_7=within,
                window_spikes=w_spikes,
                window_steps=w_steps,
            )
        )
    return result


#: Scale groups of the fake-quantized weights (SPEC §4), as :func:`spikecode.nn.swap_linears`.
weight_group_size = auto_group_size


@kernel("int64(float32[:, ::1], uint32[:, ::1], int64, float32[:, ::1])")
def _fake_quant_rows(w, bits, group, out):  # pragma: no cover - jit
    """``round(w / σ) · σ`` with ``σ = fl32(max|w| / 127)`` per row and group (SPEC §4).

    The arithmetic of :func:`spikecode.nn.functional.quantize_weight_int8` followed by
    :func:`~spikecode.nn.functional.dequantize_weight_int8`, element by element: ``max|w|``
    and ``max|w| / 127`` in float64 (1 for an all-zero group), the scale rounded once to
    float32, ``w / σ`` formed in float64 and rounded half to even, the product ``q · σ``
    exact in float64 and rounded once to float32. Returns the number of groups holding a
    non-finite weight (nothing is written for them).

    ``bits`` is ``w`` viewed as uint32: with the sign bit cleared, the order of the bit
    patterns is the order of ``|w|`` (infinities and NaN above every finite value), so
    the group maximum is an integer maximum, which vectorizes (a float ``max`` with its
    NaN rules does not); both loops then run branch-free.
    """
    rows, cols = w.shape
    bad = np.zeros(rows, dtype=np.int64)
    mask = np.uint32(0x7FFFFFFF)
    for r in prange(rows):
        for start in range(0, cols, group):
            # Loops over one-dimensional slices from 0 and a plain comparison (not
            # ``max``) vectorize; indexed from ``start`` they ran 3.5 times slower.
            w_part = w[r, start : start + group]
            bits_part = bits[r, start : start + group]
            out_part = out[r, start : start + group]
            top = np.uint32(0)
            for j in range(group):
                b = bits_part[j] & mask
                top = b if b > top else top
            if top >= np.uint32(0x7F800000):  # Inf or NaN
                bad[r] += 1
                continue
            # max|w| from its float32 bit pattern: exponent field and mantissa, exactly
            exponent = np.int64(top >> np.uint32(23))
            mantissa = np.float64(top & np.uint32(0x7FFFFF))
            if exponent > 0:
                amax = math.ldexp(mantissa + 8388608.0, exponent - 150)
            else:  # zero or subnormal
                amax = math.ldexp(mantissa, -149)
            sigma = np.float64(np.float32(amax / 127.0)) if amax > 0 else 1.0
            for j in range(group):
                out_part[j] = np.float32(np.rint(np.float64(w_part[j]) / sigma) * sigma)
    return bad.sum()


@kernel(
    "float64(float32[:, ::1], float32[:, :, ::1], float64[::1], float64[::1])",
    "float64(float64[:, ::1], float64[:, :, ::1], float64[::1], float64[::1])",
)
def _error_sums(y_float, y_spike, diff, cosine):  # pragma: no cover - jit
    """The output error's sums over rows, in float64, for every k at once.

    ``y_float`` ``[rows, out]`` (the float layer), ``y_spike`` ``[k, rows, out]`` (the
    W8ASpike layer fed the spikes of each k). Adds ``Σ ||y_spike - y_float||²`` into
    ``diff[g]`` and the sum of the row cosines into ``cosine[g]`` (two zero rows: 1, one
    zero row: 0); returns ``Σ ||y_float||²``. The oracle is
    ``accumulator._error_sums_torch`` (the device path).
    """
    n_k, rows, cols = y_spike.shape
    float_sq = np.zeros(rows, dtype=np.float64)
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            f = np.float64(y_float[i, j])
            acc += f * f
        float_sq[i] = acc
    sums = np.zeros((n_k, 2), dtype=np.float64)
    for g in prange(n_k):
        for i in range(rows):
            d2 = 0.0
            s2 = 0.0
            dot = 0.0
            for j in range(cols):
                f = np.float64(y_float[i, j])
                v = np.float64(y_spike[g, i, j])
                d2 += (v - f) * (v - f)
                s2 += v * v
                dot += v * f
            sums[g, 0] += d2
            if s2 == 0.0 or float_sq[i] == 0.0:
                sums[g, 1] += 1.0 if s2 == float_sq[i] else 0.0
            else:
                sums[g, 1] += dot / (math.sqrt(s2) * math.sqrt(float_sq[i]))
    for g in range(n_k):
        diff[g] += sums[g, 0]
        cosine[g] += sums[g, 1]
    return float_sq.sum()


def fake_quantize_weight(
    weight: torch.Tensor, group_size: int | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """INT8 fake-quantized weights ``round(w / σ) · σ`` (SPEC §4) as float32, on the CPU.

    Equal, bit for bit, to ``dequantize_weight_int8(*quantize_weight_int8(weight,
    group_size))`` of :mod:`spikecode.nn.functional`, in one pass without float64 copies
    of the weight (calibration quantizes every layer once).

    Parameters
    ----------
    weight
        ``[out_features, in_features]`` floating weights (any float dtype, CPU).
    group_size
        Input columns per scale, a divisor of ``in_features``; None for one per row.
    out
        A contiguous float32 CPU tensor of ``weight``'s shape to write into (calibration
        reuses one buffer for the weights of all layers); None for a new one.

    Returns
    -------
    torch.Tensor
        ``out``, or the new float32 tensor.
    """
    import torch

    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.numel() == 0:
        raise SpikecodeError("weight must be a non-empty 2-D tensor")
    group = weight.shape[1] if group_size is None else group_size
    if weight.shape[1] % group:
        raise SpikecodeError(
            f"in_features ({weight.shape[1]}) is not divisible by group_size ({group})"
        )
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    if out is None:
        out = torch.empty(w.shape, dtype=torch.float32)
    if _fake_quant_rows(w, w.view(np.uint32), group, out.numpy()):
        raise SpikecodeError("weight holds non-finite values", shape=tuple(weight.shape))
    return out


def _vth_table(mean: torch.Tensor, ks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``Vth[k, row] = clip(mean / k)`` in float64, cast to ``dtype`` (SPEC §2 numerics)."""
    import torch

    vth = torch.clamp(mean.unsqueeze(0) / ks.unsqueeze(1), VTH_MIN, VTH_MAX)
    return vth.to(dtype)


def _merge_moments(parts: np.ndarray) -> tuple[float, float, float, float, float]:
    """Merge per-chunk ``[count, shift, Σ(v - shift), Σ(v - shift)², min, max]`` rows.

    Returns count, mean, M2 (sum of squared deviations), min and max (Chan's merge).
    """
    count = mean = m2 = 0.0
    for n_b, shift, s1, s2, _, _ in parts.tolist():
        if n_b == 0:
            continue
        mean_b = shift + s1 / n_b
        m2_b = max(s2 - s1 * s1 / n_b, 0.0)
        total = count + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * count * n_b / total
        count = total
    return count, mean, m2, float(parts[:, 4].min()), float(parts[:, 5].max())


def _nonzero_bins(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and counts of the non-empty inner bins of a dense histogram (offset L + 1)."""
    inner = dense[1:-1]
    nonzero = np.flatnonzero(inner)
    return nonzero.astype(np.int64) - _DENSE_LIMIT, inner[nonzero].astype(np.int64)


def _add_joint(
    hist: np.ndarray, members: Sequence[int], joint: np.ndarray, ratios: np.ndarray
) -> None:
    """Add a joint table of :func:`_count_rows` to the per-k dense histograms.

    Decodes ``key = ((c_top + L)·3 + d_0 + 1)·3 + …`` and rebuilds
    ``c_g = rint(c_top · r_g) + d_g`` with the kernel's own arithmetic (compute dtype).
    """
    keys = np.flatnonzero(joint)
    times = joint[keys]
    size = len(members)
    deltas = []
    rest = keys.astype(np.int64)
    for _ in range(size - 1):
        deltas.append(rest % 3 - 1)
        rest = rest // 3
    deltas.reverse()
    c_top = rest - _JOINT_LIMIT
    offset = _DENSE_LIMIT + 1
    np.add.at(hist[members[-1]], c_top + offset, times)
    top = c_top.astype(ratios.dtype)
    for g in range(size - 1):
        if members[g] < 0:  # a repeat of the largest k that pads the group
            continue
        predicted = np.rint(top * ratios[g]).astype(np.int64)
        np.add.at(hist[members[g]], predicted + deltas[g] + offset, times)
