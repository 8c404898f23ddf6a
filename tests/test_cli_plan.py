"""``spikecode plan`` through click's CliRunner."""

import csv
import io
import json
import subprocess
import sys

import pytest
from clitools import fails, run
from test_reports import make_stats, tiny_layers, write_stats

from spikecode.plan import deployment_plan
from spikecode.testing import write_tiny_gla_swa_checkpoint


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    return write_stats(tmp_path_factory.mktemp("stats"), make_stats(tiny_layers()))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", w8aspike=True)


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_every_format_prints_the_api_rendering(checkpoint, fmt):
    result = run("plan", checkpoint, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.output == deployment_plan(checkpoint).render(fmt)


def test_stats_source_with_k_code_and_target(stats_file):
    result = run("plan", stats_file, "--k", "2", "--scheme", "ternary", "--target", "spinnaker2",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["target"]["name"] == "spinnaker2"
    assert (data["source"]["k"], data["source"]["scheme"]) == (2.0, "ternary")
    assert [p["name"] for p in data["projections"]] == [name for name, *_ in tiny_layers()]
    assert all(p["T"] is not None for p in data["projections"])
    assert (data["source"]["recipe"], data["source"]["tokens"]) == ("all-linear", 40)


def test_csv_has_a_row_per_projection_and_the_model(stats_file):
    result = run("plan", stats_file, "--format", "csv", "--exclude", "*.down_proj")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["name"] for r in rows] == ["model.layers.0.q_proj", "model.layers.1.q_proj", "model"]
    assert int(rows[-1]["synapses"]) == 2 * 48 * 32


def test_out_writes_atomically_and_failures_keep_the_old_file(tmp_path, checkpoint, stats_file):
    out = tmp_path / "plan.json"
    result = run("plan", checkpoint, "--format", "json", "--out", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text()) == deployment_plan(checkpoint).to_dict()
    out.write_text("old")
    fails("plan", checkpoint, "--format", "xml", "--out", out, match="unknown format 'xml'")
    fails("plan", checkpoint, "--stats", stats_file, "--out", out, match="another model")
    fails("plan", checkpoint, "--target", "xylo", "--out", out, match="unknown target 'xylo'")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_bad_input_is_one_line(tmp_path, checkpoint, stats_file):
    fails("plan", tmp_path / "missing", match="source not found")
    fails("plan", tmp_path / "missing", "--stats", stats_file, match="source not found")
    fails("plan", checkpoint, "--k", "3", match="k and scheme choose calibration figures")
    fails("plan", stats_file, "--stats", stats_file, match="stats goes with a checkpoint")
    fails("plan", checkpoint, "--include", "*.nothing", match="matches no linear layer")
    bad = tmp_path / "bad.json"
    bad.write_text('{"chip": {"cores": 4}, "weight_bits": 8}')
    fails("plan", checkpoint, "--target", bad, match="gives chip.cores = 4 without a source")


def test_help_is_light():
    # The plan package (and the report machinery it renders with) loads only when it runs.
    code = "import sys; import spikecode.cli.plan; print('spikecode.plan' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    result = run("plan", "--help")
    assert (
        result.exit_code == 0
        and "--target" in result.output
        and "docs/deployment.rst" in (result.output)
    )
