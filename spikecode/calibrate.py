"""Calibration: stream a text set through a model and measure every projection's spike input.

SpikingBrain calibrates its spike coding on a small text set (128 samples, SPEC §1). This
module runs such a set through a model in batches, with a forward pre-hook on the input
of every selected linear projection (:class:`spikecode.capture.LinearInputHooks`;
``lm_head`` is excluded by default), and accumulates in **one streaming pass**, for
several k and several codes at once:

- the exact histogram of the counts ``c = round(x / Vth)`` (SPEC §2), from which the
  SPEC §5 totals of every code follow exactly (:func:`spikecode.spike_stats` on the
  distinct values, weighted by their multiplicity; T = the minimal T of all counts seen);
- the Vth distribution (running mean, std, min, max and a fixed log-spaced histogram);
- the channel activity of the SPEC §6 memory model (active channels, and weight columns
  fetched under block skipping, exactly as :func:`spikecode.energy.channel_activity`);
- the output error of the W8ASpike layer (INT8 weights per SPEC §4 — groups of 128 input
  columns when ``in_features`` is a multiple of 128, else one scale per row; the
  checkpoint's released ``weight_quantizer.scales`` when it has them — fed
  ``Vth · round(x / Vth)``) against the float layer on the same rows.

Design decisions
----------------
- **Memory** stays bounded by one layer's activation plus small per-layer state: the
  histograms (``2·511 + 3`` bins per k), a few numbers per k, and the rows held back for
  the output error (at most :data:`ERROR_FLUSH_ROWS` rows or :data:`ERROR_FLUSH_BYTES`
  per layer before they are consumed). No activation outlives its hook call.
- **Padding** never enters a statistic: the batch's attention mask is set on the hooks,
  which hand over only the rows of real tokens.
- **Shared inputs** (attention q/k/v, MLP gate/up read one tensor) are counted once:
  :meth:`StatsAccumulator.begin_batch` links a layer to the one called just before it
  when their inputs are equal in the first batch, and checks the equality on every later
  call; a layer whose input ever differs continues on its own copy of the statistics as
  they stood before that batch, so the result is always that of counting each layer
  alone. The output error is always each layer's own.
- **The output error** is measured on a bounded subset of rows: per batch and layer,
  one row in ``error_stride`` (128) of the batch's real tokens, at least one and at most
  ``error_rows`` (64), evenly spaced and centred so that no position is systematically
  favoured. Its matmuls (one per k plus the float one) would otherwise cost several
  times the model's own forward pass; this way they cost about (number of k + 1) / 128
  of the model's linear layers. The stats file records both settings (``error_rows``,
  ``error_stride``) and the rows used per layer (``error_tokens``).
  Both outputs are computed in the compute dtype (float32, float64 for float64 models)
  from the layer's weights, so a bfloat16 model's own output rounding is not counted as
  error. ``error_rows=None`` uses every row.
- **Devices**: on CPU the counting runs in one fused Numba kernel (threshold, counts,
  histogram, Vth histogram and block activity per row, for all k); on any other device
  the same quantities are computed with torch operations on the device, and only small
  results (histogram bins, sums) ever move to the host. Both paths follow SPEC §2's
  numerics (mean|x| accumulated in float64; Vth in float64, then cast; counts in the
  compute dtype, round half to even) and give identical counts.
- **Samples** are batched longest first (less padding); the result does not depend on
  the order. A sample longer than the model's maximum (``max_position_embeddings``, or
  ``max_length``) is refused unless ``truncate=True`` asks to cut it.
- **Tokenization** uses the checkpoint's tokenizer (with its special tokens). A
  checkpoint without a tokenizer needs token ids: a JSONL file whose records carry
  ``"input_ids"``.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from spikecode._numba import kernel, prange
from spikecode._validate import INT32_MAX, INT32_MIN, positive_finite
from spikecode.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, LinearInputHooks
from spikecode.checkpoint import LoadedModel, wrap_module
from spikecode.encoders import _kernels
from spikecode.encoders.codec import plan_encoding
from spikecode.encoders.schemes import get_scheme
from spikecode.energy import DEFAULT_BLOCK_SIZES, ChannelActivity
from spikecode.energy._validate import check_block_sizes
from spikecode.errors import SpikecodeError
from spikecode.nn import functional as F
from spikecode.stats import SpikeStats
from spikecode.statsfile import (
    COUNT_LIMIT,
    VTH_EDGES,
    CalibrationStats,
    CheckpointInfo,
    CountHistogram,
    DataInfo,
    KStats,
    LayerStats,
    VthSummary,
    k_key,
    layer_family,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ERROR_ROWS",
    "DEFAULT_ERROR_STRIDE",
    "DEFAULT_K",
    "DEFAULT_SAMPLES",
    "DEFAULT_SCHEMES",
    "ERROR_FLUSH_BYTES",
    "ERROR_FLUSH_ROWS",
    "CalibrationData",
    "LayerAccumulator",
    "StatsAccumulator",
    "TokenizedData",
    "calibrate",
    "checkpoint_info",
    "escape_names",
    "fake_quantize_weight",
    "load_calibration_data",
    "model_max_length",
    "padded_batches",
    "stats_from_histogram",
    "stats_from_histograms",
    "tokenize_data",
    "weight_group_size",
]

#: The report's k sweep (table 11).
DEFAULT_K: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
#: SpikingBrain calibrates on 128 samples (SPEC §1).
DEFAULT_SAMPLES = 128
#: SpikingBrain's code (bitwise sign-magnitude, SPEC §3).
DEFAULT_SCHEMES: tuple[str, ...] = ("bitwise-bidirectional",)
DEFAULT_BATCH_SIZE = 16
#: The output error is measured on one row in DEFAULT_ERROR_STRIDE per batch and layer
#: (at least one), at most DEFAULT_ERROR_ROWS of them.
DEFAULT_ERROR_ROWS = 64
DEFAULT_ERROR_STRIDE = 128
#: Rows held back for the output error are consumed once a layer holds this many ...
ERROR_FLUSH_ROWS = 256
#: ... or this many bytes of them.
ERROR_FLUSH_BYTES = 1 << 20
#: W8ASpike weight scale groups (SPEC §4).

# Counts with |c| <= _DENSE_LIMIT go to a dense histogram; larger ones (rare: a value
# hundreds of times the token's mean |x|) are collected exactly, value by value.
_DENSE_LIMIT = 1023
# Counts beyond it met in one kernel call, per thread chunk, kept value by value.
_SPILL = 4096
# The CPU kernel counts up to _GROUP values of k with one joint-table increment per
# element while |c| <= _JOINT_LIMIT at the largest k (see _count_rows).
_GROUP = 5
_JOINT_LIMIT = 63
_TEXT_SUFFIXES_JSONL = (".jsonl", ".json")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CalibrationData:
    """Calibration samples: texts, token ids, or both.

    Attributes
    ----------
    source
        Where they came from (a file path, or ``"bundled corpus"``).
    texts
        One text per sample, or None.
    input_ids
        One list of token ids per sample, or None (JSONL records with ``"input_ids"``).
    available
        Samples the source holds (``len`` is the number kept).
    """

    source: str
    texts: tuple[str, ...] | None = None
    input_ids: tuple[tuple[int, ...], ...] | None = None
    available: int = 0

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.input_ids or ())

    @classmethod
    def from_texts(cls, texts: Iterable[str], source: str = "texts") -> CalibrationData:
        """Wrap texts given in Python."""
        texts = tuple(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise SpikecodeError("calibration texts must be a non-empty list of non-empty strings")
        return cls(source=source, texts=texts, available=len(texts))

    @classmethod
    def from_ids(
        cls, input_ids: Iterable[Sequence[int]], source: str = "token ids"
    ) -> CalibrationData:
        """Wrap token id lists given in Python."""
        ids = tuple(_id_list(s, f"sample {i}", source) for i, s in enumerate(input_ids))
        if not ids:
            raise SpikecodeError("no calibration samples", source=source)
        return cls(source=source, input_ids=ids, available=len(ids))


def _id_list(value: Any, where: str, source: str) -> tuple[int, ...]:
    if (
        not isinstance(value, Sequence | np.ndarray)
        or isinstance(value, str)
        or len(value) == 0
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
    ):
        raise SpikecodeError(
            f"{where}: input_ids must be a non-empty list of integers", source=source
        )
    if min(value) < 0:
        raise SpikecodeError(f"{where}: input_ids must be >= 0", source=source)
    return tuple(int(v) for v in value)


def load_calibration_data(
    path: str | os.PathLike[str] | None = None, samples: int | None = DEFAULT_SAMPLES
) -> CalibrationData:
    """Read calibration samples.

    Parameters
    ----------
    path
        A UTF-8 text file with one sample per line (blank lines are skipped), or a JSONL
        file (``.jsonl``/``.json``, one JSON object per line) whose records carry
        ``"text"`` (a string) or ``"input_ids"`` (a list of token ids; needed for a
        checkpoint without a tokenizer), or both. None: the bundled corpus
        (:func:`spikecode.data.corpus_path`).
    samples
        Keep the first ``samples`` samples (all of them when the file holds fewer;
        :attr:`CalibrationData.available` tells); None keeps all.

    Returns
    -------
    CalibrationData

    Raises
    ------
    SpikecodeError
        A missing, binary or non-UTF-8 file, a JSONL line that is not an object with
        ``text`` or ``input_ids``, or no sample at all.
    """
    if samples is not None and (
        isinstance(samples, bool) or not isinstance(samples, int) or samples < 1
    ):
        raise SpikecodeError(f"samples must be a positive integer, not {samples!r}")
    if path is None:
        from spikecode.data import corpus_path

        file, source = corpus_path(), "bundled corpus"
    else:
        file, source = Path(path), str(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpikecodeError("calibration data file not found", file=source) from None
    except OSError as err:
        raise SpikecodeError(
            f"cannot read the calibration data: {err.strerror}", file=source
        ) from None
    if b"\x00" in raw:
        raise SpikecodeError(
            "the calibration data is not a text file (it holds binary data); give one text "
            "per line, or JSONL records with a 'text' or 'input_ids' field",
            file=source,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpikecodeError(
            f"the calibration data is not UTF-8 text (byte {err.start})", file=source
        ) from None
    if file.suffix.lower() in _TEXT_SUFFIXES_JSONL:
        data = _parse_jsonl(text, source)
    else:
        texts = tuple(line.strip() for line in text.splitlines() if line.strip())
        data = CalibrationData(source=source, texts=texts, available=len(texts))
    if len(data) == 0:
        raise SpikecodeError("the calibration data holds no sample", file=source)
    if samples is None or samples >= len(data):
        return data
    return CalibrationData(
        source=data.source,
        texts=None if data.texts is None else data.texts[:samples],
        input_ids=None if data.input_ids is None else data.input_ids[:samples],
        available=data.available,
    )


def _parse_jsonl(text: str, source: str) -> CalibrationData:
    texts: list[str | None] = []
    ids: list[tuple[int, ...] | None] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpikecodeError(
                f"line {number} of the calibration data is not JSON ({err.msg})", file=source
            ) from None
        if not isinstance(record, dict) or ("text" not in record and "input_ids" not in record):
            raise SpikecodeError(
                f"line {number} of the calibration data has no 'text' (or 'input_ids') field",
                file=source,
            )
        value = record.get("text")
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SpikecodeError(
                f"line {number} of the calibration data: 'text' must be a non-empty string",
                file=source,
            )
        texts.append(value)
        value = record.get("input_ids")
        ids.append(None if value is None else _id_list(value, f"line {number}", source))
    have_texts = bool(texts) and all(t is not None for t in texts)
    have_ids = bool(ids) and all(i is not None for i in ids)
    if texts and not (have_texts or have_ids):
        raise SpikecodeError(
            "the calibration records mix 'text' and 'input_ids'; every record needs the same field",
            file=source,
        )
    return CalibrationData(
        source=source,
        texts=tuple(texts) if have_texts else None,  # type: ignore[arg-type]
        input_ids=tuple(ids) if have_ids else None,  # type: ignore[arg-type]
        available=len(texts),
    )


@dataclass(frozen=True)
class TokenizedData:
    """Token ids ready for batching.

    Attributes
    ----------
    input_ids
        One tuple of ids per sample.
    max_length
        The length limit applied (None: no limit known).
    truncated
        Samples cut to ``max_length`` (only with ``truncate=True``).
    """

    input_ids: tuple[tuple[int, ...], ...]
    max_length: int | None
    truncated: int = 0

    @property
    def tokens(self) -> int:
        """Non-padding tokens over all samples."""
        return sum(len(ids) for ids in self.input_ids)


def model_max_length(loaded: LoadedModel) -> int | None:
    """The longest input the model takes: ``max_position_embeddings`` of its config.

    For GLA-SWA checkpoints the value comes from the folder's ``config.json`` (the
    plain-PyTorch architecture has no such field). None when nothing states a limit.
    """
    value = getattr(loaded.config, "max_position_embeddings", None)
    if value is None and loaded.path is not None:
        try:
            raw = json.loads((Path(loaded.path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        value = raw.get("max_position_embeddings") if isinstance(raw, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _vocab_size(loaded: LoadedModel) -> int | None:
    value = getattr(loaded.config, "vocab_size", None)
    return value if isinstance(value, int) and value > 0 else None


def tokenize_data(
    data: CalibrationData,
    loaded: LoadedModel,
    *,
    max_length: int | None = None,
    truncate: bool = False,
) -> TokenizedData:
    """Turn calibration samples into token ids, checked against the model's limits.

    Parameters
    ----------
    data
        Texts (tokenized with ``loaded.tokenizer``, special tokens included) or token ids.
    loaded
        The model; its tokenizer, ``max_position_embeddings`` and ``vocab_size`` are used.
    max_length
        Length limit; at most the model's own maximum. None: the model's maximum.
    truncate
        Cut longer samples to the limit instead of refusing them.

    Raises
    ------
    SpikecodeError
        Texts for a checkpoint without a tokenizer, a sample longer than the limit
        (without ``truncate``), ids outside the vocabulary, a sample without tokens.
    """
    limit = model_max_length(loaded)
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise SpikecodeError(f"max_length must be a positive integer, not {max_length!r}")
        if limit is not None and max_length > limit:
            raise SpikecodeError(
                f"max_length {max_length} exceeds the model's maximum of {limit} positions "
                "(max_position_embeddings)"
            )
        limit = max_length
    if data.texts is not None and loaded.tokenizer is not None:
        encoded = loaded.tokenizer(list(data.texts), truncation=False)["input_ids"]
        samples = [tuple(int(v) for v in ids) for ids in encoded]
    elif data.input_ids is not None:
        samples = list(data.input_ids)
    else:
        raise SpikecodeError(
            "the checkpoint has no tokenizer, so the calibration data must hold token ids: "
            'a JSONL file with an "input_ids" list per line',
            source=data.source,
        )
    truncated = 0
    vocab = _vocab_size(loaded)
    for i, ids in enumerate(samples):
        if not ids:
            raise SpikecodeError(f"sample {i} has no token", source=data.source)
        if limit is not None and len(ids) > limit:
            if not truncate:
                raise SpikecodeError(
                    f"sample {i} has {len(ids)} tokens, more than the maximum of {limit}; "
                    "pass truncate (--truncate) to cut long samples, or a larger max_length",
                    source=data.source,
                )
            samples[i] = ids[:limit]
            truncated += 1
        if vocab is not None and max(ids) >= vocab:
            raise SpikecodeError(
                f"sample {i} holds token id {max(ids)}, outside the vocabulary [0, {vocab})",
                source=data.source,
            )
    return TokenizedData(tuple(samples), limit, truncated)


def padded_batches(
    tokenized: TokenizedData, batch_size: int, device: torch.device, pad_id: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(input_ids, attention_mask)`` batches, longest samples first, right-padded.

    Every sample appears exactly once; the mask is 1 on real tokens and 0 on padding.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpikecodeError(f"batch_size must be a positive integer, not {batch_size!r}")
    order = sorted(range(len(tokenized.input_ids)), key=lambda i: -len(tokenized.input_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = [tokenized.input_ids[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sample in enumerate(chunk):
            ids[row, : len(sample)] = torch.tensor(sample, dtype=torch.long)
            mask[row, : len(sample)] = 1
        yield ids.to(device), mask.to(device)


def _pad_id(loaded: LoadedModel) -> int:
    pad = getattr(loaded.tokenizer, "pad_token_id", None) if loaded.tokenizer is not None else None
    return pad if isinstance(pad, int) and pad >= 0 else 0


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _trunk(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The part of the model that holds every selected layer: skip ``lm_head`` if unused.

    Calibration needs only the projections' inputs; running the vocabulary projection
    (the largest matmul of an LLM) for nothing would only cost time.
    """
    prefix = getattr(model, "base_model_prefix", None) or ""
    if (
        not prefix
        and hasattr(model, "hidden_states")
        and isinstance(getattr(model, "model", None), nn.Module)
    ):
        prefix = "model"  # GLASwaForCausalLM
    sub = getattr(model, prefix, None) if prefix else None
    if (
        isinstance(sub, nn.Module)
        and sub is not model
        and all(n.startswith(prefix + ".") for n in names)
    ):
        return sub
    return model


