"""PyTorch side of spikecode: spiking ops with straight-through gradients and W8ASpike layers.

:mod:`spikecode.nn.functional` holds the pure functions (adaptive-threshold counts, STE
fake-quant, INT8 weights, the spike-driven linear layer of SPEC §4);
``spikecode.nn.modules`` wraps them as ``nn.Module`` s and swaps them into models;
``spikecode.nn.recipes`` names what is spiked (``"all-linear"``, ``"release"``).
"""

from spikecode.nn import functional, recipes
from spikecode.nn.modules import (
    AdaptiveSpike,
    W8ASpikeLinear,
    replace_submodules,
    set_k,
    swap_linears,
)
from spikecode.nn.recipes import (
    DEFAULT_RECIPE,
    RECIPES,
    DynamicSpikes,
    ReleaseQuantLinear,
    SymmetricQuantizer,
    recipe_targets,
)

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "AdaptiveSpike",
    "DynamicSpikes",
    "ReleaseQuantLinear",
    "SymmetricQuantizer",
    "W8ASpikeLinear",
    "functional",
    "recipe_targets",
    "recipes",
    "replace_submodules",
    "set_k",
    "swap_linears",
]
