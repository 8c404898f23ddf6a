"""Mixture-of-experts models seen through the same hooks as dense ones (SPEC §8).

Two things make a MoE model's spike statistics per expert:

- **One ``nn.Linear`` per expert projection.** transformers 5 stores the experts of its
  MoE models (Mixtral, Qwen2-MoE, OLMoE, …) fused, as 3-D parameters
  (``gate_up_proj [E, 2I, H]``, ``down_proj [E, H, I]``). :func:`unfuse_experts` replaces
  each such module by :class:`ExpertLinears`, which computes the same function with one
  SwiGLU of ``nn.Linear`` layers per expert (``mlp.experts.3.gate_proj``, the names of
  spikecode's own MoE model), sharing the fused weights' memory. Capture hooks, recipes,
  calibration and exports then see every expert projection like any other.
- **Routing.** Each routed expert runs only on its tokens and marks its projections with
  ``routed_tokens`` (the flat ``batch·seq`` index of every input row), so capture hooks
  keep padding out of per-expert rows; every MoE module keeps its last routing
  (``last_routing``, ``[tokens, top_k]``), which :class:`RoutingCounter` accumulates over
  real tokens into per-expert token counts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.models.capture import is_uncounted

__all__ = [
    "ExpertLinears",
    "RoutingCounter",
    "has_fused_experts",
    "moe_modules",
    "split_experts",
    "unfuse_experts",
]


class _Expert(nn.Module):
    """One expert: ``down_proj(act(gate_proj(x)) · up_proj(x))``."""

    def __init__(
        self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, act: Callable[..., Any]
    ) -> None:
        super().__init__()
        self.gate_proj = _linear_of(gate)
        self.up_proj = _linear_of(up)
        self.down_proj = _linear_of(down)
        self.act_fn = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, hidden] -> [n, hidden]``."""
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _linear_of(weight: torch.Tensor) -> nn.Linear:
    # No new memory: the parameter is a view of the fused tensor's slice.
    with torch.device("meta"):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight, requires_grad=weight.requires_grad)
    return layer


class ExpertLinears(nn.ModuleList):
    """Routed experts as one ``nn.Linear`` SwiGLU per expert; a drop-in for fused experts.

    ``forward(hidden_states [n, H], top_k_index [n, k], top_k_weights [n, k])`` returns
    ``Σ_j top_k_weights[:, j] · E_{top_k_index[:, j]}(x)``, the function of transformers'
    fused experts modules.

    Attributes
    ----------
    last_routing : torch.Tensor or None
        ``top_k_index`` of the last call.
    """

    def __init__(self, experts: Iterable[nn.Module]) -> None:
        # Each expert has gate_proj, up_proj and down_proj linear layers.
        super().__init__(experts)
        self.last_routing: torch.Tensor | None = None

    @classmethod
    def from_fused(cls, module: nn.Module) -> ExpertLinears:
        """Build from a transformers fused experts module (weights shared, not copied)."""
        gate_up, down = module.gate_up_proj, module.down_proj
        experts = []
        for e in range(gate_up.shape[0]):
            gate, up = gate_up[e].chunk(2, dim=0)
            experts.append(_Expert(gate, up, down[e], module.act_fn))
        return cls(experts)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Mix the chosen experts' outputs, weighted by ``top_k_weights``."""
        self.last_routing = top_k_index.detach()
        out = torch.zeros_like(hidden_states)
        for index, expert in enumerate(self):
            token, slot = (top_k_index == index).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            for projection in (expert.gate_proj, expert.up_proj, expert.down_proj):
                projection.routed_tokens = token
            y = expert(hidden_states.index_select(0, token))
            # index_select, gather and scatter_add rather than advanced indexing and
            # index_add: the same sums, and they export to ONNX without ambiguity.
            weight = top_k_weights.index_select(0, token).gather(1, slot[:, None])
            rows = token[:, None].expand(-1, out.shape[1])
            out.scatter_add_(0, rows, (y * weight).to(out.dtype))
        return out


def _is_fused(module: nn.Module) -> bool:
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    if not (isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor)):
        return False
    if gate_up.dim() != 3 or down.dim() != 3:
        return False
    params = list(inspect.signature(type(module).forward).parameters)
    return params[1:4] == ["hidden_states", "top_k_index", "top_k_weights"]


def has_fused_experts(model: nn.Module) -> bool:
    """Whether the model holds a fused experts module (see :func:`unfuse_experts`)."""
    return any(_is_fused(module) for module in model.modules())


