"""MoE-aware calibration, reports and energy (SPEC §8): the 76B architecture and Mixtral."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from click.testing import CliRunner

from spikecode.calibration import calibrate, load_stats, merge_stats, save_stats
from spikecode.calibration.records import new_run_id
from spikecode.cli import main
from spikecode.errors import SpikecodeError
from spikecode.models.capture import LinearInputHooks
from spikecode.models.checkpoint import load_checkpoint, wrap_module
from spikecode.models.moe import RoutingCounter
from spikecode.reports import energy_report, experts_report, load_source
from spikecode.reports.sources import StatsSource
from spikecode.testing import write_tiny_moe_checkpoint

TEXTS = [
    "hello world the spiking brain model",
    "spike count token linear attention",
    "the model the token the count",
    "hello spike brain",
    "linear attention spiking model world hello",
    "count the spikes",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_moe_checkpoint(
        tmp_path_factory.mktemp("moe") / "tiny", with_tokenizer=True, num_experts=4
    )


@pytest.fixture(scope="module")
def stats(folder):
    loaded = load_checkpoint(folder, dtype="float32")
    return calibrate(loaded, TEXTS, k=(2.0, 3.0), samples=None, batch_size=4)


def test_routing_counts_equal_the_models_own_routing(folder, stats):
    """Recount by hand: one forward per text alone, the router's choice per token."""
    loaded = load_checkpoint(folder, dtype="float32")
    tokenizer = loaded.tokenizer
    counts = {r.layer: [0] * r.num_experts for r in stats.routing}
    tokens = 0
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            tokens += ids.shape[1]
            loaded.model(ids)
            for layer in counts:
                mlp = loaded.model.get_submodule(layer)
                for e in mlp.last_routing.reshape(-1).tolist():
                    counts[layer][e] += 1
    assert [r.layer for r in stats.routing] == ["model.layers.1.mlp", "model.layers.3.mlp"]
    for r in stats.routing:
        assert r.tokens == tokens == stats.data.tokens
        assert list(r.expert_tokens) == counts[r.layer]
        assert r.top_k == 1
    # every expert that received tokens has its projections, with exactly those tokens
    for r in stats.routing:
        for e, n in enumerate(r.expert_tokens):
            names = [f"{r.layer}.experts.{e}.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
            if n:
                assert all(stats.layer(name).tokens == n for name in names)
            else:
                with pytest.raises(SpikecodeError):
                    stats.layer(names[0])


def test_routing_survives_the_stats_file_and_merges_by_sum(stats, tmp_path):
    path, _ = save_stats(tmp_path / "s.json", stats)
    again = load_stats(path)
    assert again.routing == stats.routing
    raw = json.loads(path.read_text())
    raw["routing"][0]["expert_tokens"][0] += 1
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(SpikecodeError, match="expert_tokens"):
        load_stats(tmp_path / "bad.json")
    # the same samples under another run id stand in for a second, disjoint run
    other = dataclasses.replace(stats, runs=(new_run_id(),))
    merged = merge_stats([stats, other])
    for one, both in zip(stats.routing, merged.routing, strict=True):
        assert both.tokens == 2 * one.tokens
        assert both.expert_tokens == tuple(2 * n for n in one.expert_tokens)


def test_expert_energy_counts_only_routed_tokens(stats):
    source = StatsSource(stats)
    report = energy_report(source, 3.0, "bitwise-bidirectional").to_dict()
    layers = {layer["name"]: layer for layer in report["layers"]}
    routing = stats.routing[0]
    per_expert = []
    for e, n in enumerate(routing.expert_tokens):
        name = f"{routing.layer}.experts.{e}.up_proj"
        if name not in layers:
            continue
        layer = layers[name]
        assert layer["token_share"] == pytest.approx(n / routing.tokens)
        # dense MACs per token of the model = in·out × share
        assert layer["ops"]["dense_macs_per_token"] == pytest.approx(
            layer["in_features"] * layer["out_features"] * n / routing.tokens
        )
        per_expert.append(layer["ops"]["dense_macs_per_token"])
    # top-1: the routed experts' up_proj MACs per token add up to one expert's
    one = layers[f"{routing.layer}.shared_experts.0.up_proj"]
    assert sum(per_expert) == pytest.approx(one["ops"]["dense_macs_per_token"])
    assert "moe" in report


def test_experts_report_by_hand(stats):
    source = StatsSource(stats)
    data = experts_report(source, 3.0, "bitwise-bidirectional").to_dict()
    results = {r.name: r for r in source.layer_results(3.0, "bitwise-bidirectional")}
    routing = stats.routing[1]
    layer = next(x for x in data["layers"] if x["layer"] == routing.layer)
    size = 3 * 64 * 32  # gate, up: 64->32; down: 32->64
    assert layer["all_macs_per_token"] == routing.num_experts * size
    assert layer["active_macs_per_token"] == pytest.approx(size)  # top-1
    assert layer["macro_sparsity"] == pytest.approx(1 - 1 / routing.num_experts)
    spikes = steps = 0.0
    for e in range(routing.num_experts):
        for p in ("gate_proj", "up_proj", "down_proj"):
            r = results.get(f"{routing.layer}.experts.{e}.{p}")
            if r is not None:
                spikes += r.stats.spikes / routing.tokens
                steps += r.stats.steps / routing.tokens
    assert layer["micro_sparsity"] == pytest.approx(1 - spikes / steps)
    assert layer["combined_sparsity"] == pytest.approx(
        1 - (1 - layer["macro_sparsity"]) * (1 - layer["micro_sparsity"])
    )
    rows = [x for x in data["experts"] if x["layer"] == routing.layer]
    assert [x["tokens"] for x in rows] == list(routing.expert_tokens)
    model = data["model"]
    assert model["fp16_all_pj"] > model["fp16_active_pj"] > model["spike_pj"] > 0
    assert model["micro_sparsity"] == pytest.approx(
        stats.totals["3"]["bitwise-bidirectional"]["sparsity"]
    )


def test_dense_sources_have_no_experts_report():
    with pytest.raises(SpikecodeError, match="no MoE layers"):
        experts_report(load_source(None))


def test_cli_calibrate_and_report_experts(folder, tmp_path):
    out = tmp_path / "stats.json"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["calibrate", str(folder), "--samples", "4", "--k", "3", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["report", "experts", str(out), "--format", "json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {x["layer"] for x in data["layers"]} == {"model.layers.1.mlp", "model.layers.3.mlp"}
    result = runner.invoke(main, ["report", "experts", str(out)], catch_exceptions=False)
    assert "macro sparsity" in result.output and "micro sparsity" in result.output


def tiny_mixtral():
    """A seeded two-layer Mixtral, 4 experts with 2 routed per token."""
    torch.manual_seed(0)
    config = transformers.MixtralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_mixtral_calibrates_per_expert(tmp_path):
    model = tiny_mixtral()
    loaded = wrap_module(model)
    ids = [{"input_ids": list(range(3 + i, 12 + 2 * i))} for i in range(5)]
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in ids))
    stats = calibrate(loaded, data, k=(3.0,), samples=None, batch_size=2)
    assert [r.layer for r in stats.routing] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    total = sum(len(x["input_ids"]) for x in ids)
    for r in stats.routing:
        assert r.top_k == 2 and r.tokens == total and sum(r.expert_tokens) == 2 * total
        for e, n in enumerate(r.expert_tokens):
            if n:
                assert stats.layer(f"{r.layer}.experts.{e}.down_proj").tokens == n
    # the hooks and the counter agree on a padded batch
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    rows = {}
    with (
        torch.no_grad(),
        LinearInputHooks(model, lambda n, r: rows.setdefault(n, 0)) as hooks,
        RoutingCounter(model, mask=lambda: hooks.mask) as counter,
    ):
        hooks.set_mask(mask)
        model(torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]]), attention_mask=mask)
    assert counter.tokens["model.layers.0.mlp"] == 7


