"""Hostile values (issue 9): absurd sizes, inconsistent statistics, wrongly typed metadata.

Each refusal is one SpikecodeError, raised before any large allocation.
"""

from __future__ import annotations

import copy
import json
import zipfile

import numpy as np
import pytest
import torch

import spikecode
from spikecode.calibration import load_stats
from spikecode.errors import SpikecodeError
from spikecode.exporters.events import load_events, save_events
from spikecode.models import GLASwaConfig
from spikecode.testing import write_tiny_gla_swa_checkpoint

# -- 2: inconsistent statistics ------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_text(tmp_path_factory):
    from click.testing import CliRunner

    from spikecode.cli import main

    folder = tmp_path_factory.mktemp("stats")
    checkpoint = write_tiny_gla_swa_checkpoint(folder / "ckpt", with_tokenizer=True)
    out = folder / "stats.json"
    result = CliRunner().invoke(
        main,
        ["calibrate", str(checkpoint), "--samples", "2", "--k", "3", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out.read_text()


def _first_scheme(raw):
    layer = raw["layers"][0]
    entry = next(iter(layer["by_k"].values()))
    scheme = next(iter(entry["schemes"].values()))
    return layer, entry, scheme


def _silent_beyond_elements(raw):
    _, _, s = _first_scheme(raw)
    s["silent"] = s["elements"] + 1


def _spikes_beyond_steps(raw):
    _, _, s = _first_scheme(raw)
    s["spikes"] = s["elements"] * s["T"] + 1


def _within_beyond_elements(raw):
    _, _, s = _first_scheme(raw)
    s["within_7"] = s["elements"] * 2


def _window_spikes_beyond_steps(raw):
    _, _, s = _first_scheme(raw)
    s["window_spikes"] = s["window_steps"] + 1


def _window_steps_too_few(raw):
    _, _, s = _first_scheme(raw)
    s["window_steps"] = s["elements"]  # windows of 3 steps cannot fit


def _fewer_spikes_than_active(raw):
    _, _, s = _first_scheme(raw)
    s["silent"] = 0
    s["spikes"] = s["elements"] - 1


def _negative_silent(raw):
    _, _, s = _first_scheme(raw)
    s["silent"] = -5


def _vth_out_of_order(raw):
    _, entry, _ = _first_scheme(raw)
    entry["vth"]["min"] = entry["vth"]["max"] * 2


def _negative_vth(raw):
    _, entry, _ = _first_scheme(raw)
    entry["vth"]["min"] = -1.0


def _sparsity_total_negative(raw):
    totals = next(iter(raw["totals"].values()))
    next(iter(totals.values()))["sparsity"] = -249.0


def _firing_rate_total_above_one(raw):
    totals = next(iter(raw["totals"].values()))
    next(iter(totals.values()))["firing_rate"] = 3.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_silent_beyond_elements, "silent.*more silent elements than elements"),
        (_spikes_beyond_steps, "spikes.*more spikes than elements x T"),
        (_within_beyond_elements, "within_7.*inconsistent"),
        (_window_spikes_beyond_steps, "window_spikes.*more spikes than steps"),
        (_window_steps_too_few, "window_steps.*whole windows"),
        (_fewer_spikes_than_active, "fewer spikes than elements that are not silent"),
        (_negative_silent, "silent.*>= 0"),
        (_vth_out_of_order, r"vth.*min <= mean <= max"),
        (_negative_vth, r"vth.*0 < min"),
        (_sparsity_total_negative, r"sparsity.*in \[0, 1\]"),
        (_firing_rate_total_above_one, r"firing_rate.*in \[0, 1\]"),
    ],
)
def test_inconsistent_statistics_are_refused(tmp_path, stats_text, change, message):
    raw = json.loads(stats_text)
    load_stats_path = tmp_path / "ok.json"
    load_stats_path.write_text(stats_text)
    load_stats(load_stats_path)  # the untouched file loads
    bad = copy.deepcopy(raw)
    change(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SpikecodeError, match=message):
        load_stats(path)


# -- 3, 4: absurd work refused up front -------------------------------------------------------


