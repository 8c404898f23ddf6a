"""A deployment plan of a whole model: sources in, a :class:`DeploymentPlan` out.

:func:`~spikecode.plan.deployment_plan` takes a checkpoint folder (shapes from the file headers, no
weight loaded, :mod:`spikecode.plan.shapes`) and/or a calibration stats file (shapes of
its layers and the spike totals behind the per-token figures), plans every projection
on a target (:mod:`spikecode.plan.partition`, :mod:`spikecode.plan.targets`) and returns
the result with its provenance. :meth:`~spikecode.plan.DeploymentPlan.report` renders it
in the formats of the other reports (``table``, ``json``, ``csv``, ``markdown``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spikecode._select import DEFAULT_EXCLUDE
from spikecode.errors import SpikecodeError
from spikecode.io import path_kind
from spikecode.plan.partition import Activity, ModelPlan, plan_model
from spikecode.plan.shapes import Projection, checkpoint_projections, stats_projections
from spikecode.plan.targets import Target, load_target

__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "DeploymentPlan", "deployment_plan"]

#: ``format`` of the plan's JSON form.
PLAN_FORMAT = "spikecode.plan"
#: ``version`` of the plan's JSON form.
PLAN_VERSION = 1

_PER_TOKEN_UNKNOWN = (
    "time steps, spikes and synaptic operations per token and the accumulator and payload "
    "widths are unknown without calibration: pass a stats file (spikecode calibrate --out "
    "stats.json) as the source or as stats"
)


@dataclass(frozen=True)
class DeploymentPlan:
    """A whole model's plan on one target, and where its figures came from.

    Attributes
    ----------
    model
        The counts and the partition (:class:`~spikecode.plan.partition.ModelPlan`).
    checkpoint
        The checkpoint folder the shapes came from, or None.
    stats
        The stats file the calibration figures came from, or None.
    k, scheme
        The threshold divisor and the code the per-token figures are for (None without
        calibration).
    unknown
        What the plan cannot say, one sentence each.
    source_info
        Further provenance: the checkpoint's ``model_type``, tensor and file counts; the
        calibration's tokens, recipe and ``generate`` (None: prompt tokens).
    """

    model: ModelPlan
    checkpoint: str | None = None
    stats: str | None = None
    k: float | None = None
    scheme: str | None = None
    unknown: tuple[str, ...] = ()
    source_info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        """The target the plan respects."""
        return self.model.target

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: format, source, target table, model totals, projections, MoE layers."""
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "source": {
                "checkpoint": self.checkpoint,
                "stats": self.stats,
                "k": self.k,
                "scheme": self.scheme,
                **dict(self.source_info),
            },
            "target": self.target.to_dict(),
            "model": self.model.to_dict(),
            "projections": [p.to_dict() for p in self.model.projections],
            "moe_layers": [layer.to_dict() for layer in self.model.moe_layers],
            "unknown": list(self.unknown),
        }

    def report(self) -> Any:
        """The plan as a :class:`spikecode.reports.Report` (``render("table")``...)."""
        from spikecode.plan.render import plan_report

        return plan_report(self)

    def render(self, fmt: str = "table") -> str:
        """The plan as text: ``table``, ``json``, ``csv`` or ``markdown``."""
        return self.report().render(fmt)


def _activities(stats: Any, k: float | None, scheme: str | None) -> tuple[dict, float, str]:
    from spikecode.calibration.records import k_key
    from spikecode.reports.sources import DEFAULT_K, DEFAULT_SCHEME

    if k is None:
        k = DEFAULT_K if DEFAULT_K in stats.k else stats.k[0]
    if scheme is None:
        scheme = DEFAULT_SCHEME if DEFAULT_SCHEME in stats.schemes else stats.schemes[0]
    key = k_key(k)
    if key not in {k_key(v) for v in stats.k}:
        raise SpikecodeError(
            f"the stats file has no k = {key}; it has " + ", ".join(k_key(v) for v in stats.k)
        )
    if scheme not in stats.schemes:
        raise SpikecodeError(
            f"the stats file has no code {scheme!r}; it has " + ", ".join(stats.schemes)
        )
    from spikecode.reports.sources import StatsSource

    # token_share: a routed expert's share of its MoE layer's tokens (SPEC §8), as the
    # energy report counts it.
    shares = {r.name: r.token_share for r in StatsSource(stats).layer_results(float(k), scheme)}
    out = {}
    for layer in stats.layers:
        entry = layer.by_k[key]
        totals = entry.schemes[scheme]
        out[layer.name] = Activity(
            tokens=layer.tokens,
            T=totals.T,
            spikes=totals.spikes,
            events=totals.elements - totals.silent,
            max_abs_count=entry.max_abs_count,
            token_share=shares[layer.name],
        )
    return out, float(k), scheme


def _unreached_experts(
    projections: tuple[Projection, ...], stats: Any, activities: dict[str, Activity]
) -> None:
    """Zero activity for the routed experts no calibration token reached (SPEC §8)."""
    for routing in stats.routing:
        prefix = routing.layer + ".experts."
        for p in projections:
            if p.name in activities or not p.name.startswith(prefix):
                continue
            index = p.name[len(prefix) :].partition(".")[0]
            reached = index.isdigit() and int(index) < routing.num_experts
            if reached and routing.expert_tokens[int(index)] == 0:
                activities[p.name] = Activity(0, 0, 0, 0, 0, token_share=0.0)


def _load_stats(stats: Any) -> tuple[Any, str | None]:
    from spikecode.calibration.records import CalibrationStats
    from spikecode.calibration.statsfile import load_stats

    if isinstance(stats, CalibrationStats):
        return stats, None
    return load_stats(stats), os.fspath(stats)


