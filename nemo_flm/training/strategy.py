"""Lightning's process management, saving and restoring checkpoints on every rank.

megatron's tensor/pipeline groups sit inside the data-parallel world, so torch's DDP (which
all-reduces every gradient over the whole world) would be wrong; gradients are reduced over the
data-parallel group by the training engine instead (training/engine.py: megatron-core's DDP on
GPUs, parallel.reduce_grads on CPU), the role NeMo 1.x's NLPDDPStrategy played.

Checkpoints (checkpoint/lightning_io.py): every rank writes its own pieces of the weights and Adam
state, so save_checkpoint runs on every rank, not on rank 0 alone; and a resume restores after the
engine is built (restore_checkpoint_after_setup), so each rank reads its pieces straight into the
engine's parameters and optimizer state. One process alone uses the single-device form of both.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn

from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO


class _RestoreAfterSetup:
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


class FLMStrategy(_RestoreAfterSetup, DDPStrategy):
    def __init__(self, **kwargs: Any):
        kwargs.setdefault("checkpoint_io", FLMCheckpointIO())
        super().__init__(**kwargs)

    def configure_ddp(self) -> None:
        """Keep the module unwrapped; the training step reduces gradients itself."""

    def setup(self, trainer: "pl.Trainer") -> None:
        """DDPStrategy.setup without the broadcast of rank 0's module states it does outside fit
        (validate, test, predict): tensor-parallel ranks hold different shards, which that
        broadcast would overwrite with rank 0's, and every rank already holds its own weights."""
        if trainer.state.fn == TrainerFn.FITTING:
            return super().setup(trainer)
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.setup_precision_plugin()

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath, storage_options: Optional[Any] = None) -> None:
        self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)


class FLMSingleDeviceStrategy(_RestoreAfterSetup, SingleDeviceStrategy):
    def __init__(self, **kwargs: Any):
        kwargs.setdefault("checkpoint_io", FLMCheckpointIO())
        super().__init__(**kwargs)
