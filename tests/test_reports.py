"""spikecode.reports: sources, report numbers against the core API, rendering, bad input."""

import copy
import csv
import io
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import spikecode
from spikecode.calibration import (
    VTH_EDGES,
    CalibrationStats,
    CheckpointInfo,
    DataInfo,
    KStats,
    LayerStats,
    VthSummary,
    k_key,
    load_stats,
    summarize,
)
from spikecode.calibration import CountHistogram as StatsHistogram
from spikecode.data import load_sample, sample_path
from spikecode.energy import channel_activity, format_ratio, format_reduction
from spikecode.errors import SpikecodeError
from spikecode.reports import (
    FORMATS,
    ActivationSource,
    StatsSource,
    count_histogram,
    count_histograms,
    energy_report,
    equation24_report,
    load_source,
    merge_histograms,
    raster_data,
    reconstruction_error,
    sparsity_report,
    tradeoff_report,
)

KS = (2.0, 3.0, 4.0)
SCHEMES = ("bitwise-bidirectional", "ternary")


def slow_histogram(counts, limit=64):
    seen = Counter(int(v) for v in np.asarray(counts).ravel())
    bins = [seen.get(c, 0) for c in range(-limit, limit + 1)]
    below = sum(n for c, n in seen.items() if c < -limit)
    above = sum(n for c, n in seen.items() if c > limit)
    return bins, below, above


def make_stats(layers, ks=KS, schemes=SCHEMES, block_sizes=(16, 64, 256)):
    """A version-1 stats file (docs/statsfile.rst) as a JSON object, computed with the core API.

    ``layers``: list of (name, family, x [tokens, in], out_features). Output errors are
    made-up numbers (the reports only carry them), distinct per layer and k.
    """
    entries = []
    for i, (name, family, x, out_features) in enumerate(layers):
        by_k = {}
        for j, k in enumerate(ks):
            counts, vth = spikecode.adaptive_counts(x, k=k)
            bins, below, above = slow_histogram(counts)
            v = np.asarray(vth, dtype=np.float64)
            vth_bins, _ = np.histogram(v, bins=VTH_EDGES)
            by_k[k_key(k)] = KStats(
                vth=VthSummary(
                    float(v.mean()),
                    float(v.std()),
                    float(v.min()),
                    float(v.max()),
                    VTH_EDGES,
                    tuple(int(n) for n in vth_bins),
                ),
                count_histogram=StatsHistogram(-64, tuple(bins), below, above),
                max_abs_count=int(np.abs(counts).max()),
                output_rel_error=0.01 * (i + 1) / (j + 1),
                output_cosine=1 - 0.001 * (i + 1) / (j + 1),
                activity=channel_activity(counts, block_sizes),
                schemes={s: spikecode.spike_stats(counts, s) for s in schemes},
            )
        entries.append(
            LayerStats(name, family, x.shape[-1], out_features, x.shape[0], by_k, x.shape[0])
        )
    stats = CalibrationStats.create(
        checkpoint=CheckpointInfo("tiny", "activations", None, "float32"),
        data=DataInfo("test", 4, 40, 16),
        k=ks,
        schemes=schemes,
        window=3,
        block_sizes=block_sizes,
        layers=entries,
        error_rows=None,
    )
    return json.loads(json.dumps(stats.to_dict()))


