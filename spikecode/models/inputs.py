"""What the GLA-SWA model does with its inputs and labels around the layers (SPEC §7).

Pure functions over tensors: token-id checks, the padding mask of the cached past and
the new tokens (holes refused), the rotary positions (given, derived from the mask as
the release's ``generate()`` does, or counted from the cache's past), the left
alignment of right-padded prompts for generation, and the causal-LM loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from spikecode.errors import SpikecodeError

if TYPE_CHECKING:
    from spikecode.models.cache import GLASwaCache

__all__ = [
    "IGNORE_INDEX",
    "causal_lm_loss",
    "check_ids",
    "embed",
    "full_mask",
    "left_align",
    "positions_from_mask",
    "rotary_positions",
]

#: Label value that the loss skips (PyTorch's and transformers' convention).
IGNORE_INDEX = -100


def check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Refuse anything but a non-empty 2-D integer tensor of ids in ``[0, vocab_size)``."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise SpikecodeError(
            "input_ids must be a 2-D tensor [batch, seq]",
            shape=tuple(getattr(input_ids, "shape", ())),
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.numel() == 0:
        raise SpikecodeError(
            "input_ids must be a non-empty integer tensor",
            dtype=input_ids.dtype,
            shape=tuple(input_ids.shape),
        )
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise SpikecodeError(
            f"input_ids outside [0, {vocab_size}): min {low}, max {high}",
            vocab_size=vocab_size,
        )


def full_mask(
    batch: int,
    seq: int,
    device: torch.device,
    attention_mask: torch.Tensor | None,
    cache: GLASwaCache | None,
) -> torch.Tensor | None:
    """The bool mask of the cached past and the new tokens, ``[batch, past + seq]``, or None."""
    past = 0 if cache is None else cache.seen_tokens
    stored = None if cache is None else cache.mask
    if cache is not None and cache.sequences not in (None, batch):
        raise SpikecodeError(
            f"the cache holds {cache.sequences} sequences but the input has {batch}",
            shape=(batch, seq),
        )
    if attention_mask is None:
        if stored is None:
            return None
        new = torch.ones(batch, seq, dtype=torch.bool, device=device)
        return _refuse_holes(torch.cat([stored.to(device), new], dim=1))
    # Compared dimension by dimension: traced sizes (ONNX export) are not plain ints.
    if (
        not isinstance(attention_mask, torch.Tensor)
        or attention_mask.dim() != 2
        or attention_mask.shape[0] != batch
        or attention_mask.shape[1] not in (seq, past + seq)
    ):
        raise SpikecodeError(
            "attention_mask must be a tensor [batch, seq] (the new tokens) or "
            "[batch, past + seq] (with a cache)",
            shape=tuple(getattr(attention_mask, "shape", ())),
            expected=[(batch, seq)] if past == 0 else [(batch, seq), (batch, past + seq)],
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise SpikecodeError("attention_mask must hold only 0 and 1")
    mask = attention_mask.to(device=device, dtype=torch.bool)
    if mask.shape[1] != past + seq:
        before = (
            torch.ones(batch, past, dtype=torch.bool, device=mask.device)
            if stored is None
            else stored.to(mask.device)
        )
        mask = torch.cat([before, mask], dim=1)
    return _refuse_holes(mask)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions of a padded batch: real tokens count ``0, 1, …`` from each row's first.

    The cumulative sum of the mask minus one, as the release's ``generate()`` (and
    transformers') derive ``position_ids``; padding positions get 0 (their outputs
    are never used).

    Parameters
    ----------
    mask
        ``[batch, seq]`` 0/1 or bool.

    Returns
    -------
    torch.Tensor
        ``[batch, seq]`` int64.
    """
    keep = mask.to(torch.bool)
    return (keep.long().cumsum(-1) - 1).masked_fill(~keep, 0)


def rotary_positions(
    position_ids: torch.Tensor | None,
    mask: torch.Tensor | None,
    batch: int,
    seq: int,
    past: int,
    device: torch.device,
) -> torch.Tensor:
    """The rotary positions of the new tokens: ``[seq]`` shared or ``[batch, seq]``."""
    if position_ids is None:
        if mask is None:
            return torch.arange(past, past + seq, device=device)
        return positions_from_mask(mask)[:, -seq:]
    if (
        not isinstance(position_ids, torch.Tensor)
        or position_ids.dtype.is_floating_point
        or position_ids.dtype.is_complex
        or position_ids.dtype == torch.bool
        or position_ids.dim() not in (1, 2)
        or position_ids.shape[-1] != seq
        or (position_ids.dim() == 2 and position_ids.shape[0] not in (1, batch))
    ):
        raise SpikecodeError(
            "position_ids must be an integer tensor [batch, seq], [1, seq] or [seq] "
            "(the new tokens)",
            shape=tuple(getattr(position_ids, "shape", ())),
            expected=(batch, seq),
        )
    if bool((position_ids < 0).any()):
        raise SpikecodeError("position_ids must not be negative")
    return position_ids.to(device)


