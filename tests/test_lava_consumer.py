"""The Lava export run in Lava itself: Loihi2SimCfg, fixed point, equal to spike_linear.

lava-nc 0.10 installs on Python 3.10 with numpy < 2 only, so the suite builds that
environment from PyPI with a Python 3.10 found on the machine (``python3.10`` on PATH,
pyenv's versions, or ``SPIKECODE_PYTHON310``) and keeps it in the user cache
(``$XDG_CACHE_HOME/spikecode`` or ``~/.cache/spikecode``; ``SPIKECODE_LAVA_ENV`` names
another folder). It is built in a temporary folder under a file lock and renamed into
place when lava imports, so concurrent runs neither break nor duplicate it. Without
Python 3.10 or the registry the tests skip and say why.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import spikecode as sc
from spikecode.cli import main
from spikecode.exporters.lava import (
    RUNNER_FILE,
    export_lava,
    lava_frames,
    lava_readout,
    load_lava,
    run_lava,
    save_frames,
    simulate_lava,
)
from spikecode.testing import write_tiny_gla_swa_checkpoint

pytestmark = pytest.mark.slow

LAVA_REQUIREMENTS = ("lava-nc==0.10.*", "numpy<2")
SCHEMES = list(sc.SCHEMES)


def _python310() -> str | None:
    candidates = [os.environ.get("SPIKECODE_PYTHON310"), shutil.which("python3.10")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv / "versions" / "3.10.*" / "bin" / "python")))
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.startswith("3.10."):
            return candidate
    return None


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikecode"


def _build(python: str, target: Path) -> None:
    """Create the environment in a temporary folder and rename it to ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        venv = str(tmp / "bin" / "python")
        steps = [
            [python, "-m", "venv", str(tmp)],
            [venv, "-m", "pip", "install", "-q", "--retries=1", *LAVA_REQUIREMENTS],
            [venv, "-c", "import lava.magma.core.run_configs"],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
            except subprocess.TimeoutExpired:
                pytest.skip(f"building the lava-nc environment timed out ({step[2]})")
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                pytest.skip(f"cannot build the lava-nc environment ({step[2]}): {tail[0]}")
        tmp.rename(target)  # a venv's python finds its pyvenv.cfg beside it: renaming is safe
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def lava_python() -> str:
    fcntl = pytest.importorskip("fcntl", reason="the environment lock needs POSIX fcntl")
    python = _python310()
    if python is None:
        pytest.skip("lava-nc 0.10 needs Python 3.10; none found (set SPIKECODE_PYTHON310)")
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    chosen = os.environ.get("SPIKECODE_LAVA_ENV")
    target = Path(chosen) if chosen else _cache_root() / f"lava-nc-0.10-py{version}"
    target.parent.mkdir(parents=True, exist_ok=True)
    interpreter = target / "bin" / "python"
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse it
        if not interpreter.is_file():
            if target.exists():  # a folder without an interpreter: not ours to reuse
                pytest.skip(f"{target} exists but holds no environment")
            _build(python, target)
    return str(interpreter)


def _weights(rng, out=4, n_in=16, groups=4):
    w = rng.integers(-128, 128, size=(out, n_in)).astype(np.int8)
    w[0, 0], w[-1, -1] = -128, 127
    return w, rng.uniform(0.001, 0.01, size=(out, groups)), rng.normal(size=out)


def _accumulator(sigma, projection, zero_point):
    meta = projection["meta"]
    acc = sigma.reshape(-1, meta["out_features"], meta["scale_groups"])
    return (acc + zero_point * projection["zero_point_gain"]).transpose(0, 2, 1)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_code_runs_exactly_in_lava(tmp_path, rng, lava_python, scheme):
    w, s, b = _weights(rng)
    counts, vth = sc.adaptive_counts(rng.normal(size=(3, 16)), k=2.0)
    train = sc.encode(counts, scheme, sc.min_steps(counts, scheme), bit_order="lsb")
    path = export_lava((w, s, b), tmp_path / "p", scheme=scheme, T=train.T, bit_order="lsb")
    want = sc.spike_linear(train, w, s, vth, b)
    sigma = run_lava(path, train, python=lava_python)["projection"]
    projection = load_lava(path).projections["projection"]
    np.testing.assert_array_equal(
        _accumulator(sigma, projection, train.zero_point), want.accumulator
    )
    np.testing.assert_array_equal(simulate_lava(path, train, vth, python=lava_python), want.output)


def test_split_fan_in_runs_exactly_in_lava(tmp_path, rng, lava_python):
    w, s, b = _weights(rng, n_in=32, groups=1)
    counts, vth = sc.adaptive_counts(rng.normal(size=(2, 32)), k=2.0)
    train = sc.encode(counts, "bitwise-bidirectional", 4)
    path = export_lava(
        {"p": (w, s, b)}, tmp_path / "p", scheme=train.scheme, T=4, a_out_bits=12, split=True
    )
    assert load_lava(path).projections["p"]["meta"]["blocks"] > 2
    y = simulate_lava(path, {"p": train}, {"p": vth}, python=lava_python)["p"]
    np.testing.assert_array_equal(y, sc.spike_linear(train, w, s, vth, b).output)


def test_the_folder_runner_runs_the_bundled_sample(tmp_path, lava_python):
    """As a user does: export from the CLI, run the folder's own runner under 3.10."""
    from spikecode.data import load_sample, load_sample_weights

    name = "encoder.layer.0.attention.self.query"
    result = CliRunner().invoke(
        main, ["export", "lava", "--out", str(tmp_path / "s"), "--include", name]
    )
    assert result.exit_code == 0, result.output
    export = load_lava(tmp_path / "s")
    (projection,) = export.projections.values()
    acts, weights = load_sample(), load_sample_weights()
    counts, vth = sc.adaptive_counts(acts[0][:3], k=3.0)  # three tokens
    train = sc.encode(counts, projection["meta"]["scheme"], projection["meta"]["T"])
    save_frames(tmp_path / "frames.npz", {name: lava_frames(train, projection)})
    done = subprocess.run(
        [lava_python, str(tmp_path / "s" / RUNNER_FILE), str(tmp_path / "s"),
         "--frames", str(tmp_path / "frames.npz"), "--out", str(tmp_path / "acc.npz")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "acc.npz", allow_pickle=False) as npz:
        sigma = npz[name]
    want = sc.spike_linear(
        train, weights["weight_q"][0], weights["scales"][0], vth, weights["bias"][0]
    )
    np.testing.assert_array_equal(_accumulator(sigma, projection, 0), want.accumulator)
    y = lava_readout(sigma, vth, projection)
    np.testing.assert_array_equal(y, want.output)


def test_calibrated_checkpoint_projection_runs_exactly_in_lava(tmp_path, lava_python):
    from spikecode.calibration import calibrate, save_stats
    from spikecode.cli.export import _checkpoint_projections
    from spikecode.data import load_corpus
    from spikecode.models.capture import collect_linear_inputs
    from spikecode.models.checkpoint import load_checkpoint

    checkpoint = write_tiny_gla_swa_checkpoint(tmp_path / "ck", w8aspike=True, with_tokenizer=True)
    loaded = load_checkpoint(checkpoint)
    stats = calibrate(loaded, samples=2, k=(2.0,), error_rows=1)
    stats_path, _ = save_stats(tmp_path / "stats.json", stats)
    pattern = "model.layers.1.mlp.down_proj"
    args = [str(stats_path), "--k", "2", "--include", pattern, "--out", str(tmp_path / "l")]
    result = CliRunner().invoke(main, ["export", "lava", *args])
    assert result.exit_code == 0, result.output
    export = load_lava(tmp_path / "l")
    ((name, projection),) = export.projections.items()
    T, scheme = projection["meta"]["T"], projection["meta"]["scheme"]
    inputs = loaded.tokenizer(load_corpus(2), padding=True, return_tensors="pt")
    rows = collect_linear_inputs(loaded.model.eval(), dict(inputs), pattern)[name][:3]
    counts, vth = sc.adaptive_counts(rows, k=2.0)
    train = sc.encode(counts, scheme, T)  # the calibrated T carries every calibrated token
    _, modules = _checkpoint_projections(checkpoint, 2.0, (pattern,), ())
    layer = modules[name]
    want = sc.spike_linear(train, layer.weight_q, layer.scales, vth, layer.bias)
    assert projection["meta"]["scale_groups"] > 1  # the release's per-128-column scales
    sigma = run_lava(export, train, python=lava_python)[name]
    np.testing.assert_array_equal(_accumulator(sigma, projection, 0), want.accumulator)
    y = simulate_lava(export, train, vth, python=lava_python)
    np.testing.assert_array_equal(y, want.output)
