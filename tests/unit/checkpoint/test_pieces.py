"""Pieces of full tensors: a flat range of a row-major tensor as boxes that cover it exactly once,
each a view of the flat range in order, and TP shards offset along their partition dim."""

import math

import pytest
import torch

from nemo_flm.checkpoint.pieces import flat_boxes, range_pieces, shard_piece


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4), (4, 1, 3), (1, 5)])
def test_flat_boxes_cover_every_range_exactly_once_in_order(shape):
    n = math.prod(shape)
    for start in range(n):
        for stop in range(start + 1, n + 1):
            hits = torch.zeros(shape, dtype=torch.int)
            order = []
            for offsets, sizes in flat_boxes(shape, start, stop):
                box = tuple(slice(o, o + s) for o, s in zip(offsets, sizes))
                hits[box] += 1
                order += torch.arange(n).view(shape)[box].reshape(-1).tolist()
            want = torch.zeros(n, dtype=torch.int)
            want[start:stop] = 1
            assert torch.equal(hits.view(-1), want), (shape, start, stop)
            assert order == list(range(start, stop)), (shape, start, stop)  # contiguous segments, in order


def test_range_pieces_are_views_of_the_flat_range_at_their_place_in_the_full_tensor():
    """A distributed-optimizer range [5, 11) of TP rank 1's shard (2 x 4 rows of a 4 x 4 weight
    split along dim 0): the pieces sit at rows 2-3 of the full tensor and write through to `flat`."""
    full = torch.arange(16.0).view(4, 4)
    local = full[2:4]  # TP rank 1 of 2, partition dim 0
    flat = local.reshape(-1)[5:11].clone()
    pieces = range_pieces(("exp_avg/w",), flat, local.shape, 5, 0, 1, 2)
    assert [p.shape for p in pieces] == [(4, 4)] * len(pieces)
    for piece in pieces:
        box = tuple(slice(o, o + s) for o, s in zip(piece.offsets, piece.tensor.shape))
        assert torch.equal(piece.tensor, full[box])
        piece.tensor.zero_()
    assert not flat.any()


def test_a_shard_piece_is_offset_along_its_partition_dim():
    piece = shard_piece(("model/w",), torch.zeros(3, 8), 1, 2, 4)
    assert piece.shape == (3, 32) and piece.offsets == (0, 16)
    replicated = shard_piece(("model/b",), torch.zeros(8), None, 2, 4)
    assert replicated.shape == (8,) and replicated.offsets == (0,)