def tiny_layers(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(2):
        for family, n_in, n_out in (("q_proj", 48, 32), ("down_proj", 80, 48)):
            x = rng.standard_normal((20, n_in)).astype(np.float32)
            x[:, ::7] = 0  # some always-silent channels
            out.append((f"model.layers.{i}.{family}", family, x, n_out))
    return out


def write_stats(tmp_path, data, name="stats.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def sample_source():
    return load_source()


@pytest.fixture(scope="module")
def tiny():
    layers = tiny_layers()
    return layers, make_stats(layers)


# -- sources -----------------------------------------------------------------------------


def test_no_path_is_the_bundled_sample(sample_source):
    assert isinstance(sample_source, ActivationSource)
    np.testing.assert_array_equal(sample_source.x, load_sample())
    info = sample_source.describe()
    assert info["kind"] == "activations"
    assert info["shape"] == [6, 291, 384]
    assert info["layers"] == 6 and info["layer_axis"] is True
    # The real module names, as in `spikecode export` (issue 9).
    assert sample_source.names == [f"encoder.layer.{i}.attention.self.query" for i in range(6)]


def test_activation_files_and_layer_axis(tmp_path, rng):
    x2 = rng.standard_normal((10, 16)).astype(np.float32)
    np.save(tmp_path / "two.npy", x2)
    src = load_source(tmp_path / "two.npy")
    assert isinstance(src, ActivationSource) and src.names == ["two"]
    x4 = rng.standard_normal((2, 3, 5, 16))
    np.savez(tmp_path / "four.npz", acts=x4, other=x4[0])
    src = load_source(tmp_path / "four.npz", key="acts")
    # Not 3-D: one layer, every leading index a token.
    (layer,) = src.layer_results(3.0, "ternary")
    assert layer.name == "acts" and layer.tokens == 30 and layer.in_features == 16


def test_stats_file_is_detected_by_suffix_and_by_content(tmp_path, tiny):
    _, data = tiny
    assert isinstance(load_source(write_stats(tmp_path, data)), StatsSource)
    other = write_stats(tmp_path, data, "stats.txt")
    assert isinstance(load_source(other), StatsSource)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01binary junk", "cannot tell what"),
        (b"{ not json", "not valid JSON"),
        (b'{"name": "horowitz", "operations": {}}', "not a spikecode stats file"),
        (b"[1, 2, 3]", "not a spikecode stats file"),
    ],
)
def test_wrong_kinds_of_file(tmp_path, content, message):
    path = tmp_path / ("thing.bin" if content.startswith(b"\x00") else "thing.json")
    path.write_bytes(content)
    with pytest.raises(SpikecodeError, match=message) as info:
        load_source(path)
    assert str(path) in str(info.value)


def test_missing_file_folder_and_corrupt_activations(tmp_path):
    with pytest.raises(SpikecodeError, match="no such file"):
        load_source(tmp_path / "absent.json")
    with pytest.raises(SpikecodeError, match="config.json not found"):
        load_source(tmp_path)  # a folder is a checkpoint folder (issue 20)
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(SpikecodeError, match="cannot read"):
        load_source(tmp_path / "bad.npy")
    np.save(tmp_path / "ints.npy", np.arange(12).reshape(3, 4))
    with pytest.raises(SpikecodeError, match="floating point"):
        load_source(tmp_path / "ints.npy")


def test_encoding_result_is_not_a_source(tmp_path):
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x)
    spikecode.save_encoded(tmp_path / "enc.npz", counts, vth, spikecode.encode(counts), k=3.0)
    with pytest.raises(SpikecodeError, match="encoding result"):
        load_source(tmp_path / "enc.npz")


def test_key_is_refused_for_stats_files(tmp_path, tiny):
    with pytest.raises(SpikecodeError, match="activation files"):
        load_source(write_stats(tmp_path, tiny[1]), key="x")


