"""``spikecode merge-stats``: one stats file from those of disjoint sample sets."""

from __future__ import annotations

from pathlib import Path

import click

from spikecode.cli._common import echo_json, plural
from spikecode.errors import SpikecodeError

__all__ = ["merge_stats_command"]


@click.command("merge-stats")
@click.argument(
    "stats_files",
    nargs=-1,
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="STATS...",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The merged stats file (.json; a CSV is written beside it).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def merge_stats_command(stats_files: tuple[Path, ...], out: Path, fmt: str) -> None:
    """Merge stats files of disjoint sample sets of one model into one.

    The result equals one calibration over the union of the samples: count histograms,
    spike totals and channel activity exactly, Vth moments and output errors up to
    float rounding. The files must come from the same checkpoint with the same k
    values, codes and settings, each written by `spikecode calibrate --out` (stats file
    version 2). That the sample sets are disjoint is your promise: the files cannot
    show it.
    """
    from spikecode.calibration import load_stats, save_stats
    from spikecode.calibration.merge import merge_stats

    if len(stats_files) < 2:
        raise SpikecodeError("give at least two stats files to merge")
    if out.suffix.lower() != ".json":
        raise SpikecodeError("--out must name a .json file", file=str(out))
    if out.resolve() in {path.resolve() for path in stats_files}:
        raise SpikecodeError("--out must not be one of the input files", file=str(out))
    parts = [load_stats(path) for path in stats_files]
    merged = merge_stats(parts, labels=[str(path) for path in stats_files])
    json_path, csv_path = save_stats(out, merged)
    if fmt == "json":
        echo_json(
            {
                "inputs": [str(path) for path in stats_files],
                "samples": merged.data.samples,
                "tokens": merged.data.tokens,
                "layers": len(merged.layers),
                "out": str(json_path),
                "csv": str(csv_path),
            }
        )
        return
    click.echo(
        f"spikecode merge-stats  {len(parts)} files -> {json_path}: "
        f"{plural(merged.data.samples, 'sample')}, {plural(merged.data.tokens, 'token')}, "
        f"{plural(len(merged.layers), 'projection')}"
    )
    click.echo(f"  written: {json_path} and {csv_path}")
