"""Disk offload of GLA-SWA checkpoints with accelerate (private helpers of the loader).

Units that ``device_map`` places on ``"disk"`` are never materialized: their tensors go
from the safetensors files straight into the offload folder (accelerate's format,
``index.json`` plus one ``.dat`` per tensor), and ``accelerate.dispatch_model`` attaches
the hooks that load a block's weights while it runs and put them back on the ``meta``
device afterwards.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from spikecode.errors import SpikecodeError

__all__ = ["dispatch_offloaded", "offload_weight", "require_accelerate"]


def require_accelerate(why: str) -> Any:
    """The accelerate module, or one clear error naming what needs it."""
    try:
        return importlib.import_module("accelerate")
    except ImportError:
        raise SpikecodeError(
            f"{why} needs the accelerate package: pip install accelerate"
        ) from None


def offload_weight(
    tensor: torch.Tensor, name: str, folder: Path | None, index: dict[str, Any]
) -> dict[str, Any]:
    """Write one tensor of a unit placed on disk into the offload folder."""
    require_accelerate("offloading to disk")
    from accelerate.utils import offload_weight as write

    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    return write(tensor, name, str(folder), index=index)


def dispatch_offloaded(
    model: nn.Module,
    placement: Mapping[str, torch.device | Literal["disk"]],
    folder: Path,
    index: dict[str, Any],
) -> None:
    """Hand the model to accelerate's hooks: units on disk load while they run."""
    accelerate = require_accelerate("offloading to disk")
    from accelerate.utils import save_offload_index

    save_offload_index(index, str(folder))
    device_map = {unit: "disk" if d == "disk" else str(d) for unit, d in placement.items()}
    devices = [d for d in placement.values() if d != "disk"]
    main = devices[0] if devices else torch.device("cpu")
    # A block reads some weights directly (the gate norm's), not through its submodule's
    # forward: load whole blocks at once.
    accelerate.dispatch_model(
        model,
        device_map,
        main_device=str(main),
        offload_dir=str(folder),
        preload_module_classes=["GLASwaBlock"],
    )
