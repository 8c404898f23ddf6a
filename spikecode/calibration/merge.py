"""Exact merges of calibration statistics over disjoint sample sets.

:func:`merge_stats` combines the :class:`~spikecode.calibration.records.CalibrationStats`
of disjoint sample sets of one model into the statistics of their union; it is what
``spikecode merge-stats`` runs, and how data-parallel calibration
(:mod:`spikecode.calibration.distributed`) reduces the ranks' results. Every statistic
of a stats file is a sum over tokens or elements, or follows from such sums:

- **exact** (integers, identical to one calibration over the union): the count
  histogram (the version 2 file keeps the counts beyond ``±COUNT_LIMIT`` value by value),
  hence ``max_abs_count`` and the SPEC §5 totals of every code, recomputed from the
  merged histogram (T is the minimal T of the union, SPEC §3, not the larger of the
  parts' T: the windowed totals depend on T); the Vth histogram, min and max; the
  channel activity (SPEC §6); tokens, error rows, samples;
- **within rounding** (sums in another order): the Vth mean and standard deviation
  (Chan's parallel merge of count, mean and ``M2 = std² · tokens``; relative difference
  below :data:`VTH_RTOL`), the output-error sums, the output error
  (``sqrt(Σ sq_error / Σ sq_norm)``) and the mean cosine (weighted by error rows;
  relative difference below :data:`ERROR_RTOL`: the outputs are float32 matmuls, and
  their rounding depends on how many rows one matmul takes, which differs when the
  rows are split otherwise).

Merging is associative and commutative up to that rounding. What may be merged: files
of one model (same checkpoint path, kind, ``model_type`` and dtype; same layers and
shapes), with the same k values, codes, window, block sizes, output-error settings,
length limit, recipe and spikecode version, each carrying the version 2 merge fields.
The one difference in layers allowed is that of MoE models (SPEC §8): a routed expert's
projections are absent from a part that routed no token to that expert (its ``routing``
says 0), as one calibration leaves them out; the union has them merged from the parts
that have them, and lacks them only if no part reached the expert.
The sample sets must be disjoint. Each stats file carries its identity (``runs``: the
random id of the calibration run, or the ids a merge combined), so parts that share a
run, the same file twice included, are refused; disjoint samples of different runs stay
the caller's promise (data-parallel calibration shards by batch and keeps it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import numpy as np

from spikecode.calibration import counting
from spikecode.calibration.records import (
    COUNT_LIMIT,
    VERSION,
    CalibrationStats,
    CountHistogram,
    DataInfo,
    KStats,
    LayerStats,
    RoutingStats,
    VthSummary,
    output_error,
    plain_number,
)
from spikecode.energy import ChannelActivity
from spikecode.errors import SpikecodeError

__all__ = ["ERROR_RTOL", "VTH_RTOL", "merge_layer_stats", "merge_stats"]

#: Documented relative tolerance of the Vth mean and std of a merge (or data-parallel
#: run) against one calibration over the union (observed: a few ulp, ~2e-16).
VTH_RTOL = 1e-12
#: Documented relative tolerance of the output-error fields (``output_rel_error``,
#: ``output_cosine``, ``output_sq_error``, ``output_sq_norm``): float32 matmul rounding
#: over other row groupings (observed on the tiny GLA-SWA model: up to ~1e-8).
ERROR_RTOL = 1e-6


def _chan(parts: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Chan's parallel merge of ``(count, mean, M2)`` triples, in the given order."""
    count, mean, m2 = 0, 0.0, 0.0
    for n_b, mean_b, m2_b in parts:
        if n_b == 0:
            continue
        total = count + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * count * n_b / total
        count = total
    return count, mean, m2


