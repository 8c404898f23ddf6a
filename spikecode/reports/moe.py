"""Mixture-of-experts reports: routing, per-expert spikes, and two sparsities (SPEC §8).

A MoE model skips work twice: **routing** (macro) runs only ``top_k`` of a layer's
``E`` routed experts per token, and **spiking** (micro) makes each projection that does
run cost one addition per spike instead of one MAC per input. Per token of the model:

- ``active MACs``: the dense MACs of what runs (every dense layer, the shared experts,
  and each routed expert weighted by its share of the tokens);
- ``all MACs``: the same with every routed expert run for every token (a dense model of
  the MoE's total size);
- ``spike adds``: the spike-driven additions of what runs (SPEC §6).

Macro sparsity is ``1 − active / all``; micro sparsity is the spiking sparsity of what
runs, ``1 − Σ spikes / Σ steps`` per token (SPEC §5); the combined sparsity multiplies the
densities, ``1 − (1 − macro)(1 − micro)``. Energy follows the spike adds (spikes per MAC,
``spike adds / active``), which multi-step codes can push above 1.

Routed experts no calibration token reached are counted in ``all MACs`` with the shape
of their layer's other experts (the experts of one layer have one shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spikecode.energy import load_table
from spikecode.errors import SpikecodeError
from spikecode.reports.sources import LayerResult, Source, StatsSource
from spikecode.stats import SpikeStats

__all__ = ["GROUPINGS", "group_of", "moe_summary"]

#: How reports and plots group layers: by role, by routed expert, or not at all.
GROUPINGS = ("family", "expert", "layer")


def group_of(result: LayerResult, by: str) -> str | None:
    """The group of a layer: its family, its routed expert, or its own name.

    ``by="expert"`` groups the projections of one routed expert (SPEC §8:
    ``<layer>.experts.<e>.<projection>`` → ``<layer>.experts.<e>``); a layer that is
    not a routed expert's has no group then (None).

    >>> from types import SimpleNamespace as R
    >>> group_of(R(name="m.layers.1.mlp.experts.3.up_proj", family="up_proj"), "expert")
    'm.layers.1.mlp.experts.3'
    """
    if by == "family":
        return result.family
    if by == "layer":
        return result.name
    if by == "expert":
        head, sep, tail = result.name.rpartition(".experts.")
        index = tail.partition(".")[0]
        return f"{head}.experts.{index}" if sep and index.isdigit() else None
    raise SpikecodeError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")


def grouped(results: Sequence[LayerResult], by: str) -> dict[str, list[LayerResult]]:
    """Layers by :func:`group_of`, in order of first appearance (ungrouped ones left out).

    Raises
    ------
    SpikecodeError
        ``by="expert"`` and no layer is a routed expert's (not a MoE model's source).
    """
    out: dict[str, list[LayerResult]] = {}
    for r in results:
        group = group_of(r, by)
        if group is not None:
            out.setdefault(group, []).append(r)
    if not out and by == "expert":
        raise SpikecodeError(
            "no layer is a routed expert's (<layer>.experts.<e>.<projection>): grouping by "
            "expert needs the stats file of a MoE model"
        )
    return out


def _expert_of(name: str, prefix: str) -> tuple[int, str] | None:
    if not name.startswith(prefix):
        return None
    index, _, projection = name[len(prefix) :].partition(".")
    return (int(index), projection) if index.isdigit() else None


def _density(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def moe_summary(
    source: Source, results: Sequence[LayerResult], table: Any = None
) -> dict[str, Any] | None:
    """Routing and the two sparsities of a stats source with MoE layers; None without.

    Parameters
    ----------
    source
        A :class:`~spikecode.reports.StatsSource` (activation files carry no
        routing: None).
    results
        Its :meth:`~spikecode.reports.Source.layer_results` at one k and code.
    table
        Energy table (:func:`~spikecode.energy.load_table`).

    Returns
    -------
    dict or None
        ``layers`` (per MoE layer: ``layer, num_experts, top_k, tokens, imbalance,
        active_macs_per_token, all_macs_per_token, spike_adds_per_token,
        spikes_per_mac, macro_sparsity, micro_sparsity, combined_sparsity``), ``experts``
        (per routed expert: ``layer, expert, tokens, load, spikes_per_element, sparsity,
        spike_adds_per_token, spike_pj_per_token``) and ``model`` (the same densities
        over the whole model, and per-token energies: ``spike_pj``, ``fp16_active_pj``,
        ``fp16_all_pj``, ``int8_active_pj``, ``int8_all_pj``).
    """
    if not isinstance(source, StatsSource) or not source.stats.routing:
        return None
    energy = load_table(table)
    add, fp16, int8 = energy.add_pj("int8"), energy.mac_pj("fp16"), energy.mac_pj("int8")

    def macs(r: LayerResult) -> float:
        return r.in_features * r.out_features * r.token_share

    def adds(r: LayerResult) -> float:
        return r.stats.spikes * r.out_features / r.tokens * r.token_share

    def micro(rs: Sequence[LayerResult]) -> float | None:
        # Σ spikes / Σ steps per token of the model (SPEC §5's firing rate).
        spikes = sum(r.stats.spikes / r.tokens * r.token_share for r in rs)
        steps = sum(r.stats.steps / r.tokens * r.token_share for r in rs)
        return 1.0 - spikes / steps if steps else None

    def figures(rs: Sequence[LayerResult], every: float) -> dict[str, float | None]:
        # MACs, adds and the two sparsities of what runs, against ``every`` MACs.
        active = sum(macs(r) for r in rs)
        spike = sum(adds(r) for r in rs)
        macro, spiking = 1.0 - active / every, micro(rs)
        return {
            "active_macs_per_token": active,
            "all_macs_per_token": every,
            "spike_adds_per_token": spike,
            "spikes_per_mac": _density(spike, active),
            "macro_sparsity": macro,
            "micro_sparsity": spiking,
            "combined_sparsity": None if spiking is None else 1.0 - (1.0 - macro) * (1.0 - spiking),
        }

    moe_layers, experts = [], []
    routed_active = routed_all = 0.0
    for routing in source.stats.routing:
        prefix = routing.layer + ".experts."
        by_expert: dict[int, list[LayerResult]] = {}
        for r in results:
            found = _expert_of(r.name, prefix)
            if found is not None:
                by_expert.setdefault(found[0], []).append(r)
        if not by_expert:
            continue
        size = max(sum(r.in_features * r.out_features for r in rs) for rs in by_expert.values())
        ran = [r for rs in by_expert.values() for r in rs]
        layer = figures(ran, size * routing.num_experts)
        routed_active += layer["active_macs_per_token"]
        routed_all += layer["all_macs_per_token"]
        moe_layers.append(
            {
                "layer": routing.layer,
                "num_experts": routing.num_experts,
                "top_k": routing.top_k,
                "tokens": routing.tokens,
                "imbalance": routing.imbalance,
                **layer,
            }
        )
        for e in range(routing.num_experts):
            rs = by_expert.get(e, [])
            total: SpikeStats | None = None
            for r in rs:
                total = r.stats if total is None else total.merge(r.stats)
            spike_e = sum(adds(r) for r in rs)
            experts.append(
                {
                    "layer": routing.layer,
                    "expert": e,
                    "tokens": routing.expert_tokens[e],
                    "load": routing.load[e],
                    "spikes_per_element": None if total is None else total.spikes_per_element,
                    "sparsity": None if total is None else total.sparsity,
                    "spike_adds_per_token": spike_e,
                    "spike_pj_per_token": spike_e * add,
                }
            )
    if not moe_layers:
        return None
    active = sum(macs(r) for r in results)
    every = active - routed_active + routed_all
    model = figures(results, every)
    spike = model["spike_adds_per_token"]
    model |= {
        "spike_pj": spike * add,
        "fp16_active_pj": active * fp16,
        "fp16_all_pj": every * fp16,
        "int8_active_pj": active * int8,
        "int8_all_pj": every * int8,
    }
    return {"layers": moe_layers, "experts": experts, "model": model}
