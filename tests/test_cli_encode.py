"""``spikecode encode`` through click's CliRunner."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from clitools import run

import spikecode
from spikecode.cli import main
from spikecode.data import load_sample

JSON_KEYS = {
    "shape", "k", "scheme", "T", "vth_mean", "spikes_per_element", "firing_rate", "sparsity",
    "silent_fraction", "within_7_fraction", "window3_sparsity",
}  # fmt: skip


def test_bundled_sample_table():
    result = run("encode", "--scheme", "ternary", "--k", "2")
    assert result.exit_code == 0, result.output
    for label in ("spikes per element", "firing rate", "sparsity", "silent fraction",
                  "|c| <= 7 fraction", "window-3 sparsity", "Vth mean", "T (steps)"):  # fmt: skip
        assert label in result.output
    assert "6×291×384" in result.output


@pytest.mark.parametrize("scheme", list(spikecode.SCHEMES))
def test_json_summary_matches_the_api(scheme):
    result = run("encode", "--scheme", scheme, "--k", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert set(summary) >= JSON_KEYS
    x = load_sample()
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    stats = spikecode.spike_stats(counts, scheme)
    assert summary["shape"] == list(x.shape)
    assert summary["T"] == stats.T
    assert summary["spikes_per_element"] == pytest.approx(stats.spikes_per_element)
    assert summary["sparsity"] == pytest.approx(stats.sparsity)
    assert summary["window3_sparsity"] == pytest.approx(stats.window_sparsity)
    assert summary["within_7_fraction"] == pytest.approx(stats.within_7_fraction)
    assert summary["vth_mean"] == pytest.approx(float(np.mean(vth, dtype=np.float64)))


def test_out_round_trip(tmp_path, rng):
    x = rng.standard_normal((10, 48)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "enc.npz"
    result = run("encode", str(tmp_path / "x.npy"), "--scheme", "bitwise-twos-complement",
                 "--k", "2.5", "--T", "6", "--out", str(out), "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["T"] == 6
    loaded = spikecode.load_encoded(out)
    counts, vth = spikecode.adaptive_counts(x, k=2.5)
    np.testing.assert_array_equal(loaded.counts, counts)
    np.testing.assert_array_equal(loaded.vth, vth)
    assert loaded.train.equals(spikecode.encode(counts, "bitwise-twos-complement", T=6))
    assert loaded.k == 2.5 and loaded.meta["source"] == str(tmp_path / "x.npy")


def test_saturation_is_reported(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 64)).astype(np.float32))
    result = run("encode", str(tmp_path / "x.npy"), "--scheme", "ternary", "--T", "2",
                 "--saturate", "--format", "json")  # fmt: skip
    assert result.exit_code == 0
    clipped = json.loads(result.stdout)["clipped"]
    assert clipped > 0.01 * 8 * 64  # above the warning's 1 %: said on stderr
    assert f"clipped {clipped:,} of 512 elements" in result.stderr


def test_key_selects_an_array(tmp_path, rng):
    np.savez(tmp_path / "m.npz", a=rng.standard_normal((2, 8)), b=rng.standard_normal((3, 8)))
    result = run("encode", str(tmp_path / "m.npz"), "--key", "b", "--format", "json")
    assert json.loads(result.output)["shape"] == [3, 8]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["missing.npy"], "no such file"),
        (lambda p: np.save(p / "nan.npy", np.array([[1.0, np.nan]])), ["nan.npy"], "NaN"),
        (lambda p: np.save(p / "int.npy", np.ones((2, 2), np.int64)), ["int.npy"], "floating"),
        (lambda p: (p / "bad.npz").write_bytes(b"PK\x03\x04junk"), ["bad.npz"], "cannot read"),
        (lambda p: np.save(p / "x.npy", np.ones((2, 4))), ["x.npy", "--k", "0"], "k must"),
        (lambda p: np.save(p / "x.npy", np.ones((2, 4)) * np.arange(4)), ["x.npy", "--T", "1"],
         "cannot carry"),
        (lambda p: np.save(p / "x.npy", np.ones((2, 4))), ["x.npy", "--saturate"], "--T"),
        (lambda p: np.save(p / "x.npy", np.ones((2, 4))), ["x.npy", "--out", "o.txt"], ".npz"),
        (lambda p: np.savez(p / "two.npz", a=np.ones(2), b=np.ones(2)), ["two.npz"], "--key"),
    ],
)  # fmt: skip
def test_bad_input_exits_nonzero_without_traceback(tmp_path, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    if setup:
        setup(tmp_path)
    result = CliRunner().invoke(main, ["encode", "--out", "result.npz", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "result.npz").exists() and not (tmp_path / "o.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unknown_scheme_lists_choices():
    result = CliRunner().invoke(main, ["encode", "--scheme", "quaternary"])
    assert result.exit_code == 2 and "bitwise-bidirectional" in result.output


def test_unwritable_out_leaves_nothing(tmp_path):
    result = CliRunner().invoke(main, ["encode", "--out", str(tmp_path / "no" / "dir.npz")])
    assert result.exit_code == 1 and "cannot write" in result.output


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "spikecode", "encode", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["scheme"] == "bitwise-bidirectional"  # every command's default
