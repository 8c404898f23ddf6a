"""Energy model of dense and spike-driven linear layers (SPEC §6, report section 5.5).

What it computes:

- :func:`mac_energy`: the report's equation 24, the energy of one MAC-equivalent,
  ``avg_spikes × E(INT8 add)``, against FP32/FP16/INT8 MACs (mult + add).
- :class:`LayerSpec` → :func:`op_counts`, :func:`layer_energy`: dense MACs
  (``tokens · in · out``) and spike-driven accumulates (``Σ|spikes| · out``, one INT8 add
  each) per layer and per token in each mode (fp32, fp16, int8, spike).
- :func:`weight_fetch` (memory, beyond the report): weight bytes and energy per token
  for dense fetching, channel-level skipping of silent input channels and block-level
  skipping (blocks of B consecutive input channels, report appendix C.2).
- :func:`energy_report`: the per-layer and network breakdown the CLI and plots use.

Energy tables (:func:`load_table`) are JSON data files; the default is Horowitz's 45 nm,
0.9 V table (ISSCC 2014, doi:10.1109/ISSCC.2014.6757323), with DRAM at the low end of
its 1.3–2.6 nJ range (level ``"dram"``; ``"dram_high"`` is 2.6 nJ).

Assumptions (see :data:`ASSUMPTIONS` and the module docstrings): arithmetic is charged
as in the report (no control, routing, accumulator-width or time-step overhead); the
memory model fetches weights per token with no reuse across tokens, charges
``bytes · 8 / access_bits`` accesses, and counts weight reads only.
"""

from spikecode.energy.compute import (
    DENSE_MODES,
    MODES,
    LayerEnergy,
    LayerSpec,
    OpCounts,
    layer_energy,
    mac_energy,
    op_counts,
    ratio,
    reduction,
)
from spikecode.energy.formatting import format_ratio, format_reduction
from spikecode.energy.memory import (
    DEFAULT_BLOCK_SIZES,
    ChannelActivity,
    FetchCost,
    WeightFetch,
    block_activity,
    channel_activity,
    fetch_energy,
    weight_fetch,
)
from spikecode.energy.report import ASSUMPTIONS, EnergyReport, energy_report
from spikecode.energy.table import (
    DEFAULT_TABLE,
    REQUIRED_OPERATIONS,
    UNITS_IN_PJ,
    EnergyTable,
    available_tables,
    load_table,
)

__all__ = [
    "ASSUMPTIONS",
    "DEFAULT_BLOCK_SIZES",
    "DEFAULT_TABLE",
    "DENSE_MODES",
    "MODES",
    "REQUIRED_OPERATIONS",
    "UNITS_IN_PJ",
    "ChannelActivity",
    "EnergyReport",
    "EnergyTable",
    "FetchCost",
    "LayerEnergy",
    "LayerSpec",
    "OpCounts",
    "WeightFetch",
    "available_tables",
    "block_activity",
    "channel_activity",
    "energy_report",
    "fetch_energy",
    "format_ratio",
    "format_reduction",
    "layer_energy",
    "load_table",
    "mac_energy",
    "op_counts",
    "ratio",
    "reduction",
    "weight_fetch",
]
