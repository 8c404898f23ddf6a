"""The packed bit-plane layout, the fused float -> train pass and the PyTorch planes.

Every path is compared with the NumPy oracle (dense train by definition, np.packbits)
and with the events layout; the fused and PyTorch paths must agree bit for bit with
``adaptive_counts`` + ``encode``.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikecode
from spikecode.encoders import SCHEMES, _plane_kernels, get_scheme
from spikecode.encoders import _reference as ref
from spikecode.encoders._arrays import layout_nbytes

ALL = list(SCHEMES)
SIGNED_SPIKES = ["ternary", "bitwise-bidirectional"]
# Each example runs several parallel kernels on every path; fewer examples keep the file
# within the CI budget on a loaded 2-core machine (test_codes.py covers the codes at 60).
FEWER = settings(max_examples=30)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def counts_arrays(low=-300, high=300, max_side=21):
    return hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=max_side),
        elements=st.integers(low, high),
    )


def float_arrays(dtype=np.float32):
    return hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=21),
        elements=st.floats(-1e3, 1e3, width=np.dtype(dtype).itemsize * 8),
    )


def check_planes_against_oracle(train, counts):
    spec = get_scheme(train.scheme)
    dense = ref.dense_train(counts, spec, train.T, train.zero_point, train.bit_order)
    planes, sign = ref.planes_from_dense(dense, spec.signed)
    assert train.layout == "planes"
    assert train.planes.dtype == np.uint8
    np.testing.assert_array_equal(train.planes, planes)
    if spec.signed:
        np.testing.assert_array_equal(train.sign_plane, sign)
    else:
        assert train.sign_plane is None
    np.testing.assert_array_equal(train.to_dense(), dense)
    assert train.n_spikes == int(np.count_nonzero(dense))


@FEWER
@given(counts_arrays(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]))
def test_planes_match_the_oracle_and_round_trip(counts, scheme, bit_order):
    train = spikecode.encode(counts, scheme, bit_order=bit_order, layout="planes")
    check_planes_against_oracle(train, counts)
    np.testing.assert_array_equal(spikecode.decode(train), counts)
    assert spikecode.spike_stats(counts, scheme) == spikecode.train_stats(train)


@FEWER
@given(counts_arrays(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]))
def test_layout_conversion_is_lossless_both_ways(counts, scheme, bit_order):
    events = spikecode.encode(counts, scheme, bit_order=bit_order, layout="events")
    planes = spikecode.encode(counts, scheme, bit_order=bit_order, layout="planes")
    to_planes = events.to_layout("planes")
    np.testing.assert_array_equal(to_planes.planes, planes.planes)
    assert to_planes.equals(planes) and planes.equals(events)
    back = planes.to_layout("events")
    for name in ("step_ptr", "feature", "signs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(events, name))
        assert getattr(back, name).dtype == getattr(events, name).dtype
    for name in ("t", "index", "polarity"):
        np.testing.assert_array_equal(getattr(planes, name), getattr(events, name))
    assert events.to_layout("events") is events


@FEWER
@given(counts_arrays(0, 70), st.sampled_from(ALL), st.integers(0, 12))
def test_fixed_T_and_saturation_in_planes(counts, scheme, extra):
    spec = get_scheme(scheme)
    T = spikecode.min_steps(counts, scheme) + extra
    T = min(T, 62) if spec.bitwise else T
    train = spikecode.encode(counts, scheme, T=T, layout="planes")
    check_planes_against_oracle(train, counts)
    small = max(2, T - 3) if spec.bitwise else max(1, T - 3)
    sat = spikecode.encode(counts, scheme, T=small, saturate=True, layout="planes")
    want = spikecode.encode(counts, scheme, T=small, saturate=True, layout="events")
    assert sat.equals(want) and sat.clipped == want.clipped


@pytest.mark.parametrize("scheme", ALL)
def test_unsigned_codes_with_a_zero_point(rng, scheme):
    counts = rng.integers(-40, 30, size=(5, 37))
    if get_scheme(scheme).unsigned_counts:
        train = spikecode.encode(counts, scheme, layout="planes")
        assert train.zero_point == -40 or train.zero_point == counts.min()
        check_planes_against_oracle(train, counts)
        np.testing.assert_array_equal(spikecode.decode(train), counts)


def test_long_unary_trains_span_several_chunks():
    counts = np.array([[0, 1, 7, 8, 9, 16, 17, 63, -64, 5, 0, 0, 100]], np.int32)
    for scheme in ("ternary", "bitwise-bidirectional", "bitwise-twos-complement"):
        train = spikecode.encode(counts, scheme, layout="planes")
        check_planes_against_oracle(train, counts)
    huge = np.array([[2**40 // 2**10, -(2**29), 3]], np.int64)  # T = 31: int64 lanes
    for scheme in ("bitwise-bidirectional", "bitwise-twos-complement"):
        train = spikecode.encode(huge, scheme, layout="planes")
        check_planes_against_oracle(train, huge)
        t_train = spikecode.encode(torch.from_numpy(huge), scheme, layout="planes")
        np.testing.assert_array_equal(t_train.planes, train.planes)


#: Row magnitudes on both sides of counts_planes' byte limits (128 binary/ternary, 255
#: bitwise): rows at or below take the byte packing, rows above the per-row _emit_row.
LIMIT_TOPS = [0, 1, 7, 8, 9, 127, 128, 129, 254, 255, 256, 300]


def check_counts_planes_per_row(counts, scheme, bit_order="msb", **kwargs):
    """encode(layout="planes") against the oracle, and the kernel's spikes row by row."""
    train = spikecode.encode(counts, scheme, bit_order=bit_order, layout="planes", **kwargs)
    clipped = spikecode.decode(train)
    check_planes_against_oracle(train, clipped)
    spec = get_scheme(scheme)
    rows = clipped.reshape(-1, clipped.shape[-1]).astype(np.int32)
    width = train.planes.shape[2]
    planes = np.zeros((train.T, rows.shape[0], width), np.uint8)
    sign = np.zeros((rows.shape[0] if spec.signed else 0, width), np.uint8)
    spikes = _plane_kernels.counts_planes(
        rows, spec.code, train.T, train.zero_point, bit_order == "msb", planes, sign
    )
    dense = ref.dense_train(rows, spec, train.T, train.zero_point, bit_order)
    np.testing.assert_array_equal(spikes, np.count_nonzero(dense, axis=(0, 2)))
    np.testing.assert_array_equal(planes, train.planes.reshape(planes.shape))
    return train


