"""Report sources: a calibration stats file or an activation file, read into layer results.

A source is what ``spikecode report`` and ``spikecode plot`` read:

- a **calibration stats file** (``spikecode calibrate --out stats.json``, read and
  validated by :func:`spikecode.calibration.load_stats`: per layer, per k and per scheme
  the SPEC §5 spike totals, the output error of the W8ASpike layer, count histograms and
  silent-channel activity), or a :class:`~spikecode.calibration.CalibrationStats` in
  memory (:class:`StatsSource`); or
- an **activation file** (anything :func:`spikecode.load_activations` reads, or the
  bundled sample). A 3-D array is read as ``[layer, token, feature]`` (the bundled
  sample's layout: one layer per leading index); any other array is one layer whose
  leading axes are tokens. The same per-layer quantities are computed from the counts
  (SPEC §2) at the requested k and scheme. Without weights there is no layer output, so
  the error columns measure the activation reconstruction ``x̂ = Vth · c`` against ``x``
  instead (``error_measure = "reconstruction"``); the fan-out of the energy model is
  ``out_features`` (default ``in_features``).

:func:`load_source` tells the two apart.
"""

from __future__ import annotations

import abc
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikecode._validate import as_path
from spikecode.calibration.records import (
    COUNT_LIMIT,
    CalibrationStats,
    CountHistogram,
    k_key,
    layer_family,
)
from spikecode.calibration.records import VERSION as STATS_VERSION
from spikecode.calibration.statsfile import load_stats
from spikecode.encoders.codec import plan_encoding
from spikecode.encoders.schemes import get_scheme
from spikecode.energy import (
    DEFAULT_BLOCK_SIZES,
    ChannelActivity,
    LayerSpec,
    channel_activity,
)
from spikecode.energy._validate import check_block_sizes, positive_int
from spikecode.errors import SpikecodeError
from spikecode.io import ACTIVATION_SUFFIXES, list_arrays, load_activations, path_kind
from spikecode.stats import SpikeStats, spike_stats
from spikecode.threshold import adaptive_counts

__all__ = [
    "DEFAULT_K",
    "DEFAULT_KS",
    "DEFAULT_SCHEME",
    "ERROR_MEASURES",
    "FORMATS",
    "WINDOW_DEFINITION",
    "ActivationSource",
    "LayerResult",
    "Source",
    "StatsSource",
    "count_histogram",
    "load_source",
    "merge_histograms",
    "reconstruction_error",
]

DEFAULT_K = 3.0
"""The report's default k (SPEC §2)."""

DEFAULT_KS: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
"""The k sweep of the report's table 11 (SPEC §5)."""

DEFAULT_SCHEME = "bitwise-bidirectional"
"""SpikingBrain's code (the report's 1.13 spikes per element, SPEC §5)."""

FORMATS = ("table", "json", "csv", "markdown")
"""Output formats of :meth:`Report.render`."""

WINDOW_DEFINITION = (
    "each element occupies ceil(len(c)/w)*w steps, len = its own minimal length under the "
    "code (bit length with len(0) = 1 for bitwise codes, |c| for binary/ternary); windowed "
    "sparsity = 1 - spikes / occupied steps (SPEC §5)"
)

ERROR_MEASURES = {
    "output": "output of the W8ASpike layer against the float layer: ||y_spike - y|| / ||y||, "
    "mean per-token cosine",
    "reconstruction": "activation reconstruction Vth*c against x: ||Vth*c - x|| / ||x||, "
    "mean per-token cosine (no weights in an activation file)",
}

# -- count histograms ---------------------------------------------------------------------


