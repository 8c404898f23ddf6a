"""Spike-driven projections as NIR graphs, and a faithful NIR simulation of them.

SPEC §4 writes a spike-driven projection as::

    y = Vth · Σ_t w_t · (W s_t) + b,      W = σ ⊙ W_q  (per row or per group of columns)

NIR (the Neuromorphic Intermediate Representation, package ``nir``) has static
parameters and continuous-time neurons, while ``Vth`` changes with every token and
the step weights ``w_t`` of the bitwise codes change with every step. This module fixes
how a graph represents each part (see also the README):

**Nodes of one projection** ``<name>``::

    <name>.input  --->  <name>.synapse  --->  <name>.integrator  --->  <name>.output
    Input [P·in]        Linear [out, P·in]    I (or IF) [out]          Output [out]

* **Ports.** The input has ``P`` ports of ``in`` channels; channel ``p·in + i`` is port
  ``p``, feature ``i``. Codes whose step weights are all 1 (``binary``, ``ternary``)
  have one port (``P = 1``) that carries the spike frame ``s_t`` at every step ``t``.
  The bitwise codes have one port per step (``P = T``): at step ``t`` the frame ``s_t``
  arrives on port ``t`` and the other ports are silent.
* **Synapse.** The weight of port ``p`` is ``w_p · σ ⊙ W_q`` (float64, exact: an int8
  times a float32 scale times a power of two). One Linear over all ports is the sum of
  ``P`` parallel branches "port p → Linear(w_p σ W_q)" into the same integrator, so the
  bit weights (shifts) are folded into the static weights and every step still only
  adds the weight columns its spikes select. No recurrence, no leak.
* **Integrator.** ``I`` (default): NIR's pure integrator ``dv/dt = R·I``, whose output
  is ``v``. ``IF`` (option, for consumers that do not read ``I``): the same integrator
  with a threshold no input of the code can reach (so it never fires and never resets);
  the layer output is then its membrane ``v``, not its (always silent) spike output.
* **Discretisation.** A step lasts ``dt`` (metadata ``dt``, default 1) and its frame is
  held constant over it, so ``v[t] = v[t-1] + dt·r·I[t]`` with ``v[-1] = 0`` — exact
  for a leak-free integrator, not an approximation — and ``r = 1/dt`` makes each step
  add its input once. One token is one run of ``T`` steps from ``v = 0``.
* **Host.** What is data rather than a parameter stays on the host, after the last
  step: ``y = Vth · (v[T-1] + zero_point · zero_point_gain) + bias``. ``Vth`` is the
  token's adaptive threshold (SPEC §2) and ``zero_point`` the train's shift (SPEC §3,
  unsigned codes only); ``bias`` and ``zero_point_gain = Σ_i σ W_q[:, i]`` are stored
  in the integrator's node metadata.

**What is refused** rather than exported wrong: a bitwise code without a fixed ``T``
(its ports are its steps); an ``IF`` integrator without a fixed ``T`` (no threshold is out
of reach for every T) or whose threshold overflows float32; in :func:`simulate_nir`, a
train whose code, ``T``, bit order or width differs from the graph's. All five codes
are exportable: every step weight is a static number folded into a port's weights.

**Several projections** (a block, a model) are one graph holding the four nodes of each
projection side by side, each with its own ``Input``/``Output``; what runs between
projections (norms, attention, SwiGLU) is not spike-driven and stays outside the graph.

**Graph metadata**: ``format``, ``format_version``, ``spikecode_version``, ``scheme``,
``T`` (0: any number of steps), ``bit_order``, ``step_weights`` (``w_p`` of each port),
``ports``, ``input_layout``, ``integrator``, ``dt``, ``r``, ``discretisation``,
``readout``, ``vth``, ``zero_point``, ``projections`` (names, in order).

:func:`simulate_nir` runs such a graph step by step through ``nirtorch.nir_to_torch``
with its own node mappers written from the NIR definitions (nirtorch's default
``Affine`` mapper leaves the bias random, and snnTorch's importer turns ``IF`` into a
leaky, soft-reset neuron — neither is used).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import nir
import numpy as np

from spikecode._validate import to_numpy
from spikecode.encoders.schemes import check_bit_order, get_scheme
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import Remedy, SpikecodeError
from spikecode.exporters.registry import register_exporter
from spikecode.io import atomic_write
from spikecode.linear import _scales_2d

__all__ = [
    "INTEGRATORS",
    "NIR_FORMAT",
    "NIR_FORMAT_VERSION",
    "export_nir",
    "nir_graph",
    "simulate_nir",
]

NIR_FORMAT = "spikecode.nir"
NIR_FORMAT_VERSION = 1
#: The integrator nodes a graph can use (see the module docstring).
INTEGRATORS: tuple[str, ...] = ("I", "IF")
#: Name given to a projection passed on its own (not in a dict).
DEFAULT_NAME = "projection"
_ROLES = ("input", "synapse", "integrator", "output")
# The IF threshold sits this far above the largest |v| the code can reach, so that a
# consumer computing in float32 (weights rounded by 2**-24) still never reaches it.
_THRESHOLD_MARGIN = 2.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_INPUT_LAYOUT = (
    "channel p*in_features + i is feature i of port p; ports = 1: the spike frame s_t "
    "enters port 0 at every step t; ports = T: s_t enters port t at step t, the other "
    "ports are silent"
)
_DISCRETISATION = (
    "a step lasts dt and holds its input constant: v[t] = v[t-1] + dt*r*I[t], v[-1] = 0 "
    "(exact for a leak-free integrator); r = 1/dt; one token is one run of T steps "
    "from v = 0; the layer output is read after the last step"
)
_READOUT = "y = vth * (v[T-1] + zero_point * zero_point_gain) + bias"
_VTH_NOTE = (
    "the per-token adaptive threshold (SPEC §2) is data, not a parameter: the host "
    "multiplies the integrator value by it after the last step"
)
_ZERO_POINT_NOTE = (
    "the zero point of an unsigned-code train (SPEC §3) is data: the host adds "
    "zero_point * zero_point_gain to the integrator value before the Vth multiply"
)


# --------------------------------------------------------------------------- projections


def _torch_module(value: Any, kind: str) -> bool:
    """Whether ``value`` is a ``torch.nn.<kind>`` (without importing torch if it is not)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, getattr(torch.nn, kind))