@st.composite
def mixed_rows(draw):
    """int32 counts whose rows reach magnitudes on either side of the byte limits."""
    features = draw(st.integers(1, 21))
    tops = draw(st.lists(st.sampled_from(LIMIT_TOPS), min_size=1, max_size=8))
    rows = []
    for top in tops:
        row = draw(hnp.arrays(np.int32, features, elements=st.integers(-top, top)))
        row[draw(st.integers(0, features - 1))] = top * draw(st.sampled_from([1, -1]))
        rows.append(row)
    return np.stack(rows)


@FEWER
@given(mixed_rows(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]))
def test_counts_planes_mix_byte_packed_and_per_element_rows(counts, scheme, bit_order):
    # counts_planes packs each row from one byte per element when its magnitudes allow
    # and element by element otherwise; rows of both kinds in one array, every code.
    check_counts_planes_per_row(counts, scheme, bit_order)


@pytest.mark.parametrize("scheme", ALL)
@pytest.mark.parametrize("bit_order", ["msb", "lsb"])
def test_counts_planes_rows_on_both_sides_of_the_byte_limits(rng, scheme, bit_order):
    counts = rng.integers(-300, 301, size=(len(LIMIT_TOPS), 45)).astype(np.int32)
    tops = np.array(LIMIT_TOPS)
    counts = np.clip(counts, -tops[:, None], tops[:, None])
    counts[:, 3] = tops
    counts[1::2, 7] = -tops[1::2]
    spec = get_scheme(scheme)
    options = [{}]
    if spec.bitwise:  # two's complement: T <= 8 packs bytes, T = 9 does not
        options += [{"T": 8, "saturate": True}, {"T": 9, "saturate": True}]
    else:  # T below the rows' magnitudes: saturated rows of 128 and fewer steps
        options += [{"T": 100, "saturate": True}, {"T": 128, "saturate": True}]
    if spec.unsigned_counts:  # zero points that move rows across the limits
        low = int(counts.min())
        options += [{"zero_point": low}, {"zero_point": low - 1}]
        if spec.bitwise:  # beyond int32 (the float kernels' byte packing needs int32)
            options += [{"zero_point": -(2**31) - 3}]
    for kwargs in options:
        train = check_counts_planes_per_row(counts, scheme, bit_order, **kwargs)
        events = spikecode.encode(counts, scheme, bit_order=bit_order, layout="events", **kwargs)
        assert train.equals(events) and train.clipped == events.clipped


