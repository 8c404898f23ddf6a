"""Load a model to spike-code: a SpikingBrain checkpoint, any Hugging Face folder, a module.

:func:`load_checkpoint` reads a local folder and returns a :class:`LoadedModel`:

- **SpikingBrain (GLA-SWA) checkpoints** — ``config.json`` with ``model_type: "gla_swa"``
  and safetensors weights (``model.safetensors.index.json`` with shards, or one
  ``model.safetensors``) in the release's names (SPEC §7). They load into the plain-PyTorch
  :class:`~spikecode.models.gla_swa.GLASwaForCausalLM`; no code from the folder runs
  (the release's ``auto_map`` is ignored). Loading is lazy and checked: every shard is
  opened memory-mapped with :func:`safetensors.safe_open`, every tensor name, dtype and
  shape is checked against the architecture before anything is allocated, the model is
  built on the meta device, materialised empty once, and filled tensor by tensor, so the
  weights are never held twice.
- **W8ASpike checkpoints** (SPEC §4) carry ``<linear>.weight_quantizer.scales`` buffers of
  shape ``[out, in/128, 1]`` (any ``[out, groups, 1]`` whose groups divide the inputs is
  read, the group size being ``in / groups``: ``[out, 1, 1]`` is one scale per row).
  They are attached to their linear layer as the buffer ``linear.weight_quantizer.scales``
  (a :class:`QuantizerScales` child module), so
  ``model.state_dict()`` has the file's names, and they are listed in
  :attr:`LoadedModel.quant_scales` (linear name → the same tensor), the form
  ``spikecode.nn.swap_linears(model, scales=loaded.quant_scales)`` takes. The weights are
  loaded as stored (not rounded): the release rounds them at run time,
  ``round(w / s) · s`` per group of 128 input columns. The gate variant (low-rank
  ``gk_proj.0/1`` or single ``gk_proj``) is read from the tensor names.
- **Any Hugging Face transformers folder** — ``AutoConfig``; ``AutoModelForCausalLM`` when
  the config's ``architectures`` name a ``…ForCausalLM``, else ``AutoModel`` (for
  example the BERT encoder all-MiniLM-L6-v2). Always ``local_files_only=True``; code shipped
  in the folder runs only with ``trust_remote_code=True``.
- The tokenizer beside the weights (``AutoTokenizer``) when tokenizer files exist, else
  None — the SpikingBrain release ships Qwen2 ``vocab.json``/``merges.txt``.

:func:`wrap_module` gives any :class:`torch.nn.Module` built in Python the same
:class:`LoadedModel` form.

``dtype=None`` keeps the stored dtype (``config.json``'s ``torch_dtype``, bfloat16 for
the release), as transformers' ``dtype="auto"`` does.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from spikecode._constants import RELEASE_GROUP_SIZE
from spikecode._validate import as_path
from spikecode.errors import Remedy, SpikecodeError
from spikecode.io import path_kind, read_json
from spikecode.models import gla_swa as _gla_swa_module
from spikecode.models.config import GLASwaConfig
from spikecode.models.gla_swa import GLASwaForCausalLM
from spikecode.models.moe import split_experts
from spikecode.models.offload import dispatch_offloaded, offload_weight, require_accelerate
from spikecode.models.scales import QuantizerScales

__all__ = [
    "INDEX_FILE",
    "SCALES_SUFFIX",
    "SINGLE_FILE",
    "W8_GROUP_SIZE",
    "LoadedModel",
    "QuantizerScales",
    "load_checkpoint",
    "wrap_module",
]

#: Name of the shard index of a sharded safetensors checkpoint.
INDEX_FILE = "model.safetensors.index.json"
#: Name of an unsharded safetensors checkpoint.
SINGLE_FILE = "model.safetensors"
#: Suffix of the W8ASpike weight-scale buffers (SPEC §4).
SCALES_SUFFIX = ".weight_quantizer.scales"
#: Input columns per W8ASpike scale group (SPEC §4).
W8_GROUP_SIZE = RELEASE_GROUP_SIZE

_FLOAT_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
_DTYPE_NAMES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
)
# How many names an error lists before it cuts the list short.
_NAMES_IN_ERRORS = 5

Kind = Literal["gla_swa", "spikingbrain_moe", "hf", "module"]

#: Loaders of spikecode's own architectures beyond GLA-SWA, by ``config.json``
#: ``model_type``: ``loader(folder, raw_config, device, dtype) -> LoadedModel``. The
#: modules that define them register here (``spikecode.models.moe_checkpoint``).
ARCHITECTURES: dict[str, Callable[..., LoadedModel]] = {}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for spike coding, and what came with it.

    Attributes
    ----------
    model
        The :class:`torch.nn.Module`, in eval mode.
    tokenizer
        A transformers tokenizer, or None when the folder has no tokenizer files.
    kind
        ``"gla_swa"`` (:class:`~spikecode.models.gla_swa.GLASwaForCausalLM`), ``"hf"``
        (a transformers model) or ``"module"`` (any other module).
    config
        :class:`~spikecode.models.gla_swa.GLASwaConfig`, the transformers config, or
        None.
    path
        The folder it was loaded from; None for :func:`wrap_module`.
    quant_scales
        W8ASpike weight scales (SPEC §4): linear-layer name (``"model.layers.0.attn.
        q_proj"``) → ``[out, in/128, 1]`` tensor, the very buffer attached at
        ``<linear>.weight_quantizer.scales``. Empty for non-quantized models.
    """

    model: nn.Module
    tokenizer: Any | None
    kind: Kind
    config: Any | None
    path: Path | None
    quant_scales: Mapping[str, torch.Tensor] = field(default_factory=lambda: MappingProxyType({}))


