"""Run a spikecode Lava export in Lava's Loihi-2 fixed-point simulator.

This file is the Lava side of ``spikecode export lava``. It imports only the standard
library, numpy and lava (``lava-nc`` 0.10 runs on Python 3.10 with numpy < 2, where
spikecode itself cannot be installed), so it is loaded by file path: every export folder
holds a copy named ``spikecode_lava.py``, and ``spikecode.exporters.lava.RUNNER`` is the
path of this file in the installed package. Set up once::

    python3.10 -m venv lava-env
    lava-env/bin/pip install "lava-nc==0.10.*" "numpy<2"

and run an export on input frames written by ``spikecode.exporters.lava.save_frames``::

    lava-env/bin/python EXPORT/spikecode_lava.py EXPORT --frames frames.npz --out acc.npz

``acc.npz`` then holds, per projection, the int64 integrator state after every token
``[rows, neurons]``: the exact integer accumulators of ``spikecode.spike_linear``, which
``spikecode.exporters.lava.lava_readout`` turns into the layer output.

The network of one projection, per fan-in block ``b`` (one per scale group unless the
export split the weights further)::

    RingBuffer_b (graded payloads) --> Dense_b (2*W_q, weight_exp = -1) --> Sigma_g
                                       (the columns of block b)      (g: the block's group)

Each token is ``T + 1`` steps: its ``T`` frames, then one silent step that drains
Dense's one-step buffer; ``sigma`` is read after the token and set back to 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

#: The file format this runner reads (the npz of one projection, its JSON metadata).
FORMAT = "spikecode.lava"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"


class ExportError(ValueError):
    """A file that is not a spikecode Lava export, or frames that do not fit it."""


def load_projection(path: str | Path) -> dict:
    """Read one projection file (``.npz``, no pickles) into a dict of arrays and metadata."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise ExportError(f"{path}: not a spikecode Lava projection ({err})") from None
    if "meta" not in arrays:
        raise ExportError(f"{path}: no metadata")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format {meta.get('format')} v{meta.get('format_version')} is not "
            f"{FORMAT} v{FORMAT_VERSION}"
        )
    return {"meta": meta, **arrays}


def load_export(path: str | Path) -> dict[str, dict]:
    """Every projection of a folder export (via its index) or of a single ``.npz`` file."""
    path = Path(path)
    if path.is_file():
        projection = load_projection(path)
        return {projection["meta"]["projection"]: projection}
    index = json.loads((path / INDEX_FILE).read_text(encoding="utf8"))
    if index.get("format") != FORMAT + "-index":
        raise ExportError(f"{path}: not a spikecode Lava export folder")
    projections = {}
    for entry in index["projections"]:
        if Path(entry["file"]).name != entry["file"]:
            raise ExportError(f"{path}: index entry {entry['file']!r} leaves the folder")
        projections[entry["name"]] = load_projection(path / entry["file"])
    return projections


def _check_frames(projection: dict, frames: np.ndarray) -> np.ndarray:
    meta = projection["meta"]
    frames = np.asarray(frames)
    want = (meta["T"], meta["in_features"])
    if frames.ndim != 3 or frames.shape[1:] != want or frames.shape[0] == 0:
        raise ExportError(
            f"{meta['projection']}: frames must be [rows, {want[0]}, {want[1]}], "
            f"not {list(frames.shape)}"
        )
    if not np.issubdtype(frames.dtype, np.integer):
        raise ExportError(f"{meta['projection']}: frames must be integers (graded payloads)")
    limit = 2 ** (meta["message_bits"] - 1)
    if frames.size and (frames.max() >= limit or frames.min() < -limit):
        raise ExportError(
            f"{meta['projection']}: a payload exceeds the {meta['message_bits']}-bit message"
        )
    return frames.astype(np.int32)


