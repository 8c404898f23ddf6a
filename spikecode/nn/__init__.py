"""PyTorch side of spikecode: spiking ops with straight-through gradients and W8ASpike layers.

:mod:`spikecode.nn.functional` holds the pure functions (adaptive-threshold counts, STE
fake-quant, INT8 weights, the spike-driven linear layer of SPEC §4);
``spikecode.nn.modules`` wraps them as ``nn.Module`` s and swaps them into models.
"""

from spikecode.nn import functional
from spikecode.nn.modules import (
    AdaptiveSpike,
    W8ASpikeLinear,
    replace_submodules,
    set_k,
    swap_linears,
)

__all__ = [
    "AdaptiveSpike",
    "W8ASpikeLinear",
    "functional",
    "replace_submodules",
    "set_k",
    "swap_linears",
]