# ---------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    max_memory: Mapping[Any, Any] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    recipe: str | None = None,
) -> LoadedModel:
    """Load a local model folder (SpikingBrain GLA-SWA or Hugging Face) for spike coding.

    Parameters
    ----------
    path
        Folder holding ``config.json`` and the weights.
    device
        Where every weight goes (default CPU). Exclusive with ``device_map``.
    dtype
        Parameter dtype (``torch.float32``, ``"bfloat16"``, …); None keeps the stored dtype.
        W8ASpike scales always keep their stored dtype.
    device_map
        Hugging Face models: passed to ``from_pretrained`` (needs ``accelerate``).
        GLA-SWA models: a dict from module prefix to device, where prefixes name whole
        placement units (``"model.embeddings"``, ``"model.layers.3"``, ``"model.norm"``,
        ``"lm_head"``) or their ancestors (``"model"``, ``"model.layers"``, ``""`` for the
        rest) and the longest matching prefix wins; a single device string; or ``"auto"``
        (``accelerate.infer_auto_device_map``, needs ``accelerate``). Activations follow
        the units from device to device; logits come out on ``lm_head``'s device. A unit
        placed on ``"disk"`` (by ``"auto"`` when ``max_memory`` is too small for the
        model, or by name) is written to ``offload_folder`` and loaded by accelerate's
        hooks only while it runs.
    trust_remote_code
        Allow Python code shipped in a Hugging Face folder (``auto_map``) to run. Never
        needed for GLA-SWA folders, whose code is never run.
    max_memory
        With ``device_map="auto"``: the most memory per device (``{"cpu": "2GiB",
        0: "20GiB"}``, accelerate's format); what does not fit goes to disk.
    offload_folder
        Where weights placed on ``"disk"`` are kept (needed when some are).
    recipe
        None (default): the float model, W8ASpike scales listed in ``quant_scales`` (what
        calibration measures). ``"release"``: the model the release runs, spiking layers
        swapped in with the folder's scales, ``swap_linears(model, recipe="release",
        scales=quant_scales)`` — for a W8ASpike folder, the W8ASpike model.
        ``"all-linear"``: the same with SPEC §1's recipe.

    Returns
    -------
    LoadedModel
        The model in eval mode, its tokenizer (or None), kind, config, path and W8ASpike
        scales.

    Raises
    ------
    SpikecodeError
        A missing or unreadable ``config.json``; a missing, inconsistent or invalid config
        field; a missing shard; a truncated or corrupt safetensors file; a missing,
        unexpected, non-float or wrongly shaped tensor (each error names the tensor and
        the file); an unknown ``model_type``; code that needs ``trust_remote_code=True``;
        a ``device_map`` without ``accelerate`` installed, or one that leaves a module
        without a device.
    """
    folder = as_path(path)
    if path_kind(folder) != "dir":
        from spikecode._hub import hub_id_note

        note = hub_id_note(path)
        message = "checkpoint folder not found" + (f": {note}" if note else "")
        raise SpikecodeError(message, path=str(folder))
    config_file = folder / "config.json"
    if not config_file.exists():
        raise SpikecodeError("config.json not found in the checkpoint folder", path=str(folder))
    raw = read_json(config_file, "config.json")
    if not isinstance(raw, dict):
        raise SpikecodeError("config.json must hold a JSON object", file=str(config_file))
    if device is not None and device_map is not None:
        raise SpikecodeError("pass either device or device_map, not both")
    if (max_memory is not None or offload_folder is not None) and device_map is None:
        raise SpikecodeError("max_memory and offload_folder only apply with a device_map")
    if recipe is not None:
        from spikecode.nn.recipes import check_recipe

        check_recipe(recipe)
    target_dtype = None if dtype is None else _as_dtype(dtype)
    offload = _Offload(max_memory, None if offload_folder is None else Path(offload_folder))
    if raw.get("model_type") == "gla_swa":
        loaded = _load_gla_swa(folder, raw, device, target_dtype, device_map, offload)
    elif (loader := ARCHITECTURES.get(raw.get("model_type"))) is not None:  # type: ignore[arg-type]
        if device_map is not None:
            raise SpikecodeError(
                f"device_map is not supported for model_type {raw['model_type']!r}; pass device",
                path=str(folder),
            )
        loaded = loader(folder, raw, device, target_dtype)
    else:
        loaded = _load_hf(folder, raw, device, target_dtype, device_map, trust_remote_code, offload)
    if recipe is not None:
        from spikecode.nn.modules import swap_linears

        swap_linears(loaded.model, recipe=recipe, scales=dict(loaded.quant_scales) or None)
    return loaded


