"""Packed bit-planes with PyTorch, on the tensor's device (private).

The same planes as the Numba kernels of :mod:`spikecode.encoders._plane_kernels`, bit for
bit (the tests compare them): groups of eight features are packed into one int64 word
per plane chunk and transposed as an 8 x 8 bit matrix with three shift-and-mask rounds,
so every operation runs on ``rows · ceil(F/8)`` words rather than on element-steps.
Viewing eight uint8 lanes as one int64 assumes a little-endian device (x86, ARM and
CUDA all are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spikecode._validate import INT32_MAX, INT32_MIN, check_nonempty, check_tensor
from spikecode.encoders._arrays import check_planes_size, plane_width
from spikecode.encoders.plan import EncodingPlan, resolve_range
from spikecode.encoders.schemes import TERNARY, TWOS, Scheme
from spikecode.errors import SpikecodeError


def _transpose8(x: torch.Tensor) -> torch.Tensor:
    """Byte ``b`` of each result word holds bit ``b`` of the input's byte ``l`` at bit ``l``."""
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AA
    x = x ^ t ^ (t << 7)
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCC
    x = x ^ t ^ (t << 14)
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0
    return x ^ t ^ (t << 28)


def _popcount8(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each uint8."""
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


def _words(lanes: torch.Tensor) -> torch.Tensor:
    """uint8 ``[rows, 8·W]`` -> int64 ``[rows, W]`` words (lane ``l`` in byte ``l``)."""
    return lanes.contiguous().view(torch.int64)


def _chunk_lanes(m: torch.Tensor, c: int, unary: bool) -> torch.Tensor:
    """Each element's byte for steps/bits ``8c .. 8c+7``, uint8."""
    if unary:  # thermometer: |v| spikes in the first |v| steps
        return ((torch.ones_like(m) << (m - 8 * c).clamp(0, 8)) - 1).to(torch.uint8)
    return ((m >> (8 * c)) & 255).to(torch.uint8)


def planes_from_values(
    values: torch.Tensor, code: int, T: int, msb: bool, signed: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Planes of values after the zero point, ``[rows, F]`` integer, on their device.

    Returns ``(planes [T, rows, W], sign_plane [rows, W] or None, spikes)`` with
    ``W = ceil(F / 8)``; ``spikes`` is the number of spikes (a 0-d tensor).
    """
    rows, features = values.shape
    width = plane_width(features)
    pad = width * 8 - features
    work = torch.int64 if T > 30 else torch.int32
    v = values.to(work)
    if pad:
        v = torch.nn.functional.pad(v, (0, pad))
    unary = code <= TERNARY
    m = v & ((1 << T) - 1) if code == TWOS else v.abs()
    planes = torch.zeros((T, rows, width), dtype=torch.uint8, device=v.device)
    for c in range((T + 7) // 8):
        chunk = _transpose8(_words(_chunk_lanes(m, c, unary))).view(torch.uint8)
        chunk = chunk.view(rows, width, 8)
        for kk in range(min(8, T - 8 * c)):
            b = 8 * c + kk
            planes[T - 1 - b if (msb and not unary) else b] = chunk[:, :, kk]
    sign = None
    if signed:
        negative = (v < 0).to(torch.uint8)
        sign = _transpose8(_words(negative)).view(torch.uint8).view(rows, width, 8)[:, :, 0]
        sign = sign.contiguous()
    return planes, sign, _popcount8(planes).sum(dtype=torch.int64)


def _count_tensor(counts: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Validate integer counts (as :func:`spikecode._validate.count_rows`), ``[rows, F]``."""
    shape = tuple(check_tensor(counts, "counts").shape)
    check_nonempty(shape, "counts")
    c = counts.detach()
    if c.dtype.is_floating_point:
        if not bool(torch.isfinite(c).all()):
            raise SpikecodeError("counts contain NaN or Inf", shape=shape)
        if not bool((c == torch.round(c)).all()):
            raise SpikecodeError("counts must be integers; got non-integer values", shape=shape)
    elif c.dtype == torch.bool or c.dtype.is_complex:
        raise SpikecodeError(f"counts must be an integer array, not {c.dtype}", shape=shape)
    low, high = (int(v) for v in torch.aminmax(c))
    if low < INT32_MIN or high > INT32_MAX:
        raise SpikecodeError(f"counts outside the int32 range: min {low}, max {high}", shape=shape)
    return c.reshape(-1, shape[-1]), shape


def encode_planes(
    counts: torch.Tensor,
    spec: Scheme,
    T: int | None,
    *,
    saturate: bool,
    zero_point: Any,
    msb: bool,
    max_spikes: Any,
) -> tuple[EncodingPlan, np.ndarray, np.ndarray, int]:
    """Counts tensor -> (plan, planes, sign_plane, spikes), the arrays on the host.

    The planes are built on the tensor's device and copied to the host packed (one bit
    per element and step). ``sign_plane`` has no rows for the unsigned codes.
    """
    c, shape = _count_tensor(counts)
    low, high = (int(v) for v in torch.aminmax(c))
    T, zp, bounds = resolve_range(
        spec, low, high, T, saturate=saturate, zero_point=zero_point, shape=shape
    )
    width = plane_width(shape[-1])
    check_planes_size(EncodingPlan(None, shape, spec, T, zp, 0), width, max_spikes)
    clipped = 0
    values = c if c.dtype == torch.int32 else c.to(torch.int64)
    if bounds is not None:
        clipped = int(((values < bounds[0]) | (values > bounds[1])).sum())
        values = values.clamp(*bounds)
    if zp:  # c - zp may leave the int32 range
        values = values.to(torch.int64) - zp
    planes, sign, spikes = planes_from_values(values, spec.code, T, msb, spec.signed)
    host_sign = sign.cpu().numpy() if sign is not None else np.zeros((0, width), np.uint8)
    plan = EncodingPlan(None, shape, spec, T, zp, clipped)
    return plan, planes.cpu().numpy(), host_sign, int(spikes)


def unpack_planes(
    planes: torch.Tensor, sign_plane: torch.Tensor | None, features: int, dtype: torch.dtype
) -> torch.Tensor:
    """Dense ``[T, rows, features]`` spikes of ``dtype`` from planes, on their device."""
    shifts = torch.arange(8, dtype=torch.uint8, device=planes.device)
    T, rows, width = planes.shape
    bits = (planes.unsqueeze(-1) >> shifts) & 1
    dense = bits.reshape(T, rows, width * 8)[..., :features].to(dtype)
    if sign_plane is not None:
        negative = ((sign_plane.unsqueeze(-1) >> shifts) & 1).reshape(rows, width * 8)
        dense = dense * (1 - 2 * negative[:, :features].to(dtype))
    return dense
