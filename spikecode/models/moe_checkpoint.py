"""Load a hybrid-linear MoE checkpoint (``model_type: "spikingbrain_moe"``, SPEC §8).

The folder layout is the one a Hugging Face release would use and the one
:func:`spikecode.testing.write_tiny_moe_checkpoint` writes: ``config.json``, sharded
safetensors with ``model.safetensors.index.json`` (or one ``model.safetensors``), and
optionally tokenizer files. As for the 7B layout, every tensor name, dtype and shape is
checked against the config before anything is allocated, the model is built on the meta
device and filled one tensor at a time, and no code from the folder runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import (
    _FLOAT_DTYPES,
    ARCHITECTURES,
    SCALES_SUFFIX,
    LoadedModel,
    QuantizerScales,
    _as_device,
    _check_tensors,
    _finish,
    _inspect,
    _iter_tensors,
    _model_dtype,
    _weight_files,
)
from spikecode.models.hybrid_moe import SpikingBrainMoEForCausalLM
from spikecode.models.moe_config import MODEL_TYPE, HybridMoEConfig

__all__ = ["load_moe_checkpoint"]


def load_moe_checkpoint(
    folder: Path,
    raw: dict[str, Any],
    device: str | torch.device | None,
    dtype: torch.dtype | None,
) -> LoadedModel:
    """Build and fill a :class:`SpikingBrainMoEForCausalLM` from a checked folder.

    Called by :func:`spikecode.models.checkpoint.load_checkpoint`, which reads
    ``config.json``; see there for the arguments and errors.
    """
    config = HybridMoEConfig.from_dict(raw, source=str(folder / "config.json"))
    weight_map, listing = _weight_files(folder)
    target = _as_device("cpu" if device is None else device, "device")
    if target == "disk":
        raise SpikecodeError("device 'disk' is not supported for hybrid MoE checkpoints")
    with contextlib.ExitStack() as stack:
        infos, handles = _inspect(folder, weight_map, listing, stack)
        with torch.device("meta"):
            model = SpikingBrainMoEForCausalLM(config)
        scale_shapes = _check_tensors(model, infos, listing)
        model.to(dtype=_model_dtype(config, infos) if dtype is None else dtype)
        try:
            model.to_empty(device=target)
        except (RuntimeError, AssertionError) as err:
            raise SpikecodeError(f"cannot allocate the model on {target}: {err}") from None
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embeddings.weight
        modules = dict(model.named_modules())
        for owner, shape in scale_shapes.items():
            linear = modules[owner]
            linear.weight_quantizer = QuantizerScales(
                torch.empty(
                    shape, dtype=_FLOAT_DTYPES[infos[owner + SCALES_SUFFIX].dtype], device=target
                ),
                group_size=linear.in_features // shape[1],
            )
        targets = model.state_dict(keep_vars=True)
        skip = "lm_head.weight" if config.tie_word_embeddings else None
        with torch.no_grad():
            for name, tensor, _ in _iter_tensors(infos, handles, skip):
                targets[name].copy_(tensor)
                del tensor
    return _finish(model, raw, folder, "spikingbrain_moe", config)


ARCHITECTURES[MODEL_TYPE] = load_moe_checkpoint