def _from_pretrained(folder: str, **options: Any) -> LoadedModel:
    """``GLASwaForCausalLM.from_pretrained``: a W8ASpike folder gives the W8ASpike model."""
    loaded = load_checkpoint(folder, **options)
    if loaded.kind == "gla_swa" and loaded.quant_scales:
        from spikecode.nn.modules import swap_linears

        swap_linears(loaded.model, recipe="release", scales=dict(loaded.quant_scales))
    return loaded


# GLASwaForCausalLM.from_pretrained routes here (gla_swa cannot import this module).
_gla_swa_module._CHECKPOINT_LOADER[:] = [_from_pretrained]


@dataclass(frozen=True)
class _Offload:
    """``max_memory`` and ``offload_folder`` of :func:`load_checkpoint`."""

    max_memory: Mapping[Any, Any] | None
    folder: Path | None


def wrap_module(module: nn.Module, *, tokenizer: Any | None = None) -> LoadedModel:
    """Give a :class:`torch.nn.Module` built in Python the :class:`LoadedModel` form.

    Parameters
    ----------
    module
        Any module. Its kind is ``"gla_swa"`` for
        :class:`~spikecode.models.gla_swa.GLASwaForCausalLM`, ``"hf"`` for a transformers
        ``PreTrainedModel``, else ``"module"``; its config is ``module.config`` when it
        has one. Buffers named ``<linear>.weight_quantizer.scales`` (the released
        W8ASpike ``QuantLinear`` layout) are listed in ``quant_scales``.
    tokenizer
        Optional tokenizer to carry along.

    Returns
    -------
    LoadedModel
        With ``path=None``. The module is not copied, moved or switched to eval mode;
        fused MoE experts (transformers' Mixtral, Qwen2-MoE, OLMoE, …) are replaced in
        place by one linear layer per expert projection, computing the same function
        (:func:`spikecode.models.unfuse_experts`).
    """
    if not isinstance(module, nn.Module):
        raise SpikecodeError(f"wrap_module needs a torch.nn.Module, not {type(module).__name__}")
    split_experts(module, False)
    from spikecode.models.hybrid_moe import SpikingBrainMoEForCausalLM

    if isinstance(module, GLASwaForCausalLM):
        kind: Kind = "gla_swa"
    elif isinstance(module, SpikingBrainMoEForCausalLM):
        kind = "spikingbrain_moe"
    elif _is_transformers_model(module):
        kind = "hf"
    else:
        kind = "module"
    config = {"gla_swa": "gla_config", "spikingbrain_moe": "moe_config"}.get(kind, "config")
    config = getattr(module, config, None)
    return LoadedModel(
        model=module,
        tokenizer=tokenizer,
        kind=kind,
        config=config,
        path=None,
        quant_scales=_collect_scales(module),
    )


