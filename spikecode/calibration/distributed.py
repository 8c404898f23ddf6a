"""Data-parallel calibration on ``torch.distributed`` (one process per device).

``torchrun --nproc-per-node N -m spikecode calibrate ...`` (or any program that has
initialized a process group and calls :func:`spikecode.calibration.calibrate`) runs one
model replica per process. The design:

- **Sharding by batch.** Every rank tokenizes the whole set and forms the same batches
  as one process would (longest first, ``batch_size`` samples); rank ``r`` of ``W`` runs
  batches ``r, r + W, r + 2W, …`` (:func:`~spikecode.calibration.padded_batches`,
  ``shard=(r, W)``). A batch is thus the same padded tensor whatever the
  number of ranks, so every activation, count and output-error row is the one a single
  process computes: the integer statistics of the result do not depend on the world
  size, and the float ones only through summation order.
- **Exact reduce.** Each rank turns its statistics into a version 2 stats object; the
  objects travel as JSON bytes (no pickle) with two ``all_gather`` calls on ``uint8``
  tensors, and every rank merges them in rank order with
  :func:`~spikecode.calibration.merge.merge_stats` (:func:`reduce_stats`, a pure
  function): histograms, activity and counts add up exactly, the Vth moments merge with
  Chan's formula, the output-error sums add up. Every rank returns the same result; the
  CLI writes it on rank 0 only.
- **Failures** do not hang the job: a rank that fails sends its error instead of its
  statistics, and every rank raises it.
- **Backends**: gloo for CPU, NCCL for CUDA (:func:`init_from_env` chooses by device).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from spikecode.calibration.merge import merge_stats
from spikecode.calibration.records import CalibrationStats, DataInfo
from spikecode.errors import SpikecodeError
from spikecode.io import parse_json

__all__ = ["active", "encode", "exchange", "init_from_env", "reduce_stats"]

_FAILED = b"\x00failed:"


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def active(distributed: bool | None) -> tuple[int, int] | None:
    """``(rank, world size)`` when calibration runs data-parallel, else None.

    Parameters
    ----------
    distributed
        True: a process group must be initialized; False: never; None: when one is
        initialized with more than one rank.
    """
    if distributed is False:
        return None
    dist = _dist()
    ready = dist.is_available() and dist.is_initialized()
    if not ready:
        if distributed:
            raise SpikecodeError(
                "distributed=True needs an initialized torch.distributed process group "
                "(run under torchrun, or call torch.distributed.init_process_group first)"
            )
        return None
    world = dist.get_world_size()
    if world == 1 and distributed is None:
        return None
    return dist.get_rank(), world


def init_from_env(device: str | None) -> tuple[tuple[int, int] | None, str | None]:
    """Join the process group that ``torchrun`` describes in the environment.

    Parameters
    ----------
    device
        The ``--device`` option: None or ``"cpu"`` uses gloo; ``"cuda"`` (or ``cuda:N``)
        uses NCCL and gives each process the GPU ``LOCAL_RANK``.

    Returns
    -------
    ((rank, world) or None, device)
        None when the environment describes no multi-process job (``WORLD_SIZE`` unset
        or 1); the device this process should use.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None, device
    dist = _dist()
    cuda = device is not None and device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise SpikecodeError(f"--device {device} under torchrun, but CUDA is not available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as err:
            raise SpikecodeError(f"cannot join the torchrun process group: {err}") from None
    return (dist.get_rank(), dist.get_world_size()), device


def _collective_device() -> torch.device:
    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def exchange(payload: bytes) -> list[bytes]:
    """All ranks' byte strings, in rank order (two ``all_gather`` of ``uint8`` tensors)."""
    dist = _dist()
    device = _collective_device()
    world = dist.get_world_size()
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(1, *lengths)
    padded = torch.zeros(longest, dtype=torch.uint8)
    if payload:
        padded[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    padded = padded.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [bytes(t[:n].cpu().numpy().tobytes()) for t, n in zip(gathered, lengths, strict=True)]


def encode(stats: CalibrationStats | None, error: BaseException | None = None) -> bytes:
    """One rank's contribution: its stats as JSON, nothing (no batch), or its error."""
    if error is not None:
        return _FAILED + f"{type(error).__name__}: {error}".encode()
    if stats is None:
        return b""
    return json.dumps(stats.to_dict(), allow_nan=False).encode()


def reduce_stats(payloads: Sequence[bytes], data: DataInfo) -> CalibrationStats:
    """Merge the ranks' contributions (:func:`encode`, in rank order) into one result.

    A pure function of its arguments: the distributed reduce without processes.

    Parameters
    ----------
    payloads
        One per rank: its stats as JSON, empty for a rank without batches, or an error.
    data
        The whole calibration set (every rank tokenized all of it); it replaces the
        merged ``data``, whose samples and tokens it must equal.

    Raises
    ------
    SpikecodeError
        A rank failed (its message is repeated), or no rank has statistics.
    """
    from spikecode.calibration.statsfile import _parse, _Reader

    for rank, payload in enumerate(payloads):
        if payload.startswith(_FAILED):
            message = payload[len(_FAILED) :].decode(errors="replace")
            raise SpikecodeError(f"calibration failed on rank {rank}: {message}", rank=rank)
    parts, labels = [], []
    for rank, payload in enumerate(payloads):
        if payload:
            raw = parse_json(payload.decode(), f"the statistics of rank {rank}")
            parts.append(_parse(raw, _Reader(f"rank {rank}")))
            labels.append(f"rank {rank}")
    if not parts:
        raise SpikecodeError("no rank calibrated any batch")
    # One model on every node, possibly at another local path: rank 0's path names it.
    first = parts[0].checkpoint
    parts = [replace(part, checkpoint=replace(part.checkpoint, path=first.path)) for part in parts]
    merged = merge_stats(parts, labels=labels)
    if (merged.data.samples, merged.data.tokens) != (data.samples, data.tokens):
        raise SpikecodeError(
            "internal: the ranks' shards do not add up to the calibration set",
            samples=f"{merged.data.samples}/{data.samples}",
        )
    return replace(merged, data=data)
