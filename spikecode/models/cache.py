"""The decoding cache of the GLA-SWA model: recurrent GLA state and a sliding-window KV cache.

:class:`GLASwaCache` is a :class:`transformers.Cache` built from transformers' own layer
caches, one per model layer:

- gated-linear-attention layers keep their recurrent state ``S`` (``[batch, kv_heads,
  head_dim, head_dim]``) in a ``LinearAttentionLayer``: the whole past in one matrix;
- sliding-window layers keep the last ``sliding_window`` rotated keys and values in a
  ``DynamicSlidingWindowLayer`` sized ``sliding_window + 1`` (transformers counts the new
  token in its window). A new query therefore sees ``sliding_window`` past keys plus its
  own, ``W + 1`` keys, exactly what the same position sees in a full forward pass
  (SPEC §7: query ``i`` sees keys ``i − W … i``). Cached decoding equals recomputation.

The released code differs here (``hf_7B_model/cache.py``, ``W8ASpike/cache.py``): its
prefill runs flash attention with ``window_size=(W, 0)`` (``W + 1`` keys) but its cache
keeps only ``W`` keys *including* the new one, so each decoded token sees one key less
than the prefill gives the same position (its vLLM path keeps ``W + 1``). spikecode does
not reproduce that off-by-one.

The cache also keeps the attention mask of everything it has seen (``mask``), so a caller
may pass either the full ``[batch, past + new]`` mask (as ``generate()`` does) or only
the new tokens' ``[batch, new]``.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicSlidingWindowLayer, LinearAttentionLayer

from spikecode.models.config import GLASwaConfig

__all__ = ["GLASwaCache"]


class GLASwaCache(Cache):
    """Decoding state of a :class:`~spikecode.models.gla_swa.GLASwaForCausalLM`.

    Parameters
    ----------
    config
        The model's architecture (which layers are sliding-window, the window).

    Attributes
    ----------
    seen_tokens : int
        Positions processed so far (padding included); the next token's rotary position.
    mask : torch.Tensor or None
        ``[batch, seen_tokens]`` bool of the real tokens seen, or None while there was
        no padding.
    sequences : int or None
        Sequences the cache holds (None before the first token).
    """

    def __init__(self, config: GLASwaConfig) -> None:
        layers = [
            DynamicSlidingWindowLayer(sliding_window=config.sliding_window + 1)
            if i in config.attn_layers
            else LinearAttentionLayer()
            for i in range(config.num_hidden_layers)
        ]
        super().__init__(layers=layers)
        self.seen_tokens = 0
        self.mask: torch.Tensor | None = None
        self.sequences: int | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions seen so far (every layer has seen the same ones)."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select the sequences of a beam search (the padding mask follows them)."""
        super().reorder_cache(beam_idx)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, beam_idx.to(self.mask.device))

    def recurrent_state(self, layer_idx: int) -> torch.Tensor | None:
        """The GLA state of a layer, or None before its first token."""
        layer = self.layers[layer_idx]
        if not layer.is_recurrent_states_initialized[0]:
            return None
        return layer.recurrent_states[0]

    def set_recurrent_state(self, layer_idx: int, state: torch.Tensor) -> None:
        """Store the GLA state of a layer after new tokens."""
        self.layers[layer_idx].update_recurrent_state(state)

    def window(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values of a window layer; return the cached ones followed by them."""
        return self.layers[layer_idx].update(keys, values)
