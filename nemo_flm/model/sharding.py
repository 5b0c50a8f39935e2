"""Which tensors are tensor-parallel shards, and along which dim.

megatron tags every tensor-parallel parameter with `tensor_model_parallel` and `partition_dim`;
its shards are contiguous chunks of the full tensor (the fused qkv is laid out per head group, so a
chunk holds whole heads). Reading those tags keeps the checkpoint code free of per-layer tables.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch


def partition_dims(module: torch.nn.Module, prefix: str = "") -> Dict[str, Optional[int]]:
    """state-dict key -> the dim its TP shards split (None: replicated on every TP rank)."""
    return {
        f"{prefix}{name}": param.partition_dim if getattr(param, "tensor_model_parallel", False) else None
        for name, param in module.named_parameters()
    }
