"""Import a Hugging Face FLM folder (FLM-101B's format) as a nemo_flm .nemo.

    python scripts/convert_hf_to_nemo.py --hf DIR --output X.nemo [--tensor-model-parallel-size N]

DIR holds config.json (model_type "flm") and weights: safetensors shards or pickled
`pytorch_model-*.bin` shards with their index, read one file and one tensor at a time. The .nemo
restores with `FLMModel.restore_from` at the chosen TP size (or any other, see README "Checkpoints").
"""

import argparse
import sys

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.hf.importer import import_from_hf  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="the HF model folder")
    p.add_argument("--output", required=True, help="the .nemo to write")
    p.add_argument("--tensor-model-parallel-size", type=int, default=1, help="TP size of the written shards")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .nemo")
    args = p.parse_args()
    try:
        cfg = import_from_hf(args.hf, args.output, args.tensor_model_parallel_size, args.overwrite)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(
        f"wrote {args.output}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
        f"{cfg.position_embedding}, {cfg.params_dtype}, TP {cfg.parallel.tensor_model_parallel_size}"
    )


if __name__ == "__main__":
    main()
