"""Sparse spike trains: events plus what is needed to read them.

A :class:`SpikeTrain` stores only the spikes, as three parallel event arrays:

* ``t`` (int32): the virtual time step, ``0 <= t < T``;
* ``index`` (int64): the flat (C-order) index of the element in ``shape``;
* ``polarity`` (int8): the spike value, +1 or -1 (-1 only for ternary and
  bitwise-bidirectional).

Events are kept in canonical order — by row (all leading axes flattened, i.e. token),
then time step, then feature — which is the order the encoding kernels write them and
the order a spike-driven core consumes them. The dense equivalent, time first as in
snnTorch, is ``[T, *shape]`` int8 (:meth:`SpikeTrain.to_dense`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikecode.encoders.schemes import Scheme, check_bit_order, get_scheme
from spikecode.errors import SpikecodeError

__all__ = ["SpikeTrain"]


@dataclass(frozen=True, eq=False)
class SpikeTrain:
    """A sparse spike train over ``T`` virtual time steps (SPEC §3).

    Build one with :func:`spikecode.encode` or :meth:`from_dense`; direct construction
    trusts its arrays (use :meth:`from_events` to validate arrays of unknown origin).

    Attributes
    ----------
    shape
        Shape of the encoded count tensor (features last).
    T
        Number of time steps.
    scheme
        Name of the code (see :data:`spikecode.SCHEMES`).
    t, index, polarity
        The events, in canonical order (see module docstring).
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
    t: np.ndarray
    index: np.ndarray
    polarity: np.ndarray
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
        return int(self.t.shape[0])

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

    def row_pointers(self) -> np.ndarray:
        """CSR-style offsets: events of row ``r`` are ``[ptr[r], ptr[r + 1])`` (int64)."""
        starts = np.arange(self.rows + 1, dtype=np.int64) * self.features
        return np.searchsorted(self.index, starts, side="left").astype(np.int64)

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
        from spikecode.encoders._reference import events_from_dense

        t, index, polarity = events_from_dense(a.astype(np.int8))
        return cls(
            shape=a.shape[1:],
            T=spec.check_T(a.shape[0]),
            scheme=spec.name,
            t=t,
            index=index,
            polarity=polarity,
            bit_order=check_bit_order(bit_order),
            zero_point=int(zero_point),
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
        """Build a train from event arrays of unknown origin, validating everything.

        Events may come in any order; they are sorted into canonical order. Duplicate
        events, steps outside ``[0, T)``, indices outside the shape and polarities the
        code cannot emit are refused.
        """
        spec = get_scheme(scheme)
        shape = tuple(int(n) for n in shape)
        if len(shape) == 0 or min(shape) <= 0:
            raise SpikecodeError("train shape must be non-empty with features last", shape=shape)
        T = spec.check_T(T)
        t = np.asarray(t)
        index = np.asarray(index)
        polarity = np.asarray(polarity)
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
        t = t.astype(np.int32)
        index = index.astype(np.int64)
        key = (
            (index // features) * (T * features) + t.astype(np.int64) * features + index % features
        )
        order = np.argsort(key, kind="stable")
        key = key[order]
        if key.size > 1 and not np.all(np.diff(key) > 0):
            raise SpikecodeError("duplicate events (same step and element)", scheme=spec.name)
        return cls(
            shape=shape,
            T=T,
            scheme=spec.name,
            t=t[order],
            index=index[order],
            polarity=polarity.astype(np.int8)[order],
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
            and np.array_equal(self.t, other.t)
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.polarity, other.polarity)
        )

    def __repr__(self) -> str:
        return (
            f"SpikeTrain(scheme={self.scheme!r}, shape={self.shape}, T={self.T}, "
            f"spikes={self.n_spikes}, bit_order={self.bit_order!r}, "
            f"zero_point={self.zero_point}, clipped={self.clipped})"
        )