def count_histogram(counts: Any, limit: int = COUNT_LIMIT) -> CountHistogram:
    """Histogram of integer counts over ``c = −limit … limit`` (the stats-file layout).

    Parameters
    ----------
    counts
        Integer counts, any shape.
    limit
        Largest ``|c|`` with its own bin (64 in stats files); the rest is counted in
        ``below`` and ``above``.

    Returns
    -------
    spikecode.calibration.CountHistogram
    """
    c = np.asarray(counts).ravel()
    inside = c[(c >= -limit) & (c <= limit)]
    bins = np.bincount((inside + limit).astype(np.int64), minlength=2 * limit + 1)
    return CountHistogram(
        offset=-limit,
        counts=tuple(int(v) for v in bins),
        below=int(np.count_nonzero(c < -limit)),
        above=int(np.count_nonzero(c > limit)),
    )


def merge_histograms(first: CountHistogram, second: CountHistogram) -> CountHistogram:
    """Sum of two count histograms over the same bins (:meth:`CountHistogram.sum`)."""
    return CountHistogram.sum([first, second])


# -- per-layer results --------------------------------------------------------------------


@dataclass(frozen=True)
class LayerResult:
    """What a source says about one layer at one k and scheme.

    Parameters
    ----------
    name, family
        Layer name and family (its role, :func:`spikecode.calibration.layer_family`:
        ``q_proj``, ``down_proj``...; a name without a known role is its own family).
    in_features, out_features
        Layer shape; ``out_features`` is the fan-out the energy model charges.
    tokens
        Tokens (rows) the statistics cover.
    stats
        SPEC §5 spike totals of the layer's input counts under the scheme.
    vth_mean
        Mean adaptive threshold over tokens.
    max_abs_count
        Largest ``|c|``.
    rel_error, cosine
        Error of the spiking layer (see ``error_measure`` of the report); None when
        unknown.
    activity
        Silent-channel totals for the memory model (channel and block skipping).
    histogram
        Histogram of the counts.
    rows_per_token
        Rows of the statistics per token: 1 for a projection, the number of heads for a
        window-attention site (``…attn.q_act``: one row per token and head).
    token_share
        The layer's tokens per token of the model: 1, or for a routed expert of a MoE
        layer the share of tokens routed to it (SPEC §8), so per-token energies count
        only the experts each token activates.
    """

    name: str
    family: str
    in_features: int
    out_features: int
    tokens: int
    stats: SpikeStats
    vth_mean: float | None
    max_abs_count: int | None
    rel_error: float | None
    cosine: float | None
    activity: ChannelActivity | None
    histogram: CountHistogram | None
    rows_per_token: int = 1
    token_share: float = 1.0

    def energy_spec(self) -> LayerSpec:
        """The :class:`~spikecode.energy.LayerSpec` of this layer (SPEC §6).

        A window-attention q site becomes one "layer" per token whose inputs are all
        heads' queries (``heads × head_dim``) and whose fan-out is ``out_features``, the
        keys a query meets (``sliding_window + 1``: an upper bound, reached once the
        context is as long as the window): each q spike adds one key component per key
        of ``QKᵀ``. Its channel activity carries the silent share only (block skipping
        of weights does not apply: no weight follows the site).
        """
        if self.rows_per_token > 1:
            rows = self.rows_per_token
            activity = None
            if self.activity is not None:
                activity = ChannelActivity(
                    self.tokens // rows, self.in_features * rows, self.activity.active_channels
                )
            return LayerSpec(
                self.name,
                self.in_features * rows,
                self.out_features,
                self.tokens // rows,
                self.stats.spikes,
                activity,
            )
        return LayerSpec(
            self.name,
            self.in_features,
            self.out_features,
            self.tokens,
            self.stats.spikes,
            self.activity,
            token_share=self.token_share,
        )


def _check_k(k: Any) -> float:
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not math.isfinite(k) or k <= 0:
        raise SpikecodeError(f"k must be a finite number > 0, got {k!r}")
    return float(k)


