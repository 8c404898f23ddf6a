"""The data behind the plots: count histograms per layer and raster excerpts.

:func:`count_histograms` and :func:`raster_data` compute what
:func:`spikecode.reports.plots.plot_hist` and :func:`~spikecode.reports.plots.plot_raster`
draw, as plain data (no matplotlib here).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikecode.calibration.records import CountHistogram
from spikecode.encoders.schemes import SCHEMES, get_scheme
from spikecode.errors import SpikecodeError
from spikecode.reports.moe import grouped
from spikecode.reports.sources import (
    DEFAULT_K,
    Source,
    _check_k,
    merge_histograms,
)
from spikecode.threshold import adaptive_counts

__all__ = [
    "RasterData",
    "count_histograms",
    "raster_data",
]


def count_histograms(
    source: Source, k: float | None = None, *, by: str = "family"
) -> dict[str, CountHistogram]:
    """Spike-count histograms summed per layer family (or per layer), at one k.

    Parameters
    ----------
    source
        From :func:`load_source`.
    k
        As in :func:`sparsity_report`.
    by
        ``"family"`` (q_proj, k_proj, ... by role, summed over the network),
        ``"expert"`` (each routed expert's projections of a MoE model, SPEC §8; other
        layers left out) or ``"layer"``.

    Returns
    -------
    dict
        Group name → :class:`spikecode.calibration.CountHistogram`, in order of first
        appearance.
    """
    out: dict[str, CountHistogram] = {}
    # Counts do not depend on the code: any scheme the source has will do.
    for group, results in grouped(source.layer_results(k, None), by).items():
        for r in results:
            if r.histogram is None:  # pragma: no cover - both sources always carry one
                continue
            out[group] = (
                r.histogram if group not in out else merge_histograms(out[group], r.histogram)
            )
    return out


# -- raster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RasterData:
    """Dense spike trains of a few tokens × channels under several codes.

    Attributes
    ----------
    k
        The threshold divisor.
    counts
        int32 ``[tokens, channels]``: the selected counts.
    vth
        Thresholds of the selected tokens.
    tokens, channels
        The selected token and channel indices.
    trains
        Scheme → int8 ``[T, tokens · channels]``: the dense train of the selection,
        neuron ``i`` = token ``i // channels``, channel ``i % channels``.
    zero_points
        Scheme → the zero point of its train (non-zero only for shifted unsigned codes).
    layer
        Name of the layer the activations feed (for the title), or None.
    """

    k: float
    counts: np.ndarray
    vth: np.ndarray
    tokens: tuple[int, ...]
    channels: tuple[int, ...]
    trains: dict[str, np.ndarray]
    zero_points: dict[str, int]
    layer: str | None = None


def _indices(values: Sequence[int], size: int, what: str) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise SpikecodeError(f"{what} must be a non-empty sequence of indices")
    if isinstance(values, range):
        # Checked by its ends, in O(1): a range of 10**8 indices is refused before it is
        # listed (and the selection it would allocate).
        for v in (values[0], values[-1]):
            if not 0 <= v < size:
                raise SpikecodeError(f"{what} index {v!r} is out of range 0..{size - 1}")
        return tuple(values)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < size:
            raise SpikecodeError(f"{what} index {v!r} is out of range 0..{size - 1}")
        out.append(int(v))
    return tuple(out)


def raster_data(
    x: Any,
    *,
    k: float = DEFAULT_K,
    tokens: Sequence[int] = (1, 2, 3),
    channels: Sequence[int] = tuple(range(8)),
    schemes: Sequence[str] = tuple(SCHEMES),
    layer: str | None = None,
) -> RasterData:
    """Encode a few tokens × channels of activations under each code (report figure 10).

    Thresholds are computed per token over all its features (SPEC §2), then the
    selected channels' counts are encoded with their minimal T (for the shifted unsigned
    codes, the zero point of the selection).

    Parameters
    ----------
    x
        Float activations ``[tokens, features]`` (one layer).
    k
        Threshold divisor.
    tokens, channels
        Indices to show.
    schemes
        Codes, one panel each.
    layer
        Name of the layer, shown in the figure title.

    Returns
    -------
    RasterData
    """
    from spikecode._validate import to_numpy
    from spikecode.encoders import encode

    a = to_numpy(x, "activations")
    if a.ndim != 2:
        raise SpikecodeError("raster activations must be [tokens, features]", shape=a.shape)
    tok = _indices(tokens, a.shape[0], "token")
    chan = _indices(channels, a.shape[1], "channel")
    if isinstance(schemes, str) or not schemes:
        raise SpikecodeError("schemes must be a non-empty sequence of scheme names")
    names = [get_scheme(s).name for s in schemes]
    counts, vth = adaptive_counts(a[list(tok)], k=k)
    selected = np.ascontiguousarray(counts[:, list(chan)])
    trains, zero_points = {}, {}
    for name in names:
        train = encode(selected, name)
        trains[name] = train.to_dense().reshape(train.T, -1)
        zero_points[name] = train.zero_point
    return RasterData(_check_k(k), selected, np.asarray(vth), tok, chan, trains, zero_points, layer)
