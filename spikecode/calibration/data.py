"""Calibration data: the text set, its tokenization and its batches.

SpikingBrain calibrates on a small text set (128 samples, SPEC §1). A set is a
:class:`CalibrationData` (texts, or token ids for a checkpoint without a tokenizer),
read from a text or JSONL file or the bundled corpus; :func:`tokenize_data` turns it into
token ids with the checkpoint's tokenizer, refusing samples longer than the model unless
asked to truncate; :func:`padded_batches` yields right-padded batches, longest first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikecode._validate import as_path, check_file_size
from spikecode.errors import LARGER, Remedy, SpikecodeError
from spikecode.io import parse_json, read_json
from spikecode.models.checkpoint import LoadedModel, wrap_module

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SAMPLES",
    "CalibrationData",
    "TokenizedData",
    "collect_checkpoint_inputs",
    "load_calibration_data",
    "model_max_length",
    "padded_batches",
    "tokenize_data",
]

#: SpikingBrain calibrates on 128 samples (SPEC §1).
DEFAULT_SAMPLES = 128
DEFAULT_BATCH_SIZE = 16
_TEXT_SUFFIXES_JSONL = (".jsonl", ".json")


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
        file, source = as_path(path), str(path)
    check_file_size(file, f"the calibration data {file.name}")
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
        record = parse_json(line, f"line {number} of the calibration data", source)
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
            raw = read_json(Path(loaded.path) / "config.json", "config.json")
        except SpikecodeError:
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
                    f"sample {i} has {len(ids)} tokens, more than the maximum of {limit}",
                    remedies=(Remedy("truncate", True), Remedy("max_length", LARGER)),
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
    tokenized: TokenizedData,
    batch_size: int,
    device: torch.device,
    pad_id: int = 0,
    *,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(input_ids, attention_mask)`` batches, longest samples first, right-padded.

    Every sample appears exactly once; the mask is 1 on real tokens and 0 on padding.
    ``shard=(rank, world)`` yields only batches ``rank, rank + world, …`` of that order
    (data-parallel calibration: each batch is the one a single process would run).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpikecodeError(f"batch_size must be a positive integer, not {batch_size!r}")
    order = sorted(range(len(tokenized.input_ids)), key=lambda i: -len(tokenized.input_ids[i]))
    for number, start in enumerate(range(0, len(order), batch_size)):
        if shard is not None and number % shard[1] != shard[0]:
            continue
        chunk = [tokenized.input_ids[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sample in enumerate(chunk):
            ids[row, : len(sample)] = torch.tensor(sample, dtype=torch.long)
            mask[row, : len(sample)] = 1
        yield ids.to(device), mask.to(device)


def pad_id(loaded: LoadedModel) -> int:
    """The tokenizer's padding id, or 0 (padding is masked, its id only has to be valid)."""
    pad = getattr(loaded.tokenizer, "pad_token_id", None) if loaded.tokenizer is not None else None
    return pad if isinstance(pad, int) and pad >= 0 else 0


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (where input ids go), CPU without any.

    Parameters offloaded by accelerate (on the ``meta`` device until their module runs)
    are skipped.
    """
    for tensor in model.parameters():
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def as_loaded(checkpoint: LoadedModel | nn.Module) -> LoadedModel:
    """A :class:`~spikecode.models.checkpoint.LoadedModel` as is, a module wrapped."""
    if isinstance(checkpoint, LoadedModel):
        return checkpoint
    if isinstance(checkpoint, nn.Module):
        return wrap_module(checkpoint)
    raise SpikecodeError(
        f"expected a LoadedModel or a torch.nn.Module, not {type(checkpoint).__name__}"
    )


def as_data(data: CalibrationData | Sequence[str] | None, samples: int | None) -> CalibrationData:
    """Calibration data from a set, a file path, texts, or None for the bundled corpus."""
    if data is None:
        return load_calibration_data(None, samples)
    if isinstance(data, CalibrationData):
        return data
    if isinstance(data, str | os.PathLike):
        return load_calibration_data(data, samples)
    return CalibrationData.from_texts(data)


def collect_checkpoint_inputs(
    checkpoint: LoadedModel | nn.Module,
    data: CalibrationData | Sequence[str] | str | os.PathLike[str] | None = None,
    samples: int | None = 4,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    truncate: bool = False,
) -> dict[str, np.ndarray]:
    """The input rows of a checkpoint's linear projections on a text set (small captures).

    The texts (or token ids) are tokenized and batched as for calibration
    (:func:`tokenize_data`, :func:`padded_batches`: longest samples first) and run through
    the model in eval mode; padding rows are dropped. What ``spikecode report``,
    ``spikecode plot`` and ``spikecode export events`` read from a checkpoint folder.

    Parameters
    ----------
    checkpoint
        A loaded checkpoint or a module.
    data, samples
        As for :func:`spikecode.calibration.calibrate`: a :class:`CalibrationData`, a
        text/JSONL file, texts, or None for the bundled corpus; the first ``samples``.
    include, exclude
        Projection selection (fnmatch patterns; default every linear layer but lm_head).
    batch_size, max_length, truncate
        As for calibration.

    Returns
    -------
    dict of str to numpy.ndarray
        Per projection, in model order, its input rows ``[tokens, in_features]`` (float32;
        float64 models stay float64), the same rows in the same order for every layer.
    """
    from spikecode.models.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, collect_linear_inputs

    loaded = as_loaded(checkpoint)
    tokenized = tokenize_data(
        as_data(data, samples), loaded, max_length=max_length, truncate=truncate
    )
    model = loaded.model.eval()
    pieces: dict[str, list[np.ndarray]] = {}
    for ids, mask in padded_batches(tokenized, batch_size, model_device(model), pad_id(loaded)):
        captured = collect_linear_inputs(
            model,
            {"input_ids": ids, "attention_mask": mask},
            DEFAULT_INCLUDE if include is None else include,
            DEFAULT_EXCLUDE if exclude is None else exclude,
        )
        for name, rows in captured.items():
            pieces.setdefault(name, []).append(rows)
    return {name: np.concatenate(parts) for name, parts in pieces.items()}
