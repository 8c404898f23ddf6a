"""Matplotlib figures of spike trains, count distributions, the k trade-off and energy.

Each function draws the data of a :mod:`spikecode.reports` builder:

=======================  ==============================================  ===============
function                 draws                                           returns
=======================  ==============================================  ===============
:func:`plot_raster`      :func:`~spikecode.reports.raster_data`          Figure (panels)
:func:`plot_hist`        :func:`~spikecode.reports.count_histograms`     Axes
:func:`plot_tradeoff`    :func:`~spikecode.reports.tradeoff_report`      Figure (panels)
:func:`plot_energy`      :func:`~spikecode.reports.energy_report`        Axes
=======================  ==============================================  ===============

Every function takes ``ax=None``: None draws on a new figure (``pyplot.subplots``, so
figures show inline in notebooks); an Axes (or, for the multi-panel figures, a sequence
of Axes, one per panel) draws there. :func:`save_figure` writes a figure atomically as
PNG, SVG or PDF, chosen by the file extension.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spikecode._validate import as_path
from spikecode.calibration.records import CountHistogram
from spikecode.energy.formatting import energy_unit
from spikecode.errors import SpikecodeError
from spikecode.io import atomic_write
from spikecode.reports.plotdata import RasterData
from spikecode.reports.tables import Report

__all__ = [
    "FIGURE_FORMATS",
    "POLARITY_COLORS",
    "check_figure_path",
    "plot_energy",
    "plot_hist",
    "plot_raster",
    "plot_tradeoff",
    "save_figure",
]

FIGURE_FORMATS = ("png", "svg", "pdf")
"""File formats :func:`save_figure` writes, by extension."""

POLARITY_COLORS = {1: "#c0392b", -1: "#2471a3"}
"""Spike colour by polarity: +1 red, −1 blue."""

_MODE_STYLE = {
    "fp16": ("dense FP16 MACs", "#0072b2"),
    "int8": ("dense INT8 MACs", "#e69f00"),
    "spike": ("spike-driven INT8 adds", "#009e73"),
}


def _new_axes(n: int, **kwargs: Any) -> list[Axes]:
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, n, squeeze=False, **kwargs)
    return list(axes[0])


def _panels(ax: Any, n: int, what: str) -> list[Axes] | None:
    if ax is None:
        return None
    if isinstance(ax, Axes):
        axes: list[Any] | None = [ax]
    elif isinstance(ax, np.ndarray):  # what pyplot.subplots returns
        axes = list(ax.ravel())
    else:
        axes = list(ax) if isinstance(ax, Sequence) else None
    if axes is None or len(axes) != n or not all(isinstance(a, Axes) for a in axes):
        raise SpikecodeError(f"{what} needs ax=None or a sequence of {n} Axes")
    return axes


def _report_data(report: Report | Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    data = report.data if isinstance(report, Report) else report
    if not isinstance(data, Mapping) or data.get("report") != kind:
        raise SpikecodeError(f"expected a {kind} report (Report or its to_dict())")
    return data


# -- raster -------------------------------------------------------------------------------


def plot_raster(data: RasterData, ax: Any = None, *, title: str | None = None) -> Figure:
    """Time–neuron raster of the same counts under each code (report figure 10).

    One panel per code, side by side with a shared neuron axis: x is the time step,
    y the neuron (token × channel, token blocks separated by lines, neuron 0 at the
    top), a red tick a +1 spike, a blue tick a −1 spike. Panel widths follow T when the
    function makes the figure.

    Parameters
    ----------
    data
        From :func:`spikecode.reports.raster_data`.
    ax
        None, or a sequence (or array) of Axes, one per code in ``data.trains``.
    title
        Figure title (default: the layer, the k and the selection).

    Returns
    -------
    matplotlib.figure.Figure
        The figure; each panel's two scatter collections (``+1`` first, then ``−1``)
        hold the spikes' ``(t, neuron)`` offsets.
    """
    schemes = list(data.trains)
    axes = _panels(ax, len(schemes), "plot_raster")
    n_tok, n_chan = data.counts.shape
    neurons = n_tok * n_chan
    if axes is None:
        widths = [max(data.trains[s].shape[0], 3) + 1 for s in schemes]
        axes = _new_axes(
            len(schemes),
            sharey=True,
            figsize=(min(2.0 + 0.32 * sum(widths), 16.0), 1.6 + 0.16 * neurons),
            gridspec_kw={"width_ratios": widths},
            layout="constrained",
        )
    for panel, scheme in zip(axes, schemes, strict=True):
        dense = data.trains[scheme]
        T = dense.shape[0]
        for polarity in (1, -1):
            t, neuron = np.nonzero(dense == polarity)
            panel.scatter(
                t,
                neuron,
                marker="|",
                s=90,
                linewidths=2.0,
                color=POLARITY_COLORS[polarity],
                label=f"{'+1' if polarity > 0 else '−1'} spike",
            )
        panel.set_xlim(-0.6, T - 0.4)
        panel.set_ylim(neurons - 0.5, -0.5)
        step = 1 if T <= 10 else math.ceil(T / 8)
        panel.set_xticks(range(0, T, step))
        for boundary in range(n_chan, neurons, n_chan):
            panel.axhline(boundary - 0.5, color="0.75", linewidth=0.8)
        zp = data.zero_points.get(scheme, 0)
        shift = f", zero point {zp}" if zp else ""
        panel.set_title(f"{scheme}\nT = {T}{shift}", fontsize=9)
        panel.set_xlabel("time step")
    first = axes[0]
    first.set_yticks(range(neurons))
    first.set_yticklabels(
        [f"t{data.tokens[i // n_chan]} c{data.channels[i % n_chan]}" for i in range(neurons)],
        fontsize=7,
    )
    first.set_ylabel("neuron (token t, channel c)")
    # The counts the trains carry, on the right of the last panel.
    last = axes[-1].secondary_yaxis("right")
    last.set_yticks(range(neurons))
    last.set_yticklabels([f"{int(v):+d}" for v in data.counts.ravel()], fontsize=7)
    last.set_ylabel("count", fontsize=8)
    fig = first.figure
    handles, labels = first.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    where = f" of {data.layer}" if data.layer else ""
    tokens = f"{n_tok} token{'' if n_tok == 1 else 's'}"
    channels = f"{n_chan} channel{'' if n_chan == 1 else 's'}"
    fig.suptitle(
        title
        or f"Spike trains{where}: the same counts under each code (k = {data.k:g}, "
        f"{tokens} × {channels})",
        fontsize=10,
    )
    return fig


# -- histograms ---------------------------------------------------------------------------


def plot_hist(
    histograms: Mapping[str, CountHistogram],
    ax: Axes | None = None,
    *,
    k: float | None = None,
    group: str = "layer family",
) -> Axes:
    """Spike-count distribution per layer family, log-scale y (report figure 9).

    Each group is a line over the count value ``c``: the fraction of that group's
    elements with that count (empty bins are left out, so the log scale holds). Counts
    beyond ±64 are kept out of the bins and noted in the legend. Groups with identical
    histograms (q/k/v projections reading the same input) share one line, labelled
    ``"query = key = value"``.

    Parameters
    ----------
    histograms
        Group → :class:`~spikecode.calibration.CountHistogram`, from
        :func:`spikecode.reports.count_histograms`.
    ax
        Axes to draw on (None: a new figure).
    k
        The k the counts come from, for the title.
    group
        What a group is, for the legend title (``"layer family"``, ``"layer"``).

    Returns
    -------
    matplotlib.axes.Axes
        One line per distinct histogram, labelled with its group name(s).
    """
    if not histograms:
        raise SpikecodeError("plot_hist needs at least one histogram")
    if ax is None:
        (ax,) = _new_axes(1, figsize=(9.5, 4.5), layout="constrained")

    def bins(hist: CountHistogram) -> tuple[np.ndarray, np.ndarray]:
        counts = np.asarray(hist.counts, dtype=np.int64)
        return hist.offset + np.arange(len(counts), dtype=np.int64), counts

    present = [v[c > 0] for v, c in map(bins, histograms.values()) if c.any()]
    lo = min(int(v.min()) for v in present) if present else -1
    hi = max(int(v.max()) for v in present) if present else 1
    # Groups with identical histograms (q, k and v projections share their input) would
    # hide each other: draw them once, under all their names.
    merged: dict[tuple[Any, ...], list[str]] = {}
    first: dict[tuple[Any, ...], CountHistogram] = {}
    for name, hist in histograms.items():
        key = (hist.offset, hist.below, hist.above, tuple(int(v) for v in hist.counts))
        merged.setdefault(key, []).append(name)
        first.setdefault(key, hist)
    for key, names in merged.items():
        hist = first[key]
        total = hist.total
        if total == 0:
            continue
        values, counts = bins(hist)
        # Empty bins become gaps: a line never bridges counts that did not occur.
        freq = np.where(counts > 0, counts / total, np.nan)
        outside = hist.below + hist.above
        label = " = ".join(names)
        label += f" ({outside:,} beyond ±{-hist.offset})" if outside else ""
        ax.plot(values, freq, marker=".", markersize=4, linewidth=1.2, label=label)
    ax.set_yscale("log")
    ax.set_xlim(lo - 1, hi + 1)
    ax.set_xlabel("spike count c = round(x / Vth)")
    ax.set_ylabel("fraction of elements")
    ax.grid(True, which="major", alpha=0.3)
    suffix = f" (k = {k:g})" if k is not None else ""
    ax.set_title(f"Spike-count distribution{suffix}")
    # Outside the axes, on the right: inside, "best" still lands on the curves when
    # they fill the plot (the log-scale tails reach every corner).
    ax.legend(
        title=group if len(histograms) > 1 else None,
        fontsize=8,
        ncols=2 if len(histograms) > 6 else 1,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    return ax


# -- trade-off ----------------------------------------------------------------------------


def plot_tradeoff(report: Report | Mapping[str, Any], ax: Any = None) -> Figure:
    """Sparsity and accuracy against k (the trade-off of the report's table 11).

    Left panel: sparsity, windowed sparsity and the share of ``|c| ≤ 7``; right panel:
    relative error (left axis) and mean cosine (right axis, a twin).

    Parameters
    ----------
    report
        :func:`spikecode.reports.tradeoff_report` or its ``to_dict()``.
    ax
        None, or a sequence (or array) of two Axes (sparsity, accuracy).

    Returns
    -------
    matplotlib.figure.Figure
        The figure; the accuracy panel's cosine twin is its ``axes[-1]``.
    """
    data = _report_data(report, "tradeoff")
    points = data["points"]
    if not points:
        raise SpikecodeError("the trade-off report has no points")
    axes = _panels(ax, 2, "plot_tradeoff")
    if axes is None:
        axes = _new_axes(2, figsize=(10, 4), layout="constrained")
    left, right = axes
    ks = [p["k"] for p in points]
    w = data["window"]
    for key, label, style in (
        ("sparsity", "sparsity", "o-"),
        ("window_sparsity", f"window-{w} sparsity", "s-"),
        ("within_7_fraction", "share of |c| ≤ 7", "^--"),
    ):
        left.plot(ks, [p[key] for p in points], style, label=label)
    left.set_xlabel("k (Vth = mean|x| / k)")
    left.set_ylabel("fraction")
    left.set_title(f"Sparsity ({data['scheme']})")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    measure = "layer output" if data["error_measure"] == "output" else "activation reconstruction"
    errors = [p["rel_error"] for p in points]
    cosines = [p["cosine"] for p in points]
    lines = []
    if all(v is not None for v in errors):
        lines += right.plot(ks, errors, "o-", color="#c0392b", label="relative error")
    right.set_xlabel("k (Vth = mean|x| / k)")
    right.set_ylabel(
        "relative error ||ŷ − y|| / ||y||"
        if data["error_measure"] == "output"
        else "relative error ||Vth·c − x|| / ||x||"
    )
    right.set_title(f"Accuracy ({measure})")
    right.grid(True, alpha=0.3)
    if all(v is not None for v in cosines):
        twin = right.twinx()
        lines += twin.plot(ks, cosines, "s--", color="#2471a3", label="mean cosine")
        twin.set_ylabel("mean per-token cosine")
    right.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    return left.figure


# -- energy -------------------------------------------------------------------------------


def _energy_groups(data: Mapping[str, Any], by: str) -> list[tuple[str, dict[str, float]]]:
    memory = data["settings"]["memory"]
    groups: dict[str, dict[str, float]] = {}

    def values(entry: Mapping[str, Any]) -> dict[str, float]:
        out = {m: entry["energy_per_token_pj"][m] for m in _MODE_STYLE}
        fetch = entry.get("memory")
        if memory is not None and fetch is not None:
            out["fetch dense"] = fetch["dense"]["energy_per_token_pj"]
            channel = fetch.get("channel_skip")
            if channel is not None:
                out["fetch channel skip"] = channel["energy_per_token_pj"]
            for block in fetch.get("block_skip", []):
                if block.get("energy_per_token_pj") is not None:
                    out[f"fetch block {block['block_size']}"] = block["energy_per_token_pj"]
        return out

    for layer in data["layers"]:
        name = layer["name"] if by == "layer" else layer.get("family") or layer["name"]
        entry = values(layer)
        if name in groups:
            entry = {key: groups[name].get(key, 0.0) + v for key, v in entry.items()}
        groups[name] = entry
    out = list(groups.items())
    if data.get("total") is not None:
        out.append(("total", values(data["total"])))
    return out


def plot_energy(
    report: Report | Mapping[str, Any], ax: Axes | None = None, *, by: str = "auto"
) -> Axes:
    """Energy per token of each layer: dense FP16 vs INT8 vs spike arithmetic (SPEC §6).

    Grouped bars on a log scale, one group per layer (or layer family) and the network
    total; with a memory level in the report, hatched grey bars add the weight-fetch
    energy per token under dense fetching, channel skipping and block skipping.

    Parameters
    ----------
    report
        :func:`spikecode.reports.energy_report` or its ``to_dict()`` (with layers).
    ax
        Axes to draw on (None: a new figure).
    by
        ``"layer"``, ``"family"`` (per-token energies summed over each family's
        layers) or ``"auto"`` (layers up to 12, families beyond).

    Returns
    -------
    matplotlib.axes.Axes
        The bars are its containers, one per series, labelled like the legend. Heights
        are in the unit the tables use for the largest bar (pJ, nJ, µJ or mJ:
        ``spikecode.energy.formatting.energy_unit``), named on the y axis.
    """
    data = _report_data(report, "energy")
    if not data["layers"]:
        raise SpikecodeError("plot_energy needs an energy report with layers, not a what-if")
    if by not in ("auto", "layer", "family"):
        raise SpikecodeError(f"group energy bars by 'auto', 'layer' or 'family', not {by!r}")
    if by == "auto":
        by = "layer" if len(data["layers"]) <= 12 else "family"
    groups = _energy_groups(data, by)
    series = list(dict.fromkeys(key for _, entry in groups for key in entry))
    if ax is None:
        # Room for every group's bars and its label, plus the legend on the right.
        width_in = min(max(7.0, 2.5 + len(groups) * (0.5 + 0.15 * len(series))), 18.0)
        (ax,) = _new_axes(1, figsize=(width_in, 4.8), layout="constrained")
    n = len(series)
    width = 0.8 / n
    x = np.arange(len(groups), dtype=float)
    if groups[-1][0] == "total":
        x[-1] += 0.5  # set the network total apart
    # One unit for the axis, chosen like the tables choose theirs, by the largest bar.
    largest = max((v for _, entry in groups for v in entry.values() if np.isfinite(v)), default=0.0)
    scale, unit = energy_unit(largest)
    greys = ["#4d4d4d", "#808080", "#a6a6a6", "#bfbfbf", "#d9d9d9", "#ececec"]
    hatches = ["", "//", "xx", "..", "\\\\", "++"]
    for i, key in enumerate(series):
        heights = [entry.get(key, np.nan) / scale for _, entry in groups]
        if key in _MODE_STYLE:
            label, color = _MODE_STYLE[key]
            style: dict[str, Any] = {"color": color}
        else:
            j = i - len(_MODE_STYLE)
            label = key.replace("fetch ", "weight fetch: ")
            style = {
                "color": greys[j % len(greys)],
                "hatch": hatches[j % len(hatches)],
                "edgecolor": "0.25",
                "linewidth": 0.4,
            }
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label, **style)
    ax.set_yscale("log")
    ax.set_xticks(x)
    # Rotate the labels when they would run into each other (many groups, or long module
    # names such as the bundled sample's encoder.layer.0.attention.self.query).
    crowded = len(groups) > 8 or sum(len(name) for name, _ in groups) > 80
    ax.set_xticklabels(
        [name for name, _ in groups],
        rotation=(90 if len(groups) > 16 else 30) if crowded else 0,
        ha="right" if crowded and len(groups) <= 16 else "center",
        fontsize=7 if len(groups) > 16 else None,
    )
    if groups[-1][0] == "total":
        ax.axvline(x[-1] - 0.75, color="0.6", linestyle=":", linewidth=1)
    ax.set_ylabel(f"energy per token ({unit}, log scale)")
    what_group = "layer family" if by == "family" else "layer"
    ax.set_xlabel(what_group)
    memory = data["settings"]["memory"]
    k = data.get("k")
    what = f"k = {k:g}, {data['scheme']}" if k is not None else data.get("scheme") or ""
    where = f"; weight fetch from {memory}" if memory else "; arithmetic only"
    ax.set_title(f"Energy per token by {what_group} ({what}{where})", fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, ncols=2 if n > 4 else 1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


# -- saving -------------------------------------------------------------------------------


def check_figure_path(path: str | os.PathLike[str]) -> str:
    """Return the figure format of ``path`` from its extension (png, svg or pdf).

    Raises
    ------
    SpikecodeError
        Any other extension.
    """
    suffix = as_path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise SpikecodeError(
            f"cannot write a figure as {suffix or '(no extension)'}; use a file ending in "
            + ", ".join(f".{f}" for f in FIGURE_FORMATS),
            file=str(path),
        )
    return suffix


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` atomically as PNG, SVG or PDF, chosen by the extension of ``path``.

    The figure is rendered into a temporary file beside ``path`` and renamed into place,
    so a failure leaves no partial file.

    Parameters
    ----------
    fig
        The figure (an Axes' ``.figure`` for the single-panel plots).
    path
        Target file: ``.png``, ``.svg`` or ``.pdf``.
    dpi
        Resolution of PNG output.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fmt = check_figure_path(path)
    if not isinstance(fig, Figure):
        raise SpikecodeError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    with atomic_write(path) as tmp:
        # Metadata without dates keeps SVG/PDF output reproducible.
        metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata[fmt])
    return as_path(path)
