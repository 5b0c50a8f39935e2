"""Lightning's DDP process management without the DDP wrapper, saving sharded checkpoints.

megatron's tensor/pipeline groups sit inside the data-parallel world, so torch's DDP (which
all-reduces every gradient over the whole world) would be wrong; gradients are reduced over the
data-parallel group by the training engine instead (training/engine.py: megatron-core's DDP on
GPUs, parallel.reduce_grads on CPU), the role NeMo 1.x's NLPDDPStrategy played. Checkpoints are
written by every TP x PP rank of data-parallel rank 0, each its own shards
(checkpoint/lightning_io.py), not by global rank 0 alone.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn

from nemo_flm import parallel
from nemo_flm.checkpoint.lightning_io import FLMCheckpointIO


class FLMStrategy(DDPStrategy):
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
        if parallel.dp_rank() == 0:
            self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
