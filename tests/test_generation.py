"""Cached decoding and transformers' generate() on the plain-PyTorch GLA-SWA model."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from spikecode.errors import SpikecodeError
from spikecode.models import GLASwaConfig, GLASwaForCausalLM
from spikecode.models.cache import GLASwaCache
from spikecode.nn import swap_linears
from spikecode.testing import assert_close_to_rounding

#: Rounding steps that differ between two orders of computing the tiny model (cached
#: or chunked against a full pass, one sequence against a batch): the token mixer and
#: the MLP of each of its 4 layers, each within eps x ||row|| (spikecode.testing).
ORDER_OPS = 2 * 4

WINDOW = 3


def make_model(recipe=None, seed=0, **changes):
    config = dict(
        vocab_size=40,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=WINDOW,
        rope_theta=1e4,
        attn_layers=(1, 3),
        gate="single",
        gla_chunk_size=4,
    )
    config.update(changes)
    torch.manual_seed(seed)
    model = GLASwaForCausalLM(GLASwaConfig(**config)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.2)
    if recipe is not None:
        swap_linears(model, recipe=recipe)
    return model


IDS = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("recipe", [None, "all-linear", "release"])
@pytest.mark.parametrize("prefill", [1, 2, 5])
def test_token_by_token_equals_full_forward(recipe, prefill):
    # The sequence is four windows long: the cache must keep exactly the W keys the
    # prefill lets each position see, and the GLA state the whole past.
    model = make_model(recipe)
    with torch.no_grad():
        full = model(IDS).logits
        out = model(IDS[:, :prefill], use_cache=True)
        cache = out.cache
        pieces = [out.logits]
        for t in range(prefill, IDS.shape[1]):
            step = model(IDS[:, t : t + 1], cache=cache)
            assert step.cache is cache
            pieces.append(step.logits)
    assert_close_to_rounding(torch.cat(pieces, dim=1), full, ops=ORDER_OPS)
    assert cache.get_seq_length() == IDS.shape[1]
    assert cache.layers[1].keys.shape[-2] == WINDOW  # W past keys, never more


def test_chunks_after_a_cache_equal_the_full_forward():
    model = make_model()
    with torch.no_grad():
        full = model(IDS).logits
        first = model(IDS[:, :4], use_cache=True)
        rest = model(IDS[:, 4:], past_key_values=first.cache)  # the older keyword too
    assert_close_to_rounding(torch.cat([first.logits, rest.logits], 1), full, ops=ORDER_OPS)


def test_left_padded_batch_decodes_like_each_sequence_alone():
    model = make_model()
    ids = IDS[:, :8].clone()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    with torch.no_grad():
        out = model(ids, mask, use_cache=True)
        full = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        step = model(IDS[:, 8:9], attention_mask=full, cache=out.cache)
        alone = model(torch.cat([ids[1:, 3:], IDS[1:, 8:9]], 1)).logits
    assert_close_to_rounding(step.logits[1, -1], alone[0, -1], ops=ORDER_OPS)
    # the mask of the new tokens alone works too: the cache remembers the past
    with torch.no_grad():
        again = model(ids, mask, use_cache=True)
        short = model(
            IDS[:, 8:9], attention_mask=torch.ones(2, 1, dtype=torch.long), cache=again.cache
        )
    torch.testing.assert_close(short.logits, step.logits, rtol=0, atol=0)


def _uncached_greedy(model, ids, steps):
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


@pytest.mark.parametrize("recipe", [None, "release"])
def test_generate_greedy_equals_full_recomputation(recipe):
    model = make_model(recipe)
    prompt = IDS[:, :3]
    out = model.generate(
        prompt,
        max_new_tokens=10,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    expected = _uncached_greedy(model, prompt, 10)
    assert torch.equal(out.sequences, expected)
    # logits of every generated step against a full forward over the same prefix
    with torch.no_grad():
        full = model(out.sequences[:, :-1]).logits[:, prompt.shape[1] - 1 :]
    # generate() hands the logits over in float32: the float64 rounding of two orders ...
    # ... then rounded to float32 once each: one float32 ulp apart at most (2**-23 relative).
    assert_close_to_rounding(
        torch.stack(out.logits, 1), full.float(), ops=ORDER_OPS, dtype=torch.float64, rtol=2.0**-23
    )
    uncached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(uncached, expected)


def test_generate_sampling_cached_equals_uncached():
    model = make_model()
    prompt = IDS[:, :4]
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        runs.append(
            model.generate(prompt, max_new_tokens=9, do_sample=True, top_k=10, use_cache=use_cache)
        )
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (2, 13)


def test_generate_with_left_padding_matches_unpadded():
    model = make_model()
    ids = IDS[:, :6].clone()
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    alone = model.generate(ids[1:, 2:], max_new_tokens=6, do_sample=False)
    assert torch.equal(batched[1, 6:], alone[0, 4:])


def test_output_and_cache_types():
    model = make_model()
    with torch.no_grad():
        out = model(IDS)
        assert isinstance(out, CausalLMOutputWithPast) and out.cache is None
        cached = model(IDS, use_cache=True)
        assert isinstance(cached.cache, GLASwaCache)
        logits, cache = model(IDS, use_cache=True, return_dict=False)
    assert torch.equal(logits, cached.logits) and isinstance(cache, GLASwaCache)


def test_cache_errors():
    model = make_model()
    with torch.no_grad():
        cache = model(IDS, use_cache=True).cache
        with pytest.raises(SpikecodeError, match="sequences"):
            model(IDS[:1, :1], cache=cache)
        with pytest.raises(SpikecodeError, match="attention_mask must be a tensor"):
            model(IDS[:, :1], attention_mask=torch.ones(2, 5, dtype=torch.long), cache=cache)
        with pytest.raises(SpikecodeError, match="padding hole"):
            # right padding followed by a new token is a hole
            padded = model(IDS[:, :3], torch.tensor([[1, 1, 0], [1, 1, 1]]), use_cache=True)
            model(IDS[:, 3:4], cache=padded.cache)
        with pytest.raises(SpikecodeError, match="GLASwaCache"):
            model(IDS, cache=object())
        with pytest.raises(SpikecodeError, match="not both"):
            model(IDS, cache=cache, past_key_values=cache)
        with pytest.raises(SpikecodeError, match="unknown argument"):
            model(IDS, token_type_ids=IDS)
