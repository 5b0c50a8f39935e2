"""Talking to SLURM: submit a launcher's jobs as an afterok chain and report where they stand.

Submission writes each job's id to <results_dir>/jobs.json, so `scripts/launch.py --mode status`
reports the chain later: from `sacct` where the cluster keeps accounting (finished jobs too), else
from `scontrol show job`, which knows queued, running and recently finished jobs (MinJobAge).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Dict, List, Optional

from nemo_flm.atomic import atomic_output

FIELDS = ("JobState", "RunTime", "ExitCode", "Restarts", "StartTime", "EndTime", "Reason")


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise FileNotFoundError(f"{tool} not found: run this on a SLURM login node, or use --mode dry-run / local")


def jobs_file(results_dir: str) -> str:
    return os.path.join(results_dir, "jobs.json")


def submit(jobs, results_dir: str) -> List[Dict[str, str]]:
    """sbatch each job (its script written to results_dir first), each after the previous one
    when it asks to be; returns and records [{name, id, script}] in submission order."""
    _require("sbatch")
    os.makedirs(results_dir, exist_ok=True)
    submitted: List[Dict[str, str]] = []
    for job in jobs:
        path = os.path.join(results_dir, f"{job.name.replace(':', '_')}_submission.sh")
        with atomic_output(path) as tmp, open(tmp, "w") as handle:
            handle.write(job.script)
        dep = [f"--dependency=afterok:{submitted[-1]['id']}"] if job.after_previous and submitted else []
        done = subprocess.run(["sbatch", "--parsable", *dep, path], check=True, capture_output=True, text=True)
        submitted.append({"name": job.name, "id": done.stdout.strip().split(";")[0], "script": path})
        print(f"submitted {job.name}: job {submitted[-1]['id']} ({path})", flush=True)
        with atomic_output(jobs_file(results_dir)) as tmp, open(tmp, "w") as handle:
            json.dump(submitted, handle, indent=1)  # after every job: a failed sbatch keeps the ids so far
    return submitted


def show_job(job_id: str, env: Optional[Dict[str, str]] = None) -> Optional[Dict[str, str]]:
    """Every field of `scontrol show job` (JobState, Restarts, Dependency, StartTime, ...), or None
    for a job slurmctld does not know (finished longer than MinJobAge ago)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None
    return dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)


def _scontrol(job_id: str) -> Dict[str, str]:
    fields = show_job(job_id)
    if fields is None:
        return {"JobState": "UNKNOWN", "Reason": "not known to slurmctld (finished before MinJobAge?)"}
    return {key: fields.get(key, "") for key in FIELDS}


def _sacct(ids: List[str]) -> Dict[str, Dict[str, str]]:
    """States from accounting, or {} where the cluster keeps none."""
    if shutil.which("sacct") is None:
        return {}
    columns = "JobID,State,Elapsed,ExitCode,Start,End"
    done = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", columns], capture_output=True, text=True
    )
    if done.returncode != 0 or "disabled" in done.stderr:
        return {}
    states = {}
    for line in done.stdout.splitlines():
        job, state, elapsed, code, start, end = line.split("|")
        states[job] = {"JobState": state, "RunTime": elapsed, "ExitCode": code, "StartTime": start, "EndTime": end}
    return states


def job_states(ids: List[str]) -> Dict[str, Dict[str, str]]:
    """Job id -> JobState, RunTime, ExitCode, Restarts, StartTime, EndTime, Reason (what is known)."""
    _require("scontrol")
    states = _sacct(ids)
    return {job: states.get(job) or _scontrol(job) for job in ids}


def status_lines(results_dir: str) -> List[str]:
    """One line per submitted job of the launcher run in results_dir."""
    path = jobs_file(results_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {path}: submit the run with --mode sbatch first (same run.results_dir)")
    with open(path) as handle:
        submitted = json.load(handle)
    states = job_states([job["id"] for job in submitted])
    lines = [f"{'job':>8}  {'state':<11} {'time':>10}  {'exit':<5} {'restarts':>8}  name"]
    for job in submitted:
        s = states[job["id"]]
        reason = f"  ({s['Reason']})" if s.get("Reason") not in (None, "", "None") else ""
        lines.append(
            f"{job['id']:>8}  {s['JobState']:<11} {s.get('RunTime', ''):>10}  {s.get('ExitCode', ''):<5} "
            f"{s.get('Restarts', ''):>8}  {job['name']}{reason}"
        )
    return lines
