"""Report tables built from a source (SPEC §5, §6).

The builders (:func:`sparsity_report`, :func:`energy_report`, :func:`equation24_report`,
:func:`tradeoff_report`) return a :class:`Report`: ``to_dict()`` for JSON, ``rows()`` for
CSV and ``render(fmt)`` for the ``table``, ``json``, ``csv`` and ``markdown`` texts the
CLI prints. Everything here is pure (no printing, no files written);
:mod:`spikecode.reports.plots` draws the same data.

Totals over layers follow the stats-file rule (``totals`` of ``docs/statsfile.rst``):
integer spike totals are summed, so spikes per element, silent, ``|c| ≤ 7`` and windowed
figures are ratios of sums; the firing rate is the element-weighted mean of the layers'
firing rates (each layer codes with its own T) and the sparsity one minus it; errors are
weighted by element count.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spikecode.calibration.records import k_key
from spikecode.energy import (
    EnergyTable,
    format_ratio,
    format_reduction,
    load_table,
    mac_energy,
)
from spikecode.energy import energy_report as _energy_report
from spikecode.energy.formatting import format_energy
from spikecode.errors import SpikecodeError
from spikecode.reports.moe import GROUPINGS, grouped, moe_summary
from spikecode.reports.sources import (
    ERROR_MEASURES,
    FORMATS,
    WINDOW_DEFINITION,
    LayerResult,
    Source,
)
from spikecode.stats import SpikeStats

__all__ = [
    "Column",
    "Report",
    "check_format",
    "energy_report",
    "equation24_report",
    "sparsity_report",
    "tradeoff_report",
]


Formatter = Callable[[Any], str]


def _fmt_number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4g}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"
    return str(value)


def _fmt_energy(value: Any) -> str:
    """Energy in pJ, printed with a unit that keeps 4 significant digits readable."""
    return format_energy(value)


def _fmt_text(value: Any) -> str:
    return "" if value is None else str(value)


def _fmt_percent(value: Any) -> str:
    return format_reduction(value)


@dataclass(frozen=True)
class Column:
    """A displayed column: row key, header and how its values print."""

    key: str
    header: str
    fmt: Formatter = _fmt_number


@dataclass(frozen=True)
class Report:
    """A built report: JSON-ready data, flat rows and how to display them.

    Attributes
    ----------
    kind
        ``"sparsity"``, ``"energy"`` or ``"tradeoff"``.
    data
        JSON-ready dict (:meth:`to_dict`).
    columns
        Keys of every row, in order (CSV header).
    row_data
        Flat rows (raw numbers; None where not available), the last one the total when
        the report has one.
    display
        Columns shown by the ``table`` and ``markdown`` formats (formatted values).
    header
        Key/value lines printed above the ``table`` format.
    notes
        Lines printed below the ``table`` and ``markdown`` formats.
    extra
        Further (title, display columns, rows) tables printed after the main one.
    """

    kind: str
    title: str
    data: dict[str, Any]
    columns: tuple[str, ...]
    row_data: tuple[dict[str, Any], ...]
    display: tuple[Column, ...]
    header: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[Column, ...], tuple[dict[str, Any], ...]], ...] = field(
        default_factory=tuple
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (a copy)."""
        return json.loads(json.dumps(self.data))

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows, every one with the keys of :attr:`columns`."""
        return [dict(row) for row in self.row_data]

    def render(self, fmt: str = "table") -> str:
        """The report as text in one of :data:`FORMATS`.

        ``json``: :meth:`to_dict`, indented; ``csv``: :attr:`columns` and the raw
        :meth:`rows` (empty cell for None); ``markdown``: a pipe table of the display
        columns, with the notes below; ``table``: the header lines, an aligned table and
        the notes.
        """
        check_format(fmt)
        if fmt == "json":
            return json.dumps(self.data, indent=2) + "\n"
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator="\n")
            writer.writeheader()
            for row in self.row_data:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            return buffer.getvalue()
        tables = [("", self.display, self.row_data), *self.extra]
        if fmt == "markdown":
            parts = [f"## {self.title}", ""]
            parts += [f"- {name}: {value}" for name, value in self.header]
            for title, columns, rows in tables:
                parts += ["", *([f"### {title}", ""] if title else [])]
                parts += _markdown_table(columns, rows)
            if self.notes:
                parts += ["", *(f"{note}" for note in self.notes)]
            return "\n".join(parts) + "\n"
        parts = [self.title]
        if self.header:
            width = max(len(name) for name, _ in self.header)
            parts += [f"  {name:<{width}}  {value}" for name, value in self.header]
        for title, columns, rows in tables:
            parts += ["", *([title] if title else [])]
            parts += _text_table(columns, rows)
        if self.notes:
            parts.append("")
            for note in self.notes:
                parts += textwrap.wrap(note, 96, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(parts) + "\n"


def check_format(fmt: str) -> str:
    """Validate an output format name (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise SpikecodeError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _cells(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[column.fmt(row.get(column.key)) for column in columns] for row in rows]


def _text_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = _cells(columns, rows)
    widths = [
        max(len(column.header), *(len(line[i]) for line in cells))
        for i, column in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        # First column (names) left-aligned, numbers right-aligned.
        out = [values[0].ljust(widths[0])]
        out += [value.rjust(width) for value, width in zip(values[1:], widths[1:], strict=True)]
        return "  " + "  ".join(out).rstrip()

    return [
        line([c.header for c in columns]),
        line(["-" * w for w in widths]),
        *(line(values) for values in cells),
    ]


def _markdown_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(c.header) for c in columns) + " |"]
    lines.append("|" + "|".join([":---", *("---:" for _ in columns[1:])]) + "|")
    lines += ["| " + " | ".join(map(escape, values)) + " |" for values in _cells(columns, rows)]
    return lines


