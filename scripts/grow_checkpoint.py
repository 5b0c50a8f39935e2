"""Grow a stage checkpoint offline into the next stage's shape (MSG, function-preserving).

    python scripts/grow_checkpoint.py --checkpoint CKPT --config-name flm_51b --output grown_51b/ [key=value ...]
    python scripts/grow_checkpoint.py --checkpoint CKPT --config-name flm_101b_growth --stage 1 --output grown/
    python scripts/grow_checkpoint.py --config-name flm_101b_growth --stage 1     # the staged run's grow step

The last form is the grow job of a staged run (the launcher chains it, on CPUs, between the GPU
jobs of stages 0 and 1): it grows stage 0's final checkpoint into `<exp_dir>/<job>/<stage 1>.grown/`
with the run's growth settings, exactly as the run would, and does nothing if that exists.

CKPT is an exp_manager checkpoint of FLMModel (the directory `<name>-last/` in the run's
checkpoints/, or its `<name>-last.ckpt` name: weights and Adam state) or a .nemo (weights only),
written at any tensor-parallel size.
The next shape is the `model` section of a job config (or of stage --stage of a staged config).
The output directory is what `model.growth.init_from` takes; start the next stage with it and
`model.growth.grow_steps` > 0 to ramp the masks. Prints the plan, the input size and the peak
anonymous memory of the growth.
"""

import argparse
import functools
import os
import sys
import time

from nemo_flm.console import quiet_startup

quiet_startup()


from nemo_flm.compose import CONF_DIR, compose_job  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.growth.grown_checkpoint import read_grown_meta  # noqa: E402
from nemo_flm.growth.offline import grow_checkpoint  # noqa: E402
from nemo_flm.growth.staged import final_checkpoint, grow_stage, stage_job  # noqa: E402
from nemo_flm.host_memory import PeakAnon, anon_rss  # noqa: E402


def _size(path: str) -> int:
    """Bytes of a checkpoint file or directory (0 when missing: the growth reports that)."""
    path = path.removesuffix(".ckpt") if not os.path.exists(path) else path
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="the checkpoint to grow (default with --stage: the staged run's)")
    p.add_argument("--config-name", required=True, help="job config in conf/ holding the next shape")
    p.add_argument("--config-dir", default=CONF_DIR)
    p.add_argument("--stage", type=int, default=None, help="with a staged config: the stage to grow into")
    p.add_argument("--output", help="new directory for the grown checkpoint (default with --stage: the run's)")
    p.add_argument("--depth-mode", default="stack", choices=["stack", "interleave", "random"])
    p.add_argument("--init-std", type=float, default=None, help="std of new entries (default: init_method_std)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=4, help="tensors grown at once (with --stage: growth.workers)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the config, e.g. model.hidden_size=96")
    args = p.parse_args()
    try:
        cfg = compose_job(args.config_name, args.overrides, args.config_dir)
        if args.stage is not None and args.checkpoint is None:  # the staged run's grow step
            target = stage_job(cfg, args.stage).model.growth.init_from
            if os.path.exists(target):
                print(f"{target} exists: stage {args.stage} is grown")
                return
            args.checkpoint, args.output = final_checkpoint(stage_job(cfg, args.stage - 1)), target
            grow = functools.partial(grow_stage, cfg, args.stage)
        elif args.checkpoint is None or args.output is None:
            raise ConfigError("give --checkpoint and --output, or --stage with a staged config (its grow step)")
        else:
            model_cfg = stage_job(cfg, args.stage).model if args.stage is not None else cfg.model
            options = (args.depth_mode, args.init_std, args.seed, args.workers)
            grow = functools.partial(grow_checkpoint, args.checkpoint, model_cfg, args.output, *options)
        size = _size(args.checkpoint)
        with PeakAnon() as mem:
            base, start = anon_rss(), time.perf_counter()
            grow()
            seconds = time.perf_counter() - start
        plan = read_grown_meta(args.output)["plan"]
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(
        f"grew {args.checkpoint} -> {args.output}: hidden {plan.old_hidden}->{plan.new_hidden}, heads "
        f"{plan.old_heads}->{plan.new_heads}, ffn {plan.old_ffn}->{plan.new_ffn}, layers "
        f"{plan.old_layers}->{len(plan.source)} (new: {plan.new_layers})"
    )
    print(
        f"input checkpoint {size / 2**20:.1f} MiB; peak anonymous memory during growth "
        f"{(mem.peak - base) / 2**20:.1f} MiB above the {base / 2**20:.1f} MiB before it; {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
