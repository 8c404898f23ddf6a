"""Building, writing and reading the per-projection NIR graphs (see the package docstring)."""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nir
import numpy as np

from spikecode._validate import as_path, check_hdf5_sizes, to_numpy
from spikecode.encoders.schemes import check_bit_order, get_scheme
from spikecode.errors import Remedy, SpikecodeError
from spikecode.exporters.nir.reading import (
    check_graph_file,
    index_entries,
    meta_array,
    meta_bool,
    meta_float,
    meta_int,
    meta_text,
)
from spikecode.exporters.registry import register_exporter
from spikecode.io import export_listing, path_kind, read_json, write_export
from spikecode.linear import _scales_2d

__all__ = [
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INTEGRATORS",
    "LI_TAU",
    "NIR_FORMAT",
    "NIR_FORMAT_VERSION",
    "WEIGHTS",
    "Float32Warning",
    "NirExport",
    "export_nir",
    "load_nir",
    "nir_graph",
    "nir_graphs",
]

NIR_FORMAT = "spikecode.nir"
#: Version 2: one graph per projection, integer weights, IF integrator by default.
NIR_FORMAT_VERSION = 2
INDEX_FORMAT = "spikecode.nir-index"
#: The index a folder export holds beside its ``<projection>.nir`` files.
INDEX_FILE = "index.json"
#: The integrator nodes a graph can use; the first is the default. ``IF`` is the form
#: snnTorch, Norse, Sinabs and Spyx run; ``LI`` (an infinite-tau leaky integrator) is
#: Rockpool's, which has no IF conversion (docs/export-consumers.rst).
INTEGRATORS: tuple[str, ...] = ("IF", "LI")
#: The ``tau`` of the ``LI`` integrator: the largest int32, because Rockpool casts tau to
#: int32. Its decay per step, exp(-dt/tau) with dt = 1, rounds to 1 in float32.
LI_TAU = 2**31 - 1
# Integrators spikecode wrote once and no longer writes, with the reason (read still).
_RETIRED = {
    "I": "integrator 'I' is no longer written: no consumer runs NIR's I (snnTorch and "
    "Rockpool refuse it, Norse and Sinabs drop the node without an error); IF runs in "
    "snnTorch, Norse, Sinabs and Spyx, LI in Rockpool",
}
# Consumers that hold the membrane in float32: they round accumulators past 2^24.
_FLOAT32_MEMBRANE = ("Norse", "Spyx", "Rockpool")
#: The weight forms; the first is the default.
WEIGHTS: tuple[str, ...] = ("int", "float")
#: Name given to a projection passed on its own (not in a dict).
DEFAULT_NAME = "projection"
ROLES = ("input", "synapse", "integrator", "output")
EDGES = [("input", "synapse"), ("synapse", "integrator"), ("integrator", "output")]
# Larger synapses are refused rather than allocated (2**28 entries: 1 GiB as float32);
# the message names the forms that shrink them (graded: no T copies; float: no G copies).
MAX_SYNAPSE_ENTRIES = 2**28
# Integers up to 2**24 are exact in float32, the precision every consumer runs in.
FLOAT32_EXACT = 2**24

_INPUT_LAYOUT = (
    "channel (p*H + h)*in + i is feature i of port p, half h; ports = T (bitwise, not "
    "graded): the spikes of step t enter port t, the other ports are silent; ports = 1: "
    "every step enters port 0 (graded: payload w_t * s_t); halves = 2 (on_off): h = 0 "
    "carries s = +1 as 1, h = 1 carries s = -1 as 1"
)
_DRIVE = (
    "time-major frames [T, batch, channels], one token per batch row; start every token "
    "from v = 0 (reset the integrator between tokens); read the membrane v after step T-1"
)
_READOUT = {
    "int": "y[o] = vth * sum_g scales[o, g] * (v[o*G + g] + zero_point * zero_point_gain[o, g])"
    " + bias[o]",
    "float": "y[o] = vth * (v[o] + zero_point * zero_point_gain[o]) + bias[o]",
}
_DISCRETISATION = {
    "IF": "a step lasts dt and holds its input: v[t] = v[t-1] + dt*r*I[t], v[-1] = 0 (exact "
    "for a leak-free integrator); r = 1/dt; the IF threshold is never reached",
    "LI": "a step lasts dt and holds its input: v[t] = v[t-1] + I[t] with the decay "
    "exp(-dt/tau) of tau = 2^31 - 1, which rounds to 1 in float32 (Rockpool's ExpSynTorch); "
    "r = tau/dt, v_leak = 0",
}


