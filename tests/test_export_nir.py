"""NIR export of spike-driven projections: faithfulness through an independent simulator.

The acceptance test: a graph written with ``nir.write`` and read back with ``nir.read``,
run step by step through ``nirtorch.nir_to_torch`` (with mappers written from the NIR
definitions) on the trains spikecode produced, gives the layer outputs of
``spikecode.spike_linear``.
"""

from __future__ import annotations

import os

import nir
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spikecode as sc
from spikecode.exporters import get_exporter
from spikecode.exporters.nir import export_nir, nir_graph, simulate_nir
from spikecode.nn import W8ASpikeLinear
from spikecode.nn.functional import adaptive_counts, quantize_weight_int8

BITWISE = ("bitwise", "bitwise-bidirectional", "bitwise-twos-complement")
IN, OUT, GROUPS = 16, 6, 4


def _weights(rng: np.random.Generator, scales: str, out: int = OUT, n_in: int = IN):
    w = rng.integers(-127, 128, size=(out, n_in), dtype=np.int8)
    shape = {"row": (out,), "group": (out, GROUPS), "release": (out, GROUPS, 1)}[scales]
    s = rng.uniform(1e-3, 2e-2, size=shape).astype(np.float32)
    b = rng.normal(size=out)
    return w, s, b


def _train(rng: np.random.Generator, scheme: str, bit_order: str = "msb", shape=(2, 3, IN)):
    """A train of counts shaped like k = 3 adaptive counts (c ≈ 3.75 z), and its Vth."""
    counts = np.rint(3.75 * rng.normal(size=shape)).astype(np.int32)
    vth = rng.uniform(0.05, 1.0, size=shape[:-1]).astype(np.float32)
    return sc.encode(counts, scheme, bit_order=bit_order), vth


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * scale)


def _export_T(train: sc.SpikeTrain, integrator: str) -> int | None:
    # Unit-weight codes export a T-free graph unless the IF threshold needs a fixed T.
    return train.T if train.scheme in BITWISE or integrator == "IF" else None


# --------------------------------------------------------------------------- faithfulness


@pytest.mark.parametrize("integrator", ["I", "IF"])
@pytest.mark.parametrize("scales", ["row", "group", "release"])
@pytest.mark.parametrize("bit_order", ["msb", "lsb"])
@pytest.mark.parametrize("scheme", list(sc.SCHEMES))
def test_file_simulation_equals_spike_linear(tmp_path, rng, scheme, bit_order, scales, integrator):
    w, s, b = _weights(rng, scales)
    train, vth = _train(rng, scheme, bit_order)
    path = export_nir(
        (w, s, b),
        tmp_path / "layer.nir",
        scheme=scheme,
        T=_export_T(train, integrator),
        bit_order=bit_order,
        integrator=integrator,
    )
    expected = sc.spike_linear(train, w, s, vth, b).output
    actual = simulate_nir(path, train, vth)
    assert actual.shape == (2, 3, OUT)
    _close(actual, expected)


@given(
    scheme=st.sampled_from(list(sc.SCHEMES)),
    bit_order=st.sampled_from(["msb", "lsb"]),
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 4),
    n_in=st.sampled_from([4, 8, 12]),
    out=st.integers(1, 5),
    groups=st.sampled_from([1, 2, 4]),
    spread=st.integers(0, 40),
)
def test_simulation_property(scheme, bit_order, seed, rows, n_in, out, groups, spread):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-spread, spread + 1, size=(rows, n_in))
    train = sc.encode(counts, scheme, bit_order=bit_order)
    vth = rng.uniform(0.01, 2.0, size=rows)
    w = rng.integers(-127, 128, size=(out, n_in), dtype=np.int8)
    s = rng.uniform(1e-3, 1.0, size=(out, groups))
    b = rng.normal(size=out)
    graph = nir_graph((w, s, b), scheme=scheme, T=train.T, bit_order=bit_order)
    _close(simulate_nir(graph, train, vth), sc.spike_linear(train, w, s, vth, b).output)


@pytest.mark.parametrize("scheme", ["binary", "ternary"])
def test_unit_weight_graph_runs_for_any_T(rng, scheme):
    w, s, b = _weights(rng, "group")
    train, vth = _train(rng, scheme)
    graph = nir_graph((w, s, b), scheme=scheme)  # T=None: one port, any number of steps
    assert graph.metadata["T"] == 0
    assert graph.metadata["ports"] == 1
    longer = sc.encode(train.decode(), scheme, T=train.T + 5, zero_point=train.zero_point)
    for t in (train, longer):
        _close(simulate_nir(graph, t, vth), sc.spike_linear(t, w, s, vth, b).output)


