"""spikecode.reports.plots: what is drawn equals the data, files are what their extension says."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection

import spikecode
from spikecode.data import load_sample
from spikecode.energy.formatting import energy_unit
from spikecode.errors import SpikecodeError
from spikecode.reports import (
    ActivationSource,
    count_histogram,
    count_histograms,
    energy_report,
    equation24_report,
    load_source,
    raster_data,
    sparsity_report,
    tradeoff_report,
)
from spikecode.reports.plots import (
    POLARITY_COLORS,
    check_figure_path,
    plot_energy,
    plot_hist,
    plot_raster,
    plot_tradeoff,
    save_figure,
)

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def source():
    return load_source()


@pytest.fixture(scope="module")
def raster():
    return raster_data(load_sample()[1], k=3.0, tokens=(0, 4), channels=(2, 5, 7))


def test_raster_scatter_offsets_are_the_trains(raster):
    fig = plot_raster(raster)
    axes = fig.axes
    assert len(axes) == len(raster.trains)
    for ax, (scheme, dense) in zip(axes, raster.trains.items(), strict=True):
        collections = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(collections) == 2
        for collection, polarity in zip(collections, (1, -1), strict=True):
            expected = np.argwhere(dense == polarity)  # rows of (t, neuron)
            got = np.asarray(collection.get_offsets())
            np.testing.assert_array_equal(got.reshape(-1, 2), expected)
            colour = matplotlib.colors.to_hex(collection.get_edgecolor()[0])
            assert colour == POLARITY_COLORS[polarity]
        assert scheme in ax.get_title() and f"T = {dense.shape[0]}" in ax.get_title()
        assert ax.get_xlabel() == "time step"
        assert ax.get_xlim() == (-0.6, dense.shape[0] - 0.4)
    # All spikes of all panels together are exactly the non-zero train entries.
    total = sum(len(c.get_offsets()) for ax in axes for c in ax.collections)
    assert total == sum(int(np.count_nonzero(d)) for d in raster.trains.values())
    first = axes[0]
    assert first.get_ylabel().startswith("neuron")
    labels = [t.get_text() for t in first.get_yticklabels()]
    assert labels == ["t0 c2", "t0 c5", "t0 c7", "t4 c2", "t4 c5", "t4 c7"]
    assert all(ax.get_ylim() == first.get_ylim() for ax in axes)  # shared neuron axis
    (count_axis,) = axes[-1].child_axes  # the counts, right of the last panel
    counts = [t.get_text() for t in count_axis.get_yticklabels()]
    assert counts == [f"{int(c):+d}" for c in raster.counts.ravel()]


def test_raster_on_given_axes(raster):
    fig, axes = plt.subplots(1, 5)
    assert plot_raster(raster, ax=axes) is fig
    assert all(len(ax.collections) == 2 for ax in axes)
    with pytest.raises(SpikecodeError, match="sequence of 5 Axes"):
        plot_raster(raster, ax=axes[:2])


def test_hist_lines_are_the_fractions(source):
    # The sample's six layers are all query projections: one family, so per layer here.
    histograms = count_histograms(source, 3.0, by="layer")
    ax = plot_hist(histograms, k=3.0, group="layer")
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("spike count") and ax.get_ylabel()
    assert "k = 3" in ax.get_title()
    lines = ax.get_lines()
    assert len(lines) == len(histograms)
    for line, (name, hist) in zip(lines, histograms.items(), strict=True):
        assert line.get_label().startswith(name)
        x, y = line.get_data()
        counts = np.asarray(hist.counts)
        np.testing.assert_array_equal(x, np.arange(-64, 65))
        expected = np.where(counts > 0, counts / hist.total, np.nan)
        np.testing.assert_array_equal(y, expected)
        if hist.below + hist.above:
            assert "beyond ±64" in line.get_label()
    assert ax.get_legend().get_title().get_text() == "layer"
    with pytest.raises(SpikecodeError, match="at least one"):
        plot_hist({})


def test_hist_draws_identical_groups_once():
    shared = count_histogram(np.array([0, 1, 1, -2, 90]))
    other = count_histogram(np.array([3, 3, 0]))
    ax = plot_hist({"query": shared, "key": shared, "dense": other})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["query = key (1 beyond ±64)", "dense"]
    x, y = ax.get_lines()[0].get_data()
    assert y[x == 1][0] == 2 / 5 and np.isnan(y[x == 2][0])


def test_tradeoff_lines_are_the_points(source):
    report = tradeoff_report(source, (2.0, 3.0, 4.0), "ternary")
    fig = plot_tradeoff(report)
    left, right, twin = fig.axes
    points = report.to_dict()["points"]
    ks = [p["k"] for p in points]
    by_label = {line.get_label(): line for line in left.get_lines()}
    np.testing.assert_array_equal(by_label["sparsity"].get_xdata(), ks)
    np.testing.assert_array_equal(by_label["sparsity"].get_ydata(), [p["sparsity"] for p in points])
    np.testing.assert_array_equal(
        by_label["window-3 sparsity"].get_ydata(), [p["window_sparsity"] for p in points]
    )
    np.testing.assert_array_equal(
        right.get_lines()[0].get_ydata(), [p["rel_error"] for p in points]
    )
    np.testing.assert_array_equal(twin.get_lines()[0].get_ydata(), [p["cosine"] for p in points])
    assert left.get_xlabel().startswith("k") and right.get_xlabel().startswith("k")
    assert "reconstruction" in right.get_title() and "Vth·c" in right.get_ylabel()
    assert twin.get_ylabel() == "mean per-token cosine"
    # The dict form draws the same.
    again = plot_tradeoff(report.to_dict())
    assert again.axes[0].get_lines()[0].get_ydata().tolist() == [p["sparsity"] for p in points]
    with pytest.raises(SpikecodeError, match="tradeoff report"):
        plot_tradeoff(sparsity_report(source))


_PJ = {"pJ": 1.0, "nJ": 1e3, "µJ": 1e6, "mJ": 1e9}


def _bars(ax):
    """Bar heights in pJ, read back through the unit the y label names."""
    unit = ax.get_ylabel().split("(")[1].split(",")[0]
    scale = _PJ[unit]
    return {c.get_label(): [p.get_height() * scale for p in c.patches] for c in ax.containers}


def test_energy_bars_are_the_report(source):
    report = energy_report(source, 3.0, "ternary")
    ax = plot_energy(report)
    data = report.to_dict()
    bars = _bars(ax)
    assert set(bars) == {"dense FP16 MACs", "dense INT8 MACs", "spike-driven INT8 adds"}
    for label, mode in (("dense FP16 MACs", "fp16"), ("spike-driven INT8 adds", "spike")):
        expected = [layer["energy_per_token_pj"][mode] for layer in data["layers"]]
        expected.append(data["total"]["energy_per_token_pj"][mode])
        np.testing.assert_allclose(bars[label], expected, rtol=1e-12)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "layer"
    # The axis unit is the one the tables print the largest bar in (issue 9).
    largest = max(max(v) for v in bars.values())
    assert ax.get_ylabel() == f"energy per token ({energy_unit(largest)[1]}, log scale)"
    assert ax.get_ylabel() != "energy per token (pJ, log scale)"  # MiniLM: ~100 nJ a token
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "total"


def test_energy_with_memory_adds_fetch_bars(source):
    report = energy_report(source, memory="dram", block_sizes=(16, 64))
    bars = _bars(plot_energy(report))
    data = report.to_dict()
    expected = [layer["memory"]["block_skip"][1]["energy_per_token_pj"] for layer in data["layers"]]
    expected.append(data["total"]["memory"]["block_skip"][1]["energy_per_token_pj"])
    np.testing.assert_allclose(bars["weight fetch: block 64"], expected, rtol=1e-12)
    channel = [layer["memory"]["channel_skip"]["energy_per_token_pj"] for layer in data["layers"]]
    np.testing.assert_allclose(bars["weight fetch: channel skip"][:-1], channel, rtol=1e-12)
    assert "weight fetch: dense" in bars


def test_energy_by_family_sums_layers(tmp_path):
    from test_reports import make_stats, tiny_layers, write_stats

    layers = tiny_layers()
    src = load_source(write_stats(tmp_path, make_stats(layers)))
    report = energy_report(src)
    ax = plot_energy(report, by="family")
    data = report.to_dict()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["q_proj", "down_proj", "total"]
    bars = _bars(ax)
    for i, family in enumerate(("q_proj", "down_proj")):
        expected = sum(
            layer["energy_per_token_pj"]["spike"]
            for layer in data["layers"]
            if layer["family"] == family
        )
        assert bars["spike-driven INT8 adds"][i] == pytest.approx(expected)
    with pytest.raises(SpikecodeError, match="what-if"):
        plot_energy(equation24_report(1.13))
    with pytest.raises(SpikecodeError, match="'auto', 'layer' or 'family'"):
        plot_energy(report, by="colour")


def test_plots_draw_on_a_given_axes(source):
    fig, ax = plt.subplots()
    assert plot_hist(count_histograms(source), ax=ax) is ax
    fig, ax = plt.subplots()
    assert plot_energy(energy_report(ActivationSource(load_sample()[:1])), ax=ax) is ax
    fig, axes = plt.subplots(1, 2)
    assert plot_tradeoff(tradeoff_report(source, (3.0,)), ax=axes) is fig


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_save_figure_formats(tmp_path, fmt, raster):
    path = tmp_path / f"raster.{fmt.upper() if fmt == 'pdf' else fmt}"
    assert save_figure(plot_raster(raster), path) == path
    head = path.read_bytes()[:200]
    if fmt == "svg":
        assert b"<svg" in head or b"<?xml" in head
        assert b"<svg" in path.read_bytes()
    else:
        assert head.startswith(MAGIC[fmt])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp files left


def test_png_has_the_requested_size(tmp_path, raster):
    fig = plot_raster(raster)
    save_figure(fig, tmp_path / "r.png", dpi=50)
    image = plt.imread(tmp_path / "r.png")
    width, height = fig.get_size_inches() * 50
    assert image.shape[:2] == (round(height), round(width))


def test_save_figure_refuses_other_extensions_and_bad_targets(tmp_path, raster):
    fig = plot_raster(raster)
    for name in ("r.jpg", "r", "r.png.txt"):
        with pytest.raises(SpikecodeError, match=r"\.png, \.svg, \.pdf"):
            save_figure(fig, tmp_path / name)
    with pytest.raises(SpikecodeError, match="cannot write"):
        save_figure(fig, tmp_path / "missing" / "r.png")
    with pytest.raises(SpikecodeError, match="Figure"):
        save_figure(fig.axes[0], tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []
    assert check_figure_path("a/b.SVG") == "svg"


def test_failed_save_leaves_the_old_file(tmp_path, raster, monkeypatch):
    path = tmp_path / "r.png"
    path.write_bytes(b"old")
    fig = plot_raster(raster)

    def broken(target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_every_scheme_panel_decodes(raster):
    # The scatter points of each panel, read back as a train, decode to the counts.
    fig = plot_raster(raster)
    n = raster.counts.size
    for ax, scheme in zip(fig.axes, raster.trains, strict=False):
        T = raster.trains[scheme].shape[0]
        dense = np.zeros((T, n), dtype=np.int64)
        for collection, polarity in zip(ax.collections, (1, -1), strict=True):
            for t, neuron in np.asarray(collection.get_offsets()).reshape(-1, 2).astype(int):
                dense[t, neuron] = polarity
        weights = spikecode.encoders.schemes.get_scheme(scheme).step_weights(T)
        decoded = raster.zero_points[scheme] + weights @ dense
        np.testing.assert_array_equal(decoded, raster.counts.ravel())