def _forward(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    return module(input_ids=ids, attention_mask=mask)


# --------------------------------------------------------------------------- kernel


_KERNEL_ARGS = (
    "float64[::1], float64, float64, int64, int64, int64, int64[::1], int64[::1], float64[::1],"
    " int64[:, ::1], int64[:, :, ::1], int64[:, :, ::1], int64[:, :, ::1], int64[:, :, ::1],"
    " float64[:, :, ::1]"
)


@kernel(
    f"int64[::1](float32[:, ::1], float32[::1], {_KERNEL_ARGS}, float32[:, ::1])",
    f"int64[::1](float64[:, ::1], float64[::1], {_KERNEL_ARGS}, float64[:, ::1])",
)
def _count_rows(
    x,
    ratios,
    ks,
    vth_min,
    vth_max,
    joint_limit,
    wide_limit,
    base,
    block_sizes,
    source,
    edges,
    joint,
    wide,
    vth_hist,
    levels,
    spill,
    moments,
    vth,
):  # pragma: no cover - jit
    """Fused per-row statistics for five k at once; SPEC §2 counts, §5 histogram, §6 activity.

    ``ks`` ascending, exactly 5 (a smaller group repeats its smallest k in front),
    ``ratios[g] = ks[g] / ks[4]`` (4 values) in the compute dtype.

    Per row: ``mean|x|`` in float64 and the maxima of ``|x|`` over blocks of every size;
    per k: ``Vth = clip(mean / k)`` (stored into ``vth[g, row]`` in the compute dtype and
    read back, so that the divisions below run in that dtype), its bin among the
    log-spaced ``edges`` and, in ``moments[chunk, g]``, the count, a shift (the chunk's
    first value), the sums of ``v - shift`` and of its square, the min and the max.

    Block activity: a block is fetched at some k when one of its counts is non-zero, i.e.
    when ``max|x| / Vth > 1/2`` (division is monotone, and round-half-to-even sends
    exactly ``|u| <= 1/2`` to 0), i.e. when ``max|x| > t``. A float32 quotient rounds
    above 1/2 exactly when it exceeds ``(1 + 2^-24) / 2`` (a tie rounds to the even 1/2),
    so ``t = Vth · (1 + 2^-24) / 2``, exact in float64; for float64 data ``t`` is the
    largest value whose quotient is ``<= 1/2``. Vth falls as k grows, so the thresholds
    fall too and a
    block active at some k is active at every larger k: its *level* (the number of k at
    which it is active) says all. ``levels[chunk, s, level]`` adds up the block lengths.
    ``block_sizes`` ascend; ``source[s]`` names a smaller size that divides size ``s``
    (its maxima are combined), or -1 for blocks of ``base`` channels.

    Counts: one histogram increment per element for the five k. With ``c_top`` the count
    at the largest k, every other count satisfies ``|c_g - c_top · r_g| <= (1 + r_g) / 2
    < 1`` (``|u_top - c_top| <= 1/2`` and ``u_g = u_top · r_g`` up to rounding), so
    ``d_g = c_g - rint(c_top · r_g)`` has ``|d_g| < 3/2``: it lies in {-1, 0, 1}, and
    ``(c_top, d_0, …, d_3)`` is one key of a joint table
    ``joint[chunk, (((c_top + L)·3 + d_0 + 1)·3 + d_1 + 1)·3 + …]`` (``L = joint_limit``;
    its last bin counts the other elements). Elements outside it (``|c_top| > L``, or a
    clamped threshold breaking the ratio) go, count by count, to ``wide[chunk, g]``
    (offset ``wide_limit``); counts beyond ``±wide_limit`` are written to
    ``spill[chunk, n] = (g, c)`` while there is room. Rows are split into
    ``joint.shape[0]`` parallel chunks, each with its own tables (no locking).

    Returns per chunk the number of counts beyond ``±wide_limit`` met by this call (more
    than ``spill.shape[1]`` means the spill buffer overflowed), then the number of rows
    whose ``sum |x|`` is not finite (skipped).
    """
    rows, cols = x.shape
    n_k = ks.shape[0]
    chunks = joint.shape[0]
    n_vth = vth_hist.shape[2]
    n_sizes = block_sizes.shape[0]
    n_base = (cols + base - 1) // base
    # Block maxima of every level in one array: the base blocks first, then each size.
    offset = np.zeros(n_sizes + 1, dtype=np.int64)
    offset[0] = n_base
    for s in range(n_sizes):
        offset[s + 1] = offset[s] + (cols + block_sizes[s] - 1) // block_sizes[s]
    length = np.zeros(offset[n_sizes], dtype=np.int64)
    for s in range(n_sizes):
        for b in range(offset[s + 1] - offset[s]):
            length[offset[s] + b] = min(block_sizes[s], cols - b * block_sizes[s])
    per = (rows + chunks - 1) // chunks
    capacity = spill.shape[1]
    log_k = np.log10(ks)
    log_first = np.log10(edges[0])
    bins_per_decade = n_vth / (np.log10(edges[n_vth]) - log_first)
    flags = np.zeros((chunks, 2), dtype=np.int64)
    sentinel = x.dtype.type(joint.shape[1] - 1)
    huge = x.dtype.type(1e30)
    half = x.dtype.type(0.5)
    infinity = x.dtype.type(np.inf)
    single = x.itemsize == 4
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    three = x.dtype.type(3.0)
    limit = x.dtype.type(joint_limit)
    for ch in prange(chunks):
        key = np.empty(cols, dtype=x.dtype)
        index = np.empty(cols, dtype=np.int32)
        maxima = np.empty(offset[n_sizes], dtype=x.dtype)
        threshold = np.empty(n_k, dtype=np.float64)
        table = joint[ch]
        for i in range(ch * per, min(rows, (ch + 1) * per)):
            # mean|x| in float64, summed block by block (independent chains run side by
            # side; a summation order changes at most the last float64 bits, as between
            # the NumPy and torch paths), and the maxima of |x| over the base blocks
            total = 0.0
            for blk in range(n_base):
                block_sum = 0.0
                m = zero
                for j in range(blk * base, min(cols, (blk + 1) * base)):
                    a = abs(x[i, j])
                    block_sum += np.float64(a)
                    m = max(m, a)
                total += block_sum
                maxima[blk] = m
            if not np.isfinite(total):
                flags[ch, 1] += 1
                continue
            for s in range(n_sizes):
                src = 0 if source[s] < 0 else offset[source[s]]
                src_end = n_base if source[s] < 0 else offset[source[s] + 1]
                step = block_sizes[s] // (base if source[s] < 0 else block_sizes[source[s]])
                for b in range(offset[s + 1] - offset[s]):
                    m = zero
                    for t in range(src + b * step, min(src_end, src + (b + 1) * step)):
                        m = max(m, maxima[t])
                    maxima[offset[s] + b] = m
            mean = total / cols
            log_mean = np.log10(mean) if mean > 0 else -np.inf
            for g in range(n_k):
                vth[g, i] = min(max(mean / ks[g], vth_min), vth_max)
                v = vth[g, i]
                v64 = np.float64(v)
                # Vth histogram bin (edges[b] <= v < edges[b + 1], clamped to the ends):
                # a guess from the logarithm, then exact comparisons with the edges.
                guess = (log_mean - log_k[g] - log_first) * bins_per_decade
                b = int(min(max(guess, 0.0), n_vth - 1.0)) if np.isfinite(guess) else 0
                while b > 0 and v64 < edges[b]:
                    b -= 1
                while b < n_vth - 1 and v64 >= edges[b + 1]:
                    b += 1
                vth_hist[ch, g, b] += 1
                # count, shift, sums of v - shift and (v - shift)^2, min, max
                stats = moments[ch, g]
                if stats[0] == 0.0:
                    stats[1] = v64
                stats[0] += 1.0
                stats[2] += v64 - stats[1]
                stats[3] += (v64 - stats[1]) * (v64 - stats[1])
                stats[4] = min(stats[4], v64)
                stats[5] = max(stats[5], v64)
                if single:
                    threshold[g] = v64 * (1.0 + 2.0**-24) * 0.5
                else:
                    t = v * half
                    while np.nextafter(t, infinity) / v <= half:
                        t = np.nextafter(t, infinity)
                    threshold[g] = t
            t0, t1, t2 = threshold[0], threshold[1], threshold[2]
            t3, t4 = threshold[3], threshold[4]
            for s in range(n_sizes):
                for b in range(offset[s], offset[s + 1]):
                    m = np.float64(maxima[b])
                    level = (m > t0) + (m > t1) + (m > t2) + (m > t3) + (m > t4)
                    levels[ch, s, level] += length[b]
            v0, v1, v2, v3, v4 = vth[0, i], vth[1, i], vth[2, i], vth[3, i], vth[4, i]
            r0, r1, r2, r3 = ratios[0], ratios[1], ratios[2], ratios[3]
            for j in range(cols):
                xj = x[i, j]
                c = np.rint(xj / v4)
                d0 = np.rint(xj / v0) - np.rint(c * r0)
                d1 = np.rint(xj / v1) - np.rint(c * r1)
                d2 = np.rint(xj / v2) - np.rint(c * r2)
                d3 = np.rint(xj / v3) - np.rint(c * r3)
                code = (((c + limit) * three + d0 + one) * three + d1 + one) * three + d2 + one
                code = code * three + d3 + one
                bad = max(
                    max(abs(c) - limit, zero),
                    max(max(abs(d0), abs(d1)), max(abs(d2), abs(d3))) - one,
                )
                # bad > 0 sends the element to the last bin (branch-free, vectorized)
                key[j] = min(code + bad * huge, sentinel)
            for j in range(cols):
                index[j] = np.int32(key[j])
            before = table[-1]
            for j in range(cols):
                table[index[j]] += 1
            if table[-1] == before:
                continue
            for j in range(cols):
                if key[j] != sentinel:
                    continue
                for g in range(n_k):
                    c = np.int64(np.rint(x[i, j] / vth[g, i]))
                    if -wide_limit <= c <= wide_limit:
                        wide[ch, g, c + wide_limit] += 1
                    else:
                        n = flags[ch, 0]
                        if n < capacity:
                            spill[ch, n, 0] = g
                            spill[ch, n, 1] = c
                        flags[ch, 0] = n + 1
    out = np.zeros(chunks + 1, dtype=np.int64)
    for ch in range(chunks):
        out[ch] = flags[ch, 0]
        out[chunks] += flags[ch, 1]
    return out


# --------------------------------------------------------------------------- statistics


def stats_from_histogram(
    values: np.ndarray, multiplicity: np.ndarray, scheme: str, *, window: int = 3
) -> SpikeStats:
    """SPEC §5 totals of a set of counts given as distinct values and their multiplicities.

    Equal to :func:`spikecode.spike_stats` on ``np.repeat(values, multiplicity)`` with
    the minimal T and the automatic zero point: both depend only on the smallest and
    largest count, which the distinct values share with the full set, and every total
    is a sum over elements.

    Parameters
    ----------
    values
        Distinct integer counts (int32 range).
    multiplicity
        How many elements hold each value (> 0).
    scheme, window
        As for :func:`spikecode.spike_stats`.
    """
    return stats_from_histograms([(values, multiplicity)], scheme, window=window)[0]


def stats_from_histograms(
    histograms: Sequence[tuple[np.ndarray, np.ndarray]], scheme: str, *, window: int = 3
) -> list[SpikeStats]:
    """:func:`stats_from_histogram` for many sets at once (one kernel call per T and zero point)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise SpikecodeError(f"window must be a positive integer, not {window!r}")
    sets = []
    for values, multiplicity in histograms:
        values = np.asarray(values, dtype=np.int64)
        multiplicity = np.asarray(multiplicity, dtype=np.int64)
        if values.ndim != 1 or values.shape != multiplicity.shape or values.size == 0:
            raise SpikecodeError(
                "values and multiplicity must be equal-length non-empty 1-D arrays"
            )
        if np.any(multiplicity <= 0):
            raise SpikecodeError("multiplicities must be > 0")
        low, high = int(values.min()), int(values.max())
        if low < INT32_MIN or high > INT32_MAX:
            raise SpikecodeError("counts do not fit int32 (k is too large for these activations)")
        # T and the zero point depend only on the extremes (SPEC §3).
        plan = plan_encoding(np.array([[low, high]], dtype=np.int32), scheme)
        sets.append((values, multiplicity, plan))
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (_, _, plan) in enumerate(sets):
        groups.setdefault((plan.T, plan.zero_point), []).append(index)
    totals: list[np.ndarray | None] = [None] * len(sets)
    for (T, zero_point), members in groups.items():
        union = np.unique(np.concatenate([sets[i][0] for i in members]))
        plan = sets[members[0]][2]
        per_value = _kernels.stats_rows(
            union.astype(np.int32).reshape(-1, 1), plan.scheme.code, T, zero_point, window
        )
        for i in members:
            values, multiplicity, _ = sets[i]
            totals[i] = multiplicity @ per_value[np.searchsorted(union, values)]
    result = []
    for (_, multiplicity, plan), total in zip(sets, totals, strict=True):
        spikes, silent, within, w_spikes, w_steps = (int(v) for v in total)
        result.append(
            SpikeStats(
                scheme=plan.scheme.name,
                T=plan.T,
                window=window,
                elements=int(multiplicity.sum()),
                spikes=spikes,
                silent=silent,
                within_7=within,
                window_spikes=w_spikes,
                window_steps=w_steps,
            )
        )
    return result


#: Scale groups of the fake-quantized weights (SPEC §4), as :func:`spikecode.nn.swap_linears`.
weight_group_size = F.auto_group_size


@kernel("int64(float32[:, ::1], int64, float32[:, ::1])")
def _fake_quant_rows(w, group, out):  # pragma: no cover - jit
    """``round(w / σ) · σ`` with ``σ = fl32(max|w| / 127)`` per row and group (SPEC §4).

    The arithmetic of :func:`spikecode.nn.functional.quantize_weight_int8` followed by
    :func:`~spikecode.nn.functional.dequantize_weight_int8`, element by element: ``max|w|``
    and ``max|w| / 127`` in float64 (1 for an all-zero group), the scale rounded once to
    float32, ``w / σ`` formed in float64 and rounded half to even, the product ``q · σ``
    exact in float64 and rounded once to float32. Returns the number of non-finite
    weights (nothing is written for their groups).
    """
    rows, cols = w.shape
    bad = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        for start in range(0, cols, group):
            amax = 0.0
            for j in range(start, start + group):
                a = abs(np.float64(w[r, j]))
                if not np.isfinite(a):
                    bad[r] += 1
                amax = max(amax, a)
            if bad[r]:
                continue
            sigma = np.float64(np.float32(amax / 127.0)) if amax > 0 else 1.0
            for j in range(start, start + group):
                out[r, j] = np.float32(np.rint(np.float64(w[r, j]) / sigma) * sigma)
    return bad.sum()


def fake_quantize_weight(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """INT8 fake-quantized weights ``round(w / σ) · σ`` (SPEC §4) as float32, on the CPU.

    Equal, bit for bit, to ``dequantize_weight_int8(*quantize_weight_int8(weight,
    group_size))`` of :mod:`spikecode.nn.functional`, in one pass without float64 copies
    of the weight (calibration quantizes every layer once).

    Parameters
    ----------
    weight
        ``[out_features, in_features]`` floating weights (any float dtype, CPU).
    group_size
        Input columns per scale, a divisor of ``in_features``; None for one per row.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.numel() == 0:
        raise SpikecodeError("weight must be a non-empty 2-D tensor")
    group = weight.shape[1] if group_size is None else group_size
    if weight.shape[1] % group:
        raise SpikecodeError(
            f"in_features ({weight.shape[1]}) is not divisible by group_size ({group})"
        )
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    out = np.empty_like(w)
    if _fake_quant_rows(w, group, out):
        raise SpikecodeError("weight holds non-finite values", shape=tuple(weight.shape))
    return torch.from_numpy(out)


def _vth_table(mean: torch.Tensor, ks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``Vth[k, row] = clip(mean / k)`` in float64, cast to ``dtype`` (SPEC §2 numerics)."""
    vth = torch.clamp(mean.unsqueeze(0) / ks.unsqueeze(1), F.VTH_MIN, F.VTH_MAX)
    return vth.to(dtype)


@dataclass
class _ErrorSpec:
    """The float layer and its W8ASpike weights, for the output error."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    scales: torch.Tensor | None


@dataclass
class _Stream:
    """Accumulated statistics of one input stream (several layers may read the same one)."""

    outliers: list[dict[int, int]]
    state: dict[str, Any] | None = None
    tokens: int = 0

    def copy(self) -> _Stream:
        state = None
        if self.state is not None:
            state = {key: _copy_value(value) for key, value in self.state.items() if key != "host"}
        return _Stream([dict(table) for table in self.outliers], state, self.tokens)


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.copy() if isinstance(value, np.ndarray) else value.clone()
    if isinstance(value, list):
        return [_copy_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _copy_value(item) for key, item in value.items()}
    return value


class LayerAccumulator:
    """Streaming statistics of one layer's input for several k (see the module docstring).

    Parameters
    ----------
    name
        The layer's module name.
    in_features, out_features
        Its shape.
    ks
        The k values.
    schemes
        Codes whose SPEC §5 totals :meth:`result` reports.
    window
        Window of the windowed sparsity.
    block_sizes
        Block sizes of the channel-activity model.
    layer
        The float ``nn.Linear`` (weight ``[out, in]``, optional bias) whose W8ASpike
        output error is measured; None measures no error.
    scales
        Released W8ASpike scales ``[out, in/128, 1]`` for ``layer``, or None (the
        weights are then quantized with ``max|w| / 127`` per group, SPEC §4).
    error_rows, error_stride
        Per :meth:`update` the output error is measured on ``ceil(n / error_stride)``
        evenly spaced rows, at most ``error_rows``; ``error_rows=None`` uses every row.
    backend
        ``"numba"`` (CPU) or ``"torch"`` (any device); None picks ``"numba"`` for CPU
        rows. Both give identical counts.
    """

    def __init__(
        self,
        name: str,
        in_features: int,
        out_features: int,
        ks: Sequence[float],
        *,
        schemes: Sequence[str] = DEFAULT_SCHEMES,
        window: int = 3,
        block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
        layer: nn.Module | None = None,
        scales: torch.Tensor | None = None,
        error_rows: int | None = DEFAULT_ERROR_ROWS,
        error_stride: int = DEFAULT_ERROR_STRIDE,
        backend: str | None = None,
    ) -> None:
        self.name = name
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.ks = tuple(positive_finite(k, "k") for k in ks)
        if not self.ks:
            raise SpikecodeError("at least one k is needed")
        self.schemes = tuple(get_scheme(s).name for s in schemes)
        self.window = window
        self.block_sizes = check_block_sizes(block_sizes)
        self._base = math.gcd(*self.block_sizes)
        if error_rows is not None and (
            isinstance(error_rows, bool) or not isinstance(error_rows, int) or error_rows < 1
        ):
            raise SpikecodeError(
                f"error_rows must be a positive integer or None, not {error_rows!r}"
            )
        self.error_rows = error_rows
        if isinstance(error_stride, bool) or not isinstance(error_stride, int) or error_stride < 1:
            raise SpikecodeError(f"error_stride must be a positive integer, not {error_stride!r}")
        self.error_stride = error_stride
        if backend not in (None, "numba", "torch"):
            raise SpikecodeError(f"backend must be 'numba' or 'torch', not {backend!r}")
        self._backend = backend
        self._error: _ErrorSpec | None = None
        if layer is not None:
            weight = getattr(layer, "weight", None)
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (
                self.out_features,
                self.in_features,
            ):
                raise SpikecodeError(
                    "the layer's weight must be a [out_features, in_features] tensor", layer=name
                )
            self._error = _ErrorSpec(weight, getattr(layer, "bias", None), scales)
        self.tokens = 0
        self._stream = _Stream([{} for _ in self.ks])
        # Set while this layer reads the same input as an earlier one (see StatsAccumulator).
        self._source: LayerAccumulator | None = None
        self._snapshot: _Stream | None = None
        self._buffer: torch.Tensor | None = None
        self._pending_rows = 0
        self._err: dict[str, Any] | None = None
        self.error_tokens = 0

    # ------------------------------------------------------------------ streaming

    def update(self, rows: torch.Tensor) -> None:
        """Add rows ``[n, in_features]`` (real tokens only) to the statistics."""
        if (
            not isinstance(rows, torch.Tensor)
            or rows.ndim != 2
            or rows.shape[1] != self.in_features
        ):
            raise SpikecodeError(
                f"rows must be a [n, {self.in_features}] tensor",
                layer=self.name,
                shape=tuple(getattr(rows, "shape", ())),
            )
        if not rows.dtype.is_floating_point:
            raise SpikecodeError("rows must be floating point", layer=self.name, dtype=rows.dtype)
        n = rows.shape[0]
        if n == 0:
            return
        rows = rows.detach()
        backend = self._backend or ("numba" if rows.device.type == "cpu" else "torch")
        with torch.no_grad():
            if self._source is None:  # else the source layer counted these very rows
                if backend == "numba":
                    self._update_numba(rows)
                else:
                    self._update_torch(rows)
                self._stream.tokens += n
            self.tokens += n
            if self._error is not None:
                self._hold_error_rows(rows)

    def link(self, source: LayerAccumulator) -> None:
        """Read ``source``'s statistics: this layer's input is the same as the source's.

        Only before this layer has seen any row; :meth:`update` then counts nothing but
        its tokens and output-error rows until :meth:`unlink`.
        """
        if self.tokens or source._source is not None or source.ks != self.ks:
            raise SpikecodeError("internal: a layer can only share a fresh, unshared stream")
        if (source.schemes, source.window, source.block_sizes) != (
            self.schemes,
            self.window,
            self.block_sizes,
        ):
            raise SpikecodeError("internal: shared streams need the same settings")
        self._source = source
        self._stream = source._stream

    def unlink(self) -> None:
        """Continue on an own copy of the source's stream as it was before this batch."""
        source = self._source
        if source is None:
            return
        if source._snapshot is None or source._snapshot.tokens != self.tokens:
            raise SpikecodeError("internal: no snapshot of the shared stream for this batch")
        self._stream = source._snapshot.copy()
        self._source = None

    def snapshot(self) -> None:
        """Remember this stream as it is now (the start of a batch), for :meth:`unlink`."""
        self._snapshot = self._stream.copy()

    def _state_for(self, backend: str, rows: torch.Tensor) -> dict[str, Any]:
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        if self._stream.state is None:
            self._stream.state = (
                self._numba_state(dtype)
                if backend == "numba"
                else self._torch_state(dtype, rows.device)
            )
        elif (self._stream.state["backend"], self._stream.state["dtype"]) != (backend, dtype):
            raise SpikecodeError(
                "a layer's inputs must keep one device kind and compute dtype during calibration",
                layer=self.name,
            )
        return self._stream.state

    def _numba_state(self, dtype: torch.dtype) -> dict[str, Any]:
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        chunks = max(1, numba.get_num_threads())
        order = sorted(range(len(self.ks)), key=lambda i: self.ks[i])
        groups = []
        for start in range(0, len(order), _GROUP):
            real = order[start : start + _GROUP]
            # The kernel takes exactly _GROUP values in ascending order: repeat the smallest
            # k in front (those slots are computed and ignored).
            members = [-1] * (_GROUP - len(real)) + real
            ks = np.array([self.ks[real[0] if i < 0 else i] for i in members], dtype=np.float64)
            size = _GROUP
            groups.append(
                {
                    "members": members,
                    "ks": ks,
                    "ratios": (ks[:-1] / ks[-1]).astype(np_dtype),
                    "joint": np.zeros(
                        (chunks, (2 * _JOINT_LIMIT + 1) * 3 ** (size - 1) + 1), np.int64
                    ),
                    "wide": np.zeros((chunks, size, 2 * _DENSE_LIMIT + 1), np.int64),
                    "spill": np.zeros((chunks, _SPILL, 2), np.int64),
                    # count, shift, shifted sum and sum of squares, min, max of Vth
                    "moments": np.tile(
                        np.array([0.0, 0.0, 0.0, 0.0, np.inf, -np.inf]), (chunks, size, 1)
                    ),
                    "vth_hist": np.zeros((chunks, size, len(VTH_EDGES) - 1), np.int64),
                    "levels": np.zeros((chunks, len(self.block_sizes), size + 1), np.int64),
                }
            )
        # Block sizes ascending; each takes its maxima from the largest smaller size that
        # divides it (or from the base blocks of gcd(sizes) channels).
        size_order = sorted(range(len(self.block_sizes)), key=lambda i: self.block_sizes[i])
        sizes = [self.block_sizes[i] for i in size_order]
        source = [
            max((t for t in range(s) if sizes[s] % sizes[t] == 0), default=-1)
            for s in range(len(sizes))
        ]
        state: dict[str, Any] = {"backend": "numba", "dtype": dtype}
        state.update(
            groups=groups,
            np_dtype=np_dtype,
            edges=np.asarray(VTH_EDGES, dtype=np.float64),
            sizes=np.asarray(sizes, dtype=np.int64),
            source=np.asarray(source, dtype=np.int64),
            size_order=size_order,
        )
        return state

    def _torch_state(self, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        n_k = len(self.ks)

        def zeros(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        state: dict[str, Any] = {
            "backend": "torch",
            "dtype": dtype,
            "mean": zeros(n_k),
            "m2": zeros(n_k),
            "min": None,
            "max": None,
        }
        state.update(
            hist=zeros(n_k, 2 * _DENSE_LIMIT + 3, dtype=torch.int64),
            vth_hist=zeros(n_k, len(VTH_EDGES) - 1, dtype=torch.int64),
            fetched=zeros(n_k, len(self.block_sizes), dtype=torch.int64),
            edges=torch.tensor(VTH_EDGES, dtype=torch.float64, device=device),
            ks=torch.tensor(self.ks, dtype=torch.float64, device=device),
        )
        return state

    def _merge_vth(self, state: dict[str, Any], vth64: torch.Tensor, n: int) -> None:
        """Chan's parallel update of the running mean / M2, plus min and max (torch path)."""
        mean_b = vth64.mean(dim=1)
        m2_b = ((vth64 - mean_b[:, None]) ** 2).sum(dim=1)
        low, high = vth64.amin(dim=1), vth64.amax(dim=1)
        n_a = self._stream.tokens
        total = n_a + n
        delta = mean_b - state["mean"]
        state["mean"] = state["mean"] + delta * (n / total)
        state["m2"] = state["m2"] + m2_b + delta * delta * (n_a * n / total)
        state["min"] = low if state["min"] is None else torch.minimum(state["min"], low)
        state["max"] = high if state["max"] is None else torch.maximum(state["max"], high)

    def _non_finite(self, bad: int) -> SpikecodeError:
        return SpikecodeError(
            f"the input of layer {self.name} holds NaN or Inf in {bad} token(s)", layer=self.name
        )

    def _update_numba(self, rows: torch.Tensor) -> None:
        state = self._state_for("numba", rows)
        x = rows.to(device="cpu", dtype=state["dtype"]).contiguous().numpy()
        for group in state["groups"]:
            vth = np.empty((_GROUP, x.shape[0]), dtype=x.dtype)
            flags = _count_rows(
                x,
                group["ratios"],
                group["ks"],
                F.VTH_MIN,
                F.VTH_MAX,
                _JOINT_LIMIT,
                _DENSE_LIMIT,
                self._base,
                state["sizes"],
                state["source"],
                state["edges"],
                group["joint"],
                group["wide"],
                group["vth_hist"],
                group["levels"],
                group["spill"],
                group["moments"],
                vth,
            )
            if flags[-1]:
                raise self._non_finite(int(flags[-1]))
            spilled = flags[:-1]
            if not spilled.any():
                continue
            real = [(g, member) for g, member in enumerate(group["members"]) if member >= 0]
            if spilled.max() > _SPILL:
                # Too many counts beyond the dense range for the buffers: recount exactly.
                for g, member in real:
                    counts = np.rint(x / vth[g][:, None])
                    self._add_outliers(member, counts[np.abs(counts) > _DENSE_LIMIT])
            else:
                entries = np.concatenate(
                    [group["spill"][ch, :n] for ch, n in enumerate(spilled.tolist())]
                )
                for g, member in real:
                    self._add_outliers(member, entries[entries[:, 0] == g, 1])

    def _update_torch(self, rows: torch.Tensor) -> None:
        state = self._state_for("torch", rows)
        x = rows.to(state["dtype"])
        n_k = len(self.ks)
        mean = torch.mean(x.abs(), dim=-1, dtype=torch.float64)
        if not bool(torch.isfinite(mean).all()):
            raise self._non_finite(int((~torch.isfinite(mean)).sum()))
        vth = _vth_table(mean, state["ks"], state["dtype"])
        bins = state["hist"].shape[1]
        clamped = []
        for kk in range(n_k):
            q = torch.round(x / vth[kk].unsqueeze(1))
            q.clamp_(-_DENSE_LIMIT - 1, _DENSE_LIMIT + 1).add_(_DENSE_LIMIT + 1)
            counted = torch.bincount(q.to(torch.int64).reshape(-1), minlength=bins)
            state["hist"][kk] += counted
            clamped.append(counted[0] + counted[-1])
        vth64 = vth.to(torch.float64)
        n_vth = state["vth_hist"].shape[1]
        bucket = (torch.bucketize(vth64, state["edges"], right=True) - 1).clamp_(0, n_vth - 1)
        offsets = torch.arange(n_k, device=x.device).unsqueeze(1) * n_vth
        state["vth_hist"] += torch.bincount(
            (bucket + offsets).reshape(-1), minlength=n_k * n_vth
        ).reshape(n_k, n_vth)
        state["fetched"] += self._fetched_torch(x, vth)
        self._merge_vth(state, vth64, x.shape[0])
        # One small transfer per call: which k produced counts beyond the dense range.
        for kk, amount in enumerate(torch.stack(clamped).tolist()):
            if amount:
                counts = torch.round(x / vth[kk].unsqueeze(1))
                self._add_outliers(kk, counts[counts.abs() > _DENSE_LIMIT].cpu().numpy())

    def _fetched_torch(self, x: torch.Tensor, vth: torch.Tensor) -> torch.Tensor:
        """Weight columns fetched under block skipping, ``[k, block size]``."""
        n, cols = x.shape
        base = self._base
        n_base = -(-cols // base)
        a = x.abs()
        if n_base * base != cols:
            a = torch.nn.functional.pad(a, (0, n_base * base - cols))
        block_max = a.reshape(n, n_base, base).amax(dim=-1)
        columns = []
        for size in self.block_sizes:
            step = size // base
            n_blocks = -(-n_base // step)
            m = block_max
            if n_blocks * step != n_base:
                m = torch.nn.functional.pad(m, (0, n_blocks * step - n_base))
            m = m.reshape(n, n_blocks, step).amax(dim=-1)
            lengths = torch.clamp(cols - torch.arange(n_blocks, device=x.device) * size, max=size)
            active = (m.unsqueeze(0) / vth.unsqueeze(2)) > 0.5
            columns.append((active.to(torch.int64) * lengths).sum(dim=(1, 2)))
        return torch.stack(columns, dim=1)

    def _add_outliers(self, kk: int, values: np.ndarray) -> None:
        found, times = np.unique(values.astype(np.int64), return_counts=True)
        table = self._stream.outliers[kk]
        for value, count in zip(found.tolist(), times.tolist(), strict=True):
            table[value] = table.get(value, 0) + count

    # ------------------------------------------------------------------ output error

    def _hold_error_rows(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        cap = n if self.error_rows is None else min(self.error_rows, -(-n // self.error_stride))
        r = min(n, cap)
        # Evenly spaced, centred: row floor((i + 1/2) n / r) for i < r (all distinct).
        index = torch.tensor([(2 * i + 1) * n // (2 * r) for i in range(r)], device=rows.device)
        buffer = self._buffer
        if buffer is None or buffer.dtype != rows.dtype or buffer.device != rows.device:
            self._flush_error()
            # One preallocated buffer per layer: many small tensors kept across batches
            # would fragment the heap around the large transient activations.
            capacity = ERROR_FLUSH_BYTES // (self.in_features * rows.element_size())
            capacity = max(1, min(ERROR_FLUSH_ROWS, capacity))
            buffer = self._buffer = rows.new_empty((capacity, self.in_features))
        done = 0
        while done < r:
            take = min(r - done, buffer.shape[0] - self._pending_rows)
            torch.index_select(
                rows,
                0,
                index[done : done + take],
                out=buffer[self._pending_rows : self._pending_rows + take],
            )
            self._pending_rows += take
            done += take
            if self._pending_rows == buffer.shape[0]:
                self._flush_error()

    def _quantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The layer's INT8 weights times their scales (SPEC §4), in ``dtype``."""
        spec = self._error
        assert spec is not None
        weight = spec.weight.detach()
        try:
            if spec.scales is not None:
                w_q, scales = F.release_weight_to_int8(weight, spec.scales)
                return F.dequantize_weight_int8(w_q, scales).to(dtype)
            if weight.device.type != "cpu":
                w_q, scales = F.quantize_weight_int8(weight, weight_group_size(self.in_features))
                return F.dequantize_weight_int8(w_q, scales).to(dtype)
            return fake_quantize_weight(weight, weight_group_size(self.in_features)).to(dtype)
        except SpikecodeError as err:
            raise SpikecodeError(err.message, layer=self.name, **err.context) from None

    def _flush_error(self) -> None:
        if not self._pending_rows:
            return
        spec = self._error
        assert spec is not None
        assert self._buffer is not None
        x = self._buffer[: self._pending_rows]
        self._pending_rows = 0
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        device = x.device
        weight = spec.weight.detach().to(device=device, dtype=dtype)
        bias = None if spec.bias is None else spec.bias.detach().to(device=device, dtype=dtype)
        w_fq = self._quantized_weight(dtype).to(device)
        ks = torch.tensor(self.ks, dtype=torch.float64, device=device)
        vth = _vth_table(torch.mean(x.abs(), dim=-1, dtype=torch.float64), ks, dtype)
        spiked = torch.round(x.unsqueeze(0) / vth.unsqueeze(2)) * vth.unsqueeze(2)
        y_float = torch.nn.functional.linear(x, weight, bias).to(torch.float64)
        y_spike = torch.nn.functional.linear(spiked, w_fq, bias).to(torch.float64)
        diff = ((y_spike - y_float.unsqueeze(0)) ** 2).sum(dim=(1, 2))
        reference = (y_float**2).sum()
        dot = (y_spike * y_float.unsqueeze(0)).sum(dim=2)
        norms = torch.linalg.vector_norm(y_spike, dim=2) * torch.linalg.vector_norm(y_float, dim=1)
        spike_zero = torch.linalg.vector_norm(y_spike, dim=2) == 0
        float_zero = (torch.linalg.vector_norm(y_float, dim=1) == 0).unsqueeze(0)
        # Cosine of two zero vectors: 1 (identical); of one zero vector: 0.
        cosine = torch.where(
            spike_zero | float_zero,
            (spike_zero & float_zero).to(torch.float64),
            dot / torch.where(norms > 0, norms, 1.0),
        ).sum(dim=1)
        if self._err is None:
            self._err = {"diff": diff, "reference": reference, "cosine": cosine}
        else:
            self._err["diff"] = self._err["diff"] + diff
            self._err["reference"] = self._err["reference"] + reference
            self._err["cosine"] = self._err["cosine"] + cosine
        self.error_tokens += x.shape[0]

    # ------------------------------------------------------------------ result

    def state_nbytes(self) -> int:
        """Bytes of accumulated state (histograms and sums), excluding held error rows."""
        if self._stream.state is None:
            return 0
        total = 0
        for value in self._stream.state.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
        return total + 16 * sum(len(table) for table in self._stream.outliers)

    def result(self) -> LayerStats:
        """The layer's statistics so far (consumes the rows held for the error)."""
        histograms = self.histograms()
        stats = {
            scheme: stats_from_histograms(histograms, scheme, window=self.window)
            for scheme in self.schemes
        }
        return self._assemble(histograms, stats)

    def histograms(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per k: the distinct counts seen and how many elements hold each (exact)."""
        if self._stream.state is None or self.tokens == 0:
            raise SpikecodeError(
                f"layer {self.name} received no input; exclude it if the model never calls it",
                layer=self.name,
            )
        dense = self._host()["hist"]
        result = []
        for kk in range(len(self.ks)):
            values, times = _nonzero_bins(dense[kk])
            table = self._stream.outliers[kk]
            if table:
                extra = np.array(sorted(table), dtype=np.int64)
                counts = np.array([table[v] for v in extra.tolist()], dtype=np.int64)
                values = np.concatenate([extra[extra < 0], values, extra[extra > 0]])
                times = np.concatenate([counts[extra < 0], times, counts[extra > 0]])
            if int(times.sum()) != self.tokens * self.in_features or (
                self._stream.tokens != self.tokens
            ):
                raise SpikecodeError(
                    "internal count mismatch in the calibration histogram",
                    layer=self.name,
                    counted=int(times.sum()),
                    elements=self.tokens * self.in_features,
                )
            result.append((values, times))
        return result

    def _host(self) -> dict[str, Any]:
        """Accumulated state on the host, per k in :attr:`ks` order."""
        state = self._stream.state
        assert state is not None
        if "host" in state and state["host"][0] == self._stream.tokens:
            return state["host"][1]
        host: dict[str, Any] = {}
        if state["backend"] == "torch":
            for key in ("hist", "vth_hist", "fetched", "mean", "m2", "min", "max"):
                host[key] = state[key].cpu().numpy()
        else:
            n_k = len(self.ks)
            for key in ("mean", "m2", "min", "max"):
                host[key] = np.zeros(n_k, dtype=np.float64)
            host["hist"] = np.zeros((n_k, 2 * _DENSE_LIMIT + 3), dtype=np.int64)
            host["vth_hist"] = np.zeros((n_k, len(VTH_EDGES) - 1), dtype=np.int64)
            host["fetched"] = np.zeros((n_k, len(self.block_sizes)), dtype=np.int64)
            for group in state["groups"]:
                real = [(g, m) for g, m in enumerate(group["members"]) if m >= 0]
                slots, members = [g for g, _ in real], [m for _, m in real]
                host["hist"][members, 1:-1] += group["wide"].sum(axis=0)[slots]
                host["vth_hist"][members] += group["vth_hist"].sum(axis=0)[slots]
                for g, member in real:
                    _, mean, m2, low, high = _merge_moments(group["moments"][:, g])
                    host["mean"][member], host["m2"][member] = mean, m2
                    host["min"][member], host["max"][member] = low, high
                # A block of level l is fetched at the l largest k of the group.
                levels = group["levels"].sum(axis=0)  # [sorted size, level]
                at_least = np.cumsum(levels[:, ::-1], axis=1)[:, ::-1]  # level >= l
                for g, member in zip(slots, members, strict=True):
                    fetched = at_least[:, _GROUP - g]
                    host["fetched"][member, state["size_order"]] += fetched
                joint = group["joint"].sum(axis=0)[:-1]  # the last bin counts slow elements
                _add_joint(host["hist"], group["members"], joint, group["ratios"])
            # The end bins of the dense histogram count the clamped elements, which the
            # outlier tables hold exactly.
            host["hist"][:, 0] = host["hist"][:, -1] = 0
        if state["backend"] == "torch":
            host["hist"][:, 0] = host["hist"][:, -1] = 0
        state["host"] = (self._stream.tokens, host)
        return host

    def _assemble(
        self,
        histograms: Sequence[tuple[np.ndarray, np.ndarray]],
        stats: Mapping[str, Sequence[SpikeStats]],
    ) -> LayerStats:
        if self._error is not None:
            with torch.no_grad():
                self._flush_error()
        host = self._host()
        err = None
        if self._err is not None:
            err = {key: value.cpu().numpy() for key, value in self._err.items()}
        by_k = {}
        for kk, k in enumerate(self.ks):
            by_k[k_key(k)] = self._k_stats(
                kk, histograms[kk], {scheme: stats[scheme][kk] for scheme in stats}, host, err
            )
        return LayerStats(
            name=self.name,
            family=layer_family(self.name),
            in_features=self.in_features,
            out_features=self.out_features,
            tokens=self.tokens,
            by_k=MappingProxyType(by_k),
            error_tokens=self.error_tokens,
        )

    def _k_stats(
        self,
        kk: int,
        histogram: tuple[np.ndarray, np.ndarray],
        schemes: Mapping[str, SpikeStats],
        host: dict[str, Any],
        err: dict[str, Any] | None,
    ) -> KStats:
        values, times = histogram
        elements = self.tokens * self.in_features
        inside = (values >= -COUNT_LIMIT) & (values <= COUNT_LIMIT)
        bins = np.zeros(2 * COUNT_LIMIT + 1, dtype=np.int64)
        bins[values[inside] + COUNT_LIMIT] = times[inside]
        histogram = CountHistogram(
            offset=-COUNT_LIMIT,
            counts=tuple(int(v) for v in bins),
            below=int(times[values < -COUNT_LIMIT].sum()),
            above=int(times[values > COUNT_LIMIT].sum()),
        )
        zeros = int(times[values == 0].sum())
        activity = ChannelActivity(
            tokens=self.tokens,
            in_features=self.in_features,
            active_channels=elements - zeros,
            block_fetched_channels={
                size: int(host["fetched"][kk, s]) for s, size in enumerate(self.block_sizes)
            },
        )
        vth = VthSummary(
            mean=float(host["mean"][kk]),
            std=math.sqrt(max(float(host["m2"][kk]), 0.0) / self.tokens),
            min=float(host["min"][kk]),
            max=float(host["max"][kk]),
            edges=VTH_EDGES,
            counts=tuple(int(v) for v in host["vth_hist"][kk]),
        )
        rel_error = cosine = None
        if err is not None:
            reference, diff = float(err["reference"]), float(err["diff"][kk])
            # All-zero float outputs: no error if the spiked ones are zero too, else 100 %.
            rel_error = math.sqrt(diff / reference) if reference > 0 else float(diff != 0)
            cosine = float(err["cosine"][kk]) / self.error_tokens
        return KStats(
            vth=vth,
            count_histogram=histogram,
            max_abs_count=int(np.abs(values).max()),
            output_rel_error=rel_error,  # type: ignore[arg-type]
            output_cosine=cosine,  # type: ignore[arg-type]
            activity=activity,
            schemes=MappingProxyType(dict(schemes)),
        )


def _merge_moments(parts: np.ndarray) -> tuple[float, float, float, float, float]:
    """Merge per-chunk ``[count, shift, Σ(v - shift), Σ(v - shift)², min, max]`` rows.

    Returns count, mean, M2 (sum of squared deviations), min and max (Chan's merge).
    """
    count = mean = m2 = 0.0
    for n_b, shift, s1, s2, _, _ in parts.tolist():
        if n_b == 0:
            continue
        mean_b = shift + s1 / n_b
        m2_b = max(s2 - s1 * s1 / n_b, 0.0)
        total = count + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * count * n_b / total
        count = total
    return count, mean, m2, float(parts[:, 4].min()), float(parts[:, 5].max())


def _nonzero_bins(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and counts of the non-empty inner bins of a dense histogram (offset L + 1)."""
    inner = dense[1:-1]
    nonzero = np.flatnonzero(inner)
    return nonzero.astype(np.int64) - _DENSE_LIMIT, inner[nonzero].astype(np.int64)


def _add_joint(
    hist: np.ndarray, members: Sequence[int], joint: np.ndarray, ratios: np.ndarray
) -> None:
    """Add a joint table of :func:`_count_rows` to the per-k dense histograms.

    Decodes ``key = ((c_top + L)·3 + d_0 + 1)·3 + …`` and rebuilds
    ``c_g = rint(c_top · r_g) + d_g`` with the kernel's own arithmetic (compute dtype).
    """
    keys = np.flatnonzero(joint)
    times = joint[keys]
    size = len(members)
    deltas = []
    rest = keys.astype(np.int64)
    for _ in range(size - 1):
        deltas.append(rest % 3 - 1)
        rest = rest // 3
    deltas.reverse()
    c_top = rest - _JOINT_LIMIT
    offset = _DENSE_LIMIT + 1
    np.add.at(hist[members[-1]], c_top + offset, times)
    top = c_top.astype(ratios.dtype)
    for g in range(size - 1):
        if members[g] < 0:  # a repeat of the largest k that pads the group
            continue
        predicted = np.rint(top * ratios[g]).astype(np.int64)
        np.add.at(hist[members[g]], predicted + deltas[g] + offset, times)


def _same_settings(a: LayerAccumulator, b: LayerAccumulator) -> bool:
    return (a.ks, a.schemes, a.window, a.block_sizes, b._source) == (
        b.ks,
        b.schemes,
        b.window,
        b.block_sizes,
        None,
    )


class StatsAccumulator:
    """One :class:`LayerAccumulator` per hooked layer; the callback of the capture hooks.

    Parameters
    ----------
    model
        The model whose layers are named in ``layers``.
    layers
        ``(name, in_features, out_features)`` (:attr:`LinearInputHooks.layers`).
    ks
        The k values for every layer, or a mapping ``name → k values``.
    with_error
        Measure each layer's W8ASpike output error (its module must have a ``weight``).
    scales
        Released W8ASpike scales per layer name (``LoadedModel.quant_scales``).
    **options
        ``schemes``, ``window``, ``block_sizes``, ``error_rows``, ``error_stride``,
        ``backend`` for every
        :class:`LayerAccumulator`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, int, int]],
        ks: Sequence[float] | Mapping[str, Sequence[float]],
        *,
        with_error: bool = True,
        scales: Mapping[str, torch.Tensor] | None = None,
        **options: Any,
    ) -> None:
        scales = scales or {}
        self.accumulators: dict[str, LayerAccumulator] = {}
        for name, n_in, n_out in layers:
            layer_ks = ks[name] if isinstance(ks, Mapping) else ks
            self.accumulators[name] = LayerAccumulator(
                name,
                n_in,
                n_out,
                layer_ks,
                layer=model.get_submodule(name) if with_error else None,
                scales=scales.get(name) if with_error else None,
                **options,
            )

        # Sharing of identical inputs (q/k/v read one tensor): only between batches
        # announced with begin_batch, and only as long as the input really is the same.
        self._batches = 0
        self._last: tuple[LayerAccumulator, torch.Tensor] | None = None

    def begin_batch(self) -> None:
        """Announce a new forward pass.

        Layers whose input equals, row for row, the input of the layer called just before
        them in the first batch (attention q/k/v, MLP gate/up) then share one stream of
        statistics instead of counting the same values again. Every later call is
        checked against its source's input with :func:`torch.equal`; a layer whose input
        ever differs continues on its own copy of the shared statistics as they stood
        before that batch, so the results are always those of counting each layer alone.
        Without this call nothing is shared.
        """
        self._batches += 1
        self._last = None
        sources = {acc._source for acc in self.accumulators.values()} - {None}
        for source in sources:
            source.snapshot()

    def __call__(self, name: str, rows: torch.Tensor) -> None:
        """Feed one hooked input (the :class:`LinearInputHooks` callback)."""
        acc = self.accumulators[name]
        last = self._last
        same = (
            last is not None
            and last[0] is not acc
            and last[1].shape == rows.shape
            and last[1].dtype == rows.dtype
            and last[1].device == rows.device
        )
        if self._batches == 1 and acc.tokens == 0 and acc._source is None:
            if same and _same_settings(acc, last[0]) and torch.equal(last[1], rows):
                acc.link(last[0])
        elif acc._source is not None and not (
            same and last[0] is acc._source and torch.equal(last[1], rows)
        ):
            acc.unlink()
        acc.update(rows)
        root = acc._source or acc
        self._last = (root, rows) if self._batches else None

    def results(self) -> list[LayerStats]:
        """Per-layer statistics, in layer order."""
        accumulators = list(self.accumulators.values())
        histograms = [acc.histograms() for acc in accumulators]
        flat = [h for per_layer in histograms for h in per_layer]
        schemes = dict.fromkeys(s for acc in accumulators for s in acc.schemes)
        computed = {
            scheme: iter(stats_from_histograms(flat, scheme, window=w))
            for scheme, w in ((scheme, accumulators[0].window) for scheme in schemes)
        }
        results = []
        for acc, per_layer in zip(accumulators, histograms, strict=True):
            stats = {scheme: [next(computed[scheme]) for _ in per_layer] for scheme in schemes}
            results.append(acc._assemble(per_layer, {s: stats[s] for s in acc.schemes}))
        return results


# --------------------------------------------------------------------------- driver


def _as_loaded(checkpoint: LoadedModel | nn.Module) -> LoadedModel:
    if isinstance(checkpoint, LoadedModel):
        return checkpoint
    if isinstance(checkpoint, nn.Module):
        return wrap_module(checkpoint)
    raise SpikecodeError(
        f"expected a LoadedModel or a torch.nn.Module, not {type(checkpoint).__name__}"
    )


def _as_data(data: CalibrationData | Sequence[str] | None, samples: int | None) -> CalibrationData:
    if data is None:
        return load_calibration_data(None, samples)
    if isinstance(data, CalibrationData):
        return data
    if isinstance(data, str | os.PathLike):
        return load_calibration_data(data, samples)
    return CalibrationData.from_texts(data)


def _check_ks(ks: Sequence[float]) -> tuple[float, ...]:
    if isinstance(ks, int | float):
        ks = [ks]
    values = tuple(positive_finite(k, "k") for k in ks)
    if not values:
        raise SpikecodeError("give at least one k")
    keys = [k_key(v) for v in values]
    if len(set(keys)) != len(keys):
        raise SpikecodeError(f"k values repeat: {', '.join(keys)}")
    return values


def checkpoint_info(loaded: LoadedModel) -> CheckpointInfo:
    """Provenance of a model for the stats file (folder, kind, model_type, dtype)."""
    model_type = getattr(loaded.config, "model_type", None)
    if model_type is None and loaded.kind == "gla_swa":
        model_type = "gla_swa"
    dtype = None
    for tensor in loaded.model.parameters():
        dtype = str(tensor.dtype).removeprefix("torch.")
        break
    return CheckpointInfo(
        path=None if loaded.path is None else str(loaded.path),
        kind=loaded.kind,
        model_type=model_type if isinstance(model_type, str) else None,
        dtype=dtype,
    )


def escape_names(names: Iterable[str]) -> tuple[str, ...]:
    """Patterns (fnmatch syntax) that match exactly these module names."""
    return tuple(glob.escape(name) for name in names)


def calibrate(
    checkpoint: LoadedModel | nn.Module,
    data: CalibrationData | Sequence[str] | str | os.PathLike[str] | None = None,
    *,
    k: Sequence[float] = DEFAULT_K,
    schemes: Sequence[str] = DEFAULT_SCHEMES,
    samples: int | None = DEFAULT_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    truncate: bool = False,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    error_rows: int | None = DEFAULT_ERROR_ROWS,
    error_stride: int = DEFAULT_ERROR_STRIDE,
    window: int = 3,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
) -> CalibrationStats:
    """Calibrate spike coding on a text set: per-layer statistics for several k and codes.

    Parameters
    ----------
    checkpoint
        A :func:`~spikecode.checkpoint.load_checkpoint` result (its tokenizer, config,
        W8ASpike scales and folder are used) or a bare module (then ``data`` must hold
        token ids). The model stays where it is; inputs go to its first parameter's
        device.
    data
        :class:`CalibrationData`, a list of texts, a file (see
        :func:`load_calibration_data`), or None for the bundled corpus.
    k
        The k values (SPEC §2); default the report's sweep 2, 2.5, 3, 3.5, 4.
    schemes
        Codes whose SPEC §5 totals are recorded (default bitwise-bidirectional).
    samples
        Use the first ``samples`` samples of a file or of the bundled corpus (128 as in
        the report); None: all.
    batch_size
        Samples per forward pass.
    max_length, truncate
        Length limit (default the model's ``max_position_embeddings``) and whether longer
        samples are cut rather than refused.
    include, exclude
        Layer selection (:func:`spikecode.capture.list_linear_layers`); ``lm_head`` is
        excluded by default (SPEC §1).
    error_rows, error_stride
        The output error is measured per batch and layer on one row in ``error_stride``
        (at least one), at most ``error_rows`` (None: on every row).
    window, block_sizes
        Window of the windowed sparsity; block sizes of the channel-activity model.
    progress
        Called with the number of samples of each batch once it has run.
    backend
        Force the counting backend (``"numba"`` or ``"torch"``); None chooses by device.

    Returns
    -------
    CalibrationStats
        Ready for :func:`spikecode.statsfile.save_stats`.

    Raises
    ------
    SpikecodeError
        Bad data, samples over the length limit, ids outside the vocabulary, texts
        without a tokenizer, patterns selecting nothing, a selected layer the model
        never calls, NaN or Inf activations.
    """
    loaded = _as_loaded(checkpoint)
    ks = _check_ks(k)
    scheme_names = tuple(dict.fromkeys(get_scheme(s).name for s in schemes))
    if not scheme_names:
        raise SpikecodeError("give at least one code (scheme)")
    calibration = _as_data(data, samples)
    tokenized = tokenize_data(calibration, loaded, max_length=max_length, truncate=truncate)
    model = loaded.model
    accumulator: StatsAccumulator | None = None

    def feed(name: str, rows: torch.Tensor) -> None:
        assert accumulator is not None
        accumulator(name, rows)

    hooks = LinearInputHooks(model, feed, include, exclude)
    accumulator = StatsAccumulator(
        model,
        hooks.layers,
        ks,
        with_error=True,
        scales=loaded.quant_scales,
        schemes=scheme_names,
        window=window,
        block_sizes=block_sizes,
        error_rows=error_rows,
        error_stride=error_stride,
        backend=backend,
    )
    trunk = _trunk(model, [name for name, _, _ in hooks.layers])
    device = _model_device(model)
    with torch.no_grad(), hooks:
        for ids, mask in padded_batches(tokenized, batch_size, device, _pad_id(loaded)):
            hooks.set_mask(mask)
            accumulator.begin_batch()
            _forward(trunk, ids, mask)
            if progress is not None:
                progress(ids.shape[0])
    layers = accumulator.results()
    return CalibrationStats.create(
        checkpoint=checkpoint_info(loaded),
        data=DataInfo(
            source=calibration.source,
            samples=len(tokenized.input_ids),
            tokens=tokenized.tokens,
            max_length=tokenized.max_length,
            truncated=tokenized.truncated,
        ),
        k=ks,
        schemes=scheme_names,
        window=window,
        block_sizes=accumulator.accumulators[layers[0].name].block_sizes,
        layers=layers,
        error_rows=error_rows,
        error_stride=None if error_rows is None else error_stride,
    )
