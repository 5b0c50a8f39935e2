"""SLURM batch scripts and torchrun commands for launcher jobs (conf/launcher/), in the shape of
NeMo-Framework-Launcher: a job is the training config plus a `run` block (name, results_dir,
time_limit, dependency) and a `cluster` block. Each node runs one torchrun that starts
trainer.devices processes; torchrun's c10d rendezvous on the first node joins the nodes. The
training command is scripts/train.py with the launcher config itself, so the job trains exactly
the config that was rendered. A growth plan becomes a chain of jobs, each started when the one
before it succeeded (afterok): a GPU job per stage (growth.stop_after: it trains its stage and
ends), and between two stages a CPU job that grows the finished stage's checkpoint into the next
one's shape (scripts/grow_checkpoint.py --stage), so no GPU waits on growth: the stage jobs run
with growth.grow_in_job=false and refuse to start without their grown checkpoint. A last CPU job
packs the final stage's .nemo (scripts/export_nemo.py), which the stage itself does not write.

A job that reaches its time limit is requeued, not lost: SLURM signals the batch shell
run.requeue_signal_s before the limit (--signal=B:USR1), the shell requeues the job (same job id,
so the afterok chain holds) up to run.max_requeues times, and the next run resumes from the last
checkpoint (exp_manager's resume; a grow or .nemo job finds its output done or starts over).
A cluster without GPUs (cluster.gpus_per_node: null) gets cluster.cpus_per_task instead.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, List, Optional

from nemo_flm.config import load_shape_config
from nemo_flm.errors import ConfigError
from nemo_flm.estimate import estimate
from nemo_flm.growth.staged import stage_job

RENDEZVOUS_PORT = 29500  # torchrun's c10d rendezvous on the first node (cluster.rendezvous_port)


@dataclass
class Job:
    name: str
    script: str  # the sbatch script
    command: str  # what each node runs
    after_previous: bool  # submitted with --dependency=afterok:<the previous job>
    memory_gb: float  # estimated per GPU (megatron engine, distributed optimizer); 0 for a CPU job
    layout: str  # TP x PP x DP, or "CPU" for a grow job


def _nodes_and_gpus(cfg: Any) -> tuple:
    nodes, devices = int(cfg.trainer.get("num_nodes", 1)), int(cfg.trainer.get("devices", 1))
    per_node = cfg.cluster.get("gpus_per_node", devices)
    if per_node is not None and int(per_node) != devices:
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
        f"--rdzv_endpoint=$MASTER_ADDR:{cfg.cluster.get('rendezvous_port', RENDEZVOUS_PORT)}",
        "--rdzv_id=$SLURM_JOB_ID",
    ]
    return " ".join(launch + [shlex.quote(a) for a in args])


def stage_step_command(script: str, cfg: Any, config_name: str, overrides: List[str], index: int) -> str:
    """A CPU step of a staged run: scripts/grow_checkpoint.py (stage `index`'s grown checkpoint from
    the previous stage's final one) or scripts/export_nemo.py (stage `index`'s .nemo)."""
    results = os.path.abspath(cfg.run.results_dir)
    args = ["python", f"scripts/{script}", "--config-name", config_name, "--stage", str(index)]
    return " ".join(shlex.quote(a) for a in [*args, *overrides, f"exp_manager.exp_dir={results}"])


def _cpu_job(cfg: Any, name: str, command: str) -> Job:
    return Job(name, sbatch_script(cfg, name, command, _cpu_resources(cfg), singleton=False), command, True, 0.0, "CPU")


def _stage_resources(cfg: Any, nodes: int, devices: int) -> List[str]:
    """A stage's nodes: its GPUs, or on a cluster without GPUs cluster.cpus_per_task cores."""
    cluster = cfg.cluster
    lines = [f"--nodes={nodes}", f"--time={cfg.run.time_limit}"]
    if cluster.get("gpus_per_node", devices) is None:
        lines.append(f"--cpus-per-task={cluster.cpus_per_task}")
    else:
        lines.append(f"--gpus-per-node={devices}")
    lines += [f"--{key}={cluster[key]}" for key in ("partition", "mem") if cluster.get(key) is not None]
    return lines + (["--exclusive"] if cluster.get("exclusive") else [])


