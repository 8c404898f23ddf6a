"""Sizes before allocation, and what crosses the public boundary (issue 17, items 7-8).

Every size spikecode is told rather than holds (a file header, a shape, a broadcast
view's strides, standard input) is checked against one bound, ``SPIKECODE_MAX_BYTES``,
before anything is allocated; the refusal names the bound and how to raise it. Tensors
that hold no computable values (sparse, meta) and paths that are not paths are one
SpikecodeError naming the argument; read-only arrays are ordinary input.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spikecode
from spikecode import SpikecodeError, SpikeTrain
from spikecode.calibration import load_k_map, load_stats
from spikecode.cli import main
from spikecode.exporters.events import load_events, save_events
from spikecode.exporters.nir import export_nir, load_nir
from spikecode.io import list_arrays, load_activations, load_encoded, save_encoded
from spikecode.nn import functional as F

HUGE = (2**20, 2**16)  # 2**36 elements: 256 GiB as float32


def _one_line_refusal(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "call",
    [
        lambda v, c: spikecode.adaptive_counts(v, k=3.0),
        lambda v, c: spikecode.encode_activations(v, k=3.0),
        lambda v, c: spikecode.fixed_counts(v, vth=1.0),
        lambda v, c: spikecode.encode(c, "ternary"),
        lambda v, c: spikecode.encode(c, "bitwise", layout="planes"),
        lambda v, c: spikecode.encode_dense(c, "ternary"),
        lambda v, c: spikecode.spike_stats(c, "ternary"),
        lambda v, c: spikecode.min_steps(c, "ternary"),
        lambda v, c: spikecode.adaptive_counts(torch.ones(1).expand(*HUGE), k=3.0),
        lambda v, c: F.adaptive_counts(torch.ones(1).expand(*HUGE), 3.0),
        lambda v, c: spikecode.encode(torch.ones(1, dtype=torch.int32).expand(*HUGE), "binary"),
    ],
)
def test_zero_stride_views_are_refused_before_allocating(call):
    values = np.broadcast_to(np.float32(1), HUGE)
    counts = np.broadcast_to(np.int32(1), HUGE)
    with pytest.raises(SpikecodeError, match="SPIKECODE_MAX_BYTES") as err:
        call(values, counts)
    assert "256.0 GiB" in str(err.value)


def test_views_of_existing_data_are_not_limited(monkeypatch):
    # A strided view of real memory, and a dtype widening: copies of data that exists.
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "64")
    x = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float16)
    counts, _ = spikecode.adaptive_counts(x[:, ::2], k=3.0)
    expected, _ = spikecode.adaptive_counts(np.ascontiguousarray(x[:, ::2]), k=3.0)
    np.testing.assert_array_equal(counts, expected)
    small = np.broadcast_to(np.float32(1.5), (2, 3))  # a small broadcast is fine too
    assert spikecode.adaptive_counts(small, k=3.0)[0].shape == (2, 3)


def test_from_events_checks_the_shape_before_allocating():
    with pytest.raises(SpikecodeError, match="step index .* SPIKECODE_MAX_BYTES"):
        SpikeTrain.from_events((2**40, 16), 1, "binary", [0], [0], [1])
    with pytest.raises(SpikecodeError, match="SPIKECODE_MAX_BYTES"):
        SpikeTrain.from_events((2**40, 2**40), 4, "ternary", [], [], [])  # no int64 wrap
    train = SpikeTrain.from_events((2, 3), 2, "binary", [1, 0], [4, 0], [1, 1])
    np.testing.assert_array_equal(train.decode(), [[1, 0, 0], [0, 1, 0]])


def test_integrate_and_fire_checks_its_steps_before_allocating():
    with pytest.raises(SpikecodeError, match="spikes of 1,099,511,627,776 steps"):
        spikecode.integrate_and_fire(np.ones((2, 4), np.float32), 1.0, 2**40)
    spikes = spikecode.integrate_and_fire(np.array([[2.6]], np.float32), 1.0, 4)
    np.testing.assert_array_equal(spikes[:, 0, 0], [1, 1, 1, 0])


def test_raster_token_range_is_checked_before_listing():
    started = time.perf_counter()
    result = CliRunner().invoke(
        main, ["plot", "raster", "--tokens", "0:100000000", "--out", "never.png"]
    )
    _one_line_refusal(result, "token index 99999999 is out of range")
    assert time.perf_counter() - started < 30
    assert not Path("never.png").exists()


def test_the_bound_itself_is_validated(monkeypatch):
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "lots")
    with pytest.raises(SpikecodeError, match="SPIKECODE_MAX_BYTES must be a positive"):
        spikecode.adaptive_counts(np.broadcast_to(np.float32(1), HUGE), k=3.0)


# --------------------------------------------------------------------------- readers


@pytest.fixture
def small_bound(monkeypatch):
    """A bound of 2000 bytes: the files below hold 4000-byte arrays."""
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "2000")


def _x():
    return np.linspace(-2, 2, 1000, dtype=np.float32).reshape(10, 100)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors", ".pt"])
def test_activation_readers_check_sizes_before_reading(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, _x())
    elif suffix == ".npz":
        np.savez_compressed(path, x=_x())
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"x": _x()}, str(path))
    else:
        torch.save({"x": torch.from_numpy(_x())}, path)
    np.testing.assert_array_equal(load_activations(path), _x())
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "2000")
    for read in (load_activations, list_arrays):
        with pytest.raises(
            SpikecodeError, match=r"more than the size bound of 2.0 KiB \(2,000 bytes\)"
        ) as err:
            read(path)
        assert "SPIKECODE_MAX_BYTES" in str(err.value)
        assert err.value.context["file"] == str(path)


def test_a_zip_bomb_member_is_refused_before_inflating(tmp_path):
    # 1 GiB of zeros deflates to ~1 MB: within the deflate ratio, beyond a 64 MiB bound.
    path = tmp_path / "bomb.npz"
    with open(path, "wb") as handle:
        np.savez_compressed(handle, x=np.zeros(2**28, np.float32))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPIKECODE_MAX_BYTES", str(64 << 20))
        with pytest.raises(SpikecodeError, match="the arrays of bomb.npz"):
            load_activations(path)


def test_encoding_and_event_files_check_sizes(tmp_path, small_bound, monkeypatch):
    counts = np.arange(-500, 500, dtype=np.int32).reshape(10, 100)
    train = spikecode.encode(counts, "ternary")
    monkeypatch.delenv("SPIKECODE_MAX_BYTES")
    encoded = save_encoded(tmp_path / "e.npz", counts, np.ones(10), train, k=3.0)
    events = save_events(tmp_path / "ev.npz", train, vth=np.ones(10))
    h5 = save_events(tmp_path / "ev.h5", train, vth=np.ones(10))
    load_encoded(encoded), load_events(events), load_events(h5)
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "2000")
    for read, path in ((load_encoded, encoded), (load_events, events), (load_events, h5)):
        with pytest.raises(SpikecodeError, match="SPIKECODE_MAX_BYTES") as err:
            read(path)
        assert err.value.context["file"] == str(path)


def test_json_readers_check_the_file_size(tmp_path, small_bound):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"layers": ["x" * 100] * 30}))
    for read in (load_stats, load_k_map):
        with pytest.raises(SpikecodeError, match="SPIKECODE_MAX_BYTES"):
            read(path)


def test_nir_weights_check_sizes(tmp_path, monkeypatch):
    w = np.ones((40, 64), np.int8)
    path = export_nir((w, np.ones((40, 1), np.float32)), tmp_path / "g.nir", scheme="ternary", T=3)
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "2000")
    with pytest.raises(SpikecodeError, match="the datasets of g.nir"):
        load_nir(path)


def test_standard_input_is_bounded(monkeypatch):
    buffer = io.BytesIO()
    np.save(buffer, _x())
    runner = CliRunner()
    ok = runner.invoke(main, ["encode", "-", "--format", "json"], input=buffer.getvalue())
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "2000")
    result = runner.invoke(main, ["encode", "-", "--format", "json"], input=buffer.getvalue())
    _one_line_refusal(result, "standard input", "SPIKECODE_MAX_BYTES")


# --------------------------------------------------------------------------- tensors


_META = torch.empty(4, 8, device="meta")
_SPARSE = (torch.eye(4) * 2).to_sparse()
_SPARSE_INT = (torch.eye(4) * 2).to(torch.int32).to_sparse()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: spikecode.adaptive_counts(_META, k=3.0), "x"),
        (lambda: spikecode.adaptive_counts(_SPARSE, k=3.0), "x"),
        (lambda: spikecode.encode_activations(_META, k=3.0), "x"),
        (lambda: spikecode.encode_activations(_SPARSE, k=3.0), "x"),
        (lambda: spikecode.fixed_counts(_SPARSE, 1.0), "x"),
        (lambda: spikecode.encode(_META.int(), "ternary"), "counts"),
        (lambda: spikecode.encode(_SPARSE_INT, "ternary"), "counts"),
        (lambda: spikecode.encode(_SPARSE_INT, "ternary", layout="events"), "counts"),
        (lambda: spikecode.clip_counts(_SPARSE_INT, 1), "counts"),
        (lambda: spikecode.spike_stats(_SPARSE_INT, "ternary"), "counts"),
        (lambda: F.adaptive_counts(_META, 3.0), "x"),
        (lambda: F.quantize_weight_int8(_SPARSE), "weight"),
        (
            lambda: spikecode.nn.W8ASpikeLinear.from_linear(torch.nn.Linear(4, 3, device="meta")),
            "weight",
        ),
    ],
)
def test_sparse_and_meta_tensors_are_one_error(call, argument):
    with pytest.raises(SpikecodeError) as err:
        call()
    message = str(err.value)
    assert message.startswith(f"{argument} is ")
    assert "meta device" in message or "sparse_coo tensor" in message


# --------------------------------------------------------------------------- paths


_COUNTS = np.array([[1, -1, 0], [0, 2, 1]], np.int32)
_TRAIN = spikecode.encode(_COUNTS, "ternary")
_READERS = {
    "load_activations": load_activations,
    "list_arrays": list_arrays,
    "load_encoded": load_encoded,
    "load_events": load_events,
    "load_stats": load_stats,
    "load_k_map": load_k_map,
    "load_nir": load_nir,
    "load_source": lambda p: spikecode.reports.load_source(p),
    "save_stats": lambda p: spikecode.calibration.save_stats(p, None),
    "save_encoded": lambda p: save_encoded(p, _COUNTS, np.ones(2), _TRAIN, k=1.0),
    "save_events": lambda p: save_events(p, _TRAIN, vth=np.ones(2)),
    "export_nir": lambda p: export_nir(
        (np.ones((2, 3), np.int8), np.ones((2, 1), np.float32)), p, scheme="ternary", T=3
    ),
}


@pytest.mark.parametrize("name", sorted(_READERS))
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "must be a path .* not int 3"),
        (b"x.npz", "must be a path .* not bytes"),
        ("x\0.npz", "contains a NUL character"),
        ("", "is an empty path"),
    ],
)
def test_paths_that_are_not_paths_are_one_error(name, value, message):
    with pytest.raises(SpikecodeError, match=message):
        _READERS[name](value)


def test_none_is_not_a_path_where_no_default_exists():
    for read in (load_activations, load_stats, load_nir, load_events):
        with pytest.raises(SpikecodeError, match="must be a path .* not NoneType"):
            read(None)


# --------------------------------------------------------------------------- read-only


def test_read_only_arrays_are_ordinary_input(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 24)).astype(np.float32)
    counts = np.rint(x * 4).astype(np.int32)
    w = rng.integers(-127, 128, size=(7, 24)).astype(np.int8)
    scales = np.full((7, 1), 0.01, np.float32)
    frozen = {}
    for name, a in (("x", x), ("counts", counts), ("w", w), ("scales", scales)):
        frozen[name] = a.copy()
        frozen[name].setflags(write=False)
    for scheme in ("ternary", "bitwise-bidirectional", "bitwise-twos-complement"):
        for layout in ("events", "planes"):
            got = spikecode.encode(frozen["counts"], scheme, layout=layout)
            assert got.equals(spikecode.encode(counts, scheme, layout=layout))
        trained = spikecode.encode_activations(frozen["x"], 3.0, scheme)[0]
        assert trained.equals(spikecode.encode_activations(x, 3.0, scheme)[0])
    np.testing.assert_array_equal(
        spikecode.adaptive_counts(frozen["x"], k=3.0)[0], spikecode.adaptive_counts(x, k=3.0)[0]
    )
    assert spikecode.spike_stats(frozen["counts"]) == spikecode.spike_stats(counts)
    train = spikecode.encode(counts, "ternary")
    vth = np.ones(5, np.float32)
    vth_frozen = vth.copy()
    vth_frozen.setflags(write=False)
    np.testing.assert_array_equal(
        spikecode.spike_linear(train, frozen["w"], frozen["scales"], vth_frozen).output,
        spikecode.spike_linear(train, w, scales, vth).output,
    )
    np.testing.assert_array_equal(
        spikecode.encode_dense(frozen["counts"], "ternary"), spikecode.encode_dense(counts)
    )
    # A file memory-mapped read-only: the everyday read-only array.
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not mapped.flags.writeable
    assert spikecode.encode_activations(mapped, 3.0)[0].equals(spikecode.encode_activations(x)[0])
