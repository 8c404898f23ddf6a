"""Sparsity and firing statistics of SPEC §5, computed from counts without building trains.

For an element with count ``c`` coded into ``T`` steps, ``spikes(c)`` is the number of
non-zero steps of its train. Over ``N`` elements:

* firing rate = Σ spikes / (N · T); sparsity = 1 − firing rate. Over elements coded with
  different T (the layers of a network, each with its own T) it is the share of
  neuron-step slots that carry a spike, ``Σ spikes / Σ (N_i · T_i)``: each element
  counts over the steps of its own train. That keeps it a ratio of integer totals, like
  every other statistic here (merges are exact and order-free), matches the windowed
  sparsity (spikes over occupied steps), and never pads a short train with silent steps
  of a longer one, which would overstate the sparsity;
* spikes per element = Σ spikes / N (the report: 1.13 for SpikingBrain-7B,
  bitwise-bidirectional, k = 3);
* silent fraction = share of elements whose train has no spike. For every signed code
  that is exactly the share of ``c = 0``; for an unsigned code with a non-zero zero point
  it is the share of ``c = zero_point`` (those elements fetch no weights);
* within-7 fraction = share of ``|c| <= 7`` (of the counts themselves, whatever the code);
* windowed sparsity with window ``w`` (the report's "INT3", w = 3): each element occupies
  ``ceil(len(c) / w) · w`` steps, where ``len`` is the element's own minimal length under
  the code (bit length for the bitwise codes with ``len(0) = 1`` as in SPEC §5, ``|c|``
  for binary/ternary, sign bit included for two's complement); sparsity is
  ``1 − Σ spikes / Σ occupied steps``. For two's complement the spikes are counted in the
  sign-extended occupied width. This is the definition reports print next to the number.

All totals are integers, so statistics of several batches merge exactly
(:meth:`SpikeStats.merge`), which is how streaming calibration accumulates them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spikecode.encoders import _kernels
from spikecode.encoders.codec import plan_encoding
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError

__all__ = ["SpikeStats", "spike_stats"]


@dataclass(frozen=True)
class SpikeStats:
    """Integer spike totals over a set of elements, and the SPEC §5 rates derived from them.

    Attributes
    ----------
    scheme, T, window
        The code, its number of steps and the sparsity window the totals refer to.
    elements
        Number of elements (token x channel values).
    spikes
        Total spikes (non-zero train entries).
    silent
        Elements whose train is all zero.
    within_7
        Elements with ``|c| <= 7``.
    window_spikes, window_steps
        Spikes and occupied steps of the windowed model.
    steps
        Neuron-step slots, ``Σ elements · T`` over the trains the totals cover
        (``elements · T`` for one tensor, the default).
    """

    scheme: str
    T: int
    window: int
    elements: int
    spikes: int
    silent: int
    within_7: int
    window_spikes: int
    window_steps: int
    steps: int = -1

    def __post_init__(self) -> None:
        if self.steps == -1:  # one tensor: every element over the same T steps
            object.__setattr__(self, "steps", self.elements * self.T)

    @property
    def spikes_per_element(self) -> float:
        """Σ spikes / elements."""
        return self.spikes / self.elements

    @property
    def firing_rate(self) -> float:
        """Σ spikes / Σ (elements · T): the share of neuron-step slots that fire."""
        return self.spikes / self.steps

    @property
    def sparsity(self) -> float:
        """1 − firing rate."""
        return 1.0 - self.firing_rate

    @property
    def silent_fraction(self) -> float:
        """Share of elements without any spike."""
        return self.silent / self.elements

    @property
    def within_7_fraction(self) -> float:
        """Share of elements with ``|c| <= 7``."""
        return self.within_7 / self.elements

    @property
    def window_sparsity(self) -> float:
        """1 − Σ spikes / Σ occupied steps, windows of ``window`` steps."""
        return 1.0 - self.window_spikes / self.window_steps

    def merge(self, other: SpikeStats) -> SpikeStats:
        """Totals over both sets of elements (same scheme and window; T may differ).

        The merged ``T`` is the larger one; the firing rate stays ``Σ spikes / Σ
        (elements · T)`` with each part over its own T (module docstring), so totals over
        layers and the stats file's totals agree.
        """
        if (self.scheme, self.window) != (other.scheme, other.window):
            raise SpikecodeError(
                "cannot merge statistics of different schemes or windows",
                scheme=f"{self.scheme}/{other.scheme}",
                window=f"{self.window}/{other.window}",
            )
        return SpikeStats(
            scheme=self.scheme,
            T=max(self.T, other.T),
            window=self.window,
            elements=self.elements + other.elements,
            spikes=self.spikes + other.spikes,
            silent=self.silent + other.silent,
            within_7=self.within_7 + other.within_7,
            window_spikes=self.window_spikes + other.window_spikes,
            window_steps=self.window_steps + other.window_steps,
            steps=self.steps + other.steps,
        )

    def to_dict(self) -> dict[str, Any]:
        """Totals and derived rates as a JSON-ready dict."""
        d = asdict(self)
        for name in (
            "spikes_per_element",
            "firing_rate",
            "sparsity",
            "silent_fraction",
            "within_7_fraction",
            "window_sparsity",
        ):
            d[name] = getattr(self, name)
        return d


def spike_stats(
    counts: Any,
    scheme: str = "bitwise-bidirectional",
    T: int | None = None,
    *,
    window: int = 3,
    zero_point: int | str | None = "auto",
    saturate: bool = False,
) -> SpikeStats:
    """SPEC §5 statistics of counts coded under ``scheme``, without building the train.

    Parameters
    ----------
    counts
        Integer counts, features last.
    scheme, T, zero_point, saturate
        As for :func:`spikecode.encode` (T defaults to the minimal lossless T).
    window
        Window of the windowed sparsity (the report's w = 3).

    Returns
    -------
    SpikeStats
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise SpikecodeError(f"window must be a positive integer, not {window!r}")
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    rows = _kernels.stats_rows(plan.rows, plan.scheme.code, plan.T, plan.zero_point, int(window))
    spikes, silent, within, w_spikes, w_steps = (int(v) for v in rows.sum(axis=0))
    return SpikeStats(
        scheme=plan.scheme.name,
        T=plan.T,
        window=int(window),
        elements=int(plan.rows.size),
        spikes=spikes,
        silent=silent,
        within_7=within,
        window_spikes=w_spikes,
        window_steps=w_steps,
    )


def train_stats(train: SpikeTrain, *, window: int = 3) -> SpikeStats:
    """Statistics of an existing train (decodes it; same T and zero point)."""
    return spike_stats(
        train.decode(), train.scheme, train.T, window=window, zero_point=train.zero_point
    )
