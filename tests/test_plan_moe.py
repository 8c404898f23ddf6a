"""spikecode plan on mixture-of-experts models (SPEC §8, issue 19 item 4)."""

from __future__ import annotations

import pytest
import torch
import transformers

from spikecode.calibration import calibrate
from spikecode.errors import SpikecodeError
from spikecode.models.capture import list_linear_layers
from spikecode.models.checkpoint import load_checkpoint
from spikecode.plan import (
    Activity,
    Projection,
    checkpoint_projections,
    deployment_plan,
    load_target,
    plan_model,
)
from spikecode.reports.sources import StatsSource
from spikecode.testing import write_tiny_moe_checkpoint

TEXTS = ["hello world the spiking brain model", "spike count token linear attention", "count"]
#: A target without core limits: each projection on one core.
OPEN = {
    "name": "open",
    "chip": {"cores": 1000},
    "core": {},
    "neuron": {},
    "weight_bits": 8,
    "sources": {"chip.cores": "test"},
    "derived": {"weight_bits": "test"},
}


def test_a_small_moe_layer_counted_by_hand():
    # One MoE layer: a router 8 -> 2, two routed experts (up 8 -> 4, down 4 -> 8), top-1;
    # expert 0 got 3 of 4 tokens, expert 1 one. And a dense projection d 8 -> 8.
    target = load_target(OPEN)
    names = {
        "m.router": (8, 2),
        "m.experts.0.up": (8, 4),
        "m.experts.0.down": (4, 8),
        "m.experts.1.up": (8, 4),
        "m.experts.1.down": (4, 8),
        "d": (8, 8),
    }
    projections = [Projection(n, i, o, groups=1) for n, (i, o) in names.items()]
    acts = {
        "m.router": Activity(tokens=4, T=2, spikes=8, events=8, max_abs_count=1),
        "m.experts.0.up": Activity(3, 2, 12, 6, 2, token_share=0.75),
        "m.experts.0.down": Activity(3, 3, 6, 6, 3, token_share=0.75),
        "m.experts.1.up": Activity(1, 2, 4, 2, 1, token_share=0.25),
        "m.experts.1.down": Activity(1, 3, 2, 2, 1, token_share=0.25),
        "d": Activity(tokens=4, T=2, spikes=4, events=4, max_abs_count=1),
    }
    plan = plan_model(projections, target, acts)
    # resident: every expert's synapses count
    assert plan.synapses == 16 + 4 * 32 + 64 == 208
    assert plan.neurons == 2 + 4 + 8 + 4 + 8 + 8
    (layer,) = plan.moe_layers
    assert (layer.layer, layer.num_experts, layer.resident_synapses) == ("m", 2, 16 + 128)
    assert layer.routed_synapses == 128
    # active per token: router 16 + 0.75 * 64 + 0.25 * 64 = one expert's 64
    assert layer.active_synapses_per_token == pytest.approx(80)
    assert layer.macro_sparsity == pytest.approx(1 - 80 / 144)
    assert plan.active_synapses_per_token == pytest.approx(80 + 64)
    per = plan.per_token()
    # spikes per token of the model: router 8/4, expert 0: 12/3*0.75 + 6/3*0.75,
    # expert 1: 4/1*0.25 + 2/1*0.25, d 4/4
    assert per["spikes"] == pytest.approx(2 + 3 + 1.5 + 1 + 0.5 + 1)
    assert per["synops"] == pytest.approx(2 * 2 + 3 * 4 + 1.5 * 8 + 1 * 4 + 0.5 * 8 + 1 * 8)
    assert per["T"] == pytest.approx(2 + 0.75 * (2 + 3) + 0.25 * (2 + 3) + 2)
    assert per["graded_events"] == pytest.approx(2 + 1.5 + 1.5 + 0.5 + 0.5 + 1)
    # without shares, config's top_k gives the same active synapses (experts share a shape)
    bare = plan_model(projections, target, experts_per_token=1)
    assert bare.moe_layers[0].active_synapses_per_token == pytest.approx(80)
    assert plan_model(projections, target).moe_layers[0].active_synapses_per_token is None
    assert plan_model(projections, target).active_synapses_per_token is None


