"""Launcher jobs: the 101B job's sbatch script and the growth plan's chain, rendered from the same
configs training reads; dry runs write nothing; impossible requests fail in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_flm.config import ConfigError
from tests.helpers import compose_job

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "launch.py")


def test_101b_job_runs_torchrun_on_24_nodes_of_8_gpus(tmp_path):
    from nemo_flm.launcher import render

    (job,) = render(compose_job("launcher/flm_101b"), "launcher/flm_101b", ["cluster.partition=batch"])
    for line in ("#SBATCH --nodes=24", "#SBATCH --gpus-per-node=8", "#SBATCH --dependency=singleton"):
        assert line in job.script
    assert "torchrun --nnodes=24 --nproc_per_node=8 --rdzv_backend=c10d" in job.command
    assert "scripts/train.py --config-name launcher/flm_101b cluster.partition=batch" in job.command
    assert job.layout == "TP4 x PP4 x DP12" and 50 < job.memory_gb < 80
    script = tmp_path / "job.sh"
    script.write_text(job.script)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_growth_plan_is_three_chained_stage_jobs():
    from nemo_flm.launcher import render

    jobs = render(compose_job("launcher/flm_101b_growth"), "launcher/flm_101b_growth")
    assert [j.after_previous for j in jobs] == [False, True, True]
    for job, stage in zip(jobs, ("flm_16b", "flm_51b", "flm_101b")):
        assert f"growth.stop_after={stage}" in job.command and job.name.endswith(stage)
    assert [j.layout for j in jobs] == ["TP2 x PP1 x DP96", "TP4 x PP2 x DP24", "TP4 x PP4 x DP12"]


def test_dry_run_prints_and_writes_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, SCRIPT, "launcher/flm_101b_growth", "run.results_dir=" + str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--dependency=afterok:$JOB2" in out.stdout and "nothing written, nothing started" in out.stdout
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