# ---------------------------------------------------------------------------------------
# helpers shared by both paths
# ---------------------------------------------------------------------------------------


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name not in _DTYPE_NAMES:
            raise SpikecodeError(
                f"dtype {dtype!r} is not one of {sorted(_DTYPE_NAMES)}", dtype=dtype
            )
        return _DTYPE_NAMES[name]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SpikecodeError(f"dtype must be a floating-point torch.dtype, not {dtype!r}")
    return dtype


def _is_transformers_model(module: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(module, transformers.PreTrainedModel)


def _collect_scales(module: nn.Module) -> Mapping[str, torch.Tensor]:
    scales = {}
    for name, buffer in module.named_buffers():
        if name.endswith(SCALES_SUFFIX):
            scales[name.removesuffix(SCALES_SUFFIX)] = buffer
    return MappingProxyType(scales)


def _load_tokenizer(folder: Path, trust_remote_code: bool, *, gla_swa: bool = False) -> Any | None:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return None
    import transformers

    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if gla_swa:
        # transformers does not know model_type gla_swa; a blank config keeps AutoTokenizer
        # from parsing config.json and lets tokenizer_config.json's tokenizer_class decide.
        kwargs["config"] = transformers.PretrainedConfig()
        # Generation appends after the last column: the release's Qwen2 tokenizer pads on
        # the right by default, which would put padding inside generated rows.
        kwargs["padding_side"] = "left"
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)
    except Exception as err:  # transformers raises many types for unreadable tokenizers
        raise SpikecodeError(
            f"the tokenizer files in the folder cannot be loaded: {err}", path=str(folder)
        ) from err


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_IN_ERRORS])
    more = len(names) - _NAMES_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------


