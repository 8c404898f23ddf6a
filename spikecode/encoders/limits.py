"""Refuse absurd trains before allocating them (the size bound behind ``max_spikes``).

A sparse train holds one entry per spike plus a step index of ``rows · T + 1`` offsets; a
dense one holds ``T · elements`` int8 entries. Both sizes follow from the counts alone
(the spikes of each code are ``|c|`` or a popcount, SPEC §3), so an encoding that would
need gigabytes — counts near the int32 limit after ``k = 1e300``, or ``T = 10**12`` — is
refused at once with the numbers, instead of running for minutes or dying for memory.
``max_spikes=None`` goes ahead regardless.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode.encoders.schemes import TERNARY, Scheme
from spikecode.errors import SpikecodeError

__all__ = [
    "DEFAULT_MAX_SPIKES",
    "check_max_spikes",
    "check_plan_size",
    "check_train_size",
    "total_spikes",
]

#: Default bound on the entries of one train (spikes, step offsets, or dense entries):
#: 2**28 ≈ 268 million, about 1-3 GiB of memory.
DEFAULT_MAX_SPIKES = 1 << 28

_CHUNK = 1 << 20


def check_max_spikes(max_spikes: Any) -> int | None:
    """Validate a ``max_spikes`` argument: a positive integer, or None for no bound."""
    if max_spikes is None:
        return None
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, int | np.integer):
        raise SpikecodeError(f"max_spikes must be a positive integer or None, not {max_spikes!r}")
    if max_spikes < 1:
        raise SpikecodeError(f"max_spikes must be >= 1, not {max_spikes}")
    return int(max_spikes)


def total_spikes(rows: np.ndarray, scheme: Scheme, T: int, zero_point: int) -> int:
    """Number of spikes ``rows`` (int32 counts) produce under ``scheme`` with ``T`` steps.

    ``|c - zero_point|`` for binary/ternary, the set bits of ``|c|`` (or of the ``T``-bit
    two's-complement pattern) for the bitwise codes; counted in chunks so the check
    itself needs little memory.
    """
    flat = rows.reshape(-1)
    total = 0
    for start in range(0, flat.size, _CHUNK):
        v = flat[start : start + _CHUNK].astype(np.int64) - zero_point
        if scheme.code <= TERNARY:
            total += int(np.abs(v).sum())
        elif scheme.twos_complement:
            total += int(np.bitwise_count(v & ((1 << T) - 1)).sum())
        else:
            total += int(np.bitwise_count(np.abs(v)).sum())
    return total


def check_train_size(
    *,
    rows: int,
    T: int,
    spikes: int | None = None,
    elements: int | None = None,
    dense: bool = False,
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
    **context: Any,
) -> None:
    """Refuse a train larger than ``max_spikes`` entries before anything is allocated.

    Parameters
    ----------
    rows, T
        Rows (tokens) and steps: the step index has ``rows · T + 1`` entries.
    spikes
        Number of spikes (events), when known.
    elements
        Number of coded elements (counts); a dense train has ``T · elements`` entries.
    dense
        Whether the dense ``[T, *shape]`` array is being built instead of the events.
    max_spikes
        The bound; None for none.
    **context
        Facts for the error (scheme, shape, file).

    Raises
    ------
    SpikecodeError
        Some size exceeds ``max_spikes``; the message says which, how large, and how
        to go ahead (``max_spikes=``, ``--max-spikes``).
    """
    if max_spikes is None:
        return
    if dense and elements is not None:
        n = T * elements
        text = f"the dense train would hold T x elements = {T:,} x {elements:,} = {n:,} entries"
        sizes = [(n, text)]
    else:
        n = rows * T
        text = f"the train's step index would hold T x rows = {T:,} x {rows:,} = {n:,} entries"
        sizes = [(n, text)]
        if spikes is not None:
            sizes.append((spikes, f"the train would hold {spikes:,} spikes"))
        if elements is not None:
            sizes.append((elements, f"the train would cover {elements:,} elements"))
    for size, text in sizes:
        if size > max_spikes:
            raise SpikecodeError(
                f"{text}, more than max_spikes = {max_spikes:,}; "
                "raise max_spikes (--max-spikes) to go ahead",
                **context,
            )


def check_plan_size(plan: Any, max_spikes: Any, *, dense: bool = False) -> int | None:
    """Refuse an :class:`~spikecode.encoders.codec.EncodingPlan` too large to build.

    Called at the start of :func:`~spikecode.encode` and :func:`~spikecode.encode_dense`:
    the step index (or dense array) size is checked first, then the exact number of
    spikes, computed from the counts.

    Returns
    -------
    int or None
        That number of spikes, so that the caller need not count again; None when it was
        not counted (no bound, or a dense train).
    """
    bound = check_max_spikes(max_spikes)
    if bound is None:
        return None
    rows = plan.rows.shape[0]
    context = {"scheme": plan.scheme.name, "shape": plan.shape}
    if dense:
        check_train_size(
            rows=rows, T=plan.T, elements=plan.rows.size, dense=True, max_spikes=bound, **context
        )
        return None
    check_train_size(rows=rows, T=plan.T, max_spikes=bound, **context)
    spikes = total_spikes(plan.rows, plan.scheme, plan.T, plan.zero_point)
    check_train_size(rows=rows, T=plan.T, spikes=spikes, max_spikes=bound, **context)
    return spikes
