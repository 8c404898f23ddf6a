"""Reading activation files and writing/reading encoding results, safely.

Nothing here executes code from a file: ``.npy``/``.npz`` load with
``allow_pickle=False``, ``.pt`` with ``torch.load(weights_only=True)``, and
``.safetensors`` through safetensors. Every file spikecode writes goes to a temporary
file in the target folder first and is renamed into place (:func:`atomic_write`,
:func:`atomic_files`, :func:`atomic_folder`), so an interrupted or failed write (an error,
a full disk, Ctrl-C or SIGTERM) never leaves a partial file or a temporary behind.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikecode._atomic import atomic_files, atomic_folder, atomic_write, os_cause
from spikecode._validate import (
    array_bytes,
    as_path,
    check_bytes,
    check_file_size,
    check_loaded_whole,
)
from spikecode.encoders.schemes import get_scheme
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError

__all__ = [
    "ACTIVATION_SUFFIXES",
    "Encoded",
    "atomic_files",
    "atomic_folder",
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


#: How deeply nested a JSON file spikecode reads may be (its own files need fewer than 10).
MAX_JSON_DEPTH = 100


def path_kind(path: str | os.PathLike[str]) -> str | None:
    """``"file"``, ``"dir"``, ``"other"``, or None when nothing is there.

    Unlike :meth:`pathlib.Path.exists`, a name longer than the system allows, a symbolic
    link loop or a folder that cannot be searched raise one SpikecodeError saying so.
    """
    path = as_path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise SpikecodeError(
            f"cannot open {Path(path).name}: {os_cause(err)}", file=str(path)
        ) from None
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else "other"


def require_file(path: str | os.PathLike[str], what: str | None = None) -> Path:
    """Check that ``path`` is an existing regular file, naming what is wrong otherwise.

    A missing file is "no such file" (or "``what`` not found"); a directory, a symbolic
    link loop or a name longer than the system allows are reported as what they are.

    Raises
    ------
    SpikecodeError
        The path is not a readable regular file; the error names the file.
    """
    path = as_path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        message = f"{what} not found" if what else "no such file"
        raise SpikecodeError(message, file=str(path)) from None
    except OSError as err:
        raise SpikecodeError(
            f"cannot read {what or path.name}: {os_cause(err)}", file=str(path)
        ) from None
    if stat.S_ISDIR(mode):
        raise SpikecodeError(f"{what or path.name} is a directory, not a file", file=str(path))
    if not stat.S_ISREG(mode):
        raise SpikecodeError(f"{what or path.name} is not a regular file", file=str(path))
    return path


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so that checking a deep document cannot itself exhaust the stack.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str, what: str, file: str | None = None) -> Any:
    """Parse JSON text, refusing malformed or absurdly nested documents in one error.

    Parameters
    ----------
    text
        The JSON text.
    what
        How the message names the document ("the stats file", "config.json").
    file
        The file it came from, for the error's context.

    Raises
    ------
    SpikecodeError
        Not valid JSON, nested deeper than :data:`MAX_JSON_DEPTH` levels, or a number
        Python refuses (an integer of thousands of digits).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpikecodeError(
            f"cannot read {what}: not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno}",
            file=file,
        ) from None
    except RecursionError:
        value = None
        nested = True
    except ValueError as err:  # e.g. an integer beyond Python's digit limit
        raise SpikecodeError(f"cannot read {what}: {str(err)[:200]}", file=file) from None
    else:
        nested = _json_depth_exceeds(value, MAX_JSON_DEPTH)
    if nested:
        raise SpikecodeError(
            f"cannot read {what}: JSON nested more than {MAX_JSON_DEPTH} levels deep", file=file
        )
    return value


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Read a UTF-8 JSON file: the one JSON reader behind every spikecode file format.

    Parameters
    ----------
    path
        The file.
    what
        How messages name it ("the stats file", "config.json", "the k map").

    Raises
    ------
    SpikecodeError
        A missing file ("``what`` not found"), a directory, an unreadable file, text that
        is not UTF-8, or JSON :func:`parse_json` refuses. The message is one line and
        the error names the file.
    """
    path = require_file(path, what)
    check_file_size(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpikecodeError(f"cannot read {what}: {os_cause(err)}", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise SpikecodeError(
            f"cannot read {what}: not UTF-8 text (byte {err.start})", file=str(path)
        ) from None
    return parse_json(text, what, str(path))


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
    require_file(path)
    if suffix not in (".npy", ".npz"):  # read whole; .npy/.npz members are checked one by one
        check_loaded_whole(path)
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
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise SpikecodeError(
            f"cannot read {path.name}: it holds Python objects other than tensors{what}; "
            "spikecode never runs code from a file: save plain tensors (a tensor or a dict "
            "of tensors) or use .safetensors",
            file=str(path),
        ) from None
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    except Exception as err:  # safetensors raises its own SafetensorError, pickle UnpicklingError
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    return _tensors_in(obj, path)


#: Deflate expands at most about 1032-fold; a zip member claiming more is a lie.
_MAX_DEFLATE_RATIO = 1100


def _claimed_npy_bytes(stream: Any) -> int:
    """Bytes of array data an ``.npy`` header announces (the stream is left after it)."""
    version = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0  # 3.0 differs only in text encoding
    )
    shape, _, dtype = read_header(stream)
    return array_bytes(shape, dtype)


def check_array_claims(handle: Any, path: Path) -> None:
    """Refuse a .npy/.npz whose headers announce more data than the file can hold.

    NumPy allocates the announced array before reading it, so a 3 KB file claiming a
    16 GiB array would otherwise ask for 16 GiB. Zip members are held to what their
    compressed bytes can expand to, and everything to the size bound
    (:func:`spikecode._validate.max_bytes`, ``SPIKECODE_MAX_BYTES``).
    """
    start = handle.tell()
    is_zip = handle.read(4) == b"PK\x03\x04"
    handle.seek(start)
    if not is_zip:
        size = os.fstat(handle.fileno()).st_size
        claimed = _claimed_npy_bytes(handle)
        if claimed > size:
            raise SpikecodeError(
                f"cannot read {path.name}: the array header announces more data than "
                "the file holds (truncated or corrupt)",
                file=str(path),
            )
        check_bytes(claimed, f"the array in {path.name}", file=str(path))
        handle.seek(start)
        return
    with zipfile.ZipFile(handle) as archive:
        total = 0
        for info in archive.infolist():
            limit = info.compress_size
            if info.compress_type != zipfile.ZIP_STORED:
                limit = info.compress_size * _MAX_DEFLATE_RATIO + 1024
            if info.file_size > limit:
                raise SpikecodeError(
                    f"cannot read {path.name}: archive member {info.filename[:80]!r} claims "
                    f"{info.file_size:,} bytes from {info.compress_size:,} (corrupt)",
                    file=str(path),
                )
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                if _claimed_npy_bytes(member) > info.file_size:
                    raise SpikecodeError(
                        f"cannot read {path.name}: array {info.filename[:-4][:80]!r} announces "
                        "more data than the archive holds (truncated or corrupt)",
                        file=str(path),
                    )
        for info in archive.infolist():
            # Decompressed sizes add up: every member is read (np.load of a whole npz).
            total += info.file_size
            check_bytes(
                total, f"the arrays of {path.name} (up to {info.filename[:80]!r})", file=str(path)
            )
    handle.seek(start)


def _load_numpy(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npy (as ``"array"``) or .npz, without pickles or blind allocation."""
    # Opening the file ourselves guarantees it is closed when NumPy fails half-way.
    with open(path, "rb") as handle:
        check_array_claims(handle, path)
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
    arrays = _read_arrays(as_path(path))
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
    from spikecode._validate import check_nonempty, short_repr, to_numpy

    path = as_path(path)
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
            f"no array {short_repr(key)} in {path.name}; it has: "
            f"{', '.join(name[:80] for name in list(arrays)[:20])}",
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
    from spikecode._validate import positive_finite
    from spikecode._version import __version__

    path = as_path(path)
    if path.suffix.lower() != ".npz":
        raise SpikecodeError("encoding results are written as .npz", file=str(path))
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"save_encoded expects a SpikeTrain, not {type(train).__name__}")
    k = positive_finite(k, "k")
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
        "k": np.array(k),
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
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise self.fail(f"cannot read {self.path.name}: {name}: {err}") from None