def _delete(data, path):
    obj = data
    for part in path[:-1]:
        obj = obj[part]
    del obj[path[-1]]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("layers",), "layers"),
        (("k",), "k"),
        (("layers", 1, "in_features"), "layers[1].in_features"),
        (("layers", 0, "by_k", "3"), "layers[0].by_k.3"),
        (("layers", 2, "by_k", "3", "activity"), "layers[2].by_k.3.activity"),
        (("layers", 0, "by_k", "3", "schemes", "ternary", "spikes"), "schemes.ternary.spikes"),
        (("layers", 3, "by_k", "3", "count_histogram"), "layers[3].by_k.3.count_histogram"),
    ],
)
def test_missing_fields_are_named(tmp_path, tiny, path, field):
    data = copy.deepcopy(tiny[1])
    _delete(data, path)
    file = write_stats(tmp_path, data)
    with pytest.raises(SpikecodeError) as info:
        src = load_source(file)
        sparsity_report(src, 3.0, "ternary")
    assert field in str(info.value) and str(file) in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=3), "version 3 is not supported"),
        (lambda d: d.update(format="other"), "not a spikecode stats file"),
        (lambda d: d.update(schemes=["morse"]), "unknown code 'morse'"),
        (lambda d: d["layers"][0].update(tokens=21), "21"),
        (
            lambda d: d["layers"][0]["by_k"]["3"]["schemes"]["ternary"].update(spikes=-1),
            "must be >= 0, got -1",
        ),
        (
            lambda d: d["layers"][0]["by_k"]["3"]["activity"].update(active_channels=1e9),
            "inconsistent",
        ),
        (lambda d: d["layers"][0]["by_k"]["3"].update(output_rel_error="x"), "finite number"),
    ],
)
def test_invalid_stats_files(tmp_path, tiny, change, message):
    data = copy.deepcopy(tiny[1])
    change(data)
    with pytest.raises(SpikecodeError, match=message):
        sparsity_report(load_source(write_stats(tmp_path, data)), 3.0, "ternary")


def test_stats_file_choices(tmp_path, tiny):
    src = load_source(write_stats(tmp_path, tiny[1]))
    assert src.resolve_k(None) == 3.0
    assert src.resolve_scheme(None) == "bitwise-bidirectional"
    with pytest.raises(SpikecodeError, match=r"no k = 2\.5; it has 2, 3, 4"):
        sparsity_report(src, 2.5)
    with pytest.raises(SpikecodeError, match="no scheme 'binary'"):
        sparsity_report(src, 3.0, "binary")
    with pytest.raises(SpikecodeError, match="unknown scheme"):
        sparsity_report(src, 3.0, "morse")
    with pytest.raises(SpikecodeError, match="applies to activation files"):
        energy_report(src, out_features=10)
    with pytest.raises(SpikecodeError, match="no block size 32"):
        energy_report(src, memory="dram", block_sizes=(16, 32))
    # k closest to 3 when the file lacks 3; ties go to the smaller k.
    other = copy.deepcopy(tiny[1])
    other["k"] = [2.0, 4.0]
    assert load_source(write_stats(tmp_path, other, "o.json")).resolve_k(None) == 2.0


# -- sparsity ----------------------------------------------------------------------------


def slow_reconstruction(x, counts, vth):
    x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    c = np.asarray(counts, dtype=np.float64).reshape(x.shape)
    v = np.asarray(vth, dtype=np.float64).reshape(-1)
    num = den = 0.0
    cosines = []
    for row, crow, t in zip(x, c, v, strict=True):
        approx = [t * value for value in crow]
        num += sum((a - b) ** 2 for a, b in zip(approx, row, strict=True))
        den += sum(b * b for b in row)
        na = math.sqrt(sum(a * a for a in approx))
        nb = math.sqrt(sum(b * b for b in row))
        if na == 0 and nb == 0:
            cosines.append(1.0)
        elif na == 0 or nb == 0:
            cosines.append(0.0)
        else:
            cosines.append(sum(a * b for a, b in zip(approx, row, strict=True)) / (na * nb))
    return (math.sqrt(num / den) if den else 0.0), sum(cosines) / len(cosines)


def test_reconstruction_error_against_a_loop(rng):
    x = rng.standard_normal((7, 12)).astype(np.float32)
    x[2] = 0  # an all-zero token: reconstructed exactly
    counts, vth = spikecode.adaptive_counts(x, k=2.0)
    rel, cos = reconstruction_error(x, counts, vth)
    ref_rel, ref_cos = slow_reconstruction(x, counts, vth)
    assert rel == pytest.approx(ref_rel, rel=1e-12)
    assert cos == pytest.approx(ref_cos, rel=1e-12)
    assert reconstruction_error(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(2)) == (0.0, 1.0)