def build_network(projection: dict, frames: np.ndarray) -> tuple[list, list, list]:
    """The Lava processes of one projection, driven by ``frames`` ``[rows, T, in]``.

    Returns
    -------
    tuple
        ``(sources, denses, sigmas)``: a ``RingBuffer`` and a ``Dense`` per fan-in block,
        and a ``Sigma`` of ``out`` neurons per scale group, which the blocks of that
        group's columns feed (each group is a network of its own: run each ``Sigma``).
        The ring buffers hold every token's ``T`` frames followed by one silent step.
    """
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.sdn.process import Sigma
    from lava.utils.weightutils import SignMode

    meta = projection["meta"]
    frames = _check_frames(projection, frames)
    rows, T, _ = frames.shape
    # [in, rows * (T + 1)]: time is RingBuffer's last axis; the silent step ends a token.
    padded = np.zeros((rows, T + 1, frames.shape[2]), dtype=np.int32)
    padded[:, :T] = frames
    timeline = padded.reshape(rows * (T + 1), -1).T
    weights = projection["weights"].astype(np.int32)
    bounds = projection["block_bounds"].astype(np.int64)
    sigmas = [Sigma(shape=(meta["out_features"],)) for _ in range(meta["scale_groups"])]
    sources, denses = [], []
    for start, stop in itertools.pairwise(bounds):
        source = RingBuffer(data=np.ascontiguousarray(timeline[start:stop]))
        dense = Dense(
            weights=np.ascontiguousarray(weights[:, start:stop]),
            num_message_bits=meta["message_bits"],
            weight_exp=meta["weight_exp"],
            num_weight_bits=meta["weight_bits"],
            sign_mode=SignMode.MIXED,
        )
        source.s_out.connect(dense.s_in)
        # the group of these columns; an InPort sums what its connections send
        dense.a_out.connect(sigmas[int(start) // meta["group_size"]].a_in)
        sources.append(source)
        denses.append(dense)
    return sources, denses, sigmas


def run_projection(projection: dict, frames: np.ndarray) -> np.ndarray:
    """Run one projection in ``Loihi2SimCfg(select_tag="fixed_pt")``, token by token.

    Parameters
    ----------
    projection
        From :func:`load_projection`.
    frames
        Integer graded payloads ``[rows, T, in]`` (payload = step weight x spike).

    Returns
    -------
    numpy.ndarray
        int64 ``[rows, neurons]``: ``sigma`` after each token, neuron ``o·G + g`` the
        ``Sigma`` of scale group ``g``, output ``o``.
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    rows, T = np.shape(frames)[:2]
    _, _, sigmas = build_network(projection, frames)
    meta = projection["meta"]
    out = np.zeros((rows, meta["out_features"], meta["scale_groups"]), dtype=np.int64)
    zeros = np.zeros(meta["out_features"], dtype=np.int32)
    config = Loihi2SimCfg(select_tag="fixed_pt")
    # The groups share no process, so each is its own network with its own runtime.
    for g, sigma in enumerate(sigmas):
        try:
            for row in range(rows):
                sigma.run(condition=RunSteps(num_steps=T + 1), run_cfg=config)
                out[row, :, g] = sigma.sigma.get()
                sigma.sigma.set(zeros)
        finally:
            sigma.stop()
    # neuron o*G + g: the layout the readout (and NIR's integer form) uses
    out = out.reshape(rows, -1)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python spikecode_lava.py EXPORT --frames FRAMES.npz --out ACC.npz``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="export folder or single-projection .npz")
    parser.add_argument("--frames", required=True, help="npz: projection name -> frames")
    parser.add_argument("--out", required=True, help="npz to write: name -> accumulators")
    args = parser.parse_args(argv)
    try:
        projections = load_export(args.export)
        with np.load(args.frames, allow_pickle=False) as npz:
            frames = {key: npz[key] for key in npz.files}
        unknown = sorted(set(frames) - set(projections))
        if unknown:
            raise ExportError(f"no projection {', '.join(unknown)} in {args.export}")
        results = {name: run_projection(projections[name], f) for name, f in frames.items()}
    except (ExportError, OSError, KeyError, ValueError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    tmp = out.with_name(out.name + ".part.npz")
    np.savez(tmp, **results)
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
