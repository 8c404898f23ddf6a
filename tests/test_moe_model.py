"""The hybrid-linear MoE model (SpikingBrain-76B architecture, SPEC §8).

The model is compared with a slow oracle written here from SPEC §8 alone: the sink tokens
and the tokens form one sequence, every attention is a dense masked softmax built from an
explicit visibility matrix, the linear branch is a token-by-token loop, and each token's
experts are evaluated one token at a time.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spikecode.errors import SpikecodeError
from spikecode.models.capture import LinearInputHooks, collect_linear_inputs, uncounted
from spikecode.models.checkpoint import load_checkpoint, wrap_module
from spikecode.models.hybrid_moe import (
    HybridMoECache,
    MoEFeedForward,
    SpikingBrainMoEForCausalLM,
)
from spikecode.models.moe_config import HybridMoEConfig, default_full_attention_layers
from spikecode.testing import write_tiny_moe_checkpoint


def _config(**changes):
    fields = dict(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=40,
        moe_intermediate_size=12,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=3,
        rope_theta=1e4,
        full_attention_layers=(2,),
        moe_layers=(1, 3),
        num_experts=4,
        num_sink_tokens=5,
        gla_chunk_size=4,
    )
    fields.update(changes)
    return HybridMoEConfig(**fields)


def _model(config=None, seed=0):
    config = config or _config()
    model = SpikingBrainMoEForCausalLM(config).eval().double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.copy_(1 + 0.1 * noise if name.endswith("norm.weight") else 0.4 * noise)
    return model


# --- the oracle --------------------------------------------------------------------------


def _rms(x, w, eps):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w


def _rope(x, pos, theta):
    # x [seq, heads, d]; pos [seq]
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    ang = pos.to(x.dtype)[:, None] * inv
    ang = torch.cat([ang, ang], -1)[:, None]
    rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * ang.cos() + rot * ang.sin()


def _swiglu(m, x):
    return F.linear(
        F.silu(F.linear(x, m.gate_proj.weight)) * F.linear(x, m.up_proj.weight), m.down_proj.weight
    )


def _softmax_branch(branch, x, visible, pos, cfg):
    n = x.shape[0]
    h, kvh, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = _rope(
        F.linear(x, branch.q_proj.weight, branch.q_proj.bias).view(n, h, d), pos, cfg.rope_theta
    )
    k = _rope(
        F.linear(x, branch.k_proj.weight, branch.k_proj.bias).view(n, kvh, d), pos, cfg.rope_theta
    )
    v = F.linear(x, branch.v_proj.weight, branch.v_proj.bias).view(n, kvh, d)
    out = torch.empty(n, h, d, dtype=x.dtype)
    for head in range(h):
        kv = head // (h // kvh)
        for i in range(n):
            keys = visible[i].nonzero().squeeze(1)
            scores = (k[keys, kv] @ q[i, head]) / math.sqrt(d)
            out[i, head] = torch.softmax(scores, 0) @ v[keys, kv]
    return out


def _linear_branch(branch, x, real, cfg):
    n = x.shape[0]
    h, kvh, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = F.relu(F.linear(x, branch.q_proj.weight, branch.q_proj.bias)).view(n, h, d)
    k = torch.sigmoid(F.linear(x, branch.k_proj.weight, branch.k_proj.bias)).view(n, kvh, d)
    v = F.linear(x, branch.v_proj.weight, branch.v_proj.bias).view(n, kvh, d)
    state = torch.zeros(kvh, d, d, dtype=x.dtype)
    out = torch.empty(n, h, d, dtype=x.dtype)
    for t in range(n):
        if real[t]:  # padding neither adds nor decays (SPEC §8)
            state = (1 - k[t])[:, :, None] * state + k[t][:, :, None] * v[t][:, None, :]
        for head in range(h):
            out[t, head] = q[t, head] @ state[head // (h // kvh)] / math.sqrt(d)
    return out


def _oracle(model, ids, mask=None):
    """Logits of one row: ``ids`` [seq], ``mask`` [seq] bool (left/right padding)."""
    cfg = model.moe_config
    inner = model.model
    seq, sinks = ids.shape[0], cfg.num_sink_tokens
    mask = torch.ones(seq, dtype=torch.bool) if mask is None else mask
    real = torch.cat([torch.ones(sinks, dtype=torch.bool), mask])
    x = torch.cat([inner.sink_tokens, inner.embeddings.weight[ids]])
    n = sinks + seq
    pos = torch.cat([torch.arange(sinks), sinks + (mask.long().cumsum(0) - 1).clamp(min=0)])
    idx = torch.arange(n)
    is_sink = idx < sinks

    def visible(window):
        v = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            for j in range(n):
                if is_sink[i]:
                    v[i, j] = bool(is_sink[j])  # sinks see every sink, nothing else
                elif is_sink[j]:
                    v[i, j] = True  # every token sees every sink
                else:
                    ok = j <= i and (window is None or j >= i - window) and bool(real[j])
                    v[i, j] = ok or i == j
        return v

    for layer_idx, layer in enumerate(inner.layers):
        a = _rms(x, layer.attn_norm.weight, cfg.norm_eps)
        attn = layer.attn
        if cfg.layer_kind(layer_idx) == "full":
            o = _softmax_branch(attn, a, visible(None), pos, cfg)
        else:
            lin = _rms(
                _linear_branch(attn.linear, a, real, cfg), attn.linear_norm.weight, cfg.norm_eps
            )
            win = _softmax_branch(attn.window, a, visible(cfg.sliding_window), pos, cfg)
            o = lin + _rms(win, attn.window_norm.weight, cfg.norm_eps)
        h = x + F.linear(o.reshape(n, -1), attn.o_proj.weight)
        m = _rms(h, layer.mlp_norm.weight, cfg.norm_eps)
        if isinstance(layer.mlp, MoEFeedForward):
            out = torch.zeros_like(m)
            for t in range(n):
                for shared in layer.mlp.shared_experts:
                    out[t] += _swiglu(shared, m[t])
                probs = torch.softmax(F.linear(m[t], layer.mlp.router.weight), 0)
                best = int(probs.argmax())
                out[t] += probs[best] * _swiglu(layer.mlp.experts[best], m[t])
        else:
            out = _swiglu(layer.mlp, m)
        x = h + out
    x = _rms(x, inner.norm.weight, cfg.norm_eps)
    return F.linear(x[sinks:], model.lm_head.weight)


# --- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["chunked", "recurrent"])
def test_forward_equals_the_oracle(mode):
    model = _model(_config(gla_mode=mode))
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids).logits
        for row in range(2):
            torch.testing.assert_close(got[row], _oracle(model, ids[row]), rtol=1e-9, atol=1e-9)


def test_sinks_attend_to_each_other_without_a_causal_mask():
    model = _model()
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ids).logits
        # The LAST sink changes: with a causal mask among sinks only the tokens (and that
        # sink) would see it; here every sink attends to it, so the first sink's keys move.
        model.model.sink_tokens[-1] += 1.0
        after = model(ids).logits
        cache = HybridMoECache(model.moe_config)
        model(ids, cache=cache)
        first_key = cache.sink_kv[2][0][0, :, 0].clone()
        model.model.sink_tokens[-1] -= 1.0
        cache = HybridMoECache(model.moe_config)
        model(ids, cache=cache)
    assert not torch.allclose(before, after)
    # Layer 2's input at sink 0 depends on sink S-1 only through non-causal attention.
    assert not torch.allclose(first_key, cache.sink_kv[2][0][0, :, 0])


def test_every_token_reaches_one_routed_expert_and_the_shared_one():
    model = _model()
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(3))
    rows = {}
    with torch.no_grad(), LinearInputHooks(model, lambda n, r: rows.setdefault(n, []).append(r)):
        model(ids)
    for layer in (1, 3):
        routed = sum(
            sum(r.shape[0] for r in rows.get(f"model.layers.{layer}.mlp.experts.{e}.gate_proj", []))
            for e in range(4)
        )
        assert routed == 21  # each of the 3·7 tokens, exactly once
        shared = rows[f"model.layers.{layer}.mlp.shared_experts.0.gate_proj"]
        assert sum(r.shape[0] for r in shared) == 21
        routing = model.model.layers[layer].mlp.last_routing
        assert routing.shape == (21, 1)
        for e in range(4):
            got = sum(
                r.shape[0] for r in rows.get(f"model.layers.{layer}.mlp.experts.{e}.gate_proj", [])
            )
            assert got == int((routing == e).sum())


def test_cached_decoding_equals_recomputation():
    model = _model()
    ids = torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(ids).logits
        cache = HybridMoECache(model.moe_config)
        pieces = [model(ids[:, :4], cache=cache).logits]
        for i in range(4, 10):
            pieces.append(model(ids[:, i : i + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-10, atol=1e-10)


def test_padding_gives_each_row_its_unpadded_output():
    model = _model()
    ids = torch.randint(1, 50, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        alone = model(ids).logits[0]
        left = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
        left_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
        right = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
        right_mask = left_mask.flip(1)
        torch.testing.assert_close(model(left, attention_mask=left_mask).logits[0, 3:], alone)
        torch.testing.assert_close(model(right, attention_mask=right_mask).logits[0, :6], alone)
        oracle = _oracle(model, left[0], left_mask[0].bool())
        torch.testing.assert_close(oracle[3:], alone, rtol=1e-9, atol=1e-9)


def test_generate_is_greedy_recomputation_and_left_padding_changes_nothing():
    model = _model()
    prompt = torch.randint(1, 50, (1, 4), generator=torch.Generator().manual_seed(6))
    got = model.generate(prompt, max_new_tokens=5, do_sample=False)
    x = prompt
    with torch.no_grad():
        for _ in range(5):
            x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, x)
    other = torch.randint(1, 50, (1, 6), generator=torch.Generator().manual_seed(7))
    batch = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], 1), other])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    both = model.generate(batch, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert torch.equal(both[0, 2:], got[0])


def test_sinks_are_not_counted_and_padding_stays_out_of_expert_rows():
    model = _model()
    ids = torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(8))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    captured = collect_linear_inputs(model, {"input_ids": ids, "attention_mask": mask})
    assert captured["model.layers.0.attn.linear.q_proj"].shape[0] == 8  # no sink row
    routed = sum(
        captured[f"model.layers.1.mlp.experts.{e}.up_proj"].shape[0]
        for e in range(4)
        if f"model.layers.1.mlp.experts.{e}.up_proj" in captured
    )
    assert routed == 8
    # The expert rows are exactly the real tokens' rows of the expert input, by routing.
    routing = model.model.layers[1].mlp.last_routing[:, 0].reshape(2, 5)
    mlp_in = captured["model.layers.1.mlp.shared_experts.0.up_proj"]
    real = mask.bool()
    for e in range(4):
        name = f"model.layers.1.mlp.experts.{e}.up_proj"
        expected = mlp_in[(routing[real] == e).numpy()]
        if expected.shape[0]:
            torch.testing.assert_close(torch.from_numpy(captured[name]), torch.from_numpy(expected))
    seen = []
    with uncounted(), LinearInputHooks(model, lambda n, r: seen.append(n)), torch.no_grad():
        model(ids)
    assert seen == []


def test_checkpoint_round_trip(tmp_path):
    folder = write_tiny_moe_checkpoint(tmp_path / "m", with_tokenizer=True, seed=3)
    loaded = load_checkpoint(folder, dtype="float32")
    assert loaded.kind == "spikingbrain_moe"
    assert isinstance(loaded.model, SpikingBrainMoEForCausalLM)
    assert loaded.tokenizer is not None
    assert loaded.config.num_experts == 4 and loaded.config.full_attention_layers == (3,)
    assert wrap_module(loaded.model).kind == "spikingbrain_moe"
    again = load_checkpoint(folder, dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, again.model(ids).logits)
    # the stored bf16 weights, exactly
    from safetensors.torch import load_file

    stored = {}
    for shard in sorted(folder.glob("*.safetensors")):
        stored.update(load_file(shard))
    name = "model.layers.1.mlp.experts.2.down_proj.weight"
    assert torch.equal(loaded.model.state_dict()[name], stored[name].float())
    assert torch.equal(loaded.model.model.sink_tokens, stored["model.sink_tokens"].float())


def test_checkpoint_with_a_missing_expert_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = write_tiny_moe_checkpoint(tmp_path / "m", shards=1)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.3.mlp.experts.1.up_proj.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(SpikecodeError, match=r"experts\.1\.up_proj"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
        ({"num_sink_tokens": -1}, "num_sink_tokens"),
        ({"moe_layers": (7,)}, "moe_layers"),
        ({"full_attention_layers": (1, 1)}, "full_attention_layers"),
    ],
)
def test_config_refuses_bad_fields(change, field):
    with pytest.raises(SpikecodeError) as err:
        _config(**change)
    assert err.value.context["field"] == field


def test_config_json_defaults_and_round_trip():
    raw = _config(num_hidden_layers=14).to_dict()
    assert HybridMoEConfig.from_dict(raw) == _config(num_hidden_layers=14)
    for name in ("full_attention_layers", "moe_layers"):
        del raw[name]
    parsed = HybridMoEConfig.from_dict(raw)
    assert parsed.full_attention_layers == (6, 13) == default_full_attention_layers(14)
    assert parsed.moe_layers == tuple(range(1, 14, 2))
    del raw["moe_intermediate_size"]
    with pytest.raises(SpikecodeError, match="moe_intermediate_size"):
        HybridMoEConfig.from_dict(raw)


@pytest.mark.parametrize("value", ["parallel", 3])
def test_config_refuses_an_unknown_gla_mode(value):
    with pytest.raises(SpikecodeError, match="gla_mode must be one of") as e:
        _config(gla_mode=value)
    assert e.value.context["field"] == "gla_mode"
