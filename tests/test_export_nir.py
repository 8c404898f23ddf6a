"""NIR export of spike-driven projections: faithfulness through an independent simulator.

The acceptance test: graphs written with ``nir.write`` and read back, run step by step
through ``nirtorch.nir_to_torch`` (with mappers written from the NIR definitions) on
the trains spikecode produced, give the layer outputs of ``spikecode.spike_linear`` for
every code and every form (integer/float weights, ports/graded, signed/ON-OFF, IF/LI).
The consumers' own importers are checked in test_nir_consumers.py.
"""

from __future__ import annotations

import json
import os

import nir
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spikecode as sc
from spikecode.exporters import get_exporter
from spikecode.exporters.nir import (
    INDEX_FILE,
    LI_TAU,
    Float32Warning,
    export_nir,
    load_nir,
    nir_frames,
    nir_graph,
    nir_graphs,
    nir_readout,
    simulate_nir,
)
from spikecode.nn import W8ASpikeLinear
from spikecode.nn.functional import adaptive_counts, quantize_weight_int8

BITWISE = ("bitwise", "bitwise-bidirectional", "bitwise-twos-complement")
SIGNED = ("ternary", "bitwise-bidirectional")
IN, OUT, GROUPS = 16, 6, 4
FORMS = [
    {},
    {"weights": "float"},
    {"graded": True},
    {"integrator": "LI"},
    {"on_off": True},
    {"weights": "float", "graded": True},
]


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


def _close(actual: np.ndarray, expected: np.ndarray, graph=None, vth=1.0) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    atol = 1e-12 * scale
    if graph is not None and graph.metadata["integrator"] == "LI":
        # NIR's LI with tau = 2^31 - 1 leaks v dt/tau per step (a float64 simulator keeps
        # it; float32 rounds it away): at most (T + 1) · bound / tau on every membrane.
        meta = graph.metadata
        leak = (int(meta["T"]) + 1) * float(meta["accumulator_bound"]) / LI_TAU
        atol += leak * float(np.max(vth)) * float(np.abs(meta["scales"]).sum(axis=1).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def _allowed(scheme: str, form: dict) -> bool:
    return not form.get("on_off") or scheme in SIGNED


# --------------------------------------------------------------------------- faithfulness


@pytest.mark.parametrize("scales", ["row", "group", "release"])
@pytest.mark.parametrize("bit_order", ["msb", "lsb"])
@pytest.mark.parametrize("scheme", list(sc.SCHEMES))
def test_file_simulation_equals_spike_linear(tmp_path, rng, scheme, bit_order, scales):
    w, s, b = _weights(rng, scales)
    train, vth = _train(rng, scheme, bit_order)
    path = export_nir(
        (w, s, b), tmp_path / "layer.nir", scheme=scheme, T=train.T, bit_order=bit_order
    )
    expected = sc.spike_linear(train, w, s, vth, b).output
    actual = simulate_nir(path, train, vth)
    assert actual.shape == (2, 3, OUT)
    _close(actual, expected)


CASES = [(scheme, form) for scheme in sc.SCHEMES for form in FORMS[1:] if _allowed(scheme, form)]


@pytest.mark.parametrize(
    ("scheme", "form"), CASES, ids=[f"{s}-{'-'.join(map(str, f.values()))}" for s, f in CASES]
)
def test_every_form_simulates_like_spike_linear(tmp_path, rng, scheme, form):
    w, s, b = _weights(rng, "release")
    train, vth = _train(rng, scheme, "lsb")
    path = export_nir(
        (w, s, b), tmp_path / "f.nir", scheme=scheme, T=train.T, bit_order="lsb", **form
    )
    want = sc.spike_linear(train, w, s, vth, b).output
    _close(simulate_nir(path, train, vth), want, load_nir(path).graphs["projection"], vth)


@given(
    scheme=st.sampled_from(list(sc.SCHEMES)),
    bit_order=st.sampled_from(["msb", "lsb"]),
    form=st.sampled_from(FORMS),
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 4),
    n_in=st.sampled_from([4, 8, 12]),
    out=st.integers(1, 5),
    groups=st.sampled_from([1, 2, 4]),
    spread=st.integers(0, 40),
)
def test_simulation_property(scheme, bit_order, form, seed, rows, n_in, out, groups, spread):
    if not _allowed(scheme, form):
        return
    rng = np.random.default_rng(seed)
    counts = rng.integers(-spread, spread + 1, size=(rows, n_in))
    train = sc.encode(counts, scheme, bit_order=bit_order)
    vth = rng.uniform(0.01, 2.0, size=rows)
    w = rng.integers(-127, 128, size=(out, n_in), dtype=np.int8)
    s = rng.uniform(1e-3, 1.0, size=(out, groups))
    b = rng.normal(size=out)
    graph = nir_graph((w, s, b), scheme=scheme, T=train.T, bit_order=bit_order, **form)
    want = sc.spike_linear(train, w, s, vth, b)
    _close(simulate_nir(graph, train, vth), want.output, graph, vth)
    if form.get("weights", "int") == "int":
        # the membranes the NIR definitions give are the exact integer accumulators
        module = nir_graph((w, s, b), scheme=scheme, T=train.T, bit_order=bit_order, **form)
        frames = nir_frames(train, module).astype(np.float64)
        weight = np.asarray(module.nodes["synapse"].weight, dtype=np.float64)
        membrane = sum(frames[t] @ weight.T for t in range(train.T))
        gain = module.metadata["zero_point_gain"]
        acc = membrane.reshape(rows, out, groups) + train.zero_point * gain
        np.testing.assert_array_equal(acc, want.accumulator.transpose(0, 2, 1))


