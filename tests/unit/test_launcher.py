"""Launcher jobs: the 101B job's sbatch script and the growth plan's chain, rendered from the same
configs training reads; dry runs write nothing; impossible requests fail in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_flm.compose import compose_job
from nemo_flm.errors import ConfigError

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "launch.py")


def test_101b_job_runs_torchrun_on_24_nodes_of_8_gpus(tmp_path):
    from nemo_flm.launcher import render

    (job,) = render(compose_job("launcher/flm_101b"), "launcher/flm_101b", ["cluster.partition=batch"])
    for line in ("#SBATCH --nodes=24", "#SBATCH --gpus-per-node=8", "#SBATCH --dependency=singleton"):
        assert line in job.script
    for line in ("#SBATCH --signal=B:USR1@600", "#SBATCH --requeue", "trap requeue USR1", "-lt 5 ]; then"):
        assert line in job.script  # requeued near its time limit (tests/integration/test_slurm.py runs it)
    assert "torchrun --nnodes=24 --nproc_per_node=8 --rdzv_backend=c10d" in job.command
    assert "scripts/train.py --config-name launcher/flm_101b cluster.partition=batch" in job.command
    assert job.layout == "TP4 x PP4 x DP12" and 50 < job.memory_gb < 80
    script = tmp_path / "job.sh"
    script.write_text(job.script)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_growth_plan_chains_gpu_stage_jobs_and_cpu_grow_jobs(tmp_path):
    """stage -> grow -> stage -> grow -> stage -> .nemo, each after the previous one succeeded:
    growth and packing run on CPUs in jobs of their own, and the stage jobs may not grow (no GPU
    waits on it)."""
    from nemo_flm.launcher import render

    overrides = ["cluster.cpu_partition=cpu"]
    jobs = render(compose_job("launcher/flm_101b_growth", overrides), "launcher/flm_101b_growth", overrides)
    names = [j.name.split(":")[-1] for j in jobs]
    assert names == ["flm_16b", "flm_51b.grow", "flm_51b", "flm_101b.grow", "flm_101b", "flm_101b.nemo"]
    assert [j.after_previous for j in jobs] == [False, True, True, True, True, True]
    for job, stage in zip(jobs[0:5:2], ("flm_16b", "flm_51b", "flm_101b")):
        assert f"growth.stop_after={stage} growth.grow_in_job=false" in job.command
        assert "#SBATCH --gpus-per-node=8" in job.script
    steps = [("grow_checkpoint.py", 1), ("grow_checkpoint.py", 2), ("export_nemo.py", 2)]
    for job, (script, index) in zip(jobs[1::2], steps):
        assert f"scripts/{script} --config-name launcher/flm_101b_growth --stage {index}" in job.command
        assert "torchrun" not in job.command and "--gpus-per-node" not in job.script
        assert "#SBATCH --partition=cpu" in job.script and "#SBATCH --cpus-per-task=16" in job.script
        script = tmp_path / "grow.sh"
        script.write_text(job.script)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert [j.layout for j in jobs] == ["TP2 x PP1 x DP96", "CPU", "TP4 x PP2 x DP24", "CPU", "TP4 x PP4 x DP12", "CPU"]


@pytest.mark.slow
def test_dry_run_prints_and_writes_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, SCRIPT, "launcher/flm_101b_growth", "run.results_dir=" + str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--dependency=afterok:$JOB5" in out.stdout and "nothing written, nothing started" in out.stdout
    assert not (tmp_path / "results").exists()


def test_bad_requests_are_one_line_errors():
    from nemo_flm.launcher import render

    with pytest.raises(ConfigError, match="cluster.gpus_per_node 4 != trainer.devices 8"):
        render(compose_job("launcher/flm_101b", ["cluster.gpus_per_node=4"]), "launcher/flm_101b")
    with pytest.raises(ConfigError, match="has no run block"):
        render(compose_job("flm_101b"), "flm_101b")
    env = {**os.environ, "PATH": "/nonexistent"}
    out = subprocess.run(
        [sys.executable, SCRIPT, "launcher/flm_101b", "--mode", "sbatch"], capture_output=True, text=True, env=env
    )
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1].startswith("error: sbatch not found")
