"""Address-event streams: exact round trips through .npz and HDF5, and refusal of bad files."""

from __future__ import annotations

import os
import sys
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spikecode as sc
from spikecode.exporters import get_exporter
from spikecode.exporters.events import (
    EVENT_DTYPE,
    EventFile,
    export_events,
    load_events,
    save_events,
    sensor_size,
    slice_events,
    to_events,
    tonic_frame_kwargs,
)

SUFFIXES = (".npz", ".h5", ".hdf5")


def _counts(rng: np.random.Generator, shape) -> np.ndarray:
    return np.rint(3.75 * rng.normal(size=shape)).astype(np.int32)


def _layers(rng: np.random.Generator):
    """Trains of every code, several shapes, zero points, LSB order and saturation."""
    trains = {
        "model.layers.0.attn.q_proj": sc.encode(_counts(rng, (2, 3, 8)), "ternary"),
        "model.layers.0.mlp.up_proj": sc.encode(_counts(rng, (5, 6)), "binary"),  # zero point
        "bits": sc.encode(_counts(rng, (4, 7)), "bitwise", bit_order="lsb"),
        "bidir": sc.encode(_counts(rng, (9,)), "bitwise-bidirectional"),
        "twos": sc.encode(_counts(rng, (3, 5)), "bitwise-twos-complement", T=3, saturate=True),
        "silent": sc.encode(np.zeros((2, 4), dtype=int), "ternary"),
    }
    assert trains["model.layers.0.mlp.up_proj"].zero_point < 0
    assert trains["twos"].clipped > 0
    assert trains["silent"].n_spikes == 0
    vth = {
        name: rng.uniform(0.05, 1.0, size=t.shape[:-1]).astype(np.float32)
        for name, t in trains.items()
    }
    vth["bidir"] = np.float64(0.5)  # a fixed threshold: one scalar for every token
    return trains, vth


def _assert_same(loaded: EventFile, trains, vth) -> None:
    assert list(loaded) == list(trains)
    for name, train in trains.items():
        back, v = loaded[name]
        assert back.equals(train), name
        expected = np.broadcast_to(np.asarray(vth[name]), train.shape[:-1])
        np.testing.assert_array_equal(v, expected)
        assert v.dtype == np.asarray(vth[name]).dtype


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_is_exact(tmp_path, rng, suffix):
    trains, vth = _layers(rng)
    path = save_events(tmp_path / f"events{suffix}", trains, vth=vth, k=3.0)
    loaded = load_events(path)
    assert isinstance(loaded, EventFile)
    assert loaded.k == 3.0
    _assert_same(loaded, trains, vth)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_single_train_and_no_k(tmp_path, rng, suffix):
    train = sc.encode(_counts(rng, (3, 4)), "bitwise-twos-complement")
    vth = rng.uniform(0.1, 1.0, size=3)
    loaded = load_events(save_events(tmp_path / f"one{suffix}", train, vth=vth))
    assert loaded.k is None
    assert list(loaded) == ["train"]
    _assert_same(loaded, {"train": train}, {"train": vth})


@given(
    scheme=st.sampled_from(list(sc.SCHEMES)),
    bit_order=st.sampled_from(["msb", "lsb"]),
    seed=st.integers(0, 2**32 - 1),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    spread=st.integers(0, 20),
)
def test_round_trip_property(tmp_path_factory, scheme, bit_order, seed, shape, spread):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-spread, spread + 1, size=shape)
    train = sc.encode(counts, scheme, bit_order=bit_order)
    vth = rng.uniform(0.01, 10.0, size=shape[:-1])
    path = tmp_path_factory.mktemp("prop") / "e.npz"
    _assert_same(load_events(save_events(path, train, vth=vth)), {"train": train}, {"train": vth})


