"""A `model:` section typed by the schema and validated: what every part of nemo_flm reads."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_flm.config.schema import ModelConfig, schema_merge
from nemo_flm.config.validate import validate


def load_model_config(cfg: Any) -> DictConfig:
    """Merge a `model:` section into the schema and validate it; returns a typed DictConfig."""
    merged = schema_merge(ModelConfig, cfg, "model")
    validate(merged)
    return merged


def load_shape_config(cfg: Any) -> DictConfig:
    """A `model:` section typed and validated without its growth start: the shape, layout and
    training settings alone (what growth plans, reports and estimates compare)."""
    if isinstance(cfg, DictConfig):  # resolved in its job, where `${train_tokens}` lives
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return load_model_config({**cfg, "growth": {}})
