"""μP LR transfer: `python scripts/mup_lr_sweep.py [--out mup_lr_sweep]`.

An LR sweep (2^-10 .. 2^-4) of the same small FLM (2 layers, head dim 32, the heads vary) at widths
64, 128 and 256, in μP (base width 64) and in the standard parametrization, each run trained on the
same batches of the built-in corpus (warmup, cosine decay) and scored on held-out samples
(nemo_flm/scaling/lr_transfer.py). Prints a progress line per run, the held-out loss table, the
best LR per width and parametrization, and whether each optimum stays put across widths. Writes
OUT/lr_sweep.json (settings, runs, argmins, verdicts), OUT/lr_sweep.csv (one row per run) and
OUT/lr_sweep.png (loss against LR, one panel per parametrization).
"""

import argparse
import json
import os

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.atomic import atomic_output  # noqa: E402
from nemo_flm.scaling import sweep_cli  # noqa: E402
from nemo_flm.scaling.lr_transfer import COLUMNS, lr_grid, lr_sweep, markdown_table, plot, report  # noqa: E402
from nemo_flm.scaling.width_sweep import write_csv  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sweep_cli.add_arguments(p, widths=(64, 128, 256), out="mup_lr_sweep")
    p.add_argument(
        "--log2-lr", type=int, nargs=2, default=(-10, -4), metavar=("LOW", "HIGH"), help="LR grid 2^LOW..2^HIGH"
    )
    p.add_argument("--steps", type=int, default=60, help="training steps of every run")
    p.add_argument("--warmup", type=int, default=6, help="warmup steps")
    p.add_argument("--held-out", type=int, default=16, help="held-out samples per language")
    p.add_argument("--seeds", type=int, default=1, help="runs per point (seeds SEED, SEED+1, ...), losses averaged")
    args = p.parse_args()
    try:
        lrs = lr_grid(*args.log2_lr)
        sweep_cli.require_at_least(args, steps=args.warmup + 1, warmup=0, held_out=1, seeds=1)
        sweep, data = sweep_cli.setup(args, steps=args.steps, held_out_per_dataset=args.held_out)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    rows = lr_sweep(sweep, args.widths, lrs, data, args.warmup, args.seeds)
    result = report(rows, {**vars(args), "base_width": sweep.base_width, "vocab_size": data.vocab_size})
    table = markdown_table(result["means"])
    print("\n".join(["", "held-out loss (bold: the best LR of each column):", *table, "", *result["verdicts"]]))
    paths = [os.path.join(args.out, f"lr_sweep.{ext}") for ext in ("json", "csv", "png")]
    with atomic_output(paths[0]) as tmp, open(tmp, "w") as handle:
        json.dump(result, handle, indent=1)
    write_csv(paths[1], rows, COLUMNS)
    plot(result["means"], paths[2])
    print("wrote " + ", ".join(paths))


if __name__ == "__main__":
    main()
