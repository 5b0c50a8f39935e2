"""The FLM layer as a megatron-core ModuleSpec: a GPT-3 pre-LN block with xPos attention.

Backends enter by swapping named leaves, never by forking megatron-core:
- local: megatron's Column/RowParallelLinear, FLMLayerNorm, SDPA or flash-attn core attention;
- transformer_engine: TE layernorm-linear / linear and TE attention (GPU only, see compat.py).
The self-attention module is FLMSelfAttention in both, so xPos is applied before any KV cache.
"""
from __future__ import annotations

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules
from megatron.core.transformer.attention import SelfAttentionSubmodules

from nemo_flm.model.attention import FLMSelfAttention
from nemo_flm.model.core_attention import FlashAttention, SDPAttention
from nemo_flm.model.layernorm import FLMLayerNorm
from nemo_flm.model.xpos import PositionConfig


def _layer(positions: PositionConfig, norm, qkv, core_attention, proj, fc1, fc2) -> ModuleSpec:
    """A pre-LN GPT block from its leaves; `norm` is IdentityOp where the linear fuses its LayerNorm."""
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=ModuleSpec(
                module=FLMSelfAttention,
                params={"attn_mask_type": AttnMaskType.causal, "positions": positions},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=qkv,
                    core_attention=core_attention,
                    linear_proj=proj,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(linear_fc1=fc1, linear_fc2=fc2)),
            mlp_bda=get_bias_dropout_add,
        ),
    )


def _local_layer(positions: PositionConfig, attention_backend: str) -> ModuleSpec:
    core_attention = FlashAttention if attention_backend == "flash_attn" else SDPAttention
    return _layer(positions, FLMLayerNorm, ColumnParallelLinear, core_attention, RowParallelLinear,
                  ColumnParallelLinear, RowParallelLinear)


def _te_layer(positions: PositionConfig) -> ModuleSpec:
    """Transformer Engine leaves (fused LayerNorm+Linear, TE attention). Unverified: no TE here."""
    from megatron.core.extensions.transformer_engine import (
        TEDotProductAttention,
        TELayerNormColumnParallelLinear,
        TERowParallelLinear,
    )

    return _layer(positions, IdentityOp, TELayerNormColumnParallelLinear, TEDotProductAttention,
                  TERowParallelLinear, TELayerNormColumnParallelLinear, TERowParallelLinear)


def flm_layer_spec(positions: PositionConfig, transformer_impl: str = "local",
                   attention_backend: str = "sdpa") -> ModuleSpec:
    """The spec of one FLM decoder layer for the chosen backend."""
    if transformer_impl == "transformer_engine":
        return _te_layer(positions)
    return _local_layer(positions, attention_backend)


def flm_block_spec(layer: ModuleSpec, num_layers_in_stage: int) -> TransformerBlockSubmodules:
    """The decoder block: the layers of this pipeline stage plus FLM's final LayerNorm."""
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers_in_stage, layer_norm=FLMLayerNorm)


def growth_block_spec(positions: PositionConfig, masks, attention_backend: str = "sdpa") -> TransformerBlockSubmodules:
    """The decoder block during an MSG ramp: masked leaves (growth/masks.py) in the unfused local
    spec, one layer spec per layer so new layers know they are new. Single pipeline stage."""
    from nemo_flm.growth.masks import MaskedFC1, MaskedLayerNorm, MaskedQKV, MaskedResidualOut

    def leaf(module, **params):
        return ModuleSpec(module=module, params={"masks": masks, **params})

    core_attention = FlashAttention if attention_backend == "flash_attn" else SDPAttention
    layers = [
        _layer(positions, leaf(MaskedLayerNorm), leaf(MaskedQKV), core_attention,
               leaf(MaskedResidualOut, new_layer=i in masks.plan.new_layers), leaf(MaskedFC1),
               leaf(MaskedResidualOut, new_layer=i in masks.plan.new_layers))
        for i in range(len(masks.plan.source))
    ]
    return TransformerBlockSubmodules(layer_specs=layers, layer_norm=leaf(MaskedLayerNorm))