def _load_hf(
    folder: Path,
    raw: dict[str, Any],
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    device_map: str | Mapping[str, Any] | None,
    trust_remote_code: bool,
    offload: _Offload,
) -> LoadedModel:
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_file = str(folder / "config.json")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise SpikecodeError(
            "config.json has no model_type; cannot tell which model it describes",
            file=config_file,
            field="model_type",
        )
    if model_type not in CONFIG_MAPPING:
        if "auto_map" not in raw:
            raise SpikecodeError(
                f"unknown model_type {model_type!r}: neither spikecode nor transformers "
                f"{transformers.__version__} knows it",
                file=config_file,
                model_type=model_type,
            )
        if not trust_remote_code:
            raise SpikecodeError(
                f"model_type {model_type!r} is defined by Python code shipped in the folder "
                "(auto_map); refusing to run it unless you trust that code",
                remedies=(Remedy("trust_remote_code", True),),
                file=config_file,
                model_type=model_type,
            )
    if device_map is not None:
        require_accelerate("device_map")
    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(str(folder), **common)
    except Exception as err:  # transformers raises ValueError, OSError, KeyError, ...
        raise SpikecodeError(
            f"transformers cannot read config.json: {err}", file=config_file
        ) from err
    architectures = getattr(config, "architectures", None) or []
    causal = any(str(name).endswith("ForCausalLM") for name in architectures)
    auto_class = AutoModelForCausalLM if causal else AutoModel
    # Older transformers call the argument torch_dtype; "auto" keeps the stored dtype.
    dtype_argument = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_argument: "auto" if dtype is None else dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
        if offload.max_memory is not None:
            kwargs["max_memory"] = dict(offload.max_memory)
        if offload.folder is not None:
            kwargs["offload_folder"] = str(offload.folder)
    try:
        model = auto_class.from_pretrained(str(folder), config=config, **common, **kwargs)
    except Exception as err:  # missing or corrupt weights surface as many types
        raise SpikecodeError(
            f"transformers cannot load the model: {err}", path=str(folder)
        ) from err
    if device is not None:
        model.to(device)
    split_experts(model, device_map is not None)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=_load_tokenizer(folder, trust_remote_code),
        kind="hf",
        config=config,
        path=folder,
        quant_scales=_collect_scales(model),
    )


# ---------------------------------------------------------------------------------------
# GLA-SWA
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str


def _open(file: Path, stack: contextlib.ExitStack) -> Any:
    try:
        return stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
    except (SafetensorError, OSError) as err:
        raise SpikecodeError(
            f"cannot read safetensors file (truncated or corrupt?): {err}", file=str(file)
        ) from None


def _weight_files(folder: Path) -> tuple[dict[str, str], Path]:
    """Map every tensor name to its shard file name; also return the file that lists them."""
    index = folder / INDEX_FILE
    if index.is_file():
        content = read_json(index, "the shard index")
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise SpikecodeError(
                "the shard index has no weight_map of tensor name → shard file", file=str(index)
            )
        for shard in sorted(set(weight_map.values())):
            if Path(shard).name != shard:
                raise SpikecodeError(
                    f"the shard index names a file outside the folder: {shard!r}",
                    file=str(index),
                    shard=shard,
                )
            if not (folder / shard).is_file():
                raise SpikecodeError(
                    f"shard {shard} listed in the index is missing",
                    file=str(index),
                    shard=shard,
                )
        return weight_map, index
    single = folder / SINGLE_FILE
    if single.is_file():
        return {}, single
    raise SpikecodeError(
        f"no {INDEX_FILE} or {SINGLE_FILE} in the folder (pickled .bin checkpoints are not read)",
        path=str(folder),
    )


def _inspect(
    folder: Path, weight_map: dict[str, str], listing: Path, stack: contextlib.ExitStack
) -> tuple[dict[str, _TensorInfo], dict[Path, Any]]:
    """Open every weight file and read each tensor's shape and dtype from the headers."""
    files = sorted({folder / shard for shard in weight_map.values()}) if weight_map else [listing]
    handles = {file: _open(file, stack) for file in files}
    infos: dict[str, _TensorInfo] = {}
    for file, handle in handles.items():
        stored_names = handle.keys()  # a safe_open handle is not iterable
        for name in stored_names:
            if weight_map and weight_map.get(name) != file.name:
                raise SpikecodeError(
                    f"tensor {name} is in {file.name} but the index does not list it there",
                    tensor=name,
                    file=str(file),
                )
            piece = handle.get_slice(name)
            infos[name] = _TensorInfo(file, tuple(piece.get_shape()), piece.get_dtype())
    for name, shard in weight_map.items():
        if name not in infos:
            raise SpikecodeError(
                f"tensor {name} is listed in the index but missing from {shard}",
                tensor=name,
                file=str(folder / shard),
            )
    return infos, handles


