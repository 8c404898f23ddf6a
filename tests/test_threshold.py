"""Step 1 (SPEC §2): adaptive-threshold counts against the plain NumPy oracle."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikecode
from spikecode._constants import SUM_LANES
from spikecode.encoders import _reference as ref


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (5, 1), (3, 17), (2, 3, 64), (4, 2, 3, 129)])
@pytest.mark.parametrize("k", [2.0, 2.5, 3.0, 4.0])
def test_kernel_matches_oracle(rng, dtype, shape, k):
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 10)).astype(dtype)
    counts, vth = spikecode.adaptive_counts(x, k=k)
    want_counts, want_vth = ref.adaptive_counts(x, k)
    assert counts.dtype == np.int32
    assert vth.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert counts.shape == shape and vth.shape == shape[:-1]
    np.testing.assert_array_equal(counts, want_counts)
    assert_same_vth(vth, want_vth)


def assert_same_vth(got, want):
    # Every path sums |x| in SPEC §2's one order: thresholds agree bit for bit, float64 too.
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def lane_sum_by_definition(row):
    """SPEC §2's order spelled out with Python floats: 64 running lanes, folded in halves."""
    lanes = [0.0] * SUM_LANES
    for j, value in enumerate(row):
        lanes[j % SUM_LANES] += abs(float(value))
    h = SUM_LANES // 2
    while h >= 1:
        lanes = [lanes[i] + lanes[i + h] for i in range(h)]
        h //= 2
    return lanes[0]


@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 300)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, width=64),
    )
)
def test_every_path_sums_abs_x_in_the_one_order(x):
    from spikecode.nn import functional as F

    want = np.array([lane_sum_by_definition(row) for row in x])
    np.testing.assert_array_equal(ref.abs_sum(x), want)
    np.testing.assert_array_equal(F.abs_sum(torch.from_numpy(x)).numpy(), want)
    _, vth = spikecode.adaptive_counts(x, k=3.0)
    want_vth = np.clip(want / x.shape[-1] / 3.0, 1e-5, 1e4)
    np.testing.assert_array_equal(vth, want_vth)
    _, vth_fused = spikecode.encode_activations(x, 3.0, "ternary", max_spikes=None)
    np.testing.assert_array_equal(vth_fused, want_vth)


def test_the_order_is_not_sequential_summation():
    # 1 + 2^-53 + 2^-53 ... sequentially stays 1; lanes 1.. collect the small terms first.
    x = np.full((1, 65), 2.0**-53)
    x[0, 0] = 1.0
    sequential = 0.0
    for value in x[0]:
        sequential += value
    assert sequential == 1.0
    assert ref.abs_sum(x)[0] == lane_sum_by_definition(x[0]) > 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_path_equals_numpy_path(rng, dtype):
    x = torch.from_numpy(rng.standard_normal((6, 40, 96))).to(dtype)
    counts_t, vth_t = spikecode.adaptive_counts(x, k=3.0)
    assert isinstance(counts_t, torch.Tensor) and counts_t.dtype == torch.int32
    x_np = x.float().numpy() if dtype == torch.bfloat16 else x.numpy()
    counts_n, vth_n = spikecode.adaptive_counts(x_np, k=3.0)
    np.testing.assert_array_equal(counts_t.numpy(), counts_n)
    assert_same_vth(vth_t.numpy(), vth_n)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cpu_tensors_take_the_numba_path(monkeypatch, rng, dtype):
    from spikecode.nn import functional as F

    x = torch.from_numpy(rng.standard_normal((3, 5, 70))).to(dtype)
    want_t = F.adaptive_counts(x, k=3.0)  # the torch implementation, for the comparison
    want_e = spikecode.encode_activations(x.to(torch.float64).numpy().astype(
        np.float64 if dtype == torch.float64 else np.float32), 3.0, "ternary")  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU tensor went through the torch path")

    monkeypatch.setattr(F, "adaptive_counts", refuse)
    counts, vth, clipped = spikecode.adaptive_counts(x, k=3.0, clip=2, return_clipped=True)
    assert isinstance(counts, torch.Tensor) and counts.dtype == torch.int32
    assert torch.equal(counts, want_t[0].clamp(-2, 2)) and torch.equal(vth, want_t[1])
    assert clipped == int((want_t[0].abs() > 2).sum())
    train, vth_e, counts_e = spikecode.encode_activations(x, 3.0, "ternary", return_counts=True)
    assert train.equals(want_e[0]) and torch.equal(vth_e, torch.from_numpy(want_e[1]))
    assert torch.equal(counts_e, want_t[0])


def test_worked_example_and_half_to_even():
    # mean|x| = 1, k = 1: Vth = 1 and counts are round-half-to-even of x itself.
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, -3.5, 0, 0, 0, 0]], dtype=np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=1.0)
    assert vth.tolist() == [1.0]
    assert counts[0, :6].tolist() == [0, 2, 2, 0, -2, -4]


