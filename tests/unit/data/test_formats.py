"""Corpora as they ship: .jsonl.gz, .jsonl.zst and Parquet give the same documents, counts and skips
as plain .jsonl, read as streams, and a file that cannot be read is a one-line DataError."""

import gzip
import json
import random
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from nemo_flm.data.formats import Summary, expand_inputs, file_documents
from nemo_flm.data.preprocess import preprocess_files
from nemo_flm.errors import DataError

DOCS = ["First document, English.", "第二个文档，中文。", "third 😀 doc\nwith two lines"]
BAD_LINES = [b"{not json\n", b'{"text": "bad \xff\xfe utf8"}\n', b'{"body": "no text"}\n', b"\n"]
JSONL_SKIPS = {"invalid JSON lines": 1, "non-UTF8 lines": 1, "JSON lines without a 'text' string": 1}


def _jsonl_bytes(docs, bad=()) -> bytes:
    return b"".join((json.dumps({"text": d}, ensure_ascii=False) + "\n").encode() for d in docs) + b"".join(bad)


def _write(path, docs, bad=()):
    data = _jsonl_bytes(docs, bad)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


def _documents(path, key="text"):
    summary = Summary()
    return list(file_documents([str(path)], key, summary)), summary


@pytest.mark.parametrize("name", ["a.jsonl.gz", "a.jsonl.zst"])
def test_compressed_jsonl_equals_plain(tmp_path, name):
    _write(tmp_path / "a.jsonl", DOCS, BAD_LINES)
    _write(tmp_path / name, DOCS, BAD_LINES)
    plain, compressed = _documents(tmp_path / "a.jsonl"), _documents(tmp_path / name)
    assert compressed[0] == plain[0] == DOCS
    assert compressed[1].skipped == plain[1].skipped == JSONL_SKIPS


def test_multi_frame_zst_and_multi_member_gz_are_read_whole(tmp_path):
    first, second = _jsonl_bytes(DOCS[:2]), _jsonl_bytes(DOCS[2:])
    zst = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(zst.compress(first) + zst.compress(second))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(first) + gzip.compress(second))
    assert _documents(tmp_path / "a.jsonl.zst")[0] == _documents(tmp_path / "a.jsonl.gz")[0] == DOCS


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
def test_parquet_text_column(tmp_path, kind):
    column = pa.array([DOCS[0], None, DOCS[1], DOCS[2]]).cast(kind)
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": column}), tmp_path / "a.parquet", row_group_size=2)
    docs, summary = _documents(tmp_path / "a.parquet")
    assert docs == DOCS
    assert summary.skipped == {"Parquet rows without a 'text' string": 1}


def test_suffixes_are_matched_in_any_case_and_other_archives_refused(tmp_path):
    _write(tmp_path / "A.jsonl.gz", DOCS)
    (tmp_path / "A.JSONL.GZ").write_bytes((tmp_path / "A.jsonl.gz").read_bytes())
    assert _documents(tmp_path / "A.JSONL.GZ")[0] == DOCS
    (tmp_path / "b.jsonl.bz2").write_bytes(b"BZh9")
    with pytest.raises(DataError, match="bz2 is not read here; recompress it as .gz or .zst"):
        _documents(tmp_path / "b.jsonl.bz2")


def test_preprocess_gives_the_same_dataset_for_every_format(tmp_path):
    _write(tmp_path / "a.jsonl", DOCS, BAD_LINES)
    _write(tmp_path / "a.jsonl.zst", DOCS, BAD_LINES)
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "a.parquet")
    out = {}
    for name in ("a.jsonl", "a.jsonl.zst", "a.parquet"):
        summary = preprocess_files([str(tmp_path / name)], str(tmp_path / name.replace(".", "_")), workers=1)
        out[name] = (summary.documents, summary.tokens, (tmp_path / f"{name.replace('.', '_')}.bin").read_bytes())
    assert out["a.jsonl"] == out["a.jsonl.zst"] == out["a.parquet"]


def test_directories_find_every_format(tmp_path):
    for name in ("a.jsonl.gz", "b.jsonl.zst", "c.jsonl", "notes.md"):
        _write(tmp_path / name, DOCS)
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "d.parquet")
    found = [p.rsplit("/", 1)[1] for p in expand_inputs([str(tmp_path)])]
    assert found == ["a.jsonl.gz", "b.jsonl.zst", "c.jsonl", "d.parquet"]


@pytest.mark.parametrize("name", ["big.jsonl.gz", "big.jsonl.zst"])
def test_compressed_files_are_streamed(tmp_path, name):
    """Reading 16 MB of decompressed JSON lines holds well under 1 MB of Python memory at once
    (a reader that decompresses the whole file first would hold all of it)."""
    words, rng = [f"w{i}" for i in range(5000)], random.Random(0)  # compresses like text (~3x)
    _write(tmp_path / name, [f"document {i} " + " ".join(rng.choices(words, k=160)) for i in range(16_000)])
    tracemalloc.start()
    try:
        count = sum(1 for _ in file_documents([str(tmp_path / name)], "text", Summary()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 16_000
    assert peak < 1_000_000, peak


def test_parquet_is_read_a_batch_at_a_time(tmp_path):
    """pyarrow never holds more than a row group of the text column (the file holds 16 MB of text)."""
    rows = [f"document {i} " + "x" * 1000 for i in range(16_000)]
    pq.write_table(pa.table({"text": rows, "other": rows}), tmp_path / "big.parquet", row_group_size=1000)
    start, most = pa.total_allocated_bytes(), 0
    for _ in file_documents([str(tmp_path / "big.parquet")], "text", Summary()):
        most = max(most, pa.total_allocated_bytes() - start)
    assert most < 4_000_000, most


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("t.jsonl.gz", gzip.compress(_jsonl_bytes(DOCS * 50))[:-40], "cannot be decompressed"),
        ("t.jsonl.zst", b"not zstandard at all", "cannot be decompressed"),
        ("t.jsonl.zst", zstandard.ZstdCompressor().compress(_jsonl_bytes(DOCS * 500))[:-40], "inside a frame"),
        ("t.parquet", b"PAR1 not really parquet", "not a readable Parquet file"),
        ("t.parquet", "corrupt page", "not a readable Parquet file"),
    ],
    ids=["truncated-gz", "not-zst", "truncated-zst", "not-parquet", "corrupt-parquet-page"],
)
def test_unreadable_files_are_one_line_errors(tmp_path, name, content, match):
    if content == "corrupt page":  # a valid footer over damaged column data
        pq.write_table(pa.table({"text": DOCS * 100}), tmp_path / name)
        content = bytearray((tmp_path / name).read_bytes())
        content[100:400] = bytes(b ^ 0xFF for b in content[100:400])
    (tmp_path / name).write_bytes(bytes(content))
    with pytest.raises(DataError, match=match) as err:
        preprocess_files([str(tmp_path / name)], str(tmp_path / "out"), workers=1)
    assert "\n" not in str(err.value) and name in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output left behind


def test_parquet_without_the_column_names_the_columns(tmp_path):
    pq.write_table(pa.table({"content": DOCS}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"no column 'text' \(it has \['content'\]\): pass --json-key"):
        _documents(tmp_path / "a.parquet")
    assert _documents(tmp_path / "a.parquet", key="content")[0] == DOCS
