"""Deployment plans: what a whole spike-driven model needs on a neuromorphic chip.

The last step of the data flow (checkpoint → activations → counts → trains →
statistics / energy / export / **plan**): for every spike-driven projection and for the
model, the neurons, synapses and synaptic memory, the cores and chips under a target's
published per-core and per-chip limits, and, from calibration, the time steps, spikes and
synaptic operations per token and the accumulator and payload widths.

- :func:`deployment_plan` → :class:`DeploymentPlan` (``.render("table")``, ``.to_dict()``);
- :mod:`~spikecode.plan.shapes`: projections from a checkpoint's safetensors headers (no
  weight is loaded: a 7B-width folder plans in seconds) or from a stats file;
- :mod:`~spikecode.plan.partition`: the counting and the partitioning rule (pure);
- :mod:`~spikecode.plan.targets`: target tables, JSON data files that cite every figure
  (shipped: ``loihi2``, ``spinnaker2``).

``docs/deployment.rst`` defines the rule, works a small case by hand and cites the limits.
"""

from spikecode.plan.build import PLAN_FORMAT, PLAN_VERSION, DeploymentPlan, deployment_plan
from spikecode.plan.partition import (
    MODEL_WEIGHT_BITS,
    Activity,
    ModelPlan,
    MoELayerPlan,
    ProjectionPlan,
    plan_model,
    plan_projection,
    signed_bits,
)
from spikecode.plan.shapes import (
    CheckpointShapes,
    Projection,
    checkpoint_projections,
    default_groups,
    stats_projections,
)
from spikecode.plan.targets import (
    CHIP_LIMITS,
    CORE_LIMITS,
    DEFAULT_TARGET,
    NEURON_LIMITS,
    Target,
    available_targets,
    load_target,
)

__all__ = [
    "CHIP_LIMITS",
    "CORE_LIMITS",
    "DEFAULT_TARGET",
    "MODEL_WEIGHT_BITS",
    "NEURON_LIMITS",
    "PLAN_FORMAT",
    "PLAN_VERSION",
    "Activity",
    "CheckpointShapes",
    "DeploymentPlan",
    "MoELayerPlan",
    "ModelPlan",
    "Projection",
    "ProjectionPlan",
    "Target",
    "available_targets",
    "checkpoint_projections",
    "default_groups",
    "deployment_plan",
    "load_target",
    "plan_model",
    "plan_projection",
    "signed_bits",
    "stats_projections",
]
