"""Configuration of the plain-PyTorch GLA-SWA model: ``config.json`` of the release (SPEC §7).

:class:`GLASwaConfig` reads, checks and writes the released ``config.json``; the model
itself is in :mod:`spikecode.models.gla_swa`, its mathematics in :mod:`spikecode.models.ops`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch

from spikecode._validate import as_path, short_repr
from spikecode.errors import SpikecodeError
from spikecode.io import read_json

__all__ = ["GATE_VARIANTS", "GLA_MODES", "GLASwaConfig", "compute_dtype"]

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
# Sanity bounds: no tensor dimension beyond int32, no model of more than 65536 layers.
_MAX_SIZE = (1 << 31) - 1
_MAX_LAYERS = 1 << 16
_Config = TypeVar("_Config")
# The size fields config.json must name: required, and checked as positive sizes.
_REQUIRED_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "sliding_window",
)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
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
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = (*_REQUIRED_SIZES, "rope_theta")

    def __post_init__(self) -> None:
        object.__setattr__(self, "attn_layers", tuple(self.attn_layers))
        check_sizes(self, (*_REQUIRED_SIZES, "gate_low_rank_dim", "gla_chunk_size"))
        check_positive_numbers(self, ("rope_theta", "norm_eps", "gate_logit_normalizer"))
        check_heads(self)
        check_layer_list(self, "attn_layers")
        check_common(self)
        check_choice(self, "gate", GATE_VARIANTS)
        check_choice(self, "gla_mode", GLA_MODES)

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
        values = required_values(raw, source, "gla_swa", "GLA-SWA", cls.REQUIRED_FIELDS)
        if raw.get("use_short_conv", False) is not False:
            raise SpikecodeError(
                f"{source} sets use_short_conv={short_repr(raw['use_short_conv'])}; only the "
                "released use_short_conv=false architecture is supported",
                file=source,
                field="use_short_conv",
            )
        if raw.get("elementwise_affine", True) is not True:
            raise SpikecodeError(
                f"{source} sets elementwise_affine={short_repr(raw['elementwise_affine'])}; the "
                "release has an affine g_norm (true)",
                file=source,
                field="elementwise_affine",
            )
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
        elif isinstance(num_layers, int) and 0 < num_layers <= _MAX_LAYERS:
            # The release's configuration class computes the odd layers when absent.
            values["attn_layers"] = tuple(range(1, num_layers, 2))
        else:
            values["attn_layers"] = ()
        if "attn_mode" in raw:
            mode = raw["attn_mode"]
            if not isinstance(mode, str) or mode not in _ATTN_MODES:
                raise SpikecodeError(
                    f"{source}: attn_mode {short_repr(mode)} is not one of {sorted(_ATTN_MODES)}",
                    file=source,
                    field="attn_mode",
                )
            values["gla_mode"] = _ATTN_MODES[mode]
        values.update(overrides)
        return build_config(cls, values, source)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **overrides: Any) -> GLASwaConfig:
        """Read ``config.json`` (a file, or the folder holding it); see :meth:`from_dict`."""
        path = as_path(path)
        if path.is_dir():
            path = path / "config.json"
        raw = read_json(path, "config.json")
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
# checks shared by the architectures' configs (GLA-SWA here, the hybrid MoE of SPEC §8)
# ---------------------------------------------------------------------------------------


def required_values(
    raw: Any, source: str, model_type: str, description: str, required: tuple[str, ...]
) -> dict[str, Any]:
    """The required fields of a ``config.json`` object, after checking what it is.

    Raises
    ------
    SpikecodeError
        ``raw`` is not a JSON object, its ``model_type`` is not ``model_type`` (the error
        calls the expected kind ``description``), or a required field is missing.
    """
    if not isinstance(raw, Mapping):
        raise SpikecodeError(f"{source} must hold a JSON object", file=source)
    found = raw.get("model_type")
    if found != model_type:
        raise SpikecodeError(
            f"{source} is not a {description} config: model_type is {short_repr(found)}, "
            f"expected {model_type!r}",
            file=source,
            field="model_type",
        )
    for name in required:
        if name not in raw:
            raise SpikecodeError(f"{source} is missing the field {name!r}", file=source, field=name)
    return {name: raw[name] for name in required}


def build_config(cls: type[_Config], values: dict[str, Any], source: str) -> _Config:
    """``cls(**values)``, its validation errors naming ``source``."""
    try:
        return cls(**values)
    except SpikecodeError as err:
        raise SpikecodeError(f"{source}: {err.message}", file=source, **err.context) from None


def check_sizes(config: Any, names: tuple[str, ...]) -> None:
    """Each named field is a positive int (layers up to 65536, sizes up to int32)."""
    for name in names:
        value = getattr(config, name)
        limit = _MAX_LAYERS if name == "num_hidden_layers" else _MAX_SIZE
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            raise SpikecodeError(
                f"{name} must be a positive integer up to {limit}, not {short_repr(value)}",
                field=name,
            )


def check_positive_numbers(config: Any, names: tuple[str, ...]) -> None:
    """Each named field is a finite number > 0."""
    for name in names:
        value = getattr(config, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise SpikecodeError(
                f"{name} must be a number > 0, not {short_repr(value)}", field=name
            )


def check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    """The named field is one of the strings ``choices``."""
    value = getattr(config, name)
    if not isinstance(value, str) or value not in choices:
        raise SpikecodeError(
            f"{name} must be one of {list(choices)}, not {short_repr(value)}", field=name
        )


def check_heads(config: Any) -> None:
    """Heads divide the width, key/value heads divide the heads, head_dim is even."""
    if config.hidden_size % config.num_attention_heads:
        raise SpikecodeError(
            f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
            f"{config.num_attention_heads}",
            field="hidden_size",
        )
    if config.num_attention_heads % config.num_key_value_heads:
        raise SpikecodeError(
            f"num_attention_heads {config.num_attention_heads} is not divisible by "
            f"num_key_value_heads {config.num_key_value_heads}",
            field="num_key_value_heads",
        )
    if (config.hidden_size // config.num_attention_heads) % 2:
        raise SpikecodeError(
            f"head_dim {config.hidden_size // config.num_attention_heads} (hidden_size / "
            "num_attention_heads) must be even for rotate-half rotary embedding",
            field="hidden_size",
        )


def check_layer_list(config: Any, name: str) -> None:
    """The named field holds distinct layer indices in ``[0, num_hidden_layers)``."""
    layers = getattr(config, name)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers) or any(
        not 0 <= i < config.num_hidden_layers for i in layers
    ):
        raise SpikecodeError(
            f"{name} must hold layer indices in [0, {config.num_hidden_layers}), "
            f"not {short_repr(list(layers))}",
            field=name,
        )
    if len(set(layers)) != len(layers):
        raise SpikecodeError(f"{name} repeats a layer: {list(layers)}", field=name)


def check_common(config: Any) -> None:
    """``hidden_act`` (swish/silu), ``tie_word_embeddings`` (bool), ``torch_dtype``."""
    if not isinstance(config.hidden_act, str) or config.hidden_act not in _SWISH:
        raise SpikecodeError(
            f"hidden_act {short_repr(config.hidden_act)} is not supported (only swish/silu)",
            field="hidden_act",
        )
    if not isinstance(config.tie_word_embeddings, bool):
        raise SpikecodeError(
            "tie_word_embeddings must be true or false, not "
            f"{short_repr(config.tie_word_embeddings)}",
            field="tie_word_embeddings",
        )
    if config.torch_dtype is not None and (
        not isinstance(config.torch_dtype, str) or config.torch_dtype not in _CONFIG_DTYPES
    ):
        raise SpikecodeError(
            f"torch_dtype {short_repr(config.torch_dtype)} is not one of {list(_CONFIG_DTYPES)}",
            field="torch_dtype",
        )
