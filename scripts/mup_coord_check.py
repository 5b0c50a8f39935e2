"""μP coordinate check: `python scripts/mup_coord_check.py [--out mup_coord_check]`.

The same small FLM (2 layers, head dim 32, the heads vary) at widths 64 to 1024, in μP and in the
standard parametrization at the same LR, trains a few steps on one fixed batch of the built-in
corpus; each module's mean |activation| (l1) at each step is recorded (Microsoft mup's coord
check; nemo_flm/scaling/coord_check.py). Writes OUT/coord_check.csv (parametrization, width,
module, t, l1), OUT/coord_check.png (l1 against width, log-log, one panel per step and
parametrization) and prints, per module, l1's max/min over widths and log-log slope at the last step.
"""

import argparse
import os

from nemo_flm.console import quiet_startup

quiet_startup()

from nemo_flm.scaling import sweep_cli  # noqa: E402
from nemo_flm.scaling.coord_check import COLUMNS, coord_data, plot, summary  # noqa: E402
from nemo_flm.scaling.width_sweep import write_csv  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sweep_cli.add_arguments(p, widths=(64, 128, 256, 512, 1024), out="mup_coord_check")
    p.add_argument("--steps", type=int, default=5, help="training steps (t = 1 is the initialised model)")
    p.add_argument("--lr", type=float, default=3e-3, help="the base LR, the same for μP and SP")
    args = p.parse_args()
    try:
        sweep_cli.require_at_least(args, steps=1)
        sweep, data = sweep_cli.setup(args, steps=1)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    rows = coord_data(sweep, args.widths, args.lr, data.train[0], args.steps)
    csv_path, png_path = os.path.join(args.out, "coord_check.csv"), os.path.join(args.out, "coord_check.png")
    write_csv(csv_path, rows, COLUMNS)
    plot(rows, png_path)
    print(f"l1 at step {args.steps} across widths {args.widths} (max/min, log-log slope):")
    print("\n".join(summary(rows, args.steps)))
    print(f"wrote {csv_path} and {png_path}")


if __name__ == "__main__":
    main()
