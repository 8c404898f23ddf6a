"""Tests of spikecode.nn: torch spike counts, STE fake-quant, INT8 weights, W8ASpike layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

import spikecode
from spikecode.errors import SpikecodeError
from spikecode.nn import AdaptiveSpike, W8ASpikeLinear, set_k, swap_linears
from spikecode.nn import functional as F

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SHAPES = [(7,), (5, 1), (4, 33), (2, 3, 17), (2, 2, 129)]
KS = [2.0, 2.5, 3.0, 4.0]


# --------------------------------------------------------------------------- references


def compute_np(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def ref_counts(x: torch.Tensor, k: float, vth_min: float = 1e-5, vth_max: float = 1e4):
    """SPEC §2 written out: exact float64 mean (fsum), clip, cast, divide, round half even."""
    a = x.detach().cpu().to(torch.float64).numpy()
    rows = a.reshape(-1, a.shape[-1])
    cd = compute_np(x.dtype)
    counts = np.empty(rows.shape, dtype=np.int64)
    vth = np.empty(rows.shape[0], dtype=cd)
    for i, row in enumerate(rows):
        mean = math.fsum(abs(v) for v in row) / row.size
        vth[i] = cd(min(max(mean / k, vth_min), vth_max))
        for j, v in enumerate(row):
            counts[i, j] = int(np.rint(cd(v) / vth[i]))  # numpy rint: half to even
    return counts.reshape(a.shape), vth.reshape(a.shape[:-1])


def activations(shape, dtype, seed=0) -> torch.Tensor:
    """Heavy-tailed activations whose token magnitudes span six decades, with zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) ** 3
    scale = 10.0 ** torch.empty((*shape[:-1], 1), dtype=torch.float64).uniform_(-3, 3, generator=g)
    x = x * scale
    x.view(-1)[:: max(3, shape[-1] // 2)] = 0.0
    return x.to(dtype)


def assert_vth_equal(vth: torch.Tensor, expected: np.ndarray, dtype: torch.dtype) -> None:
    got = vth.cpu().numpy()
    assert got.dtype == expected.dtype
    if dtype == torch.float64:
        # float64 sums are not exact, so torch's summation order may differ from fsum in
        # the last bits; everything narrower sums exactly in float64 and must match bitwise.
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)
    else:
        np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- Step 1


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adaptive_counts_match_reference(dtype, shape, k):
    x = activations(shape, dtype, seed=len(shape) * 7 + shape[-1])
    counts, vth = F.adaptive_counts(x, k)
    expected_counts, expected_vth = ref_counts(x, k)
    assert counts.dtype == torch.int32
    assert counts.shape == x.shape
    assert vth.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert vth.shape == x.shape[:-1]
    assert_vth_equal(vth, expected_vth, dtype)
    np.testing.assert_array_equal(counts.numpy(), expected_counts)
    torch.testing.assert_close(F.adaptive_threshold(x, k), vth, rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    k=st.floats(0.25, 16.0),
)
def test_adaptive_counts_property(x, k):
    counts, vth = F.adaptive_counts(torch.from_numpy(x), k)
    expected_counts, expected_vth = ref_counts(torch.from_numpy(x), k)
    np.testing.assert_array_equal(vth.numpy(), expected_vth)
    np.testing.assert_array_equal(counts.numpy(), expected_counts)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=str)
def test_agrees_with_numpy_path(dtype):
    x = activations((6, 65), torch.float64, seed=3).numpy().astype(dtype)
    c_np, v_np = spikecode.adaptive_counts(x, 3.0)
    c_t, v_t = F.adaptive_counts(torch.from_numpy(x), 3.0)
    np.testing.assert_array_equal(c_t.numpy(), c_np)
    np.testing.assert_allclose(v_t.numpy(), v_np, rtol=1e-14 if dtype == np.float64 else 0)


def test_worked_ties_round_half_to_even():
    # mean|x| = 16 / 8 = 2, k = 2 -> Vth = 1 exactly, so counts are round(x).
    x = torch.tensor([2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 1.5, -1.5])
    counts, vth = F.adaptive_counts(x, 2.0)
    assert vth.item() == 1.0
    assert counts.tolist() == [2, 4, -2, -4, 0, 0, 2, -2]
    # Vth = 0.5: x / Vth = 2.5, 3.5, 4.5, 0.5 -> 2, 4, 4, 0; mean = 1.375, k = 2.75.
    counts, vth = F.adaptive_counts(torch.tensor([1.25, 1.75, 2.25, 0.25]), 2.75)
    assert vth.item() == 0.5
    assert counts.tolist() == [2, 4, 4, 0]