def test_the_li_form_is_an_infinite_tau_leaky_integrator(rng):
    """Rockpool's form: NIR LI with tau = 2^31 - 1 (int32), r = tau/dt, v_leak = 0."""
    w, s, b = _weights(rng, "group")
    train, vth = _train(rng, "ternary")
    graph = nir_graph((w, s, b), scheme="ternary", T=train.T, integrator="LI")
    node = graph.nodes["integrator"]
    assert isinstance(node, nir.LI)
    np.testing.assert_array_equal(node.tau, np.full(OUT * GROUPS, 2.0**31 - 1))
    np.testing.assert_array_equal(node.r, node.tau)
    np.testing.assert_array_equal(node.v_leak, np.zeros(OUT * GROUPS))
    assert np.asarray(node.tau).astype(np.int32).max() == 2**31 - 1  # Rockpool's int cast
    # its decay per step rounds to 1 in float32: a float32 consumer integrates exactly
    decay = torch.exp(torch.tensor(-1.0, dtype=torch.float32) / float(LI_TAU))
    assert decay.item() == 1.0
    assert graph.metadata["tau"] == LI_TAU and "exp(-dt/tau)" in graph.metadata["discretisation"]
    _close(simulate_nir(graph, train, vth), sc.spike_linear(train, w, s, vth, b).output, graph, vth)


def test_integrator_I_is_refused_saying_why(rng):
    w, s, _ = _weights(rng, "row")
    with pytest.raises(sc.SpikecodeError, match="no consumer runs NIR's I") as err:
        nir_graph((w, s), scheme="ternary", T=3, integrator="I")
    assert "integrator='IF' or integrator='LI'" in str(err.value)


def test_scalar_vth_and_one_token(rng):
    w, s, b = _weights(rng, "row")
    train = sc.encode(rng.integers(-9, 10, size=IN), "bitwise-bidirectional")
    graph = nir_graph((w, s, b), scheme=train.scheme, T=train.T)
    out = simulate_nir(graph, train, 0.25)
    assert out.shape == (OUT,)
    _close(out, sc.spike_linear(train, w, s, 0.25, b).output)
    membrane = np.zeros(graph.metadata["neurons"])
    np.testing.assert_array_equal(nir_readout(membrane, 0.25, graph), b)


def test_dt_sets_r_and_is_honoured(rng):
    w, s, b = _weights(rng, "row")
    train, vth = _train(rng, "bitwise", "msb")
    for integrator, r in (("IF", 1000.0), ("LI", LI_TAU * 1000.0)):
        graph = nir_graph((w, s, b), scheme="bitwise", T=train.T, dt=1e-3, integrator=integrator)
        np.testing.assert_array_equal(graph.nodes["integrator"].r, np.full(OUT, r))
        assert graph.metadata["dt"] == 1e-3
        want = sc.spike_linear(train, w, s, vth, b).output
        _close(simulate_nir(graph, train, vth), want, graph, vth)