def _gate_variant(infos: Mapping[str, _TensorInfo], listing: Path) -> str:
    lowrank = [n for n in infos if n.endswith(".attn.gk_proj.0.weight")]
    single = [n for n in infos if n.endswith(".attn.gk_proj.weight")]
    if lowrank and single:
        raise SpikecodeError(
            "the checkpoint mixes low-rank (gk_proj.0/1) and single (gk_proj) gate "
            f"projections: {lowrank[0]} and {single[0]}",
            file=str(listing),
        )
    return "single" if single else "lowrank"


def _model_dtype(config: Any, infos: Mapping[str, _TensorInfo]) -> torch.dtype:
    # config.json's torch_dtype, else the stored embeddings' dtype (any architecture).
    if config.torch_dtype is not None:
        return _DTYPE_NAMES[config.torch_dtype]
    stored = infos.get("model.embeddings.weight")
    if stored is not None and stored.dtype in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[stored.dtype]
    return torch.float32


def _check_tensors(
    model: GLASwaForCausalLM, infos: Mapping[str, _TensorInfo], listing: Path
) -> dict[str, tuple[int, ...]]:
    """Compare the file's tensors with the architecture; return the W8ASpike scale shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    optional = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    modules = dict(model.named_modules())
    scales: dict[str, tuple[int, ...]] = {}
    for name, info in infos.items():
        if info.dtype not in _FLOAT_DTYPES:
            raise SpikecodeError(
                f"tensor {name} has dtype {info.dtype}; floating-point weights expected",
                tensor=name,
                file=str(info.file),
            )
        if name.endswith(SCALES_SUFFIX):
            owner = name.removesuffix(SCALES_SUFFIX)
            linear = modules.get(owner)
            if not isinstance(linear, nn.Linear):
                raise SpikecodeError(
                    f"unexpected tensor {name}: {owner} is not a linear layer of the model",
                    tensor=name,
                    file=str(info.file),
                )
            # The group size is what the shape says: in_features / groups (128 in the
            # release; one group per row where 128 does not divide, spikecode's own rule).
            shape = tuple(info.shape)
            groups = shape[1] if len(shape) == 3 else 0
            if (
                len(shape) != 3
                or shape[0] != linear.out_features
                or shape[2] != 1
                or groups < 1
                or linear.in_features % groups
            ):
                raise SpikecodeError(
                    f"tensor {name} has shape {list(shape)}; W8ASpike scales of {owner} are "
                    f"[{linear.out_features}, groups, 1] with groups dividing its "
                    f"{linear.in_features} input columns (the release: "
                    f"[{linear.out_features}, {max(1, linear.in_features // W8_GROUP_SIZE)}, 1])",
                    tensor=name,
                    file=str(info.file),
                )
            scales[owner] = shape
            continue
        if name not in expected:
            raise SpikecodeError(
                f"unexpected tensor {name}: the architecture of config.json has no such parameter",
                tensor=name,
                file=str(info.file),
            )
        if info.shape != expected[name]:
            raise SpikecodeError(
                f"tensor {name} has shape {list(info.shape)}, the config implies "
                f"{list(expected[name])}",
                tensor=name,
                file=str(info.file),
            )
    missing = sorted(set(expected) - set(infos) - optional)
    if missing:
        raise SpikecodeError(
            f"the checkpoint lacks {len(missing)} tensor(s) the config requires: {_names(missing)}",
            tensor=missing[0],
            file=str(listing),
        )
    return scales


def _placement_units(model: GLASwaForCausalLM) -> list[str]:
    layers = [f"model.layers.{i}" for i in range(len(model.model.layers))]
    return ["model.embeddings", *layers, "model.norm", "lm_head"]


def _as_device(value: Any, what: str) -> torch.device | Literal["disk"]:
    """Parse a device or ``"disk"``; ``what`` names where it came from in errors."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"cuda:{value}"  # accelerate's device maps number the GPUs
    if value == "disk":
        return "disk"
    if isinstance(value, str) and value == "meta":
        raise SpikecodeError(f"{what} is 'meta'; give a device or 'disk'")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise SpikecodeError(f"{what} is not a valid device: {value!r} ({err})") from None


