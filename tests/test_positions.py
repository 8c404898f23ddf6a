"""Rotary positions under padding: position_ids, generate() and batched calibration.

The release's window layers take the q spikes and the INT8 keys after the rotary
embedding, so under the ``release`` recipe a row's output depends on its absolute
positions. A left-padded row must get the positions it has alone (the cumulative sum of
the mask, as the release's ``generate()`` derives them).
"""

from __future__ import annotations

import pytest
import torch
from test_generation import make_model as generation_model

from spikecode.calibration import calibrate
from spikecode.errors import SpikecodeError
from spikecode.models import load_checkpoint
from spikecode.models.inputs import left_align, positions_from_mask
from spikecode.testing import stats_differences, write_tiny_gla_swa_checkpoint

RECIPES = [None, "all-linear", "release"]


def make_model(recipe=None, seed=0):
    # test_generation's tiny model, cut to one GLA and one window layer
    return generation_model(recipe, seed, num_hidden_layers=2, sliding_window=4, attn_layers=(1,))


PROMPTS = [[5, 9, 3, 7, 1, 2, 8], [4, 6, 11], [12, 13, 14, 15, 16]]


def left_padded(prompts, pad=0):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def test_positions_from_mask_count_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 0, 0]])
    assert torch.equal(positions_from_mask(mask), expected)


@pytest.mark.parametrize("recipe", RECIPES)
def test_left_padded_forward_equals_each_prompt_alone(recipe):
    model = make_model(recipe)
    ids, mask = left_padded(PROMPTS)
    with torch.no_grad():
        batched = model(ids, mask).logits
        for row, prompt in enumerate(PROMPTS):
            alone = model(torch.tensor([prompt])).logits[0]
            torch.testing.assert_close(batched[row, -len(prompt) :], alone, rtol=0, atol=1e-9)


def test_position_ids_reach_the_rotary_embedding_and_the_coders():
    model = make_model("release")
    ids, mask = left_padded(PROMPTS)
    width = ids.shape[1]
    with torch.no_grad():
        derived = model(ids, mask).logits
        given = model(ids, mask, position_ids=positions_from_mask(mask)).logits
        # The release's plain forward counts sequence indices: the q spikes and INT8 keys
        # of a left-padded row then differ from the row alone.
        indices = model(ids, mask, position_ids=torch.arange(width)[None]).logits
        shifted = model(torch.tensor([PROMPTS[1]]), position_ids=torch.tensor([[4, 5, 6]]))
    assert torch.equal(derived, given)
    assert not torch.allclose(indices[1, -3:], derived[1, -3:], atol=1e-6)
    torch.testing.assert_close(shifted.logits[0], indices[1, -3:], rtol=0, atol=1e-9)


def test_bad_position_ids_are_refused():
    model = make_model()
    ids = torch.tensor([PROMPTS[0]])
    for bad in (torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 7), -torch.ones(1, 7).long()):
        with pytest.raises(SpikecodeError, match="position_ids"):
            model(ids, position_ids=bad)


@pytest.mark.parametrize("recipe", RECIPES)
def test_left_padded_generate_equals_each_prompt_alone(recipe):
    model = make_model(recipe)
    ids, mask = left_padded(PROMPTS)
    options = dict(max_new_tokens=5, do_sample=False, output_logits=True)
    batched = model.generate(ids, attention_mask=mask, return_dict_in_generate=True, **options)
    for row, prompt in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([prompt]), return_dict_in_generate=True, **options)
        new = batched.sequences[row, ids.shape[1] :]
        assert torch.equal(new, alone.sequences[0, len(prompt) :])
        for step, logits in enumerate(alone.logits):
            torch.testing.assert_close(batched.logits[step][row], logits[0], rtol=0, atol=1e-6)


def test_right_padded_generate_is_moved_to_the_left():
    # The checkpoint's own tokenizer pads on the right by default (issue 20): generate()
    # left-aligns the rows instead of refusing a padding hole.
    model = make_model("release")
    left_ids, left_mask = left_padded(PROMPTS)
    right_ids, right_mask = torch.zeros_like(left_ids), torch.zeros_like(left_mask)
    for row, prompt in enumerate(PROMPTS):
        right_ids[row, : len(prompt)] = torch.tensor(prompt)
        right_mask[row, : len(prompt)] = 1
    assert torch.equal(left_align(right_ids, right_mask)[0], left_ids)
    expected = model.generate(left_ids, attention_mask=left_mask, max_new_tokens=4, do_sample=False)
    got = model.generate(right_ids, attention_mask=right_mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, expected)
    for key in ("input_ids", "inputs"):
        options = {key: right_ids, "attention_mask": right_mask}
        assert torch.equal(model.generate(**options, max_new_tokens=4, do_sample=False), expected)
    # a hole is still refused, with the model's message
    hole = torch.tensor([[1, 0, 1, 1, 1, 1, 1]])
    with pytest.raises(SpikecodeError, match="padding hole"):
        model.generate(torch.tensor([PROMPTS[0]]), attention_mask=hole, max_new_tokens=1)


def test_left_align_keeps_left_padded_rows():
    ids, mask = left_padded(PROMPTS)
    out_ids, out_mask = left_align(ids, mask)
    assert out_ids is ids and out_mask is mask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", with_tokenizer=True, w8aspike=True
    )


TEXTS = ["hello spiking brain model", "the token count", "hello world linear attention brain"]


@pytest.mark.parametrize("recipe", ["all-linear", "release"])
def test_calibrate_generate_statistics_do_not_depend_on_the_batch_size(tiny, recipe):
    loaded = load_checkpoint(tiny, dtype=torch.float64)
    runs = [
        calibrate(loaded, TEXTS, k=[3.0], generate=2, recipe=recipe, batch_size=size).to_dict()
        for size in (1, 3)
    ]
    # Spike counts, histograms and Vth mean/std must agree; the output-error fields are
    # sampled per batch by design (error_stride), and Vth min/max may move by an ulp
    # (matmuls of other shapes).
    sampled = ("output_sq_norm", "output_rel_error", "output_cosine", "output_sq_error")
    skip = ("created", "error_tokens", *sampled, "min", "max")
    assert stats_differences(runs[0], runs[1], skip=skip) == []
    for a, b in zip(runs[0]["layers"], runs[1]["layers"], strict=True):
        for k, entry in a["by_k"].items():
            for key in ("min", "max"):
                assert entry["vth"][key] == pytest.approx(b["by_k"][k]["vth"][key], rel=1e-12)


def test_checkpoint_tokenizer_pads_on_the_left_for_generation(tiny):
    loaded = load_checkpoint(tiny, dtype=torch.float64)
    batch = loaded.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    assert bool(batch["attention_mask"][:, -1].all())
    out = loaded.model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 2)
