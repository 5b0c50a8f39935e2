"""Batched generation and scoring (inference/generator.py) against full-recompute references."""

import pytest
import torch

from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.inference.generator import Generator
from nemo_flm.inference.sampling import SamplingParams

FLM_VOCAB = dict(vocab_size=100256, make_vocab_size_divisible_by=128)
TEXTS = ["The interpreter reads", "人民日报社论指出，", "Hi", "A long prompt about the Python language and its grammar"]


@pytest.fixture
def generator(build):
    model, cfg = build(**FLM_VOCAB)
    return Generator(model, FLMTokenizer(), max_context=256)


def prompts(tok):
    return [tok.encode(t) for t in TEXTS]


def greedy_by_recompute(model, prompt, n):
    """n greedy tokens, each from a full forward over everything so far (no cache)."""
    tokens = list(prompt)
    for _ in range(n):
        x = torch.tensor([tokens])
        tokens.append(int(model(x, torch.arange(len(tokens))[None], None)[0, -1].argmax()))
    return tokens[len(prompt) :]


def test_greedy_batched_equals_one_by_one_and_full_recompute(generator):
    params = SamplingParams(greedy=True, tokens_to_generate=12, end_strings=[])
    ids = prompts(generator.tokenizer)
    with torch.no_grad():
        batched = generator.generate(ids, params)
        alone = [generator.generate([p], params)[0] for p in ids]
        reference = [greedy_by_recompute(generator.network, p, 12) for p in ids]
    assert [c.token_ids for c in batched] == reference
    assert [c.token_ids for c in alone] == reference
    assert all(c.finish_reason == "length" and len(c.logprobs) == 12 for c in batched)


def test_scores_are_the_full_forward_log_softmax(generator):
    ids = prompts(generator.tokenizer)
    scores = generator.score(ids, top_k=3)
    with torch.no_grad():
        for seq, got in zip(ids, scores):
            logp = generator.network(torch.tensor([seq]), torch.arange(len(seq))[None], None)[0].log_softmax(-1)
            want = logp[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]
            assert got.logprobs[0] is None and got.top_logprobs[0] is None
            torch.testing.assert_close(torch.tensor(got.logprobs[1:]), want, atol=1e-5, rtol=0)
            best = logp[:-1].argmax(-1).tolist()
            assert [max(d, key=d.get) for d in got.top_logprobs[1:]] == best
            assert all(len(d) == 3 for d in got.top_logprobs[1:])


def test_generated_logprobs_are_the_model_distribution(generator):
    """compute_logprob: log p of each chosen token under the raw model (before temperature)."""
    ids = prompts(generator.tokenizer)[:1]
    params = SamplingParams(temperature=0.7, top_k=5, tokens_to_generate=6, random_seed=3, end_strings=[])
    out = generator.generate(ids, params)[0]
    scored = generator.score([ids[0] + out.token_ids])[0]
    torch.testing.assert_close(torch.tensor(out.logprobs), torch.tensor(scored.logprobs[-6:]), atol=1e-5, rtol=0)


def test_seeded_sampling_repeats_and_seeds_differ(generator):
    ids = prompts(generator.tokenizer)
    draw = lambda seed: [  # noqa: E731
        c.token_ids for c in generator.generate(ids, SamplingParams(top_p=1.0, random_seed=seed, end_strings=[]))
    ]
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def eod_favouring(build):
    """A real model whose final LayerNorm outputs a constant vector v (gamma 0, beta v) and whose
    output row for <|endoftext|> is 10 v: the end token has the highest logit at every position."""
    model, cfg = build(**FLM_VOCAB)
    tok = FLMTokenizer()
    with torch.no_grad():
        norm = model.decoder.final_layernorm
        norm.weight.zero_()
        norm.bias.copy_(torch.randn_like(norm.bias))
        model.output_layer.weight[tok.eod] = 10 * norm.bias
    return Generator(model, tok, max_context=64)


