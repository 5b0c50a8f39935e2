"""Staged growth runs from one command: stage 1 -> grow -> stage 2 -> grow -> ...

As FLM did, a stage change goes through offline growth of the checkpoint and a fresh trainer:
each stage trains under exp_manager in `<exp_dir>/<job name>/<stage name>/` (ending with a
`.nemo` unless exp_manager.save_nemo_on_train_end is off), and the next stage starts from a grown
checkpoint (`<exp_dir>/<job name>/<stage name>.grown/`, growth/offline.py) made from the previous
stage's final Lightning checkpoint (weights and Adam state), by a grow job of its own (the
launcher's chain) or inside the run (ensure_grown). Re-running the command skips finished stages,
reuses a grown checkpoint already written, and resumes a stage from its last checkpoint, mid-ramp
included (the mask value is a function of the stage's step).
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import time
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output
from nemo_flm.checkpoint.lightning_io import read_trainer_state
from nemo_flm.config import check_ramp_fits, load_shape_config, validate_ramp
from nemo_flm.data.blend import check_blend_files
from nemo_flm.data.tokenizer import check_vocab_covers_tokenizer
from nemo_flm.errors import ConfigError
from nemo_flm.growth.masks import check_ramp_layout
from nemo_flm.growth.offline import grow_checkpoint
from nemo_flm.growth.plan import make_plan
from nemo_flm.growth.report import write_report

WAIT_SECONDS = 2.0  # how often the other ranks look for the grown checkpoint rank 0 writes


def stage_job(cfg: DictConfig, index: int) -> DictConfig:
    """The plain job config of stage `index` (its exp_manager directory, shape and length)."""
    stage = cfg.stages[index]
    job = copy.deepcopy(
        OmegaConf.masked_copy(cfg, ["name", "trainer", "exp_manager", "model", "train_tokens", "checkpoint"])
    )
    job.model = OmegaConf.merge(cfg.model, stage.model)
    if stage.train_tokens is not None:  # the job's token-derived step counts follow
        job.train_tokens = stage.train_tokens
    if stage.max_steps is not None:
        job.trainer.max_steps = stage.max_steps
    job.exp_manager.exp_dir = os.path.join(cfg.exp_manager.get("exp_dir", "nemo_experiments"), cfg.name)
    job.exp_manager.name = stage.name
    if index > 0:
        # beside, not inside, the stage directory: exp_manager moves files found there into run_N/
        job.model.growth.init_from = os.path.join(job.exp_manager.exp_dir, f"{stage.name}.grown")
    OmegaConf.resolve(job)  # token budgets -> step counts, in the stage's own terms
    return job


def stage_dir(job: DictConfig) -> str:
    return os.path.join(job.exp_manager.exp_dir, job.exp_manager.name)


def stage_nemo(job: DictConfig) -> str:
    return os.path.join(stage_dir(job), "checkpoints", f"{job.exp_manager.name}.nemo")


def stage_output(job: DictConfig) -> str:
    """What a finished stage leaves: its .nemo, or its final checkpoint when it writes none
    (exp_manager.save_nemo_on_train_end off: scripts/export_nemo.py makes one offline)."""
    nemo = stage_nemo(job)
    return nemo if os.path.exists(nemo) else final_checkpoint(job)


def done_marker(job: DictConfig) -> str:
    """Written when a stage reached its max_steps (a stopped stage also leaves a .nemo)."""
    return os.path.join(job.exp_manager.exp_dir, f"{job.exp_manager.name}.done")


def final_checkpoint(job: DictConfig) -> str:
    """The stage's last Lightning checkpoint, which must be at its max_steps."""
    paths = glob.glob(os.path.join(stage_dir(job), "checkpoints", "*-last"))
    if not paths:
        raise FileNotFoundError(
            f"stage '{job.exp_manager.name}' has no '*-last' checkpoint in {stage_dir(job)}/checkpoints"
        )
    path = max(paths, key=os.path.getmtime)
    step = read_trainer_state(path)["global_step"]
    if step != job.trainer.max_steps:
        raise ConfigError(
            f"the last checkpoint of stage '{job.exp_manager.name}' is at step {step}, not "
            f"{job.trainer.max_steps}: make checkpoint_callback_params.every_n_train_steps divide max_steps"
        )
    return path


def ensure_grown(cfg: DictConfig, index: int) -> str:
    """Stage `index`'s grown checkpoint: written by its grow job (scripts/grow_checkpoint.py
    --stage, which the launcher chains as a CPU job between the stages' GPU jobs), or, under
    growth.grow_in_job, here: by this process alone, or by global rank 0 while the other ranks wait
    for the folder to appear (it appears only when complete). The wait is on the filesystem, not
    on a collective, so no process-group timeout ends it, however long the growth takes."""
    job = stage_job(cfg, index)
    target = job.model.growth.init_from
    if os.path.exists(target):
        return target
    if not cfg.growth.grow_in_job:
        raise ConfigError(
            f"stage '{job.exp_manager.name}' starts from '{target}', which is not there (growth.grow_in_job is false): "
            f"run its grow job first: python scripts/grow_checkpoint.py --config-name <this config> --stage {index}"
        )
    if parallel.launch_rank() == 0:
        return grow_stage(cfg, index)
    waited = 0.0
    while not os.path.exists(target):
        if waited % 60 == 0:
            logging.info("waiting for rank 0 to grow %s (%.0f s so far)", target, waited)
        time.sleep(WAIT_SECONDS)
        waited += WAIT_SECONDS
    return target


