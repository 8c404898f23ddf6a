"""A plain-PyTorch SpikingBrain-7B (GLA-SWA hybrid) that runs on any device.

The released modeling code needs GPU-only kernels (flash-linear-attention, flash-attn).
This module implements the same network from the equations of SPEC §7 with ordinary
PyTorch operations, so that it runs on CPU or CUDA in any float dtype and so that every
projection is a plain :class:`torch.nn.Linear` (forward hooks on linear inputs see the
activations SPEC §1 spike-codes, and the projections can be swapped for spiking ones).

Layout (parameter names equal the released checkpoint's, SPEC §7)::

    GLASwaForCausalLM
      model: GLASwaModel
        embeddings: Embedding(vocab_size, hidden_size)
        layers[i]: GLASwaBlock
          attn_norm, mlp_norm: RMSNorm(hidden_size)
          attn: SlidingWindowAttention   (i in attn_layers)
                GatedLinearAttention     (otherwise)
          mlp: SwiGLU(gate_proj, up_proj, down_proj)
        norm: RMSNorm(hidden_size)
      lm_head: Linear(hidden_size, vocab_size, bias=False)

The pure functions :func:`rms_norm`, :func:`apply_rotary`, :func:`sliding_window_attention`,
:func:`gla_recurrent` and :func:`gla_chunked` hold the mathematics; the modules only
project, reshape and call them.

Numerics: projections run in the parameter dtype. Normalisation, rotary embedding,
softmax attention and the gated-linear-attention recursion run in the compute dtype of
the package (float64 for float64 models, float32 otherwise, bfloat16/float16 upcast),
the same choice the released kernels make for their accumulators.

Padding: ``attention_mask`` (``[batch, seq]``, 1 = token, 0 = padding) makes every
padding position invisible to every other position: softmax attention never attends to
it, and the gated-linear-attention state neither takes its key/value nor decays at it.
Right- and left-padded batches therefore give each real token the output it has
unpadded (up to float rounding). Outputs *at* padding positions are finite but
meaningless. Rotary positions and windows count sequence indices, as in the release;
rotary attention depends only on position differences, so left padding changes nothing.
A masked position *inside* a sequence is removed exactly from gated linear attention, but
softmax layers still count it in positions and windows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.models.config import GATE_VARIANTS, GLA_MODES, GLASwaConfig, compute_dtype
from spikecode.models.ops import (
    apply_rotary,
    gla_chunked,
    gla_recurrent,
    rms_norm,
    sliding_window_attention,
)

__all__ = [
    "GATE_VARIANTS",
    "GLA_MODES",
    "GLASwaBlock",
    "GLASwaConfig",
    "GLASwaForCausalLM",
    "GLASwaModel",
    "GatedLinearAttention",
    "RMSNorm",
    "SlidingWindowAttention",
    "SwiGLU",
    "apply_rotary",
    "gla_chunked",
    "gla_recurrent",
    "rms_norm",
    "sliding_window_attention",
]


class RMSNorm(nn.Module):
    """RMSNorm with a ``weight`` parameter; see :func:`rms_norm`.

    Parameters
    ----------
    size
        Width of the normalised last axis.
    eps
        Added to the mean square.
    """

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last axis of ``x``."""
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SwiGLU(nn.Module):
    """The MLP ``down_proj(silu(gate_proj(x)) · up_proj(x))``, no biases (SPEC §7)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., hidden] -> [..., hidden]``."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # [batch, seq, heads * d] -> [batch, heads, seq, d]
    batch, seq, _ = x.shape
    return x.view(batch, seq, heads, -1).transpose(1, 2)


def _group_queries(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    # Query head h reads key/value head h // G (the release's repeat_kv order).
    batch, heads, seq, d = q.shape
    return q.reshape(batch, kv_heads, heads // kv_heads, seq, d)


def _merge_heads(o: torch.Tensor) -> torch.Tensor:
    # [batch, kv_heads, G, seq, d] -> [batch, seq, kv_heads * G * d]
    batch, kv_heads, groups, seq, d = o.shape
    return o.permute(0, 3, 1, 2, 4).reshape(batch, seq, kv_heads * groups * d)


class _QKVAttention(nn.Module):
    """What both attention kinds share: head counts and the q/k/v projections (SPEC §7)."""

    def __init__(self, config: GLASwaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)


class SlidingWindowAttention(_QKVAttention):
    """Sliding-window softmax attention with rotary embedding and GQA (SPEC §7).

    Parameters
    ----------
    config
        Sizes, ``sliding_window`` and ``rope_theta``.
    """

    def __init__(self, config: GLASwaConfig) -> None:
        super().__init__(config)
        self.window = config.sliding_window
        self.rope_theta = config.rope_theta
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``; ``mask`` ``[batch, seq]`` bool."""
        compute = compute_dtype(x.dtype)
        q = _split_heads(self.q_proj(x), self.num_heads).to(compute)
        k = _split_heads(self.k_proj(x), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        positions = torch.arange(x.shape[1], device=x.device)
        q = apply_rotary(q, positions, self.rope_theta)
        k = apply_rotary(k, positions, self.rope_theta)
        o = sliding_window_attention(
            _group_queries(q, self.num_kv_heads),
            k,
            v,
            window=self.window,
            scale=self.head_dim**-0.5,
            key_mask=mask,
        )
        return self.o_proj(_merge_heads(o).to(x.dtype))


class GatedLinearAttention(_QKVAttention):
    """Gated linear attention with shared key/value/gate heads (SPEC §7).

    ``q, k = relu(q_proj x), relu(k_proj x)``; ``g = logsigmoid(gk_proj x) / 16``; per
    key/value head the recursion of :func:`gla_recurrent`; then ``g_norm`` per head,
    concatenation and ``o_proj``.

    Parameters
    ----------
    config
        Sizes, ``gate`` variant, ``gla_mode`` and ``gla_chunk_size``.
    """

    def __init__(self, config: GLASwaConfig) -> None:
        super().__init__(config)
        self.gate_logit_normalizer = config.gate_logit_normalizer
        self.mode = config.gla_mode
        self.chunk_size = config.gla_chunk_size
        if config.gate == "lowrank":
            self.gk_proj: nn.Module = nn.Sequential(
                nn.Linear(config.hidden_size, config.gate_low_rank_dim, bias=False),
                nn.Linear(config.gate_low_rank_dim, config.kv_dim, bias=True),
            )
        else:
            self.gk_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)
        self.g_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``; ``mask`` ``[batch, seq]`` bool."""
        compute = compute_dtype(x.dtype)
        q = _split_heads(F.relu(self.q_proj(x)), self.num_heads).to(compute)
        k = _split_heads(F.relu(self.k_proj(x)), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        g = _split_heads(self.gk_proj(x), self.num_kv_heads).to(compute)
        g = F.logsigmoid(g) / self.gate_logit_normalizer
        if mask is not None:
            # A padding position adds nothing to the state and does not decay it.
            keep = mask[:, None, :, None]
            k = k * keep
            v = v * keep
            g = g * keep
        forms = {"chunked": gla_chunked, "recurrent": gla_recurrent}
        kwargs = {"chunk_size": self.chunk_size} if self.mode == "chunked" else {}
        o, _ = forms[self.mode](
            _group_queries(q, self.num_kv_heads), k, v, g, scale=self.head_dim**-0.5, **kwargs
        )
        o = rms_norm(o, self.g_norm.weight, self.g_norm.eps)
        return self.o_proj(_merge_heads(o).to(x.dtype))

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return f"mode={self.mode!r}, chunk_size={self.chunk_size}"


class GLASwaBlock(nn.Module):
    """One layer: ``h = x + attn(attn_norm(x))``, ``out = h + mlp(mlp_norm(h))`` (SPEC §7).

    Parameters
    ----------
    config
        The architecture.
    layer_idx
        Index of the layer; ``attn`` is a :class:`SlidingWindowAttention` when it is in
        ``config.attn_layers``, else a :class:`GatedLinearAttention`.
    """

    def __init__(self, config: GLASwaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attn: SlidingWindowAttention | GatedLinearAttention
        if layer_idx in config.attn_layers:
            self.attn = SlidingWindowAttention(config)
        else:
            self.attn = GatedLinearAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``."""
        h = x + self.attn(self.attn_norm(x), mask)
        return h + self.mlp(self.mlp_norm(h))


