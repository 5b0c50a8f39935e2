"""MSG masks as layer-spec leaves: the grown model computes the old function at c = 0.

`GrowthMasks` holds the ramp value c (0 -> 1 over `grow_steps`) and derives, from a GrowthPlan,
a value per coordinate: 1 on old coordinates, c on new ones. The masked leaves replace the plain
ones in the layer spec while a ramp runs (the unfused local spec):
- MaskedLayerNorm: mask-weighted mean and variance, output masked (every LayerNorm, final too);
- MaskedQKV: q, k and v of new heads masked;
- MaskedFC1: the fc1 pre-activation (output and its separately returned bias) of new FFN units;
- MaskedResidualOut: attention-projection and fc2 writes into the residual stream (and their
  separately returned biases) masked on new hidden coordinates, and scaled by c in new layers,
  which makes a new block h + c * F(h).
The embedding output is masked by FLMGPTModel. Masks are not parameters: when c reaches 1 every
mask is 1 and the same state dict loads into the plain spec ("folding").
"""
from __future__ import annotations

from typing import Optional

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from torch import Tensor

from nemo_flm.growth.plan import GrowthPlan
from nemo_flm.model.layernorm import FLMLayerNorm


class GrowthMasks:
    def __init__(self, plan: GrowthPlan, c: float = 0.0):
        self.plan = plan
        self.c = c

    def _ramp(self, old: int, new: int, like: Tensor) -> Optional[Tensor]:
        if new == old:
            return None
        mask = torch.full((new,), self.c, dtype=like.dtype, device=like.device)
        mask[:old] = 1.0
        return mask

    def hidden(self, like: Tensor) -> Optional[Tensor]:
        """[new_hidden]: 1 on old coordinates, c on new ones (None when hidden did not grow)."""
        return self._ramp(self.plan.old_hidden, self.plan.new_hidden, like)

    def ffn(self, like: Tensor) -> Optional[Tensor]:
        return self._ramp(self.plan.old_ffn, self.plan.new_ffn, like)

    def heads(self, like: Tensor) -> Optional[Tensor]:
        """[new_heads]: 1 for old heads, c for new ones."""
        return self._ramp(self.plan.old_heads, self.plan.new_heads, like)


def _tp_slice(mask: Optional[Tensor], local: int) -> Optional[Tensor]:
    """This TP rank's contiguous part of a mask over a column-parallel output of `local` entries."""
    if mask is None:
        return None
    start = parallel_state.get_tensor_model_parallel_rank() * local
    return mask[start : start + local]


def _scale(out: Tensor, bias: Optional[Tensor], mask) -> tuple:
    if mask is None:
        return out, bias
    return out * mask, (bias * mask if bias is not None else None)


class MaskedLayerNorm(FLMLayerNorm):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, masks: GrowthMasks = None, **kwargs):
        super().__init__(config, hidden_size, eps, **kwargs)
        self.masks = masks

    def forward(self, x: Tensor) -> Tensor:
        m = self.masks.hidden(x)
        if m is None:
            return super().forward(x)
        # mu = sum(m x) / sum(m); var = sum(m (x - mu)^2) / sum(m); output masked
        total = m.sum()
        mu = (x * m).sum(-1, keepdim=True) / total
        var = (((x - mu) ** 2) * m).sum(-1, keepdim=True) / total
        return ((x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias) * m


class MaskedQKV(ColumnParallelLinear):
    """Fused q|k|v (megatron: [heads, 3, head_dim] per rank) with new heads masked."""

    def __init__(self, *args, masks: GrowthMasks = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks = masks

    def forward(self, x: Tensor, *args, **kwargs):
        out, bias = super().forward(x, *args, **kwargs)
        per_head = 3 * self.masks.plan.head_dim
        heads = _tp_slice(self.masks.heads(out), out.shape[-1] // per_head)
        mask = heads.repeat_interleave(per_head) if heads is not None else None
        return _scale(out, bias, mask)


class MaskedFC1(ColumnParallelLinear):
    def __init__(self, *args, masks: GrowthMasks = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks = masks

    def forward(self, x: Tensor, *args, **kwargs):
        out, bias = super().forward(x, *args, **kwargs)
        return _scale(out, bias, _tp_slice(self.masks.ffn(out), out.shape[-1]))


class MaskedResidualOut(RowParallelLinear):
    """Attention projection / fc2: the writes into the residual stream."""

    def __init__(self, *args, masks: GrowthMasks = None, new_layer: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks = masks
        self.new_layer = new_layer

    def forward(self, x: Tensor, *args, **kwargs):
        out, bias = super().forward(x, *args, **kwargs)
        mask = self.masks.hidden(out)
        if self.new_layer:  # h + c * F(h)
            mask = self.masks.c if mask is None else mask * self.masks.c
        return _scale(out, bias, mask)
