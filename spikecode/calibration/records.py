"""The records of a calibration stats file: frozen dataclasses, keys and layer totals.

A stats file (``docs/statsfile.rst``, format ``"spikecode.stats"``, version 2) is one
:class:`CalibrationStats`: the checkpoint, the calibration data, the k values and codes,
and per layer and per k the Vth distribution, the count histogram, the channel activity
(SPEC §6 memory model), the W8ASpike output error and the SPEC §5 spike totals of every
code. Reading and writing the file is :mod:`spikecode.calibration.statsfile`; merging
files of disjoint sample sets is :mod:`spikecode.calibration.merge`.

Version 2 adds what an exact merge needs: the counts beyond ``±COUNT_LIMIT`` value by
value (:attr:`CountHistogram.outliers`) and the sums behind the output error
(:attr:`KStats.output_sq_error`, :attr:`LayerStats.output_sq_norm`). Version 1 files
still load; they lack these fields (None) and cannot be merged.

Totals over layers (``totals`` in the file, :func:`summarize`) are weighted by element
count (``tokens × in_features`` of each layer): spikes per element, silent and ``|c| ≤ 7``
fractions are ratios of summed integer totals; the windowed sparsity is
``1 − Σ window_spikes / Σ window_steps``; the firing rate is ``Σ spikes / Σ (elements ·
T)`` with each layer over its own T (:meth:`spikecode.SpikeStats.merge`, the one
definition, see ``spikecode.stats``) and the sparsity is one minus it; the output
error is the element-weighted mean of the layers' errors.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import numpy as np

from spikecode.energy import ChannelActivity
from spikecode.errors import SpikecodeError
from spikecode.stats import SpikeStats

__all__ = [
    "CHECKPOINT_KINDS",
    "COUNT_LIMIT",
    "FORMAT",
    "READABLE_VERSIONS",
    "VERSION",
    "VTH_EDGES",
    "CalibrationStats",
    "CheckpointInfo",
    "CountHistogram",
    "DataInfo",
    "KStats",
    "LayerStats",
    "RecipeInfo",
    "VthSummary",
    "k_key",
    "layer_family",
    "summarize",
    "window_key",
]

#: ``format`` of a stats file (docs/statsfile.rst).
FORMAT = "spikecode.stats"
#: The version written; :func:`~spikecode.calibration.load_stats` reads 1 and 2.
VERSION = 2
#: Versions :func:`~spikecode.calibration.load_stats` reads.
READABLE_VERSIONS = (1, 2)
#: A run id: 32 lowercase hex digits (128 random bits), one per calibration run.
RUN_ID_PATTERN = r"[0-9a-f]{32}"
#: Count histograms in the file cover ``c = -COUNT_LIMIT … COUNT_LIMIT``.
COUNT_LIMIT = 64
#: Fixed log-spaced Vth histogram edges: 32 bins over the whole clamp range [1e-5, 1e4]
#: of SPEC §2, so every threshold falls in a bin and files compare bin by bin.
VTH_EDGES: tuple[float, ...] = tuple(float(v) for v in np.logspace(-5.0, 4.0, 33))
#: ``checkpoint.kind`` values (``load_checkpoint`` kinds, plus activation files).
CHECKPOINT_KINDS = ("gla_swa", "spikingbrain_moe", "hf", "module", "activations")

SPIKE_FIELDS = ("T", "elements", "spikes", "silent", "within_7", "window_spikes", "window_steps")
TOTAL_FIELDS = (
    "spikes_per_element",
    "firing_rate",
    "sparsity",
    "silent_fraction",
    "within_7_fraction",
    "output_rel_error",
)


def k_key(k: float) -> str:
    """Spell ``k`` as the stats file does: ``str(float)`` without a trailing ``.0``.

    Examples
    --------
    >>> k_key(3), k_key(2.5), k_key(0.125)
    ('3', '2.5', '0.125')
    """
    text = repr(float(k))
    return text[:-2] if text.endswith(".0") else text


#: Canonical families, named as in Llama/Qwen/GLA-SWA checkpoints (SPEC §7), by role.
_OWN_NAMES = frozenset(
    ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj")
)
#: Name endings (module path components) of other layouts, mapped to their role.
_ROLE_SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    # BERT, RoBERTa, MiniLM (HF): the attention output and the FFN down projection are
    # both ``...output.dense``, so the attention one must be matched first.
    (("attention", "self", "query"), "q_proj"),
    (("attention", "self", "key"), "k_proj"),
    (("attention", "self", "value"), "v_proj"),
    (("attention", "output", "dense"), "o_proj"),
    (("crossattention", "self", "query"), "q_proj"),
    (("crossattention", "self", "key"), "k_proj"),
    (("crossattention", "self", "value"), "v_proj"),
    (("crossattention", "output", "dense"), "o_proj"),
    (("intermediate", "dense"), "up_proj"),
    (("output", "dense"), "down_proj"),
    (("pooler", "dense"), "pooler"),
    # DistilBERT
    (("q_lin",), "q_proj"),
    (("k_lin",), "k_proj"),
    (("v_lin",), "v_proj"),
    (("out_lin",), "o_proj"),
    (("ffn", "lin1"), "up_proj"),
    (("ffn", "lin2"), "down_proj"),
    # GPT-NeoX, Falcon: fused q/k/v, attention dense, h -> 4h -> h
    (("query_key_value",), "qkv_proj"),
    (("attention", "dense"), "o_proj"),
    (("self_attention", "dense"), "o_proj"),
    (("dense_h_to_4h",), "up_proj"),
    (("dense_4h_to_h",), "down_proj"),
    # OPT, BART, CLIP: out_proj, fc1, fc2
    (("out_proj",), "o_proj"),
    (("fc1",), "up_proj"),
    (("fc2",), "down_proj"),
    # Mixtral experts: w1 gate, w3 up, w2 down
    (("experts", "*", "w1"), "gate_proj"),
    (("experts", "*", "w3"), "up_proj"),
    (("experts", "*", "w2"), "down_proj"),
    # T5
    (("SelfAttention", "q"), "q_proj"),
    (("SelfAttention", "k"), "k_proj"),
    (("SelfAttention", "v"), "v_proj"),
    (("SelfAttention", "o"), "o_proj"),
    (("EncDecAttention", "q"), "q_proj"),
    (("EncDecAttention", "k"), "k_proj"),
    (("EncDecAttention", "v"), "v_proj"),
    (("EncDecAttention", "o"), "o_proj"),
    (("DenseReluDense", "wi"), "up_proj"),
    (("DenseReluDense", "wi_0"), "gate_proj"),
    (("DenseReluDense", "wi_1"), "up_proj"),
    (("DenseReluDense", "wo"), "down_proj"),
)


def _ends_with(parts: Sequence[str], suffix: tuple[str, ...]) -> bool:
    if len(parts) < len(suffix):
        return False
    tail = parts[len(parts) - len(suffix) :]
    return all(want in ("*", got) for want, got in zip(suffix, tail, strict=True))


def layer_family(name: str) -> str:
    """The family of a layer: its role in the block, named the Llama/GLA-SWA way.

    Attention projections are ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` (``qkv_proj``
    when fused), the MLP ``gate_proj``, ``up_proj``, ``down_proj``, whatever the layout
    calls them: Llama, Qwen and GLA-SWA names are kept; BERT-style names
    (``attention.self.query``, ``attention.output.dense``, ``intermediate.dense``,
    ``output.dense``, ``pooler.dense`` -> ``pooler``), DistilBERT, GPT-NeoX/Falcon,
    OPT/BART, Mixtral expert and T5 names map to their role. Anything else is its last
    name component (``g_proj``, ``lm_head``); a purely numeric last component (an index
    into an ``nn.Sequential``, such as the low-rank gate ``gk_proj.0``) keeps its parent.

    Examples
    --------
    >>> layer_family("model.layers.3.attn.q_proj"), layer_family("model.layers.3.attn.gk_proj.1")
    ('q_proj', 'gk_proj.1')
    >>> layer_family("encoder.layer.0.attention.output.dense"), layer_family("pooler.dense")
    ('o_proj', 'pooler')
    """
    parts = name.split(".")
    if parts[-1] in _OWN_NAMES:
        return parts[-1]
    for suffix, family in _ROLE_SUFFIXES:
        if _ends_with(parts, suffix):
            return family
    if len(parts) > 1 and parts[-1].isdigit():
        return ".".join(parts[-2:])
    return parts[-1]


def window_key(window: int) -> str:
    """Name of the windowed-sparsity total: ``"window3_sparsity"`` for the report's w = 3."""
    return f"window{window}_sparsity"


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class VthSummary:
    """Distribution of the per-token threshold Vth of one layer at one k (SPEC §2).

    Attributes
    ----------
    mean, std, min, max
        Over all tokens (population standard deviation).
    edges
        Histogram edges (33 log-spaced values, :data:`VTH_EDGES`).
    counts
        Tokens per bin (``len(edges) - 1`` integers; a value on an inner edge counts in
        the bin to its right, the last bin includes its right edge).
    """

    mean: float
    std: float
    min: float
    max: float
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "histogram": {"edges": list(self.edges), "counts": list(self.counts)},
        }


@dataclass(frozen=True)
class CountHistogram:
    """Elements per count value ``c = offset … offset + len(counts) - 1``, plus outliers.

    Attributes
    ----------
    offset
        Count of the first bin (``-COUNT_LIMIT`` in stats files).
    counts
        Elements per count value.
    below, above
        Elements whose count lies below / above the covered range.
    outliers
        Those elements value by value: ``(count, elements)`` pairs in ascending count
        order, summing to ``below + above`` (version 2); None when unknown (version 1).
    """

    offset: int
    counts: tuple[int, ...]
    below: int
    above: int
    outliers: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def from_values(
        cls, values: np.ndarray, times: np.ndarray, limit: int = COUNT_LIMIT
    ) -> CountHistogram:
        """The stats-file histogram (``-limit … limit`` plus outliers) of a full one.

        Parameters
        ----------
        values, times
            Distinct counts in ascending order and their elements (int64, 1-D).
        limit
            Half-width of the covered range.
        """
        values = np.asarray(values, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        inside = (values >= -limit) & (values <= limit)
        bins = np.zeros(2 * limit + 1, dtype=np.int64)
        bins[values[inside] + limit] = times[inside]
        return cls(
            offset=-limit,
            counts=tuple(bins.tolist()),
            below=int(times[values < -limit].sum()),
            above=int(times[values > limit].sum()),
            outliers=tuple(
                (int(v), int(t)) for v, t in zip(values[~inside], times[~inside], strict=True)
            ),
        )

    @classmethod
    def sum(cls, histograms: Sequence[CountHistogram]) -> CountHistogram:
        """The histogram of the union of the elements of several histograms over one range.

        Exact, outliers included, when every part knows its outliers (or has none);
        otherwise the bins and the ``below``/``above`` totals are summed and the outliers
        stay unknown.
        """
        first = histograms[0]
        for other in histograms[1:]:
            if other.offset != first.offset or len(other.counts) != len(first.counts):
                raise SpikecodeError(
                    "cannot merge count histograms over different bins",
                    bins=(first.offset, len(first.counts), other.offset, len(other.counts)),
                )
        if all(h.outliers is not None or not (h.below or h.above) for h in histograms):
            values, times = zip(*(h.values() for h in histograms), strict=True)
            union, inverse = np.unique(np.concatenate(values), return_inverse=True)
            summed = np.zeros(union.size, dtype=np.int64)
            np.add.at(summed, inverse, np.concatenate(times))
            return cls.from_values(union, summed, -first.offset)
        return cls(
            offset=first.offset,
            counts=tuple(int(sum(c)) for c in zip(*(h.counts for h in histograms), strict=True)),
            below=sum(h.below for h in histograms),
            above=sum(h.above for h in histograms),
        )

    @property
    def total(self) -> int:
        """All elements, inside the range or not."""
        return sum(self.counts) + self.below + self.above

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        out: dict[str, Any] = {
            "offset": self.offset,
            "counts": list(self.counts),
            "below": self.below,
            "above": self.above,
        }
        if self.outliers is not None:
            out["outliers"] = [[value, times] for value, times in self.outliers]
        return out

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """The full histogram: distinct counts (ascending) and their elements (int64).

        Needs :attr:`outliers` when some count lies outside the covered range.
        """
        if self.outliers is None and (self.below or self.above):
            raise SpikecodeError(
                "the count histogram lacks the counts beyond its range (a version 1 stats file)"
            )
        bins = np.asarray(self.counts, dtype=np.int64)
        inside = np.flatnonzero(bins)
        pairs = np.asarray(self.outliers or (), dtype=np.int64).reshape(-1, 2)
        values = np.concatenate([inside + self.offset, pairs[:, 0]])
        times = np.concatenate([bins[inside], pairs[:, 1]])
        order = np.argsort(values, kind="stable")
        return values[order], times[order]


@dataclass(frozen=True)
class KStats:
    """Statistics of one layer's input at one k.

    Attributes
    ----------
    vth
        The threshold distribution.
    count_histogram
        Histogram of the counts ``round(x / Vth)``.
    max_abs_count
        Largest ``|c|`` seen.
    output_rel_error, output_cosine
        W8ASpike fake-quant layer (INT8 weights, spike input) against the float layer on
        the same rows: ``||y_spike - y_float|| / ||y_float||`` and the mean per-token
        cosine similarity, over the rows the error was measured on
        (:attr:`LayerStats.error_tokens`).
    activity
        Which weight columns and blocks the counts need (SPEC §6 memory model).
    schemes
        Code name → SPEC §5 totals (``T`` = the minimal T of all counts seen).
    output_sq_error
        ``Σ ||y_spike - y_float||²`` over those rows (version 2; None when unknown), so
        that ``output_rel_error = sqrt(output_sq_error / LayerStats.output_sq_norm)``.
    """

    vth: VthSummary
    count_histogram: CountHistogram
    max_abs_count: int
    output_rel_error: float
    output_cosine: float
    activity: ChannelActivity
    schemes: Mapping[str, SpikeStats]
    output_sq_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        out = {
            "vth": self.vth.to_dict(),
            "count_histogram": self.count_histogram.to_dict(),
            "max_abs_count": self.max_abs_count,
            "output_rel_error": self.output_rel_error,
            "output_cosine": self.output_cosine,
            "activity": {
                "tokens": self.activity.tokens,
                "in_features": self.activity.in_features,
                "active_channels": plain_number(self.activity.active_channels),
                "block_fetched_channels": {
                    str(b): plain_number(v) for b, v in self.activity.block_fetched_channels.items()
                },
            },
            "schemes": {name: stats.to_dict() for name, stats in self.schemes.items()},
        }
        if self.output_sq_error is not None:
            out["output_sq_error"] = self.output_sq_error
        return out


@dataclass(frozen=True)
class LayerStats:
    """Everything calibration measured on one linear projection's input.

    Attributes
    ----------
    name, family
        Full module name and :func:`layer_family`.
    in_features, out_features
        Shape of the projection.
    tokens
        Non-padding rows this layer saw (every statistic counts ``tokens × in_features``
        elements).
    by_k
        :func:`k_key` → :class:`KStats`.
    error_tokens
        Rows on which the output error was measured (a subset of ``tokens``; see
        :attr:`CalibrationStats.error_rows`).
    output_sq_norm
        ``Σ ||y_float||²`` over those rows (version 2; None when unknown).
    """

    name: str
    family: str
    in_features: int
    out_features: int
    tokens: int
    by_k: Mapping[str, KStats]
    error_tokens: int
    output_sq_norm: float | None = None

    @property
    def elements(self) -> int:
        """``tokens × in_features``."""
        return self.tokens * self.in_features

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        out: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "tokens": self.tokens,
            "error_tokens": self.error_tokens,
        }
        if self.output_sq_norm is not None:
            out["output_sq_norm"] = self.output_sq_norm
        out["by_k"] = {key: value.to_dict() for key, value in self.by_k.items()}
        return out

    @property
    def mergeable(self) -> bool:
        """Whether the layer carries what an exact merge needs (version 2 fields)."""
        return self.output_sq_norm is not None and all(
            entry.output_sq_error is not None and entry.count_histogram.outliers is not None
            for entry in self.by_k.values()
        )


@dataclass(frozen=True)
class CheckpointInfo:
    """Which model was calibrated: folder, kind, ``model_type`` and parameter dtype."""

    path: str | None
    kind: str
    model_type: str | None
    dtype: str | None

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        return {
            "path": self.path,
            "kind": self.kind,
            "model_type": self.model_type,
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class DataInfo:
    """The calibration data: source, samples, non-padding tokens, length limit.

    ``truncated`` counts the samples cut to ``max_length`` (only on request).
    """

    source: str
    samples: int
    tokens: int
    max_length: int | None
    truncated: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        return {
            "source": self.source,
            "samples": self.samples,
            "tokens": self.tokens,
            "max_length": self.max_length,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class RecipeInfo:
    """What was measured: the recipe's spike-driven inputs, on prompts or on decoding.

    The stats file's ``recipe`` field (``{"name": …, "generate": …}``); files written
    before it existed read as ``all-linear`` on prompts.

    Attributes
    ----------
    name
        ``"all-linear"`` or ``"release"`` (:mod:`spikecode.nn.recipes`): the layers are
        that recipe's spike-driven inputs.
    generate
        None: the prompts' tokens were counted (one forward pass per batch). N: N tokens
        were generated per sample and only the decode steps' inputs were counted, one
        token per step, so ``tokens`` of a projection is ``samples × N`` and per-token
        figures are per generated token.
    """

    name: str = "all-linear"
    generate: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        return {"name": self.name, "generate": self.generate}


@dataclass(frozen=True)
class RoutingStats:
    """How one MoE layer routed the calibration's real tokens (SPEC §8).

    The stats file's ``routing`` entries; the routed experts' projections are layers of
    their own (``<layer>.experts.<e>.<projection>``), absent for an expert no token
    reached.

    Attributes
    ----------
    layer
        The MoE layer (the module holding the experts, ``model.layers.3.mlp``).
    num_experts, top_k
        Routed experts, and experts per token.
    tokens
        Real tokens routed.
    expert_tokens
        Per expert, the tokens it received (they sum to ``tokens · top_k``).
    """

    layer: str
    num_experts: int
    top_k: int
    tokens: int
    expert_tokens: tuple[int, ...]

    @property
    def load(self) -> tuple[float, ...]:
        """Each expert's share of the routed (token, expert) pairs."""
        total = sum(self.expert_tokens)
        return tuple(n / total if total else 0.0 for n in self.expert_tokens)

    @property
    def imbalance(self) -> float:
        """``max / mean`` of the experts' tokens: 1 is perfectly balanced."""
        mean = sum(self.expert_tokens) / self.num_experts
        return max(self.expert_tokens) / mean if mean else 0.0

    @property
    def active_fraction(self) -> float:
        """Routed experts a token activates, ``top_k / num_experts`` (the macro density)."""
        return self.top_k / self.num_experts

    def expert_of(self, name: str) -> int | None:
        """The routed expert whose projection the layer ``name`` is, or None.

        A routed expert's projections are ``<layer>.experts.<e>.<projection>`` with
        ``0 <= e < num_experts`` (the names calibration gives them); anything else, the
        router and the shared experts included, belongs to no routed expert.

        Parameters
        ----------
        name
            A layer name of the stats file.

        Returns
        -------
        int or None
            ``e``, or None when ``name`` is not a projection of this layer's routed experts.
        """
        prefix = f"{self.layer}.experts."
        if not name.startswith(prefix):
            return None
        index, dot, projection = name[len(prefix) :].partition(".")
        # Only the plain form a ModuleList index takes: not "03", "+3" or other scripts' digits.
        if not (dot and projection and index.isdecimal()) or index != str(int(index)):
            return None
        expert = int(index)
        return expert if expert < self.num_experts else None

    def to_dict(self) -> dict[str, Any]:
        """The stats-file layout."""
        return {
            "layer": self.layer,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "tokens": self.tokens,
            "expert_tokens": list(self.expert_tokens),
        }


@dataclass(frozen=True)
class CalibrationStats:
    """A whole stats file (``docs/statsfile.rst``, version 2).

    Build one with :meth:`create` (which computes the totals) or :func:`load_stats`.

    Attributes
    ----------
    checkpoint, data
        Provenance.
    k
        The k values, in calibration order.
    schemes
        The codes whose SPEC §5 totals every layer carries.
    window
        Window of the windowed sparsity (the report's w = 3).
    block_sizes
        Block sizes of the channel-activity model.
    layers
        Per-layer statistics, in model order.
    totals
        :func:`k_key` → code → element-weighted totals (see the module docstring).
    error_rows, error_stride
        The output error was measured per batch and layer on one row in
        ``error_stride`` of the batch's tokens (at least one), at most ``error_rows``;
        both None: on every row.
    recipe
        The recipe and whether decoding was measured (:class:`RecipeInfo`).
    routing
        Per MoE layer, how the tokens were routed (:class:`RoutingStats`); empty for a
        dense model.
    spikecode_version, created
        Who wrote the file, and when (UTC, ISO 8601).
    runs
        The identity of the calibration: the random id of the run that wrote it, or the
        ids of every run a merge combined (sorted, distinct); empty for a file written
        before run ids, whose identity is then its content. A merge refuses parts that
        share a run (the same samples would count twice).
    """

    checkpoint: CheckpointInfo
    data: DataInfo
    k: tuple[float, ...]
    schemes: tuple[str, ...]
    window: int
    block_sizes: tuple[int, ...]
    layers: tuple[LayerStats, ...]
    totals: Mapping[str, Mapping[str, Mapping[str, float]]]
    error_rows: int | None = None
    error_stride: int | None = None
    recipe: RecipeInfo = field(default_factory=RecipeInfo)
    routing: tuple[RoutingStats, ...] = ()
    spikecode_version: str = field(default_factory=lambda: _version())
    created: str = field(default_factory=lambda: _now())
    runs: tuple[str, ...] = field(default_factory=lambda: (new_run_id(),))

    @classmethod
    def create(
        cls,
        *,
        checkpoint: CheckpointInfo,
        data: DataInfo,
        k: Sequence[float],
        schemes: Sequence[str],
        window: int,
        block_sizes: Sequence[int],
        layers: Sequence[LayerStats],
        error_rows: int | None,
        error_stride: int | None = None,
        recipe: RecipeInfo | None = None,
        routing: Sequence[RoutingStats] = (),
        runs: Sequence[str] | None = None,
    ) -> CalibrationStats:
        """Assemble a stats object and compute its totals over layers.

        ``runs`` is the identity (:attr:`runs`); default a new random run id.
        """
        keys = [k_key(v) for v in k]
        totals = {
            key: {
                scheme: MappingProxyType(summarize([(layer, key) for layer in layers], scheme))
                for scheme in schemes
            }
            for key in keys
        }
        return cls(
            checkpoint=checkpoint,
            data=data,
            k=tuple(float(v) for v in k),
            schemes=tuple(schemes),
            window=int(window),
            block_sizes=tuple(int(b) for b in block_sizes),
            layers=tuple(layers),
            totals=MappingProxyType(totals),
            error_rows=error_rows,
            error_stride=error_stride,
            recipe=recipe or RecipeInfo(),
            routing=tuple(routing),
            runs=(new_run_id(),) if runs is None else tuple(sorted(set(runs))),
        )

    def layer(self, name: str) -> LayerStats:
        """The statistics of the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise SpikecodeError(f"the stats have no layer {name!r}", layers=len(self.layers))

    @property
    def mergeable(self) -> bool:
        """Whether every layer carries the version 2 fields an exact merge needs."""
        return all(layer.mergeable for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """The stats-file JSON object (version 1 when the version 2 fields are unknown)."""
        out = {
            "format": FORMAT,
            "version": VERSION if self.mergeable else 1,
            "spikecode_version": self.spikecode_version,
            "created": self.created,
            "checkpoint": self.checkpoint.to_dict(),
            "data": self.data.to_dict(),
            "k": list(self.k),
            "schemes": list(self.schemes),
            "window": self.window,
            "block_sizes": list(self.block_sizes),
            "error_rows": self.error_rows,
            "error_stride": self.error_stride,
            "recipe": self.recipe.to_dict(),
            **({"routing": [r.to_dict() for r in self.routing]} if self.routing else {}),
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": {
                key: {scheme: dict(values) for scheme, values in by_scheme.items()}
                for key, by_scheme in self.totals.items()
            },
        }
        if self.runs:
            out["runs"] = list(self.runs)
        return out


def output_error(sq_error: float, sq_norm: float) -> float:
    """``||y_spike - y_float|| / ||y_float||`` from the two sums of squares.

    All-zero float outputs: no error if the spiked ones are zero too, else 100 %.
    """
    return math.sqrt(sq_error / sq_norm) if sq_norm > 0 else float(sq_error != 0)


def new_run_id() -> str:
    """A fresh random run id (:data:`RUN_ID_PATTERN`): the identity of one calibration."""
    return secrets.token_hex(16)


def _version() -> str:
    from spikecode._version import __version__

    return __version__


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain_number(value: float) -> int | float:
    """An integral float as an int (JSON ``12`` rather than ``12.0``)."""
    return int(value) if float(value).is_integer() else float(value)


# --------------------------------------------------------------------------- totals


def summarize(pairs: Iterable[tuple[LayerStats, str]], scheme: str) -> dict[str, float]:
    """Element-weighted totals over layers, each at its own k (see the module docstring).

    Parameters
    ----------
    pairs
        ``(layer, k key)``: the layers to total and the k each one is read at (a global
        k, or a per-layer choice such as the k advisor's).
    scheme
        The code whose spike totals are used.

    Returns
    -------
    dict
        ``spikes_per_element, firing_rate, sparsity, silent_fraction, within_7_fraction,
        window<w>_sparsity, output_rel_error`` (the last is None when some layer has no
        error measurement).
    """
    pairs = list(pairs)
    if not pairs:
        raise SpikecodeError("cannot total statistics over no layers")
    total: SpikeStats | None = None
    weighted_error: float | None = 0.0
    elements = 0
    for layer, key in pairs:
        entry = layer.by_k[key]
        stats = entry.schemes[scheme]
        total = stats if total is None else total.merge(stats)
        if weighted_error is not None and entry.output_rel_error is not None:
            weighted_error += entry.output_rel_error * stats.elements
        else:
            weighted_error = None
        elements += stats.elements
    assert total is not None  # pairs is not empty
    return {
        "spikes_per_element": total.spikes_per_element,
        "firing_rate": total.firing_rate,
        "sparsity": total.sparsity,
        "silent_fraction": total.silent_fraction,
        "within_7_fraction": total.within_7_fraction,
        window_key(total.window): total.window_sparsity,
        "output_rel_error": None if weighted_error is None else weighted_error / elements,
    }
