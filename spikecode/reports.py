"""Report tables and JSON-ready dicts built from a *source* (SPEC §5, §6).

A source is what ``spikecode report`` and ``spikecode plot`` read:

- a **calibration stats file** (``spikecode calibrate --out stats.json``, read and
  validated by :func:`spikecode.statsfile.load_stats`: per layer, per k and per scheme
  the SPEC §5 spike totals, the output error of the W8ASpike layer, count histograms and
  silent-channel activity), or a :class:`~spikecode.statsfile.CalibrationStats` in
  memory (:class:`StatsSource`); or
- an **activation file** (anything :func:`spikecode.load_activations` reads, or the
  bundled sample). A 3-D array is read as ``[layer, token, feature]`` (the bundled
  sample's layout: one layer per leading index); any other array is one layer whose
  leading axes are tokens. The same per-layer quantities are computed from the counts
  (SPEC §2) at the requested k and scheme. Without weights there is no layer output, so
  the error columns measure the activation reconstruction ``x̂ = Vth · c`` against ``x``
  instead (``error_measure = "reconstruction"``); the fan-out of the energy model is
  ``out_features`` (default ``in_features``).

:func:`load_source` tells the two apart; the builders (:func:`sparsity_report`,
:func:`energy_report`, :func:`equation24_report`, :func:`tradeoff_report`) return a
:class:`Report`: ``to_dict()`` for JSON, ``rows()`` for CSV and ``render(fmt)`` for the
``table``, ``json``, ``csv`` and ``markdown`` texts the CLI prints. Everything here is
pure (no printing, no files written); :mod:`spikecode.plots` draws the same data.

Totals over layers follow the stats-file rule (``totals`` of STATSFILE.md): integer spike
totals are summed, so spikes per element, silent, ``|c| ≤ 7`` and windowed figures are
ratios of sums; the firing rate is the element-weighted mean of the layers' firing rates
(each layer codes with its own T) and the sparsity one minus it; errors are weighted by
element count.
"""

from __future__ import annotations

import abc
import csv
import io
import json
import math
import numbers
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikecode.encoders.codec import plan_encoding
from spikecode.encoders.schemes import SCHEMES, get_scheme
from spikecode.energy import (
    DEFAULT_BLOCK_SIZES,
    ChannelActivity,
    EnergyTable,
    LayerSpec,
    channel_activity,
    format_ratio,
    format_reduction,
    load_table,
    mac_energy,
)
from spikecode.energy import energy_report as _energy_report
from spikecode.energy._validate import check_block_sizes, positive_int
from spikecode.errors import SpikecodeError
from spikecode.io import ACTIVATION_SUFFIXES, load_activations
from spikecode.stats import SpikeStats, spike_stats
from spikecode.statsfile import COUNT_LIMIT, CalibrationStats, CountHistogram, k_key, load_stats
from spikecode.statsfile import VERSION as STATS_VERSION
from spikecode.threshold import adaptive_counts

