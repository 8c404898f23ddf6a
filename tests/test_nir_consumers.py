"""The default NIR export, loaded by the field's own importers, reproduces spike_linear.

Each consumer loads the CLI's default export of the bundled sample (``spikecode export
nir``: a folder of per-projection graphs) with its own importer, unmodified, and is
driven the way docs/export-consumers.rst describes: time-major frames from
``nir_frames``, a fresh state per token, the membrane read after the last step, and the
host readout ``nir_readout``. The integer form keeps every membrane an exact integer
below 2^24, so a float32 consumer reproduces spike_linear to float64 rounding; the
bound checked is 1e-9 relative to the layer's largest output.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spikecode as sc
from spikecode.cli import main
from spikecode.data import load_sample, load_sample_weights
from spikecode.exporters.nir import (
    CONSUMERS as FORMS,
)
from spikecode.exporters.nir import (
    LI_TAU,
    Float32Warning,
    consumer_membrane,
    export_nir,
    load_nir,
    nir_frames,
    nir_graph,
    nir_readout,
    run_in_consumer,
    simulate_nir,
)

TOKENS = 16  # tokens of each sample layer run through the consumers
K = 3.0
RTOL = 1e-9  # relative to the largest |output| of the layer


def _consumer(module: str, reason: str):
    with warnings.catch_warnings():  # import-time deprecations of third-party code
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip(module, reason=reason)


# --------------------------------------------------------------------------- drivers


def run_snntorch(graph, frames):
    """snnTorch 1.0.0 maps IF to Leaky(beta=0.9): reset it every step, sum on the host."""
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    total = 0.0
    for t in range(frames.shape[0]):
        snntorch.utils.reset(net)  # its membrane survives state=None: clear it
        (_, membrane), _ = net(torch.from_numpy(frames[t]))
        total = total + membrane.detach().double().numpy()
    return total


def run_norse(graph, frames):
    import norse.torch

    net = norse.torch.from_nir(graph, dt=1.0)  # its default dt is 0.001
    state = None  # a fresh state: v = 0 for every token (one token per row)
    with torch.no_grad():
        for t in range(frames.shape[0]):
            _, state = net(torch.from_numpy(frames[t]), state)
    return state.state["integrator"][0].v.double().numpy()


def run_sinabs(graph, frames):
    import sinabs

    T, rows, channels = frames.shape
    net = sinabs.from_nir(graph, batch_size=rows)  # squeeze layers: [batch*time, ...]
    batch_major = np.ascontiguousarray(frames.transpose(1, 0, 2)).reshape(rows * T, channels)
    with torch.no_grad():
        net(torch.from_numpy(batch_major))
    return net.integrator.v_mem.double().numpy()


def run_spyx(graph, frames):
    import jax.numpy as jnp
    import spyx.nir

    _, (_, states) = spyx.nir.from_nir(graph, jnp.asarray(frames), dt=1, return_all_states=True)
    membrane = [s for s in states if s is not None][-1]  # the IF layer's V, [T, rows, N]
    return np.asarray(membrane[-1], dtype=np.float64)


CONSUMERS = {
    "snntorch": ("snntorch.import_nir", run_snntorch),
    "norse": ("norse.torch", run_norse),
    "sinabs": ("sinabs", run_sinabs),
    "spyx": ("spyx.nir", run_spyx),
}
REASONS = {
    "rockpool": "rockpool is not installed (pip install 'spikecode[nir-consumers]')",
    "snntorch": "snnTorch is a core dependency",
    "norse": "norse is not installed (pip install --no-deps 'norse>=1.1': its torchvision "
    "requirement breaks transformers beside a CPU-only torch)",
    "sinabs": "sinabs is not installed (pip install 'spikecode[nir-consumers]')",
    "spyx": "spyx/jax are not installed (pip install 'spikecode[nir-consumers]')",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample():
    acts, weights = load_sample(), load_sample_weights()
    layers = {}
    for i, name in enumerate(str(n) for n in weights["layers"]):
        counts, vth = sc.adaptive_counts(acts[i], k=K)
        parts = (weights["weight_q"][i], weights["scales"][i], weights["bias"][i])
        layers[name] = (counts[:TOKENS], vth[:TOKENS], *parts)
    return layers


def _export_every_code(tmp_path_factory, name, *options):
    """`spikecode export nir --scheme S --k K *options` of the bundled sample, every code."""
    folder = tmp_path_factory.mktemp(name)
    out = {}
    for scheme in sc.SCHEMES:
        path = folder / scheme
        args = ["export", "nir", "--out", str(path), "--scheme", scheme, "--k", str(K), *options]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        out[scheme] = load_nir(path)
    return out


@pytest.fixture(scope="module")
def default_exports(tmp_path_factory):
    """`spikecode export nir --scheme S` of the bundled sample, every code."""
    return _export_every_code(tmp_path_factory, "nir")


def _check(consumer, export, sample, names):
    _, run = CONSUMERS[consumer]
    T = export.index["T"]
    for name in names:
        counts, vth, w, s, b = sample[name]
        graph = export.graphs[name]
        train = sc.encode(counts, export.index["scheme"], T)
        want = sc.spike_linear(train, w, s, vth, b)
        membrane = run(graph, nir_frames(train, graph))
        # the integer form: every membrane is the exact integer accumulator W_q,g c
        gain = np.asarray(graph.metadata["zero_point_gain"])
        acc = membrane.reshape(len(counts), w.shape[0], -1) + train.zero_point * gain
        np.testing.assert_array_equal(acc, want.accumulator.transpose(0, 2, 1))
        got = nir_readout(membrane, vth, graph, train.zero_point)
        scale = float(np.abs(want.output).max())
        np.testing.assert_allclose(got, want.output, rtol=0, atol=RTOL * scale)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("scheme", list(sc.SCHEMES))
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_consumer_runs_the_cli_default_export(consumer, scheme, default_exports, sample):
    _consumer(CONSUMERS[consumer][0], REASONS[consumer])
    export = default_exports[scheme]
    assert export.index["integrator"] == "IF" and export.index["weights"] == "int"
    assert all(p["float32_exact"] for p in export.index["projections"])
    # Every projection has the same form; one keeps the run short (binary and ternary
    # take T = 175 steps at k = 3, stepped one by one; Spyx compiles every graph).
    _check(consumer, export, sample, list(export.graphs)[:1])


def test_every_projection_of_the_default_export_in_sinabs(default_exports, sample):
    _consumer("sinabs", REASONS["sinabs"])
    export = default_exports["bitwise-bidirectional"]  # the CLI's default code
    assert len(export.graphs) == 6
    _check("sinabs", export, sample, list(export.graphs))


# --------------------------------------------------------------------------- other forms


def _float32_bound(graph, train, vth):
    """Worst-case float32 error of a float-weight graph's output.

    Per step a float32 sum of ``in`` exact products ±(w_t σ W_q) (rounded once when the
    weights are cast), then ``T`` membrane additions: at most
    ``2^-24 · (in + T + 1) · Σ_t |w_t| · max_o Σ_i |σ W_q[o, i]|``, times Vth.
    """
    meta = graph.metadata
    weight = np.abs(np.asarray(graph.nodes["synapse"].weight, dtype=np.float64))
    reach = float(np.abs(np.asarray(meta["step_weights"])).sum())
    # every port's block is w_p σ W_q: all ports together sum to Σ_p |w_p| σ W_q
    row = weight.sum(axis=1).max() * (reach if int(meta["ports"]) == 1 else 1.0)
    return float(np.max(vth)) * 2.0**-24 * (int(meta["in_features"]) + train.T + 1) * row


@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        ("bitwise-bidirectional", {"on_off": True}),
        ("ternary", {"on_off": True}),
        ("bitwise-twos-complement", {"graded": True}),
        ("bitwise", {"graded": True}),
        ("bitwise-bidirectional", {"weights": "float"}),
    ],
)
@pytest.mark.parametrize("consumer", ["sinabs", "norse", "rockpool"])
def test_other_forms_in_a_consumer_and_in_simulate_nir(tmp_path, sample, consumer, scheme, options):
    _consumer(CONSUMERS[consumer][0], REASONS[consumer])
    name = next(iter(sample))
    counts, vth, w, s, b = sample[name]
    counts, vth = counts[:8], vth[:8]
    train = sc.encode(counts, scheme)
    options = {**options, "integrator": FORMS[consumer]}  # Rockpool: the LI form
    path = export_nir({name: (w, s, b)}, tmp_path / "one.nir", scheme=scheme, T=train.T, **options)
    graph = load_nir(path).graphs[name]
    want = sc.spike_linear(train, w, s, vth, b).output
    frames = nir_frames(train, graph)
    if options.get("on_off"):
        assert set(np.unique(frames)) <= {0.0, 1.0}  # only 0/1 spikes travel
        assert frames.shape[-1] == 2 * graph.metadata["ports"] * w.shape[1]
    if options.get("graded"):
        assert frames.shape[-1] == w.shape[1]  # one port, no weight copies
        assert graph.nodes["synapse"].weight.dtype == np.int8
    got = nir_readout(CONSUMERS[consumer][1](graph, frames), vth, graph, train.zero_point)
    scale = float(np.abs(want).max())
    if options.get("weights") == "float":
        bound = _float32_bound(graph, train, vth)
        assert bound < 0.1 * scale
        np.testing.assert_allclose(got, want, rtol=0, atol=bound)
        # measured: float32 rounding, orders of magnitude inside the worst case
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * scale)
    # NIR's LI keeps a decay of dt/tau per step in float64: (T + 1) · bound / tau at most
    leak = (train.T + 1) * graph.metadata["accumulator_bound"] / LI_TAU
    if options["integrator"] == "IF":
        leak = 0.0
    leak *= float(np.max(vth)) * float(np.abs(s).sum(axis=-1).max())
    np.testing.assert_allclose(
        simulate_nir(path, train, vth), want, rtol=0, atol=1e-12 * scale + leak
    )


# --------------------------------------------------------------------------- quirks


def test_snntorch_leaks_without_the_per_step_reset(default_exports, sample):
    """snnTorch 1.0.0 turns IF into Leaky(beta=0.9): stepped without a reset, the
    membrane is Σ_t 0.9^(T-1-t) I_t (the quirk the recipe works around)."""
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    export = default_exports["bitwise-bidirectional"]
    name = next(iter(export.graphs))
    graph = export.graphs[name]
    counts, _vth, _w, _s, _b = sample[name]
    train = sc.encode(counts, export.index["scheme"], export.index["T"])
    frames = nir_frames(train, graph)
    net = import_from_nir(graph)
    snntorch.utils.reset(net)
    for t in range(train.T):
        (_, membrane), _ = net(torch.from_numpy(frames[t]))
    synapse = np.asarray(graph.nodes["synapse"].weight, dtype=np.float64)
    leaky = sum(0.9 ** (train.T - 1 - t) * frames[t] @ synapse.T for t in range(train.T))
    np.testing.assert_allclose(membrane.detach().numpy(), leaky, rtol=1e-5, atol=1e-2)
    exact = run_snntorch(graph, frames)
    assert not np.allclose(membrane.detach().numpy(), exact)


def test_rockpool_cannot_express_the_if_integrator(default_exports):
    """Rockpool 3.1 converts no IF node (documented; this pins it): it gets the LI form."""
    _consumer("rockpool.nn.modules.torch.nir", REASONS["rockpool"])
    from rockpool.nn.modules.torch.nir import from_nir

    graph = next(iter(default_exports["ternary"].graphs.values()))
    with pytest.raises(NotImplementedError, match="IF"):
        from_nir(graph)


# --------------------------------------------------------------------------- Rockpool: LI


def run_rockpool(graph, frames):
    """Rockpool 3.1 maps LI to ExpSynTorch: batch-major [rows, T, C], one call, a fresh
    module; its output is the synaptic current of every step (state keeps row 0 only)."""
    from rockpool.nn.modules.torch.nir import from_nir

    net = from_nir(graph)
    with torch.no_grad():
        out, _ = net(torch.from_numpy(np.ascontiguousarray(frames.transpose(1, 0, 2))))
    return out[:, -1, :].double().numpy()


CONSUMERS["rockpool"] = ("rockpool.nn.modules.torch.nir", run_rockpool)


@pytest.fixture(scope="module")
def li_exports(tmp_path_factory):
    """`spikecode export nir --scheme S --integrator LI` of the bundled sample, every code."""
    return _export_every_code(
        tmp_path_factory, "nir-li", "--integrator", "LI", "--include", "*layer.0.*"
    )


@pytest.mark.parametrize("scheme", list(sc.SCHEMES))
def test_rockpool_runs_the_li_export_exactly(scheme, li_exports, sample):
    _consumer(CONSUMERS["rockpool"][0], REASONS["rockpool"])
    export = li_exports[scheme]
    assert export.index["integrator"] == "LI"
    assert all(p["float32_exact"] for p in export.index["projections"])
    _check("rockpool", export, sample, list(export.graphs))


@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        ("bitwise-bidirectional", {"on_off": True}),
        ("ternary", {"on_off": True}),
        ("bitwise-twos-complement", {"graded": True}),
        ("bitwise", {"graded": True}),
    ],
)
def test_rockpool_runs_the_li_forms(tmp_path, sample, scheme, options):
    _consumer(CONSUMERS["rockpool"][0], REASONS["rockpool"])
    name = next(iter(sample))
    counts, _vth, w, s, b = sample[name]
    train = sc.encode(counts, scheme)
    path = export_nir(
        {name: (w, s, b)}, tmp_path / "one.nir", scheme=scheme, T=train.T, integrator="LI",
        **options,
    )  # fmt: skip
    _check("rockpool", load_nir(path), sample, [name])


@pytest.mark.slow
def test_rockpool_runs_the_li_export_of_a_calibrated_checkpoint(tmp_path):
    """A calibrated SpikingBrain-layout (W8ASpike) checkpoint: stats file -> LI export ->
    Rockpool, on the projection's own captured inputs, equals spike_linear exactly."""
    _consumer(CONSUMERS["rockpool"][0], REASONS["rockpool"])
    from spikecode.calibration import calibrate, save_stats
    from spikecode.data import load_corpus
    from spikecode.models.capture import collect_linear_inputs
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.nn import swap_linears
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    path = write_tiny_gla_swa_checkpoint(tmp_path / "ck", w8aspike=True, with_tokenizer=True)
    stats = calibrate(load_checkpoint(path), samples=4, k=(2.0,), error_rows=1)
    stats_path, _ = save_stats(tmp_path / "stats.json", stats)
    name = "model.layers.0.attn.o_proj"
    result = CliRunner().invoke(
        main,
        ["export", "nir", str(stats_path), "--k", "2", "--integrator", "LI",
         "--include", name, "--out", str(tmp_path / "o.nir")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    export = load_nir(tmp_path / "o.nir")
    loaded = load_checkpoint(path, dtype="float32")
    inputs = loaded.tokenizer(load_corpus(4), padding=True, return_tensors="pt")
    x = collect_linear_inputs(loaded.model.eval(), dict(inputs), name)[name]
    x = x.reshape(-1, x.shape[-1])
    swap_linears(loaded.model, 2.0, name, scales={name: loaded.quant_scales[name]})
    layer = loaded.model.get_submodule(name)
    counts, vth = sc.adaptive_counts(x, k=2.0)
    train = sc.encode(counts, export.index["scheme"], export.index["T"])
    want = sc.spike_linear(train, layer.weight_q, layer.scales, vth, layer.bias)
    graph = export.graphs[name]
    membrane = run_rockpool(graph, nir_frames(train, graph))
    gain = np.asarray(graph.metadata["zero_point_gain"])
    acc = membrane.reshape(len(counts), want.accumulator.shape[-1], -1) + train.zero_point * gain
    np.testing.assert_array_equal(acc, want.accumulator.transpose(0, 2, 1))
    got = run_in_consumer(export, train, vth, consumer="rockpool")
    np.testing.assert_array_equal(got, nir_readout(membrane, vth, graph, train.zero_point))
    scale = float(np.abs(want.output).max())
    np.testing.assert_allclose(got, want.output, rtol=0, atol=RTOL * scale)


def test_the_if_consumers_refuse_or_drop_the_li_form(li_exports, sample):
    """Why LI is Rockpool's form only: snnTorch, Sinabs and Spyx refuse it, Norse drops it."""
    export = li_exports["ternary"]
    name = next(iter(export.graphs))
    graph = export.graphs[name]
    counts = sample[name][0]
    train = sc.encode(counts, "ternary", export.index["T"])
    frames = nir_frames(train, graph)
    refusals = {"snntorch": "Unknown node type", "sinabs": "`r` must be 1", "spyx": "nir.LI"}
    for consumer, message in refusals.items():
        module, run = CONSUMERS[consumer]
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(ValueError, match=message):
                run(graph, frames)
    if importlib.util.find_spec("norse") is not None:
        import norse.torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            net = norse.torch.from_nir(graph, dt=1.0)
        assert "integrator" not in dict(net.named_children())  # dropped, no error
    for consumer in ("snntorch", "norse", "sinabs", "spyx"):
        with pytest.raises(sc.SpikecodeError, match=f"{consumer} runs the IF form"):
            run_in_consumer(graph, train, 1.0, consumer=consumer)


# --------------------------------------------------------------------------- run_in_consumer


@pytest.mark.parametrize("consumer", list(FORMS))
def test_run_in_consumer_equals_spike_linear(consumer, default_exports, li_exports, sample):
    _consumer(CONSUMERS[consumer][0], REASONS[consumer])
    scheme = "bitwise-bidirectional"
    export = (li_exports if FORMS[consumer] == "LI" else default_exports)[scheme]
    name = next(iter(export.graphs))
    counts, vth, w, s, b = sample[name]
    train = sc.encode(counts, scheme, export.index["T"])
    want = sc.spike_linear(train, w, s, vth, b).output
    got = run_in_consumer(export, train, vth, consumer=consumer, projection=name)
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * float(np.abs(want).max()))
    # the helper's membrane is the documented recipe's (the drivers above), bit for bit
    graph = export.graphs[name]
    frames = nir_frames(train, graph)
    membrane = consumer_membrane(graph, frames, consumer)
    np.testing.assert_array_equal(membrane, CONSUMERS[consumer][1](graph, frames))
    # a dict of trains, as simulate_nir takes
    both = run_in_consumer(export, {name: train}, {name: vth}, consumer=consumer)
    np.testing.assert_array_equal(both[name], got)


def test_run_in_consumer_resets_snntorch_where_a_bare_loop_leaks(default_exports, sample):
    """The silent 0.4-9x error of snnTorch's leaky IF is impossible through the helper."""
    export = default_exports["bitwise"]
    name = next(iter(export.graphs))
    counts, vth, w, s, b = sample[name]
    train = sc.encode(counts, "bitwise", export.index["T"])
    want = sc.spike_linear(train, w, s, vth, b).output
    got = run_in_consumer(export, train, vth, consumer="snntorch", projection=name)
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * float(np.abs(want).max()))
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(export.graphs[name])  # the loop a user would write
    frames = nir_frames(train, export.graphs[name])
    for t in range(train.T):
        (_, membrane), _ = net(torch.from_numpy(frames[t]))
    naive = nir_readout(membrane.detach().numpy(), vth, export.graphs[name], train.zero_point)
    assert not np.allclose(naive, want, rtol=0.05)


