"""Data files bundled with spikecode.

- ``minilm_sample.npz``: real activations of a trained transformer — the inputs of the
  attention query projections of all six layers of all-MiniLM-L6-v2 for 32 short
  sentences, one float16 array ``activations`` of shape ``[6, tokens, 384]`` (feature
  axis last). Provenance in ``SAMPLE.md``; ``scripts/make_sample.py`` regenerates it.
- ``minilm_query_w8.npz``: the six query projections those activations feed, quantized
  to INT8 as SPEC §4 describes (``weight_q`` int8 ``[6, 384, 384]``, ``scales`` float32
  ``[6, 384, 3]`` per group of 128 inputs, ``bias`` float32 ``[6, 384]``, ``layers``
  names), so the sample is a complete spike-driven layer for the exporters.
- ``calibration.txt``: the default calibration corpus, one English text per line,
  written for spikecode. SpikingBrain calibrates on 128 samples (SPEC §1).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from spikecode.errors import SpikecodeError

__all__ = [
    "corpus_path",
    "load_corpus",
    "load_sample",
    "load_sample_weights",
    "sample_layer_names",
    "sample_path",
    "sample_weights_path",
]

_SAMPLE = "minilm_sample.npz"
_WEIGHTS = "minilm_query_w8.npz"
_CORPUS = "calibration.txt"


def _path(name: str) -> Path:
    resource = resources.files(__name__) / name
    # Installed as a zip, a resource has no file-system path that could be returned.
    if not isinstance(resource, Path):
        raise SpikecodeError(
            "spikecode's data files are not on the file system; install spikecode "
            "unzipped to use them",
            resource=name,
        )
    return resource


def sample_path() -> Path:
    """Return the path of the bundled activation sample ``minilm_sample.npz``.

    Returns
    -------
    pathlib.Path
        Location inside the installed package (not checked for existence).
    """
    return _path(_SAMPLE)


def sample_weights_path() -> Path:
    """Return the path of ``minilm_query_w8.npz``, the INT8 weights the sample feeds."""
    return _path(_WEIGHTS)


def sample_layer_names() -> list[str]:
    """The module names of the projections the sample's six layers feed.

    ``encoder.layer.{i}.attention.self.query``: the bundled sample's layer ``i`` is the
    input of that projection, and every command names it so (reports, plots, exports).
    """
    path = sample_weights_path()
    if not path.is_file():
        raise SpikecodeError("the bundled sample weights are missing", file=path)
    with np.load(path, allow_pickle=False) as archive:
        return [str(name) for name in archive["layers"]]


def load_sample_weights() -> dict[str, np.ndarray]:
    """Load the INT8 query-projection weights that belong to the bundled sample.

    Returns
    -------
    dict
        ``layers`` (str ``[6]``), ``weight_q`` (int8 ``[6, 384, 384]``), ``scales``
        (float32 ``[6, 384, 3]``), ``bias`` (float32 ``[6, 384]``); layer ``i`` of the
        sample's activations is the input of projection ``layers[i]``.
    """
    path = sample_weights_path()
    if not path.is_file():
        raise SpikecodeError("the bundled sample weights are missing", file=path)
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def corpus_path() -> Path:
    """Return the path of the default calibration corpus ``calibration.txt``.

    Returns
    -------
    pathlib.Path
        Location inside the installed package (not checked for existence); UTF-8, one
        text sample per line.
    """
    return _path(_CORPUS)


def load_sample() -> np.ndarray:
    """Load the bundled activation sample.

    Returns
    -------
    numpy.ndarray
        float16, shape ``[6, tokens, 384]``: layer, token, feature (features last, as
        SPEC §2 expects). See ``SAMPLE.md`` next to the file for its provenance.

    Raises
    ------
    SpikecodeError
        If the file is missing or does not hold the ``activations`` array.
    """
    from spikecode.io import load_activations

    return load_activations(sample_path(), key="activations")


def load_corpus(n: int | None = None) -> list[str]:
    """Load the default calibration corpus.

    Parameters
    ----------
    n
        Return the first ``n`` samples; ``None`` returns all of them.

    Returns
    -------
    list of str
        The non-empty lines of ``calibration.txt``, stripped, in file order.

    Raises
    ------
    SpikecodeError
        If ``n`` is not a positive integer or exceeds the number of samples.
    """
    texts = [line.strip() for line in corpus_path().read_text("utf-8").splitlines()]
    texts = [text for text in texts if text]
    if n is None:
        return texts
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(texts):
        raise SpikecodeError(
            f"n must be an integer between 1 and {len(texts)}", n=n, available=len(texts)
        )
    return texts[:n]