def test_an_expert_no_token_reached_has_zero_activity_and_unknown_widths():
    target = load_target(OPEN)
    p = Projection("m.experts.1.up", 8, 4, groups=1)
    plan = plan_model([p], target, {p.name: Activity(0, 0, 0, 0, 0, token_share=0.0)})
    assert plan.per_token() == {
        "T": 0.0, "spikes": 0.0, "synops": 0.0, "graded_events": 0.0, "graded_synops": 0.0
    }  # fmt: skip
    assert plan.projections[0].accumulator_bits is None
    with pytest.raises(SpikecodeError, match="no token"):
        Activity(0, 1, 3, 0, 0)
    with pytest.raises(SpikecodeError, match="token_share"):
        Activity(1, 1, 1, 1, 1, token_share=1.5)


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    folder = write_tiny_moe_checkpoint(
        tmp_path_factory.mktemp("moe") / "tiny", with_tokenizer=True, num_experts=4
    )
    stats = calibrate(
        load_checkpoint(folder, dtype="float32"), TEXTS, k=(3.0,), samples=None, batch_size=4
    )
    return folder, stats


def test_moe_checkpoint_counts_every_expert_and_weights_activity_by_routing(moe):
    folder, stats = moe
    loaded = load_checkpoint(folder)
    oracle = sorted(list_linear_layers(loaded.model))
    header = deployment_plan(folder)
    assert (
        sorted(
            (p.projection.name, p.projection.in_features, p.projection.out_features)
            for p in header.model.projections
        )
        == oracle
    )
    assert header.model.synapses == sum(i * o for _, i, o in oracle)
    # config.json's top-1: active = router + shared expert + one routed expert
    for layer in header.model.moe_layers:
        assert (layer.num_experts, layer.top_k) == (4, 1)
        assert layer.resident_synapses == 64 * 4 + 4 * 3 * 64 * 32 + 3 * 64 * 32
        assert layer.active_synapses_per_token == 64 * 4 + 2 * 3 * 64 * 32
    both = deployment_plan(folder, stats=stats)
    alone = deployment_plan(stats)
    assert not both.unknown[1:]  # only the target's unknown widths, no unmeasured projection
    # every expert is resident in both plans, also those no token reached
    assert any(0 in r.expert_tokens for r in stats.routing)
    assert alone.model.synapses == both.model.synapses == header.model.synapses
    assert {p.projection.name for p in alone.model.projections} == {n for n, _, _ in oracle}
    # per token: a routed expert counts spikes / (the MoE layer's tokens), the energy
    # report's token share
    results = {r.name: r for r in StatsSource(stats).layer_results(3.0)}
    want = sum(r.stats.spikes / r.tokens * r.token_share for r in results.values())
    for plan in (both, alone):
        assert plan.model.per_token()["spikes"] == pytest.approx(want)
        for layer, routing in zip(plan.model.moe_layers, stats.routing, strict=True):
            assert layer.layer == routing.layer
            assert layer.active_synapses_per_token == pytest.approx(64 * 4 + 2 * 3 * 64 * 32)
    routing = stats.routing[0]
    for e, n in enumerate(routing.expert_tokens):
        p = next(
            p for p in both.model.projections
            if p.projection.name == f"{routing.layer}.experts.{e}.up_proj"
        )  # fmt: skip
        assert p.activity.token_share == pytest.approx(n / routing.tokens)
        spikes = results[p.projection.name].stats.spikes if n else 0
        assert p.per_token()["spikes"] == pytest.approx(spikes / routing.tokens)
    table = both.render("table")
    assert "MoE layers: resident vs active synapses" in table and "macro sparsity" in table
    assert both.to_dict()["moe_layers"][0]["resident_synapses"] == 30976


#: Tiny transformers MoE models: (config class, expert options, routed expert synapses).
MOE_CONFIGS = {
    "mixtral": (transformers.MixtralConfig, {"num_local_experts": 4}, 3 * 16 * 24),
    "qwen2_moe": (
        transformers.Qwen2MoeConfig,
        {"num_experts": 4, "moe_intermediate_size": 8, "shared_expert_intermediate_size": 12},
        3 * 16 * 8,
    ),
    "olmoe": (transformers.OlmoeConfig, {"num_experts": 4}, 3 * 16 * 24),
}


