"""FLM tokenizer: exact round trips and FLM's special ids (not cl100k's)."""

import pytest

from nemo_flm.data.tokenizer import FLMTokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）",
    "混合 mixed 文本 with English and 中文, numbers 12345 and ６７８.",
    "emoji 😀👍🏽🇨🇳 and symbols ∑∫√ ✓",
    "def f(x: int) -> int:\n\treturn x ** 2  # square\n",
    "   leading and trailing   \n\n\n   ",
    "\u200b zero width and \u00a0 nbsp",
]


@pytest.fixture(scope="module")
def tok():
    return FLMTokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_ids_are_flm_ids(tok):
    assert tok.eod == tok.bos == tok.eos == 100256
    assert tok.pad == 100258
    assert tok.encode("<|endoftext|>[tsk][pad][cls][sep]", allow_special=True) == [
        100256,
        100257,
        100258,
        100259,
        100260,
    ]
    assert tok.vocab_size == 100261


def test_special_text_is_not_special_by_default(tok):
    ids = tok.encode("<|endoftext|>")
    assert 100256 not in ids and tok.decode(ids) == "<|endoftext|>"


def test_regular_tokens_are_cl100k(tok):
    assert tok.encode("hello world") == [15339, 1917]
    assert max(tok.encode("".join(TEXTS))) < 100256


def test_megatron_interface(tok):
    assert list(tok.tokenize("hello world")) == [15339, 1917]
    assert tok.detokenize([15339, 1917]) == "hello world"
    assert tok.unique_identifiers["class_"] == "FLMTokenizer"
