"""Lightning's DDP process management without the DDP wrapper.

megatron's tensor/pipeline groups sit inside the data-parallel world, so torch's DDP (which
all-reduces every gradient over the whole world) would be wrong; gradients are reduced over the
data-parallel group by nemo_flm.parallel.reduce_grads in the training step instead (the role
NeMo 1.x's NLPDDPStrategy played).
"""
from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class FLMStrategy(DDPStrategy):
    def configure_ddp(self) -> None:
        """Keep the module unwrapped; the training step reduces gradients itself."""