def test_report_example_and_doc_values():
    counts, vth = F.adaptive_counts(torch.tensor([[0.5, -1.0, 2.0, 0.0]]), k=2)
    assert vth.tolist() == [0.4375]
    assert counts.tolist() == [[1, -2, 5, 0]]  # 0.5/0.4375 = 1.14, 2/0.4375 = 4.57


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clamp(dtype):
    cd = torch.float64 if dtype == torch.float64 else torch.float32
    low = torch.zeros(2, 16, dtype=dtype)
    low[1] = 1e-7  # mean / k = 3e-8 < Vth_min
    counts, vth = F.adaptive_counts(low, 3.0)
    assert vth.tolist() == [torch.tensor(1e-5, dtype=cd).item()] * 2
    assert counts.abs().sum() == 0
    high = torch.zeros(1, 8, dtype=dtype)
    high[0, :2] = torch.tensor([1000.0, -20000.0])  # mean / k = 2.6e6 > Vth_max
    counts, vth = F.adaptive_counts(high, 1e-3)
    assert vth.tolist() == [1e4]
    assert counts.tolist() == [[0, -2, 0, 0, 0, 0, 0, 0]]
    custom = F.adaptive_threshold(torch.ones(2, 4, dtype=dtype), 1.0, vth_min=2.0, vth_max=3.0)
    assert custom.tolist() == [2.0, 2.0]


def test_clamp_all_zero_token_counts_zero():
    counts, vth = F.adaptive_counts(torch.zeros(2, 5), 3.0)
    assert torch.equal(counts, torch.zeros(2, 5, dtype=torch.int32))
    assert vth.tolist() == [torch.tensor(1e-5).item()] * 2


def test_upper_clamp_counts():
    counts, vth = F.adaptive_counts(torch.tensor([1e6, -1e6, 3e4, 0.0]), 2.0)
    assert vth.item() == 1e4
    assert counts.tolist() == [100, -100, 3, 0]


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.arange(4), "torch.int64"),
        (torch.ones(4, dtype=torch.int32), "torch.int32"),
        (torch.ones(4, dtype=torch.bool), "torch.bool"),
        (torch.ones(4, dtype=torch.complex64), "torch.complex64"),
        (np.ones(4, dtype=np.float32), "torch.Tensor"),
        (torch.tensor(1.0), "at least one axis"),
        (torch.ones(0), "empty"),
        (torch.ones(3, 0), "empty"),
        (torch.ones(0, 4), "empty"),
        (torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]), "3 non-finite"),
        (torch.tensor([[1.0, float("nan")]], dtype=torch.bfloat16), "1 non-finite"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
@pytest.mark.parametrize(
    "fn",
    [F.adaptive_counts, F.adaptive_threshold, F.spike_quantize, lambda x: F.fixed_counts(x, 0.1)],
    ids=["counts", "threshold", "spike_quantize", "fixed"],
)
def test_bad_activations(fn, x, message):
    with pytest.raises(SpikecodeError, match=message):
        fn(x)


@pytest.mark.parametrize("k", [0, -1.0, float("nan"), float("inf"), "three", None])
def test_bad_k(k):
    with pytest.raises(SpikecodeError, match="k must"):
        F.adaptive_counts(torch.ones(3), k)
    with pytest.raises(SpikecodeError, match="k must"):
        AdaptiveSpike(k)


@pytest.mark.parametrize(
    ("vth_min", "vth_max", "message"),
    [
        (0.0, 1.0, "vth_min"),
        (-1.0, 1.0, "vth_min"),
        (1.0, float("inf"), "vth_max"),
        (2.0, 1.0, "must not exceed"),
    ],
)
def test_bad_clamp_bounds(vth_min, vth_max, message):
    with pytest.raises(SpikecodeError, match=message):
        F.adaptive_counts(torch.ones(3), 3.0, vth_min=vth_min, vth_max=vth_max)
    with pytest.raises(SpikecodeError, match=message):
        W8ASpikeLinear.from_linear(
            nn.Linear(4, 2), group_size=None, vth_min=vth_min, vth_max=vth_max
        )


def test_int32_overflow_is_refused():
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1e-3, 0.0, 0.0, 0.0]])
    # k = 1e9: both thresholds clamp to 1e-5; 3e4 / 1e-5 = 3e9 overflows, 30 / 1e-5 fits.
    with pytest.raises(SpikecodeError, match=r"1 counts do not fit int32"):
        F.adaptive_counts(x * 3e4, 1e9)
    with pytest.raises(SpikecodeError, match="do not fit int32"):
        F.fixed_counts(torch.tensor([2.0**31, 1.0]), 1.0)
    # The extremes of int32 itself are fine.
    assert F.fixed_counts(torch.tensor([2.0**31 - 128, -(2.0**31)]), 1.0).tolist() == [
        2**31 - 128,
        -(2**31),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fixed_counts(dtype):
    x = activations((3, 20), dtype, seed=5)
    got = F.fixed_counts(x, 0.3)
    cd = compute_np(dtype)
    expected = np.rint(x.to(torch.float64).numpy().astype(cd) / cd(0.3)).astype(np.int32)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert got.dtype == torch.int32
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SpikecodeError, match="vth must"):
            F.fixed_counts(x, bad)


