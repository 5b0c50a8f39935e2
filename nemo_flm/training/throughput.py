"""Throughput, TFLOP/s and MFU through Lightning's ThroughputMonitor.

The module reports its FLOPs per batch (flops.py, per device); Lightning times the steps
(excluding validation), averages over a window and logs `train/device/items_per_sec` (tokens),
`train/device/flops_per_sec` and, where the GPU's peak is known, `train/device/mfu`. Lightning's
peak table lacks the GPUs FLM trained on (A800) and recent ones (H200, H800): they are added here,
dense (no sparsity) values from NVIDIA's datasheets.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)

# device-name substring -> dtype -> dense peak FLOP/s. A800 (SXM and PCIe) has A100's compute (only
# its interconnect differs); H800 SXM and H200 SXM have H100 SXM's. PCIe and NVL boards of the
# H series run at lower clocks and are left out (no MFU rather than a wrong one).
SXM_ONLY = ("h800", "h200")
PEAK_FLOPS: Dict[str, Dict[Any, float]] = {
    "a800": {torch.bfloat16: 312e12, torch.float16: 312e12, "tfloat32": 156e12, torch.float32: 19.5e12},
    "h800": {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12},
    "h200": {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12},
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """The peak of `device` at `dtype` from the table above, or None (then Lightning's is used)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest":
        dtype = "tfloat32"
    for chip, table in PEAK_FLOPS.items():
        if chip in name and not (chip in SXM_ONLY and ("pcie" in name or "nvl" in name)):
            return table.get(dtype)
    return None


class FLMThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor counting tokens and per-device FLOPs of FLM's training steps.

    Each device is credited 1/world of the global batch, so that Lightning's world totals are the
    global batch's samples and tokens whatever the TP x PP x DP layout. Validation is not measured
    (its batches are micro-batches and forward-only, which the training FLOPs do not describe);
    its wall time is taken out of the training time."""

    def __init__(self, global_batch_size: int, seq_length: int, world_size: int, window_size: int = 20):
        share = global_batch_size / world_size
        super().__init__(
            batch_size_fn=lambda batch: share, length_fn=lambda batch: share * seq_length, window_size=window_size
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        bf16 = "bf16" in str(trainer.precision) or pl_module.cfg.get("params_dtype") == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        peak = peak_flops(trainer.strategy.root_device, dtype)
        if peak is not None:
            self.available_flops = peak
            for throughput in self._throughputs.values():
                throughput.available_flops = peak

    @rank_zero_only
    def on_validation_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_batch_end(self, *_: Any, **__: Any) -> None:
        """Nothing logged for validation batches."""

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING and RunningStage.TRAINING in self._t0s:
            self._t0s[RunningStage.TRAINING] += time.perf_counter() - self._validation_started


def throughput_monitor(global_batch_size: int, seq_length: int, world_size: int) -> Optional[FLMThroughputMonitor]:
    """The monitor, or None with a warning when a global batch has fewer samples than processes
    (Lightning counts at least one sample per device and batch, so it cannot credit a fraction)."""
    if global_batch_size < world_size:
        log.warning(
            "throughput is not logged: the global batch (%d samples) is smaller than the %d processes",
            global_batch_size,
            world_size,
        )
        return None
    return FLMThroughputMonitor(global_batch_size, seq_length, world_size)
