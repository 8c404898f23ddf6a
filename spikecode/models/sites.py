"""Identity points on attention activations that a recipe may replace (SPEC §7).

:class:`ActivationSite` lives apart from :mod:`spikecode.models.gla_swa` so that
calibration can hook sites without importing transformers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ActivationSite"]


class ActivationSite(nn.Module):
    """An identity point on an attention activation that a recipe may replace (see module doc).

    Parameters
    ----------
    in_features
        Width of the last axis (``head_dim``).
    out_features
        Fan-out of one element: the most keys a query meets (``sliding_window + 1``).
    """

    #: Calibration measures a site's error on the activation itself (no weight).
    identity_output = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged."""
        return x

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return f"in_features={self.in_features}, out_features={self.out_features}"
