"""The FLM LayerNorm leaf of the layer spec (pre-LN, eps 1e-5, affine).

A plain torch LayerNorm with megatron's constructor signature. megatron's own WrappedTorchNorm
refuses sequence parallelism; here the parameters are tagged `sequence_parallel` so their
gradients are summed over the TP group when the activations are sharded along the sequence.
It is also the leaf that model growth swaps for a masked LayerNorm.
"""

from __future__ import annotations

import torch


class FLMLayerNorm(torch.nn.LayerNorm):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        for param in self.parameters():
            param.sequence_parallel = config.sequence_parallel
