"""Spike trains in two storage layouts: sparse events or packed bit-planes.

A :class:`SpikeTrain` holds the spikes of a count tensor of shape ``shape`` (features
last; ``rows`` = product of the leading axes, i.e. tokens) over ``T`` steps, in one of
two layouts (``train.layout``); :meth:`SpikeTrain.to_layout` converts losslessly.

``"events"`` — only the spikes, in canonical order: by row, then time step, then feature
(one token's spikes step by step, the order an event-driven core consumes them), stored
like a CSR matrix whose rows are the (token, step) pairs:

* ``step_ptr`` (int64, ``rows · T + 1``): the events of row ``r`` at step ``t`` are
  ``[step_ptr[r·T + t], step_ptr[r·T + t + 1])``;
* ``feature`` (uint16, or int32 beyond 65,536 features): the feature of each event;
* ``signs`` (int8): each event's spike value, ±1 — only for the codes that emit -1
  (ternary, bitwise-bidirectional); empty for the others, whose spikes are all +1.

That is 2–3 bytes per spike.

``"planes"`` — one bit per element and step, what a bit-serial core or a GPU consumes:

* ``planes`` (uint8 ``[T, rows, ceil(F / 8)]``): bit ``i`` (value ``1 << i``) of byte
  ``j`` is feature ``8 j + i`` — the order of ``np.packbits(..., bitorder="little")`` —
  and is set where the element spikes at that step; padding bits are 0;
* ``sign_plane`` (uint8 ``[rows, ceil(F / 8)]``), only for ternary and
  bitwise-bidirectional, whose spikes carry the sign of the count at every step: bit set
  where the element's spikes are -1, clear elsewhere (silent elements included). The
  other three codes emit only +1 and have ``sign_plane = None``.

That is ``T / 8`` bytes per element (plus 1/8 for the sign plane), whatever the firing
rate: smaller than events above about one spike in 16–24 element-steps
(:func:`spikecode.encode`'s ``layout="auto"`` compares the two sizes exactly).

Either way the address-event view — ``t`` (int32 step), ``index`` (int64 flat C-order
element index) and ``polarity`` (int8) per event — is derived on demand, and the dense
equivalent, time first as in snnTorch, is ``[T, *shape]`` int8 (:meth:`SpikeTrain.to_dense`).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from spikecode._validate import check_bytes
from spikecode.encoders import _arrays
from spikecode.encoders._arrays import LAYOUTS, feature_dtype, plane_width
from spikecode.encoders.schemes import Scheme, check_bit_order, get_scheme
from spikecode.errors import SpikecodeError

__all__ = ["LAYOUTS", "SpikeTrain", "check_layout", "feature_dtype"]


def check_layout(layout: Any, *, auto: bool = False) -> str:
    """Validate a layout name (``"events"``, ``"planes"``, and ``"auto"`` where allowed)."""
    allowed = (*LAYOUTS, "auto") if auto else LAYOUTS
    if not isinstance(layout, str) or layout not in allowed:
        raise SpikecodeError(
            f"layout must be one of {', '.join(map(repr, allowed))}, not {layout!r}"
        )
    return layout


def _check_meta(scheme: str, shape: tuple[int, ...], T: int) -> tuple[Scheme, tuple[int, ...], int]:
    """Validate the metadata of a train built from arrays of unknown origin."""
    spec = get_scheme(scheme)
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0 or min(shape) <= 0:
        raise SpikecodeError("train shape must be non-empty with features last", shape=shape)
    return spec, shape, spec.check_T(T)


class SpikeTrain:
    """A spike train over ``T`` virtual time steps (SPEC §3), as events or bit-planes.

    Build one with :func:`spikecode.encode`, :func:`spikecode.encode_activations`,
    :meth:`from_dense`, :meth:`from_events`, :meth:`from_arrays` or :meth:`from_planes`;
    direct construction trusts its arrays. Pass either the three event arrays or
    ``planes`` (with ``sign_plane`` for the signed codes). Immutable by convention.

    Attributes
    ----------
    shape
        Shape of the encoded count tensor (features last).
    T
        Number of time steps.
    scheme
        Name of the code (see :data:`spikecode.SCHEMES`).
    layout
        ``"events"`` or ``"planes"`` (see the module docstring).
    step_ptr, feature, signs
        The events (events layout only).
    planes, sign_plane
        The packed bit-planes (planes layout only; ``sign_plane`` is None for the codes
        without -1 spikes).
    bit_order
        ``"msb"`` (step 0 carries the highest bit) or ``"lsb"``; ignored by
        binary/ternary.
    zero_point
        Value added back on decoding (unsigned codes of signed counts, SPEC §3).
    clipped
        How many elements were saturated to fit ``T`` (0 unless ``saturate=True``).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        T: int,
        scheme: str,
        step_ptr: np.ndarray | None = None,
        feature: np.ndarray | None = None,
        signs: np.ndarray | None = None,
        *,
        bit_order: str = "msb",
        zero_point: int = 0,
        clipped: int = 0,
        planes: np.ndarray | None = None,
        sign_plane: np.ndarray | None = None,
        n_spikes: int | None = None,
    ) -> None:
        self._spec = get_scheme(scheme)
        self.shape = tuple(int(n) for n in shape)
        self.T = int(T)
        self.scheme = self._spec.name
        self.bit_order = check_bit_order(bit_order)
        self.zero_point = int(zero_point)
        self.clipped = int(clipped)
        if planes is not None:
            if step_ptr is not None or feature is not None or signs is not None:
                raise SpikecodeError("a train holds either events or planes, not both")
            if self._spec.signed != (sign_plane is not None):
                raise SpikecodeError(
                    f"{self.scheme} planes {'need' if self._spec.signed else 'take no'} sign plane",
                    scheme=self.scheme,
                )
            self.layout = "planes"
        else:
            if step_ptr is None or feature is None or signs is None or sign_plane is not None:
                raise SpikecodeError("an events train needs step_ptr, feature and signs")
            self.layout = "events"
        self._events = (step_ptr, feature, signs)
        self._planes = (planes, sign_plane)
        self._n_spikes = None if n_spikes is None else int(n_spikes)

    # -- the stored arrays ---------------------------------------------------------------
    def _need(self, layout: str, name: str) -> None:
        if self.layout != layout:
            raise SpikecodeError(
                f"train.{name} exists in the {layout} layout; this train holds "
                f"{self.layout} (use train.to_layout({layout!r}))",
                scheme=self.scheme,
            )

    @property
    def step_ptr(self) -> np.ndarray:
        """Event offsets per (row, step), int64 ``rows · T + 1`` (events layout)."""
        self._need("events", "step_ptr")
        return self._events[0]

    @property
    def feature(self) -> np.ndarray:
        """Feature id of each event (events layout)."""
        self._need("events", "feature")
        return self._events[1]

    @property
    def signs(self) -> np.ndarray:
        """±1 per event for the signed codes, empty otherwise (events layout)."""
        self._need("events", "signs")
        return self._events[2]

    @property
    def planes(self) -> np.ndarray:
        """Packed bit-planes, uint8 ``[T, rows, ceil(F/8)]`` (planes layout)."""
        self._need("planes", "planes")
        return self._planes[0]

    @property
    def sign_plane(self) -> np.ndarray | None:
        """Sign bits, uint8 ``[rows, ceil(F/8)]``; None for unsigned codes (planes layout)."""
        self._need("planes", "sign_plane")
        return self._planes[1]

    # -- sizes -------------------------------------------------------------------------
    @property
    def n_spikes(self) -> int:
        """Number of spikes (non-zero entries of the dense train)."""
        if self._n_spikes is None:
            if self.layout == "events":
                self._n_spikes = int(self.feature.shape[0])
            else:
                self._n_spikes = int(np.bitwise_count(self.planes).sum(dtype=np.int64))
        return self._n_spikes

    @property
    def size(self) -> int:
        """Number of encoded elements."""
        return math.prod(self.shape)

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
        return self._spec.step_weights(self.T, self.bit_order)

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
        """Bytes held by the stored arrays of this layout."""
        if self.layout == "planes":
            sign = self.sign_plane
            return self.planes.nbytes + (0 if sign is None else sign.nbytes)
        return self.step_ptr.nbytes + self.feature.nbytes + self.signs.nbytes

    def layout_nbytes(self) -> dict[str, int]:
        """Bytes of this train in each layout, ``{"events": ..., "planes": ...}``."""
        return _arrays.layout_nbytes(
            self.rows, self.features, self.T, self.n_spikes, self._spec.signed
        )

    def row_pointers(self) -> np.ndarray:
        """CSR offsets per row: events of row ``r`` are ``[ptr[r], ptr[r + 1])`` (int64)."""
        return self._as_events.step_ptr[:: self.T]

    # -- layouts -------------------------------------------------------------------------
    def to_layout(self, layout: str) -> SpikeTrain:
        """Return the train in ``layout`` (``"events"`` or ``"planes"``); lossless both ways.

        Returns ``self`` when it already has that layout.

        Raises
        ------
        SpikecodeError
            An unknown layout name; or, to planes, a ternary/bidirectional train (built
            with :meth:`from_dense`/:meth:`from_events`) in which an element fires both +1
            and -1, which one sign bit per element cannot hold.
        """
        layout = check_layout(layout)
        if layout == self.layout:
            return self
        meta = {
            "bit_order": self.bit_order,
            "zero_point": self.zero_point,
            "clipped": self.clipped,
            "n_spikes": self._n_spikes,
        }
        if layout == "events":
            step_ptr, feature, signs = _arrays.events_from_planes(
                self.planes, self.sign_plane, self.features
            )
            return SpikeTrain(self.shape, self.T, self.scheme, step_ptr, feature, signs, **meta)
        planes, sign_plane = _arrays.planes_from_events(
            self.step_ptr,
            self.feature,
            self.signs,
            self.T,
            self.rows,
            self.features,
            self._spec.signed,
            self.scheme,
        )
        return SpikeTrain(
            self.shape, self.T, self.scheme, planes=planes, sign_plane=sign_plane, **meta
        )

    @cached_property
    def _as_events(self) -> SpikeTrain:
        return self.to_layout("events")

    # -- the address-event view ----------------------------------------------------------
    @cached_property
    def t(self) -> np.ndarray:
        """Time step of each event (int32)."""
        steps = np.tile(np.arange(self.T, dtype=np.int32), self.rows)
        return np.repeat(steps, np.diff(self._as_events.step_ptr))

    @cached_property
    def index(self) -> np.ndarray:
        """Flat C-order element index of each event (int64)."""
        per_row = np.diff(self.row_pointers())
        rows = np.repeat(np.arange(self.rows, dtype=np.int64), per_row)
        return rows * self.features + self._as_events.feature

    @property
    def polarity(self) -> np.ndarray:
        """Spike value of each event, +1 or -1 (int8)."""
        if self._spec.signed:
            return self._as_events.signs
        return np.ones(self.n_spikes, dtype=np.int8)

    # -- conversions -------------------------------------------------------------------
    def to_dense(self) -> np.ndarray:
        """The dense train, int8 ``[T, *shape]``, time first."""
        if self.layout == "planes":
            dense = _arrays.dense_from_planes(self.planes, self.sign_plane, self.features)
            return dense.reshape((self.T, *self.shape))
        dense = np.zeros((self.T, self.size), dtype=np.int8)
        dense[self.t, self.index] = self.polarity
        return dense.reshape((self.T, *self.shape))

    def to_torch(self, dtype: Any = None, device: Any = None) -> Any:
        """The dense train as a time-first torch tensor ``[T, *shape]`` (snnTorch layout).

        A planes train travels to ``device`` packed (one bit per element and step) and is
        unpacked there; no dense train is built on the host for another device.

        Parameters
        ----------
        dtype
            torch dtype; float32 by default (what snnTorch layers consume).
        device
            Target device; CPU by default.
        """
        import torch

        dtype = dtype or torch.float32
        if self.layout == "planes":
            from spikecode.encoders._torch import unpack_planes

            planes = torch.from_numpy(self.planes).to(device)
            sign = self.sign_plane
            sign_t = None if sign is None else torch.from_numpy(sign).to(device)
            dense = unpack_planes(planes, sign_t, self.features, dtype)
            return dense.reshape((self.T, *self.shape))
        tensor = torch.from_numpy(self.to_dense())
        return tensor.to(device=device, dtype=dtype)

    def decode(self) -> np.ndarray:
        """The integer counts this train carries (int32, ``shape``): ``zero_point + Σ w_t s_t``."""
        if self.layout == "planes":
            counts = _arrays.decode_planes(
                self.planes,
                self.sign_plane,
                self.step_weights,
                self.zero_point,
                self.features,
                self.scheme,
            )
        else:
            counts = _arrays.decode_events(
                self.step_ptr,
                self.feature,
                self.signs,
                self.step_weights,
                self.zero_point,
                self.rows,
                self.features,
                self.scheme,
            )
        return counts.reshape(self.shape)

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
        spec, shape, T = _check_meta(scheme, shape, T)
        size = math.prod(shape)  # Python ints: a shape of 2**40 x 2**40 must not wrap
        rows = size // shape[-1]
        # The step index is allocated from the shape alone, before any event is read.
        check_bytes(
            (rows * T + 1) * np.dtype(np.int64).itemsize,
            f"the step index of a train of shape {shape} over T={T} steps",
            scheme=spec.name,
        )
        t, index, polarity = np.asarray(t), np.asarray(index), np.asarray(polarity)
        if not (
            t.ndim == index.ndim == polarity.ndim == 1 and len(t) == len(index) == len(polarity)
        ):
            raise SpikecodeError("event arrays t, index, polarity must be 1-D of equal length")
        for name, arr in (("t", t), ("index", index), ("polarity", polarity)):
            if arr.size and arr.dtype.kind not in "iu":
                raise SpikecodeError(f"event field {name!r} must be integer, not {arr.dtype}")
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
        spec, shape, T = _check_meta(scheme, shape, T)
        features = shape[-1]
        rows = math.prod(shape) // features
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

    @classmethod
    def from_planes(
        cls,
        shape: tuple[int, ...],
        T: int,
        scheme: str,
        planes: Any,
        sign_plane: Any = None,
        *,
        bit_order: str = "msb",
        zero_point: int = 0,
        clipped: int = 0,
    ) -> SpikeTrain:
        """Build a train from packed bit-planes of unknown origin (files), validating them.

        Raises
        ------
        SpikecodeError
            Planes that are not uint8 ``[T, rows, ceil(F/8)]``; padding bits set; a sign
            plane for a code without -1 spikes, or a missing or misshapen one for
            ternary/bitwise-bidirectional; sign bits of elements that never fire.
        """
        spec, shape, T = _check_meta(scheme, shape, T)
        features = shape[-1]
        rows = math.prod(shape) // features
        width = plane_width(features)
        p = np.asarray(planes)
        if p.dtype != np.uint8 or p.shape != (T, rows, width):
            raise SpikecodeError(
                f"planes must be uint8 [T, rows, ceil(F/8)] = {[T, rows, width]}",
                shape=p.shape,
                scheme=spec.name,
            )
        padding = np.uint8((0xFF << (features - 8 * (width - 1))) & 0xFF)
        if padding and np.any(p[..., -1] & padding):
            raise SpikecodeError("planes have bits set past the last feature", shape=p.shape)
        sign = None
        if spec.signed:
            if sign_plane is None:
                raise SpikecodeError(f"{spec.name} planes need a sign plane", scheme=spec.name)
            sign = np.asarray(sign_plane)
            if sign.dtype != np.uint8 or sign.shape != (rows, width):
                raise SpikecodeError(
                    f"the sign plane must be uint8 [rows, ceil(F/8)] = {[rows, width]}",
                    shape=sign.shape,
                    scheme=spec.name,
                )
            fired = np.bitwise_or.reduce(p, axis=0)
            if np.any(sign & ~fired):
                raise SpikecodeError("sign bits set for elements that never fire", scheme=spec.name)
            sign = np.ascontiguousarray(sign)
        elif sign_plane is not None and np.asarray(sign_plane).size:
            raise SpikecodeError(f"{spec.name} spikes are all +1 and carry no sign plane")
        return cls(
            shape,
            T,
            spec.name,
            planes=np.ascontiguousarray(p),
            sign_plane=sign,
            bit_order=check_bit_order(bit_order),
            zero_point=int(zero_point),
            clipped=int(clipped),
        )

    def equals(self, other: object) -> bool:
        """Whether two trains carry the same spikes and metadata (in either layout)."""
        if not isinstance(other, SpikeTrain):
            return False
        same_meta = (
            self.shape == other.shape
            and self.T == other.T
            and self.scheme == other.scheme
            and self.bit_order == other.bit_order
            and self.zero_point == other.zero_point
            and self.clipped == other.clipped
        )
        if not same_meta or self.n_spikes != other.n_spikes:
            return False
        if self.layout == other.layout == "planes":
            return np.array_equal(self.planes, other.planes) and (
                self.sign_plane is None or np.array_equal(self.sign_plane, other.sign_plane)
            )
        a, b = self._as_events, other._as_events
        return (
            np.array_equal(a.step_ptr, b.step_ptr)
            and np.array_equal(a.feature, b.feature)
            and np.array_equal(a.polarity, b.polarity)
        )

    def __repr__(self) -> str:
        return (
            f"SpikeTrain(scheme={self.scheme!r}, shape={self.shape}, T={self.T}, "
            f"layout={self.layout!r}, spikes={self.n_spikes}, bit_order={self.bit_order!r}, "
            f"zero_point={self.zero_point}, clipped={self.clipped})"
        )
