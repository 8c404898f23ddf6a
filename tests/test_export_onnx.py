"""Tests of spikecode.exporters: the registry and the ONNX export of W8ASpike models."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from spikecode.errors import SpikecodeError
from spikecode.exporters import EXPORTERS, get_exporter, register_exporter
from spikecode.exporters import onnx as onnx_exporter
from spikecode.exporters.onnx import export_onnx_layer, export_onnx_model
from spikecode.nn import AdaptiveSpike, W8ASpikeLinear, swap_linears

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = [(2, 5), (3, 11)]  # two (batch, sequence) sizes: the axes must be dynamic


def run_onnx(path, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in feeds.items()})


def random_linear(n_in: int, n_out: int, seed: int, bias: bool = True) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.05)
        if bias:
            linear.bias.copy_(torch.randn(n_out, generator=g))
    return linear


def activations(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.empty(*shape[:-1], 1).uniform_(-2, 2, generator=g)
    return torch.randn(*shape, generator=g) * scale


def assert_matches(got: np.ndarray, expected: torch.Tensor) -> None:
    # Only the order of the float rescale differs; one flipped spike count would move an
    # output by Vth · σ · |w|, orders of magnitude above this tolerance.
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- one layer


def test_layer_graph_is_integer_and_checks(tmp_path):
    path = export_onnx_layer(random_linear(256, 32, seed=0), tmp_path / "layer.onnx")
    assert path == tmp_path / "layer.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    initializers = {i.name: i for i in model.graph.initializer}
    weight = initializers["weight_q"]
    assert weight.data_type == onnx.TensorProto.INT8
    assert list(weight.dims) == [2, 128, 32]  # [groups, group size, out]
    assert list(initializers["scales"].dims) == [2, 1, 32]
    assert sum(int(np.prod(i.dims)) for i in initializers.values()) == 256 * 32 + 2 * 32 + 32
    ops = [node.op_type for node in model.graph.node]
    assert {"Abs", "ReduceMean", "Clip", "Round", "MatMul", "ReduceSum"} <= set(ops)
    assert "Gemm" not in ops and "MatMulInteger" not in ops
    # The only matrix product multiplies integers: its output is int64.
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    matmuls = [node for node in model.graph.node if node.op_type == "MatMul"]
    assert [types[node.output[0]] for node in matmuls] == [onnx.TensorProto.INT64]
    (x,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence", 256]


@pytest.mark.parametrize(("group_size", "bias"), [(128, True), (None, True), (64, False)])
def test_layer_onnxruntime_matches_torch(tmp_path, group_size, bias):
    linear = random_linear(384, 24, seed=1, bias=bias)
    layer = W8ASpikeLinear.from_linear(linear, k=2.5, group_size=group_size)
    path = export_onnx_layer(layer, tmp_path / "layer.onnx")
    for i, (batch, seq) in enumerate(SIZES):
        x = activations(batch, seq, 384, seed=i)
        (y,) = run_onnx(path, {"x": x})
        assert y.shape == (batch, seq, 24)
        assert_matches(y, layer(x))


def test_layer_k_override_and_plain_linear(tmp_path):
    linear = random_linear(128, 8, seed=2)
    layer = W8ASpikeLinear.from_linear(linear, k=3.0, group_size=None)
    path = export_onnx_layer(layer, tmp_path / "k2.onnx", k=2.0)
    assert layer.k == 3.0  # the layer itself is untouched
    x = activations(2, 4, 128, seed=3)
    (y,) = run_onnx(path, {"x": x})
    layer.k = 2.0
    assert_matches(y, layer(x))
    layer.k = 3.0
    assert not np.allclose(y, layer(x).detach().numpy(), rtol=1e-3)
    # A bare layer is also a model.
    path = export_onnx_model(layer, tmp_path / "model.onnx", x)
    assert isinstance(layer, W8ASpikeLinear)
    (y,) = run_onnx(path, {"x": x})
    assert_matches(y, layer(x))
    # An nn.Linear is quantized on the way (k and group size as given).
    path = export_onnx_layer(linear, tmp_path / "linear.onnx", k=4.0, group_size=64)
    (y,) = run_onnx(path, {"x": x})
    assert_matches(y, W8ASpikeLinear.from_linear(linear, 4.0, 64)(x))


# --------------------------------------------------------------------------- whole models


class Block(nn.Module):
    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up_proj = random_linear(dim, 2 * dim, seed)
        self.down_proj = random_linear(2 * dim, dim, seed + 1)
        self.spike = AdaptiveSpike(2.5)

    def forward(self, x):
        return x + self.down_proj(torch.relu(self.up_proj(self.spike(self.norm(x)))))


class Tiny(nn.Module):
    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(dim, 0), Block(dim, 2))
        self.lm_head = random_linear(dim, 10, 4)

    def forward(self, x):
        return self.lm_head(self.blocks(x))


def test_model_onnxruntime_matches_torch(tmp_path):
    model = Tiny()
    model.train()
    model.blocks[1].eval()
    names = swap_linears(
        model,
        k={
            "blocks.0.up_proj": 2.0,
            "blocks.0.down_proj": 3.0,
            "blocks.1.up_proj": 3.5,
            "blocks.1.down_proj": 4.0,
        },
    )
    assert len(names) == 4
    path = export_onnx_model(model, tmp_path / "tiny.onnx", activations(2, 5, 128))
    # The model is given back as it was: its own modules, its own training flags.
    assert isinstance(model.blocks[0].up_proj, W8ASpikeLinear)
    assert isinstance(model.blocks[0].spike, AdaptiveSpike)
    assert model.training and model.blocks[0].training and not model.blocks[1].training
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["x"]
    assert [o.name for o in graph.output] == ["output"]
    int8 = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 4
    model.eval()
    for i, (batch, seq) in enumerate(SIZES):
        x = activations(batch, seq, 128, seed=10 + i)
        (y,) = run_onnx(path, {"x": x})
        assert y.shape == (batch, seq, 10)
        assert_matches(y, model(x))


def test_model_with_tuple_inputs_and_outputs(tmp_path):
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = random_linear(128, 4, 7)
            self.b = random_linear(128, 6, 8)

        def forward(self, x, scale):
            return self.a(x) * scale, self.b(x)

    model = TwoHeads()
    swap_linears(model, group_size=None)
    example = (activations(2, 128, seed=1), torch.ones(2, 1))
    path = export_onnx_model(model, tmp_path / "two.onnx", example, output_names=["a", "b"])
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["input_0", "input_1"]
    assert [o.name for o in graph.output] == ["a", "b"]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 128]  # a float [batch, features] input keeps its features
    x, scale = activations(5, 128, seed=2), torch.full((5, 1), 2.0)
    a, b = run_onnx(path, {"input_0": x, "input_1": scale})
    ea, eb = model(x, scale)
    assert_matches(a, ea)
    assert_matches(b, eb)


# Hugging Face's masking code and the exporter's aten::index lowering warn while tracing;
# running the graph at two other sizes below is what shows the trace generalizes.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:Exporting aten..index operator:UserWarning")
def test_hugging_face_model(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = BertModel(config).eval()
    names = swap_linears(model, group_size=32)
    assert len(names) == 13  # 6 per layer and the pooler
    ids = torch.randint(0, 100, (2, 7))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    path = export_onnx_model(model, tmp_path / "bert.onnx", example)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["last_hidden_state", "pooler_output"]
    for batch, seq in [(3, 12), (1, 5)]:
        ids = torch.randint(0, 100, (batch, seq))
        mask = torch.ones_like(ids)
        mask[0, -2:] = 0  # padding
        hidden, pooled = run_onnx(path, {"input_ids": ids, "attention_mask": mask})
        expected = model(input_ids=ids, attention_mask=mask)
        assert_matches(hidden, expected.last_hidden_state)
        assert_matches(pooled, expected.pooler_output)


# The model's input checks and chunk loops convert traced sizes to Python values.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_gla_swa_model(tmp_path):
    from spikecode.models import GLASwaConfig, GLASwaForCausalLM

    config = GLASwaConfig(
        vocab_size=32,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=4,
        rope_theta=1e4,
        attn_layers=(1,),
    )
    torch.manual_seed(1)
    model = GLASwaForCausalLM(config).eval()
    names = swap_linears(model, group_size=16)  # gk_proj.1 has 16 inputs
    assert "lm_head" not in names
    assert len(names) == 16
    path = export_onnx_model(model, tmp_path / "gla.onnx", torch.randint(0, 32, (2, 6)))
    for batch, seq in [(3, 9), (1, 70)]:  # 70 passes the 64-token GLA chunk
        ids = torch.randint(0, 32, (batch, seq))
        (logits,) = run_onnx(path, {"x": ids})
        assert_matches(logits, model(ids).logits)


def test_export_replaces_existing_file(tmp_path):
    path = tmp_path / "layer.onnx"
    path.write_bytes(b"old")
    export_onnx_layer(random_linear(128, 4, seed=0), path)
    onnx.checker.check_model(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.onnx"]


# --------------------------------------------------------------------------- registry


def test_registry():
    assert get_exporter("onnx") is export_onnx_model
    assert EXPORTERS["onnx"] is export_onnx_model
    assert {"onnx", "nir", "events"} <= set(EXPORTERS)  # built-ins known without imports
    with pytest.raises(SpikecodeError, match="unknown export format 'tflite'") as info:
        get_exporter("tflite")
    assert str(info.value).endswith("supported formats: " + ", ".join(sorted(EXPORTERS)))
    with pytest.raises(SpikecodeError, match="unknown export format"):
        get_exporter(None)

    def fake(model, path):
        return path

    try:
        assert register_exporter("fake-format")(fake) is fake
        assert get_exporter("fake-format") is fake
        assert register_exporter("fake-format")(fake) is fake  # idempotent for the same one
        with pytest.raises(SpikecodeError, match="already has an exporter"):
            register_exporter("fake-format")(lambda model, path: path)
        with pytest.raises(SpikecodeError, match="fake-format") as info:
            get_exporter("nir-typo")
        assert str(info.value).endswith(", ".join(sorted(EXPORTERS)))
    finally:
        EXPORTERS.pop("fake-format", None)
    with pytest.raises(SpikecodeError, match="non-empty string"):
        register_exporter("")


# --------------------------------------------------------------------------- failures


def test_unwritable_paths_leave_nothing(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    layer = random_linear(128, 4, seed=0)
    with pytest.raises(SpikecodeError, match="cannot write the ONNX file"):
        export_onnx_layer(layer, blocker / "layer.onnx")
    with pytest.raises(SpikecodeError, match="cannot write the ONNX file"):
        export_onnx_layer(layer, tmp_path / "missing" / "layer.onnx")
    # A directory in the way fails only at the final rename: the temporary file must go.
    (tmp_path / "taken.onnx").mkdir()
    with pytest.raises(SpikecodeError, match="cannot write the ONNX file"):
        export_onnx_layer(layer, tmp_path / "taken.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "taken.onnx"]
    assert not any((tmp_path / "taken.onnx").iterdir())


def test_failed_export_leaves_nothing(tmp_path):
    class Unsupported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = random_linear(128, 4, 0)

        def forward(self, x):
            return torch.histc(self.proj(x), bins=4)

    model = Unsupported()
    swap_linears(model)
    with pytest.raises(SpikecodeError, match="ONNX export failed: .*histc"):
        export_onnx_model(model, tmp_path / "bad.onnx", activations(2, 3, 128))
    assert list(tmp_path.iterdir()) == []
    assert isinstance(model.proj, W8ASpikeLinear)  # restored after the failure


def test_bad_arguments(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    layer = random_linear(128, 4, seed=0)
    for opset in (12, 21, "17", True):
        with pytest.raises(SpikecodeError, match="opset must be an int from 13 to 20"):
            export_onnx_layer(layer, path, opset=opset)
    with pytest.raises(SpikecodeError, match="W8ASpikeLinear or an nn.Linear"):
        export_onnx_layer(nn.Conv1d(2, 2, 1), path)
    plain = nn.Sequential(random_linear(128, 4, seed=0))
    with pytest.raises(SpikecodeError, match="call spikecode.nn.swap_linears"):
        export_onnx_model(plain, path, activations(2, 128))
    swapped = nn.Sequential(random_linear(128, 4, seed=0), nn.LayerNorm(4))
    swap_linears(swapped)
    with pytest.raises(SpikecodeError, match="example_inputs must be"):
        export_onnx_model(swapped, path, ())
    with pytest.raises(
        SpikecodeError, match="got 2 input and 1 output names for 1 inputs and 1 outputs"
    ):
        export_onnx_model(
            swapped, path, activations(2, 128), input_names=["a", "b"], output_names=["y"]
        )
    half = nn.Sequential(random_linear(128, 4, seed=0), nn.LayerNorm(4))
    swap_linears(half)
    half[1].half()
    with pytest.raises(SpikecodeError, match=r"torch\.float16 weights.*model\.float\(\)"):
        export_onnx_model(half, path, activations(2, 128))
    monkeypatch.setattr(onnx_exporter, "_MAX_BYTES", 100)
    with pytest.raises(SpikecodeError, match="over the 2 GiB limit"):
        export_onnx_model(swapped, path, activations(2, 128))
    monkeypatch.undo()

    class Returns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = W8ASpikeLinear.from_linear(random_linear(128, 4, 0))

        def forward(self, x):
            return {"y": self.proj(x), "note": "text"}

    with pytest.raises(SpikecodeError, match="returns a tensor, or a tuple or dict of tensors"):
        export_onnx_model(Returns(), path, activations(2, 128))
    assert list(tmp_path.iterdir()) == []