# ------------------------------------------------------------------------------ auto


def test_auto_picks_the_smaller_layout_at_the_break_even():
    # binary, one row of 800 features, T = 4: planes take 4 * 100 = 400 bytes, events
    # 8 * (4 + 1) + 2 * spikes, equal at 180 spikes (a tie goes to planes).
    counts = np.zeros((1, 800), np.int32)
    counts[0, 0] = 4
    counts[0, 1:177] = 1  # 4 + 176 = 180 spikes
    sizes = layout_nbytes(1, 800, 4, 180, signed=False)
    assert sizes == {"events": 400, "planes": 400}
    assert spikecode.encode(counts, "binary").layout == "planes"
    counts[0, 177] = 1  # 181 spikes: events 402 bytes
    assert spikecode.encode(counts, "binary").layout == "planes"
    counts[0, 177] = 0
    counts[0, 1] = 0  # 179 spikes: events 398 bytes
    train = spikecode.encode(counts, "binary")
    assert train.layout == "events" and train.nbytes == 398


def test_auto_prefers_planes_for_bitwise_and_events_for_sparse_unary(rng):
    x = rng.standard_normal((64, 256)).astype(np.float32)
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    assert spikecode.encode(counts, "bitwise-bidirectional").layout == "planes"
    sparse = np.zeros((64, 256), np.int32)
    sparse[3, 5] = 200  # one outlier sets T = 200
    train = spikecode.encode(sparse, "ternary")
    assert train.layout == "events"
    assert train.nbytes == train.layout_nbytes()["events"] < train.layout_nbytes()["planes"]
    planes = train.to_layout("planes")
    assert planes.nbytes == planes.layout_nbytes()["planes"]


# ------------------------------------------------------------------------ fused pass


def assert_fused_equals_two_steps(x, scheme, **kwargs):
    k = kwargs.pop("k", 3.0)
    counts, vth = spikecode.adaptive_counts(x, k=k)
    want = spikecode.encode(counts, scheme, **kwargs)
    for layout in ("events", "planes", "auto"):
        train, v, c = spikecode.encode_activations(
            x, k, scheme, layout=layout, return_counts=True, **kwargs
        )
        assert train.equals(want)
        assert train.layout == (want.layout if layout == "auto" else layout)
        np.testing.assert_array_equal(c, counts)
        np.testing.assert_array_equal(v, vth)
        assert v.dtype == vth.dtype and c.dtype == np.int32
        # Without counts asked for, the one-pass encoding runs where it can (else two).
        train, v = spikecode.encode_activations(x, k, scheme, layout=layout, **kwargs)
        assert train.equals(want)
        assert train.clipped == want.clipped and train.n_spikes == want.n_spikes
        assert train.layout == (want.layout if layout == "auto" else layout)
        np.testing.assert_array_equal(v, vth)
    return want


