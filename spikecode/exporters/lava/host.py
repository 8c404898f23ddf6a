"""The host side of a Lava export: input frames, readout, and a run through the runner.

spikecode (Python ≥ 3.11, numpy 2) and lava-nc 0.10 (Python 3.10, numpy < 2) cannot
share an interpreter, so :func:`run_lava` writes the frames to a file, runs the export's
runner (``spikecode_lava.py``) with a Python 3.10 interpreter that has lava-nc, and reads
the integrator states back.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spikecode._validate import to_numpy
from spikecode.encoders.train import SpikeTrain
from spikecode.errors import SpikecodeError
from spikecode.exporters.lava.export import RUNNER, LavaExport, load_lava
from spikecode.exporters.nir.host import _check_train, _select_trains

__all__ = ["lava_frames", "lava_readout", "run_lava", "save_frames", "simulate_lava"]


def _info(projection: Mapping[str, Any], label: str = "lava export") -> dict[str, Any]:
    """The fields the shared train check and readout read, from a projection's arrays."""
    meta = projection["meta"]
    return {
        **meta,
        "label": label,
        "weights": "int",
        "scales": np.asarray(projection["scales"], dtype=np.float64),
        "zero_point_gain": np.asarray(projection["zero_point_gain"]),
        "bias": np.asarray(projection["bias"], dtype=np.float64),
    }


def lava_frames(train: SpikeTrain, projection: Mapping[str, Any]) -> np.ndarray:
    """The graded payloads that drive one projection: ``frames[r, t] = w_t · s_t``.

    Parameters
    ----------
    train
        The projection's input train (its code, T, bit order and width must match).
    projection
        One entry of :attr:`LavaExport.projections` (or of
        :func:`~spikecode.exporters.lava.lava_projections`).

    Returns
    -------
    numpy.ndarray
        int32 ``[rows, T, in]``, one row per token.

    Raises
    ------
    SpikecodeError
        A train that does not match the projection.
    """
    info = _info(projection)
    _check_train(train, info)
    dense = train.to_dense().reshape(train.T, train.rows, train.features).astype(np.int64)
    frames = dense * np.asarray(projection["step_weights"], dtype=np.int64)[:, None, None]
    return np.ascontiguousarray(frames.transpose(1, 0, 2)).astype(np.int32)


def lava_readout(
    sigma: Any, vth: Any, projection: Mapping[str, Any], zero_point: int = 0
) -> np.ndarray:
    """The layer output from the integrator states after each token (host side).

    ``y[o] = Vth · Σ_g σ[o, g] · (sigma[o·G + g] + z · gain[o, g]) + b[o]`` (SPEC §4), in
    the order of :func:`spikecode.spike_linear`'s own rescale (the same rounding).

    Parameters
    ----------
    sigma
        ``[rows, neurons]``: ``Sigma.sigma`` after each token (the runner's output).
    vth
        The tokens' thresholds: a scalar or ``[rows]``.
    projection
        The projection (an entry of :attr:`LavaExport.projections`).
    zero_point
        The train's zero point (0 for the signed codes).

    Returns
    -------
    numpy.ndarray
        float64 ``[rows, out]``.
    """
    info = _info(projection)
    v = to_numpy(sigma, "sigma")
    out, groups = info["out_features"], info["scale_groups"]
    if v.ndim != 2 or v.shape[1] != info["neurons"] or not np.issubdtype(v.dtype, np.integer):
        raise SpikecodeError(f"sigma must be integer [rows, {info['neurons']}]", shape=v.shape)
    v_th = to_numpy(vth, "vth").astype(np.float64).reshape(-1)
    if v_th.size not in (1, v.shape[0]):
        raise SpikecodeError("vth must be a scalar or one per row", shape=v_th.shape)
    acc = v.astype(np.int64).reshape(-1, out, groups) + zero_point * info["zero_point_gain"]
    # spike_linear's own rescale on the same contiguous [rows, groups, out] accumulator:
    # einsum sums the groups in the order of the memory layout, so this is bit for bit
    acc = np.ascontiguousarray(acc.transpose(0, 2, 1)).astype(np.float64)
    y = np.broadcast_to(v_th, (v.shape[0],)).reshape(-1, 1) * np.einsum(
        "rgo,og->ro", acc, info["scales"]
    )
    return y + info["bias"]


