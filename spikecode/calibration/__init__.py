"""Calibration: run text through a model, measure every projection's spike input.

The data flow, module by module:

- :mod:`~spikecode.calibration.data`: the text set, its tokenization and batches;
- :mod:`~spikecode.calibration.counting`: the fused counting kernel and the SPEC §5
  totals of a count histogram;
- :mod:`~spikecode.calibration.accumulator`: the streaming per-layer statistics;
- :mod:`~spikecode.calibration.run`: :func:`calibrate`, one pass over the set;
- :mod:`~spikecode.calibration.records` and :mod:`~spikecode.calibration.statsfile`:
  the stats file's records, and reading and writing it;
- :mod:`~spikecode.calibration.merge`: exact merges of stats over disjoint sample sets;
- :mod:`~spikecode.calibration.distributed`: data-parallel calibration on
  ``torch.distributed`` (sharding by batch, exact reduce);
- :mod:`~spikecode.calibration.evaluate`: the spiked model against the float one;
- :mod:`~spikecode.calibration.advisor`: a k per layer from a stats file.
"""

from typing import TYPE_CHECKING

from spikecode._lazy import lazy_exports

# Public names and the module each comes from, imported on first use: a stats-file reader
# (`from spikecode.calibration import load_stats`, the report and plot commands) imports
# the records and the file reader only, not the torch side of calibration (run, data,
# accumulator, evaluate), which costs seconds (docs/developing.rst, "Imports").
_EXPORTS = {
    **dict.fromkeys(
        [
            "DEFAULT_ERROR_ROWS",
            "DEFAULT_ERROR_STRIDE",
            "DEFAULT_SCHEMES",
            "ERROR_FLUSH_BYTES",
            "ERROR_FLUSH_ROWS",
            "LayerAccumulator",
        ],
        "spikecode.calibration.accumulator",
    ),
    **dict.fromkeys(
        [
            "ADVICE_FORMAT",
            "ADVICE_VERSION",
            "Advice",
            "LayerChoice",
            "advise",
            "load_k_map",
            "save_advice",
        ],
        "spikecode.calibration.advisor",
    ),
    **dict.fromkeys(
        [
            "fake_quantize_weight",
            "stats_from_histogram",
            "stats_from_histograms",
            "weight_group_size",
        ],
        "spikecode.calibration.counting",
    ),
    **dict.fromkeys(
        [
            "DEFAULT_BATCH_SIZE",
            "DEFAULT_SAMPLES",
            "CalibrationData",
            "TokenizedData",
            "collect_checkpoint_inputs",
            "load_calibration_data",
            "model_max_length",
            "padded_batches",
            "tokenize_data",
        ],
        "spikecode.calibration.data",
    ),
    **dict.fromkeys(
        ["TASKS", "EvaluationReport", "EvaluationRow", "evaluate", "model_task"],
        "spikecode.calibration.evaluate",
    ),
    **dict.fromkeys(
        ["ERROR_RTOL", "VTH_RTOL", "merge_layer_stats", "merge_stats"],
        "spikecode.calibration.merge",
    ),
    **dict.fromkeys(
        [
            "CHECKPOINT_KINDS",
            "COUNT_LIMIT",
            "FORMAT",
            "READABLE_VERSIONS",
            "VERSION",
            "VTH_EDGES",
            "CalibrationStats",
            "CheckpointInfo",
            "CountHistogram",
            "DataInfo",
            "KStats",
            "LayerStats",
            "RecipeInfo",
            "RoutingStats",
            "VthSummary",
            "k_key",
            "layer_family",
            "summarize",
            "window_key",
        ],
        "spikecode.calibration.records",
    ),
    **dict.fromkeys(
        ["DEFAULT_K", "StatsAccumulator", "calibrate", "checkpoint_info", "escape_names"],
        "spikecode.calibration.run",
    ),
    **dict.fromkeys(["load_stats", "save_stats"], "spikecode.calibration.statsfile"),
}
_SUBMODULES = (
    "accumulator",
    "advisor",
    "counting",
    "data",
    "distributed",
    "evaluate",
    "merge",
    "records",
    "run",
    "statsfile",
)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from spikecode.calibration.accumulator import (
        DEFAULT_ERROR_ROWS,
        DEFAULT_ERROR_STRIDE,
        DEFAULT_SCHEMES,
        ERROR_FLUSH_BYTES,
        ERROR_FLUSH_ROWS,
        LayerAccumulator,
    )
    from spikecode.calibration.advisor import (
        ADVICE_FORMAT,
        ADVICE_VERSION,
        Advice,
        LayerChoice,
        advise,
        load_k_map,
        save_advice,
    )
    from spikecode.calibration.counting import (
        fake_quantize_weight,
        stats_from_histogram,
        stats_from_histograms,
        weight_group_size,
    )
    from spikecode.calibration.data import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_SAMPLES,
        CalibrationData,
        TokenizedData,
        collect_checkpoint_inputs,
        load_calibration_data,
        model_max_length,
        padded_batches,
        tokenize_data,
    )
    from spikecode.calibration.evaluate import (
        TASKS,
        EvaluationReport,
        EvaluationRow,
        evaluate,
        model_task,
    )
    from spikecode.calibration.merge import ERROR_RTOL, VTH_RTOL, merge_layer_stats, merge_stats
    from spikecode.calibration.records import (
        CHECKPOINT_KINDS,
        COUNT_LIMIT,
        FORMAT,
        READABLE_VERSIONS,
        VERSION,
        VTH_EDGES,
        CalibrationStats,
        CheckpointInfo,
        CountHistogram,
        DataInfo,
        KStats,
        LayerStats,
        RecipeInfo,
        RoutingStats,
        VthSummary,
        k_key,
        layer_family,
        summarize,
        window_key,
    )
    from spikecode.calibration.run import (
        DEFAULT_K,
        StatsAccumulator,
        calibrate,
        checkpoint_info,
        escape_names,
    )
    from spikecode.calibration.statsfile import load_stats, save_stats

__all__ = [
    "ADVICE_FORMAT",
    "ADVICE_VERSION",
    "CHECKPOINT_KINDS",
    "COUNT_LIMIT",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ERROR_ROWS",
    "DEFAULT_ERROR_STRIDE",
    "DEFAULT_K",
    "DEFAULT_SAMPLES",
    "DEFAULT_SCHEMES",
    "ERROR_FLUSH_BYTES",
    "ERROR_FLUSH_ROWS",
    "ERROR_RTOL",
    "FORMAT",
    "READABLE_VERSIONS",
    "TASKS",
    "VERSION",
    "VTH_EDGES",
    "VTH_RTOL",
    "Advice",
    "CalibrationData",
    "CalibrationStats",
    "CheckpointInfo",
    "CountHistogram",
    "DataInfo",
    "EvaluationReport",
    "EvaluationRow",
    "KStats",
    "LayerAccumulator",
    "LayerChoice",
    "LayerStats",
    "RecipeInfo",
    "RoutingStats",
    "StatsAccumulator",
    "TokenizedData",
    "VthSummary",
    "advise",
    "calibrate",
    "checkpoint_info",
    "collect_checkpoint_inputs",
    "escape_names",
    "evaluate",
    "fake_quantize_weight",
    "k_key",
    "layer_family",
    "load_calibration_data",
    "load_k_map",
    "load_stats",
    "merge_layer_stats",
    "merge_stats",
    "model_max_length",
    "model_task",
    "padded_batches",
    "save_advice",
    "save_stats",
    "stats_from_histogram",
    "stats_from_histograms",
    "summarize",
    "tokenize_data",
    "weight_group_size",
    "window_key",
]