# --------------------------------------------------------------------------- STE


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spike_quantize_forward_is_vth_times_counts(dtype):
    x = activations((3, 4, 37), dtype, seed=11)
    y = F.spike_quantize(x, 2.5)
    counts, vth = F.adaptive_counts(x, 2.5)
    assert y.dtype == dtype
    assert y.shape == x.shape
    assert torch.equal(y, (vth.unsqueeze(-1) * counts.to(vth.dtype)).to(dtype))
    # Same value with autograd on (the STE path adds and subtracts the residual).
    y_grad = F.spike_quantize(x.clone().requires_grad_(), 2.5)
    assert torch.equal(y_grad.detach(), y)


def analytic_jacobian(x: torch.Tensor, k: float, clamped: bool = False) -> torch.Tensor:
    """dy_j/dx_i = δ_ij + ∂Vth/∂x_i · (round(u_j) − u_j), ∂Vth/∂x_i = sign(x_i)/(n k)."""
    tokens, n = x.shape
    vth = x.abs().mean(-1, keepdim=True) / k
    u = x / vth
    residual = torch.round(u) - u
    dvth = torch.zeros_like(x) if clamped else torch.sign(x) / (n * k)
    jac = torch.zeros(tokens, n, tokens, n, dtype=x.dtype)
    for t in range(tokens):
        jac[t, :, t, :] = torch.eye(n, dtype=x.dtype) + residual[t][:, None] * dvth[t][None, :]
    return jac


def test_ste_gradient_matches_analytic_formula():
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[1, 2] = 0.0  # |x| has gradient sign(0) = 0 there
    k = 2.5
    jac = torch.autograd.functional.jacobian(lambda v: F.spike_quantize(v, k), x)
    expected = analytic_jacobian(x, k)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-12)
    # The rank-one term is really there: the STE gradient is not plain identity.
    eye = analytic_jacobian(x, k, clamped=True)
    assert (jac - eye).abs().max() > 1e-3
    module_jac = torch.autograd.functional.jacobian(AdaptiveSpike(k), x)
    torch.testing.assert_close(module_jac, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("scale", "bounds"), [(1e-7, {}), (1e3, {"vth_max": 1.0})])
def test_clamp_stops_threshold_gradient(scale, bounds):
    x = scale * torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jac = torch.autograd.functional.jacobian(lambda v: F.spike_quantize(v, 3.0, **bounds), x)
    assert torch.equal(jac, analytic_jacobian(x, 3.0, clamped=True))


def test_adaptive_threshold_gradient():
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    F.adaptive_threshold(x, 3.0).sum().backward()
    torch.testing.assert_close(x.grad, torch.sign(x.detach()) / 18.0, rtol=1e-14, atol=0)


def test_ste_gradient_low_precision_dtype():
    x = activations((2, 9), torch.bfloat16, seed=4).requires_grad_()
    F.spike_quantize(x, 3.0).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    x64 = x.detach().to(torch.float64)
    expected = analytic_jacobian(x64, 3.0).sum(dim=(0, 1))
    torch.testing.assert_close(x.grad.to(torch.float64), expected, rtol=2e-2, atol=2e-2)