@pytest.mark.parametrize("scheme", list(spikecode.SCHEMES))
def test_sparsity_on_the_sample_matches_the_core_api(sample_source, scheme):
    report = sparsity_report(sample_source, 2.5, scheme)
    data = report.to_dict()
    assert (data["k"], data["scheme"], data["window"]) == (2.5, scheme, 3)
    assert data["error_measure"] == "reconstruction"
    x = load_sample()
    totals = Counter()
    for i, layer in enumerate(data["layers"]):
        counts, vth = spikecode.adaptive_counts(x[i], k=2.5)
        stats = spikecode.spike_stats(counts, scheme)
        assert layer["name"] == f"encoder.layer.{i}.attention.self.query"
        assert layer["family"] == "q_proj"
        assert (layer["tokens"], layer["in_features"], layer["out_features"]) == (291, 384, 384)
        for field in ("T", "elements", "spikes", "silent", "within_7", "window_spikes",
                      "window_steps"):  # fmt: skip
            assert layer[field] == getattr(stats, field)
            totals[field] += getattr(stats, field)
        assert layer["sparsity"] == stats.sparsity
        assert layer["window_sparsity"] == stats.window_sparsity
        assert layer["max_abs_count"] == int(np.abs(counts).max())
        assert layer["vth_mean"] == pytest.approx(float(np.mean(vth, dtype=np.float64)))
        if i == 0:  # the pure-Python loop is slow: one layer is enough
            rel, cos = slow_reconstruction(x[i], counts, vth)
            assert layer["rel_error"] == pytest.approx(rel, rel=1e-9)
            assert layer["cosine"] == pytest.approx(cos, rel=1e-9)
    total = data["total"]
    for field in ("elements", "spikes", "silent", "within_7", "window_spikes", "window_steps"):
        assert total[field] == totals[field]
    assert total["T"] == max(layer["T"] for layer in data["layers"])
    assert total["spikes_per_element"] == totals["spikes"] / totals["elements"]
    # One firing-rate definition (issue 9): spikes over neuron-step slots, each layer's own T.
    slots = sum(la["elements"] * la["T"] for la in data["layers"])
    assert total["firing_rate"] == pytest.approx(totals["spikes"] / slots, rel=1e-12)
    assert total["sparsity"] == 1 - total["firing_rate"]
    assert total["rel_error"] == pytest.approx(np.mean([la["rel_error"] for la in data["layers"]]))


def test_bitwise_bidirectional_sample_figure_from_the_readme(sample_source):
    # SPEC §5 conventions: at k = 3 the sample gives 1.24 spikes per element and |c| <= 7
    # for 94.4 %.
    total = sparsity_report(sample_source).to_dict()["total"]
    assert round(total["spikes_per_element"], 2) == 1.24
    assert round(100 * total["within_7_fraction"], 1) == 94.4


def test_stats_file_reports_what_the_file_says(tmp_path, tiny):
    layers, data = tiny
    src = load_source(write_stats(tmp_path, data))
    report = sparsity_report(src, 2.0, "ternary").to_dict()
    assert report["error_measure"] == "output"
    assert report["source"]["kind"] == "stats"
    assert report["source"]["checkpoint"]["path"] == "tiny"
    for layer, raw, (name, family, _, out) in zip(
        report["layers"], data["layers"], layers, strict=True
    ):
        entry = raw["by_k"]["2"]
        expected = entry["schemes"]["ternary"]
        assert (layer["name"], layer["family"], layer["out_features"]) == (name, family, out)
        for field in ("T", "elements", "spikes", "sparsity", "window_sparsity",
                      "silent_fraction"):  # fmt: skip
            assert layer[field] == expected[field]
        assert layer["rel_error"] == entry["output_rel_error"]
        assert layer["cosine"] == entry["output_cosine"]
        assert layer["vth_mean"] == entry["vth"]["mean"]
    weights = [la["elements"] for la in report["layers"]]
    errors = [la["rel_error"] for la in report["layers"]]
    assert report["total"]["rel_error"] == pytest.approx(np.average(errors, weights=weights))