def _refuse_holes(mask: torch.Tensor) -> torch.Tensor:
    # Runs of ones per row: more than one means a padding hole inside the sequence.
    as_int = mask.to(torch.int8)
    runs = (as_int[:, 1:] > as_int[:, :-1]).sum(dim=1) + as_int[:, 0]
    if bool((runs > 1).any()):
        row = int((runs > 1).nonzero()[0, 0])
        raise SpikecodeError(
            "attention_mask has a padding hole (a 0 between tokens) in row "
            f"{row}; only left and right padding are supported (the release treats holes "
            "differently in its two layer kinds)",
            row=row,
        )
    return mask


def left_align(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the left, as decoding needs (new tokens follow the last).

    Rows already left-padded (or unpadded) are returned unchanged; a right-padded row is
    rolled so that its tokens end in the last column. A row with a padding hole is left
    as it is (the model refuses it with its own message).

    Parameters
    ----------
    ids, mask
        ``[batch, seq]`` token ids and 0/1 mask.

    Returns
    -------
    tuple of torch.Tensor
        The ids and the mask, new tensors only where a row moved.
    """
    keep = mask.to(torch.bool)
    lengths = keep.sum(dim=1)
    width = ids.shape[1]
    # A right-padded row: its tokens form one run that does not reach the last column.
    starts = (keep.long().cumsum(1) == 1) & keep
    first = torch.where(starts.any(1), starts.long().argmax(1), width)
    move = (lengths > 0) & ~keep[:, -1]
    if not bool(move.any()):
        return ids, mask
    ids, mask = ids.clone(), mask.clone()
    for row in move.nonzero().flatten().tolist():
        run = slice(int(first[row]), int(first[row] + lengths[row]))
        if not bool(keep[row, run].all()):
            continue  # a hole: refused later, with its own message
        shift = width - run.stop
        ids[row] = torch.roll(ids[row], shift)
        mask[row] = torch.roll(mask[row], shift)
    return ids, mask


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The standard causal-LM loss: logits at ``t`` predict ``labels[t + 1]``.

    Mean cross entropy over the labels that are not :data:`IGNORE_INDEX`, computed in
    float32 (float64 for float64 logits), as transformers' ``ForCausalLMLoss`` and the
    release's ``forward`` (which shifts the labels and pads them with the ignore index).

    Parameters
    ----------
    logits
        ``[batch, seq, vocab]``.
    labels
        ``[batch, seq]`` integer ids or ``-100``.

    Returns
    -------
    torch.Tensor
        A 0-d tensor.
    """
    batch, seq, vocab = logits.shape
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype.is_floating_point
        or labels.dtype == torch.bool
        or tuple(labels.shape) != (batch, seq)
    ):
        raise SpikecodeError(
            f"labels must be an integer tensor [batch, seq] = [{batch}, {seq}]",
            shape=tuple(getattr(labels, "shape", ())),
        )
    labels = labels.to(logits.device)
    real = labels != IGNORE_INDEX
    if bool(((labels < 0) & real).any() or (labels >= vocab).any()):
        raise SpikecodeError(f"labels must be in [0, {vocab}) or {IGNORE_INDEX}")
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).to(wide),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def embed(
    embeddings: torch.nn.Embedding,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
) -> torch.Tensor:
    """The layers' input: ``embeddings(input_ids)``, or ``inputs_embeds`` checked and cast.

    Exactly one of the two is given; ``inputs_embeds`` is ``[batch, seq, hidden]`` float,
    moved to the embeddings' device and dtype.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise SpikecodeError("give exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        check_ids(input_ids, embeddings.weight.shape[0])
        return embeddings(input_ids)
    width = embeddings.weight.shape[1]
    if (
        not isinstance(inputs_embeds, torch.Tensor)
        or inputs_embeds.dim() != 3
        or not inputs_embeds.dtype.is_floating_point
        or inputs_embeds.shape[2] != width
        or inputs_embeds.shape[1] == 0
    ):
        raise SpikecodeError(
            f"inputs_embeds must be a float tensor [batch, seq, {width}]",
            shape=tuple(getattr(inputs_embeds, "shape", ())),
        )
    weight = embeddings.weight
    return inputs_embeds.to(device=weight.device, dtype=weight.dtype)