def test_run_in_consumer_refuses_what_it_cannot_run(default_exports, sample, tmp_path):
    export = default_exports["ternary"]
    name = next(iter(export.graphs))
    graph = export.graphs[name]
    counts, vth, *_ = sample[name]
    train = sc.encode(counts, "ternary", export.index["T"])
    with pytest.raises(sc.SpikecodeError, match="consumer must be one of"):
        run_in_consumer(graph, train, vth, consumer="lava")
    with pytest.raises(sc.SpikecodeError, match="rockpool runs the LI form"):
        run_in_consumer(graph, train, vth, consumer="rockpool")
    with pytest.raises(sc.SpikecodeError, match="frames must be"):
        consumer_membrane(graph, nir_frames(train, graph)[:, :, 1:], "snntorch")
    slow = nir_graph((sample[name][2], sample[name][3]), scheme="ternary", T=train.T, dt=0.5)
    with pytest.raises(sc.SpikecodeError, match="dt = 1"):
        run_in_consumer(slow, train, vth, consumer="sinabs")
    with pytest.raises(sc.SpikecodeError, match="T="):
        run_in_consumer(graph, sc.encode(counts, "ternary", train.T + 1), vth, consumer="spyx")


def test_run_in_consumer_says_a_missing_consumer_is_missing(monkeypatch, default_exports, sample):
    from spikecode.exporters.nir import consumers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        consumers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "spyx" else real(name, *a),
    )
    export = default_exports["ternary"]
    name = next(iter(export.graphs))
    counts, vth, *_ = sample[name]
    train = sc.encode(counts, "ternary", export.index["T"])
    with pytest.raises(sc.SpikecodeError, match="spyx is not installed"):
        run_in_consumer(export, train, vth, consumer="spyx", projection=name)


