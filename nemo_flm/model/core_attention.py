"""Core attention backends for the local spec: torch SDPA (everywhere) and flash-attn (GPU).

megatron-core's local DotProductAttention needs a global CUDA buffer, so the local spec uses
these instead. Both take q/k already carrying xPos (FLMSelfAttention applies it), and follow
megatron's core-attention contract: q [sq, b, heads, d], k/v [sk, b, groups, d] -> [sq, b, heads*d].
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from torch import Tensor


class _CoreAttention(MegatronModule):
    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type=None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("context parallelism is not supported by the FLM local attention")
        self.attn_mask_type = attn_mask_type
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def _dropout(self) -> float:
        return self.dropout_p if self.training else 0.0


class SDPAttention(_CoreAttention):
    """torch.nn.functional.scaled_dot_product_attention (flash/memory-efficient kernels on GPU)."""

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Optional[Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[Tensor] = None,
        packed_seq_params=None,
    ) -> Tensor:
        if packed_seq_params is not None:
            raise NotImplementedError("packed sequences are not supported by SDPAttention")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        sq, b, heads, d = query.shape
        sk = key.shape[0]
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask, is_causal = None, False
        if attention_mask is not None:
            mask = ~attention_mask  # megatron: True = masked out; SDPA: True = attend
        elif mask_type == AttnMaskType.causal and sq == sk:
            is_causal = True
        elif mask_type == AttnMaskType.causal:
            # queries are the last sq of sk positions: bottom-right aligned causal mask
            mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self._dropout(),
            is_causal=is_causal,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != heads,
        )
        return out.permute(2, 0, 1, 3).reshape(sq, b, heads * d)  # [sq, b, h*d]


class FlashAttention(_CoreAttention):
    """flash_attn_func on q/k that already carry xPos; GPU only (see nemo_flm.compat)."""

    def forward(
        self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None
    ) -> Tensor:
        from flash_attn import flash_attn_func

        if attention_mask is not None or packed_seq_params is not None:
            raise NotImplementedError("flash_attn backend supports causal/no-mask attention only")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        sq, b, heads, d = query.shape
        # [s, b, h, d] -> [b, s, h, d]; flash-attn's causal mask is bottom-right aligned
        q, k, v = (t.transpose(0, 1) for t in (query, key, value))
        out = flash_attn_func(
            q,
            k,
            v,
            dropout_p=self._dropout(),
            softmax_scale=self.softmax_scale,
            causal=mask_type == AttnMaskType.causal,
        )
        return out.transpose(0, 1).reshape(sq, b, heads * d)
