"""The model on the meta device: parameter names, full shapes and TP partition dims without memory.

Offline growth and the HF import ask it what a config's parameters are and how megatron splits
them over tensor parallelism (model/sharding.py), rather than restating megatron's choices.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from nemo_flm import parallel
from nemo_flm.config import ffn_size
from nemo_flm.errors import ConfigError
from nemo_flm.model.builder import build_model
from nemo_flm.model.gpt import FLMGPTModel


def skeleton(model_cfg: Any) -> FLMGPTModel:
    """The model on the meta device at this process's TP size (1 when no job is running)."""
    cfg = copy.deepcopy(model_cfg)
    cfg.parallel.pipeline_model_parallel_size = 1
    cfg.parallel.sequence_parallel = False
    if not parallel.groups_ready():
        cfg.parallel.tensor_model_parallel_size = 1
        parallel.initialize(cfg.parallel, cfg.seed)
    cfg.parallel.tensor_model_parallel_size = tp = parallel.tp_size()
    if cfg.num_attention_heads % tp or ffn_size(cfg) % tp:
        raise ConfigError(
            f"a model with {cfg.num_attention_heads} heads and FFN {ffn_size(cfg)} does not split over "
            f"this job's tensor-parallel size {tp}: run this step in its own process (the scripts do)"
        )
    with torch.device("meta"):
        return build_model(cfg)


def full_shape(param: torch.nn.Parameter) -> torch.Size:
    """The whole tensor's shape of this rank's (possibly TP-split) parameter."""
    shape = list(param.shape)
    if getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= parallel.tp_size()
    return torch.Size(shape)