__all__ = [
    "DEFAULT_K",
    "DEFAULT_KS",
    "DEFAULT_SCHEME",
    "FORMATS",
    "ActivationSource",
    "Column",
    "LayerResult",
    "RasterData",
    "Report",
    "Source",
    "StatsSource",
    "check_format",
    "count_histogram",
    "count_histograms",
    "energy_report",
    "equation24_report",
    "load_source",
    "merge_histograms",
    "raster_data",
    "reconstruction_error",
    "sparsity_report",
    "tradeoff_report",
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
    spikecode.statsfile.CountHistogram
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
    """Sum of two count histograms over the same bins."""
    if second.offset != first.offset or len(second.counts) != len(first.counts):
        raise SpikecodeError(
            "cannot merge count histograms over different bins",
            bins=(first.offset, len(first.counts), second.offset, len(second.counts)),
        )
    return CountHistogram(
        offset=first.offset,
        counts=tuple(a + b for a, b in zip(first.counts, second.counts, strict=True)),
        below=first.below + second.below,
        above=first.above + second.above,
    )


# -- per-layer results --------------------------------------------------------------------


@dataclass(frozen=True)
class LayerResult:
    """What a source says about one layer at one k and scheme.

    Parameters
    ----------
    name, family
        Layer name and family (its last name component: ``q_proj``, ``down_proj``...;
        for activation files the layer name itself).
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

    def energy_spec(self) -> LayerSpec:
        """The :class:`~spikecode.energy.LayerSpec` of this layer (SPEC §6)."""
        return LayerSpec(
            self.name,
            self.in_features,
            self.out_features,
            self.tokens,
            self.stats.spikes,
            self.activity,
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
            self.names = [f"layer{i}" for i in range(a.shape[0])]
        else:
            stem = Path(self.path).stem if self.path else "activations"
            self.names = [name or key or stem]
        self._counts: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {}

    def layer_arrays(self) -> list[np.ndarray]:
        """The ``[tokens, in_features]`` activations of each layer (views)."""
        if self.layered:
            return [self.x[i] for i in range(self.x.shape[0])]
        return [self.x.reshape(-1, self.x.shape[-1])]

    def describe(self) -> dict[str, Any]:
        """``kind``, ``path``, ``key``, ``shape``, ``dtype``, ``layers``, ``layer_axis``."""
        return {
            "kind": self.kind,
            "path": self.path,
            "key": self.key,
            "shape": list(self.x.shape),
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
                    family=name,
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
    """A calibration stats file (STATSFILE.md, version 1) as a report source.

    Parameters
    ----------
    stats
        The loaded file (:func:`spikecode.statsfile.load_stats`, or
        :func:`spikecode.calibrate.calibrate`'s result).
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

        Plus the file's ``spikecode_version``, ``created``, ``checkpoint``, ``data`` and
        ``error_rows``.
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
        for layer in self.stats.layers:
            entry = layer.by_k[key]
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
                    activity=entry.activity,
                    histogram=entry.count_histogram,
                )
            )
        return results


def _looks_like_json(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def load_source(path: str | os.PathLike[str] | None = None, *, key: str | None = None) -> Source:
    """Open a report source: a calibration stats file or an activation file.

    Parameters
    ----------
    path
        A stats file (``.json``, or any file whose content is a JSON object), an
        activation file (``.npy``, ``.npz``, ``.safetensors``, ``.pt``, ``.pth``), or
        None for the bundled sample (``[6, 291, 384]`` MiniLM activations).
    key
        Array to use in an activation file holding several (refused for stats files).

    Returns
    -------
    Source
        :class:`StatsSource` or :class:`ActivationSource`.

    Raises
    ------
    SpikecodeError
        Missing file, a folder, an unknown kind of file, invalid JSON, a JSON file that
        is not a stats file, a stats file of another version or with missing or
        malformed fields (:func:`~spikecode.statsfile.load_stats` names the field), an
        unreadable or non-float activation file. The message names the file.
    """
    if path is None:
        from spikecode.data import sample_path

        sample = sample_path()
        return ActivationSource(
            load_activations(sample, key=key or "activations"), path=sample, key="activations"
        )
    path = Path(path)
    if not path.exists():
        raise SpikecodeError("no such file", file=str(path))
    if not path.is_file():
        raise SpikecodeError("the source must be a file, not a folder", file=str(path))
    suffix = path.suffix.lower()
    if suffix in ACTIVATION_SUFFIXES:
        return ActivationSource(load_activations(path, key=key), path=path, key=key)
    if suffix == ".json" or _looks_like_json(path):
        if key is not None:
            raise SpikecodeError("key (--key) applies to activation files", file=str(path))
        return StatsSource(load_stats(path), path)
    raise SpikecodeError(
        f"cannot tell what {path.name} is: a source is a calibration stats file (.json, "
        f"written by spikecode calibrate) or activations ({', '.join(ACTIVATION_SUFFIXES)})",
        file=str(path),
    )


# -- reports ------------------------------------------------------------------------------

Formatter = Callable[[Any], str]


def _fmt_number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4g}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"
    return str(value)


def _fmt_energy(value: Any) -> str:
    """Energy in pJ, printed with a unit that keeps 4 significant digits readable."""
    if value is None or not math.isfinite(value):
        return "n/a"
    for scale, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} pJ"


def _fmt_text(value: Any) -> str:
    return "" if value is None else str(value)


def _fmt_percent(value: Any) -> str:
    return format_reduction(value)


@dataclass(frozen=True)
class Column:
    """A displayed column: row key, header and how its values print."""

    key: str
    header: str
    fmt: Formatter = _fmt_number