def _is_projection_module(value: Any) -> bool:
    from spikecode.nn import W8ASpikeLinear

    return _torch_module(value, "Linear") or isinstance(value, W8ASpikeLinear)


def _check_name(name: Any) -> str:
    # HDF5 reads "/" in a node name as a path separator; nir.write would nest groups.
    if not isinstance(name, str) or not name or "/" in name:
        raise SpikecodeError(
            f"projection names must be non-empty strings without '/', not {name!r}"
        )
    return name


def _from_linear(linear: Any, group_size: int | None) -> tuple[Any, Any, Any]:
    from spikecode.nn.functional import quantize_weight_int8

    weight_q, scales = quantize_weight_int8(linear.weight.detach(), group_size)
    bias = None if linear.bias is None else linear.bias.detach()
    return weight_q, scales, bias


def _projection(name: str, value: Any, group_size: int | None) -> dict[str, Any]:
    """Validate one projection: int8 weight, float64 effective weight, bias, groups."""
    if _torch_module(value, "Module"):
        from spikecode.nn import W8ASpikeLinear

        if isinstance(value, W8ASpikeLinear):  # already INT8: export its own weights
            value = (value.weight_q, value.scales, value.bias)
        elif _torch_module(value, "Linear"):
            value = _from_linear(value, group_size)
    if not isinstance(value, tuple | list) or len(value) not in (2, 3):
        raise SpikecodeError(
            "a projection is (weight_q, scales), (weight_q, scales, bias) or a "
            f"torch.nn.Linear, not {type(value).__name__}",
            projection=name,
        )
    weight_q, scales, bias = (*value, None) if len(value) == 2 else value
    w = to_numpy(weight_q, "weight_q")
    if w.dtype != np.int8 or w.ndim != 2 or w.size == 0:
        raise SpikecodeError(
            "weight_q must be a non-empty 2-D int8 array [out, in]",
            projection=name,
            shape=w.shape,
            dtype=w.dtype,
        )
    out_features, in_features = w.shape
    try:
        s = _scales_2d(scales, out_features, in_features)
    except SpikecodeError as err:
        raise SpikecodeError(err.message, projection=name, **err.context) from None
    groups = s.shape[1]
    # σ ⊙ W_q per group of columns: an int8 times a float32 is exact in float64.
    effective = (w.astype(np.float64).reshape(out_features, groups, -1) * s[:, :, None]).reshape(
        out_features, in_features
    )
    if bias is None:
        b = np.zeros(out_features, dtype=np.float64)
    else:
        b = to_numpy(bias, "bias").astype(np.float64)
        if b.shape != (out_features,) or not np.all(np.isfinite(b)):
            raise SpikecodeError(
                f"bias must be a finite array of shape [{out_features}]",
                projection=name,
                shape=b.shape,
            )
    return {"effective": effective, "bias": b, "groups": groups}


