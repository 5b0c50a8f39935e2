"""A training run: Lightning Trainer + exp_manager + FLMModel, from a job config.

scripts/train.py calls this after Hydra composed the config; tests call it directly.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Tuple

import lightning.pytorch as pl
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from nemo_flm import parallel
from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO, checkpoint_problem, last_good_checkpoint
from nemo_flm.config import ConfigError, check_ramp_fits, load_model_config
from nemo_flm.data.blend import check_blend_files
from nemo_flm.data.tokenizer import check_vocab_covers_tokenizer
from nemo_flm.growth.grown_checkpoint import check_grown_checkpoint
from nemo_flm.training.engine import resolve_engine
from nemo_flm.training.flm_model import FLMModel
from nemo_flm.training.strategy import FLMStrategy
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
    world = _world_size(trainer_kwargs)  # trainer.devices x trainer.num_nodes
    par = model_cfg.parallel
    parallel.check_world_size(world, par.tensor_model_parallel_size, par.pipeline_model_parallel_size)
    if world > 1:
        trainer_kwargs.setdefault("strategy", FLMStrategy())
    else:
        trainer_kwargs.setdefault("plugins", [FLMCheckpointIO()])
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs)
    # a copy: exp_manager writes into the config it is given
    log_dir = exp_manager(trainer, OmegaConf.create(OmegaConf.to_container(cfg.exp_manager, resolve=True)))
    if trainer.ckpt_path:  # exp_manager's resume: fall back past a corrupt or truncated last checkpoint
        trainer.ckpt_path = _resume_checkpoint(trainer.ckpt_path)
    model = FLMModel(model_cfg, trainer=trainer)
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


def _resume_checkpoint(path: str) -> str:
    good = last_good_checkpoint(path)
    if good is None:
        raise ConfigError(
            f"cannot resume: {checkpoint_problem(path)}, and no whole checkpoint is beside it: move the "
            f"'{os.path.dirname(path)}' folder away to start over"
        )
    return good


def _print(lines) -> None:
    print("\n".join(lines), flush=True)


def _world_size(trainer_kwargs: dict) -> int:
    devices = trainer_kwargs.get("devices", 1)
    per_node = devices if isinstance(devices, int) and devices > 0 else 1
    return per_node * int(trainer_kwargs.get("num_nodes", 1))
