"""Exporters: write spike-coded models or data in formats other tools read.

A small registry maps a format name to the function that writes it, so that the CLI and
user code can pick an exporter by name::

    export = get_exporter("onnx")
    export(model, "model.onnx", example_inputs)

Each exporter module registers itself with :func:`register_exporter` when it is imported
here. Exporters take the object to export and the output path first; their remaining
arguments are their own.
"""

from spikecode.exporters.registry import EXPORTERS, get_exporter, register_exporter

__all__ = ["EXPORTERS", "get_exporter", "register_exporter"]

# Imported last: the exporter modules register themselves with the registry, so that
# get_exporter knows every built-in format without the caller importing its module.
from spikecode.exporters import events as _events  # noqa: F401
from spikecode.exporters import lava as _lava  # noqa: F401
from spikecode.exporters import nir as _nir  # noqa: F401
from spikecode.exporters import onnx as _onnx  # noqa: F401
