"""The FLM layer as a megatron-core ModuleSpec: a GPT-3 pre-LN block with xPos attention.

Backends enter by swapping named leaves, never by forking megatron-core:
- local: megatron's Column/RowParallelLinear, FLMLayerNorm, SDPA or flash-attn core attention;
- transformer_engine: TE layernorm-linear / linear and TE attention (GPU only, see compat.py).
The self-attention module is FLMSelfAttention in both, so xPos is applied before any KV cache.
"""

from __future__ import annotations

from typing import List

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from nemo_flm.model.attention import FLMSelfAttention
from nemo_flm.model.core_attention import FlashAttention, SDPAttention
from nemo_flm.model.layernorm import FLMLayerNorm
from nemo_flm.model.xpos import PositionConfig


def flm_layer(
    positions: PositionConfig, norm, qkv, core_attention, proj, fc1, fc2, self_attention: type = FLMSelfAttention
) -> ModuleSpec:
    """A pre-LN GPT block from its leaves; `norm` is IdentityOp where the linear fuses its LayerNorm.
    Features that change a leaf (the masked leaves of a growth ramp, a benchmark's baseline
    attention) call this with their own."""
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=ModuleSpec(
                module=self_attention,
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


def local_core_attention(attention_backend: str) -> type:
    """The core-attention leaf of the local spec: flash-attn or torch SDPA."""
    return FlashAttention if attention_backend == "flash_attn" else SDPAttention


def _local_layer(positions: PositionConfig, attention_backend: str) -> ModuleSpec:
    return flm_layer(
        positions,
        FLMLayerNorm,
        ColumnParallelLinear,
        local_core_attention(attention_backend),
        RowParallelLinear,
        ColumnParallelLinear,
        RowParallelLinear,
    )


def _te_layer(positions: PositionConfig) -> ModuleSpec:
    """Transformer Engine leaves (fused LayerNorm+Linear, TE attention). Unverified: no TE here."""
    from megatron.core.extensions.transformer_engine import (
        TEDotProductAttention,
        TELayerNormColumnParallelLinear,
        TERowParallelLinear,
    )

    return flm_layer(
        positions,
        IdentityOp,
        TELayerNormColumnParallelLinear,
        TEDotProductAttention,
        TERowParallelLinear,
        TELayerNormColumnParallelLinear,
        TERowParallelLinear,
    )


def flm_layer_spec(
    positions: PositionConfig, transformer_impl: str = "local", attention_backend: str = "sdpa"
) -> ModuleSpec:
    """The spec of one FLM decoder layer for the chosen backend."""
    if transformer_impl == "transformer_engine":
        return _te_layer(positions)
    return _local_layer(positions, attention_backend)


def flm_block_spec(layers: List[ModuleSpec], final_norm=FLMLayerNorm) -> TransformerBlockSubmodules:
    """The decoder block: one spec per layer of this pipeline stage, then FLM's final LayerNorm."""
    return TransformerBlockSubmodules(layer_specs=layers, layer_norm=final_norm)
