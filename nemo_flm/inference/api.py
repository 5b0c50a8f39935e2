"""What every HTTP endpoint shares: the error a bad request becomes, the server's limits, and typed
reads of JSON fields.

A bad request must answer 4xx with its reason, never kill the server or reach the model (NeMo's
server answers most with HTTP 200 and a bare string). JSON has no int/bool distinction that Python
keeps (True is an int), so each read checks the JSON type itself and names the field.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, TypeVar

from nemo_flm.data.tokenizer import FLMTokenizer

from .generator import Generator
from .sampling import SamplingParams

T = TypeVar("T")


class ApiError(ValueError):
    """A request (or server setting) the server will not run with: an HTTP status and one line naming
    the problem."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.status}}


@dataclass
class ServerLimits:
    """Bounds on one request, so that no request can exhaust the server (conf `server_limits:`)."""

    max_prompts: int = 128  # sentences / prompts per request (NeMo's limit)
    max_tokens_to_generate: int = 1024  # tokens_to_generate / max_tokens
    max_logprobs: int = 5  # OpenAI `logprobs` (top alternatives per token)
    max_full_logprob_rows: int = 16  # all_probs rows per request: each is a whole vocab (100,352 floats)
    max_body_bytes: int = 16 * 2**20

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ServerLimits":
        known = [f.name for f in fields(cls)]
        reject_unknown(values, known, "server limit")
        limits = cls(**values)
        for name in known:
            value = getattr(limits, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"server_limits.{name} must be a positive integer, got {value!r}")
        return limits


@dataclass
class Serving:
    """The model and its settings, shared by every request thread; `lock` serialises the model."""

    generator: Generator
    defaults: SamplingParams
    limits: ServerLimits = field(default_factory=ServerLimits)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tokenizer(self) -> FLMTokenizer:
        return self.generator.tokenizer


def parse_body(raw: bytes) -> Dict[str, Any]:
    """The request's JSON object."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"malformed JSON body: {err}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__ if raw else 'nothing'}")
    return body


def reject_unknown(given: Iterable[str], known: Iterable[str], what: str = "field") -> None:
    """Unknown keys are an error, not silently ignored (a typo would otherwise fall back to a default)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ApiError(400, f"unknown {what} '{unknown[0]}': known are {', '.join(sorted(known))}")


def _typed(check: Callable[[Any], bool], what: str) -> Callable[[str, Any], Any]:
    def read(key: str, value: Any) -> Any:
        if not check(value):
            raise ApiError(400, f"'{key}' must be {what}, got {json.dumps(value, ensure_ascii=False)[:80]}")
        return value

    return read


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


integer = _typed(is_int, "an integer")
number = _typed(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
boolean = _typed(lambda v: isinstance(v, bool), "true or false")
string = _typed(lambda v: isinstance(v, str), "a string")
strings = _typed(lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of strings")
token_ids = _typed(lambda v: isinstance(v, list) and all(is_int(t) for t in v), "a list of token ids")


def optional(read: Callable[[str, Any], T]) -> Callable[[str, Any], Optional[T]]:
    return lambda key, value: None if value is None else read(key, value)


def in_range(key: str, value: int, low: int, high: int, why: str = "") -> int:
    if not low <= value <= high:
        raise ApiError(400, f"'{key}' must be in [{low}, {high}]{why}, got {value}")
    return value


def seed(key: str, value: Any) -> int:
    """A random seed torch.Generator takes."""
    return in_range(key, integer(key, value), 0, 2**63 - 1)


def read_fields(body: Mapping[str, Any], readers: Mapping[str, Callable[[str, Any], Any]]) -> Dict[str, Any]:
    """Each present field through its reader; a field not in `readers` is an error."""
    reject_unknown(body, readers)
    return {key: readers[key](key, value) for key, value in body.items()}


def sampling(defaults: SamplingParams, **values: Any) -> SamplingParams:
    """`defaults` with the request's values, checked by SamplingParams.check (its messages)."""
    merged = {f.name: getattr(defaults, f.name) for f in fields(SamplingParams)}
    merged.update(values)
    try:
        return SamplingParams.from_mapping(merged)
    except ValueError as err:
        raise ApiError(400, str(err)) from None


def known_ids(serving: Serving, key: str, ids: List[int]) -> List[int]:
    """Ids the tokenizer can write: the padded vocab rows above them have no text."""
    vocab = serving.tokenizer.vocab_size
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ApiError(400, f"token id {bad[0]} in '{key}' is outside the tokenizer's ids [0, {vocab})")
    return ids


def check_request_size(serving: Serving, prompts: List[List[int]], params: SamplingParams) -> None:
    """Prompt count, empty prompts, generation length and context length, before the model runs."""
    limits = serving.limits
    if not prompts:
        raise ApiError(400, "no prompt given: send at least one")
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"{len(prompts)} prompts exceed the limit of {limits.max_prompts} per request")
    if any(not p for p in prompts):
        raise ApiError(400, "empty prompt: every prompt needs at least one token")
    if params.tokens_to_generate > limits.max_tokens_to_generate:
        raise ApiError(
            400, f"{params.tokens_to_generate} tokens to generate exceed the limit {limits.max_tokens_to_generate}"
        )
    longest = max(len(p) for p in prompts)
    context = serving.generator.max_context
    if longest + params.tokens_to_generate > context:
        raise ApiError(
            400,
            f"a prompt of {longest} tokens + {params.tokens_to_generate} to generate exceeds the context limit "
            f"{context} tokens: shorten the prompt or generate fewer tokens",
        )
