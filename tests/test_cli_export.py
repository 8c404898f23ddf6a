"""``spikecode export nir|onnx|events`` from the bundled sample and a released-layout checkpoint."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import spikecode
from spikecode.cli import main
from spikecode.data import load_sample, load_sample_weights
from spikecode.exporters.events import load_events
from spikecode.exporters.nir import load_nir, simulate_nir
from spikecode.testing import write_tiny_gla_swa_checkpoint


def run(*args):
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--format" in args else result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny", w8aspike=True, with_tokenizer=True
    )


@pytest.fixture(scope="module")
def sample_trains():
    acts, w = load_sample(), load_sample_weights()
    out = {}
    for i, name in enumerate(w["layers"]):
        counts, vth = spikecode.adaptive_counts(acts[i], k=2.5)
        out[str(name)] = (counts, vth, w["weight_q"][i], w["scales"][i], w["bias"][i])
    return out


def test_nir_warns_on_stderr_when_float32_consumers_would_round(tmp_path):
    result = CliRunner().invoke(
        main,
        ["export", "nir", "--out", str(tmp_path / "q.nir"), "--scheme", "bitwise", "--T", "24",
         "--include", "*layer.0.attention.self.query"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(lines) == 1
    assert "past 2^24" in lines[0] and "Norse, Spyx, Rockpool will round" in lines[0]
    assert "float32_exact     False" in result.stdout


def test_nir_integrator_I_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(
        main, ["export", "nir", "--out", str(tmp_path / "i"), "--integrator", "I"]
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "no consumer runs NIR's I" in result.stderr
    assert "--integrator IF or --integrator LI" in result.stderr
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    ("scheme", "flags"),
    [("ternary", []), ("bitwise-bidirectional", ["--on-off"]), ("bitwise", ["--graded"])],
)
def test_nir_from_sample_simulates_like_spike_linear(tmp_path, sample_trains, scheme, flags):
    path = tmp_path / "s"
    summary = run("nir", "--out", str(path), "--scheme", scheme, "--k", "2.5", *flags,
                  "--format", "json")  # fmt: skip
    assert summary["projections"] == 6 and summary["integrator"] == "IF"
    assert summary["weights"] == "int" and summary["float32_exact"]
    assert summary["on_off"] == ("--on-off" in flags) and summary["graded"] == ("--graded" in flags)
    export = load_nir(path)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["index.json", *(f"{name}.nir" for name in sample_trains)]
    )
    T = summary["T"]
    assert (
        export.index["T"]
        == T
        == max(spikecode.min_steps(c[0], scheme) for c in sample_trains.values())
    )
    assert summary["accumulator_bits"] == max(
        p["accumulator_bits"] for p in export.index["projections"]
    )
    name = "encoder.layer.3.attention.self.query"
    counts, vth, w_q, scales, bias = sample_trains[name]
    train = spikecode.encode(counts[:12], scheme, T)
    want = spikecode.spike_linear(train, w_q, scales, vth[:12], bias).output
    got = simulate_nir(path, {name: train}, {name: vth[:12]})[name]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_events_and_nir_of_the_sample_share_one_T(tmp_path, sample_trains):
    """The events file's trains feed the NIR graphs as they are (one T in both files)."""
    scheme = "bitwise-twos-complement"
    nir_summary = run("nir", "--out", str(tmp_path / "g"), "--scheme", scheme, "--k", "2.5",
                      "--format", "json")  # fmt: skip
    ev_summary = run("events", "--out", str(tmp_path / "e.npz"), "--scheme", scheme, "--k",
                     "2.5", "--format", "json")  # fmt: skip
    events = load_events(tmp_path / "e.npz")
    export = load_nir(tmp_path / "g")
    assert nir_summary["T"] == ev_summary["T"] == events.T == export.index["T"]
    for i, (name, (train, vth)) in enumerate(events.items()):
        assert export.graphs[name].metadata["T"] == train.T
        if i % 3:  # every layer has the same form: simulate two of them
            continue
        counts, _, w_q, scales, bias = sample_trains[name]
        rows = slice(0, 12)
        part = spikecode.encode(counts[rows], scheme, train.T)
        want = spikecode.spike_linear(part, w_q, scales, vth[rows], bias).output
        got = simulate_nir(export, part, vth[rows], projection=name)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the whole train of one layer, as loaded from the events file
    name = next(iter(events))
    train, vth = events[name]
    _, _, w_q, scales, bias = sample_trains[name]
    np.testing.assert_allclose(
        simulate_nir(export, train, vth, projection=name),
        spikecode.spike_linear(train, w_q, scales, vth, bias).output,
        rtol=1e-12,
        atol=1e-12,
    )