def test_adaptive_spike_module_k():
    module = AdaptiveSpike(2.0)
    x = activations((4, 10), torch.float32)
    assert torch.equal(module(x), F.spike_quantize(x, 2.0))
    module.k = 4
    assert module.k == 4.0
    assert torch.equal(module(x), F.spike_quantize(x, 4.0))
    with pytest.raises(SpikecodeError, match="k must"):
        module.k = -2.0
    assert "k=4.0" in repr(module)


# --------------------------------------------------------------------------- INT8 weights


def ref_quantize(w: torch.Tensor, group: int):
    a = w.to(torch.float64).numpy()
    out, n_in = a.shape
    q = np.zeros(a.shape, dtype=np.int64)
    scales = np.zeros((out, n_in // group), dtype=np.float32)
    for o in range(out):
        for g in range(n_in // group):
            block = a[o, g * group : (g + 1) * group]
            amax = float(np.abs(block).max())
            scales[o, g] = np.float32(amax / 127) if amax > 0 else np.float32(1.0)
            q[o, g * group : (g + 1) * group] = np.rint(block / np.float64(scales[o, g]))
    return q, scales


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("shape", "group_size"), [((5, 40), None), ((6, 256), 128), ((3, 384), 128), ((4, 12), 3)]
)
def test_quantize_weight_int8_matches_reference(dtype, shape, group_size):
    w = (torch.randn(shape, generator=torch.Generator().manual_seed(9)) * 0.05).to(dtype)
    w[0] = 0.0  # an all-zero row: scale 1, no division by zero
    w_q, scales = F.quantize_weight_int8(w, group_size)
    q_ref, s_ref = ref_quantize(w, group_size or shape[1])
    assert w_q.dtype == torch.int8
    assert scales.dtype == torch.float32
    assert scales.shape == (shape[0], shape[1] // (group_size or shape[1]))
    np.testing.assert_array_equal(w_q.numpy(), q_ref)
    np.testing.assert_array_equal(scales.numpy(), s_ref)
    assert torch.all(scales[0] == 1.0)
    assert torch.all(w_q[0] == 0)
    # Every non-zero group uses the full symmetric range, never -128.
    group = group_size or shape[1]
    per_group = w_q[1:].to(torch.int32).abs().reshape(shape[0] - 1, -1, group).amax(-1)
    assert torch.all(per_group == 127)
    assert w_q.min() >= -127
    # Reconstruction error is at most half a step.
    deq = F.dequantize_weight_int8(w_q, scales)
    step = scales.repeat_interleave(group, dim=1)
    assert torch.all((deq.double() - w.double()).abs() <= step.double() / 2 * (1 + 1e-6))


def test_dequantize_and_release_round_trip():
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(4))
    w_q, scales = F.quantize_weight_int8(w, 128)
    deq = F.dequantize_weight_int8(w_q, scales)
    expected = (w_q.double().reshape(8, 2, 128) * scales.double()[..., None]).reshape(8, 256)
    assert torch.equal(deq, expected.float())
    # The release format [out, in/128, 1]: rounding the dequantized weights gives w_q back.
    w_q2, scales2 = F.release_weight_to_int8(deq, scales.unsqueeze(-1))
    assert torch.equal(w_q2, w_q)
    assert torch.equal(scales2, scales)
    assert torch.equal(F.fake_quantize_release_weight(deq, scales[..., None]), deq)


def test_fake_quantize_release_weight_bf16():
    g = torch.Generator().manual_seed(6)
    w = (torch.randn(4, 256, generator=g) * 0.02).to(torch.bfloat16)
    scales = (w.float().abs().reshape(4, 2, 128).amax(-1, keepdim=True) / 127).to(torch.bfloat16)
    got = F.fake_quantize_release_weight(w, scales)
    assert got.dtype == torch.bfloat16
    assert got.shape == w.shape
    s = scales.double().squeeze(-1).repeat_interleave(128, dim=1)
    expected = (torch.round(w.double() / s) * s).to(torch.bfloat16)
    assert torch.equal(got, expected)
    assert not torch.equal(got, w)  # it really rounds


def test_quantization_bad_inputs():
    w = torch.randn(4, 10)
    with pytest.raises(SpikecodeError, match="not divisible by group_size"):
        F.quantize_weight_int8(w, 4)
    for bad in (0, -128, 2.0, True):
        with pytest.raises(SpikecodeError, match="group_size must"):
            F.quantize_weight_int8(w, bad)
    with pytest.raises(SpikecodeError, match="2-D"):
        F.quantize_weight_int8(torch.randn(10))
    with pytest.raises(SpikecodeError, match="floating"):
        F.quantize_weight_int8(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(SpikecodeError, match="1 non-finite"):
        F.quantize_weight_int8(torch.tensor([[1.0, float("inf")]]))
    w_q, scales = F.quantize_weight_int8(torch.randn(4, 256), 128)
    with pytest.raises(SpikecodeError, match="int8"):
        F.dequantize_weight_int8(w_q.to(torch.int16), scales)
    with pytest.raises(SpikecodeError, match="does not divide"):
        F.dequantize_weight_int8(w_q, torch.ones(4, 3))
    with pytest.raises(SpikecodeError, match="out_features=4"):
        F.dequantize_weight_int8(w_q, torch.ones(5, 2))
    with pytest.raises(SpikecodeError, match="finite and > 0"):
        F.dequantize_weight_int8(w_q, torch.zeros(4, 2))
    with pytest.raises(SpikecodeError, match=r"\[out_features, n_groups, 1\]"):
        F.release_weight_to_int8(torch.randn(4, 256), torch.ones(4, 2, 2))
    with pytest.raises(SpikecodeError, match="outside the symmetric INT8 range"):
        F.release_weight_to_int8(torch.full((1, 128), 1.0), torch.full((1, 1, 1), 1 / 200))


# --------------------------------------------------------------------------- W8ASpike linear


def ref_w8aspike(x, w_q, scales, bias, k):
    """SPEC §4 in integers: int64 accumulations per group, then the documented rescale."""
    counts, vth = ref_counts(x, k)
    if x.dtype == torch.float64:
        # Only the float64 mean depends on summation order (see assert_vth_equal); take the
        # layer's threshold so that the comparison below can stay bitwise.
        vth = F.adaptive_threshold(x, k).numpy()
    cd = compute_np(x.dtype)
    c = counts.reshape(-1, x.shape[-1]).astype(np.int64)
    w = w_q.numpy().astype(np.int64)
    s = scales.numpy().astype(cd)
    group = w.shape[1] // s.shape[1]
    total = None
    for g in range(s.shape[1]):
        cols = slice(g * group, (g + 1) * group)
        acc = c[:, cols] @ w[:, cols].T  # exact integers
        term = acc.astype(cd) * s[:, g]
        total = term if total is None else total + term
    y = vth.reshape(-1, 1) * total
    if bias is not None:
        y = y + bias.detach().to(torch.float64).numpy().astype(cd)
    return torch.from_numpy(y.reshape(*x.shape[:-1], -1)).to(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n_in", "group_size"), [(256, 128), (96, None), (384, 128)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_w8aspike_linear_equals_integer_reference(dtype, n_in, group_size, use_bias):
    g = torch.Generator().manual_seed(n_in)
    linear = nn.Linear(n_in, 24, bias=use_bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, n_in, generator=g) * 0.1)
    layer = W8ASpikeLinear.from_linear(linear, k=2.5, group_size=group_size)
    x = activations((2, 5, n_in), dtype, seed=n_in)
    y = layer(x)
    assert y.dtype == dtype
    assert y.shape == (2, 5, 24)
    expected = ref_w8aspike(x, layer.weight_q, layer.scales, linear.bias, 2.5)
    assert torch.equal(y, expected)


def test_w8aspike_linear_large_counts_stay_exact():
    # k = 4000 gives counts in the thousands: the group sums pass 2**24, where a float32
    # matmul rounds, so the layer must switch to an exact float64 accumulation.
    g = torch.Generator().manual_seed(0)
    w_q = torch.full((3, 128), 127, dtype=torch.int8)
    w_q[1] = -127
    w_q[2, ::2] = -1
    scales = torch.rand(3, 1, generator=g) + 0.5
    x = torch.rand(4, 128, generator=g) + 1.0
    counts, _ = F.adaptive_counts(x, 4000.0)
    exact = counts.to(torch.int64) @ w_q.to(torch.int64).T
    assert not torch.equal((counts.float() @ w_q.float().T).to(torch.int64), exact)
    y = F.w8aspike_linear(x, w_q, scales, k=4000.0)
    assert torch.equal(y, ref_w8aspike(x, w_q, scales, None, 4000.0))


def test_matmul_dtype_choice(monkeypatch):
    assert F._matmul_dtype(torch.float32, 2.0**24 - 1) == torch.float32
    assert F._matmul_dtype(torch.float32, 2.0**24) == torch.float64
    assert F._matmul_dtype(torch.float64, 1.0) == torch.float64
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert F._matmul_dtype(torch.float32, 1.0) == torch.float64


def test_w8aspike_linear_agrees_with_event_driven_layer():
    # The NumPy event-by-event layer of spikecode.linear (SPEC §4: additions only).
    linear = nn.Linear(256, 16)
    layer = W8ASpikeLinear.from_linear(linear, k=3.0, group_size=128)
    x = activations((6, 256), torch.float64, seed=12)
    counts, vth = F.adaptive_counts(x, 3.0)
    train = spikecode.encode(counts.numpy(), scheme="ternary")
    result = spikecode.spike_linear(
        train, layer.weight_q.numpy(), layer.scales.numpy(), vth.numpy(), linear.bias.detach()
    )
    np.testing.assert_allclose(layer(x).detach().numpy(), result.output, rtol=1e-12, atol=1e-12)


def test_w8aspike_linear_ste_gradient():
    # Forward and STE backward equal spike_quantize(x) @ W_deq^T + b as functions of x.
    linear = nn.Linear(256, 6).double()
    layer = W8ASpikeLinear.from_linear(linear, k=3.0, group_size=128)
    weight = layer.weight_q.double() * layer.scales.double().repeat_interleave(128, dim=1)
    x = activations((3, 256), torch.float64, seed=2)

    def composed(v):
        return F.spike_quantize(v, 3.0) @ weight.T + linear.bias.detach()

    jac = torch.autograd.functional.jacobian(layer, x)
    expected = torch.autograd.functional.jacobian(composed, x)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x), composed(x), rtol=1e-12, atol=1e-12)


def test_w8aspike_linear_bad_inputs():
    w_q, scales = F.quantize_weight_int8(torch.randn(4, 256), 128)
    x = torch.randn(2, 256)
    with pytest.raises(SpikecodeError, match="255 features but the weight expects 256"):
        F.w8aspike_linear(torch.randn(2, 255), w_q, scales)
    with pytest.raises(SpikecodeError, match="int8"):
        F.w8aspike_linear(x, w_q.float(), scales)
    with pytest.raises(SpikecodeError, match="bias must be"):
        F.w8aspike_linear(x, w_q, scales, torch.zeros(5))
    with pytest.raises(SpikecodeError, match="finite and > 0"):
        F.w8aspike_linear(x, w_q, -scales)
    with pytest.raises(SpikecodeError, match="non-finite"):
        F.w8aspike_linear(torch.full((1, 256), float("nan")), w_q, scales)
    with pytest.raises(SpikecodeError, match="k must"):
        F.w8aspike_linear(x, w_q, scales, k=0)


# --------------------------------------------------------------------------- modules


def test_w8aspike_module_from_linear_and_k():
    linear = nn.Linear(256, 12)
    layer = W8ASpikeLinear.from_linear(linear, k=2.0, group_size=128)
    assert layer.weight_q.dtype == torch.int8
    assert layer.scales.shape == (12, 2)
    assert (layer.in_features, layer.out_features, layer.group_size) == (256, 12, 128)
    assert set(dict(layer.named_buffers())) == {"weight_q", "scales"}
    assert isinstance(layer.bias, nn.Parameter)
    assert torch.equal(layer.bias, linear.bias)
    w_q, scales = F.quantize_weight_int8(linear.weight.detach(), 128)
    x = activations((3, 256), torch.float32, seed=8)
    assert torch.equal(layer(x), F.w8aspike_linear(x, w_q, scales, linear.bias, 2.0))
    layer.k = 4.0
    assert torch.equal(layer(x), F.w8aspike_linear(x, w_q, scales, linear.bias, 4.0))
    assert not torch.equal(layer(x), F.w8aspike_linear(x, w_q, scales, linear.bias, 2.0))
    assert "group_size=128" in repr(layer)
    assert "k=4.0" in repr(layer)
    # The scales stay float32 when the model is cast to a low-precision dtype.
    layer.to(torch.bfloat16)
    assert layer.scales.dtype == torch.float32
    assert layer.weight_q.dtype == torch.int8
    assert layer.bias.dtype == torch.bfloat16


def test_w8aspike_module_from_release_scales():
    linear = nn.Linear(256, 4, bias=False)
    scales = linear.weight.detach().abs().reshape(4, 2, 128).amax(-1, keepdim=True) / 100
    layer = W8ASpikeLinear.from_linear(linear, scales=scales)
    w_q, s = F.release_weight_to_int8(linear.weight.detach(), scales)
    assert torch.equal(layer.weight_q, w_q)
    assert torch.equal(layer.scales, s)
    assert layer.weight_q.abs().max() == 100
    with pytest.raises(SpikecodeError, match="imply group_size 128, not 64"):
        W8ASpikeLinear.from_linear(linear, group_size=64, scales=scales)
    with pytest.raises(SpikecodeError, match=r"nn\.Linear"):
        W8ASpikeLinear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(SpikecodeError, match="bias must be"):
        W8ASpikeLinear(w_q, s, torch.zeros(3))


class Block(nn.Module):
    def __init__(self, dim: int, shared: nn.Linear | None = None) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = shared if shared is not None else nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        return x + self.mlp(torch.relu(self.q_proj(x) + self.k_proj(x)))


class Tiny(nn.Module):
    def __init__(self, dim: int = 128, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Block(dim), Block(dim)])
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(h)


