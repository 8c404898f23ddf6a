"""Recipes: which activations of a model are spike-coded, and how (SPEC §1, §4, §7).

Two recipes are named everywhere (:func:`~spikecode.nn.swap_linears`,
:func:`~spikecode.calibration.evaluate`, :func:`~spikecode.calibration.calibrate`, the
``--recipe`` option of the CLI):

``"all-linear"`` (the default)
    SPEC §1 as written: the input of **every** selected linear projection is spike-coded
    and its weight quantized to INT8 (:class:`~spikecode.nn.W8ASpikeLinear`: exact
    integer accumulation, the rounding ``round(w / scale)`` of a correctly rounded
    float64 quotient). Works on any model.
``"release"``
    The shipped W8ASpike GLA-SWA model with the release's formulas, bit for bit
    (``W8ASpike/quant_linear.py``, ``window_attention.py``, ``modeling_gla_swa.py``):

    - every projection except ``mlp.down_proj`` is a :class:`ReleaseQuantLinear`: input
      ``Vth · round(x / Vth)`` with ``Vth = clamp(mean|x| / k, 1e-5, 1e4)`` formed in
      float32, weight ``round(w / scale) · scale`` **in the runtime dtype** (a bfloat16
      model rounds a bfloat16 quotient, so ties can fall the other way from spikecode's
      float64 rounding), then an ordinary float matmul;
    - ``mlp.down_proj`` keeps its float weight and its float, unspiked input (the
      release applies it through ``swiglu_linear`` with the float weight);
    - in the sliding-window attention layers the rotated queries go through the same
      ``dynamic_spikes`` (per head, over ``head_dim``, k = 3 by default) and the rotated
      keys and the values through the symmetric 8-bit quantizer ``round(x / s) · s``,
      ``s = max|x| / 127`` per token and head (clamped to [1e-5, 1e4]): the q input of
      ``QKᵀ`` is spike-driven, k and v are INT8 numbers, not spikes.

    Only for :class:`~spikecode.models.gla_swa.GLASwaForCausalLM`, and for the hybrid MoE
    model of SPEC §8 (:class:`~spikecode.models.hybrid_moe.SpikingBrainMoEForCausalLM`,
    no release of its own) by the same rules: every FFN ``down_proj`` (experts' too)
    float, and the sites of every softmax attention (window branches and full-attention
    layers) coded. On GLA-SWA the recipe also sets the model's ``release_numerics``:
    every tensor the release's PyTorch code rounds to the runtime dtype is rounded at the
    same point (rotary embedding, window coders, GLA gate and output, the fused residual
    norm, SwiGLU; docs/calibration.rst has the table). What remains different is inside
    the release's GPU kernels (flash-attn, fla's ``chunk_gla`` and fused norm), which
    spikecode replaces by float32 PyTorch. In the MoE model only the SwiGLU FFNs (the
    7B's module) follow ``release_numerics``; the rest keeps spikecode's numerics.

:func:`recipe_targets` lists, for a model and a recipe, every activation site and its
role (``"spike"``: spike-coded; ``"int8"``: INT8-quantized, not spikes; ``"float"``:
untouched); calibration, evaluation and the reports read it.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from spikecode._constants import DEFAULT_RECIPE, RECIPES, VTH_MAX, VTH_MIN
from spikecode.errors import SpikecodeError
from spikecode.models.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, list_linear_layers
from spikecode.nn import functional as F
from spikecode.nn._base import _SpikingModule

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "DynamicSpikes",
    "RecipeTarget",
    "ReleaseQuantLinear",
    "SymmetricQuantizer",
    "check_recipe",
    "recipe_targets",
    "release_dynamic_spikes",
    "release_fake_weight",
    "release_numerics",
    "release_quantize_sym",
]

#: The release's projection whose input it leaves float (``swiglu_linear``); in the hybrid
#: MoE model (SPEC §8) every FFN's down_proj, experts' included, by the same rule.
_FLOAT_IN_RELEASE = (
    "*.mlp.down_proj",
    "*.mlp.experts.*.down_proj",
    "*.mlp.shared_experts.*.down_proj",
)
#: The attention sites of a softmax attention the release codes (q: spikes, k/v: INT8).
_SITES = ("q_act", "k_act", "v_act")
#: The release's bound on the per-token scale of ``quantize_sym``.
_SYM_MIN, _SYM_MAX = 1e-5, 1e4


def check_recipe(recipe: object) -> str:
    """Return ``recipe`` if it names a recipe (:data:`RECIPES`); raise otherwise."""
    if recipe not in RECIPES:
        raise SpikecodeError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return str(recipe)


# --------------------------------------------------------------------------- formulas


def release_dynamic_spikes(x: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """The release's ``dynamic_spikes`` followed by its reconstruction ``(s · Vth).to(x.dtype)``.

    ``Vth = clamp(mean|x| / k, 1e-5, 1e4)`` over the last axis, the mean taken in
    ``x``'s dtype and then widened to float32; ``s = round(x / Vth)`` (half to even).
    The bitwise-bidirectional spike train the release encodes ``s`` into decodes to
    ``s`` exactly, so it is not simulated.
    """
    vth = x.abs().mean(-1, keepdim=True).float() / k
    vth = vth.clamp(min=VTH_MIN, max=VTH_MAX)
    return ((x / vth).round() * vth).to(x.dtype)


def release_quantize_sym(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """The release's ``quantize_sym``: ``round(x / s) · s``, ``s = max|x| / (2^(b-1) - 1)``.

    ``s`` per row of the last axis, in float32, clamped to [1e-5, 1e4]; the integers are
    clipped to ``[-2^(b-1), 2^(b-1) - 1]``; the result is cast back to ``x.dtype``.
    """
    top = (1 << (bits - 1)) - 1
    scale = x.abs().amax(-1, keepdim=True).float() / top
    scale = scale.clamp(min=_SYM_MIN, max=_SYM_MAX)
    return ((x / scale).round().clamp(-top - 1, top) * scale).to(x.dtype)


def release_fake_weight(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The release's ``Quantizer``: ``round(w / scale) · scale`` in the runtime dtype (SPEC §4).

    Parameters
    ----------
    weight
        ``[out, in]``.
    scales
        ``[out, in / group, 1]`` (or ``[out, 1]`` for one scale per row), in the dtype
        the division runs in (the release's buffer follows the model's dtype).

    Returns
    -------
    torch.Tensor
        ``[out, in]`` in ``weight.dtype``.
    """
    out, n_in = weight.shape
    groups = scales.reshape(out, -1, 1)
    w = weight.reshape(out, groups.shape[1], -1)
    return ((w / groups).round() * groups).reshape(out, n_in).to(weight.dtype)