def _projections(projections: Any, group_size: int | None) -> dict[str, dict[str, Any]]:
    if isinstance(projections, Mapping):
        items = list(projections.items())
    elif _torch_module(projections, "Module") and not _is_projection_module(projections):
        from spikecode.models.capture import list_linear_layers
        from spikecode.nn import W8ASpikeLinear

        layers = list_linear_layers(projections, module_types=(W8ASpikeLinear,))
        items = [(name, projections.get_submodule(name)) for name, _, _ in layers]
    else:
        items = [(DEFAULT_NAME, projections)]
    if not items:
        raise SpikecodeError("no projection to export")
    return {_check_name(name): _projection(name, value, group_size) for name, value in items}


# --------------------------------------------------------------------------- graph


def _code(scheme: str, T: int | None, bit_order: str) -> tuple[Any, int, np.ndarray]:
    """The scheme, the fixed T (0 = any) and the step weight of each input port."""
    spec = get_scheme(scheme)
    check_bit_order(bit_order)
    if T is None:
        if spec.bitwise:
            raise SpikecodeError(
                f"{spec.name} weights each step by its bit, so the graph needs a fixed T "
                "(one input port per step); pass T",
                scheme=spec.name,
            )
        return spec, 0, np.ones(1, dtype=np.int64)
    T = spec.check_T(T)
    weights = spec.step_weights(T, bit_order) if spec.bitwise else np.ones(1, dtype=np.int64)
    return spec, T, weights


def _if_threshold(spec: Any, T: int, bit_order: str, effective: np.ndarray) -> float:
    """A threshold above every |v| a T-step train of the code can drive (see module doc)."""
    if T == 0:
        raise SpikecodeError(
            "an IF integrator needs a fixed T to place a threshold no input reaches",
            remedies=(Remedy("T", "N"), Remedy("integrator", "I")),
            scheme=spec.name,
        )
    # |v[t]| <= Σ_t |w_t| · max_o Σ_i |W[o, i]| at every step, spikes being in {-1, 0, 1}.
    reach = float(np.abs(spec.step_weights(T, bit_order)).sum())
    bound = reach * float(np.abs(effective).sum(axis=1).max())
    threshold = _THRESHOLD_MARGIN * bound + 1.0
    if not threshold < _FLOAT32_MAX:
        raise SpikecodeError(
            "the IF threshold these weights need does not fit float32",
            remedies=(Remedy("integrator", "I"),),
            scheme=spec.name,
            T=T,
        )
    return threshold