def _merge_vth(parts: Sequence[tuple[int, VthSummary]]) -> VthSummary:
    _, mean, m2 = _chan([(n, v.mean, v.std * v.std * n) for n, v in parts])
    tokens = sum(n for n, _ in parts)
    first = parts[0][1]
    return VthSummary(
        mean=mean,
        std=math.sqrt(max(m2, 0.0) / tokens),
        min=min(v.min for _, v in parts),
        max=max(v.max for _, v in parts),
        edges=first.edges,
        counts=tuple(int(sum(c)) for c in zip(*(v.counts for _, v in parts), strict=True)),
    )


def _full_histogram(entries: Sequence[KStats]) -> tuple[np.ndarray, np.ndarray]:
    return CountHistogram.sum([entry.count_histogram for entry in entries]).values()


def merge_layer_stats(
    layers: Sequence[LayerStats],
    schemes: Sequence[str],
    window: int,
    block_sizes: Sequence[int],
) -> LayerStats:
    """The statistics of one layer over the union of the parts' (disjoint) tokens.

    Parameters
    ----------
    layers
        One :class:`LayerStats` per part, of the same layer (name, shape, k keys),
        each :attr:`~LayerStats.mergeable`.
    schemes, window, block_sizes
        The codes, sparsity window and block sizes of the parts' stats files.

    Returns
    -------
    LayerStats
        Integer fields exact; float fields within :data:`VTH_RTOL` and :data:`ERROR_RTOL`
        (module docstring).
    """
    if not layers:
        raise SpikecodeError("nothing to merge")
    first = layers[0]
    for layer in layers:
        if not layer.mergeable:
            raise SpikecodeError(
                f"layer {layer.name!r} lacks the version 2 fields an exact merge needs",
                layer=layer.name,
            )
        if (layer.name, layer.in_features, layer.out_features, tuple(layer.by_k)) != (
            first.name,
            first.in_features,
            first.out_features,
            tuple(first.by_k),
        ):
            raise SpikecodeError(
                "cannot merge statistics of different layers, shapes or k values",
                layer=f"{first.name}/{layer.name}",
            )
    tokens = sum(layer.tokens for layer in layers)
    error_tokens = sum(layer.error_tokens for layer in layers)
    sq_norm = math.fsum(layer.output_sq_norm or 0.0 for layer in layers)
    histograms = {key: _full_histogram([layer.by_k[key] for layer in layers]) for key in first.by_k}
    spike_totals = {
        scheme: dict(
            zip(
                histograms,
                counting.stats_from_histograms(list(histograms.values()), scheme, window=window),
                strict=True,
            )
        )
        for scheme in schemes
    }
    by_k = {}
    for key, (values, times) in histograms.items():
        entries = [layer.by_k[key] for layer in layers]
        elements = tokens * first.in_features
        sq_error = math.fsum(entry.output_sq_error or 0.0 for entry in entries)
        pairs = list(zip(entries, layers, strict=True))
        cosine = math.fsum(e.output_cosine * layer.error_tokens for e, layer in pairs)
        by_k[key] = KStats(
            vth=_merge_vth([(layer.tokens, e.vth) for e, layer in pairs]),
            count_histogram=CountHistogram.from_values(values, times, COUNT_LIMIT),
            max_abs_count=int(np.abs(values).max()),
            output_rel_error=output_error(sq_error, sq_norm),
            output_cosine=cosine / error_tokens if error_tokens else 0.0,
            activity=ChannelActivity(
                tokens=tokens,
                in_features=first.in_features,
                active_channels=elements - int(times[values == 0].sum()),
                block_fetched_channels={
                    b: plain_number(sum(e.activity.block_fetched_channels[b] for e in entries))
                    for b in block_sizes
                },
            ),
            schemes=MappingProxyType({s: spike_totals[s][key] for s in schemes}),
            output_sq_error=sq_error,
        )
    return LayerStats(
        name=first.name,
        family=first.family,
        in_features=first.in_features,
        out_features=first.out_features,
        tokens=tokens,
        by_k=MappingProxyType(by_k),
        error_tokens=error_tokens,
        output_sq_norm=sq_norm,
    )


