"""The ``release`` recipe rounds where the release rounds: against tests/release_reference.py.

The reference is written from the release's code in its dtype flow (see its docstring),
not from spikecode's model; the two GPU kernels are stood in for by spikecode's float32
functions in both, so every difference left would be a rounding point.
"""

from __future__ import annotations

import pytest
import release_reference as ref
import torch

from spikecode.models import load_checkpoint
from spikecode.testing import write_tiny_gla_swa_checkpoint

DTYPES = [torch.bfloat16, torch.float32]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("bf16") / "w8", w8aspike=True, sliding_window=6, seed=3
    )


def both(folder, dtype):
    model = load_checkpoint(folder, dtype=dtype, recipe="release").model
    config, tensors = ref.read_release_folder(folder, dtype)
    return model, config, tensors


IDS = torch.randint(0, 512, (2, 19), generator=torch.Generator().manual_seed(11))


def hidden(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 19, 128, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_end_to_end_logits_are_the_reference_bit_for_bit(folder, dtype):
    model, config, tensors = both(folder, dtype)
    with torch.no_grad():
        got = model(IDS).logits
        expected = ref.forward(IDS, tensors, config)
    assert got.dtype == expected.dtype == dtype
    assert torch.equal(got, expected)


def test_without_the_release_rounding_bf16_differs(folder):
    # What the recipe did before: rotary, coders, GLA output and norms in float32.
    model, config, tensors = both(folder, torch.bfloat16)
    for module in model.modules():
        if hasattr(type(module), "release_numerics"):
            module.release_numerics = False
    with torch.no_grad():
        assert not torch.equal(model(IDS).logits, ref.forward(IDS, tensors, config))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_module_is_the_reference_bit_for_bit(folder, dtype):
    model, config, tensors = both(folder, dtype)
    eps = config["norm_eps"]
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            p = f"model.layers.{i}"
            x = hidden(dtype, seed=i)
            normed = layer.attn_norm(x)
            assert torch.equal(normed, ref.fla_rms_norm(x, tensors[f"{p}.attn_norm.weight"], eps))
            if i in config["attn_layers"]:
                expected = ref.window_attention(normed, tensors, f"{p}.attn", config)
            else:
                expected = ref.gla_attention(normed, tensors, f"{p}.attn", config)
            assert torch.equal(layer.attn(normed), expected), f"{p}.attn"
            assert torch.equal(layer.mlp(normed), ref.glu(normed, tensors, f"{p}.mlp")), p
            assert torch.equal(layer(x), ref.block(x, tensors, i, config)), p
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                got = layer.attn.get_submodule(name)(x)
                assert torch.equal(got, ref.quant_linear(x, tensors, f"{p}.attn.{name}")), name


def test_rotary_and_window_coders_round_in_the_model_dtype(folder):
    # The rotated q and k a window layer hands its coders are the release's bf16 values.
    model, config, tensors = both(folder, torch.bfloat16)
    attn = model.model.layers[1].attn
    seen = {}
    hooks = [
        getattr(attn, site).register_forward_hook(
            lambda m, a, out, site=site: seen.update({site: (a[0], out)})
        )
        for site in ("q_act", "k_act")
    ]
    x = hidden(torch.bfloat16)
    with torch.no_grad():
        attn(x)
    for h in hooks:
        h.remove()
    q = ref.quant_linear(x, tensors, "model.layers.1.attn.q_proj").view(2, 19, 4, 32)
    cos, sin = ref.rotary(q, torch.arange(19)[None], 32, config["rope_theta"])
    rotated = q * cos[:, :, None] + ref.rotate_half(q) * sin[:, :, None]
    assert seen["q_act"][0].dtype == torch.bfloat16
    assert torch.equal(seen["q_act"][0], rotated)
    spikes, vth = ref.dynamic_spikes(rotated)
    assert torch.equal(seen["q_act"][1], (spikes * vth).to(torch.bfloat16))


def test_calibration_under_the_release_recipe_sees_the_release_dtype_flow(tmp_path, monkeypatch):
    import contextlib

    import spikecode.calibration.run as run
    from spikecode.calibration import calibrate
    from spikecode.nn.recipes import release_numerics

    folder = write_tiny_gla_swa_checkpoint(tmp_path / "tok", with_tokenizer=True)
    loaded = load_checkpoint(folder)  # bfloat16, the float model
    attn = loaded.model.model.layers[1].attn
    seen = []
    handle = attn.q_act.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    ids = torch.tensor([[5, 9, 3, 7, 1, 2]])
    with torch.no_grad():
        with release_numerics(loaded.model):
            assert attn.release_numerics
            loaded.model(ids)
        loaded.model(ids)
    handle.remove()
    assert not attn.release_numerics  # restored
    assert (seen[0].dtype, seen[1].dtype) == (torch.bfloat16, torch.float32)
    texts = ["hello spiking brain model", "the token count"]
    flow = calibrate(loaded, texts, k=[3.0], recipe="release").to_dict()
    assert not attn.release_numerics
    # what calibration measured before: spikecode's float32 numerics at the sites
    monkeypatch.setattr(run, "release_numerics", lambda model: contextlib.nullcontext())
    plain = calibrate(loaded, texts, k=[3.0], recipe="release").to_dict()
    q = next(i for i, layer in enumerate(flow["layers"]) if layer["name"].endswith("q_act"))
    assert flow["layers"][q]["by_k"] != plain["layers"][q]["by_k"]
