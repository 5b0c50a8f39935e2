"""Sampling parameters (NeMo's `inference:` keys) and the choice of the next token.

The names and defaults follow NeMo 1.x `megatron_gpt_inference.yaml`. `check` rejects values the
sampler cannot honour with one line naming the key, so scripts and the server fail before any work.
repetition_penalty follows CTRL (and Hugging Face): the logit of every token already in the
sequence is divided by the penalty when positive and multiplied by it when negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, List, Mapping, Optional

import torch
from torch import Tensor


@dataclass
class SamplingParams:
    greedy: bool = False
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 0.9  # 1.0 (or 0.0, NeMo's "off"): no nucleus filter
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    add_BOS: bool = False  # FLM adds no BOS by default (docs/flm_facts.md §3)
    tokens_to_generate: int = 30
    min_tokens_to_generate: int = 0
    all_probs: bool = False  # also return the full log-probability row of each generated token
    compute_logprob: bool = False
    end_strings: List[str] = field(default_factory=lambda: ["<|endoftext|>"])
    random_seed: Optional[int] = None
    top_logprobs: int = 0  # the k most likely tokens' log-probabilities at each step (OpenAI `logprobs`)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SamplingParams":
        """From a config section or request: unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sampling parameter '{unknown[0]}': known are {', '.join(sorted(known))}")
        params = cls(**{k: (list(v) if k == "end_strings" else v) for k, v in values.items()})
        params.check()
        return params

    def check(self) -> None:
        """One line naming the first value out of range."""
        rules = [
            (self.temperature > 0 and self.temperature <= 100, "temperature must be in (0, 100]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0.0 <= self.top_p <= 1.0, "top_p must be in [0, 1]"),
            (1.0 <= self.repetition_penalty < math.inf, "repetition_penalty must be >= 1 and finite (1: off)"),
            (self.tokens_to_generate >= 0, "tokens_to_generate must be >= 0"),
            (
                0 <= self.min_tokens_to_generate <= self.tokens_to_generate,
                "min_tokens_to_generate must be in [0, tokens_to_generate]",
            ),
            (self.top_logprobs >= 0, "top_logprobs must be >= 0"),
            (
                all(isinstance(s, str) and s and _utf8(s) for s in self.end_strings),
                "end_strings must be non-empty strings",
            ),
        ]
        for ok, message in rules:
            if not ok:
                raise ValueError(f"{message}, got {self._value_in(message)}")

    def _value_in(self, message: str) -> Any:
        return getattr(self, message.split()[0])


def _utf8(text: str) -> bool:
    """Whether the text has a UTF-8 form (a lone surrogate has none, and could never be generated)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def penalise_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty on the tokens in `seen` ([b, t] ids) of each row of logits [b, V]."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits.gather(1, seen)
    return logits.scatter(1, seen, torch.where(picked > 0, picked / penalty, picked * penalty))


def filter_top_k_top_p(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """-inf outside the top_k tokens and outside the smallest set whose probability reaches top_p
    (the most likely token always stays)."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        ranked_drop = probs.cumsum(-1) - probs >= top_p  # the tokens ranked above already reach top_p
        drop = torch.empty_like(ranked_drop).scatter(1, order, ranked_drop)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits: Tensor, params: SamplingParams, generator: Optional[torch.Generator]) -> Tensor:
    """The next token of each row of processed logits [b, V] (fp32): argmax when greedy, else a
    draw at the temperature from the top-k / top-p filtered distribution."""
    if params.greedy:
        return logits.argmax(-1)
    # in float64, shifted so the largest logit is 0: a tiny temperature (1e-300 is a float32 zero)
    # sends the others toward -inf, never to +inf or 0/0
    scaled = (logits.double() - logits.max(-1, keepdim=True).values.double()) / params.temperature
    filtered = filter_top_k_top_p(scaled, params.top_k, params.top_p)
    return torch.multinomial(filtered.softmax(-1), 1, generator=generator)[:, 0]
