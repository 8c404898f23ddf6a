"""Building, checking, writing and reading the Lava form of spike-driven projections."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikecode.encoders.schemes import check_bit_order, get_scheme
from spikecode.errors import Remedy, SpikecodeError
from spikecode.exporters.lava import runner as _runner
from spikecode.exporters.nir.graph import _projections
from spikecode.exporters.registry import register_exporter
from spikecode.io import export_listing, read_json, write_export

__all__ = [
    "A_OUT_BITS",
    "INDEX_FILE",
    "LAVA_FORMAT",
    "LAVA_FORMAT_VERSION",
    "MESSAGE_BITS",
    "RUNNER",
    "RUNNER_FILE",
    "STATE_BITS",
    "WEIGHT_BITS",
    "WEIGHT_EXP",
    "LavaExport",
    "export_lava",
    "lava_projections",
    "load_lava",
]

LAVA_FORMAT = _runner.FORMAT
LAVA_FORMAT_VERSION = _runner.FORMAT_VERSION
INDEX_FORMAT = LAVA_FORMAT + "-index"
INDEX_FILE = _runner.INDEX_FILE
#: The runner in the installed package (numpy + lava only; copied into every folder).
RUNNER = Path(_runner.__file__)
#: The runner's name in an export folder.
RUNNER_FILE = "spikecode_lava.py"
#: Graded spike payload width (``Dense(num_message_bits=24)``).
MESSAGE_BITS = 24
#: ``Sigma``'s state and input width (its fixed-point model declares precision 24).
STATE_BITS = 24
#: Loihi's synaptic weights: 8 bits; mixed-sign weights are even (the LSB is the sign's).
WEIGHT_BITS = 8
#: ``Dense`` stores ``2 * W_q`` (even, in [-256, 254]) and shifts its sum right by 1.
WEIGHT_EXP = -1
#: The default width a per-step dendritic sum (one Dense's ``a_out``) is checked against.
A_OUT_BITS = 24
#: The run configuration the runner uses (recorded in the metadata).
RUN_CONFIG = "Loihi2SimCfg(select_tag='fixed_pt')"

_READOUT = (
    "y[o] = vth * sum_g scales[o, g] * (sigma[o*G + g] + zero_point * zero_point_gain[o, g])"
    " + bias[o]"
)
_DRIVE = (
    "frames [rows, T, in]: frame t of a token is step_weights[t] * s_t (graded payloads); "
    "each token runs T + 1 steps (its frames, one silent step) from sigma = 0; read sigma "
    "after the token"
)


def _limit(bits: int) -> int:
    """The largest magnitude a signed ``bits``-bit value holds on both sides."""
    return 2 ** (bits - 1) - 1


def _reach(spec: Any, T: int) -> tuple[int, int]:
    """``(max |w_t|, Σ_t |w_t|)`` of the code at ``T`` steps (unary codes: ``(1, T)``)."""
    if not spec.bitwise:  # T may be up to 2^31: no array of step weights
        return 1, T
    steps = [abs(int(w)) for w in spec.step_weights(T, "msb")]
    return max(steps), sum(steps)


def _largest_T(spec: Any, T: int, fits: Any) -> int | None:
    """The largest ``T' < T`` for which ``fits(max |w_t|, Σ |w_t|)`` holds, if any."""
    if spec.bitwise:
        for smaller in range(T - 1, 0, -1):
            if fits(*_reach(spec, smaller)):
                return smaller
        return None
    low, high = 0, T - 1  # unary: the reach grows with T, bisect
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(*_reach(spec, mid)) else (low, mid - 1)
    return low or None


def _blocks(abs_w: np.ndarray, size: int, payload: int, limit: int) -> np.ndarray:
    """Contiguous fan-in blocks whose per-step sums ``payload · Σ_block |W|`` fit ``limit``.

    Every scale group (``size`` columns) starts a block, since each group has its own
    integrator; within a group a block grows until one more column would push some row's
    sum past the limit. Returns the block bounds ``[0, ..., in]``.
    """
    bounds, running = [0], np.zeros(abs_w.shape[0], dtype=np.int64)
    for i in range(abs_w.shape[1]):
        column = abs_w[:, i]
        if i and (i % size == 0 or payload * int((running + column).max()) > limit):
            bounds.append(i)
            running = np.zeros_like(running)
        running += column
    bounds.append(abs_w.shape[1])
    return np.asarray(bounds, dtype=np.int64)


