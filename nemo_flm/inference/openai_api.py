"""OpenAI's legacy completions API, `POST /v1/completions`, as lm-evaluation-harness's
`local-completions` model uses it.

Loglikelihood requests are `{"prompt": [[ids]], "max_tokens": 1, "echo": true, "logprobs": 1,
"temperature": 0}`, read as `choices[i].logprobs.token_logprobs[ctxlen:-1]`: the answer must carry
one entry per prompt token (null first: nothing precedes it) and then one per generated token, so
logprobs cover every generated token, the end token and any stop string included, while `text`
is trimmed at the first stop string and never shows the end token (as OpenAI does). `text_offset`
indexes prompt + generated text, with or without echo. The sampling defaults are OpenAI's
(temperature 1, top_p 1, no top-k, no repetition penalty), not the config's, which set NeMo's
/generate; temperature 0 is greedy. String prompts may contain special tokens ("<|endoftext|>"),
encoded as /tokenize encodes them, so that ids lm-eval counted match what is scored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List, Optional

from .api import (
    ApiError,
    Serving,
    boolean,
    check_request_size,
    in_range,
    integer,
    is_int,
    known_ids,
    number,
    optional,
    read_fields,
    sampling,
    seed,
    string,
)
from .generator import Completion, Scores
from .sampling import SamplingParams
from .token_text import char_offsets, named_top, token_strings


def _stop(key: str, value: Any) -> List[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'{key}' must be a non-empty string or a list of them, got {value!r}"[:200])
    return stops


READERS = {
    "model": string,
    "prompt": lambda key, value: value,  # its four shapes are read by prompt_ids
    "max_tokens": optional(integer),
    "temperature": optional(number),
    "top_p": optional(number),
    "stop": optional(_stop),
    "seed": optional(seed),
    "logprobs": optional(integer),
    "echo": boolean,
    "n": optional(integer),
    "stream": boolean,
}
PROMPT_SHAPES = "a string, a list of strings, a list of token ids or a list of token-id lists"


def prompt_ids(serving: Serving, prompt: Any) -> List[List[int]]:
    """Token ids of each prompt, whichever of OpenAI's four shapes it has."""
    tokenizer = serving.tokenizer
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt, allow_special=True)]
    if not isinstance(prompt, list):
        raise ApiError(400, f"'prompt' must be {PROMPT_SHAPES}, got {type(prompt).__name__}")
    if prompt and all(is_int(t) for t in prompt):
        prompt = [prompt]
    if all(isinstance(p, str) for p in prompt):
        return [tokenizer.encode(p, allow_special=True) for p in prompt]
    if all(isinstance(p, list) and all(is_int(t) for t in p) for p in prompt):
        return [known_ids(serving, "prompt", p) for p in prompt]
    raise ApiError(400, f"'prompt' must be {PROMPT_SHAPES}")


def completion_params(serving: Serving, values: Dict[str, Any]) -> SamplingParams:
    temperature = values.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if not 0 <= temperature <= 100:
        raise ApiError(400, f"'temperature' must be in [0, 100] (0: greedy), got {temperature}")
    if values.get("n") not in (None, 1):
        raise ApiError(400, f"'n' must be 1 (one completion per prompt), got {values['n']}")
    if values.get("stream"):
        raise ApiError(400, "'stream' is not supported: send stream false or leave it out")
    logprobs = values.get("logprobs")
    if logprobs is not None:
        in_range("logprobs", logprobs, 0, serving.limits.max_logprobs)
    top_p, max_tokens = values.get("top_p"), values.get("max_tokens")
    if max_tokens is not None:
        in_range("max_tokens", max_tokens, 0, serving.limits.max_tokens_to_generate, " (the server's limit)")
    return sampling(
        SamplingParams(),
        greedy=temperature == 0,
        temperature=temperature or 1.0,
        top_p=1.0 if top_p is None else top_p,
        tokens_to_generate=16 if max_tokens is None else max_tokens,
        end_strings=values.get("stop") or [],
        random_seed=values.get("seed"),
        top_logprobs=logprobs or 0,
    )


def completions(serving: Serving, body: Dict[str, Any]) -> Dict[str, Any]:
    values = read_fields(body, READERS)
    if "prompt" not in values:
        raise ApiError(400, "'prompt' is required")
    params = completion_params(serving, values)
    prompts = prompt_ids(serving, values["prompt"])
    check_request_size(serving, prompts, params)
    echo, logprobs = values.get("echo", False), values.get("logprobs")
    with serving.lock:
        if params.tokens_to_generate:
            completions = serving.generator.generate(prompts, params)
        else:
            completions = [Completion(list(p)) for p in prompts]
        scores = serving.generator.score(prompts, logprobs or 0) if echo and logprobs is not None else None
    choices = [
        _choice(serving, i, c, scores[i] if scores else None, echo, logprobs, params.end_strings)
        for i, c in enumerate(completions)
    ]
    generated = sum(len(c.token_ids) for c in completions)
    prompted = sum(len(p) for p in prompts)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": values.get("model", "flm"),
        "choices": choices,
        "usage": {"prompt_tokens": prompted, "completion_tokens": generated, "total_tokens": prompted + generated},
    }


def _trimmed(serving: Serving, completion: Completion, stops: List[str]) -> tuple:
    """The generated text without the end token and cut at the first stop string, and why it ended."""
    ids = completion.token_ids
    if ids and ids[-1] == serving.tokenizer.eod:
        ids = ids[:-1]
    text = serving.tokenizer.decode(ids)
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        return text[: min(cuts)], "stop"
    return text, completion.finish_reason


def _choice(serving, index: int, completion: Completion, scores: Optional[Scores], echo: bool, logprobs, stops):
    prompt_text = serving.tokenizer.decode(completion.prompt_ids)
    text, finish_reason = _trimmed(serving, completion, stops)
    choice = {"text": prompt_text + text if echo else text, "index": index, "finish_reason": finish_reason}
    choice["logprobs"] = None if logprobs is None else _logprobs(serving, completion, scores, logprobs)
    return choice


def _logprobs(serving: Serving, completion: Completion, scores: Optional[Scores], k: int) -> Dict[str, Any]:
    """OpenAI's logprobs object over (the prompt, with echo, and) the generated tokens."""
    tokenizer = serving.tokenizer
    generated = completion.token_ids
    tops = completion.top_logprobs if k else [{}] * len(generated)
    ids, token_logprobs, top_logprobs = list(generated), list(completion.logprobs), list(tops)
    if scores is not None:
        ids = completion.prompt_ids + ids
        token_logprobs = scores.logprobs + token_logprobs
        top_logprobs = [t if k or j == 0 else {} for j, t in enumerate(scores.top_logprobs)] + top_logprobs
    offsets = char_offsets(tokenizer, completion.prompt_ids + generated)
    return {
        "tokens": token_strings(tokenizer, ids),
        "token_logprobs": token_logprobs,
        "top_logprobs": [named_top(tokenizer, t) for t in top_logprobs],
        "text_offset": offsets[len(offsets) - len(ids) :],
    }
