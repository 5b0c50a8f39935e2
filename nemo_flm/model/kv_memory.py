"""KV-cache buffers on the model's own device: the one concern of megatron's `_allocate_memory`.

megatron-core (0.16 to 0.19) allocates the static KV cache with `device=torch.cuda.current_device()`,
which a CPU process does not have, in a private method with no public hook. This mixin replaces
that one method and nothing else; `model/megatron_private.py` records which megatron sources it
was reviewed against, and tests/unit/model/test_megatron_private.py fails when they change.
"""

from __future__ import annotations

import torch


class KVMemoryOnModelDevice:
    """Mixed into a megatron Attention subclass (before it): cache buffers where its weights are."""

    def _allocate_memory(self, inference_max_sequence_length, batch_size, dim, dtype):
        return torch.empty(
            inference_max_sequence_length,
            batch_size,
            self.num_query_groups_per_partition,
            dim,
            dtype=dtype,
            device=self.linear_proj.weight.device,
        )
