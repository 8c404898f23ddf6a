"""Benchmark: a deployment plan of a SpikingBrain-7B-width checkpoint (issue 18, item 5).

Target: "spikecode plan --target loihi2 gives a whole-model plan for a 7B-width checkpoint
on a laptop in under a minute". The checkpoint is the release layout at SpikingBrain-7B's
widths (28 layers, hidden 3584, intermediate 18944, W8ASpike scales) written by
:func:`spikecode.testing.write_sparse_gla_swa_checkpoint` into a temporary folder: ~15 GB
of apparent size stored as sparse-file holes, since the plan reads headers only.

Measured, ``--repeats`` times each (medians):

* ``cli``: a fresh ``python -m spikecode plan FOLDER --target loihi2`` process, wall clock
  from start to exit (interpreter start, imports, headers, the plan, the rendered table);
* ``imports``: a fresh process importing ``spikecode.plan`` and ``spikecode.reports``
  only, the part of ``cli`` that is not the plan;
* ``plan``: :func:`spikecode.plan.deployment_plan` in this process (imports done):
  reading ``config.json`` and every header, and the counting;
* ``render``: the table of that plan.

Usage::

    python benchmarks/bench_plan.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spikecode.plan import deployment_plan
from spikecode.testing import write_sparse_gla_swa_checkpoint


def _fresh(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_sparse_gla_swa_checkpoint(
            Path(tmp) / "spikingbrain-7b-widths", w8aspike=True
        )
        apparent = sum(f.stat().st_size for f in folder.iterdir())
        stored = sum(f.stat().st_blocks * 512 for f in folder.iterdir())
        times: dict[str, list[float]] = {"cli": [], "imports": [], "plan": [], "render": []}
        for _ in range(args.repeats):
            times["cli"].append(
                _fresh(["-m", "spikecode", "plan", str(folder), "--target", "loihi2"])
            )
            times["imports"].append(_fresh(["-c", "import spikecode.plan, spikecode.reports"]))
            start = time.perf_counter()
            plan = deployment_plan(folder, target="loihi2")
            times["plan"].append(time.perf_counter() - start)
            start = time.perf_counter()
            plan.render("table")
            times["render"].append(time.perf_counter() - start)
    model = plan.model
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print(f"checkpoint: {apparent / 2**30:.1f} GiB apparent, {stored / 2**20:.1f} MiB stored, "
          f"{len(model.projections)} projections")  # fmt: skip
    print(f"plan: {model.neurons:,} neurons, {model.synapses:,} synapses, {model.cores:,} cores, "
          f"{model.chips} chips")  # fmt: skip
    for name, values in times.items():
        print(f"{name:8s} median {statistics.median(values):8.3f} s  "
              f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")  # fmt: skip


if __name__ == "__main__":
    main()