def test_scalar_vth_and_one_token(rng):
    w, s, b = _weights(rng, "row")
    train = sc.encode(rng.integers(-9, 10, size=IN), "bitwise-bidirectional")
    graph = nir_graph((w, s, b), scheme=train.scheme, T=train.T)
    out = simulate_nir(graph, train, 0.25)
    assert out.shape == (OUT,)
    _close(out, sc.spike_linear(train, w, s, 0.25, b).output)


def test_dt_sets_r_and_is_honoured(rng):
    w, s, b = _weights(rng, "row")
    train, vth = _train(rng, "bitwise", "msb")
    graph = nir_graph((w, s, b), scheme="bitwise", T=train.T, dt=1e-3)
    integrator = graph.nodes["projection.integrator"]
    np.testing.assert_array_equal(integrator.r, np.full(OUT, 1000.0))
    assert graph.metadata["dt"] == 1e-3
    np.testing.assert_allclose(
        simulate_nir(graph, train, vth), sc.spike_linear(train, w, s, vth, b).output, rtol=1e-12
    )


def test_torch_linear_is_quantized_per_spec(rng):
    torch.manual_seed(0)
    linear = torch.nn.Linear(IN, OUT)
    train, vth = _train(rng, "ternary")
    graph = nir_graph(linear, scheme="ternary", group_size=4)
    w_q, scales = quantize_weight_int8(linear.weight.detach(), 4)
    expected = sc.spike_linear(train, w_q, scales, vth, linear.bias.detach()).output
    _close(simulate_nir(graph, train, vth), expected)


def test_w8aspike_layer_end_to_end(rng):
    """Host-side counts + NIR simulation reproduce the W8ASpike layer's own forward."""
    torch.manual_seed(1)
    layer = W8ASpikeLinear.from_linear(torch.nn.Linear(IN, OUT), k=3.0, group_size=8)
    x = torch.randn(2, 5, IN, dtype=torch.float64)
    counts, vth = adaptive_counts(x, k=3.0)  # what the layer computes internally
    train = sc.encode(counts.numpy(), "bitwise-bidirectional")
    graph = nir_graph(layer, scheme=train.scheme, T=train.T)
    expected = layer(x).detach().numpy()
    np.testing.assert_allclose(
        simulate_nir(graph, train, vth.numpy()), expected, rtol=1e-10, atol=1e-10
    )


def test_block_and_model_exports(tmp_path, rng):
    """A dict of projections (different shapes) and a model give one graph with all of them."""
    shapes = {"attn.q_proj": (6, 16), "attn.o_proj": (16, 6), "mlp.down_proj": (3, 8)}
    projections, trains, vths = {}, {}, {}
    for i, (name, (out, n_in)) in enumerate(shapes.items()):
        w, s, b = _weights(rng, "row", out, n_in)
        projections[name] = (w, s) if i == 1 else (w, s, b)  # one without bias
        trains[name], vths[name] = _train(rng, "bitwise-twos-complement", shape=(4, n_in))
    T = max(t.T for t in trains.values())
    trains = {n: sc.encode(t.decode(), t.scheme, T=T) for n, t in trains.items()}
    path = export_nir(projections, tmp_path / "block.nir", scheme="bitwise-twos-complement", T=T)
    outputs = simulate_nir(path, trains, vths)
    assert list(outputs) == list(shapes)
    for name, (w, s, *rest) in projections.items():
        bias = rest[0] if rest else None
        _close(outputs[name], sc.spike_linear(trains[name], w, s, vths[name], bias).output)
    one = simulate_nir(
        path, trains["mlp.down_proj"], vths["mlp.down_proj"], projection="mlp.down_proj"
    )
    _close(one, outputs["mlp.down_proj"])

    torch.manual_seed(2)
    model = torch.nn.Sequential(
        W8ASpikeLinear.from_linear(torch.nn.Linear(IN, 8), group_size=4),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 4),
    )
    model.add_module("lm_head", torch.nn.Linear(4, 3))  # never spike coded (SPEC §1)
    graph = nir_graph(model, scheme="ternary", group_size=None)
    assert graph.metadata["projections"] == ["0", "2"]
    train, vth = _train(rng, "ternary", shape=(3, 8))
    w_q, scales = quantize_weight_int8(model[2].weight.detach())
    expected = sc.spike_linear(train, w_q, scales, vth, model[2].bias.detach()).output
    _close(simulate_nir(graph, train, vth, projection="2"), expected)


