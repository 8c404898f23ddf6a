"""``spikecode report experts``: per-expert routing and spikes of a MoE stats file (SPEC §8).

The figures come from :func:`spikecode.reports.moe.moe_summary`.
"""

from __future__ import annotations

from typing import Any

from spikecode.errors import SpikecodeError
from spikecode.reports.moe import moe_summary
from spikecode.reports.sources import Source
from spikecode.reports.tables import Column, Report, _fmt_energy, _fmt_number, _fmt_text

__all__ = ["experts_report"]


_LAYER_DISPLAY = (
    Column("layer", "MoE layer", _fmt_text),
    Column("num_experts", "experts"),
    Column("top_k", "top-k"),
    Column("tokens", "tokens"),
    Column("imbalance", "max/mean"),
    Column("macro_sparsity", "macro sparsity"),
    Column("micro_sparsity", "micro sparsity"),
    Column("combined_sparsity", "combined"),
    Column("spikes_per_mac", "spikes/MAC"),
)


def experts_report(
    source: Source, k: float | None = None, scheme: str | None = None, *, table: Any = None
) -> Report:
    """Per-expert routing and spikes, and the two sparsities, of a MoE stats file (SPEC §8).

    Parameters
    ----------
    source
        A stats file of a MoE model (:func:`~spikecode.reports.load_source`).
    k, scheme
        As in :func:`~spikecode.reports.sparsity_report`.
    table
        Energy table for the per-token energies.

    Returns
    -------
    Report
        Rows: one per routed expert (``layer, expert, tokens, load, spikes_per_element,
        sparsity, spike_adds_per_token, spike_pj_per_token``); a table per MoE layer; the
        model's densities and energies in ``to_dict()["model"]``.

    Raises
    ------
    SpikecodeError
        The source has no MoE layers (an activation file, or a dense model's stats).
    """
    k = source.resolve_k(k)
    scheme = source.resolve_scheme(scheme)
    summary = moe_summary(source, source.layer_results(k, scheme), table)
    if summary is None:
        raise SpikecodeError(
            "the source has no MoE layers: give the stats file of a MoE model's calibration"
        )
    model = summary["model"]
    columns = (
        "layer", "expert", "tokens", "load", "spikes_per_element", "sparsity",
        "spike_adds_per_token", "spike_pj_per_token",
    )  # fmt: skip
    display = (
        Column("layer", "MoE layer", _fmt_text),
        Column("expert", "expert"),
        Column("tokens", "tokens"),
        Column("load", "load"),
        Column("spikes_per_element", "spikes/elem"),
        Column("sparsity", "sparsity"),
        Column("spike_pj_per_token", "spike/token", _fmt_energy),
    )
    model_rows = (
        {"what": "macro sparsity (routing): 1 - active/all MACs", "value": model["macro_sparsity"]},
        {"what": "micro sparsity (spiking, SPEC §5)", "value": model["micro_sparsity"]},
        {"what": "combined: 1 - (1 - macro)(1 - micro)", "value": model["combined_sparsity"]},
        {"what": "spike adds per active MAC", "value": model["spikes_per_mac"]},
        {"what": "spike-driven energy per token", "value": _fmt_energy(model["spike_pj"])},
        {"what": "dense FP16, same active size", "value": _fmt_energy(model["fp16_active_pj"])},
        {"what": "dense FP16, all experts", "value": _fmt_energy(model["fp16_all_pj"])},
    )  # fmt: skip
    return Report(
        kind="experts",
        title="spikecode report experts",
        data={
            "report": "experts",
            "source": source.describe(),
            "k": k,
            "scheme": scheme,
            **summary,
        },
        columns=columns,
        row_data=tuple({c: row[c] for c in columns} for row in summary["experts"]),
        display=display,
        header=(("k", f"{k:g}"), ("scheme", scheme)),
        notes=(
            "load: the expert's share of the layer's routed (token, expert) pairs; "
            "spike/token: its spike-driven energy per token of the model (only the "
            "tokens routed to it). Figures per token of the model (SPEC §8).",
        ),
        extra=(
            ("MoE layers", _LAYER_DISPLAY, tuple(summary["layers"])),
            (
                "the model: routing x spiking",
                (Column("what", "", _fmt_text), Column("value", "", _fmt_number)),
                model_rows,
            ),
        ),
    )
