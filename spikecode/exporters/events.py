"""Spike trains as tonic-ready address-event streams in .npz or HDF5.

Every spike becomes one event of :data:`EVENT_DTYPE`:

=========  =====  ==========================================================
field      dtype  meaning
=========  =====  ==========================================================
``t``      int32  virtual time step, ``0 <= t < T`` (time unit: one step)
``x``      int32  channel: the feature index (last axis of the coded tensor)
``y``      int16  always 0: a one-row sensor, so tonic's 2-D transforms apply
``p``      int8   tonic's polarity channel: 1 for a +1 spike, 0 for a -1 spike
``token``  int64  row: the flat index over the leading axes (the token)
``layer``  int16  position of the layer in the file's ``layer_names``
=========  =====  ==========================================================

``t``, ``x``, ``y`` and ``p`` are the fields tonic's transforms read; tonic uses ``p``
as a channel index, so a spike's value is ``2·p - 1`` (unsigned codes only have
``p = 1``). The sensor is ``(features, 1, 2)`` (:func:`sensor_size`), and
``tonic.transforms.ToFrame(**tonic_frame_kwargs(features, T))`` bins one token's
events into exactly ``T`` frames ``[T, 2, 1, features]`` with ``frame[:, 1] -
frame[:, 0]`` the dense train (:func:`slice_events` picks one layer and token; tonic's
time slicing needs the events of one token, which are sorted by ``t``). Bitwise codes
weight step ``t`` by ``train.step_weights[t]``: the consumer applies it (graded NIR
input) or feeds step ``t`` to port ``t`` (see the NIR exporter).

Events of a layer appear in the train's canonical order (token, then step, then
channel), layers one after another.

A file holds, next to the events, what is needed to read them back exactly: per layer
its name, scheme, T, bit order, zero point, clipped count, the coded tensor's shape and
the per-token threshold ``Vth``; for the file, the firing-rate knob ``k`` (absent for a
fixed threshold), the time unit, ``shared_T`` (0 when the layers differ; the CLI
always writes one T, the one its NIR export uses) and the format version.
:func:`load_events` rebuilds every :class:`~spikecode.SpikeTrain` exactly
(``train.equals``), reads version-1 files (``p`` = ±1, no ``y``) too, and refuses a
file that is truncated, corrupt, of another version or inconsistent, naming it.

``.npz`` files hold plain arrays (the events as a structured array of integer fields), so
``numpy.load(path, allow_pickle=False)`` reads them. ``.h5``/``.hdf5`` files need the
optional h5py; the events are a compound dataset ``events`` and each layer a group
``layers/<i>``.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spikecode._validate import as_path, check_hdf5_sizes, positive_finite, to_numpy
from spikecode.encoders.limits import DEFAULT_MAX_SPIKES, check_max_spikes, check_train_size
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError
from spikecode.exporters.registry import register_exporter
from spikecode.io import atomic_write, check_array_claims, require_file

__all__ = [
    "EVENTS_FORMAT",
    "EVENTS_VERSION",
    "EVENT_DTYPE",
    "EventFile",
    "export_events",
    "load_events",
    "save_events",
    "sensor_size",
    "slice_events",
    "to_events",
    "tonic_frame_kwargs",
]

EVENTS_FORMAT = "spikecode.events"
EVENTS_VERSION = 2
#: One address event (see the module docstring).
EVENT_DTYPE = np.dtype(
    [("t", "<i4"), ("x", "<i4"), ("y", "<i2"), ("p", "i1"), ("token", "<i8"), ("layer", "<i2")]
)
# Version 1 stored p as the spike value (+1/-1) and had no y field.
_V1_FIELDS = ("t", "x", "p", "token", "layer")
TIME_UNIT = "step"
#: Layer name given to a train saved on its own.
DEFAULT_LAYER = "train"
_SUFFIXES = {".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5"}
_MAX_LAYERS = int(np.iinfo(np.int16).max) + 1
_MAX_CHANNELS = int(np.iinfo(np.int32).max)
_LAYER_FIELDS = ("scheme", "T", "bit_order", "zero_point", "clipped")


class EventFile(dict):
    """What :func:`load_events` returns: ``layer name -> (SpikeTrain, vth)``, in file order.

    Attributes
    ----------
    k
        The firing-rate knob the trains were coded with (SPEC §2), or ``None`` (a fixed
        threshold, or not given).
    T
        The number of steps every layer shares (0 when the layers differ).
    layer_names
        The layer names in file order (``events["layer"]`` indexes them).
    """

    def __init__(
        self, layers: Mapping[str, tuple[SpikeTrain, np.ndarray]], k: float | None, T: int = 0
    ):
        super().__init__(layers)
        self.k = k
        self.T = T
        self.layer_names = list(layers)


# --------------------------------------------------------------------------- events


def _train_events(train: SpikeTrain, layer: int) -> np.ndarray:
    events = np.empty(train.n_spikes, dtype=EVENT_DTYPE)
    events["t"] = train.t
    events["x"] = train.index % train.features
    events["y"] = 0
    events["p"] = train.polarity > 0
    events["token"] = train.index // train.features
    events["layer"] = layer
    return events


def _check_trains(trains: Any) -> dict[str, SpikeTrain]:
    named = {DEFAULT_LAYER: trains} if isinstance(trains, SpikeTrain) else trains
    if not isinstance(named, Mapping) or not named:
        raise SpikecodeError(
            "trains must be a SpikeTrain or a non-empty dict of layer name -> SpikeTrain, "
            f"not {type(trains).__name__}"
        )
    if len(named) > _MAX_LAYERS:
        raise SpikecodeError(f"at most {_MAX_LAYERS} layers fit the int16 layer field")
    for name, train in named.items():
        if not isinstance(name, str) or not name:
            raise SpikecodeError(f"layer names must be non-empty strings, not {name!r}")
        if not isinstance(train, SpikeTrain):
            raise SpikecodeError(
                f"layer {name!r} is a {type(train).__name__}, not a SpikeTrain", layer=name
            )
        if train.features > _MAX_CHANNELS:
            raise SpikecodeError(
                "more features than the int32 channel field holds", layer=name, shape=train.shape
            )
    return {name: train.to_layout("events") for name, train in named.items()}


def to_events(trains: SpikeTrain | Mapping[str, SpikeTrain]) -> tuple[np.ndarray, list[str]]:
    """Turn one train or a dict of trains into one address-event array.

    Parameters
    ----------
    trains
        A :class:`~spikecode.SpikeTrain` or a dict ``layer name -> SpikeTrain``.

    Returns
    -------
    events : numpy.ndarray
        Structured array of :data:`EVENT_DTYPE`, one entry per spike; layers in dict
        order, each in canonical order.
    layer_names : list of str
        ``layer_names[e["layer"]]`` names the layer of event ``e`` (a single train is
        called ``"train"``).
    """
    named = _check_trains(trains)
    parts = [_train_events(train, i) for i, train in enumerate(named.values())]
    return np.concatenate(parts), list(named)


# --------------------------------------------------------------------------- saving


def _check_vth(vth: Any, train: SpikeTrain, name: str) -> np.ndarray:
    lead = train.shape[:-1]
    v = to_numpy(vth, "vth")
    if v.dtype.kind not in "fiu":
        raise SpikecodeError(f"vth must be numeric, not {v.dtype}", layer=name)
    if v.dtype.kind != "f":
        v = v.astype(np.float64)
    if v.ndim == 0:
        v = np.full(lead, v, dtype=v.dtype)
    if v.shape != lead:
        raise SpikecodeError(
            "vth must be a scalar or have shape train.shape[:-1]", layer=name, shape=v.shape
        )
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise SpikecodeError("vth must be finite and > 0", layer=name)
    return np.array(v, order="C")  # ascontiguousarray would turn a 0-d Vth into 1-d


def _shared_T(trains: Any) -> int:
    steps = {train.T for train in trains}
    return steps.pop() if len(steps) == 1 else 0


def _check_k(k: float | None) -> float:
    return float("nan") if k is None else positive_finite(k, "k")


def _file_kind(path: Path) -> str:
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise SpikecodeError(
            f"event files end in {', '.join(_SUFFIXES)}, not {path.suffix or '(none)'}",
            file=str(path),
        ) from None


def _h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise SpikecodeError(
            "HDF5 event files need h5py: pip install h5py (or use .npz)", file=str(path)
        ) from None
    return h5py


def save_events(
    path: str | os.PathLike[str],
    trains: SpikeTrain | Mapping[str, SpikeTrain],
    *,
    vth: Any,
    k: float | None = None,
) -> Path:
    """Save spike trains as address events with their metadata (atomically).

    Parameters
    ----------
    path
        ``.npz`` (NumPy, no pickles) or ``.h5``/``.hdf5`` (needs h5py).
    trains
        A :class:`~spikecode.SpikeTrain` or a dict ``layer name -> SpikeTrain``.
    vth
        Per-token thresholds (shape ``train.shape[:-1]``; a scalar for a fixed
        threshold), or a dict ``layer name -> vth`` matching a dict of trains.
    k
        The firing-rate knob of the adaptive threshold (SPEC §2), if any.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    SpikecodeError
        Bad trains, thresholds or ``k``; an unknown suffix; h5py missing for HDF5; an
        unwritable path (then no file is left behind).
    """
    from spikecode._version import __version__

    path = as_path(path)
    kind = _file_kind(path)
    named = _check_trains(trains)
    if isinstance(trains, SpikeTrain):
        vth = {DEFAULT_LAYER: vth}
    if not isinstance(vth, Mapping) or set(vth) != set(named):
        raise SpikecodeError(
            "with a dict of trains, vth must be a dict with the same layer names", file=str(path)
        )
    thresholds = [_check_vth(vth[name], train, name) for name, train in named.items()]
    header = {
        "spikecode_format": EVENTS_FORMAT,
        "format_version": EVENTS_VERSION,
        "spikecode_version": __version__,
        "k": _check_k(k),
        "shared_T": _shared_T(named.values()),
        "time_unit": TIME_UNIT,
    }
    events, names = to_events(named)
    writer = _write_hdf5 if kind == "hdf5" else _write_npz
    h5py = _h5py(path) if kind == "hdf5" else None
    try:
        with atomic_write(path) as tmp:
            writer(tmp, header, events, names, list(named.values()), thresholds, h5py)
    except OSError as err:  # e.g. the path is a folder: the rename fails
        raise SpikecodeError(f"cannot write {path}: {err}", file=str(path)) from None
    return path


def _layer_fields(train: SpikeTrain) -> dict[str, Any]:
    return {
        "scheme": train.scheme,
        "T": train.T,
        "bit_order": train.bit_order,
        "zero_point": train.zero_point,
        "clipped": train.clipped,
    }


def _write_npz(
    tmp: Path,
    header: dict[str, Any],
    events: np.ndarray,
    names: list[str],
    trains: list[SpikeTrain],
    thresholds: list[np.ndarray],
    h5py: Any,
) -> None:
    fields: dict[str, np.ndarray] = {key: np.array(value) for key, value in header.items()}
    fields["events"] = events
    fields["layer_names"] = np.array(names, dtype=str)
    per_layer = [_layer_fields(train) for train in trains]
    for key in _LAYER_FIELDS:
        values = [layer[key] for layer in per_layer]
        fields[key] = np.array(values, dtype=str if isinstance(values[0], str) else np.int64)
    for i, (train, v) in enumerate(zip(trains, thresholds, strict=True)):
        fields[f"shape_{i}"] = np.array(train.shape, dtype=np.int64)
        fields[f"vth_{i}"] = v
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **fields)


def _write_hdf5(
    tmp: Path,
    header: dict[str, Any],
    events: np.ndarray,
    names: list[str],
    trains: list[SpikeTrain],
    thresholds: list[np.ndarray],
    h5py: Any,
) -> None:
    # Built in memory and written by Python: h5py's C library handles a failed write (a
    # full disk) badly, up to crashing the interpreter.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs.update(header)
        # gzip needs chunks, and an empty dataset cannot be chunked.
        f.create_dataset("events", data=events, compression="gzip" if len(events) else None)
        layers = f.create_group("layers")
        for i, (name, train, v) in enumerate(zip(names, trains, thresholds, strict=True)):
            group = layers.create_group(str(i))
            group.attrs["name"] = name
            group.attrs.update(_layer_fields(train))
            group.create_dataset("shape", data=np.array(train.shape, dtype=np.int64))
            group.create_dataset("vth", data=v)
    tmp.write_bytes(buffer.getbuffer())


@register_exporter("events")
def export_events(
    trains: SpikeTrain | Mapping[str, SpikeTrain],
    path: str | os.PathLike[str],
    *,
    vth: Any,
    k: float | None = None,
) -> Path:
    """The ``"events"`` exporter: :func:`save_events` with the registry's argument order.

    Exporters of :mod:`spikecode.exporters` take the object first, then the path.
    """
    return save_events(path, trains, vth=vth, k=k)


# --------------------------------------------------------------------------- loading


def _read_npz(path: Path) -> tuple[dict[str, Any], np.ndarray, list[dict[str, Any]]]:
    # Opening the file ourselves guarantees it is closed when NumPy fails half-way.
    with open(path, "rb") as handle:
        check_array_claims(handle, path)
        loaded = np.load(handle, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise SpikecodeError("not a spikecode event file", file=str(path))
        with loaded as archive:
            data = {name: archive[name] for name in archive.files}
    _check_header(path, data)
    required = ("events", "layer_names", "k", *_LAYER_FIELDS)
    missing = [name for name in required if name not in data]
    names = data.get("layer_names", np.array([]))
    if names.ndim != 1:
        raise SpikecodeError("layer_names must be a 1-D array", file=str(path))
    for i in range(len(names)):
        missing += [key for key in (f"shape_{i}", f"vth_{i}") if key not in data]
    if missing:
        raise SpikecodeError(f"missing fields: {', '.join(missing)}", file=str(path))
    for key in _LAYER_FIELDS:
        if data[key].shape != names.shape:
            raise SpikecodeError(f"field {key!r} does not list every layer", file=str(path))
    layers = [
        {
            "name": str(names[i]),
            **{key: data[key][i] for key in _LAYER_FIELDS},
            "shape": data[f"shape_{i}"],
            "vth": data[f"vth_{i}"],
        }
        for i in range(len(names))
    ]
    return {key: data[key] for key in ("k", "format_version")}, data["events"], layers


def _read_hdf5(path: Path) -> tuple[dict[str, Any], np.ndarray, list[dict[str, Any]]]:
    h5py = _h5py(path)
    with h5py.File(path, "r") as f:
        check_hdf5_sizes(f, path)  # declared sizes first: gzip chunks inflate on reading
        header = dict(f.attrs)
        _check_header(path, header)
        missing = [key for key in ("events", "layers") if key not in f]
        missing += [key for key in ("k",) if key not in header]
        if missing:
            raise SpikecodeError(f"missing fields: {', '.join(missing)}", file=str(path))
        events = f["events"][()]
        groups = f["layers"]
        layers = []
        for i in range(len(groups)):
            if str(i) not in groups:
                raise SpikecodeError(f"missing layer group layers/{i}", file=str(path))
            group = groups[str(i)]
            fields = ("name", *_LAYER_FIELDS)
            lacking = [key for key in fields if key not in group.attrs]
            lacking += [key for key in ("shape", "vth") if key not in group]
            if lacking:
                raise SpikecodeError(
                    f"layer {i} lacks fields: {', '.join(lacking)}", file=str(path)
                )
            layers.append(
                {
                    **{key: group.attrs[key] for key in fields},
                    "shape": group["shape"][()],
                    "vth": group["vth"][()],
                }
            )
    return {key: header[key] for key in ("k", "format_version")}, events, layers


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _check_header(path: Path, header: Mapping[str, Any]) -> None:
    if _text(header.get("spikecode_format", "")) != EVENTS_FORMAT:
        raise SpikecodeError("not a spikecode event file", file=str(path))
    try:
        version = int(header.get("format_version", -1))
    except (TypeError, ValueError):
        version = -1
    if version not in (1, EVENTS_VERSION):
        raise SpikecodeError(
            f"event format version {version} is not supported (expected {EVENTS_VERSION})",
            file=str(path),
        )


def _check_events(path: Path, events: Any, n_layers: int, version: int) -> np.ndarray:
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    fields = EVENT_DTYPE.names if version == EVENTS_VERSION else _V1_FIELDS
    missing = [name for name in fields if name not in names]
    if missing or events.ndim != 1:
        raise SpikecodeError(
            f"events must be a 1-D structured array with fields {', '.join(fields)}"
            + (f"; missing: {', '.join(missing)}" if missing else ""),
            file=str(path),
        )
    for name in fields:
        if events.dtype[name].kind not in "iu":
            raise SpikecodeError(f"event field {name!r} must be integer", file=str(path))
    if len(events) and not (events["layer"].min() >= 0 and events["layer"].max() < n_layers):
        raise SpikecodeError("events refer to layers the file does not list", file=str(path))
    if version == EVENTS_VERSION:
        if len(events) and not np.all((events["p"] == 0) | (events["p"] == 1)):
            raise SpikecodeError("polarity channels must be 0 or 1", file=str(path))
        if len(events) and np.any(events["y"] != 0):
            raise SpikecodeError("the sensor has one row: y must be 0", file=str(path))
    return events


def _integer(value: Any) -> int:
    value = np.asarray(value)
    if value.ndim != 0 or value.dtype.kind not in "iu":
        raise TypeError("not an integer")
    return int(value)


def _build_layer(
    path: Path,
    layer: dict[str, Any],
    events: np.ndarray,
    max_spikes: int | None,
    version: int,
) -> tuple[str, Any]:
    name = _text(layer["name"])
    try:
        raw_shape = np.asarray(layer["shape"])
        if raw_shape.ndim != 1 or raw_shape.dtype.kind not in "iu":
            raise TypeError("shape must be a 1-D integer array")
        shape = tuple(int(n) for n in raw_shape)
        T, zero_point, clipped = (_integer(layer[key]) for key in ("T", "zero_point", "clipped"))
        scheme, bit_order = _text(layer["scheme"]), _text(layer["bit_order"])
    except (TypeError, ValueError):
        raise SpikecodeError("malformed layer metadata", file=str(path), layer=name) from None
    if not shape or min(shape) <= 0:
        raise SpikecodeError("bad train shape", file=str(path), layer=name, shape=shape)
    features = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=object))
    # Vth is a real array of one value per row: checking it first bounds the rows by
    # what the file holds, and the size check bounds T before anything is allocated.
    vth = np.asarray(layer["vth"])
    if vth.dtype.kind != "f" or vth.shape != shape[:-1]:
        raise SpikecodeError(
            "stored Vth does not match the train's shape", file=str(path), layer=name
        )
    if not (np.all(np.isfinite(vth)) and np.all(vth > 0)):
        raise SpikecodeError("stored Vth must be finite and > 0", file=str(path), layer=name)
    if not 0 <= clipped <= rows * features:
        raise SpikecodeError(
            f"clipped count {clipped} is not between 0 and the train's elements",
            file=str(path),
            layer=name,
        )
    check_train_size(
        rows=rows,
        T=T,
        spikes=len(events),
        elements=rows * features,
        max_spikes=max_spikes,
        file=str(path),
        layer=name,
    )
    x, token = events["x"].astype(np.int64), events["token"].astype(np.int64)
    if len(events) and (
        x.min() < 0 or x.max() >= features or token.min() < 0 or token.max() >= rows
    ):
        raise SpikecodeError(
            "event channels or tokens outside the train's shape",
            file=str(path),
            layer=name,
            shape=shape,
        )
    try:
        train = SpikeTrain.from_events(
            shape,
            T,
            scheme,
            events["t"],
            token * features + x,
            events["p"].astype(np.int8) * 2 - 1 if version == EVENTS_VERSION else events["p"],
            bit_order=bit_order,
            zero_point=zero_point,
            clipped=clipped,
        )
    except SpikecodeError as err:
        raise SpikecodeError(f"corrupt events: {err.message}", file=str(path), layer=name) from None
    return name, (train, vth)


def load_events(
    path: str | os.PathLike[str], *, max_spikes: int | None = DEFAULT_MAX_SPIKES
) -> EventFile:
    """Read an event file written by :func:`save_events`, validating everything.

    Parameters
    ----------
    path
        ``.npz`` or ``.h5``/``.hdf5`` (needs h5py).
    max_spikes
        Refuse, before allocating, a layer whose claimed shape and T would need more
        step offsets, spikes or elements than this (None: no bound); see
        :func:`spikecode.encode`.

    Returns
    -------
    EventFile
        ``layer name -> (SpikeTrain, vth)`` in the saved order, each train equal
        (``train.equals``) to the one saved; ``.k`` holds the saved ``k``.

    Raises
    ------
    SpikecodeError
        Missing, truncated or corrupt file, another format or version, missing fields,
        or events inconsistent with the metadata; the message names the file.
    """
    path = as_path(path)
    kind = _file_kind(path)
    require_file(path)
    max_spikes = check_max_spikes(max_spikes)
    reader = _read_hdf5 if kind == "hdf5" else _read_npz
    try:
        header, events, layers = reader(path)
    except SpikecodeError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    try:
        version = int(header["format_version"])
    except (TypeError, ValueError):
        raise SpikecodeError("malformed format version", file=str(path)) from None
    events = _check_events(path, events, len(layers), version)
    order = np.argsort(events["layer"], kind="stable")
    bounds = np.searchsorted(events["layer"][order], np.arange(len(layers) + 1))
    loaded: dict[str, tuple[SpikeTrain, np.ndarray]] = {}
    for i, layer in enumerate(layers):
        chunk = events[order[bounds[i] : bounds[i + 1]]]
        name, entry = _build_layer(path, layer, chunk, max_spikes, version)
        if name in loaded:
            raise SpikecodeError(f"layer {name!r} appears twice", file=str(path))
        loaded[name] = entry
    raw_k = np.asarray(header["k"])
    if raw_k.ndim != 0 or raw_k.dtype.kind not in "iuf":
        raise SpikecodeError("malformed k", file=str(path))
    k = float(raw_k)
    if not (np.isnan(k) or (np.isfinite(k) and k > 0)):  # NaN marks a fixed threshold
        raise SpikecodeError(f"stored k must be finite and > 0, not {k}", file=str(path))
    return EventFile(
        loaded, k=None if np.isnan(k) else k, T=_shared_T(train for train, _ in loaded.values())
    )


# --------------------------------------------------------------------------- tonic


def sensor_size(features: int) -> tuple[int, int, int]:
    """The ``sensor_size`` tonic expects for a layer: ``(features, 1, 2)`` (x, y, p)."""
    return (int(features), 1, 2)


def tonic_frame_kwargs(features: int, T: int) -> dict[str, Any]:
    """Arguments of ``tonic.transforms.ToFrame`` that bin one token into exactly T frames.

    ``n_time_bins=T`` would derive the bin width from the first and last event (0 for
    integer steps); a window of one step from 0 to ``T`` bins every step, silent ones
    included. The frames are ``[T, 2, 1, features]``: channel 1 counts +1 spikes,
    channel 0 counts -1 spikes.
    """
    return {
        "sensor_size": sensor_size(features),
        "time_window": 1,
        "start_time": 0,
        "end_time": int(T),
        "include_incomplete": True,
    }


def slice_events(
    events: np.ndarray,
    *,
    layer: int | str | None = None,
    token: int | None = None,
    layer_names: list[str] | None = None,
) -> np.ndarray:
    """The events of one layer and/or one token, in time order within a token.

    Parameters
    ----------
    events
        A structured array of :data:`EVENT_DTYPE` (:func:`to_events`, or the ``events``
        array of a saved file).
    layer
        The layer's position, or its name (then ``layer_names`` is needed).
    token
        The token (row) index within the layer.
    layer_names
        Names in file order (``EventFile.layer_names`` or :func:`to_events`).

    Returns
    -------
    numpy.ndarray
        The selected events (a copy), ready for tonic's transforms when one token is
        selected.
    """
    keep = np.ones(len(events), dtype=bool)
    if isinstance(layer, str):
        if not layer_names or layer not in layer_names:
            raise SpikecodeError(f"no layer {layer!r} in the events", layer=layer)
        layer = layer_names.index(layer)
    if layer is not None:
        keep &= events["layer"] == int(layer)
    if token is not None:
        keep &= events["token"] == int(token)
    picked = events[keep]
    if token is not None:  # one token's events are sorted by step already; make sure
        picked = picked[np.argsort(picked["t"], kind="stable")]
    return picked
