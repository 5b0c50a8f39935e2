"""Process groups and seeds, in one place: model, data and training code ask this module for
groups, ranks and sizes (megatron's parallel_state behind it) and for simple sums and barriers.

Devices: the default group is NCCL when CUDA is present (each process bound to its LOCAL_RANK
GPU before the group exists) and gloo otherwise; every tensor handed to a collective lives on
the device the backend serves, which the callers guarantee by reducing tensors on the model's
device (see training/local_engine.py, training/megatron_engine.py)."""

from __future__ import annotations

import contextlib
import os
import random
from datetime import timedelta
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state

from nemo_flm.errors import ConfigError


def _backend(requested: str) -> str:
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def initialize(par: Any, seed: int = 1234) -> None:
    """Start torch.distributed (gloo on CPU, one process if not launched by torchrun) and megatron's
    tensor/pipeline/data groups, every collective of them timing out after
    par.distributed_timeout_minutes. Idempotent for the same layout."""
    timeout = par.distributed_timeout_minutes
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", 1))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        kwargs = dict(backend=_backend(par.backend), timeout=timedelta(minutes=timeout))
        if world == 1:  # a lone process needs no rendezvous port
            dist.init_process_group(store=dist.HashStore(), rank=0, world_size=1, **kwargs)
        else:  # launched by torchrun: MASTER_ADDR/MASTER_PORT/RANK from the environment
            dist.init_process_group(rank=int(os.environ["RANK"]), world_size=world, **kwargs)
    _checkpoint_group(timeout)
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    vp = par.virtual_pipeline_model_parallel_size
    check_world_size(dist.get_world_size(), tp, pp)
    if parallel_state.model_parallel_is_initialized():
        if (tp_size(), pp_size(), parallel_state.get_virtual_pipeline_model_parallel_world_size()) == (tp, pp, vp):
            seed_everything(seed)
            return
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vp,
        distributed_timeout_minutes=timeout,
    )
    seed_everything(seed)


_CHECKPOINT_GROUP: Any = None


def _checkpoint_group(timeout: int) -> None:
    """Create checkpoint_group once per process (every rank calls initialize)."""
    global _CHECKPOINT_GROUP
    if _CHECKPOINT_GROUP is None:
        _CHECKPOINT_GROUP = dist.new_group(backend="gloo", timeout=timedelta(minutes=timeout))


def checkpoint_group() -> Optional[dist.ProcessGroup]:
    """A gloo group of the whole world for checkpoint writing and reading (checkpoint/dcp.py): its
    collectives run on host memory, and an asynchronous save runs them from a thread while
    training's own collectives use the other groups."""
    return _CHECKPOINT_GROUP


def check_world_size(world: int, tp: int, pp: int) -> None:
    """The processes must split into whole TP x PP model replicas."""
    if world % (tp * pp) != 0:
        raise ConfigError(
            f"world size {world} is not divisible by TP x PP = {tp * pp}: launch TPxPPxDP processes, or set "
            "parallel.tensor_model_parallel_size to fit (checkpoints and .nemo files load at any TP)"
        )


def seed_everything(seed: int) -> None:
    """The same seed on every rank of a pipeline stage, plus 100 x the stage's rank (Megatron-LM's
    offset), so the stages of a model built from scratch draw different layers. With
    use_cpu_initialization each rank draws the full master weight and keeps its shard, so weights
    do not depend on the TP size."""
    if parallel_state.model_parallel_is_initialized():
        seed += 100 * pp_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)


def tp_group():
    return parallel_state.get_tensor_model_parallel_group()


def dp_group():
    return parallel_state.get_data_parallel_group()


def dp_rank() -> int:
    return parallel_state.get_data_parallel_rank()


def dp_size() -> int:
    return parallel_state.get_data_parallel_world_size()


def tp_rank() -> int:
    return parallel_state.get_tensor_model_parallel_rank()


def tp_size() -> int:
    return parallel_state.get_tensor_model_parallel_world_size()


