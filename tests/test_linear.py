"""SPEC §4: the event-driven layer equals the dense integer product exactly."""

import numpy as np
import pytest

import spikecode
from spikecode.encoders import SCHEMES
from spikecode.encoders import _reference as ref


def int8_weights(rng, out, inp):
    return rng.integers(-127, 128, size=(out, inp)).astype(np.int8)


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
@pytest.mark.parametrize("layout", ["events", "planes"])
def test_spike_linear_is_exact(rng, scheme, groups, lead, layout):
    inp, out = 128 * groups if groups > 1 else 93, 24
    x = rng.standard_normal((*lead, inp)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    w = int8_weights(rng, out, inp)
    scales = rng.uniform(0.001, 0.02, size=(out, groups)).astype(np.float32)
    bias = rng.standard_normal(out)
    train = spikecode.encode(counts, scheme, layout=layout)
    assert train.layout == layout
    res = spikecode.spike_linear(train, w, scales, vth, bias)
    acc, y = ref.spike_linear(counts, w, scales, vth, bias)
    np.testing.assert_array_equal(res.accumulator.reshape(acc.shape), acc)
    np.testing.assert_allclose(res.output.reshape(y.shape), y, rtol=1e-12, atol=1e-12)
    assert res.output.shape == (*lead, out)
    assert res.additions == train.n_spikes * out


def test_release_scale_buffer_shape_and_per_row_scales(rng):
    w = int8_weights(rng, 8, 256)
    counts = rng.integers(-7, 8, size=(3, 256))
    train = spikecode.encode(counts, "bitwise-bidirectional")
    release = rng.uniform(0.01, 0.02, size=(8, 2, 1))
    a = spikecode.spike_linear(train, w, release, 1.0).output
    b = spikecode.spike_linear(train, w, release[:, :, 0], 1.0).output
    np.testing.assert_array_equal(a, b)
    per_row = spikecode.spike_linear(train, w, np.full(8, 0.5), 2.0).output
    np.testing.assert_allclose(per_row, counts @ w.astype(np.int64).T * 1.0, rtol=1e-12)


def test_equals_float_linear_on_reconstructed_activations(rng):
    # y = Vth·σ·(W_q c) is the float layer applied to the reconstruction Vth·c.
    x = rng.standard_normal((4, 64)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    w = int8_weights(rng, 5, 64)
    scale = rng.uniform(0.01, 0.1, size=5)
    res = spikecode.spike_linear(spikecode.encode(counts, "ternary"), w, scale, vth)
    x_hat = vth[:, None].astype(np.float64) * counts
    np.testing.assert_allclose(res.output, x_hat @ (w * scale[:, None]).T, rtol=1e-10)


@pytest.mark.parametrize("layout", ["events", "planes"])
def test_zero_point_is_folded_back(rng, layout):
    counts = rng.integers(-6, 6, size=(3, 32))
    w = int8_weights(rng, 4, 32)
    train = spikecode.encode(counts, "binary", layout=layout)
    assert train.zero_point < 0
    res = spikecode.spike_linear(train, w, np.ones(4), 1.0)
    np.testing.assert_array_equal(res.accumulator[:, 0, :], counts @ w.astype(np.int64).T)
    assert res.additions == train.n_spikes * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_q": np.zeros((4, 16), np.float32)}, "int8"),
        ({"weight_q": np.zeros((4, 15), np.int8)}, "input features"),
        ({"scales": np.ones(3)}, "scales must have shape"),
        ({"scales": np.ones((4, 3))}, "do not divide"),
        ({"scales": np.full(4, np.nan)}, "NaN"),
        ({"vth": np.ones(5)}, "vth must"),
        ({"bias": np.ones(3)}, "bias must"),
    ],
)
def test_bad_layer_input(kwargs, message):
    train = spikecode.encode(np.ones((2, 16), np.int32), "ternary")
    args = {
        "weight_q": np.zeros((4, 16), np.int8),
        "scales": np.ones(4),
        "vth": np.ones(2),
        "bias": None,
        **kwargs,
    }
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.spike_linear(train, **args)
    with pytest.raises(spikecode.SpikecodeError, match="SpikeTrain"):
        spikecode.spike_linear(np.ones((2, 16)), args["weight_q"], args["scales"], 1.0)
