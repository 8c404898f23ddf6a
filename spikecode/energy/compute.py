"""Arithmetic energy of dense and spike-driven linear layers (report section 5.5, SPEC §6).

A linear layer ``W`` of shape ``[out_features, in_features]`` applied to ``T`` tokens:

- dense execution in mode ``d`` ∈ {fp32, fp16, int8} performs ``T · in · out``
  multiply-accumulates, each costing ``E(d mult) + E(d add)`` (SPEC §6: FP16 MAC 1.5 pJ,
  INT8 MAC 0.23 pJ);
- spike-driven execution (SPEC §4) adds one weight per (spike × output):
  ``Σ|spikes| · out`` accumulates, each an INT8 addition (the counting rule of the
  report, ``Σ|spikes| × fan-out``: negative spikes count as additions too).

Per MAC-equivalent, the spike-driven cost is the report's equation 24,
``E_spike_MAC = (average spikes per element) · E(INT8 add)``.

As in the report, the estimate leaves out: memory traffic (see
:mod:`spikecode.energy.memory`), control and event-routing overhead, accumulator width
(additions are charged as INT8 adds though partial sums are wider), the shift-and-add that
combines the time steps of bitwise codes, and the per-output rescaling by ``Vth · σ``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy.typing as npt

from spikecode.encoders.schemes import MAX_UNARY_T
from spikecode.energy._validate import nonnegative_real, positive_int
from spikecode.energy.memory import (
    DEFAULT_BLOCK_SIZES,
    ChannelActivity,
    WeightFetch,
    channel_activity,
    fetch_energy,
)
from spikecode.energy.table import EnergyTable, load_table
from spikecode.errors import SpikecodeError
from spikecode.stats import SpikeStats

__all__ = [
    "DENSE_MODES",
    "MODES",
    "LayerEnergy",
    "LayerSpec",
    "OpCounts",
    "layer_energy",
    "mac_energy",
    "op_counts",
    "ratio",
    "reduction",
]

DENSE_MODES = ("fp32", "fp16", "int8")
#: No int32 count spikes more than |-2**31| times, so no average can exceed it.
MAX_SPIKES_PER_ELEMENT = MAX_UNARY_T
"""Dense execution modes: one MAC (mult + add) of that type per weight and token."""

MODES = (*DENSE_MODES, "spike")
"""All execution modes; ``spike`` charges one INT8 add per spike and output."""

TableLike = str | Mapping[str, Any] | EnergyTable | None


def reduction(spike: float, dense: float) -> float | None:
    """Fractional saving ``1 − spike / dense`` (0.977 means 97.7 % below dense).

    Returns None when ``dense`` is 0 (undefined) or the quotient overflows.
    """
    if dense == 0:
        return None
    value = 1.0 - spike / dense
    return value if math.isfinite(value) else None


def ratio(dense: float, spike: float) -> float | None:
    """How many times cheaper spike-driven is: ``dense / spike`` (printed as ``44.2×``).

    Returns None when ``spike`` is 0 or so small that the ratio overflows (infinite or
    undefined), so results stay JSON-safe.
    """
    if spike == 0:
        return None
    value = dense / spike
    return value if math.isfinite(value) else None


def mac_energy(avg_spikes_per_element: float, table: TableLike = None) -> dict[str, Any]:
    """Energy of one MAC-equivalent, dense against spike-driven (report eq. 24, SPEC §6).

    ``spike_mac_pj = avg_spikes_per_element × E(INT8 add)``. With the default table and
    1.13 spikes per element: 0.0339 pJ, 97.7 % below FP16 (1.5 pJ) and 85.3 % below
    INT8 (0.23 pJ), 44.2× and 6.78× cheaper. (The report prints 85.2 %, 43.48× and
    6.76×, computed from rounded percentages; SPEC §6.)

    Parameters
    ----------
    avg_spikes_per_element
        Average spikes per element, ``Σ spikes / elements`` (SPEC §5).
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.

    Returns
    -------
    dict
        ``avg_spikes_per_element``, ``int8_add_pj``, ``spike_mac_pj``, ``fp32_mac_pj``,
        ``fp16_mac_pj``, ``int8_mac_pj`` (pJ); ``reduction_vs_fp32``,
        ``reduction_vs_fp16``, ``reduction_vs_int8`` (fractions, ``1 − spike/dense``);
        ``ratio_vs_fp32``, ``ratio_vs_fp16``, ``ratio_vs_int8`` (``dense/spike``, None when
        the spike energy is 0). Keys are stable: the CLI relies on them.
    """
    energy_table = load_table(table)
    spikes = nonnegative_real(avg_spikes_per_element, "average spikes per element")
    if spikes > MAX_SPIKES_PER_ELEMENT:
        raise SpikecodeError(
            f"average spikes per element must be at most {MAX_SPIKES_PER_ELEMENT} "
            f"(no int32 count needs more spikes), got {spikes:.4g}"
        )
    add = energy_table.add_pj("int8")
    spike = spikes * add
    out: dict[str, Any] = {
        "avg_spikes_per_element": spikes,
        "int8_add_pj": add,
        "spike_mac_pj": spike,
    }
    dense = {mode: energy_table.mac_pj(mode) for mode in DENSE_MODES}
    out.update({f"{mode}_mac_pj": dense[mode] for mode in DENSE_MODES})
    out.update({f"reduction_vs_{mode}": reduction(spike, dense[mode]) for mode in DENSE_MODES})
    out.update({f"ratio_vs_{mode}": ratio(dense[mode], spike) for mode in DENSE_MODES})
    return out


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer and what flowed through it: the input of the energy model.

    Parameters
    ----------
    name
        Layer name (``"model.layers.0.mlp.down_proj"``).
    in_features, out_features
        Shape of ``W``: ``[out_features, in_features]``; ``out_features`` is the fan-out
        of every input spike.
    tokens
        Tokens ``T`` the counts cover (>= 1).
    total_spikes
        ``Σ spikes`` over all ``T · in_features`` elements, spikes as defined in SPEC §5
        (non-zero steps of each element's train, so they depend on the spike code).
        An integer for measured data; a float when derived from a rate.
    activity
        Optional silent-channel information for the memory model; must match
        ``tokens`` and ``in_features``.
    token_share
        The layer's tokens per token of the model, in (0, 1]: 1 for a layer every token
        runs through; for a routed expert the share of tokens routed to it (SPEC §8).
        Per-token figures are per token of the model: ``total / tokens · token_share``.

    Notes
    -----
    Use :meth:`from_rate` when only the average spikes per element is known, and
    :meth:`from_counts` to derive the silent-channel information from counts.
    """

    name: str
    in_features: int
    out_features: int
    tokens: int
    total_spikes: float
    activity: ChannelActivity | None = None
    token_share: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpikecodeError(f"layer name must be a non-empty string, got {self.name!r}")
        layer = self.name
        share = self.token_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise SpikecodeError(
                f"token_share must be a number in (0, 1], got {share!r}", layer=layer
            )
        object.__setattr__(
            self, "in_features", positive_int(self.in_features, "in_features", layer=layer)
        )
        object.__setattr__(
            self, "out_features", positive_int(self.out_features, "out_features", layer=layer)
        )
        object.__setattr__(self, "tokens", positive_int(self.tokens, "tokens", layer=layer))
        object.__setattr__(
            self, "total_spikes", nonnegative_real(self.total_spikes, "total spikes", layer=layer)
        )
        activity = self.activity
        if activity is None:
            return
        if not isinstance(activity, ChannelActivity):
            raise SpikecodeError(
                f"activity must be a ChannelActivity or None, got {type(activity).__name__}",
                layer=layer,
            )
        if (activity.tokens, activity.in_features) != (self.tokens, self.in_features):
            raise SpikecodeError(
                "channel activity does not match the layer's tokens and in_features",
                layer=layer,
                activity=(activity.tokens, activity.in_features),
                expected=(self.tokens, self.in_features),
            )

    @property
    def elements(self) -> int:
        """``tokens × in_features``: the input elements (SPEC §5)."""
        return self.tokens * self.in_features

    @property
    def spikes_per_element(self) -> float:
        """Average spikes per element, ``Σ spikes / elements`` (SPEC §5)."""
        return self.total_spikes / self.elements

    @property
    def silent_fraction(self) -> float | None:
        """Share of elements with count 0 (SPEC §5); None without activity information."""
        return None if self.activity is None else self.activity.silent_fraction

    @classmethod
    def from_rate(
        cls,
        name: str,
        in_features: int,
        out_features: int,
        tokens: int,
        spikes_per_element: float,
        activity: ChannelActivity | None = None,
    ) -> LayerSpec:
        """Layer from its average spikes per element (e.g. the report's 1.13)."""
        rate = nonnegative_real(spikes_per_element, "spikes per element", layer=name)
        return cls(
            name,
            in_features,
            out_features,
            tokens,
            rate
            * positive_int(tokens, "tokens", layer=name)
            * positive_int(in_features, "in_features"),
            activity,
        )

    @classmethod
    def from_counts(
        cls,
        name: str,
        counts: npt.ArrayLike,
        out_features: int,
        total_spikes: float | SpikeStats,
        block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
        *,
        zero_point: int = 0,
    ) -> LayerSpec:
        """Layer from its integer spike counts ``[..., in_features]``.

        Parameters
        ----------
        name, out_features
            As in the class.
        counts
            Integer counts; leading axes are tokens. They give ``tokens``,
            ``in_features`` and the silent-channel :class:`ChannelActivity` (with
            ``block_sizes``).
        total_spikes
            Spikes of those counts under the chosen spike code (SPEC §3, §5) — the code
            decides how many spikes a count costs, so it is passed in: a number, or the
            :class:`~spikecode.SpikeStats` of the same counts (its ``spikes``).
        block_sizes
            Block sizes to evaluate for the memory model.
        zero_point
            The count that fires no spike (0 for signed codes; see
            :func:`~spikecode.energy.channel_activity`).
        """
        activity = channel_activity(counts, block_sizes, zero_point=zero_point)
        if isinstance(total_spikes, SpikeStats):
            if total_spikes.elements != activity.elements:
                raise SpikecodeError(
                    "the spike statistics cover a different number of elements than the counts",
                    layer=name,
                    stats_elements=total_spikes.elements,
                    count_elements=activity.elements,
                )
            total_spikes = total_spikes.spikes
        return cls(
            name, activity.in_features, out_features, activity.tokens, total_spikes, activity
        )

    @classmethod
    def from_stats(
        cls, name: str, stats: SpikeStats, in_features: int, out_features: int
    ) -> LayerSpec:
        """Layer from its :class:`~spikecode.SpikeStats` (e.g. merged over a calibration run).

        Gives the spike total and channel-level silent information (``stats.silent``);
        block skipping needs the counts themselves (:meth:`from_counts`).

        Parameters
        ----------
        name
            Layer name.
        stats
            Statistics of all the layer's input elements; ``stats.elements`` must be a
            multiple of ``in_features``.
        in_features, out_features
            Layer shape.
        """
        if not isinstance(stats, SpikeStats):
            raise SpikecodeError(f"expected SpikeStats, got {type(stats).__name__}", layer=name)
        n = positive_int(in_features, "in_features", layer=name)
        tokens, rest = divmod(stats.elements, n)
        if rest or tokens == 0:
            raise SpikecodeError(
                "spike statistics do not cover a whole number of tokens of this layer",
                layer=name,
                elements=stats.elements,
                in_features=n,
            )
        activity = ChannelActivity(tokens, n, stats.elements - stats.silent)
        return cls(name, n, out_features, tokens, stats.spikes, activity)


