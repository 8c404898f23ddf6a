"""A :class:`~spikecode.plan.DeploymentPlan` as a report: the table, JSON, CSV and Markdown.

The same :class:`spikecode.reports.Report` renders it as the sparsity, energy and
trade-off reports do: one row per projection and a last ``model`` row with the totals;
header lines name the source, the target and the model totals; notes cite every figure
of the target table and say what is unknown.
"""

from __future__ import annotations

import math
from typing import Any

from spikecode.reports.tables import Column, Report, _fmt_number

__all__ = ["format_bytes", "plan_report"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")

#: Keys of every CSV row, in order.
_COLUMNS = (
    "name",
    "in_features",
    "out_features",
    "groups",
    "neurons",
    "fan_in",
    "dense_processes",
    "synapses",
    "memory_bytes",
    "neurons_per_core",
    "cores",
    "chips",
    "limited_by",
    "fits",
    "T",
    "spikes_per_token",
    "synops_per_token",
    "graded_events_per_token",
    "graded_synops_per_token",
    "max_abs_count",
    "accumulator_bits",
    "state_fits",
    "payload_bits",
    "payload_fits",
    "problem",
)


def format_bytes(value: Any) -> str:
    """A byte count with a binary unit: ``format_bytes(3 * 2**20) == '3.00 MiB'``."""
    if value is None:
        return "n/a"
    size = float(value)
    if not math.isfinite(size):
        return "n/a"
    unit = 0
    while abs(size) >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{int(size)} B" if unit == 0 else f"{size:.2f} {_UNITS[unit]}"


def _fmt_fits(value: Any) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


_DISPLAY = (
    Column("name", "projection", str),
    Column("in_features", "in"),
    Column("out_features", "out"),
    Column("groups", "G"),
    Column("neurons", "neurons"),
    Column("synapses", "synapses"),
    Column("memory_bytes", "memory", format_bytes),
    Column("neurons_per_core", "n/core"),
    Column("cores", "cores"),
    Column("T", "T"),
    Column("spikes_per_token", "spikes/tok"),
    Column("synops_per_token", "synops/tok"),
    Column("accumulator_bits", "acc bits"),
    Column("state_fits", "acc fits", _fmt_fits),
)


_MOE_DISPLAY = (
    Column("layer", "MoE layer", str),
    Column("num_experts", "experts"),
    Column("top_k", "top-k"),
    Column("resident_synapses", "resident synapses"),
    Column("active_synapses_per_token", "active synapses/tok"),
    Column("macro_sparsity", "macro sparsity"),
)


def _width(needed: int | None, available: int | None, fits: bool | None) -> str:
    """``"18 bits needed, 24 available: fits"``; n/a parts where unknown."""
    need = "n/a" if needed is None else f"{needed} bits needed"
    have = "not published" if available is None else f"{available} available"
    verdict = {True: "fits", False: "DOES NOT FIT", None: "unknown"}[fits]
    return f"{need}, {have}: {verdict}"


def _row(values: dict[str, Any]) -> dict[str, Any]:
    return {key: values.get(key) for key in _COLUMNS}


def plan_report(plan: Any) -> Report:
    """Build the report of a :class:`~spikecode.plan.DeploymentPlan`."""
    data = plan.to_dict()
    model = data["model"]
    target = plan.target
    rows = [_row(p) for p in data["projections"]]
    rows.append(
        _row(
            {
                "name": "model",
                "neurons": model["neurons"],
                "synapses": model["synapses"],
                "memory_bytes": model["memory_bytes"],
                "cores": model["cores"],
                "chips": model["chips"],
                "limited_by": model["chips_limited_by"],
                "fits": model["fits"],
                "T": model["time_steps_per_token"],
                "spikes_per_token": model["spikes_per_token"],
                "synops_per_token": model["synops_per_token"],
                "graded_events_per_token": model["graded_events_per_token"],
                "graded_synops_per_token": model["graded_synops_per_token"],
                "accumulator_bits": model["accumulator_bits"],
                "state_fits": model["state_fits"],
                "payload_bits": model["payload_bits"],
                "payload_fits": model["payload_fits"],
            }
        )
    )
    source = data["source"]
    header = []
    if source["checkpoint"]:
        header.append(("checkpoint", f"{source['checkpoint']} (shapes from the file headers)"))
    if source["stats"]:
        header.append(("stats", source["stats"]))
    if source["k"] is not None:
        tokens = "prompt tokens" if source.get("generate") is None else "generated tokens"
        header.append(
            (
                "calibration",
                f"k = {source['k']:g}, code {source['scheme']}, recipe {source.get('recipe')}, "
                f"{source.get('tokens', 0):,} {tokens}",
            )
        )
    header.append(("target", f"{target.name}: {target.description}"))
    fits = "every projection fits" if model["fits"] else "some projection does NOT fit"
    header += [
        ("projections", f"{model['projections']:,} ({fits})"),
        ("neurons", _fmt_number(model["neurons"])),
        ("synapses", _fmt_number(model["synapses"])),
        (
            "synaptic memory",
            f"{format_bytes(model['memory_bytes'])} at {target.weight_bits} bits per weight",
        ),
        *(
            [
                (
                    "active synapses per token",
                    f"{_fmt_number(model['active_synapses_per_token'])} (routed experts a "
                    "token skips left out, SPEC §8)",
                )
            ]
            if data["moe_layers"]
            else []
        ),
        ("cores", _fmt_number(model["cores"])),
        (
            "chips",
            "n/a"
            if model["chips"] is None
            else f"{model['chips']:,} (set by {model['chips_limited_by']})",
        ),
        ("time steps per token", _fmt_number(model["time_steps_per_token"])),
        ("spikes per token", _fmt_number(model["spikes_per_token"])),
        ("synaptic ops per token", _fmt_number(model["synops_per_token"])),
        ("graded events per token", _fmt_number(model["graded_events_per_token"])),
        (
            "integrator width",
            _width(model["accumulator_bits"], target.state_bits, model["state_fits"]),
        ),
        (
            "graded payload width",
            _width(model["payload_bits"], target.payload_bits, model["payload_fits"]),
        ),
    ]
    notes = [
        "Rule: one integrator per output and scale group (G); integrators fill cores in "
        "order, n per core, n the largest count every published per-core limit allows; a "
        "core holds one projection; chips = the largest need over the published chip "
        "limits (docs/deployment.rst).",
        "T per token sums the projections' T (run one after another); synaptic ops = spikes "
        "x out; graded events = non-zero counts (one event each with a graded payload).",
    ]
    notes += [f"{name}: {text}" for name, text in target.sources.items()]
    notes += [f"{name} (derived): {text}" for name, text in target.derived.items()]
    notes += list(target.notes)
    notes += [f"Unknown: {text}" for text in plan.unknown]
    problems = [p for p in data["projections"] if p["problem"]]
    if problems:
        notes.append(
            f"Does not fit: {len(problems)} projection(s), e.g. {problems[0]['name']}: "
            f"{problems[0]['problem']}"
        )
    extra = ()
    if data["moe_layers"]:
        notes.append(
            "MoE layers: every routed expert is resident (counted in neurons, synapses, "
            "cores); per-token figures count each routed expert for its share of the "
            "layer's tokens (the stats file's routing); active synapses = the layer's other "
            "projections + sum of expert synapses x share (top_k / E from config.json "
            "without calibration); macro sparsity = 1 - active / resident."
        )
        extra = (("MoE layers: resident vs active synapses", _MOE_DISPLAY, data["moe_layers"]),)
    return Report(
        kind="plan",
        title=f"Deployment plan on {target.name}",
        data=data,
        columns=_COLUMNS,
        row_data=tuple(rows),
        display=_DISPLAY,
        header=tuple(header),
        notes=tuple(notes),
        extra=extra,
    )