def nir_graph(
    projections: Any,
    *,
    scheme: str,
    T: int | None = None,
    bit_order: str = "msb",
    integrator: Literal["I", "IF"] = "I",
    dt: float = 1.0,
    group_size: int | None = None,
) -> nir.NIRGraph:
    """Build the NIR graph of one or more spike-driven projections (SPEC §4).

    The representation (ports, synapse, integrator, discretisation, host readout,
    metadata) is described in the module docstring.

    Parameters
    ----------
    projections
        One projection or a dict ``name -> projection`` (a block, a model). A projection
        is ``(weight_q, scales)`` or ``(weight_q, scales, bias)`` — int8 ``[out, in]``,
        scales ``[out]``, ``[out, groups]`` or ``[out, groups, 1]``, float bias
        ``[out]`` — or a :class:`spikecode.nn.W8ASpikeLinear` (its own INT8 weights), or
        a ``torch.nn.Linear``, quantized to symmetric INT8 per SPEC §4
        (:func:`spikecode.nn.functional.quantize_weight_int8`). Any other
        ``torch.nn.Module`` stands for every projection spike coding applies to (its
        ``Linear`` and ``W8ASpikeLinear`` layers but the LM head, SPEC §1,
        :func:`spikecode.models.capture.list_linear_layers`). A projection passed alone is
        named ``"projection"``.
    scheme
        The code the trains will use (one of :data:`spikecode.SCHEMES`).
    T
        Number of steps. Required for the bitwise codes (one port per step); for
        ``binary``/``ternary`` ``None`` makes a graph that runs for any T.
    bit_order
        ``"msb"`` or ``"lsb"``: which step carries which bit (bitwise codes).
    integrator
        ``"I"`` (NIR's integrator, exact semantics) or ``"IF"`` (an integrate-and-fire
        neuron that never fires; read by more consumers, needs a fixed T).
    dt
        Step length the graph's ``r = 1/dt`` is set for (recorded as metadata ``dt``).
    group_size
        Input columns per scale when quantizing ``torch.nn.Linear`` weights (``None``:
        one scale per row; the release uses 128).

    Returns
    -------
    nir.NIRGraph
        Nodes ``<name>.input``, ``<name>.synapse``, ``<name>.integrator`` and
        ``<name>.output`` per projection.

    Raises
    ------
    SpikecodeError
        Bad weights, scales, bias or names; an unknown scheme; a bitwise code without
        T; an ``IF`` integrator without T or whose threshold overflows float32.
    """
    from spikecode._version import __version__

    spec, T, weights = _code(scheme, T, bit_order)
    if integrator not in INTEGRATORS:
        raise SpikecodeError(
            f"integrator must be one of {', '.join(INTEGRATORS)}, not {integrator!r}"
        )
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise SpikecodeError(f"dt must be finite and > 0, not {dt!r}")
    r = 1.0 / dt
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    resolved = _projections(projections, group_size)
    for name, proj in resolved.items():
        effective = proj["effective"]
        out_features, in_features = effective.shape
        synapse = np.concatenate([float(w) * effective for w in weights], axis=1)
        readout = {
            "projection": name,
            "bias": proj["bias"],
            "zero_point_gain": effective.sum(axis=1),
            "in_features": in_features,
            "out_features": out_features,
            "scale_groups": proj["groups"],
            "readout": _READOUT,
        }
        ones = np.ones(out_features, dtype=np.float64)
        if integrator == "I":
            neuron: nir.NIRNode = nir.I(r=r * ones, metadata=readout)
        else:
            threshold = _if_threshold(spec, T, bit_order, effective)
            neuron = nir.IF(
                r=r * ones,
                v_threshold=threshold * ones,
                v_reset=np.zeros(out_features, dtype=np.float64),
                metadata=readout,
            )
        nodes[f"{name}.input"] = nir.Input(input_type=np.array([synapse.shape[1]]))
        nodes[f"{name}.synapse"] = nir.Linear(weight=synapse)
        nodes[f"{name}.integrator"] = neuron
        nodes[f"{name}.output"] = nir.Output(output_type=np.array([out_features]))
        edges += [
            (f"{name}.input", f"{name}.synapse"),
            (f"{name}.synapse", f"{name}.integrator"),
            (f"{name}.integrator", f"{name}.output"),
        ]
    metadata = {
        "format": NIR_FORMAT,
        "format_version": NIR_FORMAT_VERSION,
        "spikecode_version": __version__,
        "scheme": spec.name,
        "T": T,
        "bit_order": bit_order,
        "step_weights": weights,
        "ports": len(weights),
        "input_layout": _INPUT_LAYOUT,
        "integrator": integrator,
        "dt": dt,
        "r": r,
        "discretisation": _DISCRETISATION,
        "readout": _READOUT,
        "vth": _VTH_NOTE,
        "zero_point": _ZERO_POINT_NOTE,
        "projections": list(resolved),
    }
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    except (ValueError, AssertionError) as err:  # nir's own type checks
        raise SpikecodeError(f"NIR refused the graph: {err}") from None