_META_KINDS = {
    "shape": "shape", "T": "int", "scheme": "str", "bit_order": "str",
    "zero_point": "int", "clipped": "int", "k": "float", "format_version": "int",
    "layout": "str",
}  # fmt: skip


def _small_meta(members: _Members, names: tuple[str, ...]) -> dict[str, Any]:
    """Metadata fields as Python values, each read only if its header says it is small."""
    values = {}
    for name in names:
        if name not in members.files:
            raise members.fail(f"missing fields: {name}")
        try:
            shape, _ = _array_header(members.archive, name)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise members.fail(f"cannot read {members.path.name}: {name}: {err}") from None
        if int(np.prod(shape, dtype=np.int64)) > 64:
            raise members.fail(f"corrupt {name}: shape {list(shape)}")
        values[name] = members.read(name)
    return {name: _field(values, name, _META_KINDS[name], members.path) for name in names}


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


def _field(data: dict[str, Any], name: str, kind: str, path: Path) -> Any:
    """A stored metadata field as a Python value, refusing the wrong type or shape.

    ``kind`` is ``"int"``, ``"float"``, ``"str"`` (0-d arrays) or ``"shape"`` (a 1-D
    integer array).
    """
    value = data[name]
    if kind == "shape":
        ok = value.ndim == 1 and value.dtype.kind in "iu"
    else:
        allowed = {"int": "iu", "float": "iuf", "str": "U"}[kind]
        ok = value.ndim == 0 and value.dtype.kind in allowed
    if not ok:
        expected = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "shape": "a 1-D integer array",
        }[kind]
        raise SpikecodeError(
            f"stored field {name!r} must be {expected}, not {value.dtype} of shape "
            f"{tuple(value.shape)}",
            file=str(path),
        )
    if kind == "shape":
        return tuple(int(n) for n in value)
    return {"int": int, "float": float, "str": str}[kind](value)


