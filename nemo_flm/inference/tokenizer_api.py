"""vLLM's tokenizer endpoints, which lm-evaluation-harness (`tokenizer_backend=remote`) uses when it
has no tokenizer files: `GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`.

lm-eval takes the end-of-text id as tokenize(eos_token)[0], so special tokens written in the text
are encoded as special tokens. `add_special_tokens` is accepted and adds nothing: FLM's tokenizer,
like GPT-2's, has no template of special tokens around a text (add_BOS is /generate's choice).
"""

from __future__ import annotations

from typing import Any, Dict

from nemo_flm.data.tokenizer import ENDOFTEXT

from .api import ApiError, Serving, boolean, known_ids, read_fields, string, token_ids


def info(serving: Serving, body: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "tokenizer_class": "FLMTokenizer",
        "eos_token": ENDOFTEXT,
        "bos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "pad_token": "[pad]",
        "model_max_length": serving.generator.max_context,
        "vocab_size": serving.tokenizer.vocab_size,
    }


def tokenize(serving: Serving, body: Dict[str, Any]) -> Dict[str, Any]:
    values = read_fields(body, {"prompt": string, "add_special_tokens": boolean})
    if "prompt" not in values:
        raise ApiError(400, "'prompt' is required: the text to tokenize")
    tokens = serving.tokenizer.encode(values["prompt"], allow_special=True)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": serving.generator.max_context}


def detokenize(serving: Serving, body: Dict[str, Any]) -> Dict[str, Any]:
    values = read_fields(body, {"tokens": token_ids})
    if "tokens" not in values:
        raise ApiError(400, "'tokens' is required: the token ids to decode")
    return {"prompt": serving.tokenizer.decode(known_ids(serving, "tokens", values["tokens"]))}
