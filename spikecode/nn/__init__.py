"""PyTorch side of spikecode: spiking ops with straight-through gradients and W8ASpike layers.

:mod:`spikecode.nn.functional` holds the pure functions (adaptive-threshold counts, STE
fake-quant, INT8 weights, the spike-driven linear layer of SPEC §4).
"""

from spikecode.nn import functional

__all__ = ["functional"]
