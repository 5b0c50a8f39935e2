"""The forward step shared by both engines, in megatron's `forward_step(data_iterator, model)` form.

megatron's schedules (training/megatron_engine.py) call it once per micro-batch on every pipeline
stage and apply the returned loss function on the last stage; the local engine
(training/local_engine.py) calls both itself. The loss function returns megatron's triple
(summed loss, token count, logged values): with `calculate_per_token_loss` the step's loss is the
mean over every loss-masked token of the global batch, so gradient accumulation, data and pipeline
parallelism give the same update as one big batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Iterator, List, Tuple

import torch
from torch import Tensor

Batch = Dict[str, Tensor]
LOGGED = "loss_sum_and_tokens"  # the key of the loss function's logged values


def micro_batches(batch: Batch, micro_batch_size: int) -> List[Batch]:
    size = batch["tokens"].shape[0]
    return [
        {k: v[start : start + micro_batch_size] for k, v in batch.items()} for start in range(0, size, micro_batch_size)
    ]


def masked_loss(loss_mask: Tensor, per_token: Tensor) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """(sum of the loss-masked per-token losses, their count, both detached for logging), all on
    the device of the losses."""
    mask = loss_mask.to(device=per_token.device, dtype=per_token.dtype)
    summed = (per_token * mask).sum()
    tokens = mask.sum()
    return summed, tokens.to(torch.int), {LOGGED: torch.stack([summed.detach().float(), tokens.detach().float()])}


def forward_step(data_iterator: Iterator[Batch], model: torch.nn.Module) -> Tuple[Tensor, Callable]:
    """One micro-batch: per-token losses [b, s] on the last pipeline stage (hidden states on the
    others, which megatron sends on), and the loss function for them."""
    micro = next(data_iterator)
    output = model(micro["tokens"], micro["position_ids"], None, labels=micro["labels"])
    return output, partial(masked_loss, micro["loss_mask"])


def micro_batch_losses(model: torch.nn.Module, batch: Batch, micro_batch_size: int) -> Iterator[Tuple[Tensor, Tensor]]:
    """(summed loss, loss tokens) of each micro-batch in turn, the forward step run directly on
    one model (no pipeline schedule): the local engine's loop and single-stage validation."""
    for micro in micro_batches(batch, micro_batch_size):
        output, loss_func = forward_step(iter([micro]), model)
        summed, tokens, _ = loss_func(output)
        yield summed, tokens
