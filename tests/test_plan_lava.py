"""The plan's counting against the Lava network's own resource use (issue 18 item 5).

``spikecode export lava`` writes, per projection, the neurons (Sigma integrators),
synapses and Dense processes of the network it builds (``index.json``); the plan of the
same checkpoint, k and T must count the same. No Lava run is needed: the index records
what the runner builds.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from spikecode.calibration import calibrate, save_stats
from spikecode.cli import main
from spikecode.models.checkpoint import load_checkpoint
from spikecode.plan import deployment_plan, signed_bits
from spikecode.testing import write_tiny_gla_swa_checkpoint

#: One projection of one scale group (in = 128) and one of two (in = 256, W8ASpike scales).
NAMES = ("model.layers.0.attn.q_proj", "model.layers.0.mlp.down_proj")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("lava") / "tiny", w8aspike=True, with_tokenizer=True
    )
    stats = calibrate(
        load_checkpoint(folder),
        ["hello world spike", "the model token count"],
        k=(3.0,),
        schemes=("ternary",),
        batch_size=2,
    )
    path = folder.parent / "stats.json"
    save_stats(path, stats)
    plan = deployment_plan(folder, stats=path, k=3.0, scheme="ternary", target="loihi2")
    return folder, {p.projection.name: p for p in plan.model.projections}


@pytest.mark.parametrize("name", NAMES)
def test_plan_counts_what_the_lava_export_builds(planned, tmp_path, name):
    folder, plans = planned
    p = plans[name]
    T = p.activity.T
    out = tmp_path / "lava"
    result = CliRunner().invoke(
        main,
        ["export", "lava", str(folder), "--include", name, "--scheme", "ternary", "--k", "3",
         "--T", str(T), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    index = json.loads((out / "index.json").read_text())
    (lava,) = index["projections"]
    assert lava["name"] == name and index["T"] == T
    assert (lava["in_features"], lava["out_features"]) == (
        p.projection.in_features,
        p.projection.out_features,
    )
    assert lava["scale_groups"] == p.projection.groups
    assert lava["neurons"] == p.neurons  # one Sigma per output and scale group
    assert lava["synapses"] == p.synapses  # Dense weights, every column of its group
    assert lava["blocks"] == p.dense_processes  # one Dense per scale group
    assert index["weight_bits"] == p.memory_bits // p.synapses == 8
    # widths: the export bounds the accumulator with the real weights and the code's reach
    # at T (ternary: T = max |c|); the plan, reading no weight, with |W_q| = 127.
    assert lava["accumulator_bits"] <= p.accumulator_bits == signed_bits(127 * p.fan_in * T)