def test_huge_counts_are_refused_before_allocating():
    counts = np.full((4, 1000), 1_000_000, dtype=np.int32)  # 4e9 ternary spikes
    with pytest.raises(SpikecodeError, match="max_spikes") as err:
        spikecode.encode(counts, "ternary")
    assert "raise max_spikes" in str(err.value)
    with pytest.raises(SpikecodeError, match="dense train would hold"):
        spikecode.encode_dense(counts, "ternary")


def test_the_spike_bound_counts_exactly():
    from spikecode.encoders.limits import total_spikes
    from spikecode.encoders.schemes import get_scheme

    rng = np.random.default_rng(0)
    counts = rng.integers(-300, 300, size=(7, 33)).astype(np.int32)
    for scheme in spikecode.SCHEMES:
        train = spikecode.encode(counts, scheme)
        spec = get_scheme(scheme)
        assert total_spikes(counts, spec, train.T, train.zero_point) == train.n_spikes
        # Exactly at the bound: built; one below: refused.
        bound = max(train.n_spikes, train.rows * train.T)
        assert spikecode.encode(counts, scheme, max_spikes=bound).equals(train)
        with pytest.raises(SpikecodeError, match="max_spikes"):
            spikecode.encode(counts, scheme, max_spikes=bound - 1)


def test_max_spikes_none_goes_ahead_and_bad_bounds_are_refused():
    counts = np.array([[3, -2, 0]], dtype=np.int32)
    assert spikecode.encode(counts, "ternary", max_spikes=None).n_spikes == 5
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(SpikecodeError, match="max_spikes"):
            spikecode.encode(counts, "ternary", max_spikes=bad)


@pytest.mark.parametrize("T", [10**12, 2**62, 2**64])
def test_absurd_T_is_refused(T):
    counts = np.array([[1, -1]], dtype=np.int32)
    with pytest.raises(SpikecodeError, match="T must be at most|max_spikes"):
        spikecode.encode(counts, "ternary", T=T)
    with pytest.raises(SpikecodeError, match="T must be at most|max_spikes|at most T=62"):
        spikecode.encode(counts, "bitwise", T=T)


def test_large_T_within_the_bound_still_works():
    counts = np.array([[2, -1]], dtype=np.int32)
    train = spikecode.encode(counts, "ternary", T=100_000)
    assert train.T == 100_000
    assert np.array_equal(train.decode(), counts)


# -- 5: event files that claim huge shapes or T -------------------------------------------------


@pytest.fixture
def event_fields(tmp_path):
    counts = np.array([[1, -2, 0], [0, 3, 1]], dtype=np.int32)
    train = spikecode.encode(counts, "ternary")
    path = save_events(tmp_path / "ev.npz", train, vth=np.array([0.5, 0.25], np.float32), k=3.0)
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _write(tmp_path, fields, name="bad.npz"):
    path = tmp_path / name
    np.savez_compressed(path, **fields)
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shape_0", np.array([2, 1 << 31], dtype=np.int64), "max_spikes"),  # huge features
        ("shape_0", np.array([1 << 20, 1 << 20, 3], dtype=np.int64), "Vth does not match"),
        ("T", np.array([1 << 31]), "max_spikes"),
        ("T", np.array([1 << 40]), "T must be at most|max_spikes"),
        ("T", np.array(["many"]), "malformed"),
        ("vth_0", np.array([0.5, -1.0], np.float32), "finite and > 0"),
        ("vth_0", np.array([0.5, np.nan], np.float32), "finite and > 0"),
        ("clipped", np.array([-3]), "clipped"),
        ("k", np.array("three"), "malformed k"),
        ("k", np.array(-2.0), "k must be finite"),
    ],
)
def test_event_files_are_validated_before_allocating(tmp_path, event_fields, field, value, message):
    fields = dict(event_fields)
    fields[field] = value
    with pytest.raises(SpikecodeError, match=message) as err:
        load_events(_write(tmp_path, fields))
    assert "\n" not in str(err.value)


def test_event_file_limit_can_be_raised(tmp_path, event_fields):
    fields = dict(event_fields)
    fields["T"] = np.array([1000])
    path = _write(tmp_path, fields)
    with pytest.raises(SpikecodeError, match="max_spikes"):
        load_events(path, max_spikes=100)
    train, _ = load_events(path)["train"]
    assert train.T == 1000