@dataclass(frozen=True)
class OpCounts:
    """Operations of one layer over its tokens (SPEC §6).

    Parameters
    ----------
    tokens
        Tokens counted.
    token_share
        The layer's tokens per token of the model (:class:`LayerSpec`).
    dense_macs
        ``tokens · in_features · out_features`` multiply-accumulates.
    spike_accumulates
        ``Σ|spikes| · out_features`` additions (spike-driven, SPEC §4).
    """

    tokens: int
    dense_macs: int
    spike_accumulates: float
    token_share: float = 1.0

    @property
    def dense_macs_per_token(self) -> float:
        """``in_features · out_features · token_share`` per token of the model."""
        return self.dense_macs / self.tokens * self.token_share

    @property
    def spike_accumulates_per_token(self) -> float:
        """Spike-driven additions per token of the model."""
        return self.spike_accumulates / self.tokens * self.token_share

    def to_dict(self) -> dict[str, float]:
        """JSON-ready totals and per-token values."""
        return {
            "dense_macs": self.dense_macs,
            "spike_accumulates": self.spike_accumulates,
            "dense_macs_per_token": self.dense_macs_per_token,
            "spike_accumulates_per_token": self.spike_accumulates_per_token,
        }


def op_counts(layer: LayerSpec) -> OpCounts:
    """Dense MACs and spike-driven accumulates of ``layer`` (SPEC §4, §6).

    ``dense_macs = T · in · out``; ``spike_accumulates = total_spikes · out``.
    """
    if not isinstance(layer, LayerSpec):
        raise SpikecodeError(f"expected a LayerSpec, got {type(layer).__name__}")
    return OpCounts(
        tokens=layer.tokens,
        dense_macs=layer.tokens * layer.in_features * layer.out_features,
        spike_accumulates=layer.total_spikes * layer.out_features,
        token_share=layer.token_share,
    )


