"""Both recipes and decode-time calibration from the CLI, on a tiny released W8ASpike checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from clitools import run

from spikecode.calibration import calibrate, evaluate, load_stats, save_stats
from spikecode.cli import main
from spikecode.models.checkpoint import load_checkpoint
from spikecode.nn import recipe_targets, swap_linears
from spikecode.testing import write_tiny_gla_swa_checkpoint

TEXTS = ["hello spiking brain model", "the token count linear attention", "hello world"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The release layout: sharded bf16 W8ASpike weights with scales and a tokenizer."""
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "release", w8aspike=True, with_tokenizer=True
    )


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe", ["all-linear", "release"])
def test_evaluate_both_recipes(released, texts, recipe):
    result = run(
        "evaluate", released, "--data", texts, "--samples", 3, "--k", 3,
        "--recipe", recipe, "--dtype", "float32", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recipe"] == recipe
    loaded = load_checkpoint(released, dtype=torch.float32)
    spiked = [t for t in recipe_targets(loaded.model, recipe) if t.role == "spike"]
    assert report["layers"] == len(spiked)
    # The spiked perplexity is the one of the model swapped by hand with that recipe.
    swap_linears(loaded.model, 3.0, recipe=recipe, scales=loaded.quant_scales)
    total, count = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
            logits = loaded.model(ids).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    assert math.isclose(report["rows"][0]["metric"], math.exp(total / count), rel_tol=1e-6)
    table = run("evaluate", released, "--data", texts, "--samples", 3, "--k", 3, "--recipe", recipe)
    assert table.exit_code == 0, table.output
    assert f"recipe {recipe}:" in table.output
    assert ("mlp.down_proj (float" in table.output) == (recipe == "release")


def test_release_and_all_linear_differ(released, texts):
    loaded = load_checkpoint(released, dtype=torch.float32)
    rows = {
        r: evaluate(loaded, TEXTS, k=[3.0], recipe=r).rows[0] for r in ("all-linear", "release")
    }
    assert rows["all-linear"].metric != rows["release"].metric
    assert rows["release"].layers == rows["all-linear"].layers - 4 + 2  # -down_proj, +q sites


def test_calibrate_release_over_generated_tokens(released, texts, tmp_path):
    out = tmp_path / "decode.json"
    result = run(
        "calibrate", released, "--data", texts, "--samples", 3, "--k", "2 3",
        "--recipe", "release", "--generate", 4, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = load_stats(out)
    prompt = stats.data.tokens
    assert f"12 generated tokens measured (4 decode steps per sample) after {prompt} " in (
        result.output
    )
    summary = json.loads(
        run(
            "calibrate", released, "--data", texts, "--samples", 3, "--k", "3",
            "--recipe", "release", "--generate", 2, "--format", "json",
        ).output
    )  # fmt: skip
    assert (summary["tokens"], summary["generated_tokens"]) == (6, 6)
    assert summary["prompt_tokens"] == prompt
    assert (stats.recipe.name, stats.recipe.generate) == ("release", 4)
    names = [layer.name for layer in stats.layers]
    assert not any(name.endswith("down_proj") for name in names)
    assert "model.layers.1.attn.q_act" in names
    heads = 4
    for layer in stats.layers:
        expected = 3 * 4 * (heads if layer.name.endswith("q_act") else 1)
        assert layer.tokens == expected, layer.name  # one token per sample and step
    report = run("report", "energy", out)
    assert report.exit_code == 0, report.output
    assert "per generated token" in report.output
    assert "generated tokens (4 decode steps per sample" in report.output
    assert "mlp.down_proj and the attention scores" in report.output


def test_decode_counts_equal_the_decode_steps_inputs(released):
    # The hooks see exactly the inputs of the decode steps: recompute the first
    # projection's input for every generated token with an uncached forward pass.
    loaded = load_checkpoint(released, dtype=torch.float64)
    stats = calibrate(loaded, TEXTS[:1], k=[3.0], generate=3, include="*layers.0.attn.q_proj")
    ids = torch.tensor([loaded.tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        for _ in range(4):
            nxt = loaded.model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    rows = []
    layer = loaded.model.model.layers[0]
    handle = layer.attn.q_proj.register_forward_pre_hook(lambda m, a: rows.append(a[0]))
    with torch.no_grad():
        loaded.model(ids)
    handle.remove()
    decoded = rows[0][0, -4:-1]  # inputs of the 3 decode steps (the last token is never fed)
    from spikecode.nn.functional import adaptive_counts

    counts, _ = adaptive_counts(decoded, 3.0)
    entry = stats.layers[0].by_k["3"]
    assert stats.layers[0].tokens == 3
    hist = entry.count_histogram
    for value in range(-5, 6):
        assert hist.counts[value - hist.offset] == int((counts == value).sum())


def test_old_stats_files_read_as_all_linear_prompts(released, tmp_path):
    loaded = load_checkpoint(released, dtype=torch.float32)
    stats = calibrate(loaded, TEXTS, k=[3.0])
    path, _ = save_stats(tmp_path / "s.json", stats)
    raw = json.loads(path.read_text())
    assert raw["recipe"] == {"name": "all-linear", "generate": None}
    del raw["recipe"]
    path.write_text(json.dumps(raw))
    old = load_stats(path)
    assert (old.recipe.name, old.recipe.generate) == ("all-linear", None)
    raw["recipe"] = {"name": "paper", "generate": None}
    path.write_text(json.dumps(raw))
    with pytest.raises(Exception, match="recipe.name"):
        load_stats(path)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--generate", 0), "generate must be a positive"),
        (("--recipe", "paper"), "Invalid value for '--recipe'"),
    ],
)
def test_bad_options(released, texts, args, fragment):
    result = CliRunner().invoke(
        main, ["calibrate", str(released), "--data", str(texts), *map(str, args)]
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert fragment in result.output