def test_release_recipe_codes_every_softmax_attention_and_keeps_down_projs_float(folder):
    from spikecode.nn.recipes import recipe_targets

    model = load_checkpoint(folder).model
    roles = {t.name: t.role for t in recipe_targets(model, "release")}
    assert roles["model.layers.1.mlp.experts.2.down_proj"] == "float"
    assert roles["model.layers.1.mlp.shared_experts.0.down_proj"] == "float"
    assert roles["model.layers.0.mlp.down_proj"] == "float"
    assert roles["model.layers.1.mlp.experts.2.up_proj"] == "spike"
    assert roles["model.layers.1.mlp.router"] == "spike"
    assert roles["model.layers.0.attn.window.q_act"] == "spike"
    assert roles["model.layers.3.attn.k_act"] == "int8"  # the full-attention layer
    assert not any(name.startswith("model.layers.0.attn.linear.") and role != "spike"
                   for name, role in roles.items())  # fmt: skip


@pytest.mark.parametrize("recipe", ["all-linear", "release"])
def test_spiking_moe_decodes_with_its_cache_as_it_recomputes(folder, recipe):
    from spikecode.nn import swap_linears

    model = load_checkpoint(folder, dtype="float64").model
    swap_linears(model, recipe=recipe)
    ids = torch.tensor([[5, 9, 2, 7, 1, 3]])
    with torch.no_grad():
        full = model(ids).logits
        cache = None
        pieces = []
        for i in range(6):
            out = model(ids[:, i : i + 1], cache=cache, use_cache=True)
            cache = out.cache
            pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-9, atol=1e-9)