ALL_LINEARS = [
    f"layers.{i}.{name}" for i in (0, 1) for name in ("q_proj", "k_proj", "mlp.0", "mlp.2")
]


def test_swap_linears_default_selection_and_output():
    torch.manual_seed(0)
    model = Tiny()
    reference = {name: model.get_submodule(name) for name in ALL_LINEARS}
    names = swap_linears(model)
    assert names == ALL_LINEARS
    assert isinstance(model.lm_head, nn.Linear)
    assert isinstance(model.embed, nn.Embedding)
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, W8ASpikeLinear)
        assert layer.k == 3.0
        assert layer.group_size == 128
        w_q, _ = F.quantize_weight_int8(reference[name].weight.detach(), 128)
        assert torch.equal(layer.weight_q, w_q)
    ids = torch.randint(0, 50, (2, 7))
    h = model.embed(ids)
    for block in model.layers:  # the same computation spelled out with the functional API
        q = F.w8aspike_linear(h, block.q_proj.weight_q, block.q_proj.scales, block.q_proj.bias)
        k = F.w8aspike_linear(h, block.k_proj.weight_q, block.k_proj.scales, block.k_proj.bias)
        up = block.mlp[0](torch.relu(q + k))
        h = h + block.mlp[2](torch.relu(up))
    assert torch.equal(model(ids), model.lm_head(h))