def _source_label(source: Source) -> str:
    info = source.describe()
    if info["kind"] == "activations":
        shape = "×".join(map(str, info["shape"]))
        where = info["path"] or "array"
        key = f" [{info['key']}]" if info.get("key") else ""
        return f"activations {where}{key}, {shape} ({info['layers']} layer(s))"
    return f"stats file {info['path'] or '(in memory)'} (version {info['version']})"


def _recipe_header(source: Source) -> tuple[tuple[str, str], ...]:
    """Header lines naming the recipe and what a token is, for stats-file sources."""
    recipe = source.describe().get("recipe")
    if recipe is None:
        return ()
    if recipe["name"] == "release":
        driven = (
            "every projection but mlp.down_proj (float, not measured) and the window-attention "
            "q per head; window-attention k, v INT8 (not spikes)"
        )
    else:
        driven = "every measured linear projection"
    tokens = (
        "prompt tokens"
        if recipe["generate"] is None
        else f"generated tokens ({recipe['generate']} decode steps per sample, one token each)"
    )
    return (
        ("recipe", recipe["name"]),
        ("spike-driven inputs", driven),
        ("tokens", tokens),
    )


def _per_token(source: Source) -> str:
    recipe = source.describe().get("recipe")
    return "per token" if recipe is None or recipe["generate"] is None else "per generated token"


def _weighted(values: Sequence[tuple[float | None, int]]) -> float | None:
    # Element-weighted mean; unknown as soon as one layer's value is unknown.
    if not values or any(v is None for v, _ in values):
        return None
    return sum(v * w for v, w in values) / sum(w for _, w in values)  # type: ignore[operator]


def _stats_dict(stats: SpikeStats) -> dict[str, Any]:
    d = stats.to_dict()
    del d["scheme"], d["window"]
    return d


def _total_stats(results: Sequence[LayerResult]) -> SpikeStats:
    total = results[0].stats
    for result in results[1:]:
        total = total.merge(result.stats)
    return total


_SPARSITY_COLUMNS = (
    "layer", "family", "in_features", "out_features", "tokens", "T", "elements", "spikes",
    "spikes_per_element", "firing_rate", "sparsity", "silent_fraction", "within_7_fraction",
    "window_sparsity", "max_abs_count", "vth_mean", "rel_error", "cosine",
)  # fmt: skip


def _summary(name: str, results: Sequence[LayerResult]) -> dict[str, Any]:
    """The totals of some layers: spike totals summed, rates and errors element-weighted."""
    weights = [r.stats.elements for r in results]
    abs_counts = [r.max_abs_count for r in results]
    return {
        "name": name,
        "layers": len(results),
        "family": None,
        "in_features": None,
        "out_features": None,
        "tokens": None,
        **_stats_dict(_total_stats(results)),
        "max_abs_count": None if None in abs_counts else max(abs_counts),  # type: ignore[type-var]
        "vth_mean": None,
        "rel_error": _weighted([(r.rel_error, w) for r, w in zip(results, weights, strict=True)]),
        "cosine": _weighted([(r.cosine, w) for r, w in zip(results, weights, strict=True)]),
    }


