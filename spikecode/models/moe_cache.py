"""The decoding cache of the hybrid-linear MoE model (SPEC §8).

Per layer it keeps what the next token needs and nothing more:

- the **sink tokens'** rotated keys and values of every softmax attention (window branch
  of a hybrid layer, or a full-attention layer): every later token attends to them;
- the **token keys and values**: the last ``sliding_window`` of them for a window branch
  (with the new token's own key that is the ``W + 1`` keys a full forward pass gives the
  same position), all of them for a full-attention layer;
- the **linear-attention state** ``S`` of a hybrid layer's linear branch
  (``[batch, kv_heads, head_dim, head_dim]``), which starts as the state after the sinks.

It also keeps the attention mask of every token seen, from which each row's rotary
positions follow (the count of its real tokens), so a left-padded row continues at the
position the same prompt alone would reach.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from spikecode.models.moe_config import HybridMoEConfig

__all__ = ["HybridMoECache"]


class HybridMoECache(Cache):
    """Decoding state of a :class:`~spikecode.models.hybrid_moe.SpikingBrainMoEForCausalLM`.

    Parameters
    ----------
    config
        The architecture.

    Attributes
    ----------
    seen_tokens : int
        Token positions processed so far (padding included, sinks excluded).
    mask : torch.Tensor or None
        ``[batch, seen_tokens]`` bool of the real tokens seen.
    sequences : int or None
        Sequences the cache holds.
    """

    def __init__(self, config: HybridMoEConfig) -> None:
        # transformers' Cache wants one layer object per model layer; the storage below is
        # this cache's own (a hybrid layer holds both a window and a recurrent state).
        super().__init__(layers=[DynamicLayer() for _ in range(config.num_hidden_layers)])
        self.config = config
        self.seen_tokens = 0
        self.mask: torch.Tensor | None = None
        self.sequences: int | None = None
        self.has_sinks = False
        self.sink_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.token_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.linear_state: dict[int, torch.Tensor] = {}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Token positions seen so far (sinks excluded)."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select the sequences of a beam search."""

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, beam_idx.to(t.device))

        self.sink_kv = {i: (pick(k), pick(v)) for i, (k, v) in self.sink_kv.items()}
        self.token_kv = {i: (pick(k), pick(v)) for i, (k, v) in self.token_kv.items()}
        self.linear_state = {i: pick(s) for i, s in self.linear_state.items()}
        if self.mask is not None:
            self.mask = pick(self.mask)

    def expand_sinks(self, batch: int) -> None:
        """Repeat the sinks' keys, values and states (computed once, batch 1) for ``batch`` rows."""
        self.sink_kv = {
            i: (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
            for i, (k, v) in self.sink_kv.items()
        }
        self.linear_state = {
            i: s.expand(batch, -1, -1, -1).clone() for i, s in self.linear_state.items()
        }
        self.has_sinks = True

    def tokens(
        self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, keep: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new token keys/values; return the cached ones followed by them.

        ``keep`` is how many of the latest keys to keep for the next call (the window),
        or None to keep all (full attention).
        """
        if layer_idx in self.token_kv:
            old_k, old_v = self.token_kv[layer_idx]
            keys = torch.cat([old_k, keys], dim=2)
            values = torch.cat([old_v, values], dim=2)
        if keep is None:
            self.token_kv[layer_idx] = (keys, values)
        else:
            self.token_kv[layer_idx] = (keys[:, :, -keep:], values[:, :, -keep:])
        return keys, values
