"""An independent re-implementation of the released W8ASpike forward pass, dtype flow included.

Written from the release's code (``W8ASpike/modeling_gla_swa.py``, ``window_attention.py``,
``gla_attention.py``, ``quant_linear.py``, ``activations.py`` and fla's fused ``RMSNorm``),
not from spikecode's model: it reads the checkpoint's safetensors itself, casts every
weight and buffer to the runtime dtype as ``from_pretrained(torch_dtype=...)`` does, and
rounds exactly where the release's PyTorch code rounds.

The two GPU kernels cannot run on a CPU; they are stood in for by spikecode's pure
functions, which compute the same mathematics in float32 (:func:`sliding_window_attention`
for flash-attn's ``flash_attn_varlen_func``, :func:`gla_chunked` for fla's ``chunk_gla``).
What the real kernels round differently (flash-attn's bf16 probabilities before ``P·V``,
its online softmax; chunk_gla's chunked intermediates; Triton's ``1/sqrt`` in the norm;
TorchScript's fusion of ``swiglu_fwd`` on GPU) is listed in docs/calibration.rst.

Only the prefill forward pass (no cache, no padding) is covered.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from spikecode.models.ops import gla_chunked, sliding_window_attention

GROUP = 128


def read_release_folder(folder: Path, dtype: torch.dtype) -> tuple[dict, dict]:
    """``config.json`` and every tensor of the folder, cast to ``dtype`` (buffers too)."""
    config = json.loads((folder / "config.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return config, {name: t.to(dtype) for name, t in tensors.items()}


# ----------------------------------------------------------------- quant_linear.py


def dynamic_spikes(x: torch.Tensor, k: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    vth = x.abs().mean([-1], keepdim=True).float() / k
    vth = vth.clamp(min=1e-5, max=1e4)
    return (x / vth).round(), vth


def quantizer(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    org_type = weight.dtype
    out_features, in_features = weight.shape
    w = weight.reshape(out_features, -1, GROUP)
    w = (w / scales).round() * scales
    return w.reshape(out_features, in_features).to(org_type)


def quant_linear(x: torch.Tensor, t: dict, name: str, k: float = 3.0) -> torch.Tensor:
    spikes_int, vth = dynamic_spikes(x, k)
    x = (spikes_int * vth).to(x.dtype)
    weight = quantizer(t[f"{name}.weight"], t[f"{name}.weight_quantizer.scales"])
    return F.linear(x, weight, t.get(f"{name}.bias"))


# ----------------------------------------------------------------- window_attention.py


def quantize_sym(x: torch.Tensor, bit: int = 8) -> torch.Tensor:
    q_max = (1 << (bit - 1)) - 1
    q_min = -(1 << (bit - 1))
    org_dtype = x.dtype
    scale = x.abs().amax([-1], keepdim=True).float() / (2 ** (bit - 1) - 1)
    scale = scale.clamp(min=1e-5, max=1e4)
    x_int = (x / scale).round().clamp(q_min, q_max)
    return (x_int * scale).to(org_dtype)


def rotary(x: torch.Tensor, position_ids: torch.Tensor, dim: int, base: float):
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def window_attention(h: torch.Tensor, t: dict, p: str, config: dict) -> torch.Tensor:
    bsz, q_len, hidden = h.shape
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    q = quant_linear(h, t, f"{p}.q_proj").view(bsz, q_len, heads, head_dim).transpose(1, 2)
    k = quant_linear(h, t, f"{p}.k_proj").view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
    v = quant_linear(h, t, f"{p}.v_proj").view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
    position_ids = torch.arange(q_len)[None]
    cos, sin = rotary(v, position_ids, head_dim, config["rope_theta"])
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q = (q * cos) + (rotate_half(q) * sin)
    k = (k * cos) + (rotate_half(k) * sin)
    # [b, h, L, d] -> the release's [b, L, h, d] for the coders (row-wise: same values)
    q_int, q_vth = dynamic_spikes(q.transpose(1, 2), 3.0)
    q = (q_int * q_vth).to(q.dtype).transpose(1, 2)
    k = quantize_sym(k.transpose(1, 2)).transpose(1, 2)
    v = quantize_sym(v.transpose(1, 2)).transpose(1, 2)
    # flash_attn_varlen_func stand-in: float32 softmax attention, output in the input dtype
    grouped = q.reshape(bsz, kv_heads, heads // kv_heads, q_len, head_dim)
    o = sliding_window_attention(
        grouped.float(),
        k.float(),
        v.float(),
        window=config["sliding_window"],
        scale=head_dim**-0.5,
    ).to(h.dtype)
    o = o.permute(0, 3, 1, 2, 4).reshape(bsz, q_len, heads * head_dim)
    return quant_linear(o, t, f"{p}.o_proj")


# ----------------------------------------------------------------- fla RMSNorm (fused)


def fla_rms_norm(x, weight, eps, residual=None):
    """fla's ``RMSNorm(x, residual, prenorm=True)``: sum and norm in float32, outputs rounded."""
    xf = x.float()
    if residual is not None:
        xf = xf + residual.float()
    rstd = torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    y = (xf * rstd * weight.float()).to(x.dtype)
    return y if residual is None else (y, xf.to(residual.dtype))


