"""Where a model's tensors live in a checkpoint, and the pieces of them a rank holds whole.

Every tensor is stored under `<group>/<name>`: `name` is the parameter's name in the whole model
(model/sharding.global_names, valid at any TP and PP) as FLMModel's state dict spells it
(`model.decoder.layers.3...`, as in a .nemo), `group` says what it is. An fp32 model reads
its weights from a bf16 run's fp32 master copy when there is one (the exact weights), else from
the weights.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from nemo_flm import parallel
from nemo_flm.checkpoint.pieces import Piece, shard_piece
from nemo_flm.model.sharding import global_names, partition_dims

PREFIX = "model."  # FLMModel keeps its network in `.model`: tensors are named as in its state dict
MODEL = "model"  # weights
MAIN_PARAM = "main_param"  # the fp32 master copy of a low-precision weight (megatron's main param)
MOMENTS = ("exp_avg", "exp_avg_sq")  # Adam's


def weight_keys(name: str, dtype: torch.dtype, save: bool) -> Tuple[str, ...]:
    """The key a weight is written under, or the keys it is read from (first present wins)."""
    if save or dtype != torch.float32:
        return (f"{MODEL}/{name}",)
    return (f"{MAIN_PARAM}/{name}", f"{MODEL}/{name}")


def shard_pieces(
    network: torch.nn.Module,
    save: bool,
    state_of: Optional[Callable[[torch.Tensor], Dict[str, torch.Tensor]]] = None,
    prefix: str = PREFIX,
) -> List[Piece]:
    """This rank's TP shard of every weight, whole, and with `state_of` (param -> its optimizer
    state) of its Adam moments. A tensor replicated over TP is saved by TP rank 0 only (every
    TP rank reads it); a tensor every data-parallel rank holds is offered by each, and written
    once (checkpoint/dcp.py)."""
    names, dims = global_names(network, prefix), partition_dims(network)
    rank, size = parallel.tp_rank(), parallel.tp_size()
    pieces = []
    for key, param in network.named_parameters():
        if save and dims[key] is None and rank != 0:
            continue
        name = names[prefix + key]
        pieces.append(shard_piece(weight_keys(name, param.dtype, save), param.detach(), dims[key], rank, size))
        state = state_of(param) if state_of is not None else {}
        pieces += [shard_piece((f"{m}/{name}",), state[m], dims[key], rank, size) for m in MOMENTS if m in state]
    return pieces
