"""Data-parallel calibration and exact merges of stats files against one process."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_moe_calibration import TEXTS as MOE_CALIBRATION_TEXTS

import spikecode
from spikecode.calibration import (
    CalibrationData,
    calibrate,
    load_calibration_data,
    load_stats,
    merge_stats,
    save_stats,
)
from spikecode.calibration import distributed as parallel
from spikecode.cli import main
from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import load_checkpoint
from spikecode.testing import (
    stats_differences,
    write_tiny_gla_swa_checkpoint,
    write_tiny_moe_checkpoint,
)

SETTINGS = {"k": (2.0, 3.0), "schemes": ("bitwise-bidirectional", "bitwise-twos-complement")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", with_tokenizer=True
    )


@pytest.fixture(scope="module")
def tiny(folder):
    return load_checkpoint(folder)


@pytest.fixture(scope="module")
def texts():
    return load_calibration_data(None, 6)


@pytest.fixture(scope="module")
def one_process(tiny, texts):
    return calibrate(tiny, texts, batch_size=2, **SETTINGS)


def assert_same(expected, got, *, skip=("created",)):
    """Integers (and strings) identical; floats within the documented tolerances."""
    assert stats_differences(expected, got, skip=skip) == []


def simulated_ranks(monkeypatch, world, run):
    """Run ``run()`` as each rank of ``world`` in turn; return their exchanged payloads."""
    payloads = []

    class Sent(Exception):
        pass

    def exchange(payload):
        payloads.append(payload)
        raise Sent

    monkeypatch.setattr(parallel, "exchange", exchange)
    for rank in range(world):
        monkeypatch.setattr(parallel, "active", lambda _, rank=rank: (rank, world))
        with pytest.raises(Sent):
            run()
    monkeypatch.undo()
    return payloads


# --------------------------------------------------------------------------- data parallel


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_reduce_equals_one_process(monkeypatch, tiny, texts, one_process, world):
    # 6 samples in batches of 2: 3 batches; with 4 ranks one rank gets no batch.
    payloads = simulated_ranks(
        monkeypatch, world, lambda: calibrate(tiny, texts, batch_size=2, **SETTINGS)
    )
    assert len(payloads) == world
    assert sum(1 for p in payloads if p) == min(world, 3)
    reduced = parallel.reduce_stats(payloads, one_process.data)
    assert_same(one_process.to_dict(), reduced.to_dict())
    assert reduced.spikecode_version == spikecode.__version__


def test_every_rank_sees_a_failure(tiny):
    ok = parallel.encode(None)
    failed = parallel.encode(None, SpikecodeError("NaN in layer x"))
    data = load_calibration_data(None, 2)
    with pytest.raises(SpikecodeError, match="failed on rank 1: SpikecodeError: NaN in layer x"):
        parallel.reduce_stats([ok, failed], data)
    with pytest.raises(SpikecodeError, match="no rank calibrated"):
        parallel.reduce_stats([ok, ok], data)


def test_a_failing_rank_still_joins_the_exchange(monkeypatch, tiny, texts):
    from spikecode.calibration import run

    def boom(*args):
        raise SpikecodeError("boom")

    sent = []
    monkeypatch.setattr(parallel, "exchange", lambda payload: sent.append(payload) or [payload])
    monkeypatch.setattr(parallel, "active", lambda _: (0, 2))
    monkeypatch.setattr(run, "_forward", boom)
    with pytest.raises(SpikecodeError, match="boom"):
        calibrate(tiny, texts, batch_size=2, **SETTINGS)
    assert len(sent) == 1
    with pytest.raises(SpikecodeError, match="calibration failed on rank 0: SpikecodeError: boom"):
        parallel.reduce_stats([sent[0], b""], texts)


def test_distributed_true_needs_a_process_group(tiny, texts):
    with pytest.raises(SpikecodeError, match="initialized torch.distributed process group"):
        calibrate(tiny, texts, batch_size=2, distributed=True, **SETTINGS)
    assert parallel.active(None) is None and parallel.active(False) is None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_equal_one(folder, one_process, tmp_path):
    """Two gloo processes on the loopback interface, through the CLI, as users run it."""
    out = tmp_path / "two.json"
    root = Path(spikecode.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "spikecode",
        "calibrate",
        str(folder),
        "--samples",
        "6",
        "--batch-size",
        "2",
        "--k",
        "2,3",
        "--scheme",
        SETTINGS["schemes"][0],
        "--scheme",
        SETTINGS["schemes"][1],
        "--format",
        "json",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # one report: rank 0's
    assert printed["processes"] == 2 and printed["samples"] == 6
    two = load_stats(out)
    assert_same(one_process.to_dict(), two.to_dict())
    assert two.checkpoint.path == str(folder)


# --------------------------------------------------------------------------- merging


@pytest.fixture(scope="module")
def parts(tiny, texts):
    """Three disjoint sample sets and their union, one sample per batch."""
    chunks = [texts.texts[:3], texts.texts[3:5], texts.texts[5:]]
    stats = [
        calibrate(tiny, CalibrationData.from_texts(c, f"part{i}"), batch_size=1, **SETTINGS)
        for i, c in enumerate(chunks)
    ]
    union = calibrate(
        tiny, CalibrationData.from_texts(texts.texts, "all"), batch_size=1, **SETTINGS
    )
    return stats, union


def test_merge_equals_the_union(parts):
    (a, b, c), union = parts
    merged = merge_stats([a, b, c])
    assert merged.data.source == "part0 + part1 + part2"
    assert_same(union.to_dict(), merged.to_dict(), skip=("created", "source"))


def test_merge_is_associative_and_commutative(parts):
    (a, b, c), _ = parts
    reference = merge_stats([a, b, c]).to_dict()
    for other in (
        merge_stats([merge_stats([a, b]), c]),
        merge_stats([a, merge_stats([b, c])]),
        merge_stats([c, a, b]),
        merge_stats([merge_stats([c, b]), a]),
    ):
        assert_same(reference, other.to_dict(), skip=("created", "source"))


def test_merge_of_saved_files_through_the_cli(parts, tmp_path):
    (a, b, c), union = parts
    files = [
        save_stats(tmp_path / f"{name}.json", s)[0]
        for name, s in zip("abc", (a, b, c), strict=True)
    ]
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(main, ["merge-stats", *map(str, files), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 samples" in result.output
    assert_same(union.to_dict(), load_stats(out).to_dict(), skip=("created", "source"))
    assert out.with_suffix(".csv").is_file()


def test_outliers_beyond_the_file_range_merge_exactly():
    # Counts far beyond ±64 (one huge value per row) and T growing with the merge.
    import torch
    from torch import nn

    from spikecode.calibration import LayerAccumulator, merge_layer_stats

    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(40, 128, generator=gen)
    rows[:, 5] = torch.linspace(-40, 40, 40)
    rows[-1, 7] = 5000.0  # only in the second part: the merge needs a larger T
    layer = nn.Linear(128, 8)

    def result(x):
        acc = LayerAccumulator(
            "l", 128, 8, (2.0, 4.0), schemes=SETTINGS["schemes"], layer=layer, error_rows=None
        )
        acc.update(x)
        return acc.result()

    whole = result(rows)
    low, high = result(rows[:13]), result(rows[13:])
    assert whole.by_k["4"].count_histogram.outliers
    assert (
        low.by_k["4"].schemes[SETTINGS["schemes"][0]].T
        < whole.by_k["4"].schemes[SETTINGS["schemes"][0]].T
    )
    merged = merge_layer_stats([low, high], SETTINGS["schemes"], 3, (16, 64, 256))
    assert_same(whole.to_dict(), merged.to_dict())


# --------------------------------------------------------------------------- refusals


def _v1(stats):
    layers = tuple(
        dataclasses.replace(
            layer,
            output_sq_norm=None,
            by_k={
                key: dataclasses.replace(
                    entry,
                    output_sq_error=None,
                    count_histogram=dataclasses.replace(entry.count_histogram, outliers=None),
                )
                for key, entry in layer.by_k.items()
            },
        )
        for layer in stats.layers
    )
    return dataclasses.replace(stats, layers=layers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_v1, "b is a version 1 stats file: it lacks the full count histograms"),
        (lambda s: dataclasses.replace(s, k=(2.0, 3.5)), "different k values"),
        (lambda s: dataclasses.replace(s, schemes=("ternary",)), "different codes"),
        (lambda s: dataclasses.replace(s, window=4), "different window"),
        (lambda s: dataclasses.replace(s, block_sizes=(16,)), "different block sizes"),
        (lambda s: dataclasses.replace(s, error_rows=3), "different error_rows"),
        (lambda s: dataclasses.replace(s, error_stride=7), "different error_stride"),
        (lambda s: dataclasses.replace(s, spikecode_version="9.9"), "different spikecode version"),
        (
            lambda s: dataclasses.replace(
                s, checkpoint=dataclasses.replace(s.checkpoint, path="/x")
            ),
            "different checkpoint path",
        ),
        (
            lambda s: dataclasses.replace(
                s, checkpoint=dataclasses.replace(s.checkpoint, dtype="float32")
            ),
            "different dtype",
        ),
        (
            lambda s: dataclasses.replace(
                s, checkpoint=dataclasses.replace(s.checkpoint, kind="hf")
            ),
            "different checkpoint kind",
        ),
        (
            lambda s: dataclasses.replace(
                s, data=dataclasses.replace(s.data, max_length=s.data.max_length + 1)
            ),
            "different max_length",
        ),
        (lambda s: dataclasses.replace(s, layers=s.layers[1:]), "different layers"),
    ],
)
def test_refused_merges(parts, change, message):
    (a, b, _), _ = parts
    with pytest.raises(SpikecodeError, match=message):
        merge_stats([a, change(b)], labels=["a", "b"])


def test_refused_merge_arguments(parts, tmp_path):
    (a, _, _), _ = parts
    with pytest.raises(SpikecodeError, match="at least one"):
        merge_stats([])
    with pytest.raises(SpikecodeError, match="CalibrationStats"):
        merge_stats([a, a.to_dict()])
    with pytest.raises(SpikecodeError, match="one label per part"):
        merge_stats([a, a], labels=["x"])
    saved = save_stats(tmp_path / "a.json", a)[0]
    old = save_stats(tmp_path / "old.json", _v1(a))[0]
    assert json.loads(old.read_text())["version"] == 1
    runner = CliRunner()
    for args, expected in (
        ([str(saved)], "at least two"),
        ([str(saved), str(saved), "--out", "x.txt"], "--out must name a .json"),
        ([str(saved), str(old), "--out", str(saved)], "must not be one of the input"),
        ([str(saved), str(old), "--out", str(tmp_path / "m.json")], "version 1 stats file"),
        ([str(saved), str(tmp_path / "none.json"), "--out", str(tmp_path / "m.json")], "not found"),
    ):
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "m.json")]
        result = runner.invoke(main, ["merge-stats", *args])
        assert result.exit_code == 1, result.output
        assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.json").exists()


def test_init_from_env_outside_and_inside_torchrun(monkeypatch):
    import torch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel.init_from_env("cpu") == (None, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert parallel.init_from_env(None) == (None, None)
    if not torch.cuda.is_available():
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(SpikecodeError, match="CUDA is not available"):
            parallel.init_from_env("cuda")


def test_merge_refuses_the_same_run_twice(parts, tmp_path):
    (a, b, c), _ = parts
    assert len({a.runs, b.runs, c.runs}) == 3  # every calibration its own run id
    ab = merge_stats([a, b])
    assert ab.runs == tuple(sorted(a.runs + b.runs))  # the identity survives merges
    for inputs, labels in (
        ([a, a], ["a.json", "copy.json"]),
        ([ab, b], ["ab.json", "b.json"]),
        ([ab, merge_stats([b, c])], ["ab.json", "bc.json"]),
    ):
        with pytest.raises(SpikecodeError, match="same calibration run") as err:
            merge_stats(inputs, labels=labels)
        assert labels[0] in str(err.value) and labels[1] in str(err.value)
    # Through the CLI: the same file under two names, one line, nothing written.
    first = save_stats(tmp_path / "a.json", a)[0]
    copy = tmp_path / "copy.json"
    copy.write_bytes(first.read_bytes())
    out = tmp_path / "m.json"
    result = CliRunner().invoke(main, ["merge-stats", str(first), str(copy), "--out", str(out)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "same calibration run" in result.output and "copy.json" in result.output
    assert not out.exists()


def test_files_without_run_ids_are_one_run_per_content(parts, tmp_path):
    (a, b, c), _ = parts
    old_a, old_b = (dataclasses.replace(s, runs=()) for s in (a, b))
    merged = merge_stats([old_a, old_b])  # different contents: two runs
    assert len(merged.runs) == 2
    with pytest.raises(SpikecodeError, match="same calibration run"):
        merge_stats([old_a, dataclasses.replace(a, runs=())], labels=["x", "y"])
    with pytest.raises(SpikecodeError, match="same calibration run"):
        merge_stats([merged, old_a], labels=["x", "y"])  # the content id is kept
    merge_stats([merged, c])


def test_merge_refuses_different_bins(parts):
    (a, b, _), _ = parts

    def with_entries(stats, change):
        layer = stats.layers[0]
        key = next(iter(layer.by_k))
        by_k = {**layer.by_k, key: change(layer.by_k[key])}
        return dataclasses.replace(
            stats, layers=(dataclasses.replace(layer, by_k=by_k), *stats.layers[1:])
        )

    edges = with_entries(
        b,
        lambda e: dataclasses.replace(
            e, vth=dataclasses.replace(e.vth, edges=tuple(x * 2 for x in e.vth.edges))
        ),
    )
    with pytest.raises(SpikecodeError, match="different Vth histogram edges: a and b"):
        merge_stats([a, edges], labels=["a", "b"])
    shifted = with_entries(
        b,
        lambda e: dataclasses.replace(
            e, count_histogram=dataclasses.replace(e.count_histogram, offset=-63)
        ),
    )
    with pytest.raises(SpikecodeError, match="different count histogram bins: a and b"):
        merge_stats([a, shifted], labels=["a", "b"])
    # In memory, an absurd offset is refused before the merge rebuilds its bins.
    far = with_entries(
        b,
        lambda e: dataclasses.replace(
            e, count_histogram=dataclasses.replace(e.count_histogram, offset=-(2**40))
        ),
    )
    with pytest.raises(SpikecodeError, match="b has a count histogram over 129 bins"):
        merge_stats([far, far], labels=["b", "c"])


def test_merge_refuses_absurd_offsets_before_allocating(parts, tmp_path):
    (a, b, _), _ = parts
    first = save_stats(tmp_path / "a.json", a)[0]
    second = save_stats(tmp_path / "b.json", b)[0]
    raw = json.loads(second.read_text())
    raw["layers"][0]["by_k"]["2"]["count_histogram"]["offset"] = -(2**40)
    second.write_text(json.dumps(raw))
    out = tmp_path / "m.json"
    result = CliRunner().invoke(main, ["merge-stats", str(first), str(second), "--out", str(out)])
    assert result.exit_code == 1
    assert "offset' must be -64" in result.output and "Traceback" not in result.output
    assert not out.exists()


# --------------------------------------------------------------------------- MoE parts

# Tiny MoE model (4 experts, top-1): with the MoE calibration tests' texts, one sample per
# batch, the MoE layer below routes the first shard to experts 1 and 3 and the second to
# experts 2 and 3; expert 0 gets no token at all (the fixture asserts it).
MOE_TEXTS = MOE_CALIBRATION_TEXTS
MOE_SHARDS = ([0, 4], [1, 2, 3, 5])
MOE = "model.layers.1.mlp"


def reached(stats, moe=MOE):
    """The experts of ``moe`` that received tokens, from the routing and from the layers."""
    routing = next(r for r in stats.routing if r.layer == moe)
    by_routing = {e for e, n in enumerate(routing.expert_tokens) if n}
    by_layers = {routing.expert_of(x.name) for x in stats.layers} - {None}
    assert by_routing == by_layers
    return by_routing


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory):
    folder = write_tiny_moe_checkpoint(
        tmp_path_factory.mktemp("moe") / "tiny", with_tokenizer=True, num_experts=4
    )
    return load_checkpoint(folder, dtype="float32")


@pytest.fixture(scope="module")
def moe_parts(moe_model):
    """Two shards that reach different experts, and one calibration of their union."""

    def run(texts, source):
        data = CalibrationData.from_texts(texts, source)
        return calibrate(moe_model, data, batch_size=1, **SETTINGS)

    a, b = (
        run([MOE_TEXTS[i] for i in shard], n) for shard, n in zip(MOE_SHARDS, "ab", strict=True)
    )
    union = run(MOE_TEXTS, "all")
    assert reached(a) == {1, 3} and reached(b) == {2, 3} and reached(union) == {1, 2, 3}
    return a, b, union


def test_routed_expert_layers():
    routing = spikecode.calibration.records.RoutingStats(MOE, 4, 1, 2, (1, 0, 1, 0))
    assert routing.expert_of(f"{MOE}.experts.2.up_proj") == 2
    assert routing.expert_of(f"{MOE}.experts.0.gate_proj") == 0
    for other in (
        f"{MOE}.experts.4.up_proj",  # no such expert
        f"{MOE}.experts.02.up_proj",
        f"{MOE}.experts.+2.up_proj",
        f"{MOE}.experts.2",
        f"{MOE}.experts.2.",
        f"{MOE}.shared_experts.0.up_proj",
        f"{MOE}.router",
        "model.layers.11.mlp.experts.2.up_proj",  # another layer's
    ):
        assert routing.expert_of(other) is None, other


def test_merge_of_parts_that_reach_different_experts_equals_the_union(moe_parts):
    a, b, union = moe_parts
    for parts in ([a, b], [b, a]):
        merged = merge_stats(parts)
        assert_same(union.to_dict(), merged.to_dict(), skip=("created", "source"))
    # The union's layers, routing and totals follow: what one process has, the merge has.
    names = [x.name for x in merged.layers]
    assert f"{MOE}.experts.1.up_proj" in names and f"{MOE}.experts.2.up_proj" in names
    assert not any(name.startswith(f"{MOE}.experts.0.") for name in names)  # reached by none
    for routing in merged.routing:
        for e, n in enumerate(routing.expert_tokens):
            layers = [x for x in merged.layers if routing.expert_of(x.name) == e]
            assert [x.tokens for x in layers] == [n] * (3 if n else 0)


def test_merge_stats_cli_of_parts_that_reach_different_experts(moe_parts, tmp_path):
    a, b, union = moe_parts
    files = [
        str(save_stats(tmp_path / f"{n}.json", s)[0]) for n, s in zip("ab", (a, b), strict=True)
    ]
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(main, ["merge-stats", *files, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert_same(union.to_dict(), load_stats(out).to_dict(), skip=("created", "source"))


def test_reduce_of_ranks_that_reach_different_experts(monkeypatch, moe_model, moe_parts):
    a, b, union = moe_parts
    payloads = [parallel.encode(a), b"", parallel.encode(b)]
    assert_same(union.to_dict(), parallel.reduce_stats(payloads, union.data).to_dict())
    # Real shards: three ranks, one sample per batch, each reaching other experts.
    data = CalibrationData.from_texts(MOE_TEXTS, "all")
    payloads = simulated_ranks(
        monkeypatch, 3, lambda: calibrate(moe_model, data, batch_size=1, **SETTINGS)
    )
    routed = [
        next(r["expert_tokens"] for r in json.loads(p)["routing"] if r["layer"] == MOE)
        for p in payloads
    ]
    assert len({tuple(n > 0 for n in counts) for counts in routed}) == 3, routed
    assert_same(union.to_dict(), parallel.reduce_stats(payloads, union.data).to_dict())


def _without(stats, *names):
    return dataclasses.replace(stats, layers=tuple(x for x in stats.layers if x.name not in names))


def _moved(stats, name, before):
    """``stats`` with layer ``name`` listed just before layer ``before``."""
    layers = [x for x in stats.layers if x.name != name]
    at = next(i for i, x in enumerate(layers) if x.name == before)
    layers.insert(at, stats.layer(name))
    return dataclasses.replace(stats, layers=tuple(layers))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Layers that are no routed expert's must be in every part, whatever their name.
        (
            lambda s: _without(s, f"{MOE}.shared_experts.0.up_proj"),
            "different layers: a and b",
        ),
        (lambda s: _without(s, f"{MOE}.router"), "different layers: a and b"),
        (lambda s: _without(s, "model.layers.0.mlp.down_proj"), "different layers: a and b"),
        # b routed tokens to expert 3 (so did a): its projections cannot be missing from b.
        (
            lambda s: _without(s, *(f"{MOE}.experts.3.{p}" for p in ("up_proj", "down_proj"))),
            rf"cannot merge b: it has no layer '{MOE}.experts.3.up_proj' although its routing "
            r"sends 15 tokens to expert 3 of 'model.layers.1.mlp' \(a has the layer\)",
        ),
        # Expert 3 (in both parts) listed before expert 2, or its projections reordered.
        (
            lambda s: _moved(s, f"{MOE}.experts.3.gate_proj", f"{MOE}.experts.2.gate_proj"),
            "cannot merge b: its routed experts' projections are not in model order",
        ),
        (
            lambda s: _moved(s, f"{MOE}.experts.3.up_proj", f"{MOE}.experts.3.gate_proj"),
            f"place layer '{MOE}.experts.3.up_proj' differently: a and b",
        ),
    ],
    ids=[
        "shared expert",
        "router",
        "dense layer",
        "routed expert absent",
        "experts reordered",
        "projections reordered",
    ],
)
def test_refused_moe_merges(moe_parts, change, message):
    a, b, _ = moe_parts
    merge_stats([a, b], labels=["a", "b"])
    with pytest.raises(SpikecodeError, match=message):
        merge_stats([a, change(b)], labels=["a", "b"])