def _settings(stats: CalibrationStats) -> dict[str, Any]:
    """What two stats files must share to be merged, by name (for the error message)."""
    return {
        "spikecode version": stats.spikecode_version,
        "checkpoint path": stats.checkpoint.path,
        "checkpoint kind": stats.checkpoint.kind,
        "model_type": stats.checkpoint.model_type,
        "dtype": stats.checkpoint.dtype,
        "recipe": getattr(stats, "recipe", None),
        "k values": tuple(stats.k),
        "codes": tuple(stats.schemes),
        "window": stats.window,
        "block sizes": tuple(stats.block_sizes),
        "error_rows": stats.error_rows,
        "error_stride": stats.error_stride,
        "max_length": stats.data.max_length,
        # Before the layers: which layers are routed experts' follows from the routing.
        "MoE layers": tuple((r.layer, r.num_experts, r.top_k) for r in stats.routing),
        # A routed expert's projections are absent where no token reached it, so parts
        # may differ in them (_plan_layers); every other layer must be in every part.
        "layers": tuple(
            (x.name, x.in_features, x.out_features)
            for x in stats.layers
            if _routed_expert(stats.routing, x.name) is None
        ),
    }


def _routed_expert(routing: Sequence[RoutingStats], name: str) -> tuple[int, int] | None:
    """``(MoE layer index, expert)`` when ``name`` is a routed expert's projection."""
    for index, moe in enumerate(routing):
        expert = moe.expert_of(name)
        if expert is not None:
            return index, expert
    return None


def _plan_layers(
    parts: Sequence[CalibrationStats], labels: Sequence[str] | None
) -> list[list[tuple[int, LayerStats]]]:
    """The union's layers in model order, each as ``(part index, layer)`` of the parts with it.

    The parts share their layers except routed experts' projections, absent from a part
    that routed no token to the expert (a single calibration leaves them out too): the
    union has an expert's projections if any part has them. The parts' common layers
    (checked by :func:`_settings`) are the frame; an expert's projections go where the
    parts put them, between the same two common layers, ordered by MoE layer, expert
    and the parts' order of projections (the modules' order: ``experts`` is a
    ``ModuleList``), which is the order one calibration over the union lists them in.

    Raises
    ------
    SpikecodeError
        A part lacks a routed expert's projection although its routing gave that expert
        tokens (it was left out otherwise, e.g. by ``exclude``), or the parts list the
        routed experts' projections in different places.
    """
    routing = parts[0].routing
    # name -> sort key, set by the first part that has the layer
    keys: dict[str, tuple[int, ...]] = {}
    owners: dict[str, list[tuple[int, LayerStats]]] = {}
    for index, part in enumerate(parts):
        frame = 0  # common layers before this one
        seen: dict[tuple[int, int], int] = {}  # projections of each expert so far
        previous: tuple[int, ...] = ()
        for layer in part.layers:
            which = _routed_expert(routing, layer.name)
            if which is None:
                key: tuple[int, ...] = (frame, 1)
                frame += 1
            else:
                key = (frame, 0, *which, seen.get(which, 0))
                seen[which] = seen.get(which, 0) + 1
            if keys.setdefault(layer.name, key) != key:
                raise SpikecodeError(
                    f"cannot merge stats files that place layer {layer.name!r} differently: "
                    f"{_label(labels, owners[layer.name][0][0])} and {_label(labels, index)}",
                    field="layers",
                )
            if key <= previous:
                raise SpikecodeError(
                    f"cannot merge {_label(labels, index)}: its routed experts' projections "
                    f"are not in model order (layer {layer.name!r})",
                    field="layers",
                )
            previous = key
            owners.setdefault(layer.name, []).append((index, layer))
    for name in owners:
        which = _routed_expert(routing, name)
        if which is None:
            continue
        moe, expert = routing[which[0]], which[1]
        present = {index for index, _ in owners[name]}
        for index, part in enumerate(parts):
            routed = part.routing[which[0]].expert_tokens[expert]
            if index not in present and routed:
                raise SpikecodeError(
                    f"cannot merge {_label(labels, index)}: it has no layer {name!r} although "
                    f"its routing sends {routed} tokens to expert {expert} of {moe.layer!r} "
                    f"({_label(labels, owners[name][0][0])} has the layer); only an expert "
                    "that a part routed no token to may be absent from it",
                    field="layers",
                    layer=name,
                )
    return [owners[name] for name in sorted(owners, key=keys.__getitem__)]