# --------------------------------------------------------------------------- modules


class ReleaseQuantLinear(_SpikingModule):
    """A projection as the release's ``QuantLinear`` computes it (see the module docstring).

    Parameters
    ----------
    weight
        Float ``[out, in]`` weight, kept as a parameter (copied).
    scales
        ``[out, in / group, 1]`` weight scales; stored as a buffer that follows the
        module's dtype, as the release's does.
    bias
        Optional ``[out]`` bias.
    k
        Threshold divisor of the input spikes (the release's ``dynamic_sfr``, 3).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        k: float = 3.0,
    ) -> None:
        super().__init__(k, VTH_MIN, VTH_MAX)
        out, n_in = weight.shape
        if scales.dim() == 2:
            scales = scales.unsqueeze(-1)
        if scales.shape[0] != out or scales.shape[2] != 1 or n_in % scales.shape[1]:
            raise SpikecodeError(
                f"scales of shape {list(scales.shape)} do not fit a [{out}, {n_in}] weight",
                shape=tuple(scales.shape),
            )
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.register_buffer("scales", scales.detach().to(weight.dtype).clone())
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def in_features(self) -> int:
        """Number of input features."""
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        """Number of output features."""
        return self.weight.shape[0]

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, k: float = 3.0, scales: torch.Tensor | None = None
    ) -> ReleaseQuantLinear:
        """Build from a float layer; without released ``scales``, ``max|w| / 127`` per group.

        Groups of 128 input columns where 128 divides ``in_features`` (every projection
        of the release), else one scale per row.
        """
        if not isinstance(linear, nn.Linear):
            raise SpikecodeError(
                "from_linear expects a torch.nn.Linear", module=type(linear).__name__
            )
        weight = linear.weight.detach()
        if scales is None:
            _, scales = F.quantize_weight_int8(weight, F.auto_group_size(weight.shape[1]))
        return cls(weight, scales, linear.bias, k=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``linear(Vth · round(x / Vth), round(w / s) · s, b)`` as the release computes it."""
        weight = release_fake_weight(self.weight, self.scales)
        return nn.functional.linear(release_dynamic_spikes(x, self.k), weight, self.bias)

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"groups={self.scales.shape[1]}, k={self.k}"
        )


