"""Load a trained FLM network for inference from a .nemo or a training checkpoint.

Inference needs the network and its config, nothing else: no trainer, no optimizer, no training
data (a .nemo moved to another machine restores without its corpus). The network is built at the
requested tensor-parallel size (-1: as saved, NeMo's convention) on one pipeline stage, and every
tensor is read at this rank's TP shard, whatever layout wrote it (checkpoint/shards.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from nemo_flm import parallel
from nemo_flm.checkpoint.shards import ShardReader
from nemo_flm.checkpoint.source import open_checkpoint
from nemo_flm.checkpoint.weights import MODEL
from nemo_flm.config import load_shape_config
from nemo_flm.errors import ConfigError
from nemo_flm.model.builder import build_model
from nemo_flm.model.gpt import FLMGPTModel
from nemo_flm.model.sharding import global_names

PREFIX = "model."  # FLMModel keeps the network in .model; checkpoints use its names


@dataclass
class InferenceModel:
    network: FLMGPTModel
    cfg: DictConfig


def inference_config(saved: Any, tensor_model_parallel_size: int = -1, overrides: Optional[Mapping] = None):
    """The saved model config laid out for inference: one pipeline stage, TP as saved (-1) or as
    asked, no sequence parallelism, no growth start; `overrides` (e.g. blockwise_attention,
    params_dtype) merged on top and the result validated."""
    cfg = OmegaConf.to_container(saved, resolve=True) if isinstance(saved, DictConfig) else copy.deepcopy(saved)
    par = cfg.setdefault("parallel", {})
    if tensor_model_parallel_size != -1:
        par["tensor_model_parallel_size"] = tensor_model_parallel_size
    par.update(pipeline_model_parallel_size=1, virtual_pipeline_model_parallel_size=None, sequence_parallel=False)
    cfg = OmegaConf.merge(cfg, dict(overrides or {}))
    return load_shape_config(cfg)


def load_weights(network: torch.nn.Module, reader: ShardReader, src: str) -> None:
    """This rank's shard of every tensor, by its name in the whole model."""
    rank, size = parallel.tp_rank(), parallel.tp_size()
    own = network.state_dict()
    state = {}
    for local, name in global_names(network, PREFIX).items():
        if name not in reader.tensors[MODEL]:
            continue  # megatron's empty _extra_state entries are not stored
        tensor = reader.read(MODEL, name, rank, size)
        expected = own[local[len(PREFIX) :]].shape
        if tensor.shape != expected:
            raise ConfigError(
                f"'{src}' holds '{name}' with shape {tuple(tensor.shape)} where this model at TP {size} has "
                f"{tuple(expected)}: the saved config and weights disagree, or TP changes the padded vocab"
            )
        state[local[len(PREFIX) :]] = tensor
    network.load_state_dict(state, strict=False)
    missing = [k for k, v in own.items() if torch.is_tensor(v) and k not in state]
    if missing:
        raise ConfigError(f"'{src}' has no tensor for '{missing[0]}' (and {len(missing) - 1} more): not this model")


def load_for_inference(
    path: str, tensor_model_parallel_size: int = -1, overrides: Optional[Mapping] = None
) -> InferenceModel:
    """The network of a .nemo or checkpoint directory, in eval mode, on this process's device."""
    reader, saved, _ = open_checkpoint(path)
    cfg = inference_config(saved, tensor_model_parallel_size, overrides)
    parallel.initialize(cfg.parallel, cfg.seed)
    network = build_model(cfg)
    load_weights(network, reader, path)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return InferenceModel(network.to(device).eval(), cfg)
