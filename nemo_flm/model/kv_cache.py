"""FLMInferenceContext: megatron's static KV cache, holding keys that already carry xPos.

megatron's own cache stores un-rotated keys and re-rotates all of them at every step: O(L) extra
work per token (docs/flm_facts.md §7). FLMSelfAttention places each key once, before it is written,
with a centre chosen here per layer. When new positions leave the centre's reach (model/xpos.py), the
cached keys are multiplied by one per-pair constant and the centre moves to `reach` positions past
the first new one (12,260 for FLM), so the next re-centre comes 2 x reach = 24,520 tokens later: a
re-centre is one pass over the cache every 24,520 tokens, a fixed fraction (1/24,520) of what
attention itself reads per token at any length (O(L / 24,520) work per token, against O(L) for
re-rotating every key at every step).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict

from megatron.core.inference.contexts import StaticInferenceContext

from nemo_flm.model.xpos import PositionConfig, centre_for, recentre_keys


class FLMInferenceContext(StaticInferenceContext):
    """A static KV cache for FLM models. A forward returns the logits of every new position, or of
    the last one only with `last_logits_only` (generation)."""

    def __init__(self, max_batch_size: int, max_sequence_length: int, last_logits_only: bool = False):
        super().__init__(max_batch_size, max_sequence_length)
        self.materialize_only_last_token_logits = last_logits_only
        self.key_centres: Dict[int, float] = {}  # layer number -> the xPos centre of its cached keys

    def place(self, layer_number: int, count: int, pos: PositionConfig) -> PositionConfig:
        """The PositionConfig for `count` new positions of one layer, re-centring its cached keys
        first when the new positions are out of their centre's reach."""
        first = self.sequence_len_offset
        old = self.key_centres.get(layer_number)
        new = centre_for(pos, first, first + count - 1, current=old)
        if old is not None and new != old and first > 0:
            keys = self.key_value_memory_dict[layer_number][0]
            keys[:first] = recentre_keys(keys[:first], old, new, pos)
        self.key_centres[layer_number] = new
        return replace(pos, center=new)

    def reset(self) -> None:
        """A new batch: the buffers are reused, the centres start over."""
        super().reset()
        self.key_centres.clear()
