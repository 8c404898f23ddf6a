"""Validation and conversion at the public boundary (private).

Public functions call these once; the kernels behind them then assume valid,
C-contiguous arrays of one dtype.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from spikecode.errors import SpikecodeError

INT32_MIN = int(np.iinfo(np.int32).min)
INT32_MAX = int(np.iinfo(np.int32).max)

#: The environment variable that sets the size bound (:func:`max_bytes`), in bytes.
MAX_BYTES_VARIABLE = "SPIKECODE_MAX_BYTES"
#: Default bound on one buffer that spikecode reads or allocates from a size it was told
#: (a file's header, a shape, a view's strides) rather than one it holds: 4 GiB.
DEFAULT_MAX_BYTES = 1 << 32


def as_path(value: Any, argument: str = "path") -> Path:
    """A file-system path argument as a :class:`~pathlib.Path`, or one error naming it.

    ``str`` and :class:`os.PathLike` (text) are paths; ``None``, numbers, ``bytes``, an
    empty string and names with a NUL character (which no file system stores) are
    refused here rather than as ``TypeError``/``ValueError`` from deep inside.
    """
    text: Any = None
    if isinstance(value, str | os.PathLike):
        try:
            text = os.fspath(value)
        except TypeError:
            text = None
    if not isinstance(text, str):
        raise SpikecodeError(
            f"{argument} must be a path (str or os.PathLike), not {type(value).__name__} "
            f"{short_repr(value, 60)}"
        )
    if not text:
        raise SpikecodeError(f"{argument} is an empty path")
    if "\0" in text:
        raise SpikecodeError(
            f"{argument} {short_repr(text, 60)} contains a NUL character, which no file "
            "name can hold"
        )
    return Path(text)


def max_bytes() -> int:
    """The size bound in bytes: :data:`MAX_BYTES_VARIABLE` if set, else the default."""
    text = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise SpikecodeError(
            f"the environment variable {MAX_BYTES_VARIABLE} must be a positive number of "
            f"bytes, not {short_repr(text)}"
        )
    return value


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def check_bytes(nbytes: int, what: str, **context: Any) -> None:
    """Refuse, before anything is allocated or read, a buffer larger than :func:`max_bytes`.

    The one size check behind every reader (npz members, HDF5 datasets, compressed
    chunks, NIR weights, standard input) and every allocation whose size comes from a
    declared shape rather than existing data.

    Parameters
    ----------
    nbytes
        The size the buffer would take (a Python int: no overflow).
    what
        What it is, for the message ("array 'x' in acts.npz").
    **context
        Facts for the error (file, shape).

    Raises
    ------
    SpikecodeError
        ``nbytes`` exceeds the bound; the message names the size, the bound and how to
        raise it (the environment variable :data:`MAX_BYTES_VARIABLE`).
    """
    bound = max_bytes()
    if nbytes > bound:
        raise SpikecodeError(
            f"{what} would take {_size(nbytes)}, more than the size bound of {_size(bound)}; "
            f"to go ahead, raise it with the environment variable {MAX_BYTES_VARIABLE}=BYTES",
            **context,
        )


def read_bounded(stream: Any, what: str) -> bytes:
    """All bytes of a binary stream, refusing more than :func:`max_bytes` as they arrive.

    For streams whose size is unknown before reading (standard input): at most one
    byte past the bound is read before the refusal.
    """
    bound = max_bytes()
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(1 << 24, bound + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > bound:
            check_bytes(total, f"{what} (what was read before stopping)")


def check_file_size(path: Path, what: str) -> None:
    """Refuse a file larger than :func:`max_bytes` before it is read whole."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # the read itself reports it
    check_bytes(size, what, file=str(path))


def array_bytes(shape: Any, dtype: Any) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, exactly (Python ints: no overflow)."""
    return math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize


def held_bytes(a: np.ndarray) -> int:
    """Bytes of memory an array's elements actually span (a zero-stride view: one item)."""
    if a.size == 0:
        return 0
    return a.itemsize + sum((n - 1) * abs(s) for n, s in zip(a.shape, a.strides, strict=True))


