"""Array-level operations on the two layouts of a spike train (private).

The bottom of the encoders package: :mod:`~spikecode.encoders.train` and
:mod:`~spikecode.encoders.codec` both build on it, and it imports neither. The inputs are
trusted (validated by the public functions that call these).

Layouts (see :class:`~spikecode.encoders.train.SpikeTrain`):

* ``events``: ``step_ptr`` (int64 ``rows · T + 1``), ``feature`` (uint16/int32 per spike),
  ``signs`` (int8 per spike, signed codes only) — ``8 (rows · T + 1) + (2|4 [+1]) · spikes``
  bytes;
* ``planes``: ``planes`` (uint8 ``[T, rows, ceil(F/8)]``), ``sign_plane`` (uint8
  ``[rows, ceil(F/8)]``, signed codes only) — ``(T [+1]) · rows · ceil(F/8)`` bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode.encoders import _kernels, _plane_kernels
from spikecode.encoders.limits import check_max_spikes
from spikecode.errors import SpikecodeError

LAYOUTS: tuple[str, ...] = ("events", "planes")


def feature_dtype(features: int) -> type[np.integer]:
    """Storage dtype of feature ids: uint16 up to 65,536 features, else int32."""
    return np.uint16 if features <= 1 << 16 else np.int32


def plane_width(features: int) -> int:
    """Bytes per row of one plane: ``ceil(features / 8)``."""
    return (int(features) + 7) // 8


def layout_nbytes(rows: int, features: int, T: int, n_spikes: int, signed: bool) -> dict[str, int]:
    """Bytes each layout takes for a train of ``n_spikes`` spikes (the rule of ``auto``)."""
    per_spike = np.dtype(feature_dtype(features)).itemsize + (1 if signed else 0)
    width = plane_width(features)
    return {
        "events": 8 * (rows * T + 1) + per_spike * int(n_spikes),
        "planes": (T + (1 if signed else 0)) * rows * width,
    }


def choose_layout(rows: int, features: int, T: int, n_spikes: int, signed: bool) -> str:
    """``"planes"`` when the planes take no more bytes than the events, else ``"events"``."""
    size = layout_nbytes(rows, features, T, n_spikes, signed)
    return "planes" if size["planes"] <= size["events"] else "events"


def check_planes_size(plan: Any, width: int, max_spikes: Any) -> None:
    """Refuse, before allocating, planes of more than ``max_spikes`` bytes (None: no bound)."""
    bound = check_max_spikes(max_spikes)
    rows = int(np.prod(plan.shape[:-1], dtype=np.int64))
    n = plan.T * rows * width
    if bound is not None and n > bound:
        raise SpikecodeError(
            f"the train's planes would hold T x rows x ceil(F/8) = {plan.T:,} x {rows:,} x "
            f"{width:,} = {n:,} bytes, more than max_spikes = {bound:,}; "
            "raise max_spikes (--max-spikes) to go ahead",
            scheme=plan.scheme.name,
            shape=plan.shape,
        )


def no_signs(features: int) -> np.ndarray:
    """The empty sign plane the kernels take for the codes without -1 spikes."""
    return np.zeros((0, plane_width(features)), dtype=np.uint8)


def _int32(counts: np.ndarray, scheme: str, T: int) -> np.ndarray:
    info = np.iinfo(np.int32)
    if counts.size and (counts.min() < info.min or counts.max() > info.max):
        raise SpikecodeError("decoded counts exceed the int32 range", scheme=scheme, T=T)
    return counts.astype(np.int32)


def decode_events(
    step_ptr: np.ndarray,
    feature: np.ndarray,
    signs: np.ndarray,
    weights: np.ndarray,
    zero_point: int,
    rows: int,
    features: int,
    scheme: str,
) -> np.ndarray:
    """``zero_point + Σ_t w_t s_t`` of an events train, int32 ``[rows, features]``."""
    counts = np.empty((rows, features), dtype=np.int64)
    _kernels.decode_rows(feature, signs, step_ptr, weights, zero_point, counts)
    return _int32(counts, scheme, weights.shape[0])


def decode_planes(
    planes: np.ndarray,
    sign_plane: np.ndarray | None,
    weights: np.ndarray,
    zero_point: int,
    features: int,
    scheme: str,
) -> np.ndarray:
    """``zero_point + sign · Σ_t w_t bit_t`` of a planes train, int32 ``[rows, features]``."""
    counts = np.empty((planes.shape[1], features), dtype=np.int64)
    signs = no_signs(features) if sign_plane is None else sign_plane
    _plane_kernels.decode_planes(planes, signs, weights, zero_point, counts)
    return _int32(counts, scheme, weights.shape[0])


def events_from_planes(
    planes: np.ndarray, sign_plane: np.ndarray | None, features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events ``(step_ptr, feature, signs)`` of a planes train, canonical order."""
    per_step = _plane_kernels.plane_step_counts(planes)
    step_ptr = np.zeros(per_step.size + 1, dtype=np.int64)
    np.cumsum(per_step, out=step_ptr[1:])
    n = int(step_ptr[-1])
    feature = np.empty(n, dtype=feature_dtype(features))
    signed = sign_plane is not None
    signs = np.empty(n if signed else 0, dtype=np.int8)
    _plane_kernels.planes_to_events(
        planes, sign_plane if signed else no_signs(features), step_ptr, feature, signs
    )
    return step_ptr, feature, signs


def planes_from_events(
    step_ptr: np.ndarray,
    feature: np.ndarray,
    signs: np.ndarray,
    T: int,
    rows: int,
    features: int,
    signed: bool,
    scheme: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The planes ``(planes, sign_plane)`` of an events train (``sign_plane`` None if unsigned).

    Raises
    ------
    SpikecodeError
        An element fires both +1 and -1: one sign bit per element cannot hold that.
    """
    width = plane_width(features)
    planes = np.zeros((T, rows, width), dtype=np.uint8)
    sign_plane = np.zeros((rows, width), dtype=np.uint8) if signed else no_signs(features)
    conflict = _plane_kernels.events_to_planes(
        feature, signs if signed else np.zeros(0, np.int8), step_ptr, planes, sign_plane
    )
    bad = np.flatnonzero(conflict)
    if bad.size:
        raise SpikecodeError(
            f"{bad.size} row(s) have elements that fire both +1 and -1; the planes layout "
            "keeps one sign per element (keep this train as events)",
            scheme=scheme,
        )
    return planes, (sign_plane if signed else None)


def dense_from_planes(
    planes: np.ndarray, sign_plane: np.ndarray | None, features: int
) -> np.ndarray:
    """The dense int8 train ``[T, rows, features]`` of a planes train."""
    bits = np.unpackbits(planes, axis=-1, count=features, bitorder="little")
    dense = bits.view(np.int8)
    if sign_plane is not None:
        negative = np.unpackbits(sign_plane, axis=-1, count=features, bitorder="little")
        dense *= (1 - 2 * negative.view(np.int8))[None]
    return dense
