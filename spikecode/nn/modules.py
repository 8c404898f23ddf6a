"""nn.Module wrappers over :mod:`spikecode.nn.functional`.

- :class:`AdaptiveSpike`: the STE fake-quant op ``Vth · round(x / Vth)`` as a module,
  for training or evaluating a model with spiking activations (SPEC §2).
- :class:`W8ASpikeLinear`: a linear projection with INT8 weights whose input is
  spike-coded (SPEC §4, "W8ASpike").
- :func:`swap_linears` turns the linear projections of a model into W8ASpike layers in
  place (SPEC §1: every projection except the LM head); :func:`set_k` changes ``k``
  afterwards, globally or per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.models.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, list_linear_layers
from spikecode.nn import functional as F
from spikecode.nn._base import _SpikingModule
from spikecode.nn.recipes import (
    DynamicSpikes,
    ReleaseQuantLinear,
    SymmetricQuantizer,
    check_recipe,
    recipe_targets,
)

__all__ = [
    "AdaptiveSpike",
    "W8ASpikeLinear",
    "replace_submodules",
    "set_k",
    "swap_linears",
]

KSpec = float | Mapping[str, float]


class AdaptiveSpike(_SpikingModule):
    """Spike-quantize activations, ``Vth · round(x / Vth)``, with a straight-through gradient.

    Module form of :func:`spikecode.nn.functional.spike_quantize` (SPEC §2): output of
    ``x``'s shape and dtype; the rounding passes the gradient unchanged, ``Vth`` stays
    differentiable through ``mean|x|``.

    Parameters
    ----------
    k
        Threshold divisor, finite and > 0.
    vth_min, vth_max
        Clamp of the threshold.
    """

    def __init__(
        self, k: float = 3.0, *, vth_min: float = F.VTH_MIN, vth_max: float = F.VTH_MAX
    ) -> None:
        super().__init__(k, vth_min, vth_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``Vth · round(x / Vth)`` (see :func:`spikecode.nn.functional.spike_quantize`)."""
        return F.spike_quantize(x, self.k, vth_min=self.vth_min, vth_max=self.vth_max)


class W8ASpikeLinear(_SpikingModule):
    """Linear layer with INT8 weights and a spike-coded input (SPEC §4).

    ``forward(x) = Vth · σ · (W_q s_INT) + b`` with ``s_INT = round(x / Vth)`` (see
    :func:`spikecode.nn.functional.w8aspike_linear`). Build it from a float layer with
    :meth:`from_linear`.

    Parameters
    ----------
    weight_q
        int8 ``[out_features, in_features]``, stored as the buffer ``weight_q``.
    scales
        Floating ``[out_features, n_groups]`` weight scales, > 0, stored as the float32
        buffer ``scales`` (which stays float32 under ``module.half()`` or
        ``module.to(dtype)``); the group size is ``in_features / n_groups``.
    bias
        Optional ``[out_features]`` bias, kept as a parameter (copied).
    k
        Threshold divisor, finite and > 0; the attribute ``k`` can be changed later.
    vth_min, vth_max
        Clamp of the threshold.

    Attributes
    ----------
    in_features, out_features, group_size : int
        Derived from the buffers' shapes.
    """

    def __init__(
        self,
        weight_q: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        k: float = 3.0,
        vth_min: float = F.VTH_MIN,
        vth_max: float = F.VTH_MAX,
    ) -> None:
        super().__init__(k, vth_min, vth_max)
        F._check_quantized(weight_q, scales)
        self.register_buffer("weight_q", weight_q.detach().clone())
        self.register_buffer("scales", scales.detach().to(torch.float32).clone())
        if bias is None:
            self.register_parameter("bias", None)
        else:
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight_q.shape[0],):
                raise SpikecodeError(
                    f"bias must be a [{weight_q.shape[0]}] tensor",
                    shape=tuple(getattr(bias, "shape", ())),
                )
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)

    @property
    def in_features(self) -> int:
        """Number of input features."""
        return self.weight_q.shape[1]

    @property
    def out_features(self) -> int:
        """Number of output features."""
        return self.weight_q.shape[0]

    @property
    def group_size(self) -> int:
        """Input columns per weight scale (``in_features`` for per-row scales)."""
        return self.in_features // self.scales.shape[1]

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        k: float = 3.0,
        group_size: int | str | None = "auto",
        scales: torch.Tensor | None = None,
        *,
        vth_min: float = F.VTH_MIN,
        vth_max: float = F.VTH_MAX,
    ) -> W8ASpikeLinear:
        """Quantize a float linear layer into a W8ASpike layer (SPEC §4).

        Parameters
        ----------
        linear
            The float layer; its weight is read, not modified.
        k
            Threshold divisor for the input spikes.
        group_size
            Input columns per scale (the release uses 128), ``None`` for one scale per
            output row, or ``"auto"`` (default): 128 when it divides ``in_features``,
            else one scale per row. Ignored in favour of ``scales`` when they are given,
            but an explicit size must then agree with them.
        scales
            Scales from a released checkpoint (``weight_quantizer.scales``, shape
            ``[out, in/128, 1]``, or ``[out, n_groups]``); the weights are then rounded as
            ``round(w / scale)`` (:func:`~spikecode.nn.functional.release_weight_to_int8`)
            instead of being quantized with ``max|w| / 127``.
        vth_min, vth_max
            Clamp of the threshold.

        Returns
        -------
        W8ASpikeLinear
            On the device of ``linear``'s weight.

        Raises
        ------
        SpikecodeError
            If ``linear`` is not an ``nn.Linear``, ``group_size`` does not divide
            ``in_features`` or disagrees with ``scales``, or a weight does not fit INT8.
        """
        if not isinstance(linear, nn.Linear):
            raise SpikecodeError(
                "from_linear expects a torch.nn.Linear", module=type(linear).__name__
            )
        weight = linear.weight.detach()
        if group_size == "auto":
            explicit = False
            group_size = F.auto_group_size(weight.shape[1])
        else:
            explicit = True
        if scales is None:
            weight_q, scales = F.quantize_weight_int8(weight, group_size)
        else:
            weight_q, scales = F.release_weight_to_int8(weight, scales)
            implied = weight.shape[1] // scales.shape[1]
            if explicit and group_size is not None and group_size != implied:
                raise SpikecodeError(
                    f"the given scales imply group_size {implied}, not {group_size}",
                    shape=tuple(scales.shape),
                )
        return cls(weight_q, scales, linear.bias, k=k, vth_min=vth_min, vth_max=vth_max)

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> W8ASpikeLinear:
        # model.half() / model.to(torch.bfloat16) must not round the weight scales: they
        # follow the module's device but stay float32.
        scales = self.scales
        super()._apply(fn, recurse)
        self.scales = scales.to(device=self.scales.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``Vth · σ · (W_q s_INT) + b`` for ``x`` of shape ``[..., in_features]``."""
        return F.w8aspike_linear(
            x,
            self.weight_q,
            self.scales,
            self.bias,
            self.k,
            vth_min=self.vth_min,
            vth_max=self.vth_max,
        )

    def extra_repr(self) -> str:
        """Describe shapes, grouping and threshold settings in ``repr(module)``."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, bias={self.bias is not None}, {super().extra_repr()}"
        )


