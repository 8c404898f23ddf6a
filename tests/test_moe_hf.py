"""transformers MoE models (Mixtral, Qwen2-MoE, OLMoE; tiny random configs) in spikecode."""

from __future__ import annotations

import pytest
import torch
import transformers

from spikecode.models.capture import collect_linear_inputs, list_linear_layers
from spikecode.models.checkpoint import load_checkpoint, wrap_module
from spikecode.models.moe import ExpertLinears, RoutingCounter, has_fused_experts

COMMON = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=64,
)
CONFIGS = {
    "mixtral": (transformers.MixtralConfig, dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        transformers.Qwen2MoeConfig,
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=8,
            shared_expert_intermediate_size=12,
            decoder_sparse_step=1,
        ),
    ),
    "olmoe": (transformers.OlmoeConfig, dict(num_experts=4, num_experts_per_tok=2)),
}


def _model(kind):
    config_class, extra = CONFIGS[kind]
    torch.manual_seed(0)
    config = config_class(**COMMON, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_unfused_experts_compute_the_same_function(kind):
    model = _model(kind)
    assert has_fused_experts(model)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids).logits
        loaded = wrap_module(model)
        assert not has_fused_experts(model)
        after = loaded.model(ids).logits
    # transformers runs grouped GEMMs, spikecode one GEMM per expert: float32 rounding.
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    names = [name for name, _, _ in list_linear_layers(model)]
    for e in range(4):
        assert f"model.layers.0.mlp.experts.{e}.gate_proj" in names
        assert f"model.layers.1.mlp.experts.{e}.down_proj" in names
    # The per-expert weights are views of the fused ones: no copy.
    expert = model.model.layers[0].mlp.experts[2]
    assert isinstance(model.model.layers[0].mlp.experts, ExpertLinears)
    assert expert.gate_proj.weight.shape == (
        model.config.intermediate_size if kind != "qwen2_moe" else 8,
        16,
    )


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_routing_counts_and_expert_rows_exclude_padding(kind):
    model = _model(kind)
    wrap_module(model)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    inputs = {"input_ids": ids, "attention_mask": mask}
    with RoutingCounter(model, mask=lambda: mask) as counter:
        captured = collect_linear_inputs(model, inputs)
    top_k = 2
    for layer in ("model.layers.0.mlp", "model.layers.1.mlp"):
        assert counter.tokens[layer] == 10
        assert counter.top_k[layer] == top_k
        assert int(counter.counts[layer].sum()) == 10 * top_k
        for e in range(4):
            name = f"{layer}.experts.{e}.gate_proj"
            rows = captured[name].shape[0] if name in captured else 0
            assert rows == int(counter.counts[layer][e])
    if kind == "qwen2_moe":  # the shared expert reads the flattened tokens
        assert captured["model.layers.0.mlp.shared_expert.up_proj"].shape[0] == 10


def test_a_saved_mixtral_folder_loads_with_split_experts(tmp_path):
    model = _model("mixtral")
    model.save_pretrained(tmp_path / "mixtral")
    loaded = load_checkpoint(tmp_path / "mixtral")
    assert not has_fused_experts(loaded.model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
