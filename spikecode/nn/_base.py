"""The base of spikecode's spiking modules: the threshold settings they share (SPEC §2)."""

from __future__ import annotations

from torch import nn

from spikecode.nn import functional as F

__all__: list[str] = []


class _SpikingModule(nn.Module):
    """Holds the threshold settings ``k``, ``vth_min``, ``vth_max`` shared by the modules."""

    def __init__(self, k: float, vth_min: float, vth_max: float) -> None:
        super().__init__()
        F._check_bounds(vth_min, vth_max)
        self.vth_min = float(vth_min)
        self.vth_max = float(vth_max)
        self.k = k

    @property
    def k(self) -> float:
        """Threshold divisor of SPEC §2 (finite, > 0); may be changed at any time."""
        return self._k

    @k.setter
    def k(self, value: float) -> None:
        self._k = F.check_k(value)

    def extra_repr(self) -> str:
        return f"k={self.k}, vth_min={self.vth_min}, vth_max={self.vth_max}"