def check_copy(a: np.ndarray, dtype: Any, what: str) -> None:
    """Refuse a contiguous copy of ``a`` that needs far more memory than ``a`` spans.

    A broadcast view (``np.broadcast_to(np.float32(1), (2**20, 2**16))``) spans one item
    but copies to 256 GiB; such a copy is held to :func:`max_bytes`. A copy of data
    that exists (at most 8 times its span: a wider dtype) is not limited.
    """
    need = array_bytes(a.shape, dtype)
    if need > 8 * max(held_bytes(a), 1):
        check_bytes(
            need, f"a contiguous copy of {what} (a view of {_size(held_bytes(a))})", shape=a.shape
        )


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch when it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def check_tensor(x: Any, what: str) -> Any:
    """Refuse a torch tensor no computation can take: sparse, meta, or a huge broadcast.

    Dense (strided) tensors with data on any real device pass. A sparse or otherwise
    non-strided layout, a tensor on the ``meta`` device (shape only, no values), and an
    expanded view whose elements would need far more memory than its storage spans
    (held to :func:`max_bytes`, as NumPy views in :func:`check_copy`) are refused with
    one error naming the argument ``what``.
    """
    import torch

    if x.layout != torch.strided:
        raise SpikecodeError(
            f"{what} is a {str(x.layout).replace('torch.', '')} tensor; spikecode takes dense "
            f"tensors (convert with {what}.to_dense())",
            shape=tuple(x.shape),
        )
    if x.device.type == "meta":
        raise SpikecodeError(
            f"{what} is on the meta device: it has a shape but no values to compute with",
            shape=tuple(x.shape),
        )
    numel, size = x.numel(), x.element_size()
    if numel:
        span = size + sum((n - 1) * abs(s) for n, s in zip(x.shape, x.stride(), strict=True))
        if numel * size > 8 * span:
            check_bytes(
                numel * size, f"{what} (an expanded view of {_size(span)})", shape=tuple(x.shape)
            )
    return x


def to_numpy(x: Any, what: str = "input") -> np.ndarray:
    """Turn an array-like (NumPy, torch on any device, nested lists) into a NumPy array.

    bfloat16 tensors, which NumPy cannot hold, become float32 (exactly). Sparse and meta
    tensors are refused (:func:`check_tensor`).
    """
    if is_torch(x):
        import torch

        check_tensor(x, what)
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise SpikecodeError(f"{what} is not an array: {err}") from None


