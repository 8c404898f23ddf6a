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
unpadded (up to float rounding), as in the release. Outputs *at* padding positions are
finite but meaningless. Rotary positions and windows count sequence indices, as in the
release; rotary attention depends only on position differences, so left padding changes
nothing. A padding **hole** (a 0 between two 1s of a row) is refused with a
:class:`~spikecode.errors.SpikecodeError`: the release gives it no single meaning (its
GLA layers zero only the hole's value, so the state still decays there, while its window
layers un-pad the row, so the window then spans the hole; and its rotary positions count
the hole in a plain forward pass but not in ``generate()``).

Generation: :class:`GLASwaForCausalLM` is a transformers ``PreTrainedModel`` with
``GenerationMixin``. It returns a ``CausalLMOutputWithPast`` (``.logits``, ``.cache`` —
``.past_key_values`` in older transformers naming) holding a
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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from spikecode.errors import SpikecodeError
from spikecode.models.cache import GLASwaCache
from spikecode.models.config import GATE_VARIANTS, GLA_MODES, GLASwaConfig, compute_dtype
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
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``.

        ``mask`` is ``[batch, past + seq]`` bool (the cache's past first) or None; with
        a ``cache`` the new keys join the cached window.
        """
        compute = compute_dtype(x.dtype)
        past = 0 if cache is None else cache.seen_tokens
        q = _split_heads(self.q_proj(x), self.num_heads).to(compute)
        k = _split_heads(self.k_proj(x), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        positions = torch.arange(past, past + x.shape[1], device=x.device)
        q = _through(self.q_act, apply_rotary(q, positions, self.rope_theta))
        k = apply_rotary(k, positions, self.rope_theta)
        if cache is not None:
            # The raw rotated keys are cached; the k/v sites act on every use, as the
            # release quantizes its cached keys each step (row-wise, so the same values).
            k, v = cache.window(self.layer_idx, k, v)
        o = sliding_window_attention(
            _group_queries(q, self.num_kv_heads),
            _through(self.k_act, k),
            _through(self.v_act, v),
            window=self.window,
            scale=self.head_dim**-0.5,
            key_mask=None if mask is None else mask[:, -k.shape[2] :],
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
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``.

        ``mask`` is ``[batch, past + seq]`` bool or None; with a ``cache`` the recursion
        starts from the cached state and leaves its final state there.
        """
        compute = compute_dtype(x.dtype)
        q = _split_heads(F.relu(self.q_proj(x)), self.num_heads).to(compute)
        k = _split_heads(F.relu(self.k_proj(x)), self.num_kv_heads).to(compute)
        v = _split_heads(self.v_proj(x), self.num_kv_heads).to(compute)
        g = _split_heads(self.gk_proj(x), self.num_kv_heads).to(compute)
        g = F.logsigmoid(g) / self.gate_logit_normalizer
        if mask is not None:
            # A padding position adds nothing to the state and does not decay it.
            keep = mask[:, None, -x.shape[1] :, None]
            k = k * keep
            v = v * keep
            g = g * keep
        state = None if cache is None else cache.recurrent_state(self.layer_idx)
        if self.mode == "chunked" and x.shape[1] > 1:
            form, kwargs = gla_chunked, {"chunk_size": self.chunk_size}
        else:
            form, kwargs = gla_recurrent, {}
        o, state = form(
            _group_queries(q, self.num_kv_heads),
            k,
            v,
            g,
            scale=self.head_dim**-0.5,
            initial_state=state,
            **kwargs,
        )
        if cache is not None:
            cache.set_recurrent_state(self.layer_idx, state)
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
    ) -> torch.Tensor:
        """``[batch, seq, hidden] -> [batch, seq, hidden]``."""
        h = x + self.attn(self.attn_norm(x), mask, cache)
        return h + self.mlp(self.mlp_norm(h))


def _check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
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


