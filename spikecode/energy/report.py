"""Per-layer and whole-network energy breakdown: what the CLI and the plots consume.

:func:`energy_report` turns a list of :class:`~spikecode.energy.LayerSpec` into an
:class:`EnergyReport`. Totals are **per token through the whole network**: each layer
sees every token once, so the network's energy per token is the sum of the layers'
energies per token (layers may have been measured on different token counts). All
values are plain Python numbers; ``to_dict()`` and ``rows()`` are JSON- and CSV-ready
(undefined ratios are None, never NaN or infinity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spikecode.energy._validate import check_block_sizes, positive_int
from spikecode.energy.compute import (
    DENSE_MODES,
    MODES,
    LayerEnergy,
    LayerSpec,
    TableLike,
    layer_energy,
    ratio,
    reduction,
)
from spikecode.energy.memory import DEFAULT_BLOCK_SIZES
from spikecode.energy.table import EnergyTable, load_table
from spikecode.errors import SpikecodeError

__all__ = ["ASSUMPTIONS", "EnergyReport", "energy_report"]

ASSUMPTIONS = (
    "Energies per operation: 45 nm, 0.9 V (Horowitz, ISSCC 2014) unless another table "
    "is given; a dense MAC costs mult + add, a spike-driven accumulate one INT8 add "
    "(SpikingBrain report section 5.5, eq. 24).",
    "Spike-driven additions = sum of |spikes| x fan-out (out_features); negative spikes "
    "count as additions.",
    "Arithmetic only unless a memory level is given: no control, event-routing, "
    "accumulator-width, time-step combination or rescaling costs.",
    "Weight fetch (when modelled): every token fetches the weights it needs, with no "
    "reuse across tokens (pessimistic event-driven model); a silent input channel's "
    "weight column is skipped (channel skip) or a block of B consecutive input channels "
    "is fetched when any of them fires (block skip).",
    "Memory energy per access of the table's access width (64 bits for Horowitz); bytes "
    "are charged pro rata, accesses = bytes * 8 / access_bits. Only weight reads count.",
    "Totals are per token through the network: the sum over layers of each layer's "
    "energy per token.",
)
"""Short statements of the model's assumptions, carried in every report's ``to_dict()``."""

_Fetch = tuple[float, float, float]  # bytes, accesses, energy (pJ) per token


@dataclass(frozen=True)
class _Summary:
    """Per-token figures of one layer or of the whole network."""

    macs: float
    accumulates: float
    energy: Mapping[str, float]
    # policy ("dense", "channel" or a block size) -> per-token fetch, or None if unknown
    fetch: Mapping[Any, _Fetch | None] | None

    @property
    def reduction(self) -> dict[str, float | None]:
        return {m: reduction(self.energy["spike"], self.energy[m]) for m in DENSE_MODES}

    @property
    def ratio(self) -> dict[str, float | None]:
        return {m: ratio(self.energy[m], self.energy["spike"]) for m in DENSE_MODES}

    def survival(self, block_size: int) -> float | None:
        """``(dense − block) / (dense − channel)`` in energy; None where undefined.

        Only called on summaries that carry fetch figures.
        """
        fetch = self.fetch or {}
        dense, channel, block = fetch["dense"], fetch["channel"], fetch[block_size]
        if dense is None or channel is None or block is None or dense[2] == channel[2]:
            return None
        return (dense[2] - block[2]) / (dense[2] - channel[2])

    def combined(self, block_sizes: Sequence[int]) -> dict[str, float | None] | None:
        """Arithmetic + weight fetch per token for the execution/fetch pairs that matter."""
        fetch = self.fetch
        if fetch is None:
            return None

        def plus(mode: str, policy: Any) -> float | None:
            fetched = fetch[policy]
            return None if fetched is None else self.energy[mode] + fetched[2]

        out = {
            "int8_dense_fetch": plus("int8", "dense"),
            "spike_dense_fetch": plus("spike", "dense"),
            "spike_channel_skip": plus("spike", "channel"),
        }
        out.update({f"spike_block_{b}": plus("spike", b) for b in block_sizes})
        return out


def _layer_summary(result: LayerEnergy, block_sizes: Sequence[int]) -> _Summary:
    fetch: dict[Any, _Fetch | None] | None = None
    if result.memory is not None:
        memory = result.memory

        share = result.layer.token_share

        def per_token(cost: Any) -> _Fetch | None:
            if cost is None:
                return None
            return (
                cost.bytes_per_token * share,
                cost.accesses_per_token * share,
                cost.energy_per_token_pj * share,
            )

        fetch = {"dense": per_token(memory.dense), "channel": per_token(memory.channel)}
        fetch.update({b: per_token(memory.blocks[b]) for b in block_sizes})
    return _Summary(
        macs=result.ops.dense_macs_per_token,
        accumulates=result.ops.spike_accumulates_per_token,
        energy=dict(result.energy_per_token_pj),
        fetch=fetch,
    )


def _sum_fetch(parts: Sequence[_Fetch | None]) -> _Fetch | None:
    # A network total needs every layer's figure; one unknown makes it unknown.
    known = [part for part in parts if part is not None]
    if len(known) < len(parts):
        return None
    return (
        sum(part[0] for part in known),
        sum(part[1] for part in known),
        sum(part[2] for part in known),
    )


def _sum_summaries(summaries: Sequence[_Summary]) -> _Summary:
    fetches = [s.fetch for s in summaries if s.fetch is not None]
    fetch = None
    if fetches and len(fetches) == len(summaries):
        fetch = {policy: _sum_fetch([f[policy] for f in fetches]) for policy in fetches[0]}
    return _Summary(
        macs=sum(s.macs for s in summaries),
        accumulates=sum(s.accumulates for s in summaries),
        energy={m: sum(s.energy[m] for s in summaries) for m in MODES},
        fetch=fetch,
    )


@dataclass(frozen=True)
class EnergyReport:
    """Energy breakdown of a list of layers, per layer and for the whole network.

    Parameters
    ----------
    table
        The energy table used.
    layers
        One :class:`~spikecode.energy.LayerEnergy` per input layer, in input order.
    memory
        Memory level of the weight-fetch model, or None (arithmetic only).
    weight_bits
        Bits per stored weight used by the memory model.
    block_sizes
        Block sizes of the memory model.
    """

    table: EnergyTable
    layers: tuple[LayerEnergy, ...]
    memory: str | None
    weight_bits: int
    block_sizes: tuple[int, ...]

    def _summaries(self) -> list[_Summary]:
        return [_layer_summary(layer, self.block_sizes) for layer in self.layers]

    @property
    def total_energy_per_token_pj(self) -> dict[str, float]:
        """Mode → network arithmetic energy per token (sum over layers), pJ."""
        return dict(_sum_summaries(self._summaries()).energy)

    @property
    def spikes_per_element(self) -> float:
        """Network average spikes per element, ``Σ spikes / Σ elements`` (SPEC §5)."""
        return sum(r.layer.total_spikes for r in self.layers) / sum(
            r.layer.elements for r in self.layers
        )

    @property
    def effective_spikes_per_mac(self) -> float:
        """Spike-driven accumulates per dense MAC, per token over the network.

        The average spikes per element that, put into report eq. 24, gives the
        network's spike-driven energy per token: layers weigh by their fan-out.
        """
        total = _sum_summaries(self._summaries())
        return total.accumulates / total.macs

    @property
    def silent_fraction(self) -> float | None:
        """Share of silent elements over all layers (SPEC §5); None if any layer lacks it."""
        activities = [r.layer.activity for r in self.layers if r.layer.activity is not None]
        if len(activities) < len(self.layers):
            return None
        active = sum(activity.active_channels for activity in activities)
        return 1.0 - active / sum(r.layer.elements for r in self.layers)

    def _total_memory_dict(self, total: _Summary) -> dict[str, Any] | None:
        if total.fetch is None or self.memory is None:
            return None
        keys = ("bytes_per_token", "accesses_per_token", "energy_per_token_pj")

        def policy(fetched: _Fetch | None) -> dict[str, float | None]:
            return dict.fromkeys(keys) if fetched is None else dict(zip(keys, fetched, strict=True))

        channel = total.fetch["channel"]
        return {
            "level": self.memory,
            "access_pj": self.table.access_pj(self.memory),
            "access_bits": self.table.access_bits,
            "weight_bits": self.weight_bits,
            "dense": policy(total.fetch["dense"]),
            "channel_skip": None if channel is None else policy(channel),
            "block_skip": [
                {"block_size": b, **policy(total.fetch[b]), "survival": total.survival(b)}
                for b in self.block_sizes
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict.

        Top-level keys: ``table`` (name, unit, source, description), ``settings``
        (memory, weight_bits, block_sizes), ``assumptions`` (list of strings),
        ``layers`` (list, one dict per layer) and ``total``.

        A layer dict: ``name``, ``in_features``, ``out_features``, ``tokens``,
        ``total_spikes``, ``spikes_per_element``, ``silent_fraction``, ``ops``
        (``dense_macs``, ``spike_accumulates`` and their ``_per_token`` values),
        ``energy_pj`` and ``energy_per_token_pj`` (mode → pJ for ``fp32``, ``fp16``,
        ``int8``, ``spike``), ``reduction`` and ``ratio`` (``vs_fp32``, ``vs_fp16``,
        ``vs_int8``), ``memory`` (None, or level, access_pj, access_bits, weight_bits,
        ``dense``, ``channel_skip`` and ``block_skip`` — a list of dicts with
        ``block_size``, ``fetched_channels``, ``bytes``, ``accesses``, ``energy_pj``, the
        ``_per_token`` values and ``survival``) and ``combined_per_token_pj`` (None, or
        ``int8_dense_fetch``, ``spike_dense_fetch``, ``spike_channel_skip``,
        ``spike_block_<B>``: arithmetic + weight fetch per token).

        ``total``: ``layers`` (count), ``spikes_per_element``,
        ``effective_spikes_per_mac``, ``silent_fraction``, ``ops`` (per token),
        ``energy_per_token_pj``, ``reduction``, ``ratio``, ``memory`` (per-token values
        only) and ``combined_per_token_pj``.
        """
        summaries = self._summaries()
        total = _sum_summaries(summaries)
        layers = []
        for result, summary in zip(self.layers, summaries, strict=True):
            spec = result.layer
            layers.append(
                {
                    "name": spec.name,
                    "in_features": spec.in_features,
                    "out_features": spec.out_features,
                    "tokens": spec.tokens,
                    "token_share": spec.token_share,
                    "total_spikes": spec.total_spikes,
                    "spikes_per_element": spec.spikes_per_element,
                    "silent_fraction": spec.silent_fraction,
                    "ops": result.ops.to_dict(),
                    "energy_pj": dict(result.energy_pj),
                    "energy_per_token_pj": dict(result.energy_per_token_pj),
                    "reduction": {f"vs_{m}": v for m, v in summary.reduction.items()},
                    "ratio": {f"vs_{m}": v for m, v in summary.ratio.items()},
                    "memory": None if result.memory is None else result.memory.to_dict(),
                    "combined_per_token_pj": summary.combined(self.block_sizes),
                }
            )
        return {
            "table": {
                "name": self.table.name,
                "unit": "pJ",
                "description": self.table.description,
                "source": dict(self.table.source),
            },
            "settings": {
                "memory": self.memory,
                "weight_bits": self.weight_bits,
                "block_sizes": list(self.block_sizes),
            },
            "assumptions": list(ASSUMPTIONS),
            "layers": layers,
            "total": {
                "layers": len(self.layers),
                "spikes_per_element": self.spikes_per_element,
                "effective_spikes_per_mac": total.accumulates / total.macs,
                "silent_fraction": self.silent_fraction,
                "ops": {
                    "dense_macs_per_token": total.macs,
                    "spike_accumulates_per_token": total.accumulates,
                },
                "energy_per_token_pj": dict(total.energy),
                "reduction": {f"vs_{m}": v for m, v in total.reduction.items()},
                "ratio": {f"vs_{m}": v for m, v in total.ratio.items()},
                "memory": self._total_memory_dict(total),
                "combined_per_token_pj": total.combined(self.block_sizes),
            },
        }

    def columns(self) -> list[str]:
        """Column names of :meth:`rows`, in order."""
        columns = [
            "layer",
            "in_features",
            "out_features",
            "tokens",
            "spikes_per_element",
            "silent_fraction",
            "dense_macs_per_token",
            "spike_accumulates_per_token",
            *(f"{m}_pj_per_token" for m in MODES),
            *(f"reduction_vs_{m}" for m in DENSE_MODES),
            *(f"ratio_vs_{m}" for m in DENSE_MODES),
        ]
        if self.memory is not None:
            policies = ["dense", "channel", *(f"block{b}" for b in self.block_sizes)]
            columns += [f"fetch_{p}_bytes_per_token" for p in policies]
            columns += [f"fetch_{p}_pj_per_token" for p in policies]
            columns += [f"survival_block{b}" for b in self.block_sizes]
            columns += [
                "int8_dense_fetch_pj_per_token",
                "spike_dense_fetch_pj_per_token",
                "spike_channel_skip_pj_per_token",
                *(f"spike_block{b}_pj_per_token" for b in self.block_sizes),
            ]
        return columns

    def _row(self, name: str, spec: LayerSpec | None, summary: _Summary) -> dict[str, Any]:
        row: dict[str, Any] = {
            "layer": name,
            "in_features": None if spec is None else spec.in_features,
            "out_features": None if spec is None else spec.out_features,
            "tokens": None if spec is None else spec.tokens,
            "spikes_per_element": (
                self.spikes_per_element if spec is None else spec.spikes_per_element
            ),
            "silent_fraction": self.silent_fraction if spec is None else spec.silent_fraction,
            "dense_macs_per_token": summary.macs,
            "spike_accumulates_per_token": summary.accumulates,
        }
        row.update({f"{m}_pj_per_token": summary.energy[m] for m in MODES})
        row.update({f"reduction_vs_{m}": v for m, v in summary.reduction.items()})
        row.update({f"ratio_vs_{m}": v for m, v in summary.ratio.items()})
        if summary.fetch is not None:
            policies = {"dense": "dense", "channel": "channel"}
            policies.update({b: f"block{b}" for b in self.block_sizes})
            for index, unit in ((0, "bytes"), (2, "pj")):
                for key, label in policies.items():
                    fetched = summary.fetch[key]
                    row[f"fetch_{label}_{unit}_per_token"] = (
                        None if fetched is None else fetched[index]
                    )
            row.update({f"survival_block{b}": summary.survival(b) for b in self.block_sizes})
            combined = summary.combined(self.block_sizes) or {}
            row["int8_dense_fetch_pj_per_token"] = combined["int8_dense_fetch"]
            row["spike_dense_fetch_pj_per_token"] = combined["spike_dense_fetch"]
            row["spike_channel_skip_pj_per_token"] = combined["spike_channel_skip"]
            row.update(
                {
                    f"spike_block{b}_pj_per_token": combined[f"spike_block_{b}"]
                    for b in self.block_sizes
                }
            )
        return {column: row[column] for column in self.columns()}

    def rows(self, include_total: bool = True) -> list[dict[str, Any]]:
        """Flat per-layer rows (per-token values) for CSV or markdown tables.

        Every row has the keys of :meth:`columns`, in that order; values are numbers,
        strings or None (not available). With ``include_total`` the last row is the
        network total, named ``"total"`` (shape columns None).
        """
        summaries = self._summaries()
        rows = [
            self._row(result.layer.name, result.layer, summary)
            for result, summary in zip(self.layers, summaries, strict=True)
        ]
        if include_total:
            rows.append(self._row("total", None, _sum_summaries(summaries)))
        return rows