def load_encoded(path: str | os.PathLike[str]) -> Encoded:
    """Read an encoding result written by :func:`save_encoded`, validating it fully.

    Every field is checked for type and shape — each array's shape from its header,
    against the metadata, before it is read, so a corrupt header cannot make the reader
    allocate more than the train's own size. Events are checked for range, order and
    polarity, planes for padding and sign bits, and the train must decode to the stored
    counts — clipped to the code's range when values were saturated, with exactly
    ``clipped`` of them outside it — so a corrupt file is refused, not half-read. Both
    layouts and format versions 1 and 2 are read.

    Raises
    ------
    SpikecodeError
        A missing, unreadable or corrupt file (naming the file and the field).
    """
    path = require_file(path)
    try:
        with open(path, "rb") as handle:
            check_array_claims(handle, path)
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                raise SpikecodeError("not a spikecode encoding result", file=str(path))
            with loaded as archive:
                return _read_encoded(_Members(archive, path))
    except SpikecodeError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None


def _read_encoded(members: _Members) -> Encoded:
    files = members.files
    if "spikecode_format" not in files or str(members.read("spikecode_format")) != (ENCODED_FORMAT):
        raise members.fail("not a spikecode encoding result")
    version = (
        _small_meta(members, ("format_version",))["format_version"]
        if "format_version" in files
        else -1
    )
    if version not in _READABLE_VERSIONS:
        raise members.fail(
            f"encoding format version {version} is not supported "
            f"(expected one of {', '.join(map(str, _READABLE_VERSIONS))})"
        )
    layout = _small_meta(members, ("layout",))["layout"] if version >= 2 else "events"
    if layout not in _LAYOUT_FIELDS:
        raise members.fail(f"unknown layout {layout!r}")
    missing = [
        name
        for name in ("counts", "vth", *_META_FIELDS, *_LAYOUT_FIELDS[layout])
        if name not in files
    ]
    if missing:
        raise members.fail(f"missing fields: {', '.join(missing)}")
    meta = _small_meta(members, _META_FIELDS)
    path = members.path
    k, clipped = meta["k"], meta["clipped"]
    if not (np.isfinite(k) and k > 0):
        raise members.fail(f"stored k must be finite and > 0, not {k}")
    train = _read_train(members, layout, meta)
    counts = members.read("counts", train.shape, "i")
    if counts.dtype != np.int32:
        raise members.fail("stored counts do not match the train's shape")
    vth = members.read("vth", train.shape[:-1], "f")
    if not np.all(np.isfinite(vth)) or np.any(vth <= 0):
        raise SpikecodeError("stored Vth must be finite and > 0", file=str(path), field="vth")
    if not 0 <= clipped <= counts.size:
        raise members.fail(
            f"stored clipped count {clipped} is not between 0 and the {counts.size} elements"
        )
    _check_decodes(path, train, counts)
    extra = {
        name[5:]: str(members.read(name)) for name in sorted(files) if name.startswith("meta_")
    }
    return Encoded(counts=counts, vth=vth, train=train, k=k, meta=extra)


