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
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spikecode.errors import SpikecodeError

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

#: ``"lowrank"``: ``attn.gk_proj.0`` (hidden→16, no bias) then ``attn.gk_proj.1``
#: (16→kv dims, bias), the BF16 release. ``"single"``: one ``attn.gk_proj`` (hidden→kv
#: dims, bias), the W8ASpike release (SPEC §7).
GATE_VARIANTS = ("lowrank", "single")
#: ``"chunked"``: block-parallel form (default, like the release's ``attn_mode="chunk"``);
#: ``"recurrent"``: token-by-token recursion. Both compute the same function.
GLA_MODES = ("chunked", "recurrent")

# The release's attn_mode values and the form each one computes.
_ATTN_MODES = {"chunk": "chunked", "fused_chunk": "chunked", "fused_recurrent": "recurrent"}
_SWISH = ("swish", "silu")
_CONFIG_DTYPES = ("float32", "float16", "bfloat16", "float64")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the package's compute dtype: float64 stays, other floats become float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GLASwaConfig:
    """Architecture of a GLA-SWA model, as read from the release's ``config.json``.

    Parameters
    ----------
    vocab_size, hidden_size, intermediate_size, num_hidden_layers
        Sizes (SpikingBrain-7B: 152064, 3584, 18944, 28).
    num_attention_heads, num_key_value_heads
        Query heads and shared key/value heads (28 and 4); ``head_dim`` is
        ``hidden_size // num_attention_heads``.
    sliding_window
        Query ``i`` of a softmax layer sees keys ``i - sliding_window … i`` (4096).
    rope_theta
        Rotary base (1e6).
    attn_layers
        Indices of the sliding-window softmax layers; the others are gated linear
        attention. ``config.json`` without the field gets the odd layers, as the release's
        configuration class computes.
    norm_eps
        RMSNorm epsilon of every norm, ``g_norm`` included (1e-6).
    hidden_act
        ``"swish"`` (= ``"silu"``), the only activation of the release.
    tie_word_embeddings
        Whether ``lm_head`` shares the embedding matrix (false in the release).
    torch_dtype
        Stored dtype named by ``config.json`` (``"bfloat16"``) or None.
    gate
        Gate projection variant, one of :data:`GATE_VARIANTS`. Not a ``config.json``
        field: the checkpoint loader reads it from the tensor names.
    gate_low_rank_dim
        Width of the low-rank gate (16).
    gate_logit_normalizer
        The gate is ``logsigmoid(gk) / gate_logit_normalizer`` (16).
    gla_mode, gla_chunk_size
        Which form of gated linear attention runs (:data:`GLA_MODES`) and the chunk length
        of the chunked form. ``config.json``'s ``attn_mode`` maps onto ``gla_mode``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    sliding_window: int
    rope_theta: float
    attn_layers: tuple[int, ...]
    norm_eps: float = 1e-6
    hidden_act: str = "swish"
    tie_word_embeddings: bool = False
    torch_dtype: str | None = None
    gate: str = "lowrank"
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0
    gla_mode: str = "chunked"
    gla_chunk_size: int = 64

    #: Fields config.json must name; every other field has the release's default.
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "sliding_window",
        "rope_theta",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "attn_layers", tuple(self.attn_layers))
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "sliding_window",
            "gate_low_rank_dim",
            "gla_chunk_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpikecodeError(
                    f"{name} must be a positive integer, not {value!r}", field=name
                )
        for name in ("rope_theta", "norm_eps", "gate_logit_normalizer"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise SpikecodeError(f"{name} must be a number > 0, not {value!r}", field=name)
        if self.hidden_size % self.num_attention_heads:
            raise SpikecodeError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}",
                field="hidden_size",
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise SpikecodeError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}",
                field="num_key_value_heads",
            )
        if self.head_dim % 2:
            raise SpikecodeError(
                f"head_dim {self.head_dim} (hidden_size / num_attention_heads) must be even "
                "for rotate-half rotary embedding",
                field="hidden_size",
            )
        layers = self.attn_layers
        if any(isinstance(i, bool) or not isinstance(i, int) for i in layers) or any(
            not 0 <= i < self.num_hidden_layers for i in layers
        ):
            raise SpikecodeError(
                f"attn_layers must hold layer indices in [0, {self.num_hidden_layers}), "
                f"not {list(layers)}",
                field="attn_layers",
            )
        if len(set(layers)) != len(layers):
            raise SpikecodeError(
                f"attn_layers repeats a layer: {list(layers)}", field="attn_layers"
            )
        if self.hidden_act not in _SWISH:
            raise SpikecodeError(
                f"hidden_act {self.hidden_act!r} is not supported (only swish/silu)",
                field="hidden_act",
            )
        if not isinstance(self.tie_word_embeddings, bool):
            raise SpikecodeError(
                f"tie_word_embeddings must be true or false, not {self.tie_word_embeddings!r}",
                field="tie_word_embeddings",
            )
        if self.torch_dtype is not None and self.torch_dtype not in _CONFIG_DTYPES:
            raise SpikecodeError(
                f"torch_dtype {self.torch_dtype!r} is not one of {list(_CONFIG_DTYPES)}",
                field="torch_dtype",
            )
        if self.gate not in GATE_VARIANTS:
            raise SpikecodeError(
                f"gate must be one of {list(GATE_VARIANTS)}, not {self.gate!r}", field="gate"
            )
        if self.gla_mode not in GLA_MODES:
            raise SpikecodeError(
                f"gla_mode must be one of {list(GLA_MODES)}, not {self.gla_mode!r}",
                field="gla_mode",
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key, value and gate projections, ``num_key_value_heads * head_dim``."""
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, source: str = "config.json", **overrides: Any
    ) -> GLASwaConfig:
        """Parse and validate the fields of a release ``config.json``.

        Parameters
        ----------
        raw
            The decoded JSON object.
        source
            Name of the file, quoted in every error.
        **overrides
            Fields that are not ``config.json`` keys (``gate``, ``gla_mode``,
            ``gla_chunk_size``) or that replace one.

        Raises
        ------
        SpikecodeError
            ``model_type`` is not ``"gla_swa"``, a required field is missing, a field has
            the wrong type or value, or fields disagree (naming the file and the field).
        """
        if not isinstance(raw, Mapping):
            raise SpikecodeError(f"{source} must hold a JSON object", file=source)
        model_type = raw.get("model_type")
        if model_type != "gla_swa":
            raise SpikecodeError(
                f"{source} is not a GLA-SWA config: model_type is {model_type!r}, "
                "expected 'gla_swa'",
                file=source,
                field="model_type",
            )
        for name in cls.REQUIRED_FIELDS:
            if name not in raw:
                raise SpikecodeError(
                    f"{source} is missing the field {name!r}", file=source, field=name
                )
        if raw.get("use_short_conv", False) is not False:
            raise SpikecodeError(
                f"{source} sets use_short_conv={raw['use_short_conv']!r}; only the released "
                "use_short_conv=false architecture is supported",
                file=source,
                field="use_short_conv",
            )
        if raw.get("elementwise_affine", True) is not True:
            raise SpikecodeError(
                f"{source} sets elementwise_affine={raw['elementwise_affine']!r}; the release "
                "has an affine g_norm (true)",
                file=source,
                field="elementwise_affine",
            )
        values: dict[str, Any] = {name: raw[name] for name in cls.REQUIRED_FIELDS}
        for name in ("norm_eps", "hidden_act", "tie_word_embeddings", "torch_dtype"):
            if name in raw:
                values[name] = raw[name]
        for name in ("gate_low_rank_dim", "gate_logit_normalizer"):
            if name in raw:
                values[name] = raw[name]
        num_layers = raw["num_hidden_layers"]
        if "attn_layers" in raw:
            attn_layers = raw["attn_layers"]
            if not isinstance(attn_layers, list):
                raise SpikecodeError(
                    f"{source}: attn_layers must be a list of layer indices",
                    file=source,
                    field="attn_layers",
                )
            values["attn_layers"] = tuple(attn_layers)
        elif isinstance(num_layers, int):
            # The release's configuration class computes the odd layers when absent.
            values["attn_layers"] = tuple(range(1, num_layers, 2))
        else:
            values["attn_layers"] = ()
        if "attn_mode" in raw:
            mode = raw["attn_mode"]
            if mode not in _ATTN_MODES:
                raise SpikecodeError(
                    f"{source}: attn_mode {mode!r} is not one of {sorted(_ATTN_MODES)}",
                    file=source,
                    field="attn_mode",
                )
            values["gla_mode"] = _ATTN_MODES[mode]
        values.update(overrides)
        try:
            return cls(**values)
        except SpikecodeError as err:
            raise SpikecodeError(f"{source}: {err.message}", file=source, **err.context) from None

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **overrides: Any) -> GLASwaConfig:
        """Read ``config.json`` (a file, or the folder holding it); see :meth:`from_dict`."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise SpikecodeError("config.json not found", file=str(path))
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SpikecodeError(f"cannot read config.json: {err}", file=str(path)) from None
        return cls.from_dict(raw, source=str(path), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``config.json`` object of the release layout for this architecture.

        Keys the release does not have (``gate``, ``gla_chunk_size``) are left out;
        ``gla_mode`` is written as the release's ``attn_mode``.
        """
        out: dict[str, Any] = {
            "architectures": ["GLAswaForCausalLM"],
            "model_type": "gla_swa",
            "attn_layers": list(self.attn_layers),
            "attn_mode": "chunk" if self.gla_mode == "chunked" else "fused_recurrent",
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "norm_eps": self.norm_eps,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "rope_theta": self.rope_theta,
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_short_conv": False,
            "vocab_size": self.vocab_size,
        }
        if self.torch_dtype is not None:
            out["torch_dtype"] = self.torch_dtype
        if self.gate_low_rank_dim != 16:
            out["gate_low_rank_dim"] = self.gate_low_rank_dim
        if self.gate_logit_normalizer != 16:
            out["gate_logit_normalizer"] = self.gate_logit_normalizer
        return out