@pytest.mark.parametrize("scheme", ALL)
@pytest.mark.parametrize("bit_order", ["msb", "lsb"])
@pytest.mark.parametrize("kwargs", [{}, {"T": 3, "saturate": True}])
def test_one_pass_encoding_runs_and_equals_two_steps(rng, monkeypatch, scheme, bit_order, kwargs):
    # Signed codes (zero point 0) and an explicit zero point need no second pass: the
    # two-pass kernels must not run at all.
    from spikecode.encoders import _plane_kernels

    def refuse(*args):
        raise AssertionError("the two-pass path ran")

    x = rng.standard_normal((33, 70)).astype(np.float32)
    x[4, 7] = 9.0  # an outlier: T of ternary in the thirties, of the bitwise codes 6
    unsigned = get_scheme(scheme).unsigned_counts
    options = {"zero_point": -20, **kwargs} if unsigned else kwargs
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    want = spikecode.encode(counts, scheme, bit_order=bit_order, layout="planes", **options)
    with monkeypatch.context() as patch:
        patch.setattr(_plane_kernels, "row_thresholds", refuse)
        patch.setattr(_plane_kernels, "float_planes", refuse)
        got, v = spikecode.encode_activations(
            x, 3.0, scheme, bit_order=bit_order, layout="planes", **options
        )
    assert got.equals(want) and got.n_spikes == want.n_spikes and got.clipped == want.clipped
    np.testing.assert_array_equal(v, vth)
    assert got.planes.flags.c_contiguous


def test_one_pass_falls_back_when_t_exceeds_its_capacity(rng):
    # bitwise-bidirectional writes 8 planes before T is known; one outlier among 256
    # values reaches |c| = 3 · 256 / (1 + small), which needs 10.
    x = rng.standard_normal((5, 256)).astype(np.float32)
    x[2, 3] = 1e4
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    assert np.abs(counts).max() > 255
    want = spikecode.encode(counts, "bitwise-bidirectional", layout="planes")
    got, _ = spikecode.encode_activations(x, 3.0, "bitwise-bidirectional", layout="planes")
    assert got.T == want.T > 8 and got.equals(want)


def test_one_pass_two_complement_sign_extension_is_not_counted(rng):
    x = rng.standard_normal((7, 40)).astype(np.float32)
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    want = spikecode.encode(counts, "bitwise-twos-complement", layout="planes")
    got, _ = spikecode.encode_activations(x, 3.0, "bitwise-twos-complement", layout="planes")
    assert want.T < 8 and (counts < 0).any()
    assert got.n_spikes == want.n_spikes and got.equals(want)


@FEWER
@given(float_arrays(), st.sampled_from(ALL), st.sampled_from([0.5, 2.0, 3.0, 4.0]))
def test_fused_equals_adaptive_counts_then_encode(x, scheme, k):
    assert_fused_equals_two_steps(x, scheme, k=k)


@FEWER
@given(float_arrays(np.float16), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]))
def test_fused_float16_and_bit_order(x, scheme, bit_order):
    assert_fused_equals_two_steps(x, scheme, bit_order=bit_order)


@FEWER
@given(float_arrays(np.float64), st.sampled_from(ALL))
def test_fused_float64(x, scheme):
    assert_fused_equals_two_steps(x, scheme)


@pytest.mark.parametrize("scheme", ALL)
def test_fused_fixed_T_saturation_and_zero_point(rng, scheme):
    x = rng.standard_normal((9, 3, 40)).astype(np.float32)
    train = assert_fused_equals_two_steps(x, scheme, T=3, saturate=True)
    assert train.clipped > 0
    with pytest.raises(spikecode.SpikecodeError, match="cannot carry"):
        spikecode.encode_activations(x, 3.0, scheme, T=2)
    if get_scheme(scheme).unsigned_counts:
        assert_fused_equals_two_steps(x, scheme, zero_point=-20)


def rows_reaching(targets, dtype, negative, seed=0):
    """Rows of 96 small values and one outlier whose count is about each target."""
    rng = np.random.default_rng(seed)
    n, k = 96, 3.0
    x = rng.standard_normal((len(targets), n)) * 0.05
    x[:, 0] = 0.0
    # count = rint(A / (sum|x| / n / k)) with sum|x| = A + S: A = t S / (n k - t)
    size = np.asarray(targets) * np.abs(x).sum(axis=1) / (n * k - np.asarray(targets))
    flip = negative & (np.arange(len(targets)) % 2 == 1)
    x[:, 0] = np.where(flip, -size, size)
    return x.astype(dtype)