def test_larger_k_gives_larger_counts(rng):
    x = rng.standard_normal((32, 128)).astype(np.float32)
    mags = [np.abs(spikecode.adaptive_counts(x, k=k)[0]).sum() for k in (2, 3, 4)]
    assert mags[0] < mags[1] < mags[2]


def test_all_zero_token_uses_clamped_threshold():
    x = np.zeros((2, 8), dtype=np.float32)
    x[1] = 1.0
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    assert vth[0] == np.float32(1e-5)
    assert not counts[0].any()
    assert counts[1].tolist() == [3] * 8


def test_threshold_clamp_max():
    x = np.full((1, 4), 1e6, dtype=np.float64)
    counts, vth = spikecode.adaptive_counts(x, k=1.0)
    assert vth[0] == 1e4 and counts[0, 0] == 100


def test_clip_reports_clipped_values():
    x = np.array([[10.0, *([0.1] * 7), -10.0]], dtype=np.float32)
    full, _ = spikecode.adaptive_counts(x, k=3.0)
    counts, _, clipped = spikecode.adaptive_counts(x, k=3.0, clip=7, return_clipped=True)
    assert int(np.abs(full).max()) > 7
    assert counts.tolist() == np.clip(full, -7, 7).tolist()
    assert clipped == int((np.abs(full) > 7).sum()) == 2
    counts2, _, clipped2 = spikecode.adaptive_counts(x, k=3.0, clip=(-1, 20), return_clipped=True)
    assert clipped2 == 1 and counts2.min() == -1


def test_clip_counts_numpy_and_torch():
    c = np.array([-9, -3, 0, 4, 12], dtype=np.int32)
    clipped, n = spikecode.clip_counts(c, 5)
    assert clipped.tolist() == [-5, -3, 0, 4, 5] and n == 2 and clipped.dtype == np.int32
    t, n_t = spikecode.clip_counts(torch.from_numpy(c), (-3, 3))
    assert t.tolist() == [-3, -3, 0, 3, 3] and n_t == 3


def test_fixed_threshold_baseline(rng):
    x = rng.standard_normal((3, 10)).astype(np.float32)
    counts = spikecode.fixed_counts(x, 0.25)
    np.testing.assert_array_equal(counts, np.rint(x / np.float32(0.25)).astype(np.int32))
    torch_counts = spikecode.fixed_counts(torch.from_numpy(x), 0.25)
    np.testing.assert_array_equal(torch_counts.numpy(), counts)
    assert spikecode.fixed_counts(x, 0.01, clip=3).max() == 3


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    st.sampled_from([1.0, 2.0, 2.5, 3.0, 7.0]),
)
def test_counts_property_matches_oracle_and_reconstruct(x, k):
    counts, vth = spikecode.adaptive_counts(x, k=k)
    want, want_vth = ref.adaptive_counts(x, k)
    np.testing.assert_array_equal(counts, want)
    np.testing.assert_array_equal(vth, want_vth)
    # |x - Vth·c| <= Vth/2 (up to float32 rounding): the count is the nearest integer.
    err = np.abs(x.astype(np.float64) - vth[..., None].astype(np.float64) * counts)
    assert np.all(err <= vth[..., None] * (0.5 + 1e-5) + 1e-30)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[1.0, np.nan]]), "NaN or Inf"),
        (np.array([[1.0, np.inf]], dtype=np.float32), "NaN or Inf"),
        (np.array([[1, 2]], dtype=np.int32), "floating point"),
        (np.array([[True, False]]), "floating point"),
        (np.zeros((0, 4), dtype=np.float32), "empty"),
        (np.zeros((4, 0), dtype=np.float32), "empty"),
        (np.float32(1.0), "at least one axis"),
        (np.array([[1 + 1j]]), "floating point"),
    ],
)
def test_bad_activations(x, message):
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.adaptive_counts(x)


@pytest.mark.parametrize("k", [0, -1, float("nan"), float("inf"), "three"])
def test_bad_k(k):
    with pytest.raises(spikecode.SpikecodeError, match="k must"):
        spikecode.adaptive_counts(np.ones((1, 3), np.float32), k=k)


def test_bad_clamp_and_clip():
    x = np.ones((1, 3), np.float32)
    with pytest.raises(spikecode.SpikecodeError, match="larger than vth_max"):
        spikecode.adaptive_counts(x, vth_min=1.0, vth_max=0.5)
    with pytest.raises(spikecode.SpikecodeError, match="clip"):
        spikecode.adaptive_counts(x, clip=(3, -3))
    with pytest.raises(spikecode.SpikecodeError, match="clip"):
        spikecode.adaptive_counts(x, clip=-1)


def test_int32_overflow_is_refused():
    x = np.zeros((1, 1000), dtype=np.float64)
    x[0, 0] = 1.0
    with pytest.raises(spikecode.SpikecodeError, match="overflow int32"):
        spikecode.adaptive_counts(x, k=1e7, vth_min=1e-30)
