"""The one SelfAttention override: positions (xPos or RoPE) applied to q and k before the KV cache.

It replaces megatron's private `_adjust_key_value_for_inference` (no public hook places q and k
before the cache write in megatron-core 0.16 to 0.19); model/megatron_private.py records the
megatron sources it was reviewed against, and a test fails when they change.

megatron-core 0.16 has no xPos, and its static KV cache stores un-rotated keys and re-rotates the
whole cache at every decoding step (docs/flm_facts.md §7). So the GPTModel is built with
position_embedding_type='none' and this subclass places q and k itself, at the single point where
both exist and no cache write has happened yet: `_adjust_key_value_for_inference`, which megatron
calls on every forward (it returns at once when there is no inference context). Positions are the
cache offset plus 0..s-1; the xPos centre is the model's (or, for a forward that reaches past it,
one that keeps the factors in float range), and under a KV cache the context's (model/kv_cache.py).
A chunk of several new queries over cached keys keeps its causal mask (megatron assumes one query
per step once the cache holds keys), so a long prompt can be fed in chunks.
"""

from __future__ import annotations

from dataclasses import replace

from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.enums import AttnMaskType

from nemo_flm.model.kv_cache import FLMInferenceContext
from nemo_flm.model.kv_memory import KVMemoryOnModelDevice
from nemo_flm.model.xpos import PositionConfig, apply_positions_from, centre_for


class FLMSelfAttention(KVMemoryOnModelDevice, SelfAttention):
    """SelfAttention that applies xPos (or RoPE) to q and k; selected through the layer spec.
    Its KV cache lives on the model's device (model/kv_memory.py)."""

    def __init__(self, *args, positions: PositionConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.positions = positions

    def _adjust_key_value_for_inference(self, inference_context, query, key, value, *args, **kwargs):
        count = query.shape[0]  # query: [s, b, heads, d]; key: [s, b, groups, d]
        if inference_context is None:
            offset, place = 0, replace(self.positions, center=centre_for(self.positions, 0, count - 1))
        elif isinstance(inference_context, FLMInferenceContext):
            offset = inference_context.sequence_len_offset
            place = inference_context.place(self.layer_number, count, self.positions)
        else:
            raise TypeError(
                f"FLM attention needs a nemo_flm.model.kv_cache.FLMInferenceContext (its keys carry xPos), "
                f"got {type(inference_context).__name__}"
            )
        query, key = apply_positions_from(query, key, offset, place)
        query, key, value, rotary, mask_type, table = super()._adjust_key_value_for_inference(
            inference_context, query, key, value, *args, **kwargs
        )
        if count > 1:  # megatron drops the mask once the cache holds keys; a chunk of queries still needs it
            mask_type = AttnMaskType.causal  # bottom-right aligned over the cached keys (core_attention.py)
        return query, key, value, rotary, mask_type, table