def sparsity_report(
    source: Source, k: float | None = None, scheme: str | None = None, *, by: str = "layer"
) -> Report:
    """Per-layer and total SPEC §5 statistics at one k and scheme.

    Parameters
    ----------
    source
        From :func:`load_source`.
    k, scheme
        Defaults: k = 3 (for a stats file: its k closest to 3) and bitwise-bidirectional
        (for a stats file lacking it: its first scheme).
    by
        ``"layer"`` (a row per layer), ``"family"`` (a row per layer family) or
        ``"expert"`` (a row per routed expert of a MoE model, its projections summed,
        SPEC §8; other layers only in the total): grouped rows are totals as ``total``.

    Returns
    -------
    Report
        ``to_dict()`` keys: ``report`` (``"sparsity"``), ``source``, ``k``, ``scheme``, ``by``,
        ``groups`` (grouped totals; empty for ``by="layer"``),
        ``window``, ``window_definition``, ``error_measure``,
        ``error_measure_definition``, ``layers`` (one dict per layer) and ``total``. A
        layer dict: ``name``, ``family``, ``in_features``, ``out_features``, ``tokens``,
        ``T``, the integer totals ``elements``, ``spikes``, ``silent``, ``within_7``,
        ``window_spikes``, ``window_steps``, the rates ``spikes_per_element``,
        ``firing_rate``, ``sparsity``, ``silent_fraction``, ``within_7_fraction``,
        ``window_sparsity``, and ``max_abs_count``, ``vth_mean``, ``rel_error``,
        ``cosine``. ``total`` has the same keys (``name`` is ``"total"``; ``family``,
        ``in_features``, ``out_features``, ``tokens`` and ``vth_mean`` are None, ``T`` is
        the largest T, ``layers`` the layer count; ``firing_rate`` is ``Σ spikes / Σ
        (elements · T)``, each layer over its own T, and ``sparsity`` one minus it).
    """
    if by not in GROUPINGS:
        raise SpikecodeError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    k = source.resolve_k(k)
    scheme = source.resolve_scheme(scheme)
    results = source.layer_results(k, scheme)
    layers = []
    for r in results:
        layers.append(
            {
                "name": r.name,
                "family": r.family,
                "in_features": r.in_features,
                "out_features": r.out_features,
                "tokens": r.tokens,
                **_stats_dict(r.stats),
                "max_abs_count": r.max_abs_count,
                "vth_mean": r.vth_mean,
                "rel_error": r.rel_error,
                "cosine": r.cosine,
            }
        )
    total = _summary("total", results)
    groups = (
        [] if by == "layer" else [_summary(name, rs) for name, rs in grouped(results, by).items()]
    )
    data = {
        "report": "sparsity",
        "source": source.describe(),
        "k": k,
        "scheme": scheme,
        "window": source.window,
        "window_definition": WINDOW_DEFINITION.replace("w)*w", f"{source.window})*{source.window}"),
        "error_measure": source.error_measure,
        "error_measure_definition": ERROR_MEASURES[source.error_measure],
        "by": by,
        "layers": layers,
        "groups": groups,
        "total": total,
    }
    rows = tuple(
        {"layer": d["name"], **{c: d[c] for c in _SPARSITY_COLUMNS[1:]}}
        for d in [*(groups if by != "layer" else layers), total]
    )
    w = source.window
    error = "output" if source.error_measure == "output" else "recon."
    display = (
        Column("layer", "layer" if by == "layer" else by, _fmt_text),
        Column("T", "T"),
        Column("spikes_per_element", "spikes/elem"),
        Column("sparsity", "sparsity"),
        Column("window_sparsity", f"win-{w} sparsity*"),
        Column("silent_fraction", "silent"),
        Column("within_7_fraction", "|c|<=7"),
        Column("max_abs_count", "max|c|"),
        Column("rel_error", f"{error} rel. error"),
        Column("cosine", f"{error} cosine"),
    )
    return Report(
        kind="sparsity",
        title="spikecode report sparsity",
        data=data,
        columns=_SPARSITY_COLUMNS,
        row_data=rows,
        display=display,
        header=(
            ("source", _source_label(source)),
            *_recipe_header(source),
            ("k", k_key(k)),
            ("scheme", scheme),
            *((("rows", f"one per {by}, its layers' totals"),) if by != "layer" else ()),
        ),
        notes=(
            f"* window-{w} sparsity: {data['window_definition']}",
            f"Errors: {ERROR_MEASURES[source.error_measure]}.",
            "Totals: spike totals summed; firing rate and errors are element-weighted means "
            "of the layers' (each layer codes with its own T).",
        ),
    )