def test_npz_member_claiming_more_than_it_holds_is_refused(tmp_path, event_fields):
    path = _write(tmp_path, event_fields, "ev.npz")
    # Rewrite the events member's header to announce 2**34 events, keeping the data.
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    body = members["events.npy"]
    header_len = int.from_bytes(body[8:10], "little")
    header = body[10 : 10 + header_len].decode("latin1")
    count = len(event_fields["events"])
    fake = header.replace(f"({count},)", f"({1 << 34},)").ljust(header_len)[:header_len]
    members["events.npy"] = body[:10] + fake.encode("latin1") + body[10 + header_len :]
    bad = tmp_path / "claims.npz"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(SpikecodeError, match="announces more data"):
        load_events(bad)


# -- 6, 7: load_encoded metadata -------------------------------------------------------------------


@pytest.fixture
def encoded_fields(tmp_path):
    counts = np.array([[1, -2, 0], [0, 3, 1]], dtype=np.int32)
    train = spikecode.encode(counts, "ternary")
    path = spikecode.save_encoded(
        tmp_path / "enc.npz", counts, np.array([0.5, 0.25], np.float32), train, k=3.0
    )
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("T", np.array("three"), "'T' must be an integer"),
        ("T", np.array(3.5), "'T' must be an integer"),
        ("shape", np.array([[2, 3]], dtype=np.int64), "'shape' must be a 1-D integer array"),
        ("shape", np.array(["2", "3"]), "'shape' must be a 1-D integer array"),
        ("k", np.array("three"), "'k' must be a number"),
        ("k", np.array(np.nan), "k must be finite and > 0"),
        ("k", np.array(-1.0), "k must be finite and > 0"),
        ("zero_point", np.array([0, 1]), "'zero_point' must be an integer"),
        ("scheme", np.array(3), "'scheme' must be a string"),
        ("vth", np.array([0.5, -0.25], np.float32), "Vth must be finite and > 0"),
        ("vth", np.array([0.5, np.inf], np.float32), "Vth must be finite and > 0"),
        ("clipped", np.array(-1), "clipped"),
        ("clipped", np.array(1), "does not match the 0 counts outside"),
        ("format_version", np.array("1"), "'format_version' must be an integer"),
    ],
)
def test_load_encoded_checks_every_field(tmp_path, encoded_fields, field, value, message):
    fields = dict(encoded_fields)
    fields[field] = value
    path = _write(tmp_path, fields)
    with pytest.raises(SpikecodeError, match=message) as err:
        spikecode.load_encoded(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_load_encoded_checks_saturated_counts(tmp_path):
    counts = np.array([[5, -7, 1], [0, 2, -1]], dtype=np.int32)
    train = spikecode.encode(counts, "ternary", T=3, saturate=True)
    assert train.clipped == 2
    vth = np.array([0.5, 0.25], np.float32)
    path = spikecode.save_encoded(tmp_path / "sat.npz", counts, vth, train, k=3.0)
    loaded = spikecode.load_encoded(path)  # a genuine saturated result loads
    assert loaded.train.equals(train)
    with np.load(path, allow_pickle=False) as archive:
        fields = {name: archive[name] for name in archive.files}
    # Counts the events do not encode, with clipped > 0, used to pass unchecked.
    tampered = dict(fields, counts=np.array([[5, -7, 1], [0, 1, -1]], dtype=np.int32))
    with pytest.raises(SpikecodeError, match="do not decode"):
        spikecode.load_encoded(_write(tmp_path, tampered, "t1.npz"))
    wrong_clipped = dict(fields, clipped=np.array(1))
    with pytest.raises(SpikecodeError, match="does not match the 2 counts outside"):
        spikecode.load_encoded(_write(tmp_path, wrong_clipped, "t2.npz"))


def test_load_encoded_refuses_corrupt_compressed_data(tmp_path, encoded_fields):
    path = _write(tmp_path, encoded_fields, "good.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("counts.npy").header_offset
    # Flip bytes inside the compressed stream of one member (past its local header,
    # whose name and extra lengths sit at bytes 26-29).
    start = offset + 30 + int.from_bytes(data[offset + 26 : offset + 28], "little")
    start += int.from_bytes(data[offset + 28 : offset + 30], "little")
    for i in range(start + 2, start + 12):
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(SpikecodeError, match="cannot read corrupt.npz") as err:
        spikecode.load_encoded(bad)
    assert "\n" not in str(err.value)


# -- 8: config.json types ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_dict(tmp_path_factory):
    folder = write_tiny_gla_swa_checkpoint(tmp_path_factory.mktemp("cfg") / "c")
    return json.loads((folder / "config.json").read_text())


HOSTILE_VALUES = [["chunk"], {"a": 1}, "text", None, True, -1, 0, 1.5, 10**30, float("nan")]


def test_attn_mode_as_a_list(config_dict):
    with pytest.raises(SpikecodeError, match="attn_mode"):
        GLASwaConfig.from_dict({**config_dict, "attn_mode": ["chunk"]})


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=repr)
def test_every_config_field_takes_any_json_value(config_dict, value):
    outcomes = []
    for name in config_dict:
        try:
            outcomes.append(GLASwaConfig.from_dict({**config_dict, name: value}))
        except SpikecodeError as err:  # the only exception allowed
            outcomes.append(str(err))
    messages = [o for o in outcomes if isinstance(o, str)]
    assert messages  # every hostile value breaks at least one field
    assert all("\n" not in m and len(m) < 500 for m in messages)


def test_huge_layer_count_is_refused_quickly(config_dict):
    raw = {k: v for k, v in config_dict.items() if k != "attn_layers"}
    with pytest.raises(SpikecodeError, match="num_hidden_layers"):
        GLASwaConfig.from_dict({**raw, "num_hidden_layers": 10**18})


# -- 12: integrate_and_fire and clip_counts ----------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_integrate_and_fire_refuses_non_finite(bad):
    x = np.array([[0.5, bad, 1.0]], dtype=np.float32)
    with pytest.raises(SpikecodeError, match="NaN or Inf"):
        spikecode.integrate_and_fire(x, 0.5, 4)


def test_clip_counts_refuses_nan_and_non_numbers():
    with pytest.raises(SpikecodeError, match="NaN"):
        spikecode.clip_counts(np.array([1.0, np.nan]), 3)
    with pytest.raises(SpikecodeError, match="NaN"):
        spikecode.clip_counts(torch.tensor([1.0, float("nan")]), 3)
    for bad in (np.array(["1", "2"]), ["a", "b"], np.array([True, False])):
        with pytest.raises(SpikecodeError, match="integer or float"):
            spikecode.clip_counts(bad, 3)
    with pytest.raises(SpikecodeError, match="numbers"):
        spikecode.clip_counts(torch.tensor([True, False]), 3)
    clipped, moved = spikecode.clip_counts(np.array([-5, 0, 9], dtype=np.int32), 3)
    assert clipped.tolist() == [-3, 0, 3] and moved == 2


# -- 13: absurd what-if energy ---------------------------------------------------------------------


def test_absurd_average_spikes_is_refused():
    from spikecode.energy import mac_energy

    with pytest.raises(SpikecodeError, match="at most 2147483648"):
        mac_energy(1e308)
    assert mac_energy(2**31)["spike_mac_pj"] == pytest.approx(2**31 * 0.03)


def test_huge_reductions_print_short():
    from spikecode.energy import format_reduction

    assert format_reduction(-6.52e8) == "-6.52e+10 %"
    assert format_reduction(0.977) == "97.7 %"


# -- 14: k = True is not a number ------------------------------------------------------


def test_bool_k_is_refused_everywhere(tmp_path):
    from spikecode.nn import functional as F

    x = np.ones((2, 4), np.float32)
    calls = [
        lambda: spikecode.adaptive_counts(x, k=True),
        lambda: F.adaptive_counts(torch.ones(2, 4), k=True),
        lambda: F.check_k(True),
        lambda: spikecode.adaptive_counts(x, k="3"),
        lambda: save_events(
            tmp_path / "e.npz", spikecode.encode(np.ones((1, 2), np.int32)), vth=1.0, k=True
        ),
        lambda: spikecode.save_encoded(
            tmp_path / "e.npz",
            np.ones((1, 2), np.int32),
            np.ones(1),
            spikecode.encode(np.ones((1, 2), np.int32)),
            k=True,
        ),
    ]
    for call in calls:
        with pytest.raises(SpikecodeError, match="k must be a number"):
            call()
    assert not (tmp_path / "e.npz").exists()
