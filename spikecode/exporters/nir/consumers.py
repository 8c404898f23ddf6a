"""Run an exported graph in a named NIR consumer, with that consumer's own importer.

Each consumer needs its own recipe (docs/export-consumers.rst): snnTorch turns ``IF``
into a leaky neuron that must be reset before every step, Norse's default ``dt`` is
0.001, Sinabs wants batch-major frames and its batch size, Spyx runs the whole sequence
at once, Rockpool reads the ``LI`` form only. :func:`run_in_consumer` applies the recipe,
so that the only choice left to the caller is which consumer; it refuses a graph the
consumer cannot run rather than return a wrong number, and warns (:class:`Float32Warning`)
when the consumer will round the accumulators.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import nir
import numpy as np

from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError
from spikecode.exporters.nir.graph import (
    Float32Warning,
    NirExport,
    _float32_message,
    graph_info,
)
from spikecode.exporters.nir.host import _run_projections, nir_frames

__all__ = ["CONSUMERS", "consumer_membrane", "run_in_consumer"]

#: The consumers :func:`run_in_consumer` drives, and the integrator form each one runs.
CONSUMERS: dict[str, str] = {
    "snntorch": "IF",
    "norse": "IF",
    "sinabs": "IF",
    "spyx": "IF",
    "rockpool": "LI",
}
_PACKAGES = {
    "snntorch": "snntorch",
    "norse": "norse",
    "sinabs": "sinabs",
    "spyx": "spyx",
    "rockpool": "rockpool",
}
_INSTALL = {
    "snntorch": "pip install snntorch",
    "norse": 'pip install --no-deps "norse>=1.1"',
    "sinabs": 'pip install "spikecode[nir-consumers]"',
    "spyx": 'pip install "spikecode[nir-consumers]"',
    "rockpool": 'pip install "spikecode[nir-consumers]"',
}
# Consumers whose membrane is float32 whatever the frames (the float32 warning names them).
_FLOAT32 = ("norse", "spyx", "rockpool")


def _block_samna_stub() -> None:
    """Keep PyPI's ``samna`` installer stub from running when a consumer imports it.

    PyPI's samna is a stub whose import runs pip against another index (it marks itself
    with ``PYPI_SAMNA = True``); sinabs 2.x depends on it and rockpool imports samna to
    probe for hardware. Where the installed samna is that stub (read, not imported), it
    is marked missing in ``sys.modules`` so both libraries see "no samna"; a real samna,
    or one already imported, is left alone.
    """
    if "samna" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("samna")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return
    with open(spec.origin, encoding="utf8", errors="replace") as file:
        if "PYPI_SAMNA" in file.read():
            sys.modules["samna"] = None  # type: ignore[assignment]


def _require(consumer: str) -> None:
    _block_samna_stub()
    if importlib.util.find_spec(_PACKAGES[consumer]) is None:
        raise SpikecodeError(
            f"{consumer} is not installed ({_INSTALL[consumer]})", consumer=consumer
        )


# --------------------------------------------------------------------------- recipes


def _snntorch(graph: nir.NIRGraph, frames: np.ndarray) -> np.ndarray:
    # import_from_nir maps IF to Leaky(beta=0.9), whose membrane lives in the module and
    # survives state=None: reset it before every step, so each step's membrane is that
    # step's input alone (0.9 * 0 + I_t), and sum the steps on the host in float64.
    import snntorch.utils
    import torch
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints about its rnn subgraphs
        net = import_from_nir(graph)
    total = np.zeros((frames.shape[1], int(graph.metadata["neurons"])))
    with torch.no_grad():
        for t in range(frames.shape[0]):
            snntorch.utils.reset(net)
            (_, membrane), _ = net(torch.from_numpy(frames[t]))
            total += membrane.double().numpy()
    return total


def _norse(graph: nir.NIRGraph, frames: np.ndarray) -> np.ndarray:
    import norse.torch
    import torch

    net = norse.torch.from_nir(graph, dt=1.0)  # its default dt is 0.001
    state = None  # a fresh state: v = 0 for every token (one token per row)
    with torch.no_grad():
        for t in range(frames.shape[0]):
            _, state = net(torch.from_numpy(frames[t]), state)
    return state.state["integrator"][0].v.double().numpy()


def _sinabs(graph: nir.NIRGraph, frames: np.ndarray) -> np.ndarray:
    import sinabs
    import torch

    T, rows, channels = frames.shape
    net = sinabs.from_nir(graph, batch_size=rows)  # squeeze layers: [batch*time, ...]
    batch_major = np.ascontiguousarray(frames.transpose(1, 0, 2)).reshape(rows * T, channels)
    with torch.no_grad():
        net(torch.from_numpy(batch_major))
    return net.integrator.v_mem.double().numpy()


def _spyx(graph: nir.NIRGraph, frames: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp
    import spyx.nir

    _, (_, states) = spyx.nir.from_nir(graph, jnp.asarray(frames), dt=1, return_all_states=True)
    membrane = [s for s in states if s is not None][-1]  # the IF layer's V, [T, rows, N]
    return np.asarray(membrane[-1], dtype=np.float64)


def _rockpool(graph: nir.NIRGraph, frames: np.ndarray) -> np.ndarray:
    # from_nir turns LI into ExpSynTorch (isyn += I; isyn *= exp(-dt/tau), 1 in float32)
    # and Affine into LinearTorch; it takes batch-major [rows, T, C] and returns the
    # synaptic current of every step (and a dict of every node's output). Its state
    # keeps batch row 0 only between calls: one call per token batch, on a fresh module.
    import torch
    from rockpool.nn.modules.torch.nir import from_nir

    net = from_nir(graph)
    batch_major = np.ascontiguousarray(frames.transpose(1, 0, 2))
    with torch.no_grad():
        out, _ = net(torch.from_numpy(batch_major))
    return out[:, -1, :].double().numpy()


_RECIPES: dict[str, Callable[[nir.NIRGraph, np.ndarray], np.ndarray]] = {
    "snntorch": _snntorch,
    "norse": _norse,
    "sinabs": _sinabs,
    "spyx": _spyx,
    "rockpool": _rockpool,
}


def _check(graph: nir.NIRGraph, consumer: str) -> dict[str, Any]:
    if consumer not in CONSUMERS:
        raise SpikecodeError(f"consumer must be one of {', '.join(CONSUMERS)}, not {consumer!r}")
    info = graph_info(graph)
    form = CONSUMERS[consumer]
    if info["integrator"] != form:
        others = [name for name, f in CONSUMERS.items() if f == info["integrator"]]
        raise SpikecodeError(
            f"{consumer} runs the {form} form, this graph has an {info['integrator']} "
            f"integrator (export it with integrator={form!r}, or run it in "
            f"{', '.join(others) or 'simulate_nir'})",
            projection=info["projection"],
        )
    if info["dt"] != 1.0:
        raise SpikecodeError(
            f"the consumer recipes drive the graph at dt = 1; this graph has dt={info['dt']} "
            "(export it with the default dt)",
            projection=info["projection"],
        )
    if consumer in _FLOAT32 or not bool(graph.metadata.get("step_float32_exact", False)):
        message = _float32_message({info["projection"]: graph})
        if message:
            warnings.warn(f"{consumer}: {message}", Float32Warning, stacklevel=4)
    return info


def consumer_membrane(graph: nir.NIRGraph, frames: Any, consumer: str) -> np.ndarray:
    """The integrator's membrane after the last frame, run in ``consumer``'s own importer.

    Parameters
    ----------
    graph
        One projection graph of :func:`spikecode.exporters.nir.nir_graphs` (or read
        back): ``IF`` for snnTorch, Norse, Sinabs and Spyx; ``LI`` for Rockpool.
    frames
        ``[T, rows, channels]`` float32 frames of :func:`spikecode.exporters.nir.nir_frames`
        (one token per row, every token from ``v = 0``).
    consumer
        One of :data:`CONSUMERS`.

    Returns
    -------
    numpy.ndarray
        float64 ``[rows, neurons]``: the membrane as the consumer computed it.

    Raises
    ------
    SpikecodeError
        An unknown or missing consumer, a form it does not run, a ``dt`` other than 1,
        frames of the wrong shape.

    Warns
    -----
    Float32Warning
        When ``consumer`` will round the graph's accumulators (past 2^24).
    """
    info = _check(graph, consumer)
    array = np.asarray(frames, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != int(graph.metadata["input_channels"]):
        raise SpikecodeError(
            f"frames must be [T, rows, {int(graph.metadata['input_channels'])}]",
            shape=array.shape,
            projection=info["projection"],
        )
    _require(consumer)
    with warnings.catch_warnings():  # the consumers' own import-time deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        return _RECIPES[consumer](graph, np.ascontiguousarray(array))


def run_in_consumer(
    source: str | os.PathLike[str] | nir.NIRGraph | NirExport,
    train: SpikeTrain | Mapping[str, SpikeTrain],
    vth: Any,
    *,
    consumer: str,
    projection: str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run exported graphs in a named consumer and apply the host readout.

    The consumer-side counterpart of :func:`spikecode.exporters.nir.simulate_nir`, with
    the same arguments: frames from :func:`~spikecode.exporters.nir.nir_frames`, the
    consumer's own importer driven by its recipe (:func:`consumer_membrane`), then
    :func:`~spikecode.exporters.nir.nir_readout` with the train's zero point.

    Parameters
    ----------
    source
        A graph, a ``.nir`` file or folder from :func:`export_nir`, or a :class:`NirExport`.
    train
        The input train of one projection, or a dict ``name -> train``.
    vth
        The tokens' thresholds (scalar or ``train.shape[:-1]``), or a dict ``name -> vth``.
    consumer
        ``"snntorch"``, ``"norse"``, ``"sinabs"``, ``"spyx"`` (the ``IF`` form) or
        ``"rockpool"`` (the ``LI`` form).
    projection
        Which projection a single train feeds (optional when there is only one).

    Returns
    -------
    numpy.ndarray or dict
        float64 ``[*train.shape[:-1], out]``, or a dict ``name -> output``.

    Raises
    ------
    SpikecodeError
        As :func:`simulate_nir` and :func:`consumer_membrane`.
    """

    def membrane(graph: nir.NIRGraph, info: dict[str, Any], tokens: SpikeTrain) -> np.ndarray:
        return consumer_membrane(graph, nir_frames(tokens, info), consumer)

    return _run_projections(source, train, vth, projection, membrane)