@pytest.mark.parametrize("scheme", ALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("negative", [False, True])
def test_fused_rows_on_both_sides_of_the_byte_limits(scheme, dtype, negative):
    # The float kernels pack a row from one byte per element when its magnitudes allow
    # (binary/ternary up to 128, bitwise up to 255, two's complement for T <= 8, with
    # clipping bounds exact in the dtype and an int32 zero point) and take the int32
    # counts otherwise: rows on both sides of every limit, each way, against two steps.
    x = rows_reaching(list(range(118, 138)) + list(range(230, 266)) + [0, 1, 5], dtype, negative)
    counts, _ = spikecode.adaptive_counts(x, k=3.0)
    tops = set(np.abs(counts).max(axis=1).tolist())
    assert {127, 128, 129, 255, 256} <= tops
    spec = get_scheme(scheme)
    options = [{}]
    if spec.bitwise:
        options += [{"T": 8, "saturate": True}, {"T": 9, "saturate": True}]
    else:
        options += [{"T": 128, "saturate": True}, {"T": 130, "saturate": True}]
    if spec.unsigned_counts:  # an explicit zero point: the one-pass encoding
        options += [{"zero_point": int(counts.min())}]
        T = 8 if spec.bitwise else 128
        options += [{"zero_point": int(counts.min()) - 1, "T": T, "saturate": True}]
        if spec.bitwise:  # beyond int32: never the byte packing
            options += [{"zero_point": -(2**31) - 3}]
    for kwargs in options:
        want = assert_fused_equals_two_steps(x, scheme, **kwargs)
        got, _ = spikecode.encode_activations(x, 3.0, scheme, layout="planes", **kwargs)
        check_planes_against_oracle(got, want.decode())


@FEWER
@given(float_arrays(), st.sampled_from(ALL), st.sampled_from([40.0, 90.0, 200.0]))
def test_fused_large_counts_equal_the_oracle(x, scheme, k):
    # Large k: counts of up to hundreds, rows on either side of the byte limits.
    want = assert_fused_equals_two_steps(x, scheme, k=k)
    counts, _ = spikecode.adaptive_counts(x, k=k)
    got, _ = spikecode.encode_activations(x, k, scheme, layout="planes")
    check_planes_against_oracle(got, counts)
    assert got.equals(want)


def test_fused_clipping_bound_inexact_in_float32():
    # Counts around 2^24 (float32 steps of 2 there) saturated into [2^24 - 6, 2^24 + 1]:
    # the upper bound is no float32, so those rows are clipped through the int32 counts
    # (rounding the bound to float32 would make the clipped values 2^24, not 2^24 + 1).
    x = (1 + np.linspace(-2e-6, 2e-6, 48)).astype(np.float32)[None, :].repeat(3, axis=0)
    k, zp = float(2**24), 2**24 - 6
    counts, vth = spikecode.adaptive_counts(x, k, vth_min=1e-12)
    assert (counts > 2**24 + 1).any()
    want = spikecode.encode(counts, "bitwise", T=3, saturate=True, zero_point=zp)
    for layout in ("planes", "events"):
        got, v = spikecode.encode_activations(
            x, k, "bitwise", T=3, saturate=True, zero_point=zp, layout=layout, vth_min=1e-12
        )
        assert got.equals(want) and got.clipped == want.clipped > 0
        np.testing.assert_array_equal(v, vth)
        got, _, c = spikecode.encode_activations(  # the two passes
            x, k, "bitwise", T=3, saturate=True, zero_point=zp, layout=layout,
            vth_min=1e-12, return_counts=True,
        )  # fmt: skip
        assert got.equals(want) and got.clipped == want.clipped
        np.testing.assert_array_equal(c, counts)


def test_fused_returns_no_counts_unless_asked(rng):
    x = rng.standard_normal((4, 24)).astype(np.float32)
    out = spikecode.encode_activations(x)
    assert len(out) == 2 and out[0].scheme == "bitwise-bidirectional"


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.array([[1.0, np.nan]], np.float32), {}, "NaN or Inf"),
        (np.array([[1.0, 2.0]], np.float32), {"layout": "dense"}, "layout must be"),
        (np.array([[1.0, 2.0]], np.float32), {"k": 0}, "k must"),
        (np.array([[1.0, 2.0]], np.float32), {"scheme": "morse"}, "unknown scheme"),
        (np.array([[1.0, 2.0]], np.float32), {"vth_min": 2.0, "vth_max": 1.0}, "vth_min"),
        (np.array([1, 2], np.int32), {}, "floating point"),
        (np.array([[1e30, 0.0]], np.float32), {"vth_max": 1e-3}, "overflow int32"),
        (np.zeros((0, 4), np.float32), {}, "empty"),
    ],
)
def test_fused_bad_input(x, kwargs, message):
    with pytest.raises(spikecode.SpikecodeError, match=message):
        spikecode.encode_activations(x, **kwargs)


