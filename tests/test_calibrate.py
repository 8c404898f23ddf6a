"""Streaming calibration statistics against statistics of the full activations."""

import gc
import json
import math
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikecode
from spikecode import calibration as cal
from spikecode.calibration import (
    VTH_EDGES,
    CalibrationData,
    LayerAccumulator,
    calibrate,
    counting,
    k_key,
    load_calibration_data,
    padded_batches,
    stats_from_histogram,
    tokenize_data,
)
from spikecode.data import load_corpus
from spikecode.energy import channel_activity
from spikecode.errors import SpikecodeError
from spikecode.models import LinearInputHooks
from spikecode.models.capture import collect_linear_inputs, list_linear_layers
from spikecode.models.checkpoint import load_checkpoint, wrap_module
from spikecode.nn import functional as F
from spikecode.testing import write_tiny_gla_swa_checkpoint

SCHEMES = list(spikecode.SCHEMES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", with_tokenizer=True
    )
    return load_checkpoint(folder)


def reference(x, k, block_sizes):
    """Everything the accumulator reports, from the whole activation at once."""
    counts, vth = spikecode.adaptive_counts(x, k=k)
    return counts, vth, channel_activity(counts, block_sizes)


def check_against_reference(result, x, ks, schemes, block_sizes, *, vth_rtol=0.0):
    assert result.tokens == x.shape[0]
    for k in ks:
        counts, vth, activity = reference(x, k, block_sizes)
        entry = result.by_k[k_key(k)]
        for scheme in schemes:
            assert entry.schemes[scheme] == spikecode.spike_stats(counts, scheme), (k, scheme)
        assert entry.activity == activity
        assert entry.max_abs_count == int(np.abs(counts).max())
        hist = entry.count_histogram
        inside = counts[np.abs(counts) <= 64]
        assert list(hist.counts) == np.bincount(inside.ravel() + 64, minlength=129).tolist()
        assert hist.below == int((counts < -64).sum()) and hist.above == int((counts > 64).sum())
        v = vth.astype(np.float64)
        assert entry.vth.mean == pytest.approx(v.mean(), rel=1e-12)
        assert entry.vth.std == pytest.approx(v.std(), rel=1e-9, abs=1e-300)
        assert entry.vth.min == pytest.approx(v.min(), rel=vth_rtol)
        assert entry.vth.max == pytest.approx(v.max(), rel=vth_rtol)
        bins = np.clip(np.searchsorted(VTH_EDGES, v, side="right") - 1, 0, 31)
        assert list(entry.vth.counts) == np.bincount(bins, minlength=32).tolist()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize(
    ("ks", "block_sizes"),
    [
        ((3.0,), (16, 64, 256)),
        ((2.0, 2.5, 3.0, 3.5, 4.0), (16, 64, 256)),
        ((8.0, 0.5, 4.0, 1.0, 2.0, 16.0, 3.0), (7, 48, 16, 1)),  # two groups, odd blocks
    ],
)
def test_streaming_equals_full_activation(backend, ks, block_sizes, rng):
    # Heavy tails (counts beyond the dense range), near-silent tokens (clamped Vth), an
    # all-zero token, fed in uneven chunks.
    x = (rng.standard_t(2, size=(90, 300)) * 10.0 ** rng.uniform(-7, 2, size=(90, 1))).astype(
        np.float32
    )
    x[3] = 0.0
    x[5, 17] = 3e4
    acc = LayerAccumulator(
        "layer", 300, 1, ks, schemes=SCHEMES, block_sizes=block_sizes, backend=backend
    )
    for chunk in np.array_split(x, [7, 8, 40, 41, 77]):
        acc.update(torch.from_numpy(chunk))
    result = acc.result()
    assert acc.error_tokens == 0 and result.by_k[k_key(ks[0])].output_rel_error is None
    check_against_reference(result, x, ks, SCHEMES, block_sizes)


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    rows=st.integers(1, 30),
    cols=st.integers(1, 70),
    ks=st.lists(
        st.sampled_from([0.25, 1.0, 1.5, 2.0, 3.0, 7.5, 40.0]), min_size=1, max_size=7, unique=True
    ),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_streaming_property(data, rows, cols, ks, dtype):
    gen = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (gen.standard_normal((rows, cols)) * 10.0 ** gen.uniform(-8, 3, (rows, 1))).astype(dtype)
    sizes = tuple(data.draw(st.lists(st.integers(1, 80), min_size=1, max_size=3, unique=True)))
    backend = data.draw(st.sampled_from(["numba", "torch"]))
    acc = LayerAccumulator("l", cols, 1, ks, schemes=SCHEMES, block_sizes=sizes, backend=backend)
    cut = data.draw(st.integers(0, rows))
    for part in (x[:cut], x[cut:]):
        acc.update(torch.from_numpy(part))
    # Every path sums |x| in SPEC §2's one order: min and max Vth equal, float64 too.
    check_against_reference(acc.result(), x, ks, SCHEMES, sizes)


