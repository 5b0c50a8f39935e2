"""HF (FLM-101B, GPT-2 lineage) names of every FLM parameter: one table beside model/layout.py's AXES
(the same keys), and the two tensor transforms by which the layouts differ.

- GPT-2's `Conv1D` stores the linear layers inside the blocks as [in, out]; megatron (and HF's
  nn.Embedding and nn.Linear lm_head) store [out, in]: every 2-D block weight is transposed.
- c_attn's output is three blocks, q | k | v ([3, heads, head_dim]); megatron's linear_qkv
  interleaves them per head ([heads, 3, head_dim], layout.py): the qkv axis is permuted.
Both are permutations, so a round trip is bit-identical. The state-dict names of CofeAI's FLM-101B
files could not be retrieved (docs/flm_facts.md §2): these are the best-known guess, kept here only.
"""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

from torch import Tensor

from nemo_flm.model.layout import AXES, HIDDEN_MATRICES, QKV_PARTS, Sizes, in_layer, tensor_shape

HF_NAMES: Dict[str, str] = {
    "embedding.word_embeddings.weight": "transformer.wte.weight",
    "output_layer.weight": "lm_head.weight",
    "decoder.final_layernorm.weight": "transformer.ln_f.weight",
    "decoder.final_layernorm.bias": "transformer.ln_f.bias",
    "input_layernorm.weight": "ln_1.weight",
    "input_layernorm.bias": "ln_1.bias",
    "pre_mlp_layernorm.weight": "ln_2.weight",
    "pre_mlp_layernorm.bias": "ln_2.bias",
    "self_attention.linear_qkv.weight": "attn.c_attn.weight",
    "self_attention.linear_qkv.bias": "attn.c_attn.bias",
    "self_attention.linear_proj.weight": "attn.c_proj.weight",
    "self_attention.linear_proj.bias": "attn.c_proj.bias",
    "mlp.linear_fc1.weight": "mlp.c_fc.weight",
    "mlp.linear_fc1.bias": "mlp.c_fc.bias",
    "mlp.linear_fc2.weight": "mlp.c_proj.weight",
    "mlp.linear_fc2.bias": "mlp.c_proj.bias",
}
NEMO_PREFIX = "model."  # FLMModel holds the network in .model
OUTPUT = "output_layer.weight"


def name_pairs(num_layers: int, tied: bool) -> Iterator[Tuple[str, str, str]]:
    """(.nemo name, HF name, AXES key) of every tensor: model-level ones, then each layer's."""
    for key in AXES:
        if not in_layer(key) and not (tied and key == OUTPUT):
            yield NEMO_PREFIX + key, HF_NAMES[key], key
    for layer in range(num_layers):
        for key in filter(in_layer, AXES):
            yield f"{NEMO_PREFIX}decoder.layers.{layer}.{key}", f"transformer.h.{layer}.{HF_NAMES[key]}", key


def _conv1d(key: str) -> bool:
    """A linear weight inside the blocks (GPT-2 Conv1D, stored [in, out]): the hidden matrices."""
    return key in HIDDEN_MATRICES


def _check(name: str, tensor: Tensor, shape: Tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"'{name}' has shape {list(tensor.shape)}, expected {list(shape)} from the model config")


def _hf_shape(key: str, sizes: Sizes) -> Tuple[int, ...]:
    shape = tensor_shape(AXES[key], sizes)
    return shape[::-1] if _conv1d(key) else shape


def _swap_qkv(tensor: Tensor, first: int, second: int) -> Tensor:
    """Rows [first, second, head_dim] -> [second, first, head_dim] along dim 0 (any trailing dims)."""
    rest = tensor.shape[1:]
    return tensor.reshape(first, second, -1, *rest).transpose(0, 1).reshape(-1, *rest)


def to_hf(key: str, tensor: Tensor, sizes: Sizes) -> Tensor:
    """A megatron tensor (full, TP=1 layout) of AXES key `key` in HF's layout."""
    _check(key, tensor, tensor_shape(AXES[key], sizes))
    if AXES[key][0] == "qkv":
        tensor = _swap_qkv(tensor, sizes.heads, QKV_PARTS)  # [heads, 3, d] -> [3, heads, d]
    return tensor.t().contiguous() if _conv1d(key) else tensor


def from_hf(key: str, tensor: Tensor, sizes: Sizes, hf_name: str = "") -> Tensor:
    """The inverse of to_hf: an HF tensor in megatron's full layout."""
    _check(hf_name or key, tensor, _hf_shape(key, sizes))
    if _conv1d(key):
        tensor = tensor.t()
    if AXES[key][0] == "qkv":
        tensor = _swap_qkv(tensor, QKV_PARTS, sizes.heads)  # [3, heads, d] -> [heads, 3, d]
    return tensor.contiguous()


def sizes_of(hidden: int, ffn: int, heads: int, vocab: int) -> Sizes:
    """The layout sizes of a model in FLM's HF schema (head dim = hidden / heads)."""
    return Sizes(hidden=hidden, ffn=ffn, heads=heads, head_dim=hidden // heads, vocab=vocab)
