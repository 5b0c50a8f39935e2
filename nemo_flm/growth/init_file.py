"""The grown checkpoint: what one growth event hands to the next stage's training.

A directory, written tensor by tensor so that growth never holds the model twice:
    index.json                 plan, samples consumed so far, Adam step, tensor names
    model/<name>.safetensors   grown weights, full (TP=1) layout, one tensor per file
    exp_avg/<name>.safetensors, exp_avg_sq/<name>.safetensors   grown Adam moments (optional)
It is written as `<path>.partial/` and renamed when complete; readers copy one tensor at a time
into this rank's tensor-parallel shard, so any TP size can start from it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from nemo_flm.growth.plan import GrowthPlan
from nemo_flm.model.sharding import shard_of

MOMENT_DIRS = ("exp_avg", "exp_avg_sq")


def _save(root: str, group: str, name: str, tensor: Tensor) -> None:
    save_file({"t": tensor.contiguous()}, os.path.join(root, group, f"{name}.safetensors"))


def write_grown_init(
    path: str,
    model_items: Iterable[Tuple[str, Any]],
    moment_items: Iterable[Tuple[str, str, Tensor]],
    plan: GrowthPlan,
    step: Optional[Tensor] = None,
    consumed_samples: int = 0,
) -> None:
    """Stream grown tensors to disk; `moment_items` may be empty (no optimizer state to carry)."""
    if os.path.exists(path):
        raise FileExistsError(f"grown checkpoint '{path}' exists: choose another output or delete it")
    tmp = f"{path}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for group in ("model", *MOMENT_DIRS):
        os.makedirs(os.path.join(tmp, group))
    names = []
    for name, value in model_items:
        if torch.is_tensor(value):  # megatron's `_extra_state` entries hold no tensor
            _save(tmp, "model", name, value)
            names.append(name)
    moments = 0
    for moment, name, value in moment_items:
        _save(tmp, moment, name, value)
        moments += 1
    index = {"plan": dataclasses.asdict(plan), "consumed_samples": consumed_samples, "tensors": names,
             "adam_step": float(step) if moments else None}
    with open(os.path.join(tmp, "index.json"), "w") as handle:
        json.dump(index, handle, indent=1)
    os.replace(tmp, path)


def read_index(path: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(path, "index.json")) as handle:
            index = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"grown checkpoint '{path}' is unreadable ({type(err).__name__}): delete it to regrow") from None
    index["plan"] = GrowthPlan(**index["plan"])
    return index


def _load(path: str, group: str, name: str) -> Tensor:
    return load_file(os.path.join(path, group, f"{name}.safetensors"))["t"]


def copy_weights(model: torch.nn.Module, path: str) -> None:
    """Copy the grown weights into `model` (this rank's TP shards), one tensor at a time."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(shard_of(model, {name: _load(path, "model", name)})[name])


def load_adam(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Install the grown Adam state (if the checkpoint has one) into an optimizer over `model`."""
    step = read_index(path)["adam_step"]
    if step is None:
        return
    for name, param in model.named_parameters():
        moments = {m: shard_of(model, {name: _load(path, m, name)})[name] for m in MOMENT_DIRS}
        optimizer.state[param] = {"step": torch.tensor(step), **moments}