def test_event_fields_against_the_dense_train(rng):
    """Slow reference: every non-zero of the dense train is one event (t, x, p, token)."""
    trains, _ = _layers(rng)
    events, names = to_events(trains)
    assert events.dtype == EVENT_DTYPE
    assert names == list(trains)
    expected = []
    for layer, train in enumerate(trains.values()):
        dense = train.to_dense().reshape(train.T, train.rows, train.features)
        for token in range(train.rows):
            for t in range(train.T):
                for x in range(train.features):
                    if dense[t, token, x]:  # p: tonic's channel, 1 for +1, 0 for -1
                        expected.append((t, x, 0, int(dense[t, token, x] > 0), token, layer))
    assert events.tolist() == expected


def test_npz_is_plain_numpy_with_tonic_fields(tmp_path, rng):
    trains, vth = _layers(rng)
    path = save_events(tmp_path / "e.npz", trains, vth=vth, k=2.5)
    with np.load(path, allow_pickle=False) as archive:
        events = archive["events"]
        names = archive["layer_names"]
    assert events.dtype.names == ("t", "x", "y", "p", "token", "layer")
    assert [str(n) for n in names] == list(trains)
    np.testing.assert_array_equal(events, to_events(trains)[0])


def test_hdf5_layout_is_readable_with_h5py(tmp_path, rng):
    trains, vth = _layers(rng)
    path = save_events(tmp_path / "e.h5", trains, vth=vth, k=2.5)
    with h5py.File(path, "r") as f:
        assert f.attrs["spikecode_format"] == "spikecode.events"
        np.testing.assert_array_equal(f["events"][()], to_events(trains)[0])
        assert f["layers/1"].attrs["name"] == "model.layers.0.mlp.up_proj"
        assert f["layers/1"].attrs["zero_point"] == trains["model.layers.0.mlp.up_proj"].zero_point


def test_registered_exporter_takes_the_object_first(tmp_path, rng):
    trains, vth = _layers(rng)
    exporter = get_exporter("events")
    assert exporter is export_events
    path = exporter(trains, tmp_path / "e.npz", vth=vth, k=3)
    _assert_same(load_events(path), trains, vth)


# --------------------------------------------------------------------------- bad input