# --------------------------------------------------------------------------- PyTorch


@FEWER
@given(counts_arrays(), st.sampled_from(ALL), st.sampled_from(["msb", "lsb"]))
def test_torch_planes_equal_numba_planes(counts, scheme, bit_order):
    want = spikecode.encode(counts, scheme, bit_order=bit_order, layout="planes")
    got = spikecode.encode(torch.from_numpy(counts), scheme, bit_order=bit_order, layout="planes")
    np.testing.assert_array_equal(got.planes, want.planes)
    assert got.equals(want)
    auto = spikecode.encode(torch.from_numpy(counts), scheme, bit_order=bit_order)
    assert auto.equals(want) and auto.layout == spikecode.encode(counts, scheme).layout


@FEWER
@given(float_arrays(), st.sampled_from(ALL))
def test_torch_fused_equals_numba_fused(x, scheme):
    want, vth = spikecode.encode_activations(x, 3.0, scheme, layout="planes")
    got, t_vth, t_counts = spikecode.encode_activations(
        torch.from_numpy(x), 3.0, scheme, layout="planes", return_counts=True
    )
    assert got.equals(want) and got.layout == "planes"
    np.testing.assert_array_equal(t_vth.numpy(), vth)
    assert t_counts.dtype == torch.int32


def test_torch_counts_validation_and_saturation():
    with pytest.raises(spikecode.SpikecodeError, match="integers"):
        spikecode.encode(torch.tensor([0.5, 1.0]), "ternary", layout="planes")
    with pytest.raises(spikecode.SpikecodeError, match="integer array"):
        spikecode.encode(torch.tensor([True]), "ternary", layout="planes")
    with pytest.raises(spikecode.SpikecodeError, match="int32 range"):
        spikecode.encode(torch.tensor([2**40]), "ternary", layout="planes")
    c = torch.tensor([[-9, 3, 4]], dtype=torch.int16)
    got = spikecode.encode(c, "bitwise-bidirectional", T=2, saturate=True, layout="planes")
    assert got.clipped == 2 and spikecode.decode(got).tolist() == [[-3, 3, 3]]
    float_counts = torch.tensor([[2.0, -1.0]])
    assert spikecode.decode(spikecode.encode(float_counts, layout="planes")).tolist() == [[2, -1]]


@pytest.mark.parametrize("scheme", ALL)
def test_to_torch_from_planes_unpacks_the_same_train(rng, scheme):
    counts = rng.integers(-20, 20, size=(3, 2, 19))
    train = spikecode.encode(counts, scheme, layout="planes")
    dense = train.to_torch()
    assert dense.dtype == torch.float32 and dense.shape == (train.T, 3, 2, 19)
    torch.testing.assert_close(dense, torch.from_numpy(train.to_dense()).float())
    assert torch.equal(train.to_torch(dtype=torch.int8), torch.from_numpy(train.to_dense()))