# --------------------------------------------------------------------------- float32 range


def _wide(scheme, T, n_in, lo, seed=0):
    """Weights and counts whose accumulators pass 2^24 (odd values: float32 rounds them)."""
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((4, n_in)) < 0.5, 127, 125).astype(np.int8)
    counts = rng.integers(lo, 2**T - 1 if scheme == "bitwise" else 2, size=(3, n_in))
    return w, np.ones(4), sc.encode(counts, scheme, T)


@pytest.mark.parametrize(
    ("case", "wrong"),
    [
        # accumulators near 2^31, one step's sum w_t · (< 2^13): exact in float32
        (("bitwise", 20, 64, 2**18), {"norse", "spyx", "rockpool"}),
        # one step's sum past 2^24 (a group's Σ|W_q| > 2^24, odd): every consumer rounds
        (("ternary", 1, 2**17 + 2**12 + 1, 1), {"snntorch", "norse", "sinabs", "spyx", "rockpool"}),
    ],
    ids=["sum-past-2^24", "step-past-2^24"],
)
def test_the_float32_warning_names_exactly_the_consumers_that_go_wrong(case, wrong):
    w, s, train = _wide(*case)
    want = sc.spike_linear(train, w, s, 1.0).accumulator.reshape(3, 4)
    assert np.abs(want).max() > 2**24
    for consumer, form in FORMS.items():
        if importlib.util.find_spec(CONSUMERS[consumer][0].split(".")[0]) is None:
            continue
        with pytest.warns(Float32Warning) as caught:
            graph = nir_graph((w, s), scheme=train.scheme, T=train.T, integrator=form)
        named = str(caught[0].message).split(" will round")[0]
        display = {"snntorch": "snnTorch", "norse": "Norse", "sinabs": "Sinabs"}
        assert (display.get(consumer, consumer.capitalize()) in named) == (consumer in wrong)
        frames = nir_frames(train, graph)
        if consumer in wrong:
            with pytest.warns(Float32Warning, match=consumer):
                membrane = consumer_membrane(graph, frames, consumer)
        else:
            membrane = consumer_membrane(graph, frames, consumer)
        exact = np.array_equal(membrane + train.zero_point * w.sum(axis=1, dtype=np.int64), want)
        assert exact == (consumer not in wrong), consumer