def test_if_threshold_is_never_reached_at_the_code_extremes(rng):
    """The IF variant stays silent for the largest inputs a T-step train can carry."""
    w = np.full((2, IN), 127, dtype=np.int8)
    w[1] = -127
    s = np.ones(2, dtype=np.float32)
    for scheme in sc.SCHEMES:
        T = 4
        spec = sc.encoders.get_scheme(scheme)
        low, high = spec.value_range(T)
        counts = np.array([[low] * IN, [high] * IN])
        train = sc.encode(counts, scheme, T=T, zero_point=0 if low == 0 else "auto")
        graph = nir_graph((w, s), scheme=scheme, T=T, integrator="IF")
        _close(simulate_nir(graph, train, 1.0), sc.spike_linear(train, w, s, 1.0).output)
        # every spike of the densest train at once: Σ_t |w_t| x Σ_i |W|
        dense = np.ones((T, 1, IN), dtype=np.int8)
        full = sc.SpikeTrain.from_dense(dense, scheme)
        _close(simulate_nir(graph, full, 1.0), sc.spike_linear(full, w, s, 1.0).output)


# --------------------------------------------------------------------------- representation


def test_graph_structure_and_weights_follow_the_documented_layout(rng):
    w, s, b = _weights(rng, "group")
    T = 5
    graph = nir_graph({"q": (w, s, b)}, scheme="bitwise-twos-complement", T=T, bit_order="lsb")
    assert set(graph.nodes) == {"q.input", "q.synapse", "q.integrator", "q.output"}
    assert sorted(graph.edges) == sorted(
        [("q.input", "q.synapse"), ("q.synapse", "q.integrator"), ("q.integrator", "q.output")]
    )
    assert isinstance(graph.nodes["q.synapse"], nir.Linear)
    assert isinstance(graph.nodes["q.integrator"], nir.I)
    np.testing.assert_array_equal(graph.nodes["q.input"].input_type["input"], [T * IN])
    # slow reference: port p, column i carries w_p · σ[o, group(i)] · W_q[o, i]
    step_w = [1, 2, 4, 8, -16]  # lsb first, sign bit last
    expected = np.zeros((OUT, T * IN))
    for p in range(T):
        for o in range(OUT):
            for i in range(IN):
                expected[o, p * IN + i] = (
                    step_w[p] * float(s[o, i // (IN // GROUPS)]) * int(w[o, i])
                )
    np.testing.assert_array_equal(graph.nodes["q.synapse"].weight, expected)
    meta = graph.metadata
    assert meta["format"] == "spikecode.nir"
    assert (meta["scheme"], meta["T"], meta["bit_order"], meta["ports"]) == (
        "bitwise-twos-complement",
        T,
        "lsb",
        T,
    )
    np.testing.assert_array_equal(meta["step_weights"], step_w)
    assert meta["integrator"] == "I"
    assert (meta["dt"], meta["r"]) == (1.0, 1.0)
    for key in ("discretisation", "readout", "vth", "zero_point", "input_layout"):
        assert isinstance(meta[key], str)
        assert meta[key]
    node_meta = graph.nodes["q.integrator"].metadata
    np.testing.assert_array_equal(node_meta["bias"], b)
    np.testing.assert_allclose(node_meta["zero_point_gain"], expected[:, :IN].sum(axis=1))
    assert (node_meta["in_features"], node_meta["out_features"], node_meta["scale_groups"]) == (
        IN,
        OUT,
        GROUPS,
    )


@pytest.mark.parametrize("integrator", ["I", "IF"])
def test_write_read_round_trip(tmp_path, rng, integrator):
    projections = {name: _weights(rng, "group") for name in ("model.layers.0.q_proj", "k")}
    graph = nir_graph(projections, scheme="bitwise", T=4, integrator=integrator)
    path = export_nir(projections, tmp_path / "g.nir", scheme="bitwise", T=4, integrator=integrator)
    back = nir.read(path)
    assert set(back.nodes) == set(graph.nodes)
    assert sorted(back.edges) == sorted(graph.edges)
    for name, node in graph.nodes.items():
        other = back.nodes[name]
        assert type(other) is type(node)
        for field in ("weight", "r", "v_threshold", "v_reset"):
            if hasattr(node, field):
                np.testing.assert_array_equal(getattr(other, field), getattr(node, field))
                assert getattr(other, field).dtype == np.float64
        for key, value in node.metadata.items():
            np.testing.assert_array_equal(np.asarray(other.metadata[key]), np.asarray(value))
    for key, value in graph.metadata.items():
        stored = back.metadata[key]
        if key == "projections":
            stored = [v.decode() for v in stored]
        np.testing.assert_array_equal(np.asarray(stored), np.asarray(value))
    if integrator == "IF":
        threshold = back.nodes["k.integrator"].v_threshold
        assert np.all(np.isfinite(threshold))
        assert np.unique(threshold).size == 1  # one value: snnTorch's importer requires it
    assert get_exporter("nir") is export_nir


# --------------------------------------------------------------------------- consumers


def test_snntorch_stock_importer_leaks(rng):
    """snnTorch maps nir.IF to Leaky(beta=0.9): the membrane it integrates decays.

    This is why simulate_nir uses its own mappers. The test pins the documented
    behaviour: the stock membrane is Σ_t 0.9^(T-1-t) W s_t, not Σ_t W s_t.
    """
    from snntorch.import_nir import import_from_nir

    w, s, _ = _weights(rng, "row")
    train, _ = _train(rng, "ternary", shape=(3, IN))
    graph = nir_graph((w, s), scheme="ternary", T=train.T, integrator="IF")
    stock = import_from_nir(graph)
    dense = train.to_dense().astype(np.float32)
    for t in range(train.T):
        (_, membrane), _ = stock(torch.from_numpy(dense[t]))
    weight = (w.astype(np.float64) * s[:, None]).astype(np.float32).astype(np.float64)
    leaky = sum(0.9 ** (train.T - 1 - t) * dense[t] @ weight.T for t in range(train.T))
    np.testing.assert_allclose(membrane.detach().numpy(), leaky, rtol=1e-4, atol=1e-5)
    faithful = simulate_nir(graph, train, 1.0)
    assert not np.allclose(membrane.detach().numpy(), faithful, rtol=1e-3)
    _close(faithful, sc.spike_linear(train, w, s, 1.0).output)


# --------------------------------------------------------------------------- refusals


def test_export_refuses_what_it_cannot_represent(rng):
    w, s, b = _weights(rng, "row")
    with pytest.raises(sc.SpikecodeError, match="needs a fixed T"):
        nir_graph((w, s), scheme="bitwise")
    with pytest.raises(sc.SpikecodeError, match="IF integrator needs a fixed T"):
        nir_graph((w, s), scheme="ternary", integrator="IF")
    with pytest.raises(sc.SpikecodeError, match="does not fit float32"):
        nir_graph((w, np.full(OUT, 1e36)), scheme="ternary", T=4, integrator="IF")
    with pytest.raises(sc.SpikecodeError, match="unknown scheme"):
        nir_graph((w, s), scheme="unary")
    with pytest.raises(sc.SpikecodeError, match="integrator must be"):
        nir_graph((w, s), scheme="ternary", integrator="LIF")
    with pytest.raises(sc.SpikecodeError, match="bit_order"):
        nir_graph((w, s), scheme="bitwise", T=3, bit_order="middle")
    for dt in (0, -1.0, float("inf")):
        with pytest.raises(sc.SpikecodeError, match="dt must be"):
            nir_graph((w, s), scheme="ternary", dt=dt)
    with pytest.raises(sc.SpikecodeError, match="int8"):
        nir_graph((w.astype(np.int16), s), scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="scales") as err:
        nir_graph({"p": (w, s[:-1])}, scheme="ternary")
    assert err.value.context["projection"] == "p"
    with pytest.raises(sc.SpikecodeError, match="NaN"):
        nir_graph((w, np.full(OUT, np.nan)), scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="bias"):
        nir_graph((w, s, b[:-1]), scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="bias"):
        nir_graph((w, s, np.full(OUT, np.inf)), scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="a projection is"):
        nir_graph((w,), scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="a projection is"):
        nir_graph(w, scheme="ternary")
    for name in ("", "a/b", 3):
        with pytest.raises(sc.SpikecodeError, match="names"):
            nir_graph({name: (w, s)}, scheme="ternary")
    with pytest.raises(sc.SpikecodeError, match="no projection"):
        nir_graph({}, scheme="ternary")


def test_unwritable_paths_leave_nothing(tmp_path, rng):
    w, s, _ = _weights(rng, "row")
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_nir((w, s), tmp_path / "missing" / "g.nir", scheme="ternary")
    folder = tmp_path / "taken.nir"
    folder.mkdir()
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_nir((w, s), folder, scheme="ternary")
    assert sorted(os.listdir(tmp_path)) == ["taken.nir"]
    assert os.listdir(folder) == []


def test_simulation_refuses_mismatched_trains(rng):
    w, s, b = _weights(rng, "row")
    train, vth = _train(rng, "bitwise", "msb")
    graph = nir_graph((w, s, b), scheme="bitwise", T=train.T, bit_order="msb")
    cases = {
        "exported for bitwise trains": _train(rng, "ternary")[0],
        "bit order msb": sc.encode(train.decode(), "bitwise", bit_order="lsb"),
        "T=": sc.encode(train.decode(), "bitwise", T=train.T + 1),
        "input features": sc.encode(np.zeros((2, IN + 1), dtype=int), "bitwise", T=train.T),
    }
    for message, bad in cases.items():
        with pytest.raises(sc.SpikecodeError, match=message):
            simulate_nir(graph, bad, 1.0)
    with pytest.raises(sc.SpikecodeError, match="vth must be"):
        simulate_nir(graph, train, np.ones(5))
    with pytest.raises(sc.SpikecodeError, match="expects a SpikeTrain"):
        simulate_nir(graph, train.to_dense(), vth)
    with pytest.raises(sc.SpikecodeError, match="no projection 'k'"):
        simulate_nir(graph, train, vth, projection="k")
    with pytest.raises(sc.SpikecodeError, match="no projection 'k'"):
        simulate_nir(graph, {"k": train}, {"k": vth})
    with pytest.raises(sc.SpikecodeError, match="same keys"):
        simulate_nir(graph, {"projection": train}, vth)
    with pytest.raises(sc.SpikecodeError, match="only with a single train"):
        simulate_nir(graph, {"projection": train}, {"projection": vth}, projection="x")
    both = nir_graph({"a": (w, s), "b": (w, s)}, scheme="bitwise", T=train.T)
    with pytest.raises(sc.SpikecodeError, match="2 projections"):
        simulate_nir(both, train, vth)


def test_simulation_detects_a_firing_if(rng):
    w, s, _ = _weights(rng, "row")
    train, vth = _train(rng, "ternary")
    graph = nir_graph((w, s), scheme="ternary", T=train.T, integrator="IF")
    graph.nodes["projection.integrator"].v_threshold[:] = 1e-6
    with pytest.raises(sc.SpikecodeError, match="IF integrator fired"):
        simulate_nir(graph, train, vth)


def test_simulation_refuses_foreign_or_broken_files(tmp_path, rng):
    w, s, _ = _weights(rng, "row")
    train, vth = _train(rng, "ternary")
    with pytest.raises(sc.SpikecodeError, match="no such file"):
        simulate_nir(tmp_path / "absent.nir", train, vth)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(sc.SpikecodeError, match="cannot read garbage.nir") as err:
        simulate_nir(garbage, train, vth)
    assert err.value.context["file"] == str(garbage)
    good = export_nir((w, s), tmp_path / "good.nir", scheme="ternary")
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(sc.SpikecodeError, match="truncated.nir"):
        simulate_nir(truncated, train, vth)

    foreign = tmp_path / "foreign.nir"
    nir.write(foreign, nir.NIRGraph.from_list(nir.Linear(weight=np.eye(IN))))
    with pytest.raises(sc.SpikecodeError, match="not a spikecode NIR export"):
        simulate_nir(foreign, train, vth)

    graph = nir_graph((w, s), scheme="ternary")
    graph.metadata["format_version"] = 99
    with pytest.raises(sc.SpikecodeError, match="version 99"):
        simulate_nir(graph, train, vth)
    graph = nir_graph((w, s), scheme="ternary")
    del graph.metadata["ports"]
    with pytest.raises(sc.SpikecodeError, match="missing graph metadata: ports"):
        simulate_nir(graph, train, vth)
    graph = nir_graph((w, s), scheme="ternary")
    del graph.nodes["projection.synapse"]
    with pytest.raises(sc.SpikecodeError, match="lacks node"):
        simulate_nir(graph, train, vth)
    graph = nir_graph((w, s), scheme="ternary")
    del graph.nodes["projection.integrator"].metadata["bias"]
    with pytest.raises(sc.SpikecodeError, match="readout metadata"):
        simulate_nir(graph, train, vth)