def _projection_arrays(
    name: str, proj: dict[str, Any], spec: Any, T: int, bit_order: str, a_out_bits: int, split: bool
) -> dict[str, Any]:
    """The Lava arrays and metadata of one projection, its widths checked (module doc)."""
    w, s = proj["weight_q"], proj["scales"]
    out_features, in_features = w.shape
    groups = s.shape[1]
    size = in_features // groups
    neurons = out_features * groups
    abs_w = np.abs(w.astype(np.int64))
    # Each scale group has its own integrator, so the sums that matter are per group.
    per_group = abs_w.reshape(out_features, groups, size).sum(axis=2)
    # At least 1: an all-zero projection still may not run past what the state counts.
    row_max = max(int(per_group.max()), 1)
    payload, reach = _reach(spec, T)
    where = {"projection": name, "scheme": spec.name, "T": T}

    def refuse(what: str, fits: Any, *extra: Remedy) -> SpikecodeError:
        smaller = _largest_T(spec, T, fits)
        remedies = ((Remedy("T", smaller),) if smaller else ()) + extra
        return SpikecodeError(what, remedies=remedies, **where)

    if payload > _limit(MESSAGE_BITS):
        raise refuse(
            f"the step weight {payload} does not fit a {MESSAGE_BITS}-bit graded spike",
            lambda p, r: p <= _limit(MESSAGE_BITS),
        )
    bound = reach * row_max
    if bound > _limit(STATE_BITS):
        raise refuse(
            f"the accumulator reaches {bound} ({bound.bit_length() + 1} bits), wider than "
            f"Sigma's {STATE_BITS}-bit state",
            lambda p, r: r * row_max <= _limit(STATE_BITS),
        )
    # What all blocks together send Sigma in one step; never above the state bound
    # (max |w_t| <= Σ |w_t|), so Sigma's 24-bit input holds it too.
    step_sum = payload * row_max
    a_out = _limit(a_out_bits)
    if payload * int(abs_w.max()) > a_out:
        raise refuse(
            f"one weight times the step weight {payload} exceeds the {a_out_bits}-bit Dense "
            "a_out, so no fan-in split fits",
            lambda p, r: p * int(abs_w.max()) <= a_out,
        )
    bounds = _blocks(abs_w, size, payload, a_out)
    if len(bounds) - 1 > groups and not split:
        raise refuse(
            f"a per-step dendritic sum reaches {step_sum}, wider than the {a_out_bits}-bit "
            f"Dense a_out; {len(bounds) - 1} fan-in blocks (Dense processes) would fit, "
            f"not {groups}",
            lambda p, r: p * row_max <= a_out,
            Remedy("split", True),
        )
    dendritic = max(
        payload * int(abs_w[:, a:b].sum(axis=1).max()) for a, b in itertools.pairwise(bounds)
    )
    meta = {
        "format": LAVA_FORMAT,
        "format_version": LAVA_FORMAT_VERSION,
        "projection": name,
        "scheme": spec.name,
        "T": T,
        "bit_order": bit_order,
        "in_features": in_features,
        "out_features": out_features,
        "scale_groups": groups,
        "group_size": size,
        "neurons": neurons,
        "synapses": out_features * in_features,
        "nonzero_synapses": int(np.count_nonzero(w)),
        "message_bits": MESSAGE_BITS,
        "weight_bits": WEIGHT_BITS,
        "weight_exp": WEIGHT_EXP,
        "state_bits": STATE_BITS,
        "a_out_bits": a_out_bits,
        "blocks": len(bounds) - 1,
        "payload_bound": payload,
        "dendritic_bound": dendritic,
        "dendritic_bits": dendritic.bit_length() + 1,
        "sigma_input_bound": step_sum,
        "accumulator_bound": bound,
        "accumulator_bits": bound.bit_length() + 1,
        "integrator": "lava.proc.sdn.Sigma",
        "run_config": RUN_CONFIG,
        "drive": _DRIVE,
        "readout": _READOUT,
    }
    return {
        "meta": meta,
        "weights": 2 * w.astype(np.int16),  # even 9-bit values: Loihi's mixed sign
        "block_bounds": bounds,
        "step_weights": spec.step_weights(T, bit_order).astype(np.int64),
        "scales": s,
        "zero_point_gain": w.astype(np.int64).reshape(out_features, groups, size).sum(axis=2),
        "bias": proj["bias"],
    }


