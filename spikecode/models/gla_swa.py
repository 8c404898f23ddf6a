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
the same choice the released kernels make for their accumulators. The ``release``
recipe sets ``release_numerics`` on the attention layers, blocks and MLPs: they then
round where the release's code rounds to the model's dtype (rotary embedding and the
window q/k/v coders in it, the GLA gate and kernel output in it before ``g_norm``, the
residual sum before ``mlp_norm`` normalised unrounded as fla's fused norm does, the
SwiGLU product as the release's ``swiglu_fwd``); docs/calibration.rst has the table.

Padding: ``attention_mask`` (``[batch, seq]``, 1 = token, 0 = padding) makes every
padding position invisible to every other position: softmax attention never attends to
it, and the gated-linear-attention state neither takes its key/value nor decays at it.
Rotary positions are ``position_ids`` when given (``[batch, seq]``); otherwise they are
derived from the mask, the cumulative sum minus one (as the release's ``generate()``
derives them), so a left-padded row gets the positions it has alone. Right- and
left-padded batches therefore give each real token the output it has unpadded (up to
float rounding), under both recipes too, where the window coders act after the rotary
embedding and so depend on absolute positions. (The release's plain forward without
``position_ids`` counts sequence indices: pass ``position_ids`` to reproduce that.)
Outputs *at* padding positions are finite but meaningless. A padding **hole** (a 0
between two 1s of a row) is refused with a :class:`~spikecode.errors.SpikecodeError`:
the release gives it no single meaning (its GLA layers zero only the hole's value, so
the state still decays there, while its window layers un-pad the row, so the window
then spans the hole). ``generate()`` moves right-padded rows to the left first.

Generation: :class:`GLASwaForCausalLM` is a transformers ``PreTrainedModel`` with
``GenerationMixin`` and the release's forward arguments (``labels``, ``inputs_embeds``,
``position_ids``, ``past_key_values``). It returns a ``CausalLMOutputWithPast``
(``.loss``, ``.logits``, ``.cache`` — also readable as ``.past_key_values``, the
release's name) holding a
:class:`~spikecode.models.cache.GLASwaCache` when ``use_cache=True``, and
``model.generate(...)`` works (greedy search and sampling are tested). Cached decoding
computes what a full forward pass computes (the cache keeps the window the prefill sees;
see :mod:`spikecode.models.cache` for the release's off-by-one).

Activation sites: every :class:`SlidingWindowAttention` holds three identity modules
``q_act``, ``k_act`` and ``v_act`` applied to the rotated queries, rotated keys and values
(``[batch, seq, heads, head_dim]``) right before the softmax attention; the ``release``
recipe (:mod:`spikecode.nn.recipes`) swaps them for the release's spike and INT8 coders,
and calibration hooks them like projection inputs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from spikecode.errors import SpikecodeError
from spikecode.models.cache import GLASwaCache
from spikecode.models.config import GATE_VARIANTS, GLA_MODES, GLASwaConfig, compute_dtype
from spikecode.models.inputs import (
    embed,
    full_mask,
    positions_from_mask,
    rotary_positions,
)
from spikecode.models.lm import CausalLMBase
from spikecode.models.ops import (
    apply_rotary,
    gla_chunked,
    gla_recurrent,
    rms_norm,
    sliding_window_attention,
)
from spikecode.models.sites import ActivationSite

__all__ = [
    "GATE_VARIANTS",
    "GLA_MODES",
    "ActivationSite",
    "GLASwaBlock",
    "GLASwaCache",
    "GLASwaConfig",
    "GLASwaForCausalLM",
    "GLASwaModel",
    "GLASwaPretrainedConfig",
    "GatedLinearAttention",
    "RMSNorm",
    "SlidingWindowAttention",
    "SwiGLU",
    "apply_rotary",
    "gla_chunked",
    "gla_recurrent",
    "positions_from_mask",
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
    """The MLP ``down_proj(silu(gate_proj(x)) · up_proj(x))``, no biases (SPEC §7).

    With :attr:`release_numerics` the product is the release's ``swiglu_fwd``,
    ``gate · up / (1 + exp(-gate))`` in the model's dtype, one rounding per operation.
    """

    #: Round where the release rounds (set by the ``release`` recipe).
    release_numerics = False

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., hidden] -> [..., hidden]``."""
        if self.release_numerics:
            gate = self.gate_proj(x)
            return self.down_proj(gate * self.up_proj(x) / (1.0 + torch.exp(-gate)))
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


def _gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None,
    mode: str,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLA over ``[batch, heads, seq, d]`` q and ``[batch, kv_heads, seq, d]`` k, v, g.

    The chunked form runs in ``"chunked"`` mode for more than one token; a single token
    (a decoding step) and ``"recurrent"`` mode take the recursion. Returns the output
    ``[batch, kv_heads, G, seq, d]`` and the final state.
    """
    if mode == "chunked" and q.shape[2] > 1:
        form, kwargs = gla_chunked, {"chunk_size": chunk_size}
    else:
        form, kwargs = gla_recurrent, {}
    return form(
        _group_queries(q, k.shape[1]),
        k,
        v,
        g,
        scale=q.shape[-1] ** -0.5,
        initial_state=state,
        **kwargs,
    )


class _QKVAttention(nn.Module):
    """What both attention kinds share: head counts and the q/k/v projections (SPEC §7)."""

    #: Round where the release rounds (set by the ``release`` recipe; module docstring).
    release_numerics = False

    def __init__(self, config: GLASwaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)


def _through(site: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Sites see [batch, seq, heads, d], the token-major layout the capture hooks mask.
    return site(x.transpose(1, 2)).transpose(1, 2)


class SlidingWindowAttention(_QKVAttention):
    """Sliding-window softmax attention with rotary embedding and GQA (SPEC §7).

    Parameters
    ----------
    config
        Sizes, ``sliding_window`` and ``rope_theta``.
    layer_idx
        Index of the layer (its slot in a :class:`GLASwaCache`).
    """

    def __init__(self, config: GLASwaConfig, layer_idx: int = 0) -> None:
        super().__init__(config, layer_idx)
        self.window = config.sliding_window
        self.rope_theta = config.rope_theta
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        for name in ("q_act", "k_act", "v_act"):
            setattr(self, name, ActivationSite(config.head_dim, config.sliding_window + 1))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``.

        ``mask`` is ``[batch, past + seq]`` bool (the cache's past first) or None; with
        a ``cache`` the new keys join the cached window. ``positions`` are the rotary
        positions of the new tokens, ``[seq]`` or ``[batch, seq]`` (default: ``past …
        past + seq - 1``).
        """
        dtype = x.dtype
        compute = compute_dtype(dtype)
        # The release rotates and codes q, k, v in the model's dtype; spikecode's own
        # numerics do it in the compute dtype (see the module docstring).
        run = dtype if self.release_numerics else compute
        past = 0 if cache is None else cache.seen_tokens
        if positions is None:
            positions = torch.arange(past, past + x.shape[1], device=x.device)
        q = _split_heads(self.q_proj(x), self.num_heads).to(run)
        k = _split_heads(self.k_proj(x), self.num_kv_heads).to(run)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(run)
        q = _through(self.q_act, apply_rotary(q, positions, self.rope_theta))
        k = apply_rotary(k, positions, self.rope_theta)
        if cache is not None:
            # The raw rotated keys are cached; the k/v sites act on every use, as the
            # release quantizes its cached keys each step (row-wise, so the same values).
            k, v = cache.window(self.layer_idx, k, v)
        o = sliding_window_attention(
            _group_queries(q, self.num_kv_heads).to(compute),
            _through(self.k_act, k).to(compute),
            _through(self.v_act, v).to(compute),
            window=self.window,
            scale=self.head_dim**-0.5,
            key_mask=None if mask is None else mask[:, -k.shape[2] :],
        )
        return self.o_proj(_merge_heads(o).to(dtype))


class GatedLinearAttention(_QKVAttention):
    """Gated linear attention with shared key/value/gate heads (SPEC §7).

    ``q, k = relu(q_proj x), relu(k_proj x)``; ``g = logsigmoid(gk_proj x) / 16``; per
    key/value head the recursion of :func:`gla_recurrent`; then ``g_norm`` per head,
    concatenation and ``o_proj``.

    Parameters
    ----------
    config
        Sizes, ``gate`` variant, ``gla_mode`` and ``gla_chunk_size``.
    layer_idx
        Index of the layer (its slot in a :class:`GLASwaCache`).
    """

    def __init__(self, config: GLASwaConfig, layer_idx: int = 0) -> None:
        super().__init__(config, layer_idx)
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

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``.

        ``mask`` is ``[batch, past + seq]`` bool or None; with a ``cache`` the recursion
        starts from the cached state and leaves its final state there. ``positions`` is
        accepted for a uniform layer call and unused (no rotary embedding here).
        """
        dtype = x.dtype
        compute = compute_dtype(dtype)
        # The release's q, k, v and gate are in the model's dtype (logsigmoid rounds to
        # it) and its kernel's output too, before g_norm; spikecode's own numerics keep
        # all of it in the compute dtype.
        run = dtype if self.release_numerics else compute
        q = _split_heads(F.relu(self.q_proj(x)), self.num_heads).to(run)
        k = _split_heads(F.relu(self.k_proj(x)), self.num_kv_heads).to(run)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(run)
        g = _split_heads(self.gk_proj(x), self.num_kv_heads).to(run)
        g = F.logsigmoid(g) / self.gate_logit_normalizer
        if mask is not None:
            # A padding position adds nothing to the state and does not decay it.
            keep = mask[:, None, -x.shape[1] :, None].to(run)
            k = k * keep
            v = v * keep
            g = g * keep
        state = None if cache is None else cache.recurrent_state(self.layer_idx)
        o, state = _gated_linear_attention(
            q.to(compute),
            k.to(compute),
            v.to(compute),
            g.to(compute),
            state,
            self.mode,
            self.chunk_size,
        )
        if cache is not None:
            cache.set_recurrent_state(self.layer_idx, state)
        o = rms_norm(o.to(run), self.g_norm.weight, self.g_norm.eps)
        return self.o_proj(_merge_heads(o).to(dtype))

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

    With :attr:`release_numerics` the residual sum before ``mlp_norm`` is formed as the
    release's fused norm forms it: in float32, kept rounded as the residual, normalised
    unrounded.
    """

    #: Round where the release rounds (set by the ``release`` recipe).
    release_numerics = False

    def __init__(self, config: GLASwaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attn: SlidingWindowAttention | GatedLinearAttention
        if layer_idx in config.attn_layers:
            self.attn = SlidingWindowAttention(config, layer_idx)
        else:
            self.attn = GatedLinearAttention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``; ``positions`` as the attention's."""
        a = self.attn(self.attn_norm(x), mask, cache, positions)
        if self.release_numerics:
            compute = compute_dtype(x.dtype)
            total = a.to(compute) + x.to(compute)
            normed = rms_norm(total, self.mlp_norm.weight, self.mlp_norm.eps).to(x.dtype)
            return total.to(x.dtype) + self.mlp(normed)
        h = x + a
        return h + self.mlp(self.mlp_norm(h))


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
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the final hidden states (after ``norm``).

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids (or give ``inputs_embeds``).
        attention_mask
            Optional 0/1 (1 = token, 0 = padding): ``[batch, seq]``, or with a cache
            ``[batch, past + seq]``. Padding holes are refused (see the module docstring).
        cache
            Optional :class:`GLASwaCache`; it is advanced by ``seq`` positions.
        position_ids
            Rotary positions of the new tokens, ``[batch, seq]``, ``[1, seq]`` or
            ``[seq]``. Default: from the mask (:func:`positions_from_mask`, so a
            left-padded row gets the positions it has alone), else ``past … past + seq - 1``.
        inputs_embeds
            ``[batch, seq, hidden]`` instead of ``input_ids`` (cast to the embeddings'
            dtype).

        Returns
        -------
        torch.Tensor
            ``[batch, seq, hidden_size]`` in the parameter dtype.
        """
        x = embed(self.embeddings, input_ids, inputs_embeds)
        batch, seq = x.shape[:2]
        past = 0 if cache is None else cache.seen_tokens
        mask = full_mask(batch, seq, x.device, attention_mask, cache)
        positions = rotary_positions(position_ids, mask, batch, seq, past, x.device)
        for layer in self.layers:
            x = layer(x, mask, cache, positions)
        if cache is not None:
            cache.seen_tokens += seq
            cache.sequences = batch
            cache.mask = mask
        return self.norm(x)


class GLASwaPretrainedConfig(PreTrainedConfig):
    """The transformers view of a :class:`GLASwaConfig` (``model.config``).

    Every field of :class:`GLASwaConfig` is an attribute of the same name (plus
    ``head_dim`` and ``kv_dim``), so ``model.config.sliding_window`` reads as before;
    the typed, validated original is ``model.gla_config``. ``use_cache`` (True, as in the
    release's ``config.json``) is what ``generate()`` uses by default.
    ``GLASwaPretrainedConfig.from_pretrained(folder)`` reads a release ``config.json``
    (its ``auto_map`` is kept as data, never run); the release's name for this class,
    ``GLAswaConfig``, is an alias.
    """

    model_type = "gla_swa"

    def __init__(self, use_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # transformers 5 no longer keeps use_cache on every config; the release sets it.
        self.use_cache = use_cache


def _pretrained_config(config: GLASwaConfig) -> GLASwaPretrainedConfig:
    fields = dataclasses.asdict(config)
    fields["attn_layers"] = list(config.attn_layers)
    stored = fields.pop("torch_dtype")
    return GLASwaPretrainedConfig(
        **fields,
        dtype=stored,
        head_dim=config.head_dim,
        kv_dim=config.kv_dim,
        architectures=["GLAswaForCausalLM"],
        use_cache=True,
        model_type="gla_swa",
    )


def _gla_config(config: GLASwaPretrainedConfig) -> GLASwaConfig:
    """The typed architecture of a transformers view (a release ``config.json`` read by it)."""
    raw = config.to_dict()
    raw["model_type"] = "gla_swa"
    if isinstance(raw.get("dtype"), str) and "torch_dtype" not in raw:
        raw["torch_dtype"] = raw["dtype"]
    extra = {k: raw[k] for k in ("gate", "gla_mode", "gla_chunk_size") if k in raw}
    return GLASwaConfig.from_dict(raw, source="the config", **extra)


#: The checked loader behind ``from_pretrained``; :mod:`spikecode.models.checkpoint`
#: (which imports this module) registers its ``load_checkpoint`` here.
_CHECKPOINT_LOADER: list[Any] = []


class GLASwaForCausalLM(CausalLMBase):
    """The SpikingBrain-7B language model in plain PyTorch (SPEC §7), a transformers model.

    Parameters
    ----------
    config
        The architecture (:class:`GLASwaConfig`). Parameters start with PyTorch's default
        initialisation; load a checkpoint with
        :func:`spikecode.models.checkpoint.load_checkpoint`.

    Attributes
    ----------
    gla_config : GLASwaConfig
        The architecture; ``config`` is its transformers view
        (:class:`GLASwaPretrainedConfig`).

    Examples
    --------
    >>> cfg = GLASwaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    ...     sliding_window=4, rope_theta=1e4, attn_layers=(1,))
    >>> model = GLASwaForCausalLM(cfg).eval()
    >>> model(torch.tensor([[1, 2, 3]])).logits.shape
    torch.Size([1, 3, 32])
    >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False).shape
    torch.Size([1, 5])
    """

    config_class = GLASwaPretrainedConfig
    architecture_attr = "gla_config"
    cache_class = GLASwaCache
    _no_split_modules: ClassVar[list[str]] = ["GLASwaBlock"]

    def __init__(self, config: GLASwaConfig | GLASwaPretrainedConfig) -> None:
        if isinstance(config, GLASwaPretrainedConfig):
            config = _gla_config(config)
        if not isinstance(config, GLASwaConfig):
            raise SpikecodeError(
                "GLASwaForCausalLM takes a GLASwaConfig or a GLASwaPretrainedConfig, not "
                f"{type(config).__name__}"
            )
        super().__init__(_pretrained_config(config))
        self.gla_config = config
        self.model = GLASwaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embeddings.weight
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: GLASwaCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        cache: GLASwaCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """Next-token logits, the loss with ``labels``, and the cache when one is used.

        The arguments are the release's (``GLAswaForCausalLM.forward``), in its order.

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids (only the new ones when a cache is given).
        attention_mask
            Optional 0/1: ``[batch, seq]``, or ``[batch, past + seq]`` with a cache.
        inputs_embeds
            ``[batch, seq, hidden]`` instead of ``input_ids``.
        position_ids
            Rotary positions of the new tokens (``[batch, seq]``); default from the
            mask (cumulative sum, as the release's ``generate()``), else counted from the
            cache's past. See :meth:`GLASwaModel.forward`.
        past_key_values, cache
            A :class:`GLASwaCache` to continue from (either name: ``past_key_values`` is
            the release's, ``cache`` transformers 5's). Advanced in place.
        labels
            ``[batch, seq]`` token ids: the causal-LM loss (logits at ``t`` predict
            ``labels[t + 1]``; ``-100`` is ignored), the mean cross entropy in float32.
        use_cache
            Return a cache (a new one when none was given). None means no new cache
            (``generate()`` passes ``config.use_cache`` itself).
        return_dict
            False for the tuple ``(loss, logits, cache)`` without the entries that are None.
        **kwargs
            ``cache_position`` (unused: positions come from ``position_ids``, the mask
            or the cache) and the ``output_*`` flags transformers passes (only False or
            None accepted).

        Returns
        -------
        CausalLMOutputWithPast
            ``logits`` ``[batch, seq, vocab_size]`` in the parameter dtype; ``loss``;
            ``cache`` (also readable as ``past_key_values``).
        """
        return self._lm_forward(
            input_ids,
            attention_mask,
            inputs_embeds,
            position_ids,
            past_key_values,
            labels,
            use_cache,
            return_dict,
            cache,
            kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> GLASwaForCausalLM:
        """Load a local release folder through :func:`~spikecode.models.checkpoint.load_checkpoint`.

        The folder's code never runs (its ``auto_map`` is ignored; ``trust_remote_code``
        is accepted and changes nothing). A W8ASpike folder (``weight_quantizer.scales``
        in its weights) gives the W8ASpike model the release runs: the ``release`` recipe
        with the folder's scales (``load_checkpoint(folder, recipe="release")``).

        Parameters
        ----------
        pretrained_model_name_or_path
            A local folder; nothing is downloaded.
        **kwargs
            ``dtype`` / ``torch_dtype`` (``"auto"``, a dtype or its name; default the
            stored dtype), ``device_map``, ``trust_remote_code``, ``low_cpu_mem_usage``
            (accepted, always true). Anything else is refused with a pointer to
            ``load_checkpoint``.
        """
        if args:
            raise SpikecodeError(
                "from_pretrained takes the folder and keyword arguments only; for more, call "
                "spikecode.models.load_checkpoint(folder, ...)"
            )
        dtype = kwargs.pop("dtype", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        if dtype is not None and torch_dtype is not None:
            raise SpikecodeError("give dtype or torch_dtype, not both")
        dtype = dtype if dtype is not None else torch_dtype
        device_map = kwargs.pop("device_map", None)
        for accepted in ("trust_remote_code", "low_cpu_mem_usage", "local_files_only"):
            kwargs.pop(accepted, None)
        if kwargs:
            raise SpikecodeError(
                f"from_pretrained does not take {', '.join(sorted(kwargs))}; call "
                "spikecode.models.load_checkpoint(folder, ...) for the checked loader's options"
            )
        loader = _CHECKPOINT_LOADER[0]
        folder = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            raise SpikecodeError(
                "from_pretrained reads a local checkpoint folder and downloads nothing; "
                "download the release (for example with huggingface-cli or modelscope) "
                "and pass its folder",
                path=folder,
            )
        options: dict[str, Any] = {"dtype": None if dtype == "auto" else dtype}
        if isinstance(device_map, str) and device_map != "auto":
            options["device"] = device_map
        elif device_map is not None:
            options["device_map"] = device_map
        loaded = loader(folder, **options)
        if not isinstance(loaded.model, cls):
            raise SpikecodeError(
                f"{folder} is not a GLA-SWA checkpoint (model_type gla_swa); load it with "
                "spikecode.models.load_checkpoint",
                path=folder,
            )
        return loaded.model

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
        self.gla_config = dataclasses.replace(self.gla_config, **changes)
        self.config.gla_mode = self.gla_config.gla_mode
        self.config.gla_chunk_size = self.gla_config.gla_chunk_size
        for module in self.modules():
            if isinstance(module, GatedLinearAttention):
                module.mode = self.gla_config.gla_mode
                module.chunk_size = self.gla_config.gla_chunk_size


#: The release's class names (``modeling_gla_swa.GLAswaForCausalLM``,
#: ``configuration_gla_swa.GLAswaConfig``), so that its scripts resolve them here.
GLAswaForCausalLM = GLASwaForCausalLM
GLAswaConfig = GLASwaPretrainedConfig