def energy_report(
    layers: Sequence[LayerSpec],
    table: TableLike = None,
    memory: str | None = None,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
    *,
    weight_bits: int = 8,
) -> EnergyReport:
    """Energy breakdown per layer and for the network (SPEC §6, beyond it with memory).

    Parameters
    ----------
    layers
        Non-empty sequence of :class:`~spikecode.energy.LayerSpec` with distinct names.
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    memory
        Memory level (``"dram"``, ``"sram_1mb"``...) for the weight-fetch model; None
        gives arithmetic only, the report's own estimate. Channel and block skipping
        need each layer's ``activity``; where it (or a block size) is missing the
        figure is None, and so is the network total for it.
    block_sizes
        Block sizes ``B`` for block skipping.
    weight_bits
        Bits per stored weight for the memory model (8 = INT8, SPEC §4).

    Returns
    -------
    EnergyReport
        Use ``.to_dict()`` for JSON and ``.rows()`` for tables.
    """
    if isinstance(layers, LayerSpec) or not isinstance(layers, Sequence) or not layers:
        raise SpikecodeError("energy_report needs a non-empty sequence of LayerSpec")
    names = [layer.name if isinstance(layer, LayerSpec) else None for layer in layers]
    repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
    if repeated:
        raise SpikecodeError("layer names repeat", layers=repeated)
    energy_table = load_table(table)
    sizes = check_block_sizes(block_sizes)
    bits = positive_int(weight_bits, "weight_bits")
    results = tuple(
        layer_energy(layer, energy_table, memory=memory, weight_bits=bits, block_sizes=sizes)
        for layer in layers
    )
    level = None if memory is None else energy_table.resolve_level(memory)
    return EnergyReport(
        table=energy_table, layers=results, memory=level, weight_bits=bits, block_sizes=sizes
    )
