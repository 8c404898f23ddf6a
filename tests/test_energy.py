"""Energy model: report eq. 24, operation counts, per-layer energies and the report."""

import csv
import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spikecode
from spikecode.energy import (
    ASSUMPTIONS,
    DENSE_MODES,
    MODES,
    ChannelActivity,
    LayerSpec,
    energy_report,
    format_ratio,
    format_reduction,
    layer_energy,
    load_table,
    mac_energy,
    op_counts,
    ratio,
    reduction,
    weight_fetch,
)
from spikecode.errors import SpikecodeError

# --- report equation 24 (SPEC §6) -------------------------------------------------------


def test_equation_24_figures():
    result = mac_energy(1.13)
    assert result["spike_mac_pj"] == pytest.approx(0.0339, abs=1e-12)
    assert result["fp16_mac_pj"] == pytest.approx(1.5)
    assert result["int8_mac_pj"] == pytest.approx(0.23)
    assert result["int8_add_pj"] == 0.03
    assert result["avg_spikes_per_element"] == 1.13
    assert result["reduction_vs_fp16"] == pytest.approx(1 - 0.0339 / 1.5)
    assert result["reduction_vs_int8"] == pytest.approx(1 - 0.0339 / 0.23)
    assert result["ratio_vs_fp16"] == pytest.approx(1.5 / 0.0339)
    assert result["ratio_vs_int8"] == pytest.approx(0.23 / 0.0339)
    assert result["fp32_mac_pj"] == pytest.approx(4.6)


def test_equation_24_printed_values():
    # SPEC §6: 97.7 % and 85.3 % below FP16 and INT8, 44.2x and 6.78x. The report's own
    # 85.2 %, 43.48x and 6.76x came from rounded percentages; we print the exact ones.
    result = mac_energy(1.13)
    assert f"{result['spike_mac_pj']:.4f}" == "0.0339"
    assert format_reduction(result["reduction_vs_fp16"]) == "97.7 %"
    assert format_reduction(result["reduction_vs_int8"]) == "85.3 %"
    assert format_ratio(result["ratio_vs_fp16"]) == "44.2×"
    assert format_ratio(result["ratio_vs_int8"]) == "6.78×"


def test_mac_energy_keys_are_stable():
    assert set(mac_energy(1.0)) == {
        "avg_spikes_per_element",
        "int8_add_pj",
        "spike_mac_pj",
        "fp32_mac_pj",
        "fp16_mac_pj",
        "int8_mac_pj",
        "reduction_vs_fp32",
        "reduction_vs_fp16",
        "reduction_vs_int8",
        "ratio_vs_fp32",
        "ratio_vs_fp16",
        "ratio_vs_int8",
    }


def test_mac_energy_without_spikes_has_no_ratio():
    result = mac_energy(0)
    assert result["spike_mac_pj"] == 0
    assert result["reduction_vs_int8"] == 1.0
    assert result["ratio_vs_int8"] is None
    json.dumps(result, allow_nan=False)


def test_ratio_and_reduction_never_overflow_to_infinity():
    result = mac_energy(5e-324)
    assert result["ratio_vs_int8"] is None
    assert result["reduction_vs_int8"] == 1.0
    assert ratio(1e308, 1e-10) is None
    assert reduction(1e308, 1e-10) is None
    assert ratio(0.0, 0.0) is None
    assert reduction(0.0, 0.0) is None
    assert ratio(1.5, 0.0339) == pytest.approx(44.2477876)
    assert reduction(0.0339, 0.23) == pytest.approx(0.8526087)


def test_mac_energy_above_break_even_is_negative_reduction():
    # 0.23 / 0.03 = 7.67 spikes per element cost as much as an INT8 MAC
    result = mac_energy(10)
    assert result["reduction_vs_int8"] == pytest.approx(1 - 0.3 / 0.23)
    assert result["reduction_vs_int8"] < 0


def test_mac_energy_with_a_zero_energy_table_has_no_reduction():
    table = load_table().to_dict()
    table["operations"] = dict.fromkeys(table["operations"], 0.0)
    result = mac_energy(1.13, table=table)
    assert result["spike_mac_pj"] == 0
    assert result["reduction_vs_fp16"] is None
    assert result["ratio_vs_fp16"] is None


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "1.13", None, True])
def test_mac_energy_refuses_bad_rates(bad):
    with pytest.raises(SpikecodeError, match="average spikes per element"):
        mac_energy(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (44.2477, "44.2×"),
        (6.7847, "6.78×"),
        (135.69, "136×"),
        (99.96, "100×"),
        (1234.4, "1234×"),
        (0.5, "0.5×"),
        (None, "n/a"),
    ],
)
def test_format_ratio(value, text):
    assert format_ratio(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.9774, "97.7 %"), (0.85261, "85.3 %"), (-0.304, "-30.4 %"), (None, "n/a")]
)
def test_format_reduction(value, text):
    assert format_reduction(value) == text


