"""Weight-fetch model: block activity against explicit loops, survival, energies."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikecode.energy import (
    DEFAULT_BLOCK_SIZES,
    ChannelActivity,
    block_activity,
    channel_activity,
    fetch_energy,
    load_table,
    weight_fetch,
)
from spikecode.errors import SpikecodeError

# --- slow, obviously-correct references ------------------------------------------------


def ref_channel_fetch(counts, zero_point=0):
    """Weight columns fetched with channel skipping: one per non-silent (token, channel)."""
    rows = np.asarray(counts).reshape(-1, np.asarray(counts).shape[-1])
    fetched = 0
    for token in rows.tolist():
        for value in token:
            if value != zero_point:
                fetched += 1
    return fetched


def ref_block_fetch(counts, block_size, zero_point=0):
    """Weight columns fetched with block skipping, by looping over tokens and blocks."""
    rows = np.asarray(counts).reshape(-1, np.asarray(counts).shape[-1])
    n = rows.shape[1]
    fetched = 0
    for token in rows.tolist():
        for start in range(0, n, block_size):
            block = token[start : start + block_size]
            if any(value != zero_point for value in block):
                fetched += len(block)
    return fetched


def ref_block_activity(counts, block_size):
    rows = np.asarray(counts).reshape(-1, np.asarray(counts).shape[-1])
    n = rows.shape[1]
    out = []
    for token in rows.tolist():
        out.append(
            [
                any(v != 0 for v in token[start : start + block_size])
                for start in range(0, n, block_size)
            ]
        )
    return np.array(out, dtype=bool)


def sparse_counts(rng, shape, silent=0.8):
    counts = rng.integers(-7, 8, size=shape)
    counts[rng.random(shape) < silent] = 0
    return counts


sparse_values = st.sampled_from([0, 0, 0, 0, 0, 0, 1, -1, 3, -7])
count_arrays = arrays(
    np.int32,
    st.tuples(st.integers(1, 6), st.integers(1, 70)),
    elements=sparse_values,
)


# --- block activity ---------------------------------------------------------------------


def test_block_activity_worked_example():
    counts = np.array([[0, 1, 0, 0, 2], [0, 0, 0, 0, 0], [3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        block_activity(counts, 2),
        [[True, False, True], [False, False, False], [True, False, False]],
    )
    activity = channel_activity(counts, (2, 3, 5))
    assert activity.active_channels == 3
    # token 0: blocks {0,1} and {4} -> 2 + 1; token 2: block {0,1} -> 2
    assert activity.block_fetched_channels[2] == 5
    # B = 3: token 0 fetches {0,1,2} and {3,4}; token 2 fetches {0,1,2}
    assert activity.block_fetched_channels[3] == 8
    assert activity.block_fetched_channels[5] == 10


@given(counts=count_arrays, block_size=st.integers(1, 80))
def test_block_activity_matches_loop(counts, block_size):
    np.testing.assert_array_equal(
        block_activity(counts, block_size), ref_block_activity(counts, block_size)
    )


@given(counts=count_arrays, block_sizes=st.lists(st.integers(1, 80), min_size=1, unique=True))
def test_channel_activity_matches_loops(counts, block_sizes):
    activity = channel_activity(counts, block_sizes)
    assert activity.tokens == counts.shape[0]
    assert activity.in_features == counts.shape[1]
    assert activity.active_channels == ref_channel_fetch(counts)
    for size in block_sizes:
        assert activity.block_fetched_channels[size] == ref_block_fetch(counts, size)


@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 64, 100, 256, 300])
def test_random_sparse_counts_against_loop(rng, block_size):
    # in_features 300 is divisible by neither 7, 16, 64 nor 256.
    counts = sparse_counts(rng, (4, 5, 300), silent=0.97)
    activity = channel_activity(counts, (block_size,))
    assert activity.tokens == 20
    assert activity.block_fetched_channels[block_size] == ref_block_fetch(counts, block_size)


def test_block_size_one_equals_channel_granularity(rng):
    counts = sparse_counts(rng, (9, 37))
    activity = channel_activity(counts, (1,))
    assert activity.block_fetched_channels[1] == activity.active_channels


def test_leading_axes_are_tokens(rng):
    counts = sparse_counts(rng, (2, 3, 4, 10))
    flat = counts.reshape(-1, 10)
    assert channel_activity(counts) == channel_activity(flat)
    assert channel_activity(counts[0, 0, 0]).tokens == 1  # a single token, 1-D


def test_zero_point_marks_the_silent_value():
    # binary coding with a zero-point shift of -2: the elements equal to -2 fire nothing
    counts = np.array([[-2, -2, 0, 1], [-2, -2, -2, -2]])
    activity = channel_activity(counts, (2,), zero_point=-2)
    assert activity.active_channels == ref_channel_fetch(counts, zero_point=-2) == 2
    assert activity.block_fetched_channels[2] == ref_block_fetch(counts, 2, zero_point=-2) == 2


def test_torch_and_integral_float_counts_are_accepted():
    torch = pytest.importorskip("torch")
    counts = np.array([[0, 2, 0], [0, 0, -1]])
    expected = channel_activity(counts, (2,))
    assert channel_activity(torch.tensor(counts), (2,)) == expected
    assert channel_activity(counts.astype(np.float32), (2,)) == expected


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (np.array([[0.5, 1.0]]), "must be integers"),
        (np.array([[True, False]]), "integer array"),
        (np.zeros((0, 4), dtype=np.int32), "empty"),
        (np.zeros((3, 0), dtype=np.int32), "empty"),
        (np.int32(3), "at least one axis"),
    ],
)
def test_bad_counts_are_refused(counts, message):
    with pytest.raises(SpikecodeError, match=message):
        channel_activity(counts)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [((0,), "positive integer"), ((16, 16), "repeat"), ("16", "sequence"), ((2.5,), "positive")],
)
def test_bad_block_sizes_are_refused(sizes, message):
    with pytest.raises(SpikecodeError, match=message):
        channel_activity(np.ones((2, 4), dtype=np.int32), sizes)


def test_bad_zero_point_and_block_size():
    with pytest.raises(SpikecodeError, match="zero_point"):
        channel_activity(np.ones((2, 4), dtype=np.int32), zero_point=0.5)
    with pytest.raises(SpikecodeError, match="block size"):
        block_activity(np.ones((2, 4), dtype=np.int32), 0)


# --- ChannelActivity --------------------------------------------------------------------


def test_merge_equals_activity_of_concatenation(rng):
    a = sparse_counts(rng, (5, 40))
    b = sparse_counts(rng, (3, 40))
    merged = channel_activity(a, (16, 64)).merge(channel_activity(b, (16, 64, 5)))
    assert merged == channel_activity(np.concatenate([a, b]), (16, 64))
    with pytest.raises(SpikecodeError, match="different in_features"):
        merged.merge(channel_activity(sparse_counts(rng, (3, 41))))
    with pytest.raises(SpikecodeError, match="cannot merge"):
        merged.merge(a)


def test_from_silent_fraction():
    activity = ChannelActivity.from_silent_fraction(10, 3584, 0.184)
    assert activity.silent_fraction == pytest.approx(0.184)
    assert activity.active_channels == pytest.approx(0.816 * 35840)
    assert dict(activity.block_fetched_channels) == {}
    with pytest.raises(SpikecodeError, match=r"\[0, 1\]"):
        ChannelActivity.from_silent_fraction(10, 4, 1.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokens": 0}, "positive integer"),
        ({"in_features": -1}, "positive integer"),
        ({"active_channels": -1}, "finite and >= 0"),
        ({"active_channels": 41}, "more active channels"),
        ({"block_fetched_channels": {4: 3}}, "between the active channels"),
        ({"block_fetched_channels": {4: 41}}, "between the active channels"),
        ({"block_fetched_channels": {0: 10}}, "positive integer"),
    ],
)
def test_channel_activity_validation(kwargs, message):
    args = {"tokens": 4, "in_features": 10, "active_channels": 5, **kwargs}
    with pytest.raises(SpikecodeError, match=message):
        ChannelActivity(**args)


# --- fetch energy -----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["dram", "dram_high", "sram_8kb", "sram_1mb"])
@pytest.mark.parametrize("weight_bits", [4, 8, 16])
def test_fetch_energy_against_hand_formula(rng, level, weight_bits):
    out_features = 24
    counts = sparse_counts(rng, (6, 50), silent=0.9)
    result = weight_fetch(
        counts, out_features, weight_bits=weight_bits, memory=level, block_sizes=(16, 7)
    )
    access_pj = load_table().memory_levels[level]
    tokens = 6

    def expect(cost, columns):
        n_bytes = columns * out_features * weight_bits / 8
        assert cost.fetched_channels == columns
        assert cost.bytes == pytest.approx(n_bytes)
        assert cost.accesses == pytest.approx(n_bytes / 8)  # 64-bit accesses
        assert cost.energy_pj == pytest.approx(n_bytes / 8 * access_pj)
        assert cost.bytes_per_token == pytest.approx(n_bytes / tokens)
        assert cost.energy_per_token_pj == pytest.approx(n_bytes / 8 * access_pj / tokens)

    expect(result.dense, tokens * 50)
    expect(result.channel, ref_channel_fetch(counts))
    for size in (16, 7):
        expect(result.blocks[size], ref_block_fetch(counts, size))
    assert result.level == level
    assert result.access_pj == access_pj
    assert result.weight_bits == weight_bits


def test_default_level_is_dram_low_end():
    result = weight_fetch(np.array([[1, 0]]), 8)
    assert result.level == "dram"
    assert result.access_pj == 1300.0
    # 2 columns x 8 INT8 weights = 16 bytes = 2 accesses of 64 bits
    assert result.dense.energy_pj == 2 * 1300.0
    assert result.channel.energy_pj == 1300.0


def test_access_width_comes_from_the_table():
    table = {
        "unit": "pJ",
        "operations": dict(load_table().operations),
        "memory": {"access_bits": 32, "levels": {"m": 5.0}},
    }
    result = weight_fetch(np.array([[1, 0, 0, 0]]), 4, memory="m", table=table)
    # 4 columns x 4 bytes = 16 bytes = 4 accesses of 32 bits
    assert result.dense.accesses == 4
    assert result.dense.energy_pj == 20.0


@given(counts=count_arrays, block_size=st.integers(1, 80))
def test_block_fetch_lies_between_channel_and_dense(counts, block_size):
    result = weight_fetch(counts, 3, block_sizes=(block_size, 2 * block_size))
    block, double = result.blocks[block_size], result.blocks[2 * block_size]
    assert result.channel.bytes <= block.bytes <= double.bytes <= result.dense.bytes
    survival = result.survival[block_size]
    if result.channel.bytes == result.dense.bytes:
        assert survival is None
    else:
        assert 0.0 <= survival <= 1.0
        assert result.survival[2 * block_size] <= survival + 1e-12


@given(counts=count_arrays)
def test_survival_is_one_at_block_size_one(counts):
    result = weight_fetch(counts, 5, block_sizes=(1,))
    if result.channel.bytes < result.dense.bytes:
        assert result.survival[1] == pytest.approx(1.0)
    else:
        assert result.survival[1] is None


@given(counts=count_arrays, extra=st.integers(0, 10))
def test_survival_of_whole_row_blocks_counts_only_silent_tokens(counts, extra):
    n = counts.shape[1]
    result = weight_fetch(counts, 5, block_sizes=(n + extra,))
    silent_tokens = int(np.sum(~counts.any(axis=1)))
    silent_elements = counts.size - np.count_nonzero(counts)
    if silent_elements == 0:
        assert result.survival[n + extra] is None
    else:
        # dense - block saves the all-silent tokens' whole rows; dense - channel saves
        # every silent element.
        assert result.survival[n + extra] == pytest.approx(n * silent_tokens / silent_elements)


def test_survival_worked_example():
    # in = 4, B = 2; token 0 fires in channel 0 only, token 1 in none.
    counts = np.array([[5, 0, 0, 0], [0, 0, 0, 0]])
    result = weight_fetch(counts, 1, block_sizes=(2,))
    # dense 8 columns, channel 1, block 2 -> (8 - 2) / (8 - 1)
    assert result.survival[2] == pytest.approx(6 / 7)


def test_without_silent_channels_survival_is_undefined():
    result = weight_fetch(np.ones((3, 8), dtype=np.int32), 4)
    assert result.channel.bytes == result.dense.bytes
    assert all(value is None for value in result.survival.values())


def test_activity_from_fraction_has_no_block_figures():
    activity = ChannelActivity.from_silent_fraction(100, 3584, 0.184)
    result = weight_fetch(activity, 18944)
    assert result.channel.energy_pj == pytest.approx(0.816 * result.dense.energy_pj)
    assert set(result.blocks) == set(DEFAULT_BLOCK_SIZES)
    assert all(cost is None for cost in result.blocks.values())
    assert all(value is None for value in result.survival.values())
    block = result.to_dict()["block_skip"][0]
    assert block["block_size"] == 16
    assert block["energy_pj"] is None
    assert block["survival"] is None


def test_activity_passed_directly_equals_counts(rng):
    counts = sparse_counts(rng, (7, 33))
    direct = weight_fetch(counts, 9, block_sizes=(4, 16))
    via = weight_fetch(channel_activity(counts, (4, 16)), 9, block_sizes=(4, 16))
    assert direct == via


def test_fetch_energy_checks_its_arguments():
    activity = ChannelActivity(2, 4, 3)
    with pytest.raises(SpikecodeError, match="does not match"):
        fetch_energy(3, 4, 2, activity)
    with pytest.raises(SpikecodeError, match="weight_bits"):
        fetch_energy(2, 4, 2, activity, weight_bits=0)
    with pytest.raises(SpikecodeError, match="no memory level 'hbm'"):
        fetch_energy(2, 4, 2, activity, memory="hbm")
    dense_only = fetch_energy(2, 4, 2, None)
    assert dense_only.channel is None
    assert dense_only.dense.fetched_channels == 8


def test_weight_fetch_to_dict_is_json_ready(rng):
    import json

    counts = sparse_counts(rng, (3, 20))
    data = weight_fetch(counts, 4, block_sizes=(16, 64)).to_dict()
    json.dumps(data, allow_nan=False)
    assert [entry["block_size"] for entry in data["block_skip"]] == [16, 64]
    assert data["dense"]["fetched_channels"] == 60
    assert data["channel_skip"]["fetched_channels"] == ref_channel_fetch(counts)
    assert data["block_skip"][0]["fetched_channels"] == ref_block_fetch(counts, 16)