def _check_decodes(path: Path, train: SpikeTrain, counts: np.ndarray) -> None:
    """The train must decode to the counts, clipped into the code's range (SPEC §3)."""
    spec = get_scheme(train.scheme)
    lo, hi = spec.value_range(train.T)
    lo, hi = lo + train.zero_point, hi + train.zero_point
    wide = counts.astype(np.int64)
    outside = int(np.count_nonzero((wide < lo) | (wide > hi)))
    if outside != train.clipped:
        raise SpikecodeError(
            f"stored clipped count {train.clipped} does not match the {outside} counts "
            f"outside the range {lo}..{hi} of T={train.T}",
            file=str(path),
        )
    expected = np.clip(wide, lo, hi) if outside else wide
    if not np.array_equal(train.decode(), expected):
        raise SpikecodeError(f"{train.layout} do not decode to the stored counts", file=str(path))


def export_listing(
    path: Path, index_file: str, index_format: str, suffix: str, always: tuple[str, ...] = ()
) -> set[str] | None:
    """The files an earlier folder export at ``path`` wrote, by its own index; None if none.

    For :func:`atomic_folder`'s ``listing``: the index (``index_file``, whose ``format``
    is ``index_format``) names its files in ``projections[i].file``; only plain names
    ending in ``suffix`` count (no folders, no ``..``), plus the index itself and the
    ``always`` files the export writes beside it. Nothing else may be taken for one of
    them, so a folder export never removes what it did not write.
    """
    try:
        index = read_json(path / index_file, index_file)
    except SpikecodeError:
        return None
    if not isinstance(index, dict) or index.get("format") != index_format:
        return None
    listed = index.get("projections")
    files = (
        [entry.get("file") for entry in listed if isinstance(entry, dict)]
        if isinstance(listed, list)
        else []
    )
    return {index_file, *always} | {
        name
        for name in files
        if isinstance(name, str) and name.endswith(suffix) and Path(name).name == name
    }


def write_export(
    path: Path,
    items: Mapping[str, Any],
    suffix: str,
    index_file: str,
    *,
    build: Callable[[Any], Any],
    save: Callable[[Path, Any], None],
    index: Callable[[dict[str, str]], dict[str, Any]],
    listing: Callable[[Path], set[str] | None],
    copies: Mapping[str, Path] | None = None,
) -> Path:
    """Write a projection export: one file for ``path`` ending in ``suffix``, else a folder.

    The rule the NIR and Lava exporters share. A file takes exactly one item, written
    with :func:`atomic_write`; a folder takes ``<name><suffix>`` per item, the ``copies``
    (``file name -> source``) and ``index_file`` (``index(files)`` as JSON), written with
    :func:`atomic_folder` and ``listing``. ``save(target, build(item))`` writes an item:
    ``build`` runs before the file's temporary copy exists (NIR builds its HDF5 image in
    memory there, so a failed build leaves nothing to clean up).
    """
    if path.suffix.lower() == suffix:
        if len(items) != 1:
            raise SpikecodeError(
                f"{len(items)} projections go to a folder (one {suffix} per projection plus "
                f"{index_file}); pass a path without the {suffix} suffix",
                file=str(path),
            )
        data = build(next(iter(items.values())))
        with atomic_write(path) as tmp:
            save(tmp, data)
        return path
    files = {name: f"{name}{suffix}" for name in items}
    with atomic_folder(path, listing=listing) as tmp:
        for name, item in items.items():
            save(tmp / files[name], build(item))
        for name, source in (copies or {}).items():
            shutil.copyfile(source, tmp / name)
        text = json.dumps(index(files), indent=1)
        (tmp / index_file).write_text(text + "\n", encoding="utf8")
    return path


def shipped_json_names(folder: Any) -> tuple[str, ...]:
    """Stems of the ``.json`` files in a package data folder (a ``resources`` traversable), sorted.

    The names of the tables spikecode ships (energy tables, deployment targets).
    """
    return tuple(
        sorted(
            entry.name[: -len(".json")]
            for entry in folder.iterdir()
            if entry.name.endswith(".json") and entry.is_file()
        )
    )
