"""The k advisor on synthetic statistics (known answers) and on a calibrated model."""

import itertools
import json

import numpy as np
import pytest
import torch

from spikecode.calibration import (
    VTH_EDGES,
    CalibrationData,
    CalibrationStats,
    CheckpointInfo,
    CountHistogram,
    DataInfo,
    KStats,
    LayerStats,
    VthSummary,
    calibrate,
    k_key,
)
from spikecode.calibration.advisor import advise, load_k_map, save_advice
from spikecode.energy import ChannelActivity
from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import load_checkpoint
from spikecode.nn import W8ASpikeLinear, swap_linears
from spikecode.stats import SpikeStats
from spikecode.testing import write_tiny_gla_swa_checkpoint

SCHEME = "bitwise-bidirectional"
KS = (2.0, 3.0, 4.0)


def make_stats(table):
    """Stats whose layers have exactly the given (sparsity, error) per k.

    ``table``: {layer name: (elements / 10, [(sparsity, error) per k in KS])}; sparsities
    are multiples of 1 / elements so that they are exact.
    """
    layers = []
    for name, (in_features, options) in table.items():
        elements = 10 * in_features
        by_k = {}
        for k, (sparsity, error) in zip(KS, options, strict=True):
            spikes = round(elements * (1 - sparsity))
            stats = SpikeStats(
                SCHEME, 1, 3, elements, spikes, elements - spikes, elements, spikes, elements
            )
            by_k[k_key(k)] = KStats(
                vth=VthSummary(1.0, 0.0, 1.0, 1.0, VTH_EDGES, (0,) * 21 + (10,) + (0,) * 10),
                count_histogram=CountHistogram(-64, (0,) * 64 + (elements,) + (0,) * 64, 0, 0),
                max_abs_count=1,
                output_rel_error=error,
                output_cosine=1 - error,
                activity=ChannelActivity(10, in_features, spikes),
                schemes={SCHEME: stats},
            )
        layers.append(LayerStats(name, name, in_features, 4, 10, by_k, 10))
    return CalibrationStats.create(
        checkpoint=CheckpointInfo(None, "module", None, "float32"),
        data=DataInfo("synthetic", 1, 10, None),
        k=KS,
        schemes=(SCHEME,),
        window=3,
        block_sizes=(16,),
        layers=layers,
        error_rows=None,
    )


def weighted(stats, choice, attribute):
    values = [
        (layer.elements, layer.by_k[k_key(choice[layer.name])].output_rel_error)
        if attribute == "error"
        else (layer.elements, layer.by_k[k_key(choice[layer.name])].schemes[SCHEME].sparsity)
        for layer in stats.layers
    ]
    return sum(w * v for w, v in values) / sum(w for w, _ in values)


TABLE = {
    "a": (100, [(0.90, 0.30), (0.80, 0.10), (0.70, 0.05)]),
    "b": (300, [(0.85, 0.20), (0.84, 0.05), (0.60, 0.01)]),
    "c": (50, [(0.95, 0.40), (0.50, 0.02), (0.40, 0.01)]),
}


def brute_force(stats, target):
    best = None
    names = [layer.name for layer in stats.layers]
    for combo in itertools.product(KS, repeat=len(names)):
        choice = dict(zip(names, combo, strict=True))
        if weighted(stats, choice, "sparsity") >= target - 1e-12:
            error = weighted(stats, choice, "error")
            if best is None or error < best[0]:
                best = (error, choice)
    return best


@pytest.mark.parametrize("target", [0.5, 0.7, 0.8, 0.84, 0.86, 392.5 / 450])
def test_sparsity_target_is_met_with_the_least_error(target):
    stats = make_stats(TABLE)
    advice = advise(stats, target_sparsity=target)
    assert advice.totals["sparsity"] >= target - 1e-12
    assert advice.totals["sparsity"] == pytest.approx(weighted(stats, advice.k_map, "sparsity"))
    error = weighted(stats, advice.k_map, "error")
    assert advice.totals["output_rel_error"] == pytest.approx(error)
    # On this table the greedy walk finds the exact optimum of every target.
    assert error == pytest.approx(brute_force(stats, target)[0])


