"""Capture the input activation of every linear projection of a PyTorch model.

SpikingBrain spike-codes the **input activation of every linear projection** (SPEC §1):
attention q/k/v/o, gate projections and the MLP gate/up/down projections, but not the
LM head or the embeddings. This module finds those projections by name and streams their
inputs to a callback with forward pre-hooks, so that statistics can be accumulated layer
by layer without ever holding more than one layer's activation in memory.

Padding never reaches the callback. The caller sets the batch's attention mask with
:meth:`LinearInputHooks.set_mask`; every hooked input is then reduced to the rows of real
tokens before the callback sees it. The callback always receives a 2-D tensor
``[rows, in_features]`` (the feature axis last, as SPEC §2 expects), whose rows are the
non-padding tokens in row-major ``(batch, position)`` order.

Examples
--------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> [name for name, _, _ in list_linear_layers(model)]
['0', '2']
>>> seen = {}
>>> with LinearInputHooks(model, lambda name, rows: seen.setdefault(name, rows.shape)) as hooks:
...     hooks.set_mask(torch.tensor([[1, 1, 0]]))
...     _ = model(torch.zeros(1, 3, 4))
>>> seen
{'0': torch.Size([2, 4]), '2': torch.Size([2, 3])}
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from spikecode._select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, select_names
from spikecode.errors import SpikecodeError

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_INCLUDE",
    "LinearInputHooks",
    "collect_linear_inputs",
    "is_uncounted",
    "list_linear_layers",
    "select_names",
    "uncounted",
]

Callback = Callable[[str, torch.Tensor], Any]

# Set while a model computes activations that depend on no input (sink tokens).
_UNCOUNTED = threading.local()


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Hide the layer inputs computed inside the block from every capture hook.

    For activations that depend on no input, such as learned sink tokens, which a model
    computes once and reuses (SPEC §8): counting them would weigh a constant as if it were
    data. Nesting is allowed.
    """
    depth = getattr(_UNCOUNTED, "depth", 0)
    _UNCOUNTED.depth = depth + 1
    try:
        yield
    finally:
        _UNCOUNTED.depth = depth


def is_uncounted() -> bool:
    """Whether the caller runs inside :func:`uncounted`."""
    return bool(getattr(_UNCOUNTED, "depth", 0))


def _hookable_types(module_types: Iterable[type[nn.Module]]) -> tuple[type[nn.Module], ...]:
    extra = tuple(module_types)
    for module_type in extra:
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise SpikecodeError(
                "module_types must hold torch.nn.Module subclasses", module_type=module_type
            )
    return (nn.Linear, *extra)


def _select(
    model: nn.Module,
    include: str | Iterable[str],
    exclude: str | Iterable[str],
    module_types: Iterable[type[nn.Module]],
) -> list[tuple[str, nn.Module]]:
    """Return the ``(name, module)`` pairs that the patterns select, in model order."""
    if not isinstance(model, nn.Module):
        raise SpikecodeError("model must be a torch.nn.Module", model=type(model).__name__)
    types = _hookable_types(module_types)
    candidates = [
        (name, module) for name, module in model.named_modules() if isinstance(module, types)
    ]
    if not candidates:
        raise SpikecodeError(
            "the model has no linear layers to hook",
            model=type(model).__name__,
            module_types=tuple(t.__name__ for t in types),
        )
    chosen = set(select_names([name for name, _ in candidates], include, exclude))
    return [(name, module) for name, module in candidates if name in chosen]


def _features(name: str, module: nn.Module) -> tuple[int, int]:
    in_features = getattr(module, "in_features", None)
    out_features = getattr(module, "out_features", None)
    if not (isinstance(in_features, int) and isinstance(out_features, int)):
        raise SpikecodeError(
            "a hooked module must have integer in_features and out_features attributes",
            layer=name,
            module=type(module).__name__,
        )
    return in_features, out_features


def list_linear_layers(
    model: nn.Module,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    module_types: Iterable[type[nn.Module]] = (),
) -> list[tuple[str, int, int]]:
    """List the linear projections whose inputs spike coding applies to (SPEC §1).

    Parameters
    ----------
    model
        Any PyTorch module.
    include, exclude
        fnmatch-style patterns (``*``, ``?``, ``[seq]``, case-sensitive) matched against
        the full dotted module name, e.g. ``"model.layers.*.attn.q_proj"``; as in
        :mod:`fnmatch`, ``*`` also matches dots (``"*q_proj"`` finds every layer's
        ``q_proj``). A bare string counts as a single pattern. A layer is
        selected when it matches some include pattern and no exclude pattern. By default
        every layer except ``lm_head`` is selected.
    module_types
        Module classes hooked in addition to :class:`torch.nn.Linear` (and its
        subclasses). They must have integer ``in_features`` and ``out_features``.

    Returns
    -------
    list of (str, int, int)
        ``(name, in_features, out_features)`` for each selected layer, in the order of
        ``model.named_modules()``.

    Raises
    ------
    SpikecodeError
        If an include pattern matches no layer (the message lists the first layer
        names), if the exclude patterns leave nothing, or if the model has no linear
        layer.
    """
    return [
        (name, *_features(name, module))
        for name, module in _select(model, include, exclude, module_types)
    ]


