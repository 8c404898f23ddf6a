"""Benchmark: adaptive counts + expansion to events, per code, against two baselines.

One layer's input for 4096 tokens of a 7B model: a 4096 x 3584 float32 activation.
Measured side by side in one process (the machines are shared and noisy; ratios, not
absolute times, are the result):

* spikecode: ``adaptive_counts(x, k=3)`` then ``encode(counts, scheme)`` -> events;
* (a) the per-time-step PyTorch way of the public SpikingBrain reference code: threshold
  and round in torch, then one dense float32 ``[N, D]`` spike frame per step, stacked
  into the ``[T, N, D]`` train;
* (b) the memory floor: bytes that must move (input activations read, counts + Vth +
  the train's compact event arrays written) over the copy bandwidth measured with a
  NumPy copy in the same run.

Peak memory is the growth of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) during one spikecode run.

Usage::

    python benchmarks/bench_encode.py [--tokens 4096] [--features 3584] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import torch

import spikecode

SCHEMES = list(spikecode.SCHEMES)


def activations(tokens: int, features: int, seed: int = 0) -> np.ndarray:
    """Standard-normal activations, SPEC §5's reference distribution.

    (Real LLM activations have a few outlier channels; they raise binary/ternary T and
    the baseline's dense-train memory, not the per-element cost of spikecode's kernels.)
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((tokens, features), dtype=np.float32)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: JIT caches, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(repeats: int) -> float:
    """Bytes moved per second (read + write) by a large NumPy copy."""
    src = np.ones(64 * 2**20, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), repeats)
    return 2 * src.nbytes / t


def reference_step_by_step(x: torch.Tensor, scheme: str, k: float = 3.0) -> torch.Tensor:
    """Baseline (a): dense float32 trains built one time step at a time, in PyTorch."""
    vth = (x.abs().mean(-1, keepdim=True) / k).clamp(1e-5, 1e4)
    c = torch.round(x / vth)
    frames = []
    if scheme in ("binary", "ternary"):
        if scheme == "binary":
            c = c - c.min().clamp(max=0)
        T = max(1, int(c.abs().max()))
        remaining = c.clone()
        for _ in range(T):
            s = torch.sign(remaining)
            frames.append(s.to(torch.float32))
            remaining = remaining - s
    else:
        if scheme == "bitwise":
            c = c - c.min().clamp(max=0)
        m = int(c.abs().max())
        T = (
            max(1, m.bit_length())
            if scheme != "bitwise-twos-complement"
            else max(2, m.bit_length() + 1)
        )
        if scheme == "bitwise-twos-complement":
            mag = torch.remainder(c, 2**T)
            sign = torch.ones_like(c)
        else:
            mag, sign = c.abs(), torch.sign(c)
        for t in range(T):
            bit = T - 1 - t
            frames.append((sign * torch.remainder(torch.floor(mag / 2**bit), 2)).to(torch.float32))
    return torch.stack(frames)


def spikecode_run(x: np.ndarray, scheme: str) -> spikecode.SpikeTrain:
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    return spikecode.encode(counts, scheme)


def reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return vm_hwm()


def vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--features", type=int, default=3584)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    x = activations(args.tokens, args.features)
    xt = torch.from_numpy(x)
    bandwidth = copy_bandwidth(args.repeats)
    threads = f"numba threads {numba.get_num_threads()}, torch threads {torch.get_num_threads()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {threads}")
    print(f"input {x.shape} float32, {x.nbytes / 2**20:.0f} MiB; "
          f"copy bandwidth {bandwidth / 1e9:.2f} GB/s (read+write)")  # fmt: skip
    header = (
        "| code | T | spikes/elem | spikecode (ms) | (a) per-step torch (ms) | speed-up vs (a) "
        "| floor (ms) | × floor | peak RSS growth (MiB) | dense f32 train would be (MiB) |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for scheme in SCHEMES:
        t_ours = median_time(lambda s=scheme: spikecode_run(x, s), args.repeats)
        train = spikecode_run(x, scheme)
        t_ref = median_time(
            lambda s=scheme: reference_step_by_step(xt, s), max(1, args.repeats // 2)
        )
        moved = (
            x.nbytes  # activations read
            + x.size * 4  # counts written (int32)
            + args.tokens * 4  # Vth written
            + train.nbytes  # events written: step offsets, uint16 features, int8 signs
        )
        floor = moved / bandwidth
        before = reset_peak()
        spikecode_run(x, scheme)
        growth = vm_hwm() - before
        dense_bytes = train.T * x.size * 4
        print(
            f"| {scheme} | {train.T} | {train.spikes_per_element:.3f} | {t_ours * 1e3:.1f} "
            f"| {t_ref * 1e3:.0f} | {t_ref / t_ours:.0f}× | {floor * 1e3:.1f} "
            f"| {t_ours / floor:.2f} | {growth / 2**20:.0f} | {dense_bytes / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