@dataclass(frozen=True)
class LayerEnergy:
    """Energy of one layer in every execution mode, with memory when requested.

    Parameters
    ----------
    layer
        The input description.
    ops
        Operation counts.
    energy_pj
        Mode (``fp32``, ``fp16``, ``int8``, ``spike``) → arithmetic energy over all the
        layer's tokens, pJ.
    memory
        Weight-fetch model, or None when no memory level was asked for.
    """

    layer: LayerSpec
    ops: OpCounts
    energy_pj: Mapping[str, float]
    memory: WeightFetch | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "energy_pj", MappingProxyType(dict(self.energy_pj)))

    @property
    def energy_per_token_pj(self) -> Mapping[str, float]:
        """Mode → arithmetic energy per token of the model, pJ."""
        per = self.layer.token_share / self.layer.tokens
        return MappingProxyType({m: e * per for m, e in self.energy_pj.items()})

    @property
    def reduction(self) -> Mapping[str, float | None]:
        """Dense mode → fractional saving of spike-driven execution, ``1 − spike/dense``."""
        spike = self.energy_pj["spike"]
        return MappingProxyType({m: reduction(spike, self.energy_pj[m]) for m in DENSE_MODES})

    @property
    def ratio(self) -> Mapping[str, float | None]:
        """Dense mode → ``dense / spike`` (None when the spike energy is 0)."""
        spike = self.energy_pj["spike"]
        return MappingProxyType({m: ratio(self.energy_pj[m], spike) for m in DENSE_MODES})


