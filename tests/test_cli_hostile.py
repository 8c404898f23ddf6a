"""Hostile invocations of the CLI (issue 9): every refusal is one line, never a traceback.

Each case runs through click's CliRunner with ``catch_exceptions=False``, so an exception
escaping the command fails the test instead of being swallowed. A SpikecodeError refusal
prints exactly one line on stderr and exits 1; a usage error (a value click itself
rejects) exits 2 and its ``Error:`` line is one line too.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from clitools import run

from spikecode.testing import write_tiny_gla_swa_checkpoint

DEEP = "[" * 100_000 + "]" * 100_000
LONG = "k" * 100_000
MAX_MESSAGE = 500  # spikecode.cli.MAX_MESSAGE


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    np.save(folder / "acts.npy", np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32))
    np.savez(folder / "two.npz", a=np.ones((2, 3), np.float32), b=np.ones((2, 3), np.float32))
    (folder / "deep.json").write_text(DEEP)
    (folder / "dir.npy").mkdir()
    os.symlink(folder / "loop.npy", folder / "loop.npy")
    ckpt = write_tiny_gla_swa_checkpoint(folder / "ckpt", with_tokenizer=True)
    bad_mode = write_tiny_gla_swa_checkpoint(folder / "bad_mode", with_tokenizer=True)
    config = json.loads((bad_mode / "config.json").read_text())
    (bad_mode / "config.json").write_text(json.dumps({**config, "attn_mode": ["chunk"]}))
    deep_config = write_tiny_gla_swa_checkpoint(folder / "deep_config", with_tokenizer=True)
    (deep_config / "config.json").write_text(DEEP)
    return {"dir": folder, "ckpt": ckpt, "bad_mode": bad_mode, "deep_config": deep_config}


# (arguments, text the one-line error must contain); {d} is the fixture folder.
REFUSALS = [
    (["encode", "--k", "1e300", "--scheme", "ternary", "--out", "{d}/x.npz"], "max_spikes"),
    (["encode", "--T", "100", "--scheme", "bitwise"], "at most T=62"),
    (["encode", "--k", "nan"], "k must be finite"),
    (["encode", "--k", "-1"], "k must be finite"),
    (["encode", "{d}/dir.npy"], "is a directory"),
    (["encode", "{d}/loop.npy"], "symbolic links"),
    (["encode", "{d}/" + "n" * 300 + ".npy"], "too long"),
    (["encode", "{d}/two.npz", "--key", LONG], "no array"),
    (["encode", "{d}/acts.npy", "--out", "{d}/" + "o" * 300 + ".npz"], "too long"),
    (["encode", "{d}/acts.npy", "--out", "{d}/missing/x.npz"], "cannot write"),
    (["calibrate", "{d}/" + "c" * 300], "too long"),
    (["report", "sparsity", "{d}/" + "r" * 300 + ".npy"], "too long"),
    (["export", "nir", "{d}/" + "e" * 300, "--out", "{d}/x.nir"], "too long"),
    (["plot", "hist", "{d}/" + "p" * 300 + ".json", "--out", "{d}/x.png"], "too long"),
    (["report", "energy", "--avg-spikes", "1e308"], "at most"),
    (["report", "energy", "--table", "{d}/deep.json"], "nested more than"),
    (["report", "sparsity", "{d}/deep.json"], "nested more than"),
    (["advise", "{d}/deep.json", "--target-sparsity", "0.5"], "nested more than"),
    (["calibrate", "{bad_mode}", "--samples", "1"], "attn_mode"),
    (["calibrate", "{deep_config}", "--samples", "1"], "nested more than"),
    (["evaluate", "{ckpt}", "--k-map", "{d}/deep.json", "--samples", "1"], "nested more than"),
    (
        [
            "export",
            "events",
            "{d}/acts.npy",
            "--out",
            "{d}/e.npz",
            "--T",
            "2147483648",
            "--scheme",
            "ternary",
            "--max-spikes",
            "1000",
        ],
        "max_spikes",
    ),
]

USAGE_ERRORS = [
    ["encode", "--T", "4611686018427387904"],
    ["encode", "--T", "18446744073709551616"],
    ["encode", "--T", "0"],
    ["encode", "--max-spikes", "0"],
    ["encode", "--scheme", LONG],
    ["export", "events", "--out", "x.npz", "--T", "99999999999999999999"],
]


def _format(args, files):
    names = {"d": files["dir"], **{k: v for k, v in files.items() if k != "dir"}}
    return [a.format(**names) if "{" in a else a for a in args]


@pytest.mark.parametrize(("args", "text"), REFUSALS, ids=lambda v: str(v)[:40])
def test_refusals_are_one_line(files, args, text):
    result = run(*_format(args, files))
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and text in lines[0]
    assert len(lines[0]) <= MAX_MESSAGE + len("Error: ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda v: str(v)[:40])
def test_usage_errors_are_one_error_line(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert len(errors[0]) <= MAX_MESSAGE + len("Error: ")


def test_absurd_k_summary_needs_no_train():
    # k = 1e300 clamps Vth: billions of spikes. The summary comes from the counts alone.
    result = run("encode", "--k", "1e300", "--scheme", "ternary", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["spikes"] > 10**10
    assert summary["spikes_per_element"] == summary["spikes"] / summary["elements"]
