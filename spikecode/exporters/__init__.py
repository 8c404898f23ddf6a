"""Exporters: write spike-coded models or data in formats other tools read.

A small registry maps a format name to the function that writes it, so that the CLI and
user code can pick an exporter by name::

    export = get_exporter("onnx")
    export(model, "model.onnx", example_inputs)

Each exporter module registers itself with :func:`register_exporter` when it is imported.
The registry knows every built-in format from the start and imports its module on first
use, so that one exporter (events, of the bundled sample) does not import the others'
libraries (torch and onnx for ONNX, nir for NIR and Lava). Exporters take the object to
export and the output path first; their remaining arguments are their own.
"""

from spikecode._lazy import lazy_exports
from spikecode.exporters.registry import EXPORTERS, get_exporter, register_exporter

__all__ = ["EXPORTERS", "get_exporter", "register_exporter"]

# ``spikecode.exporters.nir`` and the like still work after ``import spikecode.exporters``.
__getattr__, __dir__ = lazy_exports(__name__, {}, ("events", "lava", "nir", "onnx"))