def lava_projections(
    projections: Any,
    *,
    scheme: str,
    T: int,
    bit_order: str = "msb",
    a_out_bits: int = A_OUT_BITS,
    split: bool = False,
    group_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The Lava form of each spike-driven projection, checked against Loihi 2's widths.

    Parameters
    ----------
    projections
        As :func:`spikecode.exporters.nir.nir_graphs`: ``(weight_q, scales[, bias])``,
        a :class:`spikecode.nn.W8ASpikeLinear`, a ``torch.nn.Linear``, a model, or a
        dict ``name -> projection``.
    scheme
        The code of the input trains (one of :data:`spikecode.SCHEMES`).
    T
        Number of steps (every code: the integrator's width depends on it).
    bit_order
        ``"msb"`` or ``"lsb"``: which step carries which bit (bitwise codes).
    a_out_bits
        Width a per-step dendritic sum of one ``Dense`` must fit (default 24, the width
        ``Sigma`` receives; Lava declares 16 for ``Dense.a_out``).
    split
        Split a scale group's fan-in into several ``Dense`` processes feeding its
        ``Sigma`` when a per-step sum does not fit ``a_out_bits``.
    group_size
        Input columns per scale when quantizing ``torch.nn.Linear`` weights.

    Returns
    -------
    dict
        ``name -> {"meta": dict, "weights": int16 [out, in] (2·W_q), "block_bounds"
        (fan-in blocks, each inside one scale group), "step_weights", "scales",
        "zero_point_gain", "bias"}``.

    Raises
    ------
    SpikecodeError
        Bad projections, scheme, T or bit order; a step weight wider than the
        24-bit message, an accumulator wider than Sigma's 24-bit state, or a per-step
        sum wider than Sigma's input or the Dense a_out (without ``split``). The
        message names the largest ``T`` that fits, or ``split``.
    """
    spec = get_scheme(scheme)
    check_bit_order(bit_order)
    if T is None:
        raise SpikecodeError(
            "a Lava export needs a fixed T (Sigma's state width depends on it)",
            remedies=(Remedy("T", "N"),),
            scheme=spec.name,
        )
    T = spec.check_T(T)
    if not isinstance(a_out_bits, int) or not 2 <= a_out_bits <= STATE_BITS:
        raise SpikecodeError(f"a_out_bits must be an integer in [2, {STATE_BITS}]: {a_out_bits!r}")
    resolved = _projections(projections, group_size)
    return {
        name: _projection_arrays(name, proj, spec, T, bit_order, a_out_bits, bool(split))
        for name, proj in resolved.items()
    }


# --------------------------------------------------------------------------- writing


def _save(target: Path, arrays: dict[str, Any]) -> None:
    with open(target, "wb") as handle:
        np.savez(handle, **{**arrays, "meta": np.array(json.dumps(arrays["meta"]))})


_PROJECTION_KEYS = (
    "in_features",
    "out_features",
    "scale_groups",
    "neurons",
    "synapses",
    "nonzero_synapses",
    "blocks",
    "dendritic_bits",
    "accumulator_bound",
    "accumulator_bits",
)


def _index(forms: Mapping[str, dict[str, Any]], files: Mapping[str, str]) -> dict[str, Any]:
    from spikecode._version import __version__

    first = next(iter(forms.values()))["meta"]
    shared = ("scheme", "T", "bit_order", "message_bits", "weight_bits", "weight_exp")
    return {
        "format": INDEX_FORMAT,
        "format_version": LAVA_FORMAT_VERSION,
        "spikecode_version": __version__,
        **{key: first[key] for key in shared},
        **{key: first[key] for key in ("state_bits", "a_out_bits", "integrator", "run_config")},
        "step_weights": next(iter(forms.values()))["step_weights"].tolist(),
        "runner": RUNNER_FILE,
        "drive": _DRIVE,
        "readout": _READOUT,
        "projections": [
            {"name": name, "file": files[name], **{k: form["meta"][k] for k in _PROJECTION_KEYS}}
            for name, form in forms.items()
        ],
    }


def _export_listing(path: Path) -> set[str] | None:
    """The files an earlier Lava export at ``path`` wrote: index, runner, ``.npz`` files."""
    return export_listing(path, INDEX_FILE, INDEX_FORMAT, ".npz", always=(RUNNER_FILE,))


@register_exporter("lava")
def export_lava(projections: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write the Lava form of :func:`lava_projections` (atomically).

    Registered as the ``"lava"`` exporter; ``options`` are those of
    :func:`lava_projections`.

    * ``path`` ending in ``.npz``: one file, for exactly one projection.
    * any other ``path``: a folder holding ``<name>.npz`` per projection, the runner
      ``spikecode_lava.py`` (numpy + lava only) and ``index.json``: ``format``
      (``"spikecode.lava-index"``), ``format_version``, ``spikecode_version``, the
      shared form (``scheme``, ``T``, ``bit_order``, ``step_weights``, the widths
      ``message_bits``, ``weight_bits``, ``weight_exp``, ``state_bits``,
      ``a_out_bits``), ``integrator``, ``run_config``, ``runner``, ``drive``,
      ``readout`` and ``projections``: ``{name, file, in_features, out_features,
      scale_groups, neurons, synapses, nonzero_synapses, blocks, dendritic_bits,
      accumulator_bound, accumulator_bits}`` in export order (``blocks``: its ``Dense``
      processes). An earlier export in the folder is replaced; anything else in the way
      is refused.

    Each ``.npz`` (``numpy.load(..., allow_pickle=False)``) holds ``meta`` (a JSON
    string), ``weights`` (int16 ``[out, in]``: ``2·W_q``), ``block_bounds`` (the
    ``Dense`` of block ``b`` takes columns ``block_bounds[b]:block_bounds[b + 1]``, inside
    one scale group, and feeds that group's ``Sigma``), ``step_weights``, ``scales``,
    ``zero_point_gain`` and ``bias``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    SpikecodeError
        As :func:`lava_projections`; several projections to one ``.npz``; an unwritable
        path (nothing is left behind).
    """
    forms = lava_projections(projections, **options)
    path = Path(path)
    return write_export(
        path,
        forms,
        ".npz",
        INDEX_FILE,
        build=lambda form: form,
        save=_save,
        index=lambda files: _index(forms, files),
        listing=_export_listing,
        copies={RUNNER_FILE: RUNNER},
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LavaExport:
    """What :func:`load_lava` returns.

    Attributes
    ----------
    projections
        ``name -> {"meta": dict, arrays...}`` as :func:`lava_projections` builds them.
    index
        The folder's index (for a single file: built from its metadata).
    path
        Where it was read from.
    """

    projections: dict[str, dict[str, Any]]
    index: dict[str, Any]
    path: Path


def load_lava(source: str | os.PathLike[str]) -> LavaExport:
    """Read a folder or ``.npz`` written by :func:`export_lava` (no pickles).

    Raises
    ------
    SpikecodeError
        A missing path, a file or folder that is not a spikecode Lava export, or an
        unsupported format version; the message names the file.
    """
    path = Path(source)
    if not path.exists():
        raise SpikecodeError("no such file or folder", file=str(path))
    if path.is_dir():
        index = read_json(path / INDEX_FILE, INDEX_FILE)
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise SpikecodeError("not a spikecode Lava export folder", file=str(path))
    try:
        projections = _runner.load_export(path)
    except (_runner.ExportError, OSError, KeyError, TypeError, ValueError) as err:
        raise SpikecodeError(f"cannot read the Lava export: {err}", file=str(path)) from None
    if not path.is_dir():
        index = _index(projections, {name: path.name for name in projections})
    return LavaExport(projections, index, path)