def test_spill_overflow_and_bf16(monkeypatch, rng):
    monkeypatch.setattr(counting, "_SPILL", 2)  # the kernel's buffer overflows: exact recount
    x = torch.from_numpy((rng.standard_cauchy((40, 128)) * 50).astype(np.float32))
    x = x.to(torch.bfloat16)
    acc = LayerAccumulator("l", 128, 1, [2.0, 6.0, 30.0], schemes=SCHEMES)
    acc.update(x)
    result = acc.result()
    assert result.by_k["30"].max_abs_count > counting._DENSE_LIMIT
    check_against_reference(result, x.float().numpy(), [2.0, 6.0, 30.0], SCHEMES, (16, 64, 256))


def test_non_finite_and_bad_rows():
    for backend in ("numba", "torch"):
        acc = LayerAccumulator("l", 4, 1, [3.0], backend=backend)
        with pytest.raises(SpikecodeError, match="NaN or Inf"):
            acc.update(torch.tensor([[1.0, float("nan"), 0.0, 1.0]]))
    acc = LayerAccumulator("l", 4, 1, [3.0])
    with pytest.raises(SpikecodeError, match=r"\[n, 4\]"):
        acc.update(torch.zeros(2, 5))
    with pytest.raises(SpikecodeError, match="no input"):
        acc.result()
    with pytest.raises(SpikecodeError, match="error_rows"):
        LayerAccumulator("l", 4, 1, [3.0], error_rows=0)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(-300, 300), min_size=1, max_size=12, unique=True),
    data=st.data(),
    scheme=st.sampled_from(SCHEMES),
    window=st.integers(1, 4),
)
def test_stats_from_histogram_is_spike_stats(values, data, scheme, window):
    times = data.draw(st.lists(st.integers(1, 5), min_size=len(values), max_size=len(values)))
    full = np.repeat(np.array(values), times).astype(np.int32)
    expected = spikecode.spike_stats(full, scheme, window=window)
    assert (
        stats_from_histogram(np.array(values), np.array(times), scheme, window=window) == expected
    )


# ------------------------------------------------------------------------ output error