def test_torch_linear_is_quantized_per_spec(rng):
    torch.manual_seed(0)
    linear = torch.nn.Linear(IN, OUT)
    train, vth = _train(rng, "ternary")
    graph = nir_graph(linear, scheme="ternary", T=train.T, group_size=4)
    assert graph.metadata["scale_groups"] == 4
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


def test_block_and_model_exports_are_folders_with_an_index(tmp_path, rng):
    shapes = {"attn.q_proj": (6, 16), "attn.o_proj": (16, 6), "mlp.down_proj": (3, 8)}
    projections, trains, vths = {}, {}, {}
    for i, (name, (out, n_in)) in enumerate(shapes.items()):
        w, s, b = _weights(rng, "row", out, n_in)
        projections[name] = (w, s) if i == 1 else (w, s, b)  # one without bias
        trains[name], vths[name] = _train(rng, "bitwise-twos-complement", shape=(4, n_in))
    T = max(t.T for t in trains.values())
    trains = {n: sc.encode(t.decode(), t.scheme, T=T) for n, t in trains.items()}
    folder = export_nir(projections, tmp_path / "block", scheme="bitwise-twos-complement", T=T)
    assert sorted(os.listdir(folder)) == sorted([INDEX_FILE, *(f"{n}.nir" for n in shapes)])
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["format"] == "spikecode.nir-index" and index["format_version"] == 2
    assert (index["scheme"], index["T"], index["integrator"], index["weights"]) == (
        "bitwise-twos-complement",
        T,
        "IF",
        "int",
    )
    assert [p["name"] for p in index["projections"]] == list(shapes)
    for entry, (name, (out, n_in)) in zip(index["projections"], shapes.items(), strict=True):
        assert entry["file"] == f"{name}.nir"
        assert (entry["in_features"], entry["out_features"], entry["neurons"]) == (n_in, out, out)
        assert entry["input_channels"] == T * n_in
        assert entry["synapse_dtype"] in ("int16", "int32")
    outputs = simulate_nir(folder, trains, vths)
    assert list(outputs) == list(shapes)
    for name, (w, s, *rest) in projections.items():
        bias = rest[0] if rest else None
        _close(outputs[name], sc.spike_linear(trains[name], w, s, vths[name], bias).output)
    one = simulate_nir(
        folder, trains["mlp.down_proj"], vths["mlp.down_proj"], projection="mlp.down_proj"
    )
    _close(one, outputs["mlp.down_proj"])
    # a second export to the same folder replaces the first
    export_nir({"x": projections["attn.q_proj"]}, folder, scheme="ternary", T=3)
    assert sorted(os.listdir(folder)) == [INDEX_FILE, "x.nir"]

    torch.manual_seed(2)
    model = torch.nn.Sequential(
        W8ASpikeLinear.from_linear(torch.nn.Linear(IN, 8), group_size=4),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 4),
    )
    model.add_module("lm_head", torch.nn.Linear(4, 3))  # never spike coded (SPEC §1)
    train, vth = _train(rng, "ternary", shape=(3, 8))
    graphs = nir_graphs(model, scheme="ternary", T=train.T, group_size=None)
    assert list(graphs) == ["0", "2"]
    w_q, scales = quantize_weight_int8(model[2].weight.detach())
    expected = sc.spike_linear(train, w_q, scales, vth, model[2].bias.detach()).output
    _close(simulate_nir(graphs["2"], train, vth), expected)


def test_if_threshold_is_never_reached_at_the_code_extremes(rng):
    """The IF integrator stays silent for the largest inputs a T-step train can carry."""
    w = np.full((2, IN), 127, dtype=np.int8)
    w[1] = -127
    s = np.ones(2, dtype=np.float32)
    T = 4
    for scheme in sc.SCHEMES:
        spec = sc.encoders.get_scheme(scheme)
        low, high = spec.value_range(T)
        counts = np.array([[low] * IN, [high] * IN])
        train = sc.encode(counts, scheme, T=T, zero_point=0 if low == 0 else "auto")
        dense = np.ones((T, 1, IN), dtype=np.int8)  # every spike at once
        full = sc.SpikeTrain.from_dense(dense if not spec.signed else -dense, scheme)
        for form in FORMS:
            if not _allowed(scheme, form) or form.get("integrator") == "LI":
                continue
            graph = nir_graph((w, s), scheme=scheme, T=T, **form)
            assert graph.metadata["threshold"] > 2 * 127 * IN * (2**T if spec.bitwise else T) / 2
            for t in (train, full):
                _close(simulate_nir(graph, t, 1.0), sc.spike_linear(t, w, s, 1.0).output)


