"""``spikecode plot``: raster, count histogram, k trade-off and energy figures.

Figures are drawn by :mod:`spikecode.reports.plots` from :mod:`spikecode.reports` data and saved
atomically as PNG, SVG or PDF (by the extension of ``--out``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from spikecode.cli._common import (
    REPORT_K,
    REPORT_SCHEME,
    k_option,
    k_values_option,
    out_option,
    parse_k,
)
from spikecode.cli.report import open_source, parse_ints, source_options
from spikecode.errors import SpikecodeError

__all__ = ["parse_indices", "plot_group"]


def parse_indices(text: str, option: str) -> Sequence[int]:
    """Parse ``"1:4"`` (start:stop, stop excluded) or ``"0,5,9"`` into indices.

    A ``START:STOP`` stays a :class:`range`: its bounds are checked against the array
    before any index is listed (``0:100000000`` must not build 10**8 integers first).
    """
    try:
        if ":" in text:
            start, stop = (int(part) if part.strip() else None for part in text.split(":"))
            if start is None or stop is None or stop <= start:
                raise ValueError
            return range(start, stop)
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SpikecodeError(
            f"{option} takes START:STOP or comma-separated indices, got {text!r}"
        ) from None
    if not values:
        raise SpikecodeError(f"{option} takes START:STOP or comma-separated indices")
    return values


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--dpi", type=int, default=150, show_default=True, help="PNG resolution.")(
        func
    )
    func = out_option(required=True, help="Figure file: .png, .svg or .pdf.")(func)
    return source_options(func)


def _save(fig: Any, out: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    from spikecode.reports.plots import save_figure

    try:
        if dpi <= 0:
            raise SpikecodeError(f"--dpi must be positive, got {dpi}")
        save_figure(fig, out, dpi=dpi)
    finally:
        plt.close(fig)
    click.echo(f"wrote {out}", err=True)


def _prepare(out: Path) -> None:
    from spikecode.reports.plots import check_figure_path

    check_figure_path(out)  # before any work: a wrong extension fails at once
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; files only


@click.group("plot")
def plot_group() -> None:
    """Figures of a stats file or activations: raster, hist, tradeoff, energy.

    SOURCE is as for spikecode report (a stats .json, an activation file, or a
    checkpoint folder with --data; none = the bundled sample). The file type follows
    --out: .png, .svg or .pdf.
    """


@plot_group.command("raster")
@_common
@k_option(default=3.0, help="Threshold divisor.")
@click.option(
    "--layer",
    default="0",
    show_default=True,
    help="Layer of a 3-D array: its name (as in report sparsity) or index.",
)
@click.option("--tokens", default="1:4", show_default=True, help="Tokens: START:STOP or i,j,...")
@click.option("--channels", default="0:8", show_default=True, help="Channels: START:STOP or i,j.")
def raster_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    out: Path,
    dpi: int,
    k: float,
    layer: str,
    tokens: str,
    channels: str,
) -> None:
    """Time-neuron raster of a few tokens x channels under each of the five codes."""
    _prepare(out)
    from spikecode.reports import ActivationSource, raster_data
    from spikecode.reports.plots import plot_raster

    src = open_source(source, key, data, samples, "plot")
    if not isinstance(src, ActivationSource):
        raise SpikecodeError(
            "a raster needs activations; a stats file holds no spike trains", file=str(source)
        )
    arrays = src.layer_arrays()
    if layer in src.names:
        index = src.names.index(layer)
    elif layer.isdigit() and int(layer) < len(arrays):
        index = int(layer)
    else:
        raise SpikecodeError(
            f"--layer {layer!r} is not a layer; give an index 0..{len(arrays) - 1} or a name: "
            + ", ".join(src.names)
        )
    data = raster_data(
        arrays[index],
        layer=src.names[index],
        k=k,
        tokens=parse_indices(tokens, "--tokens"),
        channels=parse_indices(channels, "--channels"),
    )
    fig = plot_raster(data)
    _save(fig, out, dpi)


@plot_group.command("hist")
@_common
@REPORT_K
@click.option(
    "--by",
    default=None,
    metavar="family|expert|layer",
    help="One line per layer family (q_proj, ...), per routed expert of a MoE stats file "
    "(its projections summed) or per layer [default: family for stats files, layer for "
    "activations].",
)
def hist_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    out: Path,
    dpi: int,
    k: float | None,
    by: str | None,
) -> None:
    """Spike-count distribution per layer family, log scale (report figure 9)."""
    _prepare(out)
    from spikecode.reports import ActivationSource, count_histograms
    from spikecode.reports.plots import plot_hist

    src = open_source(source, key, data, samples, "plot")
    if by is None:
        # An activation file holds a few layers, often of one family (the sample: six
        # query projections): one line each says more than one summed line.
        by = "layer" if isinstance(src, ActivationSource) else "family"
    histograms = count_histograms(src, k, by=by)
    group = {"layer": "layer", "expert": "routed expert"}.get(by, "layer family")
    ax = plot_hist(histograms, k=src.resolve_k(k), group=group)
    _save(ax.figure, out, dpi)


@plot_group.command("tradeoff")
@_common
@k_values_option(default=None, help="k values [default: 2 2.5 3 3.5 4; a stats file's].")
@REPORT_SCHEME
def tradeoff_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    out: Path,
    dpi: int,
    k_values: tuple[str, ...],
    scheme: str | None,
) -> None:
    """Sparsity (plain, windowed) and error against k (the report's table 11)."""
    _prepare(out)
    from spikecode.reports import tradeoff_report
    from spikecode.reports.plots import plot_tradeoff

    values = parse_k(k_values) if k_values else None
    fig = plot_tradeoff(
        tradeoff_report(open_source(source, key, data, samples, "plot"), values, scheme)
    )
    _save(fig, out, dpi)


@plot_group.command("energy")
@_common
@REPORT_K
@REPORT_SCHEME
@click.option("--table", default=None, help="Energy table: a JSON file or a shipped name.")
@click.option("--memory", default=None, help="Add weight-fetch energy at this memory level.")
@click.option("--block-sizes", default=None, help="Block sizes [default: 16,64,256].")
@click.option("--out-features", type=int, default=None, help="Fan-out for activation files.")
@click.option(
    "--by",
    default="auto",
    show_default=True,
    metavar="auto|layer|family",
    help="Bars per layer or per layer family (auto: families beyond 12 layers).",
)
def energy_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    out: Path,
    dpi: int,
    k: float | None,
    scheme: str | None,
    table: str | None,
    memory: str | None,
    block_sizes: str | None,
    out_features: int | None,
    by: str,
) -> None:
    """Energy per token and layer: FP16 vs INT8 vs spike arithmetic (+ weight fetch)."""
    _prepare(out)
    from spikecode.reports import energy_report
    from spikecode.reports.plots import plot_energy

    report = energy_report(
        open_source(source, key, data, samples, "plot"),
        k,
        scheme,
        table=table,
        memory=memory,
        block_sizes=parse_ints(block_sizes, "--block-sizes"),
        out_features=out_features,
    )
    ax = plot_energy(report, by=by)
    _save(ax.figure, out, dpi)
