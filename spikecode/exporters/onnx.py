"""ONNX export of the W8ASpike computation (SPEC §2 and §4).

Each :class:`~spikecode.nn.W8ASpikeLinear` becomes this subgraph, for an input ``x`` of
shape ``[..., in]`` and ``G`` groups of ``g = in / G`` input columns::

    mean   = ReduceMean(Cast<double>(Abs(x)), axis=-1)          float64, as in SPEC §2
    vth    = Cast<float>(Clip(mean / k, vth_min, vth_max))      per token
    counts = Cast<int64>(Round(x / vth))                         round half to even
    acc    = MatMul(Transpose(Reshape(counts, [-1, G, g])),      int64 × int64 → int64:
                    Cast<int64>(W_q))                            exact integer sums
    y      = ReduceSum(Cast<float>(acc) · σ, groups) · vth + b   float rescale

``W_q`` is stored as an **INT8 initializer** (``[G, g, out]``) and widened at run time,
so the file holds the quantized model, not a float copy. The accumulation is a genuine
integer matrix product: ``MatMulInteger`` would need int8 or uint8 *activations*, which
the counts are not (``|count|`` grows with ``k`` and with outlier channels), and an
integer-valued float ``MatMul`` is exact only while every sum stays below 2**24.
int64 cannot overflow for int32 counts (``|acc| ≤ 127 · in · 2**31 < 2**63`` for
``in < 2**25``). onnxruntime runs every operator here on CPU.
:class:`~spikecode.nn.AdaptiveSpike` becomes ``Round(x / vth) · vth`` with the same
threshold.

The export uses PyTorch's TorchScript exporter (``dynamo=False``) with opset 17 by
default (13 to 20 accepted: ``Round`` needs 11, ``Clip`` on doubles 12, ``ReduceSum``
with an axes input 13; 20 is the TorchScript exporter's maximum). The graph is a plain
trace of a few tensor operations and needs neither onnxscript nor ``torch.export``; the
dynamo exporter also folds the INT8-to-int64 cast into an int64 initializer, eight times
larger. The TorchScript exporter is deprecated since PyTorch 2.9, and its deprecation
warning is silenced around the call. Constant folding is off so that the INT8 weights are
not folded into int64 copies either.

Batch and sequence axes are dynamic. Files are written to a temporary file beside the
target, checked with :func:`onnx.checker.check_model` (``full_check``), and moved into
place with :func:`os.replace`; a failure leaves nothing behind. The protobuf format
limits a file to 2 GiB, so larger models must be exported layer by layer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from spikecode._validate import as_path
from spikecode.errors import SpikecodeError
from spikecode.exporters.registry import register_exporter
from spikecode.io import atomic_write
from spikecode.nn import functional as F
from spikecode.nn.modules import AdaptiveSpike, W8ASpikeLinear, replace_submodules

__all__ = ["DEFAULT_OPSET", "export_onnx_layer", "export_onnx_model"]

#: Opset written unless asked otherwise.
DEFAULT_OPSET = 17
_OPSETS = range(13, 21)
_MAX_BYTES = 2**31 - 2**24  # protobuf's 2 GiB, less room for the graph itself


class _SpikeGraph(nn.Module):
    """Traceable twin of a spiking module: the same threshold, no checks, no data branches."""

    def __init__(self, module: W8ASpikeLinear | AdaptiveSpike, k: float | None = None) -> None:
        super().__init__()
        self.k = module.k if k is None else F.check_k(k)
        self.vth_min = module.vth_min
        self.vth_max = module.vth_max

    def spikes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float counts ``round(x / Vth)`` and ``Vth[..., None]`` (SPEC §2)."""
        # The graph's ReduceMean sums in the runtime's own order, not SPEC §2's 64 lanes
        # (whose Python-level loop does not trace): Vth may differ from spikecode's in the
        # last float64 bits, i.e. only where the mean lies an ulp from a float32 tie.
        mean = torch.mean(x.abs(), dim=-1, dtype=torch.float64)
        vth = torch.clamp(mean / F._scalar(self.k, mean, torch.float64), self.vth_min,
                          self.vth_max).to(F._compute_dtype(x.dtype)).unsqueeze(-1)  # fmt: skip
        return torch.round(x.to(vth.dtype) / vth), vth


