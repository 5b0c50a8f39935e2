"""SLURM batch scripts and torchrun commands for launcher jobs (conf/launcher/), in the shape of
NeMo-Framework-Launcher: a job is the training config plus a `run` block (name, results_dir,
time_limit, dependency) and a `cluster` block. Each node runs one torchrun that starts
trainer.devices processes; torchrun's c10d rendezvous on the first node joins the nodes. The
training command is scripts/train.py with the launcher config itself, so the job trains exactly
the config that was rendered. A growth plan becomes one job per stage (growth.stop_after), chained
with afterok: a stage's job grows the previous checkpoint, trains its stage and ends.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, List, Optional

from nemo_flm.config import ConfigError, load_shape_config
from nemo_flm.estimate import estimate
from nemo_flm.growth.staged import stage_job

RENDEZVOUS_PORT = 29500


@dataclass
class Job:
    name: str
    script: str  # the sbatch script
    command: str  # what each node runs
    after_previous: bool  # submitted with --dependency=afterok:<the previous job>
    memory_gb: float  # estimated per GPU (megatron engine, distributed optimizer)
    layout: str


def _nodes_and_gpus(cfg: Any) -> tuple:
    nodes, devices = int(cfg.trainer.get("num_nodes", 1)), int(cfg.trainer.get("devices", 1))
    per_node = int(cfg.cluster.get("gpus_per_node", devices))
    if per_node != devices:
        raise ConfigError(
            f"cluster.gpus_per_node {per_node} != trainer.devices {devices}: one process per GPU needs them equal"
        )
    return nodes, devices


def train_command(cfg: Any, config_name: str, overrides: List[str], nodes: int, devices: int) -> str:
    """The torchrun line one node runs (MASTER_ADDR is the first node, set by the batch script)."""
    results = os.path.abspath(cfg.run.results_dir)
    args = ["scripts/train.py", "--config-name", config_name, *overrides, f"exp_manager.exp_dir={results}"]
    launch = [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc_per_node={devices}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=$MASTER_ADDR:{RENDEZVOUS_PORT}",
        "--rdzv_id=$SLURM_JOB_ID",
    ]
    return " ".join(launch + [shlex.quote(a) for a in args])


def sbatch_script(cfg: Any, name: str, command: str, nodes: int, devices: int, singleton: bool) -> str:
    cluster, run = cfg.cluster, cfg.run
    results = os.path.abspath(run.results_dir)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={devices}",
        f"#SBATCH --time={run.time_limit}",
        f"#SBATCH --output={results}/log-{name.replace(':', '_')}_%j.out",
    ]
    lines += [
        f"#SBATCH --{key}={cluster[key]}" for key in ("partition", "account", "mem") if cluster.get(key) is not None
    ]
    lines += ["#SBATCH --exclusive"] if cluster.get("exclusive") else []
    lines += ["#SBATCH --dependency=singleton"] if singleton else []
    lines += ["set -euo pipefail"]
    lines += [f"export {key}={shlex.quote(str(value))}" for key, value in (cluster.get("env_vars") or {}).items()]
    lines += ['export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)']
    workdir = os.path.abspath(cluster.get("workdir") or os.getcwd())
    setup = f"cd {shlex.quote(workdir)}"
    if cluster.get("venv"):
        setup += f" && source {shlex.quote(os.path.join(cluster.venv, 'bin', 'activate'))}"
    srun = ["srun", *cluster.get("srun_args", [])]
    if cluster.get("container_image"):
        srun.append(f"--container-image={cluster.container_image}")
        if cluster.get("container_mounts"):
            srun.append("--container-mounts=" + ",".join(cluster.container_mounts))
    lines.append(" ".join(srun) + " bash -c " + shlex.quote(f"{setup} && {command}"))
    return "\n".join(lines) + "\n"


def _memory(model_cfg: Any, gpus: int) -> tuple:
    model = load_shape_config(model_cfg)
    numbers = estimate(model, gpus)
    return numbers["total_distributed_gb"], f"TP{numbers['tp']} x PP{numbers['pp']} x DP{numbers['dp']}"


def render(cfg: Any, config_name: str, overrides: Optional[List[str]] = None) -> List[Job]:
    """The jobs of a launcher config, in submission order."""
    if not cfg.get("run") or "results_dir" not in cfg.run:
        raise ConfigError(f"'{config_name}' has no run block: pass a launcher config, e.g. launcher/flm_101b")
    overrides = list(overrides or [])
    nodes, devices = _nodes_and_gpus(cfg)
    prefix = cfg.cluster.get("job_name_prefix", "")
    if not cfg.stages:
        command = train_command(cfg, config_name, overrides, nodes, devices)
        singleton = cfg.run.get("dependency") == "singleton"
        memory, layout = _memory(cfg.model, nodes * devices)
        name = prefix + cfg.run.name
        return [Job(name, sbatch_script(cfg, name, command, nodes, devices, singleton), command, False, memory, layout)]
    jobs = []
    for index, stage in enumerate(cfg.stages):
        command = train_command(cfg, config_name, [*overrides, f"growth.stop_after={stage.name}"], nodes, devices)
        name = f"{prefix}{cfg.run.name}:{stage.name}"
        memory, layout = _memory(stage_job(cfg, index).model, nodes * devices)
        script = sbatch_script(cfg, name, command, nodes, devices, singleton=False)
        jobs.append(Job(name, script, command, index > 0, memory, layout))
    return jobs