def test_onnx_from_sample_runs_in_onnxruntime(tmp_path, sample_trains):
    from spikecode.nn import W8ASpikeLinear

    path = tmp_path / "s.onnx"
    name = "encoder.layer.2.attention.self.query"
    summary = run("onnx", "--out", str(path), "--layer", name, "--format", "json")
    assert "MatMul" in summary["operators"] and summary["inputs"] == "x"
    x = load_sample()[2].astype(np.float32)[None, :50]
    _, _, w_q, scales, bias = sample_trains[name]
    layer = W8ASpikeLinear(*(torch.from_numpy(a) for a in (w_q, scales, bias)), k=3.0)
    want = layer(torch.from_numpy(x)).detach().numpy()
    got = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_events_from_sample_round_trip(tmp_path, sample_trains):
    path = tmp_path / "e.npz"
    summary = run(
        "events", "--out", str(path), "--scheme", "ternary", "--k", "2.5", "--format", "json"
    )
    events = load_events(path)
    assert summary["layers"] == len(events) == 6
    T = max(spikecode.min_steps(c[0], "ternary") for c in sample_trains.values())
    assert summary["T"] == events.T == T  # one T for every layer
    for name, (train, vth) in events.items():
        counts, want_vth = sample_trains[name][:2]
        assert train.equals(spikecode.encode(counts, "ternary", T))
        np.testing.assert_array_equal(vth, want_vth)


def test_events_from_activation_file(tmp_path, rng):
    x = rng.standard_normal((5, 32)).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    run("events", str(tmp_path / "acts.npy"), "--out", str(tmp_path / "a.h5"), "--T", "4")
    ((train, vth),) = load_events(tmp_path / "a.h5").values()
    counts, want_vth = spikecode.adaptive_counts(x, k=3.0)
    assert train.equals(spikecode.encode(counts, "bitwise-bidirectional", 4))
    np.testing.assert_array_equal(vth, want_vth)


def test_checkpoint_exports(tmp_path, checkpoint):
    nir_summary = run("nir", str(checkpoint), "--out", str(tmp_path / "m"), "--T", "6",
                      "--include", "*.mlp.*", "--format", "json")  # fmt: skip
    assert nir_summary["projections"] == 4 * 3
    onnx_summary = run(
        "onnx", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--format", "json"
    )
    assert onnx_summary["inputs"] == "input_ids, attention_mask"
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    ids = np.arange(24, dtype=np.int64).reshape(2, 12) % 100
    out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert out.shape[:2] == (2, 12) and np.all(np.isfinite(out))
    ev = run("events", str(checkpoint), "--out", str(tmp_path / "e.npz"), "--samples", "2",
             "--include", "*.o_proj", "--format", "json")  # fmt: skip
    assert ev["layers"] == 4 and len(load_events(tmp_path / "e.npz")) == 4


def test_stats_file_source_uses_its_checkpoint_and_T(tmp_path, checkpoint):
    from spikecode.calibration import calibrate, k_key, save_stats
    from spikecode.models.checkpoint import load_checkpoint

    stats = calibrate(load_checkpoint(checkpoint), samples=4, k=(2.0, 3.0), error_rows=1)
    stats_path, _ = save_stats(tmp_path / "stats.json", stats)
    summary = run("nir", str(stats_path), "--out", str(tmp_path / "s"), "--k", "2",
                  "--include", "*.o_proj", "--format", "json")  # fmt: skip
    want = max(layer.by_k[k_key(2.0)].schemes["bitwise-bidirectional"].T for layer in stats.layers)
    assert summary["T"] == want
    onnx = run("onnx", str(stats_path), "--out", str(tmp_path / "s.onnx"), "--format", "json")
    assert onnx["inputs"] == "input_ids, attention_mask"
    result = CliRunner().invoke(
        main, ["export", "nir", str(stats_path), "--k", "5", "--out", str(tmp_path / "x.nir")]
    )
    assert result.exit_code == 1 and "no bitwise-bidirectional statistics at k=5" in result.output
    assert "stats.json" in result.output and not (tmp_path / "x.nir").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nir", "acts.npy", "--out", "x.nir"], "needs weights"),
        (["onnx", "acts.npy", "--out", "x.onnx"], "needs weights"),
        (["nir", "CK", "--out", "x.nir"], "--T is required"),
        (["onnx", "--layer", "nope", "--out", "x.onnx"], "no projection 'nope'"),
        (["events", "missing.npy", "--out", "x.npz"], "no such file"),
        (["events", "--out", "x.txt"], "x.txt"),
        (["nir", "--out", "no/such/dir/x"], "cannot write"),
        (["nir", "--out", "x.nir"], "go to a folder"),
        (["nir", "--scheme", "bitwise", "--on-off", "--out", "x"], "bitwise has none"),
        (["nir", "CK", "--scheme", "ternary", "--out", "x"], "--T is required"),
    ],
)
def test_bad_exports_fail_cleanly(tmp_path, monkeypatch, checkpoint, args, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "acts.npy", np.ones((2, 8), np.float32))
    args = [str(checkpoint) if a == "CK" else a for a in args]
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npy"]


def test_unknown_export_format_lists_formats():
    result = CliRunner().invoke(main, ["export", "vhdl"])
    assert result.exit_code == 2 and "nir" in result.output and "onnx" in result.output