def test_swap_linears_patterns_and_per_layer_k():
    model = Tiny()
    names = swap_linears(
        model,
        k={"layers.0.q_proj": 2.0, "layers.1.q_proj": 4.0},
        include="*.q_proj",
        group_size=None,
    )
    assert names == ["layers.0.q_proj", "layers.1.q_proj"]
    assert model.layers[0].q_proj.k == 2.0
    assert model.layers[1].q_proj.k == 4.0
    assert model.layers[0].q_proj.group_size == 128  # per row: one scale over 128 inputs
    assert isinstance(model.layers[0].k_proj, nn.Linear)

    model = Tiny()
    names = swap_linears(model, exclude=("lm_head", "layers.1.*", "*.mlp.2"))
    assert names == ["layers.0.q_proj", "layers.0.k_proj", "layers.0.mlp.0"]


def test_swap_linears_errors():
    model = Tiny()
    with pytest.raises(SpikecodeError, match=r"'\*\.v_proj' matches no linear layer.*layers\.0"):
        swap_linears(model, include=("*.q_proj", "*.v_proj"))
    with pytest.raises(SpikecodeError, match="k gives no value for 7 selected"):
        swap_linears(model, k={"layers.0.q_proj": 2.0})
    with pytest.raises(SpikecodeError, match=r"k names 1 layer.*lm_head"):
        swap_linears(model, k=dict.fromkeys([*ALL_LINEARS, "lm_head"], 3.0))
    with pytest.raises(SpikecodeError, match="k must"):
        swap_linears(model, k=-1.0)
    with pytest.raises(SpikecodeError, match="scales names"):
        swap_linears(model, scales={"nope": torch.ones(128, 1, 1)})
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in ALL_LINEARS)  # untouched
    odd = nn.Sequential(nn.Linear(48, 8))
    with pytest.raises(SpikecodeError, match="not divisible") as info:
        swap_linears(odd, group_size=128)
    assert info.value.context["layer"] == "0"


