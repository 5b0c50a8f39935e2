"""megatron's distributed optimizer as the torch Optimizer that Lightning and NeMo's LR schedulers
expect (the role of NeMo 1.x's McoreDistributedOptimizer).

The LR scheduler writes `lr` into megatron's own param groups; the state dict holds the param
groups in nemo_flm's order (training/optim.param_groups), keyed by role, so either engine resumes
the other's. megatron shards each flattened parameter's fp32 main copy and Adam moments over the
data-parallel group: checkpoints hold them as each rank's own ranges of the full tensors
(checkpoint_pieces, checkpoint/pieces.py), written and read by every rank in parallel, so no rank
gathers another's state and a resume reads each byte once; the weights, which every data-parallel
rank holds whole, are likewise written and read as the owned ranges and all-gathered by megatron
after loading. Per-parameter access uses the distributed optimizer's range maps (megatron-core
0.16.x).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from nemo_flm import parallel
from nemo_flm.checkpoint.pieces import Piece, range_pieces
from nemo_flm.checkpoint.weights import MAIN_PARAM, MOMENTS, PREFIX, weight_keys
from nemo_flm.model.sharding import global_names, partition_dims
from nemo_flm.training.nonfinite import all_finite, check
from nemo_flm.training.optim import param_groups, schedule_lr


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

    def adam_step(self) -> float:
        """Adam's step count (0 before the first update): per parameter in torch's AdamW, per group
        in TE's and apex's FusedAdam; the maximum over data parallel, since a rank may own none."""
        params = self._params()
        steps = [float(self._tensors(p).get("step", 0)) for p in params if self._owned(p)]
        steps += [float(g["step"]) for part in self.parts for g in part.optimizer.param_groups if "step" in g]
        count = torch.tensor(max(steps, default=0.0), device=params[0].device)
        return float(parallel.all_reduce(count, self.parts[0].data_parallel_group, op="max"))

    def checkpoint_pieces(self, network: torch.nn.Module, save: bool, moments: bool) -> List[Piece]:
        """What this rank holds of the model: for each parameter, the flat range of its TP shard
        that this rank's optimizer owns, of the weights, the fp32 main weights (of a low-precision
        parameter) and, with `moments`, the Adam moments; tensors replicated over TP are saved by
        TP rank 0 only. Writing and reading these ranges, no rank gathers or reads another's."""
        names, dims = global_names(network, PREFIX), partition_dims(network)
        key_of = {id(p): k for k, p in network.named_parameters()}
        rank, size = parallel.tp_rank(), parallel.tp_size()
        pieces: List[Piece] = []
        for param in self._params():
            owned, key = self._owned(param), key_of[id(param)]
            if owned is None or (save and dims[key] is None and rank != 0):
                continue
            name, tensors = names[PREFIX + key], self._tensors(param)
            sources = [(weight_keys(name, param.dtype, save), param.detach().view(-1)[owned[0] : owned[1]])]
            if param.dtype != torch.float32:
                sources.append(((f"{MAIN_PARAM}/{name}", f"model/{name}"), tensors["param"]))
            if moments:
                sources += [((f"{m}/{name}",), tensors[m]) for m in MOMENTS]
            for keys, flat in sources:
                pieces += range_pieces(keys, flat, param.shape, owned[0], dims[key], rank, size)
        return pieces

    def prepare_state(self) -> None:
        """Create the (zero) Adam state that a checkpoint's moments are read into."""
        for part in self.parts:
            part.init_state_fn(part.optimizer, part.config)

    def finish_load(self, step: Optional[float]) -> None:
        """After this rank's ranges were read: the step count, and every rank's weights gathered
        over data parallel by megatron's own parameter all-gather (each rank read only its range)."""
        if step is not None:
            for param in self._params():
                if self._owned(param) is not None:
                    self._set_step(param, step)
        chunks = {id(c): c for part in self.parts for c in part.model_chunks}
        for chunk in chunks.values():
            chunk.start_param_sync(force_sync=True)

    def state_dict(self) -> Dict[str, Any]:
        """The param groups (names, decay, μP multiplier, the LR in force) in nemo_flm's order; the
        tensors are written by checkpoint_pieces, not gathered here."""
        hyper = {k: v for k, v in self.inner.param_groups[0].items() if k in ("betas", "eps", "initial_lr")}
        lr = schedule_lr(self.inner)
        groups, start = [], 0
        for group in self._groups:
            indices = list(range(start, start + len(group["params"])))
            keys = ("name", "weight_decay", "lr_mult")
            groups.append({**hyper, **{k: group[k] for k in keys}, "lr": lr * group["lr_mult"], "params": indices})
            start += len(indices)
        return {"state": {}, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """The saved learning rate (the scheduler's own state does not set it); the tensors and the
        step count come through checkpoint_pieces and finish_load."""
        saved = state_dict["param_groups"][0]
        for group in self.inner.param_groups:
            group["lr"] = saved["lr"] / saved.get("lr_mult", 1.0) * group["lr_mult"]

    def _set_step(self, param: Tensor, step) -> None:
        """Per parameter (torch AdamW, in the main-parameter shard's state) and per group (FusedAdam)."""
        part = self._part(param)
        group_index, order = part.model_param_group_index_map[param]
        group = part.optimizer.param_groups[group_index]
        part.optimizer.state[group["params"][order]]["step"] = torch.as_tensor(step, dtype=torch.float32).clone()
        if "step" in group:
            group["step"] = int(step)
