"""spikecode: turn SpikingBrain-style language models into spikes.

The data flow, and where each step lives::

    checkpoint  -> spikecode.models.checkpoint, spikecode.models   (load a model)
    activations -> spikecode.models.capture                        (inputs of linear projections)
    counts      -> spikecode.threshold                      (Step 1, SPEC §2)
    trains      -> spikecode.encoders                       (Step 2, SPEC §3)
    statistics  -> spikecode.stats                          (SPEC §5)
    layers      -> spikecode.linear, spikecode.nn           (SPEC §4)
    energy      -> spikecode.energy                         (SPEC §6)
    export      -> spikecode.exporters                      (NIR, ONNX, events)

Quick start::

    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    train = spikecode.encode(counts, scheme="ternary", T=None)
    dense = train.to_dense()            # np.int8, shape [T, *counts.shape]
    back = spikecode.decode(train)      # equals counts
    train, vth = spikecode.encode_activations(x, k=3.0)   # the same, fused from floats
"""

from typing import TYPE_CHECKING

from spikecode._lazy import lazy_exports
from spikecode._version import __version__

# Public names and the module each comes from. They are imported on first use, so that
# `import spikecode` and the CLI's --help stay fast (docs/developing.rst, "Imports").
_EXPORTS = {
    **dict.fromkeys(
        [
            "LAYOUTS",
            "SCHEMES",
            "SpikeTrain",
            "decode",
            "encode",
            "encode_activations",
            "encode_dense",
            "min_steps",
        ],
        "spikecode.encoders",
    ),
    **dict.fromkeys(["Remedy", "SpikecodeError"], "spikecode.errors"),
    **dict.fromkeys(
        ["Encoded", "load_activations", "load_encoded", "save_encoded"], "spikecode.io"
    ),
    **dict.fromkeys(["SpikeLinearResult", "spike_linear"], "spikecode.linear"),
    "integrate_and_fire": "spikecode.neuron",
    **dict.fromkeys(["SpikeStats", "spike_stats", "train_stats"], "spikecode.stats"),
    **dict.fromkeys(["adaptive_counts", "clip_counts", "fixed_counts"], "spikecode.threshold"),
}
_SUBMODULES = (
    "calibration",
    "data",
    "encoders",
    "energy",
    "errors",
    "exporters",
    "io",
    "linear",
    "models",
    "neuron",
    "nn",
    "reports",
    "stats",
    "testing",
    "threshold",
)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from spikecode.encoders import (
        LAYOUTS,
        SCHEMES,
        SpikeTrain,
        decode,
        encode,
        encode_activations,
        encode_dense,
        min_steps,
    )
    from spikecode.errors import Remedy, SpikecodeError
    from spikecode.io import Encoded, load_activations, load_encoded, save_encoded
    from spikecode.linear import SpikeLinearResult, spike_linear
    from spikecode.neuron import integrate_and_fire
    from spikecode.stats import SpikeStats, spike_stats, train_stats
    from spikecode.threshold import adaptive_counts, clip_counts, fixed_counts

__all__ = [
    "LAYOUTS",
    "SCHEMES",
    "Encoded",
    "Remedy",
    "SpikeLinearResult",
    "SpikeStats",
    "SpikeTrain",
    "SpikecodeError",
    "__version__",
    "adaptive_counts",
    "clip_counts",
    "decode",
    "encode",
    "encode_activations",
    "encode_dense",
    "fixed_counts",
    "integrate_and_fire",
    "load_activations",
    "load_encoded",
    "min_steps",
    "save_encoded",
    "spike_linear",
    "spike_stats",
    "train_stats",
]
