"""megatron's distributed optimizer as the torch Optimizer that Lightning and NeMo's LR schedulers
expect (the role of NeMo 1.x's McoreDistributedOptimizer).

The LR scheduler writes `lr` into megatron's own param groups. The state dict is the local
engine's: torch AdamW's layout over nemo_flm's parameter order (training/optim.param_groups), with
every moment a whole tensor of this rank's TP shard, so checkpoints (keyed by parameter name,
checkpoint/lightning_io.py) resume at any layout and with either engine. megatron shards each
flattened parameter's fp32 main copy and Adam moments over the data-parallel group; `state_dict`
assembles them on DP rank 0 with one reduce per tensor over that group (every rank calls it:
Lightning builds the checkpoint on all ranks; DP rank 0 writes it) and `load_state_dict` keeps
this rank's range. Per-parameter access uses the distributed optimizer's range maps
(megatron-core 0.16.x). Checkpoint cost: the moments of this rank's parameters in host memory on
DP rank 0 (8 bytes per parameter, 12 with a bf16 model's fp32 main weights).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_flm.training.nonfinite import all_finite, check
from nemo_flm.training.optim import param_groups, schedule_lr

MOMENTS = ("exp_avg", "exp_avg_sq")
MAIN_PARAM = "main_param"  # the fp32 master copy of a low-precision parameter


class MegatronOptimizerAdapter(torch.optim.Optimizer):
    def __init__(self, optimizer: Any, network: torch.nn.Module, weight_decay: float, on_nonfinite: str = "stop"):
        # no super().__init__(): param groups and state belong to megatron's optimizer
        self.inner = optimizer
        # get_megatron_optimizer may chain one distributed optimizer per parameter buffer
        self.parts = list(getattr(optimizer, "chained_optimizers", [optimizer]))
        self.defaults: Dict[str, Any] = {}
        self.grad_norm = 0.0  # of the last step, before clipping
        self.on_nonfinite = on_nonfinite
        self.skipped = False  # whether the last step's update was skipped (non-finite, training/nonfinite.py)
        self.state: Dict[Any, Any] = {}
        self._groups = param_groups(network, weight_decay)  # nemo_flm's order: the state dict's numbering

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.inner.param_groups

    def step(self, closure=None):
        """Run the closure (forward and backward, training/megatron_engine.py), check that its loss
        and the gradient buffers are finite (training/nonfinite.py), then megatron's step: clip by
        the global norm, update the shards and all-gather the weights. Returns the closure's result."""
        result = closure() if closure is not None else None
        grads = [buffer.grad_data for part in self.parts for buffer in part.buffers]
        self.skipped = not all_finite([*([result] if result is not None else []), *grads])
        if self.skipped:
            check(self.on_nonfinite, "non-finite loss or gradients")
            self.grad_norm = float("nan")
            return result
        _, self.grad_norm, _ = self.inner.step()
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    def _params(self) -> List[Tensor]:
        return [p for group in self._groups for p in group["params"]]

    def _part(self, param: Tensor):
        """The distributed optimizer whose buffers hold `param` (on every DP rank, whether or not
        this rank's shard covers any of it)."""
        return next(part for part in self.parts if any(param in b.param_index_map for b in part.buffers))

    def _owned(self, param: Tensor):
        """(start, end) of the flattened parameter that this DP rank's optimizer holds, or None."""
        part = self._part(param)
        if param not in part.model_param_group_index_map:
            return None
        span = part._get_model_param_range_map(param)["param"]
        return span.start, span.end

    def _tensors(self, param: Tensor) -> Dict[str, Tensor]:
        """This rank's shard of the fp32 main parameter ('param') and of its Adam moments."""
        return self._part(param)._get_main_param_and_optimizer_states(param)

    def _step_count(self, device: torch.device) -> float:
        """Adam's step count: per parameter in torch's AdamW, per group in TE's and apex's FusedAdam."""
        steps = [float(self._tensors(p).get("step", 0)) for p in self._params() if self._owned(p)]
        steps += [float(g["step"]) for part in self.parts for g in part.optimizer.param_groups if "step" in g]
        count = torch.tensor(max(steps, default=0.0), device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=self.parts[0].data_parallel_group)
        return float(count)

    def _gather(self, param: Tensor, key: str) -> Optional[Tensor]:
        """The whole (TP-shard) tensor `key` of `param`, fp32, assembled on DP rank 0 (the rank
        that writes checkpoints, FLMStrategy); None on the others."""
        full = torch.zeros(param.numel(), dtype=torch.float32, device=param.device)
        owned = self._owned(param)
        if owned is not None:
            full[owned[0] : owned[1]] = self._tensors(param)[key]
        group = self._part(param).data_parallel_group
        dist.reduce(full, dst=dist.get_global_rank(group, 0), group=group)
        return full.view(param.shape).cpu() if dist.get_rank(group) == 0 else None

    def state_dict(self) -> Dict[str, Any]:
        """Every DP rank takes part (one reduce per tensor); DP rank 0 gets the moments."""
        params = self._params()
        step = self._step_count(params[0].device)
        state = {}
        if step > 0:
            for index, param in enumerate(params):
                keys = MOMENTS + ((MAIN_PARAM,) if param.dtype != torch.float32 else ())
                entry = {key: self._gather(param, "param" if key == MAIN_PARAM else key) for key in keys}
                if all(value is not None for value in entry.values()):
                    state[index] = {"step": torch.tensor(step), **entry}
        hyper = {k: v for k, v in self.inner.param_groups[0].items() if k in ("betas", "eps", "initial_lr")}
        lr = schedule_lr(self.inner)
        groups, start = [], 0
        for group in self._groups:
            indices = list(range(start, start + len(group["params"])))
            keys = ("name", "weight_decay", "lr_mult")
            groups.append({**hyper, **{k: group[k] for k in keys}, "lr": lr * group["lr_mult"], "params": indices})
            start += len(indices)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Install this rank's range of each parameter's moments (and fp32 main weights), the step
        count, and the saved learning rate (the scheduler's own state does not set it)."""
        saved = state_dict["param_groups"][0]
        for group in self.inner.param_groups:
            group["lr"] = saved["lr"] / saved.get("lr_mult", 1.0) * group["lr_mult"]
        if not state_dict["state"]:  # saved before any update: a fresh optimizer is that state
            return
        for part in self.parts:
            part.init_state_fn(part.optimizer, part.config)
        step = next(iter(state_dict["state"].values()))["step"]
        with torch.no_grad():
            for index, param in enumerate(self._params()):
                entry, owned = state_dict["state"].get(index), self._owned(param)
                if owned is None:
                    continue
                tensors = self._tensors(param)
                for key in MOMENTS + (MAIN_PARAM,):
                    if entry is not None and key in entry:
                        shard = entry[key].reshape(-1)[owned[0] : owned[1]]
                        tensors["param" if key == MAIN_PARAM else key].copy_(shard)
                self._set_step(param, step)

    def _set_step(self, param: Tensor, step) -> None:
        """Per parameter (torch AdamW, in the main-parameter shard's state) and per group (FusedAdam)."""
        part = self._part(param)
        group_index, order = part.model_param_group_index_map[param]
        group = part.optimizer.param_groups[group_index]
        part.optimizer.state[group["params"][order]]["step"] = torch.as_tensor(step, dtype=torch.float32).clone()
        if "step" in group:
            group["step"] = int(step)