class Float32Warning(UserWarning):
    """An exported graph whose accumulators a float32 consumer cannot hold exactly.

    Issued by :func:`nir_graphs` (and so :func:`export_nir` and ``spikecode export nir``)
    when a projection's ``accumulator_bound`` passes 2^24 (``float32_exact`` false):
    Norse, Spyx and Rockpool keep the membrane in float32 and round it; Sinabs and
    snnTorch's per-step recipe stay exact while one step's sum fits 2^24 (the message
    names the consumers affected).
    """


# --------------------------------------------------------------------------- projections


def _torch_module(value: Any, kind: str) -> bool:
    """Whether ``value`` is a ``torch.nn.<kind>`` (without importing torch if it is not)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, getattr(torch.nn, kind))


def _is_projection_module(value: Any) -> bool:
    from spikecode.nn import W8ASpikeLinear

    return _torch_module(value, "Linear") or isinstance(value, W8ASpikeLinear)


def _check_name(name: Any) -> str:
    # The name becomes a file name (<name>.nir) and an HDF5-free label: no separators.
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise SpikecodeError(
            f"projection names must be non-empty strings without '/', '\\' or NUL, not {name!r}"
        )
    return name


def _from_linear(linear: Any, group_size: int | None) -> tuple[Any, Any, Any]:
    from spikecode.nn.functional import quantize_weight_int8

    weight_q, scales = quantize_weight_int8(linear.weight.detach(), group_size)
    bias = None if linear.bias is None else linear.bias.detach()
    return weight_q, scales, bias


def _projection(name: str, value: Any, group_size: int | None) -> dict[str, Any]:
    """Validate one projection: int8 weight, scales [out, groups], float64 bias."""
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
    return {"weight_q": w, "scales": s, "bias": b}


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


# --------------------------------------------------------------------------- the form


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise SpikecodeError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _form(
    scheme: str,
    T: int | None,
    bit_order: str,
    integrator: str,
    weights: str,
    graded: bool,
    on_off: bool,
    dt: float,
) -> dict[str, Any]:
    """The code and graph form every projection of one export shares (graph metadata)."""
    spec = get_scheme(scheme)
    check_bit_order(bit_order)
    if integrator in _RETIRED:
        raise SpikecodeError(
            _RETIRED[integrator],
            remedies=(Remedy("integrator", "IF"), Remedy("integrator", "LI")),
        )
    integrator = _choice(integrator, INTEGRATORS, "integrator")
    weights = _choice(weights, WEIGHTS, "weights")
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise SpikecodeError(f"dt must be finite and > 0, not {dt!r}")
    if T is None:
        if spec.bitwise:
            raise SpikecodeError(
                f"{spec.name} weights each step by its bit, so the graph needs a fixed T",
                remedies=(Remedy("T", "N"),),
                scheme=spec.name,
            )
        raise SpikecodeError(
            "the graph needs a fixed T: the IF threshold, the accumulator width and the "
            "float32 range all depend on it",
            remedies=(Remedy("T", "N"),),
            scheme=spec.name,
        )
    T = spec.check_T(T)
    steps = spec.step_weights(T, bit_order)
    if on_off and (graded or not spec.signed):
        raise SpikecodeError(
            "on_off splits the -1 spikes of a signed code (ternary, bitwise-bidirectional) "
            "into a second input half so that only 0/1 spikes travel; "
            + ("graded payloads are not 0/1 spikes" if graded else f"{spec.name} has none"),
            scheme=spec.name,
        )
    ports = T if spec.bitwise and not graded else 1
    return {
        "format": NIR_FORMAT,
        "format_version": NIR_FORMAT_VERSION,
        "scheme": spec.name,
        "T": T,
        "bit_order": bit_order,
        "step_weights": steps,
        "port_weights": steps if ports > 1 else np.ones(1, dtype=np.int64),
        "ports": ports,
        "halves": 2 if on_off else 1,
        "graded": bool(graded),
        "on_off": bool(on_off),
        "weights": weights,
        "integrator": integrator,
        "dt": dt,
        # a step adds dt * r * I (IF) or dt * r / tau * I (LI): exactly I
        "r": 1.0 / dt if integrator == "IF" else LI_TAU / dt,
    }


def _int_dtype(largest: int) -> np.dtype:
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise SpikecodeError("integer weights overflow int64")  # T is at most 62: unreachable


def _power_above(bound: float) -> float:
    """The smallest power of two strictly above ``2 * bound`` (exact in float32)."""
    exponent = math.frexp(max(float(bound), 0.5))[1] + 1
    if exponent > 127:
        raise SpikecodeError(
            "the IF threshold these weights need does not fit float32",
            remedies=(Remedy("integrator", "LI"),),
        )
    return float(2.0**exponent)


def _graph(name: str, proj: dict[str, Any], form: dict[str, Any], version: str) -> nir.NIRGraph:
    w, s, bias = proj["weight_q"], proj["scales"], proj["bias"]
    out_features, in_features = w.shape
    groups = s.shape[1]
    size = in_features // groups
    integer = form["weights"] == "int"
    neurons = out_features * groups if integer else out_features
    halves = [1, -1][: form["halves"]]
    channels = form["ports"] * len(halves) * in_features
    if neurons * channels > MAX_SYNAPSE_ENTRIES:
        raise SpikecodeError(
            f"the synapse of {name} would hold {neurons} x {channels} weights "
            f"(over {MAX_SYNAPSE_ENTRIES}); graded=True stores no per-step copies, "
            "weights='float' no per-group rows",
            projection=name,
            groups=groups,
        )
    per_group = np.abs(w.astype(np.int64)).reshape(out_features, groups, size).sum(axis=2)
    gain_int = w.astype(np.int64).reshape(out_features, groups, size).sum(axis=2)
    if integer:
        # Row o*G + g keeps the columns of group g: an integrator per scale group.
        base = np.zeros((out_features, groups, in_features), dtype=np.int64)
        for g in range(groups):
            base[:, g, g * size : (g + 1) * size] = w[:, g * size : (g + 1) * size]
        base = base.reshape(neurons, in_features)
        gain: np.ndarray = gain_int
    else:
        # σ ⊙ W_q per group of columns: an int8 times a float32 is exact in float64.
        base = (w.astype(np.float64).reshape(out_features, groups, size) * s[:, :, None]).reshape(
            out_features, in_features
        )
        gain = base.sum(axis=1)
    synapse = np.concatenate(
        [int(pw) * sign * base for pw in form["port_weights"] for sign in halves], axis=1
    )
    if integer:
        synapse = synapse.astype(_int_dtype(int(np.abs(synapse).max())))
    reach = int(np.abs(form["step_weights"]).sum())
    bound = reach * int(per_group.max())
    # One step's sum is w_t times an integer of at most per_group (step weights are
    # powers of two): exact in float32 while per_group fits, whatever w_t.
    step_bound = int(per_group.max())
    meta = {
        **{k: v for k, v in form.items() if k != "port_weights"},
        "spikecode_version": version,
        "projection": name,
        "in_features": in_features,
        "out_features": out_features,
        "scale_groups": groups,
        "group_size": size,
        "neurons": neurons,
        "input_channels": channels,
        "scales": s,
        "zero_point_gain": gain,
        "bias": bias,
        "accumulator_bound": bound,
        "accumulator_bits": bound.bit_length() + 1,
        "float32_exact": bound <= FLOAT32_EXACT,
        "step_float32_exact": step_bound <= FLOAT32_EXACT,
        "input_layout": _INPUT_LAYOUT,
        "drive": _DRIVE,
        "discretisation": _DISCRETISATION[form["integrator"]],
        "readout": _READOUT[form["weights"]],
    }
    ones = np.ones(neurons, dtype=np.float64)
    if form["integrator"] == "IF":
        # The membrane never exceeds reach · max row sum of |synapse| for one port.
        row_bound = reach * float(np.abs(base).sum(axis=1).max())
        threshold = _power_above(row_bound)
        meta["threshold"] = threshold
        neuron: nir.NIRNode = nir.IF(
            r=form["r"] * ones, v_threshold=threshold * ones, v_reset=np.zeros(neurons)
        )
    else:
        # NIR's LI, tau dv/dt = (v_leak - v) + r I, with tau = 2^31 - 1 and r = tau/dt:
        # each step adds I and decays by exp(-dt/tau) (1 in float32). Rockpool loads it
        # as ExpSynTorch; the other consumers refuse it or drop it.
        meta["tau"] = float(LI_TAU)
        neuron = nir.LI(tau=LI_TAU * ones, r=form["r"] * ones, v_leak=np.zeros(neurons))
    nodes = {
        "input": nir.Input(input_type=np.array([channels])),
        "synapse": nir.Affine(weight=synapse, bias=np.zeros(neurons, dtype=synapse.dtype)),
        "integrator": neuron,
        "output": nir.Output(output_type=np.array([neurons])),
    }
    try:
        return nir.NIRGraph(nodes=nodes, edges=list(EDGES), metadata=meta)
    except (ValueError, AssertionError) as err:  # nir's own type checks
        raise SpikecodeError(f"NIR refused the graph: {err}", projection=name) from None


def nir_graphs(
    projections: Any,
    *,
    scheme: str,
    T: int | None = None,
    bit_order: str = "msb",
    integrator: Literal["IF", "LI"] = "IF",
    weights: Literal["int", "float"] = "int",
    graded: bool = False,
    on_off: bool = False,
    dt: float = 1.0,
    group_size: int | None = None,
) -> dict[str, nir.NIRGraph]:
    """Build one NIR graph per spike-driven projection (SPEC §4; package docstring).

    Parameters
    ----------
    projections
        One projection or a dict ``name -> projection`` (a block, a model). A projection
        is ``(weight_q, scales)`` or ``(weight_q, scales, bias)`` — int8 ``[out, in]``,
        scales ``[out]``, ``[out, groups]`` or ``[out, groups, 1]``, float bias
        ``[out]`` — or a :class:`spikecode.nn.W8ASpikeLinear` (its own INT8 weights), or
        a ``torch.nn.Linear``, quantized to symmetric INT8 per SPEC §4. Any other
        ``torch.nn.Module`` stands for every projection spike coding applies to (SPEC §1,
        :func:`spikecode.models.capture.list_linear_layers`). A projection passed alone is named
        ``"projection"``.
    scheme
        The code the trains will use (one of :data:`spikecode.SCHEMES`).
    T
        Number of steps (required: the IF threshold and the accumulator width depend on it).
    bit_order
        ``"msb"`` or ``"lsb"``: which step carries which bit (bitwise codes).
    integrator
        ``"IF"`` (default; never fires, read its membrane: snnTorch, Norse, Sinabs,
        Spyx) or ``"LI"`` (``tau = r·dt =`` :data:`LI_TAU`, ``v_leak = 0``: Rockpool's
        form, an integrator in float32). ``"I"`` is refused: no consumer runs it.
    weights
        ``"int"`` (default: integer INT8 weights, an integrator per scale group, scales
        on the host) or ``"float"`` (``σ W_q`` folded in, one integrator per output).
    graded
        One input port whose payload is ``w_t · s_t`` instead of one port per step.
    on_off
        Split a signed code's input into ON and OFF halves (only 0/1 spikes travel).
    dt
        Step length; the integrator's ``r`` is ``1/dt``.
    group_size
        Input columns per scale when quantizing ``torch.nn.Linear`` weights.

    Returns
    -------
    dict
        ``name -> nir.NIRGraph`` with nodes ``input``, ``synapse``, ``integrator``,
        ``output`` and the metadata the host readout needs.

    Raises
    ------
    SpikecodeError
        Bad weights, scales, bias or names; an unknown scheme or form; a missing T; an
        ON/OFF split of an unsigned or graded code; a synapse too large to allocate.

    Warns
    -----
    Float32Warning
        When a projection's accumulator can pass 2^24 (``float32_exact`` false): the
        message names the consumers that will round it.
    """
    from spikecode._version import __version__

    form = _form(scheme, T, bit_order, integrator, weights, graded, on_off, dt)
    resolved = _projections(projections, group_size)
    graphs = {name: _graph(name, proj, form, __version__) for name, proj in resolved.items()}
    message = _float32_message(graphs)
    if message:
        warnings.warn(message, Float32Warning, stacklevel=2)
    return graphs


def _float32_message(graphs: Mapping[str, nir.NIRGraph]) -> str | None:
    """Which consumers round the accumulators of these graphs, or None if none does.

    A graph is float32-exact when its ``accumulator_bound`` is at most 2^24. Past it,
    Norse, Spyx and Rockpool (membrane in float32) round the membrane. Sinabs (float64
    membrane) and snnTorch's per-step recipe (steps summed on the host in float64) add
    float32 steps, each exact while one step's sum fits (``step_float32_exact``: a
    group's ``Σ|W_q|`` at most 2^24); :func:`simulate_nir` (float64) stays exact.
    """
    wide = {n: g.metadata for n, g in graphs.items() if not bool(g.metadata["float32_exact"])}
    if not wide:
        return None
    names = list(wide)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    bits = max(int(meta["accumulator_bits"]) for meta in wide.values())
    steps_exact = all(bool(meta.get("step_float32_exact", False)) for meta in wide.values())
    wrong = list(_FLOAT32_MEMBRANE) + ([] if steps_exact else ["Sinabs", "snnTorch"])
    exact = "; Sinabs and snnTorch's per-step recipe stay exact" if steps_exact else ""
    return (
        f"{len(names)} of {len(graphs)} projection(s) ({shown}) can reach accumulators "
        f"past 2^24 ({bits}-bit signed): {', '.join(wrong)} will round the membrane in "
        f"float32 without an error{exact}; "
        + ("a smaller T lowers the bound" if steps_exact else "smaller scale groups lower it")
    )


def nir_graph(projection: Any, **options: Any) -> nir.NIRGraph:
    """The graph of a single projection: :func:`nir_graphs` for exactly one projection.

    Raises
    ------
    SpikecodeError
        As :func:`nir_graphs`, or when ``projection`` holds several projections.
    """
    graphs = nir_graphs(projection, **options)
    if len(graphs) != 1:
        raise SpikecodeError(
            f"nir_graph builds one projection's graph; got {len(graphs)} "
            f"({', '.join(graphs)}): use nir_graphs or export_nir to a folder"
        )
    return next(iter(graphs.values()))


# --------------------------------------------------------------------------- writing


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a metadata value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


_INDEX_KEYS = (
    "scheme",
    "T",
    "bit_order",
    "step_weights",
    "ports",
    "halves",
    "graded",
    "on_off",
    "weights",
    "integrator",
    "dt",
    "r",
    "input_layout",
    "drive",
    "discretisation",
    "readout",
)
_PROJECTION_KEYS = (
    "in_features",
    "out_features",
    "scale_groups",
    "group_size",
    "neurons",
    "input_channels",
    "accumulator_bound",
    "accumulator_bits",
    "float32_exact",
)


def _index(graphs: Mapping[str, nir.NIRGraph], files: Mapping[str, str]) -> dict[str, Any]:
    first = next(iter(graphs.values())).metadata
    return {
        "format": INDEX_FORMAT,
        "format_version": NIR_FORMAT_VERSION,
        "spikecode_version": first["spikecode_version"],
        **{key: _plain(first[key]) for key in _INDEX_KEYS},
        "projections": [
            {
                "name": name,
                "file": files[name],
                **{key: _plain(graph.metadata[key]) for key in _PROJECTION_KEYS},
                "synapse_dtype": str(np.asarray(graph.nodes["synapse"].weight).dtype),
            }
            for name, graph in graphs.items()
        ],
    }


def _export_listing(path: Path) -> set[str] | None:
    """The files an earlier folder export at ``path`` wrote (its index and ``.nir`` graphs)."""
    return export_listing(path, INDEX_FILE, INDEX_FORMAT, ".nir")


def _hdf5_image(graph: nir.NIRGraph) -> memoryview:
    """The bytes of ``nir.write(graph)``, built in memory.

    HDF5 is never written to disk directly: h5py's C library handles a failed write (a
    full disk) badly, up to crashing the interpreter; a plain Python write of the
    finished image fails cleanly instead.
    """
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return buffer.getbuffer()


@register_exporter("nir")
def export_nir(projections: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write the graphs of :func:`nir_graphs` with ``nir.write`` (atomically).

    Registered as the ``"nir"`` exporter: the object to export first, then the path;
    ``options`` are those of :func:`nir_graphs`.

    * ``path`` ending in ``.nir``: one file, for exactly one projection.
    * any other ``path``: a folder holding ``<name>.nir`` per projection and
      :data:`INDEX_FILE`, a JSON object with ``format`` (``"spikecode.nir-index"``),
      ``format_version``, ``spikecode_version``, the shared form (``scheme``, ``T``,
      ``bit_order``, ``step_weights``, ``ports``, ``halves``, ``graded``, ``on_off``,
      ``weights``, ``integrator``, ``dt``, ``r``, ``input_layout``, ``drive``,
      ``discretisation``, ``readout``) and ``projections``: a list, in export order, of
      ``{name, file, in_features, out_features, scale_groups, group_size, neurons,
      input_channels, accumulator_bound, accumulator_bits, float32_exact,
      synapse_dtype}``. The folder appears only once complete (with the permissions
      ``mkdir`` gives). It replaces an earlier export only when that folder holds
      nothing but the files its index lists; a folder with other files (the user's),
      links or subfolders, or a file at ``path``, is refused, naming what is there:
      nothing spikecode did not write is removed.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    SpikecodeError
        As :func:`nir_graphs`; several projections to a ``.nir`` file; an unwritable
        path (nothing is left behind).
    """
    graphs = nir_graphs(projections, **options)
    path = as_path(path)
    return write_export(
        path,
        graphs,
        ".nir",
        INDEX_FILE,
        build=_hdf5_image,
        save=Path.write_bytes,
        index=lambda files: _index(graphs, files),
        listing=_export_listing,
    )


