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


def global_names(network: torch.nn.Module, prefix: str = "") -> Dict[str, str]:
    """state-dict key -> the key of the same tensor in the whole model (PP = 1, one chunk): the
    virtual-stage chunk index dropped and decoder layers numbered globally (megatron's
    `layer_number` is global and 1-based). Checkpoints are written in these names, so any pipeline
    layout reads any other's."""
    chunked = isinstance(network, torch.nn.ModuleList)
    names = {}
    for index, chunk in enumerate(network if chunked else [network]):
        local = f"{prefix}{index}." if chunked else prefix
        numbers = {str(j): str(layer.layer_number - 1) for j, layer in enumerate(chunk.decoder.layers)}
        for key in chunk.state_dict():
            parts = key.split(".")
            if parts[:2] == ["decoder", "layers"]:
                parts[2] = numbers[parts[2]]
            names[local + key] = prefix + ".".join(parts)
    return names