def test_totals_equal_the_stats_file_totals(tmp_path, tiny):
    path = write_stats(tmp_path, tiny[1])
    src, stats = load_source(path), load_stats(path)
    for k in KS:
        for scheme in SCHEMES:
            total = sparsity_report(src, k, scheme).to_dict()["total"]
            expected = summarize([(layer, k_key(k)) for layer in stats.layers], scheme)
            assert expected == dict(stats.totals[k_key(k)][scheme])
            for key in ("spikes_per_element", "silent_fraction", "within_7_fraction"):
                assert total[key] == expected[key]
            assert total["firing_rate"] == pytest.approx(expected["firing_rate"], rel=1e-12)
            assert total["sparsity"] == pytest.approx(expected["sparsity"], rel=1e-12)
            assert total["window_sparsity"] == expected["window3_sparsity"]
            assert total["rel_error"] == pytest.approx(expected["output_rel_error"], rel=1e-12)


def test_stats_source_from_calibration_stats_in_memory(tmp_path, tiny):
    stats = load_stats(write_stats(tmp_path, tiny[1]))
    src = StatsSource(stats)
    assert src.describe()["path"] is None
    assert "(in memory)" in sparsity_report(src).render("table")
    with pytest.raises(SpikecodeError, match="CalibrationStats"):
        StatsSource(tiny[1])


def test_stats_file_and_activations_agree(tmp_path):
    # A stats file made from the sample's first two layers reports the same spike numbers
    # as the activations themselves.
    x = load_sample()[:2]
    data = make_stats([(f"layer{i}", f"layer{i}", x[i], 384) for i in range(2)], ks=(3.0,))
    from_stats = sparsity_report(load_source(write_stats(tmp_path, data))).to_dict()
    from_acts = sparsity_report(ActivationSource(x)).to_dict()
    keys = ("T", "elements", "spikes", "silent", "within_7", "window_spikes", "max_abs_count")
    for a, b in zip(from_stats["layers"], from_acts["layers"], strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert a["vth_mean"] == pytest.approx(b["vth_mean"])
    e_stats = energy_report(load_source(write_stats(tmp_path, data)), memory="dram").to_dict()
    e_acts = energy_report(ActivationSource(x), memory="dram").to_dict()
    assert e_stats["total"]["memory"] == e_acts["total"]["memory"]
    assert e_stats["spike_mac_pj"] == e_acts["spike_mac_pj"]


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9)),
        elements=st.floats(-50, 50, width=32),
    ),
    st.sampled_from(list(spikecode.SCHEMES)),
)
def test_totals_are_sums_of_layers(x, scheme):
    data = sparsity_report(ActivationSource(x), 3.0, scheme).to_dict()
    all_counts = np.concatenate([spikecode.adaptive_counts(layer, k=3.0)[0] for layer in x])
    total = data["total"]
    assert total["elements"] == x.size
    assert total["within_7"] == int(np.count_nonzero(np.abs(all_counts) <= 7))
    assert total["spikes"] == sum(layer["spikes"] for layer in data["layers"])
    assert total["max_abs_count"] == int(np.abs(all_counts).max())
    assert 0 <= total["sparsity"] <= 1


# -- energy ------------------------------------------------------------------------------


def test_equation_24_what_if():
    report = equation24_report(1.13)
    data = report.to_dict()
    assert data["spike_mac_pj"] == pytest.approx(0.0339)
    assert (data["fp16_mac_pj"], data["int8_mac_pj"]) == (1.5, 0.23)
    assert format_reduction(data["reduction_vs_fp16"]) == "97.7 %"
    assert format_reduction(data["reduction_vs_int8"]) == "85.3 %"
    assert format_ratio(data["ratio_vs_fp16"]) == "44.2×"
    assert format_ratio(data["ratio_vs_int8"]) == "6.78×"
    assert data["layers"] == [] and data["total"] is None
    text = report.render("table")
    for expected in ("0.0339 pJ", "97.7 %", "85.3 %", "44.2×", "6.78×"):
        assert expected in text
    rows = report.rows()
    assert [r["mac"] for r in rows] == ["spike", "fp32", "fp16", "int8"]
    assert rows[2]["reduction"] == pytest.approx(1 - 0.0339 / 1.5)


