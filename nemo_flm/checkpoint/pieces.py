"""What one rank saves and loads: pieces of the model's full tensors.

A checkpoint stores every tensor in its full (TP = 1) shape under a key `<group>/<name>`: group
`model` (weights), `exp_avg`, `exp_avg_sq` (Adam moments), `main_param` (fp32 master weights of a
bf16 run); name the parameter's name in the whole model (model/sharding.global_names). Each rank
contributes the boxes of those tensors that it owns, as views of its own memory, and loads the
boxes it owns into the same views:

- a tensor-parallel shard is one box, offset along its partition dim (megatron's shards are
  contiguous chunks of the full tensor);
- megatron's distributed optimizer owns a flat range [start, stop) of each parameter's TP shard
  (its slice of the data-parallel buffer). Row-major order makes that range a few boxes: a partial
  first row, whole rows, a partial last row (recursively for more dims), each a contiguous segment
  of the flat range.

torch.distributed.checkpoint turns boxes into chunks on disk and reads any box of any layout back
(checkpoint/dcp.py), so a checkpoint written at one TP x PP x DP resumes at another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from torch import Tensor

Box = Tuple[Tuple[int, ...], Tuple[int, ...]]  # (offsets, sizes)


@dataclass(frozen=True)
class Piece:
    """A box of the full tensor `keys[0]` held by this rank as `tensor` (a view). When loading,
    the first of `keys` that the checkpoint has is read (fallbacks: the fp32 master weights of a
    bf16 run for an fp32 model, say)."""

    keys: Tuple[str, ...]
    shape: Tuple[int, ...]
    offsets: Tuple[int, ...]
    tensor: Tensor

    @property
    def key(self) -> str:
        return self.keys[0]


def flat_boxes(shape: Sequence[int], start: int, stop: int) -> List[Box]:
    """The boxes of a row-major tensor of `shape` that cover the flat range [start, stop), in
    order: each is a contiguous segment of the range."""
    if start >= stop:
        return []
    if len(shape) <= 1:
        return [((start,), (stop - start,))] if shape else [((), ())]
    rows = math.prod(shape[1:])
    first, last = start // rows, (stop - 1) // rows
    head, tail = start - first * rows, stop - last * rows
    inner = tuple(shape[1:])

    def within(row: int, lo: int, hi: int) -> List[Box]:
        return [((row, *offsets), (1, *sizes)) for offsets, sizes in flat_boxes(inner, lo, hi)]

    if first == last:
        return within(first, head, tail)
    boxes = []
    if head > 0:
        boxes += within(first, head, rows)
        first += 1
    ending = within(last, 0, tail) if tail < rows else []
    last -= bool(ending)
    if first <= last:
        boxes.append(((first, *[0] * len(inner)), (last - first + 1, *inner)))
    return boxes + ending


def full_shape(local: Sequence[int], partition_dim: Optional[int], tp_size: int) -> Tuple[int, ...]:
    """The full tensor's shape from one TP shard's."""
    shape = list(local)
    if partition_dim is not None:
        shape[partition_dim] *= tp_size
    return tuple(shape)


def _shard_offsets(local: Sequence[int], partition_dim: Optional[int], tp_rank: int) -> List[int]:
    offsets = [0] * len(local)
    if partition_dim is not None:
        offsets[partition_dim] = tp_rank * local[partition_dim]
    return offsets


def shard_piece(keys: Sequence[str], tensor: Tensor, partition_dim: Optional[int], tp_rank: int, tp_size: int) -> Piece:
    """The whole TP shard `tensor` as one piece of the full tensor."""
    shape = full_shape(tensor.shape, partition_dim, tp_size)
    return Piece(tuple(keys), shape, tuple(_shard_offsets(tensor.shape, partition_dim, tp_rank)), tensor)


def range_pieces(
    keys: Sequence[str],
    flat: Tensor,
    local: Sequence[int],
    start: int,
    partition_dim: Optional[int],
    tp_rank: int,
    tp_size: int,
) -> List[Piece]:
    """`flat` holds elements [start, start + len(flat)) of a TP shard of shape `local`: its
    pieces, each a view of `flat`."""
    base = _shard_offsets(local, partition_dim, tp_rank)
    shape = full_shape(local, partition_dim, tp_size)
    pieces, used = [], 0
    for offsets, sizes in flat_boxes(local, start, start + flat.numel()):
        count = math.prod(sizes)
        view = flat[used : used + count].view(sizes)
        pieces.append(Piece(tuple(keys), shape, tuple(b + o for b, o in zip(base, offsets)), view))
        used += count
    return pieces
