"""Plain-PyTorch implementations of the model families spikecode spike-codes.

``spikecode.models.gla_swa`` holds SpikingBrain-7B's GLA-SWA hybrid (SPEC §7).
"""

from spikecode.models.gla_swa import (
    GATE_VARIANTS,
    GLA_MODES,
    GLASwaConfig,
    GLASwaForCausalLM,
    GLASwaModel,
    gla_chunked,
    gla_recurrent,
    sliding_window_attention,
)

__all__ = [
    "GATE_VARIANTS",
    "GLA_MODES",
    "GLASwaConfig",
    "GLASwaForCausalLM",
    "GLASwaModel",
    "gla_chunked",
    "gla_recurrent",
    "sliding_window_attention",
]