class LinearInputHooks:
    """Stream the input of selected linear layers to a callback during forward passes.

    A context manager: forward pre-hooks are registered on entry and always removed on
    exit, also when the forward pass or the callback raises. The hooks hold no
    activation themselves; whatever the callback keeps is the callback's choice.

    Parameters
    ----------
    model
        Any PyTorch module.
    callback
        Called as ``callback(name, rows)`` once per call of a selected layer, during the
        forward pass. ``rows`` is a detached tensor of shape ``[n, in_features]`` on the
        activation's device, in the activation's dtype: the layer input with all leading
        axes flattened in row-major order and, while a mask is set, only the rows of
        non-padding tokens (see :meth:`set_mask`). A layer called twice in one forward
        pass (shared weights) produces two calls. The callback should not modify
        ``rows`` in place: without a mask, or with a mask that marks no padding in the
        batch, it is usually a view of the layer's real input.
    include, exclude, module_types
        Layer selection, as in :func:`list_linear_layers`. Errors are raised here, at
        construction, before any forward pass.

    Attributes
    ----------
    layers : list of (str, int, int)
        The selected layers as ``(name, in_features, out_features)``.

    Examples
    --------
    Per-channel maximum of ``|x|`` over a calibration set, one layer in memory at a time:

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> peak = {}
    >>> def update(name, rows):
    ...     m = rows.abs().amax(dim=0)
    ...     peak[name] = torch.maximum(peak[name], m) if name in peak else m
    >>> with torch.no_grad(), LinearInputHooks(model, update) as hooks:
    ...     for batch, mask in [(torch.ones(2, 3, 4), torch.tensor([[1, 1, 1], [1, 0, 0]]))]:
    ...         hooks.set_mask(mask)
    ...         _ = model(batch)
    >>> sorted(peak)
    ['0', '1']
    """

    def __init__(
        self,
        model: nn.Module,
        callback: Callback,
        include: str | Iterable[str] = DEFAULT_INCLUDE,
        exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
        module_types: Iterable[type[nn.Module]] = (),
    ) -> None:
        if not callable(callback):
            raise SpikecodeError("callback must be callable", callback=type(callback).__name__)
        self._modules = _select(model, include, exclude, module_types)
        self.layers = [(name, *_features(name, module)) for name, module in self._modules]
        self._callback = callback
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mask: torch.Tensor | None = None
        # Row indices derived from the mask, computed once per device and reused by every
        # layer (boolean indexing would synchronise a GPU once per layer instead).
        self._rows_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def set_mask(self, attention_mask: torch.Tensor | np.ndarray | None) -> None:
        """Set the padding mask of the batch about to run through the model.

        Parameters
        ----------
        attention_mask
            ``[batch, seq]``, non-zero (or True) for real tokens and zero for padding —
            the Hugging Face ``attention_mask``. ``None`` removes the mask, after which
            every row reaches the callback.

        Notes
        -----
        While a mask is set, a hooked input of shape ``[batch, seq, features]`` is
        reduced to its real-token rows (``[batch, seq, heads, features]``: every head's
        row of each real token, heads innermost); ``[batch·seq, features]`` (tokens
        flattened, as MoE blocks route them) likewise. An input of shape ``[batch,
        features]`` (one vector per sequence, such as a BERT pooler's CLS vector) holds no
        padding position; its rows are kept for every sequence with at least one real
        token. A routed expert's input ``[n, features]`` is reduced to the real tokens
        among its rows when the layer carries ``routed_tokens`` (``[n]`` flat
        ``batch·seq`` indices, :mod:`spikecode.models.moe`). Any other input shape raises
        :class:`SpikecodeError` during the forward pass, since
        the mask cannot be applied to it and padding might otherwise leak into
        statistics: exclude that layer, or capture it without a mask.
        """
        self._rows_cache = {}
        if attention_mask is None:
            self._mask = None
            return
        if isinstance(attention_mask, np.ndarray):
            attention_mask = torch.from_numpy(attention_mask)
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2:
            raise SpikecodeError(
                "attention_mask must be a 2-D [batch, seq] tensor",
                shape=tuple(getattr(attention_mask, "shape", ())) or None,
                type=type(attention_mask).__name__,
            )
        self._mask = attention_mask.detach() != 0

    @property
    def mask(self) -> torch.Tensor | None:
        """The current ``[batch, seq]`` bool mask (:meth:`set_mask`), or None."""
        return self._mask

    def __enter__(self) -> LinearInputHooks:
        if self._handles:
            raise SpikecodeError("these hooks are already active; nested use is not supported")
        try:
            for name, module in self._modules:
                self._handles.append(
                    module.register_forward_pre_hook(self._make_hook(name), with_kwargs=True)
                )
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object registered (safe to call more than once)."""
        while self._handles:
            self._handles.pop().remove()

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            activation = args[0] if args else kwargs.get("input")
            if not isinstance(activation, torch.Tensor):
                raise SpikecodeError(
                    "could not find the input tensor of a hooked layer (expected the first "
                    "positional argument or the keyword 'input')",
                    layer=name,
                )
            if is_uncounted():
                return
            routed = getattr(module, "routed_tokens", None)
            self._callback(name, self._rows(name, activation.detach(), routed))

        return hook

    def _rows(
        self, name: str, activation: torch.Tensor, routed: torch.Tensor | None = None
    ) -> torch.Tensor:
        rows = activation.reshape(-1, activation.shape[-1])
        if self._mask is None:
            return rows
        mask = self._mask
        if (
            isinstance(routed, torch.Tensor)
            and activation.ndim == 2
            and routed.shape == (activation.shape[0],)
        ):
            # An expert's input: row r is flat token routed[r] of the batch (SPEC §8).
            flat = self._indices(mask, activation.device)[2]
            return rows[flat.index_select(0, routed)]
        leading = tuple(activation.shape[:-1])
        token_rows, sequence_rows, _ = self._indices(mask, activation.device)
        if leading == tuple(mask.shape) or leading == (mask.numel(),):
            # [batch, seq, features], or the same tokens flattened to [batch·seq, features]
            # (MoE blocks route flattened tokens; with seq = 1 both readings agree). No
            # padding: the rows themselves (a view), not a copy of every input.
            if token_rows.shape[0] == mask.numel():
                return rows
            return rows.index_select(0, token_rows)
        if leading[: mask.ndim] == tuple(mask.shape):
            # [batch, seq, heads, d] (attention sites): every head row of a real token.
            per_token = activation.reshape(mask.numel(), -1, activation.shape[-1])
            return per_token.index_select(0, token_rows).reshape(-1, activation.shape[-1])
        if leading == tuple(mask.shape[:1]):
            return rows.index_select(0, sequence_rows)
        raise SpikecodeError(
            "cannot apply the padding mask to this layer's input; exclude the layer or "
            "capture it without a mask",
            layer=name,
            shape=tuple(activation.shape),
            mask_shape=tuple(mask.shape),
        )

    def _indices(
        self, mask: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Real-token rows, rows of sequences with a real token, and the flat bool mask.
        if device not in self._rows_cache:
            flat = mask.to(device).reshape(-1)
            self._rows_cache[device] = (
                flat.nonzero().squeeze(1),
                mask.to(device).any(dim=1).nonzero().squeeze(1),
                flat,
            )
        return self._rows_cache[device]


def collect_linear_inputs(
    model: nn.Module,
    inputs: Mapping[str, Any],
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    max_rows: int | None = None,
    module_types: Iterable[type[nn.Module]] = (),
) -> dict[str, np.ndarray]:
    """Run one forward pass and return the inputs of the selected linear layers.

    For small captures (tests, the bundled sample): everything is copied to host memory.
    Use :class:`LinearInputHooks` directly to stream statistics over a large set.

    Parameters
    ----------
    model
        Any PyTorch module; it is called as ``model(**inputs)`` under
        :func:`torch.no_grad`. Its train/eval mode is left as it is (call ``eval()``
        first, or dropout changes the activations). Inputs must already be on the
        model's device.
    inputs
        Keyword arguments of the forward pass, e.g. a tokenizer's output. If it holds an
        ``attention_mask``, padding rows are dropped as described in
        :meth:`LinearInputHooks.set_mask`.
    include, exclude, module_types
        Layer selection, as in :func:`list_linear_layers`.
    max_rows
        Keep at most this many rows (the first ones) per layer; ``None`` keeps all.

    Returns
    -------
    dict of str to numpy.ndarray
        For every selected layer that ran, in model order, its input rows
        ``[n, in_features]`` (rows of every call of the layer, in call order). float64
        activations stay float64; all others are returned as float32 (a lossless upcast
        of float16 and bfloat16).
    """
    if not isinstance(inputs, Mapping):
        raise SpikecodeError(
            "inputs must be a mapping of forward keyword arguments", type=type(inputs).__name__
        )
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1
    ):
        raise SpikecodeError("max_rows must be a positive integer or None", max_rows=max_rows)
    limit = max_rows if max_rows is not None else float("inf")
    pieces: dict[str, list[np.ndarray]] = {}
    counts: dict[str, int] = {}

    def keep(name: str, rows: torch.Tensor) -> None:
        room = limit - counts.get(name, 0)
        if room <= 0:
            return
        rows = rows[: int(min(room, rows.shape[0]))]
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        # A copy: the rows may be a view of an activation the model still writes to.
        pieces.setdefault(name, []).append(rows.to("cpu", dtype, copy=True).numpy())
        counts[name] = counts.get(name, 0) + rows.shape[0]

    hooks = LinearInputHooks(model, keep, include, exclude, module_types)
    with torch.no_grad(), hooks:
        hooks.set_mask(inputs.get("attention_mask"))
        model(**inputs)
    return {
        name: np.concatenate(pieces[name], axis=0) for name, _, _ in hooks.layers if name in pieces
    }
