"""The stats file: exact round trips, the CSV beside it, and every way a file can be bad."""

import copy
import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import spikecode
from spikecode.calibration import (
    CalibrationStats,
    CheckpointInfo,
    DataInfo,
    LayerAccumulator,
    k_key,
    layer_family,
    load_stats,
    save_stats,
    summarize,
    window_key,
)
from spikecode.errors import SpikecodeError

SCHEMES = ("bitwise-bidirectional", "ternary", "binary")
KS = (2.0, 3.0, 4.5)


@pytest.fixture(scope="module")
def stats():
    gen = torch.Generator().manual_seed(0)
    layers = []
    for name, n_in, n_out, rows in (
        ("model.layers.0.attn.q_proj", 128, 32, 40),
        ("model.layers.0.attn.gk_proj.0", 48, 16, 40),
        ("model.layers.0.mlp.down_proj", 96, 8, 40),
    ):
        acc = LayerAccumulator(
            name,
            n_in,
            n_out,
            KS,
            schemes=SCHEMES,
            layer=nn.Linear(n_in, n_out),
            error_rows=5,
            error_stride=4,
        )
        for _ in range(3):
            acc.update(torch.randn(rows, n_in, generator=gen) * 3)
        layers.append(acc.result())
    return CalibrationStats.create(
        checkpoint=CheckpointInfo("/models/x", "gla_swa", "gla_swa", "bfloat16"),
        data=DataInfo("bundled corpus", 12, 120, 4096),
        k=KS,
        schemes=SCHEMES,
        window=3,
        block_sizes=(16, 64, 256),
        layers=layers,
        error_rows=5,
        error_stride=4,
    )


@pytest.fixture
def saved(tmp_path, stats):
    path, _ = save_stats(tmp_path / "stats.json", stats)
    return path


def test_round_trip_is_exact(saved, stats):
    assert load_stats(saved) == stats
    raw = json.loads(saved.read_text())
    assert raw["format"] == "spikecode.stats" and raw["version"] == 2
    assert raw["spikecode_version"] == spikecode.__version__
    assert raw["k"] == [2.0, 3.0, 4.5] and list(raw["totals"]) == ["2", "3", "4.5"]
    assert (raw["error_rows"], raw["error_stride"]) == (5, 4)
    layer = raw["layers"][0]
    assert layer["family"] == "q_proj" and layer["tokens"] == 120 and layer["error_tokens"] == 15
    entry = layer["by_k"]["3"]
    assert len(entry["vth"]["histogram"]["edges"]) == 33
    assert len(entry["vth"]["histogram"]["counts"]) == 32
    assert entry["count_histogram"]["offset"] == -64
    assert len(entry["count_histogram"]["counts"]) == 129
    assert set(entry["activity"]["block_fetched_channels"]) == {"16", "64", "256"}
    assert set(entry["schemes"]) == set(SCHEMES)
    assert entry["schemes"]["ternary"]["window"] == 3


