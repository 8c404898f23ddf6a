"""The streaming accumulator of calibration: per-layer statistics for several k at once.

:class:`LayerAccumulator` holds one layer's statistics (see
:mod:`spikecode.calibration.run` for what is measured and the design decisions);
:class:`spikecode.calibration.run.StatsAccumulator` holds one per hooked layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from spikecode._validate import positive_finite
from spikecode.calibration import counting
from spikecode.calibration.records import (
    COUNT_LIMIT,
    VTH_EDGES,
    CountHistogram,
    KStats,
    LayerStats,
    VthSummary,
    k_key,
    layer_family,
    output_error,
)
from spikecode.encoders.schemes import get_scheme
from spikecode.energy import DEFAULT_BLOCK_SIZES, ChannelActivity
from spikecode.energy._validate import check_block_sizes
from spikecode.errors import SpikecodeError
from spikecode.nn import functional as F
from spikecode.stats import SpikeStats

__all__ = [
    "DEFAULT_ERROR_ROWS",
    "DEFAULT_ERROR_STRIDE",
    "DEFAULT_SCHEMES",
    "ERROR_FLUSH_BYTES",
    "ERROR_FLUSH_ROWS",
    "LayerAccumulator",
]

#: SpikingBrain's code (bitwise sign-magnitude, SPEC §3).
DEFAULT_SCHEMES: tuple[str, ...] = ("bitwise-bidirectional",)
#: The output error is measured on one row in DEFAULT_ERROR_STRIDE per batch and layer
#: (at least one), at most DEFAULT_ERROR_ROWS of them.
DEFAULT_ERROR_ROWS = 64
DEFAULT_ERROR_STRIDE = 128
#: Rows held back for the output error are consumed once a layer holds this many ...
ERROR_FLUSH_ROWS = 256
#: ... or this many bytes of them. Each flush quantizes the layer's whole weight (about
#: 0.5 ns per weight on one core, as much as some twenty rows of the layer's
#: forward pass; it was 2 ns plus the page faults of a fresh buffer): at 1 MiB an
#: 18944-wide input (SpikingBrain-7B's down_proj) flushed every 13 rows, and the weight
#: quantization cost more than the error matmuls themselves (BENCHMARKS.md).
ERROR_FLUSH_BYTES = 1 << 24


@dataclass
class _ErrorSpec:
    """The float layer and its W8ASpike scales, for the output error.

    Weights are read from the layer when they are used: accelerate's offloading hooks
    replace an offloaded layer's parameters (on the ``meta`` device outside its forward)
    by loaded ones while it runs, and :meth:`loaded` does the same for the output error.
    """

    layer: nn.Module
    given_scales: torch.Tensor | None
    #: The module whose accelerate hook loads the layer's weights (itself or a block).
    owner: nn.Module | None = None
    #: The weight of a layer that has none of its own (an activation site: identity).
    fixed_weight: torch.Tensor | None = None

    @contextmanager
    def loaded(self, name: str) -> Iterator[None]:
        """Weights of a layer offloaded by accelerate, loaded for the duration.

        Its hook (``_hf_hook``) loads them in ``pre_forward`` and puts them back on the
        ``meta`` device in ``post_forward``, exactly as around the layer's own forward.
        """
        if self.weight.device.type != "meta":
            yield
            return
        owner = self.owner if self.owner is not None else self.layer
        hook = getattr(owner, "_hf_hook", None)
        if hook is None:
            raise SpikecodeError(
                f"the weights of layer {name} are on the meta device and no accelerate hook "
                "loads them",
                layer=name,
            )
        hook.pre_forward(owner)
        try:
            yield
        finally:
            hook.post_forward(owner, None)

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight if self.fixed_weight is None else self.fixed_weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.layer, "bias", None)

    @property
    def scales(self) -> torch.Tensor | None:
        scales = self.given_scales
        if scales is not None and scales.device.type == "meta":
            scales = getattr(getattr(self.layer, "weight_quantizer", None), "scales", scales)
        return scales


class _Scratch:
    """A float32 CPU buffer reused for the quantized weights of every flush.

    A fresh buffer the size of a SpikingBrain-7B down_proj weight (271 MB) costs more in
    page faults than its quantization; one buffer, grown to the largest weight and
    shared by all layers of a calibration (:class:`StatsAccumulator`), is faulted in once.
    """

    def __init__(self) -> None:
        self._data: torch.Tensor | None = None

    def get(self, shape: tuple[int, int]) -> torch.Tensor:
        """A contiguous float32 tensor of ``shape`` over the buffer (its contents: any)."""
        size = shape[0] * shape[1]
        if self._data is None or self._data.numel() < size:
            self._data = None  # release the smaller buffer before allocating
            self._data = torch.empty(size, dtype=torch.float32)
        return self._data[:size].view(shape)


@dataclass
class _Stream:
    """Accumulated statistics of one input stream (several layers may read the same one)."""

    outliers: list[dict[int, int]]
    state: dict[str, Any] | None = None
    tokens: int = 0

    def copy(self) -> _Stream:
        state = None
        if self.state is not None:
            state = {key: _copy_value(value) for key, value in self.state.items() if key != "host"}
        return _Stream([dict(table) for table in self.outliers], state, self.tokens)


def _copy_value(value: Any) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.copy() if isinstance(value, np.ndarray) else value.clone()
    if isinstance(value, list):
        return [_copy_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _copy_value(item) for key, item in value.items()}
    return value


def _error_sums_torch(
    y_float: torch.Tensor, y_spike: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~spikecode.calibration.counting._error_sums` with tensor operations (any device).

    Returns the per-k ``Σ ||y_spike - y_float||²``, ``Σ ||y_float||²`` and the per-k sum of
    the row cosines, in float64.
    """
    y_float = y_float.to(torch.float64)
    y_spike = y_spike.to(torch.float64)
    diff = ((y_spike - y_float.unsqueeze(0)) ** 2).sum(dim=(1, 2))
    reference = (y_float**2).sum()
    dot = (y_spike * y_float.unsqueeze(0)).sum(dim=2)
    spike_norm = torch.linalg.vector_norm(y_spike, dim=2)
    float_norm = torch.linalg.vector_norm(y_float, dim=1)
    norms = spike_norm * float_norm
    spike_zero = spike_norm == 0
    float_zero = (float_norm == 0).unsqueeze(0)
    # Cosine of two zero vectors: 1 (identical); of one zero vector: 0.
    cosine = torch.where(
        spike_zero | float_zero,
        (spike_zero & float_zero).to(torch.float64),
        dot / torch.where(norms > 0, norms, 1.0),
    ).sum(dim=1)
    return diff, reference, cosine


