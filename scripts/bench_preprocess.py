"""Preprocessing throughput per corpus format, on real text, in one run.

The built-in bilingual corpus (CPython's documentation and docstrings, the People's Daily 1998;
nemo_flm/data/corpus.py) is written out as .jsonl, .jsonl.gz, .jsonl.zst and Parquet, then each
is tokenized by scripts/preprocess_data.py's code path with the same worker count:

    python scripts/bench_preprocess.py [--workers 1] [--repeat 3]

Prints documents/s and tokens/s per worker for each format (the best of --repeat runs) and each
format's time relative to plain .jsonl.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.config import CorpusConfig  # noqa: E402
from nemo_flm.data.corpus import chinese_documents, english_documents  # noqa: E402
from nemo_flm.data.preprocess import preprocess_files  # noqa: E402


def write_formats(folder: str) -> dict:
    """The built-in corpus in every format; name -> path."""
    corpus = CorpusConfig()  # the built-in corpus as the tiny configs use it
    docs = list(english_documents(corpus)) + list(chinese_documents(corpus))
    lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode()
    paths = {name: os.path.join(folder, f"corpus.{name}") for name in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")}
    with open(paths["jsonl"], "wb") as handle:
        handle.write(lines)
    with open(paths["jsonl.gz"], "wb") as handle:
        handle.write(gzip.compress(lines))
    with open(paths["jsonl.zst"], "wb") as handle:
        handle.write(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.table({"text": docs}), paths["parquet"])
    return paths


def best_time(path: str, folder: str, workers: int, repeat: int) -> tuple:
    times = []
    for run in range(repeat):
        start = time.perf_counter()
        summary = preprocess_files([path], os.path.join(folder, f"out{run}"), workers=workers, overwrite=True)
        times.append(time.perf_counter() - start)
    return min(times), summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--repeat", type=int, default=3, help="runs per format; the fastest counts")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_formats(folder)
        results = {name: best_time(path, folder, args.workers, args.repeat) for name, path in paths.items()}
        base = results["jsonl"][0]
        print("| format | MB on disk | documents | tokens | docs/s per worker | tokens/s per worker | time vs .jsonl |")
        print("|---|---|---|---|---|---|---|")
        for name, (seconds, summary) in results.items():
            per = seconds * args.workers
            mb = os.path.getsize(paths[name]) / 1e6
            print(
                f"| .{name} | {mb:.1f} | {summary.documents} | {summary.tokens} | {summary.documents / per:,.0f} "
                f"| {summary.tokens / per:,.0f} | {seconds / base:.2f}x |"
            )


if __name__ == "__main__":
    main()
