"""The projections of a model, from a checkpoint's file headers or from a stats file.

A deployment plan needs each spike-driven projection's name, shape and scale groups, never
its weights: :func:`~spikecode.plan.checkpoint_projections` reads them from ``config.json`` and the
safetensors headers (names, shapes, dtypes; :func:`safetensors.safe_open` reads the header
and maps nothing else), so a SpikingBrain-7B-width folder is planned in seconds on a laptop.
:func:`~spikecode.plan.stats_projections` takes them from a calibration stats file, whose
layers carry their shapes.

Which tensors are projections (SPEC §1: every linear projection's input is spike-coded,
the LM head and the embeddings are not): every 2-D tensor ``<module>.weight`` stored in
``torch.nn.Linear``'s ``[out, in]`` layout whose module is not an embedding (a last name
component containing ``embed``, or ``wte``/``wpe``), selected by fnmatch ``include`` and
``exclude`` patterns on the module name (default: all but ``lm_head``, as calibration).
GPT-2's ``Conv1D`` stores ``[in, out]`` and is read transposed: pass ``exclude`` or use a
stats file for such models.

Scale groups (the per-group integrators of the NIR and Lava exports): the W8ASpike
``<module>.weight_quantizer.scales`` buffer ``[out, G, 1]`` when the checkpoint has one,
else spikecode's own rule (``spikecode.nn.functional.auto_group_size``: 128 input
columns where 128 divides ``in``, else one group per row).

Mixture-of-experts folders (SPEC §8) are read as :func:`spikecode.models.unfuse_experts`
loads them, so the plan's names are the calibration's: fused experts (transformers 5's
``<layer>.experts.gate_up_proj [E, 2I, H]`` and ``<layer>.experts.down_proj [E, H, I]``)
become ``<layer>.experts.<e>.gate_proj``/``up_proj`` ``[I, H]`` and ``down_proj``
``[H, I]``; Mixtral's original names (``block_sparse_moe.experts.<e>.w1/w3/w2``) become
``mlp.experts.<e>.gate_proj/up_proj/down_proj``; and a transformers router
(``<layer>.gate.weight [E, H]`` beside ``<layer>.experts``: a parameter, not an
``nn.Linear``, so calibration does not code it) is not a projection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from spikecode._constants import auto_group_size
from spikecode._select import DEFAULT_EXCLUDE, select_names
from spikecode.errors import SpikecodeError
from spikecode.io import path_kind, read_json

__all__ = [
    "CheckpointShapes",
    "Projection",
    "checkpoint_projections",
    "default_groups",
    "stats_projections",
]

_INDEX_FILE = "model.safetensors.index.json"
_SINGLE_FILE = "model.safetensors"
_SCALES_SUFFIX = ".weight_quantizer.scales"
_EMBEDDING_NAMES = ("wte", "wpe")
#: transformers model types whose original checkpoints use Mixtral's expert names.
_MIXTRAL_NAMES = ("mixtral", "minimax")
_MIXTRAL_EXPERT = re.compile(r"^(.*)\.block_sparse_moe\.(experts\.\d+\.)(w[123])$")
_MIXTRAL_ROLE = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_MIXTRAL_MOE = re.compile(r"^(.*)\.block_sparse_moe\.")
_EXPERT = re.compile(r"^(.*)\.experts\.(\d+)\.")


@dataclass(frozen=True)
class Projection:
    """One spike-driven linear projection: its name, shape and scale groups.

    Attributes
    ----------
    name
        Module name (``model.layers.0.attn.q_proj``).
    in_features, out_features
        Shape ``[out, in]`` of the weight.
    groups
        Weight-scale groups ``G`` (``in / G`` input columns each); the exports give every
        output one integrator per group.
    dtype
        The stored dtype of the weight (``"BF16"``), None when it came from a stats file.
    """

    name: str
    in_features: int
    out_features: int
    groups: int
    dtype: str | None = None

    def __post_init__(self) -> None:
        for what in ("in_features", "out_features", "groups"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpikecodeError(
                    f"{what} of projection {self.name!r} must be a positive integer, got {value!r}"
                )
        if self.in_features % self.groups:
            raise SpikecodeError(
                f"{self.groups} scale groups do not divide the {self.in_features} inputs of "
                f"projection {self.name!r}"
            )

    @property
    def group_size(self) -> int:
        """Input columns per scale group: the fan-in of one integrator."""
        return self.in_features // self.groups


@dataclass(frozen=True)
class CheckpointShapes:
    """What a checkpoint folder's headers say: its projections and where they came from."""

    path: str
    model_type: str | None
    projections: tuple[Projection, ...]
    tensors: int
    files: int
    experts_per_token: int | None = None
    num_experts: int | None = None


