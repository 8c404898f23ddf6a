"""The release recipe against an independent re-implementation of the released formulas.

The reference below is written from the released code's equations
(``W8ASpike/quant_linear.py``: ``dynamic_spikes``, ``QuantLinear``, ``Quantizer``;
``W8ASpike/window_attention.py``: ``quantize_sym`` and where q/k/v are coded;
``W8ASpike/modeling_gla_swa.py``: ``down_proj`` through ``swiglu_linear`` with its float
weight). It applies them to a float spikecode model with plain hooks and weight edits,
never through :mod:`spikecode.nn.recipes`, in the model's release dtype flow
(``release_numerics``): the rounding points themselves are tested against a
re-implementation of the release's own code in tests/test_release_bf16.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from spikecode.errors import SpikecodeError
from spikecode.models import GLASwaConfig, GLASwaForCausalLM
from spikecode.models.checkpoint import load_checkpoint
from spikecode.nn import (
    DynamicSpikes,
    ReleaseQuantLinear,
    SymmetricQuantizer,
    W8ASpikeLinear,
    recipe_targets,
    set_k,
    swap_linears,
)
from spikecode.testing import write_tiny_gla_swa_checkpoint

# --------------------------------------------------------------------------- reference


def ref_dynamic_spikes(x, k=3.0):
    # quant_linear.py: vth = x.abs().mean([-1], keepdim=True).float() / k, clamped.
    vth = x.abs().mean([-1], keepdim=True).float() / k
    vth = vth.clamp(min=1e-5, max=1e4)
    return (x / vth).round(), vth


def ref_spike_input(x, k=3.0):
    spikes_int, vth = ref_dynamic_spikes(x, k)
    return (spikes_int * vth).to(x.dtype)


def ref_quantizer(weight, scales):
    # Quantizer.forward with w_group_size: reshape, (w / s).round() * s, back to dtype.
    out, n_in = weight.shape
    org = weight.dtype
    w = weight.reshape(out, -1, n_in // scales.shape[1])
    w = (w / scales).round() * scales
    return w.reshape(out, n_in).to(org)


def ref_quantize_sym(x, bit=8):
    q_max = (1 << (bit - 1)) - 1
    q_min = -(1 << (bit - 1))
    scale = x.abs().amax([-1], keepdim=True).float() / (2 ** (bit - 1) - 1)
    scale = scale.clamp(min=1e-5, max=1e4)
    return ((x / scale).round().clamp(q_min, q_max) * scale).to(x.dtype)


def ref_scales(weight, group=128):
    # max|w| / 127 per row and group of 128 columns (the checkpoint's buffer layout).
    out, n_in = weight.shape
    amax = weight.float().abs().reshape(out, n_in // group, group).amax(-1, keepdim=True)
    return amax / 127


def release_reference(model, scales=None, k=3.0):
    """A deep copy of a float GLA-SWA model computing what the release computes."""
    ref = copy.deepcopy(model)
    for module in ref.modules():
        if hasattr(type(module), "release_numerics"):
            module.release_numerics = True
    handles = []
    for name, module in ref.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            if name.endswith("mlp.down_proj"):
                continue  # swiglu_linear with the float weight, float input
            s = (scales or {}).get(name)
            if s is None:
                s = ref_scales(module.weight.detach())
            with torch.no_grad():
                module.weight.copy_(ref_quantizer(module.weight, s.to(module.weight.dtype)))
            handles.append(
                module.register_forward_pre_hook(lambda m, args: (ref_spike_input(args[0], k),))
            )
        elif name.endswith("attn.q_act"):
            module.register_forward_hook(lambda m, args, out: ref_spike_input(out, 3.0))
        elif name.endswith(("attn.k_act", "attn.v_act")):
            module.register_forward_hook(lambda m, args, out: ref_quantize_sym(out))
    return ref


def tiny_model(dtype=torch.float32, seed=0):
    config = GLASwaConfig(
        vocab_size=64,
        hidden_size=256,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=5,
        rope_theta=1e4,
        attn_layers=(1, 3),
        gate="single",
        gla_chunk_size=8,
    )
    torch.manual_seed(seed)
    model = GLASwaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.to(dtype)


# --------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_release_modules_equal_the_reference_formulas(dtype):
    torch.manual_seed(3)
    x = (torch.randn(5, 7, 256) * torch.rand(5, 7, 1) * 4).to(dtype)
    linear = torch.nn.Linear(256, 96).to(dtype)
    scales = ref_scales(linear.weight.detach())
    layer = ReleaseQuantLinear.from_linear(linear, k=2.5, scales=scales)
    expected = torch.nn.functional.linear(
        ref_spike_input(x, 2.5), ref_quantizer(linear.weight, scales.to(dtype)), linear.bias
    )
    assert torch.equal(layer(x), expected)
    heads = x.reshape(5, 7, 8, 32)
    assert torch.equal(DynamicSpikes(32, 6)(heads), ref_spike_input(heads, 3.0))
    assert torch.equal(SymmetricQuantizer(32, 6)(heads), ref_quantize_sym(heads))


def test_release_rounds_in_the_runtime_dtype():
    # bf16 weights whose bf16 quotient w / s rounds the other way from the exact one:
    # the release recipe follows the runtime dtype, all-linear the exact quotient.
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 256, bias=False).to(torch.bfloat16)
    scales = ref_scales(linear.weight.detach())
    release = ReleaseQuantLinear.from_linear(linear, scales=scales)
    exact = W8ASpikeLinear.from_linear(linear, scales=scales)
    got = (release.weight.reshape(256, 1, 128) / release.scales).round().reshape(256, 128)
    exact_q = exact.weight_q.to(torch.float32)
    want = ref_quantizer(linear.weight, scales.to(torch.bfloat16))
    from spikecode.nn.recipes import release_fake_weight

    assert torch.equal(release_fake_weight(release.weight, release.scales), want)
    assert (got.float() != exact_q).any(), "no tie flipped; the test would not tell them apart"


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_release_recipe_equals_the_reference_model(dtype):
    model = tiny_model(dtype)
    reference = release_reference(model)
    names = swap_linears(model, recipe="release")
    assert isinstance(model.model.layers[0].mlp.down_proj, torch.nn.Linear)
    assert isinstance(model.model.layers[0].mlp.up_proj, ReleaseQuantLinear)
    assert isinstance(model.model.layers[1].attn.q_act, DynamicSpikes)
    assert isinstance(model.model.layers[1].attn.v_act, SymmetricQuantizer)
    assert "model.layers.0.mlp.down_proj" not in names
    assert "model.layers.1.attn.k_act" in names
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        got = model(ids, mask).logits
        want = reference(ids, mask).logits
    assert torch.equal(got, want)
    # and the recipe really differs from the float model and from all-linear
    float_model = tiny_model(dtype)
    all_linear = tiny_model(dtype)
    swap_linears(all_linear)
    with torch.no_grad():
        assert not torch.equal(got, float_model(ids, mask).logits)
        assert not torch.equal(got, all_linear(ids, mask).logits)


def test_release_recipe_on_a_released_w8aspike_checkpoint(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=True, gate="single")
    loaded = load_checkpoint(folder, dtype=torch.float32)
    assert loaded.quant_scales
    reference = release_reference(loaded.model, dict(loaded.quant_scales))
    swap_linears(loaded.model, recipe="release", scales=loaded.quant_scales)
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, reference(ids).logits)


def test_release_k_applies_to_projections_and_q_spikes():
    model = tiny_model()
    reference = release_reference(model, k=2.0)
    swap_linears(model, recipe="release")
    # The reference's q spikes keep the release's hard-coded 3: set the sites back.
    set_k(model, 2.0)
    for module in model.modules():
        if isinstance(module, DynamicSpikes):
            module.k = 3.0
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_recipe_targets_roles():
    model = tiny_model()
    roles = {t.name: t.role for t in recipe_targets(model, "release")}
    assert roles["model.layers.2.mlp.down_proj"] == "float"
    assert roles["model.layers.3.attn.q_act"] == "spike"
    assert roles["model.layers.3.attn.k_act"] == roles["model.layers.3.attn.v_act"] == "int8"
    assert roles["model.layers.0.attn.gk_proj"] == "spike"
    assert "lm_head" not in roles
    assert "model.layers.0.attn.q_act" not in roles  # a GLA layer has no sites
    assert all(t.role == "spike" for t in recipe_targets(model, "all-linear"))
    assert len(recipe_targets(model, "all-linear")) == 2 * 5 + 2 * 4 + 4 * 3  # linears
    site = recipe_targets(model, "release", include="*q_act")
    assert [t.name for t in site] == ["model.layers.1.attn.q_act", "model.layers.3.attn.q_act"]
    assert (site[0].in_features, site[0].out_features) == (64, 6)


def test_recipe_errors():
    model = tiny_model()
    with pytest.raises(SpikecodeError, match="unknown recipe"):
        swap_linears(model, recipe="paper")
    with pytest.raises(SpikecodeError, match="GLA-SWA"):
        swap_linears(torch.nn.Sequential(torch.nn.Linear(4, 4)), recipe="release")
    with pytest.raises(SpikecodeError, match="matches no projection"):
        recipe_targets(model, "release", include="*nothing*")
