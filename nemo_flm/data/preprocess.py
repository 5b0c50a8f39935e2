"""Text -> megatron indexed dataset (.bin/.idx) through megatron.core.datasets.

Inputs are corpus files as they ship (data/formats.py: .txt, .jsonl, either gzip- or
zstandard-compressed, and Parquet), given as files, directories or globs. Each document gets an
EOD token appended. Tokenization runs in worker processes; the output is written under a
temporary name and renamed when complete, so an interrupted run never leaves a half dataset.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
from tqdm import tqdm

from nemo_flm.atomic import atomic_output
from nemo_flm.data.formats import SUFFIXES, Summary, expand_inputs, file_documents
from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.errors import DataError

CHUNK_DOCS = 64


def _chunks(docs: Iterable[str], summary: Summary) -> Iterator[List[str]]:
    chunk: List[str] = []
    for doc in docs:
        if not doc.strip():
            summary.skipped["empty documents"] += 1
            continue
        chunk.append(doc)
        if len(chunk) == CHUNK_DOCS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_WORKER_TOKENIZER: Optional[FLMTokenizer] = None


def _encode_chunk(chunk: List[str]) -> List[np.ndarray]:
    global _WORKER_TOKENIZER
    if _WORKER_TOKENIZER is None:
        _WORKER_TOKENIZER = FLMTokenizer()
    eod = _WORKER_TOKENIZER.eod
    return [np.asarray(ids + [eod], dtype=np.int32) for ids in _WORKER_TOKENIZER.encode_batch(chunk)]


def _encoded(chunks: Iterator[List[str]], workers: int) -> Iterator[List[np.ndarray]]:
    if workers <= 1:
        yield from map(_encode_chunk, chunks)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_encode_chunk, chunks)


def write_indexed_dataset(
    documents: Iterable[str],
    prefix: str,
    workers: int = 2,
    desc: str = "tokenizing",
    overwrite: bool = False,
    summary: Optional[Summary] = None,
) -> Summary:
    """Tokenize documents (EOD appended) into `prefix`.bin/.idx and return the summary.

    `summary` is the one the document generator counts skipped input into, if any.
    """
    summary = summary if summary is not None else Summary()
    if not overwrite and any(os.path.exists(prefix + ext) for ext in (".bin", ".idx")):
        raise DataError(f"output '{prefix}.bin/.idx' exists: choose another --output-prefix or pass --overwrite")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with atomic_output(prefix + ".bin") as bin_tmp, atomic_output(prefix + ".idx") as idx_tmp:
        builder = IndexedDatasetBuilder(bin_tmp, dtype=DType.optimal_dtype(FLMTokenizer().vocab_size))
        with tqdm(desc=desc, unit=" docs", disable=None) as bar:
            for encoded in _encoded(_chunks(documents, summary), workers):
                for ids in encoded:
                    builder.add_document(ids, [ids.size])
                    summary.documents += 1
                    summary.tokens += int(ids.size)
                bar.update(len(encoded))
        builder.finalize(idx_tmp)
        if summary.documents == 0:
            raise DataError(
                f"no documents found for '{prefix}' ({summary.line()}): check the input paths and --json-key"
            )
    return summary


def preprocess_files(
    inputs: Sequence[str], prefix: str, json_key: str = "text", workers: int = 2, overwrite: bool = False
) -> Summary:
    """Files/directories/globs -> `prefix`.bin/.idx; bad records are counted and skipped."""
    files = expand_inputs(inputs)
    if not files:
        raise DataError(f"no corpus files ({', '.join(SUFFIXES)}) in {list(inputs)}")
    summary = Summary()
    docs = file_documents(files, json_key, summary)
    return write_indexed_dataset(docs, prefix, workers, f"tokenizing {len(files)} file(s)", overwrite, summary)