# --- layer description ------------------------------------------------------------------


def test_layer_spec_from_rate_and_properties():
    layer = LayerSpec.from_rate("down", 8, 3, tokens=5, spikes_per_element=1.5)
    assert layer.total_spikes == pytest.approx(60)
    assert layer.elements == 40
    assert layer.spikes_per_element == pytest.approx(1.5)
    assert layer.silent_fraction is None


def test_layer_spec_from_counts_and_from_stats_agree_with_spike_stats(rng):
    counts = rng.integers(-5, 6, size=(6, 4, 12)).astype(np.int32)
    counts[rng.random(counts.shape) < 0.6] = 0
    stats = spikecode.spike_stats(counts, "ternary")
    assert stats.spikes == int(np.abs(counts).sum())  # ternary: |c| spikes per element
    from_counts = LayerSpec.from_counts("q", counts, 7, stats)
    assert from_counts.tokens == 24
    assert from_counts.in_features == 12
    assert from_counts.total_spikes == stats.spikes
    assert from_counts.silent_fraction == pytest.approx(stats.silent_fraction)
    from_stats = LayerSpec.from_stats("q", stats, 12, 7)
    assert from_stats.total_spikes == stats.spikes
    assert from_stats.tokens == 24
    assert from_stats.activity.active_channels == from_counts.activity.active_channels
    with pytest.raises(SpikecodeError, match="whole number of tokens"):
        LayerSpec.from_stats("q", stats, 13, 7)
    with pytest.raises(SpikecodeError, match="expected SpikeStats"):
        LayerSpec.from_stats("q", {"spikes": 3}, 12, 7)
    with pytest.raises(SpikecodeError, match="different number of elements"):
        LayerSpec.from_counts("q", counts[:2], 7, stats)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty string"),
        ({"in_features": 0}, "in_features must be a positive integer"),
        ({"out_features": 2.0}, "out_features must be a positive integer"),
        ({"tokens": True}, "tokens must be a positive integer"),
        ({"total_spikes": -1}, "total spikes must be finite"),
        ({"total_spikes": float("nan")}, "total spikes must be finite"),
        ({"activity": "silent"}, "ChannelActivity"),
        ({"activity": ChannelActivity(3, 4, 2)}, "does not match"),
    ],
)
def test_layer_spec_validation(kwargs, message):
    args = {"name": "l", "in_features": 4, "out_features": 2, "tokens": 2, "total_spikes": 3}
    with pytest.raises(SpikecodeError, match=message):
        LayerSpec(**{**args, **kwargs})


# --- operation counts and energies ------------------------------------------------------


def test_op_counts_by_hand():
    # 4 tokens through a 3 -> 2 layer: 4 * 3 * 2 = 24 MACs; 5 spikes reach 2 outputs each
    counts = op_counts(LayerSpec("l", 3, 2, 4, 5))
    assert counts.dense_macs == 24
    assert counts.spike_accumulates == 10
    assert counts.dense_macs_per_token == 6
    assert counts.spike_accumulates_per_token == 2.5
    assert counts.to_dict() == {
        "dense_macs": 24,
        "spike_accumulates": 10,
        "dense_macs_per_token": 6.0,
        "spike_accumulates_per_token": 2.5,
    }


def test_layer_energy_by_hand():
    result = layer_energy(LayerSpec("l", 3, 2, 4, 5))
    assert result.energy_pj["fp16"] == pytest.approx(24 * 1.5)
    assert result.energy_pj["int8"] == pytest.approx(24 * 0.23)
    assert result.energy_pj["fp32"] == pytest.approx(24 * 4.6)
    assert result.energy_pj["spike"] == pytest.approx(10 * 0.03)
    assert result.energy_per_token_pj["spike"] == pytest.approx(0.3 / 4)
    assert result.reduction["int8"] == pytest.approx(1 - 0.3 / (24 * 0.23))
    assert result.ratio["fp16"] == pytest.approx(36 / 0.3)
    assert result.memory is None