# --------------------------------------------------------------------------- representation


def test_graph_structure_and_weights_follow_the_documented_layout(rng):
    w, s, b = _weights(rng, "group")
    T = 5
    graph = nir_graph({"q": (w, s, b)}, scheme="bitwise-bidirectional", T=T, on_off=True)
    assert set(graph.nodes) == {"input", "synapse", "integrator", "output"}
    assert sorted(graph.edges) == sorted(
        [("input", "synapse"), ("synapse", "integrator"), ("integrator", "output")]
    )
    assert isinstance(graph.nodes["synapse"], nir.Affine)
    assert isinstance(graph.nodes["integrator"], nir.IF)
    np.testing.assert_array_equal(graph.nodes["synapse"].bias, np.zeros(OUT * GROUPS))
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [T * 2 * IN])
    # slow reference: neuron o*G+g, channel (p*2+h)*IN+i carries w_p·(±1)·W_q[o, i] for i in g
    step_w = [16, 8, 4, 2, 1]
    size = IN // GROUPS
    expected = np.zeros((OUT * GROUPS, T * 2 * IN), dtype=np.int64)
    for o in range(OUT):
        for g in range(GROUPS):
            for p in range(T):
                for h, sign in enumerate((1, -1)):
                    for i in range(g * size, (g + 1) * size):
                        expected[o * GROUPS + g, (p * 2 + h) * IN + i] = (
                            sign * step_w[p] * int(w[o, i])
                        )
    weight = graph.nodes["synapse"].weight
    assert weight.dtype == np.int16  # 16 * 127 needs more than int8
    np.testing.assert_array_equal(weight, expected)
    meta = graph.metadata
    assert meta["format"] == "spikecode.nir" and meta["projection"] == "q"
    assert (meta["scheme"], meta["T"], meta["ports"], meta["halves"]) == (
        "bitwise-bidirectional",
        T,
        T,
        2,
    )
    np.testing.assert_array_equal(meta["step_weights"], step_w)
    np.testing.assert_array_equal(meta["scales"], s)
    np.testing.assert_array_equal(meta["bias"], b)
    np.testing.assert_array_equal(
        meta["zero_point_gain"], w.astype(np.int64).reshape(OUT, GROUPS, size).sum(axis=2)
    )
    # accumulator: Σ_t |w_t| · max over (o, g) of Σ_{i in g} |W_q[o, i]|
    bound = 31 * int(np.abs(w.astype(np.int64)).reshape(OUT, GROUPS, size).sum(axis=2).max())
    assert meta["accumulator_bound"] == bound
    assert meta["accumulator_bits"] == bound.bit_length() + 1
    assert meta["float32_exact"]
    threshold = graph.nodes["integrator"].v_threshold
    assert np.unique(threshold).size == 1  # one value: snnTorch's importer requires it
    assert 2 * bound < threshold[0] <= 4 * bound and np.log2(threshold[0]).is_integer()
    for key in ("input_layout", "drive", "discretisation", "readout"):
        assert isinstance(meta[key], str) and meta[key]

    graded = nir_graph((w, s, b), scheme="bitwise-bidirectional", T=T, graded=True)
    assert graded.nodes["synapse"].weight.dtype == np.int8  # no per-step copies
    assert graded.nodes["synapse"].weight.shape == (OUT * GROUPS, IN)
    floats = nir_graph((w, s, b), scheme="bitwise-bidirectional", T=T, weights="float")
    assert floats.nodes["synapse"].weight.shape == (OUT, T * IN)
    np.testing.assert_array_equal(
        floats.nodes["synapse"].weight[:, :IN],
        16 * w.astype(np.float64) * np.repeat(s.astype(np.float64), size, axis=1),
    )


