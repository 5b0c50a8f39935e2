"""What every dimension of every FLM parameter holds: the one table of the model's layout.

megatron-core fuses q, k and v into `linear_qkv` and interleaves them per head (per query group;
FLM has one key/value head per query head): its output rows are [heads, 3, head_dim], q then k
then v within each head. HF's GPT-2-style `c_attn` holds three blocks instead (all q heads, then
all k, then all v). Whatever moves weights between layouts or sizes (growth/operators.py, the HF
export and import through hf/mapping.py's name table, which has the same keys) reads the axes here
rather than restating them.

Axes: `vocab`, `hidden`, `ffn` are plain dims; `qkv` is [heads, 3, head_dim] and `heads` is
[heads, head_dim] (the attention projection's input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# logical axes of each parameter, by name within the model or within a layer (decoder.layers.<i>.)
AXES: Dict[str, Tuple[str, ...]] = {
    "embedding.word_embeddings.weight": ("vocab", "hidden"),
    "output_layer.weight": ("vocab", "hidden"),
    "decoder.final_layernorm.weight": ("hidden",),
    "decoder.final_layernorm.bias": ("hidden",),
    "input_layernorm.weight": ("hidden",),
    "input_layernorm.bias": ("hidden",),
    "pre_mlp_layernorm.weight": ("hidden",),
    "pre_mlp_layernorm.bias": ("hidden",),
    "self_attention.linear_qkv.weight": ("qkv", "hidden"),
    "self_attention.linear_qkv.bias": ("qkv",),
    "self_attention.linear_proj.weight": ("hidden", "heads"),
    "self_attention.linear_proj.bias": ("hidden",),
    "mlp.linear_fc1.weight": ("ffn", "hidden"),
    "mlp.linear_fc1.bias": ("ffn",),
    "mlp.linear_fc2.weight": ("hidden", "ffn"),
    "mlp.linear_fc2.bias": ("hidden",),
}

QKV_PARTS = 3  # q, k, v rows of one head, in this order, inside megatron's fused linear_qkv
LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
IN_A_LAYER = re.compile(r"(?:^|\.)decoder\.layers\.\d+\.(.+)$")  # behind any prefix (`module.`, `model.`)

# the matrices between two width axes (no vocab axis): μP's hidden matrices, whose init and LR
# scale with 1/width, and the layers GPT-2 stores as Conv1D ([in, out])
HIDDEN_MATRICES = frozenset(key for key, axes in AXES.items() if len(axes) == 2 and "vocab" not in axes)


def in_layer(key: str) -> bool:
    """Whether an AXES key names a tensor within each layer (else within the model)."""
    return not key.startswith(("embedding.", "output_layer.", "decoder."))


def is_hidden_matrix(name: str) -> bool:
    """Whether parameter `name` (megatron's name, under any prefix) is one of HIDDEN_MATRICES."""
    match = IN_A_LAYER.search(name)
    return match is not None and match.group(1) in HIDDEN_MATRICES


def split_layer(name: str) -> Tuple[Optional[int], str]:
    """(layer index, name within the layer) of `decoder.layers.<i>.<local>`; (None, name) otherwise."""
    match = LAYER.match(name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


@dataclass(frozen=True)
class Sizes:
    """The sizes the axes are measured in."""

    hidden: int
    ffn: int
    heads: int
    head_dim: int
    vocab: int = 0


def axis_shape(axis: str, sizes: Sizes) -> Tuple[int, ...]:
    """The logical shape of one axis (its dims, outermost first)."""
    return {
        "vocab": (sizes.vocab,),
        "hidden": (sizes.hidden,),
        "ffn": (sizes.ffn,),
        "qkv": (sizes.heads, QKV_PARTS, sizes.head_dim),
        "heads": (sizes.heads, sizes.head_dim),
    }[axis]


def tensor_shape(axes: Tuple[str, ...], sizes: Sizes) -> Tuple[int, ...]:
    """The stored (flat) shape of a parameter with these axes."""
    shape = []
    for axis in axes:
        size = 1
        for dim in axis_shape(axis, sizes):
            size *= dim
        shape.append(size)
    return tuple(shape)
