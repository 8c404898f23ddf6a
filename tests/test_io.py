"""Activation files in, encoding results out: safe loading, exact round trips, no partial files."""

import pickle

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_safetensors_np
from safetensors.torch import save_file as save_safetensors_torch

import spikecode
from spikecode.io import atomic_write, list_arrays


@pytest.fixture
def x(rng):
    return rng.standard_normal((3, 4, 16)).astype(np.float32)


def test_loads_every_format(tmp_path, x):
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", acts=x)
    save_safetensors_np({"acts": x}, str(tmp_path / "a.safetensors"))
    torch.save(torch.from_numpy(x), tmp_path / "a.pt")
    torch.save({"acts": torch.from_numpy(x), "step": 3}, tmp_path / "b.pt")
    for name in ("a.npy", "a.npz", "a.safetensors", "a.pt", "b.pt"):
        np.testing.assert_array_equal(spikecode.load_activations(tmp_path / name), x)


def test_bfloat16_becomes_float32_exactly(tmp_path, x):
    bf = torch.from_numpy(x).to(torch.bfloat16)
    save_safetensors_torch({"h": bf}, str(tmp_path / "b.safetensors"))
    got = spikecode.load_activations(tmp_path / "b.safetensors")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bf.float().numpy())


def test_several_arrays_need_a_key(tmp_path, x):
    np.savez(tmp_path / "m.npz", first=x, second=x * 2)
    with pytest.raises(spikecode.SpikecodeError, match="holds 2 arrays.*first, second"):
        spikecode.load_activations(tmp_path / "m.npz")
    np.testing.assert_array_equal(spikecode.load_activations(tmp_path / "m.npz", "second"), x * 2)
    with pytest.raises(spikecode.SpikecodeError, match="no array 'third'"):
        spikecode.load_activations(tmp_path / "m.npz", "third")
    assert list_arrays(tmp_path / "m.npz") == {
        "first": ((3, 4, 16), "float32"),
        "second": ((3, 4, 16), "float32"),
    }


def test_pickles_are_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(Boom(), handle)
    with pytest.raises(spikecode.SpikecodeError, match="cannot read evil.pt"):
        spikecode.load_activations(tmp_path / "evil.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(spikecode.SpikecodeError, match="cannot read obj.npy"):
        spikecode.load_activations(tmp_path / "obj.npy")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".safetensors", ".pt"])
