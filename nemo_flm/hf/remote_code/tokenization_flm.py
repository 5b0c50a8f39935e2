"""FLMTokenizer: FLM-101B's tokenizer for Hugging Face transformers, offline.

cl100k_base's 100,256 BPE ranks (the `cl100k_base.tiktoken` file beside this one, checked against
its published sha256) and pre-tokenizer regex, with FLM's own special ids: <|endoftext|> 100256
(bos = eos = unk), [tsk] 100257, [pad] 100258, [cls] 100259, [sep] 100260. No BOS or EOS is added.
Shipped inside every folder nemo_flm exports and standalone (tiktoken and transformers only), so it
restates nemo_flm/data/tokenizer.py's ids; nemo_flm's tests hold the two to the same ids.
Regular tokens are byte strings (a BPE token need not be valid UTF-8), special tokens are str.
"""

import base64
import hashlib
import os
import shutil

import tiktoken
from transformers import AddedToken, PreTrainedTokenizer

VOCAB_FILE = "cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = {ENDOFTEXT: 100256, "[tsk]": 100257, "[pad]": 100258, "[cls]": 100259, "[sep]": 100260}
SPECIAL_IDS = frozenset(SPECIAL_TOKENS.values())


def load_ranks(path: str) -> dict:
    """{token bytes: rank} of a .tiktoken file (one `base64 rank` a line), refused if its hash differs."""
    with open(path, "rb") as handle:
        contents = handle.read()
    if hashlib.sha256(contents).hexdigest() != CL100K_SHA256:
        raise ValueError(f"'{path}' is not cl100k_base (sha256 mismatch)")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in contents.splitlines())}


class FLMTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, errors="replace", **kwargs):
        self.ranks = load_ranks(vocab_file)
        self.vocab_file, self.errors = vocab_file, errors
        self.encoding = tiktoken.Encoding(
            name="flm_cl100k", pat_str=CL100K_PATTERN, mergeable_ranks=self.ranks, special_tokens=SPECIAL_TOKENS
        )
        self.decoder = {rank: token for token, rank in {**self.ranks, **SPECIAL_TOKENS}.items()}
        # FLM's special ids are fixed: registered before the base class would append them at new ids
        self._added_tokens_decoder = {
            rank: AddedToken(token, special=True, normalized=False) for token, rank in SPECIAL_TOKENS.items()
        }
        for name in ("bos_token", "eos_token", "unk_token"):
            kwargs.setdefault(name, ENDOFTEXT)
        kwargs.setdefault("pad_token", "[pad]")
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def get_vocab(self) -> dict:
        return {**self.ranks, **SPECIAL_TOKENS}

    def _tokenize(self, text, **kwargs):
        """Text without special tokens (the base class splits them off) -> BPE byte tokens."""
        return [self.decoder[i] for i in self.encoding.encode_ordinary(text)]

    def _convert_token_to_id(self, token):
        if isinstance(token, bytes):
            return self.ranks[token]
        return SPECIAL_TOKENS.get(token, SPECIAL_TOKENS[ENDOFTEXT])

    def _convert_id_to_token(self, index):
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens):
        data = b"".join(t if isinstance(t, bytes) else t.encode("utf-8") for t in tokens)
        return data.decode("utf-8", errors=self.errors)

    def _decode(self, token_ids, skip_special_tokens=False, **kwargs):
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in SPECIAL_IDS]
        return self.encoding.decode(ids, errors=self.errors)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILE)
        if os.path.abspath(path) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, path)
        return (path,)
