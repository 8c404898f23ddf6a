"""Reports: what a calibration or an activation file says, as tables and plots.

- :mod:`~spikecode.reports.sources`: a stats file or an activation file read into
  per-layer results (:func:`load_source`);
- :mod:`~spikecode.reports.tables`: sparsity, energy, equation-24 and trade-off
  tables (:class:`Report`), rendered as text, JSON, CSV or Markdown;
- :mod:`~spikecode.reports.moe` and :mod:`~spikecode.reports.experts`: routing,
  per-expert spikes and the two sparsities of MoE models (SPEC §8);
- :mod:`~spikecode.reports.plotdata` and :mod:`~spikecode.reports.plots`: the data
  behind the figures, and the matplotlib figures themselves.
"""

from typing import TYPE_CHECKING

from spikecode._lazy import lazy_exports

# Public names and the module each comes from, imported on first use: a report table
# does not import matplotlib (spikecode.reports.plots), nor a plot the tables it does not
# draw (docs/developing.rst, "Imports").
_EXPORTS = {
    "experts_report": "spikecode.reports.experts",
    "moe_summary": "spikecode.reports.moe",
    **dict.fromkeys(
        ["RasterData", "count_histograms", "raster_data"], "spikecode.reports.plotdata"
    ),
    **dict.fromkeys(
        [
            "FIGURE_FORMATS",
            "POLARITY_COLORS",
            "check_figure_path",
            "plot_energy",
            "plot_hist",
            "plot_raster",
            "plot_tradeoff",
            "save_figure",
        ],
        "spikecode.reports.plots",
    ),
    **dict.fromkeys(
        [
            "DEFAULT_K",
            "DEFAULT_KS",
            "DEFAULT_SCHEME",
            "FORMATS",
            "ActivationSource",
            "LayerResult",
            "Source",
            "StatsSource",
            "checkpoint_source",
            "count_histogram",
            "load_source",
            "merge_histograms",
            "reconstruction_error",
        ],
        "spikecode.reports.sources",
    ),
    **dict.fromkeys(
        [
            "Column",
            "Report",
            "check_format",
            "energy_report",
            "equation24_report",
            "sparsity_report",
            "tradeoff_report",
        ],
        "spikecode.reports.tables",
    ),
}
_SUBMODULES = ("experts", "moe", "plotdata", "plots", "sources", "tables")
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from spikecode.reports.experts import experts_report
    from spikecode.reports.moe import moe_summary
    from spikecode.reports.plotdata import RasterData, count_histograms, raster_data
    from spikecode.reports.plots import (
        FIGURE_FORMATS,
        POLARITY_COLORS,
        check_figure_path,
        plot_energy,
        plot_hist,
        plot_raster,
        plot_tradeoff,
        save_figure,
    )
    from spikecode.reports.sources import (
        DEFAULT_K,
        DEFAULT_KS,
        DEFAULT_SCHEME,
        FORMATS,
        ActivationSource,
        LayerResult,
        Source,
        StatsSource,
        checkpoint_source,
        count_histogram,
        load_source,
        merge_histograms,
        reconstruction_error,
    )
    from spikecode.reports.tables import (
        Column,
        Report,
        check_format,
        energy_report,
        equation24_report,
        sparsity_report,
        tradeoff_report,
    )

__all__ = [
    "DEFAULT_K",
    "DEFAULT_KS",
    "DEFAULT_SCHEME",
    "FIGURE_FORMATS",
    "FORMATS",
    "POLARITY_COLORS",
    "ActivationSource",
    "Column",
    "LayerResult",
    "RasterData",
    "Report",
    "Source",
    "StatsSource",
    "check_figure_path",
    "check_format",
    "checkpoint_source",
    "count_histogram",
    "count_histograms",
    "energy_report",
    "equation24_report",
    "experts_report",
    "load_source",
    "merge_histograms",
    "moe_summary",
    "plot_energy",
    "plot_hist",
    "plot_raster",
    "plot_tradeoff",
    "raster_data",
    "reconstruction_error",
    "save_figure",
    "sparsity_report",
    "tradeoff_report",
]