def test_truncated_files_are_refused(tmp_path, x, suffix):
    path = tmp_path / f"t{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, x=x)
    elif suffix == ".safetensors":
        save_safetensors_np({"x": x}, str(path))
    else:
        torch.save(torch.from_numpy(x), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(spikecode.SpikecodeError, match=f"cannot read t{suffix}"):
        spikecode.load_activations(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "i.npy", np.arange(6).reshape(2, 3)), "floating point"),
        (lambda p: np.save(p / "i.npy", np.zeros((0, 3), np.float32)), "empty"),
        (lambda p: (p / "i.npy").write_text("hello"), "cannot read"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_activation_files(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.load_activations(tmp_path / "i.npy")
    with pytest.raises(spikecode.SpikecodeError, match="unsupported file type .csv"):
        spikecode.load_activations(tmp_path / "a.csv")


@pytest.mark.parametrize("scheme", list(spikecode.SCHEMES))
@pytest.mark.parametrize("layout", ["events", "planes"])
def test_encoded_round_trip(tmp_path, x, scheme, layout):
    counts, vth = spikecode.adaptive_counts(x, k=2.5)
    train = spikecode.encode(counts, scheme, bit_order="lsb", layout=layout)
    path = spikecode.save_encoded(tmp_path / "e.npz", counts, vth, train, k=2.5, meta={"a": "b"})
    loaded = spikecode.load_encoded(path)
    assert loaded.train.layout == layout
    assert loaded.train.equals(train)
    np.testing.assert_array_equal(loaded.counts, counts)
    np.testing.assert_array_equal(loaded.vth, vth)
    assert loaded.k == 2.5 and loaded.meta == {"a": "b"}
    assert loaded.vth.dtype == vth.dtype
    with np.load(path, allow_pickle=False) as archive:  # plain arrays only
        stored = {"events": {"step_ptr", "feature", "signs"}, "planes": {"planes", "sign_plane"}}
        assert stored[layout] <= set(archive.files)
        assert str(archive["layout"]) == layout and int(archive["format_version"]) == 2
    with pytest.raises(spikecode.SpikecodeError, match="encoding result, not activations"):
        spikecode.load_activations(path, key="counts")


def test_version_1_files_are_read(tmp_path, x):
    counts, vth = spikecode.adaptive_counts(x)
    train = spikecode.encode(counts, "ternary", layout="events")
    good = spikecode.save_encoded(tmp_path / "g.npz", counts, vth, train, k=3.0)
    with np.load(good) as archive:
        fields = {k: v for k, v in archive.items() if k != "layout"}
    np.savez(tmp_path / "v1.npz", **{**fields, "format_version": np.array(1)})
    assert spikecode.load_encoded(tmp_path / "v1.npz").train.equals(train)


@pytest.mark.parametrize("scheme", ["ternary", "bitwise"])
def test_corrupt_planes_files_are_refused(tmp_path, x, scheme):
    counts, vth = spikecode.adaptive_counts(x[..., :13])  # 13 features: 3 padding bits
    train = spikecode.encode(counts, scheme, layout="planes")
    good = spikecode.save_encoded(tmp_path / "g.npz", counts, vth, train, k=3.0)
    with np.load(good) as archive:
        fields = dict(archive)
    planes, sign = fields["planes"], fields["sign_plane"]
    flipped = planes.copy()
    flipped[0, 0, 0] ^= 1
    padded = planes.copy()
    padded[-1, 0, -1] |= 0x80
    cases = {
        "shape": ({**fields, "planes": planes[:, :-1]}, "corrupt planes: shape"),
        "huge": ({**fields, "planes": np.zeros((1, 1, 10**6), np.uint8)}, "corrupt planes"),
        "dtype": ({**fields, "planes": planes.astype(np.float32)}, "corrupt planes: dtype"),
        "bits": ({**fields, "planes": flipped}, "do not decode|never fire"),
        "padding": ({**fields, "planes": padded}, "past the last feature"),
        "layout": ({**fields, "layout": np.array("dense")}, "unknown layout 'dense'"),
        "missing": ({k: v for k, v in fields.items() if k != "planes"}, "missing fields: planes"),
        "sign": ({**fields, "sign_plane": np.zeros((2, 2), np.uint8)}, "corrupt sign_plane"),
    }
    if scheme == "ternary":
        stray = sign.copy()
        row, feature = np.argwhere(counts.reshape(-1, 13) == 0)[0]  # a silent element
        stray[row, feature // 8] |= 1 << (feature % 8)
        cases["stray sign"] = ({**fields, "sign_plane": stray}, "never fire")
    for name, (content, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **content)
        with pytest.raises(spikecode.SpikecodeError, match=message):
            spikecode.load_encoded(tmp_path / f"{name}.npz")


def test_corrupt_encoded_files_are_refused(tmp_path, x):
    counts, vth = spikecode.adaptive_counts(x)
    train = spikecode.encode(counts, "ternary", layout="events")
    good = spikecode.save_encoded(tmp_path / "g.npz", counts, vth, train, k=3.0)
    with np.load(good) as archive:
        fields = dict(archive)
    cases = {
        "version": {**fields, "format_version": np.array(99)},
        "missing": {k: v for k, v in fields.items() if k != "signs"},
        "events": {**fields, "feature": fields["feature"][::-1].copy()},
        "counts": {**fields, "counts": fields["counts"] + 1},
        "step_ptr": {**fields, "step_ptr": fields["step_ptr"][:-1]},
        "ids": {**fields, "feature": np.zeros(10**6, np.uint16)},
        "format": {**fields, "spikecode_format": np.array("other")},
    }
    messages = {
        "version": "version 99",
        "missing": "missing fields: signs",
        "events": "corrupt events",
        "counts": "do not decode",
        "step_ptr": "corrupt step_ptr: shape",
        "ids": "corrupt feature: shape",
        "format": "not a spikecode encoding",
    }
    for name, content in cases.items():
        np.savez(tmp_path / f"{name}.npz", **content)
        with pytest.raises(spikecode.SpikecodeError, match=messages[name]):
            spikecode.load_encoded(tmp_path / f"{name}.npz")
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(spikecode.SpikecodeError, match="cannot read cut.npz"):
        spikecode.load_encoded(tmp_path / "cut.npz")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]
    with (
        pytest.raises(spikecode.SpikecodeError, match="cannot write"),
        atomic_write(tmp_path / "missing" / "x.bin"),
    ):
        pass


def test_save_encoded_needs_npz(tmp_path, x):
    counts, vth = spikecode.adaptive_counts(x)
    with pytest.raises(spikecode.SpikecodeError, match=r"\.npz"):
        spikecode.save_encoded(tmp_path / "e.txt", counts, vth, spikecode.encode(counts), k=3)