class LayerAccumulator:
    """Streaming statistics of one layer's input for several k (see the module docstring).

    Parameters
    ----------
    name
        The layer's module name.
    in_features, out_features
        Its shape.
    ks
        The k values.
    schemes
        Codes whose SPEC §5 totals :meth:`result` reports.
    window
        Window of the windowed sparsity.
    block_sizes
        Block sizes of the channel-activity model.
    layer
        The float ``nn.Linear`` (weight ``[out, in]``, optional bias) whose W8ASpike
        output error is measured; None measures no error.
    scales
        Released W8ASpike scales ``[out, in/128, 1]`` for ``layer``, or None (the
        weights are then quantized with ``max|w| / 127`` per group, SPEC §4).
    offload_owner
        For a layer offloaded by accelerate: the module (the layer or an enclosing
        block) whose hook loads its weights; None: the layer itself.
    error_rows, error_stride
        Per :meth:`update` the output error is measured on ``ceil(n / error_stride)``
        evenly spaced rows, at most ``error_rows``; ``error_rows=None`` uses every row.
    backend
        ``"numba"`` (CPU) or ``"torch"`` (any device); None picks ``"numba"`` for CPU
        rows. Both give identical counts.
    """

    def __init__(
        self,
        name: str,
        in_features: int,
        out_features: int,
        ks: Sequence[float],
        *,
        schemes: Sequence[str] = DEFAULT_SCHEMES,
        window: int = 3,
        block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
        layer: nn.Module | None = None,
        scales: torch.Tensor | None = None,
        error_rows: int | None = DEFAULT_ERROR_ROWS,
        error_stride: int = DEFAULT_ERROR_STRIDE,
        backend: str | None = None,
        offload_owner: nn.Module | None = None,
    ) -> None:
        self.name = name
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.ks = tuple(positive_finite(k, "k") for k in ks)
        if not self.ks:
            raise SpikecodeError("at least one k is needed")
        self.schemes = tuple(get_scheme(s).name for s in schemes)
        self.window = window
        self.block_sizes = check_block_sizes(block_sizes)
        self._base = math.gcd(*self.block_sizes)
        if error_rows is not None and (
            isinstance(error_rows, bool) or not isinstance(error_rows, int) or error_rows < 1
        ):
            raise SpikecodeError(
                f"error_rows must be a positive integer or None, not {error_rows!r}"
            )
        self.error_rows = error_rows
        if isinstance(error_stride, bool) or not isinstance(error_stride, int) or error_stride < 1:
            raise SpikecodeError(f"error_stride must be a positive integer, not {error_stride!r}")
        self.error_stride = error_stride
        if backend not in (None, "numba", "torch"):
            raise SpikecodeError(f"backend must be 'numba' or 'torch', not {backend!r}")
        self._backend = backend
        self._error: _ErrorSpec | None = None
        if layer is not None:
            weight = getattr(layer, "weight", None)
            shape = (self.out_features, self.in_features)
            if weight is None and getattr(layer, "identity_output", False):
                # An activation site (window-attention q) has no weight: its output is
                # the activation, so the "output error" is the reconstruction Vth·c vs x.
                weight = torch.eye(self.in_features)
                shape = (self.in_features, self.in_features)
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape:
                raise SpikecodeError(
                    "the layer's weight must be a [out_features, in_features] tensor", layer=name
                )
            own = getattr(layer, "weight", None) is not None
            self._error = _ErrorSpec(layer, scales, offload_owner, None if own else weight)
        self.tokens = 0
        self._stream = _Stream([{} for _ in self.ks])
        # Set while this layer reads the same input as an earlier one (see StatsAccumulator).
        self._source: LayerAccumulator | None = None
        self._snapshot: _Stream | None = None
        self._buffer: torch.Tensor | None = None
        self._pending_rows = 0
        self._err: dict[str, Any] | None = None
        self.error_tokens = 0
        # StatsAccumulator gives all its layers one (flushes never overlap).
        self._scratch = _Scratch()

    # ------------------------------------------------------------------ streaming

    def update(self, rows: torch.Tensor) -> None:
        """Add rows ``[n, in_features]`` (real tokens only) to the statistics."""
        if (
            not isinstance(rows, torch.Tensor)
            or rows.ndim != 2
            or rows.shape[1] != self.in_features
        ):
            raise SpikecodeError(
                f"rows must be a [n, {self.in_features}] tensor",
                layer=self.name,
                shape=tuple(getattr(rows, "shape", ())),
            )
        if not rows.dtype.is_floating_point:
            raise SpikecodeError("rows must be floating point", layer=self.name, dtype=rows.dtype)
        n = rows.shape[0]
        if n == 0:
            return
        rows = rows.detach()
        backend = self._backend or ("numba" if rows.device.type == "cpu" else "torch")
        with torch.no_grad():
            if self._source is None:  # else the source layer counted these very rows
                if backend == "numba":
                    self._update_numba(rows)
                else:
                    self._update_torch(rows)
                self._stream.tokens += n
            self.tokens += n
            if self._error is not None:
                self._hold_error_rows(rows)

    def link(self, source: LayerAccumulator) -> None:
        """Read ``source``'s statistics: this layer's input is the same as the source's.

        Only before this layer has seen any row; :meth:`update` then counts nothing but
        its tokens and output-error rows until :meth:`unlink`.
        """
        if self.tokens or source._source is not None or source.ks != self.ks:
            raise SpikecodeError("internal: a layer can only share a fresh, unshared stream")
        if (source.schemes, source.window, source.block_sizes) != (
            self.schemes,
            self.window,
            self.block_sizes,
        ):
            raise SpikecodeError("internal: shared streams need the same settings")
        self._source = source
        self._stream = source._stream

    def unlink(self) -> None:
        """Continue on an own copy of the source's stream as it was before this batch."""
        source = self._source
        if source is None:
            return
        if source._snapshot is None or source._snapshot.tokens != self.tokens:
            raise SpikecodeError("internal: no snapshot of the shared stream for this batch")
        self._stream = source._snapshot.copy()
        self._source = None

    def snapshot(self) -> None:
        """Remember this stream as it is now (the start of a batch), for :meth:`unlink`."""
        self._snapshot = self._stream.copy()

    def _state_for(self, backend: str, rows: torch.Tensor) -> dict[str, Any]:
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        if self._stream.state is None:
            self._stream.state = (
                self._numba_state(dtype)
                if backend == "numba"
                else self._torch_state(dtype, rows.device)
            )
        elif (self._stream.state["backend"], self._stream.state["dtype"]) != (backend, dtype):
            raise SpikecodeError(
                "a layer's inputs must keep one device kind and compute dtype during calibration",
                layer=self.name,
            )
        return self._stream.state

    def _numba_state(self, dtype: torch.dtype) -> dict[str, Any]:
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        chunks = max(1, numba.get_num_threads())
        order = sorted(range(len(self.ks)), key=lambda i: self.ks[i])
        groups = []
        for start in range(0, len(order), counting._GROUP):
            real = order[start : start + counting._GROUP]
            # The kernel takes exactly _GROUP values in ascending order: repeat the smallest
            # k in front (those slots are computed and ignored).
            members = [-1] * (counting._GROUP - len(real)) + real
            ks = np.array([self.ks[real[0] if i < 0 else i] for i in members], dtype=np.float64)
            size = counting._GROUP
            groups.append(
                {
                    "members": members,
                    "ks": ks,
                    "ratios": (ks[:-1] / ks[-1]).astype(np_dtype),
                    "joint": np.zeros(
                        (chunks, (2 * counting._JOINT_LIMIT + 1) * 3 ** (size - 1) + 1), np.int64
                    ),
                    "wide": np.zeros((chunks, size, 2 * counting._DENSE_LIMIT + 1), np.int64),
                    "spill": np.zeros((chunks, counting._SPILL, 2), np.int64),
                    # count, shift, shifted sum and sum of squares, min, max of Vth
                    "moments": np.tile(
                        np.array([0.0, 0.0, 0.0, 0.0, np.inf, -np.inf]), (chunks, size, 1)
                    ),
                    "vth_hist": np.zeros((chunks, size, len(VTH_EDGES) - 1), np.int64),
                    "levels": np.zeros((chunks, len(self.block_sizes), size + 1), np.int64),
                }
            )
        # Block sizes ascending; each takes its maxima from the largest smaller size that
        # divides it (or from the base blocks of gcd(sizes) channels).
        size_order = sorted(range(len(self.block_sizes)), key=lambda i: self.block_sizes[i])
        sizes = [self.block_sizes[i] for i in size_order]
        source = [
            max((t for t in range(s) if sizes[s] % sizes[t] == 0), default=-1)
            for s in range(len(sizes))
        ]
        state: dict[str, Any] = {"backend": "numba", "dtype": dtype}
        state.update(
            groups=groups,
            np_dtype=np_dtype,
            edges=np.asarray(VTH_EDGES, dtype=np.float64),
            sizes=np.asarray(sizes, dtype=np.int64),
            source=np.asarray(source, dtype=np.int64),
            size_order=size_order,
        )
        return state

    def _torch_state(self, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        n_k = len(self.ks)

        def zeros(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        state: dict[str, Any] = {
            "backend": "torch",
            "dtype": dtype,
            "mean": zeros(n_k),
            "m2": zeros(n_k),
            "min": None,
            "max": None,
        }
        state.update(
            hist=zeros(n_k, 2 * counting._DENSE_LIMIT + 3, dtype=torch.int64),
            vth_hist=zeros(n_k, len(VTH_EDGES) - 1, dtype=torch.int64),
            fetched=zeros(n_k, len(self.block_sizes), dtype=torch.int64),
            edges=torch.tensor(VTH_EDGES, dtype=torch.float64, device=device),
            ks=torch.tensor(self.ks, dtype=torch.float64, device=device),
        )
        return state

    def _merge_vth(self, state: dict[str, Any], vth64: torch.Tensor, n: int) -> None:
        """Chan's parallel update of the running mean / M2, plus min and max (torch path)."""
        mean_b = vth64.mean(dim=1)
        m2_b = ((vth64 - mean_b[:, None]) ** 2).sum(dim=1)
        low, high = vth64.amin(dim=1), vth64.amax(dim=1)
        n_a = self._stream.tokens
        total = n_a + n
        delta = mean_b - state["mean"]
        state["mean"] = state["mean"] + delta * (n / total)
        state["m2"] = state["m2"] + m2_b + delta * delta * (n_a * n / total)
        state["min"] = low if state["min"] is None else torch.minimum(state["min"], low)
        state["max"] = high if state["max"] is None else torch.maximum(state["max"], high)

    def _non_finite(self, bad: int) -> SpikecodeError:
        return SpikecodeError(
            f"the input of layer {self.name} holds NaN or Inf in {bad} token(s)", layer=self.name
        )

    def _update_numba(self, rows: torch.Tensor) -> None:
        state = self._state_for("numba", rows)
        x = rows.to(device="cpu", dtype=state["dtype"]).contiguous().numpy()
        for group in state["groups"]:
            vth = np.empty((counting._GROUP, x.shape[0]), dtype=x.dtype)
            flags = counting._count_rows(
                x,
                group["ratios"],
                group["ks"],
                F.VTH_MIN,
                F.VTH_MAX,
                counting._JOINT_LIMIT,
                counting._DENSE_LIMIT,
                self._base,
                state["sizes"],
                state["source"],
                state["edges"],
                group["joint"],
                group["wide"],
                group["vth_hist"],
                group["levels"],
                group["spill"],
                group["moments"],
                vth,
            )
            if flags[-1]:
                raise self._non_finite(int(flags[-1]))
            spilled = flags[:-1]
            if not spilled.any():
                continue
            real = [(g, member) for g, member in enumerate(group["members"]) if member >= 0]
            if spilled.max() > counting._SPILL:
                # Too many counts beyond the dense range for the buffers: recount exactly.
                for g, member in real:
                    counts = np.rint(x / vth[g][:, None])
                    self._add_outliers(member, counts[np.abs(counts) > counting._DENSE_LIMIT])
            else:
                entries = np.concatenate(
                    [group["spill"][ch, :n] for ch, n in enumerate(spilled.tolist())]
                )
                for g, member in real:
                    self._add_outliers(member, entries[entries[:, 0] == g, 1])

    def _update_torch(self, rows: torch.Tensor) -> None:
        state = self._state_for("torch", rows)
        x = rows.to(state["dtype"])
        n_k = len(self.ks)
        mean = F.abs_sum(x) / x.shape[-1]  # SPEC §2's one order, as the CPU kernel
        if not bool(torch.isfinite(mean).all()):
            raise self._non_finite(int((~torch.isfinite(mean)).sum()))
        vth = counting._vth_table(mean, state["ks"], state["dtype"])
        bins = state["hist"].shape[1]
        clamped = []
        for kk in range(n_k):
            q = torch.round(x / vth[kk].unsqueeze(1))
            q.clamp_(-counting._DENSE_LIMIT - 1, counting._DENSE_LIMIT + 1).add_(
                counting._DENSE_LIMIT + 1
            )
            counted = torch.bincount(q.to(torch.int64).reshape(-1), minlength=bins)
            state["hist"][kk] += counted
            clamped.append(counted[0] + counted[-1])
        vth64 = vth.to(torch.float64)
        n_vth = state["vth_hist"].shape[1]
        bucket = (torch.bucketize(vth64, state["edges"], right=True) - 1).clamp_(0, n_vth - 1)
        offsets = torch.arange(n_k, device=x.device).unsqueeze(1) * n_vth
        state["vth_hist"] += torch.bincount(
            (bucket + offsets).reshape(-1), minlength=n_k * n_vth
        ).reshape(n_k, n_vth)
        state["fetched"] += self._fetched_torch(x, vth)
        self._merge_vth(state, vth64, x.shape[0])
        # One small transfer per call: which k produced counts beyond the dense range.
        for kk, amount in enumerate(torch.stack(clamped).tolist()):
            if amount:
                counts = torch.round(x / vth[kk].unsqueeze(1))
                self._add_outliers(kk, counts[counts.abs() > counting._DENSE_LIMIT].cpu().numpy())

    def _fetched_torch(self, x: torch.Tensor, vth: torch.Tensor) -> torch.Tensor:
        """Weight columns fetched under block skipping, ``[k, block size]``."""
        n, cols = x.shape
        base = self._base
        n_base = -(-cols // base)
        a = x.abs()
        if n_base * base != cols:
            a = torch.nn.functional.pad(a, (0, n_base * base - cols))
        block_max = a.reshape(n, n_base, base).amax(dim=-1)
        columns = []
        for size in self.block_sizes:
            step = size // base
            n_blocks = -(-n_base // step)
            m = block_max
            if n_blocks * step != n_base:
                m = torch.nn.functional.pad(m, (0, n_blocks * step - n_base))
            m = m.reshape(n, n_blocks, step).amax(dim=-1)
            lengths = torch.clamp(cols - torch.arange(n_blocks, device=x.device) * size, max=size)
            active = (m.unsqueeze(0) / vth.unsqueeze(2)) > 0.5
            columns.append((active.to(torch.int64) * lengths).sum(dim=(1, 2)))
        return torch.stack(columns, dim=1)

    def _add_outliers(self, kk: int, values: np.ndarray) -> None:
        found, times = np.unique(values.astype(np.int64), return_counts=True)
        table = self._stream.outliers[kk]
        for value, count in zip(found.tolist(), times.tolist(), strict=True):
            table[value] = table.get(value, 0) + count

    # ------------------------------------------------------------------ output error

    def _hold_error_rows(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        cap = n if self.error_rows is None else min(self.error_rows, -(-n // self.error_stride))
        r = min(n, cap)
        # Evenly spaced, centred: row floor((i + 1/2) n / r) for i < r (all distinct).
        index = torch.arange(1, 2 * r, 2, device=rows.device).mul_(n).floor_divide_(2 * r)
        buffer = self._buffer
        if buffer is None or buffer.dtype != rows.dtype or buffer.device != rows.device:
            self._flush_error()
            # One preallocated buffer per layer: many small tensors kept across batches
            # would fragment the heap around the large transient activations.
            capacity = ERROR_FLUSH_BYTES // (self.in_features * rows.element_size())
            capacity = max(1, min(ERROR_FLUSH_ROWS, capacity))
            buffer = self._buffer = rows.new_empty((capacity, self.in_features))
        done = 0
        while done < r:
            take = min(r - done, buffer.shape[0] - self._pending_rows)
            torch.index_select(
                rows,
                0,
                index[done : done + take],
                out=buffer[self._pending_rows : self._pending_rows + take],
            )
            self._pending_rows += take
            done += take
            if self._pending_rows == buffer.shape[0]:
                self._flush_error()

    def _quantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The layer's INT8 weights times their scales (SPEC §4), in ``dtype``."""
        spec = self._error
        assert spec is not None
        weight = spec.weight.detach()
        try:
            if spec.scales is not None:
                w_q, scales = F.release_weight_to_int8(weight, spec.scales)
                return F.dequantize_weight_int8(w_q, scales).to(dtype)
            if weight.device.type != "cpu":
                w_q, scales = F.quantize_weight_int8(
                    weight, counting.weight_group_size(self.in_features)
                )
                return F.dequantize_weight_int8(w_q, scales).to(dtype)
            return counting.fake_quantize_weight(
                weight,
                counting.weight_group_size(self.in_features),
                out=self._scratch.get(tuple(weight.shape)),
            ).to(dtype)
        except SpikecodeError as err:
            raise SpikecodeError(err.message, layer=self.name, **err.context) from None

    def _flush_error(self) -> None:
        if not self._pending_rows:
            return
        spec = self._error
        assert spec is not None
        assert self._buffer is not None
        x = self._buffer[: self._pending_rows]
        self._pending_rows = 0
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype)
        device = x.device
        with spec.loaded(self.name):
            weight = spec.weight.detach().to(device=device, dtype=dtype)
            bias = spec.bias
            bias = None if bias is None else bias.detach().to(device=device, dtype=dtype)
            w_fq = self._quantized_weight(dtype).to(device)
        ks = torch.tensor(self.ks, dtype=torch.float64, device=device)
        vth = counting._vth_table(F.abs_sum(x) / x.shape[-1], ks, dtype)
        spiked = torch.round(x.unsqueeze(0) / vth.unsqueeze(2)) * vth.unsqueeze(2)
        # F.linear, rows as the matmul's M dimension: each row's result then does not
        # depend on how many rows one product takes (the merge contract, ERROR_RTOL);
        # weight @ rows.T was 12-35 % faster at 7B widths but moved the sums of another
        # row grouping by ~1e-6 (BENCHMARKS.md).
        y_float = torch.nn.functional.linear(x, weight, bias)
        y_spike = torch.nn.functional.linear(spiked.reshape(-1, x.shape[1]), w_fq, bias)
        y_spike = y_spike.reshape(len(self.ks), *y_float.shape)
        if device.type == "cpu":
            diff = np.zeros(len(self.ks))
            cosine = np.zeros(len(self.ks))
            reference = counting._error_sums(y_float.numpy(), y_spike.numpy(), diff, cosine)
            diff, cosine = torch.from_numpy(diff), torch.from_numpy(cosine)
            reference = torch.tensor(reference, dtype=torch.float64)
        else:
            diff, reference, cosine = _error_sums_torch(y_float, y_spike)
        if self._err is None:
            self._err = {"diff": diff, "reference": reference, "cosine": cosine}
        else:
            self._err["diff"] = self._err["diff"] + diff
            self._err["reference"] = self._err["reference"] + reference
            self._err["cosine"] = self._err["cosine"] + cosine
        self.error_tokens += x.shape[0]

    # ------------------------------------------------------------------ result

    def state_nbytes(self) -> int:
        """Bytes of accumulated state (histograms and sums), excluding held error rows."""
        if self._stream.state is None:
            return 0
        total = 0
        for value in self._stream.state.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
        return total + 16 * sum(len(table) for table in self._stream.outliers)

    def result(self) -> LayerStats:
        """The layer's statistics so far (consumes the rows held for the error)."""
        histograms = self.histograms()
        stats = {
            scheme: counting.stats_from_histograms(histograms, scheme, window=self.window)
            for scheme in self.schemes
        }
        return self._assemble(histograms, stats)

    def histograms(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per k: the distinct counts seen and how many elements hold each (exact)."""
        if self._stream.state is None or self.tokens == 0:
            raise SpikecodeError(
                f"layer {self.name} received no input; exclude it if the model never calls it",
                layer=self.name,
            )
        dense = self._host()["hist"]
        result = []
        for kk in range(len(self.ks)):
            values, times = counting._nonzero_bins(dense[kk])
            table = self._stream.outliers[kk]
            if table:
                extra = np.array(sorted(table), dtype=np.int64)
                counts = np.array([table[v] for v in extra.tolist()], dtype=np.int64)
                values = np.concatenate([extra[extra < 0], values, extra[extra > 0]])
                times = np.concatenate([counts[extra < 0], times, counts[extra > 0]])
            if int(times.sum()) != self.tokens * self.in_features or (
                self._stream.tokens != self.tokens
            ):
                raise SpikecodeError(
                    "internal count mismatch in the calibration histogram",
                    layer=self.name,
                    counted=int(times.sum()),
                    elements=self.tokens * self.in_features,
                )
            result.append((values, times))
        return result

    def _host(self) -> dict[str, Any]:
        """Accumulated state on the host, per k in :attr:`ks` order."""
        state = self._stream.state
        assert state is not None
        if "host" in state and state["host"][0] == self._stream.tokens:
            return state["host"][1]
        host: dict[str, Any] = {}
        if state["backend"] == "torch":
            for key in ("hist", "vth_hist", "fetched", "mean", "m2", "min", "max"):
                host[key] = state[key].cpu().numpy()
        else:
            n_k = len(self.ks)
            for key in ("mean", "m2", "min", "max"):
                host[key] = np.zeros(n_k, dtype=np.float64)
            host["hist"] = np.zeros((n_k, 2 * counting._DENSE_LIMIT + 3), dtype=np.int64)
            host["vth_hist"] = np.zeros((n_k, len(VTH_EDGES) - 1), dtype=np.int64)
            host["fetched"] = np.zeros((n_k, len(self.block_sizes)), dtype=np.int64)
            for group in state["groups"]:
                real = [(g, m) for g, m in enumerate(group["members"]) if m >= 0]
                slots, members = [g for g, _ in real], [m for _, m in real]
                host["hist"][members, 1:-1] += group["wide"].sum(axis=0)[slots]
                host["vth_hist"][members] += group["vth_hist"].sum(axis=0)[slots]
                for g, member in real:
                    _, mean, m2, low, high = counting._merge_moments(group["moments"][:, g])
                    host["mean"][member], host["m2"][member] = mean, m2
                    host["min"][member], host["max"][member] = low, high
                # A block of level l is fetched at the l largest k of the group.
                levels = group["levels"].sum(axis=0)  # [sorted size, level]
                at_least = np.cumsum(levels[:, ::-1], axis=1)[:, ::-1]  # level >= l
                for g, member in zip(slots, members, strict=True):
                    fetched = at_least[:, counting._GROUP - g]
                    host["fetched"][member, state["size_order"]] += fetched
                joint = group["joint"].sum(axis=0)[:-1]  # the last bin counts slow elements
                counting._add_joint(host["hist"], group["members"], joint, group["ratios"])
            # The end bins of the dense histogram count the clamped elements, which the
            # outlier tables hold exactly.
            host["hist"][:, 0] = host["hist"][:, -1] = 0
        if state["backend"] == "torch":
            host["hist"][:, 0] = host["hist"][:, -1] = 0
        state["host"] = (self._stream.tokens, host)
        return host

    def _assemble(
        self,
        histograms: Sequence[tuple[np.ndarray, np.ndarray]],
        stats: Mapping[str, Sequence[SpikeStats]],
    ) -> LayerStats:
        if self._error is not None:
            with torch.no_grad():
                self._flush_error()
        host = self._host()
        err = None
        if self._err is not None:
            err = {key: value.cpu().numpy() for key, value in self._err.items()}
        by_k = {}
        for kk, k in enumerate(self.ks):
            by_k[k_key(k)] = self._k_stats(
                kk, histograms[kk], {scheme: stats[scheme][kk] for scheme in stats}, host, err
            )
        return LayerStats(
            name=self.name,
            family=layer_family(self.name),
            in_features=self.in_features,
            out_features=self.out_features,
            tokens=self.tokens,
            by_k=MappingProxyType(by_k),
            error_tokens=self.error_tokens,
            output_sq_norm=None if err is None else float(err["reference"]),
        )

    def _k_stats(
        self,
        kk: int,
        histogram: tuple[np.ndarray, np.ndarray],
        schemes: Mapping[str, SpikeStats],
        host: dict[str, Any],
        err: dict[str, Any] | None,
    ) -> KStats:
        values, times = histogram
        elements = self.tokens * self.in_features
        histogram = CountHistogram.from_values(values, times, COUNT_LIMIT)
        zeros = int(times[values == 0].sum())
        activity = ChannelActivity(
            tokens=self.tokens,
            in_features=self.in_features,
            active_channels=elements - zeros,
            block_fetched_channels={
                size: int(host["fetched"][kk, s]) for s, size in enumerate(self.block_sizes)
            },
        )
        vth = VthSummary(
            mean=float(host["mean"][kk]),
            std=math.sqrt(max(float(host["m2"][kk]), 0.0) / self.tokens),
            min=float(host["min"][kk]),
            max=float(host["max"][kk]),
            edges=VTH_EDGES,
            counts=tuple(int(v) for v in host["vth_hist"][kk]),
        )
        rel_error = cosine = sq_error = None
        if err is not None:
            sq_error = float(err["diff"][kk])
            rel_error = output_error(sq_error, float(err["reference"]))
            cosine = float(err["cosine"][kk]) / self.error_tokens
        return KStats(
            vth=vth,
            count_histogram=histogram,
            max_abs_count=int(np.abs(values).max()),
            output_rel_error=rel_error,  # type: ignore[arg-type]
            output_cosine=cosine,  # type: ignore[arg-type]
            activity=activity,
            schemes=MappingProxyType(dict(schemes)),
            output_sq_error=sq_error,
        )