@register_exporter("nir")
def export_nir(
    projections: Any,
    path: str | os.PathLike[str],
    *,
    scheme: str,
    T: int | None = None,
    bit_order: str = "msb",
    integrator: Literal["I", "IF"] = "I",
    dt: float = 1.0,
    group_size: int | None = None,
) -> Path:
    """Write the NIR graph of :func:`nir_graph` to ``path`` with ``nir.write`` (atomically).

    Registered as the ``"nir"`` exporter (:func:`spikecode.exporters.get_exporter`):
    the object to export first, then the path. The other parameters are those of
    :func:`nir_graph`. The file is HDF5 (NIR's format; the usual
    suffix is ``.nir``); it appears only once completely written.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    SpikecodeError
        As :func:`nir_graph`, or an unwritable path (no file is left behind).
    """
    graph = nir_graph(
        projections,
        scheme=scheme,
        T=T,
        bit_order=bit_order,
        integrator=integrator,
        dt=dt,
        group_size=group_size,
    )
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            nir.write(tmp, graph)
    except OSError as err:  # a full disk, or a folder in the way of the final rename
        raise SpikecodeError(f"cannot write {path}: {err}", file=str(path)) from None
    return path


# --------------------------------------------------------------------------- reading


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_graph(source: Any) -> tuple[nir.NIRGraph, dict[str, Any], str]:
    """The graph, its spikecode metadata (validated) and a label for error messages."""
    if isinstance(source, nir.NIRGraph):
        graph, label = source, "graph"
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise SpikecodeError("no such file", file=label)
        try:
            graph = nir.read(path)
        except Exception as err:  # h5py, nir's asserts and KeyErrors all mean "not NIR"
            raise SpikecodeError(f"cannot read {path.name} as NIR: {err}", file=label) from None
        if not isinstance(graph, nir.NIRGraph):
            raise SpikecodeError(f"{path.name} holds no NIR graph", file=label)
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if _text(meta.get("format", "")) != NIR_FORMAT:
        raise SpikecodeError("not a spikecode NIR export (no format metadata)", file=label)
    version = int(meta.get("format_version", -1))
    if version != NIR_FORMAT_VERSION:
        raise SpikecodeError(
            f"spikecode NIR format version {version} is not supported "
            f"(expected {NIR_FORMAT_VERSION})",
            file=label,
        )
    required = ("scheme", "T", "bit_order", "step_weights", "ports", "dt", "projections")
    missing = [key for key in required if key not in meta]
    if missing:
        raise SpikecodeError(f"missing graph metadata: {', '.join(missing)}", file=label)
    info = {
        "scheme": _text(meta["scheme"]),
        "T": int(meta["T"]),
        "bit_order": _text(meta["bit_order"]),
        "ports": int(meta["ports"]),
        "dt": float(meta["dt"]),
        "projections": [_text(n) for n in np.atleast_1d(meta["projections"])],
    }
    return graph, info, label