def _check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int
) -> torch.Tensor | None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise SpikecodeError(
            "input_ids must be a 2-D tensor [batch, seq]",
            shape=tuple(getattr(input_ids, "shape", ())),
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.numel() == 0:
        raise SpikecodeError(
            "input_ids must be a non-empty integer tensor",
            dtype=input_ids.dtype,
            shape=tuple(input_ids.shape),
        )
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise SpikecodeError(
            f"input_ids outside [0, {vocab_size}): min {low}, max {high}",
            vocab_size=vocab_size,
        )
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise SpikecodeError(
            "attention_mask must be a tensor of the shape of input_ids",
            shape=tuple(getattr(attention_mask, "shape", ())),
            expected=tuple(input_ids.shape),
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise SpikecodeError("attention_mask must hold only 0 and 1")
    return attention_mask.to(device=input_ids.device, dtype=torch.bool)


class GLASwaModel(nn.Module):
    """Embeddings, the layers and the final norm; returns the final hidden states.

    Parameters
    ----------
    config
        The architecture.
    """

    def __init__(self, config: GLASwaConfig) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GLASwaBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the final hidden states (after ``norm``).

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids.
        attention_mask
            Optional ``[batch, seq]`` of 0/1 (1 = token, 0 = padding).

        Returns
        -------
        torch.Tensor
            ``[batch, seq, hidden_size]`` in the parameter dtype.
        """
        mask = _check_inputs(input_ids, attention_mask, self.vocab_size)
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class GLASwaForCausalLM(nn.Module):
    """The SpikingBrain-7B language model in plain PyTorch (SPEC §7).

    Parameters
    ----------
    config
        The architecture. Parameters start with PyTorch's default initialisation; load a
        checkpoint with :func:`spikecode.models.checkpoint.load_checkpoint`.

    Examples
    --------
    >>> cfg = GLASwaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    ...     sliding_window=4, rope_theta=1e4, attn_layers=(1,))
    >>> model = GLASwaForCausalLM(cfg)
    >>> model(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 32])
    >>> sorted(model.state_dict())[:2]
    ['lm_head.weight', 'model.embeddings.weight']
    """

    def __init__(self, config: GLASwaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = GLASwaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embeddings.weight

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits ``[batch, seq, vocab_size]`` in the parameter dtype.

        ``attention_mask`` is an optional ``[batch, seq]`` 0/1 tensor (0 = padding).
        """
        return self.lm_head(self.model(input_ids, attention_mask))

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the final hidden states ``[batch, seq, hidden]`` (``lm_head``'s input)."""
        return self.model(input_ids, attention_mask)

    def set_gla_mode(self, mode: str, chunk_size: int | None = None) -> None:
        """Switch every gated-linear-attention layer to ``"chunked"`` or ``"recurrent"``.

        Parameters
        ----------
        mode
            One of :data:`GLA_MODES`.
        chunk_size
            New chunk length of the chunked form; unchanged when None.
        """
        changes: dict[str, Any] = {"gla_mode": mode}
        if chunk_size is not None:
            changes["gla_chunk_size"] = chunk_size
        self.config = dataclasses.replace(self.config, **changes)
        for module in self.modules():
            if isinstance(module, GatedLinearAttention):
                module.mode = self.config.gla_mode
                module.chunk_size = self.config.gla_chunk_size