def _cpu_resources(cfg: Any) -> List[str]:
    """One node's CPUs for offline growth: cluster.cpu_partition (else the partition),
    cluster.grow_cpus cores, run.grow_time_limit (else the stage's time limit)."""
    cluster, run = cfg.cluster, cfg.run
    partition = cluster.get("cpu_partition") or cluster.get("partition")
    lines = ["--nodes=1", f"--cpus-per-task={cluster.get('grow_cpus', 16)}"]
    lines += [f"--time={run.get('grow_time_limit') or run.time_limit}"]
    return lines + ([f"--partition={partition}"] if partition else [])


def sbatch_script(cfg: Any, name: str, command: str, resources: List[str], singleton: bool) -> str:
    cluster, run = cfg.cluster, cfg.run
    results = os.path.abspath(run.results_dir)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", "#SBATCH --ntasks-per-node=1"]
    lines += [f"#SBATCH {line}" for line in resources]
    lines += [f"#SBATCH --output={results}/log-{name.replace(':', '_')}_%j.out"]
    lines += [f"#SBATCH --account={cluster.account}"] if cluster.get("account") is not None else []
    lines += ["#SBATCH --dependency=singleton"] if singleton else []
    lines += _requeue_directives(run)
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
    step = " ".join(srun) + " bash -c " + shlex.quote(f"{setup} && {command}")
    lines += _run_requeueing(step, run) if run.get("max_requeues", 0) > 0 else [step]
    return "\n".join(lines) + "\n"


def _requeue_directives(run: Any) -> List[str]:
    """The #SBATCH lines of a job that requeues itself: SLURM's USR1 to the batch shell
    run.requeue_signal_s before the limit, requeueing allowed, one log appended across runs."""
    if run.get("max_requeues", 0) <= 0:
        return []
    signal = f"--signal=B:USR1@{int(run.get('requeue_signal_s', 300))}"
    return [f"#SBATCH {signal}", "#SBATCH --requeue", "#SBATCH --open-mode=append"]


def _run_requeueing(step: str, run: Any) -> List[str]:
    """The job step in the background, so the batch shell can take SLURM's USR1 (time limit near)
    and requeue the job while the step runs; the job's exit status is the step's."""
    limit = int(run.max_requeues)
    return [
        "requeue() {",
        f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {limit} ]; then',
        '    echo "time limit near: requeueing job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0})"',
        '    scontrol requeue "$SLURM_JOB_ID" || echo "scontrol requeue failed: the job ends at its time limit"',
        "  else",
        f'    echo "time limit near: job $SLURM_JOB_ID already requeued {limit} times (run.max_requeues)"',
        "  fi",
        "}",
        "trap requeue USR1",
        f"{step} &",
        "STEP=$!",
        'while kill -0 "$STEP" 2>/dev/null; do wait "$STEP" || true; done  # USR1 wakes the wait',
        'STATUS=0; wait "$STEP" || STATUS=$?  # bash keeps an ended child\'s status',
        'exit "$STATUS"',
    ]


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
    gpus = _stage_resources(cfg, nodes, devices)
    if not cfg.stages:
        command = train_command(cfg, config_name, overrides, nodes, devices)
        singleton = cfg.run.get("dependency") == "singleton"
        memory, layout = _memory(cfg.model, nodes * devices)
        name = prefix + cfg.run.name
        return [Job(name, sbatch_script(cfg, name, command, gpus, singleton), command, False, memory, layout)]
    jobs, steps = [], (cfg, config_name, overrides)
    for index, stage in enumerate(cfg.stages):
        name = f"{prefix}{cfg.run.name}:{stage.name}"
        if index > 0:
            jobs.append(_cpu_job(cfg, f"{name}.grow", stage_step_command("grow_checkpoint.py", *steps, index)))
        stage_overrides = [*overrides, f"growth.stop_after={stage.name}", "growth.grow_in_job=false"]
        command = train_command(cfg, config_name, stage_overrides, nodes, devices)
        memory, layout = _memory(stage_job(cfg, index).model, nodes * devices)
        script = sbatch_script(cfg, name, command, gpus, singleton=False)
        jobs.append(Job(name, script, command, index > 0, memory, layout))
    final = len(cfg.stages) - 1
    jobs.append(_cpu_job(cfg, f"{name}.nemo", stage_step_command("export_nemo.py", *steps, final)))
    return jobs