class Source(abc.ABC):
    """A report source: per-layer results at a given k and scheme.

    Subclasses: :class:`StatsSource` (a calibration stats file) and
    :class:`ActivationSource` (activations).
    """

    kind: str = ""
    error_measure: str = ""
    window: int = 3

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the source (``kind``, ``path``...)."""

    def resolve_k(self, k: float | None) -> float:
        """The k to report: ``k`` checked, or the source's default."""
        return DEFAULT_K if k is None else _check_k(k)

    def resolve_ks(self, ks: Sequence[float] | None) -> tuple[float, ...]:
        """The k sweep to report (default :data:`DEFAULT_KS`)."""
        if ks is None:
            return DEFAULT_KS
        if isinstance(ks, str | bytes) or not isinstance(ks, Sequence) or not ks:
            raise SpikecodeError(f"ks must be a non-empty sequence of numbers, got {ks!r}")
        return tuple(sorted({self.resolve_k(k) for k in ks}))

    def resolve_scheme(self, scheme: str | None) -> str:
        """The scheme to report: ``scheme`` checked, or :data:`DEFAULT_SCHEME`."""
        return DEFAULT_SCHEME if scheme is None else get_scheme(scheme).name

    def default_block_sizes(self) -> tuple[int, ...]:
        """Block sizes of the memory model when none are asked for."""
        return DEFAULT_BLOCK_SIZES

    @abc.abstractmethod
    def layer_results(
        self,
        k: float | None = None,
        scheme: str | None = None,
        *,
        block_sizes: Sequence[int] | None = None,
        out_features: int | None = None,
    ) -> list[LayerResult]:
        """Per-layer results at ``k`` and ``scheme`` (defaults as :meth:`resolve_k`)."""