def _label(labels: Sequence[str] | None, index: int) -> str:
    return labels[index] if labels is not None else f"part {index + 1}"


def run_ids(stats: CalibrationStats) -> tuple[str, ...]:
    """The calibration runs ``stats`` holds (its identity).

    Its ``runs``, or for a file written before run ids one id derived from its content
    (two copies of such a file are then one run).
    """
    if stats.runs:
        return stats.runs
    text = json.dumps(stats.to_dict(), sort_keys=True, allow_nan=True)
    return (hashlib.sha256(text.encode("utf-8")).hexdigest()[:32],)


def _check_distinct_runs(
    parts: Sequence[CalibrationStats], labels: Sequence[str] | None
) -> tuple[str, ...]:
    """Refuse parts that share a calibration run; return the union's runs."""
    owner: dict[str, int] = {}
    for index, part in enumerate(parts):
        for run in run_ids(part):
            if run in owner:
                raise SpikecodeError(
                    f"cannot merge {_label(labels, owner[run])} and {_label(labels, index)}: "
                    f"they hold the same calibration run {run[:12]}, whose samples would "
                    "count twice (merge only stats of disjoint sample sets)",
                    field="runs",
                )
            owner[run] = index
    return tuple(sorted(owner))


def _check_bins(
    plan: Sequence[Sequence[tuple[int, LayerStats]]], labels: Sequence[str] | None
) -> None:
    """Every binned quantity (Vth and count histograms) must share its bins across parts.

    ``plan`` is :func:`_plan_layers`'s: per layer, the parts that have it. The count
    histograms must also cover the stats-file range ``-COUNT_LIMIT … COUNT_LIMIT`` (what
    :func:`~spikecode.calibration.load_stats` accepts): a merge rebuilds the bins from
    the offset, so another one would be allocated bin by bin.
    """
    for owners in plan:
        first, reference = owners[0]
        for key, entry in reference.by_k.items():
            hist = entry.count_histogram
            if (hist.offset, len(hist.counts)) != (-COUNT_LIMIT, 2 * COUNT_LIMIT + 1):
                raise SpikecodeError(
                    f"{_label(labels, first)} has a count histogram over {len(hist.counts)} "
                    f"bins from {hist.offset}, not the stats file's -{COUNT_LIMIT} … "
                    f"{COUNT_LIMIT} (layer {reference.name!r}, k = {key})",
                    field="count_histogram",
                )
        for index, layer in owners[1:]:
            for key, entry in layer.by_k.items():
                ref = reference.by_k[key]
                hist, ref_hist = entry.count_histogram, ref.count_histogram
                for what, ours, theirs in (
                    ("Vth histogram edges", entry.vth.edges, ref.vth.edges),
                    (
                        "count histogram bins",
                        (hist.offset, len(hist.counts)),
                        (ref_hist.offset, len(ref_hist.counts)),
                    ),
                ):
                    if ours != theirs:
                        raise SpikecodeError(
                            f"cannot merge stats files with different {what}: "
                            f"{_label(labels, first)} and {_label(labels, index)} (layer "
                            f"{layer.name!r}, k = {key})",
                            field=what,
                        )