def _projection_graph(
    graph: nir.NIRGraph, name: str, label: str
) -> tuple[nir.NIRGraph, nir.NIRNode]:
    """The projection's four nodes as a standalone graph with plain role names."""
    renamed = {f"{name}.{role}": role for role in _ROLES}
    missing = [node for node in renamed if node not in graph.nodes]
    if missing:
        raise SpikecodeError(
            f"the graph lacks node(s) {', '.join(missing)}", file=label, projection=name
        )
    nodes = {role: graph.nodes[node] for node, role in renamed.items()}
    edges = [(renamed[a], renamed[b]) for a, b in graph.edges if a in renamed and b in renamed]
    if not isinstance(nodes["integrator"], nir.I | nir.IF):
        raise SpikecodeError(
            f"integrator node is {type(nodes['integrator']).__name__}, not I or IF",
            file=label,
            projection=name,
        )
    try:
        sub = nir.NIRGraph(nodes=nodes, edges=edges, metadata={})
    except (ValueError, AssertionError) as err:
        raise SpikecodeError(f"malformed projection graph: {err}", file=label) from None
    return sub, nodes["integrator"]


# --------------------------------------------------------------------------- simulation


def _node_map(dt: float) -> dict[type, Any]:
    """Mappers from NIR nodes to torch modules that follow the NIR definitions."""
    import torch

    class Linear(torch.nn.Module):
        """NIR ``Linear``: ``y(t) = W x(t)``."""

        def __init__(self, node: nir.Linear) -> None:
            super().__init__()
            self.register_buffer("weight", torch.from_numpy(np.asarray(node.weight)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight.T

    class Integrator(torch.nn.Module):
        """NIR ``I`` (``dv/dt = R I``) over one step of length dt with its input held."""

        def __init__(self, node: nir.I) -> None:
            super().__init__()
            self.register_buffer("gain", torch.from_numpy(dt * np.asarray(node.r)))

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
            v = self.gain * x if state is None else state + self.gain * x
            return v, v

    class IntegrateFire(torch.nn.Module):
        """NIR ``IF``: integrate as ``I``; fire when ``v > v_threshold``, then ``v = v_reset``."""

        def __init__(self, node: nir.IF) -> None:
            super().__init__()
            self.register_buffer("gain", torch.from_numpy(dt * np.asarray(node.r)))
            self.register_buffer("threshold", torch.from_numpy(np.asarray(node.v_threshold)))
            self.register_buffer("reset", torch.from_numpy(np.asarray(node.v_reset)))

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
            v = self.gain * x if state is None else state + self.gain * x
            spikes = v > self.threshold
            return spikes.to(v.dtype), torch.where(spikes, self.reset, v)

    return {nir.Linear: Linear, nir.I: Integrator, nir.IF: IntegrateFire}


def _simulate_one(
    graph: nir.NIRGraph, info: dict[str, Any], label: str, name: str, train: Any, vth: Any
) -> np.ndarray:
    import nirtorch
    import torch

    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(
            f"simulate_nir expects a SpikeTrain, not {type(train).__name__}", projection=name
        )
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
    ports = info["ports"]
    if ports not in (1, train.T):
        raise SpikecodeError(
            f"the graph has {ports} input ports; expected 1 or T={train.T}", file=label
        )
    sub, neuron = _projection_graph(graph, name, label)
    meta = neuron.metadata
    try:
        in_features = int(meta["in_features"])
        bias = np.asarray(meta["bias"], dtype=np.float64)
        gain = np.asarray(meta["zero_point_gain"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise SpikecodeError(
            "the integrator node lacks its readout metadata", file=label, projection=name
        ) from None
    if train.features != in_features:
        raise SpikecodeError(
            f"the projection has {in_features} input features, the train {train.features}",
            file=label,
            projection=name,
        )
    lead = train.shape[:-1]
    v_th = to_numpy(vth, "vth").astype(np.float64)
    if v_th.ndim == 0:
        v_th = np.full(lead, float(v_th))
    elif v_th.shape != lead:
        raise SpikecodeError(
            "vth must be a scalar or have shape train.shape[:-1]",
            shape=v_th.shape,
            projection=name,
        )

    module = nirtorch.nir_to_torch(sub, _node_map(info["dt"]), dtype=torch.float64)
    frames = torch.from_numpy(train.to_dense().reshape(train.T, train.rows, in_features))
    state = None
    out = None
    for t in range(train.T):
        x = torch.zeros((train.rows, ports, in_features), dtype=torch.float64)
        x[:, t if ports > 1 else 0] = frames[t]
        out, state = module(x.reshape(train.rows, ports * in_features), state)
    if isinstance(neuron, nir.IF):
        if bool(out.any()):
            raise SpikecodeError(
                "the IF integrator fired: these inputs exceed the range the graph was exported for",
                file=label,
                projection=name,
            )
        out = state["integrator"]
    v = out.numpy()
    y = v_th.reshape(-1, 1) * (v + train.zero_point * gain) + bias
    return y.reshape((*lead, y.shape[-1]))


def simulate_nir(
    source: str | os.PathLike[str] | nir.NIRGraph,
    train: SpikeTrain | Mapping[str, SpikeTrain],
    vth: Any,
    *,
    projection: str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run an exported graph step by step on spike trains and apply the host readout.

    The graph (or the file, read with ``nir.read``) is turned into torch modules by
    ``nirtorch.nir_to_torch`` with mappers that follow the NIR definitions of
    ``Linear``, ``I`` and ``IF`` (float64); the dense frames ``train.to_dense()`` enter
    the input ports one step at a time; after step ``T-1`` the host computes
    ``y = Vth · (v + zero_point · zero_point_gain) + bias`` (module docstring). This is
    an independent check of :func:`spikecode.spike_linear`, which it matches to float
    rounding.

    Parameters
    ----------
    source
        A graph from :func:`nir_graph` or a file from :func:`export_nir`.
    train
        The input train of one projection, or a dict ``name -> train``.
    vth
        Thresholds of the train's tokens (scalar or ``train.shape[:-1]``), or a dict
        ``name -> vth`` matching a dict of trains.
    projection
        Which projection a single train feeds (optional when the graph has only one).

    Returns
    -------
    numpy.ndarray or dict
        float64 ``[*train.shape[:-1], out]``, or a dict ``name -> output``.

    Raises
    ------
    SpikecodeError
        Not a spikecode NIR graph, unknown projection, a train whose code, T, bit order
        or width does not match the graph, or a bad ``vth``.
    """
    graph, info, label = _read_graph(source)
    names = info["projections"]
    if isinstance(train, Mapping):
        if projection is not None:
            raise SpikecodeError("pass projection only with a single train")
        if not isinstance(vth, Mapping) or set(vth) != set(train):
            raise SpikecodeError("with a dict of trains, vth must be a dict with the same keys")
        unknown = [name for name in train if name not in names]
        if unknown:
            raise SpikecodeError(
                f"no projection {', '.join(map(repr, unknown))} in the graph; it has: "
                f"{', '.join(names)}",
                file=label,
            )
        return {
            name: _simulate_one(graph, info, label, name, t, vth[name]) for name, t in train.items()
        }
    if projection is None:
        if len(names) != 1:
            raise SpikecodeError(
                f"the graph has {len(names)} projections; choose one with projection= "
                f"({', '.join(names)})",
                file=label,
            )
        projection = names[0]
    if projection not in names:
        raise SpikecodeError(
            f"no projection {projection!r} in the graph; it has: {', '.join(names)}",
            file=label,
        )
    return _simulate_one(graph, info, label, projection, train, vth)
