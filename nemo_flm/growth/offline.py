"""Offline growth of a stage checkpoint: `scripts/grow_checkpoint.py` and the staged runner use it.

The input (a Lightning checkpoint of FLMModel, or a .nemo) is memory-mapped, not read whole, and
each grown tensor is written as soon as it is made (growth/init_file.py), so the anonymous memory
of a growth stays near a few of the largest tensors rather than twice the model. The input is
never modified; an existing output is refused before any work.
"""
from __future__ import annotations

import copy
import os
import tarfile
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
from megatron.core import parallel_state
from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.config import ConfigError, load_model_config
from nemo_flm.growth.init_file import write_grown_init
from nemo_flm.growth.operators import default_fill, iter_grown
from nemo_flm.growth.optimizer_state import adam_step, iter_grown_moments
from nemo_flm.growth.plan import GrowthPlan, make_plan
from nemo_flm.model.builder import build_model
from nemo_flm.training.optim import param_groups


def _skeleton(model_cfg: Any):
    """The model's parameter names and full (TP=1) shapes, on the meta device (no memory)."""
    full = copy.deepcopy(model_cfg)
    full.parallel.tensor_model_parallel_size = full.parallel.pipeline_model_parallel_size = 1
    full.parallel.sequence_parallel = False
    if not parallel_state.model_parallel_is_initialized():
        parallel.initialize(full.parallel, full.seed)
    elif parallel.tp_world_size() != 1:
        raise RuntimeError("offline growth reads full (TP=1) checkpoints: run it outside a tensor-parallel job")
    with torch.device("meta"):
        return build_model(full)


def _adam_by_name(optim: Dict[str, Any], skeleton) -> Dict[str, Dict]:
    """Lightning stores Adam state by parameter index in optimizer order: map it to names."""
    names = {id(p): n for n, p in skeleton.named_parameters()}
    ordered = [names[id(p)] for group in param_groups(skeleton, 0.0) for p in group["params"]]
    ids = [i for group in optim["param_groups"] for i in group["params"]]
    return {name: optim["state"][i] for name, i in zip(ordered, ids) if i in optim["state"]}


def read_checkpoint(src: str, workdir: str) -> Tuple[Dict[str, Any], Dict[str, Dict], Any, int]:
    """(model state, Adam state by name, model config, consumed samples), tensors memory-mapped."""
    if not os.path.exists(src):
        raise FileNotFoundError(f"checkpoint '{src}' not found")
    if src.endswith(".nemo"):
        with tarfile.open(src) as tar:
            members = [m for m in tar.getmembers() if os.path.basename(m.name) in ("model_weights.ckpt", "model_config.yaml")]
            tar.extractall(workdir, members=members, filter="data")
        state = torch.load(os.path.join(workdir, "model_weights.ckpt"), mmap=True, map_location="cpu", weights_only=True)
        cfg = OmegaConf.load(os.path.join(workdir, "model_config.yaml"))
        ckpt = {"state_dict": state, "optimizer_states": None, "consumed_samples": 0}
    else:
        ckpt = torch.load(src, mmap=True, map_location="cpu", weights_only=False)
        cfg = ckpt["hyper_parameters"]["cfg"]
    model_cfg = load_model_config({**cfg, "growth": {}})
    model_state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    skeleton = _skeleton(model_cfg)
    for name, param in skeleton.named_parameters():
        if name not in model_state or tuple(model_state[name].shape) != tuple(param.shape):
            raise ConfigError(f"checkpoint '{src}' does not match its own config at '{name}': not an FLM checkpoint?")
    adam = _adam_by_name(ckpt["optimizer_states"][0], skeleton) if ckpt.get("optimizer_states") else {}
    return model_state, adam, model_cfg, int(ckpt.get("consumed_samples", 0))


def grow_checkpoint(src: str, new_model_cfg: Any, out: str, depth_mode: str = "stack",
                    init_std: Optional[float] = None, seed: int = 0) -> GrowthPlan:
    """Grow checkpoint `src` to `new_model_cfg`, writing the grown checkpoint directory `out`."""
    if os.path.exists(out):
        raise FileExistsError(f"output '{out}' exists: choose another --output or delete it")
    new_cfg = load_model_config({**new_model_cfg, "growth": {}})
    with tempfile.TemporaryDirectory() as workdir:
        model_state, adam, old_cfg, consumed = read_checkpoint(src, workdir)
        plan = make_plan(old_cfg, new_cfg, depth_mode)
        std = init_std if init_std is not None else new_cfg.init_method_std
        fill = default_fill(std, torch.Generator().manual_seed(seed))
        moments = iter_grown_moments(adam, plan) if adam else iter(())
        write_grown_init(out, iter_grown(model_state, plan, fill), moments, plan,
                         step=adam_step(adam) if adam else None, consumed_samples=consumed)
    return plan
