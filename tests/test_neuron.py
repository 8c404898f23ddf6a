"""SPEC §2: the multi-step soft-reset IF neuron agrees with the single-step formula."""

import numpy as np
import pytest
import torch

import spikecode


@pytest.mark.parametrize("k", [2.0, 3.0, 4.0])
def test_first_drive_reproduces_the_ternary_train(rng, k):
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=k)
    T = int(np.abs(counts).max())
    spikes = spikecode.integrate_and_fire(x, vth, T)
    np.testing.assert_array_equal(spikes, spikecode.encode(counts, "ternary", T=T).to_dense())


def test_spread_drive_gives_the_same_counts(rng):
    x = rng.standard_normal((8, 128))
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    T = int(np.abs(counts).max()) + 2
    spikes = spikecode.integrate_and_fire(x, vth, T, drive="spread")
    np.testing.assert_array_equal(spikes.sum(axis=0), counts)
    assert spikes.shape == (T, 8, 128)


def test_binary_neuron_never_fires_negative(rng):
    x = rng.standard_normal((4, 32)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    T = int(np.abs(counts).max())
    spikes = spikecode.integrate_and_fire(x, vth, T, ternary=False)
    np.testing.assert_array_equal(spikes.sum(axis=0), np.maximum(counts, 0))
    assert spikes.min() == 0


def test_ties_round_up_as_documented():
    # x/Vth = 2.5: round-half-to-even gives 2, the IF neuron 3 (module docstring).
    x = np.array([[2.5, -2.5, 3.5, 1.5, -3.5, 0.5, -0.5]])
    spikes = spikecode.integrate_and_fire(x, 1.0, T=6)
    assert spikes.sum(axis=0).tolist() == [[3, -2, 4, 2, -3, 1, 0]]
    assert spikecode.fixed_counts(x, 1.0).tolist() == [[2, -2, 4, 2, -4, 0, 0]]
    # no oscillation: every element's spikes have one sign
    assert not np.any((spikes > 0).any(axis=0) & (spikes < 0).any(axis=0))


def test_snntorch_leaky_neuron_is_an_independent_reference(rng):
    snn = pytest.importorskip("snntorch")
    x = np.abs(rng.standard_normal((6, 96))).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    T = int(counts.max()) + 1
    u = torch.from_numpy(x / vth[:, None])  # input in units of the threshold
    # beta=1: no leak; subtract reset: soft reset; threshold 1. snnTorch applies the reset
    # of step t at step t+1, as SPEC's v[t+1] = v[t] - Vth·s[t] + x[t+1]. The membrane
    # starts half a threshold up, which turns its floor into round (spikecode.neuron).
    neuron = snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract")
    mem = torch.full_like(u, 0.5)
    total = torch.zeros_like(u)
    for t in range(T):
        spk, mem = neuron(u if t == 0 else torch.zeros_like(u), mem)
        total += spk
    np.testing.assert_array_equal(total.numpy().astype(np.int32), counts)
    own = spikecode.integrate_and_fire(x, vth, T, ternary=False)
    np.testing.assert_array_equal(own.sum(axis=0), counts)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"T": 0}, "positive integer"),
        ({"T": 2, "drive": "sometimes"}, "drive"),
        ({"T": 2, "vth": np.ones(3)}, "shape"),
        ({"T": 2, "vth": -1.0}, "vth must"),
    ],
)
def test_bad_neuron_input(kwargs, message):
    kwargs = {"vth": 1.0, **kwargs}
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.integrate_and_fire(np.ones((2, 4)), **kwargs)
