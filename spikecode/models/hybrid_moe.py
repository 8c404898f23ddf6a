"""A plain-PyTorch hybrid-linear MoE model: the SpikingBrain-76B-A12B architecture (SPEC §8).

No code or weights of the 76B model were released; this module implements the
architecture the report describes (arXiv 2509.05276, section 2), with every choice the
report leaves open fixed and documented in SPEC §8. Every projection is an ordinary
:class:`torch.nn.Linear`, so capture hooks, calibration and ``swap_linears`` see it like
the 7B model.

Layout (parameter names of the Hugging Face-style layout spikecode writes)::

    SpikingBrainMoEForCausalLM
      model: SpikingBrainMoEModel
        embeddings: Embedding(vocab_size, hidden_size)
        sink_tokens: Parameter[num_sink_tokens, hidden_size]
        layers[i]: MoEBlock
          attn_norm, mlp_norm: RMSNorm(hidden_size)
          attn: HybridAttention       (hybrid layers)
                  linear: q_proj, k_proj, v_proj   tied-gate linear attention
                  window: q_proj, k_proj, v_proj   sliding-window softmax (+ q/k/v_act sites)
                  linear_norm, window_norm: RMSNorm(head_dim)
                  o_proj
                FullAttention         (full_attention_layers): q/k/v/o_proj, q/k/v_act
          mlp:  SwiGLU                (dense layers)
                MoEFeedForward        (moe_layers): router, experts[e], shared_experts[s]
        norm: RMSNorm(hidden_size)
      lm_head: Linear(hidden_size, vocab_size, bias=False)

Sink tokens: their hidden states depend on no input (they attend only to each other), so
the model computes them once per cache, batch 1, in a pass that capture hooks do not
count (:func:`spikecode.models.capture.uncounted`), and every later token reads their keys
and values (softmax layers) and the linear state they leave (linear branches).

Routing: a token's FFN output in a MoE layer is ``Σ_shared E_s(x) + Σ_top-k p_e E_e(x)``
with ``p = softmax(router(x))`` in the compute dtype (float32, float64 for float64
models) and no renormalisation of the top-k
probabilities (SPEC §8). Each expert runs only on the tokens routed to it, and its
projections carry ``routed_tokens`` (the flat ``batch·seq`` indices of their input rows)
so that capture hooks keep padding out of per-expert statistics. The last routing of every
MoE layer is kept in :attr:`MoEFeedForward.last_routing`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from spikecode.errors import SpikecodeError
from spikecode.models.capture import uncounted
from spikecode.models.config import compute_dtype
from spikecode.models.gla_swa import (
    RMSNorm,
    SwiGLU,
    _gated_linear_attention,
    _group_queries,
    _merge_heads,
    _split_heads,
    _through,
)
from spikecode.models.inputs import embed, full_mask, rotary_positions
from spikecode.models.lm import CausalLMBase
from spikecode.models.moe import ExpertLinears
from spikecode.models.moe_cache import HybridMoECache
from spikecode.models.moe_config import HybridMoEConfig
from spikecode.models.ops import apply_rotary, rms_norm
from spikecode.models.sites import ActivationSite

__all__ = [
    "FullAttention",
    "HybridAttention",
    "HybridMoECache",
    "HybridMoEConfig",
    "MoEBlock",
    "MoEFeedForward",
    "SpikingBrainMoEForCausalLM",
    "SpikingBrainMoEModel",
    "sink_attention",
]


def sink_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    sink_k: torch.Tensor | None,
    sink_v: torch.Tensor | None,
    window: int | None,
    scale: float,
    key_mask: torch.Tensor | None = None,
    block_size: int = 256,
) -> torch.Tensor:
    """Causal softmax attention over tokens plus always-visible sink keys (SPEC §8).

    Query ``i`` (token key index ``k_len − q_len + i``) sees every sink key and the token
    keys ``j ≤ i`` (``j ≥ i − window`` when ``window`` is set) that ``key_mask`` allows;
    its own key is always visible.

    Parameters
    ----------
    q
        ``[batch, kv_heads, G, q_len, d]``.
    k, v
        ``[batch, kv_heads, k_len, d]`` token keys and values, ``k_len ≥ q_len``.
    sink_k, sink_v
        ``[batch, kv_heads, S, d]`` or None (no sinks).
    window
        Sliding window, or None for full causal attention.
    scale
        Logit scale.
    key_mask
        ``[batch, k_len]`` bool, False for padding keys.
    block_size
        Queries per block (memory grows with ``block_size · keys``).

    Returns
    -------
    torch.Tensor
        ``[batch, kv_heads, G, q_len, d]``.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    shift = k_len - q_len
    out = torch.empty_like(q)
    positions = torch.arange(k_len, device=q.device)
    for start in range(0, q_len, block_size):
        stop = min(start + block_size, q_len)
        first = 0 if window is None else max(0, shift + start - window)
        qpos = positions[shift + start : shift + stop, None]
        kpos = positions[None, first : shift + stop]
        allowed = kpos <= qpos
        if window is not None:
            allowed = allowed & (kpos >= qpos - window)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, None, first : shift + stop]
            allowed = allowed | (kpos == qpos)
        qb = q[..., start:stop, :]
        scores = torch.einsum("bhgqd,bhkd->bhgqk", qb, k[:, :, first : shift + stop])
        scores = (scores * scale).masked_fill(~allowed, float("-inf"))
        values = v[:, :, first : shift + stop]
        if sink_k is not None:
            sink_scores = torch.einsum("bhgqd,bhkd->bhgqk", qb, sink_k) * scale
            scores = torch.cat([sink_scores, scores], dim=-1)
            values = torch.cat([sink_v, values], dim=2)
        probs = torch.softmax(scores, dim=-1)
        out[..., start:stop, :] = torch.einsum("bhgqk,bhkd->bhgqd", probs, values)
    return out


