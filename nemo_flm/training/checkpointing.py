"""A training checkpoint's tensors, through the engine: this rank's pieces out, and back in place.

FLMModel's Lightning hooks call these. Saving (attach): Lightning's checkpoint dict keeps the plain
data (loops, callbacks, schedulers, the optimizer's param groups by parameter name, Adam's step);
its tensors leave it as this rank's pieces (checkpoint/pieces.py), which FLMCheckpointIO writes
beside every other rank's (checkpoint/lightning_io.py). Loading (restore): every rank reads its
own pieces straight into its parameters and optimizer state, so a resuming rank holds no second
copy of anything, and Lightning is handed state dicts that already hold them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

import torch

from nemo_flm import parallel
from nemo_flm.checkpoint import dcp
from nemo_flm.checkpoint.lightning_io import ADAM_STEP, FOLDER, PIECES
from nemo_flm.checkpoint.pieces import Piece
from nemo_flm.checkpoint.weights import PREFIX, shard_pieces
from nemo_flm.model.sharding import global_names
from nemo_flm.training.optim import optimizer_groups, optimizer_param_names, state_by_index, state_by_name


def _pieces(network: torch.nn.Module, engine: Any, save: bool, moments: bool) -> List[Piece]:
    if engine is None:  # a module restored without an optimizer (validation, inference)
        return shard_pieces(network, save)
    return engine.checkpoint_pieces(save, moments)


def _param_order(network: torch.nn.Module, prefix: str) -> List[str]:
    names = global_names(network, prefix)
    return [names[n] for n in optimizer_param_names(network, prefix)]


def attach(checkpoint: Dict[str, Any], network: torch.nn.Module, engine: Any, prefix: str = PREFIX) -> None:
    """Before saving: this rank's pieces under PIECES; the state dict and the optimizer's tensors
    out of the checkpoint (its param groups stay, keyed by global parameter name)."""
    step = engine.adam_step() if engine is not None else 0.0
    checkpoint[PIECES] = _pieces(network, engine, save=True, moments=step > 0)
    checkpoint[ADAM_STEP] = step if step > 0 else None
    checkpoint["state_dict"] = {}
    order = _param_order(network, prefix)
    checkpoint["optimizer_states"] = [
        {"state": {}, "param_groups": state_by_name(state, order)["param_groups"]}
        for state in checkpoint.get("optimizer_states", [])
    ]


def restore(
    checkpoint: Dict[str, Any],
    network: torch.nn.Module,
    engine: Any,
    state_dict: Dict[str, Any],
    prefix: str = PREFIX,
) -> int:
    """After Lightning loaded the trainer state (FLMCheckpointIO): read this rank's pieces in
    place, then give Lightning the module's state dict and the optimizer's state, which already
    hold them (its own loading copies nothing new). Returns the bytes this rank read."""
    folder = checkpoint.pop(FOLDER)
    step: Optional[float] = checkpoint.get(ADAM_STEP)
    if engine is not None and step is not None:
        engine.prepare_state()
    started = time.perf_counter()
    read = dcp.load(_pieces(network, engine, save=False, moments=step is not None), folder, parallel.checkpoint_group())
    if engine is not None:
        engine.finish_load(step)
        saved = {"state": {}, "param_groups": checkpoint["optimizer_states"][0]["param_groups"]}
        groups = state_by_index(saved, _param_order(network, prefix), optimizer_groups(network))["param_groups"]
        checkpoint["optimizer_states"] = [{**engine.optimizer.state_dict(), "param_groups": groups}]
    checkpoint["state_dict"] = state_dict
    logging.info(
        "resumed from %s: %.3f GB read by this rank in %.1f s", folder, read / 1e9, time.perf_counter() - started
    )
    return read