# ----------------------------------------------------------------- gla_attention.py


def gla_attention(h: torch.Tensor, t: dict, p: str, config: dict) -> torch.Tensor:
    bsz, q_len, hidden = h.shape
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    q = F.relu(quant_linear(h, t, f"{p}.q_proj"))
    k = F.relu(quant_linear(h, t, f"{p}.k_proj"))
    v = quant_linear(h, t, f"{p}.v_proj")
    gk = quant_linear(h, t, f"{p}.gk_proj")
    q = q.view(bsz, q_len, heads, head_dim).transpose(1, 2)
    k = k.view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
    v = v.view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
    gk = gk.view(bsz, q_len, kv_heads, head_dim).transpose(1, 2)
    gk = F.logsigmoid(gk) / 16
    # chunk_gla stand-in: float32 recursion (grouped heads read their shared k/v/gate),
    # output in the input dtype
    grouped = q.reshape(bsz, kv_heads, heads // kv_heads, q_len, head_dim)
    o, _ = gla_chunked(
        grouped.float(), k.float(), v.float(), gk.float(), scale=head_dim**-0.5, chunk_size=64
    )
    o = o.to(h.dtype).reshape(bsz, heads, q_len, head_dim)
    o = fla_rms_norm(o, t[f"{p}.g_norm.weight"], config["norm_eps"])
    o = o.transpose(1, 2).reshape(bsz, q_len, heads * head_dim)
    return quant_linear(o, t, f"{p}.o_proj")


# ----------------------------------------------------------------- modeling_gla_swa.py


def glu(h: torch.Tensor, t: dict, p: str) -> torch.Tensor:
    gate = quant_linear(h, t, f"{p}.gate_proj")
    y = quant_linear(h, t, f"{p}.up_proj")
    z = gate * y / (1.0 + torch.exp(-gate))  # swiglu_fwd, eager
    return F.linear(z, t[f"{p}.down_proj.weight"], None)


def block(h: torch.Tensor, t: dict, i: int, config: dict) -> torch.Tensor:
    p = f"model.layers.{i}"
    residual = h
    h = fla_rms_norm(h, t[f"{p}.attn_norm.weight"], config["norm_eps"])
    if i in config["attn_layers"]:
        h = window_attention(h, t, f"{p}.attn", config)
    else:
        h = gla_attention(h, t, f"{p}.attn", config)
    h, residual = fla_rms_norm(h, t[f"{p}.mlp_norm.weight"], config["norm_eps"], residual)
    h = glu(h, t, f"{p}.mlp")
    return residual + h


def forward(input_ids: torch.Tensor, t: dict, config: dict) -> torch.Tensor:
    """Logits ``[batch, seq, vocab]`` in the runtime dtype."""
    h = F.embedding(input_ids, t["model.embeddings.weight"])
    for i in range(config["num_hidden_layers"]):
        h = block(h, t, i, config)
    h = fla_rms_norm(h, t["model.norm.weight"], config["norm_eps"])
    return F.linear(h, t["lm_head.weight"])