@pytest.mark.parametrize("seed", range(6))
def test_sparsity_choice_is_locally_optimal_on_random_tables(seed):
    gen = np.random.default_rng(seed)
    table = {
        f"l{i}": (
            int(gen.integers(10, 200)),
            [
                (round(float(s), 3), float(e))
                for s, e in zip(
                    np.sort(gen.uniform(0.3, 0.95, 3))[::-1],
                    np.sort(gen.uniform(0.01, 0.4, 3))[::-1],
                    strict=True,
                )
            ],
        )
        for i in range(5)
    }
    stats = make_stats(table)
    best_possible = weighted(stats, {n: 2.0 for n in table}, "sparsity")
    target = best_possible - 0.1
    advice = advise(stats, target_sparsity=target)
    choice = advice.k_map
    error = weighted(stats, choice, "error")
    assert weighted(stats, choice, "sparsity") >= target - 1e-12
    # No single change of one layer's k keeps the target and lowers the error ...
    for name in table:
        for k in KS:
            other = {**choice, name: k}
            if weighted(stats, other, "sparsity") >= target:
                assert weighted(stats, other, "error") >= error - 1e-12
    # ... and the greedy choice is close to the exact optimum.
    assert error <= brute_force(stats, target)[0] * 1.25


def test_error_target_takes_the_sparsest_k_within_it():
    stats = make_stats(TABLE)
    advice = advise(stats, max_error=0.1)
    assert advice.k_map == {"a": 3.0, "b": 3.0, "c": 3.0}
    assert advice.max_layer_error == 0.1
    advice = advise(stats, max_error=0.2)
    assert advice.k_map == {"a": 3.0, "b": 2.0, "c": 3.0}
    for choice in advice.layers:
        allowed = [
            entry.schemes[SCHEME].sparsity
            for entry in stats.layer(choice.name).by_k.values()
            if entry.output_rel_error <= 0.2
        ]
        assert choice.output_rel_error <= 0.2 and choice.sparsity == max(allowed)


def test_infeasible_targets_name_the_best_achievable():
    stats = make_stats(TABLE)
    best = (100 * 0.90 + 300 * 0.85 + 50 * 0.95) / 450
    with pytest.raises(SpikecodeError, match=f"the best is {best:.4f}"):
        advise(stats, target_sparsity=0.9)
    with pytest.raises(SpikecodeError, match=r"best achievable per-layer maximum is 0\.05"):
        advise(stats, max_error=0.03)
    with pytest.raises(SpikecodeError, match="exactly one target"):
        advise(stats)
    with pytest.raises(SpikecodeError, match="exactly one target"):
        advise(stats, target_sparsity=0.5, max_error=0.1)
    with pytest.raises(SpikecodeError, match=r"\[0, 1\]"):
        advise(stats, target_sparsity=1.5)
    with pytest.raises(SpikecodeError, match=">= 0"):
        advise(stats, max_error=-1)
    with pytest.raises(SpikecodeError, match="no code 'ternary'"):
        advise(stats, max_error=0.1, scheme="ternary")


def test_advice_file_round_trip(tmp_path):
    advice = advise(make_stats(TABLE), target_sparsity=0.8)
    path = save_advice(tmp_path / "advice.json", advice)
    assert load_k_map(path) == advice.k_map
    raw = json.loads(path.read_text())
    assert raw["format"] == "spikecode.advice" and raw["target"] == {"sparsity": 0.8}
    plain = tmp_path / "plain.json"
    plain.write_text('{"a": 2, "b": 3.5}')
    assert load_k_map(plain) == {"a": 2.0, "b": 3.5}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": "spikecode.advice", "version": 9, "k": {"a": 3}}', "version"),
        ('{"a": -1}', "positive number"),
        ('{"a": true}', "positive number"),
        ("[1, 2]", "JSON object"),
        ("{}", "JSON object"),
        ("{oops", "cannot read"),
    ],
)
def test_bad_k_maps(tmp_path, content, message):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(SpikecodeError, match=message):
        load_k_map(path)
    with pytest.raises(SpikecodeError, match="not found"):
        load_k_map(tmp_path / "missing.json")


def test_advice_drives_swap_linears(tmp_path):
    loaded = load_checkpoint(write_tiny_gla_swa_checkpoint(tmp_path / "tiny", num_layers=2))
    stats = calibrate(loaded, CalibrationData.from_ids([[5, 6, 7, 8, 9, 10], [11, 12, 13]]), k=KS)
    target = stats.totals["3"][SCHEME]["sparsity"]
    advice = advise(stats, target_sparsity=target)
    assert advice.totals["sparsity"] >= target - 1e-12
    # The walk starts at every layer's sparsest k and only ever lowers the error.
    sparsest = {
        layer.name: max(
            KS, key=lambda k, layer=layer: layer.by_k[k_key(k)].schemes[SCHEME].sparsity
        )
        for layer in stats.layers
    }
    assert weighted(stats, advice.k_map, "error") <= weighted(stats, sparsest, "error")
    names = swap_linears(loaded.model, advice.k_map, group_size=None)
    assert names == list(advice.k_map)
    for name, k in advice.k_map.items():
        layer = loaded.model.get_submodule(name)
        assert isinstance(layer, W8ASpikeLinear) and layer.k == k
    with torch.no_grad():
        loaded.model(torch.tensor([[5, 6, 7]]))
