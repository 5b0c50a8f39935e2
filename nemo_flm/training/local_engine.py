"""The local engine: a plain micro-batch loop with torch AdamW, for CPUs and single-stage debugging.

PP = 1 and no sequence parallelism (training/engine.py refuses both here). Gradients are summed
over data parallel in one flat all-reduce (parallel.reduce_grads) and clipped with the TP-correct
norm of training/optim.py.

Devices: every tensor that takes part in a collective (token count, loss sum, gradients, the
gradient-norm square) lives on the model's device, which is the device the process group's
backend serves (CPU/gloo here, CUDA/NCCL when this engine is chosen on GPUs). The step syncs the
host once, at its end, for the logged numbers.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch

from nemo_flm import parallel
from nemo_flm.checkpoint.pieces import Piece
from nemo_flm.checkpoint.weights import MOMENTS, shard_pieces
from nemo_flm.training.forward_step import Batch, micro_batch_losses
from nemo_flm.training.nonfinite import all_finite, check
from nemo_flm.training.optim import build_optimizer, clip_grad_norm


class LocalEngine:
    def __init__(self, model: torch.nn.Module, optim: Any, micro_batch_size: int):
        self.model = model
        self.optimizer = build_optimizer(model, optim)
        self.clip_grad = optim.clip_grad
        self.on_nonfinite = optim.on_nonfinite
        self.skipped = False  # whether the last step's update was skipped (non-finite, training/nonfinite.py)
        self.micro_batch_size = micro_batch_size
        self.grad_norm = torch.zeros(())

    def rebind(self, chunks) -> None:
        """The network was replaced (the MSG fold); it holds the same parameters."""
        (self.model,) = chunks

    def sync_weights(self) -> None:
        """Every rank's weights are whole after each update here (no deferred all-gather)."""

    def checkpoint_pieces(self, save: bool, moments: bool) -> List[Piece]:
        """This rank's weights and, with `moments`, its Adam moments: each TP shard whole."""
        return shard_pieces(self.model, save, (lambda p: self.optimizer.state.get(p, {})) if moments else None)

    def adam_step(self) -> float:
        """AdamW's step count (0 before the first update)."""
        return max((float(state["step"]) for state in self.optimizer.state.values()), default=0.0)

    def prepare_state(self) -> None:
        """Zero Adam state for every parameter, which a checkpoint's moments are read into."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                zeros = [torch.zeros_like(param, memory_format=torch.preserve_format) for _ in MOMENTS]
                self.optimizer.state[param] = {"step": torch.tensor(0.0), **dict(zip(MOMENTS, zeros))}

    def finish_load(self, step: Optional[float]) -> None:
        """The step count of every parameter's state, once its moments are read."""
        if step is not None:
            for state in self.optimizer.state.values():
                state["step"] = torch.tensor(float(step))

    def train_step(
        self, batch: Batch, optimizer_step: Optional[Callable] = None, before_update: Callable[[], None] = lambda: None
    ) -> Tuple[float, float]:
        """(loss, gradient norm before clipping) of one optimizer step. `optimizer_step` is the
        optimizer's step as Lightning wraps it (so it counts the step); it runs the closure first.
        `before_update` runs between backward and the update (an async checkpoint's copy ends there)."""
        step = optimizer_step or self.optimizer.step
        loss = step(closure=lambda: self._closure(batch, before_update))
        return loss.item(), self.grad_norm.item()

    def _closure(self, batch: Batch, before_update: Callable[[], None]) -> torch.Tensor:
        result = self._forward_backward(batch)
        before_update()
        return result

    def _forward_backward(self, batch: Batch) -> torch.Tensor:
        """Accumulate the gradients of the global-token-mean loss, reduce and clip them; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        device = next(self.model.parameters()).device
        total = parallel.all_reduce(batch["loss_mask"].sum().to(device, torch.float32), parallel.dp_group())
        total = total.clamp_min(1.0)
        loss = torch.zeros((), dtype=torch.float32, device=device)
        for summed, _ in micro_batch_losses(self.model, batch, self.micro_batch_size):
            (summed / total).backward()
            loss += summed.detach().float()
        params = [p for p in self.model.parameters() if p.requires_grad]
        parallel.reduce_grads(params)
        self.grad_norm = clip_grad_norm(params, self.clip_grad)
        loss = parallel.all_reduce(loss, parallel.dp_group()) / total
        self.skipped = not all_finite([loss, self.grad_norm])
        if self.skipped:
            check(self.on_nonfinite, f"non-finite loss {loss.item():.4g} or gradient norm {self.grad_norm.item():.4g}")
            for param in params:  # AdamW leaves parameters without a gradient (and their state) untouched
                param.grad = None
        return loss
