"""Tiny checkpoints in the exact layout of the SpikingBrain-7B release, for tests and demos.

:func:`write_tiny_gla_swa_checkpoint` writes a folder that
:func:`spikecode.models.checkpoint.load_checkpoint` (and anything that reads the release) treats
like the real one: ``config.json`` with ``model_type: "gla_swa"``,
``architectures: ["GLAswaForCausalLM"]``, ``torch_dtype: "bfloat16"`` and the release's
``auto_map``; bfloat16 weights under the release's names (SPEC §7) in sharded safetensors
with ``model.safetensors.index.json``; optionally the W8ASpike variant with
``weight_quantizer.scales`` buffers (SPEC §4) and a small Qwen2-style byte-level BPE
tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) that
``transformers.AutoTokenizer`` loads offline.

Weights are seeded random numbers (so the model computes something non-trivial), not a
trained model.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.io import atomic_write
from spikecode.models.checkpoint import INDEX_FILE, SCALES_SUFFIX, SINGLE_FILE, W8_GROUP_SIZE
from spikecode.models.gla_swa import GATE_VARIANTS, GLASwaConfig, GLASwaForCausalLM
from spikecode.nn.functional import quantize_weight_int8

__all__ = [
    "SPIKINGBRAIN_7B",
    "TINY_TOKENIZER_WORDS",
    "assert_close_to_rounding",
    "rounding_excess",
    "stats_differences",
    "write_sparse_gla_swa_checkpoint",
    "write_tiny_gla_swa_checkpoint",
    "write_tiny_moe_checkpoint",
]

#: Words the tiny tokenizer holds as single tokens (with and without a leading space).
TINY_TOKENIZER_WORDS: tuple[str, ...] = (
    "hello",
    "world",
    "spike",
    "spiking",
    "brain",
    "the",
    "model",
    "token",
    "count",
    "linear",
    "attention",
)
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# The release's config.json points at its own modeling code; spikecode never runs it.
_AUTO_MAP = {
    "AutoConfig": "configuration_gla_swa.GLAswaConfig",
    "AutoModelForCausalLM": "modeling_gla_swa.GLAswaForCausalLM",
}


def write_tiny_gla_swa_checkpoint(
    path: str | os.PathLike[str],
    *,
    gate: str | None = None,
    w8aspike: bool = False,
    num_layers: int = 4,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    sliding_window: int = 8,
    rope_theta: float = 10000.0,
    attn_layers: Sequence[int] | None = None,
    tie_word_embeddings: bool = False,
    shards: int = 2,
    seed: int = 0,
    with_tokenizer: bool = False,
) -> Path:
    """Write a tiny random GLA-SWA checkpoint in the SpikingBrain-7B release layout.

    Parameters
    ----------
    path
        Folder to write; created if needed, and must be empty.
    gate
        ``"lowrank"`` (``attn.gk_proj.0`` / ``attn.gk_proj.1``, the BF16 release) or
        ``"single"`` (one ``attn.gk_proj``, the W8ASpike release). Default: ``"single"``
        when ``w8aspike`` else ``"lowrank"``.
    w8aspike
        Also write ``<linear>.weight_quantizer.scales`` (float32 ``[out, in/128, 1]``,
        ``max|w| / 127`` of the stored bf16 weights, SPEC §4) for every linear layer of the
        blocks whose input width is a multiple of 128 (the low-rank gate's 16-wide second
        projection has none; ``lm_head`` has none, SPEC §1).
    num_layers, num_heads, num_kv_heads, vocab_size, sliding_window, rope_theta
        Architecture; see :class:`~spikecode.models.gla_swa.GLASwaConfig`.
    hidden_size, intermediate_size
        Default 64 and 128, or 128 and 256 with ``w8aspike`` (scale groups need
        multiples of 128).
    attn_layers
        Sliding-window layers; default the odd layers, as in the release.
    tie_word_embeddings
        Share ``lm_head`` with the embeddings (``lm_head.weight`` is then not written).
    shards
        Number of safetensors shards (``model-0000i-of-0000n.safetensors`` plus
        ``model.safetensors.index.json``); 1 writes a single ``model.safetensors``.
    seed
        Seed of the weights; the same arguments write the same bytes.
    with_tokenizer
        Also write a Qwen2-style byte-level BPE tokenizer (``vocab.json``, ``merges.txt``,
        ``tokenizer_config.json`` with ``tokenizer_class: "Qwen2Tokenizer"``) holding the
        256 byte tokens, the words of :data:`TINY_TOKENIZER_WORDS` and the specials
        ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``.

    Returns
    -------
    Path
        The folder.
    """
    if gate is None:
        gate = "single" if w8aspike else "lowrank"
    if gate not in GATE_VARIANTS:
        raise SpikecodeError(f"gate must be one of {list(GATE_VARIANTS)}, not {gate!r}")
    if hidden_size is None:
        hidden_size = W8_GROUP_SIZE if w8aspike else 64
    if intermediate_size is None:
        intermediate_size = 2 * hidden_size
    if w8aspike and (hidden_size % W8_GROUP_SIZE or intermediate_size % W8_GROUP_SIZE):
        raise SpikecodeError(
            f"W8ASpike scales need hidden_size and intermediate_size that are multiples of "
            f"{W8_GROUP_SIZE}, not {hidden_size} and {intermediate_size}"
        )
    config = GLASwaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        sliding_window=sliding_window,
        rope_theta=rope_theta,
        attn_layers=tuple(range(1, num_layers, 2)) if attn_layers is None else tuple(attn_layers),
        tie_word_embeddings=tie_word_embeddings,
        torch_dtype="bfloat16",
        gate=gate,
    )
    tokenizer = _tokenizer(with_tokenizer, vocab_size)
    with torch.device("meta"):
        model = GLASwaForCausalLM(config)
    tensors = _tiny_tensors(model, seed=seed, w8aspike=w8aspike)
    raw_config = {
        **config.to_dict(),
        "auto_map": _AUTO_MAP,
        "max_position_embeddings": 4096,
    }
    return _write_folder(path, tensors, raw_config, shards, tokenizer)


def _write_folder(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    raw_config: dict[str, Any],
    shards: int,
    tokenizer: tuple[dict[str, int], list[tuple[str, str]]] | None,
) -> Path:
    """Write shards (or one file), the index, the tokenizer and, last, ``config.json``."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise SpikecodeError(f"shards must be a positive integer, not {shards!r}")
    if shards > len(tensors):
        raise SpikecodeError(f"shards {shards} exceeds the {len(tensors)} tensors to write")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SpikecodeError("the checkpoint folder must be empty", path=str(folder))
    if tokenizer is not None:
        raw_config["eos_token_id"] = len(tokenizer[0])  # <|endoftext|>
    names = list(tensors)
    if shards == 1:
        _write_safetensors(folder / SINGLE_FILE, tensors)
    else:
        weight_map = {}
        bounds = [round(i * len(names) / shards) for i in range(shards + 1)]
        for i in range(shards):
            shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {name: tensors[name] for name in names[bounds[i] : bounds[i + 1]]}
            _write_safetensors(folder / shard, part)
            weight_map.update(dict.fromkeys(part, shard))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(folder / INDEX_FILE, index)
    if tokenizer is not None:
        _write_tokenizer(folder, *tokenizer)
    # Last, so that an interrupted write never leaves a folder that looks loadable.
    _write_json(folder / "config.json", raw_config)
    return folder


