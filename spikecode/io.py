"""Reading activation files and writing/reading encoding results, safely.

Nothing here executes code from a file: ``.npy``/``.npz`` load with
``allow_pickle=False``, ``.pt`` with ``torch.load(weights_only=True)``, and
``.safetensors`` through safetensors. Every file spikecode writes goes to a temporary
file in the target folder first and is renamed into place (:func:`atomic_write`), so an
interrupted or failed write never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError

__all__ = [
    "ACTIVATION_SUFFIXES",
    "Encoded",
    "atomic_write",
    "list_arrays",
    "load_activations",
    "load_encoded",
    "save_encoded",
]

ACTIVATION_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
ENCODED_FORMAT = "spikecode.encoded"
#: Version 2 adds the ``layout`` field and the planes layout; version 1 files (events
#: only, no ``layout`` field) are still read.
ENCODED_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_META_FIELDS = (
    "shape", "T", "scheme", "bit_order", "zero_point", "clipped", "k",
)  # fmt: skip
_LAYOUT_FIELDS = {
    "events": ("step_ptr", "feature", "signs"),
    "planes": ("planes", "sign_plane"),
}


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched.

    Parameters
    ----------
    path
        The file to write.
    what
        How error messages name the file (default: the path itself).

    Raises
    ------
    SpikecodeError
        The target folder does not exist or is not writable, or the final rename fails
        (for example a directory of that name is in the way).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    label = what or str(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise SpikecodeError(f"cannot write {label}: {err.strerror}", file=str(target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise SpikecodeError(f"cannot write {label}: {err.strerror}", file=str(target)) from None


# -- activations -------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in ACTIVATION_SUFFIXES:
        raise SpikecodeError(
            f"unsupported file type {suffix or '(none)'}; "
            f"use one of {', '.join(ACTIVATION_SUFFIXES)}",
            file=str(path),
        )
    return suffix


def _read_arrays(path: Path) -> dict[str, Any]:
    """All arrays/tensors of an activation file, by name (lazy where the format allows)."""
    suffix = _suffix(path)
    if not path.is_file():
        raise SpikecodeError("no such file", file=str(path))
    try:
        if suffix in (".npy", ".npz"):
            return _load_numpy(path)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
    except SpikecodeError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    except Exception as err:  # safetensors raises its own SafetensorError, pickle UnpicklingError
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    return _tensors_in(obj, path)


def _load_numpy(path: Path) -> dict[str, np.ndarray]:
    # Opening the file ourselves guarantees it is closed when NumPy fails half-way.
    with open(path, "rb") as handle:
        loaded = np.load(handle, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"array": loaded}
        with loaded as archive:
            return {name: archive[name] for name in archive.files}


def _tensors_in(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    if isinstance(obj, dict):
        found = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if found:
            return found
    raise SpikecodeError(
        f"{path.name} holds no tensor (found {type(obj).__name__})", file=str(path)
    )


def list_arrays(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Names, shapes and dtypes of the arrays in an activation file."""
    arrays = _read_arrays(Path(path))
    return {
        name: (tuple(a.shape), str(a.dtype).replace("torch.", "")) for name, a in arrays.items()
    }


