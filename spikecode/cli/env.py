"""``spikecode env``: what to paste into a bug report (versions, devices, caches, threads).

Versions come from the installed distributions' metadata (no import); torch and Numba
are imported for devices and threads, so the command takes a second or two.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from spikecode.cli._common import echo_json

__all__ = ["env_command", "environment"]

#: Distributions whose versions matter for spikecode's behaviour, in the order shown.
PACKAGES = (
    "spikecode",
    "numpy",
    "numba",
    "llvmlite",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "nir",
    "onnx",
    "onnxruntime",
    "matplotlib",
    "click",
    "tqdm",
)
#: Variables that change threads or caches.
VARIABLES = (
    "NUMBA_CACHE_DIR",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "NUMBA_DISABLE_JIT",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
#: The modules whose Numba kernels are cached (``cache=True``), relative to the package.
KERNEL_MODULES = ("encoders/_kernels.py", "encoders/_plane_kernels.py", "calibration/counting.py")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _numba_cache() -> dict[str, Any]:
    """Where the kernels are cached and how many compiled entries are there.

    Numba writes an index (``.nbi``) and data (``.nbc``) per kernel into ``__pycache__``
    beside the source, or under ``NUMBA_CACHE_DIR`` when set (in a tree mirroring the
    source path). No entries: the next run compiles (up to a minute, once).
    """
    package = Path(__file__).resolve().parents[1]
    custom = os.environ.get("NUMBA_CACHE_DIR")
    entries = 0
    for module in KERNEL_MODULES:
        source = package / module
        if custom:
            # Numba's rule for a user-given cache folder (_CacheLocator.
            # get_suitable_cache_subpath): <folder name>_<sha1 of the folder's path>.
            parent = str(source.parent)
            digest = hashlib.sha1(parent.encode()).hexdigest()
            folder = Path(custom) / f"{source.parent.name}_{digest}"
        else:
            folder = source.parent / "__pycache__"
        if folder.is_dir():
            entries += sum(1 for p in folder.glob(f"{source.stem}.*.nbi"))
    return {
        "location": custom or f"__pycache__ beside the sources in {package}",
        "kernel_indexes": entries,
        "state": "warm (kernels load in well under a second)"
        if entries
        else "cold (the first run compiles the kernels: up to a minute, once)",
    }


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"installed": False}
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    return {
        "installed": True,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "mps_available": bool(mps is not None and mps.is_available()),
        "threads": torch.get_num_threads(),
    }


def _numba_threads() -> dict[str, Any]:
    try:
        import numba
    except ImportError:
        return {}
    return {
        "threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer": numba.config.THREADING_LAYER,
        "jit_disabled": bool(numba.config.DISABLE_JIT),
    }


def environment() -> dict[str, Any]:
    """Everything ``spikecode env`` reports, as a JSON-ready dict."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    import spikecode

    return {
        "spikecode": {
            "version": spikecode.__version__,
            "path": str(Path(spikecode.__file__).parent),
        },
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpus": {"logical": os.cpu_count(), "usable": usable},
        "torch": _torch(),
        "numba": {**_numba_threads(), "cache": _numba_cache()},
        "variables": {name: os.environ[name] for name in VARIABLES if name in os.environ},
    }


@click.command("env")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def env_command(fmt: str) -> None:
    """Versions, devices, Numba cache and threads: paste this into a bug report."""
    info = environment()
    if fmt == "json":
        echo_json(info)
        return
    torch, numba = info["torch"], info["numba"]
    lines = [
        f"spikecode     {info['spikecode']['version']} ({info['spikecode']['path']})",
        f"python        {info['python']} ({info['executable']})",
        f"platform      {info['platform']} ({info['machine']})",
        "packages      "
        + ", ".join(f"{n} {v or 'not installed'}" for n, v in info["packages"].items()),
        f"cpus          {info['cpus']['logical']} logical, {info['cpus']['usable']} usable",
    ]
    if torch["installed"]:
        gpus = ", ".join(torch["devices"]) or "none"
        lines.append(
            f"torch         CUDA build {torch['cuda_build'] or 'none'}, CUDA devices: {gpus}, "
            f"MPS {'yes' if torch['mps_available'] else 'no'}, {torch['threads']} threads"
        )
    else:
        lines.append("torch         not installed")
    if "threads" in numba:
        lines.append(
            f"numba         {numba['threads']} threads, layer {numba['threading_layer']}"
            + (", JIT disabled" if numba["jit_disabled"] else "")
        )
    cache = numba["cache"]
    lines.append(
        f"numba cache   {cache['location']}: {cache['kernel_indexes']} kernel indexes, "
        + cache["state"]
    )
    for name, value in info["variables"].items():
        lines.append(f"{name:<13} {value}")
    click.echo("spikecode env")
    for line in lines:
        click.echo("  " + line)
