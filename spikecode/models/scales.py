"""The holder of a linear layer's W8ASpike weight scales, as the release stores them (SPEC §4)."""

from __future__ import annotations

import torch
from torch import nn

from spikecode._constants import RELEASE_GROUP_SIZE as W8_GROUP_SIZE

__all__ = ["QuantizerScales"]


class QuantizerScales(nn.Module):
    """Holder of one linear layer's W8ASpike weight scales (SPEC §4).

    Attached to a linear layer as ``linear.weight_quantizer`` so that the buffer's
    state-dict name is the release's ``<linear>.weight_quantizer.scales``. It computes
    nothing; fake quantisation reads :attr:`scales` and :attr:`group_size`.

    Parameters
    ----------
    scales
        ``[out_features, in_features / group_size, 1]``: ``max|w| / 127`` per output row
        and per group of ``group_size`` input columns.
    group_size
        Input columns per scale (128 in the release).
    """

    def __init__(self, scales: torch.Tensor, group_size: int = W8_GROUP_SIZE) -> None:
        super().__init__()
        self.group_size = group_size
        self.register_buffer("scales", scales)

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return f"shape={tuple(self.scales.shape)}, group_size={self.group_size}"