def test_frames_follow_the_documented_layout(rng):
    w, s, _ = _weights(rng, "row")
    train, _ = _train(rng, "bitwise-bidirectional", shape=(3, IN))
    dense = train.to_dense().astype(np.float64)
    T = train.T
    ports = nir_frames(train, nir_graph((w, s), scheme=train.scheme, T=T))
    graded = nir_frames(train, nir_graph((w, s), scheme=train.scheme, T=T, graded=True))
    on_off = nir_frames(train, nir_graph((w, s), scheme=train.scheme, T=T, on_off=True))
    assert ports.dtype == np.float32 and ports.shape == (T, 3, T * IN)
    for t in range(T):
        np.testing.assert_array_equal(ports[t].reshape(3, T, IN)[:, t], dense[t])
        assert not np.delete(ports[t].reshape(3, T, IN), t, axis=1).any()
        np.testing.assert_array_equal(graded[t], train.step_weights[t] * dense[t])
        halves = on_off[t].reshape(3, T, 2, IN)[:, t]
        np.testing.assert_array_equal(halves[:, 0], dense[t] > 0)
        np.testing.assert_array_equal(halves[:, 1], dense[t] < 0)


def test_write_read_round_trip(tmp_path, rng):
    projections = {name: _weights(rng, "group") for name in ("model.layers.0.q_proj", "k")}
    graphs = nir_graphs(projections, scheme="bitwise", T=4)
    folder = export_nir(projections, tmp_path / "g", scheme="bitwise", T=4)
    back = load_nir(folder)
    assert list(back.graphs) == list(graphs)
    for name, graph in graphs.items():
        other = back.graphs[name]
        for role, node in graph.nodes.items():
            assert type(other.nodes[role]) is type(node)
            for field in ("weight", "bias", "r", "v_threshold", "v_reset"):
                if hasattr(node, field):
                    stored = getattr(other.nodes[role], field)
                    np.testing.assert_array_equal(stored, getattr(node, field))
                    assert stored.dtype == getattr(node, field).dtype
        for key, value in graph.metadata.items():
            stored = other.metadata[key]
            if isinstance(stored, bytes):
                stored = stored.decode()
            np.testing.assert_array_equal(np.asarray(stored), np.asarray(value))
    assert get_exporter("nir") is export_nir


# --------------------------------------------------------------------------- refusals


def test_export_refuses_what_it_cannot_represent(rng):
    w, s, b = _weights(rng, "row")
    with pytest.raises(sc.SpikecodeError, match="needs a fixed T"):
        nir_graph((w, s), scheme="bitwise")
    for scheme in ("binary", "ternary"):
        for integrator in ("IF", "LI"):
            with pytest.raises(sc.SpikecodeError, match="needs a fixed T"):
                nir_graph((w, s), scheme=scheme, integrator=integrator)
    with pytest.raises(sc.SpikecodeError, match="does not fit float32"):
        nir_graph((w, np.full(OUT, 1e36)), scheme="ternary", T=4, weights="float")
    with pytest.raises(sc.SpikecodeError, match="unknown scheme"):
        nir_graph((w, s), scheme="unary", T=3)
    with pytest.raises(sc.SpikecodeError, match="integrator must be"):
        nir_graph((w, s), scheme="ternary", T=3, integrator="LIF")
    with pytest.raises(sc.SpikecodeError, match="weights must be"):
        nir_graph((w, s), scheme="ternary", T=3, weights="half")
    with pytest.raises(sc.SpikecodeError, match="bitwise has none"):
        nir_graph((w, s), scheme="bitwise", T=3, on_off=True)
    with pytest.raises(sc.SpikecodeError, match="graded payloads are not 0/1"):
        nir_graph((w, s), scheme="ternary", T=3, on_off=True, graded=True)
    with pytest.raises(sc.SpikecodeError, match="bit_order"):
        nir_graph((w, s), scheme="bitwise", T=3, bit_order="middle")
    for dt in (0, -1.0, float("inf")):
        with pytest.raises(sc.SpikecodeError, match="dt must be"):
            nir_graph((w, s), scheme="ternary", T=3, dt=dt)
    with pytest.raises(sc.SpikecodeError, match="int8"):
        nir_graph((w.astype(np.int16), s), scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="scales") as err:
        nir_graph({"p": (w, s[:-1])}, scheme="ternary", T=3)
    assert err.value.context["projection"] == "p"
    with pytest.raises(sc.SpikecodeError, match="NaN"):
        nir_graph((w, np.full(OUT, np.nan)), scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="bias"):
        nir_graph((w, s, b[:-1]), scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="a projection is"):
        nir_graph((w,), scheme="ternary", T=3)
    for name in ("", "a/b", "a\\b", 3):
        with pytest.raises(sc.SpikecodeError, match="names"):
            nir_graph({name: (w, s)}, scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="no projection"):
        nir_graphs({}, scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="use nir_graphs"):
        nir_graph({"a": (w, s), "b": (w, s)}, scheme="ternary", T=3)
    big = np.ones((2**14 + 1, 2**14), dtype=np.int8)
    with pytest.raises(sc.SpikecodeError, match="graded=True stores no per-step copies"):
        nir_graph((big, np.ones(2**14 + 1)), scheme="ternary", T=3)


