"""AdamW with FLM's settings, NeMo's cosine schedule, and a TP-correct gradient clip.

Weight decay applies to matrices (linear weights, embeddings, output layer) and not to biases or
LayerNorm parameters. The local engine's gradient norm (megatron's helper is CUDA-only):
tensor-parallel shards count on every rank, replicated parameters on TP rank 0 only, and the
squares are summed over the model-parallel group, so the norm equals the TP=1 norm. The megatron
engine uses megatron's own clip inside its optimizer.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List

import torch
from megatron.core import parallel_state
from nemo.core.optim.lr_scheduler import CosineAnnealing

from nemo_flm import parallel


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, optim: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, optim.weight_decay), lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps
    )


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


def state_by_index(state: Dict[str, Any], names: List[str], group_sizes: List[int]) -> Dict[str, Any]:
    """The inverse of state_by_name, for optimizer.load_state_dict over this rank's parameters
    `names` (build_optimizer's order, in groups of `group_sizes`): entries of parameters this rank
    does not hold (other pipeline stages) are dropped, and each group lists this rank's own
    parameters, so the state loads whatever layout (and stage order) wrote it."""
    index = {name: i for i, name in enumerate(names)}
    groups, start = [], 0
    for group, size in zip(state["param_groups"], group_sizes):
        groups.append({**group, "params": list(range(start, start + size))})
        start += size
    return {"state": {index[n]: s for n, s in state["state"].items() if n in index}, "param_groups": groups}


def optimizer_group_sizes(model: torch.nn.Module) -> List[int]:
    """How many parameters each of build_optimizer's groups holds."""
    return [len(group["params"]) for group in param_groups(model, 0.0)]


def schedule_steps(optim: Any, global_batch_size: int) -> Dict[str, int]:
    """Warmup and cosine-decay lengths in optimizer steps from the configured sample counts."""
    return {
        "warmup_steps": math.ceil(optim.lr_warmup_samples / global_batch_size),
        "max_steps": max(1, math.ceil(optim.lr_decay_samples / global_batch_size)),
    }


def build_scheduler(optimizer: torch.optim.Optimizer, optim: Any, global_batch_size: int) -> CosineAnnealing:
    """Linear warmup, cosine decay to min_lr over lr_decay_samples, then min_lr (NeMo's scheduler)."""
    return CosineAnnealing(optimizer, min_lr=optim.min_lr, **schedule_steps(optim, global_batch_size))


def _counts_on_this_rank(param: torch.Tensor) -> bool:
    return getattr(param, "tensor_model_parallel", False) or parallel_state.get_tensor_model_parallel_rank() == 0


def grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients across the model-parallel group (fp32), on the gradients'
    device (the one the process group's backend serves), with no host sync."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None and _counts_on_this_rank(p)]
    device = grads[0].device if grads else torch.device("cpu")
    squares = torch.stack([g.pow(2).sum() for g in grads]).sum() if grads else torch.zeros((), device=device)
    parallel.all_reduce(squares, parallel_state.get_model_parallel_group())
    return squares.sqrt()


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients so the global norm is at most max_norm; returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    norm = grad_norm(params)
    if max_norm > 0 and params:
        coeff = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_([p.grad for p in params], coeff.to(params[0].grad.dtype))
    return norm
