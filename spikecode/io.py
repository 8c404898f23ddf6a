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
ENCODED_VERSION = 1


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
    """Write counts, Vth and the train's compact events to an ``.npz`` (atomic, no pickles).

    ``meta`` holds extra string fields (for example the source file).
    """
    from spikecode._version import __version__

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise SpikecodeError("encoding results are written as .npz", file=str(path))
    fields: dict[str, np.ndarray] = {
        "spikecode_format": np.array(ENCODED_FORMAT),
        "format_version": np.array(ENCODED_VERSION),
        "spikecode_version": np.array(__version__),
        "counts": np.asarray(counts, dtype=np.int32),
        "vth": np.asarray(vth),
        "step_ptr": train.step_ptr,
        "feature": train.feature,
        "signs": train.signs,
        "shape": np.array(train.shape, dtype=np.int64),
        "T": np.array(train.T),
        "scheme": np.array(train.scheme),
        "bit_order": np.array(train.bit_order),
        "zero_point": np.array(train.zero_point),
        "clipped": np.array(train.clipped),
        "k": np.array(float(k)),
    }
    for name, value in (meta or {}).items():
        fields[f"meta_{name}"] = np.array(str(value))
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **fields)
    return path


def load_encoded(path: str | os.PathLike[str]) -> Encoded:
    """Read an encoding result written by :func:`save_encoded`, validating it fully.

    The events are checked (range, order, polarity) and must decode to the stored
    counts (unless values were saturated), so a corrupt file is refused, not half-read.
    """
    path = Path(path)
    if not path.is_file():
        raise SpikecodeError("no such file", file=str(path))
    try:
        data = _load_numpy(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SpikecodeError(f"cannot read {path.name}: {err}", file=str(path)) from None
    if str(data.get("spikecode_format", "")) != ENCODED_FORMAT:
        raise SpikecodeError("not a spikecode encoding result", file=str(path))
    version = int(data.get("format_version", -1))
    if version != ENCODED_VERSION:
        raise SpikecodeError(
            f"encoding format version {version} is not supported (expected {ENCODED_VERSION})",
            file=str(path),
        )
    required = (
        "counts", "vth", "step_ptr", "feature", "signs", "shape", "T",
        "scheme", "bit_order", "zero_point", "clipped", "k",
    )  # fmt: skip
    missing = [name for name in required if name not in data]
    if missing:
        raise SpikecodeError(f"missing fields: {', '.join(missing)}", file=str(path))
    try:
        train = SpikeTrain.from_arrays(
            tuple(int(n) for n in data["shape"]),
            int(data["T"]),
            str(data["scheme"]),
            data["step_ptr"],
            data["feature"],
            data["signs"],
            bit_order=str(data["bit_order"]),
            zero_point=int(data["zero_point"]),
            clipped=int(data["clipped"]),
        )
    except SpikecodeError as err:
        raise SpikecodeError(f"corrupt events: {err.message}", file=str(path)) from None
    counts = data["counts"]
    if counts.dtype != np.int32 or tuple(counts.shape) != train.shape:
        raise SpikecodeError("stored counts do not match the train's shape", file=str(path))
    if data["vth"].shape != train.shape[:-1]:
        raise SpikecodeError("stored Vth does not match the train's shape", file=str(path))
    if train.clipped == 0 and not np.array_equal(train.decode(), counts):
        raise SpikecodeError("events do not decode to the stored counts", file=str(path))
    meta = {name[5:]: str(value) for name, value in data.items() if name.startswith("meta_")}
    return Encoded(counts=counts, vth=data["vth"], train=train, k=float(data["k"]), meta=meta)
