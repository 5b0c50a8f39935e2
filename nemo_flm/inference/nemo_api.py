"""NeMo 1.x's text-generation API: `PUT /generate` (text_generation_server.py), same keys and answer.

Defaults are the server's configured sampling parameters (conf/flm_inference.yaml `inference:`).
As in NeMo, `sentences` are prompt + generated text, and `tokens`, `token_ids` and `offsets` cover
the whole sequence; `logprob` (with compute_logprob) is log p of every token after the first, the
prompt's teacher-forced. `full_logprob` (with all_probs) holds one row of the whole vocabulary per
generated token, [n generated, vocab] per sentence, so it is bounded by server_limits.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .api import (
    ApiError,
    Serving,
    boolean,
    check_request_size,
    integer,
    number,
    optional,
    read_fields,
    sampling,
    seed,
    strings,
)
from .generator import Completion, Scores
from .token_text import char_offsets, token_strings

READERS = {
    "sentences": strings,
    "tokens_to_generate": integer,
    "temperature": number,
    "top_k": integer,
    "top_p": number,
    "greedy": boolean,
    "add_BOS": boolean,
    "repetition_penalty": number,
    "min_tokens_to_generate": integer,
    "end_strings": strings,
    "all_probs": boolean,
    "compute_logprob": boolean,
    "random_seed": optional(seed),
}


def generate(serving: Serving, body: Dict[str, Any]) -> Dict[str, Any]:
    values = read_fields(body, READERS)
    if "sentences" not in values:
        raise ApiError(400, "'sentences' is required: a list of prompts")
    sentences = values.pop("sentences")
    params = sampling(serving.defaults, **values)
    tokenizer = serving.tokenizer
    prompts = [([tokenizer.bos] if params.add_BOS else []) + tokenizer.encode(s) for s in sentences]
    check_request_size(serving, prompts, params)
    rows = len(prompts) * params.tokens_to_generate
    if params.all_probs and rows > serving.limits.max_full_logprob_rows:
        raise ApiError(
            400,
            f"all_probs would return {rows} full-vocabulary rows (sentences x tokens_to_generate), over the limit "
            f"{serving.limits.max_full_logprob_rows}",
        )
    with serving.lock:
        completions = serving.generator.generate(prompts, params)
        scores = serving.generator.score(prompts) if params.compute_logprob else [None] * len(prompts)
    answers = [_answer(serving, c, s) for c, s in zip(completions, scores)]
    return {key: [a[key] for a in answers] for key in answers[0]}


def _answer(serving: Serving, completion: Completion, scores: Optional[Scores]) -> Dict[str, Any]:
    tokenizer = serving.tokenizer
    ids: List[int] = completion.prompt_ids + completion.token_ids
    return {
        "sentences": tokenizer.decode(ids),
        "tokens": token_strings(tokenizer, ids),
        "logprob": None if scores is None else scores.logprobs[1:] + completion.logprobs,
        "full_logprob": [row.tolist() for row in completion.full_logprobs] or None,
        "token_ids": ids,
        "offsets": char_offsets(tokenizer, ids),
    }