def error_reference(x, linear, k, w_q, scales):
    """SPEC §4's spike-driven layer (exact integer path) against the float64 layer."""
    with torch.no_grad():
        bias = None if linear.bias is None else linear.bias.double()
        y_spike = F.w8aspike_linear(x, w_q, scales, linear.bias, k).double()
        y_float = torch.nn.functional.linear(x.double(), linear.weight.double(), bias)
        rel = float(torch.linalg.vector_norm(y_spike - y_float) / torch.linalg.vector_norm(y_float))
        cos = float(torch.nn.functional.cosine_similarity(y_spike, y_float, dim=-1).mean())
    return rel, cos


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("n_in", [256, 100])  # scale groups of 128, or one scale per row
def test_output_error_matches_spec_layer(backend, n_in):
    torch.manual_seed(0)
    linear = nn.Linear(n_in, 24)
    x = torch.randn(50, n_in) * torch.rand(50, 1) * 4
    acc = LayerAccumulator(
        "l", n_in, 24, [2.0, 4.0], layer=linear, error_rows=None, backend=backend
    )
    for part in torch.split(x, 16):
        acc.update(part)
    result = acc.result()
    assert result.error_tokens == 50
    w_q, scales = F.quantize_weight_int8(linear.weight.detach(), 128 if n_in == 256 else None)
    for k in (2.0, 4.0):
        rel, cos = error_reference(x, linear, k, w_q, scales)
        entry = result.by_k[k_key(k)]
        assert entry.output_rel_error == pytest.approx(rel, rel=1e-4)
        assert entry.output_cosine == pytest.approx(cos, abs=1e-6)
    assert result.by_k["4"].output_rel_error < result.by_k["2"].output_rel_error


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_sums_kernel_equals_the_device_path(dtype, rng):
    # The CPU kernel against the tensor operations of other devices, with a zero float
    # row (cosine 0 against spikes, 1 against zero spikes).
    from spikecode.calibration.accumulator import _error_sums_torch

    rows, cols, n_k = 7, 33, 3
    y_float = rng.standard_normal((rows, cols)).astype(dtype)
    y_spike = (y_float + 0.1 * rng.standard_normal((n_k, rows, cols))).astype(dtype)
    y_float[2] = 0.0
    y_spike[1, 2] = 0.0
    y_spike[0, 4] = 0.0
    diff, cosine = np.zeros(n_k), np.zeros(n_k)
    reference = counting._error_sums(y_float, y_spike, diff, cosine)
    expected = _error_sums_torch(torch.from_numpy(y_float), torch.from_numpy(y_spike))
    np.testing.assert_allclose(diff, expected[0].numpy(), rtol=1e-12)
    assert reference == pytest.approx(float(expected[1]), rel=1e-12)
    np.testing.assert_allclose(cosine, expected[2].numpy(), rtol=1e-12)
    # row 2: float zero; k 1 spikes zero too (1), k 0 and 2 not (0)
    assert 0 < cosine[0] < rows - 1 and cosine[1] > cosine[0]


def test_output_error_honours_released_scales():
    torch.manual_seed(1)
    linear = nn.Linear(128, 16, bias=False)
    x = torch.randn(20, 128)
    # Released scales twice max|w| / 127: the weights round on a coarser grid.
    amax = linear.weight.detach().abs().amax(dim=1, keepdim=True)
    scales = (2 * amax / 127).unsqueeze(-1)  # [out, in/128, 1]
    acc = LayerAccumulator("l", 128, 16, [3.0], layer=linear, scales=scales, error_rows=None)
    acc.update(x)
    w_q, s = F.release_weight_to_int8(linear.weight.detach(), scales)
    rel, _ = error_reference(x, linear, 3.0, w_q, s)
    assert acc.result().by_k["3"].output_rel_error == pytest.approx(rel, rel=1e-4)
    plain = LayerAccumulator("l", 128, 16, [3.0], layer=linear, error_rows=None)
    plain.update(x)
    assert plain.result().by_k["3"].output_rel_error < rel


def test_error_rows_follow_the_stride_and_the_cap():
    linear = nn.Linear(8, 2)
    acc = LayerAccumulator("l", 8, 2, [3.0], layer=linear, error_rows=4, error_stride=100)
    for n in (1, 99, 100, 101, 250, 1000):
        acc.update(torch.randn(n, 8))
    # ceil(n / 100) rows per call, at least one, at most four
    assert acc.result().error_tokens == 1 + 1 + 1 + 2 + 3 + 4
    with pytest.raises(SpikecodeError, match="error_stride"):
        LayerAccumulator("l", 8, 2, [3.0], error_stride=0)