@CUDA
@pytest.mark.parametrize("scheme", ALL)
def test_cuda_planes_equal_numba(rng, scheme):  # pragma: no cover - needs a GPU
    x = rng.standard_normal((33, 300)).astype(np.float32)
    want, vth = spikecode.encode_activations(x, 3.0, scheme, layout="planes")
    got, t_vth = spikecode.encode_activations(torch.from_numpy(x).cuda(), 3.0, scheme)
    assert got.equals(want)
    np.testing.assert_array_equal(t_vth.cpu().numpy(), vth)
    dense = want.to_torch(device="cuda")
    assert dense.is_cuda
    assert torch.equal(dense.cpu(), torch.from_numpy(want.to_dense()).float())


# ------------------------------------------------------------------- bad trains


def test_wrong_layout_names_and_arrays_of_the_other_layout():
    train = spikecode.encode(np.array([[3, -1, 0]]), "ternary", layout="planes")
    for bad in ("dense", None, 3):
        with pytest.raises(spikecode.SpikecodeError, match="layout must be"):
            train.to_layout(bad)
        with pytest.raises(spikecode.SpikecodeError, match="layout must be"):
            spikecode.encode(np.array([1]), layout=bad)
    with pytest.raises(spikecode.SpikecodeError, match="to_layout\\('events'\\)"):
        _ = train.step_ptr
    with pytest.raises(spikecode.SpikecodeError, match="to_layout\\('planes'\\)"):
        _ = train.to_layout("events").planes


def test_planes_cannot_hold_a_sign_change_within_an_element():
    dense = np.array([[[1, 0]], [[-1, 0]]])  # ternary, +1 then -1 for one element
    train = spikecode.SpikeTrain.from_dense(dense, "ternary")
    np.testing.assert_array_equal(train.decode(), [[0, 0]])
    with pytest.raises(spikecode.SpikecodeError, match="fire both"):
        train.to_layout("planes")


def test_from_planes_validates():
    good = spikecode.encode(np.array([[3, -1, 0], [0, 2, 5]]), "ternary", layout="planes")
    p, s = good.planes, good.sign_plane
    cases = [
        ((p[:, :1], s), "planes must be uint8"),
        ((p.astype(np.int16), s), "planes must be uint8"),
        ((p | 0x80, s), "past the last feature"),
        ((p, None), "need a sign plane"),
        ((p, s[:1]), "sign plane must be"),
        ((p, s | 0x04), "never fire"),
    ]
    for (planes, sign), message in cases:
        with pytest.raises(spikecode.SpikecodeError, match=message):
            spikecode.SpikeTrain.from_planes((2, 3), good.T, "ternary", planes, sign)
    rebuilt = spikecode.SpikeTrain.from_planes((2, 3), good.T, "ternary", p, s)
    assert rebuilt.equals(good)
    with pytest.raises(spikecode.SpikecodeError, match="no sign plane"):
        spikecode.SpikeTrain.from_planes((2, 3), good.T, "bitwise", p, s)
    with pytest.raises(spikecode.SpikecodeError, match="either events or planes"):
        spikecode.SpikeTrain((2, 3), 3, "ternary", good.to_layout("events").step_ptr, planes=p)


def test_event_exporter_takes_planes(rng):
    from spikecode.exporters.events import to_events

    counts = rng.integers(-5, 6, size=(4, 24))
    planes = spikecode.encode(counts, "bitwise-bidirectional", layout="planes")
    events = planes.to_layout("events")
    a, _ = to_events(planes)
    b, _ = to_events(events)
    np.testing.assert_array_equal(a, b)


def test_one_pass_leaves_int32_overflow_to_the_two_pass_error():
    # T = 40 saturates only beyond int32: counts of 1e10 are an overflow, not a saturation.
    x = np.full((2, 16), 1e5, dtype=np.float32)
    with pytest.raises(spikecode.SpikecodeError, match="overflow int32"):
        spikecode.encode_activations(
            x, 1e12, "bitwise-twos-complement", T=40, saturate=True, layout="planes"
        )