def replace_submodules(model: nn.Module, replacements: Mapping[nn.Module, nn.Module]) -> int:
    """Replace every reference to some modules inside ``model`` by other modules, in place.

    Replacement goes by identity, so a module registered under several names (shared
    weights) is replaced everywhere. The root ``model`` itself cannot be replaced.

    Parameters
    ----------
    model
        The model to edit.
    replacements
        ``old module → new module``.

    Returns
    -------
    int
        Number of attribute slots that were rewritten.
    """
    slots = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if child in replacements
    ]
    for parent, name, child in slots:
        setattr(parent, name, replacements[child])
    return len(slots)


def _per_layer(value: object, names: list[str], argument: str) -> Mapping[str, object] | None:
    """Check that a per-layer mapping names only layers in ``names``; ``None`` if no mapping."""
    if not isinstance(value, Mapping):
        return None
    unknown = sorted(map(str, set(value) - set(names)))
    if unknown:
        raise SpikecodeError(
            f"{argument} names {len(unknown)} layer(s) that are not among the "
            f"{len(names)} it applies to: {', '.join(unknown[:8])}; "
            f"those are: {', '.join(names[:8])}{', …' if len(names) > 8 else ''}",
        )
    return value


def _k_and_scales(
    k: KSpec, names: list[str], what: str, scales: object, scale_names: list[str]
) -> tuple[Mapping[str, object] | None, Mapping[str, object]]:
    """Per-layer ``k`` (every one of ``names`` needs a value) and ``scales`` mappings."""
    k_of = _per_layer(k, names, "k")
    if k_of is not None:
        missing = [name for name in names if name not in k_of]
        if missing:
            raise SpikecodeError(
                f"k gives no value for {len(missing)} {what}: {', '.join(missing[:8])}",
                selected=len(names),
            )
    if scales is not None and not isinstance(scales, Mapping):
        raise SpikecodeError("scales must be a mapping from layer name to tensor")
    return k_of, _per_layer(scales, scale_names, "scales") or {}