def _saved(tmp_path, kind, original):
    config_class, extra, _ = MOE_CONFIGS[kind]
    torch.manual_seed(0)
    config = config_class(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        num_experts_per_tok=2, **extra,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder = tmp_path / ("original" if original else "fused")
    model.save_pretrained(folder, save_original_format=original)
    return folder


@pytest.mark.parametrize("original", [False, True], ids=["fused", "original-names"])
@pytest.mark.parametrize("kind", sorted(MOE_CONFIGS))
def test_moe_header_projections_equal_the_loaded_models_linear_layers(tmp_path, kind, original):
    from safetensors import safe_open

    folder = _saved(tmp_path, kind, original)
    with safe_open(str(folder / "model.safetensors"), "np") as handle:
        fused = "model.layers.0.mlp.experts.gate_up_proj" in handle.keys()  # noqa: SIM118
    assert fused != original  # the two layouts transformers writes
    shapes = checkpoint_projections(folder)
    oracle = sorted(list_linear_layers(load_checkpoint(folder).model))
    assert sorted((p.name, p.in_features, p.out_features) for p in shapes.projections) == oracle
    assert shapes.experts_per_token == 2
    expert = MOE_CONFIGS[kind][2]
    plan = deployment_plan(folder)
    assert len(plan.model.moe_layers) == 2
    for layer in plan.model.moe_layers:  # the router is no projection: experts (+ shared)
        shared = layer.resident_synapses - layer.routed_synapses
        assert layer.routed_synapses == 4 * expert
        assert shared == (3 * 16 * 12 + 16 if kind == "qwen2_moe" else 0)
        assert layer.active_synapses_per_token == shared + 2 * expert


def test_fused_experts_of_another_layout_are_refused(tmp_path):
    import json

    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "odd"}))
    save_file(
        {
            "m.experts.gate_up_proj": np.zeros((2, 16, 48), np.float32),  # transposed
            "m.experts.down_proj": np.zeros((2, 24, 16), np.float32),
        },
        str(folder / "model.safetensors"),
    )
    with pytest.raises(SpikecodeError, match="layout spikecode cannot split"):
        checkpoint_projections(folder)


def test_a_pattern_that_plans_some_experts_keeps_the_layers_expert_count(moe):
    folder, stats = moe
    routing = stats.routing[0]
    reached = next(e for e, n in enumerate(routing.expert_tokens) if n)
    unreached = routing.expert_tokens.index(0)
    for e in (reached, unreached):
        chosen = f"{routing.layer}.experts.{e}.*"
        one = deployment_plan(folder, include=chosen)
        (layer,) = one.model.moe_layers
        # 4 experts in the layer (config.json), top-1: the planned one runs on 1/4 of tokens
        assert (layer.num_experts, layer.top_k) == (4, 1)
        assert layer.resident_synapses == layer.routed_synapses == 3 * 64 * 32
        assert layer.active_synapses_per_token == pytest.approx(3 * 64 * 32 / 4)
        with_stats = deployment_plan(folder, stats=stats, include=chosen)
        share = routing.expert_tokens[e] / routing.tokens
        (layer,) = with_stats.model.moe_layers
        assert layer.num_experts == 4
        assert layer.active_synapses_per_token == pytest.approx(3 * 64 * 32 * share)
        assert with_stats.model.per_token()["spikes"] is not None


def test_cli_plans_a_moe_checkpoint_with_its_stats(moe, tmp_path):
    import json

    from click.testing import CliRunner

    from spikecode.calibration import save_stats
    from spikecode.cli import main

    folder, stats = moe
    path, _ = save_stats(tmp_path / "stats.json", stats)
    result = CliRunner().invoke(
        main, ["plan", str(folder), "--stats", str(path), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == json.loads(deployment_plan(folder, stats=path).render("json"))
    assert [x["layer"] for x in data["moe_layers"]] == [r.layer for r in stats.routing]
    assert data["model"]["active_synapses_per_token"] < data["model"]["synapses"]
    result = CliRunner().invoke(main, ["plan", str(folder), "--stats", str(path)])
    assert "MoE layers: resident vs active synapses" in result.output