# ---------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm ``x / sqrt(mean(x², last axis) + eps) * weight`` (SPEC §7).

    Parameters
    ----------
    x
        ``[..., d]``, any float dtype.
    weight
        ``[d]``.
    eps
        Added to the mean square.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``; computed in the compute dtype.
    """
    compute = _compute_dtype(x.dtype)
    xc = x.to(compute)
    y = xc * torch.rsqrt(xc.square().mean(-1, keepdim=True) + eps)
    return (y * weight.to(compute)).to(x.dtype)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding in the rotate-half form (SPEC §7).

    ``x·cos + rotate_half(x)·sin`` with ``rotate_half([a, b]) = [-b, a]`` and angle
    ``p · theta^(-2j/d)`` repeated over both halves.

    Parameters
    ----------
    x
        ``[..., seq, d]`` with ``d`` even; float32 or float64 (the compute dtype).
    positions
        ``[seq]`` integer positions.
    theta
        Rotary base (``rope_theta``).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``.
    """
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=x.dtype) / d))
    angles = positions.to(x.dtype)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    half = d // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    scale: float,
    key_mask: torch.Tensor | None = None,
    block_size: int = 256,
) -> torch.Tensor:
    """Causal softmax attention where query ``i`` sees keys ``i - window … i`` (SPEC §7).

    Grouped-query heads: every one of the ``G`` query heads of a group reads the same
    key/value head. Queries are processed in blocks so that memory grows with
    ``block_size · (block_size + window)``, not with ``seq²``.

    Parameters
    ----------
    q
        ``[batch, kv_heads, G, seq, d]``.
    k, v
        ``[batch, kv_heads, seq, d]``.
    window
        ``sliding_window``; ``window + 1`` keys at most.
    scale
        Logit scale (``head_dim ** -0.5``).
    key_mask
        Optional ``[batch, seq]`` bool, False for keys nobody may see (padding). A query
        always sees its own key, so no row is empty.
    block_size
        Queries per block.

    Returns
    -------
    torch.Tensor
        ``[batch, kv_heads, G, seq, d]`` in the dtype of ``q``.
    """
    seq = q.shape[-2]
    device = q.device
    out = torch.empty_like(q)
    positions = torch.arange(seq, device=device)
    for start in range(0, seq, block_size):
        stop = min(start + block_size, seq)
        first = max(0, start - window)
        qpos = positions[start:stop, None]
        kpos = positions[None, first:stop]
        allowed = (kpos <= qpos) & (kpos >= qpos - window)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, None, first:stop]
            allowed = allowed | (kpos == qpos)
        scores = torch.einsum("bhgqd,bhkd->bhgqk", q[..., start:stop, :], k[:, :, first:stop])
        scores = (scores * scale).masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[..., start:stop, :] = torch.einsum("bhgqk,bhkd->bhgqd", probs, v[:, :, first:stop])
    return out


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention, token by token (SPEC §7).

    Per key/value head: ``S_t = diag(exp(g_t)) S_{t-1} + k_tᵀ v_t`` and, for each of the
    ``G`` query heads sharing it, ``o_t = scale · q_t S_t``.

    Parameters
    ----------
    q
        ``[batch, kv_heads, G, seq, dk]``.
    k, g
        ``[batch, kv_heads, seq, dk]``; ``g`` is the log decay (``≤ 0``).
    v
        ``[batch, kv_heads, seq, dv]``.
    scale
        Output scale (``head_dim ** -0.5``).
    initial_state
        ``[batch, kv_heads, dk, dv]``, zeros when None.

    Returns
    -------
    tuple of torch.Tensor
        ``o`` ``[batch, kv_heads, G, seq, dv]`` and the final state
        ``[batch, kv_heads, dk, dv]``.
    """
    batch, heads, groups, seq, dk = q.shape
    dv = v.shape[-1]
    state = q.new_zeros(batch, heads, dk, dv) if initial_state is None else initial_state.clone()
    out = q.new_empty(batch, heads, groups, seq, dv)
    decay = g.exp()
    for t in range(seq):
        state = decay[:, :, t, :, None] * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, :, t] = scale * torch.einsum("bhgd,bhde->bhge", q[:, :, :, t], state)
    return out, state


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in block-parallel form; the same function as :func:`gla_recurrent`.

    Within a chunk, with ``b_t = Σ_{s≤t} g_s`` (cumulative log decay from the chunk start)
    and ``S`` the state entering the chunk::

        o_t   = scale · [(q_t ⊙ e^{b_t}) S + Σ_{s≤t} (Σ_d q_td k_sd e^{b_td − b_sd}) v_s]
        S_new = diag(e^{b_C}) S + Σ_s (k_s ⊙ e^{b_C − b_s})ᵀ v_s

    Every exponent is ``≤ 0`` (gates are log decays), so no factor can overflow however
    strong the decay; the price is a ``[chunk, chunk, dk]`` decay tensor per head.

    Parameters
    ----------
    q, k, v, g, scale, initial_state
        As in :func:`gla_recurrent`.
    chunk_size
        Tokens per chunk.

    Returns
    -------
    tuple of torch.Tensor
        ``o`` ``[batch, kv_heads, G, seq, dv]`` and the final state.
    """
    batch, heads, groups, seq, dk = q.shape
    dv = v.shape[-1]
    state = q.new_zeros(batch, heads, dk, dv) if initial_state is None else initial_state.clone()
    out = q.new_empty(batch, heads, groups, seq, dv)
    for start in range(0, seq, chunk_size):
        stop = min(start + chunk_size, seq)
        length = stop - start
        qc, kc, vc = q[:, :, :, start:stop], k[:, :, start:stop], v[:, :, start:stop]
        b = torch.cumsum(g[:, :, start:stop], dim=2)
        inter = torch.einsum("bhgtd,bhde->bhgte", qc * b.exp()[:, :, None], state)
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        diff = (b[:, :, :, None, :] - b[:, :, None, :, :]).masked_fill(
            ~causal[:, :, None], float("-inf")
        )
        scores = torch.einsum("bhgtd,bhsd,bhtsd->bhgts", qc, kc, diff.exp())
        intra = torch.einsum("bhgts,bhse->bhgte", scores, vc)
        out[:, :, :, start:stop] = scale * (inter + intra)
        last = b[:, :, -1]
        state = last.exp()[..., None] * state + torch.einsum(
            "bhsd,bhse->bhde", kc * (last[:, :, None] - b).exp(), vc
        )
    return out, state


# ---------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------


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
        compute = _compute_dtype(x.dtype)
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
        compute = _compute_dtype(x.dtype)
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
        checkpoint with :func:`spikecode.checkpoint.load_checkpoint`.

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