def test_equation_24_bad_input(tmp_path):
    with pytest.raises(SpikecodeError, match=">= 0"):
        equation24_report(-1.0)
    table = {"unit": "pJ", "operations": {"int8_add": 0.03}}
    with pytest.raises(SpikecodeError, match="int8_mult"):
        equation24_report(1.13, table)


def test_energy_on_the_sample_against_direct_computation(sample_source):
    report = energy_report(sample_source, 3.0, "ternary", memory="dram", block_sizes=(16, 100))
    data = report.to_dict()
    x = load_sample()
    spikes = elements = 0
    for i, layer in enumerate(data["layers"]):
        counts, _ = spikecode.adaptive_counts(x[i], k=3.0)
        s = spikecode.spike_stats(counts, "ternary")
        spikes, elements = spikes + s.spikes, elements + s.elements
        per_token = layer["energy_per_token_pj"]
        assert per_token["fp16"] == pytest.approx(384 * 384 * 1.5)
        assert per_token["int8"] == pytest.approx(384 * 384 * 0.23)
        assert per_token["spike"] == pytest.approx(s.spikes * 384 * 0.03 / 291)
        assert layer["family"] == "q_proj"
        # Weight fetch, 8-bit weights, 64-bit DRAM accesses at 1300 pJ.
        per_column = 384 * 8 / 64 * 1300
        memory = layer["memory"]
        active = np.count_nonzero(counts)
        assert memory["channel_skip"]["energy_pj"] == pytest.approx(active * per_column)
        fetched = 0
        for t in range(counts.shape[0]):
            for start in range(0, 384, 100):
                block = counts[t, start : start + 100]
                fetched += len(block) if np.any(block != 0) else 0
        (_, b100) = memory["block_skip"]
        assert b100["block_size"] == 100
        assert b100["fetched_channels"] == fetched
    assert data["avg_spikes_per_element"] == spikes / elements
    assert data["spike_mac_pj"] == pytest.approx(spikes / elements * 0.03)
    assert data["reduction_vs_fp16"] == pytest.approx(1 - spikes / elements * 0.03 / 1.5)
    assert data["reduction_vs_int8"] == pytest.approx(1 - spikes / elements * 0.03 / 0.23)
    assert {"table", "settings", "assumptions", "layers", "total"} <= set(data)
    assert data["settings"]["block_sizes"] == [16, 100]
    survival = [b["survival"] for b in data["total"]["memory"]["block_skip"]]
    assert all(s is not None and 0 <= s <= 1 for s in survival)


def test_energy_out_features_and_custom_table(sample_source, tmp_path):
    base = energy_report(sample_source).to_dict()
    wide = energy_report(sample_source, out_features=1000).to_dict()
    for a, b in zip(base["layers"], wide["layers"], strict=True):
        assert b["out_features"] == 1000
        assert b["energy_per_token_pj"]["spike"] == pytest.approx(
            a["energy_per_token_pj"]["spike"] * 1000 / 384
        )
    doubled = {
        "unit": "pJ",
        "operations": {
            "int8_add": 0.06, "int8_mult": 0.2, "int32_add": 0.1, "int32_mult": 3.1,
            "fp16_add": 0.4, "fp16_mult": 1.1, "fp32_add": 0.9, "fp32_mult": 3.7,
        },
    }  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doubled))
    custom = energy_report(sample_source, table=path).to_dict()
    assert custom["spike_mac_pj"] == pytest.approx(2 * base["spike_mac_pj"])
    assert custom["table"]["name"] == "t"
    doubled["operations"]["fp16_add"] = -1
    path.write_text(json.dumps(doubled))
    with pytest.raises(SpikecodeError, match="fp16_add"):
        energy_report(sample_source, table=path)
    with pytest.raises(SpikecodeError, match="no memory level 'tape'"):
        energy_report(sample_source, memory="tape")
    with pytest.raises(SpikecodeError, match="out_features"):
        energy_report(sample_source, out_features=0)


