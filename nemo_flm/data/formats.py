"""Documents out of corpus files as they ship: text, JSON lines, Parquet, compressed or not.

- `.txt`: documents separated by blank lines.
- `.jsonl`: one JSON record per line, the text under a key.
- `.parquet`: one document per row of a string column (the same key).
- `.gz` / `.zst` after `.txt` or `.jsonl`: the same, decompressed on the fly (gzip, zstandard).

Every reader streams: gzip and zstandard decompress a window at a time, pyarrow reads one record
batch of one column at a time, so memory does not grow with the file. Bad records are counted in
a `Summary` and skipped; a file that cannot be read at all (corrupt archive, missing column) is a
one-line `DataError` naming the file.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, List, Sequence

import zstandard

from nemo_flm.errors import DataError

PARQUET_BATCH_ROWS = 1024
ZSTD_CHUNK = 1 << 13  # compressed bytes decompressed at a time (text: ~30 KB out)
TEXT_SUFFIXES = (".txt", ".jsonl")
COMPRESSIONS = (".gz", ".zst")
UNSUPPORTED = (".bz2", ".xz", ".lz4", ".zip", ".7z", ".br")  # archives refused by name, not read as text
SUFFIXES = TEXT_SUFFIXES + tuple(t + c for t in TEXT_SUFFIXES for c in COMPRESSIONS) + (".parquet",)


@dataclass
class Summary:
    documents: int = 0
    tokens: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return f"{self.documents} documents, {self.tokens} tokens; skipped: {skipped}"


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, directories (recursively: every suffix in SUFFIXES) and globs -> sorted file list."""
    files: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for suffix in SUFFIXES:
                files += glob.glob(os.path.join(item, "**", f"*{suffix}"), recursive=True)
        elif os.path.isfile(item):
            files.append(item)
        else:
            matches = [p for p in glob.glob(item, recursive=True) if os.path.isfile(p)]
            if not matches:
                raise DataError(f"input '{item}' matches no file: pass existing {'/'.join(SUFFIXES)} files or globs")
            files += matches
    return sorted(set(files))


@contextmanager
def _opened(path: str) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed by its suffix; a corrupt archive becomes a DataError."""
    try:
        if path.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                yield handle
        elif path.lower().endswith(".zst"):
            with open(path, "rb") as raw:
                yield io.BufferedReader(_ZstdFrames(raw))
        else:
            with open(path, "rb") as handle:
                yield handle
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
        raise DataError(f"input '{path}' cannot be decompressed ({err}): re-download or recompress it") from None


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a .zst's frames, one after another, read ZSTD_CHUNK compressed
    bytes at a time. zstandard's own stream reader ends quietly inside a truncated frame (a cut
    download would lose the rest of its file unnoticed); this raises ZstdError there instead."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.context = zstandard.ZstdDecompressor(max_window_size=2**31)  # files made with --long too
        self.frame = self.context.decompressobj()
        self.fed = False  # the current frame has input that it has not finished
        self.pending, self.offset = b"", 0  # decompressed bytes, and how many were read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.offset == len(self.pending):
            chunk = self.raw.read(ZSTD_CHUNK)
            if not chunk:
                if self.fed:
                    raise zstandard.ZstdError("the file ends inside a frame (truncated)")
                return 0
            self.pending, self.offset = self._decompress(chunk), 0
        count = min(len(buffer), len(self.pending) - self.offset)
        buffer[:count] = self.pending[self.offset : self.offset + count]
        self.offset += count
        return count

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self.frame.eof:  # the previous frame ended: the next one starts here
                self.frame = self.context.decompressobj()
            out.append(self.frame.decompress(data))
            data = self.frame.unused_data if self.frame.eof else b""
            self.fed = not self.frame.eof
        return b"".join(out)


def _decoded_lines(path: str, summary: Summary) -> Iterator[str]:
    with _opened(path) as handle:
        for raw in handle:
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                summary.skipped["non-UTF8 lines"] += 1


def _txt_documents(path: str, summary: Summary) -> Iterator[str]:
    paragraph: List[str] = []
    for line in _decoded_lines(path, summary):
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "".join(paragraph).rstrip("\n")
            paragraph = []
    if paragraph:
        yield "".join(paragraph).rstrip("\n")


def _jsonl_documents(path: str, key: str, summary: Summary) -> Iterator[str]:
    for line in _decoded_lines(path, summary):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            summary.skipped["invalid JSON lines"] += 1
            continue
        text = record.get(key) if isinstance(record, dict) else None
        if not isinstance(text, str):
            summary.skipped[f"JSON lines without a '{key}' string"] += 1
            continue
        yield text


def _parquet_documents(path: str, column: str, summary: Summary) -> Iterator[str]:
    """Rows of one string column, a record batch at a time (only that column is read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        _check_text_column(path, table.schema_arrow, column)
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    summary.skipped[f"Parquet rows without a '{column}' string"] += 1
                else:
                    yield text
    except (OSError, pa.ArrowException) as err:
        reason = " ".join(str(err).split())
        raise DataError(f"input '{path}' is not a readable Parquet file ({reason}): re-download it") from None


def _check_text_column(path: str, schema, column: str) -> None:
    """The column exists and holds text (plain, large, view or dictionary-encoded strings)."""
    import pyarrow as pa

    if column not in schema.names:
        raise DataError(f"Parquet file '{path}' has no column '{column}' (it has {schema.names}): pass --json-key")
    kind = schema.field(column).type
    values = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not any(test(values) for test in (pa.types.is_string, pa.types.is_large_string, _is_string_view)):
        raise DataError(f"Parquet column '{column}' of '{path}' is {kind}, not text: pass the text column's --json-key")


def _is_string_view(kind) -> bool:
    import pyarrow as pa

    return getattr(pa.types, "is_string_view", lambda _: False)(kind)


def file_documents(files: Sequence[str], key: str, summary: Summary) -> Iterator[str]:
    """Documents of the files by suffix (.jsonl[.gz|.zst] and .parquet by `key`, else text)."""
    for path in files:
        name = path.lower()
        if name.endswith(UNSUPPORTED):
            raise DataError(f"input '{path}': {name.rsplit('.', 1)[1]} is not read here; recompress it as .gz or .zst")
        if name.endswith(".parquet"):
            yield from _parquet_documents(path, key, summary)
        elif name.removesuffix(".gz").removesuffix(".zst").endswith(".jsonl"):
            yield from _jsonl_documents(path, key, summary)
        else:
            yield from _txt_documents(path, summary)