def test_error_rows_are_an_evenly_spaced_subset():
    torch.manual_seed(2)
    linear = nn.Linear(32, 8)
    parts = [torch.randn(n, 32) for n in (10, 2, 7)]
    acc = LayerAccumulator("l", 32, 8, [3.0], layer=linear, error_rows=3, error_stride=1)
    for part in parts:
        acc.update(part)
    result = acc.result()
    assert result.error_tokens == 3 + 2 + 3
    chosen = torch.cat(
        [
            p[[(2 * i + 1) * len(p) // (2 * min(3, len(p))) for i in range(min(3, len(p)))]]
            for p in parts
        ]
    )
    w_q, scales = F.quantize_weight_int8(linear.weight.detach(), None)
    rel, cos = error_reference(chosen, linear, 3.0, w_q, scales)
    assert result.by_k["3"].output_rel_error == pytest.approx(rel, rel=1e-4)
    assert result.by_k["3"].output_cosine == pytest.approx(cos, abs=1e-6)


@pytest.mark.parametrize(
    ("shape", "group", "dtype"),
    [
        ((40, 256), 128, torch.float32),
        ((9, 100), None, torch.float32),
        ((16, 128), 128, torch.bfloat16),
    ],
)
def test_fake_quantized_weights_equal_the_spec_functions(shape, group, dtype):
    torch.manual_seed(4)
    w = (torch.randn(shape) * torch.rand(shape[0], 1) * 5).to(dtype)
    w[0] = 0.0  # an all-zero group gets scale 1
    w[2, :5] = 1e-44  # subnormal maxima: the kernel decodes max|w| from its bit pattern
    w[3, 7] = 3.0e38
    expected = F.dequantize_weight_int8(*F.quantize_weight_int8(w, group))
    assert torch.equal(cal.fake_quantize_weight(w, group), expected)
    w[1, 3] = float("inf")
    with pytest.raises(SpikecodeError, match="non-finite"):
        cal.fake_quantize_weight(w, group)
    with pytest.raises(SpikecodeError, match="divisible"):
        cal.fake_quantize_weight(torch.ones(2, 10), 4)


def test_layers_share_one_buffer_for_their_quantized_weights():
    # The larger weight first, then a smaller one over the same buffer, then a float64
    # model's layer: each layer's error equals that of a layer measured alone.
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(256, 40), nn.Linear(40, 100), nn.Linear(100, 8))
    layers = [("0", 256, 40), ("1", 40, 100), ("2", 100, 8)]
    acc = cal.StatsAccumulator(model, layers, [2.0, 3.0], error_rows=None)
    assert len({id(a._scratch) for a in acc.accumulators.values()}) == 1
    x = torch.randn(30, 256)
    inputs = {"0": x, "1": model[0](x).detach(), "2": model[1](model[0](x)).detach()}
    for part in range(3):
        for name, rows in inputs.items():
            acc(name, rows[10 * part : 10 * (part + 1)])
    for name, result in zip(inputs, acc.results(), strict=True):
        alone = LayerAccumulator(
            name, *result_shape(layers, name), [2.0, 3.0], layer=model.get_submodule(name),
            error_rows=None,
        )  # fmt: skip
        alone.update(inputs[name])
        expected = alone.result()
        for key in ("2", "3"):
            assert result.by_k[key].output_sq_error == pytest.approx(
                expected.by_k[key].output_sq_error, rel=1e-6
            )
    scratch = next(iter(acc.accumulators.values()))._scratch
    assert scratch._data is not None and scratch._data.numel() == 256 * 40
    wide = torch.nn.Linear(64, 16).double()
    single = LayerAccumulator("d", 64, 16, [3.0], layer=wide, error_rows=None)
    single._scratch = scratch
    alone = LayerAccumulator("d", 64, 16, [3.0], layer=wide, error_rows=None)
    xd = torch.randn(12, 64, dtype=torch.float64)
    single.update(xd)
    alone.update(xd)
    assert single.result().by_k["3"] == alone.result().by_k["3"]
    assert scratch._data.numel() == 256 * 40  # large enough: not reallocated


def result_shape(layers, name):
    return next((n_in, n_out) for layer, n_in, n_out in layers if layer == name)


# ------------------------------------------------------------------------ memory


@pytest.mark.parametrize("with_error", [False, True])
def test_memory_stays_bounded(with_error, rng):
    linear = nn.Linear(64, 8)
    acc = LayerAccumulator("l", 64, 8, cal.DEFAULT_K, layer=linear if with_error else None)
    first = torch.from_numpy(rng.standard_normal((30, 64)).astype(np.float32))
    probe = weakref.ref(first)
    acc.update(first)
    size = acc.state_nbytes()
    del first
    gc.collect()
    assert probe() is None  # the accumulator keeps no reference to what it was fed
    for _ in range(60):
        acc.update(torch.from_numpy(rng.standard_normal((30, 64)).astype(np.float32)))
        assert acc._pending_rows <= cal.ERROR_FLUSH_ROWS
    assert acc.state_nbytes() == size  # histograms and sums only: independent of the data size
    assert acc.result().tokens == 61 * 30


def test_error_flushes_are_rare_at_7b_widths(monkeypatch):
    # Every flush quantizes the whole weight (about a hundred rows of the layer's own
    # forward pass): a SpikingBrain-7B down_proj input (18944 wide) must hold many rows
    # per flush, and the result must not depend on how the rows were grouped.
    torch.manual_seed(5)
    linear = nn.Linear(18944, 3)
    x = torch.randn(160, 18944)
    calls = []
    original = LayerAccumulator._quantized_weight

    def counted(self, dtype):
        calls.append(self._pending_rows)
        return original(self, dtype)

    monkeypatch.setattr(LayerAccumulator, "_quantized_weight", counted)
    acc = LayerAccumulator("l", 18944, 3, [3.0], layer=linear, error_rows=None)
    for part in x.split(40):
        acc.update(part)
    result = acc.result()
    assert result.error_tokens == 160
    assert min(calls[:-1], default=160) >= 128 and len(calls) <= 2
    # the same rows through small buffers give the same error (the sums are per row)
    monkeypatch.setattr(cal.accumulator, "ERROR_FLUSH_BYTES", 1 << 20)
    small = LayerAccumulator("l", 18944, 3, [3.0], layer=linear, error_rows=None)
    small.update(x)
    assert len(calls) > 2 + 10
    assert small.result().by_k["3"].output_rel_error == pytest.approx(
        result.by_k["3"].output_rel_error, rel=1e-6
    )


# ------------------------------------------------------------------------ whole models


class Toy(nn.Module):
    """Per-token model with integer-valued weights: every float sum is exact."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(16, 8)
        self.a = nn.Linear(8, 12)
        self.b = nn.Linear(12, 6)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randint(-4, 5, (16, 8), generator=gen).float())
            self.emb.weight[0] = 1000.0  # the padding id: any leak would show
            for layer in (self.a, self.b):
                layer.weight.copy_(torch.randint(-3, 4, layer.weight.shape, generator=gen) / 4)
                layer.bias.copy_(torch.randint(-3, 4, layer.bias.shape, generator=gen) / 4)

    def forward(self, input_ids, attention_mask=None):
        return self.b(torch.relu(self.a(self.emb(input_ids))))


class Shared(nn.Module):
    """``a`` and ``b`` read one tensor; ``c`` reads it too, except in single-sample batches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(16, 8)
        self.a, self.b, self.c = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        return self.a(h) + self.b(h) + self.c(h if input_ids.shape[0] > 1 else h + 1)


def run_accumulator(model, batches, *, share, backend=None):
    layers = list_linear_layers(model)
    acc = cal.StatsAccumulator(
        model, layers, (2.0, 3.0), schemes=SCHEMES, error_rows=None, backend=backend
    )
    with torch.no_grad(), LinearInputHooks(model, acc) as hooks:
        for ids, mask in batches:
            hooks.set_mask(mask)
            if share:
                acc.begin_batch()
            model(input_ids=ids, attention_mask=mask)
    return acc, acc.results()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_layers_reading_one_input_share_counting_exactly(backend):
    model = Shared()
    data = CalibrationData.from_ids([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12]])
    tokenized = tokenize_data(data, wrap_module(model))
    batches = list(padded_batches(tokenized, 2, torch.device("cpu"), 0))  # 2, 2, 1 samples
    shared, with_sharing = run_accumulator(model, batches, share=True, backend=backend)
    _, alone = run_accumulator(model, batches, share=False, backend=backend)
    accs = shared.accumulators
    assert accs["b"]._source is accs["a"]  # b counted nothing itself
    assert accs["c"]._source is None  # linked in batch 1, on its own since batch 3
    for x, y in zip(with_sharing, alone, strict=True):
        assert x.tokens == y.tokens == 12
        for key in x.by_k:
            ex, ey = x.by_k[key], y.by_k[key]
            assert dict(ex.schemes) == dict(ey.schemes)
            assert (ex.activity, ex.count_histogram, ex.vth.counts) == (
                ey.activity,
                ey.count_histogram,
                ey.vth.counts,
            )
            assert ex.vth.mean == pytest.approx(ey.vth.mean, rel=1e-12)
            assert ex.output_rel_error == pytest.approx(ey.output_rel_error, rel=1e-12)
    assert with_sharing[2].by_k["3"].schemes != with_sharing[0].by_k["3"].schemes