def layer_energy(
    layer: LayerSpec,
    table: TableLike = None,
    *,
    memory: str | None = None,
    weight_bits: int = 8,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
) -> LayerEnergy:
    """Arithmetic (and optionally weight-fetch) energy of one layer.

    ``E_d = dense_macs · (E(d mult) + E(d add))`` for d ∈ {fp32, fp16, int8};
    ``E_spike = spike_accumulates · E(INT8 add)`` (SPEC §6, report eq. 24 per MAC).

    Parameters
    ----------
    layer
        The layer.
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    memory
        Memory level for the weight-fetch model (see :mod:`spikecode.energy.memory`);
        None leaves memory out, as the report does.
    weight_bits
        Bits per stored weight for the memory model.
    block_sizes
        Block sizes for the memory model.

    Returns
    -------
    LayerEnergy
        Energies per mode, per layer and per token, with reductions and ratios.
    """
    energy_table = load_table(table)
    ops = op_counts(layer)
    energy = {mode: ops.dense_macs * energy_table.mac_pj(mode) for mode in DENSE_MODES}
    energy["spike"] = ops.spike_accumulates * energy_table.add_pj("int8")
    fetch = None
    if memory is not None:
        fetch = fetch_energy(
            layer.tokens,
            layer.in_features,
            layer.out_features,
            layer.activity,
            weight_bits=weight_bits,
            memory=memory,
            table=energy_table,
            block_sizes=block_sizes,
        )
    return LayerEnergy(layer=layer, ops=ops, energy_pj=energy, memory=fetch)