class _AdaptiveSpikeGraph(_SpikeGraph):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts, vth = self.spikes(x)
        return (counts * vth).to(x.dtype)


class _W8ASpikeGraph(_SpikeGraph):
    def __init__(self, layer: W8ASpikeLinear, k: float | None = None) -> None:
        super().__init__(layer, k)
        out, n_in = layer.weight_q.shape
        self.groups = layer.scales.shape[1]
        self.group_size = n_in // self.groups
        self.out_features = out
        # [G, g, out] so that one batched MatMul computes every group's integer sum.
        weight = layer.weight_q.reshape(out, self.groups, self.group_size).permute(1, 2, 0)
        self.register_buffer("weight_q", weight.contiguous())
        self.register_buffer("scales", layer.scales.T.reshape(self.groups, 1, out).contiguous())
        bias = None if layer.bias is None else layer.bias.detach()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts, vth = self.spikes(x)
        compute = vth.dtype
        groups = counts.to(torch.int64).reshape(-1, self.groups, self.group_size).transpose(0, 1)
        acc = torch.matmul(groups, self.weight_q.to(torch.int64))  # [G, tokens, out]
        y = (acc.to(compute) * self.scales.to(compute)).sum(0) * vth.reshape(-1, 1)
        if self.bias is not None:
            y = y + self.bias.to(compute)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def _twin(module: nn.Module) -> nn.Module | None:
    if isinstance(module, W8ASpikeLinear):
        return _W8ASpikeGraph(module)
    if isinstance(module, AdaptiveSpike):
        return _AdaptiveSpikeGraph(module)
    return None


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Swap the spiking submodules of ``model`` for their graph twins while exporting."""
    twins = {module: twin for module in model.modules() if (twin := _twin(module)) is not None}
    if not twins:
        raise SpikecodeError(
            "the model has no W8ASpikeLinear or AdaptiveSpike module to export; "
            "call spikecode.nn.swap_linears(model) first",
        )
    replace_submodules(model, twins)
    try:
        yield
    finally:
        replace_submodules(model, {twin: module for module, twin in twins.items()})


def _check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in _OPSETS:
        raise SpikecodeError(
            f"opset must be an int from {_OPSETS.start} to {_OPSETS.stop - 1}, not {opset!r}"
        )
    return opset


def _check_size(model: nn.Module) -> None:
    tensors = {t.data_ptr(): t for t in model.state_dict().values() if t.numel()}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > _MAX_BYTES:
        raise SpikecodeError(
            f"the model holds {size / 2**30:.1f} GiB of weights, over the 2 GiB limit of one "
            "ONNX file; export its layers one by one with export_onnx_layer",
            model=type(model).__name__,
        )


def _dynamic_axes(tensor: torch.Tensor) -> dict[int, str]:
    """Axis 0 is the batch; axis 1 the sequence unless it is a float tensor's feature axis."""
    axes = {0: "batch"} if tensor.ndim >= 1 else {}
    if tensor.ndim >= 3 or (tensor.ndim == 2 and not tensor.is_floating_point()):
        axes[1] = "sequence"
    return axes


