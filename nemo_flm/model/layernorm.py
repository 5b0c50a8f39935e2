"""The FLM LayerNorm leaf of the layer spec (pre-LN, eps 1e-5, affine).

A plain torch LayerNorm with megatron's constructor signature. megatron's own WrappedTorchNorm
refuses sequence parallelism; here the parameters are tagged `sequence_parallel` so their
gradients are summed over the TP group when the activations are sharded along the sequence.
It is also the leaf that model growth swaps for a masked LayerNorm. Like megatron's own layers,
it is created on the GPU unless the config asks for CPU initialization.
"""

from __future__ import annotations

import torch


class FLMLayerNorm(torch.nn.LayerNorm):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        super().__init__(hidden_size, eps=eps, device=device, dtype=config.params_dtype)
        for param in self.parameters():
            param.sequence_parallel = config.sequence_parallel