def pp_rank() -> int:
    return parallel_state.get_pipeline_model_parallel_rank()


def pp_size() -> int:
    return parallel_state.get_pipeline_model_parallel_world_size()


def pp_group():
    return parallel_state.get_pipeline_model_parallel_group()


def mp_group():
    """The model-parallel group (TP x PP): the ranks that together hold one model replica."""
    return parallel_state.get_model_parallel_group()


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def _size(group=None) -> int:
    return dist.get_world_size(group) if dist.is_initialized() else 1


def started() -> bool:
    """Whether this process has joined its job's default process group."""
    return dist.is_initialized()


def groups_ready() -> bool:
    """Whether megatron's tensor/pipeline/data groups exist in this process."""
    return parallel_state.model_parallel_is_initialized()


def all_reduce(tensor: torch.Tensor, group=None, op: str = "sum") -> torch.Tensor:
    """`op` (sum | max | min) over a group, in place (no-op for a group of one or no group)."""
    reduce_op = _OPS[op]  # an unknown op fails on one rank too
    if _size(group) > 1:
        dist.all_reduce(tensor, op=reduce_op, group=group)
    return tensor


def all_gather_cat(tensor: torch.Tensor, group, dim: int = -1) -> torch.Tensor:
    """The group's tensors concatenated along `dim`, in group-rank order."""
    if _size(group) == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def all_gather_object(value: Any, group=None) -> list:
    """Every rank's `value` (picklable), in group-rank order."""
    if _size(group) == 1:
        return [value]
    values: list = [None] * _size(group)
    dist.all_gather_object(values, value, group=group)
    return values


def broadcast_from_first(tensor: torch.Tensor, group) -> torch.Tensor:
    """The group's first rank's `tensor`, in place on every rank of the group."""
    if _size(group) > 1:
        dist.broadcast(tensor, dist.get_global_rank(group, 0), group=group)
    return tensor


def is_first_stage(vp_stage: Optional[int] = None) -> bool:
    """Whether this rank (its virtual stage `vp_stage`) holds the embedding: megatron's pre_process."""
    return parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)


def is_last_stage(vp_stage: Optional[int] = None) -> bool:
    """Whether this rank (its virtual stage `vp_stage`) holds the output layer: post_process."""
    return parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)


def reduce_grads(params) -> None:
    """Finish gradients after backward: sum sequence-parallel params' grads over TP (each rank saw
    a slice of the sequence) and sum all grads over data parallel (the loss is already divided by
    the global token count). megatron's finalize_model_grads needs its CUDA DDP buffers."""
    params = [p for p in params if p.grad is not None]
    if dist.get_world_size(tp_group()) > 1:
        for p in params:
            if getattr(p, "sequence_parallel", False):
                dist.all_reduce(p.grad, group=tp_group())
    if dp_size() > 1:
        grads = [p.grad for p in params]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=dp_group())
        for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)


def rank_zero_first(fn):
    """Run fn on global rank 0, then on the other ranks (e.g. building a shared on-disk cache once)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return fn()
    if dist.get_rank() == 0:
        result = fn()
        dist.barrier()
        return result
    dist.barrier()
    return fn()


def broadcast_object(value: Any) -> Any:
    """Global rank 0's `value`, on every rank (a decision made once, such as which checkpoint to
    resume from)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, group=checkpoint_group())
    return holder[0]


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """A process group of this process alone, for library code that asks torch.distributed for its
    rank (megatron's BlendedDataset) before the job's groups exist; destroyed on exit, so the job's
    own group starts afterwards as usual."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch_rank() -> int:
    """This process's global rank as the launcher (torchrun) set it: known before any process
    group exists, for work done once without a collective."""
    return int(os.environ.get("RANK", 0))


def is_rank_zero() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier(group=None) -> None:
    """Wait for every rank of `group` (the world by default); a no-op in a single process."""
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.barrier(group=group)


def mp_barrier() -> None:
    barrier(mp_group())