_MAC_MODES = ("spike", "fp32", "fp16", "int8")


def _eq24_rows(mac: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    rows = [{"mac": "spike", "energy_pj": mac["spike_mac_pj"], "reduction": None, "ratio": None}]
    rows += [
        {
            "mac": mode,
            "energy_pj": mac[f"{mode}_mac_pj"],
            "reduction": mac[f"reduction_vs_{mode}"],
            "ratio": mac[f"ratio_vs_{mode}"],
        }
        for mode in _MAC_MODES[1:]
    ]
    return tuple(rows)


_EQ24_DISPLAY = (
    Column("mac", "MAC", lambda v: {"spike": "spike-driven"}.get(v, str(v).upper())),
    Column("energy_pj", "energy", _fmt_energy),
    Column("reduction", "spike saves", _fmt_percent),
    Column("ratio", "spike cheaper by", format_ratio),
)


def _eq24_title(avg: float) -> str:
    return f"equation 24: one MAC-equivalent at {_fmt_number(avg)} spikes per element"


def equation24_report(avg_spikes_per_element: float, table: Any = None) -> Report:
    """The report's equation 24 as a what-if, without data (SPEC §6).

    ``spike_mac_pj = avg_spikes_per_element × E(INT8 add)`` against FP32, FP16 and INT8
    MACs. With 1.13 spikes and the default table: 0.0339 pJ, 97.7 % below FP16, 85.3 %
    below INT8, 44.2× and 6.78× cheaper.

    Parameters
    ----------
    avg_spikes_per_element
        Average spikes per element (>= 0).
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"energy"``), ``source`` (``{"kind": "what-if"}``),
        ``k`` and ``scheme`` (None), the :func:`~spikecode.energy.mac_energy` keys at
        the top level, ``table``, ``settings``, ``assumptions``, ``layers`` (empty) and
        ``total`` (None) — the layout of :func:`energy_report`. Rows: one per MAC type
        (``mac``, ``energy_pj``, ``reduction``, ``ratio``).
    """
    energy_table = load_table(table)
    mac = mac_energy(avg_spikes_per_element, energy_table)
    from spikecode.energy import ASSUMPTIONS

    data = {
        "report": "energy",
        "source": {"kind": "what-if"},
        "k": None,
        "scheme": None,
        **mac,
        "table": _table_dict(energy_table),
        "settings": {"memory": None, "weight_bits": None, "block_sizes": []},
        "assumptions": list(ASSUMPTIONS[:3]),
        "layers": [],
        "total": None,
    }
    return Report(
        kind="energy",
        title="spikecode report energy (what-if, report equation 24)",
        data=data,
        columns=("mac", "energy_pj", "reduction", "ratio"),
        row_data=_eq24_rows(mac),
        display=_EQ24_DISPLAY,
        header=(
            ("average spikes per element", _fmt_number(mac["avg_spikes_per_element"])),
            ("INT8 add", _fmt_energy(mac["int8_add_pj"])),
            ("energy table", energy_table.name),
        ),
        notes=(
            "spike-driven MAC = spikes per element x E(INT8 add); a dense MAC = mult + add "
            "(SPEC §6). Arithmetic only: no memory, control or routing energy.",
        ),
    )


def _table_dict(table: EnergyTable) -> dict[str, Any]:
    return {
        "name": table.name,
        "unit": "pJ",
        "description": table.description,
        "source": dict(table.source),
    }


def energy_report(
    source: Source,
    k: float | None = None,
    scheme: str | None = None,
    *,
    table: Any = None,
    memory: str | None = None,
    block_sizes: Sequence[int] | None = None,
    out_features: int | None = None,
    weight_bits: int = 8,
) -> Report:
    """Per-layer energy of a source, with the equation-24 summary (SPEC §6).

    Parameters
    ----------
    source
        From :func:`load_source`.
    k, scheme
        As in :func:`sparsity_report`.
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    memory
        Memory level of the weight-fetch model (``"dram"``, ``"sram_1mb"``...); None for
        arithmetic only, as the report.
    block_sizes
        Block sizes of block skipping (default: 16, 64, 256; a stats file's own).
    out_features
        Fan-out of each layer for activation files (default ``in_features``).
    weight_bits
        Bits per stored weight for the memory model.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"energy"``), ``source``, ``k``, ``scheme``; at the
        top level the :func:`~spikecode.energy.mac_energy` keys (``avg_spikes_per_element``,
        ``int8_add_pj``, ``spike_mac_pj``, ``fp32_mac_pj``, ``fp16_mac_pj``,
        ``int8_mac_pj``, ``reduction_vs_*`` as fractions, ``ratio_vs_*``) for the
        network's spikes per element ``Σ spikes / Σ elements``, exactly as the report
        computes equation 24; then :meth:`spikecode.energy.EnergyReport.to_dict`'s
        ``table``, ``settings``, ``assumptions``, ``layers`` and ``total`` (per-token
        energies weighted by each layer's fan-out, and the memory model). Rows are
        :meth:`~spikecode.energy.EnergyReport.rows`.
    """
    energy_table = load_table(table)
    if memory is not None:
        memory = energy_table.resolve_level(memory)
    k = source.resolve_k(k)
    scheme = source.resolve_scheme(scheme)
    sizes = source.default_block_sizes() if block_sizes is None else tuple(block_sizes)
    results = source.layer_results(k, scheme, block_sizes=sizes, out_features=out_features)
    report = _energy_report(
        [r.energy_spec() for r in results],
        energy_table,
        memory=memory,
        block_sizes=sizes,
        weight_bits=weight_bits,
    )
    details = report.to_dict()
    details["layers"] = [
        {"name": layer.pop("name"), "family": result.family, **layer}
        for layer, result in zip(details["layers"], results, strict=True)
    ]
    mac = mac_energy(report.spikes_per_element, energy_table)
    moe = moe_summary(source, results, energy_table)
    data = {
        "report": "energy",
        "source": source.describe(),
        "k": k,
        "scheme": scheme,
        **mac,
        **details,
        **({"moe": moe} if moe is not None else {}),
    }
    pj = _fmt_energy
    display = [
        Column("layer", "layer", _fmt_text),
        Column("spikes_per_element", "spikes/elem"),
        Column("silent_fraction", "silent"),
        Column("fp16_pj_per_token", "FP16/token", pj),
        Column("int8_pj_per_token", "INT8/token", pj),
        Column("spike_pj_per_token", "spike/token", pj),
        Column("reduction_vs_fp16", "vs FP16", _fmt_percent),
        Column("reduction_vs_int8", "vs INT8", _fmt_percent),
        Column("ratio_vs_int8", "x INT8", format_ratio),
    ]
    extra: list[tuple[str, tuple[Column, ...], tuple[dict[str, Any], ...]]] = []
    rows = tuple(report.rows())
    notes = [
        f"Energies are {_per_token(source)} (arithmetic; spike = sum |spikes| x fan-out "
        "INT8 adds).",
    ]
    if any(r.rows_per_token > 1 for r in results):
        notes.append(
            "Window-attention q sites: all heads of a token as one input; fan-out = the "
            "window's sliding_window + 1 keys (an upper bound until the context fills it)."
        )
    recipe = source.describe().get("recipe")
    if recipe is not None and recipe["name"] == "release":
        notes.append(
            "Recipe release: mlp.down_proj and the attention scores' softmax x V run in "
            "float and are not in these totals."
        )
    if memory is not None:
        fetch = [
            Column("layer", "layer", _fmt_text),
            Column("fetch_dense_pj_per_token", "dense", pj),
            Column("fetch_channel_pj_per_token", "channel skip", pj),
            *(Column(f"fetch_block{b}_pj_per_token", f"block {b}", pj) for b in sizes),
            *(Column(f"survival_block{b}", f"survival {b}") for b in sizes),
        ]
        extra.append(
            (
                f"weight fetch per token ({memory}, {energy_table.access_pj(memory):g} pJ per "
                f"{energy_table.access_bits}-bit access, {weight_bits}-bit weights)",
                tuple(fetch),
                rows,
            )
        )
        notes.append(
            "survival B = share of the channel-skip saving kept with blocks of B channels; "
            "fetch assumes no weight reuse across tokens. Arithmetic + fetch per token: "
            "the *_fetch_pj_per_token and spike_block* columns of --format csv/json."
        )
    if moe is not None:
        notes.append(
            "MoE: a routed expert's per-token energy counts only the tokens routed to it. "
            "Routing x spiking per token: macro sparsity {macro:.4f} (1 - active / all MACs), "
            "micro sparsity {micro:.4f} (SPEC §5), combined {combined:.4f}; "
            "dense FP16 of the same active size {active}, of all experts {every} "
            "(spikecode report experts).".format(
                macro=moe["model"]["macro_sparsity"],
                micro=moe["model"]["micro_sparsity"],
                combined=moe["model"]["combined_sparsity"],
                active=_fmt_energy(moe["model"]["fp16_active_pj"]),
                every=_fmt_energy(moe["model"]["fp16_all_pj"]),
            )
        )
    extra.append((_eq24_title(mac["avg_spikes_per_element"]), _EQ24_DISPLAY, _eq24_rows(mac)))
    notes.append(
        "Equation 24 uses the network's spikes per element (sum spikes / sum elements); the "
        "per-layer totals weigh layers by their fan-out."
    )
    return Report(
        kind="energy",
        title="spikecode report energy",
        data=data,
        columns=tuple(report.columns()),
        row_data=rows,
        display=tuple(display),
        header=(
            ("source", _source_label(source)),
            *_recipe_header(source),
            ("k", k_key(k)),
            ("scheme", scheme),
            ("energy table", energy_table.name),
            ("memory", memory or "none (arithmetic only, as the report)"),
        ),
        notes=tuple(notes),
        extra=tuple(extra),
    )


_TRADEOFF_COLUMNS = (
    "k", "T", "spikes_per_element", "sparsity", "window_sparsity", "silent_fraction",
    "within_7_fraction", "rel_error", "cosine",
)  # fmt: skip


def tradeoff_report(
    source: Source,
    ks: Sequence[float] | None = None,
    scheme: str | None = None,
    *,
    by: str | None = None,
) -> Report:
    """Network totals against k: the trade-off of the report's table 11 (SPEC §5).

    Parameters
    ----------
    source
        From :func:`load_source`.
    ks
        The k values (default 2, 2.5, 3, 3.5, 4; for a stats file, all of its k).
    scheme
        As in :func:`sparsity_report`.
    by
        None (the network's totals per k), or ``"family"``, ``"expert"`` or ``"layer"``:
        a point per k and group (``group`` names it), as :func:`sparsity_report`'s
        grouped rows.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"tradeoff"``), ``by``, ``source``, ``scheme``, ``window``,
        ``window_definition``, ``error_measure``, ``error_measure_definition`` and
        ``points``: one dict per k with ``k`` and the totals of
        :func:`sparsity_report` (``T``, ``spikes_per_element``, ``sparsity``,
        ``window_sparsity``, ``silent_fraction``, ``within_7_fraction``, ``rel_error``,
        ``cosine``).
    """
    scheme = source.resolve_scheme(scheme)
    points = []
    for k in source.resolve_ks(ks):
        if by is None:
            total = sparsity_report(source, k, scheme).data["total"]
            points.append({"k": k, **{c: total[c] for c in _TRADEOFF_COLUMNS[1:]}})
            continue
        grouped_data = sparsity_report(source, k, scheme, by=by).data
        for row in grouped_data["groups"] if by != "layer" else grouped_data["layers"]:
            points.append(
                {"k": k, "group": row["name"], **{c: row[c] for c in _TRADEOFF_COLUMNS[1:]}}
            )
    w = source.window
    data = {
        "report": "tradeoff",
        "by": by,
        "source": source.describe(),
        "scheme": scheme,
        "window": w,
        "window_definition": WINDOW_DEFINITION.replace("w)*w", f"{w})*{w}"),
        "error_measure": source.error_measure,
        "error_measure_definition": ERROR_MEASURES[source.error_measure],
        "points": points,
    }
    display = (
        Column("k", "k", k_key),
        *((Column("group", by, _fmt_text),) if by is not None else ()),
        Column("T", "T"),
        Column("spikes_per_element", "spikes/elem"),
        Column("sparsity", "sparsity"),
        Column("window_sparsity", f"win-{w} sparsity*"),
        Column("within_7_fraction", "|c|<=7"),
        Column("rel_error", "rel. error"),
        Column("cosine", "cosine"),
    )
    return Report(
        kind="tradeoff",
        title="spikecode report tradeoff",
        data=data,
        columns=_TRADEOFF_COLUMNS if by is None else ("k", "group", *_TRADEOFF_COLUMNS[1:]),
        row_data=tuple(points),
        display=display,
        header=(("source", _source_label(source)), ("scheme", scheme)),
        notes=(
            f"* window-{w} sparsity: {data['window_definition']}",
            f"Errors: {ERROR_MEASURES[source.error_measure]}.",
        ),
    )