def save_frames(path: str | os.PathLike[str], frames: Mapping[str, np.ndarray]) -> Path:
    """Write ``projection name -> frames`` as the runner's ``--frames`` file (npz)."""
    from spikecode.io import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{name: np.asarray(f, dtype=np.int32) for name, f in frames.items()})
    return path


def _export_and_trains(
    source: Any, train: Any, projection: str | None
) -> tuple[LavaExport, dict[str, SpikeTrain]]:
    export = source if isinstance(source, LavaExport) else load_lava(source)
    return export, _select_trains(list(export.projections), train, projection)


def run_lava(
    source: str | os.PathLike[str] | LavaExport,
    train: SpikeTrain | Mapping[str, SpikeTrain],
    *,
    python: str | os.PathLike[str],
    projection: str | None = None,
    timeout: float | None = None,
) -> dict[str, np.ndarray]:
    """Run exported projections in Lava (``Loihi2SimCfg``, fixed point) on spike trains.

    Parameters
    ----------
    source
        A folder or ``.npz`` from :func:`~spikecode.exporters.lava.export_lava`, or a
        :class:`LavaExport` read from one.
    train
        The input train of one projection, or a dict ``name -> train``.
    python
        A Python 3.10 interpreter with ``lava-nc`` 0.10 and ``numpy<2`` installed.
    projection
        Which projection a single train feeds (optional when there is only one).
    timeout
        Seconds to wait for the Lava run (default: no limit).

    Returns
    -------
    dict
        ``name -> int64 [rows, neurons]``: ``Sigma.sigma`` after each token (rows of
        the train, in order).

    Raises
    ------
    SpikecodeError
        An unknown projection, a train that does not match, or a run that fails (its
        last line of error output in the message).
    """
    export, trains = _export_and_trains(source, train, projection)
    frames = {name: lava_frames(t, export.projections[name]) for name, t in trains.items()}
    with tempfile.TemporaryDirectory(prefix="spikecode-lava-") as folder:
        frames_path = save_frames(Path(folder) / "frames.npz", frames)
        out = Path(folder) / "sigma.npz"
        command = [os.path.expanduser(python), os.fspath(RUNNER), os.fspath(export.path)]
        command += ["--frames", os.fspath(frames_path), "--out", os.fspath(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SpikecodeError(f"the Lava run did not complete: {err}") from None
        if done.returncode != 0 or not out.is_file():
            lines = (done.stderr or done.stdout or "no output").strip().splitlines()
            raise SpikecodeError(f"the Lava run failed: {lines[-1] if lines else ''}")
        with np.load(out, allow_pickle=False) as npz:
            return {name: npz[name].astype(np.int64) for name in trains}


def simulate_lava(
    source: str | os.PathLike[str] | LavaExport,
    train: SpikeTrain | Mapping[str, SpikeTrain],
    vth: Any,
    *,
    python: str | os.PathLike[str],
    projection: str | None = None,
    timeout: float | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """:func:`run_lava` followed by :func:`lava_readout`: the layer output from Lava.

    ``vth`` is a scalar or ``train.shape[:-1]`` per train (a dict ``name -> vth`` with
    a dict of trains). Returns float64 ``[*train.shape[:-1], out]`` (a dict for a dict
    of trains), equal to :func:`spikecode.spike_linear`'s output.
    """
    export, trains = _export_and_trains(source, train, projection)
    if isinstance(train, Mapping) and (not isinstance(vth, Mapping) or set(vth) != set(train)):
        raise SpikecodeError("with a dict of trains, vth must be a dict with the same keys")
    thresholds = {}
    for name, t in trains.items():  # checked before the (slow) run
        v = np.asarray(vth[name] if isinstance(train, Mapping) else vth, dtype=np.float64)
        if v.ndim and v.shape != t.shape[:-1]:
            raise SpikecodeError(
                "vth must be a scalar or have shape train.shape[:-1]",
                shape=v.shape,
                projection=name,
            )
        thresholds[name] = v.reshape(-1)
    sigmas = run_lava(export, trains, python=python, timeout=timeout)
    outputs = {}
    for name, t in trains.items():
        y = lava_readout(sigmas[name], thresholds[name], export.projections[name], t.zero_point)
        outputs[name] = y.reshape((*t.shape[:-1], y.shape[-1]))
    return outputs if isinstance(train, Mapping) else outputs[next(iter(trains))]
