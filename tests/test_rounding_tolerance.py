"""The rounding-derived tolerance of spikecode.testing (issue 17, item 11).

A fixed absolute tolerance fails on another machine whenever small values sit in rows
of large ones: the rounding of a float32 matmul scales with the row, not the element.
"""

import numpy as np
import pytest
import torch

from spikecode.testing import assert_close_to_rounding, rounding_excess

EPS32 = float(np.finfo(np.float32).eps)


def _two_orders(rng):
    """One float32 matmul in two summation orders, as two machines' BLAS may take."""
    a = rng.normal(size=(64, 384)).astype(np.float32)
    w = rng.normal(size=(384, 384)).astype(np.float32) / 20
    forward = a @ w
    # The same sums accumulated in reverse order, one float32 rounding at a time.
    backward = np.zeros_like(forward)
    for k in range(383, -1, -1):
        backward += a[:, k : k + 1] * w[k]
    return forward, backward


def test_matmul_rounding_of_two_orders_is_within_a_few_steps(rng):
    forward, backward = _two_orders(rng)
    excess = rounding_excess(backward, forward, ops=1)
    assert 0 < excess < 4  # measured: both orders round, within eps x ||row|| each
    assert_close_to_rounding(backward, forward, ops=4)
    # ... while an absolute tolerance on the element fails on exactly these values.
    small = np.abs(forward) < 1e-2
    assert np.abs(backward - forward)[small].max() > 1e-2 * EPS32


def test_the_bound_scales_with_the_row_not_the_element():
    row = np.array([[10.0, 1e-4, -3.0]], np.float32)
    norm = float(np.linalg.norm(row))
    noisy = row.copy()
    noisy[0, 1] += 0.5 * EPS32 * norm  # ~1e-6 on a 1e-4 value: ordinary matmul noise
    assert_close_to_rounding(noisy, row, ops=1)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(noisy, row, rtol=2.0**-11, atol=1e-7)
    wrong = row.copy()
    wrong[0, 1] = 2e-4  # a real difference is many steps away
    with pytest.raises(AssertionError, match="rounding steps allowed"):
        assert_close_to_rounding(wrong, row, ops=16)


def test_rtol_covers_a_cast_and_torch_and_dtypes_are_accepted():
    x = torch.tensor([[1.0, 3.0, 1000.0]], dtype=torch.float64) / 3
    cast = x.to(torch.float16).to(torch.float64)
    with pytest.raises(AssertionError):
        assert_close_to_rounding(cast, x, ops=1)  # float16 rounding is not float64 noise
    assert_close_to_rounding(cast, x, ops=1, rtol=2.0**-11)
    assert_close_to_rounding(x.float(), x, ops=1, dtype=torch.float32)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close_to_rounding(x[:, :2], x, ops=1)
