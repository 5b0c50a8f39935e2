"""Full (TP=1 layout) state dicts <-> this rank's tensor-parallel shards.

megatron tags every tensor-parallel parameter with `tensor_model_parallel` and `partition_dim`;
its shards are contiguous chunks of the full tensor (the fused qkv is laid out per head group, so a
chunk holds whole heads). Reading those tags keeps this module free of per-layer tables.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from nemo_flm import parallel


def shard_of(model: torch.nn.Module, full: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """This TP rank's part of a full state dict, for model.load_state_dict."""
    params = dict(model.named_parameters())
    rank, size = parallel.tp_rank(), parallel.tp_world_size()
    out = {}
    for name, value in full.items():
        param = params.get(name)
        if param is not None and getattr(param, "tensor_model_parallel", False) and size > 1:
            value = value.chunk(size, dim=param.partition_dim)[rank]
        out[name] = value
    return out
