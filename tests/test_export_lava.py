"""The Lava export without Lava: the fixed-point form, the width checks, files, the CLI.

The network's arithmetic is checked here against a NumPy model of Lava's fixed-point
Dense (clip, truncate, integer dot product, arithmetic shift by ``weight_exp``) and
Sigma (``sigma += a_in``), written from lava-nc 0.10's process models; the runs in Lava
itself are in test_lava_consumer.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import spikecode as sc
from spikecode.cli import main
from spikecode.exporters import get_exporter
from spikecode.exporters.lava import (
    RUNNER,
    RUNNER_FILE,
    export_lava,
    lava_frames,
    lava_projections,
    lava_readout,
    load_lava,
    run_lava,
    simulate_lava,
)

SCHEMES = list(sc.SCHEMES)
OUT, IN, GROUPS = 5, 16, 4


def _weights(rng):
    w = rng.integers(-128, 128, size=(OUT, IN)).astype(np.int8)
    w[0, 0], w[1, 1] = -128, 127  # the int8 extremes
    s = rng.uniform(0.001, 0.01, size=(OUT, GROUPS))
    return w, s, rng.normal(size=OUT)


def _train(rng, scheme, bit_order="msb", rows=4):
    counts, vth = sc.adaptive_counts(rng.normal(size=(rows, IN)), k=2.0)
    return sc.encode(counts, scheme, sc.min_steps(counts, scheme), bit_order=bit_order), vth


def _lava_model(projection, frames):
    """Lava 0.10's fixed-point Dense and Sigma, per token (see the module docstring)."""
    meta = projection["meta"]
    w = projection["weights"].astype(np.int32)
    # Dense: clip to the 8-bit mixed-sign range, drop the LSB (truncate_weights)
    w = (np.clip(w, -256, 255) >> 1) << 1
    sigma = np.zeros((frames.shape[0], meta["out_features"], meta["scale_groups"]), np.int64)
    for t in range(frames.shape[1]):
        for a, b in itertools.pairwise(projection["block_bounds"]):
            a_accum = frames[:, t, a:b].astype(np.int64) @ w[:, a:b].T.astype(np.int64)
            sigma[:, :, a // meta["group_size"]] += a_accum >> -meta["weight_exp"]
    return sigma.reshape(frames.shape[0], -1)  # neuron o*G + g, as the runner returns


def _accumulator(sigma, projection, zero_point):
    out, groups = projection["meta"]["out_features"], projection["meta"]["scale_groups"]
    acc = sigma.reshape(-1, out, groups) + zero_point * projection["zero_point_gain"]
    return acc.transpose(0, 2, 1)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bit_order", ["msb", "lsb"])
def test_fixed_point_form_reproduces_spike_linear(rng, scheme, bit_order):
    w, s, b = _weights(rng)
    train, vth = _train(rng, scheme, bit_order)
    ((_, projection),) = lava_projections(
        {"p": (w, s, b)}, scheme=scheme, T=train.T, bit_order=bit_order
    ).items()
    want = sc.spike_linear(train, w, s, vth, b)
    sigma = _lava_model(projection, lava_frames(train, projection))
    np.testing.assert_array_equal(
        _accumulator(sigma, projection, train.zero_point), want.accumulator
    )
    y = lava_readout(sigma, vth, projection, train.zero_point)
    np.testing.assert_array_equal(y, want.output)


@given(
    scheme=st.sampled_from(SCHEMES),
    bit_order=st.sampled_from(["msb", "lsb"]),
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 4),
    n_in=st.sampled_from([4, 8, 12]),
    out=st.integers(1, 5),
    groups=st.sampled_from([1, 2, 4]),
    spread=st.integers(0, 40),
    a_out_bits=st.integers(10, 24),
)
def test_fixed_point_property(scheme, bit_order, seed, rows, n_in, out, groups, spread, a_out_bits):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-spread, spread + 1, size=(rows, n_in))
    train = sc.encode(counts, scheme, bit_order=bit_order)
    vth = rng.uniform(0.01, 2.0, size=rows)
    w = rng.integers(-128, 128, size=(out, n_in), dtype=np.int8)
    s = rng.uniform(1e-3, 1.0, size=(out, groups))
    b = rng.normal(size=out)
    options = {"scheme": scheme, "T": train.T, "bit_order": bit_order, "a_out_bits": a_out_bits}
    payload = 2 ** (train.T - 1) if sc.SCHEMES[scheme].bitwise else 1
    if payload * np.abs(w.astype(int)).max() > 2 ** (a_out_bits - 1) - 1:
        with pytest.raises(sc.SpikecodeError, match="no fan-in split fits"):
            lava_projections((w, s, b), split=True, **options)
        return
    (projection,) = lava_projections((w, s, b), split=True, **options).values()
    want = sc.spike_linear(train, w, s, vth, b)
    sigma = _lava_model(projection, lava_frames(train, projection))
    np.testing.assert_array_equal(
        _accumulator(sigma, projection, train.zero_point), want.accumulator
    )
    np.testing.assert_array_equal(
        lava_readout(sigma, vth, projection, train.zero_point), want.output
    )


