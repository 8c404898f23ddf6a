"""Reports and plots grouped by routed expert (and family) for a MoE stats file (SPEC §8)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from spikecode.calibration import calibrate, save_stats
from spikecode.cli import main
from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import load_checkpoint
from spikecode.reports import (
    count_histograms,
    load_source,
    sparsity_report,
    tradeoff_report,
)
from spikecode.reports.plots import plot_hist
from spikecode.reports.sources import StatsSource
from spikecode.testing import write_tiny_moe_checkpoint

TEXTS = ["hello world the spiking brain model", "spike count token", "the model the count"]
SCHEME = "bitwise-bidirectional"


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe-groups")
    folder = write_tiny_moe_checkpoint(root / "tiny", with_tokenizer=True, num_experts=4)
    stats = calibrate(
        load_checkpoint(folder, dtype="float32"), TEXTS, k=(2.0, 3.0), samples=None, batch_size=4
    )
    path, _ = save_stats(root / "stats.json", stats)
    return path


def _by_hand(source, k, key):
    """Group → its layers' results, grouping by ``key(name, family)``."""
    out = {}
    for r in source.layer_results(k, SCHEME):
        group = key(r.name, r.family)
        if group is not None:
            out.setdefault(group, []).append(r)
    return out


def _expert(name, family):
    head, sep, tail = name.rpartition(".experts.")
    return f"{head}.experts.{tail.split('.')[0]}" if sep else None


@pytest.mark.parametrize(
    ("by", "key"), [("expert", _expert), ("family", lambda name, family: family)]
)
def test_grouped_sparsity_rows_are_hand_sums(stats_file, by, key):
    source = load_source(stats_file)
    report = sparsity_report(source, 3.0, SCHEME, by=by)
    data = report.to_dict()
    want = _by_hand(source, 3.0, key)
    assert [g["name"] for g in data["groups"]] == list(want)
    for group in data["groups"]:
        results = want[group["name"]]
        spikes = sum(r.stats.spikes for r in results)
        steps = sum(r.stats.steps for r in results)
        elements = sum(r.stats.elements for r in results)
        assert group["layers"] == len(results)
        assert group["spikes"] == spikes and group["elements"] == elements
        assert group["spikes_per_element"] == pytest.approx(spikes / elements)
        assert group["sparsity"] == pytest.approx(1 - spikes / steps)
    if by == "expert":  # three projections per reached expert, every one reached is a row
        assert all(g["layers"] == 3 for g in data["groups"])
        routing = StatsSource(source.stats).stats.routing
        reached = {f"{r.layer}.experts.{e}" for r in routing for e, n in
                   enumerate(r.expert_tokens) if n}  # fmt: skip
        assert set(want) == reached
    # the rows are the groups and the total; the total is unchanged by grouping
    assert [row["layer"] for row in report.row_data] == [*want, "total"]
    assert data["total"] == sparsity_report(source, 3.0, SCHEME).to_dict()["total"]


def test_grouped_tradeoff_points_are_the_grouped_sparsity_rows(stats_file):
    source = load_source(stats_file)
    data = tradeoff_report(source, None, SCHEME, by="expert").to_dict()
    assert data["by"] == "expert"
    for k in (2.0, 3.0):
        groups = sparsity_report(source, k, SCHEME, by="expert").to_dict()["groups"]
        points = [p for p in data["points"] if p["k"] == k]
        assert [p["group"] for p in points] == [g["name"] for g in groups]
        for p, g in zip(points, groups, strict=True):
            assert (p["sparsity"], p["T"], p["rel_error"]) == (
                g["sparsity"],
                g["T"],
                g["rel_error"],
            )
    plain = tradeoff_report(source, None, SCHEME).to_dict()
    assert plain["by"] is None and "group" not in plain["points"][0]


def test_expert_histograms_sum_the_experts_projections(stats_file):
    source = load_source(stats_file)
    histograms = count_histograms(source, 3.0, by="expert")
    want = _by_hand(source, 3.0, _expert)
    assert list(histograms) == list(want)
    for name, hist in histograms.items():
        counts = np.sum([r.histogram.counts for r in want[name]], axis=0)
        np.testing.assert_array_equal(hist.counts, counts)
    ax = plot_hist(histograms, k=3.0, group="routed expert")
    assert len(ax.get_lines()) == len(histograms)
    assert ax.get_legend().get_title().get_text() == "routed expert"


def test_grouping_by_expert_needs_a_moe_source():
    dense = load_source(None)
    with pytest.raises(SpikecodeError, match="MoE model"):
        count_histograms(dense, 3.0, by="expert")
    with pytest.raises(SpikecodeError, match="MoE model"):
        sparsity_report(dense, by="expert")
    with pytest.raises(SpikecodeError, match="family, expert, layer"):
        sparsity_report(dense, by="module")


def test_cli_groups_by_expert(stats_file, tmp_path):
    runner = CliRunner()
    out = tmp_path / "hist.png"
    result = runner.invoke(main, ["plot", "hist", str(stats_file), "--by", "expert",
                                  "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    result = runner.invoke(
        main, ["report", "sparsity", str(stats_file), "--by", "expert", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["by"] == "expert" and data["groups"]
    result = runner.invoke(main, ["report", "tradeoff", str(stats_file), "--by", "family"])
    assert result.exit_code == 0, result.output
    assert "up_proj" in result.output
    result = runner.invoke(main, ["report", "tradeoff", "--by", "expert"])  # the dense sample
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