def _match(
    projections: tuple[Projection, ...], stats: Any, activities: dict[str, Activity]
) -> tuple[dict[str, Activity], list[str]]:
    """Stats layers → checkpoint projections by name; shapes must agree."""
    by_name = {p.name: p for p in projections}
    matched: dict[str, Activity] = {}
    for layer in stats.layers:
        p = by_name.get(layer.name)
        if p is None:
            continue
        if (p.in_features, p.out_features) != (layer.in_features, layer.out_features):
            raise SpikecodeError(
                f"layer {layer.name} is [{layer.out_features}, {layer.in_features}] in the "
                f"stats file but [{p.out_features}, {p.in_features}] in the checkpoint: "
                "the stats belong to another model"
            )
        matched[layer.name] = activities[layer.name]
    # Routed experts no calibration token reached: zero activity (_unreached_experts).
    matched.update(
        (name, a) for name, a in activities.items() if name in by_name and name not in matched
    )
    if not matched:
        names = ", ".join(layer.name for layer in stats.layers[:3])
        raise SpikecodeError(
            f"no layer of the stats file ({names}, ...) is a projection of the checkpoint; "
            "the stats belong to another model"
        )
    missing = [p.name for p in projections if p.name not in matched]
    return matched, missing


def _is_folder(source: Any) -> bool:
    return isinstance(source, str | os.PathLike) and path_kind(source) == "dir"


def deployment_plan(
    source: str | os.PathLike[str] | Any,
    *,
    target: str | os.PathLike[str] | Mapping[str, Any] | Target | None = None,
    stats: str | os.PathLike[str] | Any | None = None,
    k: float | None = None,
    scheme: str | None = None,
    include: str | Iterable[str] = ("*",),
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
) -> DeploymentPlan:
    """Plan a whole model on a neuromorphic target (``docs/deployment.rst``).

    Parameters
    ----------
    source
        A checkpoint folder (``config.json`` + safetensors: shapes are read from the
        headers, no weight is loaded), a calibration stats file (``.json``), or a
        :class:`~spikecode.calibration.CalibrationStats`.
    target
        A shipped target name (``"loihi2"``, ``"spinnaker2"``), a JSON table, a dict or a
        :class:`~spikecode.plan.Target`; default ``"loihi2"``.
    stats
        With a checkpoint source: a stats file (or object) of the same model, for the
        per-token figures. Its layers are matched to the projections by name.
    k, scheme
        Which of the stats file's k values and codes the per-token figures use (default
        k = 3 and bitwise-bidirectional where the file has them, else its first).
    include, exclude
        fnmatch patterns on projection names (default: every linear layer but
        ``lm_head``). Applied to a stats file's layers too.

    Returns
    -------
    DeploymentPlan

    Raises
    ------
    SpikecodeError
        An unreadable source or target, a k or code the stats lack, stats of another
        model, or patterns that select nothing.
    """
    from spikecode._select import select_names
    from spikecode.calibration.records import CalibrationStats

    chosen_target = load_target(target)
    if stats is None and (k is not None or scheme is not None) and _is_folder(source):
        raise SpikecodeError("k and scheme choose calibration figures: pass stats as well")
    checkpoint = stats_path = None
    info: dict[str, Any] = {}
    is_stats_object = isinstance(source, CalibrationStats)
    if not is_stats_object and _is_folder(source):
        shapes = checkpoint_projections(source, include, exclude)
        checkpoint = shapes.path
        projections = shapes.projections
        info.update(model_type=shapes.model_type, tensors=shapes.tensors, files=shapes.files)
        stats_object = None
        if stats is not None:
            stats_object, stats_path = _load_stats(stats)
    else:
        if not is_stats_object and path_kind(source) is None:
            raise SpikecodeError(
                "source not found: give a checkpoint folder or a calibration stats file",
                path=os.fspath(source),
            )
        if stats is not None:
            raise SpikecodeError(
                "stats goes with a checkpoint folder; the source is already a stats file"
            )
        stats_object, stats_path = _load_stats(source)
        every = stats_projections(stats_object)
        names = set(select_names([p.name for p in every], include, exclude))
        projections = tuple(p for p in every if p.name in names)
    unknown: list[str] = []
    activities: dict[str, Activity] = {}
    used_k = used_scheme = None
    top_k: Any = shapes.experts_per_token if checkpoint is not None else None
    num_experts: Any = shapes.num_experts if checkpoint is not None else None
    if stats_object is None:
        unknown.append(_PER_TOKEN_UNKNOWN)
    else:
        activities, used_k, used_scheme = _activities(stats_object, k, scheme)
        _unreached_experts(projections, stats_object, activities)
        top_k = {r.layer: r.top_k for r in stats_object.routing} or top_k
        num_experts = {r.layer: r.num_experts for r in stats_object.routing} or num_experts
        if checkpoint is not None:
            activities, missing = _match(projections, stats_object, activities)
            if missing:
                unknown.append(
                    f"{len(missing)} projection(s) have no calibration figures (the stats file "
                    f"did not measure them: {', '.join(missing[:3])}"
                    + (", ..." if len(missing) > 3 else "")
                    + "), so the model's per-token totals are unknown"
                )
        info.update(
            tokens=stats_object.data.tokens,
            recipe=stats_object.recipe.name,
            generate=stats_object.recipe.generate,
        )
    if chosen_target.state_bits is None:
        unknown.append(f"{chosen_target.name} publishes no integrator state width")
    model = plan_model(
        projections, chosen_target, activities, experts_per_token=top_k, num_experts=num_experts
    )
    return DeploymentPlan(
        model=model,
        checkpoint=checkpoint,
        stats=stats_path if stats_object is not None else None,
        k=used_k,
        scheme=used_scheme,
        unknown=tuple(unknown),
        source_info=info,
    )