def test_padded_vocab_rows_are_never_chosen(build):
    """Rows 100261.. pad the vocab to 100352 and have no text: even a model that favours one must
    not emit it (decoding it would fail), while the recorded log-probabilities stay the model's own."""
    generator = eod_favouring(build)
    padded = generator.tokenizer.vocab_size + 5
    with torch.no_grad():
        generator.network.output_layer.weight[padded] = 20 * generator.network.decoder.final_layernorm.bias
    ids = [generator.tokenizer.encode("Hello")]
    out = generator.generate(ids, SamplingParams(greedy=True, tokens_to_generate=3))[0]
    assert out.token_ids == [generator.tokenizer.eod] and out.text == "<|endoftext|>"
    scored = generator.score([ids[0] + out.token_ids])[0]
    torch.testing.assert_close(torch.tensor(out.logprobs), torch.tensor(scored.logprobs[-1:]), atol=1e-5, rtol=0)


def test_min_tokens_hold_back_the_end_token(build):
    generator = eod_favouring(build)
    ids = [generator.tokenizer.encode("Hello")]
    out = generator.generate(ids, SamplingParams(greedy=True, tokens_to_generate=10, min_tokens_to_generate=3))[0]
    assert out.token_ids[3] == generator.tokenizer.eod and generator.tokenizer.eod not in out.token_ids[:3]
    assert out.finish_reason == "stop" and len(out.token_ids) == 4
    first = generator.generate(ids, SamplingParams(greedy=True, tokens_to_generate=10))[0]
    assert first.token_ids == [generator.tokenizer.eod]


def test_end_strings_stop_a_row_and_others_go_on(generator):
    ids = prompts(generator.tokenizer)
    free = generator.generate(ids, SamplingParams(greedy=True, tokens_to_generate=12, end_strings=[]))
    stop_text = generator.tokenizer.decode(free[0].token_ids[:3])
    out = generator.generate(ids, SamplingParams(greedy=True, tokens_to_generate=12, end_strings=[stop_text]))
    assert out[0].finish_reason == "stop" and out[0].text.endswith(stop_text)
    assert len(out[0].token_ids) == 3
    assert [c.token_ids for c in out[1:]] == [c.token_ids for c in free[1:]]


def test_bad_prompts_are_one_line_errors(generator):
    with pytest.raises(ValueError, match="at least one token"):
        generator.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="at least one token"):
        generator.score([])
    with pytest.raises(ValueError, match="exceed the context limit 256"):
        generator.generate([[1] * 250], SamplingParams(tokens_to_generate=10))


def test_streamed_pieces_add_up_to_the_text(generator):
    """Streaming hands on whole characters only (a Chinese character can span tokens)."""
    ids = prompts(generator.tokenizer)[1:2]
    pieces = []
    out = generator.generate(
        ids, SamplingParams(top_p=1.0, random_seed=1, tokens_to_generate=20), lambda r, t: pieces.append(t)
    )[0]
    assert "".join(pieces) == out.text.rstrip("\ufffd")
    assert all("\ufffd" not in p[-1:] for p in pieces if p)


def test_scores_across_chunks_and_a_recentre(build):
    """Scale base 4: the xPos reach is 95 positions, so 180 tokens are scored in two chunks with a
    re-centre between them; the scores still equal one full forward's."""
    model, cfg = build(xpos_scale_base=4.0, **FLM_VOCAB)
    generator = Generator(model, FLMTokenizer(), max_context=256)
    seqs = [torch.randint(0, 100256, (180,)).tolist(), torch.randint(0, 100256, (150,)).tolist()]
    scores = generator.score(seqs)
    with torch.no_grad():
        for seq, got in zip(seqs, scores):
            logp = model(torch.tensor([seq]), torch.arange(len(seq))[None], None)[0].log_softmax(-1)
            want = logp[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]
            assert len(got.logprobs) == len(seq)
            torch.testing.assert_close(torch.tensor(got.logprobs[1:]), want, atol=1e-5, rtol=0)
