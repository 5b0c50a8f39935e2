"""The grown-init file: what one growth event hands to the next stage's training.

It holds the grown model state (full TP=1 layout), the grown per-name Adam state, the plan
(which coordinates and layers are new, for the masks) and the samples consumed so far. Written under a temporary name, renamed
when complete; the input checkpoint is never modified.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict

import torch

from nemo_flm.growth.plan import GrowthPlan


def save_grown_init(path: str, model_state: Dict[str, Any], adam_state: Dict[str, Any], plan: GrowthPlan,
                    consumed_samples: int = 0) -> None:
    """`consumed_samples`: where the previous stage stopped in the data, so the next one continues."""
    tmp = f"{path}.partial{os.getpid()}"
    payload = {"model": model_state, "adam": adam_state, "plan": dataclasses.asdict(plan),
               "consumed_samples": consumed_samples}
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_grown_init(path: str) -> Dict[str, Any]:
    """{'model': state dict, 'adam': per-name Adam state, 'plan': GrowthPlan, 'consumed_samples': int}."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"grown-init file '{path}' is unreadable ({type(err).__name__}): delete it to regrow") from None
    payload["plan"] = GrowthPlan(**payload["plan"])
    return payload