class ActivationSource(Source):
    """Activations as a report source; quantities are computed from counts (SPEC §2, §5).

    Parameters
    ----------
    x
        Float activations, features last. A 3-D array is ``[layer, token, feature]``;
        any other shape is one layer (leading axes = tokens).
    path, key
        Where the array came from (for the report's ``source`` entry).
    name
        Layer name for a single-layer array (default: the key or the file stem).
    names
        Layer names for a 3-D array (default ``layer0``, ``layer1``...; the bundled
        sample's are the module names of the projections it feeds).
    """

    kind = "activations"
    error_measure = "reconstruction"

    def __init__(
        self,
        x: Any,
        *,
        path: str | os.PathLike[str] | None = None,
        key: str | None = None,
        name: str | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        from spikecode._validate import to_numpy

        a = to_numpy(x, "activations")
        if a.dtype.kind != "f":
            raise SpikecodeError(f"activations must be floating point, not {a.dtype}")
        if a.ndim < 1 or a.size == 0:
            raise SpikecodeError("activations need a feature axis and values", shape=a.shape)
        self.x = a
        self.path = None if path is None else str(path)
        self.key = key
        self.layered = a.ndim == 3
        if self.layered:
            self.names = [f"layer{i}" for i in range(a.shape[0])] if names is None else list(names)
            if len(self.names) != a.shape[0]:
                raise SpikecodeError(
                    f"{len(self.names)} layer names for {a.shape[0]} layers", shape=a.shape
                )
        else:
            stem = Path(self.path).stem if self.path else "activations"
            self.names = [name or key or stem]
        self._counts: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._layers: list[np.ndarray] | None = None

    @classmethod
    def from_layers(
        cls, layers: Any, *, path: str | os.PathLike[str] | None = None
    ) -> ActivationSource:
        """A source of named layers of any widths: ``{name: [tokens, in_features]}``.

        What :func:`~spikecode.models.capture.collect_linear_inputs` returns (and what
        ``numpy.savez(path, **captured)`` stores): one array per projection, of different
        widths (q_proj and down_proj inputs differ), so not one stacked array. Any leading
        axes of an array are tokens.
        """
        from spikecode._validate import to_numpy

        if not hasattr(layers, "items") or not layers:
            raise SpikecodeError("layers must be a non-empty mapping of name to activations")
        arrays = []
        for name, x in layers.items():
            a = to_numpy(x, str(name))
            if a.dtype.kind != "f" or a.ndim < 1 or a.size == 0:
                raise SpikecodeError(
                    f"layer {name!r} must hold floating-point activations with a feature "
                    f"axis, not {a.dtype} of shape {a.shape}"
                )
            arrays.append(a.reshape(-1, a.shape[-1]))
        source = cls(arrays[0], path=path)
        source.names = [str(name) for name in layers]
        source.layered = True
        source._layers = arrays
        return source

    def layer_arrays(self) -> list[np.ndarray]:
        """The ``[tokens, in_features]`` activations of each layer (views)."""
        if self._layers is not None:
            return list(self._layers)
        if self.layered:
            return [self.x[i] for i in range(self.x.shape[0])]
        return [self.x.reshape(-1, self.x.shape[-1])]

    def describe(self) -> dict[str, Any]:
        """``kind``, ``path``, ``key``, ``shape``, ``dtype``, ``layers``, ``layer_axis``.

        ``shape`` is a list of per-layer shapes for a source of named layers
        (:meth:`from_layers`).
        """
        arrays = self._layers
        return {
            "kind": self.kind,
            "path": self.path,
            "key": self.key,
            "shape": list(self.x.shape) if arrays is None else [list(a.shape) for a in arrays],
            "dtype": str(self.x.dtype),
            "layers": len(self.names),
            "layer_axis": self.layered,
        }

    def counts(self, k: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer ``(counts, vth)`` at ``k`` (SPEC §2), cached per k."""
        k = _check_k(k)
        if k not in self._counts:
            self._counts[k] = [adaptive_counts(a, k=k) for a in self.layer_arrays()]
        return self._counts[k]

    def layer_results(
        self,
        k: float | None = None,
        scheme: str | None = None,
        *,
        block_sizes: Sequence[int] | None = None,
        out_features: int | None = None,
    ) -> list[LayerResult]:
        """Per-layer results computed from the counts at ``k`` under ``scheme``.

        ``out_features`` (default ``in_features``) is the fan-out for the energy model;
        ``block_sizes`` (default 16, 64, 256) the block sizes of the activity.
        """
        k = self.resolve_k(k)
        scheme = self.resolve_scheme(scheme)
        sizes = check_block_sizes(DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes)
        results = []
        for name, a, (counts, vth) in zip(
            self.names, self.layer_arrays(), self.counts(k), strict=True
        ):
            tokens, n = counts.shape
            fan_out = n if out_features is None else positive_int(out_features, "out_features")
            stats = spike_stats(counts, scheme, window=self.window)
            zero_point = plan_encoding(counts, scheme).zero_point
            rel_error, cosine = reconstruction_error(a, counts, vth)
            results.append(
                LayerResult(
                    name=name,
                    family=layer_family(name),
                    in_features=n,
                    out_features=fan_out,
                    tokens=tokens,
                    stats=stats,
                    vth_mean=float(np.mean(vth, dtype=np.float64)),
                    max_abs_count=int(np.abs(counts).max()),
                    rel_error=rel_error,
                    cosine=cosine,
                    activity=channel_activity(counts, sizes, zero_point=zero_point),
                    histogram=count_histogram(counts),
                )
            )
        return results


def reconstruction_error(x: Any, counts: Any, vth: Any) -> tuple[float, float]:
    """Error of the reconstruction ``x̂ = Vth · c`` (report eq. 22 without the weights).

    Parameters
    ----------
    x
        Float activations ``[..., features]``.
    counts, vth
        Their counts (same shape) and thresholds (``x.shape[:-1]``).

    Returns
    -------
    (rel_error, cosine)
        ``||x̂ − x|| / ||x||`` over all elements (0 when ``x`` is all zero) and the mean
        over tokens of ``cos(x̂_t, x_t)`` (1 for a token where both are zero, 0 where
        only one is), both computed in float64.
    """
    x64 = np.asarray(x, dtype=np.float64)
    approx = np.asarray(vth, dtype=np.float64)[..., None] * np.asarray(counts, dtype=np.float64)
    norm = float(np.linalg.norm(x64))
    diff = float(np.linalg.norm(approx - x64))
    rel = diff / norm if norm > 0 else 0.0
    nx = np.linalg.norm(x64, axis=-1)
    na = np.linalg.norm(approx, axis=-1)
    dot = np.sum(x64 * approx, axis=-1)
    both = (nx > 0) & (na > 0)
    cos = np.where(both, dot / np.where(both, nx * na, 1.0), np.where((nx == 0) & (na == 0), 1, 0))
    return rel, float(np.mean(cos))


# -- stats files --------------------------------------------------------------------------


class StatsSource(Source):
    """A calibration stats file (docs/statsfile.rst, version 2 or 1) as a report source.

    Parameters
    ----------
    stats
        The loaded file (:func:`spikecode.calibration.load_stats`, or
        :func:`spikecode.calibration.calibrate`'s result).
    path
        Where it came from, for the report's ``source`` entry (None: in memory).
    """

    kind = "stats"
    error_measure = "output"

    def __init__(self, stats: CalibrationStats, path: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(stats, CalibrationStats):
            raise SpikecodeError(f"expected CalibrationStats, got {type(stats).__name__}")
        self.stats = stats
        self.path = None if path is None else str(path)
        self.ks = tuple(stats.k)
        self.schemes = tuple(stats.schemes)
        self.window = stats.window
        self.block_sizes = tuple(stats.block_sizes)

    def describe(self) -> dict[str, Any]:
        """Describe the file: ``kind``, ``path``, ``version``, ``k``, ``schemes``, ``window``.

        Plus the file's ``spikecode_version``, ``created``, ``checkpoint``, ``data``,
        ``error_rows`` and ``recipe`` (``name``; ``generate``: None for prompts, N when
        decode steps were measured).
        """
        return {
            "kind": self.kind,
            "path": self.path,
            "version": STATS_VERSION,
            "k": list(self.ks),
            "schemes": list(self.schemes),
            "window": self.window,
            "spikecode_version": self.stats.spikecode_version,
            "created": self.stats.created,
            "checkpoint": self.stats.checkpoint.to_dict(),
            "data": self.stats.data.to_dict(),
            "error_rows": self.stats.error_rows,
            "recipe": self.stats.recipe.to_dict(),
        }

    def _where(self) -> dict[str, Any]:
        return {"file": self.path} if self.path else {}

    def resolve_k(self, k: float | None) -> float:
        """Return ``k`` if the file has it (else refuse, listing the file's k).

        By default the file's k closest to 3 (the report's default).
        """
        if k is None:
            return min(self.ks, key=lambda v: (abs(v - DEFAULT_K), v))
        k = _check_k(k)
        if k not in self.ks:
            raise SpikecodeError(
                f"the stats file has no k = {k_key(k)}; it has "
                + ", ".join(k_key(v) for v in self.ks),
                **self._where(),
            )
        return k

    def resolve_ks(self, ks: Sequence[float] | None) -> tuple[float, ...]:
        """The file's k values (all of them by default)."""
        return tuple(sorted(self.ks)) if ks is None else super().resolve_ks(ks)

    def resolve_scheme(self, scheme: str | None) -> str:
        """Return ``scheme`` if the file has it (else refuse, listing the file's).

        By default bitwise-bidirectional if present, else the file's first scheme.
        """
        if scheme is None:
            return DEFAULT_SCHEME if DEFAULT_SCHEME in self.schemes else self.schemes[0]
        name = get_scheme(scheme).name
        if name not in self.schemes:
            raise SpikecodeError(
                f"the stats file has no scheme {name!r}; it has {', '.join(self.schemes)}",
                **self._where(),
            )
        return name

    def default_block_sizes(self) -> tuple[int, ...]:
        """The block sizes the file was calibrated with."""
        return self.block_sizes

    def layer_results(
        self,
        k: float | None = None,
        scheme: str | None = None,
        *,
        block_sizes: Sequence[int] | None = None,
        out_features: int | None = None,
    ) -> list[LayerResult]:
        """Per-layer results read from the file.

        ``out_features`` is refused (the file has each layer's shape); ``block_sizes``
        must be among the file's.
        """
        if out_features is not None:
            raise SpikecodeError(
                "out_features (--out-features) applies to activation files; a stats file "
                "has each layer's shape",
                **self._where(),
            )
        k = self.resolve_k(k)
        scheme = self.resolve_scheme(scheme)
        sizes = self.block_sizes if block_sizes is None else check_block_sizes(block_sizes)
        unknown = [b for b in sizes if b not in self.block_sizes]
        if unknown:
            raise SpikecodeError(
                f"the stats file has no block size {unknown[0]}; it has "
                + ", ".join(map(str, self.block_sizes)),
                **self._where(),
            )
        key = k_key(k)
        results = []
        # Every projection sees every token once; a site sees each token once per head.
        projections = [layer.tokens for layer in self.stats.layers if not _is_site(layer.name)]
        # A routed expert sees the tokens routed to it: its share of the MoE layer's.
        routed = {r.layer + ".experts.": r.tokens for r in self.stats.routing if r.tokens}
        for layer in self.stats.layers:
            share = next(
                (
                    layer.tokens / total
                    for prefix, total in routed.items()
                    if layer.name.startswith(prefix)
                ),
                1.0,
            )
            entry = layer.by_k[key]
            rows = 1
            if _is_site(layer.name) and projections and layer.tokens % projections[0] == 0:
                rows = layer.tokens // projections[0]
            activity = entry.activity
            if activity is not None and get_scheme(scheme).unsigned_counts:
                activity = _shifted_activity(activity, entry.schemes[scheme], entry.count_histogram)
            results.append(
                LayerResult(
                    name=layer.name,
                    family=layer.family,
                    in_features=layer.in_features,
                    out_features=layer.out_features,
                    tokens=layer.tokens,
                    stats=entry.schemes[scheme],
                    vth_mean=entry.vth.mean,
                    max_abs_count=entry.max_abs_count,
                    rel_error=entry.output_rel_error,
                    cosine=entry.output_cosine,
                    activity=activity,
                    histogram=entry.count_histogram,
                    rows_per_token=rows,
                    token_share=min(share, 1.0),
                )
            )
        return results


def _is_site(name: str) -> bool:
    """A window-attention activation site (:class:`~spikecode.models.sites.ActivationSite`)."""
    return name.endswith((".q_act", ".k_act", ".v_act"))


def _shifted_activity(
    activity: ChannelActivity, stats: SpikeStats, histogram: CountHistogram
) -> ChannelActivity:
    """Channel activity of a shifted unsigned code from a stats file (zero point < 0).

    The file's activity counts ``c ≠ 0`` as active, right for every code whose zero
    point is 0. A shifted binary or bitwise train (zero point ``min c < 0``, SPEC §3)
    is silent where ``c = zero point`` instead, as :func:`channel_activity` counts for
    activation files: the channel total is then exact from the code's silent count.
    Which blocks hold only such elements the file does not record, so each active
    channel is charged its whole block (``min(T·N, B · active)``, an upper bound that
    never overstates the saving).
    """
    shifted = histogram.below > 0 or any(histogram.counts[: -histogram.offset])
    if not shifted:
        return activity
    elements = activity.tokens * activity.in_features
    active = elements - stats.silent
    return ChannelActivity(
        tokens=activity.tokens,
        in_features=activity.in_features,
        active_channels=active,
        block_fetched_channels={
            size: min(elements, size * active) for size in activity.block_fetched_channels
        },
    )


def _looks_like_json(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def load_source(
    path: str | os.PathLike[str] | None = None,
    *,
    key: str | None = None,
    data: str | os.PathLike[str] | None = None,
    samples: int | None = None,
) -> Source:
    """Open a report source: a stats file, activations, or a checkpoint folder.

    Parameters
    ----------
    path
        A stats file (``.json``, or any file whose content is a JSON object), an
        activation file (``.npy``, ``.npz``, ``.safetensors``, ``.pt``, ``.pth``), a
        checkpoint folder, or None for the bundled sample (``[6, 291, 384]`` MiniLM
        activations). A file of several arrays without ``key`` is one layer per array
        (the ``.npz`` of :func:`~spikecode.models.capture.collect_linear_inputs`). A
        checkpoint folder is run on ``data`` and its projections' inputs are the layers
        (:func:`~spikecode.calibration.collect_checkpoint_inputs`).
    key
        Array to use in an activation file holding several (refused for stats files).
    data, samples
        Checkpoint folders only: the text or JSONL file to run (default: the bundled
        corpus) and how many of its samples (default :data:`CHECKPOINT_SAMPLES`).

    Returns
    -------
    Source
        :class:`StatsSource` or :class:`ActivationSource`.

    Raises
    ------
    SpikecodeError
        Missing file, an unknown kind of file, invalid JSON, a JSON file that is not a
        stats file, a stats file of another version or with missing or malformed fields
        (:func:`~spikecode.calibration.load_stats` names the field), an unreadable or
        non-float activation file, ``data`` without a checkpoint folder, any refusal of
        :func:`~spikecode.models.checkpoint.load_checkpoint`. The message names the file.
    """
    path = None if path is None else as_path(path)
    kind = None if path is None else path_kind(path)
    if (data is not None or samples is not None) and kind != "dir":
        raise SpikecodeError(
            "data (--data) and samples (--samples) are the texts run through a checkpoint; "
            "the source must be a checkpoint folder",
            **({} if path is None else {"file": str(path)}),
        )
    if path is None:
        from spikecode.data import sample_layer_names, sample_path

        sample = sample_path()
        return ActivationSource(
            load_activations(sample, key=key or "activations"),
            path=sample,
            key="activations",
            names=sample_layer_names(),
        )
    if kind is None:
        from spikecode._hub import hub_id_note

        note = hub_id_note(path)
        raise SpikecodeError("no such file" + (f": {note}" if note else ""), file=str(path))
    if kind == "dir":
        if key is not None:
            raise SpikecodeError("key (--key) applies to activation files", file=str(path))
        return checkpoint_source(path, data, CHECKPOINT_SAMPLES if samples is None else samples)
    if kind != "file":
        raise SpikecodeError("the source must be a file or a checkpoint folder", file=str(path))
    suffix = path.suffix.lower()
    if suffix in ACTIVATION_SUFFIXES:
        if key is None and len(names := list(list_arrays(path))) > 1:
            return ActivationSource.from_layers(
                {name: load_activations(path, key=name) for name in names}, path=path
            )
        return ActivationSource(load_activations(path, key=key), path=path, key=key)
    if suffix == ".json" or _looks_like_json(path):
        if key is not None:
            raise SpikecodeError("key (--key) applies to activation files", file=str(path))
        return StatsSource(load_stats(path), path)
    raise SpikecodeError(
        f"cannot tell what {path.name} is: a source is a calibration stats file (.json, "
        f"written by spikecode calibrate), activations ({', '.join(ACTIVATION_SUFFIXES)}) "
        "or a checkpoint folder",
        file=str(path),
    )


#: Samples of the text set a checkpoint folder runs by default (a report's first look;
#: the activations of every projection are kept in memory).
CHECKPOINT_SAMPLES = 8


def checkpoint_source(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    samples: int = CHECKPOINT_SAMPLES,
) -> ActivationSource:
    """The inputs of a checkpoint's projections on a text set, as a report source.

    The checkpoint is loaded in float32 on the CPU and run on the first ``samples`` of
    ``data`` (None: the bundled corpus); every linear projection but ``lm_head`` is a
    layer, named by its module name (:func:`~spikecode.calibration.collect_checkpoint_inputs`).
    """
    from spikecode.calibration.data import collect_checkpoint_inputs
    from spikecode.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, dtype="float32")
    return ActivationSource.from_layers(collect_checkpoint_inputs(loaded, data, samples), path=path)


# -- reports ------------------------------------------------------------------------------
