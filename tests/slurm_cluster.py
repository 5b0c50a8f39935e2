"""Tests only: a real one-node SLURM on this machine, started in a temporary folder.

munged (its own key and socket), slurmctld and slurmd from Debian's slurm-wlm, configured as the
smallest cluster that runs real batch jobs: one node with this machine's CPUs, linuxproc process
tracking, no task plugin, no accounting. `cred_expire=10` lets a requeued job start again after
~10 s instead of SLURM's default 120 s, and the scheduler looks every 2 s. Needs root (slurmd runs
jobs as their user) and the packages (`apt-get install slurm-wlm munge`; `.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import Dict, Optional

from nemo_flm.slurm import show_job

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")


def unavailable() -> Optional[str]:
    """Why no cluster can start here, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(root: str, host: str, cpus: int) -> str:
    ctld, slurmd = _free_port(), _free_port()
    return f"""ClusterName=nemoflm
SlurmctldHost={host}
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` is what SLURM's commands need (SLURM_CONF)."""

    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.env: Dict[str, str] = {**os.environ, "SLURM_CONF": self.conf}

    def start(self, timeout: float = 60) -> "SlurmCluster":
        for sub in ("munge", "state", "spool"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        os.chmod(os.path.join(self.root, "munge"), 0o700)
        key = os.path.join(self.root, "munge", "munge.key")
        with open(key, "wb") as handle:
            handle.write(os.urandom(1024))
        os.chmod(key, 0o400)
        with open(self.conf, "w") as handle:
            handle.write(_conf(self.root, socket.gethostname(), os.cpu_count() or 1))
        munge = os.path.join(self.root, "munge")
        self._run(
            "munged", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
            f"--log-file={munge}/munged.log", f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
        )  # fmt: skip
        self._run("slurmctld", "-f", self.conf)
        self._run("slurmd", "-f", self.conf)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM did not come up in {timeout} s: see {self.root}/slurmctld.log, slurmd.log")

    def _run(self, daemon: str, *args: str) -> None:
        path = shutil.which(daemon) or f"/usr/sbin/{daemon}"
        subprocess.run([path, *args], env=self.env, check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = os.path.join(self.root, pid_file)
            if os.path.exists(path):
                with open(path) as handle:
                    pid = int(handle.read().strip() or 0)
                if pid:
                    try:
                        os.kill(pid, 15)
                    except ProcessLookupError:
                        pass

    def job(self, job_id: str) -> Dict[str, str]:
        """`scontrol show job` of a job as a dict (JobState, Restarts, StartTime, EndTime, ...)."""
        fields = show_job(job_id, self.env)
        assert fields is not None, f"slurmctld does not know job {job_id}"
        return fields
