"""Which engine trains a model, and evaluation for both.

Two engines run the same forward step (training/forward_step.py):
- megatron (training/megatron_engine.py): megatron-core's DDP, distributed optimizer and pipeline
  schedules; the production path on GPUs, any TP x PP (x virtual stages) x DP, sequence parallel;
- local (training/local_engine.py): a plain loop with torch AdamW, TP x DP with PP = 1; the path on
  CPUs, where megatron's buffers and schedules (CUDA-only) cannot run.
`parallel.engine: auto` picks megatron when CUDA is present.
"""

from __future__ import annotations

from typing import Any, List, Union

import torch

from nemo_flm import parallel
from nemo_flm.errors import ConfigError
from nemo_flm.model.builder import as_network
from nemo_flm.training.forward_step import Batch, micro_batch_losses
from nemo_flm.training.local_engine import LocalEngine
from nemo_flm.training.megatron_engine import MegatronEngine, run_schedule


def resolve_engine(cfg: Any) -> str:
    """The engine for this machine and the model config's layout, or a one-line ConfigError naming the fix."""
    par = cfg.parallel
    engine = par.engine
    if engine == "auto":
        engine = "megatron" if torch.cuda.is_available() else "local"
    if engine == "megatron" and not torch.cuda.is_available():
        raise ConfigError(
            "parallel.engine megatron needs CUDA GPUs (megatron's DDP buffers and schedules allocate on CUDA): "
            "use parallel.engine: local (or auto) on CPU"
        )
    if engine == "local":
        unsupported = {
            "pipeline_model_parallel_size > 1": par.pipeline_model_parallel_size > 1,
            "sequence_parallel": par.sequence_parallel,
            "overlap_param_gather": par.overlap_param_gather,
            "recompute": cfg.recompute is not None,
        }
        for what, used in unsupported.items():
            if used:
                raise ConfigError(
                    f"{what} needs the megatron engine, which runs on GPUs: set it off for a CPU run "
                    "(checkpoints load at any layout), or run on GPUs with parallel.engine: auto"
                )
    return engine


def build_engine(chunks: List[torch.nn.Module], cfg: Any) -> Union[LocalEngine, MegatronEngine]:
    """The engine (and its optimizer, `.optimizer`) over this rank's model chunks."""
    if resolve_engine(cfg) == "megatron":
        return MegatronEngine(chunks, cfg)
    return LocalEngine(as_network(chunks), cfg.optim, cfg.micro_batch_size)


@torch.no_grad()
def eval_sums(chunks: List[torch.nn.Module], batch: Batch, cfg: Any) -> torch.Tensor:
    """[loss sum, loss tokens] of a batch on this data-parallel rank, on the model's device (no
    host sync): megatron's forward-only schedule under pipeline parallelism, a loop otherwise."""
    if parallel.pp_size() > 1:
        return run_schedule(chunks, batch, cfg, forward_only=True)
    (model,) = chunks
    sums = torch.zeros(2, dtype=torch.float32, device=next(model.parameters()).device)
    for summed, tokens in micro_batch_losses(model, batch, cfg.micro_batch_size):
        sums += torch.stack([summed.float(), tokens.float()])
    return sums