def _full_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: GLASwaCache | None
) -> torch.Tensor | None:
    """The bool mask of the cached past and the new tokens, ``[batch, past + seq]``, or None."""
    batch, seq = input_ids.shape
    past = 0 if cache is None else cache.seen_tokens
    stored = None if cache is None else cache.mask
    if cache is not None and cache.sequences not in (None, batch):
        raise SpikecodeError(
            f"the cache holds {cache.sequences} sequences but input_ids has {batch}",
            shape=tuple(input_ids.shape),
        )
    if attention_mask is None:
        if stored is None:
            return None
        new = torch.ones(batch, seq, dtype=torch.bool, device=input_ids.device)
        return _refuse_holes(torch.cat([stored.to(input_ids.device), new], dim=1))
    # Compared dimension by dimension: traced sizes (ONNX export) are not plain ints.
    if (
        not isinstance(attention_mask, torch.Tensor)
        or attention_mask.dim() != 2
        or attention_mask.shape[0] != batch
        or attention_mask.shape[1] not in (seq, past + seq)
    ):
        raise SpikecodeError(
            "attention_mask must be a tensor [batch, seq] (the new tokens) or "
            "[batch, past + seq] (with a cache)",
            shape=tuple(getattr(attention_mask, "shape", ())),
            expected=[(batch, seq)] if past == 0 else [(batch, seq), (batch, past + seq)],
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise SpikecodeError("attention_mask must hold only 0 and 1")
    mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
    if mask.shape[1] != past + seq:
        before = (
            torch.ones(batch, past, dtype=torch.bool, device=mask.device)
            if stored is None
            else stored.to(mask.device)
        )
        mask = torch.cat([before, mask], dim=1)
    return _refuse_holes(mask)


def _refuse_holes(mask: torch.Tensor) -> torch.Tensor:
    # Runs of ones per row: more than one means a padding hole inside the sequence.
    as_int = mask.to(torch.int8)
    runs = (as_int[:, 1:] > as_int[:, :-1]).sum(dim=1) + as_int[:, 0]
    if bool((runs > 1).any()):
        row = int((runs > 1).nonzero()[0, 0])
        raise SpikecodeError(
            "attention_mask has a padding hole (a 0 between tokens) in row "
            f"{row}; only left and right padding are supported (the release treats holes "
            "differently in its two layer kinds)",
            row=row,
        )
    return mask


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
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
    ) -> torch.Tensor:
        """Compute the final hidden states (after ``norm``).

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids.
        attention_mask
            Optional 0/1 (1 = token, 0 = padding): ``[batch, seq]``, or with a cache
            ``[batch, past + seq]``. Padding holes are refused (see the module docstring).
        cache
            Optional :class:`GLASwaCache`; it is advanced by ``seq`` positions.

        Returns
        -------
        torch.Tensor
            ``[batch, seq, hidden_size]`` in the parameter dtype.
        """
        _check_ids(input_ids, self.vocab_size)
        mask = _full_mask(input_ids, attention_mask, cache)
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask, cache)
        if cache is not None:
            cache.seen_tokens += input_ids.shape[1]
            cache.sequences = input_ids.shape[0]
            cache.mask = mask
        return self.norm(x)


class GLASwaPretrainedConfig(PreTrainedConfig):
    """The transformers view of a :class:`GLASwaConfig` (``model.config``).

    Every field of :class:`GLASwaConfig` is an attribute of the same name (plus
    ``head_dim`` and ``kv_dim``), so ``model.config.sliding_window`` reads as before;
    the typed, validated original is ``model.gla_config``.
    """

    model_type = "gla_swa"


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
    )


class GLASwaForCausalLM(PreTrainedModel, GenerationMixin):
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
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules: ClassVar[list[str]] = ["GLASwaBlock"]

    def __init__(self, config: GLASwaConfig) -> None:
        if isinstance(config, GLASwaPretrainedConfig):
            raise SpikecodeError(
                "GLASwaForCausalLM takes a GLASwaConfig (model.gla_config), not its "
                "transformers view"
            )
        super().__init__(_pretrained_config(config))
        self.gla_config = config
        self.model = GLASwaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embeddings.weight
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Modules keep PyTorch's default initialisation; checkpoints overwrite it.
        return

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: forward creates a GLASwaCache.
        return False

    def get_input_embeddings(self) -> nn.Module:
        """The token embeddings."""
        return self.model.embeddings

    def get_output_embeddings(self) -> nn.Module:
        """The LM head."""
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: GLASwaCache | None = None,
        use_cache: bool | None = None,
        past_key_values: GLASwaCache | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """Next-token logits, and the cache when one is used.

        Parameters
        ----------
        input_ids
            ``[batch, seq]`` token ids (only the new ones when a cache is given).
        attention_mask
            Optional 0/1: ``[batch, seq]``, or ``[batch, past + seq]`` with a cache.
        cache, past_key_values
            A :class:`GLASwaCache` to continue from (either name; transformers 5 calls
            it ``cache``). Advanced in place.
        use_cache
            Return a cache (a new one when none was given).
        return_dict
            False for the tuple ``(logits, cache)``.
        **kwargs
            ``position_ids`` (ignored: positions count the cache's past) and the
            ``output_*`` flags transformers passes (only False/None accepted).

        Returns
        -------
        CausalLMOutputWithPast
            ``logits`` ``[batch, seq, vocab_size]`` in the parameter dtype; ``cache``.
        """
        for name, value in kwargs.items():
            if name not in ("position_ids", "output_attentions", "output_hidden_states"):
                raise SpikecodeError(f"GLASwaForCausalLM.forward got an unknown argument {name!r}")
            if name != "position_ids" and value:
                raise SpikecodeError(f"GLASwaForCausalLM does not support {name}=True")
        if cache is not None and past_key_values is not None:
            raise SpikecodeError("pass the cache as cache or past_key_values, not both")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, GLASwaCache):
            raise SpikecodeError(
                f"the cache must be a GLASwaCache, not {type(cache).__name__}",
            )
        if cache is None and use_cache:
            cache = GLASwaCache(self.gla_config)
        logits = self.lm_head(self.model(input_ids, attention_mask, cache))
        if return_dict is False:
            return (logits,) if cache is None else (logits, cache)
        return CausalLMOutputWithPast(logits=logits, cache=cache)

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