def test_split_fan_in_is_exact_and_every_block_fits(rng):
    w = rng.integers(-128, 128, size=(OUT, 64)).astype(np.int8)
    s = np.full(OUT, 0.01)
    counts, vth = sc.adaptive_counts(rng.normal(size=(3, 64)), k=2.0)
    scheme = "bitwise-bidirectional"
    train = sc.encode(counts, scheme, sc.min_steps(counts, scheme))
    (projection,) = lava_projections(
        (w, s), scheme="bitwise-bidirectional", T=train.T, a_out_bits=12, split=True
    ).values()
    bounds = projection["block_bounds"]
    assert bounds[0] == 0 and bounds[-1] == 64 and np.all(np.diff(bounds) > 0)
    assert projection["meta"]["blocks"] == len(bounds) - 1 > 1
    payload = 2 ** (train.T - 1)
    absw = np.abs(w.astype(np.int64))
    for a, b in itertools.pairwise(bounds):
        assert payload * absw[:, a:b].sum(axis=1).max() <= 2**11 - 1
        if b < 64:  # greedy: one more column would not have fitted
            assert payload * absw[:, a : b + 1].sum(axis=1).max() > 2**11 - 1
    sigma = _lava_model(projection, lava_frames(train, projection))
    want = sc.spike_linear(train, w, s, vth)
    np.testing.assert_array_equal(_accumulator(sigma, projection, 0), want.accumulator)