def unfuse_experts(model: nn.Module) -> list[str]:
    """Replace every fused experts module of a transformers MoE model by :class:`ExpertLinears`.

    The model computes the same function afterwards (tested on Mixtral, Qwen2-MoE and
    OLMoE); the per-expert weights are views of the fused ones (no copy).

    Parameters
    ----------
    model
        Any module; modules that are not fused experts are left alone.

    Returns
    -------
    list of str
        Names of the replaced modules.

    Raises
    ------
    SpikecodeError
        A fused experts module in a layout spikecode does not read (transposed or
        interleaved gate/up, biases, no gate, post-expert norms): naming the module.
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if not _is_fused(module):
            continue
        layout = {
            "is_transposed": False,
            "is_concatenated": True,
            "has_bias": False,
            "has_gate": True,
            "has_post_expert_norm": False,
        }
        odd = [key for key, value in layout.items() if getattr(module, key, value) != value]
        if odd or not callable(getattr(module, "act_fn", None)):
            raise SpikecodeError(
                f"the experts of {name} use a layout spikecode cannot split into linear "
                f"layers ({', '.join(odd) or 'no act_fn'})",
                module=name,
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, ExpertLinears.from_fused(module))
        replaced.append(name)
    return replaced


def split_experts(model: nn.Module, mapped: bool) -> None:
    """:func:`unfuse_experts` as the loaders apply it; ``mapped``: placed by a device_map.

    Raises
    ------
    SpikecodeError
        Fused experts in a model placed by a device_map (accelerate's hooks hold the
        fused tensors): load it with ``device`` instead.
    """
    if mapped and has_fused_experts(model):
        raise SpikecodeError(
            "this MoE model stores its experts fused; spikecode splits them into linear "
            "layers only for models loaded without a device_map (pass device instead)"
        )
    unfuse_experts(model)


def moe_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(layer, module, num_experts)`` of every routing module of the model, in order.

    ``layer`` names the MoE layer (the module that holds the :class:`ExpertLinears`,
    ``…mlp``), under which the routed experts' projections are
    ``<layer>.experts.<e>.<projection>``; ``module`` is the :class:`ExpertLinears`, whose
    ``last_routing`` holds the routing.
    """
    return [
        (name.rpartition(".")[0], module, len(module))
        for name, module in model.named_modules()
        if isinstance(module, ExpertLinears)
    ]


class RoutingCounter:
    """Count the real tokens each expert receives, per MoE layer (a context manager).

    Parameters
    ----------
    model
        The model; its routing modules are found with :func:`moe_modules`.
    mask
        Called at every routing to get the current ``[batch, seq]`` attention mask (or
        None: every row is a real token), e.g. the mask of a
        :class:`~spikecode.models.capture.LinearInputHooks`.
    active
        Called at every routing; False skips it (a prompt pass that is not measured).

    Attributes
    ----------
    counts : dict of str to torch.Tensor
        Per MoE layer, int64 ``[num_experts]``: routed (token, expert) pairs.
    tokens : dict of str to int
        Per MoE layer, the real tokens routed.
    top_k : dict of str to int
        Per MoE layer, experts per token.
    """

    def __init__(
        self,
        model: nn.Module,
        mask: Callable[[], torch.Tensor | None] = lambda: None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._modules = moe_modules(model)
        self._mask = mask
        self._active = active
        self._handles: list[Any] = []
        self.counts = {name: torch.zeros(n, dtype=torch.long) for name, _, n in self._modules}
        self.tokens = dict.fromkeys(self.counts, 0)
        self.top_k: dict[str, int] = {}

    def __enter__(self) -> RoutingCounter:
        for name, module, _ in self._modules:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if is_uncounted() or not self._active():
                return
            routing = module.last_routing
            mask = self._mask()
            if mask is not None:
                flat = mask.reshape(-1).to(routing.device) != 0
                if flat.numel() != routing.shape[0]:
                    raise SpikecodeError(
                        "cannot apply the padding mask to the routing of this MoE layer",
                        layer=name,
                        routing=tuple(routing.shape),
                        mask=tuple(mask.shape),
                    )
                routing = routing[flat]
            self.top_k[name] = int(routing.shape[1])
            self.tokens[name] += int(routing.shape[0])
            self.counts[name] += torch.bincount(
                routing.reshape(-1).cpu(), minlength=self.counts[name].numel()
            )

        return hook