def test_csv_beside_the_json(saved, stats):
    with open(saved.with_suffix(".csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(stats.layers) * len(KS) * len(SCHEMES)
    for row in rows:
        entry = stats.layer(row["layer"]).by_k[row["k"]]
        s = entry.schemes[row["scheme"]]
        assert int(row["spikes"]) == s.spikes and int(row["T"]) == s.T
        assert float(row["sparsity"]) == s.sparsity
        assert float(row["window_sparsity"]) == s.window_sparsity
        assert float(row["output_rel_error"]) == entry.output_rel_error
        assert float(row["block_fetched_channels_64"]) == entry.activity.block_fetched_channels[64]


def test_totals_are_element_weighted(stats):
    for key in ("2", "3", "4.5"):
        for scheme in SCHEMES:
            entries = [(layer, layer.by_k[key]) for layer in stats.layers]
            elements = np.array([layer.elements for layer, _ in entries], dtype=float)
            spikes = sum(e.schemes[scheme].spikes for _, e in entries)
            slots = sum(layer.elements * e.schemes[scheme].T for layer, e in entries)
            errors = np.array([e.output_rel_error for _, e in entries])
            w_spikes = sum(e.schemes[scheme].window_spikes for _, e in entries)
            w_steps = sum(e.schemes[scheme].window_steps for _, e in entries)
            total = stats.totals[key][scheme]
            assert total["spikes_per_element"] == pytest.approx(spikes / elements.sum())
            # One firing-rate definition (issue 9): spikes over neuron-step slots.
            assert total["firing_rate"] == pytest.approx(spikes / slots)
            assert total["sparsity"] == pytest.approx(1 - spikes / slots)
            assert total["window3_sparsity"] == pytest.approx(1 - w_spikes / w_steps)
            assert total["output_rel_error"] == pytest.approx(np.average(errors, weights=elements))
    pairs = [(stats.layers[0], "2"), (stats.layers[1], "4.5"), (stats.layers[2], "3")]
    mixed = summarize(pairs, "ternary")
    assert mixed["spikes_per_element"] == pytest.approx(
        sum(layer.by_k[k].schemes["ternary"].spikes for layer, k in pairs)
        / sum(layer.elements for layer, _ in pairs)
    )


def test_names():
    assert [k_key(v) for v in (3, 3.0, 2.5, 0.1, 12)] == ["3", "3", "2.5", "0.1", "12"]
    assert layer_family("model.layers.0.attn.q_proj") == "q_proj"
    assert layer_family("model.layers.0.attn.gk_proj.1") == "gk_proj.1"
    assert layer_family("encoder.layer.0.attention.self.query") == "q_proj"  # by role (issue 9)
    assert window_key(3) == "window3_sparsity"


def test_other_readers_accept_the_file(saved):
    from spikecode.reports import load_source, sparsity_report

    report = sparsity_report(load_source(saved), k=3.0, scheme="ternary")
    assert len(report.rows()) >= 3


# ------------------------------------------------------------------------ bad files


def _delete(raw, path):
    parts = path.replace("[", ".").replace("]", "").split(".")
    node = raw
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[parts[-1]]


@pytest.mark.parametrize(
    "field",
    [
        "version",
        "k",
        "schemes",
        "window",
        "block_sizes",
        "checkpoint",
        "checkpoint.kind",
        "checkpoint.dtype",
        "data",
        "data.tokens",
        "data.max_length",
        "layers",
        "layers[0].name",
        "layers[1].in_features",
        "layers[0].by_k",
        "layers[0].by_k.3",
        "layers[0].by_k.3.vth",
        "layers[0].by_k.3.vth.mean",
        "layers[0].by_k.3.vth.histogram.counts",
        "layers[2].by_k.4.5.count_histogram.below",
        "layers[0].by_k.3.activity.block_fetched_channels.64",
        "layers[0].by_k.3.activity.tokens",
        "layers[0].by_k.3.schemes.ternary",
        "layers[0].by_k.3.schemes.ternary.spikes",
        "layers[0].by_k.3.max_abs_count",
        "layers[0].by_k.3.output_rel_error",
        "layers[0].by_k.3.output_cosine",
        "layers[0].by_k.3.output_sq_error",
        "layers[0].by_k.3.count_histogram.outliers",
        "layers[0].output_sq_norm",
        "totals",
        "totals.3.binary.sparsity",
        "totals.4.5.ternary.window3_sparsity",
        "spikecode_version",
        "created",
    ],
)
def test_missing_field_is_named(saved, field):
    raw = json.loads(saved.read_text())
    path = field.replace("by_k.4.5", "by_k.4_5").replace("totals.4.5", "totals.4_5")
    raw = json.loads(json.dumps(raw).replace('"4.5": ', '"4_5": '))
    _delete(raw, path)
    text = json.dumps(raw).replace('"4_5": ', '"4.5": ')
    saved.write_text(text)
    with pytest.raises(SpikecodeError) as info:
        load_stats(saved)
    message = str(info.value)
    assert str(saved) in message
    assert field.split(".")[-1] in message or field in message


def _mutate(raw, change):
    raw = copy.deepcopy(raw)
    change(raw)
    return raw


def _entry(raw, layer=0, key="3"):
    return raw["layers"][layer]["by_k"][key]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(format="other"), "not a spikecode stats file"),
        (lambda r: r.update(version=3), "version 3 is not supported"),
        (lambda r: r.update(version=True), "version True is not supported"),
        (lambda r: _entry(r)["count_histogram"].update(outliers=[[70, 1]]), "outliers"),
        (lambda r: _entry(r)["count_histogram"].update(outliers=[[3, 1]]), "outliers"),
        (lambda r: _entry(r)["count_histogram"].update(outliers={}), "outliers"),
        (lambda r: _entry(r)["count_histogram"].update(outliers=[[1, 2, 3]]), "outliers"),
        (lambda r: _entry(r).update(output_sq_error=-1.0), "output_sq_error"),
        (lambda r: r["layers"][0].update(output_sq_norm="x"), "output_sq_norm"),
        (lambda r: r.update(k=[3.0, -1.0]), "k\\[1\\]"),
        (lambda r: r.update(k=[3.0, 3]), "repeats"),
        (lambda r: r.update(schemes=["morse"]), "unknown code"),
        (lambda r: r.update(window=0), "'window' must be >= 1"),
        (lambda r: r["checkpoint"].update(kind="onnx"), "checkpoint.kind"),
        (lambda r: r["data"].update(tokens="many"), "data.tokens"),
        (lambda r: r["layers"].append(r["layers"][0]), "twice"),
        (lambda r: r["layers"][0].update(tokens=7, error_tokens=7), "sums to"),
        (lambda r: r["layers"][0].update(error_tokens=10**6), "error_tokens"),
        (lambda r: _entry(r)["vth"].update(mean=float("nan")), "vth.mean"),
        (lambda r: _entry(r)["vth"]["histogram"]["counts"].pop(), "32 values"),
        (lambda r: _entry(r)["vth"]["histogram"]["counts"].__setitem__(0, 99), "sums to"),
        (lambda r: _entry(r)["count_histogram"].update(above=5), "count_histogram"),
        (lambda r: _entry(r)["activity"].update(active_channels=-1), "activity"),
        (lambda r: _entry(r)["schemes"]["ternary"].update(T=0), "T >= 1"),
        (lambda r: _entry(r)["schemes"]["ternary"].update(window=4), "window"),
        (lambda r: _entry(r).update(output_cosine="x"), "output_cosine"),
        (lambda r: r["totals"]["3"]["binary"].update(sparsity=None), "totals.3.binary.sparsity"),
        # Outside the ranges spikecode writes: refused before anything is built from them.
        (lambda r: _entry(r)["count_histogram"].update(offset=-(10**30)), "offset' must be -64"),
        (lambda r: _entry(r)["count_histogram"].update(offset=-3), "offset' must be -64"),
        (lambda r: _entry(r)["count_histogram"]["counts"].append(0), "129 values"),
        (
            lambda r: _entry(r)["count_histogram"].update(outliers=[[-(2**40), 1]], below=1),
            "int32 range",
        ),
        (lambda r: _entry(r).update(max_abs_count=2**31 + 1), "max_abs_count"),
        (lambda r: _entry(r)["schemes"]["binary"].update(T=2**40), "at most 2147483648"),
        (lambda r: _entry(r)["vth"]["histogram"]["edges"].reverse(), "increasing"),
        (lambda r: r.update(runs=["not-hex"]), "runs\\[0\\]"),
        (lambda r: r.update(runs=["a" * 32, "a" * 32]), "lists a run twice"),
        (lambda r: r.update(runs=[]), "'runs' must be a non-empty list"),
        (lambda r: r.update(runs=[f"{i:032x}" for i in range(13)]), "13 runs for 12 samples"),
    ],
)
def test_bad_values(saved, change, message):
    saved.write_text(json.dumps(_mutate(json.loads(saved.read_text()), change)))
    with pytest.raises(SpikecodeError, match=message):
        load_stats(saved)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "top level"),
        (b"\xff\xfe", "cannot read"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "stats.json"
    path.write_bytes(content)
    with pytest.raises(SpikecodeError, match=message):
        load_stats(path)
    with pytest.raises(SpikecodeError, match="not found"):
        load_stats(tmp_path / "missing.json")


def test_save_refuses_and_writes_nothing(tmp_path, stats):
    with pytest.raises(SpikecodeError, match=".json"):
        save_stats(tmp_path / "stats.csv", stats)
    with pytest.raises(SpikecodeError, match="cannot write"):
        save_stats(tmp_path / "no" / "stats.json", stats)
    layer = stats.layers[0]
    entry = layer.by_k["3"]
    broken = type(entry)(**{**entry.__dict__, "output_rel_error": None})
    bad_layer = type(layer)(**{**layer.__dict__, "by_k": {**layer.by_k, "3": broken}})
    bad = type(stats)(**{**stats.__dict__, "layers": (bad_layer, *stats.layers[1:])})
    with pytest.raises(SpikecodeError, match="no output error"):
        save_stats(tmp_path / "stats.json", bad)
    assert list(tmp_path.iterdir()) == []


def test_version_1_files_load_without_the_merge_fields(saved, stats):
    raw = json.loads(saved.read_text())
    raw["version"] = 1
    for layer in raw["layers"]:
        del layer["output_sq_norm"]
        for entry in layer["by_k"].values():
            del entry["output_sq_error"], entry["count_histogram"]["outliers"]
    saved.write_text(json.dumps(raw))
    old = load_stats(saved)
    assert not old.mergeable and stats.mergeable
    assert old.layers[0].output_sq_norm is None
    assert old.layers[0].by_k["3"].count_histogram.outliers is None
    # Everything else is read as before, and a version 1 object is written as version 1.
    assert (
        old.totals == stats.totals and old.layers[1].by_k["2"].vth == stats.layers[1].by_k["2"].vth
    )
    assert old.to_dict()["version"] == 1


def test_full_histogram_and_error_sums(stats):
    for layer in stats.layers:
        for entry in layer.by_k.values():
            values, times = entry.count_histogram.values()
            assert int(times.sum()) == layer.elements
            assert int(np.abs(values).max()) == entry.max_abs_count
            expected = math.sqrt(entry.output_sq_error / layer.output_sq_norm)
            assert entry.output_rel_error == expected


def test_count_histogram_sum_keeps_outliers_exactly():
    from spikecode.calibration import CountHistogram
    from spikecode.reports import merge_histograms

    a = CountHistogram.from_values(np.array([-100, 0, 3, 70]), np.array([1, 5, 2, 4]), 64)
    b = CountHistogram.from_values(np.array([-100, 3, 90]), np.array([2, 1, 7]), 64)
    merged = merge_histograms(a, b)
    values, times = merged.values()
    assert values.tolist() == [-100, 0, 3, 70, 90]
    assert times.tolist() == [3, 5, 3, 4, 7]
    assert merged.outliers == ((-100, 3), (70, 4), (90, 7))
    # A part without its outliers (a version-1 file) gives summed totals, outliers unknown.
    old = CountHistogram(offset=a.offset, counts=a.counts, below=a.below, above=a.above)
    summed = CountHistogram.sum([old, b])
    assert summed.outliers is None
    assert (summed.below, summed.above) == (3, 11)


def test_run_identity_round_trip_and_old_files(saved, stats):
    # A calibration gets a fresh random run id; the file keeps it exactly.
    assert len(stats.runs) == 1 and len(stats.runs[0]) == 32
    assert load_stats(saved).runs == stats.runs
    assert json.loads(saved.read_text())["runs"] == list(stats.runs)
    other = CalibrationStats.create(
        checkpoint=stats.checkpoint,
        data=stats.data,
        k=stats.k,
        schemes=stats.schemes,
        window=stats.window,
        block_sizes=stats.block_sizes,
        layers=stats.layers,
        error_rows=stats.error_rows,
        error_stride=stats.error_stride,
    )
    assert other.runs != stats.runs
    # Files written before run ids still load, with no ids (their content is the identity).
    raw = json.loads(saved.read_text())
    del raw["runs"]
    saved.write_text(json.dumps(raw))
    old = load_stats(saved)
    assert old.runs == ()
    assert "runs" not in old.to_dict()


def test_absurd_histogram_offset_is_one_cli_line(saved):
    from click.testing import CliRunner

    from spikecode.cli import main

    raw = json.loads(saved.read_text())
    for entry in (e for layer in raw["layers"] for e in layer["by_k"].values()):
        entry["count_histogram"]["offset"] = -(10**30)
    saved.write_text(json.dumps(raw))
    out = saved.with_name("h.png")
    result = CliRunner().invoke(main, ["plot", "hist", str(saved), "--out", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "offset' must be -64" in lines[0], result.output
    assert "Traceback" not in result.output and not out.exists()
