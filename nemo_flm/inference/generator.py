"""Batched generation and scoring with the xPos KV cache (model/kv_cache.py).

Prompts of different lengths share one cache and one set of positions, as in NeMo 1.x: the batch is
pre-filled up to the shortest prompt, then advances one position at a time; a row still inside its
prompt is fed its prompt token, a row past it the token just chosen. No padding enters attention,
so each row computes what it would compute alone. Prompts longer than the xPos reach are pre-filled
in chunks. Log-probabilities are those of the model's own distribution (before temperature,
top-k/top-p or the repetition penalty), which is what loglikelihood evaluation needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from nemo_flm import parallel
from nemo_flm.config.shapes import xpos_reach
from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.model.kv_cache import FLMInferenceContext

from .sampling import SamplingParams, next_tokens, penalise_repeats

TokenCallback = Callable[[int, str], None]  # (row, new text) as tokens are chosen, whole characters only


@dataclass
class Completion:
    prompt_ids: List[int]
    token_ids: List[int] = field(default_factory=list)  # generated, up to and including an end token
    logprobs: List[float] = field(default_factory=list)  # log p(token | everything before it)
    top_logprobs: List[Dict[int, float]] = field(default_factory=list)  # with params.top_logprobs
    full_logprobs: List[Tensor] = field(default_factory=list)  # [V] rows, with params.all_probs
    finish_reason: str = "length"  # "stop": an end token or end string; "length": tokens_to_generate
    text: str = ""


@dataclass
class Scores:
    """Teacher-forced log-probabilities of a token sequence (what `echo` returns)."""

    logprobs: List[Optional[float]]  # None for the first token (nothing precedes it)
    top_logprobs: List[Optional[Dict[int, float]]]


def cached_forward(network: torch.nn.Module, tokens: Tensor, ctx: FLMInferenceContext, labels=None) -> Tensor:
    """Logits [b, s, V] (or per-token losses with labels) of the new tokens at the cache offset;
    advances the cache."""
    offset = ctx.sequence_len_offset
    positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)[None]
    out = network(tokens, positions, None, labels=labels, inference_context=ctx)
    ctx.increment_sequence_len_offset(tokens.shape[1])
    return out


PREFILL_CHUNK = 2048  # positions x rows per forward that returns all logits: 0.8 GB at FLM's 100,352 rows


def chunks(network: torch.nn.Module, length: int, rows: int = 0) -> List[slice]:
    """Slices of 0..length no longer than the xPos reach (one forward keeps every factor in float
    range; the cache re-centres between forwards) and, where a forward returns the logits of all
    positions of `rows` rows, than PREFILL_CHUNK positions over all rows."""
    positions = network.decoder.layers[0].self_attention.positions
    size = xpos_reach(positions.gamma, positions.scale_base)
    if rows:
        size = min(size, max(1, PREFILL_CHUNK // rows))
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def forward_in_chunks(network: torch.nn.Module, tokens: Tensor, ctx: FLMInferenceContext, labels: Tensor) -> Tensor:
    """Per-token losses [b, s] of any length through the cache, chunk by chunk."""
    parts = [
        cached_forward(network, tokens[:, part], ctx, labels[:, part])
        for part in chunks(network, tokens.shape[1], tokens.shape[0])
    ]
    return torch.cat(parts, dim=1)


def _top(logprobs: Tensor, k: int) -> List[Dict[int, float]]:
    values, ids = logprobs.topk(k, dim=-1)
    return [dict(zip(i.tolist(), v.tolist())) for i, v in zip(ids, values)]


class Generator:
    """Generation and scoring for one FLM network (this rank's TP shard; logits are gathered)."""

    def __init__(self, network: torch.nn.Module, tokenizer: FLMTokenizer, max_context: int):
        self.network = network
        self.tokenizer = tokenizer
        self.max_context = max_context  # prompt + generated tokens, the size of the KV cache
        self.device = next(network.parameters()).device

    def _forward(self, tokens: Tensor, ctx: FLMInferenceContext) -> Tensor:
        return cached_forward(self.network, tokens, ctx).float()

    def _prefill(self, tokens: Tensor, ctx: FLMInferenceContext) -> Tensor:
        """The last position's logits [b, V] after feeding `tokens` chunk by chunk (the context
        returns the last position's logits only, so a chunk may be as long as the xPos reach)."""
        for part in chunks(self.network, tokens.shape[1]):
            logits = self._forward(tokens[:, part], ctx)[:, -1]
        return logits

    def _check_length(self, length: int) -> None:
        if length > self.max_context:
            raise ValueError(
                f"{length} tokens exceed the context limit {self.max_context}: shorten the prompt or lower "
                "tokens_to_generate (or raise the limit, max_context)"
            )

    @torch.no_grad()
    def score(self, sequences: Sequence[Sequence[int]], top_k: int = 0) -> List[Scores]:
        """Log p(token_i | tokens_<i) for every token of each sequence, and the top_k alternatives;
        computed chunk by chunk so that only one chunk's log-probabilities are held."""
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence to score needs at least one token")
        longest = max(len(s) for s in sequences)
        self._check_length(longest)
        tokens = torch.full((len(sequences), longest + 1), self.tokenizer.pad, dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, : len(seq)] = torch.as_tensor(seq)
        ctx = FLMInferenceContext(len(sequences), longest)
        results = [Scores([None], [None]) for _ in sequences]
        for part in chunks(self.network, longest, len(sequences)):
            logprobs = self._forward(tokens[:, part].to(self.device), ctx).log_softmax(-1).cpu()
            picked = logprobs.gather(-1, tokens[:, part.start + 1 : part.stop + 1, None])[..., 0]
            for row, seq in enumerate(sequences):
                n = max(0, min(part.stop, len(seq) - 1) - part.start)  # positions here with a next token
                results[row].logprobs.extend(picked[row, :n].tolist())
                results[row].top_logprobs.extend(_top(logprobs[row, :n], top_k) if top_k else [None] * n)
        return results

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, on_token: Optional[TokenCallback] = None
    ) -> List[Completion]:
        """Up to params.tokens_to_generate new tokens after each prompt (token ids, BOS already added)."""
        params.check()
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (add_BOS gives an empty prompt one)")
        lengths = [len(p) for p in prompts]
        total = max(lengths) + params.tokens_to_generate
        self._check_length(total)
        tokens = torch.full((len(prompts), total), self.tokenizer.pad, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, : len(prompt)] = torch.as_tensor(prompt)
        tokens = tokens.to(self.device)
        out = [Completion(list(p)) for p in prompts]
        done = [params.tokens_to_generate == 0] * len(prompts)
        generator = torch.Generator(self.device)
        generator.manual_seed(self._seed(params))
        ctx = FLMInferenceContext(len(prompts), total, last_logits_only=True)
        logits = self._prefill(tokens[:, : min(lengths)], ctx)
        for t in range(min(lengths), total):
            if all(done):
                break
            chosen = self._choose(logits, tokens[:, :t], out, params, generator)
            for row, completion in enumerate(out):
                if t < lengths[row] or done[row]:
                    continue
                tokens[row, t] = chosen[row]
                done[row] = self._record(completion, logits[row], int(chosen[row]), params, on_token, row)
            logits = self._forward(tokens[:, t : t + 1], ctx)[:, -1]
        for completion in out:
            completion.text = self.tokenizer.decode(completion.token_ids)
        return out

    def _seed(self, params: SamplingParams) -> int:
        """The sampling seed: the requested one, else a fresh one shared by the tensor-parallel ranks
        (each computes the same gathered logits and must draw the same tokens)."""
        if params.random_seed is not None:
            return params.random_seed
        seed = torch.tensor([torch.seed() % 2**62], device=self.device)
        return int(parallel.broadcast_from_first(seed, parallel.tp_group()))

    def _choose(self, logits, seen, out: List[Completion], params: SamplingParams, generator) -> Tensor:
        """The next token of every row: repetition penalty, the end token held back until
        min_tokens_to_generate, never a padded vocab row (no text to write), then greedy or sampling.
        A copy, so that the recorded log-probabilities stay the model's own."""
        processed = penalise_repeats(logits, seen, params.repetition_penalty).clone()
        processed[:, self.tokenizer.vocab_size :] = float("-inf")
        early = torch.tensor([len(c.token_ids) < params.min_tokens_to_generate for c in out], device=logits.device)
        processed[:, self.tokenizer.eod] = processed[:, self.tokenizer.eod].masked_fill(early, float("-inf"))
        return next_tokens(processed, params, generator).cpu()

    def _record(self, completion, logits: Tensor, token: int, params, on_token, row: int) -> bool:
        """Append the chosen token and its log-probabilities; True when the row is finished."""
        logprobs = logits.log_softmax(-1)
        completion.token_ids.append(token)
        completion.logprobs.append(float(logprobs[token]))
        if params.top_logprobs:
            completion.top_logprobs.extend(_top(logprobs[None], params.top_logprobs))
        if params.all_probs:
            completion.full_logprobs.append(logprobs.cpu())
        if on_token is not None:
            self._stream(completion, on_token, row)
        if token == self.tokenizer.eod or self._ends(completion.token_ids, params.end_strings):
            completion.finish_reason = "stop"
            return True
        return len(completion.token_ids) >= params.tokens_to_generate

    def _stream(self, completion: Completion, on_token: TokenCallback, row: int) -> None:
        """Hand on the text the new token completes; a token that ends inside a UTF-8 character (one
        Chinese character can span tokens) waits for the next."""
        text = self.tokenizer.decode(completion.token_ids)
        if not text.endswith("\ufffd"):
            on_token(row, text[len(completion.text) :])
            completion.text = text

    def _ends(self, token_ids: List[int], end_strings: List[str]) -> bool:
        """Whether the generated text ends with an end string (decoding only the tail that can hold one)."""
        if not end_strings:
            return False
        tail = self.tokenizer.decode(token_ids[-max(len(s.encode()) for s in end_strings) - 4 :])  # >= 1 byte a token
        return any(tail.endswith(s) for s in end_strings)
