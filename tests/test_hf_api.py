"""The Hugging Face API a release user expects, and a W8ASpike folder that loads as W8ASpike."""

from __future__ import annotations

import pytest
import torch

from spikecode.errors import SpikecodeError
from spikecode.models import (
    GLAswaConfig,
    GLASwaForCausalLM,
    GLAswaForCausalLM,
    load_checkpoint,
)
from spikecode.models.cache import GLASwaCache
from spikecode.nn import W8ASpikeLinear, swap_linears
from spikecode.nn.recipes import ReleaseQuantLinear
from spikecode.testing import write_tiny_gla_swa_checkpoint

IDS = torch.tensor([[5, 9, 3, 7, 1, 2], [4, 6, 11, 12, 13, 14]])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    plain = write_tiny_gla_swa_checkpoint(root / "plain", with_tokenizer=True)
    w8 = write_tiny_gla_swa_checkpoint(root / "w8", w8aspike=True)
    # The release ships its modeling code beside the weights (auto_map): it must never
    # run, even with trust_remote_code=True.
    for folder in (plain, w8):
        for name in ("configuration_gla_swa.py", "modeling_gla_swa.py"):
            (folder / name).write_text("raise RuntimeError('folder code ran')\n")
    return plain, w8


def test_release_class_names_resolve():
    assert GLAswaForCausalLM is GLASwaForCausalLM
    from spikecode.models import GLASwaPretrainedConfig
    from spikecode.models.gla_swa import GLAswaConfig as from_module

    assert GLAswaConfig is from_module is GLASwaPretrainedConfig


def test_from_pretrained_is_the_checked_loader_and_runs_no_folder_code(folders):
    plain, _ = folders
    model = GLAswaForCausalLM.from_pretrained(
        plain, torch_dtype=torch.float32, trust_remote_code=True, low_cpu_mem_usage=True
    )
    loaded = load_checkpoint(plain, dtype=torch.float32)
    assert isinstance(model, GLASwaForCausalLM) and not model.training
    assert model.dtype == torch.float32
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # "auto" (and nothing) keeps the stored bfloat16
    assert GLAswaForCausalLM.from_pretrained(plain, dtype="auto").dtype == torch.bfloat16


def test_release_config_reads_and_builds_the_architecture(folders):
    plain, _ = folders
    config = GLAswaConfig.from_pretrained(plain)
    assert config.use_cache is True and config.sliding_window == 8
    model = GLAswaForCausalLM(config)
    loaded = load_checkpoint(plain)
    assert model.gla_config == loaded.model.gla_config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in loaded.model.state_dict().items()}


def test_from_pretrained_refusals_point_at_load_checkpoint(folders, tmp_path):
    plain, _ = folders
    with pytest.raises(SpikecodeError, match="downloads nothing"):
        GLAswaForCausalLM.from_pretrained("Panyuqi/V1-7B-base")
    with pytest.raises(SpikecodeError, match="load_checkpoint"):
        GLAswaForCausalLM.from_pretrained(plain, revision="main")
    with pytest.raises(SpikecodeError, match="load_checkpoint"):
        GLAswaForCausalLM.from_pretrained(plain, None)


def test_w8aspike_folder_loads_as_w8aspike(folders):
    _, w8 = folders
    loaded = load_checkpoint(w8, dtype=torch.float32)
    assert not any(isinstance(m, ReleaseQuantLinear) for m in loaded.model.modules())
    # the one documented call, and the same through from_pretrained
    released = load_checkpoint(w8, dtype=torch.float32, recipe="release")
    by_hand = load_checkpoint(w8, dtype=torch.float32)
    swap_linears(by_hand.model, recipe="release", scales=by_hand.quant_scales)
    hub = GLAswaForCausalLM.from_pretrained(w8, torch_dtype=torch.float32)
    q_proj = released.model.model.layers[0].attn.q_proj
    assert isinstance(q_proj, ReleaseQuantLinear)
    assert torch.equal(q_proj.scales, loaded.quant_scales["model.layers.0.attn.q_proj"])
    assert released.model.model.layers[0].release_numerics
    with torch.no_grad():
        expected = by_hand.model(IDS).logits
        assert torch.equal(released.model(IDS).logits, expected)
        assert torch.equal(hub(IDS).logits, expected)
        assert not torch.equal(loaded.model(IDS).logits, expected)
    with pytest.raises(SpikecodeError, match="unknown recipe"):
        load_checkpoint(w8, recipe="w8a8")
    # all-linear takes the folder's scales too
    spec = load_checkpoint(w8, dtype=torch.float32, recipe="all-linear").model
    layer = spec.model.layers[0].attn.q_proj
    assert isinstance(layer, W8ASpikeLinear)
    assert torch.equal(layer.scales.reshape(-1), q_proj.scales.reshape(-1))


def test_labels_give_the_causal_lm_loss(folders):
    model = load_checkpoint(folders[0], dtype=torch.float64).model
    labels = IDS.clone()
    labels[0, 2] = -100
    with torch.no_grad():
        out = model(IDS, labels=labels)
        loss, logits = model(IDS, labels=labels, return_dict=False)
    flat = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    target = labels[:, 1:].reshape(-1)
    keep = target != -100
    expected = -torch.log_softmax(flat[keep], -1)[torch.arange(int(keep.sum())), target[keep]]
    torch.testing.assert_close(out.loss, expected.mean(), rtol=0, atol=1e-12)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    for bad in (IDS[:, :3], IDS.float(), torch.full_like(IDS, 10_000)):
        with pytest.raises(SpikecodeError, match="labels"):
            model(IDS, labels=bad)


def test_inputs_embeds_equal_input_ids(folders):
    model = load_checkpoint(folders[0], dtype=torch.float64).model
    with torch.no_grad():
        by_ids = model(IDS).logits
        by_embeds = model(inputs_embeds=model.get_input_embeddings()(IDS)).logits
    assert torch.equal(by_ids, by_embeds)
    with pytest.raises(SpikecodeError, match="exactly one"):
        model(IDS, inputs_embeds=model.get_input_embeddings()(IDS))
    with pytest.raises(SpikecodeError, match="inputs_embeds must be"):
        model(inputs_embeds=torch.zeros(2, 3, 5))
    out = model.generate(
        inputs_embeds=model.get_input_embeddings()(IDS), max_new_tokens=3, do_sample=False
    )
    assert torch.equal(out, model.generate(IDS, max_new_tokens=3, do_sample=False)[:, 6:])


def test_cache_names_use_cache_and_dtype(folders):
    model = load_checkpoint(folders[0]).model  # stored bfloat16
    assert model.config.use_cache is True
    with torch.no_grad():
        out = model(IDS[:, :4], use_cache=True)
        assert out.logits.dtype == torch.bfloat16
        assert isinstance(out.past_key_values, GLASwaCache) and out.past_key_values is out.cache
        step = model(IDS[:, 4:5], past_key_values=out.past_key_values)
        full = model(IDS[:, :5]).logits
    assert torch.equal(step.logits[:, -1], full[:, -1])
    # generate() hands over transformers' float32 copies, exactly the bfloat16 values
    gen = model.generate(
        IDS[:, :4], max_new_tokens=1, do_sample=False, output_logits=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    assert torch.equal(gen.logits[0], full[:, 3].float())