def test_an_experts_nir_graph_and_the_whole_model_in_onnx(folder, tmp_path):
    import numpy as np
    import onnxruntime as ort

    import spikecode
    from spikecode.exporters.nir import simulate_nir
    from spikecode.nn.functional import quantize_weight_int8

    runner = CliRunner()
    result = runner.invoke(main, ["export", "nir", str(folder), "--include",
                                  "model.layers.1.mlp.experts.2.*", "--T", "16", "--scheme",
                                  "ternary", "--out", str(tmp_path / "nir")])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = load_checkpoint(folder, dtype="float32").model
    name = "model.layers.1.mlp.experts.2.up_proj"
    weight = model.get_submodule(name).weight.detach()
    w_q, scales = quantize_weight_int8(weight)
    x = np.random.default_rng(0).standard_normal((5, weight.shape[1])).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    train = spikecode.encode(counts, "ternary", 16)
    want = spikecode.spike_linear(train, w_q.numpy(), scales.numpy(), vth).output
    got = simulate_nir(tmp_path / "nir", {name: train}, {name: vth})[name]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    result = runner.invoke(
        main,
        ["export", "onnx", str(folder), "--out", str(tmp_path / "m.onnx")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    ids = np.array([[3, 1, 4, 1, 5, 9]], dtype=np.int64)
    got = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    from spikecode.nn import swap_linears

    swap_linears(model)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    # onnxruntime's float32 sums may flip one count's rounding somewhere (a tie of
    # round(x / Vth)), which moves that position's logits; the others agree closely.
    assert np.isfinite(got).all()
    close = np.isclose(got, want, rtol=1e-4, atol=1e-4).all(axis=-1)[0]
    assert close[0] and close.mean() >= 0.8, close


def test_cli_calibrates_a_transformers_moe_folder_per_expert(tmp_path):
    tiny_mixtral().save_pretrained(tmp_path / "mixtral")
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps({"input_ids": list(range(3 + i, 14 + i))}) + "\n"
                            for i in range(4)))  # fmt: skip
    runner = CliRunner()
    out = tmp_path / "stats.json"
    result = runner.invoke(
        main,
        ["calibrate", str(tmp_path / "mixtral"), "--data", str(data), "--samples", "4",
         "--k", "3", "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["report", "experts", str(out), "--format", "json"], catch_exceptions=False
    )
    data = json.loads(result.output)
    assert [x["layer"] for x in data["layers"]] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    for layer in data["layers"]:
        assert layer["top_k"] == 2 and layer["tokens"] == 4 * 11
        assert layer["macro_sparsity"] == pytest.approx(0.5)  # top-2 of 4 equal experts
    assert sum(x["tokens"] for x in data["experts"]) == 2 * 2 * 4 * 11
