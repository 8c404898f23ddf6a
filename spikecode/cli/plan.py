"""``spikecode plan``: a whole model's deployment plan on a neuromorphic target.

SOURCE is a checkpoint folder (shapes from the safetensors headers: no weight is loaded)
or a calibration stats file. The plan is built by :mod:`spikecode.plan` (imported inside
the command, so ``--help`` stays light); this module parses options and prints or writes
(atomically) the rendered text.
"""

from __future__ import annotations

from pathlib import Path

import click

from spikecode.cli._common import emit_rendered

__all__ = ["plan_command"]


@click.command("plan")
@click.argument("source", metavar="SOURCE", type=click.Path(path_type=Path))
@click.option(
    "--target",
    default="loihi2",
    show_default=True,
    help="Target chip: a shipped table (loihi2, spinnaker2) or a JSON file in that layout.",
)
@click.option(
    "--stats",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Calibration stats file of the same model (with a checkpoint SOURCE): time steps, "
    "spikes and synaptic operations per token.",
)
@click.option("--k", type=float, default=None, help="Which k of the stats [default: 3].")
@click.option(
    "--scheme", default=None, help="Which code of the stats [default: bitwise-bidirectional]."
)
@click.option(
    "--include",
    multiple=True,
    help="Projections to plan (fnmatch pattern on module names, repeatable) [default: all].",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Projections to leave out (repeatable), added to the default lm_head.",
)
@click.option(
    "--format",
    "fmt",
    default="table",
    show_default=True,
    metavar="table|json|csv|markdown",
    help="Output format.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file (atomically) instead of printing.",
)
def plan_command(
    source: Path,
    target: str,
    stats: Path | None,
    k: float | None,
    scheme: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
    out: Path | None,
) -> None:
    """Neurons, synapses, memory, cores and chips of a whole model on a target.

    SOURCE is a checkpoint folder (SpikingBrain GLA-SWA or Hugging Face layout: config.json
    and safetensors; only the file headers are read, so a 7B-width model plans in
    seconds) or a calibration stats file (spikecode calibrate --out stats.json). Per
    projection and for the model: neurons (one integrator per output and scale group),
    synapses and their memory, cores and chips under the target's published limits, and,
    from calibration, time steps, spikes and synaptic operations per token. The rule and
    the limits' sources: docs/deployment.rst.
    """
    from spikecode._select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
    from spikecode.plan import deployment_plan
    from spikecode.reports import check_format

    check_format(fmt)
    plan = deployment_plan(
        source,
        target=target,
        stats=stats,
        k=k,
        scheme=scheme,
        include=tuple(include) or DEFAULT_INCLUDE,
        exclude=(*DEFAULT_EXCLUDE, *exclude),
    )
    emit_rendered(plan, fmt, out)
