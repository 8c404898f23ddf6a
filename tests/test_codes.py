"""Step 2 (SPEC §3): the five codes, against the definitions and the dense oracle."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikecode
from spikecode.encoders import SCHEMES, encode_dense, get_scheme, min_steps
from spikecode.encoders import _reference as ref

SIGNED = ["ternary", "bitwise-bidirectional", "bitwise-twos-complement"]
ALL = list(SCHEMES)


def counts_arrays(low=-300, high=300):
    return hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.integers(low, high),
    )


LAYOUTS = st.sampled_from(["events", "planes", "auto"])


@given(counts_arrays(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]), LAYOUTS)
def test_round_trip_is_lossless(counts, scheme, bit_order, layout):
    train = spikecode.encode(counts, scheme, bit_order=bit_order, layout=layout)
    np.testing.assert_array_equal(spikecode.decode(train), counts)
    dense = train.to_dense()
    weights = get_scheme(scheme).step_weights(train.T, bit_order)
    np.testing.assert_array_equal(ref.decode_dense(dense, weights, train.zero_point), counts)
    assert train.clipped == 0


@given(counts_arrays(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]), LAYOUTS)
def test_kernels_match_dense_oracle(counts, scheme, bit_order, layout):
    spec = get_scheme(scheme)
    train = spikecode.encode(counts, scheme, bit_order=bit_order, layout=layout)
    want = ref.dense_train(counts, spec, train.T, train.zero_point, bit_order)
    np.testing.assert_array_equal(train.to_dense(), want)
    np.testing.assert_array_equal(encode_dense(counts, scheme, bit_order=bit_order), want)
    t, index, polarity = ref.events_from_dense(want)
    np.testing.assert_array_equal(train.t, t)
    np.testing.assert_array_equal(train.index, index)
    np.testing.assert_array_equal(train.polarity, polarity)


@given(counts_arrays(0, 70), st.sampled_from(ALL), st.integers(0, 12), LAYOUTS)
def test_fixed_T_large_enough_round_trips(counts, scheme, extra, layout):
    T = min_steps(counts, scheme) + extra
    if get_scheme(scheme).bitwise:
        T = min(T, 62)
    train = spikecode.encode(counts, scheme, T=T, layout=layout)
    assert train.T == T
    np.testing.assert_array_equal(spikecode.decode(train), counts)


@pytest.mark.parametrize(
    ("count", "scheme", "T", "train"),
    [  # SPEC §3 worked examples (report figure 4)
        (5, "binary", None, [1, 1, 1, 1, 1]),
        (-5, "ternary", None, [-1, -1, -1, -1, -1]),
        (5, "bitwise", None, [1, 0, 1]),
        (-5, "bitwise-bidirectional", None, [-1, 0, -1]),
        (-5, "bitwise-twos-complement", 4, [1, 0, 1, 1]),
        (5, "bitwise", 5, [0, 0, 1, 0, 1]),
        (6, "bitwise-twos-complement", 4, [0, 1, 1, 0]),
    ],
)
def test_worked_examples(count, scheme, T, train):
    got = spikecode.encode(np.array([count]), scheme, T=T)
    assert got.to_dense()[:, 0].tolist() == train


def test_lsb_first_reverses_bit_steps():
    msb = spikecode.encode(np.array([6, -3]), "bitwise-bidirectional").to_dense()
    lsb = spikecode.encode(np.array([6, -3]), "bitwise-bidirectional", bit_order="lsb").to_dense()
    np.testing.assert_array_equal(lsb, msb[::-1])
    # two's complement LSB-first: the sign bit is the last step
    tc = spikecode.encode(np.array([-5]), "bitwise-twos-complement", T=4, bit_order="lsb")
    assert tc.to_dense()[:, 0].tolist() == [1, 1, 0, 1]
    assert tc.step_weights.tolist() == [1, 2, 4, -8]


def test_256_needs_256_binary_and_9_bitwise_steps():
    c = np.array([256])
    assert spikecode.encode(c, "binary").T == 256
    assert spikecode.encode(c, "bitwise").T == 9


@pytest.mark.parametrize(
    ("scheme", "M", "T"),
    [
        ("binary", 0, 1), ("binary", 7, 7), ("ternary", 7, 7),
        ("bitwise", 0, 1), ("bitwise", 1, 1), ("bitwise", 7, 3), ("bitwise", 8, 4),
        ("bitwise-bidirectional", 7, 3), ("bitwise-bidirectional", 255, 8),
        ("bitwise-twos-complement", 0, 2), ("bitwise-twos-complement", 1, 2),
        ("bitwise-twos-complement", 7, 4), ("bitwise-twos-complement", 8, 5),
    ],
)  # fmt: skip
def test_minimal_T_table(scheme, M, T):
    assert SCHEMES[scheme].min_steps(M) == T
    assert min_steps(np.array([M, 0]), scheme) == T


def test_ternary_spikes_fill_the_first_steps():
    dense = spikecode.encode(np.array([3, -2, 0]), "ternary", T=5).to_dense()
    assert dense.T.tolist() == [[1, 1, 1, 0, 0], [-1, -1, 0, 0, 0], [0, 0, 0, 0, 0]]


def test_binary_signed_counts_use_recorded_zero_point():
    c = np.array([[-3, 0, 2]])
    train = spikecode.encode(c, "binary")
    assert train.zero_point == -3 and train.T == 5
    assert train.to_dense().sum(axis=0).tolist() == [[0, 3, 5]]
    np.testing.assert_array_equal(spikecode.decode(train), c)
    explicit = spikecode.encode(c, "bitwise", zero_point=-4)
    assert explicit.zero_point == -4
    np.testing.assert_array_equal(spikecode.decode(explicit), c)


def test_non_negative_counts_need_no_zero_point():
    assert spikecode.encode(np.array([0, 4]), "binary").zero_point == 0


@pytest.mark.parametrize("scheme", ["binary", "bitwise"])
def test_unsigned_codes_refuse_negative_counts_without_zero_point(scheme):
    with pytest.raises(spikecode.SpikecodeError, match="non-negative"):
        spikecode.encode(np.array([-1, 2]), scheme, zero_point=0)


@pytest.mark.parametrize("scheme", ["binary", "bitwise"])
@pytest.mark.parametrize("zero_point", [-(2**63), -(2**62) - 1, 2**62 + 1, 2**63 - 1, 2**70])
@pytest.mark.parametrize("path", ["counts", "activations"])
def test_a_zero_point_beyond_64_bit_values_is_refused(scheme, zero_point, path):
    # count - zero_point must fit in int64; a wrapped value used to loop forever in the
    # kernels' bit loops (activations) or escape as a bare ValueError (counts).
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    with pytest.raises(spikecode.SpikecodeError, match="zero_point .* out of range"):
        if path == "counts":
            spikecode.encode(spikecode.adaptive_counts(x, 3)[0], scheme, zero_point=zero_point)
        else:
            spikecode.encode_activations(x, 3, scheme=scheme, zero_point=zero_point)


@pytest.mark.parametrize("path", ["counts", "activations"])
def test_a_zero_point_at_the_limit_still_encodes(path):
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    counts = spikecode.adaptive_counts(x, 3)[0]
    zp = -(2**62)
    if path == "counts":
        train = spikecode.encode(counts, "bitwise", zero_point=zp)
    else:
        train, _ = spikecode.encode_activations(x, 3, scheme="bitwise", zero_point=zp)
    assert train.T == 63
    np.testing.assert_array_equal(spikecode.decode(train), counts)


@pytest.mark.parametrize("scheme", SIGNED)
def test_signed_codes_refuse_a_zero_point(scheme):
    with pytest.raises(spikecode.SpikecodeError, match="zero_point"):
        spikecode.encode(np.array([1]), scheme, zero_point=3)


@pytest.mark.parametrize(
    ("scheme", "T", "counts", "clipped_to"),
    [
        ("binary", 3, [0, 2, 5], [0, 2, 3]),
        ("ternary", 2, [-4, 1, 3], [-2, 1, 2]),
        ("bitwise", 2, [1, 3, 9], [1, 3, 3]),
        ("bitwise-bidirectional", 2, [-9, 3, 4], [-3, 3, 3]),
        ("bitwise-twos-complement", 3, [-5, -4, 3, 4], [-4, -4, 3, 3]),
    ],
)
def test_fixed_T_refuses_or_saturates(scheme, T, counts, clipped_to):
    c = np.array(counts)
    with pytest.raises(spikecode.SpikecodeError, match="cannot carry"):
        spikecode.encode(c, scheme, T=T)
    train = spikecode.encode(c, scheme, T=T, saturate=True)
    np.testing.assert_array_equal(spikecode.decode(train), clipped_to)
    assert train.clipped == int((np.array(counts) != np.array(clipped_to)).sum())


def test_twos_complement_fixed_T_accepts_full_range():
    train = spikecode.encode(np.array([-8, 7]), "bitwise-twos-complement", T=4)
    np.testing.assert_array_equal(spikecode.decode(train), [-8, 7])
    assert spikecode.encode(np.array([-8]), "bitwise-twos-complement").T == 5  # SPEC bound


def test_float_counts_that_are_integral_are_accepted():
    train = spikecode.encode(np.array([1.0, -2.0]), "ternary")
    np.testing.assert_array_equal(spikecode.decode(train), [1, -2])
    torch_train = spikecode.encode(torch.tensor([[3, -1]], dtype=torch.int64), "ternary")
    np.testing.assert_array_equal(spikecode.decode(torch_train), [[3, -1]])


@pytest.mark.parametrize(
    ("counts", "kwargs", "message"),
    [
        (np.array([0.5, 1.0]), {}, "must be integers"),
        (np.array([np.nan]), {}, "NaN"),
        (np.array([True]), {}, "integer array"),
        (np.array(["a"]), {}, "integer array"),
        (np.zeros((0,), np.int32), {}, "empty"),
        (np.array(3), {}, "at least one axis"),
        (np.array([2**40]), {}, "int32 range"),
        (np.array([1]), {"scheme": "quaternary"}, "unknown scheme 'quaternary'; choose one of"),
        (np.array([1]), {"T": 0}, "at least 1"),
        (np.array([1]), {"T": 1.5}, "positive integer"),
        (np.array([1]), {"scheme": "bitwise-twos-complement", "T": 1}, "at least 2"),
        (np.array([1]), {"scheme": "bitwise", "T": 63}, "at most T=62"),
        (np.array([1]), {"bit_order": "middle"}, "bit_order"),
        (np.array([1]), {"scheme": "binary", "zero_point": "min"}, "zero_point"),
    ],
)
def test_bad_counts_and_options(counts, kwargs, message):
    kwargs = {"scheme": "ternary", **kwargs}
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.encode(counts, **kwargs)


def test_dense_round_trip_through_from_dense(rng):
    c = rng.integers(-20, 20, size=(3, 4, 5))
    for scheme in ALL:
        train = spikecode.encode(c, scheme)
        back = spikecode.SpikeTrain.from_dense(
            train.to_dense(), scheme, zero_point=train.zero_point
        )
        assert back.equals(train)


def test_from_dense_refuses_values_the_code_cannot_emit():
    with pytest.raises(spikecode.SpikecodeError, match="only the values"):
        spikecode.SpikeTrain.from_dense(np.array([[-1, 0]]), "binary")
    with pytest.raises(spikecode.SpikecodeError, match="T >= 1"):
        spikecode.SpikeTrain.from_dense(np.zeros((3,)), "ternary")


def test_from_events_sorts_and_validates(rng):
    c = rng.integers(-9, 9, size=(4, 6))
    train = spikecode.encode(c, "bitwise-bidirectional")
    perm = rng.permutation(train.n_spikes)
    rebuilt = spikecode.SpikeTrain.from_events(
        train.shape, train.T, train.scheme, train.t[perm], train.index[perm], train.polarity[perm]
    )
    assert rebuilt.equals(train)
    bad = [
        ({"t": [0, 0], "index": [1, 1], "polarity": [1, 1]}, "duplicate"),
        ({"t": [5], "index": [0], "polarity": [1]}, r"outside \[0, T\)"),
        ({"t": [0], "index": [24], "polarity": [1]}, "indices outside"),
        ({"t": [0], "index": [0], "polarity": [2]}, "polarities"),
        ({"t": [0.5], "index": [0], "polarity": [1]}, "integer"),
        ({"t": [0, 1], "index": [0], "polarity": [1]}, "equal length"),
    ]
    for fields, message in bad:
        with pytest.raises(spikecode.SpikecodeError, match=message):
            spikecode.SpikeTrain.from_events((4, 6), 4, "bitwise-bidirectional", **fields)
    with pytest.raises(spikecode.SpikecodeError, match="polarities"):
        spikecode.SpikeTrain.from_events((1, 2), 2, "binary", [0], [0], [-1])


def test_train_properties(rng):
    c = rng.integers(-5, 6, size=(3, 8))
    train = spikecode.encode(c, "ternary")
    assert train.n_spikes == int(np.abs(c).sum())
    assert train.rows == 3 and train.features == 8 and train.size == 24
    assert train.spikes_per_element == pytest.approx(np.abs(c).sum() / 24)
    assert train.firing_rate == pytest.approx(np.abs(c).sum() / (24 * train.T))
    ptr = train.row_pointers()
    assert ptr.tolist() == [0, *np.cumsum(np.abs(c).sum(axis=1)).tolist()]
    assert "ternary" in repr(train)


def test_to_torch_feeds_an_snntorch_layer(rng):
    snn = pytest.importorskip("snntorch")
    c = rng.integers(0, 4, size=(2, 6))
    train = spikecode.encode(c, "binary", T=4)
    spikes = train.to_torch()
    assert spikes.shape == (4, 2, 6) and spikes.dtype == torch.float32
    fc = torch.nn.Linear(6, 3, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(rng.standard_normal((3, 6))))
    neuron = snn.Leaky(beta=1.0, threshold=1e9, reset_mechanism="none", init_hidden=False)
    mem = neuron.init_leaky()
    for t in range(train.T):
        _, mem = neuron(fc(spikes[t]), mem)
    # A non-leaky integrator that never fires accumulates W · Σ_t s_t = W · counts.
    expected = fc(torch.from_numpy(c).float())
    torch.testing.assert_close(mem, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", ALL)
def test_compact_storage(rng, scheme):
    c = rng.integers(-9, 10, size=(4, 3, 50))
    train = spikecode.encode(c, scheme, layout="events")
    assert train.feature.dtype == np.uint16
    assert train.step_ptr.shape == (12 * train.T + 1,)
    assert train.signs.shape == ((train.n_spikes,) if SCHEMES[scheme].signed else (0,))
    assert train.nbytes == train.step_ptr.nbytes + train.n_spikes * (
        3 if SCHEMES[scheme].signed else 2
    )
    rebuilt = spikecode.SpikeTrain.from_arrays(
        train.shape, train.T, scheme, train.step_ptr, train.feature, train.signs,
        zero_point=train.zero_point,
    )  # fmt: skip
    assert rebuilt.equals(train)


def test_wide_features_use_int32_ids(rng):
    c = np.zeros((2, 70_000), dtype=np.int32)
    c[0, [5, 69_999]] = [3, -2]
    c[1, 66_000] = 1
    train = spikecode.encode(c, "bitwise-bidirectional")
    assert train.feature.dtype == np.int32
    np.testing.assert_array_equal(spikecode.decode(train), c)
    assert train.index.tolist() == [5, 69_999, 5, 70_000 + 66_000]


def test_from_arrays_refuses_corrupt_arrays():
    train = spikecode.encode(
        np.array([[3, -1, 0], [0, 2, 5]]), "bitwise-bidirectional", layout="events"
    )
    good = {"step_ptr": train.step_ptr, "feature": train.feature, "signs": train.signs}
    bad = [
        ({"step_ptr": train.step_ptr[:-1]}, "rows\\*T\\+1"),
        ({"step_ptr": train.step_ptr[::-1].copy()}, "step_ptr"),
        ({"feature": train.feature + 5}, "outside the feature axis"),
        ({"feature": train.feature[[0, 2, 1, 3, 4, 5]]}, "strictly increasing"),
        ({"signs": train.signs[:-1]}, "one sign"),
        ({"signs": np.full_like(train.signs, 2)}, "one sign"),
        ({"feature": train.feature.astype(np.float32)}, "integer"),
    ]
    for change, message in bad:
        with pytest.raises(spikecode.SpikecodeError, match=message):
            spikecode.SpikeTrain.from_arrays((2, 3), train.T, train.scheme, **{**good, **change})
    with pytest.raises(spikecode.SpikecodeError, match="carry no signs"):
        spikecode.SpikeTrain.from_arrays((1, 2), 2, "bitwise", [0, 1, 1], [0], [1])


def test_rows_whose_last_steps_are_silent(rng):
    # Rows whose spikes all sit in early steps exercise the kernel's end-of-row path.
    c = np.zeros((64, 40), dtype=np.int32)
    c[::2, ::3] = 16  # 10000: only the first (MSB) step fires
    c[1::2, 1] = 17
    for bit_order in ("msb", "lsb"):
        train = spikecode.encode(c, "bitwise", bit_order=bit_order, layout="events")
        np.testing.assert_array_equal(spikecode.decode(train), c)
        np.testing.assert_array_equal(
            train.to_dense(), ref.dense_train(c, SCHEMES["bitwise"], train.T, 0, bit_order)
        )
