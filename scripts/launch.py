"""Launch a job from conf/launcher/ on SLURM or here, or show what would run.

    python scripts/launch.py launcher/flm_101b                     # dry run: scripts, memory, chain
    python scripts/launch.py launcher/flm_101b_growth --mode sbatch cluster.partition=batch cluster.account=me
    python scripts/launch.py launcher/flm_16b --mode local trainer.num_nodes=1
    python scripts/launch.py launcher/flm_101b_growth --mode status

--mode dry-run (default) prints each job's sbatch script, its per-GPU memory estimate and the
dependency chain (a growth plan: stage, grow, stage, grow, stage, .nemo), and writes and starts nothing.
--mode sbatch writes <results_dir>/<job>_submission.sh and submits the jobs in order, each after
the previous one succeeded; their ids go to <results_dir>/jobs.json.
--mode status shows the submitted jobs' states (sacct, or scontrol where the cluster keeps no
accounting): state, run time, exit code, restarts (requeues at the time limit).
--mode local runs the training command on this node with torchrun (trainer.devices processes).
Overrides are Hydra overrides of the launcher config (cluster.*, run.*, trainer.*, model.*).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from nemo_flm.console import quiet_startup

quiet_startup()


from nemo_flm.compose import CONF_DIR, compose_job  # noqa: E402
from nemo_flm.errors import ConfigError  # noqa: E402
from nemo_flm.launcher import render  # noqa: E402
from nemo_flm.slurm import status_lines, submit  # noqa: E402


def dry_run(jobs) -> None:
    for index, job in enumerate(jobs):
        after = f" (after {jobs[index - 1].name} succeeded)" if job.after_previous else ""
        print(f"=== job {index + 1}/{len(jobs)}: {job.name}{after}")
        if job.layout == "CPU":
            print("CPUs of one node: grows a finished stage's checkpoint into the next shape, or packs its .nemo")
        else:
            print(f"layout {job.layout}; estimated memory per GPU {job.memory_gb:.1f} GB (distributed optimizer)")
        print(job.script)
    print("submission:")
    for index, job in enumerate(jobs):
        dep = f"--dependency=afterok:$JOB{index} " if job.after_previous else ""
        print(f"  JOB{index + 1}=$(sbatch --parsable {dep}<results_dir>/{job.name.replace(':', '_')}_submission.sh)")
    print("dry run: nothing written, nothing started")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config_name", help="a launcher config, e.g. launcher/flm_101b")
    p.add_argument("--mode", choices=["dry-run", "sbatch", "status", "local"], default="dry-run")
    p.add_argument("--config-dir", default=CONF_DIR)
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args()
    try:
        cfg = compose_job(args.config_name, args.overrides, args.config_dir)
        jobs = render(cfg, args.config_name, args.overrides)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    if args.mode == "dry-run":
        dry_run(jobs)
    elif args.mode in ("sbatch", "status"):
        try:
            if args.mode == "sbatch":
                submit(jobs, os.path.abspath(cfg.run.results_dir))
            else:
                print("\n".join(status_lines(os.path.abspath(cfg.run.results_dir))))
        except (FileNotFoundError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", None) or ""
            sys.exit(f"error: {err}{': ' + detail.strip().splitlines()[-1] if detail.strip() else ''}")
    else:
        devices = int(cfg.trainer.get("devices", 1))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={devices}",
            "scripts/train.py",
            "--config-name",
            args.config_name,
            *args.overrides,
        ]
        print(" ".join(command), flush=True)
        sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
