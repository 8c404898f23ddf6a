"""The calibration stats file on disk: :func:`save_stats` and :func:`load_stats`.

The layout is ``docs/statsfile.rst`` (format ``"spikecode.stats"``, version 2; version 1
files are read too): one JSON object, the records of :mod:`spikecode.calibration.records`.
A flat CSV beside it (same stem, ``.csv``) holds one row per layer × k × code.

:func:`save_stats` writes the pair as one unit: both files go to temporary files in the
target folder and are renamed into place together (or neither is), and the JSON records
the SHA-256 of its CSV. :func:`load_stats` validates the format, the version, every
field and that hash, and raises :class:`~spikecode.errors.SpikecodeError` naming the file
and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from spikecode._constants import RECIPES
from spikecode._validate import INT32_MAX, INT32_MIN, as_path
from spikecode.calibration.records import (
    CHECKPOINT_KINDS,
    COUNT_LIMIT,
    FORMAT,
    READABLE_VERSIONS,
    RUN_ID_PATTERN,
    SPIKE_FIELDS,
    TOTAL_FIELDS,
    CalibrationStats,
    CheckpointInfo,
    CountHistogram,
    DataInfo,
    KStats,
    LayerStats,
    RecipeInfo,
    RoutingStats,
    VthSummary,
    k_key,
    plain_number,
    window_key,
)
from spikecode.encoders.schemes import SCHEMES
from spikecode.energy import ChannelActivity
from spikecode.errors import SpikecodeError
from spikecode.io import atomic_files, os_cause, read_json
from spikecode.stats import SpikeStats

__all__ = ["load_stats", "save_stats"]

# The most routed experts a MoE layer may declare (a bound before any list is read).
_MAX_EXPERTS = 1 << 16


# --------------------------------------------------------------------------- saving

#: The field of the JSON holding the SHA-256 (hex) of the CSV written with it.
CSV_HASH_FIELD = "csv_sha256"


_CSV_COLUMNS = (
    "layer",
    "family",
    "in_features",
    "out_features",
    "tokens",
    "k",
    "scheme",
    "T",
    "elements",
    "spikes",
    "spikes_per_element",
    "firing_rate",
    "sparsity",
    "silent_fraction",
    "within_7_fraction",
    "window",
    "window_sparsity",
    "max_abs_count",
    "vth_mean",
    "vth_std",
    "vth_min",
    "vth_max",
    "output_rel_error",
    "output_cosine",
    "error_tokens",
    "active_channels",
)


def _csv_rows(stats: CalibrationStats) -> tuple[list[str], list[list[Any]]]:
    blocks = [f"block_fetched_channels_{b}" for b in stats.block_sizes]
    rows = []
    for layer in stats.layers:
        for key, entry in layer.by_k.items():
            for scheme, s in entry.schemes.items():
                rows.append(
                    [
                        layer.name,
                        layer.family,
                        layer.in_features,
                        layer.out_features,
                        layer.tokens,
                        key,
                        scheme,
                        s.T,
                        s.elements,
                        s.spikes,
                        repr(s.spikes_per_element),
                        repr(s.firing_rate),
                        repr(s.sparsity),
                        repr(s.silent_fraction),
                        repr(s.within_7_fraction),
                        s.window,
                        repr(s.window_sparsity),
                        entry.max_abs_count,
                        repr(entry.vth.mean),
                        repr(entry.vth.std),
                        repr(entry.vth.min),
                        repr(entry.vth.max),
                        repr(entry.output_rel_error),
                        repr(entry.output_cosine),
                        layer.error_tokens,
                        plain_number(entry.activity.active_channels),
                        *(
                            plain_number(entry.activity.block_fetched_channels[b])
                            for b in stats.block_sizes
                        ),
                    ]
                )
    return [*_CSV_COLUMNS, *blocks], rows


def save_stats(path: str | os.PathLike[str], stats: CalibrationStats) -> tuple[Path, Path]:
    """Write a stats file and the CSV beside it, atomically and as one unit.

    Both files are renamed into place together, the JSON first: if a rename fails the
    other is undone, and Ctrl-C or SIGTERM wait until both are done, so readers see the
    old pair or the new one. The JSON records the CSV's SHA-256 (``csv_sha256``), which
    :func:`load_stats` checks.

    Parameters
    ----------
    path
        The ``.json`` file; the CSV gets the same stem and ``.csv``.
    stats
        What to write. Every layer must carry every k and code of ``stats`` and a
        measured output error.

    Returns
    -------
    (Path, Path)
        The JSON and CSV paths.

    Raises
    ------
    SpikecodeError
        A path not ending in ``.json``, a missing folder, or incomplete statistics.
        Nothing is written then (both files go to temporary files first).
    """
    target = as_path(path)
    if target.suffix.lower() != ".json":
        raise SpikecodeError("a stats file must be a .json file", file=str(target))
    keys = [k_key(v) for v in stats.k]
    for layer in stats.layers:
        for key in keys:
            entry = layer.by_k.get(key)
            if entry is None:
                raise SpikecodeError(f"layer {layer.name!r} has no statistics for k = {key}")
            missing = [s for s in stats.schemes if s not in entry.schemes]
            if missing:
                raise SpikecodeError(
                    f"layer {layer.name!r} has no statistics for code {missing[0]!r} at k = {key}"
                )
            if entry.output_rel_error is None or entry.output_cosine is None:
                raise SpikecodeError(
                    f"layer {layer.name!r} has no output error at k = {key}; a stats file needs it"
                )
    header, rows = _csv_rows(stats)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(rows)
    csv_bytes = table.getvalue().encode("utf-8")
    # The JSON names the CSV it was written with, so that a reader can tell a pair that
    # does not belong together (see load_stats).
    fields = {**stats.to_dict(), CSV_HASH_FIELD: hashlib.sha256(csv_bytes).hexdigest()}
    text = json.dumps(fields, indent=1, allow_nan=False) + "\n"
    csv_target = target.with_suffix(".csv")
    # One unit: both renamed together (the JSON first), or neither.
    with atomic_files([target, csv_target]) as (tmp_json, tmp_csv):
        tmp_csv.write_bytes(csv_bytes)
        tmp_json.write_text(text, encoding="utf-8")
    return target, csv_target


# --------------------------------------------------------------------------- loading


class _Reader:
    """Typed field access whose errors name the file and the field."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.version = 1

    def v2(self, parent: Any, key: str, where: str) -> Any:
        """A field that version 2 requires and version 1 lacks (None there)."""
        return self.get(parent, key, where) if self.version >= 2 else None

    def fail(self, message: str, where: str) -> SpikecodeError:
        return SpikecodeError(message, file=self.file, field=where or None)

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(f"stats file field {where!r} must be a JSON object", where)
        return value

    def get(self, parent: Any, key: str, where: str) -> Any:
        full = f"{where}.{key}" if where else key
        parent = self.obj(parent, where or "(top level)")
        if key not in parent:
            raise self.fail(f"stats file lacks the field {full!r}", full)
        return parent[key]

    def integer(self, value: Any, where: str, minimum: int | None = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"stats file field {where!r} must be an integer, got {value!r}", where)
        if minimum is not None and value < minimum:
            raise self.fail(f"stats file field {where!r} must be >= {minimum}, got {value}", where)
        return value

    def number(self, value: Any, where: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(
                f"stats file field {where!r} must be a finite number, got {value!r}", where
            )
        return float(value)

    def text(self, value: Any, where: str, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(f"stats file field {where!r} must be a non-empty string", where)
        return value

    def listing(self, value: Any, where: str, *, length: int | None = None) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(f"stats file field {where!r} must be a non-empty list", where)
        if length is not None and len(value) != length:
            raise self.fail(
                f"stats file field {where!r} must hold {length} values, not {len(value)}", where
            )
        return value


def load_stats(path: str | os.PathLike[str]) -> CalibrationStats:
    """Read and validate a stats file written by :func:`save_stats`.

    Parameters
    ----------
    path
        The ``.json`` stats file.

    Returns
    -------
    CalibrationStats

    Raises
    ------
    SpikecodeError
        An unreadable or non-JSON file, another format or version, or a missing or
        malformed field; the message names the file and the field
        (``layers[2].by_k.3.vth.mean``). A CSV beside the file that is not the one
        written with it (its SHA-256 differs from ``csv_sha256``: edited since, or left
        by a write cut short by a crash).
    """
    file = as_path(path)
    raw = read_json(file, "the stats file")
    stats = _parse(raw, _Reader(str(file)))
    _check_csv(file, raw.get(CSV_HASH_FIELD))
    return stats


def _check_csv(file: Path, recorded: Any) -> None:
    """Refuse a stats file whose CSV beside it is not the one written with it.

    Only files that record the CSV's hash are checked (older ones do not); a missing CSV
    is fine (the JSON alone is complete).
    """
    if recorded is None:
        return
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise SpikecodeError(
            f"stats file field {CSV_HASH_FIELD!r} must be a SHA-256 in hex",
            file=str(file),
            field=CSV_HASH_FIELD,
        )
    table = file.with_suffix(".csv")
    digest = hashlib.sha256()
    try:
        if not table.is_file():
            return
        with open(table, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise SpikecodeError(
            f"cannot read {table.name} beside the stats file: {os_cause(err)}", file=str(file)
        ) from None
    if digest.hexdigest() != recorded.lower():
        raise SpikecodeError(
            f"{table.name} beside the stats file is not the CSV written with it (changed "
            "since, or left by an interrupted write); write the stats again, or remove "
            f"{table.name}",
            file=str(file),
        )


def _parse(raw: Any, r: _Reader) -> CalibrationStats:
    if not isinstance(raw, Mapping):
        raise r.fail("not a spikecode stats file: the top level is not a JSON object", "")
    if raw.get("format") != FORMAT:
        raise r.fail(
            f"not a spikecode stats file (format is {raw.get('format')!r}, expected {FORMAT!r})",
            "format",
        )
    version = r.get(raw, "version", "")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise r.fail(
            f"stats file version {version!r} is not supported (this spikecode reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})",
            "version",
        )
    r.version = version
    ks = []
    for i, value in enumerate(r.listing(r.get(raw, "k", ""), "k")):
        number = r.number(value, f"k[{i}]")
        if number <= 0:
            raise r.fail(f"stats file field 'k[{i}]' must be > 0", f"k[{i}]")
        ks.append(number)
    keys = [k_key(v) for v in ks]
    if len(set(keys)) != len(keys):
        raise r.fail("stats file field 'k' repeats a value", "k")
    schemes = []
    for i, name in enumerate(r.listing(r.get(raw, "schemes", ""), "schemes")):
        if name not in SCHEMES:
            raise r.fail(f"stats file names an unknown code {name!r}", f"schemes[{i}]")
        schemes.append(name)
    window = r.integer(r.get(raw, "window", ""), "window", 1)
    block_sizes = tuple(
        r.integer(b, f"block_sizes[{i}]", 1)
        for i, b in enumerate(r.listing(r.get(raw, "block_sizes", ""), "block_sizes"))
    )
    error_rows = raw.get("error_rows")
    if error_rows is not None:
        error_rows = r.integer(error_rows, "error_rows", 1)
    error_stride = raw.get("error_stride")
    if error_stride is not None:
        error_stride = r.integer(error_stride, "error_stride", 1)
    recipe = _parse_recipe(r, raw.get("recipe"))
    # Only MoE models have routing (absent, never empty, for dense ones).
    routing = tuple(
        _parse_routing(r, entry, f"routing[{i}]")
        for i, entry in enumerate(r.listing(raw["routing"], "routing") if "routing" in raw else ())
    )

    ck = r.get(raw, "checkpoint", "")
    kind = r.get(ck, "kind", "checkpoint")
    if kind not in CHECKPOINT_KINDS:
        raise r.fail(
            f"stats file field 'checkpoint.kind' must be one of {list(CHECKPOINT_KINDS)}, "
            f"not {kind!r}",
            "checkpoint.kind",
        )
    checkpoint = CheckpointInfo(
        path=r.text(r.get(ck, "path", "checkpoint"), "checkpoint.path", optional=True),
        kind=kind,
        model_type=r.text(
            r.get(ck, "model_type", "checkpoint"), "checkpoint.model_type", optional=True
        ),
        dtype=r.text(r.get(ck, "dtype", "checkpoint"), "checkpoint.dtype", optional=True),
    )
    d = r.get(raw, "data", "")
    max_length = r.get(d, "max_length", "data")
    data = DataInfo(
        source=r.text(r.get(d, "source", "data"), "data.source"),
        samples=r.integer(r.get(d, "samples", "data"), "data.samples", 1),
        tokens=r.integer(r.get(d, "tokens", "data"), "data.tokens", 1),
        max_length=None if max_length is None else r.integer(max_length, "data.max_length", 1),
        truncated=r.integer(d.get("truncated", 0), "data.truncated"),
    )
    layers = tuple(
        _parse_layer(r, entry, f"layers[{i}]", keys, schemes, window, block_sizes)
        for i, entry in enumerate(r.listing(r.get(raw, "layers", ""), "layers"))
    )
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise r.fail("stats file lists a layer twice", "layers")
    totals = _parse_totals(r, r.get(raw, "totals", ""), keys, schemes, window)
    return CalibrationStats(
        checkpoint=checkpoint,
        data=data,
        k=tuple(ks),
        schemes=tuple(schemes),
        window=window,
        block_sizes=block_sizes,
        layers=layers,
        totals=totals,
        error_rows=error_rows,
        error_stride=error_stride,
        recipe=recipe,
        routing=routing,
        spikecode_version=r.text(r.get(raw, "spikecode_version", ""), "spikecode_version"),
        created=r.text(r.get(raw, "created", ""), "created"),
        runs=_parse_runs(r, raw.get("runs"), data.samples),
    )


def _parse_routing(r: _Reader, raw: Any, here: str) -> RoutingStats:
    """One ``routing`` entry (SPEC §8); absent in files of dense models."""
    layer = r.text(r.get(raw, "layer", here), f"{here}.layer")
    experts = r.integer(r.get(raw, "num_experts", here), f"{here}.num_experts", 1)
    top_k = r.integer(r.get(raw, "top_k", here), f"{here}.top_k", 1)
    tokens = r.integer(r.get(raw, "tokens", here), f"{here}.tokens")
    if experts > _MAX_EXPERTS or top_k > experts:
        raise r.fail(
            f"stats file field '{here}' needs 1 <= top_k <= num_experts <= {_MAX_EXPERTS}",
            here,
        )
    counts = tuple(
        r.integer(n, f"{here}.expert_tokens[{i}]")
        for i, n in enumerate(
            r.listing(r.get(raw, "expert_tokens", here), f"{here}.expert_tokens", length=experts)
        )
    )
    if sum(counts) != tokens * top_k:
        raise r.fail(
            f"stats file field '{here}.expert_tokens' must sum to tokens × top_k "
            f"({tokens} × {top_k}), not {sum(counts)}",
            f"{here}.expert_tokens",
        )
    return RoutingStats(layer, experts, top_k, tokens, counts)


def _parse_runs(r: _Reader, value: Any, samples: int) -> tuple[str, ...]:
    """The optional ``runs`` field: distinct run ids, at most one per sample; () if absent."""
    if value is None:
        return ()
    runs = r.listing(value, "runs")
    if len(runs) > samples:
        raise r.fail(
            f"stats file field 'runs' lists {len(runs)} runs for {samples} samples", "runs"
        )
    for i, run in enumerate(runs):
        if not isinstance(run, str) or not re.fullmatch(RUN_ID_PATTERN, run):
            raise r.fail(
                f"stats file field 'runs[{i}]' must be a run id of 32 hex digits, "
                f"not {str(run)[:40]!r}",
                f"runs[{i}]",
            )
    if len(set(runs)) != len(runs):
        raise r.fail("stats file field 'runs' lists a run twice", "runs")
    return tuple(sorted(runs))


def _parse_recipe(r: _Reader, raw: Any) -> RecipeInfo:
    """The optional ``recipe`` field; absent in files written before recipes (all-linear)."""
    if raw is None:
        return RecipeInfo()
    name = r.get(raw, "name", "recipe")
    if name not in RECIPES:
        raise r.fail(
            f"stats file field 'recipe.name' must be one of {list(RECIPES)}, not {name!r}",
            "recipe.name",
        )
    generate = r.get(raw, "generate", "recipe")
    if generate is not None:
        generate = r.integer(generate, "recipe.generate", 1)
    return RecipeInfo(name=name, generate=generate)


def _parse_layer(
    r: _Reader,
    entry: Any,
    where: str,
    keys: list[str],
    schemes: list[str],
    window: int,
    block_sizes: tuple[int, ...],
) -> LayerStats:
    name = r.text(r.get(entry, "name", where), f"{where}.name")
    family = r.text(r.get(entry, "family", where), f"{where}.family")
    in_features = r.integer(r.get(entry, "in_features", where), f"{where}.in_features", 1)
    out_features = r.integer(r.get(entry, "out_features", where), f"{where}.out_features", 1)
    tokens = r.integer(r.get(entry, "tokens", where), f"{where}.tokens", 1)
    error_tokens = r.integer(entry.get("error_tokens", tokens), f"{where}.error_tokens")
    if error_tokens > tokens:
        raise r.fail(
            f"stats file field '{where}.error_tokens' exceeds the layer's tokens",
            f"{where}.error_tokens",
        )
    by_k_raw = r.obj(r.get(entry, "by_k", where), f"{where}.by_k")
    by_k = {}
    for key in keys:
        here = f"{where}.by_k.{key}"
        if key not in by_k_raw:
            raise r.fail(f"stats file layer {name!r} lacks k = {key}", here)
        by_k[key] = _parse_k(
            r, by_k_raw[key], here, tokens, in_features, schemes, window, block_sizes
        )
    assert name is not None  # r.text without optional never returns None
    assert family is not None
    sq_norm = r.v2(entry, "output_sq_norm", where)
    if sq_norm is not None:
        sq_norm = r.number(sq_norm, f"{where}.output_sq_norm")
        if sq_norm < 0:
            raise r.fail(
                f"stats file field '{where}.output_sq_norm' must be >= 0", f"{where}.output_sq_norm"
            )
    return LayerStats(
        name=name,
        family=family,
        in_features=in_features,
        out_features=out_features,
        tokens=tokens,
        by_k=MappingProxyType(by_k),
        error_tokens=error_tokens,
        output_sq_norm=sq_norm,
    )


def _parse_k(
    r: _Reader,
    entry: Any,
    where: str,
    tokens: int,
    in_features: int,
    schemes: list[str],
    window: int,
    block_sizes: tuple[int, ...],
) -> KStats:
    vth_raw = r.get(entry, "vth", where)
    hist_raw = r.get(vth_raw, "histogram", f"{where}.vth")
    edges = r.listing(
        r.get(hist_raw, "edges", f"{where}.vth.histogram"), f"{where}.vth.histogram.edges"
    )
    counts = r.listing(
        r.get(hist_raw, "counts", f"{where}.vth.histogram"),
        f"{where}.vth.histogram.counts",
        length=len(edges) - 1,
    )
    vth = VthSummary(
        mean=r.number(r.get(vth_raw, "mean", f"{where}.vth"), f"{where}.vth.mean"),
        std=r.number(r.get(vth_raw, "std", f"{where}.vth"), f"{where}.vth.std"),
        min=r.number(r.get(vth_raw, "min", f"{where}.vth"), f"{where}.vth.min"),
        max=r.number(r.get(vth_raw, "max", f"{where}.vth"), f"{where}.vth.max"),
        edges=tuple(r.number(e, f"{where}.vth.histogram.edges[{i}]") for i, e in enumerate(edges)),
        counts=tuple(
            r.integer(c, f"{where}.vth.histogram.counts[{i}]") for i, c in enumerate(counts)
        ),
    )
    if any(not 0 < a < b for a, b in itertools.pairwise(vth.edges)):
        raise r.fail(
            f"stats file field '{where}.vth.histogram.edges' must be positive and increasing",
            f"{where}.vth.histogram.edges",
        )
    if sum(vth.counts) != tokens:
        raise r.fail(
            f"stats file field '{where}.vth.histogram.counts' sums to {sum(vth.counts)}, "
            f"not the layer's {tokens} tokens",
            f"{where}.vth.histogram.counts",
        )
    ch_raw = r.get(entry, "count_histogram", where)
    here = f"{where}.count_histogram"
    # The ranges spikecode writes (docs/statsfile.rst), checked before anything is built
    # from them: a histogram over another range would be allocated bin by bin.
    offset = r.integer(r.get(ch_raw, "offset", here), f"{here}.offset", None)
    if offset != -COUNT_LIMIT:
        raise r.fail(
            f"stats file field '{here}.offset' must be {-COUNT_LIMIT}, got {offset}",
            f"{here}.offset",
        )
    ch = CountHistogram(
        offset=offset,
        counts=tuple(
            r.integer(c, f"{here}.counts[{i}]")
            for i, c in enumerate(
                r.listing(
                    r.get(ch_raw, "counts", here), f"{here}.counts", length=2 * COUNT_LIMIT + 1
                )
            )
        ),
        below=r.integer(r.get(ch_raw, "below", here), f"{here}.below"),
        above=r.integer(r.get(ch_raw, "above", here), f"{here}.above"),
        outliers=_parse_outliers(r, r.v2(ch_raw, "outliers", here), f"{here}.outliers"),
    )
    if ch.outliers is not None:
        end = ch.offset + len(ch.counts)
        below = sum(t for v, t in ch.outliers if v < ch.offset)
        above = sum(t for v, t in ch.outliers if v >= end)
        if (below, above) != (ch.below, ch.above) or any(
            ch.offset <= v < end for v, _ in ch.outliers
        ):
            raise r.fail(
                f"stats file field '{here}.outliers' must list exactly the counts outside "
                f"the range, adding up to 'below' and 'above'",
                f"{here}.outliers",
            )
    if ch.total != tokens * in_features:
        raise r.fail(
            f"stats file field {here!r} holds {ch.total} elements, not tokens x in_features "
            f"= {tokens * in_features}",
            here,
        )
    act_raw = r.get(entry, "activity", where)
    here = f"{where}.activity"
    fetched_raw = r.obj(
        r.get(act_raw, "block_fetched_channels", here), f"{here}.block_fetched_channels"
    )
    fetched = {}
    for b in block_sizes:
        if str(b) not in fetched_raw:
            raise r.fail(
                f"stats file lacks the field '{here}.block_fetched_channels.{b}'",
                f"{here}.block_fetched_channels.{b}",
            )
        fetched[b] = r.number(fetched_raw[str(b)], f"{here}.block_fetched_channels.{b}")
    try:
        activity = ChannelActivity(
            tokens=r.integer(r.get(act_raw, "tokens", here), f"{here}.tokens", 1),
            in_features=r.integer(r.get(act_raw, "in_features", here), f"{here}.in_features", 1),
            active_channels=r.number(
                r.get(act_raw, "active_channels", here), f"{here}.active_channels"
            ),
            block_fetched_channels=fetched,
        )
    except SpikecodeError as err:
        raise r.fail(f"stats file field {here!r} is inconsistent: {err.message}", here) from None
    if (activity.tokens, activity.in_features) != (tokens, in_features):
        raise r.fail(f"stats file field {here!r} does not match the layer's shape", here)
    schemes_raw = r.get(entry, "schemes", where)
    parsed = {}
    for scheme in schemes:
        here = f"{where}.schemes.{scheme}"
        raw = r.get(schemes_raw, scheme, f"{where}.schemes")
        values = {
            name: r.integer(r.get(raw, name, here), f"{here}.{name}") for name in SPIKE_FIELDS
        }
        if not 1 <= values["T"] <= _MAX_T or values["elements"] != tokens * in_features:
            raise r.fail(
                f"stats file field {here!r} needs T >= 1 (at most {_MAX_T}, int32 counts) and "
                "elements = tokens x in_features",
                here,
            )
        w = r.integer(r.get(raw, "window", here), f"{here}.window", 1)
        if w != window:
            raise r.fail(
                f"stats file field '{here}.window' differs from 'window'", f"{here}.window"
            )
        _check_spike_totals(r, here, values, w)
        parsed[scheme] = SpikeStats(scheme=scheme, window=w, **values)
    _check_vth(r, f"{where}.vth", vth)
    return KStats(
        vth=vth,
        count_histogram=ch,
        max_abs_count=_max_abs_count(r, entry, where),
        output_rel_error=r.number(
            r.get(entry, "output_rel_error", where), f"{where}.output_rel_error"
        ),
        output_cosine=r.number(r.get(entry, "output_cosine", where), f"{where}.output_cosine"),
        activity=activity,
        schemes=MappingProxyType(parsed),
        output_sq_error=_optional_number(
            r, r.v2(entry, "output_sq_error", where), f"{where}.output_sq_error"
        ),
    )


#: The largest T a code needs for int32 counts: binary's 2**31 steps (SPEC §3).
_MAX_T = 2**31


def _max_abs_count(r: _Reader, entry: Any, where: str) -> int:
    value = r.integer(r.get(entry, "max_abs_count", where), f"{where}.max_abs_count")
    if value > -INT32_MIN:
        raise r.fail(
            f"stats file field '{where}.max_abs_count' is {value}, beyond the int32 range "
            "of spike counts",
            f"{where}.max_abs_count",
        )
    return value


def _optional_number(r: _Reader, value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = r.number(value, where)
    if number < 0:
        raise r.fail(f"stats file field {where!r} must be >= 0", where)
    return number


def _parse_outliers(r: _Reader, value: Any, where: str) -> tuple[tuple[int, int], ...] | None:
    """``[[count, elements], ...]`` in ascending count order (version 2), or None."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise r.fail(f"stats file field {where!r} must be a list", where)
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise r.fail(f"stats file field '{where}[{i}]' must be [count, elements]", where)
        count = r.integer(pair[0], f"{where}[{i}]", None)
        if not INT32_MIN <= count <= INT32_MAX:
            raise r.fail(
                f"stats file field '{where}[{i}]' holds the count {count}, outside the "
                f"int32 range of spike counts",
                where,
            )
        pairs.append((count, r.integer(pair[1], f"{where}[{i}]", 1)))
    if any(a[0] >= b[0] for a, b in itertools.pairwise(pairs)):
        raise r.fail(f"stats file field {where!r} must list distinct counts in order", where)
    return tuple(pairs)


def _check_spike_totals(r: _Reader, here: str, v: Mapping[str, int], window: int) -> None:
    """Refuse spike totals no set of counts can produce (SPEC §5 definitions)."""
    elements, T = v["elements"], v["T"]
    bounds = (
        ("silent", v["silent"] <= elements, "more silent elements than elements"),
        ("within_7", v["within_7"] <= elements, "more |c| <= 7 elements than elements"),
        ("spikes", v["spikes"] <= elements * T, "more spikes than elements x T"),
        (
            "spikes",
            v["spikes"] >= elements - v["silent"],
            "fewer spikes than elements that are not silent",
        ),
        (
            "window_steps",
            v["window_steps"] >= elements * window and v["window_steps"] % window == 0,
            "occupied steps that are not whole windows of every element",
        ),
        ("window_spikes", v["window_spikes"] <= v["window_steps"], "more spikes than steps"),
    )
    for name, holds, what in bounds:
        if not holds:
            raise r.fail(
                f"stats file field '{here}.{name}' is inconsistent: {what}", f"{here}.{name}"
            )


def _check_vth(r: _Reader, here: str, vth: VthSummary) -> None:
    slack = 1e-6 * abs(vth.max)  # the mean is a float sum; equal thresholds may round
    if not (0 < vth.min <= vth.mean + slack and vth.mean <= vth.max + slack) or vth.std < 0:
        raise r.fail(
            f"stats file field {here!r} is inconsistent: needs 0 < min <= mean <= max "
            f"and std >= 0 (min {vth.min}, mean {vth.mean}, max {vth.max}, std {vth.std})",
            here,
        )


#: Totals that are shares of something, hence in [0, 1].
_FRACTIONS = ("firing_rate", "sparsity", "silent_fraction", "within_7_fraction")


def _parse_totals(
    r: _Reader, raw: Any, keys: list[str], schemes: list[str], window: int
) -> Mapping[str, Mapping[str, Mapping[str, float]]]:
    names = (*TOTAL_FIELDS, window_key(window))
    totals = {}
    for key in keys:
        by_scheme_raw = r.get(raw, key, "totals")
        by_scheme = {}
        for scheme in schemes:
            here = f"totals.{key}.{scheme}"
            values = r.get(by_scheme_raw, scheme, f"totals.{key}")
            parsed = {name: r.number(r.get(values, name, here), f"{here}.{name}") for name in names}
            for name, value in parsed.items():
                share = name in _FRACTIONS or name == window_key(window)
                if value < 0 or (share and value > 1):
                    limits = "in [0, 1]" if share else ">= 0"
                    raise r.fail(
                        f"stats file field '{here}.{name}' must be {limits}, got {value}",
                        f"{here}.{name}",
                    )
            by_scheme[scheme] = MappingProxyType(parsed)
        totals[key] = MappingProxyType(by_scheme)
    return MappingProxyType(totals)
