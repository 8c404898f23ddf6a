"""Sparse spike trains: events plus what is needed to read them.

A :class:`SpikeTrain` keeps only the spikes, in canonical order — by row (all leading
axes flattened, i.e. token), then time step, then feature: one token's spikes step by
step, the order an event-driven core consumes them. It stores them compactly, like a
CSR matrix whose rows are the (token, step) pairs:

* ``step_ptr`` (int64, ``rows · T + 1``): the events of row ``r`` at step ``t`` are
  ``[step_ptr[r·T + t], step_ptr[r·T + t + 1])``;
* ``feature`` (uint16, or int32 beyond 65,536 features): the feature (channel) of each
  event;
* ``signs`` (int8): each event's spike value, ±1 — only for the codes that emit -1
  (ternary, bitwise-bidirectional); empty for the others, whose spikes are all +1.

That is 2–3 bytes per spike. The address-event view — ``t`` (int32 step), ``index``
(int64 flat C-order element index) and ``polarity`` (int8) per event — is derived on
demand, and the dense equivalent, time first as in snnTorch, is ``[T, *shape]`` int8
(:meth:`SpikeTrain.to_dense`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from spikecode.encoders.schemes import Scheme, check_bit_order, get_scheme
from spikecode.errors import SpikecodeError

__all__ = ["SpikeTrain", "feature_dtype"]


def feature_dtype(features: int) -> type[np.integer]:
    """Storage dtype of feature ids: uint16 up to 65,536 features, else int32."""
    return np.uint16 if features <= 1 << 16 else np.int32


def _check_layout(
    scheme: str, shape: tuple[int, ...], T: int
) -> tuple[Scheme, tuple[int, ...], int]:
    """Validate the metadata of a train built from arrays of unknown origin."""
    spec = get_scheme(scheme)
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0 or min(shape) <= 0:
        raise SpikecodeError("train shape must be non-empty with features last", shape=shape)
    return spec, shape, spec.check_T(T)


@dataclass(frozen=True, eq=False)
class SpikeTrain:
    """A sparse spike train over ``T`` virtual time steps (SPEC §3).

    Build one with :func:`spikecode.encode`, :meth:`from_dense` or :meth:`from_events`;
    direct construction trusts its arrays.

    Attributes
    ----------
    shape
        Shape of the encoded count tensor (features last).
    T
        Number of time steps.
    scheme
        Name of the code (see :data:`spikecode.SCHEMES`).
    step_ptr, feature, signs
        The events, compact (see the module docstring).
    bit_order
        ``"msb"`` (step 0 carries the highest bit) or ``"lsb"``; ignored by
        binary/ternary.
    zero_point
        Value added back on decoding (unsigned codes of signed counts, SPEC §3).
    clipped
        How many elements were saturated to fit ``T`` (0 unless ``saturate=True``).
    """

    shape: tuple[int, ...]
    T: int
    scheme: str
    step_ptr: np.ndarray
    feature: np.ndarray
    signs: np.ndarray
    bit_order: str = "msb"
    zero_point: int = 0
    clipped: int = 0
    _scheme: Scheme = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_scheme", get_scheme(self.scheme))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        check_bit_order(self.bit_order)

    # -- sizes -------------------------------------------------------------------------
    @property
    def n_spikes(self) -> int:
        """Number of events (non-zero entries of the dense train)."""
        return int(self.feature.shape[0])

    @property
    def size(self) -> int:
        """Number of encoded elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def features(self) -> int:
        """Length of the last (feature) axis."""
        return self.shape[-1]

    @property
    def rows(self) -> int:
        """Number of rows (tokens): the product of the leading axes."""
        return self.size // self.features

    @property
    def step_weights(self) -> np.ndarray:
        """``w_t`` per step (int64 ``[T]``): the train decodes as ``zero_point + Σ w_t s_t``."""
        return self._scheme.step_weights(self.T, self.bit_order)

    @property
    def spikes_per_element(self) -> float:
        """Average number of spikes per element (SPEC §5)."""
        return self.n_spikes / self.size

    @property
    def firing_rate(self) -> float:
        """Spikes over element-steps, ``Σ spikes / (elements · T)`` (SPEC §5)."""
        return self.n_spikes / (self.size * self.T)

    @property
    def nbytes(self) -> int:
        """Bytes held by the event arrays."""
        return self.step_ptr.nbytes + self.feature.nbytes + self.signs.nbytes

    def row_pointers(self) -> np.ndarray:
        """CSR offsets per row: events of row ``r`` are ``[ptr[r], ptr[r + 1])`` (int64)."""
        return self.step_ptr[:: self.T]

    # -- the address-event view ----------------------------------------------------------
    @cached_property
    def _segments(self) -> np.ndarray:
        return np.diff(self.step_ptr)

    @cached_property
    def t(self) -> np.ndarray:
        """Time step of each event (int32)."""
        steps = np.tile(np.arange(self.T, dtype=np.int32), self.rows)
        return np.repeat(steps, self._segments)

    @cached_property
    def index(self) -> np.ndarray:
        """Flat C-order element index of each event (int64)."""
        per_row = np.diff(self.row_pointers())
        rows = np.repeat(np.arange(self.rows, dtype=np.int64), per_row)
        return rows * self.features + self.feature

    @property
    def polarity(self) -> np.ndarray:
        """Spike value of each event, +1 or -1 (int8)."""
        return self.signs if self._scheme.signed else np.ones(self.n_spikes, dtype=np.int8)

    # -- conversions -------------------------------------------------------------------
    def to_dense(self) -> np.ndarray:
        """The dense train, int8 ``[T, *shape]``, time first."""
        dense = np.zeros((self.T, self.size), dtype=np.int8)
        dense[self.t, self.index] = self.polarity
        return dense.reshape((self.T, *self.shape))

    def to_torch(self, dtype: Any = None, device: Any = None) -> Any:
        """The dense train as a time-first torch tensor ``[T, *shape]`` (snnTorch layout).

        Parameters
        ----------
        dtype
            torch dtype; float32 by default (what snnTorch layers consume).
        device
            Target device; CPU by default.
        """
        import torch

        tensor = torch.from_numpy(self.to_dense())
        return tensor.to(device=device, dtype=dtype or torch.float32)

    def decode(self) -> np.ndarray:
        """The integer counts this train carries (int32, ``shape``), see :func:`decode`."""
        from spikecode.encoders.codec import decode

        return decode(self)

    @classmethod
    def from_dense(
        cls,
        dense: Any,
        scheme: str,
        *,
        bit_order: str = "msb",
        zero_point: int = 0,
    ) -> SpikeTrain:
        """Build a train from a dense ``[T, *shape]`` array of spike values.

        Raises
        ------
        SpikecodeError
            Values other than the code's spike values, or an array without a time axis.
        """
        from spikecode._validate import to_numpy
        from spikecode.encoders._reference import events_from_dense

        spec = get_scheme(scheme)
        a = to_numpy(dense, "dense train")
        if a.ndim < 2 or 0 in a.shape:
            raise SpikecodeError(
                "a dense train needs shape [T, *shape] with T >= 1 and a feature axis",
                shape=a.shape,
                scheme=spec.name,
            )
        allowed = (-1, 0, 1) if spec.signed else (0, 1)
        if not np.isin(a, allowed).all():
            raise SpikecodeError(
                f"a {spec.name} train holds only the values {allowed}",
                shape=a.shape,
                scheme=spec.name,
            )
        t, index, polarity = events_from_dense(a.astype(np.int8))
        return cls.from_events(
            a.shape[1:],
            a.shape[0],
            spec.name,
            t,
            index,
            polarity,
            bit_order=bit_order,
            zero_point=zero_point,
        )

    @classmethod
    def from_events(
        cls,
        shape: tuple[int, ...],
        T: int,
        scheme: str,
        t: Any,
        index: Any,
        polarity: Any,
        *,
        bit_order: str = "msb",
        zero_point: int = 0,
        clipped: int = 0,
    ) -> SpikeTrain:
        """Build a train from address events of unknown origin, validating everything.

        Events may come in any order; they are sorted into canonical order. Duplicate
        events, steps outside ``[0, T)``, indices outside the shape and polarities the
        code cannot emit are refused.
        """
        spec, shape, T = _check_layout(scheme, shape, T)
        t, index, polarity = np.asarray(t), np.asarray(index), np.asarray(polarity)
        if not (
            t.ndim == index.ndim == polarity.ndim == 1 and len(t) == len(index) == len(polarity)
        ):
            raise SpikecodeError("event arrays t, index, polarity must be 1-D of equal length")
        for name, arr in (("t", t), ("index", index), ("polarity", polarity)):
            if arr.size and arr.dtype.kind not in "iu":
                raise SpikecodeError(f"event field {name!r} must be integer, not {arr.dtype}")
        size = int(np.prod(shape, dtype=np.int64))
        if t.size:
            if t.min() < 0 or t.max() >= T:
                raise SpikecodeError("event time steps outside [0, T)", T=T, scheme=spec.name)
            if index.min() < 0 or index.max() >= size:
                raise SpikecodeError("event indices outside the train's shape", shape=shape)
            allowed = (-1, 1) if spec.signed else (1,)
            if not np.isin(polarity, allowed).all():
                raise SpikecodeError(
                    f"a {spec.name} train has only polarities {allowed}", scheme=spec.name
                )
        features = shape[-1]
        index = index.astype(np.int64)
        segment = (index // features) * T + t.astype(np.int64)
        key = segment * features + index % features
        order = np.argsort(key, kind="stable")
        if key.size > 1 and not np.all(np.diff(key[order]) > 0):
            raise SpikecodeError("duplicate events (same step and element)", scheme=spec.name)
        rows = size // features
        step_ptr = np.zeros(rows * T + 1, dtype=np.int64)
        np.cumsum(np.bincount(segment, minlength=rows * T), out=step_ptr[1:])
        signs = polarity.astype(np.int8)[order] if spec.signed else np.zeros(0, np.int8)
        return cls(
            shape=shape,
            T=T,
            scheme=spec.name,
            step_ptr=step_ptr,
            feature=(index % features)[order].astype(feature_dtype(features)),
            signs=signs,
            bit_order=check_bit_order(bit_order),
            zero_point=int(zero_point),
            clipped=int(clipped),
        )

    @classmethod
    def from_arrays(
        cls,
        shape: tuple[int, ...],
        T: int,
        scheme: str,
        step_ptr: Any,
        feature: Any,
        signs: Any,
        *,
        bit_order: str = "msb",
        zero_point: int = 0,
        clipped: int = 0,
    ) -> SpikeTrain:
        """Build a train from its compact arrays (as stored in files), validating them.

        Raises
        ------
        SpikecodeError
            Offsets of the wrong length or not increasing, features out of range or not
            in canonical order, or signs that do not fit the code.
        """
        spec, shape, T = _check_layout(scheme, shape, T)
        features = shape[-1]
        rows = int(np.prod(shape, dtype=np.int64)) // features
        ptr, feat, sg = np.asarray(step_ptr), np.asarray(feature), np.asarray(signs)
        for name, arr in (("step_ptr", ptr), ("feature", feat), ("signs", sg)):
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                raise SpikecodeError(f"{name} must be a 1-D integer array", shape=arr.shape)
        n = feat.shape[0]
        if ptr.shape[0] != rows * T + 1 or ptr[0] != 0 or ptr[-1] != n:
            raise SpikecodeError(
                "step_ptr must have rows*T+1 entries from 0 to the number of events",
                shape=ptr.shape,
            )
        if np.any(np.diff(ptr) < 0):
            raise SpikecodeError("step_ptr is not non-decreasing")
        if n and (feat.min() < 0 or feat.max() >= features):
            raise SpikecodeError("feature ids outside the feature axis", shape=shape)
        increasing = np.diff(feat.astype(np.int64)) > 0
        starts = ptr[1:-1]
        increasing[starts[(starts > 0) & (starts < n)] - 1] = True  # a new segment begins
        if not increasing.all():
            raise SpikecodeError("features within a step are not strictly increasing")
        if spec.signed:
            if sg.shape[0] != n or not np.isin(sg, (-1, 1)).all():
                raise SpikecodeError(f"{spec.name} needs one sign (+1/-1) per event")
        elif sg.size:
            raise SpikecodeError(f"{spec.name} spikes are all +1 and carry no signs")
        return cls(
            shape=shape,
            T=T,
            scheme=spec.name,
            step_ptr=ptr.astype(np.int64),
            feature=feat.astype(feature_dtype(features)),
            signs=sg.astype(np.int8),
            bit_order=check_bit_order(bit_order),
            zero_point=int(zero_point),
            clipped=int(clipped),
        )

    def equals(self, other: object) -> bool:
        """Whether two trains are identical (metadata and events)."""
        if not isinstance(other, SpikeTrain):
            return False
        return (
            self.shape == other.shape
            and self.T == other.T
            and self.scheme == other.scheme
            and self.bit_order == other.bit_order
            and self.zero_point == other.zero_point
            and self.clipped == other.clipped
            and np.array_equal(self.step_ptr, other.step_ptr)
            and np.array_equal(self.feature, other.feature)
            and np.array_equal(self.polarity, other.polarity)
        )

    def __repr__(self) -> str:
        return (
            f"SpikeTrain(scheme={self.scheme!r}, shape={self.shape}, T={self.T}, "
            f"spikes={self.n_spikes}, bit_order={self.bit_order!r}, "
            f"zero_point={self.zero_point}, clipped={self.clipped})"
        )