# --------------------------------------------------------------------------- install


def _fake_samna(folder, text):
    (folder / "samna").mkdir()
    (folder / "samna" / "__init__.py").write_text(text)


def test_the_samna_installer_stub_is_blocked_before_a_consumer_imports_it(tmp_path, monkeypatch):
    """PyPI's samna runs pip when imported: run_in_consumer marks it missing unread."""
    from spikecode.exporters.nir.consumers import _block_samna_stub

    _fake_samna(tmp_path, "PYPI_SAMNA = True\nraise RuntimeError('the stub ran pip')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samna", raising=False)  # conftest's own block
    _block_samna_stub()
    assert sys.modules["samna"] is None
    with pytest.raises(ImportError):
        import samna  # noqa: F401


def test_a_real_samna_is_left_alone(tmp_path, monkeypatch):
    from spikecode.exporters.nir.consumers import _block_samna_stub

    _fake_samna(tmp_path, "raise RuntimeError('never imported by the check')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samna", raising=False)
    _block_samna_stub()
    assert "samna" not in sys.modules


def _extra(name):
    from pathlib import Path

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] if name is None else project["optional-dependencies"][name]
    return {Requirement(d).name: Requirement(d) for d in deps if not d.startswith("spikecode")}


def test_the_pins_exclude_the_versions_that_break_the_exports():
    """nir 1.0.4/1.0.5 cannot read or write IF with v_reset; sinabs >= 2.0 depends on
    PyPI's samna stub; rockpool's [nir] extra pins nir <= 1.0.4."""
    nir_pin = _extra(None)["nir"].specifier
    assert not nir_pin.contains("1.0.5") and not nir_pin.contains("1.0.4")
    assert nir_pin.contains("1.0.6") and nir_pin.contains("1.0.8")
    consumers = _extra("nir-consumers")
    assert "samna" not in consumers and "samna" not in _extra("test")
    sinabs = consumers["sinabs"].specifier
    assert sinabs.contains("1.2.10")  # from_nir, no samna requirement
    assert not any(sinabs.contains(v) for v in ("2.0.0", "2.0.3", "3.1.3"))
    assert not consumers["rockpool"].extras  # rockpool[nir] would pin nir <= 1.0.4