def test_swap_linears_auto_group_size():
    model = nn.Sequential(nn.Linear(48, 8), nn.Linear(256, 4))
    swap_linears(model)  # "auto": per row where 128 does not divide the inputs
    assert model[0].group_size == 48
    assert model[1].group_size == 128


def test_swap_linears_release_scales_and_shared_layers():
    shared = nn.Linear(128, 128)
    model = nn.Sequential(Block(128, shared), Block(128, shared))
    scales = shared.weight.detach().abs().amax(-1).reshape(128, 1, 1) / 127
    names = swap_linears(model, scales={"0.k_proj": scales}, group_size=None)
    assert "1.k_proj" not in names  # named_modules lists a shared module once ...
    assert model[0].k_proj is model[1].k_proj  # ... but every reference is replaced
    assert isinstance(model[1].k_proj, W8ASpikeLinear)
    w_q, _ = F.release_weight_to_int8(shared.weight.detach(), scales)
    assert torch.equal(model[0].k_proj.weight_q, w_q)


def test_set_k():
    model = Tiny()
    swap_linears(model)
    assert set_k(model, 2.5) == ALL_LINEARS
    assert all(model.get_submodule(n).k == 2.5 for n in ALL_LINEARS)
    assert set_k(model, {"layers.1.mlp.2": 4.0}) == ["layers.1.mlp.2"]
    assert model.layers[1].mlp[2].k == 4.0
    assert model.layers[0].mlp[2].k == 2.5
    with pytest.raises(SpikecodeError, match=r"k names 1 layer.*lm_head"):
        set_k(model, {"lm_head": 2.0})
    with pytest.raises(SpikecodeError, match="k must"):
        set_k(model, {"layers.0.q_proj": 2.0, "layers.0.k_proj": 0.0})
    assert model.layers[0].q_proj.k == 2.5  # nothing changed by the failed call
    with pytest.raises(SpikecodeError, match="no spiking module"):
        set_k(Tiny(), 3.0)
    spiking = nn.Sequential(AdaptiveSpike(), nn.Linear(4, 4))
    assert set_k(spiking, 2.0) == ["0"]
    assert spiking[0].k == 2.0


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_device_preservation(dtype):
    x = activations((3, 5, 256), dtype, seed=21)
    xc = x.cuda()
    counts, vth = F.adaptive_counts(xc, 3.0)
    assert counts.device == xc.device
    assert vth.device == xc.device
    c_cpu, v_cpu = F.adaptive_counts(x, 3.0)
    torch.testing.assert_close(
        vth.cpu(), v_cpu, rtol=1e-14 if dtype == torch.float64 else 0, atol=0
    )
    assert torch.equal(counts.cpu(), c_cpu)
    assert F.fixed_counts(xc, 0.5).device == xc.device
    y = F.spike_quantize(xc.clone().requires_grad_(), 3.0)
    y.sum().backward()
    assert y.device == xc.device

    layer = W8ASpikeLinear.from_linear(nn.Linear(256, 8), group_size=128)
    expected = layer(x)
    layer.cuda()
    assert layer.weight_q.is_cuda
    assert layer.scales.is_cuda
    assert layer.scales.dtype == torch.float32
    out = layer(xc)
    assert out.device == xc.device
    assert out.dtype == dtype
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)
    w_q, scales = F.quantize_weight_int8(torch.randn(8, 256, device="cuda"), 128)
    assert w_q.is_cuda
    assert scales.is_cuda
