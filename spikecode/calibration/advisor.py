"""The k advisor: choose k per layer from calibration statistics to meet a target.

Given a stats file (:mod:`spikecode.calibration`), each layer offers one choice per
calibrated k: its sparsity (``1 - firing rate``, SPEC §5, for one code) and its
W8ASpike output error (relative L2 against the float layer). Two targets:

- **global sparsity ≥ X** (``1 − Σ spikes / Σ elements·T`` over layers, each at its own
  T: the stats file's totals, ``spikecode.stats``): the advisor looks for the
  per-layer choice with the smallest element-weighted output error whose sparsity still
  reaches X. It starts from the globally sparsest choice (a ratio of sums, found
  exactly by Dinkelbach's iteration) and then repeatedly makes the single change that
  buys the most error reduction per unit of sparsity given up, while the target still
  holds (a greedy walk: exact for one layer, and close to the optimum of this
  multiple-choice knapsack in general).
- **per-layer output error ≤ Y**: every layer gets its sparsest k whose error is at most
  Y.

An infeasible target raises :class:`~spikecode.errors.SpikecodeError` naming the best
achievable value. The result maps layer names to k (``Advice.k_map``), the form
:func:`spikecode.nn.swap_linears` and ``spikecode evaluate --k-map`` take; it is saved
as JSON with :func:`save_advice` and read back with :func:`load_k_map`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikecode._validate import as_path
from spikecode.calibration.records import CalibrationStats, LayerStats, k_key, summarize
from spikecode.errors import SpikecodeError
from spikecode.io import atomic_write, read_json

__all__ = [
    "ADVICE_FORMAT",
    "ADVICE_VERSION",
    "Advice",
    "LayerChoice",
    "advise",
    "load_k_map",
    "save_advice",
]

ADVICE_FORMAT = "spikecode.advice"
ADVICE_VERSION = 1


@dataclass(frozen=True)
class LayerChoice:
    """The k chosen for one layer and what it gives.

    Attributes
    ----------
    name
        Layer name.
    k
        The chosen k.
    sparsity, output_rel_error, spikes_per_element
        The layer's calibration statistics at that k (for the advice's code).
    elements
        The layer's weight in the totals (``tokens × in_features``).
    """

    name: str
    k: float
    sparsity: float
    output_rel_error: float
    spikes_per_element: float
    elements: int


@dataclass(frozen=True)
class Advice:
    """A per-layer k choice meeting a target.

    Attributes
    ----------
    target
        ``"sparsity"`` (global sparsity ≥ ``value``) or ``"max_error"`` (every layer's
        output error ≤ ``value``).
    value
        The target value.
    scheme
        The code whose sparsity is used.
    layers
        One :class:`LayerChoice` per layer, in the stats file's order.
    totals
        Element-weighted totals of the choice (as the stats file's ``totals``):
        ``spikes_per_element, firing_rate, sparsity, silent_fraction,
        within_7_fraction, window<w>_sparsity, output_rel_error``.
    """

    target: str
    value: float
    scheme: str
    layers: tuple[LayerChoice, ...]
    totals: Mapping[str, float]

    @property
    def k_map(self) -> dict[str, float]:
        """``layer name → k``, for :func:`spikecode.nn.swap_linears` and ``--k-map``."""
        return {choice.name: choice.k for choice in self.layers}

    @property
    def max_layer_error(self) -> float:
        """The largest per-layer output error of the choice."""
        return max(choice.output_rel_error for choice in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """The advice file's JSON object."""
        return {
            "format": ADVICE_FORMAT,
            "version": ADVICE_VERSION,
            "target": {self.target: self.value},
            "scheme": self.scheme,
            "k": self.k_map,
            "totals": dict(self.totals),
            "max_layer_error": self.max_layer_error,
            "layers": [
                {
                    "name": c.name,
                    "k": c.k,
                    "sparsity": c.sparsity,
                    "output_rel_error": c.output_rel_error,
                    "spikes_per_element": c.spikes_per_element,
                }
                for c in self.layers
            ],
        }


@dataclass(frozen=True)
class _Option:
    k: float
    sparsity: float
    error: float
    spikes: int
    slots: int  # elements · T: the firing rate's denominator


def _options(layer: LayerStats, ks: tuple[float, ...], scheme: str) -> list[_Option]:
    options = []
    for k in ks:
        entry = layer.by_k[k_key(k)]
        if entry.output_rel_error is None:
            raise SpikecodeError(
                f"layer {layer.name!r} has no output error at k = {k_key(k)}; the advisor "
                "needs calibration statistics with errors"
            )
        s = entry.schemes[scheme]
        options.append(_Option(k, s.sparsity, entry.output_rel_error, s.spikes, s.steps))
    return options


def _check_target(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpikecodeError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def advise(
    stats: CalibrationStats,
    *,
    target_sparsity: float | None = None,
    max_error: float | None = None,
    scheme: str | None = None,
) -> Advice:
    """Choose k per layer from calibration statistics (see the module docstring).

    Parameters
    ----------
    stats
        Calibration statistics (:func:`spikecode.calibration.load_stats`); their k grid
        is the choice.
    target_sparsity
        Global sparsity (``1 − Σ spikes / Σ elements·T``) to reach, in [0, 1].
    max_error
        Largest per-layer output error (relative L2) allowed, ≥ 0.
    scheme
        Code whose sparsity counts; default the stats' first code.

    Returns
    -------
    Advice

    Raises
    ------
    SpikecodeError
        Not exactly one target, a target out of range, a code the stats lack, or an
        infeasible target (the message gives the best achievable value).
    """
    if (target_sparsity is None) == (max_error is None):
        raise SpikecodeError("give exactly one target: a global sparsity or a per-layer error")
    scheme = stats.schemes[0] if scheme is None else scheme
    if scheme not in stats.schemes:
        raise SpikecodeError(
            f"the stats have no code {scheme!r}; they have {', '.join(stats.schemes)}"
        )
    layers = stats.layers
    options = {layer.name: _options(layer, stats.k, scheme) for layer in layers}
    weights = {layer.name: layer.elements for layer in layers}
    if target_sparsity is not None:
        target = _check_target(target_sparsity, "target sparsity")
        if not 0.0 <= target <= 1.0:
            raise SpikecodeError(f"target sparsity must lie in [0, 1], not {target}")
        chosen = _meet_sparsity(options, weights, target)
        kind, value = "sparsity", target
    else:
        assert max_error is not None
        limit = _check_target(max_error, "max error")
        if limit < 0:
            raise SpikecodeError(f"max error must be >= 0, not {limit}")
        chosen = _meet_error(options, limit)
        kind, value = "max_error", limit
    choices = []
    for layer in layers:
        option = chosen[layer.name]
        entry = layer.by_k[k_key(option.k)]
        choices.append(
            LayerChoice(
                name=layer.name,
                k=option.k,
                sparsity=option.sparsity,
                output_rel_error=option.error,
                spikes_per_element=entry.schemes[scheme].spikes_per_element,
                elements=layer.elements,
            )
        )
    totals = summarize([(layer, k_key(chosen[layer.name].k)) for layer in layers], scheme)
    return Advice(kind, value, scheme, tuple(choices), totals)


def _sparsest(options: Mapping[str, list[_Option]]) -> dict[str, _Option]:
    """The choice with the lowest global rate ``Σ spikes / Σ slots`` (Dinkelbach).

    A ratio of sums is not minimised layer by layer; for a fixed ``λ`` the choice
    minimising ``Σ (spikes − λ · slots)`` is, and iterating ``λ`` = the rate of the last
    choice strictly lowers the rate until it cannot (finitely many choices). Ties go to
    the smaller error.
    """
    choice = {
        n: min(opts, key=lambda o: (o.spikes / o.slots, o.error)) for n, opts in options.items()
    }

    def rate(of: Mapping[str, _Option]) -> float:
        return sum(o.spikes for o in of.values()) / sum(o.slots for o in of.values())

    current = rate(choice)
    while True:
        lam = current
        step = {
            n: min(opts, key=lambda o: (o.spikes - lam * o.slots, o.error))
            for n, opts in options.items()
        }
        lower = rate(step)
        if not lower < current:
            return choice
        choice, current = step, lower


def _meet_sparsity(
    options: Mapping[str, list[_Option]], weights: Mapping[str, int], target: float
) -> dict[str, _Option]:
    choice = _sparsest(options)
    spikes = sum(o.spikes for o in choice.values())
    slots = sum(o.slots for o in choice.values())
    best = 1.0 - spikes / slots
    # Floating sums of the same values in another order may differ in the last bits.
    slack = 1e-12
    if best < target - slack:
        grid = ", ".join(
            k_key(o.k) for o in sorted(next(iter(options.values())), key=lambda o: o.k)
        )
        raise SpikecodeError(
            f"target sparsity {target:.4f} is not achievable with k in {{{grid}}}: the best "
            f"is {best:.4f} (the sparsest choice of k per layer)"
        )
    current = best
    while True:
        # The single change with the most error reduction per unit of sparsity given up
        # that keeps the target; the global rate is a ratio of sums, so each change's
        # cost is computed exactly, not added up. Every move lowers the weighted error.
        move = None
        for name, opts in options.items():
            here = choice[name]
            for there in opts:
                gain = weights[name] * (here.error - there.error)
                if gain <= 0:
                    continue
                after = 1.0 - (spikes - here.spikes + there.spikes) / (
                    slots - here.slots + there.slots
                )
                if after < target - slack:
                    continue
                loss = current - after
                ratio = gain / loss if loss > 0 else math.inf
                candidate = (ratio, gain, -there.k, name, there, after)
                if move is None or candidate[:3] > move[:3]:
                    move = candidate
        if move is None:
            break
        *_, name, there, current = move
        spikes += there.spikes - choice[name].spikes
        slots += there.slots - choice[name].slots
        choice[name] = there
    return choice


def _meet_error(options: Mapping[str, list[_Option]], limit: float) -> dict[str, _Option]:
    chosen = {}
    failing = []
    for name, opts in options.items():
        allowed = [o for o in opts if o.error <= limit]
        if not allowed:
            failing.append((name, min(o.error for o in opts)))
            continue
        chosen[name] = max(allowed, key=lambda o: (o.sparsity, -o.error, -o.k))
    if failing:
        worst = max(error for _, error in failing)
        raise SpikecodeError(
            f"max error {limit:.4g} is not achievable for {len(failing)} layer(s) with the "
            f"calibrated k (first: {failing[0][0]}, best {failing[0][1]:.4g}); the best "
            f"achievable per-layer maximum is {worst:.4g}"
        )
    return chosen


def save_advice(path: str | os.PathLike[str], advice: Advice) -> Path:
    """Write the advice as JSON (atomically); ``load_k_map`` reads its ``k`` mapping."""
    target = as_path(path)
    text = json.dumps(advice.to_dict(), indent=1, allow_nan=False) + "\n"
    with atomic_write(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def load_k_map(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read a per-layer k map: an advice file, or a plain JSON object ``{layer: k}``.

    Raises
    ------
    SpikecodeError
        An unreadable file, not JSON, another format or version, or a k that is not a
        positive finite number.
    """
    file = as_path(path)
    raw = read_json(file, "the k map file")
    if isinstance(raw, dict) and "format" in raw:
        if raw.get("format") != ADVICE_FORMAT or raw.get("version") != ADVICE_VERSION:
            raise SpikecodeError(
                f"not a spikecode advice file of version {ADVICE_VERSION} "
                f"(format {raw.get('format')!r}, version {raw.get('version')!r})",
                file=str(file),
            )
        raw = raw.get("k")
    if not isinstance(raw, dict) or not raw:
        raise SpikecodeError(
            "a k map must be a JSON object from layer name to k (or an advice file)",
            file=str(file),
        )
    result = {}
    for name, value in raw.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise SpikecodeError(
                f"k of layer {name!r} must be a positive number, not {value!r}", file=str(file)
            )
        result[name] = float(value)
    return result