def test_unwritable_paths_leave_nothing(tmp_path, rng):
    w, s, _ = _weights(rng, "row")
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_nir((w, s), tmp_path / "missing" / "g.nir", scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_nir({"a": (w, s)}, tmp_path / "missing" / "folder", scheme="ternary", T=3)
    taken = tmp_path / "taken.nir"
    taken.mkdir()
    with pytest.raises(sc.SpikecodeError, match="cannot write"):
        export_nir((w, s), taken, scheme="ternary", T=3)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(sc.SpikecodeError, match="in the way"):
        export_nir({"a": (w, s)}, foreign, scheme="ternary", T=3)
    with pytest.raises(sc.SpikecodeError, match="go to a folder"):
        export_nir({"a": (w, s), "b": (w, s)}, tmp_path / "two.nir", scheme="ternary", T=3)
    assert sorted(os.listdir(tmp_path)) == ["foreign", "taken.nir"]
    assert os.listdir(taken) == [] and os.listdir(foreign) == ["notes.txt"]


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
        with pytest.raises(sc.SpikecodeError, match=message):
            nir_frames(bad, graph)
    with pytest.raises(sc.SpikecodeError, match="vth must be"):
        simulate_nir(graph, train, np.ones(5))
    with pytest.raises(sc.SpikecodeError, match="expected a SpikeTrain"):
        simulate_nir(graph, train.to_dense(), vth)
    with pytest.raises(sc.SpikecodeError, match="no projection 'k'"):
        simulate_nir(graph, train, vth, projection="k")
    with pytest.raises(sc.SpikecodeError, match="no projection 'k'"):
        simulate_nir(graph, {"k": train}, {"k": vth})
    with pytest.raises(sc.SpikecodeError, match="same keys"):
        simulate_nir(graph, {"projection": train}, vth)
    with pytest.raises(sc.SpikecodeError, match="only with a single train"):
        simulate_nir(graph, {"projection": train}, {"projection": vth}, projection="x")
    with pytest.raises(sc.SpikecodeError, match="membrane must be"):
        nir_readout(np.zeros((2, OUT + 1)), 1.0, graph)


def test_a_single_train_for_a_folder_of_several_projections_names_them(tmp_path, rng):
    projections = {name: _weights(rng, "row") for name in ("a_proj", "b_proj")}
    train, vth = _train(rng, "bitwise")
    folder = export_nir(projections, tmp_path / "two", scheme="bitwise", T=train.T)
    with pytest.raises(sc.SpikecodeError, match=r"2 projections; choose one with projection="):
        simulate_nir(folder, train, vth)
    np.testing.assert_array_equal(
        simulate_nir(folder, train, vth, projection="b_proj"),
        simulate_nir(folder, {"b_proj": train}, {"b_proj": vth})["b_proj"],
    )


def test_simulation_detects_a_firing_if(rng):
    w, s, _ = _weights(rng, "row")
    train, vth = _train(rng, "ternary")
    graph = nir_graph((w, s), scheme="ternary", T=train.T)
    graph.nodes["integrator"].v_threshold[:] = 1e-6
    with pytest.raises(sc.SpikecodeError, match="IF integrator fired"):
        simulate_nir(graph, train, vth)


def test_load_refuses_foreign_or_broken_exports(tmp_path, rng):
    w, s, _ = _weights(rng, "row")
    train, vth = _train(rng, "ternary")
    with pytest.raises(sc.SpikecodeError, match="no such file"):
        simulate_nir(tmp_path / "absent.nir", train, vth)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(sc.SpikecodeError, match="cannot read garbage.nir") as err:
        load_nir(garbage)
    assert err.value.context["file"] == str(garbage)
    good = export_nir((w, s), tmp_path / "good.nir", scheme="ternary", T=train.T)
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(sc.SpikecodeError, match="truncated.nir"):
        load_nir(truncated)
    foreign = tmp_path / "foreign.nir"
    nir.write(foreign, nir.NIRGraph.from_list(nir.Linear(weight=np.eye(IN))))
    with pytest.raises(sc.SpikecodeError, match="not a spikecode NIR export"):
        load_nir(foreign)

    def edited(edit):
        graph = nir_graph((w, s), scheme="ternary", T=train.T)
        edit(graph)
        return graph

    cases = {
        "version 99": lambda g: g.metadata.update(format_version=99),
        "missing graph metadata: ports": lambda g: g.metadata.pop("ports"),
        "lacks node": lambda g: g.nodes.pop("synapse"),
        "does not match": lambda g: g.metadata.update(bias=np.zeros(2)),
    }
    for message, edit in cases.items():
        with pytest.raises(sc.SpikecodeError, match=message):
            simulate_nir(edited(edit), train, vth)

    folder = export_nir({"a": (w, s), "b": (w, s)}, tmp_path / "f", scheme="ternary", T=train.T)
    (folder / "b.nir").unlink()
    with pytest.raises(sc.SpikecodeError, match="b.nir, which is missing"):
        load_nir(folder)
    index = json.loads((folder / INDEX_FILE).read_text())
    for change, message in (
        ({"format_version": 1}, "version 1"),
        ({"format": "other"}, "not a spikecode NIR index"),
        ({"projections": None}, "lists no projections"),
        ({"projections": [{"name": "a", "file": "../a.nir"}]}, "leaves the folder"),
        ({"projections": [{"name": "zzz", "file": "a.nir"}]}, "another projection"),
    ):
        (folder / INDEX_FILE).write_text(json.dumps({**index, **change}))
        with pytest.raises(sc.SpikecodeError, match=message):
            load_nir(folder)
    (folder / INDEX_FILE).write_text("{broken")
    with pytest.raises(sc.SpikecodeError, match="cannot read index.json"):
        load_nir(folder)


# --------------------------------------------------------------------------- float32 range


def test_export_warns_when_a_float32_consumer_would_round(tmp_path, rng):
    """Past 2^24 the float32 consumers round the membrane: the export says so, by name."""
    w = np.full((2, 64), 127, dtype=np.int8)
    s = np.ones(2)
    narrow = nir_graph({"a": (w, s)}, scheme="bitwise", T=8)  # no warning (warnings are errors)
    assert narrow.metadata["float32_exact"]
    with pytest.warns(Float32Warning) as caught:
        path = export_nir({"a": (w, s), "b": (w[:, :8], s)}, tmp_path / "f", scheme="bitwise", T=14)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1 of 2 projection(s) (a)" in message  # b: (2^14 - 1) · 127 · 8 < 2^24
    assert "(28-bit signed)" in message  # (2^14 - 1) · 127 · 64 < 2^27
    assert "Norse, Spyx, Rockpool will round the membrane in float32" in message
    assert "Sinabs and snnTorch's per-step recipe stay exact" in message
    assert "a smaller T" in message
    index = load_nir(path).index["projections"]
    assert [p["float32_exact"] for p in index] == [False, True]
    # one step's sum past 2^24 as well (a group's Σ|W_q| > 2^24): Sinabs, snnTorch too
    wide = np.full((1, 2**17 + 2**12), 127, dtype=np.int8)
    with pytest.warns(Float32Warning, match="Norse, Spyx, Rockpool, Sinabs, snnTorch will"):
        graph = nir_graph((wide, np.ones(1)), scheme="ternary", T=1)
    assert not graph.metadata["step_float32_exact"]


def test_load_validates_the_index_and_reads_only_the_folders_files(tmp_path, rng):
    w, s, _ = _weights(rng, "row")
    folder = export_nir({"a": (w, s), "b": (w, s)}, tmp_path / "f", scheme="ternary", T=3)
    index = json.loads((folder / INDEX_FILE).read_text())
    a_entry, b_entry = index["projections"]
    long_name = "x" * 300 + ".nir"
    cases = (
        ([a_entry, {**b_entry, "name": "a", "file": "a.nir"}], "projection 'a' twice"),
        ([a_entry, {**b_entry, "file": "a.nir"}], "file 'a.nir' twice"),
        ([], "lists no projections"),
        ([{**a_entry, "name": 7}], "text 'name' and 'file'"),
        ([{**a_entry, "file": ["a.nir"]}], "text 'name' and 'file'"),
        ([{**a_entry, "file": ".."}], "leaves the folder"),
        ([{**a_entry, "file": "a\0.nir"}], "leaves the folder"),
        ([{**a_entry, "file": long_name}], "longer than file names"),
    )
    for projections, message in cases:
        (folder / INDEX_FILE).write_text(json.dumps({**index, "projections": projections}))
        with pytest.raises(sc.SpikecodeError, match=message):
            load_nir(folder)
    (folder / INDEX_FILE).write_text(json.dumps(index))
    assert list(load_nir(folder).graphs) == ["a", "b"]
    # A graph file that is a symbolic link (here: out of the folder) is not followed.
    outside = export_nir((w, s), tmp_path / "outside.nir", scheme="ternary", T=3)
    (folder / "b.nir").unlink()
    (folder / "b.nir").symlink_to(outside)
    with pytest.raises(sc.SpikecodeError, match="b.nir is a symbolic link"):
        load_nir(folder)
    (folder / "b.nir").unlink()
    (folder / "b.nir").mkdir()
    with pytest.raises(sc.SpikecodeError, match="b.nir is not a regular file"):
        load_nir(folder)
    # Nor an index that is a link.
    elsewhere = tmp_path / "index-elsewhere.json"
    elsewhere.write_text(json.dumps(index))
    (folder / INDEX_FILE).unlink()
    (folder / INDEX_FILE).symlink_to(elsewhere)
    with pytest.raises(sc.SpikecodeError, match="index.json is a symbolic link"):
        load_nir(folder)
    (folder / INDEX_FILE).unlink()
    with pytest.raises(sc.SpikecodeError, match="index.json not found"):
        load_nir(folder)
    # A name longer than the system allows is one error, not an OSError.
    with pytest.raises(sc.SpikecodeError, match="File name too long"):
        load_nir(tmp_path / long_name)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format_version", "abc", "'format_version' must be an integer"),
        ("format_version", 2.0, "'format_version' must be an integer"),
        ("T", [1, 2], "'T' must be an integer"),
        ("T", -1, "'T' must be an integer >= 0"),
        ("ports", "2", "'ports' must be an integer"),
        ("in_features", True, "'in_features' must be an integer"),
        ("graded", "no", "'graded' must be true or false"),
        ("dt", "fast", "'dt' must be a finite number"),
        ("dt", float("nan"), "'dt' must be a finite number"),
        ("scheme", 3, "'scheme' must be text"),
        ("scales", "big", "'scales' must be a numeric array"),
        ("bias", [[1, 2], [3]], "'bias' must be a numeric array"),
        ("step_weights", {"a": 1}, "'step_weights' must be a numeric array"),
    ],
)
def test_graph_metadata_types_are_checked(rng, key, value, message):
    w, s, _ = _weights(rng, "row")
    train, _ = _train(rng, "ternary")
    graph = nir_graph((w, s), scheme="ternary", T=train.T)
    graph.metadata[key] = value
    with pytest.raises(sc.SpikecodeError, match=message):
        load_nir(graph)


def test_graph_files_are_held_to_the_size_bound(tmp_path, rng, monkeypatch):
    w, s, _ = _weights(rng, "row")
    path = export_nir((w, s), tmp_path / "g.nir", scheme="ternary", T=3)
    assert load_nir(path).graphs
    monkeypatch.setenv("SPIKECODE_MAX_BYTES", "64")
    with pytest.raises(sc.SpikecodeError, match="SPIKECODE_MAX_BYTES") as err:
        load_nir(path)
    assert "the datasets of g.nir" in str(err.value)
