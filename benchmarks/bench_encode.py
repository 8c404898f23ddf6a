"""Benchmark: float activations -> spike trains, per code and layout, against baselines.

One layer's input for 4096 tokens of a 7B model: a 4096 x 3584 float32 activation.
Measured side by side in one process (the machines are shared and noisy; ratios, not
absolute times, are the result):

* today: ``adaptive_counts(x, k=3)`` then ``encode(counts, scheme, layout="events")``,
  the path before packed bit-planes;
* ``encode_activations(x, 3, scheme, layout=...)`` for ``planes``, ``auto`` and
  ``events`` (one fused pass from floats), ``adaptive_counts`` + ``encode(layout="auto")``,
  and the PyTorch path on CPU (``encode_activations`` of a tensor, planes);
* ``encode(counts, scheme, layout="planes")`` alone, the counts computed beforehand (the
  last column: the counts -> planes part of the two-step path);
* (a) the per-time-step PyTorch way of the public SpikingBrain reference code: threshold
  and round in torch, then one dense float32 ``[N, D]`` spike frame per step, stacked
  into the ``[T, N, D]`` train;
* (b) the memory floor of the fused planes path: the input read, the planes, sign plane
  and Vth written, over the copy bandwidth of a 256 MiB NumPy copy.

All of these, the copy and the baseline (a) included, run round-robin (median of
``--repeats`` rounds), so a change of the machine's load hits them alike.

Peak memory is the growth of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) during one spikecode run.

On a GPU (``--device cuda``) the same cases run on a CUDA tensor: the PyTorch path of
``encode_activations`` (planes built on the device, copied packed to the host) against
the per-step reference on the same device, timed with CUDA events after a synchronize;
the card is recorded. Without CUDA the option refuses with one line.

The output is the Markdown table of BENCHMARKS.md, preceded by the machine, its load
(``/proc/loadavg`` before and after) and the copy bandwidth.

Usage::

    python benchmarks/bench_encode.py [--tokens 4096] [--features 3584] [--repeats 5]
                                      [--device cpu|cuda] [--schemes ...]
                                      [--clock wall|cpu] [--threads N] [--growth]
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


#: What the timings read: wall-clock seconds, or process CPU seconds (``--clock cpu``),
#: which a loaded machine disturbs far less when every library runs one thread.
CLOCK = time.perf_counter


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: JIT caches, page faults
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
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


def today(x: np.ndarray, scheme: str) -> spikecode.SpikeTrain:
    """The path before issue 10: counts, then events."""
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    return spikecode.encode(counts, scheme, layout="events", max_spikes=None)


def fused(x, scheme: str, layout: str) -> spikecode.SpikeTrain:
    return spikecode.encode_activations(x, 3.0, scheme, layout=layout, max_spikes=None)[0]


def two_step(x: np.ndarray, scheme: str, layout: str) -> spikecode.SpikeTrain:
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    return spikecode.encode(counts, scheme, layout=layout, max_spikes=None)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run round-robin so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return vm_hwm()


def vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def peak_growth(fn) -> int:
    before = reset_peak()
    fn()
    return vm_hwm() - before


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cuda_interleaved(fns: dict, repeats: int) -> dict:
    """:func:`interleaved` on a GPU: CUDA events around each call, synchronized."""
    for fn in fns.values():
        fn()
    torch.cuda.synchronize()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main_cuda(args: argparse.Namespace) -> None:
    """The same cases on a CUDA device: torch path of encode_activations against (a)."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_encode: --device cuda needs a CUDA device; none is available")
    x = torch.from_numpy(activations(args.tokens, args.features)).cuda()
    card = torch.cuda.get_device_name(0)
    print(f"device: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"host load average {loadavg()}")  # fmt: skip
    header = (
        "| code | T | planes (MiB) | torch CUDA planes (ms) | torch CUDA auto (ms) "
        "| (a) per-step torch CUDA (ms) | (a) / planes |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for scheme in args.schemes:
        fns = {
            "planes": lambda s=scheme: fused(x, s, "planes"),
            "auto": lambda s=scheme: fused(x, s, "auto"),
        }
        if not args.no_reference:
            fns["reference"] = lambda s=scheme: reference_step_by_step(x, s)
        t = cuda_interleaved(fns, args.repeats)
        t_ref = t.get("reference", float("nan"))
        planes = fused(x, scheme, "planes")
        print(
            f"| {scheme} | {planes.T} | {planes.nbytes / 2**20:.1f} | {t['planes'] * 1e3:.2f} "
            f"| {t['auto'] * 1e3:.2f} | {t_ref * 1e3:.2f} | {t_ref / t['planes']:.1f}× |"
        )
    print(f"host load average after: {loadavg()}")


def token_growth(args: argparse.Namespace) -> None:
    """Fused planes time against the number of tokens: the cost should stay linear."""
    scheme = args.schemes[0] if len(args.schemes) == 1 else "bitwise-bidirectional"
    print(f"growth in tokens: {scheme}, {args.features} features, clock {args.clock}")
    print("| tokens | fused planes (ms) | ns per element | (a) per-step (ms) | (a) / planes |")
    print("|---|---|---|---|---|")
    tokens = 512
    while tokens <= 16384:
        x = activations(tokens, args.features)
        fns = {"planes": lambda x=x: fused(x, scheme, "planes")}
        if not args.no_reference:
            fns["reference"] = lambda x=x: reference_step_by_step(torch.from_numpy(x), scheme)
        t = interleaved(fns, args.repeats)
        t_ref = t.get("reference", float("nan"))
        print(
            f"| {tokens:,} | {t['planes'] * 1e3:.1f} | {t['planes'] / x.size * 1e9:.2f} "
            f"| {t_ref * 1e3:.0f} | {t_ref / t['planes']:.0f}× |"
        )
        tokens *= 2
    print(f"load average after: {loadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--features", type=int, default=3584)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", nargs="*", default=SCHEMES)
    parser.add_argument("--no-reference", action="store_true", help="skip baseline (a)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (use with --threads 1 on a loaded machine)",
    )
    parser.add_argument("--threads", type=int, default=None, help="Numba and torch threads")
    parser.add_argument("--growth", action="store_true", help="time against 512 … 16384 tokens")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None:
        numba.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        main_cuda(args)
        return

    print(f"load average before: {loadavg()}")
    if args.growth:
        token_growth(args)
        return
    x = activations(args.tokens, args.features)
    xt = torch.from_numpy(x)
    bandwidth = copy_bandwidth(args.repeats)
    threads = f"numba threads {numba.get_num_threads()}, torch threads {torch.get_num_threads()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {threads}, "
          f"clock {args.clock}")  # fmt: skip
    print(f"input {x.shape} float32, {x.nbytes / 2**20:.0f} MiB; "
          f"copy bandwidth {bandwidth / 1e9:.2f} GB/s (read+write)")  # fmt: skip
    header = (
        "| code | T | spikes/elem | auto picks | planes (MiB) | events (MiB) "
        "| today: counts + events (ms) | fused planes (ms) | fused auto (ms) "
        "| fused events (ms) | two-step auto (ms) | torch CPU planes (ms) "
        "| (a) per-step torch (ms) | (a) / fused planes | fused planes / floor "
        "| torch / numba | peak RSS growth fused planes (MiB) | counts -> planes (ms) |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    for scheme in args.schemes:
        fns = {
            "today": lambda s=scheme: today(x, s),
            "planes": lambda s=scheme: fused(x, s, "planes"),
            "auto": lambda s=scheme: fused(x, s, "auto"),
            "events": lambda s=scheme: fused(x, s, "events"),
            "two_step": lambda s=scheme: two_step(x, s, "auto"),
            "torch": lambda s=scheme: fused(xt, s, "planes"),
            "counts_planes": lambda s=scheme: spikecode.encode(
                counts, s, layout="planes", max_spikes=None
            ),
        }
        src = np.ones(64 * 2**20, dtype=np.float32)  # the floor's copy, 256 MiB
        dst = np.empty_like(src)
        fns["copy"] = lambda d=dst, c=src: np.copyto(d, c)
        if not args.no_reference:
            fns["reference"] = lambda s=scheme: reference_step_by_step(xt, s)
        t = interleaved(fns, args.repeats)
        t_ref = t.get("reference", float("nan"))
        bandwidth = 2 * src.nbytes / t["copy"]  # read + write, in this scheme's rounds
        planes = fused(x, scheme, "planes")
        sizes = planes.layout_nbytes()
        auto = fused(x, scheme, "auto").layout
        moved = x.nbytes + args.tokens * 4 + planes.nbytes  # read x; write Vth and planes
        floor = moved / bandwidth
        growth = peak_growth(lambda s=scheme: fused(x, s, "planes"))
        print(
            f"| {scheme} | {planes.T} | {planes.spikes_per_element:.3f} | {auto} "
            f"| {sizes['planes'] / 2**20:.1f} | {sizes['events'] / 2**20:.1f} "
            f"| {t['today'] * 1e3:.1f} | {t['planes'] * 1e3:.1f} | {t['auto'] * 1e3:.1f} "
            f"| {t['events'] * 1e3:.1f} | {t['two_step'] * 1e3:.1f} | {t['torch'] * 1e3:.1f} "
            f"| {t_ref * 1e3:.0f} | {t_ref / t['planes']:.0f}× | {t['planes'] / floor:.2f} "
            f"| {t['torch'] / t['planes']:.2f} | {growth / 2**20:.0f} "
            f"| {t['counts_planes'] * 1e3:.1f} |"
        )
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
