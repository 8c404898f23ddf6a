"""Configuration of the hybrid-linear MoE model (SpikingBrain-76B-A12B, SPEC §8).

:class:`HybridMoEConfig` reads, checks and writes the ``config.json`` of the layout a
Hugging Face release of the 76B model would use (``model_type: "spikingbrain_moe"``). No
weights or code of that model were released: every field that the report (arXiv
2509.05276, section 2) leaves open has a documented default here and in SPEC §8.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from spikecode._validate import short_repr
from spikecode.errors import SpikecodeError
from spikecode.io import read_json
from spikecode.models.config import (
    GLA_MODES,
    build_config,
    check_choice,
    check_common,
    check_heads,
    check_layer_list,
    check_positive_numbers,
    check_sizes,
    required_values,
)

__all__ = ["LAYER_KINDS", "MODEL_TYPE", "HybridMoEConfig", "default_full_attention_layers"]

#: ``config.json``'s ``model_type`` for this architecture.
MODEL_TYPE = "spikingbrain_moe"
#: ``"hybrid"``: linear attention and sliding-window attention in parallel (1:1);
#: ``"full"``: causal softmax attention over every earlier token.
LAYER_KINDS = ("hybrid", "full")

_LAYER_LIMIT = 1 << 16
_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "sliding_window",
    "num_experts",
    "num_experts_per_tok",
    "num_shared_experts",
    "gla_chunk_size",
)


def default_full_attention_layers(num_layers: int) -> tuple[int, ...]:
    """Full-attention layers at the report's 1:6 ratio: every 7th layer (6, 13, 20, …).

    The report gives the ratio, not the positions; ending each group of seven with the
    full layer keeps the first layers linear, as in the 7B model (SPEC §8).
    """
    return tuple(range(6, num_layers, 7))


def _default_moe_layers(num_layers: int) -> tuple[int, ...]:
    # MoE and dense FFNs alternate, the MoE ones on odd layers (SPEC §8).
    return tuple(range(1, num_layers, 2))


@dataclass(frozen=True)
class HybridMoEConfig:
    """Architecture of a hybrid-linear MoE model (SPEC §8).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers
        Sizes.
    intermediate_size
        Width of the dense FFN layers (SwiGLU).
    moe_intermediate_size
        Width of each routed expert (SwiGLU).
    shared_expert_intermediate_size
        Width of the shared expert (SwiGLU); ``moe_intermediate_size`` when not given.
    num_attention_heads, num_key_value_heads
        Query heads and shared key/value heads; ``head_dim = hidden_size //
        num_attention_heads``.
    sliding_window
        A window-branch query at token ``i`` sees tokens ``i − sliding_window … i``.
    rope_theta
        Rotary base.
    full_attention_layers
        Layers that are full softmax attention; the others are hybrid.
        :func:`default_full_attention_layers` when absent.
    moe_layers
        Layers whose FFN is a mixture of experts; the others are dense. The odd layers
        when absent.
    num_experts, num_experts_per_tok, num_shared_experts
        Routed experts (16), experts a token is routed to (1, top-1) and shared experts
        (1) of every MoE layer.
    num_sink_tokens
        Learnable sink tokens prepended to every sequence (128; 0 disables them).
    norm_eps
        RMSNorm epsilon.
    hidden_act
        ``"swish"``/``"silu"`` only.
    tie_word_embeddings, torch_dtype
        As in the 7B config.
    gla_mode, gla_chunk_size
        Form of the linear branch (``"chunked"`` or ``"recurrent"``, as for GLA-SWA).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    sliding_window: int
    rope_theta: float
    full_attention_layers: tuple[int, ...]
    moe_layers: tuple[int, ...]
    num_experts: int = 16
    num_experts_per_tok: int = 1
    num_shared_experts: int = 1
    shared_expert_intermediate_size: int | None = None
    num_sink_tokens: int = 128
    norm_eps: float = 1e-6
    hidden_act: str = "swish"
    tie_word_embeddings: bool = False
    torch_dtype: str | None = None
    gla_mode: str = "chunked"
    gla_chunk_size: int = 64

    #: Fields ``config.json`` must name; the others have the defaults above.
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "moe_intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "sliding_window",
        "rope_theta",
    )

    def __post_init__(self) -> None:
        if self.shared_expert_intermediate_size is None:
            object.__setattr__(self, "shared_expert_intermediate_size", self.moe_intermediate_size)
        check_sizes(self, _POSITIVE_INTS)
        sinks = self.num_sink_tokens
        if isinstance(sinks, bool) or not isinstance(sinks, int) or not 0 <= sinks <= 1 << 16:
            raise SpikecodeError(
                f"num_sink_tokens must be an integer in [0, 65536], not {short_repr(sinks)}",
                field="num_sink_tokens",
            )
        if self.num_experts_per_tok > self.num_experts:
            raise SpikecodeError(
                f"num_experts_per_tok {self.num_experts_per_tok} exceeds num_experts "
                f"{self.num_experts}",
                field="num_experts_per_tok",
            )
        check_positive_numbers(self, ("rope_theta", "norm_eps"))
        check_heads(self)
        for name in ("full_attention_layers", "moe_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            check_layer_list(self, name)
        check_common(self)
        check_choice(self, "gla_mode", GLA_MODES)

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key and value projections, ``num_key_value_heads * head_dim``."""
        return self.num_key_value_heads * self.head_dim

    def layer_kind(self, index: int) -> str:
        """``"full"`` or ``"hybrid"`` (:data:`LAYER_KINDS`) for layer ``index``."""
        return "full" if index in self.full_attention_layers else "hybrid"

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, source: str = "config.json", **overrides: Any
    ) -> HybridMoEConfig:
        """Parse and validate a ``config.json`` object of this architecture.

        Raises
        ------
        SpikecodeError
            Wrong ``model_type``, a missing required field or an invalid value (naming the
            file and the field).
        """
        values = required_values(raw, source, MODEL_TYPE, "hybrid MoE", cls.REQUIRED_FIELDS)
        for name in (
            "num_experts",
            "num_experts_per_tok",
            "num_shared_experts",
            "shared_expert_intermediate_size",
            "num_sink_tokens",
            "norm_eps",
            "hidden_act",
            "tie_word_embeddings",
            "torch_dtype",
            "gla_mode",
            "gla_chunk_size",
        ):
            if name in raw:
                values[name] = raw[name]
        layers = raw["num_hidden_layers"]
        known = isinstance(layers, int) and not isinstance(layers, bool) and layers > 0
        for name, default in (
            ("full_attention_layers", default_full_attention_layers),
            ("moe_layers", _default_moe_layers),
        ):
            if name in raw:
                if not isinstance(raw[name], list):
                    raise SpikecodeError(
                        f"{source}: {name} must be a list of layer indices",
                        file=source,
                        field=name,
                    )
                values[name] = tuple(raw[name])
            else:
                values[name] = default(min(layers, _LAYER_LIMIT)) if known else ()
        values.update(overrides)
        try:
            return build_config(cls, values, source)
        except TypeError as err:
            # An override that is not a field of this architecture.
            raise SpikecodeError(f"{source}: {err}", file=source) from None

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], **overrides: Any) -> HybridMoEConfig:
        """Read ``config.json`` (a file, or the folder holding it); see :meth:`from_dict`."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(read_json(path, "config.json"), source=str(path), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` object of this architecture (every field written)."""
        out: dict[str, Any] = {
            "architectures": ["SpikingBrainMoEForCausalLM"],
            "model_type": MODEL_TYPE,
        }
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "torch_dtype" and value is None:
                continue
            out[name] = list(value) if isinstance(value, tuple) else value
        return out