def slow_layer_energy(counts, out_features, spikes_of):
    """Reference: walk every (token, input, output) and charge each operation."""
    table = load_table()
    rows = counts.reshape(-1, counts.shape[-1])
    energy = dict.fromkeys(MODES, 0.0)
    for token in rows.tolist():
        for count in token:
            for _ in range(out_features):
                for mode in DENSE_MODES:
                    energy[mode] += table.operations[f"{mode}_mult"]
                    energy[mode] += table.operations[f"{mode}_add"]
                for _ in range(spikes_of(count)):
                    energy["spike"] += table.operations["int8_add"]
    return energy, rows.shape[0]


def popcount(value):
    return bin(abs(value)).count("1")


@given(
    tokens=st.integers(1, 4),
    in_features=st.integers(1, 6),
    out_features=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    code=st.sampled_from(["ternary", "bitwise-bidirectional"]),
)
def test_layer_energy_matches_slow_loop(tokens, in_features, out_features, seed, code):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-9, 10, size=(tokens, in_features)).astype(np.int32)
    counts[rng.random(counts.shape) < 0.4] = 0
    spikes_of = abs if code == "ternary" else popcount
    total = sum(spikes_of(int(c)) for c in counts.ravel())
    expected, n_tokens = slow_layer_energy(counts, out_features, spikes_of)
    result = layer_energy(LayerSpec.from_counts("l", counts, out_features, total))
    for mode in MODES:
        assert result.energy_pj[mode] == pytest.approx(expected[mode], rel=1e-9, abs=1e-12)
        assert result.energy_per_token_pj[mode] == pytest.approx(
            expected[mode] / n_tokens, rel=1e-9, abs=1e-12
        )


@given(rate=st.floats(0, 20), n=st.integers(1, 64), m=st.integers(1, 64), t=st.integers(1, 9))
def test_spike_energy_per_mac_is_equation_24(rate, n, m, t):
    result = layer_energy(LayerSpec.from_rate("l", n, m, t, rate))
    per_mac = result.energy_pj["spike"] / result.ops.dense_macs
    assert per_mac == pytest.approx(mac_energy(rate)["spike_mac_pj"], rel=1e-9, abs=1e-15)
    expected = mac_energy(rate)["ratio_vs_int8"]
    if expected is None:
        assert result.ratio["int8"] is None
    else:
        assert result.ratio["int8"] == pytest.approx(expected)


def test_spikingbrain_down_proj_per_token():
    # SpikingBrain-7B MLP down projection, 18944 -> 3584, at the report's 1.13 spikes
    layer = LayerSpec.from_rate("down_proj", 18944, 3584, 1, 1.13)
    result = layer_energy(layer)
    macs = 18944 * 3584
    assert result.ops.dense_macs == macs
    assert result.energy_per_token_pj["fp16"] == pytest.approx(macs * 1.5)
    assert result.energy_per_token_pj["spike"] == pytest.approx(macs * 0.0339)
    assert format_reduction(result.reduction["fp16"]) == "97.7 %"


def test_layer_energy_with_memory_uses_the_weight_fetch_model(rng):
    counts = rng.integers(-3, 4, size=(5, 40)).astype(np.int32)
    counts[rng.random(counts.shape) < 0.9] = 0
    layer = LayerSpec.from_counts("l", counts, 6, int(np.abs(counts).sum()))
    result = layer_energy(layer, memory="sram_1mb", weight_bits=8, block_sizes=(16,))
    assert result.memory == weight_fetch(counts, 6, memory="sram_1mb", block_sizes=(16,))


def test_op_counts_refuses_other_types():
    with pytest.raises(SpikecodeError, match="LayerSpec"):
        op_counts({"in_features": 3})  # type: ignore[arg-type]


# --- the report -------------------------------------------------------------------------


def make_layers(rng):
    layers = []
    for name, n, m, t in [("q_proj", 24, 8, 5), ("down_proj", 40, 24, 3)]:
        counts = rng.integers(-6, 7, size=(t, n)).astype(np.int32)
        counts[rng.random(counts.shape) < 0.85] = 0
        layers.append(LayerSpec.from_counts(name, counts, m, int(np.abs(counts).sum())))
    return layers


def test_report_layers_equal_layer_energy(rng):
    layers = make_layers(rng)
    report = energy_report(layers, memory="dram")
    for spec, result in zip(layers, report.layers, strict=True):
        assert result == layer_energy(spec, memory="dram")


