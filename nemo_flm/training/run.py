"""A training run: Lightning Trainer + exp_manager + FLMModel, from a job config.

scripts/train.py calls this after Hydra composed the config; tests call it directly.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Tuple

import lightning.pytorch as pl
import torch
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from nemo_flm import parallel
from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO
from nemo_flm.config import check_ramp_fits, load_model_config
from nemo_flm.data.blend import check_blend_files
from nemo_flm.data.prepare import prepare_data
from nemo_flm.data.tokenizer import check_vocab_covers_tokenizer
from nemo_flm.growth.grown_checkpoint import check_grown_checkpoint, read_grown_meta
from nemo_flm.training.devices import resolve_devices
from nemo_flm.training.engine import resolve_engine
from nemo_flm.training.flm_model import FLMModel
from nemo_flm.training.resume import checkpoint_folder, clear_leftovers, decide_resume
from nemo_flm.training.strategy import FLMSingleDeviceStrategy, FLMStrategy
from nemo_flm.training.summary import start_lines, summarize, summary_lines


def train(cfg: DictConfig, callbacks: Iterable[pl.Callback] = ()) -> Tuple[FLMModel, pl.Trainer, Any]:
    """Validate the model config, set up the trainer and exp_manager, fit; returns (model, trainer, log_dir).

    Re-running the same job resumes from its last checkpoint (exp_manager.resume_if_exists), at
    any tensor-parallel size: checkpoints are sharded (checkpoint/lightning_io.py). Rank 0 prints
    what is trained on what, where, before the first step and a summary after the last."""
    started = time.perf_counter()
    model_cfg = load_model_config(cfg.model)  # fails before any directory is created
    _check_inputs(model_cfg, cfg.trainer.max_steps)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    world = resolve_devices(trainer_kwargs)  # trainer.devices x trainer.num_nodes
    par = model_cfg.parallel
    parallel.check_world_size(world, par.tensor_model_parallel_size, par.pipeline_model_parallel_size)
    trainer_kwargs.setdefault("strategy", _strategy(world, trainer_kwargs, cfg.checkpoint.async_save))
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs)
    exp_cfg = OmegaConf.to_container(cfg.exp_manager, resolve=True)  # a copy: exp_manager writes into it
    clear_leftovers(checkpoint_folder(trainer, exp_cfg))
    log_dir = exp_manager(trainer, OmegaConf.create(exp_cfg))
    init_from = model_cfg.growth.init_from
    offset = read_grown_meta(os.path.expanduser(init_from))["consumed_samples"] if init_from else 0
    prepare_data(model_cfg, offset + trainer_kwargs["max_steps"] * model_cfg.global_batch_size)  # rank 0, no barrier
    model = FLMModel(model_cfg, trainer=trainer)  # starts the process groups
    trainer.ckpt_path = decide_resume(trainer.ckpt_path)  # training/resume.py
    model.data_blend()  # on every rank: the built-in corpus is prepared once, rank 0 first
    if parallel.is_rank_zero():
        _print(start_lines(model, trainer, str(log_dir)))
    if model.starts_from_growth:
        # the validation loss of the grown model before any step (masks at c = 0), on the same
        # samples as the previous stage's last validation: the growth report's exactness check
        trainer.validate(model)
    trainer.fit(model)
    if parallel.is_rank_zero():
        _print(summary_lines(summarize(model, trainer, str(log_dir), time.perf_counter() - started)))
    return model, trainer, log_dir


def _check_inputs(model_cfg: DictConfig, max_steps: int) -> None:
    """What the schema cannot see: the engine this machine can run, the tokenizer's ids, the data
    files, the grown checkpoint."""
    resolve_engine(model_cfg)
    check_vocab_covers_tokenizer(model_cfg)
    check_blend_files(model_cfg.data)
    if model_cfg.growth.init_from:
        check_grown_checkpoint(model_cfg)
        check_ramp_fits(model_cfg.growth, max_steps, "the job")


def _strategy(world: int, trainer_kwargs: dict, async_save: bool):
    """FLMStrategy over several processes, its single-device form for one; both write and read
    checkpoints on every rank (training/strategy.py)."""
    io = FLMCheckpointIO(async_save=async_save)
    if world > 1:
        return FLMStrategy(checkpoint_io=io)
    cpu = trainer_kwargs.get("accelerator") == "cpu" or not torch.cuda.is_available()
    return FLMSingleDeviceStrategy(device=torch.device("cpu") if cpu else torch.device("cuda", 0), checkpoint_io=io)


def _print(lines) -> None:
    print("\n".join(lines), flush=True)
