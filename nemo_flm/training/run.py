"""A training run: Lightning Trainer + exp_manager + FLMModel, from a job config.

scripts/train.py calls this after Hydra composed the config; tests call it directly.
"""
from __future__ import annotations

from typing import Any, Iterable, Tuple

import lightning.pytorch as pl
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from nemo_flm.config import load_model_config
from nemo_flm.training.flm_model import FLMModel


def train(cfg: DictConfig, callbacks: Iterable[pl.Callback] = ()) -> Tuple[FLMModel, pl.Trainer, Any]:
    """Validate the model config, set up the trainer and exp_manager, fit; returns (model, trainer, log_dir).

    Re-running the same job resumes from its last checkpoint (exp_manager.resume_if_exists)."""
    model_cfg = load_model_config(cfg.model)  # fails before any directory is created
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs)
    log_dir = exp_manager(trainer, cfg.get("exp_manager"))
    model = FLMModel(model_cfg, trainer=trainer)
    trainer.fit(model)
    return model, trainer, log_dir