def _sinks_only(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    # Sinks attend to each other without a causal mask (SPEC §8).
    scores = torch.einsum("bhgqd,bhkd->bhgqk", q, k) * scale
    return torch.einsum("bhgqk,bhkd->bhgqd", torch.softmax(scores, dim=-1), v)


@dataclasses.dataclass
class _Step:
    """What every layer needs for one forward call."""

    cache: HybridMoECache
    mask: torch.Tensor | None  # [batch, past + seq] bool, or None (no padding anywhere)
    positions: torch.Tensor  # [batch, seq] rotary positions (sinks first)
    sink_pass: bool


class _Projections(nn.Module):
    """q/k/v projections of one attention branch (biases as in the 7B model, SPEC §8)."""

    def __init__(self, config: HybridMoEConfig) -> None:
        super().__init__()
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.kv_dim, bias=True)


class _SoftmaxBranch(_Projections):
    """Rotary softmax attention with sinks: a hybrid layer's window branch, or full attention."""

    def __init__(self, config: HybridMoEConfig, layer_idx: int, window: int | None) -> None:
        super().__init__(config)
        self.layer_idx = layer_idx
        self.window = window
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta
        fan_out = config.num_sink_tokens + (window + 1 if window is not None else 1)
        for name in ("q_act", "k_act", "v_act"):
            setattr(self, name, ActivationSite(config.head_dim, fan_out))

    def attend(self, x: torch.Tensor, step: _Step) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, kv_heads, G, seq, head_dim]`` (compute dtype)."""
        compute = compute_dtype(x.dtype)
        q = _split_heads(self.q_proj(x), self.num_heads).to(compute)
        k = _split_heads(self.k_proj(x), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        q = _through(self.q_act, apply_rotary(q, step.positions, self.rope_theta))
        k = apply_rotary(k, step.positions, self.rope_theta)
        cache = step.cache
        if step.sink_pass:
            cache.sink_kv[self.layer_idx] = (k, v)
            k, v = _through(self.k_act, k), _through(self.v_act, v)
            return _sinks_only(_group_queries(q, self.num_kv_heads), k, v, self.head_dim**-0.5)
        keep = None if self.window is None else self.window
        k, v = cache.tokens(self.layer_idx, k, v, keep)
        sinks = cache.sink_kv.get(self.layer_idx)
        return sink_attention(
            _group_queries(q, self.num_kv_heads),
            _through(self.k_act, k),
            _through(self.v_act, v),
            sink_k=None if sinks is None else _through(self.k_act, sinks[0]),
            sink_v=None if sinks is None else _through(self.v_act, sinks[1]),
            window=self.window,
            scale=self.head_dim**-0.5,
            key_mask=None if step.mask is None else step.mask[:, -k.shape[2] :],
        )


class _TiedGateLinear(_Projections):
    """Gated linear attention whose gate is tied to the key, ``g_t = 1 − k_t`` (SPEC §8).

    ``q = relu(q_proj x)``, ``k = sigmoid(k_proj x)``, ``S_t = diag(1 − k_t) S_{t−1} +
    k_tᵀ v_t``: the log decay is ``logsigmoid(−k_proj x)``, exact for any logit.
    """

    def __init__(self, config: HybridMoEConfig, layer_idx: int) -> None:
        super().__init__(config)
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.mode = config.gla_mode
        self.chunk_size = config.gla_chunk_size

    def attend(self, x: torch.Tensor, step: _Step) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, kv_heads, G, seq, head_dim]`` (compute dtype)."""
        compute = compute_dtype(x.dtype)
        q = _split_heads(F.relu(self.q_proj(x)), self.num_heads).to(compute)
        logits = _split_heads(self.k_proj(x), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        k, g = torch.sigmoid(logits), F.logsigmoid(-logits)
        if step.mask is not None and not step.sink_pass:
            keep = step.mask[:, None, -x.shape[1] :, None]
            k, v, g = k * keep, v * keep, g * keep
        state = step.cache.linear_state.get(self.layer_idx)
        o, state = _gated_linear_attention(q, k, v, g, state, self.mode, self.chunk_size)
        step.cache.linear_state[self.layer_idx] = state
        return o


class HybridAttention(nn.Module):
    """Linear attention and sliding-window attention in parallel, 1:1 (SPEC §8).

    ``o_proj(merge(RMSNorm_lin(o_lin) + RMSNorm_win(o_win)))``: each branch's per-head
    output is normalised by its own RMSNorm before the two are summed.

    Parameters
    ----------
    config
        The architecture.
    layer_idx
        Index of the layer.
    """

    def __init__(self, config: HybridMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.linear = _TiedGateLinear(config, layer_idx)
        self.window = _SoftmaxBranch(config, layer_idx, config.sliding_window)
        self.linear_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.window_norm = RMSNorm(config.head_dim, config.norm_eps)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, step: _Step) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``."""
        lin = rms_norm(self.linear.attend(x, step), self.linear_norm.weight, self.linear_norm.eps)
        win = rms_norm(self.window.attend(x, step), self.window_norm.weight, self.window_norm.eps)
        return self.o_proj(_merge_heads(lin + win).to(x.dtype))


class FullAttention(_SoftmaxBranch):
    """Causal softmax attention over every earlier token and the sinks (SPEC §8)."""

    def __init__(self, config: HybridMoEConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx, None)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, step: _Step) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``."""
        return self.o_proj(_merge_heads(self.attend(x, step)).to(x.dtype))


class MoEFeedForward(nn.Module):
    """Top-k routed SwiGLU experts plus always-on shared experts (SPEC §8).

    Parameters
    ----------
    config
        ``num_experts``, ``num_experts_per_tok``, ``num_shared_experts`` and the widths.

    Notes
    -----
    ``experts`` is an :class:`~spikecode.models.ExpertLinears`: each expert runs on
    its tokens only, the weighted outputs are summed in the parameter dtype (as
    transformers' MoE models do), the shared experts' in the compute dtype.
    """

    def __init__(self, config: HybridMoEConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = ExpertLinears(
            SwiGLU(config.hidden_size, config.moe_intermediate_size)
            for _ in range(config.num_experts)
        )
        self.shared_experts = nn.ModuleList(
            SwiGLU(config.hidden_size, config.shared_expert_intermediate_size)
            for _ in range(config.num_shared_experts)
        )

    @property
    def last_routing(self) -> torch.Tensor | None:
        """``[batch·seq, top_k]`` expert indices of the last call (row-major tokens)."""
        return self.experts.last_routing

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., hidden]`` → ``(weights, experts)``, both ``[n, top_k]`` (SPEC §8).

        ``n`` counts the leading positions in row-major order. Top-1 ties go to the lower
        expert index; larger ``top_k`` follow :func:`torch.topk`.
        """
        logits = self.router(x)
        probs = torch.softmax(logits.reshape(-1, logits.shape[-1]).to(compute_dtype(x.dtype)), -1)
        if self.top_k == 1:
            return probs.max(dim=-1, keepdim=True)
        weights, experts = torch.topk(probs, self.top_k, dim=-1, sorted=True)
        return weights, experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., hidden] -> [..., hidden]``."""
        # The router and the shared experts see x in its own shape, so capture hooks can
        # mask padding; routed experts see their tokens' rows (``routed_tokens``).
        weights, chosen = self.route(x)
        compute = compute_dtype(x.dtype)
        out = torch.zeros(x.shape, dtype=compute, device=x.device)
        for shared in self.shared_experts:
            out += shared(x).to(compute)
        rows = x.reshape(-1, x.shape[-1])
        routed = self.experts(rows, chosen, weights.to(x.dtype))
        return (out + routed.reshape(x.shape).to(compute)).to(x.dtype)


class MoEBlock(nn.Module):
    """One layer: ``h = x + attn(attn_norm(x))``, ``out = h + mlp(mlp_norm(h))``.

    Parameters
    ----------
    config
        The architecture.
    layer_idx
        Index of the layer: its attention kind and FFN kind follow the config.
    """

    def __init__(self, config: HybridMoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attn: HybridAttention | FullAttention = (
            FullAttention(config, layer_idx)
            if config.layer_kind(layer_idx) == "full"
            else HybridAttention(config, layer_idx)
        )
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp: SwiGLU | MoEFeedForward = (
            MoEFeedForward(config)
            if layer_idx in config.moe_layers
            else SwiGLU(config.hidden_size, config.intermediate_size)
        )

    def forward(self, x: torch.Tensor, step: _Step) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``."""
        h = x + self.attn(self.attn_norm(x), step)
        return h + self.mlp(self.mlp_norm(h))


class SpikingBrainMoEModel(nn.Module):
    """Embeddings, sink tokens, the layers and the final norm.

    Parameters
    ----------
    config
        The architecture.
    """

    def __init__(self, config: HybridMoEConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.sink_tokens = nn.Parameter(torch.zeros(config.num_sink_tokens, config.hidden_size))
        self.layers = nn.ModuleList(MoEBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)

    def _run_sinks(self, cache: HybridMoECache, batch: int) -> None:
        sinks = self.config.num_sink_tokens
        if sinks:
            x = self.sink_tokens.to(self.embeddings.weight.dtype)[None]
            positions = torch.arange(sinks, device=x.device)[None]
            step = _Step(cache=cache, mask=None, positions=positions, sink_pass=True)
            with uncounted():
                for layer in self.layers:
                    x = layer(x, step)
        cache.expand_sinks(batch)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        cache: HybridMoECache | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states ``[batch, seq, hidden]`` of the tokens (sinks not included).

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids (only the new ones with a cache), or None with
            ``inputs_embeds`` (``[batch, seq, hidden]``).
        attention_mask
            Optional 0/1, ``[batch, seq]`` or ``[batch, past + seq]``; left and right
            padding give each real token its unpadded output, holes are refused.
        cache
            Optional :class:`HybridMoECache`, advanced by ``seq`` positions.
        position_ids
            Optional rotary positions of the new tokens (``[batch, seq]`` or ``[seq]``,
            counted from the first token after the sinks); by default each row's real
            tokens counted from 0, as ``generate()`` derives them.
        """
        x = embed(self.embeddings, input_ids, inputs_embeds)
        batch, seq = x.shape[:2]
        cache = HybridMoECache(self.config) if cache is None else cache
        mask = full_mask(batch, seq, x.device, attention_mask, cache)
        if not cache.has_sinks:
            self._run_sinks(cache, batch)
        # Rotary positions count each row's real tokens (left padding shifts nothing, as
        # in the 7B model), after the sinks' positions 0 … S − 1.
        positions = rotary_positions(position_ids, mask, batch, seq, cache.seen_tokens, x.device)
        positions = self.config.num_sink_tokens + positions.expand(batch, seq)
        step = _Step(cache=cache, mask=mask, positions=positions, sink_pass=False)
        for layer in self.layers:
            x = layer(x, step)
        cache.seen_tokens += seq
        cache.sequences = batch
        cache.mask = mask
        return self.norm(x)


class SpikingBrainMoEPretrainedConfig(PreTrainedConfig):
    """The transformers view of a :class:`HybridMoEConfig` (``model.config``)."""

    model_type = "spikingbrain_moe"


class SpikingBrainMoEForCausalLM(CausalLMBase):
    """The hybrid-linear MoE language model (SPEC §8), a transformers model.

    Parameters
    ----------
    config
        The architecture (:class:`HybridMoEConfig`); parameters start with PyTorch's
        default initialisation (sink tokens at zero). Load a checkpoint with
        :func:`spikecode.models.checkpoint.load_checkpoint`.

    Attributes
    ----------
    moe_config : HybridMoEConfig
        The architecture; ``config`` is its transformers view.
    """

    config_class = SpikingBrainMoEPretrainedConfig
    architecture_attr = "moe_config"
    cache_class = HybridMoECache
    _no_split_modules: ClassVar[list[str]] = ["MoEBlock"]

    def __init__(self, config: HybridMoEConfig) -> None:
        if not isinstance(config, HybridMoEConfig):
            raise SpikecodeError(
                "SpikingBrainMoEForCausalLM takes a HybridMoEConfig",
                config=type(config).__name__,
            )
        view = config.to_dict()
        view.pop("model_type")
        stored = view.pop("torch_dtype", None)
        super().__init__(SpikingBrainMoEPretrainedConfig(**view, dtype=stored, use_cache=True))
        self.moe_config = config
        self.model = SpikingBrainMoEModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embeddings.weight
        self.post_init()

    def moe_layers(self) -> list[tuple[str, MoEFeedForward]]:
        """``(name, module)`` of every MoE FFN, in layer order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, MoEFeedForward)]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: HybridMoECache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        cache: HybridMoECache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """Next-token logits ``[batch, seq, vocab_size]``, the loss with ``labels``, the cache.

        As :meth:`spikecode.models.GLASwaForCausalLM.forward`: ``input_ids`` or
        ``inputs_embeds``; ``position_ids`` default to each row's real tokens counted from
        the attention mask; ``cache``/``past_key_values`` continue from a
        :class:`HybridMoECache` and ``use_cache`` returns one; ``labels`` give the
        causal-LM loss; the ``output_*`` flags accept only False/None.
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
