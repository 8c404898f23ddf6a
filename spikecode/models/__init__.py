"""Models and checkpoints: where the activations come from.

- :mod:`spikecode.models.config`, :mod:`spikecode.models.ops` and
  :mod:`spikecode.models.gla_swa`: SpikingBrain-7B's GLA-SWA hybrid in plain PyTorch
  (SPEC §7): its configuration, its mathematics as pure functions, and the modules;
- :mod:`spikecode.models.cache` and :mod:`spikecode.models.sites`: its decoding cache
  (recurrent GLA state, sliding window of keys) and the attention sites a recipe codes;
- :mod:`spikecode.models.checkpoint`: loading a checkpoint (the released layout, any
  Hugging Face folder, any ``nn.Module``);
- :mod:`spikecode.models.moe_config`, :mod:`spikecode.models.hybrid_moe`,
  :mod:`spikecode.models.moe_cache` and :mod:`spikecode.models.moe_checkpoint`: the
  hybrid-linear MoE architecture of SpikingBrain-76B-A12B (SPEC §8);
- :mod:`spikecode.models.capture`: forward hooks on the inputs of linear projections.
"""

from spikecode.models.cache import GLASwaCache
from spikecode.models.capture import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    LinearInputHooks,
    collect_linear_inputs,
    list_linear_layers,
    uncounted,
)
from spikecode.models.checkpoint import (
    LoadedModel,
    QuantizerScales,
    load_checkpoint,
    wrap_module,
)
from spikecode.models.config import GATE_VARIANTS, GLA_MODES, GLASwaConfig

# GLAswaConfig and GLAswaForCausalLM, the release's class names, are aliases importable
# here; they stay out of __all__ (documented once, under spikecode's names).
from spikecode.models.gla_swa import GLAswaConfig as GLAswaConfig
from spikecode.models.gla_swa import GLASwaForCausalLM, GLASwaModel, GLASwaPretrainedConfig
from spikecode.models.gla_swa import GLAswaForCausalLM as GLAswaForCausalLM
from spikecode.models.hybrid_moe import (
    HybridMoECache,
    MoEFeedForward,
    SpikingBrainMoEForCausalLM,
    SpikingBrainMoEPretrainedConfig,
)
from spikecode.models.moe import ExpertLinears, RoutingCounter, unfuse_experts
from spikecode.models.moe_checkpoint import load_moe_checkpoint
from spikecode.models.moe_config import HybridMoEConfig
from spikecode.models.ops import gla_chunked, gla_recurrent, sliding_window_attention
from spikecode.models.sites import ActivationSite

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_INCLUDE",
    "GATE_VARIANTS",
    "GLA_MODES",
    "ActivationSite",
    "ExpertLinears",
    "GLASwaCache",
    "GLASwaConfig",
    "GLASwaForCausalLM",
    "GLASwaModel",
    "GLASwaPretrainedConfig",
    "HybridMoECache",
    "HybridMoEConfig",
    "LinearInputHooks",
    "LoadedModel",
    "MoEFeedForward",
    "QuantizerScales",
    "RoutingCounter",
    "SpikingBrainMoEForCausalLM",
    "SpikingBrainMoEPretrainedConfig",
    "collect_linear_inputs",
    "gla_chunked",
    "gla_recurrent",
    "list_linear_layers",
    "load_checkpoint",
    "load_moe_checkpoint",
    "sliding_window_attention",
    "uncounted",
    "unfuse_experts",
    "wrap_module",
]
