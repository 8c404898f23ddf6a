"""Validation and conversion at the public boundary (private).

Public functions call these once; the kernels behind them then assume valid,
C-contiguous arrays of one dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode.errors import SpikecodeError

INT32_MIN = int(np.iinfo(np.int32).min)
INT32_MAX = int(np.iinfo(np.int32).max)


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch when it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, what: str = "input") -> np.ndarray:
    """Turn an array-like (NumPy, torch on any device, nested lists) into a NumPy array.

    bfloat16 tensors, which NumPy cannot hold, become float32 (exactly).
    """
    if is_torch(x):
        import torch

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


def float_rows(x: Any, what: str = "activations") -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate float activations and view them as C-contiguous ``[rows, features]``.

    Returns the 2-D array in the compute dtype (float64 for float64 input, else float32,
    see SPEC §2 numerics in the README) and the original shape.
    """
    a = to_numpy(x, what)
    if a.dtype.kind != "f":
        raise SpikecodeError(
            f"{what} must be floating point (float16, bfloat16, float32 or float64), not {a.dtype}",
            shape=a.shape,
        )
    check_nonempty(a.shape, what)
    compute = np.float64 if a.dtype == np.float64 else np.float32
    rows = np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=compute)
    return rows, a.shape


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
