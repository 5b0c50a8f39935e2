"""The launcher against a real SLURM: the tiny growth plan submitted by `scripts/launch.py --mode
sbatch` runs as six jobs chained afterok (stage, grow, stage, grow, stage, .nemo), in order, and
ends with the same stage .nemo files and growth report as the same plan run directly. On the way,
the first stage gets SLURM's time-limit signal after its first checkpoint: it is requeued under
the same job id (the chain holds) and resumes from that checkpoint."""

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nemo_flm.checkpoint.nemo_archive import open_nemo
from tests.helpers import free_port
from tests.integration.test_staged_growth import ARGS as STAGED_ARGS
from tests.slurm_cluster import SlurmCluster, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"no SLURM here: {unavailable()}")

ROOT = Path(__file__).parents[2]
ARGS = [a for a in STAGED_ARGS if not a.startswith("stages.0.max_steps")] + ["stages.0.max_steps=8"]
STAGES = ("stage1", "stage2", "stage3")
DONE = {"COMPLETED"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = SlurmCluster(str(tmp_path_factory.mktemp("slurm"))).start()
    yield cluster
    cluster.stop()


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _chain_done(cluster, ids, results):
    states = {job_id: cluster.job(job_id)["JobState"] for job_id in ids}
    failed = {job_id: state for job_id, state in states.items() if state in FAILED}
    logs = "".join(Path(p).read_text()[-3000:] for p in sorted(glob.glob(f"{results}/log-*.out")))
    assert not failed, f"jobs failed: {failed}\n{logs}"
    return all(state in DONE for state in states.values())


def _weights(path):
    reader, _ = open_nemo(path)
    return {name: reader.read("model", name) for name in reader.names("model")}


def test_growth_plan_chain_on_slurm_equals_the_direct_run(cluster, tmp_path):
    results = tmp_path / "slurm"
    launch = [sys.executable, str(ROOT / "scripts" / "launch.py"), "launcher/flm_tiny_growth"]
    common = [*ARGS, f"run.results_dir={results}", f"cluster.rendezvous_port={free_port()}"]
    started = time.monotonic()
    out = subprocess.run([*launch, "--mode", "sbatch", *common], env=cluster.env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = json.loads((results / "jobs.json").read_text())
    assert [j["name"].split(":")[-1] for j in jobs] == [
        "stage1", "stage2.grow", "stage2", "stage3.grow", "stage3", "stage3.nemo"
    ]  # fmt: skip
    ids = [j["id"] for j in jobs]
    assert cluster.job(ids[1])["Dependency"].startswith(f"afterok:{ids[0]}")

    # SLURM's warning before the time limit (--signal=B:USR1), once stage 1 has a checkpoint
    stage1 = results / "flm_tiny_growth" / "stage1" / "checkpoints"
    _wait_for(lambda: glob.glob(f"{stage1}/stage1--*-last"), 600, "stage 1's first checkpoint")
    assert cluster.job(ids[0])["JobState"] == "RUNNING"
    subprocess.run(["scancel", "--batch", "--signal=USR1", ids[0]], env=cluster.env, check=True)
    _wait_for(lambda: _chain_done(cluster, ids, results), 1200, "the chain")
    print(f"chain of {len(ids)} jobs ({ids[0]}..{ids[-1]}) done in {time.monotonic() - started:.0f} s")

    records = [cluster.job(job_id) for job_id in ids]
    for before, after in zip(records, records[1:]):  # each started after the previous one ended
        assert after["StartTime"] >= before["EndTime"], (before, after)
    assert records[0]["Restarts"] == "1" and all(r["Restarts"] == "0" for r in records[1:])
    log = Path(glob.glob(f"{results}/log-*stage1_{ids[0]}.out")[0]).read_text()
    assert f"time limit near: requeueing job {ids[0]}" in log
    assert "resuming from " in log and "stage1--" in log.split("resuming from ", 1)[1].splitlines()[0]
    status = subprocess.run([*launch, "--mode", "status", *common], env=cluster.env, capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 6, status.stdout + status.stderr

    direct = tmp_path / "direct"
    train = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config-name", "flm_tiny_growth"]
    done = subprocess.run([*train, *ARGS, f"exp_manager.exp_dir={direct}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in STAGES:
        name = f"flm_tiny_growth/{stage}/checkpoints/{stage}.nemo"
        ours, theirs = _weights(results / name), _weights(direct / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=f"{stage} {key}")
    ours, theirs = (json.loads((d / "flm_tiny_growth" / "growth_report.json").read_text()) for d in (results, direct))
    assert ours["tokens"] == theirs["tokens"] and ours["flops"] == theirs["flops"]
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    for a, b in zip(ours["growths"], theirs["growths"]):
        assert a == pytest.approx(b, rel=1e-5)
    assert os.path.getsize(results / "flm_tiny_growth" / "growth_report.png") > 0