class WrittenInPlace(nn.Module):
    """``a`` reads h; h is then doubled in place, and ``b`` reads the same tensor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.emb = nn.Embedding(16, 8)
        self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids) * 1.0
        y = self.a(h)
        h.mul_(2.0)
        return y + self.b(h)


def test_an_input_written_in_place_is_not_shared():
    # Batches without padding hand over views of the activation: after the in-place
    # write, b's rows are the same tensor as a's but hold other values.
    model = WrittenInPlace()
    data = CalibrationData.from_ids([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    tokenized = tokenize_data(data, wrap_module(model))
    batches = list(padded_batches(tokenized, 2, torch.device("cpu"), 0))
    assert all(bool(mask.all()) for _, mask in batches)
    shared, with_sharing = run_accumulator(model, batches, share=True)
    _, alone = run_accumulator(model, batches, share=False)
    assert shared.accumulators["b"]._source is None
    for x, y in zip(with_sharing, alone, strict=True):
        for key in x.by_k:
            assert x.by_k[key].count_histogram == y.by_k[key].count_histogram
            assert x.by_k[key].vth.counts == y.by_k[key].vth.counts
    means = [layer.by_k["3"].vth.mean for layer in with_sharing]
    assert means[0] * 2 == pytest.approx(means[1])
    # Under inference mode tensors track no version: nothing is shared, nothing is wrong.
    with torch.inference_mode():
        inferred, in_inference = run_accumulator(model, batches, share=True)
    assert inferred.accumulators["b"]._source is None
    for x, y in zip(in_inference, alone, strict=True):
        assert x.by_k["3"].count_histogram == y.by_k["3"].count_histogram


def totals(stats):
    return {
        (layer.name, key, scheme): (entry.schemes[scheme], entry.activity, entry.count_histogram)
        for layer in stats.layers
        for key, entry in layer.by_k.items()
        for scheme in entry.schemes
    }


def test_padding_never_enters():
    samples = [[3, 4, 5, 6, 7, 1], [2], [9, 9, 3], [15, 14, 13, 12, 11, 10, 9, 8, 7], [5, 5]]
    data = CalibrationData.from_ids(samples)
    model = Toy()
    batched = calibrate(model, data, batch_size=5, schemes=SCHEMES, error_rows=None)
    single = calibrate(model, data, batch_size=1, schemes=SCHEMES, error_rows=None)
    assert batched.data.tokens == single.data.tokens == sum(map(len, samples))
    assert [layer.tokens for layer in batched.layers] == [21, 21]
    assert totals(batched) == totals(single)
    for a, b in zip(batched.layers, single.layers, strict=True):
        for key in a.by_k:
            assert a.by_k[key].output_rel_error == pytest.approx(b.by_k[key].output_rel_error)
            va, vb = a.by_k[key].vth, b.by_k[key].vth
            assert (va.counts, va.min, va.max) == (vb.counts, vb.min, vb.max)
            assert va.mean == pytest.approx(vb.mean, rel=1e-12)
            assert va.std == pytest.approx(vb.std, rel=1e-9)


def test_calibration_of_a_model_equals_its_collected_activations(tiny):
    texts = load_corpus(5)
    stats = calibrate(tiny, texts, k=(2.0, 3.0), batch_size=2, schemes=SCHEMES)
    names = [name for name, _, _ in list_linear_layers(tiny.model)]
    assert [layer.name for layer in stats.layers] == names  # lm_head excluded
    tokenized = tokenize_data(CalibrationData.from_texts(texts), tiny)
    assert stats.data.tokens == tokenized.tokens == stats.layers[0].tokens
    collected = {name: [] for name in names}
    for ids, mask in padded_batches(tokenized, 2, torch.device("cpu"), 0):
        acts = collect_linear_inputs(tiny.model, {"input_ids": ids, "attention_mask": mask})
        for name in names:
            collected[name].append(acts[name])
    for layer in stats.layers:
        x = np.concatenate(collected[layer.name])
        check_against_reference(layer, x, (2.0, 3.0), SCHEMES, (16, 64, 256))
        assert layer.family == layer.name.split(".")[-1] or layer.family.startswith("gk_proj.")
        assert 0 < layer.error_tokens <= layer.tokens
        assert 0 < layer.by_k["3"].output_rel_error < layer.by_k["2"].output_rel_error < 1


def test_lm_head_is_not_run_unless_selected(tiny):
    calls = []
    handle = tiny.model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        calibrate(tiny, ["hello world"], k=(3.0,))
        assert calls == []
        stats = calibrate(tiny, ["hello world"], k=(3.0,), exclude=())
        assert calls and stats.layers[-1].name == "lm_head"
    finally:
        handle.remove()


# ------------------------------------------------------------------------ data


def test_load_text_and_jsonl(tmp_path):
    text = tmp_path / "data.txt"
    text.write_text("first sample\n\n  second sample  \nthird\n", encoding="utf-8")
    data = load_calibration_data(text, samples=2)
    assert data.texts == ("first sample", "second sample") and data.available == 3
    assert len(load_calibration_data(text, samples=10)) == 3
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "a b"}\n{"text": "c", "input_ids": [1, 2]}\n', encoding="utf-8")
    assert load_calibration_data(jsonl).texts == ("a b", "c")
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"input_ids": [1, 2, 3]}\n\n{"input_ids": [4]}\n', encoding="utf-8")
    data = load_calibration_data(ids)
    assert data.input_ids == ((1, 2, 3), (4,)) and data.texts is None
    bundled = load_calibration_data()
    assert len(bundled) == 128 and bundled.source == "bundled corpus"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"\n  \n", "no sample"),
        ("binary.txt", b"\x00\x01\x02text", "binary"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("notext.jsonl", b'{"label": 1}\n', "no 'text'"),
        ("badjson.jsonl", b'{"text": "a"}\n{oops\n', "line 2"),
        ("mixed.jsonl", b'{"text": "a"}\n{"input_ids": [1]}\n', "mix"),
        ("badids.jsonl", b'{"input_ids": [1, "x"]}\n', "integers"),
        ("emptytext.jsonl", b'{"text": " "}\n', "non-empty"),
    ],
)
def test_bad_data(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SpikecodeError, match=message):
        load_calibration_data(path)


def test_missing_data_file(tmp_path):
    with pytest.raises(SpikecodeError, match="not found"):
        load_calibration_data(tmp_path / "nope.txt")


def test_tokenization_limits(tiny, tmp_path):
    data = CalibrationData.from_texts(["hello world " * 10, "spike"])
    with pytest.raises(SpikecodeError, match="more than the maximum of 5"):
        tokenize_data(data, tiny, max_length=5)
    cut = tokenize_data(data, tiny, max_length=5, truncate=True)
    assert cut.truncated == 1 and max(map(len, cut.input_ids)) == 5
    assert tokenize_data(data, tiny).max_length == 4096  # config.json's max_position_embeddings
    with pytest.raises(SpikecodeError, match="exceeds the model's maximum"):
        tokenize_data(data, tiny, max_length=5000)
    with pytest.raises(SpikecodeError, match="outside the vocabulary"):
        tokenize_data(CalibrationData.from_ids([[1, 600]]), tiny)
    bare = wrap_module(Toy())
    with pytest.raises(SpikecodeError, match="no tokenizer"):
        tokenize_data(data, bare)
    stats = calibrate(tiny, data, k=(3.0,), max_length=5, truncate=True)
    assert stats.data.truncated == 1 and stats.data.max_length == 5
    assert stats.data.tokens == 5 + len(cut.input_ids[1])


def test_calibrate_records_provenance(tiny):
    stats = calibrate(tiny, ["hello world", "the model"], k=(2.5, 3.0))
    assert stats.checkpoint.kind == "gla_swa" and stats.checkpoint.model_type == "gla_swa"
    assert stats.checkpoint.dtype == "bfloat16" and stats.checkpoint.path == str(tiny.path)
    assert stats.k == (2.5, 3.0) and stats.schemes == ("bitwise-bidirectional",)
    assert stats.data.samples == 2 and stats.error_rows == cal.DEFAULT_ERROR_ROWS
    assert stats.error_stride == cal.DEFAULT_ERROR_STRIDE
    assert set(stats.totals) == {"2.5", "3"}
    json.dumps(stats.to_dict(), allow_nan=False)
    with pytest.raises(SpikecodeError, match="repeat"):
        calibrate(tiny, ["hello"], k=(3, 3.0))
    with pytest.raises(SpikecodeError, match="unknown scheme"):
        calibrate(tiny, ["hello"], schemes=("morse",))
    assert math.isfinite(stats.totals["3"]["bitwise-bidirectional"]["output_rel_error"])
