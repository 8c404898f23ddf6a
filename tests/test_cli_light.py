"""First use (issue 20): a CLI that answers at once, one flag grammar, env, progress in logs.

The import rule these tests hold the package to is in docs/developing.rst ("Imports"):
command modules import heavy libraries only inside the commands that use them.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from clitools import run

import spikecode
from spikecode.cli import main

ROOT = os.path.dirname(os.path.dirname(spikecode.__file__))
#: What `--help`, option errors and `import spikecode` must never import (seconds each).
HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "nir", "matplotlib", "numba", "scipy")


def one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _loaded_after(script: str) -> list[str]:
    """Heavy modules a fresh interpreter holds after running ``script``."""
    probe = textwrap.dedent(script) + textwrap.dedent(
        f"""
        import sys
        print("LOADED", sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED"))
    return eval(line.removeprefix("LOADED "))  # a list of names printed by the probe


# -- 1: --help, option errors and import spikecode are light -------------------------------


def test_help_of_every_command_and_option_errors_import_nothing_heavy():
    # Every command, present and future (export lava, plan, ...), is walked from the group.
    loaded = _loaded_after(
        """
        import contextlib, io
        import click
        from spikecode.cli import main

        def walk(command, path):
            yield path
            if isinstance(command, click.Group):
                for name, sub in command.commands.items():
                    yield from walk(sub, [*path, name])

        calls = [[*path, "--help"] for path in walk(main, [])]
        calls += [["encode", "--scheme", "bitwse"], ["encode", "--k", "2", "3", "4"],
                  ["export", "onnx", "--T", "x"], ["report", "sparsity", "a", "b"],
                  ["nonsense"], ["--version"]]
        for args in calls:
            with contextlib.redirect_stdout(io.StringIO()), \\
                    contextlib.redirect_stderr(io.StringIO()):
                try:
                    main(args, prog_name="spikecode")
                except SystemExit:
                    pass
        """
    )
    assert loaded == []


def test_python_dash_m_help_imports_nothing_heavy():
    loaded = _loaded_after(
        """
        import contextlib, io, runpy, sys
        sys.argv = ["spikecode", "--help"]
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                runpy.run_module("spikecode", run_name="__main__")
            except SystemExit:
                pass
        """
    )
    assert loaded == []


def test_import_spikecode_is_light_and_names_load_on_use():
    assert _loaded_after("import spikecode, spikecode.errors, spikecode.encoders.schemes") == []
    # First use of a name imports its module, and the value is the module's own.
    loaded = _loaded_after(
        """
        import spikecode
        from spikecode.encoders.codec import encode
        assert spikecode.encode is encode
        assert "encode" in dir(spikecode) and "calibration" in dir(spikecode)
        """
    )
    assert "numba" in loaded and "torch" not in loaded


def test_light_copies_of_option_choices_agree():
    # The CLI takes its choices from light copies; the exporter's own lists are the truth.
    from spikecode import _constants
    from spikecode.exporters import nir

    assert _constants.NIR_INTEGRATORS == nir.INTEGRATORS
    assert _constants.NIR_WEIGHTS == nir.WEIGHTS


def test_lazy_package_attributes():
    import spikecode.encoders

    done = subprocess.run(
        [sys.executable, "-c", "import spikecode; print(spikecode.encoders.codec.encode)"],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "function encode" in done.stdout, done.stderr

    assert spikecode.SCHEMES is spikecode.encoders.schemes.SCHEMES
    assert spikecode.calibration.calibrate is not None  # a submodule on first access
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        spikecode.no_such_name  # noqa: B018
    assert set(spikecode.__all__) <= set(dir(spikecode))


def test_a_public_name_stays_bound_over_its_submodule():
    # spikecode.calibration.evaluate is the function, as with the eager imports, even once
    # `from spikecode.calibration.evaluate import ...` has imported the module first.
    probe = """
        import types
        from spikecode.calibration.evaluate import TASKS, evaluate
        import spikecode, spikecode.calibration as calibration
        from spikecode.calibration import evaluate as public
        assert calibration.evaluate is public is evaluate and TASKS
        assert isinstance(calibration, types.ModuleType) and type(spikecode) is types.ModuleType
        print("OK")
    """
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.stdout.strip() == "OK", done.stderr


# -- 1b: commands that read a stats file or the bundled sample import no torch -------------

#: What a command that reads only a stats file or the bundled sample must not import.
TORCH_SIDE = ("torch", "transformers", "onnx", "onnxruntime", "nir")


@pytest.fixture(scope="module")
def moe_stats(tmp_path_factory):
    """Two version-2 stats files of one tiny MoE model over disjoint texts (merge-stats)."""
    from spikecode.calibration import calibrate, save_stats
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.testing import write_tiny_moe_checkpoint

    root = tmp_path_factory.mktemp("moe-light")
    model = load_checkpoint(write_tiny_moe_checkpoint(root / "tiny", with_tokenizer=True))
    texts = (["the spiking brain model", "a spike count"], ["token after token", "the end"])
    return [
        save_stats(root / f"{i}.json", calibrate(model, part, k=(2.0, 3.0), batch_size=2))[0]
        for i, part in enumerate(texts)
    ]


def test_commands_on_a_stats_file_or_the_sample_import_no_torch(tmp_path, moe_stats):
    # One interpreter runs them in turn and notes what is imported after each, so that a
    # failure names the first command that imported it. Table commands come first and
    # must not import matplotlib either (a table draws nothing); exports of the sample
    # come last, NIR and Lava needing nir.
    stats, other = map(str, moe_stats)
    out = str(tmp_path)
    tables = [
        ["encode", "--scheme", "ternary", "--k", "2"],
        ["encode", "--format", "json"],
        ["report", "sparsity"],
        ["report", "sparsity", stats, "--by", "expert"],
        ["report", "tradeoff", stats],
        ["report", "energy", stats],
        ["report", "experts", stats],
        ["advise", stats, "--max-error", "10", "-o", f"{out}/advice.json"],
        ["merge-stats", stats, other, "--out", f"{out}/merged.json"],
        ["report", "tradeoff", f"{out}/merged.json", "--format", "json"],
        ["plan", stats],
        ["export", "events", "-o", f"{out}/events.npz"],
    ]
    figures = [
        ["plot", "tradeoff", stats, "-o", f"{out}/t.png"],
        ["plot", "raster", "-o", f"{out}/r.png"],
        ["plot", "hist", stats, "-o", f"{out}/h.png"],
        ["plot", "energy", stats, "-o", f"{out}/e.png"],
    ]
    exports = [["export", "nir", "-o", f"{out}/nir"], ["export", "lava", "-o", f"{out}/lava"]]
    calls = [
        *[(args, (*TORCH_SIDE, "matplotlib")) for args in tables],
        *[(args, TORCH_SIDE) for args in figures],
        *[(args, tuple(m for m in TORCH_SIDE if m != "nir")) for args in exports],
    ]
    probe = textwrap.dedent(
        f"""
        import json, sys
        from click.testing import CliRunner
        from spikecode.cli import main

        seen = []
        for args in {[args for args, _ in calls]!r}:
            result = CliRunner().invoke(main, args)
            loaded = [m for m in {(*TORCH_SIDE, "matplotlib")!r} if m in sys.modules]
            seen.append([" ".join(args[:2]), result.exit_code, result.output[-300:], loaded])
        print("SEEN", json.dumps(seen))
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("SEEN "))
    seen = json.loads(line.removeprefix("SEEN "))
    assert len(seen) == len(calls)
    for (command, code, output, loaded), (_, forbidden) in zip(seen, calls, strict=True):
        assert code == 0, (command, output)
        assert not set(forbidden) & set(loaded), f"spikecode {command} imported {loaded}"
    names = ["merged.json", "advice.json", "events.npz", "t.png", "r.png", "h.png", "e.png"]
    assert all((tmp_path / name).is_file() for name in names)
    assert (tmp_path / "nir" / "index.json").is_file() and (tmp_path / "lava").is_dir()


def test_the_exporter_registry_imports_an_exporter_on_first_use(tmp_path):
    loaded = _loaded_after(
        """
        import pytest
        from spikecode.errors import SpikecodeError
        from spikecode.exporters import EXPORTERS, get_exporter, register_exporter

        assert sorted(EXPORTERS) == ["events", "lava", "nir", "onnx"]
        # A built-in's name is taken before its module is imported.
        with pytest.raises(SpikecodeError, match="'onnx' already has an exporter"):
            register_exporter("onnx")(lambda model, path: path)
        from spikecode.exporters.events import export_events

        assert get_exporter("events") is export_events is EXPORTERS["events"]
        """
    )
    assert not {"torch", "onnx", "nir"} & set(loaded)
    # Calling an entry not imported yet imports it and calls the exporter.
    from spikecode.exporters import registry
    from spikecode.exporters.events import load_events

    deferred = registry._Deferred("events", "spikecode.exporters.events")
    assert "not imported yet" in repr(deferred)
    train = spikecode.encode(np.array([[1, -2, 0]], dtype=np.int32), "ternary")
    written = deferred(train, tmp_path / "e.npz", vth=np.ones(1, dtype=np.float32))
    assert load_events(written)["train"][0].equals(train)


# -- 4: one flag grammar ------------------------------------------------------------------


def test_one_default_scheme_everywhere():
    from spikecode.cli._common import DEFAULT_SCHEME
    from spikecode.reports import DEFAULT_SCHEME as REPORT_DEFAULT

    assert DEFAULT_SCHEME == REPORT_DEFAULT == "bitwise-bidirectional"
    summary = json.loads(run("encode", "--format", "json").stdout)
    assert summary["scheme"] == DEFAULT_SCHEME
    # Every command with a code option defaults to it, or says in --help why not (a
    # stats file without it), commands added later included.
    import click

    pending, seen = [main], 0
    while pending:
        command = pending.pop()
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
            continue
        for param in command.params:
            if param.name in ("scheme", "schemes"):
                seen += 1
                if param.default is None:
                    assert DEFAULT_SCHEME in param.help, command.name
                else:
                    assert param.default in (DEFAULT_SCHEME, (DEFAULT_SCHEME,)), command.name
    assert seen >= 11  # encode, calibrate, evaluate, advise, 3 reports, 2 plots, 2 exports


def test_short_and_lowercase_forms_mean_the_long_ones(tmp_path):
    long = run("encode", "--k", "2", "--scheme", "ternary", "--T", "9", "--saturate",
               "--out", tmp_path / "a.npz", "--format", "json")  # fmt: skip
    short = run("encode", "-k", "2", "-s", "ternary", "--t", "9", "--saturate",
                "-o", tmp_path / "b.npz", "--format", "json")  # fmt: skip
    assert long.exit_code == short.exit_code == 0, short.output
    a, b = json.loads(long.stdout), json.loads(short.stdout)
    assert {**a, "out": None} == {**b, "out": None}
    assert a["k"] == 2.0 and a["scheme"] == "ternary" and a["T"] == 9
    assert (tmp_path / "b.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()


def test_several_k_where_one_is_used_is_refused_naming_k(tmp_path):
    line = one_line_error(run("encode", "--k", "2", "3", "4"))
    assert "--k takes one value in 'spikecode encode', got 2 3 4" in line
    assert "spikecode report tradeoff --k 2 3 4" in line
    line = one_line_error(run("export", "nir", "-k", "2,3", "-o", tmp_path / "x"))
    assert "'spikecode export nir'" in line and not (tmp_path / "x").exists()
    # The same list grammar where several are used.
    result = run("report", "tradeoff", "-k", "2", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [point["k"] for point in json.loads(result.stdout)["points"]] == [2.0, 3.0]


def test_stray_numbers_are_told_where_k_goes():
    line = one_line_error(run("report", "sparsity", "x.npy", "3", "4"), code=2)
    assert "unexpected extra arguments (3 4)" in line
    assert "numbers are k values only right after --k" in line
    line = one_line_error(run("report", "sparsity", "x.npy", "y.npy"), code=2)
    assert "--k" not in line  # not numbers: click's message as it is


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny", w8aspike=True, with_tokenizer=True
    )


def test_export_onnx_layer_of_a_checkpoint(tmp_path, checkpoint):
    import onnxruntime as ort
    import torch

    from spikecode.cli.export import _checkpoint_projections

    name = "model.layers.1.mlp.down_proj"
    result = run("export", "onnx", checkpoint, "--layer", name, "-o", tmp_path / "l.onnx",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["exported"] == f"layer {name}" and summary["inputs"] == "x"
    _, projections = _checkpoint_projections(checkpoint, 3.0, (), ())
    module = projections[name]
    x = torch.randn(2, 5, module.in_features, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(tmp_path / "l.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(y, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    line = one_line_error(run("export", "onnx", checkpoint, "--layer", "nope", "-o",
                              tmp_path / "n.onnx"))  # fmt: skip
    assert "no spiked projection 'nope'" in line and "model.layers.0" in line
    assert not (tmp_path / "n.onnx").exists()


def test_export_events_reads_data(tmp_path, checkpoint):
    from spikecode.calibration import collect_checkpoint_inputs
    from spikecode.exporters.events import load_events
    from spikecode.models.checkpoint import load_checkpoint

    texts = tmp_path / "texts.txt"
    texts.write_text("the quick brown fox\njumps over the lazy dog again and again\nthird\n")
    result = run("export", "events", checkpoint, "--data", texts, "--samples", "2",
                 "--include", "*.q_proj", "-o", tmp_path / "e.npz", "-k", "2.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    events = load_events(tmp_path / "e.npz")
    inputs = collect_checkpoint_inputs(
        load_checkpoint(checkpoint, dtype="float32"), texts, 2, include="*.q_proj"
    )
    assert list(events) == list(inputs) and len(inputs) == 4
    for name, rows in inputs.items():
        counts, vth = spikecode.adaptive_counts(rows, k=2.5)
        train, got_vth = events[name]
        assert train.equals(spikecode.encode(counts, "bitwise-bidirectional", events.T))
        np.testing.assert_array_equal(got_vth, vth)
    # Two samples of the file: its first two lines' tokens, not the bundled corpus'.
    tokenizer = load_checkpoint(checkpoint).tokenizer
    lines = texts.read_text().splitlines()[:2]
    assert len(vth) == sum(len(tokenizer(t)["input_ids"]) for t in lines)
    line = one_line_error(run("export", "events", "--data", texts, "-o", tmp_path / "s.npz"))
    assert "--data" in line and "checkpoint" in line


# -- 6: progress in logs -------------------------------------------------------------------


def test_long_commands_print_progress_lines_in_logs(tmp_path, checkpoint):
    env = {"SPIKECODE_PROGRESS_DELAY": "0", "SPIKECODE_PROGRESS_INTERVAL": "1000"}
    result = run("calibrate", checkpoint, "--samples", "3", "--batch-size", "1", "--k", "3",
                 "--format", "json", env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"spikecode calibrate: loading {checkpoint} [")
    assert lines[1].startswith("spikecode calibrate: running 3 samples, k 3.0 [")
    # One count line at once, then none until the interval passes, and one at the end.
    counts = [line for line in lines if "samples (" in line]
    assert [c.split(": ")[1].split(" [")[0] for c in counts] == [
        "1/3 samples (33%)",
        "3/3 samples (100%)",
    ]
    assert json.loads(result.stdout)["samples"] == 3  # standard output stays clean


def test_progress_lines_wait_for_the_delay(tmp_path, checkpoint):
    result = run("calibrate", checkpoint, "--samples", "2", "--k", "3", "--format", "json",
                 env={"SPIKECODE_PROGRESS_DELAY": "3600"})  # fmt: skip
    assert result.exit_code == 0 and result.stderr == ""


def test_progress_every_interval():
    from spikecode.cli._common import _LogProgress

    shown = _LogProgress("x", 10, "sample")
    shown.delay, shown.interval = 0.0, 0.0
    said = []
    shown._say = said.append
    shown.stage("running")
    for _ in range(3):
        shown.update()
    assert said == ["running", "1/10 samples (10%)", "2/10 samples (20%)", "3/10 samples (30%)"]


# -- 7: reports read a checkpoint folder and the arrays of collect_linear_inputs -------------


def test_reports_read_a_checkpoint_folder_and_its_captured_npz(tmp_path, checkpoint):
    from spikecode.calibration import collect_checkpoint_inputs
    from spikecode.models.checkpoint import load_checkpoint

    from_folder = run("report", "sparsity", checkpoint, "--samples", "3", "--format", "json")
    assert from_folder.exit_code == 0, from_folder.output
    captured = collect_checkpoint_inputs(load_checkpoint(checkpoint, dtype="float32"), None, 3)
    np.savez(tmp_path / "captured.npz", **captured)
    from_npz = run("report", "sparsity", tmp_path / "captured.npz", "--format", "json")
    assert from_npz.exit_code == 0, from_npz.output
    a, b = json.loads(from_folder.stdout), json.loads(from_npz.stdout)
    assert (
        [row["name"] for row in a["layers"]]
        == list(captured)
        == [row["name"] for row in b["layers"]]
    )
    assert a["layers"] == b["layers"] and a["total"] == b["total"]
    # A raster of one real layer, picked by its module name.
    name = "model.layers.2.mlp.down_proj"
    result = run("plot", "raster", tmp_path / "captured.npz", "--layer", name,
                 "-o", tmp_path / "r.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    # --key still picks one array; --data needs a checkpoint folder.
    one = run("report", "sparsity", tmp_path / "captured.npz", "--key", name, "--format", "json")
    assert [row["name"] for row in json.loads(one.stdout)["layers"]] == [name]
    line = one_line_error(run("report", "sparsity", tmp_path / "captured.npz", "--data", "x"))
    assert "checkpoint folder" in line


# -- 8: env and Hub ids -----------------------------------------------------------------------


def test_env_reports_versions_devices_cache_and_threads():
    from importlib import metadata

    result = run("env", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["packages"]["numpy"] == metadata.version("numpy")
    assert info["packages"]["torch"] == metadata.version("torch")
    assert info["spikecode"]["version"] == spikecode.__version__
    assert info["python"] == sys.version.split()[0]
    assert info["torch"]["installed"] is True and info["torch"]["threads"] >= 1
    assert info["numba"]["threads"] >= 1
    assert info["numba"]["cache"]["kernel_indexes"] >= 0
    table = run("env").stdout
    assert "numba cache" in table and "python" in table and "torch" in table


def test_env_finds_the_kernels_in_a_numba_cache_dir(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop("SPIKECODE_PROGRESS_DELAY", None)

    def cache_entries():
        done = subprocess.run([sys.executable, "-m", "spikecode", "env", "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["numba"]["cache"]

    cold = cache_entries()
    assert cold["location"] == str(tmp_path) and cold["kernel_indexes"] == 0
    assert cold["state"].startswith("cold")
    compile_ = [sys.executable, "-c", "import spikecode; spikecode.encode([1], 'ternary')"]
    subprocess.run(compile_, env=env, check=True, capture_output=True, timeout=600)
    warm = cache_entries()
    assert warm["kernel_indexes"] > 0 and warm["state"].startswith("warm")


def test_hub_ids_say_nothing_downloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for args in (["calibrate", "org/model-7B"], ["export", "nir", "org/model-7B", "-o", "g"],
                 ["report", "sparsity", "org/model-7B"]):  # fmt: skip
        line = one_line_error(run(*args))
        assert "looks like a Hugging Face Hub id; spikecode never downloads" in line
        assert "huggingface-cli download org/model-7B --local-dir model-7B" in line
    snapshot = tmp_path / "hf" / "hub" / "models--org--model-7B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    line = one_line_error(run("calibrate", "org/model-7B"))
    assert f"a copy is in your Hugging Face cache: pass {snapshot}" in line
    # A real folder of that name is a folder, and a plain missing path gets no Hub note.
    assert "Hub" not in one_line_error(run("calibrate", "missing"))


def test_advise_and_evaluate_say_why_their_sparsity_differs(tmp_path, checkpoint):
    from spikecode.cli._common import format_value

    stats, advice = tmp_path / "stats.json", tmp_path / "advice.json"
    calibrated = run("calibrate", checkpoint, "--samples", "3", "-k", "2", "3", "-o", stats)
    assert calibrated.exit_code == 0, calibrated.output
    advised = run("advise", stats, "--max-error", "10", "-o", advice)
    assert advised.exit_code == 0, advised.output
    assert "evaluate --k-map measures the spiked model" in " ".join(advised.stdout.split())
    predicted = json.loads(advice.read_text())["totals"]
    table = run("evaluate", checkpoint, "--k-map", advice, "--samples", "2")
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    assert (
        f"k-map: spikecode advise predicted sparsity {format_value(predicted['sparsity'])} "
        "(bitwise-bidirectional) from the stats file" in text
    )
    assert "this row measures the spiked model on 2 samples" in text
    as_json = run("evaluate", checkpoint, "--k-map", advice, "--samples", "2", "--format", "json")
    assert json.loads(as_json.stdout)["advice_predicted"] == {
        **predicted,
        "scheme": "bitwise-bidirectional",
    }
    # A plain {layer: k} map predicts nothing, so nothing is said.
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(json.loads(advice.read_text())["k"]))
    result = run("evaluate", checkpoint, "--k-map", plain, "--samples", "2")
    assert result.exit_code == 0 and "advise predicted" not in result.stdout