def default_groups(in_features: int) -> int:
    """Scale groups of spikecode's W8ASpike layers: ``in / 128``, or 1 (SPEC §4)."""
    size = auto_group_size(in_features)
    return 1 if size is None else in_features // size


def _weight_files(folder: Path) -> list[Path]:
    index = folder / _INDEX_FILE
    if index.is_file():
        content = read_json(index, "the shard index")
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise SpikecodeError(
                "the shard index has no weight_map of tensor name → shard file", file=str(index)
            )
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if Path(shard).name != shard or not (folder / shard).is_file():
                raise SpikecodeError(
                    f"shard {shard!r} listed in the index is missing or outside the folder",
                    file=str(index),
                )
        return [folder / shard for shard in shards]
    if (folder / _SINGLE_FILE).is_file():
        return [folder / _SINGLE_FILE]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise SpikecodeError(
            f"no {_INDEX_FILE}, {_SINGLE_FILE} or other .safetensors file in the folder "
            "(pickled .bin checkpoints are not read)",
            path=str(folder),
        )
    return found


def _headers(files: Iterable[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name → (shape, dtype) from the safetensors headers only."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for name in handle.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                    piece = handle.get_slice(name)
                    out[name] = (tuple(piece.get_shape()), piece.get_dtype())
        except (SafetensorError, OSError) as err:
            raise SpikecodeError(
                f"cannot read safetensors header (truncated or corrupt?): {err}", file=str(file)
            ) from None
    return out


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders ``layers.2`` before ``layers.10`` (model order)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in name.split(".")]


def _is_embedding(module: str) -> bool:
    last = module.rpartition(".")[2]
    return "embed" in last.lower() or last in _EMBEDDING_NAMES


def _groups_from_scales(
    name: str, shape: tuple[int, ...], in_features: int, out_features: int, file: str
) -> int:
    if len(shape) != 3 or shape[0] != out_features or shape[2] != 1 or shape[1] < 1:
        raise SpikecodeError(
            f"tensor {name} has shape {list(shape)}; W8ASpike scales are [{out_features}, "
            "groups, 1]",
            tensor=name,
            file=file,
        )
    if in_features % shape[1]:
        raise SpikecodeError(
            f"tensor {name}: {shape[1]} scale groups do not divide {in_features} inputs",
            tensor=name,
            file=file,
        )
    return shape[1]


def _fused_experts(
    headers: Mapping[str, tuple[tuple[int, ...], str]], file: str
) -> dict[str, tuple[int, int, str]]:
    """Per-expert ``[out, in]`` weights of transformers' fused experts (module docstring)."""
    out: dict[str, tuple[int, int, str]] = {}
    for name, (shape, dtype) in headers.items():
        if not name.endswith(".experts.gate_up_proj"):
            continue
        experts = name.removesuffix(".gate_up_proj")
        down = headers.get(experts + ".down_proj")
        if down is None or len(shape) != 3 or len(down[0]) != 3:
            raise SpikecodeError(
                f"{name} is not a fused experts tensor spikecode reads ([E, 2I, H] with "
                f"{experts}.down_proj [E, H, I])",
                tensor=name,
                file=file,
            )
        (e, two_i, hidden), (e_down, h_down, inner) = shape, down[0]
        if (e, hidden, two_i) != (e_down, h_down, 2 * inner):
            raise SpikecodeError(
                f"the experts of {experts} use a layout spikecode cannot split into linear "
                f"layers (gate_up_proj {list(shape)}, down_proj {list(down[0])}; expected "
                "[E, 2I, H] and [E, H, I])",
                tensor=name,
                file=file,
            )
        for index in range(e):
            out[f"{experts}.{index}.gate_proj"] = (hidden, inner, dtype)
            out[f"{experts}.{index}.up_proj"] = (hidden, inner, dtype)
            out[f"{experts}.{index}.down_proj"] = (inner, hidden, down[1])
    return out


def _module_name(module: str, model_type: str | None) -> str:
    """The module name the loaded model uses (Mixtral's original expert names renamed)."""
    if model_type not in _MIXTRAL_NAMES:
        return module
    found = _MIXTRAL_EXPERT.match(module)
    if found:
        return f"{found[1]}.mlp.{found[2]}{_MIXTRAL_ROLE[found[3]]}"
    return _MIXTRAL_MOE.sub(r"\1.mlp.", module)


def _drop_routers(weights: dict[str, tuple[int, int, str]]) -> None:
    """Remove transformers routers: ``<layer>.gate [E, H]`` beside ``<layer>.experts.<e>``."""
    experts: dict[str, set[int]] = {}
    for module in weights:
        found = _EXPERT.match(module)
        if found:
            experts.setdefault(found[1], set()).add(int(found[2]))
    for layer, indices in experts.items():
        router = weights.get(layer + ".gate")
        if router is not None and router[1] == len(indices):
            del weights[layer + ".gate"]


def checkpoint_projections(
    folder: str | os.PathLike[str],
    include: str | Iterable[str] = ("*",),
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
) -> CheckpointShapes:
    """The spike-driven projections of a checkpoint folder, without loading a weight.

    Parameters
    ----------
    folder
        A SpikingBrain (GLA-SWA) or Hugging Face folder: ``config.json`` and safetensors
        weights (``model.safetensors.index.json`` with shards, ``model.safetensors``, or
        other ``*.safetensors`` files).
    include, exclude
        fnmatch patterns on module names (``*`` crosses dots), as in calibration.

    Returns
    -------
    CheckpointShapes
        The projections in model order (names sorted with layer numbers compared as numbers).

    Raises
    ------
    SpikecodeError
        A missing folder or config.json, unreadable headers, no projection, or patterns
        that select none.
    """
    path = Path(folder)
    kind = path_kind(path)
    if kind != "dir":
        raise SpikecodeError(
            "the checkpoint must be a folder with config.json and safetensors weights"
            if kind
            else "checkpoint folder not found",
            path=str(path),
        )
    config = read_json(path / "config.json", "config.json")
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    files = _weight_files(path)
    headers = _headers(files)
    model_type = model_type if isinstance(model_type, str) else None
    weights = _fused_experts(headers, str(path))
    for name, (shape, dtype) in headers.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name.removesuffix(".weight")
        if _is_embedding(module) or min(shape) == 0:
            continue
        weights[_module_name(module, model_type)] = (shape[1], shape[0], dtype)
    _drop_routers(weights)
    if not weights:
        raise SpikecodeError(
            "the checkpoint holds no 2-D linear weight ([out, in] '<module>.weight')",
            path=str(path),
        )
    chosen = select_names(sorted(weights, key=_natural), include, exclude)
    projections = []
    for module in chosen:
        in_features, out_features, dtype = weights[module]
        scales = headers.get(module + _SCALES_SUFFIX)
        groups = (
            default_groups(in_features)
            if scales is None
            else _groups_from_scales(
                module + _SCALES_SUFFIX, scales[0], in_features, out_features, str(path)
            )
        )
        projections.append(Projection(module, in_features, out_features, groups, dtype))
    config = config if isinstance(config, Mapping) else {}
    top_k = config.get("num_experts_per_tok")
    # Mixtral names its routed experts num_local_experts; Qwen2-MoE, OLMoE, spikecode's
    # num_experts.
    experts = config.get("num_local_experts", config.get("num_experts"))
    return CheckpointShapes(
        path=str(path),
        model_type=model_type,
        projections=tuple(projections),
        tensors=len(headers),
        files=len(files),
        experts_per_token=top_k if _positive(top_k) else None,
        num_experts=experts if _positive(experts) else None,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def stats_projections(stats: Any) -> tuple[Projection, ...]:
    """The projections of the model a :class:`~spikecode.calibration.CalibrationStats` measured.

    Its layers, plus the routed experts no calibration token reached (a stats file has no
    layer for them, SPEC §8): they are resident on the chip all the same, with the shapes
    of their MoE layer's other experts (the experts of one layer have one shape), listed
    after the layer's last measured expert.
    """
    out = [
        Projection(
            layer.name, layer.in_features, layer.out_features, default_groups(layer.in_features)
        )
        for layer in stats.layers
    ]
    for routing in stats.routing:
        prefix = routing.layer + ".experts."
        seen: dict[int, list[Projection]] = {}
        for p in out:
            found = _EXPERT.match(p.name)
            if found and found[1] == routing.layer:
                seen.setdefault(int(found[2]), []).append(p)
        if not seen:
            continue
        model = seen[min(seen)]
        last = max(i for i, p in enumerate(out) if p.name.startswith(prefix))
        missing = [
            Projection(
                f"{prefix}{e}." + p.name[len(prefix) :].partition(".")[2],
                p.in_features,
                p.out_features,
                p.groups,
            )
            for e in range(routing.num_experts)
            if e not in seen
            for p in model
        ]
        out[last + 1 : last + 1] = missing
    return tuple(out)
