"""Blockwise causal attention, the xPos paper's way of reading past the training window.

With window W = the training length, queries come in half-windows of W/2 and each attends to its own
half-window (causally) and the previous one, so no query sees keys more than W-1 positions back:
every score uses a distance the model was trained on. Up to W positions this is plain causal
attention. During decoding the same rule applies to the cached keys (positions are absolute).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def blockwise_mask(first: int, count: int, window: int, device: torch.device) -> Optional[Tensor]:
    """megatron's boolean mask (True = masked out) [1, 1, count, first + count] for queries at
    positions first..first+count-1 over keys 0..first+count-1; None where it equals causal."""
    keys = first + count
    if keys <= window:
        return None
    half = window // 2
    q = torch.arange(first, keys, device=device)[:, None]
    k = torch.arange(keys, device=device)[None, :]
    visible = (k <= q) & (k >= (q // half - 1) * half)
    return ~visible[None, None]
