"""Tokenize corpus files into a megatron indexed dataset (.bin/.idx) with FLM's tokenizer.

    python scripts/preprocess_data.py --input data/en/ "more/*.jsonl.zst" shards/*.parquet --output-prefix data/en_text

.txt files: documents are separated by blank lines. .jsonl files: one document per line under
--json-key. .parquet files: one document per row of the --json-key column. .txt and .jsonl may be
compressed (.gz, .zst); every format is read as a stream. An EOD token (<|endoftext|>, 100256)
ends every document.
"""

import argparse
import sys

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.data.preprocess import preprocess_files  # noqa: E402
from nemo_flm.errors import DataError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="files, dirs, globs (see above)")
    parser.add_argument("--output-prefix", required=True, help="writes PREFIX.bin and PREFIX.idx")
    parser.add_argument("--json-key", default="text", help="text field (.jsonl) or column (.parquet)")
    parser.add_argument("--workers", type=int, default=2, help="tokenizer processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PREFIX.bin/.idx")
    args = parser.parse_args()
    try:
        summary = preprocess_files(args.input, args.output_prefix, args.json_key, args.workers, args.overwrite)
    except DataError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {args.output_prefix}.bin/.idx: {summary.line()}")


if __name__ == "__main__":
    main()