def swap_linears(
    model: nn.Module,
    k: KSpec = 3.0,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    group_size: int | str | None = "auto",
    scales: Mapping[str, torch.Tensor] | None = None,
    recipe: str = "all-linear",
) -> list[str]:
    """Replace the selected ``nn.Linear`` layers of a model by spiking layers, in place.

    SpikingBrain spike-codes the input of every linear projection and quantizes its
    weight to INT8, leaving the LM head alone (SPEC §1). Layer selection is that of
    :func:`spikecode.models.capture.list_linear_layers`: fnmatch patterns on full dotted module
    names, ``lm_head`` and ``*.lm_head`` excluded by default.

    Parameters
    ----------
    model
        Any module; edited in place (a linear layer shared under several names is
        replaced everywhere).
    k
        One ``k`` for every layer, or a mapping ``layer name → k`` that must give a ``k``
        for every selected layer (the k advisor's per-layer choice).
    include, exclude
        fnmatch patterns on module names. An include pattern that matches no linear
        layer raises.
    group_size
        Input columns per weight scale (128 as in the release), ``None`` for per-row
        scales, or ``"auto"`` (default): 128 where it divides a layer's inputs, per row
        elsewhere.
    scales
        Optional ``layer name → released scales`` (``[out, in/128, 1]``); layers listed
        here are rounded with those scales (:meth:`W8ASpikeLinear.from_linear`).
    recipe
        ``"all-linear"`` (default): every selected projection becomes a
        :class:`W8ASpikeLinear`. ``"release"``: the W8ASpike GLA-SWA model as the release
        computes it (:mod:`spikecode.nn.recipes`): selected projections but
        ``mlp.down_proj`` become :class:`~spikecode.nn.recipes.ReleaseQuantLinear`,
        ``down_proj`` stays float, and the window-attention sites ``q_act`` / ``k_act``
        / ``v_act`` become the release's spike and INT8 coders (``k`` applies to the q
        spikes too; ``group_size`` is ignored: released scales or 128-column groups).

    Returns
    -------
    list of str
        The names of the replaced modules, in ``model.named_modules()`` order.

    Raises
    ------
    SpikecodeError
        For patterns that select nothing (the message lists available names), a ``k``
        or ``scales`` mapping naming unselected layers, a ``k`` mapping missing selected
        layers, or layers whose weights cannot be quantized as asked.
    """
    if check_recipe(recipe) == "release":
        return _swap_release(model, k, recipe_targets(model, recipe, include, exclude), scales)
    names = [name for name, _, _ in list_linear_layers(model, include, exclude)]
    k_of, scales_of = _k_and_scales(k, names, "selected layer(s)", scales, names)
    replacements = {}
    for name in names:
        linear = model.get_submodule(name)
        try:
            replacements[linear] = W8ASpikeLinear.from_linear(
                linear,
                k=k if k_of is None else k_of[name],
                group_size=group_size,
                scales=scales_of.get(name),
            )
        except SpikecodeError as err:
            raise SpikecodeError(err.message, layer=name, **err.context) from None
    replace_submodules(model, replacements)
    return names


def _swap_release(
    model: nn.Module,
    k: KSpec,
    targets: list,
    scales: Mapping[str, torch.Tensor] | None,
) -> list[str]:
    """The release recipe's replacements (see :func:`swap_linears`)."""
    spiked = [t.name for t in targets if t.role == "spike"]
    # The release keeps down_proj's scales unused: scales may name float targets too.
    k_of, scales_of = _k_and_scales(k, spiked, "spiked input(s)", scales, [t.name for t in targets])
    replacements: dict[nn.Module, nn.Module] = {}
    names = []
    for target in targets:
        if target.role == "float":
            continue
        module = model.get_submodule(target.name)
        value = None if target.role == "int8" else (k if k_of is None else k_of[target.name])
        try:
            if target.role == "int8":
                new: nn.Module = SymmetricQuantizer(target.in_features, target.out_features)
            elif isinstance(module, nn.Linear):
                new = ReleaseQuantLinear.from_linear(module, value, scales_of.get(target.name))
            else:
                new = DynamicSpikes(target.in_features, target.out_features, value)
        except SpikecodeError as err:
            raise SpikecodeError(err.message, layer=target.name, **err.context) from None
        replacements[module] = new
        names.append(target.name)
    replace_submodules(model, replacements)
    # The release's dtype flow (rounding points in the model's dtype) for the whole model.
    for module in model.modules():
        if hasattr(type(module), "release_numerics"):
            module.release_numerics = True
    return names


def set_k(model: nn.Module, k: KSpec) -> list[str]:
    """Set ``k`` of the spiking modules (:class:`W8ASpikeLinear`, :class:`AdaptiveSpike`).

    Parameters
    ----------
    model
        A model holding spiking modules (for instance after :func:`swap_linears`).
    k
        One value for all of them, or a mapping ``module name → k`` for some of them.

    Returns
    -------
    list of str
        Names of the modules whose ``k`` was set.

    Raises
    ------
    SpikecodeError
        If the model has no spiking module, a mapping names a module that is not one,
        or a ``k`` is not finite and > 0 (then no module is changed).
    """
    spiking = {
        name: module for name, module in model.named_modules() if isinstance(module, _SpikingModule)
    }
    if not spiking:
        raise SpikecodeError(
            "the model has no spiking module (W8ASpikeLinear or AdaptiveSpike); "
            "call swap_linears first",
            model=type(model).__name__,
        )
    k_of = _per_layer(k, list(spiking), "k")
    targets = {name: F.check_k(k if k_of is None else k_of[name]) for name in (k_of or spiking)}
    for name, value in targets.items():
        spiking[name].k = value
    return list(targets)