def load_activations(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Load one float activation array (features last) from .npy, .npz, .safetensors or .pt.

    Parameters
    ----------
    path
        The file. ``.pt`` files must hold a tensor or a dict of tensors (loaded with
        ``weights_only=True``).
    key
        Which array, when the file holds several.

    Returns
    -------
    numpy.ndarray
        float16, float32 or float64 (bfloat16 becomes float32 exactly).

    Raises
    ------
    SpikecodeError
        Missing/corrupt/unsupported file, several arrays and no ``key``, an unknown
        ``key``, non-float or empty data, or a spikecode encoding file.
    """
    from spikecode._validate import check_nonempty, to_numpy

    path = Path(path)
    arrays = _read_arrays(path)
    if "spikecode_format" in arrays:
        raise SpikecodeError(
            "this is a spikecode encoding result, not activations (read it with load_encoded)",
            file=str(path),
        )
    if key is None:
        if len(arrays) != 1:
            raise SpikecodeError(
                f"{path.name} holds {len(arrays)} arrays; choose one with key "
                f"(--key): {', '.join(list(arrays)[:20])}",
                file=str(path),
            )
        key = next(iter(arrays))
    if key not in arrays:
        raise SpikecodeError(
            f"no array {key!r} in {path.name}; it has: {', '.join(list(arrays)[:20])}",
            file=str(path),
        )
    a = to_numpy(arrays[key], key)
    if a.dtype.kind != "f":
        raise SpikecodeError(
            f"activations must be floating point, not {a.dtype}", file=str(path), key=key
        )
    check_nonempty(a.shape, f"array {key!r} in {path.name}")
    return a


# -- encoding results --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Encoded:
    """What ``spikecode encode --out`` writes: counts, thresholds, the train and metadata."""

    counts: np.ndarray
    vth: np.ndarray
    train: SpikeTrain
    k: float
    meta: dict[str, str] = field(default_factory=dict)


def save_encoded(
    path: str | os.PathLike[str],
    counts: np.ndarray,
    vth: np.ndarray,
    train: SpikeTrain,
    *,
    k: float,
    meta: dict[str, str] | None = None,
) -> Path:
    """Write counts, Vth and the train to an ``.npz`` (atomic, no pickles).

    The train is stored in its own layout: the compact events (``step_ptr``,
    ``feature``, ``signs``) or the packed bit-planes (``planes`` and ``sign_plane``,
    empty ``[0, ceil(F/8)]`` for the codes without -1 spikes), named by the ``layout``
    field (format version 2). ``meta`` holds extra string fields (for example the
    source file).
    """
    from spikecode._version import __version__

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise SpikecodeError("encoding results are written as .npz", file=str(path))
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"save_encoded expects a SpikeTrain, not {type(train).__name__}")
    fields: dict[str, np.ndarray] = {
        "spikecode_format": np.array(ENCODED_FORMAT),
        "format_version": np.array(ENCODED_VERSION),
        "spikecode_version": np.array(__version__),
        "counts": np.asarray(counts, dtype=np.int32),
        "vth": np.asarray(vth),
        "layout": np.array(train.layout),
        "shape": np.array(train.shape, dtype=np.int64),
        "T": np.array(train.T),
        "scheme": np.array(train.scheme),
        "bit_order": np.array(train.bit_order),
        "zero_point": np.array(train.zero_point),
        "clipped": np.array(train.clipped),
        "k": np.array(float(k)),
    }
    if train.layout == "planes":
        sign = train.sign_plane
        fields["planes"] = train.planes
        fields["sign_plane"] = (
            np.zeros((0, train.planes.shape[2]), np.uint8) if sign is None else sign
        )
    else:
        fields.update(step_ptr=train.step_ptr, feature=train.feature, signs=train.signs)
    for name, value in (meta or {}).items():
        fields[f"meta_{name}"] = np.array(str(value))
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **fields)
    return path


def _array_header(archive: Any, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an ``.npz`` member from its header, without reading the data."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), dtype


class _Members:
    """The members of an encoding ``.npz``: small ones read at once, large ones checked first."""

    def __init__(self, archive: Any, path: Path) -> None:
        self.archive = archive
        self.path = path
        self.files = set(archive.files)

    def fail(self, message: str) -> SpikecodeError:
        return SpikecodeError(message, file=str(self.path))

    def read(self, name: str, shape: tuple[int, ...] | None = None, dtype: Any = None) -> Any:
        """Read member ``name`` once its header has the expected shape and dtype kind."""
        if name not in self.files:
            raise self.fail(f"missing fields: {name}")
        try:
            got_shape, got_dtype = _array_header(self.archive, name)
            if shape is not None and got_shape != shape:
                raise self.fail(
                    f"corrupt {name}: shape {list(got_shape)}, the header says {list(shape)}"
                )
            if dtype is not None and got_dtype.kind not in dtype:
                raise self.fail(f"corrupt {name}: dtype {got_dtype}")
            return self.archive[name]
        except SpikecodeError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise self.fail(f"cannot read {name} in {self.path.name}: {err}") from None


def _small_meta(members: _Members) -> dict[str, Any]:
    """The metadata fields, each read only if its header says it is small."""
    values = {}
    for name in _META_FIELDS:
        if name not in members.files:
            raise members.fail(f"missing fields: {name}")
        try:
            shape, _ = _array_header(members.archive, name)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise members.fail(f"cannot read {name} in {members.path.name}: {err}") from None
        if int(np.prod(shape, dtype=np.int64)) > 64:
            raise members.fail(f"corrupt {name}: shape {list(shape)}")
        values[name] = members.read(name)
    try:
        return {
            "shape": tuple(int(n) for n in values["shape"].reshape(-1)),
            "T": int(values["T"]),
            "scheme": str(values["scheme"]),
            "bit_order": str(values["bit_order"]),
            "zero_point": int(values["zero_point"]),
            "clipped": int(values["clipped"]),
            "k": float(values["k"]),
        }
    except (TypeError, ValueError) as err:
        raise members.fail(f"corrupt metadata: {err}") from None


def _read_train(members: _Members, layout: str, meta: dict[str, Any]) -> SpikeTrain:
    """The train of an encoding file; array shapes are checked against the metadata first."""
    from spikecode.encoders.schemes import get_scheme

    shape, T = meta["shape"], meta["T"]
    try:
        spec = get_scheme(meta["scheme"])
        if not shape or min(shape) <= 0:
            raise SpikecodeError("train shape must be non-empty with features last")
        spec.check_T(T)
    except SpikecodeError as err:
        raise members.fail(f"corrupt metadata: {err.message}") from None
    features = shape[-1]
    rows = int(np.prod(shape, dtype=np.int64)) // features
    options = {k: meta[k] for k in ("bit_order", "zero_point", "clipped")}
    try:
        if layout == "planes":
            width = (features + 7) // 8
            planes = members.read("planes", (T, rows, width), "u")
            sign = members.read("sign_plane", (rows if spec.signed else 0, width), "u")
            return SpikeTrain.from_planes(
                shape, T, spec.name, planes, sign if spec.signed else None, **options
            )
        step_ptr = members.read("step_ptr", (rows * T + 1,), "iu")
        n = int(step_ptr[-1]) if step_ptr.size else 0
        if n < 0 or n > rows * T * features:
            raise members.fail("corrupt events: step_ptr ends outside the train's size")
        feature = members.read("feature", (n,), "iu")
        signs = members.read("signs", (n if spec.signed else 0,), "iu")
        return SpikeTrain.from_arrays(shape, T, spec.name, step_ptr, feature, signs, **options)
    except SpikecodeError as err:
        if err.context.get("file"):
            raise
        raise members.fail(f"corrupt {layout}: {err.message}") from None


def load_encoded(path: str | os.PathLike[str]) -> Encoded:
    """Read an encoding result written by :func:`save_encoded`, validating it fully.

    Every array's shape is checked from its header against the metadata before it is
    read (a corrupt header cannot make the reader allocate more than the train's own
    size); events are checked for range, order and polarity, planes for padding and
    sign bits; and the train must decode to the stored counts (unless values were
    saturated). A corrupt file is refused, never half-read. Both layouts and format
    versions 1 and 2 are read.
    """
    path = Path(path)
    if not path.is_file():
        raise SpikecodeError("no such file", file=str(path))
    try:
        with open(path, "rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                raise SpikecodeError("not a spikecode encoding result", file=str(path))
            with loaded as archive:
                return _read_encoded(_Members(archive, path))
    except SpikecodeError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None


def _read_encoded(members: _Members) -> Encoded:
    files = members.files
    if "spikecode_format" not in files or str(members.read("spikecode_format")) != (ENCODED_FORMAT):
        raise members.fail("not a spikecode encoding result")
    version = int(members.read("format_version")) if "format_version" in files else -1
    if version not in _READABLE_VERSIONS:
        raise members.fail(
            f"encoding format version {version} is not supported "
            f"(expected one of {', '.join(map(str, _READABLE_VERSIONS))})"
        )
    layout = str(members.read("layout")) if version >= 2 else "events"
    if layout not in _LAYOUT_FIELDS:
        raise members.fail(f"unknown layout {layout!r}")
    missing = [
        name
        for name in ("counts", "vth", *_META_FIELDS, *_LAYOUT_FIELDS[layout])
        if name not in files
    ]
    if missing:
        raise members.fail(f"missing fields: {', '.join(missing)}")
    meta = _small_meta(members)
    train = _read_train(members, layout, meta)
    counts = members.read("counts", train.shape, "i")
    if counts.dtype != np.int32:
        raise members.fail("stored counts do not match the train's shape")
    vth = members.read("vth", train.shape[:-1], "f")
    if train.clipped == 0 and not np.array_equal(train.decode(), counts):
        raise members.fail("the spikes do not decode to the stored counts")
    extra = {
        name[5:]: str(members.read(name)) for name in sorted(files) if name.startswith("meta_")
    }
    return Encoded(counts=counts, vth=vth, train=train, k=meta["k"], meta=extra)