def _resolve_device_map(
    model: GLASwaForCausalLM,
    device_map: str | Mapping[str, Any],
    dtype: torch.dtype,
    max_memory: Mapping[Any, Any] | None = None,
) -> dict[str, torch.device | Literal["disk"]]:
    """Give every placement unit its device or ``"disk"`` (longest matching prefix wins)."""
    if device_map == "auto":
        accelerate = require_accelerate('device_map="auto"')
        device_map = accelerate.infer_auto_device_map(
            model,
            max_memory=None if max_memory is None else dict(max_memory),
            no_split_module_classes=["GLASwaBlock"],
            dtype=dtype,
        )
    elif isinstance(device_map, (str, torch.device)):
        device_map = {"": device_map}
    if not isinstance(device_map, Mapping):
        raise SpikecodeError(
            "device_map must be 'auto', a device, or a dict of module prefix → device"
        )
    units = _placement_units(model)
    modules = dict(model.named_modules())
    entries: dict[str, torch.device | Literal["disk"]] = {}
    for key, value in device_map.items():
        if not isinstance(key, str) or key not in modules:
            raise SpikecodeError(f"device_map key {key!r} names no module of the model", module=key)
        inside = [u for u in units if key.startswith(u + ".")]
        if inside:
            raise SpikecodeError(
                f"device_map key {key!r} splits {inside[0]}; place whole units "
                f"({', '.join(units[:2])}, …, lm_head) or their ancestors",
                module=key,
            )
        entries[key] = _as_device(value, f"device_map entry {key!r}")
    placement = {}
    for unit in units:
        matches = [k for k in entries if k == "" or unit == k or unit.startswith(k + ".")]
        if not matches:
            raise SpikecodeError(f"device_map gives no device for {unit}", module=unit)
        placement[unit] = entries[max(matches, key=len)]
    return placement


def _move_inputs_hook(device: torch.device) -> Any:
    def hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def move(value: Any) -> Any:
            return value.to(device) if isinstance(value, torch.Tensor) else value

        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    return hook


def _iter_tensors(
    infos: Mapping[str, _TensorInfo], handles: Mapping[Path, Any], skip: str | None
) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """Yield the file's tensors one at a time, shard by shard (all but ``skip``)."""
    for file, handle in handles.items():
        for name in sorted(n for n, info in infos.items() if info.file == file and n != skip):
            try:
                tensor = handle.get_tensor(name)
            except SafetensorError as err:
                raise SpikecodeError(
                    f"cannot read tensor {name}: {err}", tensor=name, file=str(file)
                ) from None
            yield name, tensor, file
            del tensor  # the generator must not keep the previous tensor alive


