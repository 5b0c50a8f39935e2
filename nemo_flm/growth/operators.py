"""MSG growth operators on full (TP=1 layout) megatron state dicts: (state, plan) -> new state.

Every parameter's dimensions have a logical kind (model/layout.py). The old tensor goes into the
top-left block of each logical axis — per q/k/v head for the fused qkv (megatron interleaves
[q|k|v] per head) and per head for the attention output projection — and new entries come
from `fill`: N(0, std) for weight matrices, 0 for biases, 1/0 for LayerNorm gamma/beta (the MSG
code's rule). With masks at
c = 0 the grown model computes the old function whatever the new entries hold (growth/masks.py).
The same operator with zero fill grows Adam moments (the MSG optimizer rule).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Callable, Dict, Iterator, Mapping, Tuple

import torch
from torch import Tensor

from nemo_flm.growth.plan import GrowthPlan
from nemo_flm.model.layout import AXES, Sizes, axis_shape, is_hidden_matrix, split_layer, tensor_shape

OUTPUT = "output_layer.weight"

Fill = Callable[[str, torch.Size, torch.dtype], Tensor]


def _sizes(plan: GrowthPlan, vocab: int) -> Tuple[Sizes, Sizes]:
    """(old, new) sizes of a growth, for the layout table."""
    old = Sizes(plan.old_hidden, plan.old_ffn, plan.old_heads, plan.head_dim, vocab)
    new = Sizes(plan.new_hidden, plan.new_ffn, plan.new_heads, plan.head_dim, vocab)
    return old, new


def grow_tensor(old: Tensor, axes: Tuple[str, ...], plan: GrowthPlan, new: Tensor) -> Tensor:
    """Copy `old` into the top-left block of `new` (already filled) along each logical axis."""
    old_sizes, new_sizes = _sizes(plan, old.shape[0] if axes[0] == "vocab" else 0)
    old_view, new_view, block = [], [], []
    for axis in axes:
        o, n = axis_shape(axis, old_sizes), axis_shape(axis, new_sizes)
        old_view += o
        new_view += n
        block += [slice(0, size) for size in o]
    new.view(new_view)[tuple(block)] = old.reshape(old_view).to(new.dtype)
    return new


def default_fill(std: float, seed: int = 0, width_mult: float = 1.0) -> Fill:
    """MSG's initialisation of new entries: N(0, std) matrices, zero biases, LayerNorm (1, 0).
    Under μP (`width_mult` = the grown model's m) new entries of hidden matrices get std / sqrt(m)
    (model/mup.py's width scaling; like every new matrix entry here, without megatron's extra
    1/sqrt(2L) on the residual outputs). Each tensor draws from a generator of its own, seeded by
    `seed` and its name, so the grown values do not depend on the order tensors are grown in (the
    offline growth grows several at once)."""

    def fill(name: str, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        if "layernorm" in name and name.endswith("weight"):
            return torch.ones(shape, dtype=dtype)
        if len(shape) == 1:
            return torch.zeros(shape, dtype=dtype)
        scale = std * width_mult**-0.5 if is_hidden_matrix(name) else std
        generator = torch.Generator().manual_seed(_tensor_seed(seed, name))
        return torch.randn(shape, generator=generator, dtype=torch.float32).mul_(scale).to(dtype)

    return fill


def _tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed of its own for each tensor name (any int `seed`)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def zero_fill(name: str, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    return torch.zeros(shape, dtype=dtype)


def _new_shape(axes: Tuple[str, ...], plan: GrowthPlan, vocab: int) -> torch.Size:
    return torch.Size(tensor_shape(axes, _sizes(plan, vocab)[1]))


def grown_entries(
    state: Mapping[str, object], plan: GrowthPlan, fill: Fill
) -> Iterator[Tuple[str, Callable[[], object]]]:
    """(name, make) for every entry of the grown state, where make() reads what it needs from
    `state` and returns the grown value: nothing is read until it is made, so a lazily loaded
    input (a checkpoint read tensor by tensor) is never held whole, and entries can be made
    concurrently. Non-parameter entries (megatron's `_extra_state`) are carried over."""
    old_layers: Dict[int, Dict[str, str]] = {}  # old layer -> local name -> name in `state`
    for name in state:
        layer, local = split_layer(name)
        if layer is not None:
            old_layers.setdefault(layer, {})[local] = name
        else:
            yield name, functools.partial(_grow_entry, name, name, state, name, plan, fill)
    for new_index, source in enumerate(plan.source):
        template = old_layers[source if source is not None else 0]
        for local, old_name in template.items():
            name = f"decoder.layers.{new_index}.{local}"
            make = _fresh_entry if source is None and local in AXES else _grow_entry
            yield name, functools.partial(make, name, local, state, old_name, plan, fill)


def iter_grown(state: Mapping[str, object], plan: GrowthPlan, fill: Fill) -> Iterator[Tuple[str, object]]:
    """(name, grown value) one entry at a time, so a caller can write each and let it go."""
    for name, make in grown_entries(state, plan, fill):
        yield name, make()


def _fresh_entry(name: str, local: str, state: Mapping[str, object], old_name: str, plan: GrowthPlan, fill: Fill):
    """An entry of a layer with no source: all new, shaped like the grown layer 0's."""
    value = state[old_name]
    if not torch.is_tensor(value):
        return value
    return fill(name, _new_shape(AXES[local], plan, 0), value.dtype)


def _grow_entry(name: str, local: str, state: Mapping[str, object], old_name: str, plan: GrowthPlan, fill: Fill):
    """Entry `old_name` of `state`, grown to the plan's shape as the grown model's `name`."""
    value = state[old_name]
    if not torch.is_tensor(value) or local not in AXES:
        return value
    axes = AXES[local]
    vocab = value.shape[0] if axes[0] == "vocab" else 0
    if name == OUTPUT and plan.output_rescale != 1.0:
        value = value * plan.output_rescale  # muP: keeps output_mult / m x W; new columns keep the base init
    return grow_tensor(value, axes, plan, fill(name, _new_shape(axes, plan, vocab), value.dtype))
