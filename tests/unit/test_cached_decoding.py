"""Cached decoding with megatron's static KV cache: token-by-token logits equal a full forward."""

import pytest
import torch
from megatron.core.inference.contexts import StaticInferenceContext


@pytest.mark.parametrize("kind", ["xpos", "rope"])
def test_one_token_at_a_time_matches_full_forward(build, kind):
    model, cfg = build(position_embedding=kind)
    n = 20
    tokens = torch.randint(0, cfg.vocab_size, (2, n))
    positions = torch.arange(n)[None].expand(2, -1)
    with torch.no_grad():
        full = model(tokens, positions, None)
        ctx = StaticInferenceContext(max_batch_size=2, max_sequence_length=n)
        ctx.materialize_only_last_token_logits = False
        steps = []
        for t in range(n):
            steps.append(model(tokens[:, t : t + 1], positions[:, t : t + 1], None, inference_context=ctx))
            ctx.increment_sequence_len_offset(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_prefill_then_decode_matches_full_forward(build):
    """A prompt in one pass, then tokens one by one past the training length (xPos extrapolation)."""
    model, cfg = build()
    n, prompt = 2 * cfg.seq_length, 7
    tokens = torch.randint(0, cfg.vocab_size, (1, n))
    positions = torch.arange(n)[None]
    with torch.no_grad():
        full = model(tokens, positions, None)
        ctx = StaticInferenceContext(max_batch_size=1, max_sequence_length=n)
        ctx.materialize_only_last_token_logits = False
        out = [model(tokens[:, :prompt], positions[:, :prompt], None, inference_context=ctx)]
        ctx.increment_sequence_len_offset(prompt)
        for t in range(prompt, n):
            out.append(model(tokens[:, t : t + 1], positions[:, t : t + 1], None, inference_context=ctx))
            ctx.increment_sequence_len_offset(1)
    torch.testing.assert_close(torch.cat(out, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cache_holds_keys_already_placed(build):
    """The cache must not be re-rotated: what is stored is the xPos-transformed key."""
    model, cfg = build()
    tokens = torch.randint(0, cfg.vocab_size, (1, 4))
    with torch.no_grad():
        ctx = StaticInferenceContext(max_batch_size=1, max_sequence_length=4)
        model(tokens, torch.arange(4)[None], None, inference_context=ctx)
        keys_before = ctx.key_value_memory_dict[1][0][:4].clone()
        ctx.increment_sequence_len_offset(4)
    assert ctx.key_value_memory_dict[1][0].device.type == "cpu"
    torch.testing.assert_close(ctx.key_value_memory_dict[1][0][:4], keys_before)
