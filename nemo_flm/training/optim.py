"""AdamW with FLM's settings, NeMo's cosine schedule, and a TP-correct gradient clip.

Parameters are grouped by role: the hidden matrices (q|k|v, attention output, fc1, fc2), the other
matrices (embeddings, output layer), and the vectors (biases, LayerNorms). Weight decay applies to
matrices only. Each group carries `lr_mult`, the μP factor on the configured LR schedule that the
model build tags on every parameter (model/mup.py; 1 without μP), and the scheduler applies it.

The local engine's gradient norm (megatron's helper is CUDA-only): tensor-parallel shards count on
every rank, replicated parameters on TP rank 0 only, and the squares are summed over the
model-parallel group, so the norm equals the TP=1 norm. The megatron engine uses megatron's own
clip inside its optimizer.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List

import torch
from nemo.core.optim.lr_scheduler import CosineAnnealing

from nemo_flm import parallel
from nemo_flm.model.layout import is_hidden_matrix

ROLES = ("decay", "no_decay", "hidden")  # group order: the LR logged is group 0's


def param_role(name: str, param: torch.Tensor) -> str:
    if param.ndim < 2:
        return "no_decay"
    return "hidden" if is_hidden_matrix(name) else "decay"


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """One named group per role, with its weight decay and μP LR multiplier. Every rank has all
    three, empty where its pipeline stage holds none of a role, so checkpoints line up."""
    members: Dict[str, List[torch.Tensor]] = {role: [] for role in ROLES}
    for name, param in model.named_parameters():
        if param.requires_grad:
            members[param_role(name, param)].append(param)
    groups = []
    for role, params in members.items():
        mults = {getattr(p, "lr_mult", 1.0) for p in params} or {1.0}
        if len(mults) > 1:
            raise ValueError(f"the {role} parameters carry different LR multipliers {sorted(mults)}: rebuild the model")
        decay = 0.0 if role == "no_decay" else weight_decay
        groups.append({"params": params, "name": role, "weight_decay": decay, "lr_mult": mults.pop()})
    return groups


def build_optimizer(model: torch.nn.Module, optim: Any) -> torch.optim.AdamW:
    """AdamW over param_groups, each group starting at the configured LR x its μP multiplier."""
    groups = [{**group, "lr": optim.lr * group["lr_mult"]} for group in param_groups(model, optim.weight_decay)]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)


def optimizer_param_names(model: torch.nn.Module, prefix: str = "") -> List[str]:
    """Parameter names in the order build_optimizer numbers them (torch keys state by number)."""
    names = {id(p): f"{prefix}{n}" for n, p in model.named_parameters()}
    return [names[id(p)] for group in param_groups(model, 0.0) for p in group["params"]]


def state_by_name(state: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    """An optimizer state dict keyed by parameter name: valid across TP sizes and growth."""
    return {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def state_by_index(state: Dict[str, Any], names: List[str], groups: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The inverse of state_by_name, for optimizer.load_state_dict over this rank's parameters
    `names` (build_optimizer's order, in its `groups`, optimizer_groups): entries of parameters
    this rank does not hold (other pipeline stages) are dropped, and each group lists this rank's
    own parameters, so the state loads whatever layout (and stage order) wrote it.

    Saved groups are matched by role name (checkpoints before roles had two unnamed groups:
    matrices, then vectors). A group's LR multiplier comes from this model's build, not the
    checkpoint, and its saved LR is re-based on it."""
    saved = {g.get("name", ROLES[i]): g for i, g in enumerate(state["param_groups"])}
    out, start = [], 0
    for group in groups:
        old = saved.get(group["name"], saved["decay"])  # "hidden" was part of "decay" before roles
        size = len(group["params"])
        lr = old["lr"] / old.get("lr_mult", 1.0) * group["lr_mult"]
        out.append(
            {
                **old,
                "name": group["name"],
                "lr_mult": group["lr_mult"],
                "lr": lr,
                "params": list(range(start, start + size)),
            }
        )
        start += size
    index = {name: i for i, name in enumerate(names)}
    return {"state": {index[n]: s for n, s in state["state"].items() if n in index}, "param_groups": out}


def optimizer_groups(model: torch.nn.Module) -> List[Dict[str, Any]]:
    """build_optimizer's groups of `model` (names, multipliers, parameters)."""
    return param_groups(model, 0.0)


def schedule_steps(optim: Any, global_batch_size: int) -> Dict[str, int]:
    """Warmup and cosine-decay lengths in optimizer steps from the configured sample counts."""
    return {
        "warmup_steps": math.ceil(optim.lr_warmup_samples / global_batch_size),
        "max_steps": max(1, math.ceil(optim.lr_decay_samples / global_batch_size)),
    }


class GroupCosineAnnealing(CosineAnnealing):
    """NeMo's cosine schedule of the configured LR, times each param group's `lr_mult` (μP), as
    megatron's own scheduler applies it: min_lr and the warmup scale with the group. Groups start
    at the configured LR x lr_mult (so an engine trains right without a scheduler too); the
    schedule's base is that LR over the multiplier."""

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs: Any):
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"] / group.get("lr_mult", 1.0))
        super().__init__(optimizer, **kwargs)

    def get_lr(self) -> List[float]:
        return [lr * group.get("lr_mult", 1.0) for lr, group in zip(super().get_lr(), self.optimizer.param_groups)]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Every group runs the one configured schedule, so a state saved over other groups (two
        before roles; megatron's groups, which the other engine does not have) fits these: its base
        LR for each, and the last LRs that the loaded optimizer groups hold (state_by_index)."""
        base = [state_dict["base_lrs"][0]] * len(self.optimizer.param_groups)
        super().load_state_dict({**state_dict, "base_lrs": base})
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_scheduler(optimizer: torch.optim.Optimizer, optim: Any, global_batch_size: int) -> CosineAnnealing:
    """Linear warmup, cosine decay to min_lr over lr_decay_samples, then min_lr (NeMo's scheduler),
    per group x its μP multiplier."""
    return GroupCosineAnnealing(optimizer, min_lr=optim.min_lr, **schedule_steps(optim, global_batch_size))


def schedule_lr(optimizer: torch.optim.Optimizer) -> float:
    """The configured schedule's current LR (group 0's LR over its μP multiplier): what runs log."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_mult", 1.0)


def _counts_on_this_rank(param: torch.Tensor) -> bool:
    return getattr(param, "tensor_model_parallel", False) or parallel.tp_rank() == 0


def grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients across the model-parallel group (fp32), on the parameters'
    device (the one the process group's backend serves), with no host sync. A rank whose
    parameters hold no gradient still takes part, with a zero on that device (a CPU tensor would
    reach NCCL on a GPU run)."""
    params = list(params)
    grads = [p.grad.detach().float() for p in params if p.grad is not None and _counts_on_this_rank(p)]
    device = params[0].device if params else torch.device("cpu")
    squares = torch.stack([g.pow(2).sum() for g in grads]).sum() if grads else torch.zeros((), device=device)
    parallel.all_reduce(squares, parallel.mp_group())
    return squares.sqrt()


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients so the global norm is at most max_norm; returns the norm before clipping."""
    params = list(params)
    norm = grad_norm(params)
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm > 0 and grads:
        coeff = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, coeff.to(grads[0].dtype))
    return norm