# --------------------------------------------------------------------------- reading


def _read_file(path: Path) -> nir.NIRGraph:
    try:
        import h5py

        with h5py.File(path, "r") as handle:  # sizes first: nir.read loads every dataset
            check_hdf5_sizes(handle, path)
        graph = nir.read(path)
    except SpikecodeError:
        raise
    except Exception as err:  # h5py, nir's asserts and KeyErrors all mean "not NIR"
        raise SpikecodeError(f"cannot read {path.name} as NIR: {err}", file=str(path)) from None
    if not isinstance(graph, nir.NIRGraph):
        raise SpikecodeError(f"{path.name} holds no NIR graph", file=str(path))
    return graph


_REQUIRED = (
    "scheme",
    "T",
    "bit_order",
    "step_weights",
    "ports",
    "halves",
    "graded",
    "weights",
    "integrator",
    "dt",
    "in_features",
    "out_features",
    "scale_groups",
    "neurons",
    "scales",
    "zero_point_gain",
    "bias",
)


def graph_info(graph: nir.NIRGraph, label: str = "graph") -> dict[str, Any]:
    """The validated spikecode metadata of one projection graph (for the host side)."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    if meta.get("format") is None or meta_text(meta, "format", label) != NIR_FORMAT:
        raise SpikecodeError("not a spikecode NIR export (no format metadata)", file=label)
    version = meta_int({"format_version": -1, **meta}, "format_version", label)
    if version != NIR_FORMAT_VERSION:
        raise SpikecodeError(
            f"spikecode NIR format version {version} is not supported "
            f"(expected {NIR_FORMAT_VERSION})",
            file=label,
        )
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise SpikecodeError(f"missing graph metadata: {', '.join(missing)}", file=label)
    missing = [role for role in ROLES if role not in graph.nodes]
    if missing:
        raise SpikecodeError(f"the graph lacks node(s) {', '.join(missing)}", file=label)
    if not isinstance(graph.nodes["integrator"], nir.I | nir.IF | nir.LI):
        raise SpikecodeError(
            f"integrator node is {type(graph.nodes['integrator']).__name__}, not IF or LI",
            file=label,
        )
    info = {
        "label": label,
        "projection": meta_text(meta, "projection", label, DEFAULT_NAME),
        **{
            key: meta_text(meta, key, label)
            for key in ("scheme", "bit_order", "weights", "integrator")
        },
        **{
            key: meta_int(meta, key, label, 1)
            for key in ("ports", "halves", "in_features", "out_features", "scale_groups")
        },
        "T": meta_int(meta, "T", label, 0),  # 0: any T (unit step weights)
        "neurons": meta_int(meta, "neurons", label, 1),
        "graded": meta_bool(meta, "graded", label),
        "dt": meta_float(meta, "dt", label),
        "step_weights": meta_array(meta, "step_weights", label, np.int64).reshape(-1),
        "scales": meta_array(meta, "scales", label, np.float64),
        "zero_point_gain": meta_array(meta, "zero_point_gain", label, None),
        "bias": meta_array(meta, "bias", label, np.float64),
    }
    try:
        spec = get_scheme(info["scheme"])
        if info["T"]:
            spec.check_T(info["T"])
    except SpikecodeError as err:
        raise SpikecodeError(f"graph metadata: {err.message}", file=label) from None
    out, groups = info["out_features"], info["scale_groups"]
    gain_shape = (out, groups) if info["weights"] == "int" else (out,)
    if (
        info["scales"].shape != (out, groups)
        or info["zero_point_gain"].shape != gain_shape
        or info["bias"].shape != (out,)
    ):
        raise SpikecodeError("the readout metadata does not match the projection", file=label)
    return info


@dataclass(frozen=True)
class NirExport:
    """What :func:`load_nir` returns.

    Attributes
    ----------
    graphs
        ``projection name -> nir.NIRGraph``, in export order.
    index
        The folder's index (for a single file or graph: the same layout, built from its
        metadata).
    path
        Where it was read from (``None`` for a graph in memory).
    """

    graphs: dict[str, nir.NIRGraph]
    index: dict[str, Any]
    path: Path | None


def load_nir(source: str | os.PathLike[str] | nir.NIRGraph) -> NirExport:
    """Read a folder or ``.nir`` file written by :func:`export_nir` (or take a graph).

    Everything is validated before use: the folder's index must list at least one
    projection, none and no file twice, each file a plain name of a regular file inside
    the folder (symbolic links are not followed); each graph's metadata is checked for
    type and range (``format_version``, ``T`` ... are integers, ``dt`` a finite number),
    and the HDF5 datasets' declared sizes are held to the size bound
    (``SPIKECODE_MAX_BYTES``) before they are loaded.

    Raises
    ------
    SpikecodeError
        A missing path or a name longer than the system allows, a file that is not NIR,
        a folder without a valid index, a listed file that is missing, a link or not a
        regular file, graphs without valid spikecode metadata, or datasets beyond the
        size bound; the message names the file.
    """
    if isinstance(source, nir.NIRGraph):
        info = graph_info(source)
        graphs = {info["projection"]: source}
        return NirExport(graphs, _index(graphs, {info["projection"]: ""}), None)
    path = as_path(source, "source")
    kind = path_kind(path)  # one line for a name too long, a link loop, no permission
    if kind == "file":
        graph = _read_file(path)
        name = graph_info(graph, str(path))["projection"]
        return NirExport({name: graph}, _index({name: graph}, {name: path.name}), path)
    if kind != "dir":
        raise SpikecodeError(
            "no such file or folder" if kind is None else "not a file or folder", file=str(path)
        )
    index_path = path / INDEX_FILE
    if os.path.lexists(index_path):  # a missing index is reported by read_json
        check_graph_file(path, INDEX_FILE, index_path)
    index = read_json(index_path, INDEX_FILE)
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise SpikecodeError("not a spikecode NIR index", file=str(index_path))
    if index.get("format_version") != NIR_FORMAT_VERSION:
        raise SpikecodeError(
            f"spikecode NIR format version {index.get('format_version')} is not supported "
            f"(expected {NIR_FORMAT_VERSION})",
            file=str(index_path),
        )
    graphs = {}
    for name, file in index_entries(index, index_path):
        graph_path = check_graph_file(path, file, index_path)
        graph = _read_file(graph_path)
        if graph_info(graph, str(graph_path))["projection"] != name:
            raise SpikecodeError(
                f"{file} holds another projection than the index says", file=str(graph_path)
            )
        graphs[name] = graph
    return NirExport(graphs, index, path)
