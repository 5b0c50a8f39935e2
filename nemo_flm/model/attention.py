"""The one SelfAttention override: positions (xPos or RoPE) applied to q and k before the KV cache.

megatron-core 0.16 has no xPos, and its static KV cache stores un-rotated keys and re-rotates the
whole cache at every decoding step (docs/flm_facts.md §7). So the GPTModel is built with
position_embedding_type='none' and this subclass places q and k itself, at the single point where
both exist and no cache write has happened yet: `_adjust_key_value_for_inference`, which megatron
calls on every forward (it returns at once when there is no inference context). Positions are the
cache offset plus 0..s-1, so cached decoding and a full forward see the same transforms.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.attention import SelfAttention

from nemo_flm.model.xpos import PositionConfig, apply_positions


class FLMSelfAttention(SelfAttention):
    """SelfAttention that applies xPos (or RoPE) to q and k; selected through the layer spec."""

    def __init__(self, *args, positions: PositionConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.positions = positions

    def _adjust_key_value_for_inference(self, inference_context, query, key, value, *args, **kwargs):
        offset = 0
        if inference_context is not None:
            if not inference_context.is_static_batching():
                raise NotImplementedError("FLM attention supports megatron's static KV cache only")
            offset = inference_context.sequence_len_offset
        # query: [s, b, heads, d]; key: [s, b, groups, d]
        pos = torch.arange(offset, offset + query.shape[0], device=query.device)
        query, key = apply_positions(query, key, pos, self.positions)
        return super()._adjust_key_value_for_inference(inference_context, query, key, value, *args, **kwargs)

    def _allocate_memory(self, inference_max_sequence_length, batch_size, dim, dtype):
        """KV-cache buffer on the model's device (megatron's asks torch.cuda, which CPUs lack)."""
        return torch.empty(
            inference_max_sequence_length,
            batch_size,
            self.num_query_groups_per_partition,
            dim,
            dtype=dtype,
            device=self.linear_proj.weight.device,
        )
