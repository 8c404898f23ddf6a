"""SPEC §5 statistics from counts, against the dense-train oracle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikecode
from spikecode.encoders import SCHEMES
from spikecode.encoders import _reference as ref

TOTALS = ["elements", "spikes", "silent", "within_7", "window_spikes", "window_steps"]


@given(
    hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8),
        elements=st.integers(-200, 200),
    ),
    st.sampled_from(list(SCHEMES)),
    st.integers(1, 5),
)
def test_stats_match_oracle(counts, scheme, window):
    stats = spikecode.spike_stats(counts, scheme, window=window)
    train = spikecode.encode(counts, scheme)
    want = ref.spike_statistics(counts, SCHEMES[scheme], train.T, train.zero_point, window)
    assert {name: getattr(stats, name) for name in TOTALS} == want
    assert stats.spikes == train.n_spikes
    assert stats.T == train.T
    assert stats.firing_rate == pytest.approx(train.firing_rate)


def test_windowed_sparsity_worked_example():
    # bitwise-bidirectional, w = 3: 0 -> 1 bit, 3 windows... each element below occupies
    #  c=0: 3 steps, 0 spikes | c=5 (101): 3 steps, 2 spikes | c=-9 (1001): 6 steps, 2 spikes
    stats = spikecode.spike_stats(np.array([0, 5, -9]), "bitwise-bidirectional", window=3)
    assert (stats.window_spikes, stats.window_steps) == (4, 12)
    assert stats.window_sparsity == pytest.approx(1 - 4 / 12)
    assert stats.T == 4 and stats.spikes == 4 and stats.silent == 1
    assert stats.firing_rate == pytest.approx(4 / 12)


def test_twos_complement_window_counts_sign_extension():
    # -1 has length 1 -> one window of 3 steps, all ones in two's complement: 3 spikes.
    stats = spikecode.spike_stats(np.array([-1, 0]), "bitwise-twos-complement", window=3)
    assert (stats.window_spikes, stats.window_steps) == (3, 6)
    assert stats.spikes == 2  # at the minimal T = 2: -1 -> 11


def test_within_7_for_normal_activations_matches_spec_reference(rng):
    # SPEC §5: standard-normal activations at k = 3 give |c| <= 7 for about 95.4 %.
    x = rng.standard_normal((400, 2048)).astype(np.float32)
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    stats = spikecode.spike_stats(counts, "bitwise-bidirectional")
    assert stats.within_7_fraction == pytest.approx(0.954, abs=0.003)


def test_silent_fraction_depends_on_zero_point():
    c = np.array([[-2, 0, 0, 3]])
    assert spikecode.spike_stats(c, "ternary").silent_fraction == 0.5
    binary = spikecode.spike_stats(c, "binary")  # shifted by -2: only the -2 is silent
    assert binary.silent == 1


def test_merge_equals_stats_of_concatenation(rng):
    a = rng.integers(-30, 30, size=(5, 16))
    b = rng.integers(-30, 30, size=(7, 16))
    T = 6
    merged = spikecode.spike_stats(a, "bitwise-bidirectional", T).merge(
        spikecode.spike_stats(b, "bitwise-bidirectional", T)
    )
    whole = spikecode.spike_stats(np.concatenate([a, b]), "bitwise-bidirectional", T)
    assert merged == whole
    with pytest.raises(spikecode.SpikecodeError, match="cannot merge"):
        merged.merge(spikecode.spike_stats(a, "ternary"))


def test_to_dict_and_train_stats(rng):
    c = rng.integers(-9, 9, size=(4, 5))
    stats = spikecode.spike_stats(c, "ternary")
    d = stats.to_dict()
    for key in ("spikes_per_element", "firing_rate", "sparsity", "silent_fraction",
                "within_7_fraction", "window_sparsity", "spikes", "T"):  # fmt: skip
        assert key in d
    assert d["sparsity"] == pytest.approx(1 - d["firing_rate"])
    assert spikecode.train_stats(spikecode.encode(c, "ternary")) == stats


def test_bad_window():
    with pytest.raises(spikecode.SpikecodeError, match="window"):
        spikecode.spike_stats(np.array([1]), "ternary", window=0)
