"""The megatron engine: megatron-core's own production training path, for GPUs.

- DistributedDataParallel per model chunk: gradients in contiguous fp32 buckets, reduce-scattered
  over the data-parallel group while backward runs (overlap_grad_reduce);
- get_megatron_optimizer with the distributed optimizer: fp32 main weights and Adam state sharded
  over data parallel, megatron's grad-norm and clip, the updated shards all-gathered into the
  (bf16) model weights; seen by Lightning and NeMo's scheduler through MegatronOptimizerAdapter;
- get_forward_backward_func: no pipelining, 1F1B, or interleaved 1F1B over virtual stages, running
  training/forward_step.py on every stage; finalize_model_grads finishes the DP reduce, all-reduces
  sequence-parallel LayerNorm grads over TP and divides by the DP-wide loss-token count.

Devices: megatron allocates its buffers, counters and p2p tensors on the current CUDA device,
which parallel.initialize sets to LOCAL_RANK before the NCCL group exists; the logged loss is
reduced on the device of the model's parameters. nemo_flm adds no collective of its own here
except that loss reduction. On CPU this path runs only inside tests/cuda_on_cpu.py.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer, get_standard_config_overrides
from megatron.core.optimizer.optimizer_config import ParamKey, ParamPredicate
from megatron.core.pipeline_parallel import get_forward_backward_func

from nemo_flm import parallel
from nemo_flm.checkpoint.pieces import Piece
from nemo_flm.errors import ConfigError
from nemo_flm.model.builder import DTYPES, as_network
from nemo_flm.training.forward_step import LOGGED, Batch, forward_step, micro_batches
from nemo_flm.training.megatron_optimizer import MegatronOptimizerAdapter


def optimizer_config(cfg: Any) -> OptimizerConfig:
    optim = cfg.optim
    return OptimizerConfig(
        optimizer="adam",
        lr=optim.lr,
        min_lr=optim.min_lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1,
        adam_beta2=optim.beta2,
        adam_eps=optim.eps,
        clip_grad=optim.clip_grad,
        bf16=cfg.params_dtype == "bf16",
        params_dtype=DTYPES[cfg.params_dtype],
        use_distributed_optimizer=True,
    )


def config_overrides(config: OptimizerConfig, chunks: List[torch.nn.Module]) -> Dict[ParamKey, Dict[str, float]]:
    """megatron's standard param-group overrides (no weight decay on biases and LayerNorms) plus
    one `lr_mult` per μP multiplier that the build tagged on parameters (model/mup.py)."""
    overrides = get_standard_config_overrides(config)
    mults = {getattr(p, "lr_mult", 1.0) for chunk in chunks for p in chunk.parameters()} - {1.0}
    for mult in sorted(mults):
        tagged = ParamPredicate(name=f"lr_mult={mult!r}", fn=lambda p, mult=mult: getattr(p, "lr_mult", 1.0) == mult)
        overrides[ParamKey(predicate=tagged)] = {"lr_mult": mult}
    return overrides


def run_schedule(chunks: List[torch.nn.Module], batch: Batch, cfg: Any, forward_only: bool) -> torch.Tensor:
    """megatron's schedule over the micro-batches of `batch`; returns [loss sum, loss tokens] of
    this data-parallel rank, on every pipeline stage (the last stage computes it)."""
    size = cfg.micro_batch_size
    if batch["tokens"].shape[0] % size:  # a short last validation batch: stages exchange one shape
        size = 1
    micros = micro_batches(batch, size)
    if len(chunks) > 1:  # the interleaved schedule runs whole groups of PP micro-batches
        pp = parallel.pp_size()
        blank = {**micros[0], "loss_mask": torch.zeros_like(micros[0]["loss_mask"])}
        micros += [blank] * (max(pp, -(-len(micros) // pp) * pp) - len(micros))  # no loss tokens: no effect
    iterators = [iter(micros) for _ in chunks]
    logged = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iterators if len(iterators) > 1 else iterators[0],
        model=chunks,
        num_microbatches=len(micros),
        seq_length=cfg.seq_length,
        micro_batch_size=size,
        forward_only=forward_only,
    )
    device = next(chunks[0].parameters()).device
    sums = torch.zeros(2, dtype=torch.float32, device=device)
    for values in logged:
        sums += values[LOGGED].to(device)
    return parallel.all_reduce(sums, parallel.pp_group())  # only the last stage holds non-zeros


class MegatronEngine:
    def __init__(self, chunks: List[torch.nn.Module], cfg: Any):
        self.cfg = cfg
        par = cfg.parallel
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=par.overlap_grad_reduce,
            overlap_param_gather=par.overlap_param_gather,
            use_distributed_optimizer=True,
        )
        self.chunks = [
            DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk, disable_bucketing=i > 0)
            for i, chunk in enumerate(chunks)
        ]
        optimizer_cfg = optimizer_config(cfg)
        self.inner = get_megatron_optimizer(optimizer_cfg, self.chunks, config_overrides(optimizer_cfg, self.chunks))
        # megatron marks biases and LayerNorms with wd_mult 0 and leaves applying it (and lr_mult)
        # to its own scheduler; NeMo's sets only the LR: the decay is fixed here, once, and each
        # group starts at the configured LR x its μP multiplier (training/optim.py)
        for group in self.inner.param_groups:
            group["weight_decay"] = cfg.optim.weight_decay * group["wd_mult"]
            group["lr"] = cfg.optim.lr * group["lr_mult"]
        self.network = as_network(chunks)
        self.optimizer = MegatronOptimizerAdapter(
            self.inner, self.network, cfg.optim.weight_decay, cfg.optim.on_nonfinite
        )
        config = chunks[0].config
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_scale_func = self.inner.scale_loss
        if par.overlap_grad_reduce:
            sync = [chunk.no_sync for chunk in self.chunks]
            config.no_sync_func = sync[0] if len(sync) == 1 else sync
        check_micro_batches(cfg)

    @property
    def skipped(self) -> bool:
        return self.optimizer.skipped

    def rebind(self, chunks: List[torch.nn.Module]) -> None:
        """The network was replaced by one holding the very same parameters (the MSG fold, which
        megatron's gradient hooks and buffers follow): point the DDP wrappers at it."""
        for wrapper, chunk in zip(self.chunks, chunks):
            if wrapper.use_forward_hook:  # the all-gather pre-hooks hang on the old modules
                wrapper.disable_forward_pre_hook(param_sync=True)
            wrapper.module = chunk
            if wrapper.use_forward_hook:
                wrapper.enable_forward_pre_hook()
        self.network = as_network(chunks)

    def sync_weights(self) -> None:
        """Every rank's weights whole now. With overlap_param_gather the last update's all-gather
        runs inside the next forward (megatron's pre-hooks): code that reads the weights outside a
        forward (.nemo, export) calls this first; megatron's own way, disabling and re-enabling
        the hooks with a synchronous all-gather."""
        for chunk in self.chunks:
            if chunk.use_forward_hook:
                chunk.disable_forward_pre_hook(param_sync=True)
                chunk.enable_forward_pre_hook()

    def checkpoint_pieces(self, save: bool, moments: bool) -> List[Piece]:
        """The ranges of the weights, fp32 main weights and (with `moments`) Adam moments that this
        rank's share of the distributed optimizer owns (training/megatron_optimizer.py)."""
        return self.optimizer.checkpoint_pieces(self.network, save, moments)

    def adam_step(self) -> float:
        return self.optimizer.adam_step()

    def prepare_state(self) -> None:
        self.optimizer.prepare_state()

    def finish_load(self, step: Optional[float]) -> None:
        self.optimizer.finish_load(step)

    def train_step(
        self, batch: Batch, optimizer_step: Optional[Callable] = None, before_update: Callable[[], None] = lambda: None
    ) -> Tuple[float, float]:
        """(loss, gradient norm before clipping) of one optimizer step. `optimizer_step` is the
        adapter's step as Lightning wraps it (so it counts the step); it runs the closure first.
        `before_update` runs between backward and the update (an async checkpoint's copy ends there)."""
        step = optimizer_step or self.optimizer.step
        sums = step(closure=lambda: self._closure(batch, before_update))
        sums = parallel.all_reduce(sums, parallel.dp_group())
        return (sums[0] / sums[1].clamp_min(1.0)).item(), float(self.optimizer.grad_norm)

    def _closure(self, batch: Batch, before_update: Callable[[], None]) -> torch.Tensor:
        result = self._forward_backward(batch)
        before_update()
        return result

    def _forward_backward(self, batch: Batch) -> torch.Tensor:
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.inner.zero_grad()
        return run_schedule(self.chunks, batch, self.cfg, forward_only=False)


def check_micro_batches(cfg: Any) -> None:
    """The interleaved schedule runs groups of PP micro-batches per virtual stage."""
    par = cfg.parallel
    if par.virtual_pipeline_model_parallel_size is None:
        return
    count = cfg.global_batch_size // (cfg.micro_batch_size * parallel.dp_size())
    pp = par.pipeline_model_parallel_size
    if count < pp or count % pp:
        raise ConfigError(
            f"virtual pipeline stages need a multiple of PP={pp} micro-batches per data-parallel rank, got {count} "
            "(global_batch_size / (micro_batch_size x DP)): raise global_batch_size or lower micro_batch_size"
        )