def merge_stats(
    parts: Sequence[CalibrationStats], *, labels: Sequence[str] | None = None
) -> CalibrationStats:
    """Merge the stats of disjoint sample sets of one model into those of their union.

    Parameters
    ----------
    parts
        Two or more (or one, returned re-totalled) :class:`CalibrationStats`, e.g. from
        :func:`~spikecode.calibration.load_stats`, in any order.
    labels
        Names of the parts for error messages (the file names), default ``part 1``, …

    Returns
    -------
    CalibrationStats
        Integer fields identical to one calibration over the union, float fields within
        :data:`VTH_RTOL` / :data:`ERROR_RTOL` (see the module docstring);
        ``data.source`` names the parts' sources, ``created`` is now.

    Raises
    ------
    SpikecodeError
        No parts; a part without the version 2 merge fields (a version 1 file); parts
        that differ in checkpoint, k values, codes, window, block sizes, output-error
        settings, length limit, recipe, spikecode version, layers or histogram bins (the
        message names the field and both parts); a part without a routed expert's
        projection although its routing gave that expert tokens (only experts a part
        routed no token to may be absent from it); parts that share a calibration run
        (their ``runs`` overlap: the same samples twice).
    """
    parts = list(parts)
    if not parts:
        raise SpikecodeError("give at least one stats file to merge")
    if labels is not None and len(labels) != len(parts):
        raise SpikecodeError("give one label per part")
    for index, part in enumerate(parts):
        if not isinstance(part, CalibrationStats):
            raise SpikecodeError(
                f"merge_stats takes CalibrationStats, not {type(part).__name__}",
                part=_label(labels, index),
            )
        if not part.mergeable:
            raise SpikecodeError(
                f"{_label(labels, index)} is a version 1 stats file: it lacks the full count "
                f"histograms and output-error sums an exact merge needs (version {VERSION}); "
                "calibrate again with this spikecode to merge",
                part=_label(labels, index),
            )
    reference = _settings(parts[0])
    for index, part in enumerate(parts[1:], start=1):
        for name, value in _settings(part).items():
            if value != reference[name]:
                shown = "differ" if name == "layers" else f"{reference[name]!r} vs {value!r}"
                raise SpikecodeError(
                    f"cannot merge stats files with different {name}: {_label(labels, 0)} and "
                    f"{_label(labels, index)} ({shown})",
                    field=name,
                )
    plan = _plan_layers(parts, labels)
    _check_bins(plan, labels)
    runs = _check_distinct_runs(parts, labels)
    first = parts[0]
    layers = [
        merge_layer_stats(
            [layer for _, layer in owners], first.schemes, first.window, first.block_sizes
        )
        for owners in plan
    ]
    sources = list(dict.fromkeys(part.data.source for part in parts))
    data = DataInfo(
        source=sources[0] if len(sources) == 1 else " + ".join(sources),
        samples=sum(part.data.samples for part in parts),
        tokens=sum(part.data.tokens for part in parts),
        max_length=first.data.max_length,
        truncated=sum(part.data.truncated for part in parts),
    )
    routing = [
        RoutingStats(
            r.layer,
            r.num_experts,
            r.top_k,
            sum(part.routing[i].tokens for part in parts),
            tuple(
                sum(counts)
                for counts in zip(*(part.routing[i].expert_tokens for part in parts), strict=True)
            ),
        )
        for i, r in enumerate(first.routing)
    ]
    merged = CalibrationStats.create(
        checkpoint=first.checkpoint,
        data=data,
        k=first.k,
        schemes=first.schemes,
        window=first.window,
        block_sizes=first.block_sizes,
        layers=layers,
        error_rows=first.error_rows,
        error_stride=first.error_stride,
        routing=routing,
        runs=runs,
    )
    extra = {}
    if getattr(first, "recipe", None) is not None:
        extra["recipe"] = first.recipe  # type: ignore[attr-defined]
    return replace(merged, spikecode_version=first.spikecode_version, **extra)