@dataclass(frozen=True)
class Report:
    """A built report: JSON-ready data, flat rows and how to display them.

    Attributes
    ----------
    kind
        ``"sparsity"``, ``"energy"`` or ``"tradeoff"``.
    data
        JSON-ready dict (:meth:`to_dict`).
    columns
        Keys of every row, in order (CSV header).
    row_data
        Flat rows (raw numbers; None where not available), the last one the total when
        the report has one.
    display
        Columns shown by the ``table`` and ``markdown`` formats (formatted values).
    header
        Key/value lines printed above the ``table`` format.
    notes
        Lines printed below the ``table`` and ``markdown`` formats.
    extra
        Further (title, display columns, rows) tables printed after the main one.
    """

    kind: str
    title: str
    data: dict[str, Any]
    columns: tuple[str, ...]
    row_data: tuple[dict[str, Any], ...]
    display: tuple[Column, ...]
    header: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[Column, ...], tuple[dict[str, Any], ...]], ...] = field(
        default_factory=tuple
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (a copy)."""
        return json.loads(json.dumps(self.data))

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows, every one with the keys of :attr:`columns`."""
        return [dict(row) for row in self.row_data]

    def render(self, fmt: str = "table") -> str:
        """The report as text in one of :data:`FORMATS`.

        ``json``: :meth:`to_dict`, indented; ``csv``: :attr:`columns` and the raw
        :meth:`rows` (empty cell for None); ``markdown``: a pipe table of the display
        columns, with the notes below; ``table``: the header lines, an aligned table and
        the notes.
        """
        check_format(fmt)
        if fmt == "json":
            return json.dumps(self.data, indent=2) + "\n"
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator="\n")
            writer.writeheader()
            for row in self.row_data:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            return buffer.getvalue()
        tables = [("", self.display, self.row_data), *self.extra]
        if fmt == "markdown":
            parts = [f"## {self.title}", ""]
            parts += [f"- {name}: {value}" for name, value in self.header]
            for title, columns, rows in tables:
                parts += ["", *([f"### {title}", ""] if title else [])]
                parts += _markdown_table(columns, rows)
            if self.notes:
                parts += ["", *(f"{note}" for note in self.notes)]
            return "\n".join(parts) + "\n"
        parts = [self.title]
        if self.header:
            width = max(len(name) for name, _ in self.header)
            parts += [f"  {name:<{width}}  {value}" for name, value in self.header]
        for title, columns, rows in tables:
            parts += ["", *([title] if title else [])]
            parts += _text_table(columns, rows)
        if self.notes:
            parts.append("")
            for note in self.notes:
                parts += textwrap.wrap(note, 96, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(parts) + "\n"


def check_format(fmt: str) -> str:
    """Validate an output format name (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise SpikecodeError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _cells(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[column.fmt(row.get(column.key)) for column in columns] for row in rows]


def _text_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = _cells(columns, rows)
    widths = [
        max(len(column.header), *(len(line[i]) for line in cells))
        for i, column in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        # First column (names) left-aligned, numbers right-aligned.
        out = [values[0].ljust(widths[0])]
        out += [value.rjust(width) for value, width in zip(values[1:], widths[1:], strict=True)]
        return "  " + "  ".join(out).rstrip()

    return [
        line([c.header for c in columns]),
        line(["-" * w for w in widths]),
        *(line(values) for values in cells),
    ]


def _markdown_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(c.header) for c in columns) + " |"]
    lines.append("|" + "|".join([":---", *("---:" for _ in columns[1:])]) + "|")
    lines += ["| " + " | ".join(map(escape, values)) + " |" for values in _cells(columns, rows)]
    return lines


def _source_label(source: Source) -> str:
    info = source.describe()
    if info["kind"] == "activations":
        shape = "×".join(map(str, info["shape"]))
        where = info["path"] or "array"
        key = f" [{info['key']}]" if info.get("key") else ""
        return f"activations {where}{key}, {shape} ({info['layers']} layer(s))"
    return f"stats file {info['path'] or '(in memory)'} (version {info['version']})"


def _weighted(values: Sequence[tuple[float | None, int]]) -> float | None:
    # Element-weighted mean; unknown as soon as one layer's value is unknown.
    if not values or any(v is None for v, _ in values):
        return None
    return sum(v * w for v, w in values) / sum(w for _, w in values)  # type: ignore[operator]


def _stats_dict(stats: SpikeStats) -> dict[str, Any]:
    d = stats.to_dict()
    del d["scheme"], d["window"]
    return d


def _total_stats(results: Sequence[LayerResult]) -> SpikeStats:
    total = results[0].stats
    for result in results[1:]:
        total = total.merge(result.stats)
    return total


_SPARSITY_COLUMNS = (
    "layer", "family", "in_features", "out_features", "tokens", "T", "elements", "spikes",
    "spikes_per_element", "firing_rate", "sparsity", "silent_fraction", "within_7_fraction",
    "window_sparsity", "max_abs_count", "vth_mean", "rel_error", "cosine",
)  # fmt: skip


def sparsity_report(source: Source, k: float | None = None, scheme: str | None = None) -> Report:
    """Per-layer and total SPEC §5 statistics at one k and scheme.

    Parameters
    ----------
    source
        From :func:`load_source`.
    k, scheme
        Defaults: k = 3 (for a stats file: its k closest to 3) and bitwise-bidirectional
        (for a stats file lacking it: its first scheme).

    Returns
    -------
    Report
        ``to_dict()`` keys: ``report`` (``"sparsity"``), ``source``, ``k``, ``scheme``,
        ``window``, ``window_definition``, ``error_measure``,
        ``error_measure_definition``, ``layers`` (one dict per layer) and ``total``. A
        layer dict: ``name``, ``family``, ``in_features``, ``out_features``, ``tokens``,
        ``T``, the integer totals ``elements``, ``spikes``, ``silent``, ``within_7``,
        ``window_spikes``, ``window_steps``, the rates ``spikes_per_element``,
        ``firing_rate``, ``sparsity``, ``silent_fraction``, ``within_7_fraction``,
        ``window_sparsity``, and ``max_abs_count``, ``vth_mean``, ``rel_error``,
        ``cosine``. ``total`` has the same keys (``name`` is ``"total"``; ``family``,
        ``in_features``, ``out_features``, ``tokens`` and ``vth_mean`` are None, ``T`` is
        the largest T, ``layers`` the layer count; ``firing_rate`` is the element-weighted
        mean of the layers' and ``sparsity`` one minus it).
    """
    k = source.resolve_k(k)
    scheme = source.resolve_scheme(scheme)
    results = source.layer_results(k, scheme)
    layers = []
    for r in results:
        layers.append(
            {
                "name": r.name,
                "family": r.family,
                "in_features": r.in_features,
                "out_features": r.out_features,
                "tokens": r.tokens,
                **_stats_dict(r.stats),
                "max_abs_count": r.max_abs_count,
                "vth_mean": r.vth_mean,
                "rel_error": r.rel_error,
                "cosine": r.cosine,
            }
        )
    total_stats = _total_stats(results)
    weights = [r.stats.elements for r in results]
    # Each layer codes with its own T: the network's firing rate weighs the layers' rates.
    rate = _weighted([(r.stats.firing_rate, w) for r, w in zip(results, weights, strict=True)])
    abs_counts = [r.max_abs_count for r in results]
    total = {
        "name": "total",
        "layers": len(results),
        "family": None,
        "in_features": None,
        "out_features": None,
        "tokens": None,
        **_stats_dict(total_stats),
        "firing_rate": rate,
        "sparsity": 1.0 - rate,  # type: ignore[operator]
        "max_abs_count": None if None in abs_counts else max(abs_counts),  # type: ignore[type-var]
        "vth_mean": None,
        "rel_error": _weighted([(r.rel_error, w) for r, w in zip(results, weights, strict=True)]),
        "cosine": _weighted([(r.cosine, w) for r, w in zip(results, weights, strict=True)]),
    }
    data = {
        "report": "sparsity",
        "source": source.describe(),
        "k": k,
        "scheme": scheme,
        "window": source.window,
        "window_definition": WINDOW_DEFINITION.replace("w)*w", f"{source.window})*{source.window}"),
        "error_measure": source.error_measure,
        "error_measure_definition": ERROR_MEASURES[source.error_measure],
        "layers": layers,
        "total": total,
    }
    rows = tuple(
        {"layer": d["name"], **{c: d[c] for c in _SPARSITY_COLUMNS[1:]}} for d in [*layers, total]
    )
    w = source.window
    error = "output" if source.error_measure == "output" else "recon."
    display = (
        Column("layer", "layer", _fmt_text),
        Column("T", "T"),
        Column("spikes_per_element", "spikes/elem"),
        Column("sparsity", "sparsity"),
        Column("window_sparsity", f"win-{w} sparsity*"),
        Column("silent_fraction", "silent"),
        Column("within_7_fraction", "|c|<=7"),
        Column("max_abs_count", "max|c|"),
        Column("rel_error", f"{error} rel. error"),
        Column("cosine", f"{error} cosine"),
    )
    return Report(
        kind="sparsity",
        title="spikecode report sparsity",
        data=data,
        columns=_SPARSITY_COLUMNS,
        row_data=rows,
        display=display,
        header=(
            ("source", _source_label(source)),
            ("k", k_key(k)),
            ("scheme", scheme),
        ),
        notes=(
            f"* window-{w} sparsity: {data['window_definition']}",
            f"Errors: {ERROR_MEASURES[source.error_measure]}.",
            "Totals: spike totals summed; firing rate and errors are element-weighted means "
            "of the layers' (each layer codes with its own T).",
        ),
    )


_MAC_MODES = ("spike", "fp32", "fp16", "int8")


def _eq24_rows(mac: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    rows = [{"mac": "spike", "energy_pj": mac["spike_mac_pj"], "reduction": None, "ratio": None}]
    rows += [
        {
            "mac": mode,
            "energy_pj": mac[f"{mode}_mac_pj"],
            "reduction": mac[f"reduction_vs_{mode}"],
            "ratio": mac[f"ratio_vs_{mode}"],
        }
        for mode in _MAC_MODES[1:]
    ]
    return tuple(rows)


_EQ24_DISPLAY = (
    Column("mac", "MAC", lambda v: {"spike": "spike-driven"}.get(v, str(v).upper())),
    Column("energy_pj", "energy", _fmt_energy),
    Column("reduction", "spike saves", _fmt_percent),
    Column("ratio", "spike cheaper by", format_ratio),
)


def _eq24_title(avg: float) -> str:
    return f"equation 24: one MAC-equivalent at {_fmt_number(avg)} spikes per element"


def equation24_report(avg_spikes_per_element: float, table: Any = None) -> Report:
    """The report's equation 24 as a what-if, without data (SPEC §6).

    ``spike_mac_pj = avg_spikes_per_element × E(INT8 add)`` against FP32, FP16 and INT8
    MACs. With 1.13 spikes and the default table: 0.0339 pJ, 97.7 % below FP16, 85.3 %
    below INT8, 44.2× and 6.78× cheaper.

    Parameters
    ----------
    avg_spikes_per_element
        Average spikes per element (>= 0).
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"energy"``), ``source`` (``{"kind": "what-if"}``),
        ``k`` and ``scheme`` (None), the :func:`~spikecode.energy.mac_energy` keys at
        the top level, ``table``, ``settings``, ``assumptions``, ``layers`` (empty) and
        ``total`` (None) — the layout of :func:`energy_report`. Rows: one per MAC type
        (``mac``, ``energy_pj``, ``reduction``, ``ratio``).
    """
    energy_table = load_table(table)
    mac = mac_energy(avg_spikes_per_element, energy_table)
    from spikecode.energy import ASSUMPTIONS

    data = {
        "report": "energy",
        "source": {"kind": "what-if"},
        "k": None,
        "scheme": None,
        **mac,
        "table": _table_dict(energy_table),
        "settings": {"memory": None, "weight_bits": None, "block_sizes": []},
        "assumptions": list(ASSUMPTIONS[:3]),
        "layers": [],
        "total": None,
    }
    return Report(
        kind="energy",
        title="spikecode report energy (what-if, report equation 24)",
        data=data,
        columns=("mac", "energy_pj", "reduction", "ratio"),
        row_data=_eq24_rows(mac),
        display=_EQ24_DISPLAY,
        header=(
            ("average spikes per element", _fmt_number(mac["avg_spikes_per_element"])),
            ("INT8 add", _fmt_energy(mac["int8_add_pj"])),
            ("energy table", energy_table.name),
        ),
        notes=(
            "spike-driven MAC = spikes per element x E(INT8 add); a dense MAC = mult + add "
            "(SPEC §6). Arithmetic only: no memory, control or routing energy.",
        ),
    )


def _table_dict(table: EnergyTable) -> dict[str, Any]:
    return {
        "name": table.name,
        "unit": "pJ",
        "description": table.description,
        "source": dict(table.source),
    }


def energy_report(
    source: Source,
    k: float | None = None,
    scheme: str | None = None,
    *,
    table: Any = None,
    memory: str | None = None,
    block_sizes: Sequence[int] | None = None,
    out_features: int | None = None,
    weight_bits: int = 8,
) -> Report:
    """Per-layer energy of a source, with the equation-24 summary (SPEC §6).

    Parameters
    ----------
    source
        From :func:`load_source`.
    k, scheme
        As in :func:`sparsity_report`.
    table
        Energy table or anything :func:`~spikecode.energy.load_table` accepts.
    memory
        Memory level of the weight-fetch model (``"dram"``, ``"sram_1mb"``...); None for
        arithmetic only, as the report.
    block_sizes
        Block sizes of block skipping (default: 16, 64, 256; a stats file's own).
    out_features
        Fan-out of each layer for activation files (default ``in_features``).
    weight_bits
        Bits per stored weight for the memory model.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"energy"``), ``source``, ``k``, ``scheme``; at the
        top level the :func:`~spikecode.energy.mac_energy` keys (``avg_spikes_per_element``,
        ``int8_add_pj``, ``spike_mac_pj``, ``fp32_mac_pj``, ``fp16_mac_pj``,
        ``int8_mac_pj``, ``reduction_vs_*`` as fractions, ``ratio_vs_*``) for the
        network's spikes per element ``Σ spikes / Σ elements``, exactly as the report
        computes equation 24; then :meth:`spikecode.energy.EnergyReport.to_dict`'s
        ``table``, ``settings``, ``assumptions``, ``layers`` and ``total`` (per-token
        energies weighted by each layer's fan-out, and the memory model). Rows are
        :meth:`~spikecode.energy.EnergyReport.rows`.
    """
    energy_table = load_table(table)
    if memory is not None:
        memory = energy_table.resolve_level(memory)
    k = source.resolve_k(k)
    scheme = source.resolve_scheme(scheme)
    sizes = source.default_block_sizes() if block_sizes is None else tuple(block_sizes)
    results = source.layer_results(k, scheme, block_sizes=sizes, out_features=out_features)
    report = _energy_report(
        [r.energy_spec() for r in results],
        energy_table,
        memory=memory,
        block_sizes=sizes,
        weight_bits=weight_bits,
    )
    details = report.to_dict()
    details["layers"] = [
        {"name": layer.pop("name"), "family": result.family, **layer}
        for layer, result in zip(details["layers"], results, strict=True)
    ]
    mac = mac_energy(report.spikes_per_element, energy_table)
    data = {
        "report": "energy",
        "source": source.describe(),
        "k": k,
        "scheme": scheme,
        **mac,
        **details,
    }
    pj = _fmt_energy
    display = [
        Column("layer", "layer", _fmt_text),
        Column("spikes_per_element", "spikes/elem"),
        Column("silent_fraction", "silent"),
        Column("fp16_pj_per_token", "FP16/token", pj),
        Column("int8_pj_per_token", "INT8/token", pj),
        Column("spike_pj_per_token", "spike/token", pj),
        Column("reduction_vs_fp16", "vs FP16", _fmt_percent),
        Column("reduction_vs_int8", "vs INT8", _fmt_percent),
        Column("ratio_vs_int8", "x INT8", format_ratio),
    ]
    extra: list[tuple[str, tuple[Column, ...], tuple[dict[str, Any], ...]]] = []
    rows = tuple(report.rows())
    notes = [
        "Energies are per token (arithmetic; spike = sum |spikes| x fan-out INT8 adds).",
    ]
    if memory is not None:
        fetch = [
            Column("layer", "layer", _fmt_text),
            Column("fetch_dense_pj_per_token", "dense", pj),
            Column("fetch_channel_pj_per_token", "channel skip", pj),
            *(Column(f"fetch_block{b}_pj_per_token", f"block {b}", pj) for b in sizes),
            *(Column(f"survival_block{b}", f"survival {b}") for b in sizes),
        ]
        extra.append(
            (
                f"weight fetch per token ({memory}, {energy_table.access_pj(memory):g} pJ per "
                f"{energy_table.access_bits}-bit access, {weight_bits}-bit weights)",
                tuple(fetch),
                rows,
            )
        )
        notes.append(
            "survival B = share of the channel-skip saving kept with blocks of B channels; "
            "fetch assumes no weight reuse across tokens. Arithmetic + fetch per token: "
            "the *_fetch_pj_per_token and spike_block* columns of --format csv/json."
        )
    extra.append((_eq24_title(mac["avg_spikes_per_element"]), _EQ24_DISPLAY, _eq24_rows(mac)))
    notes.append(
        "Equation 24 uses the network's spikes per element (sum spikes / sum elements); the "
        "per-layer totals weigh layers by their fan-out."
    )
    return Report(
        kind="energy",
        title="spikecode report energy",
        data=data,
        columns=tuple(report.columns()),
        row_data=rows,
        display=tuple(display),
        header=(
            ("source", _source_label(source)),
            ("k", k_key(k)),
            ("scheme", scheme),
            ("energy table", energy_table.name),
            ("memory", memory or "none (arithmetic only, as the report)"),
        ),
        notes=tuple(notes),
        extra=tuple(extra),
    )


_TRADEOFF_COLUMNS = (
    "k", "T", "spikes_per_element", "sparsity", "window_sparsity", "silent_fraction",
    "within_7_fraction", "rel_error", "cosine",
)  # fmt: skip


def tradeoff_report(
    source: Source, ks: Sequence[float] | None = None, scheme: str | None = None
) -> Report:
    """Network totals against k: the trade-off of the report's table 11 (SPEC §5).

    Parameters
    ----------
    source
        From :func:`load_source`.
    ks
        The k values (default 2, 2.5, 3, 3.5, 4; for a stats file, all of its k).
    scheme
        As in :func:`sparsity_report`.

    Returns
    -------
    Report
        ``to_dict()``: ``report`` (``"tradeoff"``), ``source``, ``scheme``, ``window``,
        ``window_definition``, ``error_measure``, ``error_measure_definition`` and
        ``points``: one dict per k with ``k`` and the totals of
        :func:`sparsity_report` (``T``, ``spikes_per_element``, ``sparsity``,
        ``window_sparsity``, ``silent_fraction``, ``within_7_fraction``, ``rel_error``,
        ``cosine``).
    """
    scheme = source.resolve_scheme(scheme)
    points = []
    for k in source.resolve_ks(ks):
        total = sparsity_report(source, k, scheme).data["total"]
        points.append({"k": k, **{c: total[c] for c in _TRADEOFF_COLUMNS[1:]}})
    w = source.window
    data = {
        "report": "tradeoff",
        "source": source.describe(),
        "scheme": scheme,
        "window": w,
        "window_definition": WINDOW_DEFINITION.replace("w)*w", f"{w})*{w}"),
        "error_measure": source.error_measure,
        "error_measure_definition": ERROR_MEASURES[source.error_measure],
        "points": points,
    }
    display = (
        Column("k", "k", k_key),
        Column("T", "T"),
        Column("spikes_per_element", "spikes/elem"),
        Column("sparsity", "sparsity"),
        Column("window_sparsity", f"win-{w} sparsity*"),
        Column("within_7_fraction", "|c|<=7"),
        Column("rel_error", "rel. error"),
        Column("cosine", "cosine"),
    )
    return Report(
        kind="tradeoff",
        title="spikecode report tradeoff",
        data=data,
        columns=_TRADEOFF_COLUMNS,
        row_data=tuple(points),
        display=display,
        header=(("source", _source_label(source)), ("scheme", scheme)),
        notes=(
            f"* window-{w} sparsity: {data['window_definition']}",
            f"Errors: {ERROR_MEASURES[source.error_measure]}.",
        ),
    )


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
        ``"family"`` (q_proj, k_proj, ... summed over the network; for activation files
        a family is a layer) or ``"layer"``.

    Returns
    -------
    dict
        Group name → :class:`spikecode.statsfile.CountHistogram`, in order of first
        appearance.
    """
    if by not in ("family", "layer"):
        raise SpikecodeError(f"group histograms by 'family' or 'layer', not {by!r}")
    out: dict[str, CountHistogram] = {}
    # Counts do not depend on the code: any scheme the source has will do.
    for r in source.layer_results(k, None):
        if r.histogram is None:  # pragma: no cover - both sources always carry one
            continue
        group = r.family if by == "family" else r.name
        out[group] = r.histogram if group not in out else merge_histograms(out[group], r.histogram)
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
    """

    k: float
    counts: np.ndarray
    vth: np.ndarray
    tokens: tuple[int, ...]
    channels: tuple[int, ...]
    trains: dict[str, np.ndarray]
    zero_points: dict[str, int]


def _indices(values: Sequence[int], size: int, what: str) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise SpikecodeError(f"{what} must be a non-empty sequence of indices")
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
    return RasterData(_check_k(k), selected, np.asarray(vth), tok, chan, trains, zero_points)