def test_weights_are_loihi_mixed_sign_even_8_bit(rng):
    w, s, _ = _weights(rng)
    (projection,) = lava_projections((w, s), scheme="ternary", T=3).values()
    weights = projection["weights"]
    assert weights.dtype == np.int16 and weights.shape == (OUT, IN)
    assert np.all(weights % 2 == 0) and weights.min() >= -256 and weights.max() <= 254
    np.testing.assert_array_equal(weights, 2 * w.astype(np.int16))
    assert projection["meta"]["weight_exp"] == -1 and projection["meta"]["weight_bits"] == 8
    # a Dense (and a Sigma) per scale group: the blocks are the groups
    np.testing.assert_array_equal(projection["block_bounds"], np.arange(0, IN + 1, IN // GROUPS))
    assert projection["meta"]["neurons"] == OUT * GROUPS


def test_frames_are_graded_payloads(rng):
    w, s, _ = _weights(rng)
    train, _ = _train(rng, "bitwise-twos-complement", "lsb")
    (projection,) = lava_projections(
        (w, s), scheme=train.scheme, T=train.T, bit_order="lsb"
    ).values()
    frames = lava_frames(train, projection)
    dense = train.to_dense().reshape(train.T, train.rows, IN)
    assert frames.dtype == np.int32 and frames.shape == (train.rows, train.T, IN)
    for t in range(train.T):
        np.testing.assert_array_equal(frames[:, t], train.step_weights[t] * dense[t])
    with pytest.raises(sc.SpikecodeError, match="bit order"):
        lava_frames(sc.encode(train.decode(), train.scheme, train.T, bit_order="msb"), projection)
    with pytest.raises(sc.SpikecodeError, match="exported for bitwise-twos-complement"):
        lava_frames(_train(rng, "ternary")[0], projection)


# --------------------------------------------------------------------------- refusals


def test_width_refusals_name_the_fix():
    full = np.full((2, 64), 127, dtype=np.int8)  # row sum 8128
    s = np.ones(2)
    # Sigma's state: (2^T - 1) · 8128 <= 2^23 - 1 holds up to T = 10
    with pytest.raises(sc.SpikecodeError, match="wider than Sigma's 24-bit state") as err:
        lava_projections((full, s), scheme="bitwise", T=12)
    assert "pass T=10" in str(err.value) and err.value.context["T"] == 12
    lava_projections((full, s), scheme="bitwise", T=10)  # the named T fits
    # the graded message: a step weight of 2^23 is one past 24 signed bits
    one = np.zeros((1, 4), dtype=np.int8)
    one[0, 0] = 1
    with pytest.raises(sc.SpikecodeError, match="24-bit graded spike") as err:
        lava_projections((one, np.ones(1)), scheme="bitwise", T=24)
    assert "pass T=23" in str(err.value)
    lava_projections((one, np.ones(1)), scheme="bitwise", T=23)
    # unary codes: T · 8128 <= 2^23 - 1 up to T = 1032
    with pytest.raises(sc.SpikecodeError, match="24-bit state") as err:
        lava_projections((full, s), scheme="ternary", T=1033)
    assert "pass T=1032" in str(err.value)
    # the largest unary T is refused without building T step weights; even zero weights
    # may not run past what the state counts
    zeros = np.zeros((2, 8), dtype=np.int8)
    with pytest.raises(sc.SpikecodeError, match="24-bit state") as err:
        lava_projections((zeros, np.ones(2)), scheme="binary", T=2**31)
    assert f"pass T={2**23 - 1}" in str(err.value)
    # one Dense's a_out: ternary payloads are 1, so only a fan-in split helps
    wide = np.full((1, 300), 127, dtype=np.int8)
    with pytest.raises(
        sc.SpikecodeError, match="16-bit Dense a_out; 2 fan-in blocks .* would fit, not 1"
    ) as err:
        lava_projections((wide, np.ones(1)), scheme="ternary", T=2, a_out_bits=16)
    assert str(err.value).split("[")[0].endswith("pass split=True ")
    (split,) = lava_projections(
        (wide, np.ones(1)), scheme="ternary", T=2, a_out_bits=16, split=True
    ).values()
    np.testing.assert_array_equal(split["block_bounds"], [0, 258, 300])  # 258 · 127 <= 32767
    # scale groups always start a block, and the sums that count are per group
    (grouped,) = lava_projections(
        (wide[:, :256], np.ones((1, 2))), scheme="ternary", T=2, a_out_bits=16
    ).values()
    np.testing.assert_array_equal(grouped["block_bounds"], [0, 128, 256])
    # a single weight times the step weight past a_out: no split helps, a smaller T does
    with pytest.raises(sc.SpikecodeError, match="no fan-in split fits") as err:
        lava_projections((wide, np.ones(1)), scheme="bitwise", T=3, a_out_bits=8, split=True)
    assert "pass T=1" in str(err.value)


def test_bad_options_are_refused(rng):
    w, s, _ = _weights(rng)
    with pytest.raises(sc.SpikecodeError, match="needs a fixed T"):
        lava_projections((w, s), scheme="ternary", T=None)
    for bits in (1, 25, 16.0):
        with pytest.raises(sc.SpikecodeError, match="a_out_bits"):
            lava_projections((w, s), scheme="ternary", T=3, a_out_bits=bits)
    with pytest.raises(sc.SpikecodeError, match="unknown scheme"):
        lava_projections((w, s), scheme="unary", T=3)
    with pytest.raises(sc.SpikecodeError, match="bit_order"):
        lava_projections((w, s), scheme="bitwise", T=3, bit_order="middle")
    with pytest.raises(sc.SpikecodeError, match="int8"):
        lava_projections((w.astype(np.int16), s), scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="bitwise codes support at most"):
        lava_projections((w, s), scheme="bitwise", T=63)


# --------------------------------------------------------------------------- files


def test_folder_and_file_round_trip(tmp_path, rng):
    w, s, b = _weights(rng)
    assert get_exporter("lava") is export_lava
    path = export_lava({"a": (w, s, b), "b": (w[:2], s[:2])}, tmp_path / "x", scheme="bitwise", T=5)
    assert sorted(os.listdir(path)) == ["a.npz", "b.npz", "index.json", RUNNER_FILE]
    assert (path / RUNNER_FILE).read_bytes() == RUNNER.read_bytes()
    index = json.loads((path / "index.json").read_text())
    assert index["format"] == "spikecode.lava-index" and index["T"] == 5
    assert index["step_weights"] == [16, 8, 4, 2, 1] and index["runner"] == RUNNER_FILE
    assert [p["name"] for p in index["projections"]] == ["a", "b"]
    assert index["projections"][0]["neurons"] == OUT * GROUPS
    assert index["projections"][0]["synapses"] == OUT * IN
    assert index["projections"][0]["nonzero_synapses"] == np.count_nonzero(w)
    assert index["projections"][0]["blocks"] == GROUPS  # a Dense per scale group
    with np.load(path / "a.npz", allow_pickle=False) as npz:  # no pickles anywhere
        meta = json.loads(str(npz["meta"]))
        np.testing.assert_array_equal(npz["bias"], b)
    assert meta["integrator"] == "lava.proc.sdn.Sigma" and meta["message_bits"] == 24
    loaded = load_lava(path)
    assert loaded.index == index and list(loaded.projections) == ["a", "b"]
    want = lava_projections({"a": (w, s, b)}, scheme="bitwise", T=5)["a"]
    for key, value in want.items():
        if key != "meta":
            np.testing.assert_array_equal(loaded.projections["a"][key], value)
    # an earlier export is replaced; one projection goes to a single .npz
    export_lava({"c": (w, s)}, path, scheme="ternary", T=2)
    assert sorted(os.listdir(path)) == ["c.npz", "index.json", RUNNER_FILE]
    single = export_lava((w, s), tmp_path / "one.npz", scheme="ternary", T=2)
    assert list(load_lava(single).projections) == ["projection"]
    assert load_lava(single).index["projections"][0]["file"] == "one.npz"


def test_an_earlier_export_with_a_user_file_is_refused_and_kept(tmp_path, rng):
    w, s, _ = _weights(rng)
    path = export_lava({"a": (w, s)}, tmp_path / "x", scheme="ternary", T=2)
    (path / "notes.txt").write_text("mine")
    before = sorted(os.listdir(path))
    with pytest.raises(sc.SpikecodeError, match="notes.txt"):
        export_lava({"b": (w, s)}, path, scheme="ternary", T=2)
    assert sorted(os.listdir(path)) == before
    assert (path / "notes.txt").read_text() == "mine"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_bad_paths_and_foreign_files(tmp_path, rng):
    w, s, _ = _weights(rng)
    with pytest.raises(sc.SpikecodeError, match="go to a folder"):
        export_lava({"a": (w, s), "b": (w, s)}, tmp_path / "two.npz", scheme="ternary", T=2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(sc.SpikecodeError, match="in the way"):
        export_lava({"a": (w, s)}, foreign, scheme="ternary", T=2)
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_lava({"a": (w, s)}, tmp_path / "missing" / "x", scheme="ternary", T=2)
    assert sorted(os.listdir(tmp_path)) == ["foreign"]
    with pytest.raises(sc.SpikecodeError, match="no such file"):
        load_lava(tmp_path / "nothing")
    with pytest.raises(sc.SpikecodeError, match="index.json not found"):
        load_lava(foreign)
    (foreign / "index.json").write_text('{"format": "spikecode.nir-index"}')
    with pytest.raises(sc.SpikecodeError, match="not a spikecode Lava export folder"):
        load_lava(foreign)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(sc.SpikecodeError, match="no metadata"):
        load_lava(tmp_path / "other.npz")
    np.savez(tmp_path / "v9.npz", meta=np.array(json.dumps({"format": "spikecode.lava"})))
    with pytest.raises(sc.SpikecodeError, match="is not spikecode.lava v1"):
        load_lava(tmp_path / "v9.npz")


def _runner_module():
    """The runner loaded by path, as a Python 3.10 user does (it needs no lava to load)."""
    spec = importlib.util.spec_from_file_location("spikecode_lava_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_imports_only_numpy_and_the_standard_library():
    import ast

    def roots(nodes):
        found = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                found.add((node.module or "").split(".")[0])
        return found

    tree = ast.parse(RUNNER.read_text(encoding="utf8"))
    top = roots(tree.body)
    assert top == {"__future__", "argparse", "itertools", "json", "sys", "pathlib", "numpy"}
    assert roots(ast.walk(tree)) - top == {"lava"}  # imported inside the functions that run


def test_runner_refuses_bad_frames_before_lava(tmp_path, rng, capsys):
    runner = _runner_module()
    w, s, _ = _weights(rng)
    path = export_lava({"a": (w, s)}, tmp_path / "x", scheme="bitwise", T=4)
    (projection,) = runner.load_export(path).values()
    good = np.zeros((2, 4, IN), dtype=np.int64)
    assert runner._check_frames(projection, good).dtype == np.int32
    for frames, message in [
        (np.zeros((2, 3, IN), dtype=np.int64), "frames must be"),
        (np.zeros((2, 4, IN)), "must be integers"),
        (np.full((1, 4, IN), 2**23), "24-bit message"),
    ]:
        with pytest.raises(runner.ExportError, match=message):
            runner._check_frames(projection, frames)
    np.savez(tmp_path / "f.npz", nope=good)
    code = runner.main([str(path), "--frames", str(tmp_path / "f.npz"), "--out", "o.npz"])
    assert code == 1 and "no projection nope" in capsys.readouterr().err


def test_a_failed_lava_run_is_one_clear_error(tmp_path, rng):
    w, s, _ = _weights(rng)
    path = export_lava((w, s), tmp_path / "p", scheme="ternary", T=2)
    train = sc.encode(np.zeros((1, IN), dtype=int), "ternary", 2)
    with pytest.raises(sc.SpikecodeError, match="the Lava run failed: .*No module named"):
        run_lava(path, train, python=sys.executable)  # an interpreter without lava
    with pytest.raises(sc.SpikecodeError, match="did not complete"):
        run_lava(path, train, python=tmp_path / "no-python")


def test_host_refuses_before_running_lava(tmp_path, rng):
    w, s, _ = _weights(rng)
    path = export_lava({"a": (w, s), "b": (w, s)}, tmp_path / "x", scheme="ternary", T=2)
    train = sc.encode(np.zeros((2, IN), dtype=int), "ternary", 2)
    no_python = tmp_path / "never-run"  # any attempt to run would fail differently
    with pytest.raises(sc.SpikecodeError, match="choose one with projection="):
        run_lava(path, train, python=no_python)
    with pytest.raises(sc.SpikecodeError, match="no projection 'c'"):
        run_lava(path, {"c": train}, python=no_python)
    with pytest.raises(sc.SpikecodeError, match="pass projection only with a single train"):
        run_lava(path, {"a": train}, python=no_python, projection="a")
    with pytest.raises(sc.SpikecodeError, match="vth must be a dict"):
        simulate_lava(path, {"a": train}, 1.0, python=no_python)
    with pytest.raises(sc.SpikecodeError, match="vth must be a scalar or have shape"):
        simulate_lava(path, train, np.ones(3), python=no_python, projection="a")
    with pytest.raises(sc.SpikecodeError, match="T=2, the train has T=3"):
        run_lava(path, sc.encode(np.zeros((1, IN), dtype=int), "ternary", 3), python=no_python,
                 projection="a")  # fmt: skip
    (projection,) = load_lava(path / "a.npz").projections.values()
    with pytest.raises(sc.SpikecodeError, match="sigma must be integer"):
        lava_readout(np.zeros((2, 3)), 1.0, projection)
    with pytest.raises(sc.SpikecodeError, match="one per row"):
        lava_readout(np.zeros((2, OUT * GROUPS), dtype=int), np.ones(3), projection)


def test_index_entries_may_not_leave_the_folder(tmp_path, rng):
    w, s, _ = _weights(rng)
    path = export_lava({"a": (w, s)}, tmp_path / "x", scheme="ternary", T=2)
    index = json.loads((path / "index.json").read_text())
    index["projections"][0]["file"] = "../a.npz"
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(sc.SpikecodeError, match="leaves the folder"):
        load_lava(path)
    del index["projections"]
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(sc.SpikecodeError, match="cannot read the Lava export"):
        load_lava(path)


def test_cli_checkpoint_needs_T(tmp_path):
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    checkpoint = write_tiny_gla_swa_checkpoint(tmp_path / "ck", w8aspike=True)
    out = tmp_path / "x"
    result = CliRunner().invoke(main, ["export", "lava", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 1 and "--T is required" in result.output
    args = [str(checkpoint), "--T", "4", "--include", "*.0.mlp.down_proj", "--out", str(out)]
    result = CliRunner().invoke(main, ["export", "lava", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    (meta,) = [p["meta"] for p in load_lava(out).projections.values()]
    assert meta["T"] == 4 and meta["scale_groups"] == 2 and meta["in_features"] == 256


# --------------------------------------------------------------------------- CLI


def test_cli_exports_the_sample(tmp_path):
    args = ["--out", str(tmp_path / "s"), "--scheme", "ternary", "--include", "*.0.*"]
    result = CliRunner().invoke(main, ["export", "lava", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["projections"] == 1 and summary["dense_processes"] == 3  # 3 scale groups
    assert summary["state_bits"] == 24 and summary["accumulator_bits"] <= 24
    export = load_lava(tmp_path / "s")
    (meta,) = [p["meta"] for p in export.projections.values()]
    assert meta["T"] == summary["T"] and meta["scheme"] == "ternary"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "bitwise", "--T", "14"], "24-bit state; try --T "),
        (["--scheme", "ternary", "--a-out-bits", "8"], "8-bit Dense a_out;"),
        (["--scheme", "bitwise", "--T", "24"], "24-bit graded spike; try --T 23"),
        (["acts.npy"], "needs weights"),
    ],
)
def test_cli_refusals_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "acts.npy", np.ones((2, 8), np.float32))
    result = CliRunner().invoke(main, ["export", "lava", *args, "--out", "x"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
    if "a-out-bits" in args:
        assert "--split" in result.output
