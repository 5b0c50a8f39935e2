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
The embedding output is masked by a forward hook on the embedding. All of it is applied from
outside the model: `build_masked_model` hands `build_model` a block spec with these leaves, and
the model code knows nothing of growth. Masks are not parameters: when c reaches 1 every mask is
1 and the same parameters fit the plain spec ("folding", growth/ramp.py).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset
from torch import Tensor

from nemo_flm import parallel
from nemo_flm.errors import ConfigError
from nemo_flm.growth.plan import GrowthPlan
from nemo_flm.model.builder import build_model, position_config, transformer_config
from nemo_flm.model.layernorm import FLMLayerNorm
from nemo_flm.model.layout import QKV_PARTS
from nemo_flm.model.spec import flm_block_spec, flm_layer, local_core_attention


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
    start = parallel.tp_rank() * local
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
        # mu = sum(m x) / sum(m); var = sum(m (x - mu)^2) / sum(m); output masked. Statistics in
        # fp32 at least, as LayerNorm kernels compute them: a bf16 sum over thousands of entries
        # loses the precision the ramp's exactness relies on.
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf, mf = x.to(dtype), m.to(dtype)
        total = mf.sum()
        mu = (xf * mf).sum(-1, keepdim=True) / total
        var = (((xf - mu) ** 2) * mf).sum(-1, keepdim=True) / total
        normed = (xf - mu) * torch.rsqrt(var + self.eps)
        return ((normed * self.weight.to(dtype) + self.bias.to(dtype)) * mf).to(x.dtype)


class MaskedQKV(ColumnParallelLinear):
    """Fused q|k|v (megatron: [heads, 3, head_dim] per rank, model/layout.py) with new heads masked."""

    def __init__(self, *args, masks: GrowthMasks = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks = masks

    def forward(self, x: Tensor, *args, **kwargs):
        out, bias = super().forward(x, *args, **kwargs)
        per_head = QKV_PARTS * self.masks.plan.head_dim
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


def check_ramp_layout(cfg: Any) -> None:
    """The masked leaves exist for the unfused local spec only."""
    if cfg.transformer_impl != "local":
        raise ConfigError(
            "an MSG ramp runs on transformer_impl=local (a masked LayerNorm cannot live inside Transformer "
            "Engine's fused LayerNorm-linear): set transformer_impl: local for the grown stage"
        )


def masked_block_spec(cfg: Any, masks: GrowthMasks, vp_stage: Optional[int] = None) -> TransformerBlockSubmodules:
    """The decoder block during an MSG ramp: masked leaves in the unfused local spec, one layer
    spec per layer of this pipeline stage (megatron's offset and count) so that new layers know
    they are new."""
    check_ramp_layout(cfg)
    tcfg = transformer_config(cfg)
    first = get_transformer_layer_offset(tcfg, vp_stage=vp_stage)

    def leaf(module, **params) -> ModuleSpec:
        return ModuleSpec(module=module, params={"masks": masks, **params})

    core_attention = local_core_attention(cfg.attention_backend)
    layers = [
        flm_layer(
            position_config(cfg),
            leaf(MaskedLayerNorm),
            leaf(MaskedQKV),
            core_attention,
            leaf(MaskedResidualOut, new_layer=i in masks.plan.new_layers),
            leaf(MaskedFC1),
            leaf(MaskedResidualOut, new_layer=i in masks.plan.new_layers),
        )
        for i in range(first, first + get_num_layers_to_build(tcfg, vp_stage=vp_stage))
    ]
    return flm_block_spec(layers, final_norm=leaf(MaskedLayerNorm))


def build_masked_model(cfg: Any, masks: GrowthMasks, vp_stage: Optional[int] = None) -> torch.nn.Module:
    """The grown model with MSG masks: masked block leaves, and the embedding output masked on
    new hidden coordinates by a forward hook (the embedding is not a spec leaf in GPTModel; only
    the first pipeline stage has it)."""
    model = build_model(cfg, vp_stage, block=masked_block_spec(cfg, masks, vp_stage))
    if not model.pre_process:
        return model

    def mask_embedding(module, args, output: Tensor) -> Tensor:
        mask = masks.hidden(output)
        return output if mask is None else output * mask

    model.embedding.register_forward_hook(mask_embedding)
    return model
