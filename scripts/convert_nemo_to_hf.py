"""Export a nemo_flm .nemo as a Hugging Face folder in FLM-101B's format.

    python scripts/convert_nemo_to_hf.py --nemo X.nemo --output DIR [--dtype fp32|bf16] [--max-shard-size 2GB]

DIR then loads with `transformers.AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`
(and `AutoTokenizer`, when the model's vocab covers FLM's tokenizer), without nemo_flm installed.
"""

import argparse
import sys

from nemo_flm.errors import ConfigError
from nemo_flm.hf.export import export_to_hf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo", required=True, help="the .nemo to export (written at any TP size)")
    p.add_argument("--output", required=True, help="new folder for the HF model")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="cast the weights (default: as stored)")
    p.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard, e.g. 2GB, 500MB")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = p.parse_args()
    try:
        done = export_to_hf(args.nemo, args.output, args.dtype, args.max_shard_size, args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    tokenizer = "tokenizer files" if done.tokenizer else "no tokenizer (the model's vocab is smaller than FLM's ids)"
    size = f"{done.total_bytes / 2**20:.1f} MiB {done.dtype}"
    print(f"wrote {done.path}: {done.shards} safetensors shard(s), {size}, {tokenizer}")


if __name__ == "__main__":
    main()
