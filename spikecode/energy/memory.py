"""Weight-fetch energy with silent-channel skipping (beyond the report; SPEC §6).

The SpikingBrain report (section 5.5) counts arithmetic only and *assumes* that the
weights of silent input channels are never fetched (18.4 % of channels in
SpikingBrain-7B). Its appendix C.2 names block-granular memory as the main reason real
hardware saves less. This module models both:

- **dense**: every token fetches the whole weight matrix ``W`` (``out × in``).
- **channel skip** (the report's idealisation): input channel ``c`` of a token is silent
  when its count is 0 (SPEC §5; for an unsigned code with a zero-point shift, when the
  count equals the zero point, i.e. its train has no spike); its weight column
  ``W[:, c]`` is not fetched for that token.
- **block skip** (appendix C.2): the input channels are cut into blocks of ``B``
  consecutive channels (the last block holds the ``in mod B`` remaining ones when ``B``
  does not divide ``in``); a block's weights are fetched for a token when any channel of
  the block fires for that token.

Assumptions (state them next to any number):

- Per-token fetch with no reuse: every token fetches the weights it needs again; no
  cache keeps weights between tokens. This is the pessimistic event-driven model; a
  batched dense accelerator reuses weights across tokens and fetches far less.
- Weights are stored input-channel-major (column ``W[:, c]`` contiguous, ``out ×
  weight_bits`` bits), so a skipped column or block is a skipped contiguous run.
- Memory is read in accesses of ``access_bits`` bits (64 for Horowitz) with energy
  ``E_access`` per access from the energy table; fetched bits are charged pro rata,
  ``accesses = bytes · 8 / access_bits`` (a partial word costs its share, no rounding
  up). With 64-bit accesses that is ``bytes / 8`` accesses.
- Only weight reads are counted: no activation, spike-event or output traffic, no
  address or control overhead.

Formulas (``T`` tokens, ``N = in_features``, ``M = out_features``, ``b = weight_bits``)::

    fetched columns  dense:   T · N
                     channel: Σ_t #{c : count[t, c] ≠ 0}
                     block B: Σ_t Σ_{blocks j active in token t} size_j,
                              size_j = min(B, N − j·B)
    bytes    = fetched columns · M · b / 8
    accesses = bytes · 8 / access_bits
    energy   = accesses · E_access(level)
    survival(B) = (dense − block_B) / (dense − channel)

``survival`` is the share of the idealised (channel-level) saving that survives at
block granularity: 1 for ``B = 1``; for ``B ≥ N`` only all-silent tokens save anything.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from spikecode._validate import count_rows
from spikecode.energy._validate import check_block_sizes, nonnegative_real, positive_int
from spikecode.energy.table import EnergyTable, load_table
from spikecode.errors import SpikecodeError

__all__ = [
    "DEFAULT_BLOCK_SIZES",
    "ChannelActivity",
    "FetchCost",
    "WeightFetch",
    "block_activity",
    "channel_activity",
    "fetch_energy",
    "weight_fetch",
]

DEFAULT_BLOCK_SIZES: tuple[int, ...] = (16, 64, 256)
"""Block sizes (input channels per block) reported by default."""


def _active_matrix(counts: npt.ArrayLike, zero_point: int = 0) -> np.ndarray:
    """Return the ``[tokens, in_features]`` boolean matrix ``count ≠ zero_point``."""
    if isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral):
        raise SpikecodeError(f"zero_point must be an integer, got {zero_point!r}")
    rows, _ = count_rows(counts, "spike counts")
    return rows != zero_point


def _block_matrix(active: np.ndarray, block_size: int) -> np.ndarray:
    tokens, n = active.shape
    n_blocks = -(-n // block_size)
    pad = n_blocks * block_size - n
    if pad:
        # Padding channels are silent, so they never make a block active.
        active = np.pad(active, ((0, 0), (0, pad)))
    return active.reshape(tokens, n_blocks, block_size).any(axis=-1)


def _block_lengths(n: int, block_size: int) -> np.ndarray:
    n_blocks = -(-n // block_size)
    lengths = np.full(n_blocks, block_size, dtype=np.int64)
    lengths[-1] = n - (n_blocks - 1) * block_size
    return lengths


def block_activity(counts: npt.ArrayLike, block_size: int, *, zero_point: int = 0) -> np.ndarray:
    """Which blocks of ``block_size`` consecutive input channels fire, per token.

    Parameters
    ----------
    counts
        Integer spike counts, shape ``[..., in_features]``; every leading index is one
        token. A channel is active when its count is non-zero (SPEC §5).
    block_size
        Channels per block ``B``; the last block is partial when ``B`` does not divide
        ``in_features``.
    zero_point
        Count value that fires no spike (see :func:`channel_activity`).

    Returns
    -------
    numpy.ndarray
        Boolean, shape ``[tokens, ceil(in_features / B)]``: True where at least one channel
        of the block is active in that token.
    """
    block_size = positive_int(block_size, "block size")
    return _block_matrix(_active_matrix(counts, zero_point), block_size)


@dataclass(frozen=True)
class ChannelActivity:
    """Which input channels need their weights, summed over tokens.

    Build it from counts with :func:`channel_activity`, or from a known silent fraction
    with :meth:`from_silent_fraction` (channel granularity only).

    Parameters
    ----------
    tokens
        Number of tokens ``T``.
    in_features
        Input channels ``N``.
    active_channels
        ``Σ_t #{c : count[t, c] ≠ 0}``: weight columns fetched under channel skipping.
        ``0 ≤ active_channels ≤ T·N``.
    block_fetched_channels
        Block size ``B`` → weight columns fetched under block skipping, ``Σ_t`` of the
        channel counts of the blocks active in token ``t``. Between ``active_channels``
        and ``T·N``. Empty when only a silent fraction is known.
    """

    tokens: int
    in_features: int
    active_channels: float
    block_fetched_channels: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tokens = positive_int(self.tokens, "tokens")
        n = positive_int(self.in_features, "in_features")
        elements = tokens * n
        active = nonnegative_real(self.active_channels, "active_channels")
        if active > elements:
            raise SpikecodeError(
                "more active channels than tokens × in_features",
                active_channels=active,
                elements=elements,
            )
        blocks = {}
        for size, fetched in dict(self.block_fetched_channels).items():
            size = positive_int(size, "block size")
            fetched = nonnegative_real(fetched, "block fetched channels", block_size=size)
            if not active <= fetched <= elements:
                raise SpikecodeError(
                    "block-fetched channels must lie between the active channels and "
                    "tokens × in_features",
                    block_size=size,
                    fetched=fetched,
                    active_channels=active,
                    elements=elements,
                )
            blocks[size] = fetched
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "in_features", n)
        object.__setattr__(self, "block_fetched_channels", MappingProxyType(blocks))

    @property
    def elements(self) -> int:
        """``tokens × in_features``: the weight columns a dense fetch reads."""
        return self.tokens * self.in_features

    @property
    def silent_fraction(self) -> float:
        """Share of (token, channel) elements with count 0 (SPEC §5)."""
        return 1.0 - self.active_channels / self.elements

    @classmethod
    def from_silent_fraction(
        cls, tokens: int, in_features: int, silent_fraction: float
    ) -> ChannelActivity:
        """Channel-level activity from a silent fraction alone (e.g. the report's 18.4 %).

        No block information can be derived from a fraction, so block skipping is
        unavailable for the result.
        """
        fraction = nonnegative_real(silent_fraction, "silent fraction")
        if fraction > 1:
            raise SpikecodeError(f"silent fraction must be in [0, 1], got {fraction!r}")
        tokens = positive_int(tokens, "tokens")
        n = positive_int(in_features, "in_features")
        return cls(tokens, n, (1.0 - fraction) * tokens * n)

    def merge(self, other: ChannelActivity) -> ChannelActivity:
        """Activity over the tokens of both (streaming calibration adds batches up).

        Both must have the same ``in_features``; the result keeps the block sizes both
        know.
        """
        if not isinstance(other, ChannelActivity):
            raise SpikecodeError(f"cannot merge a ChannelActivity with {type(other).__name__}")
        if other.in_features != self.in_features:
            raise SpikecodeError(
                "cannot merge channel activity of layers with different in_features",
                in_features=(self.in_features, other.in_features),
            )
        common = [b for b in self.block_fetched_channels if b in other.block_fetched_channels]
        return ChannelActivity(
            self.tokens + other.tokens,
            self.in_features,
            self.active_channels + other.active_channels,
            {b: self.block_fetched_channels[b] + other.block_fetched_channels[b] for b in common},
        )


def channel_activity(
    counts: npt.ArrayLike,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
    *,
    zero_point: int = 0,
) -> ChannelActivity:
    """Summarise which weight columns and blocks integer counts need (vectorised).

    Parameters
    ----------
    counts
        Integer spike counts, shape ``[..., in_features]`` (leading axes = tokens);
        NumPy, torch or array-like, validated as everywhere in spikecode.
    block_sizes
        Block sizes ``B`` to evaluate; any positive integer, divisor of ``in_features``
        or not.
    zero_point
        The count that fires no spike. 0 for the signed codes (SPEC §5: an element is
        silent when ``c = 0``); for an unsigned code coded with a zero-point shift
        (SPEC §3) it is the shift, as in :func:`spikecode.spike_stats`.

    Returns
    -------
    ChannelActivity
        Exact integer totals over all tokens.
    """
    sizes = check_block_sizes(block_sizes)
    active = _active_matrix(counts, zero_point)
    tokens, n = active.shape
    fetched = {}
    for size in sizes:
        per_block = _block_matrix(active, size).sum(axis=0, dtype=np.int64)
        fetched[size] = int(per_block @ _block_lengths(n, size))
    return ChannelActivity(tokens, n, int(np.count_nonzero(active)), fetched)


@dataclass(frozen=True)
class FetchCost:
    """Weight traffic and its energy for one fetch policy, over all tokens of a layer.

    Parameters
    ----------
    tokens
        Tokens the totals cover.
    fetched_channels
        Weight columns read, summed over tokens.
    bytes
        Bytes read: ``fetched_channels · out_features · weight_bits / 8``.
    accesses
        Memory accesses: ``bytes · 8 / access_bits``.
    energy_pj
        ``accesses · E_access``, in pJ.
    """

    tokens: int
    fetched_channels: float
    bytes: float
    accesses: float
    energy_pj: float

    @property
    def bytes_per_token(self) -> float:
        """Bytes read per token."""
        return self.bytes / self.tokens

    @property
    def accesses_per_token(self) -> float:
        """Memory accesses per token."""
        return self.accesses / self.tokens

    @property
    def energy_per_token_pj(self) -> float:
        """Energy per token, in pJ."""
        return self.energy_pj / self.tokens

    def to_dict(self) -> dict[str, float]:
        """JSON-ready totals and per-token values."""
        return {
            "fetched_channels": self.fetched_channels,
            "bytes": self.bytes,
            "accesses": self.accesses,
            "energy_pj": self.energy_pj,
            "bytes_per_token": self.bytes_per_token,
            "accesses_per_token": self.accesses_per_token,
            "energy_per_token_pj": self.energy_per_token_pj,
        }


FETCH_COST_KEYS = (
    "fetched_channels",
    "bytes",
    "accesses",
    "energy_pj",
    "bytes_per_token",
    "accesses_per_token",
    "energy_per_token_pj",
)


def _survival(dense: float, channel: float | None, block: float | None) -> float | None:
    if channel is None or block is None or dense == channel:
        return None
    return (dense - block) / (dense - channel)


@dataclass(frozen=True)
class WeightFetch:
    """Weight-fetch traffic and energy of one layer: dense, channel skip, block skip.

    Parameters
    ----------
    level
        Memory level name from the energy table (``"dram"``...).
    access_pj
        Energy of one access, pJ.
    access_bits
        Bits per access.
    weight_bits
        Bits per weight (8 for the INT8 weights of W8ASpike, SPEC §4).
    tokens, in_features, out_features
        Layer shape and token count.
    dense
        Every token fetches all weights.
    channel
        Silent channels skipped (None when no silent-channel information was given).
    blocks
        Block size → cost with block skipping (None where that block size is unknown).
    """

    level: str
    access_pj: float
    access_bits: int
    weight_bits: int
    tokens: int
    in_features: int
    out_features: int
    dense: FetchCost
    channel: FetchCost | None
    blocks: Mapping[int, FetchCost | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", MappingProxyType(dict(self.blocks)))

    @property
    def survival(self) -> Mapping[int, float | None]:
        """Block size → ``(dense − block) / (dense − channel)`` in energy.

        The share of the channel-level (idealised) saving kept at block granularity.
        None when undefined: no channel or block data, or no silent channel at all.
        """
        channel = None if self.channel is None else self.channel.energy_pj
        return MappingProxyType(
            {
                size: _survival(
                    self.dense.energy_pj, channel, None if cost is None else cost.energy_pj
                )
                for size, cost in self.blocks.items()
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict; block entries are a list ordered as requested."""
        survival = self.survival
        return {
            "level": self.level,
            "access_pj": self.access_pj,
            "access_bits": self.access_bits,
            "weight_bits": self.weight_bits,
            "dense": self.dense.to_dict(),
            "channel_skip": None if self.channel is None else self.channel.to_dict(),
            "block_skip": [
                {
                    "block_size": size,
                    **(dict.fromkeys(FETCH_COST_KEYS) if cost is None else cost.to_dict()),
                    "survival": survival[size],
                }
                for size, cost in self.blocks.items()
            ],
        }


def _cost(
    fetched_channels: float,
    tokens: int,
    out_features: int,
    weight_bits: int,
    access_bits: int,
    access_pj: float,
) -> FetchCost:
    n_bytes = fetched_channels * out_features * weight_bits / 8
    accesses = n_bytes * 8 / access_bits
    return FetchCost(tokens, fetched_channels, n_bytes, accesses, accesses * access_pj)


def fetch_energy(
    tokens: int,
    in_features: int,
    out_features: int,
    activity: ChannelActivity | None,
    *,
    weight_bits: int = 8,
    memory: str | None = None,
    table: str | Mapping[str, Any] | EnergyTable | None = None,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
) -> WeightFetch:
    """Weight-fetch cost of a layer from its shape and (optional) channel activity.

    The formulas and assumptions are in the module docstring. Without ``activity`` only
    the dense fetch is known; a block size missing from ``activity`` gives None.

    Parameters
    ----------
    tokens, in_features, out_features
        Token count and layer shape (``W`` is ``[out_features, in_features]``).
    activity
        Silent-channel information, or None.
    weight_bits
        Bits per stored weight (8 for INT8).
    memory
        Memory level name of the table (None: the table's default level, ``"dram"``,
        1.3 nJ per 64-bit access, for the default table).
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    block_sizes
        Block sizes to report.

    Returns
    -------
    WeightFetch
        Dense, channel-skip and block-skip costs.
    """
    energy_table = load_table(table)
    level = energy_table.resolve_level(memory)
    access_pj = energy_table.access_pj(level)
    tokens = positive_int(tokens, "tokens")
    in_features = positive_int(in_features, "in_features")
    out_features = positive_int(out_features, "out_features")
    weight_bits = positive_int(weight_bits, "weight_bits")
    sizes = check_block_sizes(block_sizes)
    if activity is not None and (activity.tokens, activity.in_features) != (
        tokens,
        in_features,
    ):
        raise SpikecodeError(
            "channel activity does not match the layer",
            activity=(activity.tokens, activity.in_features),
            layer=(tokens, in_features),
        )

    def cost(fetched: float) -> FetchCost:
        return _cost(
            fetched, tokens, out_features, weight_bits, energy_table.access_bits, access_pj
        )

    blocks: dict[int, FetchCost | None] = {}
    for size in sizes:
        fetched = None if activity is None else activity.block_fetched_channels.get(size)
        blocks[size] = None if fetched is None else cost(fetched)
    return WeightFetch(
        level=level,
        access_pj=access_pj,
        access_bits=energy_table.access_bits,
        weight_bits=weight_bits,
        tokens=tokens,
        in_features=in_features,
        out_features=out_features,
        dense=cost(tokens * in_features),
        channel=None if activity is None else cost(activity.active_channels),
        blocks=blocks,
    )


def weight_fetch(
    counts: npt.ArrayLike | ChannelActivity,
    out_features: int,
    *,
    weight_bits: int = 8,
    memory: str | None = None,
    table: str | Mapping[str, Any] | EnergyTable | None = None,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
    zero_point: int = 0,
) -> WeightFetch:
    """Weight-fetch bytes and energy for dense, channel-skip and block-skip fetching.

    Parameters
    ----------
    counts
        Integer spike counts ``[..., in_features]`` (leading axes = tokens), or a
        :class:`ChannelActivity` already computed from them.
    out_features
        Output channels ``M`` of the layer (length of a weight column).
    weight_bits
        Bits per stored weight (8 for INT8, SPEC §4).
    memory
        Memory level of the energy table; None: the table's default (``"dram"`` =
        1.3 nJ per 64-bit access in the default Horowitz table).
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    block_sizes
        Block sizes ``B`` (default 16, 64, 256); they need not divide ``in_features``.
    zero_point
        The count that fires no spike (0 for signed codes; see :func:`channel_activity`).

    Returns
    -------
    WeightFetch
        Totals and per-token bytes, accesses and energy for each policy, plus
        ``survival`` per block size.
    """
    if isinstance(counts, ChannelActivity):
        activity = counts
    else:
        activity = channel_activity(counts, block_sizes, zero_point=zero_point)
    return fetch_energy(
        activity.tokens,
        activity.in_features,
        out_features,
        activity,
        weight_bits=weight_bits,
        memory=memory,
        table=table,
        block_sizes=block_sizes,
    )
