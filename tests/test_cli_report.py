"""``spikecode report`` and ``spikecode plot`` through click's CliRunner."""

import csv
import io
import json

import numpy as np
import pytest
from clitools import fails, run
from test_reports import make_stats, tiny_layers, write_stats

import spikecode
from spikecode.data import load_sample
from spikecode.reports import energy_report, load_source, sparsity_report, tradeoff_report

EQ24_KEYS = {"spike_mac_pj", "fp16_mac_pj", "int8_mac_pj", "reduction_vs_fp16", "reduction_vs_int8"}
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<"}


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    return write_stats(tmp_path_factory.mktemp("stats"), make_stats(tiny_layers()))


# -- report ------------------------------------------------------------------------------


def test_sparsity_json_is_the_library_report():
    result = run("report", "sparsity", "--k", "2.5", "--scheme", "ternary", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == sparsity_report(load_source(), 2.5, "ternary").to_dict()
    counts, _ = spikecode.adaptive_counts(load_sample()[3], k=2.5)
    assert data["layers"][3]["spikes"] == spikecode.spike_stats(counts, "ternary").spikes


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
@pytest.mark.parametrize("command", ["sparsity", "energy", "tradeoff"])
def test_every_report_in_every_format(command, fmt, stats_file):
    result = run("report", command, stats_file, "--format", fmt)
    assert result.exit_code == 0, result.output
    src = load_source(stats_file)
    build = {"sparsity": sparsity_report, "energy": energy_report, "tradeoff": tradeoff_report}
    report = build[command](src)
    assert result.output == report.render(fmt)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.output)))
        assert len(rows) == len(report.rows())
    if fmt == "table" and command != "tradeoff":
        for name, *_ in tiny_layers():
            assert name in result.output


def test_energy_what_if_table_and_json():
    result = run("report", "energy", "--avg-spikes", "1.13")
    assert result.exit_code == 0, result.output
    for expected in ("0.0339 pJ", "97.7 %", "85.3 %", "44.2×", "6.78×"):
        assert expected in result.output
    data = json.loads(run("report", "energy", "--avg-spikes", "1.13", "--format", "json").output)
    assert set(data) >= EQ24_KEYS
    assert data["spike_mac_pj"] == pytest.approx(0.0339)
    assert round(data["reduction_vs_fp16"], 3) == 0.977
    assert round(data["reduction_vs_int8"], 3) == 0.853
    assert round(data["ratio_vs_fp16"], 1) == 44.2 and round(data["ratio_vs_int8"], 2) == 6.78
    csv_text = run("report", "energy", "--avg-spikes", "1.13", "--format", "csv").output
    rows = {row["mac"]: row for row in csv.DictReader(io.StringIO(csv_text))}
    assert float(rows["spike"]["energy_pj"]) == pytest.approx(0.0339)
    assert float(rows["int8"]["ratio"]) == pytest.approx(0.23 / 0.0339)


def test_energy_json_keys_with_memory():
    result = run("report", "energy", "--memory", "dram", "--block-sizes", "16,64,256",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) >= EQ24_KEYS | {"layers", "total", "settings", "table", "assumptions"}
    assert 0 < data["reduction_vs_fp16"] < 1 and 0 < data["reduction_vs_int8"] < 1
    memory = data["total"]["memory"]
    assert memory["level"] == "dram"
    assert [b["block_size"] for b in memory["block_skip"]] == [16, 64, 256]
    assert all("survival" in b for b in memory["block_skip"])
    layer = data["layers"][0]
    assert {"dense", "channel_skip", "block_skip"} <= set(layer["memory"])
    assert data == energy_report(load_source(), memory="dram").to_dict()