def test_energy_from_a_stats_file(tmp_path, tiny):
    layers, data = tiny
    report = energy_report(load_source(write_stats(tmp_path, data)), memory="sram_1mb").to_dict()
    spikes = elements = 0
    for layer, (name, _, x, out) in zip(report["layers"], layers, strict=True):
        counts, _ = spikecode.adaptive_counts(x, k=3.0)
        s = spikecode.spike_stats(counts, "bitwise-bidirectional")
        spikes, elements = spikes + s.spikes, elements + s.elements
        assert layer["name"] == name and layer["out_features"] == out
        assert layer["energy_pj"]["spike"] == pytest.approx(s.spikes * out * 0.03)
        assert layer["memory"]["level"] == "sram_1mb"
    assert report["avg_spikes_per_element"] == spikes / elements
    assert report["settings"]["block_sizes"] == [16, 64, 256]


# -- rendering ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_reports(sample_source):
    return (
        sparsity_report(sample_source),
        energy_report(sample_source, memory="dram"),
        tradeoff_report(sample_source, (2.0, 3.0)),
        equation24_report(1.13),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format(sample_reports, fmt):
    for report in sample_reports:
        text = report.render(fmt)
        if fmt == "json":
            assert json.loads(text) == report.to_dict()
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert list(rows[0]) == list(report.columns)
            assert len(rows) == len(report.rows())
            for row, raw in zip(rows, report.rows(), strict=True):
                for key, value in raw.items():
                    if value is None:
                        assert row[key] == ""
                    elif isinstance(value, float):
                        assert float(row[key]) == value
                    else:
                        assert row[key] == str(value)
        elif fmt == "markdown":
            table = [line for line in text.splitlines() if line.startswith("|")]
            assert len(table) >= len(report.rows()) + 2
            assert text.startswith("## spikecode report")
        else:
            assert text.startswith("spikecode report")
        if report.kind in ("sparsity", "energy") and report.data["layers"] and fmt != "json":
            for name in [f"encoder.layer.{i}.attention.self.query" for i in range(6)] + ["total"]:
                assert name in text


def test_unknown_format(sample_source):
    with pytest.raises(SpikecodeError, match="unknown format 'xml'"):
        sparsity_report(sample_source).render("xml")


def test_table_prints_the_window_definition(sample_source):
    text = sparsity_report(sample_source).render("table")
    assert "ceil(len(c)/3)*3" in text


# -- trade-off, histograms, raster ---------------------------------------------------------


def test_tradeoff_points_are_sparsity_totals(sample_source, tmp_path, tiny):
    report = tradeoff_report(sample_source, (4.0, 2.0), "ternary").to_dict()
    assert [p["k"] for p in report["points"]] == [2.0, 4.0]
    for point in report["points"]:
        total = sparsity_report(sample_source, point["k"], "ternary").to_dict()["total"]
        for key in ("T", "sparsity", "window_sparsity", "within_7_fraction", "rel_error"):
            assert point[key] == total[key]
    stats_report = tradeoff_report(load_source(write_stats(tmp_path, tiny[1]))).to_dict()
    assert [p["k"] for p in stats_report["points"]] == list(KS)
    with pytest.raises(SpikecodeError, match="k must be"):
        tradeoff_report(sample_source, (0.0,))


def test_count_histograms(tmp_path, tiny):
    layers, data = tiny
    by_family = count_histograms(load_source(write_stats(tmp_path, data)), 3.0)
    assert list(by_family) == ["q_proj", "down_proj"]
    for family, hist in by_family.items():
        merged = np.concatenate(
            [spikecode.adaptive_counts(x, k=3.0)[0].ravel() for _, f, x, _ in layers if f == family]
        )
        bins, below, above = slow_histogram(merged)
        assert list(hist.counts) == bins and (hist.below, hist.above) == (below, above)
        assert hist.total == merged.size
    by_layer = count_histograms(load_source(write_stats(tmp_path, data)), 3.0, by="layer")
    assert list(by_layer) == [name for name, *_ in layers]
    with pytest.raises(SpikecodeError, match="family, expert, layer"):
        count_histograms(load_source(), by="type")


def test_count_histogram_range_and_merge():
    counts = np.array([-70, -64, -1, 0, 0, 3, 64, 65, 1000])
    hist = count_histogram(counts)
    bins, below, above = slow_histogram(counts)
    assert list(hist.counts) == bins and (hist.below, hist.above) == (below, above) == (1, 2)
    assert hist.offset == -64 and len(hist.counts) == 129
    merged = merge_histograms(hist, hist)
    assert merged.total == 2 * counts.size and merged.counts == tuple(2 * n for n in bins)
    with pytest.raises(SpikecodeError, match="different bins"):
        merge_histograms(hist, count_histogram(counts, limit=8))


def test_raster_data_is_the_encoded_selection():
    x = load_sample()[2]
    data = raster_data(x, k=2.5, tokens=(5, 9), channels=(0, 3, 100))
    counts, vth = spikecode.adaptive_counts(x, k=2.5)  # Vth over every feature of a token
    expected = counts[[5, 9]][:, [0, 3, 100]]
    np.testing.assert_array_equal(data.counts, expected)
    np.testing.assert_array_equal(data.vth, vth[[5, 9]])
    assert list(data.trains) == list(spikecode.SCHEMES)
    for scheme, dense in data.trains.items():
        train = spikecode.encode(expected, scheme)
        np.testing.assert_array_equal(dense, train.to_dense().reshape(train.T, 6))
        assert data.zero_points[scheme] == train.zero_point
        # Each neuron's column decodes back to its count.
        weights = spikecode.encoders.schemes.get_scheme(scheme).step_weights(train.T)
        decoded = train.zero_point + weights @ dense.astype(np.int64)
        np.testing.assert_array_equal(decoded, expected.ravel())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokens": (291,)}, "out of range"),
        ({"channels": ()}, "non-empty"),
        ({"channels": (-1,)}, "out of range"),
        ({"schemes": ("morse",)}, "unknown scheme"),
        ({"k": 0.0}, "k"),
    ],
)
def test_raster_data_bad_input(kwargs, message):
    with pytest.raises(SpikecodeError, match=message):
        raster_data(load_sample()[0], **kwargs)
    with pytest.raises(SpikecodeError, match=r"\[tokens, features\]"):
        raster_data(load_sample())


def test_sample_path_source_equals_default(sample_source):
    explicit = load_source(sample_path(), key="activations")
    assert (
        sparsity_report(explicit).to_dict()["total"]
        == (sparsity_report(sample_source).to_dict()["total"])
    )


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.float32(1.0), "feature axis"),
        (np.zeros((0, 4), dtype=np.float32), "feature axis"),
        (np.arange(6).reshape(2, 3), "floating point"),
    ],
)
def test_activation_source_bad_arrays(x, message):
    with pytest.raises(SpikecodeError, match=message):
        ActivationSource(x)


def test_activation_source_accepts_torch(rng):
    import torch

    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    src = ActivationSource(torch.from_numpy(x).to(torch.bfloat16))
    (first, _) = src.layer_results(3.0, "ternary")
    counts, _ = spikecode.adaptive_counts(torch.from_numpy(x).to(torch.bfloat16)[0], k=3.0)
    assert first.stats == spikecode.spike_stats(counts.numpy(), "ternary")