def float_rows(
    x: Any, what: str = "activations", argument: str = "x"
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate float activations and view them as C-contiguous ``[rows, features]``.

    Returns the 2-D array in the compute dtype (float64 for float64 input, else float32,
    see SPEC §2 numerics in the README) and the original shape. A sparse or meta tensor
    is refused naming ``argument`` (the public function's parameter).
    """
    # A tensor is refused (sparse, meta) under the public parameter's name.
    a = to_numpy(x, argument if is_torch(x) else what)
    if a.dtype.kind != "f":
        raise SpikecodeError(
            f"{what} must be floating point (float16, bfloat16, float32 or float64), not {a.dtype}",
            shape=a.shape,
        )
    check_nonempty(a.shape, what)
    compute = np.float64 if a.dtype == np.float64 else np.float32
    check_copy(a, compute, what)
    rows = np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=compute)
    return rows, a.shape


def refuse_nonfinite_rows(rows: np.ndarray, flagged: np.ndarray, shape: tuple[int, ...]) -> None:
    """Refuse activations ``rows`` if a kernel ``flagged`` any row as holding NaN or Inf.

    The kernels flag rows while they compute the thresholds; only the flagged rows are
    counted again here, so that the message says how many values in how many tokens.
    """
    bad_rows = np.flatnonzero(flagged)
    if bad_rows.size:
        bad = int((~np.isfinite(rows[bad_rows])).sum())
        raise SpikecodeError(
            f"activations contain {bad} NaN or Inf value(s) in {bad_rows.size} token(s)",
            shape=shape,
        )


def check_nonempty(shape: tuple[int, ...], what: str) -> None:
    """Refuse scalars and empty tensors: features must lie on a non-empty last axis."""
    if len(shape) == 0:
        raise SpikecodeError(f"{what} must have at least one axis (features last)", shape=shape)
    if 0 in shape:
        raise SpikecodeError(f"{what} is empty", shape=shape)


def count_rows(counts: Any, what: str = "counts") -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate integer spike counts and view them as C-contiguous int32 ``[rows, features]``.

    Float arrays are accepted when every value is integral (as after ``torch.round``);
    booleans, fractions, NaN and values outside int32 are refused.
    """
    a = to_numpy(counts, what)
    check_nonempty(a.shape, what)
    check_copy(a, np.int32, what)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise SpikecodeError(f"{what} contain NaN or Inf", shape=a.shape)
        if not np.all(a == np.rint(a)):
            raise SpikecodeError(f"{what} must be integers; got non-integer values", shape=a.shape)
    elif a.dtype.kind not in "iu":
        raise SpikecodeError(f"{what} must be an integer array, not {a.dtype}", shape=a.shape)
    if a.dtype != np.int32:
        low, high = a.min(), a.max()
        if low < INT32_MIN or high > INT32_MAX:
            raise SpikecodeError(
                f"{what} outside the int32 range: min {low}, max {high}", shape=a.shape
            )
    rows = np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=np.int32)
    return rows, a.shape


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` of a user value cut to ``limit`` characters, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def positive_finite(value: Any, name: str) -> float:
    """A finite number > 0 (for ``k``, thresholds); booleans and text are not numbers."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if isinstance(value, bool | str | bytes) or kind in ("b", "U", "S", "O"):
        raise SpikecodeError(f"{name} must be a number, not {short_repr(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpikecodeError(f"{name} must be a number, not {short_repr(value)}") from None
    if not np.isfinite(v) or v <= 0:
        raise SpikecodeError(f"{name} must be finite and > 0, not {short_repr(value)}")
    return v


def threshold_options(k: Any, vth_min: Any, vth_max: Any) -> tuple[float, float, float]:
    """``(k, vth_min, vth_max)`` as floats: each finite and > 0, ``vth_min <= vth_max``."""
    k = positive_finite(k, "k")
    vth_min = positive_finite(vth_min, "vth_min")
    vth_max = positive_finite(vth_max, "vth_max")
    if vth_min > vth_max:
        raise SpikecodeError(f"vth_min {vth_min} is larger than vth_max {vth_max}")
    return k, vth_min, vth_max


def check_hdf5_sizes(group: Any, path: Path) -> None:
    """Refuse an HDF5 file whose datasets together exceed the size bound, before reading.

    ``group`` is an open ``h5py.File``; the sizes are the declared ones (shape times
    item size), which a compressed dataset can inflate far beyond the file's own size.
    """
    total = 0

    def visit(name: str, node: Any) -> None:
        nonlocal total
        shape, dtype = getattr(node, "shape", None), getattr(node, "dtype", None)
        if shape is None or dtype is None:
            return
        total += math.prod(int(n) for n in shape) * dtype.itemsize
        check_bytes(total, f"the datasets of {path.name} (up to {name!r})", file=str(path))

    group.visititems(visit)


def check_loaded_whole(path: Path) -> None:
    """A file read whole (.safetensors, .pt) is held to the size bound, decompressed."""
    check_file_size(path, path.name)
    if zipfile.is_zipfile(path):  # torch's format: members may be compressed
        try:
            with zipfile.ZipFile(path) as archive:
                total = sum(info.file_size for info in archive.infolist())
        except (OSError, zipfile.BadZipFile, ValueError):
            return  # torch.load reports the damage
        check_bytes(total, f"the tensors of {path.name}", file=str(path))