def test_activation_file_with_key_and_out_features(tmp_path, rng):
    x = rng.standard_normal((12, 40)).astype(np.float32)
    np.savez(tmp_path / "acts.npz", a=x, b=x * 2)
    result = run("report", "energy", tmp_path / "acts.npz", "--key", "a", "--out-features",
                 "100", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (layer,) = json.loads(result.output)["layers"]
    assert (layer["name"], layer["in_features"], layer["out_features"]) == ("a", 40, 100)
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    spikes = spikecode.spike_stats(counts, "bitwise-bidirectional").spikes
    assert layer["energy_pj"]["spike"] == pytest.approx(spikes * 100 * 0.03)
    # Without --key, every array is a layer (issue 20: collect_linear_inputs' .npz).
    both = run("report", "sparsity", tmp_path / "acts.npz", "--format", "json")
    assert [layer["name"] for layer in json.loads(both.stdout)["layers"]] == ["a", "b"]


def test_out_writes_atomically(tmp_path):
    out = tmp_path / "report.md"
    result = run("report", "sparsity", "--format", "markdown", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_text() == sparsity_report(load_source()).render("markdown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_failures_leave_no_file_and_keep_the_old_one(tmp_path, stats_file):
    out = tmp_path / "r.json"
    fails("report", "sparsity", "--out", tmp_path / "missing" / "r.json", match="cannot write")
    out.write_text("old")
    fails("report", "sparsity", stats_file, "--k", "9", "--out", out, match="no k = 9")
    fails("report", "energy", "--format", "xml", "--out", out, match="unknown format 'xml'")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_bad_stats_files(tmp_path, stats_file):
    data = json.loads(stats_file.read_text())
    data["version"] = 7
    fails("report", "sparsity", write_stats(tmp_path, data, "v7.json"),
          match="stats file version 7 is not supported")  # fmt: skip
    data = json.loads(stats_file.read_text())
    del data["layers"][1]["by_k"]["3"]["schemes"]["bitwise-bidirectional"]["window_steps"]
    fails("report", "sparsity", write_stats(tmp_path, data, "missing.json"),
          match="layers[1].by_k.3.schemes.bitwise-bidirectional.window_steps")  # fmt: skip
    (tmp_path / "broken.json").write_text('{"format": "spikecode.stats", "vers')
    fails("report", "energy", tmp_path / "broken.json", match="not valid JSON")
    fails("report", "energy", stats_file, "--out-features", "8", match="activation files")
    fails("report", "sparsity", stats_file, "--key", "x", match="activation files")


def test_bad_energy_tables(tmp_path):
    table = {"unit": "pJ", "operations": {"int8_add": 0.03, "int8_mult": 0.2}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    fails("report", "energy", "--table", path, match="fp16")
    table["operations"].update(
        int32_add=0.1, int32_mult=3.1, fp16_add=0.4, fp16_mult=1.1, fp32_add=0.9, fp32_mult=-3.7
    )
    path.write_text(json.dumps(table))
    fails("report", "energy", "--avg-spikes", "1", "--table", path, match="fp32_mult")
    fails("report", "energy", "--table", tmp_path / "none.json", match="not found")
    fails("report", "energy", "--memory", "tape", match="no memory level 'tape'")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--avg-spikes", "1.1", "--k", "3"), "does not combine with --k"),
        (("--avg-spikes", "1.1", "--memory", "dram"), "--memory"),
        (("--avg-spikes", "-1"), ">= 0"),
        (("--block-sizes", "16,x"), "comma-separated integers"),
        (("--block-sizes", "16,16", "--memory", "dram"), "repeat"),
        (("--k", "0"), "k must be"),
    ],
)
def test_bad_energy_options(args, match):
    fails("report", "energy", *args, match=match)


def test_unknown_scheme_is_a_usage_error_listing_the_codes():
    # Every command's --scheme is the same choice (spikecode.cli._common.scheme_option).
    result = run("report", "energy", "--scheme", "morse")
    assert result.exit_code == 2 and "bitwise-bidirectional" in result.output


def test_bad_sources(tmp_path):
    fails("report", "sparsity", tmp_path / "nothing.npy", match="no such file")
    (tmp_path / "data.bin").write_bytes(b"\x00\x00")
    fails("report", "sparsity", tmp_path / "data.bin", match="cannot tell what")
    fails("report", "tradeoff", "--k", "2,a", match="--k takes numbers, got 'a'")


# -- plot --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "suffix"),
    [("raster", ".png"), ("hist", ".svg"), ("tradeoff", ".pdf"), ("energy", ".png")],
)
def test_plot_commands_write_the_right_format(tmp_path, command, suffix):
    out = tmp_path / f"{command}{suffix}"
    extra = ("--k", "2", "3") if command == "tradeoff" else ()
    result = run("plot", command, "--out", out, "--dpi", "40", *extra)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(MAGIC[suffix])
    if suffix == ".svg":
        assert b"<svg" in out.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_plot_from_stats_file(tmp_path, stats_file):
    for command, extra in (("hist", ()), ("energy", ("--memory", "dram")), ("tradeoff", ())):
        out = tmp_path / f"{command}.png"
        result = run("plot", command, stats_file, "--out", out, "--dpi", "40", *extra)
        assert result.exit_code == 0, result.output
        assert out.read_bytes().startswith(MAGIC[".png"])


def test_raster_options(tmp_path, rng):
    x = rng.standard_normal((5, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.png"
    result = run("plot", "raster", tmp_path / "x.npy", "--tokens", "0,4", "--channels", "3:6",
                 "--out", out, "--dpi", "40")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.is_file()
    fails("plot", "raster", tmp_path / "x.npy", "--layer", "1", "--out", out, match="--layer")
    fails("plot", "raster", "--tokens", "5:2", "--out", out, match="START:STOP")
    fails("plot", "raster", "--channels", "0:999", "--out", out, match="out of range")


def test_plot_errors_leave_no_file(tmp_path, stats_file):
    fails("plot", "raster", "--out", tmp_path / "r.jpg", match=".png, .svg, .pdf")
    fails("plot", "raster", stats_file, "--out", tmp_path / "r.png", match="needs activations")
    fails("plot", "hist", "--by", "type", "--out", tmp_path / "h.png", match="family, expert")
    fails("plot", "energy", "--by", "x", "--out", tmp_path / "e.png", match="'auto', 'layer'")
    fails("plot", "energy", "--memory", "tape", "--out", tmp_path / "e.png", match="tape")
    fails("plot", "hist", "--dpi", "0", "--out", tmp_path / "h.png", match="--dpi")
    fails("plot", "hist", "--out", tmp_path / "no" / "h.png", match="cannot write")
    assert list(tmp_path.iterdir()) == []


def test_plot_needs_out():
    result = run("plot", "hist")
    assert result.exit_code == 2 and "--out" in result.output
