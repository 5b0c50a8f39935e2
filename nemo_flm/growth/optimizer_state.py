"""Adam state across a growth (the MSG rule): moments copied into the old block, zeros for new
entries and for whole new layers (copied layers are new parameters), the step count kept."""
from __future__ import annotations

import dataclasses
from typing import Dict

import torch
from torch import Tensor

from nemo_flm.growth.operators import grow_state_dict, zero_fill
from nemo_flm.growth.plan import GrowthPlan

MOMENTS = ("exp_avg", "exp_avg_sq")


def named_adam_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Dict[str, Tensor]]:
    """Parameter name -> its Adam state (exp_avg, exp_avg_sq, step)."""
    return {name: dict(optimizer.state[p]) for name, p in model.named_parameters() if p in optimizer.state}


def grow_adam_state(state: Dict[str, Dict[str, Tensor]], plan: GrowthPlan) -> Dict[str, Dict[str, Tensor]]:
    """The grown per-name Adam state."""
    fresh_layers = dataclasses.replace(plan, source=[None if j in plan.new_layers else s for j, s in enumerate(plan.source)])
    grown = {m: grow_state_dict({n: s[m] for n, s in state.items()}, fresh_layers, zero_fill) for m in MOMENTS}
    step = next(iter(state.values()))["step"] if state else torch.tensor(0.0)
    return {name: {"step": step.clone(), **{m: grown[m][name] for m in MOMENTS}} for name in grown[MOMENTS[0]]}


def load_adam_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Dict[str, Dict[str, Tensor]]) -> None:
    """Install per-name Adam state into an optimizer built over `model`'s parameters."""
    for name, param in model.named_parameters():
        if name in state:
            optimizer.state[param] = {k: v.clone() for k, v in state[name].items()}
