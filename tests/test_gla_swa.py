"""The plain-PyTorch GLA-SWA model against a slow per-token reference of SPEC §7."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.models import GLASwaConfig, GLASwaForCausalLM, gla_chunked, gla_recurrent
from spikecode.models.gla_swa import apply_rotary, sliding_window_attention
from spikecode.testing import assert_close_to_rounding

#: Rounding steps that differ between two orders of computing the tiny model (cached
#: or chunked against a full pass, one sequence against a batch): the token mixer and
#: the MLP of each of its 4 layers, each within eps x ||row|| (spikecode.testing).
ORDER_OPS = 2 * 4

TINY = {
    "vocab_size": 40,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "sliding_window": 3,
    "rope_theta": 100.0,
    "attn_layers": (1, 3),
}

# The SpikingBrain-7B config.json as SPEC §7 gives it.
RELEASE_CONFIG = {
    "architectures": ["GLAswaForCausalLM"],
    "model_type": "gla_swa",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "attn_layers": list(range(1, 28, 2)),
    "sliding_window": 4096,
    "rope_theta": 1000000.0,
    "norm_eps": 1e-06,
    "hidden_act": "swish",
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "use_short_conv": False,
    "torch_dtype": "bfloat16",
    "attn_mode": "chunk",
}


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64, **changes) -> GLASwaForCausalLM:
    config = GLASwaConfig(**{**TINY, **changes})
    model = GLASwaForCausalLM(config).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.3 * noise)
            elif name.endswith("gk_proj.1.weight") or (
                name.endswith("gk_proj.weight") and param.dim() == 2
            ):
                param.copy_(3 * noise / math.sqrt(param.shape[1]))  # a wide range of decays
            elif param.dim() == 2 and "embeddings" not in name:
                param.copy_(noise / math.sqrt(param.shape[1]))
            else:
                param.copy_(noise)
    return model.eval()


# --------------------------------------------------------------------------------------
# slow reference: one token, one head at a time, straight from SPEC §7
# --------------------------------------------------------------------------------------


def ref_rms(x, w, eps):
    return x / torch.sqrt((x * x).mean() + eps) * w


def ref_rope(x, pos, theta):
    d = x.shape[0]
    half = d // 2
    out = x.clone()
    for j in range(half):
        angle = pos * theta ** (-2 * j / d)
        c, s = math.cos(angle), math.sin(angle)
        out[j] = x[j] * c - x[j + half] * s
        out[j + half] = x[j + half] * c + x[j] * s
    return out


def ref_linear(sd, prefix, x):
    y = sd[prefix + ".weight"] @ x
    bias = sd.get(prefix + ".bias")
    return y if bias is None else y + bias


def ref_forward(model: GLASwaForCausalLM, ids: list[int]) -> torch.Tensor:
    cfg = model.gla_config
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    hd, heads, kv_heads = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    group = heads // kv_heads
    eps, seq = cfg.norm_eps, len(ids)
    xs = [sd["model.embeddings.weight"][i] for i in ids]
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        normed = [ref_rms(x, sd[p + "attn_norm.weight"], eps) for x in xs]
        q = [ref_linear(sd, p + "attn.q_proj", x) for x in normed]
        k = [ref_linear(sd, p + "attn.k_proj", x) for x in normed]
        v = [ref_linear(sd, p + "attn.v_proj", x) for x in normed]
        outs = []
        if layer in cfg.attn_layers:
            for t in range(seq):
                heads_out = []
                for h in range(heads):
                    kv = h // group
                    qh = ref_rope(q[t][h * hd : (h + 1) * hd], t, cfg.rope_theta)
                    keys = range(max(0, t - cfg.sliding_window), t + 1)
                    scores = []
                    for j in keys:
                        kh = ref_rope(k[j][kv * hd : (kv + 1) * hd], j, cfg.rope_theta)
                        scores.append(float(qh @ kh) / math.sqrt(hd))
                    top = max(scores)
                    weights = [math.exp(s - top) for s in scores]
                    total = sum(weights)
                    acc = torch.zeros(hd, dtype=torch.float64)
                    for w, j in zip(weights, keys, strict=True):
                        acc = acc + (w / total) * v[j][kv * hd : (kv + 1) * hd]
                    heads_out.append(acc)
                outs.append(torch.cat(heads_out))
        else:
            if p + "attn.gk_proj.weight" in sd:
                gk = [ref_linear(sd, p + "attn.gk_proj", x) for x in normed]
            else:
                gk = [
                    ref_linear(sd, p + "attn.gk_proj.1", ref_linear(sd, p + "attn.gk_proj.0", x))
                    for x in normed
                ]
            states = [torch.zeros(hd, hd, dtype=torch.float64) for _ in range(heads)]
            for t in range(seq):
                heads_out = []
                for h in range(heads):
                    kv = slice((h // group) * hd, (h // group + 1) * hd)
                    qh = torch.relu(q[t][h * hd : (h + 1) * hd])
                    kh = torch.relu(k[t][kv])
                    gate = F.logsigmoid(gk[t][kv]) / 16
                    states[h] = torch.diag(torch.exp(gate)) @ states[h] + torch.outer(kh, v[t][kv])
                    o = (qh @ states[h]) / math.sqrt(hd)
                    heads_out.append(ref_rms(o, sd[p + "attn.g_norm.weight"], eps))
                outs.append(torch.cat(heads_out))
        hs = [x + sd[p + "attn.o_proj.weight"] @ o for x, o in zip(xs, outs, strict=True)]
        xs = []
        for h in hs:
            m = ref_rms(h, sd[p + "mlp_norm.weight"], eps)
            gate = sd[p + "mlp.gate_proj.weight"] @ m
            up = sd[p + "mlp.up_proj.weight"] @ m
            xs.append(h + sd[p + "mlp.down_proj.weight"] @ (gate * torch.sigmoid(gate) * up))
    final = [ref_rms(x, sd["model.norm.weight"], eps) for x in xs]
    return torch.stack([sd["lm_head.weight"] @ x for x in final])


@pytest.mark.parametrize("gate", ["lowrank", "single"])
@pytest.mark.parametrize("mode", ["chunked", "recurrent"])
def test_forward_matches_per_token_reference(gate, mode):
    model = make_model(gate=gate, gla_mode=mode, gla_chunk_size=5)
    ids = torch.tensor([[3, 17, 5, 5, 39, 0, 22, 8, 11, 30, 2, 14]])
    expected = ref_forward(model, ids[0].tolist())
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 12, TINY["vocab_size"])
    assert_close_to_rounding(logits[0], expected, ops=ORDER_OPS)


def test_shared_kv_heads_and_window_matter():
    # The reference above would not notice a model that ignored GQA sharing or the
    # window if those had no effect on the numbers; check that they do.
    model = make_model()
    ids = torch.tensor([[3, 17, 5, 5, 39, 0, 22, 8, 11, 30]])
    wide = dataclasses.replace(model.gla_config, sliding_window=100)
    other = GLASwaForCausalLM(wide).double()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, other.eval()(ids).logits)


def test_state_dict_names_are_the_release_names():
    lowrank = make_model(gate="lowrank")
    single = make_model(gate="single")
    per_layer_common = [
        "attn_norm.weight",
        "mlp_norm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "attn.q_proj.weight",
        "attn.q_proj.bias",
        "attn.k_proj.weight",
        "attn.k_proj.bias",
        "attn.v_proj.weight",
        "attn.v_proj.bias",
        "attn.o_proj.weight",
    ]
    gla_extra = {
        "lowrank": [
            "attn.gk_proj.0.weight",
            "attn.gk_proj.1.weight",
            "attn.gk_proj.1.bias",
            "attn.g_norm.weight",
        ],
        "single": ["attn.gk_proj.weight", "attn.gk_proj.bias", "attn.g_norm.weight"],
    }
    for gate, model in (("lowrank", lowrank), ("single", single)):
        expected = {"model.embeddings.weight", "model.norm.weight", "lm_head.weight"}
        for i in range(4):
            names = per_layer_common + ([] if i in (1, 3) else gla_extra[gate])
            expected |= {f"model.layers.{i}.{n}" for n in names}
        assert set(model.state_dict()) == expected
    shapes = {k: tuple(v.shape) for k, v in lowrank.state_dict().items()}
    assert shapes["model.layers.0.attn.k_proj.weight"] == (8, 16)  # kv heads × head_dim
    assert shapes["model.layers.0.attn.gk_proj.0.weight"] == (16, 16)  # hidden → 16
    assert shapes["model.layers.0.attn.gk_proj.1.weight"] == (8, 16)  # 16 → kv dims
    assert shapes["model.layers.0.attn.g_norm.weight"] == (4,)  # head_dim
    assert shapes["model.layers.1.attn.q_proj.weight"] == (16, 16)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (16, 24)


def test_projections_are_plain_linears_that_hooks_see_and_swaps_replace():
    model = make_model()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        before = model(ids).logits
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    # Per layer: q, k, v, o and the MLP's three, plus the two gate projections of GLA layers.
    assert len(linears) == 4 * 7 + 2 * 2 + 1
    seen = {}

    def record(module, args, output):
        seen[names[module]] = args[0]  # returns None: the output is left alone

    names = {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    handles = [m.register_forward_hook(record) for m in names]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    assert set(seen) == linears
    assert seen["model.layers.0.attn.o_proj"].shape == (1, 6, 16)
    # Swapping a projection changes the forward accordingly.
    layer = model.model.layers[2].mlp
    original = layer.down_proj
    zero = nn.Linear(24, 16, bias=False).double()
    nn.init.zeros_(zero.weight)
    layer.down_proj = zero
    with torch.no_grad():
        changed = model(ids).logits
    layer.down_proj = original
    assert not torch.allclose(changed, before)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


def test_hidden_states_feed_the_lm_head():
    model = make_model()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        hidden = model.hidden_states(ids)
        assert hidden.shape == (2, 3, 16)
        torch.testing.assert_close(model.lm_head(hidden), model(ids).logits, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# recurrent vs chunked
# --------------------------------------------------------------------------------------


def random_gla_inputs(seed, batch=2, kv_heads=2, groups=3, seq=23, dk=4, dv=5, decay=4.0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = randn(batch, kv_heads, groups, seq, dk).relu()
    k = randn(batch, kv_heads, seq, dk).relu()
    v = randn(batch, kv_heads, seq, dv)
    gate = F.logsigmoid(decay * randn(batch, kv_heads, seq, dk))
    return q, k, v, gate


def naive_gla(q, k, v, g, scale, state=None):
    batch, heads, groups, seq, dk = q.shape
    dv = v.shape[-1]
    out = torch.zeros(batch, heads, groups, seq, dv, dtype=q.dtype)
    final = torch.zeros(batch, heads, dk, dv, dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            s = torch.zeros(dk, dv, dtype=q.dtype) if state is None else state[b, h].clone()
            for t in range(seq):
                s = torch.diag(g[b, h, t].exp()) @ s + torch.outer(k[b, h, t], v[b, h, t])
                for j in range(groups):
                    out[b, h, j, t] = scale * (q[b, h, j, t] @ s)
            final[b, h] = s
    return out, final


def test_recurrent_form_matches_the_naive_loop():
    q, k, v, g = random_gla_inputs(1)
    state = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    out, final = gla_recurrent(q, k, v, g, scale=0.5, initial_state=state)
    ref_out, ref_final = naive_gla(q, k, v, g, 0.5, state)
    # One operator, its sums over time taken in another order: a few eps x ||row||
    # (observed up to 0.9); the model-level budget is ample.
    assert_close_to_rounding(out, ref_out, ops=ORDER_OPS)
    assert_close_to_rounding(final, ref_final, ops=ORDER_OPS)


@given(
    seq=st.integers(1, 40),
    chunk=st.integers(1, 17),
    decay=st.sampled_from([0.1, 4.0, 60.0]),
    seed=st.integers(0, 2**16),
    with_state=st.booleans(),
)
def test_chunked_equals_recurrent(seq, chunk, decay, seed, with_state):
    q, k, v, g = random_gla_inputs(seed, seq=seq, decay=decay)
    # A strong decay would overflow a naive exp(-cumsum) factorisation inside a chunk.
    g = g * (200.0 if decay == 60.0 else 1.0)
    state = torch.rand(2, 2, 4, 5, dtype=torch.float64) if with_state else None
    rec_out, rec_state = gla_recurrent(q, k, v, g, scale=0.3, initial_state=state)
    chk_out, chk_state = gla_chunked(q, k, v, g, scale=0.3, chunk_size=chunk, initial_state=state)
    assert torch.isfinite(chk_out).all()
    torch.testing.assert_close(chk_out, rec_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(chk_state, rec_state, rtol=1e-10, atol=1e-10)


def test_model_modes_agree_and_set_gla_mode_switches():
    model = make_model(gla_chunk_size=4)
    ids = torch.randint(0, 40, (3, 19), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        chunked = model(ids).logits
        model.set_gla_mode("recurrent")
        assert model.config.gla_mode == "recurrent"
        assert model.model.layers[0].attn.mode == "recurrent"
        recurrent = model(ids).logits
        model.set_gla_mode("chunked", chunk_size=7)
        assert model.model.layers[2].attn.chunk_size == 7
        chunked7 = model(ids).logits
    # Chunks reorder the state's sums over time (observed up to 2.6 eps x ||row||).
    assert_close_to_rounding(chunked, recurrent, ops=ORDER_OPS)
    assert_close_to_rounding(chunked7, recurrent, ops=ORDER_OPS)
    with pytest.raises(SpikecodeError, match="gla_mode"):
        model.set_gla_mode("fused")


# --------------------------------------------------------------------------------------
# sliding window, padding
# --------------------------------------------------------------------------------------


def test_rotary_matches_pairwise_rotation():
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    out = apply_rotary(x, torch.arange(7), 50.0)
    for t in range(7):
        torch.testing.assert_close(out[1, t], ref_rope(x[1, t], t, 50.0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("block_size", [1, 4, 256])
def test_window_limits_attention_exactly(block_size):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 2, 12, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, 12, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 2, 12, 4, generator=gen, dtype=torch.float64)
    window, i = 3, 9

    def run(kk, vv):
        return sliding_window_attention(q, kk, vv, window=window, scale=0.5, block_size=block_size)

    base = run(k, v)
    for j in range(12):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, j] += 5.0
        v2[:, :, j] -= 3.0
        changed = run(k2, v2)
        if i - window <= j <= i:
            assert not torch.allclose(changed[..., i, :], base[..., i, :]), j
        else:
            torch.testing.assert_close(changed[..., i, :], base[..., i, :], rtol=0, atol=0)


def test_window_limits_a_whole_softmax_model():
    # One sliding-window layer: a token more than `sliding_window` back has no influence.
    model = make_model(num_hidden_layers=1, attn_layers=(0,), sliding_window=3)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        base = model(ids).logits
        for p in range(10):
            other = ids.clone()
            other[0, p] = 39
            out = model(other).logits
            torch.testing.assert_close(out[0, :p], base[0, :p], rtol=0, atol=0)  # causal
            torch.testing.assert_close(out[0, p + 4 :], base[0, p + 4 :], rtol=0, atol=0)
            for i in range(p, min(p + 4, 10)):
                assert not torch.allclose(out[0, i], base[0, i])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", ["chunked", "recurrent"])
def test_padding_does_not_change_real_tokens(side, mode):
    model = make_model(gla_mode=mode, gla_chunk_size=4)
    gen = torch.Generator().manual_seed(5)
    lengths = [11, 6, 2]
    seqs = [torch.randint(0, 40, (n,), generator=gen) for n in lengths]
    width = max(lengths)
    ids = torch.randint(0, 40, (3, width), generator=gen)  # junk at padding positions
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, seq in enumerate(seqs):
        where = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, where] = seq
        mask[row, where] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        other_junk = model(
            torch.where(mask.bool(), ids, (ids + 7) % 40), attention_mask=mask
        ).logits
        for row, seq in enumerate(seqs):
            alone = model(seq[None]).logits[0]
            real = batched[row][mask[row].bool()]
            assert_close_to_rounding(real, alone, ops=ORDER_OPS)
    assert_close_to_rounding(other_junk[mask.bool()], batched[mask.bool()], ops=ORDER_OPS)
    assert torch.isfinite(batched).all()


@pytest.mark.parametrize(
    "mask", [[[1, 1, 0, 1, 1]], [[0, 1, 0, 1, 0]], [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1]]]
)
def test_padding_hole_is_refused(mask):
    # The release gives a hole no single meaning (GLA zeroes only v, window layers
    # un-pad), so spikecode refuses it instead of picking one.
    model = make_model()
    mask = torch.tensor(mask)
    ids = torch.ones_like(mask)
    with pytest.raises(SpikecodeError, match="padding hole"):
        model(ids, mask)


@pytest.mark.parametrize("mask", [[[0, 0, 1, 1, 1]], [[1, 1, 1, 0, 0]], [[0, 1, 1, 1, 0]]])
def test_left_right_and_both_sided_padding_are_accepted(mask):
    model = make_model()
    mask = torch.tensor(mask)
    with torch.no_grad():
        assert torch.isfinite(model(torch.ones_like(mask), mask).logits).all()


def test_all_ones_mask_equals_no_mask():
    model = make_model()
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, torch.ones_like(ids)).logits, model(ids).logits, rtol=0, atol=1e-13
        )


# --------------------------------------------------------------------------------------
# dtypes and devices
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 0.1), (torch.float16, 0.02)]
)
def test_low_precision_dtypes_run_close_to_float64(dtype, tol):
    reference = make_model()
    model = make_model(dtype=dtype)
    ids = torch.randint(0, 40, (2, 13), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(ids).logits
        logits = model(ids).logits
    assert logits.dtype == dtype
    err = (logits.double() - expected).abs().max() / expected.abs().max()
    assert err < tol


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = make_model(dtype=torch.float32)
    ids = torch.randint(0, 40, (2, 13), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(ids).logits
        logits = model.cuda()(ids.cuda(), torch.ones_like(ids).cuda()).logits
    torch.testing.assert_close(logits.cpu(), expected, rtol=1e-4, atol=1e-4)


def test_builds_on_the_meta_device():
    with torch.device("meta"):
        model = GLASwaForCausalLM(GLASwaConfig(**TINY))
    assert all(p.is_meta for p in model.parameters())


def test_tied_embeddings_share_the_matrix():
    model = make_model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embeddings.weight
    assert "lm_head.weight" in model.state_dict()


# --------------------------------------------------------------------------------------
# input errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "mask", "match"),
    [
        (torch.tensor([1, 2, 3]), None, "2-D"),
        (torch.tensor([[1.0, 2.0]]), None, "integer"),
        (torch.tensor([[1, 40]]), None, "outside"),
        (torch.tensor([[-1, 2]]), None, "outside"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]), "attention_mask must be a tensor"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 2]]), "0 and 1"),
    ],
)
def test_bad_inputs_raise(ids, mask, match):
    model = make_model()
    with pytest.raises(SpikecodeError, match=match):
        model(ids, mask)


# --------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------


def test_release_config_parses():
    cfg = GLASwaConfig.from_dict(RELEASE_CONFIG)
    assert cfg.head_dim == 128
    assert cfg.kv_dim == 512
    assert cfg.attn_layers == tuple(range(1, 28, 2))
    assert cfg.gla_mode == "chunked"
    assert cfg.torch_dtype == "bfloat16"
    assert cfg.gate == "lowrank"
    assert GLASwaConfig.from_dict(cfg.to_dict()) == cfg
    assert GLASwaConfig.from_dict({**RELEASE_CONFIG, "attn_mode": "fused_recurrent"}).gla_mode == (
        "recurrent"
    )
    # Without attn_layers the release's configuration class uses the odd layers.
    no_layers = {k: v for k, v in RELEASE_CONFIG.items() if k != "attn_layers"}
    assert GLASwaConfig.from_dict(no_layers).attn_layers == tuple(range(1, 28, 2))
    defaults = {k: v for k, v in RELEASE_CONFIG.items() if k not in ("norm_eps", "hidden_act")}
    assert GLASwaConfig.from_dict(defaults).norm_eps == 1e-6


def test_from_json_reads_a_file(tmp_path):
    (tmp_path / "config.json").write_text(
        __import__("json").dumps(RELEASE_CONFIG), encoding="utf-8"
    )
    assert GLASwaConfig.from_json(tmp_path).hidden_size == 3584
    assert GLASwaConfig.from_json(tmp_path / "config.json", gate="single").gate == "single"
    with pytest.raises(SpikecodeError, match=r"config\.json not found"):
        GLASwaConfig.from_json(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="cannot read"):
        GLASwaConfig.from_json(tmp_path)


@pytest.mark.parametrize("name", GLASwaConfig.REQUIRED_FIELDS)
def test_missing_field_is_named(name):
    raw = {k: v for k, v in RELEASE_CONFIG.items() if k != name}
    with pytest.raises(SpikecodeError, match=rf"config\.json is missing the field '{name}'") as e:
        GLASwaConfig.from_dict(raw)
    assert e.value.context["field"] == name
    assert e.value.context["file"] == "config.json"


@pytest.mark.parametrize(
    ("changes", "field", "match"),
    [
        ({"hidden_size": 3585}, "hidden_size", "not divisible by num_attention_heads"),
        ({"num_key_value_heads": 5}, "num_key_value_heads", "not divisible"),
        ({"hidden_size": 28 * 3}, "hidden_size", "even"),
        ({"hidden_size": 0}, "hidden_size", "positive integer"),
        ({"hidden_size": "3584"}, "hidden_size", "positive integer"),
        ({"num_hidden_layers": True}, "num_hidden_layers", "positive integer"),
        ({"vocab_size": 1.5}, "vocab_size", "positive integer"),
        ({"rope_theta": -1.0}, "rope_theta", "> 0"),
        ({"norm_eps": "small"}, "norm_eps", "> 0"),
        ({"sliding_window": None}, "sliding_window", "positive integer"),
        ({"attn_layers": [1, 28]}, "attn_layers", "layer indices"),
        ({"attn_layers": [1, 1]}, "attn_layers", "repeats"),
        ({"attn_layers": "odd"}, "attn_layers", "list"),
        ({"hidden_act": "gelu"}, "hidden_act", "not supported"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings", "true or false"),
        ({"torch_dtype": "int8"}, "torch_dtype", "torch_dtype"),
        ({"attn_mode": "fancy"}, "attn_mode", "attn_mode"),
        ({"use_short_conv": True}, "use_short_conv", "use_short_conv"),
        ({"elementwise_affine": False}, "elementwise_affine", "elementwise_affine"),
        ({"model_type": "qwen2"}, "model_type", "not a GLA-SWA config"),
    ],
)
def test_inconsistent_config_is_refused(changes, field, match):
    with pytest.raises(SpikecodeError, match=match) as e:
        GLASwaConfig.from_dict({**RELEASE_CONFIG, **changes}, source="/x/config.json")
    assert e.value.context["field"] == field
    assert e.value.context["file"] == "/x/config.json"
    assert "/x/config.json" in str(e.value)


def test_config_refuses_non_objects_and_bad_overrides():
    with pytest.raises(SpikecodeError, match="JSON object"):
        GLASwaConfig.from_dict([1, 2])
    with pytest.raises(SpikecodeError, match="gate"):
        GLASwaConfig.from_dict(RELEASE_CONFIG, gate="diagonal")
    with pytest.raises(SpikecodeError, match="gla_chunk_size"):
        GLASwaConfig.from_dict(RELEASE_CONFIG, gla_chunk_size=0)
    with pytest.raises(SpikecodeError, match=r"gla_mode must be one of .*'parallel'"):
        GLASwaConfig.from_dict(RELEASE_CONFIG, gla_mode="parallel")