def _load_gla_swa(
    folder: Path,
    raw: dict[str, Any],
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    device_map: str | Mapping[str, Any] | None,
    offload: _Offload = _Offload(None, None),
) -> LoadedModel:
    config_file = str(folder / "config.json")
    GLASwaConfig.from_dict(raw, source=config_file)  # config errors before file errors
    weight_map, listing = _weight_files(folder)
    with contextlib.ExitStack() as stack:
        infos, handles = _inspect(folder, weight_map, listing, stack)
        config = GLASwaConfig.from_dict(raw, source=config_file, gate=_gate_variant(infos, listing))
        with torch.device("meta"):
            model = GLASwaForCausalLM(config)
        scale_shapes = _check_tensors(model, infos, listing)
        model_dtype = dtype if dtype is not None else _model_dtype(config, infos)
        model.to(dtype=model_dtype)
        if device_map is not None:
            placement = _resolve_device_map(model, device_map, model_dtype, offload.max_memory)
        else:
            target = _as_device("cpu" if device is None else device, "device")
            if target == "disk":
                raise SpikecodeError("device 'disk' needs a device_map and an offload_folder")
            placement = {unit: target for unit in _placement_units(model)}
        on_disk = [unit for unit, d in placement.items() if d == "disk"]
        if on_disk and offload.folder is None:
            raise SpikecodeError(
                f"the device map puts {_names(on_disk)} on disk; give an offload_folder"
            )
        if on_disk and config.tie_word_embeddings:
            raise SpikecodeError(
                "tied embeddings cannot be offloaded to disk; give the model more memory"
            )
        modules = dict(model.named_modules())
        for unit, unit_device in placement.items():
            if unit_device == "disk":
                continue  # stays on meta; accelerate loads it from offload_folder
            try:
                modules[unit].to_empty(device=unit_device)
            except (RuntimeError, AssertionError) as err:  # e.g. CUDA absent: AssertionError
                raise SpikecodeError(
                    f"cannot allocate {unit} on {unit_device}: {err}", module=unit
                ) from None
            if device_map is not None and not on_disk:
                modules[unit].register_forward_pre_hook(
                    _move_inputs_hook(unit_device), with_kwargs=True
                )
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embeddings.weight
        # Where each unit runs: its device, or (on disk) the main device, which also
        # holds its small W8ASpike scales.
        main = next((d for d in placement.values() if d != "disk"), torch.device("cpu"))
        runs_on = {unit: main if d == "disk" else d for unit, d in placement.items()}
        disk_prefixes = tuple(unit + "." for unit in on_disk)
        for owner, shape in scale_shapes.items():
            linear = modules[owner]
            scales_dtype = _FLOAT_DTYPES[infos[owner + SCALES_SUFFIX].dtype]
            unit = next(u for u in runs_on if owner.startswith(u + "."))
            linear.weight_quantizer = QuantizerScales(
                torch.empty(shape, dtype=scales_dtype, device=runs_on[unit]),
                group_size=linear.in_features // shape[1],
            )
        targets = model.state_dict(keep_vars=True)
        tied_head = None
        if config.tie_word_embeddings:
            # Shared with the embeddings: a stored copy is only checked, never loaded.
            del targets["lm_head.weight"]
            tied_head = infos.get("lm_head.weight")
        with torch.no_grad():
            skip = "lm_head.weight" if config.tie_word_embeddings else None
            index: dict[str, Any] = {}
            for name, tensor, _ in _iter_tensors(infos, handles, skip):
                if name.startswith(disk_prefixes) and not name.endswith(SCALES_SUFFIX):
                    index = offload_weight(tensor.to(model_dtype), name, offload.folder, index)
                else:
                    targets[name].copy_(tensor)
                del tensor
            if tied_head is not None:
                stored = handles[tied_head.file].get_tensor("lm_head.weight").to(model_dtype)
                if not torch.equal(stored, model.model.embeddings.weight.cpu()):
                    raise SpikecodeError(
                        "tie_word_embeddings is true but lm_head.weight differs from "
                        "model.embeddings.weight",
                        tensor="lm_head.weight",
                        file=str(tied_head.file),
                    )
    if on_disk:
        assert offload.folder is not None
        dispatch_offloaded(model, placement, offload.folder, index)
    return _finish(model, raw, folder, "gla_swa", config)


def _finish(
    model: nn.Module, raw: Mapping[str, Any], folder: Path, kind: Kind, config: Any
) -> LoadedModel:
    """Eval mode, config.json's special tokens for generate(), tokenizer and scales."""
    model.eval()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(raw.get(name), int | list):
            setattr(model.config, name, raw[name])
            setattr(model.generation_config, name, raw[name])
    return LoadedModel(
        model=model,
        tokenizer=_load_tokenizer(folder, trust_remote_code=False, gla_swa=True),
        kind=kind,
        config=config,
        path=folder,
        quant_scales=_collect_scales(model),
    )