#: SpikingBrain-7B's architecture (the release's config.json), for the sparse writer.
SPIKINGBRAIN_7B = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "sliding_window": 4096,
    "rope_theta": 1000000.0,
}
_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32"}


def write_sparse_gla_swa_checkpoint(
    path: str | os.PathLike[str], *, w8aspike: bool = False, shards: int = 4, **architecture: Any
) -> Path:
    """Write a GLA-SWA checkpoint of any width whose weights are holes in sparse files.

    The folder has the release layout (``config.json``, ``model.safetensors.index.json``,
    ``model-0000i-of-0000n.safetensors``) and every safetensors file is valid: a header
    naming each tensor's dtype, shape and offsets, then a data region of the full size
    that is never written, so the file system stores it as a hole (all weights read as
    zero). A full SpikingBrain-7B-width model (:data:`SPIKINGBRAIN_7B`, the default) has
    an apparent size of ~15 GB and takes almost no disk: what tools that read only
    headers (:func:`spikecode.plan.checkpoint_projections`) need for tests and benchmarks.

    Parameters
    ----------
    path
        Folder to write; created if needed, and must be empty.
    w8aspike
        Also declare ``<linear>.weight_quantizer.scales`` (float32 ``[out, in/128, 1]``)
        for the block projections whose input width 128 divides, as the W8ASpike release.
    shards
        Number of safetensors shards; the layers are split in model order.
    **architecture
        :class:`~spikecode.models.config.GLASwaConfig` fields overriding
        :data:`SPIKINGBRAIN_7B` (``num_hidden_layers=2``...); ``gate`` picks the gate
        variant (default ``"single"`` with ``w8aspike``, else ``"lowrank"``).
    """
    settings = {**SPIKINGBRAIN_7B, **architecture}
    settings.setdefault("gate", "single" if w8aspike else "lowrank")
    settings.setdefault("attn_layers", tuple(range(1, settings["num_hidden_layers"], 2)))
    settings.setdefault("torch_dtype", "bfloat16")
    config = GLASwaConfig(**settings)
    with torch.device("meta"):
        model = GLASwaForCausalLM(config)
    entries: dict[str, tuple[str, tuple[int, ...]]] = {
        name: (_SAFETENSORS_DTYPES[torch.bfloat16], tuple(t.shape))
        for name, t in model.state_dict().items()
    }
    if w8aspike:
        for name, module in model.model.layers.named_modules(prefix="model.layers"):
            if isinstance(module, nn.Linear) and module.in_features % W8_GROUP_SIZE == 0:
                shape = (module.out_features, module.in_features // W8_GROUP_SIZE, 1)
                entries[name + SCALES_SUFFIX] = (_SAFETENSORS_DTYPES[torch.float32], shape)
    del model
    names = list(entries)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= len(names):
        raise SpikecodeError(f"shards must be an integer in 1..{len(names)}, not {shards!r}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SpikecodeError("the checkpoint folder must be empty", path=str(folder))
    bounds = [round(i * len(names) / shards) for i in range(shards + 1)]
    weight_map, total = {}, 0
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: entries[name] for name in names[bounds[i] : bounds[i + 1]]}
        total += _write_sparse_safetensors(folder / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    _write_json(
        folder / INDEX_FILE,
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    _write_json(
        folder / "config.json",
        {**config.to_dict(), "auto_map": _AUTO_MAP, "max_position_embeddings": 4096},
    )
    return folder


def _write_sparse_safetensors(target: Path, entries: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """Write a safetensors file whose data region is a hole; return its data size in bytes.

    The format: an 8-byte little-endian header length, the JSON header, the data.
    """
    sizes = {"BF16": 2, "F32": 4}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in entries.items():
        size = sizes[dtype] * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with atomic_write(target) as temporary, open(temporary, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        handle.truncate(8 + len(text) + offset)
    return offset


def _tiny_tensors(model: nn.Module, *, seed: int, w8aspike: bool) -> dict[str, torch.Tensor]:
    """Seeded bf16 weights under the model's names, in layer order (plus W8ASpike scales).

    ``model`` lives on the meta device: it gives names and shapes without allocating or
    initializing anything, so SpikingBrain-7B widths (hidden 3584, intermediate 18944)
    cost one random draw per weight, not a float32 model plus its default init.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if name.endswith("norm.weight"):
            value = 1 + 0.1 * noise
        elif name.endswith("bias"):
            value = 0.1 * noise
        elif param.dim() == 2 and name != "model.embeddings.weight":
            value = noise / param.shape[1] ** 0.5
        else:
            value = noise
        tensors[name] = value.to(torch.bfloat16)
        del noise, value
    # state_dict order is the release's; a tied lm_head is saved once, under the
    # embeddings' name (as transformers does).
    tensors = {name: tensors[name] for name in model.state_dict() if name in tensors}
    if w8aspike:
        for name, module in model.model.layers.named_modules(prefix="model.layers"):
            if isinstance(module, nn.Linear) and module.in_features % W8_GROUP_SIZE == 0:
                # SPEC §4 scales of the stored bf16 weight, as the release's [out, in/128, 1].
                _, scales = quantize_weight_int8(tensors[name + ".weight"], W8_GROUP_SIZE)
                tensors[name + SCALES_SUFFIX] = scales.unsqueeze(-1)
    # Keep each layer's tensors together (and so in one shard) as the release does.
    order = {name: i for i, name in enumerate(model.state_dict())}

    def position(name: str) -> tuple[int, int]:
        owner = name.removesuffix(SCALES_SUFFIX) + ".weight"
        return order.get(owner, order.get(name, 0)), name.endswith(SCALES_SUFFIX)

    return {name: tensors[name] for name in sorted(tensors, key=position)}


def _tokenizer(
    wanted: bool, vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
    """The tiny tokenizer's vocabulary and merges when ``wanted``, checked to fit ``vocab_size``."""
    if not wanted:
        return None
    vocab, merges = _tiny_bpe()
    if len(vocab) + len(_SPECIAL_TOKENS) > vocab_size:
        raise SpikecodeError(
            f"vocab_size {vocab_size} is smaller than the tiny tokenizer's "
            f"{len(vocab) + len(_SPECIAL_TOKENS)} tokens"
        )
    return vocab, merges


def _tiny_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocabulary (GPT-2 byte→unicode map, as Qwen2) and merges for the words.

    Each word, and the word after a space, gets the merges that turn it into one token.
    A new merge ranks after every earlier one, so it never changes how earlier words
    split: merges are added until the real BPE (simulated by :func:`_apply_merges`)
    yields a single token.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    ranks: dict[tuple[str, str], int] = {}
    for word in TINY_TOKENIZER_WORDS:
        for text in (word, " " + word):
            pieces = _apply_merges([byte_chars[b] for b in text.encode("utf-8")], ranks)
            while len(pieces) > 1:
                ranks[(pieces[0], pieces[1])] = len(ranks)
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
                pieces = _apply_merges(pieces, ranks)
    return vocab, sorted(ranks, key=ranks.__getitem__)


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding: merge the best-ranked adjacent pair until none is left."""
    while True:
        pairs = [(ranks[p], i) for i, p in enumerate(itertools.pairwise(pieces)) if p in ranks]
        if not pairs:
            return pieces
        _, i = min(pairs)
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]


def _write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    _write_json(folder / "vocab.json", vocab)
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    with atomic_write(folder / "merges.txt") as temporary:
        Path(temporary).write_text(merges_text, encoding="utf-8")
    added = {
        str(len(vocab) + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, token in enumerate(_SPECIAL_TOKENS)
    }
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 4096,
    }
    _write_json(folder / "tokenizer_config.json", tokenizer_config)


def _write_json(target: Path, content: object) -> None:
    with atomic_write(target) as temporary:
        Path(temporary).write_text(
            json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )


def _write_safetensors(target: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_write(target) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})


#: Stats-file fields that are sums of float32 matmul outputs (the output error).
_ERROR_FIELDS = frozenset(
    {"output_rel_error", "output_cosine", "output_sq_error", "output_sq_norm"}
)


def stats_differences(
    expected: Any, got: Any, *, skip: Sequence[str] = ("created",), path: str = ""
) -> list[str]:
    """Where two stats objects differ beyond the documented merge tolerances.

    Compares two ``CalibrationStats.to_dict()`` trees: integers, strings and every float
    derived from integers must be identical; the Vth ``mean`` and ``std`` may differ by
    ``spikecode.calibration.VTH_RTOL``, the output-error fields by
    ``spikecode.calibration.ERROR_RTOL`` (relative). This is the contract of
    data-parallel calibration, of ``merge-stats`` and of offloaded device maps against
    one plain calibration.

    Parameters
    ----------
    expected, got
        ``to_dict()`` trees (nested dicts, lists and scalars).
    skip
        Keys not compared, at any depth (default the creation time). The top-level
        ``runs`` (the runs' identity, unique to each run) is never compared.
    path
        Prefix of the reported paths.

    Returns
    -------
    list of str
        One line per difference (``.layers[3].by_k.2.vth.mean: 0.1 != 0.2``); empty when
        the two agree.
    """
    from spikecode.calibration.merge import ERROR_RTOL, VTH_RTOL

    if isinstance(expected, dict) and isinstance(got, dict):
        if expected.keys() != got.keys():
            return [f"{path}: keys {sorted(expected)} != {sorted(got)}"]
        found: list[str] = []
        for key in expected:
            # ``runs`` is a calibration's identity: different for any two runs by design.
            if key not in skip and not (key == "runs" and not path):
                found += stats_differences(expected[key], got[key], skip=skip, path=f"{path}.{key}")
        return found
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [f"{path}: {len(expected)} items != {len(got)}"]
        found = []
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            found += stats_differences(a, b, skip=skip, path=f"{path}[{i}]")
        return found
    name = path.rsplit(".", 1)[-1]
    rtol = 0.0
    if isinstance(expected, float) and isinstance(got, float):
        if name in _ERROR_FIELDS:
            rtol = ERROR_RTOL
        elif name in ("mean", "std") and ".vth." in path:
            rtol = VTH_RTOL
    if type(expected) is not type(got) and not (
        isinstance(expected, int | float) and isinstance(got, int | float)
    ):
        return [f"{path}: {expected!r} != {got!r}"]
    if rtol and abs(expected - got) <= rtol * max(abs(expected), abs(got)):
        return []
    return [] if expected == got else [f"{path}: {expected!r} != {got!r}"]


def write_tiny_moe_checkpoint(
    path: str | os.PathLike[str],
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    moe_intermediate_size: int = 32,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    sliding_window: int = 8,
    rope_theta: float = 10000.0,
    num_experts: int = 4,
    num_experts_per_tok: int = 1,
    num_sink_tokens: int = 4,
    full_attention_layers: Sequence[int] | None = None,
    moe_layers: Sequence[int] | None = None,
    shards: int = 2,
    seed: int = 0,
    with_tokenizer: bool = False,
) -> Path:
    """Write a tiny random hybrid-linear MoE checkpoint (the 76B architecture, SPEC §8).

    The layout a Hugging Face release of SpikingBrain-76B would use (none exists):
    ``config.json`` with ``model_type: "spikingbrain_moe"``, bf16 weights under the names
    of :mod:`spikecode.models.hybrid_moe` in sharded safetensors, optionally the tiny
    tokenizer of :func:`write_tiny_gla_swa_checkpoint`. Sink tokens get random values
    (they are learned parameters).

    Parameters
    ----------
    path
        Folder to write; created if needed, and must be empty.
    num_layers, hidden_size, intermediate_size, moe_intermediate_size, num_heads, \
num_kv_heads, vocab_size, sliding_window, rope_theta, num_experts, num_experts_per_tok, \
num_sink_tokens
        Architecture; see :class:`~spikecode.models.moe_config.HybridMoEConfig`.
    full_attention_layers, moe_layers
        Layer placement; default: the last layer is full attention (so that a tiny model
        has one) and the odd layers are MoE.
    shards, seed, with_tokenizer
        As in :func:`write_tiny_gla_swa_checkpoint`.

    Returns
    -------
    Path
        The folder.
    """
    from spikecode.models.hybrid_moe import SpikingBrainMoEForCausalLM
    from spikecode.models.moe_config import HybridMoEConfig

    config = HybridMoEConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        sliding_window=sliding_window,
        rope_theta=rope_theta,
        full_attention_layers=(
            (num_layers - 1,) if full_attention_layers is None else tuple(full_attention_layers)
        ),
        moe_layers=tuple(range(1, num_layers, 2)) if moe_layers is None else tuple(moe_layers),
        num_experts=num_experts,
        num_experts_per_tok=num_experts_per_tok,
        num_sink_tokens=num_sink_tokens,
        torch_dtype="bfloat16",
    )
    tokenizer = _tokenizer(with_tokenizer, vocab_size)
    with torch.device("meta"):
        model = SpikingBrainMoEForCausalLM(config)
    tensors = _tiny_tensors(model, seed=seed, w8aspike=False)
    return _write_folder(path, tensors, config.to_dict(), shards, tokenizer)


def rounding_excess(
    actual: Any,
    expected: Any,
    *,
    ops: float,
    dtype: Any = None,
    rtol: float = 0.0,
    axis: int = -1,
) -> float:
    """How far ``actual`` strays from ``expected`` beyond the rounding of ``ops`` steps.

    Results computed in another order (another machine's BLAS blocking, thread count or
    SIMD width, a chunked against a recurrent form, a cached against a full pass) differ
    by rounding, and that rounding follows from the numerics, not from the value
    compared: a dot product or matmul over a row rounds by about ``eps`` times the
    magnitude of its terms, which for the activations and logits of a layer is the norm
    of the row, not the element's own value (an element near 1e-4 in a row of norm 10
    carries an error near ``eps · 10``). So element ``i`` of a row may differ by

        ``rtol · |expected_i| + ops · eps · ||expected_row||_2``

    with ``eps`` the machine epsilon of ``dtype`` (default: the dtype ``expected``
    was computed in) and ``ops`` the number of rounding steps, each bounded by one
    ``eps · ||row||``, that may differ between the two computations. ``rtol`` covers a
    rounding of the value itself (a cast to a narrower type: half its ulp).

    Parameters
    ----------
    actual, expected
        Arrays or tensors of one shape (any device; compared in float64).
    ops
        Rounding steps allowed, each ``eps · ||row||``.
    dtype
        Whose epsilon (NumPy or torch float dtype); default ``expected``'s.
    rtol
        Relative allowance per element.
    axis
        The axis along which a row's norm is taken.

    Returns
    -------
    float
        The largest ``|actual - expected| - rtol · |expected|``, in units of
        ``eps · ||row||``: at most ``ops`` when the two agree. Use
        :func:`assert_close_to_rounding` to assert it.
    """
    import numpy as np

    def as_array(x: Any) -> tuple[np.ndarray, Any]:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().to(torch.float64).numpy(), x.dtype
        a = np.asarray(x)
        return a.astype(np.float64), a.dtype

    a, _ = as_array(actual)
    e, own = as_array(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: {a.shape} != {e.shape}")
    chosen = own if dtype is None else dtype
    if isinstance(chosen, torch.dtype):
        eps = torch.finfo(chosen).eps
    else:
        eps = float(np.finfo(chosen).eps)
    norm = np.sqrt(np.sum(e * e, axis=axis, keepdims=True))
    unit = eps * np.maximum(norm, np.finfo(np.float64).tiny)
    excess = (np.abs(a - e) - rtol * np.abs(e)) / unit
    return float(excess.max()) if excess.size else 0.0


def assert_close_to_rounding(
    actual: Any,
    expected: Any,
    *,
    ops: float,
    dtype: Any = None,
    rtol: float = 0.0,
    axis: int = -1,
) -> None:
    """Assert that ``actual`` equals ``expected`` up to the rounding of ``ops`` steps.

    See :func:`rounding_excess` for the bound and its parameters.

    Raises
    ------
    AssertionError
        Some element differs by more; the message gives the excess in units of
        ``eps · ||row||``.
    """
    excess = rounding_excess(actual, expected, ops=ops, dtype=dtype, rtol=rtol, axis=axis)
    if excess > ops:
        raise AssertionError(
            f"results differ by up to {excess:.3g} x eps x ||row|| beyond rtol = {rtol}, "
            f"more than the {ops} rounding steps allowed"
        )
