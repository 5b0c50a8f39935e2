"""Staged growth runs from one command: stage 1 -> grow -> stage 2 -> grow -> ...

As FLM did, a stage change goes through offline growth of the checkpoint and a fresh trainer:
each stage trains under exp_manager in `<exp_dir>/<job name>/<stage name>/`, ends with a `.nemo`,
and the next stage starts from a grown-init file (`<exp_dir>/<job name>/<stage name>.grown_init.pt`)
made from the previous stage's final Lightning checkpoint (weights and Adam state). Re-running the command skips finished stages (their `.nemo`
exists), reuses a grown-init file already written, and resumes a stage from its last checkpoint —
mid-ramp included, since the mask value is a function of the stage's step.
"""
from __future__ import annotations

import copy
import glob
import os
from typing import Any, Dict, List, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from nemo_flm.config import ConfigError, load_model_config
from nemo_flm.growth.init_file import save_grown_init
from nemo_flm.growth.operators import default_fill, grow_state_dict
from nemo_flm.growth.optimizer_state import grow_adam_state
from nemo_flm.growth.plan import make_plan
from nemo_flm.growth.report import write_report
from nemo_flm.model.builder import build_model
from nemo_flm.training.optim import param_groups


def stage_job(cfg: DictConfig, index: int) -> DictConfig:
    """The plain job config of stage `index` (its exp_manager directory, shape and length)."""
    stage = cfg.stages[index]
    job = copy.deepcopy(OmegaConf.masked_copy(cfg, ["name", "trainer", "exp_manager", "model"]))
    job.model = OmegaConf.merge(cfg.model, stage.model)
    job.trainer.max_steps = stage.max_steps
    job.exp_manager.exp_dir = os.path.join(cfg.exp_manager.get("exp_dir", "nemo_experiments"), cfg.name)
    job.exp_manager.name = stage.name
    if index > 0:
        # beside, not inside, the stage directory: exp_manager moves files found there into run_N/
        job.model.growth.init_from = os.path.join(job.exp_manager.exp_dir, f"{stage.name}.grown_init.pt")
        job.model.growth.grow_steps = cfg.growth.grow_steps
    return job


def stage_dir(job: DictConfig) -> str:
    return os.path.join(job.exp_manager.exp_dir, job.exp_manager.name)


def stage_nemo(job: DictConfig) -> str:
    return os.path.join(stage_dir(job), "checkpoints", f"{job.exp_manager.name}.nemo")


def done_marker(job: DictConfig) -> str:
    """Written when a stage reached its max_steps (a stopped stage also leaves a .nemo)."""
    return os.path.join(job.exp_manager.exp_dir, f"{job.exp_manager.name}.done")


def _final_checkpoint(job: DictConfig) -> Dict[str, Any]:
    paths = glob.glob(os.path.join(stage_dir(job), "checkpoints", "*-last.ckpt"))
    if not paths:
        raise FileNotFoundError(f"stage '{job.exp_manager.name}' has no '*-last.ckpt' in {stage_dir(job)}/checkpoints")
    ckpt = torch.load(max(paths, key=os.path.getmtime), map_location="cpu", weights_only=False)
    if ckpt["global_step"] != job.trainer.max_steps:
        raise ConfigError(
            f"the last checkpoint of stage '{job.exp_manager.name}' is at step {ckpt['global_step']}, not "
            f"{job.trainer.max_steps}: make checkpoint_callback_params.every_n_train_steps divide max_steps"
        )
    return ckpt


def _named_state(ckpt: Dict[str, Any], model_cfg: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, Dict]]:
    """(model state, per-name Adam state) of a Lightning checkpoint of FLMModel."""
    model_state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    with torch.device("meta"):
        skeleton = build_model(model_cfg)
    names = {id(p): n for n, p in skeleton.named_parameters()}
    ordered = [names[id(p)] for group in param_groups(skeleton, 0.0) for p in group["params"]]
    optim = ckpt["optimizer_states"][0]
    ids = [i for group in optim["param_groups"] for i in group["params"]]
    adam = {name: optim["state"][i] for name, i in zip(ordered, ids) if i in optim["state"]}
    return model_state, adam


def grow_stage(cfg: DictConfig, index: int) -> str:
    """Write stage `index`'s grown-init file from stage index-1's final checkpoint (idempotent)."""
    prev, job = stage_job(cfg, index - 1), stage_job(cfg, index)
    target = job.model.growth.init_from
    if os.path.exists(target):
        return target
    prev_model, new_model = load_model_config(prev.model), load_model_config({**job.model, "growth": {}})
    plan = make_plan(prev_model, new_model, cfg.growth.depth_mode)
    ckpt = _final_checkpoint(prev)
    model_state, adam = _named_state(ckpt, prev_model)
    std = cfg.growth.init_std if cfg.growth.init_std is not None else new_model.init_method_std
    fill = default_fill(std, torch.Generator().manual_seed(cfg.growth.seed + index))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    save_grown_init(target, grow_state_dict(model_state, plan, fill), grow_adam_state(adam, plan), plan,
                    consumed_samples=int(ckpt.get("consumed_samples", 0)))
    return target


def validate_stages(cfg: DictConfig) -> None:
    """Every stage config valid, each one a growth of the previous, before any training starts."""
    if not cfg.stages:
        raise ConfigError("a staged run needs a non-empty `stages` list")
    models: List[Any] = []
    for index in range(len(cfg.stages)):
        job = stage_job(cfg, index)
        models.append(load_model_config({**job.model, "growth": {}}))
        if index > 0:
            make_plan(models[-2], models[-1], cfg.growth.depth_mode)
            if cfg.growth.grow_steps > job.trainer.max_steps:
                raise ConfigError(f"growth.grow_steps {cfg.growth.grow_steps} exceeds stage '{job.exp_manager.name}' "
                                  f"max_steps {job.trainer.max_steps}: the ramp must end inside the stage")


def run_stages(cfg: DictConfig, train_fn, callbacks=()) -> List[str]:
    """Train every stage in order (skipping finished ones); returns the stages' .nemo paths, or
    None when a stage stopped before its max_steps (re-running resumes it)."""
    validate_stages(cfg)
    nemos = []
    for index in range(len(cfg.stages)):
        job = stage_job(cfg, index)
        if not os.path.exists(done_marker(job)):
            if index > 0:
                grow_stage(cfg, index)
            _, trainer, _ = train_fn(job, callbacks=callbacks)
            if trainer.global_step < job.trainer.max_steps:
                return None
            with open(done_marker(job), "w") as handle:
                handle.write(f"{trainer.global_step}\n")
        nemos.append(stage_nemo(job))
    jobs = [stage_job(cfg, i) for i in range(len(cfg.stages))]
    write_report(jobs[0].exp_manager.exp_dir, [stage_dir(j) for j in jobs], [j.model for j in jobs])
    return nemos
