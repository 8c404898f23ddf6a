import numpy as np
import pytest

import spikecode


@pytest.mark.parametrize("name", spikecode.__all__)
def test_every_public_name_resolves(name):
    assert getattr(spikecode, name) is not None


def test_readme_quick_start_round_trip(rng):
    x = rng.standard_normal((4, 32)).astype(np.float32)
    counts, vth = spikecode.adaptive_counts(x, k=3.0)
    train = spikecode.encode(counts, scheme="ternary", T=None)
    dense = train.to_dense()
    assert dense.dtype == np.int8
    assert dense.shape == (train.T, *counts.shape)
    np.testing.assert_array_equal(spikecode.decode(train), counts)
    assert vth.shape == (4,)


def test_schemes_are_exactly_the_five_codes():
    assert list(spikecode.SCHEMES) == [
        "binary",
        "ternary",
        "bitwise",
        "bitwise-bidirectional",
        "bitwise-twos-complement",
    ]


def test_error_carries_context():
    err = spikecode.SpikecodeError("bad", scheme="bitwise", shape=(2, 3), file=None)
    assert str(err) == "bad [scheme=bitwise, shape=(2, 3)]"
    assert err.context == {"scheme": "bitwise", "shape": (2, 3)}
    assert isinstance(err, ValueError)