def test_report_totals_are_sums_of_per_token_energies(rng):
    layers = make_layers(rng)
    report = energy_report(layers, memory="dram", block_sizes=(16, 64))
    data = report.to_dict()
    total = data["total"]
    for mode in MODES:
        expected = sum(layer_energy(s).energy_per_token_pj[mode] for s in layers)
        assert total["energy_per_token_pj"][mode] == pytest.approx(expected)
        assert report.total_energy_per_token_pj[mode] == pytest.approx(expected)
    spike = total["energy_per_token_pj"]["spike"]
    for mode in DENSE_MODES:
        dense = total["energy_per_token_pj"][mode]
        assert total["reduction"][f"vs_{mode}"] == pytest.approx(1 - spike / dense)
        assert total["ratio"][f"vs_{mode}"] == pytest.approx(dense / spike)
    fetches = [weight_fetch(s.activity, s.out_features, block_sizes=(16, 64)) for s in layers]
    dense = sum(f.dense.energy_per_token_pj for f in fetches)
    channel = sum(f.channel.energy_per_token_pj for f in fetches)
    assert total["memory"]["dense"]["energy_per_token_pj"] == pytest.approx(dense)
    assert total["memory"]["channel_skip"]["energy_per_token_pj"] == pytest.approx(channel)
    for entry, size in zip(total["memory"]["block_skip"], (16, 64), strict=True):
        block = sum(f.blocks[size].energy_per_token_pj for f in fetches)
        assert entry["block_size"] == size
        assert entry["energy_per_token_pj"] == pytest.approx(block)
        assert entry["survival"] == pytest.approx((dense - block) / (dense - channel))
    combined = total["combined_per_token_pj"]
    assert combined["int8_dense_fetch"] == pytest.approx(
        total["energy_per_token_pj"]["int8"] + dense
    )
    assert combined["spike_channel_skip"] == pytest.approx(spike + channel)
    assert combined["spike_block_64"] == pytest.approx(
        spike + total["memory"]["block_skip"][1]["energy_per_token_pj"]
    )
    elements = sum(s.elements for s in layers)
    assert total["spikes_per_element"] == pytest.approx(
        sum(s.total_spikes for s in layers) / elements
    )
    assert total["silent_fraction"] == pytest.approx(
        1 - sum(s.activity.active_channels for s in layers) / elements
    )
    macs = sum(s.in_features * s.out_features for s in layers)
    accumulates = sum(s.total_spikes * s.out_features / s.tokens for s in layers)
    assert total["effective_spikes_per_mac"] == pytest.approx(accumulates / macs)
    assert report.effective_spikes_per_mac == pytest.approx(accumulates / macs)


def test_report_to_dict_layout_and_json(rng):
    layers = make_layers(rng)
    data = energy_report(layers, memory="dram").to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert set(data) == {"table", "settings", "assumptions", "layers", "total"}
    assert data["table"]["name"] == "horowitz-45nm"
    assert data["table"]["source"]["doi"] == "10.1109/ISSCC.2014.6757323"
    assert data["settings"] == {"memory": "dram", "weight_bits": 8, "block_sizes": [16, 64, 256]}
    assert data["assumptions"] == list(ASSUMPTIONS)
    first = data["layers"][0]
    assert first["name"] == "q_proj"
    assert first["ops"]["dense_macs"] == 5 * 24 * 8
    assert first["memory"]["level"] == "dram"
    assert first["memory"]["access_pj"] == 1300.0
    assert [b["block_size"] for b in first["memory"]["block_skip"]] == [16, 64, 256]
    assert set(first["combined_per_token_pj"]) == {
        "int8_dense_fetch",
        "spike_dense_fetch",
        "spike_channel_skip",
        "spike_block_16",
        "spike_block_64",
        "spike_block_256",
    }


def test_report_without_memory_is_arithmetic_only(rng):
    report = energy_report(make_layers(rng))
    data = report.to_dict()
    assert data["settings"]["memory"] is None
    assert all(layer["memory"] is None for layer in data["layers"])
    assert data["total"]["memory"] is None
    assert data["total"]["combined_per_token_pj"] is None
    assert not any(column.startswith(("fetch_", "survival")) for column in report.columns())


