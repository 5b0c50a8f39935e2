"""Offline growth of a stage checkpoint: `scripts/grow_checkpoint.py` and the staged runner use it.

The input (an exp_manager checkpoint of FLMModel, or a .nemo) is a sharded checkpoint
(checkpoint/shards.py): its tensors are memory-mapped, not read whole, and each grown tensor is
written as soon as it is made (growth/grown_checkpoint.py), so the anonymous memory of a growth stays
near a few of the largest tensors rather than twice the model. An input written at TP > 1 is first
consolidated into the TP=1 layout on disk, one tensor at a time. The input is never modified; an
existing output is refused before any work.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from torch import Tensor

from nemo_flm.checkpoint.lightning_io import ADAM_STEP
from nemo_flm.checkpoint.shards import consolidate
from nemo_flm.checkpoint.source import open_checkpoint
from nemo_flm.checkpoint.weights import MOMENTS
from nemo_flm.config import load_shape_config
from nemo_flm.errors import ConfigError
from nemo_flm.growth.grown_checkpoint import write_grown_checkpoint
from nemo_flm.growth.operators import default_fill, grown_entries
from nemo_flm.growth.optimizer_state import grown_moment_entries
from nemo_flm.growth.plan import GrowthPlan, make_plan
from nemo_flm.model import mup
from nemo_flm.model.sharding import partition_dims
from nemo_flm.model.skeleton import full_shape, skeleton

PREFIX = "model."  # FLMModel keeps the network in .model


@dataclass
class StageCheckpoint:
    """A checkpoint opened for growth: lazily read full tensors keyed by network parameter name."""

    model: Mapping[str, Tensor]
    moments: Dict[str, Mapping[str, Tensor]]  # {"exp_avg": ..., "exp_avg_sq": ...}, or empty
    adam_step: Optional[float]
    config: Any
    consumed_samples: int


def read_checkpoint(src: str, workdir: str) -> StageCheckpoint:
    """Open `src`, checked against its own config; `workdir` holds extracted or consolidated files."""
    reader, cfg, state = open_checkpoint(src)
    model_cfg = load_shape_config(cfg)
    for name, param in skeleton(model_cfg).named_parameters():
        key = PREFIX + name
        if key not in reader.names("model") or reader.shape("model", key) != full_shape(param):
            raise ConfigError(f"checkpoint '{src}' does not match its own config at '{name}': not an FLM checkpoint?")
    moments = [m for m in MOMENTS if reader.names(m)]
    if reader.tp_size > 1:
        reader = consolidate(reader, os.path.join(workdir, "tp1"), ["model", *moments])
    step = state.get(ADAM_STEP)
    return StageCheckpoint(
        reader.group("model", PREFIX),
        {m: reader.group(m, PREFIX) for m in moments},
        step if moments else None,
        model_cfg,
        int(state.get("consumed_samples", 0)),
    )


def grow_checkpoint(
    src: str,
    new_model_cfg: Any,
    out: str,
    depth_mode: str = "stack",
    init_std: Optional[float] = None,
    seed: int = 0,
    workers: int = 1,
) -> GrowthPlan:
    """Grow checkpoint `src` to `new_model_cfg`, writing the grown checkpoint directory `out`,
    `workers` tensors at a time."""
    if os.path.exists(out):
        raise FileExistsError(f"output '{out}' exists: choose another --output or delete it")
    new_cfg = load_shape_config(new_model_cfg)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as workdir:
        ckpt = read_checkpoint(src, workdir)
        plan = make_plan(ckpt.config, new_cfg, depth_mode)
        std = init_std if init_std is not None else new_cfg.init_method_std
        fill = default_fill(std, seed, mup.width_mult(new_cfg))
        moments = grown_moment_entries(ckpt.moments, plan) if ckpt.moments else iter(())
        write_grown_checkpoint(
            out,
            grown_entries(ckpt.model, plan, fill),
            moments,
            plan,
            partition_dims(skeleton(new_cfg)),
            step=ckpt.adam_step,
            consumed_samples=ckpt.consumed_samples,
            workers=workers,
        )
    return plan
