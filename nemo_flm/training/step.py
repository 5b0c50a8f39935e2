"""One training step: forward + loss over micro-batches, gradient reduction, clip, update.

The same functions serve the CPU loop and the GPU path (pipeline size 1). The loss of a step is the
mean over every loss-masked token of the global batch, so gradient accumulation and data
parallelism give the same update as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Tuple

import torch

from nemo_flm import parallel
from nemo_flm.training.optim import clip_grad_norm


@dataclass
class StepStats:
    loss: float
    grad_norm: float
    tokens: int


def micro_batches(batch: Dict[str, torch.Tensor], micro_batch_size: int) -> Iterator[Dict[str, torch.Tensor]]:
    size = batch["tokens"].shape[0]
    for start in range(0, size, micro_batch_size):
        yield {k: v[start : start + micro_batch_size] for k, v in batch.items()}


def loss_sum(model: torch.nn.Module, micro: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked per-token losses, number of loss tokens) of one micro-batch."""
    per_token = model(micro["tokens"], micro["position_ids"], None, labels=micro["labels"])  # [b, s]
    mask = micro["loss_mask"].to(per_token.dtype)
    return (per_token * mask).sum(), mask.sum()


def _global_tokens(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    tokens = batch["loss_mask"].sum().float().cpu()
    return parallel.all_reduce(tokens, parallel.dp_group()).clamp_min(1.0)


def train_step(model, batch, micro_batch_size: int, optimizer, clip_grad: float) -> StepStats:
    """Accumulate gradients of the global-token-mean loss, reduce, clip and step the optimizer."""
    optimizer.zero_grad(set_to_none=True)
    total = _global_tokens(batch)
    device = next(model.parameters()).device
    loss = torch.zeros((), dtype=torch.float32)
    for micro in micro_batches(batch, micro_batch_size):
        summed, _ = loss_sum(model, micro)
        (summed / total.to(device)).backward()
        loss += summed.detach().float().cpu()
    params = [p for p in model.parameters() if p.requires_grad]
    parallel.reduce_grads(params)
    norm = clip_grad_norm(params, clip_grad)
    optimizer.step()
    loss = parallel.all_reduce(loss, parallel.dp_group()) / total
    return StepStats(loss=loss.item(), grad_norm=norm.item(), tokens=int(total.item()))


@torch.no_grad()
def eval_sums(model, batch, micro_batch_size: int) -> Tuple[float, float]:
    """(loss sum, token count) of a batch, for token-weighted validation means."""
    total_loss, total_tokens = 0.0, 0.0
    for micro in micro_batches(batch, micro_batch_size):
        summed, tokens = loss_sum(model, micro)
        total_loss += summed.item()
        total_tokens += tokens.item()
    return total_loss, total_tokens