def test_save_refuses_bad_arguments(tmp_path, rng):
    trains, _ = _layers(rng)
    train = trains["bits"]
    cases = [
        ({"trains": train.to_dense(), "vth": 1.0}, "SpikeTrain or a non-empty dict"),
        ({"trains": {}, "vth": {}}, "non-empty dict"),
        ({"trains": {"a": train.to_dense()}, "vth": {"a": 1.0}}, "not a SpikeTrain"),
        ({"trains": {"": train}, "vth": {"": 1.0}}, "non-empty strings"),
        ({"trains": trains, "vth": 1.0}, "same layer names"),
        ({"trains": {"a": train}, "vth": {"b": 1.0}}, "same layer names"),
        ({"trains": train, "vth": np.ones(3)}, "train.shape"),
        ({"trains": train, "vth": -1.0}, "finite and > 0"),
        ({"trains": train, "vth": np.nan}, "finite and > 0"),
        ({"trains": train, "vth": "high"}, "numeric"),
        ({"trains": train, "vth": 1.0, "k": 0}, "k must be"),
        ({"trains": train, "vth": 1.0, "k": "three"}, "k must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(sc.SpikecodeError, match=message):
            save_events(tmp_path / "e.npz", **kwargs)
    with pytest.raises(sc.SpikecodeError, match="end in"):
        save_events(tmp_path / "e.txt", train, vth=1.0)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_unwritable_paths_leave_nothing(tmp_path, rng, suffix):
    train = sc.encode(_counts(rng, (2, 3)), "ternary")
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        save_events(tmp_path / "missing" / f"e{suffix}", train, vth=1.0)
    folder = tmp_path / f"taken{suffix}"
    folder.mkdir()
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        save_events(folder, train, vth=1.0)
    assert os.listdir(tmp_path) == [folder.name]
    assert os.listdir(folder) == []


def test_missing_h5py_is_a_clear_error(tmp_path, rng, monkeypatch):
    train = sc.encode(_counts(rng, (2, 3)), "ternary")
    written = save_events(tmp_path / "e.h5", train, vth=1.0)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(sc.SpikecodeError, match="pip install h5py"):
        save_events(tmp_path / "f.h5", train, vth=1.0)
    with pytest.raises(sc.SpikecodeError, match="pip install h5py") as err:
        load_events(written)
    assert err.value.context["file"] == str(written)
    assert sorted(os.listdir(tmp_path)) == ["e.h5"]
    save_events(tmp_path / "g.npz", train, vth=1.0)  # .npz needs no h5py


def _rewrite_npz(path, **changes) -> None:
    with np.load(path, allow_pickle=False) as archive:
        data = {name: archive[name] for name in archive.files}
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    np.savez(path, **data)


def _rewrite_h5(path, edit) -> None:
    with h5py.File(path, "a") as f:
        edit(f)


def _npz_cases(train):
    events = to_events(train)[0]
    wide = events.copy()
    wide["x"][0] = train.features
    stray = events.copy()
    stray["layer"][0] = 1
    twice = np.concatenate([events, events[:1]])
    flipped = events.copy()
    flipped["p"][0] = 0  # a -1 spike in a binary train
    channel = events.copy()
    channel["p"][0] = 2
    row = events.copy()
    row["y"][0] = 1
    no_p = np.zeros(
        3, dtype=[("t", "<i4"), ("x", "<i4"), ("y", "<i2"), ("token", "<i8"), ("layer", "<i2")]
    )
    return {
        "missing fields: events": {"events": None},
        "missing fields: vth_0": {"vth_0": None},
        "missing fields: T": {"T": None},
        "version 3 is not supported": {"format_version": np.array(3)},
        "channels must be 0 or 1": {"events": channel},
        "y must be 0": {"events": row},
        "not a spikecode event file": {"spikecode_format": np.array("other")},
        "missing: p": {"events": no_p},
        "must be integer": {"events": events.astype([(n, "<f8") for n in EVENT_DTYPE.names])},
        "layers the file does not list": {"events": stray},
        "outside the train's shape": {"events": wide},
        "duplicate events": {"events": twice},
        "polarities": {"events": flipped},
        "Vth does not match": {"vth_0": np.ones(7, dtype=np.float32)},
        "Vth must be finite": {"vth_0": np.full(train.shape[:-1], -1.0)},
        "unknown scheme": {"scheme": np.array(["unary"])},
        "malformed layer metadata": {"T": np.array(["many"])},
        "bad train shape": {"shape_0": np.array([0, 4])},
        "does not list every layer": {"T": np.array([3, 3])},
    }


def test_load_refuses_inconsistent_npz(tmp_path, rng):
    train = sc.encode(np.abs(_counts(rng, (3, 4))) + 1, "binary", zero_point=0)
    for i, (message, changes) in enumerate(_npz_cases(train).items()):
        path = save_events(tmp_path / f"case{i}.npz", train, vth=np.ones(3, np.float32))
        _rewrite_npz(path, **changes)
        with pytest.raises(sc.SpikecodeError, match=message) as err:
            load_events(path)
        assert err.value.context["file"] == str(path), message


def test_load_refuses_inconsistent_hdf5(tmp_path, rng):
    train = sc.encode(_counts(rng, (3, 4)), "ternary")
    edits = {
        "missing fields: events": lambda f: f.__delitem__("events"),
        "missing fields: k": lambda f: f.attrs.__delitem__("k"),
        "layer 0 lacks fields: scheme": lambda f: f["layers/0"].attrs.__delitem__("scheme"),
        "layer 0 lacks fields: vth": lambda f: f["layers/0"].__delitem__("vth"),
        "version 7 is not supported": lambda f: f.attrs.__setitem__("format_version", 7),
        "not a spikecode event file": lambda f: f.attrs.__delitem__("spikecode_format"),
        "missing layer group layers/0": lambda f: f["layers"].move("0", "zero"),
        "corrupt events": lambda f: f["layers/0"].attrs.__setitem__("T", 1),
    }
    for i, (message, edit) in enumerate(edits.items()):
        path = save_events(tmp_path / f"case{i}.h5", train, vth=np.ones(3))
        _rewrite_h5(path, edit)
        with pytest.raises(sc.SpikecodeError, match=message) as err:
            load_events(path)
        assert err.value.context["file"] == str(path), message


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_load_refuses_truncated_and_garbage_files(tmp_path, rng, suffix):
    trains, vth = _layers(rng)
    good = save_events(tmp_path / f"good{suffix}", trains, vth=vth)
    data = good.read_bytes()
    broken = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": bytes(rng.integers(0, 256, size=4096, dtype=np.uint8)),
    }
    for name, content in broken.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        with pytest.raises(sc.SpikecodeError, match=f"{name}{suffix}") as err:
            load_events(path)
        assert err.value.context["file"] == str(path)
    with pytest.raises(sc.SpikecodeError, match="no such file"):
        load_events(tmp_path / f"absent{suffix}")


def test_load_refuses_corrupt_compressed_data_and_foreign_npz(tmp_path, rng):
    trains, vth = _layers(rng)
    good = save_events(tmp_path / "good.npz", trains, vth=vth)
    # flip bytes inside the compressed events member, keeping the zip directory intact
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("events.npy")
    raw = bytearray(good.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 8
    raw[start : start + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(sc.SpikecodeError, match=r"corrupt\.npz"):
        load_events(corrupt)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, counts=np.zeros(3))
    with pytest.raises(sc.SpikecodeError, match="not a spikecode event file"):
        load_events(foreign)
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(sc.SpikecodeError, match="not a spikecode event file"):
        load_events(plain)
    with pytest.raises(sc.SpikecodeError, match="end in"):
        load_events(tmp_path / "events.csv")


# --------------------------------------------------------------------------- tonic


def test_shared_T_and_layer_names_are_recorded(tmp_path, rng):
    counts = {name: _counts(rng, (3, 5)) for name in ("a", "b")}
    T = max(sc.min_steps(c, "ternary") for c in counts.values())
    trains = {name: sc.encode(c, "ternary", T) for name, c in counts.items()}
    for suffix in (".npz", ".h5"):
        loaded = load_events(
            save_events(tmp_path / f"e{suffix}", trains, vth=dict.fromkeys(trains, 1.0))
        )
        assert loaded.T == T and loaded.layer_names == ["a", "b"]
    with np.load(tmp_path / "e.npz", allow_pickle=False) as archive:
        assert int(archive["shared_T"]) == T and str(archive["time_unit"]) == "step"
    mixed = {"a": trains["a"], "b": sc.encode(counts["b"], "ternary", T + 1)}
    assert load_events(save_events(tmp_path / "m.npz", mixed, vth=dict.fromkeys(mixed, 1.0))).T == 0


def test_version_1_files_still_load(tmp_path, rng):
    """Version 1 stored p as the spike value (+1/-1) and had no y field."""
    trains, vth = _layers(rng)
    path = save_events(tmp_path / "v2.npz", trains, vth=vth, k=3.0)
    events = to_events(trains)[0]
    old = np.empty(
        len(events),
        dtype=[("t", "<i4"), ("x", "<i4"), ("p", "i1"), ("token", "<i8"), ("layer", "<i2")],
    )
    for name in ("t", "x", "token", "layer"):
        old[name] = events[name]
    old["p"] = events["p"].astype(np.int8) * 2 - 1
    _rewrite_npz(path, events=old, format_version=np.array(1), shared_T=None, time_unit=None)
    _assert_same(load_events(path), trains, vth)


def test_slice_events_by_layer_and_token(rng):
    trains, _ = _layers(rng)
    events, names = to_events(trains)
    name = "model.layers.0.attn.q_proj"
    train = trains[name]
    by_name = slice_events(events, layer=name, layer_names=names)
    np.testing.assert_array_equal(by_name, slice_events(events, layer=names.index(name)))
    assert len(by_name) == train.n_spikes
    dense = train.to_dense().reshape(train.T, train.rows, train.features)
    for token in range(train.rows):
        one = slice_events(events, layer=name, token=token, layer_names=names)
        assert np.all(np.diff(one["t"]) >= 0)
        rebuilt = np.zeros((train.T, train.features), dtype=np.int8)
        rebuilt[one["t"], one["x"]] = one["p"].astype(np.int8) * 2 - 1
        np.testing.assert_array_equal(rebuilt, dense[:, token])
    with pytest.raises(sc.SpikecodeError, match="no layer 'nope'"):
        slice_events(events, layer="nope", layer_names=names)


@pytest.mark.parametrize("scheme", list(sc.SCHEMES))
def test_tonic_to_frame_bins_exactly(tmp_path, rng, scheme):
    """tonic's ToFrame with the documented settings gives back the dense train per token."""
    transforms = pytest.importorskip(
        "tonic.transforms", reason="tonic is not installed (pip install 'spikecode[nir-consumers]')"
    )
    counts = _counts(rng, (4, 9))
    counts[1] = 0  # a silent token: its frames are all zero
    train = sc.encode(counts, scheme)
    loaded = load_events(save_events(tmp_path / "e.npz", {"l": train}, vth={"l": 1.0}))
    with np.load(tmp_path / "e.npz", allow_pickle=False) as archive:
        events = archive["events"]
    assert loaded["l"][0].equals(train)
    to_frame = transforms.ToFrame(**tonic_frame_kwargs(train.features, train.T))
    assert sensor_size(train.features) == (9, 1, 2)
    dense = train.to_dense()
    for token in range(train.rows):
        one = slice_events(events, layer="l", token=token, layer_names=["l"])
        if not len(one):  # tonic returns one frame for no events: the host keeps zeros
            assert token == 1 and not dense[:, token].any()
            continue
        frames = to_frame(one)
        assert frames.shape == (train.T, 2, 1, train.features)
        np.testing.assert_array_equal(frames[:, 1, 0] - frames[:, 0, 0], dense[:, token])
        if train.scheme not in ("ternary", "bitwise-bidirectional"):
            assert not frames[:, 0].any()  # unsigned codes only use channel 1


def test_tonic_two_dimensional_transforms_accept_the_events(rng):
    transforms = pytest.importorskip(
        "tonic.transforms", reason="tonic is not installed (pip install 'spikecode[nir-consumers]')"
    )
    train = sc.encode(_counts(rng, (2, 12)), "ternary")
    events = slice_events(to_events(train)[0], token=0)
    size = sensor_size(train.features)

    def subset(selected):
        pairs = set(map(tuple, events[["t", "x"]].tolist()))
        return set(map(tuple, selected[["t", "x"]].tolist())) <= pairs

    assert subset(transforms.RefractoryPeriod(delta=1)(events))  # reads x, y, t, p
    # ToVoxelGrid rewrites p = 0 to -1 in place (signed p: int8) and rescales time
    voxels = transforms.ToVoxelGrid(sensor_size=size, n_time_bins=train.T)(events.copy())
    assert voxels.shape == (train.T, 1, 1, train.features)
    surfaces = transforms.ToTimesurface(sensor_size=size, dt=1, tau=2)(events)
    assert surfaces.shape[1:] == (2, 1, train.features)
    denoised = transforms.Denoise(filter_time=train.T)(events)
    assert set(map(tuple, denoised[["t", "x"]].tolist())) <= set(
        map(tuple, events[["t", "x"]].tolist())
    )