def test_rows_are_flat_and_consistent_with_to_dict(rng):
    layers = make_layers(rng)
    report = energy_report(layers, memory="dram", block_sizes=(16, 64))
    rows = report.rows()
    data = report.to_dict()
    assert [row["layer"] for row in rows] == ["q_proj", "down_proj", "total"]
    for row in rows:
        assert list(row) == report.columns()
    for row, layer in zip(rows, data["layers"], strict=False):
        assert row["spike_pj_per_token"] == layer["energy_per_token_pj"]["spike"]
        assert row["reduction_vs_int8"] == layer["reduction"]["vs_int8"]
        assert (
            row["fetch_block16_pj_per_token"]
            == (layer["memory"]["block_skip"][0]["energy_per_token_pj"])
        )
        assert row["survival_block64"] == layer["memory"]["block_skip"][1]["survival"]
        assert (
            row["fetch_channel_bytes_per_token"]
            == (layer["memory"]["channel_skip"]["bytes_per_token"])
        )
        assert row["spike_block16_pj_per_token"] == layer["combined_per_token_pj"]["spike_block_16"]
    total = rows[-1]
    assert total["in_features"] is None
    assert total["fp16_pj_per_token"] == data["total"]["energy_per_token_pj"]["fp16"]
    assert total["survival_block16"] == data["total"]["memory"]["block_skip"][0]["survival"]
    assert len(report.rows(include_total=False)) == 2
    # CSV-ready: every value is a number, a string or None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=report.columns())
    writer.writeheader()
    writer.writerows(rows)
    assert buffer.getvalue().count("\n") == 4


def test_report_with_layers_lacking_block_information(rng):
    layers = make_layers(rng)
    from_rate = LayerSpec.from_rate(
        "mlp", 16, 4, 10, 1.13, ChannelActivity.from_silent_fraction(10, 16, 0.184)
    )
    bare = LayerSpec.from_rate("head", 16, 4, 10, 1.13)
    report = energy_report([*layers, from_rate, bare], memory="dram")
    data = report.to_dict()
    mlp, head = data["layers"][2], data["layers"][3]
    assert mlp["memory"]["channel_skip"]["fetched_channels"] == pytest.approx(0.816 * 160)
    assert mlp["memory"]["block_skip"][0]["energy_pj"] is None
    assert mlp["combined_per_token_pj"]["spike_block_16"] is None
    assert head["memory"]["channel_skip"] is None
    assert head["silent_fraction"] is None
    assert head["memory"]["dense"]["fetched_channels"] == 160
    # one unknown layer makes the network figure unknown, the dense one stays known
    total = data["total"]
    assert total["memory"]["channel_skip"] is None
    assert total["memory"]["block_skip"][0]["energy_per_token_pj"] is None
    assert total["memory"]["block_skip"][0]["survival"] is None
    assert total["silent_fraction"] is None
    assert total["memory"]["dense"]["energy_per_token_pj"] > 0
    assert report.rows()[-1]["fetch_channel_pj_per_token"] is None
    json.dumps(data, allow_nan=False)


def test_report_with_silent_layer_has_no_ratio():
    layer = LayerSpec("silent", 4, 4, 2, 0, ChannelActivity(2, 4, 0, {2: 0}))
    report = energy_report([layer], memory="dram", block_sizes=(2,))
    row = report.rows()[0]
    assert row["spike_pj_per_token"] == 0
    assert row["ratio_vs_int8"] is None
    assert row["reduction_vs_int8"] == 1.0
    assert row["survival_block2"] == pytest.approx(1.0)
    json.dumps(report.to_dict(), allow_nan=False)


def test_report_custom_table_and_weight_bits(rng):
    table = load_table().to_dict()
    table["operations"]["int8_add"] = 0.06
    table["name"] = "double-add"
    layers = make_layers(rng)
    report = energy_report(layers, table=table, memory="sram_8kb", weight_bits=4)
    data = report.to_dict()
    assert data["table"]["name"] == "double-add"
    first = data["layers"][0]
    assert first["energy_pj"]["spike"] == pytest.approx(layers[0].total_spikes * 8 * 0.06)
    assert first["memory"]["weight_bits"] == 4
    assert first["memory"]["dense"]["bytes"] == pytest.approx(5 * 24 * 8 * 0.5)
    assert first["memory"]["access_pj"] == 10.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda layers: energy_report([]), "non-empty sequence"),
        (lambda layers: energy_report(layers[0]), "non-empty sequence"),
        (lambda layers: energy_report([layers[0], layers[0]]), "names repeat"),
        (lambda layers: energy_report(layers, memory="hbm"), "no memory level 'hbm'"),
        (lambda layers: energy_report(layers, block_sizes=(0,)), "positive integer"),
        (lambda layers: energy_report(layers, weight_bits=0), "weight_bits"),
        (lambda layers: energy_report(["q_proj"]), "LayerSpec"),
    ],
)
def test_report_bad_input(rng, call, message):
    with pytest.raises(SpikecodeError, match=message):
        call(make_layers(rng))