def _output_tensors(outputs: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(outputs, torch.Tensor):
        return [("output", outputs)]
    if isinstance(outputs, Mapping):  # also transformers' ModelOutput
        items = [(str(key), value) for key, value in outputs.items() if value is not None]
    elif isinstance(outputs, Sequence):
        items = [(f"output_{i}", value) for i, value in enumerate(outputs)]
    else:
        items = []
    if not items or not all(isinstance(value, torch.Tensor) for _, value in items):
        raise SpikecodeError(
            "ONNX export needs a model that returns a tensor, or a tuple or dict of tensors",
            returned=type(outputs).__name__,
        )
    return items


class _FlatCall(nn.Module):
    """Call a model with positional tensors (as keywords if named) and return a flat tuple.

    The TorchScript exporter passes keyword inputs positionally, which breaks models such
    as Hugging Face's whose forward takes more parameters than the caller names.
    """

    def __init__(self, model: nn.Module, keywords: Sequence[str] | None) -> None:
        super().__init__()
        self.model = model
        self.keywords = keywords

    def named_outputs(self, *inputs: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Run the model; return its output tensors with their default names."""
        if self.keywords is None:
            return _output_tensors(self.model(*inputs))
        return _output_tensors(self.model(**dict(zip(self.keywords, inputs, strict=True))))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor for _, tensor in self.named_outputs(*inputs))


#: Where Hugging Face builds padding masks by advanced indexing (transformers >= 4.53):
#: ``padding_mask[batch_idx, kv_idx]`` with ``batch_idx = arange(batch)`` and ``kv_idx =
#: arange(kv_length) + kv_offset``, ``kv_offset >= 0``, so its indices are never negative.
_PADDING_MASK_SOURCE = ("masking_utils.py", "inner_mask")
_INDEX_WARNING = "Exporting aten::index operator of advanced indexing"


def _only_nonnegative_indexing(module: nn.Module, args: tuple[torch.Tensor, ...]) -> bool:
    """Whether every advanced-indexing op of the traced model is a padding-mask lookup.

    The TorchScript exporter warns for every ``aten::index`` that negative indices would
    give wrong results. The warning is dropped only where every such op is Hugging Face's
    padding-mask function, whose indices are aranges (:data:`_PADDING_MASK_SOURCE`);
    the tests check MiniLM's graph against PyTorch on padded batches. Any other
    advanced indexing keeps the warning.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, args, check_trace=False, strict=False)
    indexing = [n for n in traced.inlined_graph.nodes() if n.kind() == "aten::index"]
    return all(
        all(part in node.sourceRange() for part in _PADDING_MASK_SOURCE) for node in indexing
    )


def _write(
    module: nn.Module,
    path: str | os.PathLike[str],
    args: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int,
    *,
    harmless_indexing: bool = False,
) -> Path:
    """Export to a temporary file beside ``path``, check it, then move it into place.

    ``harmless_indexing``: :func:`_only_nonnegative_indexing` holds, so the exporter's
    negative-index warning does not apply and is not shown.
    """
    path = as_path(path)
    try:
        with atomic_write(path, what="the ONNX file") as temporary:
            with warnings.catch_warnings(), torch.no_grad():
                # The TorchScript exporter is chosen on purpose (module docstring).
                warnings.filterwarnings(
                    "ignore", "You are using the legacy TorchScript", DeprecationWarning
                )
                warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
                if harmless_indexing:
                    warnings.filterwarnings("ignore", _INDEX_WARNING, UserWarning)
                torch.onnx.export(
                    module,
                    args,
                    str(temporary),
                    dynamo=False,
                    opset_version=opset,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes={name: dict(axes) for name, axes in dynamic_axes.items()},
                    do_constant_folding=False,
                )
            onnx.checker.check_model(str(temporary), full_check=True)
    except (
        RuntimeError,
        torch.onnx.errors.OnnxExporterError,
        onnx.checker.ValidationError,
        onnx.shape_inference.InferenceError,
    ) as err:
        # The exporter's message can carry the whole TorchScript graph: keep its first line.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpikecodeError(f"ONNX export failed: {reason}", file=str(path)) from err
    return path


def export_onnx_layer(
    layer: W8ASpikeLinear | nn.Linear,
    path: str | os.PathLike[str],
    *,
    k: float | None = None,
    group_size: int | str | None = "auto",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write one W8ASpike layer as an ONNX model ``y = layer(x)``.

    The graph has one float32 input ``x`` of shape ``[batch, sequence, in_features]`` and
    one output ``y`` of shape ``[batch, sequence, out_features]``; batch and sequence are
    dynamic. See the module docstring for the operators.

    Parameters
    ----------
    layer
        A :class:`~spikecode.nn.W8ASpikeLinear`, or a float ``nn.Linear`` that is
        quantized first (:meth:`W8ASpikeLinear.from_linear` with ``group_size``).
    path
        Output file; replaced atomically.
    k
        Threshold divisor baked into the graph; ``None`` uses the layer's ``k`` (3 for an
        ``nn.Linear``).
    group_size
        Weight-scale group size when ``layer`` is an ``nn.Linear`` (``None``: per row;
        ``"auto"``: 128 where it divides the inputs, as :func:`spikecode.nn.swap_linears`).
    opset
        ONNX opset, 13 to 20.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    SpikecodeError
        For an unsupported layer or opset, a path that cannot be written, or a failed
        export or check (no file is left behind).
    """
    opset = _check_opset(opset)
    if isinstance(layer, nn.Linear):
        layer = W8ASpikeLinear.from_linear(layer, 3.0 if k is None else k, group_size)
    elif not isinstance(layer, W8ASpikeLinear):
        raise SpikecodeError(
            "export_onnx_layer expects a W8ASpikeLinear or an nn.Linear",
            layer=type(layer).__name__,
        )
    graph = _W8ASpikeGraph(layer, k)
    example = torch.zeros(2, 3, layer.in_features, device=layer.weight_q.device)
    axes = {0: "batch", 1: "sequence"}
    return _write(graph, path, (example,), ["x"], ["y"], {"x": axes, "y": axes}, opset)


@register_exporter("onnx")
def export_onnx_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write a model whose projections are W8ASpike layers as an ONNX model.

    Typically a model after :func:`spikecode.nn.swap_linears` (a Hugging Face model or
    any ``nn.Module``). Each :class:`~spikecode.nn.W8ASpikeLinear` and
    :class:`~spikecode.nn.AdaptiveSpike` is exported as the integer subgraph of the
    module docstring; the rest of the model as PyTorch exports it. The model is left as
    it was.

    Parameters
    ----------
    model
        The model, with float32 (or float64) floating weights.
    path
        Output file; replaced atomically.
    example_inputs
        Inputs for one forward pass: a tensor, a tuple of positional tensors, or a
        mapping of keyword tensors (e.g. ``{"input_ids": ..., "attention_mask": ...}``).
    input_names, output_names
        Graph names. Default: the mapping's keys or ``input_0, …`` (``x`` for a single
        tensor); the keys of a returned dict (e.g. ``last_hidden_state``), ``output_0, …``
        for a tuple, ``output`` for a tensor.
    dynamic_axes
        ``{name: {axis: label}}`` for inputs and outputs. Default: axis 0 is ``batch``
        and axis 1 is ``sequence`` for integer tensors of two or more axes and float
        tensors of three or more (a float ``[batch, features]`` tensor keeps its features).
    opset
        ONNX opset, 13 to 20.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    SpikecodeError
        If the model has no spiking module, holds low-precision or more than 2 GiB of
        weights, returns something other than tensors, or cannot be exported or written
        (no file is left behind).
    """
    opset = _check_opset(opset)
    if not isinstance(model, nn.Module):
        raise SpikecodeError("model must be a torch.nn.Module", model=type(model).__name__)
    low = sorted(
        {
            str(t.dtype)
            for t in model.state_dict().values()
            if t.dtype in (torch.float16, torch.bfloat16)
        }
    )
    if low:
        raise SpikecodeError(
            f"the model holds {', '.join(low)} weights, which onnxruntime's CPU kernels "
            "mostly lack; export a float32 copy (model.float())",
        )
    _check_size(model)
    if isinstance(example_inputs, torch.Tensor):
        inputs, keywords, default_names = [example_inputs], None, ["x"]
    elif isinstance(example_inputs, Mapping):
        inputs, keywords = list(example_inputs.values()), list(example_inputs)
        default_names = keywords
    else:
        inputs, keywords = list(example_inputs), None
        default_names = [f"input_{i}" for i in range(len(inputs))]
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise SpikecodeError("example_inputs must be one or more tensors")
    flat = _FlatCall(model, keywords)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            outputs = flat.named_outputs(*inputs)
        names_in = list(input_names) if input_names is not None else default_names
        names_out = [n for n, _ in outputs] if output_names is None else list(output_names)
        if len(names_in) != len(inputs) or len(names_out) != len(outputs):
            raise SpikecodeError(
                f"got {len(names_in)} input and {len(names_out)} output names for "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        if dynamic_axes is None:
            tensors = [*inputs, *(t for _, t in outputs)]
            dynamic_axes = {
                name: _dynamic_axes(t)
                for name, t in zip([*names_in, *names_out], tensors, strict=True)
            }
        with _traceable(flat):
            harmless = _only_nonnegative_indexing(flat, tuple(inputs))
            return _write(
                flat,
                path,
                tuple(inputs),
                names_in,
                names_out,
                dynamic_axes,
                opset,
                harmless_indexing=harmless,
            )
    finally:
        for module, training in modes.items():
            module.training = training
