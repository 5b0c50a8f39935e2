"""What a step does when its loss or gradients hold NaN or Inf (optim.on_nonfinite).

stop: raise before the optimizer touches the weights, so the run ends with its last checkpoint
intact (re-running resumes from it); skip: leave weights and Adam state as they were and go on
with the next batch (FLMModel logs one line naming the step). Every rank reaches the same decision: the flag is reduced
(MIN) over the whole world, on the device of the tensors checked.
"""

from __future__ import annotations

from typing import Iterable

import torch

from nemo_flm import parallel


class NonFiniteError(RuntimeError):
    """A step's loss or gradients were not finite and optim.on_nonfinite is stop."""


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every tensor on every rank is finite."""
    tensors = list(tensors)
    flag = torch.stack([torch.isfinite(t).all() for t in tensors]).all().float()
    return bool(parallel.all_reduce(flag, op="min").item())


def check(policy: str, what: str) -> None:
    """A non-finite step: raise under `stop`; under `skip` return, and the caller skips the update."""
    if policy == "stop":
        raise NonFiniteError(
            f"{what}: stopping before the update (the last checkpoint is kept); re-run to resume from it, "
            "or set model.optim.on_nonfinite=skip to skip such updates"
        )
