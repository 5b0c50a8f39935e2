"""Width sweeps for μP checks: one small FLM at several widths, in μP or the standard
parametrization (SP), each trained from the same seed on the same batches.

Width grows with the number of heads at a fixed head dim (FLM_REFERENCE §6's advice for width
sweeps: the attention scale then stays the base one), and the base width is the sweep's smallest
unless given. μP runs set `mup_base_head_dim` to the head dim and keep output_mult 1, so at the
base width they are the SP model exactly: the two parametrizations share that point and differ
only in how they scale away from it. SP is the standard model at the same configured LR for every
parameter. Dropout is off.

Shared by the coordinate check (scaling/coord_check.py) and the LR transfer sweep
(scaling/lr_transfer.py); their results go to CSV through `write_csv`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from nemo_flm import parallel
from nemo_flm.atomic import atomic_output
from nemo_flm.config import load_model_config
from nemo_flm.model.builder import build_model
from nemo_flm.training.forward_step import Batch
from nemo_flm.training.local_engine import LocalEngine
from nemo_flm.training.optim import build_scheduler

PARAMETRIZATIONS = ("mup", "sp")
LABELS = {"mup": "μP", "sp": "SP"}


def check_widths(widths: Sequence[int], head_dim: int) -> None:
    """At least two distinct widths, each a multiple of the head dim (a whole number of heads)."""
    if len(set(widths)) < 2:
        raise ValueError(f"a width sweep needs at least 2 distinct widths, got {list(widths)}")
    bad = [w for w in widths if w < head_dim or w % head_dim]
    if bad:
        raise ValueError(f"widths {bad} are not positive multiples of the head dim {head_dim}")


@dataclass(frozen=True)
class WidthSweep:
    """What every run of a sweep shares; `config` adds the width, parametrization and LR schedule."""

    head_dim: int = 32
    base_width: int = 64
    num_layers: int = 2
    seq_length: int = 64
    batch_size: int = 8
    vocab_size: int = 4096
    seed: int = 1234

    def config(
        self, width: int, parametrization: str, lr: float, steps: int, warmup_steps: int = 0, final_lr: float = 1.0
    ) -> Any:
        """The model config of one run: the LR warms up linearly over `warmup_steps`, then decays
        (cosine) to `final_lr` x lr at `steps` (final_lr 1: constant)."""
        mup = {"use_mup": True, "mup_base_width": self.base_width, "mup_base_head_dim": self.head_dim}
        return load_model_config(
            {
                "num_layers": self.num_layers,
                "hidden_size": width,
                "num_attention_heads": width // self.head_dim,
                "seq_length": self.seq_length,
                "vocab_size": self.vocab_size,
                "hidden_dropout": 0.0,
                "attention_dropout": 0.0,
                "micro_batch_size": self.batch_size,
                "global_batch_size": self.batch_size,
                "seed": self.seed,
                **(mup if parametrization == "mup" else {}),
                "optim": {
                    "lr": lr,
                    "min_lr": lr * final_lr,
                    "lr_warmup_samples": warmup_steps * self.batch_size,
                    "lr_decay_samples": steps * self.batch_size,
                },
                "parallel": {},
            }
        )


def build(cfg: Any) -> torch.nn.Module:
    """The model of `cfg` from its seed, in training mode: every width starts from the same stream."""
    parallel.seed_everything(cfg.seed)
    return build_model(cfg).train()


def train(
    model: torch.nn.Module, cfg: Any, batches: List[Batch], before_step: Optional[Callable[[int], None]] = None
) -> List[float]:
    """One optimizer step per batch on the local engine with the configured schedule (μP's per-group
    LRs included); the losses. `before_step(t)` runs before step t = 1, 2, ... A non-finite step
    raises NonFiniteError before its update."""
    engine = LocalEngine(model, cfg.optim, cfg.micro_batch_size)
    scheduler = build_scheduler(engine.optimizer, cfg.optim, cfg.global_batch_size)
    losses = []
    for t, batch in enumerate(batches, 1):
        if before_step is not None:
            before_step(t)
        losses.append(engine.train_step(batch)[0])
        scheduler.step()
    return losses


def write_csv(path: str, rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    """The rows' `columns` as CSV at `path`, written atomically."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
