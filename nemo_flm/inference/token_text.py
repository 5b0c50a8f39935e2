"""Tokens as text for API answers: one unique string per token, and each token's character offset.

FLM's byte-level BPE splits most CJK characters over two tokens, so a token's bytes need not be
UTF-8 on their own. Decoding them with replacement characters would give many tokens the same
string, and OpenAI-style `top_logprobs` dicts (string -> logprob) would silently lose entries, so
such a token is written as OpenAI does, `bytes:\\xe4\\xba`. Ids of the padded vocab rows have no
text at all and are written `<|token_ID|>`.
"""

from __future__ import annotations

import codecs
from typing import Dict, List, Optional, Sequence

from nemo_flm.data.tokenizer import FLMTokenizer


def token_string(tokenizer: FLMTokenizer, token_id: int) -> str:
    if token_id >= tokenizer.vocab_size:
        return f"<|token_{token_id}|>"
    raw = tokenizer.token_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def token_strings(tokenizer: FLMTokenizer, ids: Sequence[int]) -> List[str]:
    return [token_string(tokenizer, i) for i in ids]


def named_top(tokenizer: FLMTokenizer, top: Optional[Dict[int, float]]) -> Optional[Dict[str, float]]:
    """A {token id: logprob} dict keyed by token strings (None stays None: the first token)."""
    return None if top is None else {token_string(tokenizer, i): p for i, p in top.items()}


def char_offsets(tokenizer: FLMTokenizer, ids: Sequence[int], start: int = 0) -> List[int]:
    """The offset in `start` + decode(ids) of the character where each token's bytes begin (a token
    that continues a character split over tokens points at that character). Decoded incrementally
    with replacement, as tokenizer.decode does, so the offsets index its text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offsets, written = [], start
    for token_id in ids:
        offsets.append(written)
        raw = tokenizer.token_bytes(token_id) if token_id < tokenizer.vocab_size else b""
        written += len(decoder.decode(raw))
    return offsets