def grow_stage(cfg: DictConfig, index: int) -> str:
    """Write stage `index`'s grown checkpoint from stage index-1's final checkpoint (idempotent)."""
    prev, job = stage_job(cfg, index - 1), stage_job(cfg, index)
    target = job.model.growth.init_from
    if not os.path.exists(target):
        grow_checkpoint(
            final_checkpoint(prev),
            job.model,
            target,
            cfg.growth.depth_mode,
            cfg.growth.init_std,
            seed=cfg.growth.seed + index,
            workers=cfg.growth.workers,
        )
    return target


def check_saves_last(job: DictConfig) -> None:
    """The next stage grows from this stage's "last" checkpoint, which NeMo's checkpoint callback
    writes at max_steps (on_train_end when no interval divides it) only under save_last: refuse,
    before any training, a stage that would end without it."""
    if not (job.exp_manager.get("checkpoint_callback_params") or {}).get("save_last", True):
        raise ConfigError(
            f"stage '{job.exp_manager.name}' has checkpoint_callback_params.save_last false, but the next stage "
            "grows from its last checkpoint: set exp_manager.checkpoint_callback_params.save_last=true"
        )


def validate_stages(cfg: DictConfig) -> None:
    """Every stage config valid, each one a growth of the previous, before any training starts."""
    if not cfg.stages:
        raise ConfigError("a staged run needs a non-empty `stages` list")
    names = [stage.name for stage in cfg.stages]
    if cfg.growth.workers < 1:
        raise ConfigError(f"growth.workers must be at least 1 (tensors grown at once), got {cfg.growth.workers}")
    if cfg.growth.stop_after is not None and cfg.growth.stop_after not in names:
        raise ConfigError(f"growth.stop_after '{cfg.growth.stop_after}' is not a stage: one of {names}")
    models: List[Any] = []
    for index in range(len(cfg.stages)):
        job = stage_job(cfg, index)
        models.append(load_shape_config(job.model))
        check_vocab_covers_tokenizer(models[-1])
        check_blend_files(models[-1].data)
        if index < len(cfg.stages) - 1:
            check_saves_last(job)
        if index > 0:
            make_plan(models[-2], models[-1], cfg.growth.depth_mode)
            validate_ramp(job.model.growth, starts_grown=True)
            check_ramp_fits(job.model.growth, job.trainer.max_steps, f"stage '{job.exp_manager.name}'")
            if job.model.growth.grow_steps > 0:
                check_ramp_layout(models[-1])


def run_stages(cfg: DictConfig, train_fn, callbacks=()) -> Optional[List[str]]:
    """Train every stage in order (skipping finished ones); returns the stages' outputs (their
    .nemo files, stage_output; on global rank 0 only, the others get empty strings: with async
    saves rank 0 publishes a stage's last checkpoint after the others are done), or None when a
    stage stopped before its max_steps (re-running resumes it)."""
    validate_stages(cfg)
    nemos = []
    for index in range(len(cfg.stages)):
        job = stage_job(cfg, index)
        if not os.path.exists(done_marker(job)):
            if index > 0:
                # this stage's process groups first: growing reads the model's shape through megatron
                # (not yet set up when a re-run skips stage 1), and must not start a group of its own
                parallel.initialize(load_shape_config(job.model).parallel, job.model.seed)
                ensure_grown(cfg, index)
            _, trainer, _ = train_fn(job, callbacks=callbacks)
            if trainer.global_step < job.trainer.max_steps:
                return None
            if parallel.is_rank_zero():
                with atomic_output(done_marker(job)) as tmp, open(tmp, "w") as handle:
                    handle.write(f"{trainer.global_step}\n")
        nemos.append(stage_output(job) if parallel.launch_rank() == 0 else "")
        if cfg.growth.stop_after == job.exp_manager.name and index < len(cfg.stages) - 1:
            return nemos  # the launcher's job for this stage ends here; the next job continues
    if parallel.launch_rank() == 0:  # (a re-run whose stages are all done has no process group)
        jobs = [stage_job(cfg, i) for i in range(len(cfg.stages))]
        write_report(
            jobs[0].exp_manager.exp_dir,
            [stage_dir(j) for j in jobs],
            [j.model for j in jobs],
            [stage.predicted_loss for stage in cfg.stages],
        )
    return nemos
