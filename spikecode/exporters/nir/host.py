"""The host side of an exported graph: input frames, readout, and a faithful simulation.

A consumer runs the graph; the host builds what the graph reads at every step
(:func:`nir_frames`) and turns the integrator's membrane into the layer output
(:func:`nir_readout`). :func:`simulate_nir` does both around an independent run of the
graph through ``nirtorch.nir_to_torch`` with node mappers written from the NIR
definitions, in float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import nir
import numpy as np

from spikecode._validate import to_numpy
from spikecode.encoders.schemes import get_scheme
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError
from spikecode.exporters.nir.graph import NirExport, graph_info, load_nir

__all__ = ["nir_frames", "nir_readout", "simulate_nir"]


def _info(graph: nir.NIRGraph | Mapping[str, Any]) -> dict[str, Any]:
    return graph_info(graph) if isinstance(graph, nir.NIRGraph) else dict(graph)


def _check_train(train: Any, info: dict[str, Any]) -> None:
    label, name = info["label"], info["projection"]
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"expected a SpikeTrain, not {type(train).__name__}", projection=name)
    spec = get_scheme(info["scheme"])
    if train.scheme != spec.name:
        raise SpikecodeError(
            f"the graph was exported for {spec.name} trains, not {train.scheme}",
            file=label,
            projection=name,
        )
    if spec.bitwise and train.bit_order != info["bit_order"]:
        raise SpikecodeError(
            f"the graph was exported for bit order {info['bit_order']}, "
            f"the train has {train.bit_order}",
            file=label,
            projection=name,
        )
    if info["T"] and info["T"] != train.T:
        raise SpikecodeError(
            f"the graph was exported for T={info['T']}, the train has T={train.T}",
            file=label,
            projection=name,
        )
    if train.features != info["in_features"]:
        raise SpikecodeError(
            f"the projection has {info['in_features']} input features, the train {train.features}",
            file=label,
            projection=name,
        )


def nir_frames(
    train: SpikeTrain, graph: nir.NIRGraph | Mapping[str, Any], dtype: Any = np.float32
) -> np.ndarray:
    """The time-major input frames that drive a projection graph with a train.

    Frame ``t`` holds the spikes of step ``t`` laid out as the graph's input expects:
    in port ``t`` (bitwise codes, one port per step) or port 0; as ``w_t · s_t``
    (graded); as ON/OFF halves (``on_off``). Rows are the train's tokens.

    Parameters
    ----------
    train
        The projection's input train (its code, T, bit order and width must match).
    graph
        A projection graph of :func:`spikecode.exporters.nir.nir_graphs` (or its info).
    dtype
        Frame dtype (default float32, what the consumers run in; values are small
        integers, exact in any float type).

    Returns
    -------
    numpy.ndarray
        ``[T, rows, input_channels]``.

    Raises
    ------
    SpikecodeError
        A train that does not match the graph.
    """
    info = _info(graph)
    _check_train(train, info)
    features, ports, halves = info["in_features"], info["ports"], info["halves"]
    dense = train.to_dense().reshape(train.T, train.rows, features)
    frames = np.zeros((train.T, train.rows, ports * halves * features), dtype=dtype)
    steps = train.step_weights
    for t in range(train.T):
        base = (t if ports > 1 else 0) * halves * features
        if info["graded"]:
            frames[t, :, :features] = steps[t] * dense[t]
        elif halves == 2:
            frames[t, :, base : base + features] = dense[t] > 0
            frames[t, :, base + features : base + 2 * features] = dense[t] < 0
        else:
            frames[t, :, base : base + features] = dense[t]
    return frames


def nir_readout(
    membrane: Any,
    vth: Any,
    graph: nir.NIRGraph | Mapping[str, Any],
    zero_point: int = 0,
) -> np.ndarray:
    """The layer output from the integrator's membrane after the last step (host side).

    ``y[o] = Vth · Σ_g σ[o, g] · (v[o·G + g] + z · gain[o, g]) + b[o]`` for integer
    graphs, ``y[o] = Vth · (v[o] + z · gain[o]) + b[o]`` for float graphs (SPEC §4).

    Parameters
    ----------
    membrane
        ``[rows, neurons]`` (or ``[neurons]``): the membrane after step ``T-1``.
    vth
        The tokens' thresholds: a scalar or ``[rows]``.
    graph
        The projection graph (or its info).
    zero_point
        The train's zero point (``train.zero_point``; 0 for the signed codes).

    Returns
    -------
    numpy.ndarray
        float64 ``[rows, out]`` (``[out]`` for a 1-D membrane).
    """
    info = _info(graph)
    v = to_numpy(membrane, "membrane").astype(np.float64)
    single = v.ndim == 1
    v = np.atleast_2d(v)
    if v.ndim != 2 or v.shape[1] != info["neurons"]:
        raise SpikecodeError(
            f"membrane must be [rows, {info['neurons']}]", shape=v.shape, file=info["label"]
        )
    v_th = to_numpy(vth, "vth").astype(np.float64).reshape(-1)
    if v_th.size not in (1, v.shape[0]):
        raise SpikecodeError("vth must be a scalar or one per row", shape=v_th.shape)
    out, groups = info["out_features"], info["scale_groups"]
    gain = info["zero_point_gain"].astype(np.float64)
    if info["weights"] == "int":
        acc = v.reshape(-1, out, groups) + zero_point * gain
        # the order of spike_linear's own float rescale (SPEC §4): same rounding
        y = v_th.reshape(-1, 1) * np.einsum("rgo,og->ro", acc.transpose(0, 2, 1), info["scales"])
    else:
        y = v_th.reshape(-1, 1) * (v + zero_point * gain)
    y = y + info["bias"]
    return y[0] if single else y


# --------------------------------------------------------------------------- simulation


def _node_map(dt: float) -> dict[type, Any]:
    """Mappers from NIR nodes to torch modules that follow the NIR definitions."""
    import torch

    class Affine(torch.nn.Module):
        """NIR ``Affine``: ``y(t) = W x(t) + b``."""

        def __init__(self, node: nir.Affine) -> None:
            super().__init__()
            self.register_buffer("weight", torch.from_numpy(np.asarray(node.weight, np.float64)))
            self.register_buffer("bias", torch.from_numpy(np.asarray(node.bias, np.float64)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight.T + self.bias

    class Integrator(torch.nn.Module):
        """NIR ``I`` (``dv/dt = R I``) over one step of length dt with its input held."""

        def __init__(self, node: nir.I) -> None:
            super().__init__()
            self.register_buffer("gain", torch.from_numpy(dt * np.asarray(node.r, np.float64)))

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
            v = self.gain * x if state is None else state + self.gain * x
            return v, v

    class IntegrateFire(torch.nn.Module):
        """NIR ``IF``: integrate as ``I``; fire when ``v > v_threshold``, then ``v = v_reset``."""

        def __init__(self, node: nir.IF) -> None:
            super().__init__()
            self.register_buffer("gain", torch.from_numpy(dt * np.asarray(node.r, np.float64)))
            self.register_buffer("threshold", torch.from_numpy(np.asarray(node.v_threshold)))
            self.register_buffer("reset", torch.from_numpy(np.asarray(node.v_reset)))

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
            v = self.gain * x if state is None else state + self.gain * x
            spikes = v > self.threshold
            return spikes.to(v.dtype), torch.where(spikes, self.reset, v)

    class LeakyIntegrator(torch.nn.Module):
        """NIR ``LI`` (``tau dv/dt = (v_leak - v) + R I``) over one step, input held.

        Solved exactly: ``v' = v e + (1 - e)(v_leak + R I)``, ``e = exp(-dt/tau)``
        (``1 - e`` as ``-expm1``: no cancellation for a huge tau).
        """

        def __init__(self, node: nir.LI) -> None:
            super().__init__()
            tau = np.asarray(node.tau, np.float64)
            self.register_buffer("decay", torch.from_numpy(np.exp(-dt / tau)))
            self.register_buffer("gain", torch.from_numpy(-np.expm1(-dt / tau)))
            self.register_buffer("r", torch.from_numpy(np.asarray(node.r, np.float64)))
            self.register_buffer("leak", torch.from_numpy(np.asarray(node.v_leak, np.float64)))

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
            drive = self.gain * (self.leak + self.r * x)
            v = drive if state is None else self.decay * state + drive
            return v, v

    return {
        nir.Affine: Affine,
        nir.I: Integrator,
        nir.IF: IntegrateFire,
        nir.LI: LeakyIntegrator,
    }


def _simulate_membrane(graph: nir.NIRGraph, info: dict[str, Any], train: SpikeTrain) -> Any:
    """The integrator's membrane after the last step, by spikecode's float64 simulator."""
    import nirtorch
    import torch

    frames = torch.from_numpy(nir_frames(train, info, dtype=np.float64))
    module = nirtorch.nir_to_torch(graph, _node_map(info["dt"]), dtype=torch.float64)
    state = None
    out = None
    fired = False
    for t in range(train.T):
        out, state = module(frames[t], state)
        fired = fired or bool(out.any()) if info["integrator"] == "IF" else False
    if fired:
        raise SpikecodeError(
            "the IF integrator fired: these inputs exceed the range the graph was exported for",
            file=info["label"],
            projection=info["projection"],
        )
    return (state["integrator"] if info["integrator"] == "IF" else out).numpy()


#: ``membrane(graph, info, train) -> [rows, neurons]``: how one projection is run.
Runner = Callable[[nir.NIRGraph, dict[str, Any], SpikeTrain], Any]


def _one_projection(graph: nir.NIRGraph, train: Any, vth: Any, membrane: Runner) -> np.ndarray:
    info = graph_info(graph)
    _check_train(train, info)
    lead = train.shape[:-1]
    v_th = to_numpy(vth, "vth").astype(np.float64)
    if v_th.ndim and v_th.shape != lead:
        raise SpikecodeError(
            "vth must be a scalar or have shape train.shape[:-1]",
            shape=v_th.shape,
            projection=info["projection"],
        )
    y = nir_readout(membrane(graph, info, train), v_th, info, train.zero_point)
    return y.reshape((*lead, info["out_features"]))


def _select_trains(
    names: list[str],
    train: Any,
    projection: str | None,
    *,
    check_vth: bool = False,
    vth: Any = None,
) -> dict[str, Any]:
    """``name -> train`` for the projections a train (or a dict of trains) feeds.

    Shared by the NIR and Lava hosts so both pick and refuse projections alike. With
    ``check_vth``, a dict of trains also needs a ``vth`` dict with the same keys (checked
    before the names, as the NIR host always did).
    """
    if isinstance(train, Mapping):
        if projection is not None:
            raise SpikecodeError("pass projection only with a single train")
        if check_vth and (not isinstance(vth, Mapping) or set(vth) != set(train)):
            raise SpikecodeError("with a dict of trains, vth must be a dict with the same keys")
        trains = dict(train)
    else:
        if projection is None:
            if len(names) != 1:
                raise SpikecodeError(
                    f"the export has {len(names)} projections; choose one with projection= "
                    f"({', '.join(names)})"
                )
            projection = names[0]
        trains = {projection: train}
    unknown = [name for name in trains if name not in names]
    if unknown:
        raise SpikecodeError(
            f"no projection {', '.join(map(repr, unknown))} in the export; it has: "
            f"{', '.join(names)}"
        )
    return trains


def _run_projections(
    source: Any, train: Any, vth: Any, projection: str | None, membrane: Runner
) -> np.ndarray | dict[str, np.ndarray]:
    """Pick the graphs a train (or a dict of trains) feeds and run each with ``membrane``."""
    export = source if isinstance(source, NirExport) else load_nir(source)
    trains = _select_trains(list(export.graphs), train, projection, check_vth=True, vth=vth)
    if isinstance(train, Mapping):
        return {
            name: _one_projection(export.graphs[name], t, vth[name], membrane)
            for name, t in trains.items()
        }
    ((name, single),) = trains.items()
    return _one_projection(export.graphs[name], single, vth, membrane)


def simulate_nir(
    source: str | os.PathLike[str] | nir.NIRGraph | NirExport,
    train: SpikeTrain | Mapping[str, SpikeTrain],
    vth: Any,
    *,
    projection: str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run exported graphs step by step on spike trains and apply the host readout.

    Each graph is turned into torch modules by ``nirtorch.nir_to_torch`` with mappers
    that follow the NIR definitions of ``Affine``, ``I`` and ``IF`` (float64), driven by
    :func:`nir_frames` from ``v = 0``, and read out by :func:`nir_readout`. This is an
    independent check of :func:`spikecode.spike_linear`, which it matches to float64
    rounding for every form.

    Parameters
    ----------
    source
        A graph, a ``.nir`` file or folder from :func:`export_nir`, or a :class:`NirExport`.
    train
        The input train of one projection, or a dict ``name -> train``.
    vth
        The tokens' thresholds (scalar or ``train.shape[:-1]``), or a dict ``name -> vth``.
    projection
        Which projection a single train feeds (optional when there is only one).

    Returns
    -------
    numpy.ndarray or dict
        float64 ``[*train.shape[:-1], out]``, or a dict ``name -> output``.

    Raises
    ------
    SpikecodeError
        Not a spikecode export, an unknown projection, a train whose code, T, bit order
        or width does not match, a bad ``vth``, or an IF integrator that fired.
    """
    return _run_projections(source, train, vth, projection, _simulate_membrane)