class DynamicSpikes(_SpikingModule):
    """The release's ``dynamic_spikes`` on an attention activation (window-attention q).

    Parameters
    ----------
    in_features, out_features
        Width of the spiked axis (``head_dim``) and the fan-out of a spike (the most
        keys a query meets, ``sliding_window + 1``), for statistics and energy.
    k
        Threshold divisor (the release hard-codes 3).
    """

    def __init__(self, in_features: int, out_features: int, k: float = 3.0) -> None:
        super().__init__(k, VTH_MIN, VTH_MAX)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Vth · round(x / Vth)`` per row of the last axis (:func:`release_dynamic_spikes`)."""
        return release_dynamic_spikes(x, self.k)


class SymmetricQuantizer(nn.Module):
    """The release's ``quantize_sym`` on an attention activation (window-attention k, v).

    Parameters
    ----------
    in_features, out_features
        Width of the quantized axis (``head_dim``), kept for listings.
    bits
        Bits of the symmetric integers (8).
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 8) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``round(x / s) · s`` per row of the last axis (:func:`release_quantize_sym`)."""
        return release_quantize_sym(x, self.bits)

    def extra_repr(self) -> str:
        """Describe the module in ``repr``."""
        return f"bits={self.bits}"


@contextlib.contextmanager
def release_numerics(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Within the block, round where the release rounds (``release_numerics``), then restore.

    The ``release`` recipe's :func:`~spikecode.nn.swap_linears` sets it for good;
    calibration under the ``release`` recipe measures the float model's activations
    in the release's dtype flow through this. Modules without the setting are left
    alone.
    """
    saved = [
        (module, module.release_numerics)
        for module in model.modules()
        if hasattr(type(module), "release_numerics")
    ]
    try:
        for module, _ in saved:
            module.release_numerics = on
        yield model
    finally:
        for module, value in saved:
            module.release_numerics = value


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class RecipeTarget:
    """One activation a recipe acts on.

    Attributes
    ----------
    name
        Module name: a linear projection (its input) or a window-attention site
        (``model.layers.1.attn.q_act``).
    role
        ``"spike"`` (spike-coded: a spike-driven input), ``"int8"`` (quantized to INT8
        numbers, not spikes) or ``"float"`` (left as it is).
    in_features, out_features
        The projection's shape; for a site the width of the coded axis (``head_dim``)
        and a spike's fan-out.
    """

    name: str
    role: str
    in_features: int
    out_features: int


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def recipe_targets(
    model: nn.Module,
    recipe: str = DEFAULT_RECIPE,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
) -> list[RecipeTarget]:
    """Every activation the recipe acts on, with its role, in model order.

    Linear projections are selected as :func:`spikecode.models.capture.list_linear_layers`
    does (``lm_head`` excluded by default); under ``"release"`` the window-attention
    sites of the selected attention layers are added (q: ``"spike"``, k and v:
    ``"int8"``) and ``mlp.down_proj`` is ``"float"``.

    Raises
    ------
    SpikecodeError
        An unknown recipe, ``"release"`` on a model that is not GLA-SWA, or patterns
        selecting nothing.
    """
    from spikecode.models.gla_swa import GLASwaForCausalLM
    from spikecode.models.hybrid_moe import SpikingBrainMoEForCausalLM
    from spikecode.models.sites import ActivationSite

    recipe = check_recipe(recipe)
    if recipe == "all-linear":
        return [
            RecipeTarget(name, "spike", n_in, n_out)
            for name, n_in, n_out in list_linear_layers(model, include, exclude)
        ]
    released = (GLASwaForCausalLM, SpikingBrainMoEForCausalLM)
    if not any(isinstance(m, released) for m in model.modules()):
        raise SpikecodeError(
            "the release recipe describes the W8ASpike SpikingBrain models (GLA-SWA, and the "
            f"hybrid MoE of SPEC §8); this model is a {type(model).__name__} (use recipe "
            "'all-linear')",
            model=type(model).__name__,
        )
    includes = (include,) if isinstance(include, str) else tuple(include)
    excludes = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    linears = {name: (n_in, n_out) for name, n_in, n_out in list_linear_layers(model, "*", ())}
    candidates = []
    for name, module in model.named_modules():
        if name in linears:
            role = "float" if _matches(name, _FLOAT_IN_RELEASE) else "spike"
            candidates.append(RecipeTarget(name, role, *linears[name]))
        elif all(isinstance(getattr(module, s, None), ActivationSite) for s in _SITES):
            for site, role in (("q_act", "spike"), ("k_act", "int8"), ("v_act", "int8")):
                sub = getattr(module, site)
                candidates.append(
                    RecipeTarget(f"{name}.{site}", role, sub.in_features, sub.out_features)
                )
    names = [t.name for t in candidates]
    for pattern in includes:
        if not fnmatch.filter(names, pattern):
            raise SpikecodeError(
                f"include pattern {pattern!r} matches no projection or attention site; "
                f"available: {', '.join(names[:8])}, …",
            )
    targets = [
        t for t in candidates if _matches(t.name, includes) and not _matches(t.name, excludes)
    ]
    if not targets:
        raise SpikecodeError("the exclude patterns remove every selected layer")
    return targets
