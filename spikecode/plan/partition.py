"""The counting and the partitioning rule of a deployment plan (pure functions).

What one spike-driven projection ``y = Vth · Σ_g σ_g · W_q,g c`` (SPEC §4) needs on a
target, in the form the NIR and Lava exports build (``docs/deployment.rst`` has the rule
with a worked example):

* **neurons** ``N = out · G``: one integrator per output and weight-scale group (the
  per-group integrators keep every membrane the exact integer ``W_q,g c``; the scales
  ``σ`` are applied on the host). Each integrator has fan-in ``f = in / G``.
* **synapses** ``S = in · out`` (input ``i`` reaches output ``o`` through group
  ``g(i)``'s integrator only), **synaptic memory** ``S · b`` bits at the target's
  ``weight_bits`` ``b`` per weight (the INT8 weights need ``b ≥ 8``).
* **partition**: the integrators are placed on cores in order, ``n`` per core, and a core
  holds integrators of one projection only. ``n`` is the largest count every published
  per-core limit allows: ``n = min(core.neurons, ⌊core.synapses / f⌋,
  ⌊core.synaptic_memory_bits / (f · b)⌋)`` over the limits the target publishes (a
  target that publishes none puts a projection on one core); ``cores = ⌈N / n⌉``. A
  projection does not fit when ``n = 0`` (one integrator's synapses exceed a core), when
  ``f`` exceeds ``neuron.fan_in``, when ``out`` (the synapses one input reaches) exceeds
  ``neuron.fan_out``, or when ``b < 8``.
* **chips**: ``max`` over the published chip limits of ``⌈cores / chip.cores⌉``,
  ``⌈neurons / chip.neurons⌉``, ``⌈synapses / chip.synapses⌉`` and ``⌈memory /
  chip.synaptic_memory_bits⌉``, summed over the whole model (a chip holds cores of
  several projections).
* **per token**, from calibration (SPEC §5 totals of one code at one k): time steps
  ``T`` of the code, spikes ``Σ|spikes| / tokens``, synaptic operations ``spikes · out``
  (every spike crosses ``out`` synapses), graded events (non-zero counts, one event
  each when the count travels as a graded payload in one step) and their synaptic
  operations ``events · out``.
* **mixtures of experts** (SPEC §8): every routed expert is resident (its neurons,
  synapses and cores are counted like any projection's), but a token runs only the
  experts it is routed to: each routed expert's per-token figures are weighted by its
  share of the MoE layer's tokens (the stats file's ``routing``: ``expert_tokens /
  tokens``, ``LayerResult.token_share`` of the reports), and per MoE layer the
  plan gives resident synapses against the synapses a token activates (the shared ones
  plus ``Σ_e S_e · share_e``, which is ``top_k`` experts' synapses: the macro sparsity).
* **widths**, from calibration's largest ``|c|``: the integrator must hold
  ``127 · f · max|c|`` (its bit length plus a sign bit, against ``state_bits``) and a
  graded payload ``max|c|`` (plus a sign bit, against ``payload_bits``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spikecode.errors import SpikecodeError
from spikecode.plan.shapes import Projection
from spikecode.plan.targets import Target

__all__ = [
    "MODEL_WEIGHT_BITS",
    "Activity",
    "MoELayerPlan",
    "ModelPlan",
    "ProjectionPlan",
    "plan_model",
    "plan_projection",
    "signed_bits",
]

#: Bits of the model's weights: W8ASpike's INT8, ``|W_q| ≤ 127`` (SPEC §4).
MODEL_WEIGHT_BITS = 8
#: Largest ``|W_q|`` of the INT8 weights (SPEC §4: -128 is never used).
_MAX_WEIGHT = 127
#: A routed expert's projection: ``<layer>.experts.<e>.<projection>`` (SPEC §8).
_EXPERT = re.compile(r"^(.*)\.experts\.(\d+)\.")


def signed_bits(bound: int) -> int:
    """Bits of a signed integer that holds every value in ``[-bound, bound]``.

    >>> signed_bits(127), signed_bits(128), signed_bits(0)
    (8, 9, 1)
    """
    return int(bound).bit_length() + 1


@dataclass(frozen=True)
class Activity:
    """Calibration's figures for one projection's input, at one k and one code.

    Attributes
    ----------
    tokens
        Tokens the figures cover (rows of ``in`` elements each); 0 for a routed expert
        no calibration token reached (then no spike, event or count either).
    T
        Time steps of the code per token (the minimal T of every count seen).
    spikes
        Total spikes (non-zero train entries, SPEC §5) over ``tokens · in`` elements.
    events
        Non-zero counts (``elements - silent``): the graded events.
    max_abs_count
        Largest ``|c|`` seen.
    token_share
        The projection's tokens per token of the model: 1, or for a routed expert its
        share of the MoE layer's tokens (SPEC §8); every per-token figure is weighted by it.
    """

    tokens: int
    T: int
    spikes: int
    events: int
    max_abs_count: int
    token_share: float = 1.0

    def __post_init__(self) -> None:
        for what in ("tokens", "T", "spikes", "events", "max_abs_count"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpikecodeError(f"activity {what} must be an integer >= 0, got {value!r}")
        share = self.token_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise SpikecodeError(f"activity token_share must be in [0, 1], got {share!r}")
        if self.tokens == 0 and (self.spikes or self.events or self.max_abs_count or share):
            raise SpikecodeError("activity covers no token but has spikes, counts or a share")


@dataclass(frozen=True)
class ProjectionPlan:
    """What one projection needs on a target (see the module docstring for the rule).

    ``cores`` and ``neurons_per_core`` are None when it does not fit (``problem`` says
    why); ``limited_by`` names the per-core limit that set ``n`` (None when the whole
    projection fits one core, or a per-neuron check refused it); the calibration figures
    are None without an :class:`Activity`, the width checks None when the target
    publishes no width.
    """

    projection: Projection
    neurons: int
    fan_in: int
    synapses: int
    memory_bits: int
    neurons_per_core: int | None
    cores: int | None
    limited_by: str | None
    problem: str | None
    activity: Activity | None
    accumulator_bits: int | None
    state_fits: bool | None
    payload_bits: int | None
    payload_fits: bool | None

    @property
    def fits(self) -> bool:
        """Whether the projection can be placed (widths aside)."""
        return self.problem is None

    @property
    def dense_processes(self) -> int:
        """Lava ``Dense`` processes of the projection: one per scale group (``G``).

        What ``spikecode export lava`` builds when every per-step dendritic sum fits the
        ``Dense`` output; ``--split`` cuts a group's fan-in into more, which depends on
        the weights the plan does not read (the export's ``index.json`` gives ``blocks``).
        """
        return self.projection.groups

    def per_token(self) -> dict[str, float | int | None]:
        """``T``, spikes, synaptic operations and graded events per token (None: unknown)."""
        a = self.activity
        if a is None:
            return dict.fromkeys(("T", "spikes", "synops", "graded_events", "graded_synops"), None)
        out = self.projection.out_features
        # Per token of the model: a routed expert runs on its share of the tokens only.
        share = a.token_share
        tokens = a.tokens or 1  # no token reached it: no spike or event either
        return {
            "T": a.T if share == 1 else a.T * share,
            "spikes": a.spikes * share / tokens,
            "synops": a.spikes * out * share / tokens,
            "graded_events": a.events * share / tokens,
            "graded_synops": a.events * out * share / tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures of the projection."""
        p = self.projection
        return {
            "name": p.name,
            "in_features": p.in_features,
            "out_features": p.out_features,
            "groups": p.groups,
            "dtype": p.dtype,
            "neurons": self.neurons,
            "fan_in": self.fan_in,
            "dense_processes": self.dense_processes,
            "synapses": self.synapses,
            "memory_bits": self.memory_bits,
            "memory_bytes": self.memory_bits / 8,
            "neurons_per_core": self.neurons_per_core,
            "cores": self.cores,
            "limited_by": self.limited_by,
            "fits": self.fits,
            "problem": self.problem,
            **{f"{k}_per_token" if k != "T" else k: v for k, v in self.per_token().items()},
            "max_abs_count": None if self.activity is None else self.activity.max_abs_count,
            "accumulator_bits": self.accumulator_bits,
            "state_fits": self.state_fits,
            "payload_bits": self.payload_bits,
            "payload_fits": self.payload_fits,
        }


def _refusal(p: Projection, target: Target) -> str | None:
    """Why ``p`` cannot be placed at all on ``target`` (weight width, fan-in, fan-out)."""
    f, b = p.group_size, target.weight_bits
    fan_in, fan_out = target.neuron["fan_in"], target.neuron["fan_out"]
    if b < MODEL_WEIGHT_BITS:
        return f"the INT8 weights need {MODEL_WEIGHT_BITS} bits, {target.name} stores {b}"
    if fan_in is not None and f > fan_in:
        return f"fan-in {f:,} per integrator exceeds neuron.fan_in {fan_in:,}"
    if fan_out is not None and p.out_features > fan_out:
        return f"fan-out {p.out_features:,} per input exceeds neuron.fan_out {fan_out:,}"
    return None


def _placement(p: Projection, target: Target) -> tuple[int | None, str | None, str | None]:
    """``(n, limited_by, problem)``: integrators per core, the limit that set it, or why not."""
    problem = _refusal(p, target)
    if problem is not None:
        return None, None, problem
    f, b = p.group_size, target.weight_bits
    neurons = p.out_features * p.groups
    caps: list[tuple[int, str]] = []
    if target.core["neurons"] is not None:
        caps.append((target.core["neurons"], "core.neurons"))
    if target.core["synapses"] is not None:
        caps.append((target.core["synapses"] // f, "core.synapses"))
    if target.core["synaptic_memory_bits"] is not None:
        caps.append((target.core["synaptic_memory_bits"] // (f * b), "core.synaptic_memory_bits"))
    # The first of equal caps wins (caps are listed neurons, synapses, memory).
    n, limit = min(caps, key=lambda cap: cap[0], default=(neurons, None))
    if n == 0:
        return None, limit, f"one integrator's {f:,} synapses ({f * b:,} bits) exceed {limit}"
    # A projection that fits one core whole is limited by its own size, not the target.
    return (n, limit, None) if n < neurons else (neurons, None, None)


def plan_projection(
    projection: Projection, target: Target, activity: Activity | None = None
) -> ProjectionPlan:
    """Count and partition one projection on ``target`` (rule: the module docstring).

    Parameters
    ----------
    projection
        Name, shape and scale groups.
    target
        The chip's limits.
    activity
        Calibration's figures for this projection, or None (per-token figures unknown).

    Returns
    -------
    ProjectionPlan
    """
    p = projection
    neurons = p.out_features * p.groups
    synapses = p.in_features * p.out_features
    n, limited_by, problem = _placement(p, target)
    cores = None if n is None or problem is not None else math.ceil(neurons / n)
    accumulator = payload = None
    state_fits = payload_fits = None
    if activity is not None and activity.tokens:  # an expert no token reached: unknown
        accumulator = signed_bits(_MAX_WEIGHT * p.group_size * activity.max_abs_count)
        payload = signed_bits(activity.max_abs_count)
        if target.state_bits is not None:
            state_fits = accumulator <= target.state_bits
        if target.payload_bits is not None:
            payload_fits = payload <= target.payload_bits
    return ProjectionPlan(
        projection=p,
        neurons=neurons,
        fan_in=p.group_size,
        synapses=synapses,
        memory_bits=synapses * target.weight_bits,
        neurons_per_core=None if problem is not None else n,
        cores=cores,
        limited_by=limited_by,
        problem=problem,
        activity=activity,
        accumulator_bits=accumulator,
        state_fits=state_fits,
        payload_bits=payload,
        payload_fits=payload_fits,
    )


@dataclass(frozen=True)
class MoELayerPlan:
    """One MoE layer's resident synapses and the synapses a token activates (SPEC §8).

    Attributes
    ----------
    layer
        The MoE layer (``model.layers.1.mlp``): its projections are those named under it.
    num_experts
        Routed experts of the layer (the model's, also those a pattern left out).
    top_k
        Experts per token (from the stats' routing or ``config.json``), or None.
    resident_synapses
        Synapses of the layer's planned projections (router, shared and routed experts).
    routed_synapses
        Synapses of the routed experts.
    active_synapses_per_token
        Synapses a token activates: the layer's other projections' plus ``Σ_e S_e ·
        share_e`` over the routed experts (calibration's shares), or ``top_k / E`` of the
        routed synapses (``config.json``); None when neither is known.
    """

    layer: str
    num_experts: int
    top_k: int | None
    resident_synapses: int
    routed_synapses: int
    active_synapses_per_token: float | None

    @property
    def macro_sparsity(self) -> float | None:
        """``1 − active / resident``: the synapses routing leaves idle per token."""
        active = self.active_synapses_per_token
        return None if active is None else 1.0 - active / self.resident_synapses

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures of the MoE layer."""
        return {
            "layer": self.layer,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "resident_synapses": self.resident_synapses,
            "routed_synapses": self.routed_synapses,
            "active_synapses_per_token": self.active_synapses_per_token,
            "macro_sparsity": self.macro_sparsity,
        }


def _moe_layers(
    plans: Sequence[ProjectionPlan],
    top_k: int | Mapping[str, int] | None,
    num_experts: int | Mapping[str, int] | None,
) -> tuple[MoELayerPlan, ...]:
    """The MoE layers of the model, found by their experts' names (SPEC §8)."""
    experts: dict[str, dict[int, list[ProjectionPlan]]] = {}
    for p in plans:
        found = _EXPERT.match(p.projection.name)
        if found:
            experts.setdefault(found[1], {}).setdefault(int(found[2]), []).append(p)
    out = []
    for layer, by_expert in experts.items():
        k = top_k.get(layer) if isinstance(top_k, Mapping) else top_k
        e = num_experts.get(layer) if isinstance(num_experts, Mapping) else num_experts
        # The layer's experts, also those a pattern left out of the plan.
        e = max(e or 0, len(by_expert), max(by_expert) + 1)
        routed = [p for ps in by_expert.values() for p in ps]
        others = [
            p
            for p in plans
            if p.projection.name.startswith(layer + ".") and not _EXPERT.match(p.projection.name)
        ]
        fixed = sum(p.synapses for p in others)
        routed_synapses = sum(p.synapses for p in routed)
        shares = [p.activity.token_share for p in routed if p.activity is not None]
        if len(shares) == len(routed):
            active: float | None = fixed + sum(
                p.synapses * p.activity.token_share  # type: ignore[union-attr]
                for p in routed
            )
        elif k is not None:
            # Each planned expert runs for top_k / E of the tokens on average.
            active = fixed + routed_synapses * k / e
        else:
            active = None
        out.append(
            MoELayerPlan(
                layer=layer,
                num_experts=e,
                top_k=k,
                resident_synapses=fixed + routed_synapses,
                routed_synapses=routed_synapses,
                active_synapses_per_token=active,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class ModelPlan:
    """The whole model: its projections' plans and the totals over them.

    ``cores`` and ``chips`` are None when some projection does not fit; per-token totals
    are None unless every projection has calibration figures. ``time_steps_per_token``
    is ``Σ T``: the projections run one after another (q/k/v or gate/up, which read the
    same input, could share their steps; the total does not assume it).
    """

    target: Target
    projections: tuple[ProjectionPlan, ...]
    chips: int | None
    chips_limited_by: str | None
    moe_layers: tuple[MoELayerPlan, ...] = ()

    @property
    def active_synapses_per_token(self) -> int | float | None:
        """Synapses a token activates: all but the routed experts a token skips (SPEC §8)."""
        if any(layer.active_synapses_per_token is None for layer in self.moe_layers):
            return None
        idle = sum(
            layer.resident_synapses - layer.active_synapses_per_token  # type: ignore[operator]
            for layer in self.moe_layers
        )
        return self.synapses - idle if idle else self.synapses

    @property
    def neurons(self) -> int:
        """Integrators of every projection."""
        return sum(p.neurons for p in self.projections)

    @property
    def synapses(self) -> int:
        """Synapses of every projection."""
        return sum(p.synapses for p in self.projections)

    @property
    def memory_bits(self) -> int:
        """Synaptic memory of every projection, in bits."""
        return sum(p.memory_bits for p in self.projections)

    @property
    def fits(self) -> bool:
        """Whether every projection can be placed."""
        return all(p.fits for p in self.projections)

    @property
    def cores(self) -> int | None:
        """Cores of every projection (None if one does not fit)."""
        return sum(p.cores for p in self.projections if p.cores is not None) if self.fits else None

    def per_token(self) -> dict[str, float | int | None]:
        """Totals per token over the projections (None when one lacks calibration)."""
        rows = [p.per_token() for p in self.projections]
        keys = ("T", "spikes", "synops", "graded_events", "graded_synops")
        if any(row["T"] is None for row in rows):
            return dict.fromkeys(keys, None)
        return {key: sum(row[key] for row in rows) for key in keys}  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready model totals (the projections are listed separately)."""
        per_token = self.per_token()
        widths = [p for p in self.projections if p.accumulator_bits is not None]
        return {
            "projections": len(self.projections),
            "neurons": self.neurons,
            "synapses": self.synapses,
            "memory_bits": self.memory_bits,
            "memory_bytes": self.memory_bits / 8,
            "active_synapses_per_token": self.active_synapses_per_token,
            "cores": self.cores,
            "chips": self.chips,
            "chips_limited_by": self.chips_limited_by,
            "fits": self.fits,
            "time_steps_per_token": per_token["T"],
            "spikes_per_token": per_token["spikes"],
            "synops_per_token": per_token["synops"],
            "graded_events_per_token": per_token["graded_events"],
            "graded_synops_per_token": per_token["graded_synops"],
            "accumulator_bits": max((p.accumulator_bits for p in widths), default=None),
            "state_fits": _all_known(p.state_fits for p in self.projections),
            "payload_bits": max((p.payload_bits for p in widths), default=None),
            "payload_fits": _all_known(p.payload_fits for p in self.projections),
        }


def _all_known(values: Any) -> bool | None:
    """False if any is False, None if any is unknown, else True."""
    seen = list(values)
    if any(v is False for v in seen):
        return False
    return None if any(v is None for v in seen) else True


def _chips(target: Target, cores: int, neurons: int, synapses: int, bits: int) -> tuple[int, str]:
    needs = [(math.ceil(cores / target.chip["cores"]), "chip.cores")]
    for value, key in (
        (neurons, "neurons"),
        (synapses, "synapses"),
        (bits, "synaptic_memory_bits"),
    ):
        limit = target.chip[key]
        if limit is not None:
            needs.append((math.ceil(value / limit), f"chip.{key}"))
    # The first of equal needs wins, so "chip.cores" names a tie with a derived limit.
    return max(needs, key=lambda need: need[0])


def plan_model(
    projections: Sequence[Projection],
    target: Target,
    activities: dict[str, Activity] | None = None,
    experts_per_token: int | Mapping[str, int] | None = None,
    num_experts: int | Mapping[str, int] | None = None,
) -> ModelPlan:
    """Plan every projection and total the model (rule: the module docstring).

    Parameters
    ----------
    projections
        The model's spike-driven projections, in model order.
    target
        The chip's limits.
    activities
        Projection name → calibration figures; projections without one have unknown
        per-token figures.
    experts_per_token
        ``top_k`` of the MoE layers (routed experts per token; one for all, or per MoE
        layer name), for their active synapses when calibration gives no shares.
    num_experts
        Routed experts of the MoE layers (one for all, or per layer), when the plan may
        hold only some of them (``include`` patterns); default: the experts planned.
    """
    if not projections:
        raise SpikecodeError("no projection to plan")
    activities = activities or {}
    plans = tuple(plan_projection(p, target, activities.get(p.name)) for p in projections)
    chips = limited = None
    if all(p.fits for p in plans):
        cores = sum(p.cores or 0 for p in plans)
        chips, limited = _chips(
            target,
            cores,
            sum(p.neurons for p in plans),
            sum(p.synapses for p in plans),
            sum(p.memory_bits for p in plans),
        )
    return ModelPlan(
        target=target,
        projections=plans,
        chips=chips,
        chips_limited_by=limited,
        moe_layers=_moe_layers(plans, experts_per_token, num_experts),
    )
