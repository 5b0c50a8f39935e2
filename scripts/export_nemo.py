"""Pack a training checkpoint into a .nemo, offline, tensor by tensor.

    python scripts/export_nemo.py --checkpoint nemo_experiments/flm_tiny/checkpoints/<name>-last --output flm.nemo
    python scripts/export_nemo.py --config-name flm_101b_growth --stage 2   # that stage's final checkpoint

At FLM's scale a stage does not pack its ~205 GB .nemo at its end (exp_manager.save_nemo_on_train_end
is off in conf/flm_base.yaml: rank 0 would tar while the other ranks wait); this does it as a job of
its own, from any layout's checkpoint, holding one tensor at a time. With --stage it writes the
stage's `<stage>/checkpoints/<stage>.nemo`, where training would have put it, unless a whole one
newer than the stage's final checkpoint is there already (a stage that packed its own, or the
launcher's .nemo job run again); an older or damaged one is replaced.
"""

import argparse
import os
import sys

from nemo_flm.console import quiet_startup

quiet_startup()


from nemo_flm.checkpoint.nemo_file import export_nemo, packed_from  # noqa: E402
from nemo_flm.compose import compose_job  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.growth.staged import final_checkpoint, stage_job, stage_nemo  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a training checkpoint directory (exp_manager's <name>-last)")
    p.add_argument("--output", help="the .nemo to write (refused if it exists)")
    p.add_argument("--config-name", help="with --stage: a staged job config in conf/")
    p.add_argument("--stage", type=int, help="the stage whose final checkpoint to pack")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the config (e.g. exp_manager.exp_dir=...)")
    args = p.parse_args()
    try:
        if args.stage is not None:
            job = stage_job(compose_job(args.config_name, args.overrides), args.stage)
            args.checkpoint = final_checkpoint(job)
            if args.output is None and packed_from(stage_nemo(job), args.checkpoint):  # by the stage, or a re-run
                print(f"{stage_nemo(job)} is packed from the final checkpoint of stage '{job.exp_manager.name}'")
                return
            replace, args.output = args.output is None, args.output or stage_nemo(job)
        if not args.checkpoint or not args.output:
            raise ConfigError("give --checkpoint and --output, or --config-name and --stage")
        if os.path.exists(args.output) and not (args.stage is not None and replace):
            raise FileExistsError(f"output '{args.output}' exists: choose another --output or delete it")
        written = export_nemo(args.checkpoint, args.output)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"wrote {args.output}: {written / 2**30:.2f} GiB of weights from {args.checkpoint}")


if __name__ == "__main__":
    main()
