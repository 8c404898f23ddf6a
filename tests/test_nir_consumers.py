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

import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spikecode as sc
from spikecode.cli import main
from spikecode.data import load_sample, load_sample_weights
from spikecode.exporters.nir import export_nir, load_nir, nir_frames, nir_readout, simulate_nir

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


@pytest.fixture(scope="module")
def default_exports(tmp_path_factory):
    """`spikecode export nir --scheme S` of the bundled sample, every code."""
    folder = tmp_path_factory.mktemp("nir")
    out = {}
    for scheme in sc.SCHEMES:
        path = folder / scheme
        result = CliRunner().invoke(
            main, ["export", "nir", "--out", str(path), "--scheme", scheme, "--k", str(K)]
        )
        assert result.exit_code == 0, result.output
        out[scheme] = load_nir(path)
    return out


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
@pytest.mark.parametrize("consumer", ["sinabs", "norse"])
def test_other_forms_in_a_consumer_and_in_simulate_nir(tmp_path, sample, consumer, scheme, options):
    _consumer(CONSUMERS[consumer][0], REASONS[consumer])
    name = next(iter(sample))
    counts, vth, w, s, b = sample[name]
    counts, vth = counts[:8], vth[:8]
    train = sc.encode(counts, scheme)
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
    np.testing.assert_allclose(simulate_nir(path, train, vth), want, rtol=1e-12, atol=1e-12 * scale)


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


def test_rockpool_cannot_express_the_integrator(default_exports):
    """Rockpool 3.1 converts no IF or I node (documented; this pins it)."""
    _consumer("rockpool.nn.modules.torch.nir", "rockpool is not installed")
    from rockpool.nn.modules.torch.nir import from_nir

    graph = next(iter(default_exports["ternary"].graphs.values()))
    with pytest.raises(NotImplementedError, match="IF"):
        from_nir(graph)
