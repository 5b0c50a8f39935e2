"""Preprocessing: ids in = ids out through megatron's IndexedDataset, bad lines counted."""

import json
import os

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from nemo_flm.data.corpus import strip_pos_tags
from nemo_flm.data.preprocess import preprocess_files
from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.errors import DataError

DOCS = ["First document, English.", "第二个文档，中文。", "third 😀 doc\nwith two lines"]


def _write_jsonl(path, records, raw_lines=()):
    with open(path, "wb") as f:
        for r in records:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
        for line in raw_lines:
            f.write(line)


@pytest.mark.parametrize("workers", [1, 2])
def test_jsonl_round_trip(tmp_path, workers):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in DOCS])
    summary = preprocess_files([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), workers=workers)
    ds = IndexedDataset(str(tmp_path / "out"))
    tok = FLMTokenizer()
    assert len(ds) == len(DOCS) == summary.documents
    for i, doc in enumerate(DOCS):
        assert list(ds[i]) == tok.encode(doc) + [tok.eod]
    assert summary.tokens == sum(len(tok.encode(d)) + 1 for d in DOCS)


def test_bad_lines_are_counted_and_skipped(tmp_path):
    _write_jsonl(
        tmp_path / "a.jsonl",
        [{"text": DOCS[0]}, {"body": "no text key"}, {"text": DOCS[1]}],
        raw_lines=[b"{not json\n", b'{"text": "bad \xff\xfe utf8"}\n', b"\n"],
    )
    summary = preprocess_files([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), workers=1)
    assert summary.documents == 2
    assert summary.skipped == {"invalid JSON lines": 1, "non-UTF8 lines": 1, "JSON lines without a 'text' string": 1}
    assert "2 documents" in summary.line() and "1 invalid JSON lines" in summary.line()


def test_txt_directories_and_globs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("para one\nstill one\n\npara two\n", encoding="utf-8")
    (tmp_path / "y.txt").write_text("other file", encoding="utf-8")
    summary = preprocess_files([str(tmp_path / "d"), str(tmp_path / "y.*")], str(tmp_path / "out"), workers=1)
    ds = IndexedDataset(str(tmp_path / "out"))
    tok = FLMTokenizer()
    assert summary.documents == 3
    assert tok.decode(ds[0][:-1]) == "para one\nstill one"
    assert tok.decode(ds[2][:-1]) == "other file"


def test_empty_input_is_an_error_and_writes_nothing(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"\n{bad\n")
    with pytest.raises(DataError, match="no documents found"):
        preprocess_files([str(tmp_path / "empty.jsonl")], str(tmp_path / "out"), workers=1)
    assert os.listdir(tmp_path) == ["empty.jsonl"]


def test_missing_input_and_existing_output_are_errors(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        preprocess_files([str(tmp_path / "nope*.jsonl")], str(tmp_path / "out"))
    _write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    (tmp_path / "out.bin").write_bytes(b"keep")
    with pytest.raises(DataError, match="exists"):
        preprocess_files([str(tmp_path / "a.jsonl")], str(tmp_path / "out"))
    assert (tmp_path / "out.bin").read_bytes() == b"keep"


def test_strip_pos_tags():
    line = "迈向/v  充满/v  希望/n  的/u  [中国/ns  政府/n]nt  １２月/t  [/w  ３１日/t"
    assert strip_pos_tags(line) == "迈向充满希望的中国政府１２月[３１日"
