"""A training checkpoint read tensor by tensor in one process: offline growth, HF export and
inference read any layout's checkpoint through this, with ShardReader's interface.

Each tensor is read whole, or as any TP size's shard, from the stored chunks that overlap it
(checkpoint/dcp.py), one tensor in memory at a time. The partition dims (which dim a TP shard
splits) come from the model config the checkpoint carries, through a meta-device skeleton.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from torch import Tensor

from nemo_flm.checkpoint import dcp
from nemo_flm.checkpoint.shards import TensorTable
from nemo_flm.checkpoint.weights import PREFIX


class TrainingCheckpointReader(TensorTable):
    tp_size = 1  # tensors are stored whole (in chunks), whatever layout wrote them

    def __init__(self, root: str, partition_dims: Mapping[str, Optional[int]], prefix: str = PREFIX):
        """`partition_dims`: parameter name (without `prefix`) -> its TP partition dim or None."""
        self.root = root
        self.meta: Dict[str, Any] = {}  # ShardReader's meta (a grown checkpoint's plan): none here
        self._reader = dcp.CheckpointReader(root)
        self.tensors: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for key, md in dcp.stored_tensors(root).items():
            group, name = key.split("/", 1)
            dim = partition_dims.get(name.removeprefix(prefix))
            self.tensors.setdefault(group, {})[name] = {"shape": list(md.size), "partition_dim": dim}

    def read(self, group: str, name: str, tp_rank: int = 0, tp_size: int = 1) -> Tensor:
        """Chunk `tp_rank` of `tp_size` of the full tensor along its partition dim (the whole
        tensor when it is replicated or tp_size is 1)."""
        info = self.tensors[group][name]
        shape, dim = info["shape"], info["partition_dim"]
        offsets, sizes = [0] * len(shape), list(shape)
        if dim is not None and tp_size > 1:
            lo, hi = self.tp_range(group, name, tp_rank, tp_size)
            offsets[dim], sizes[dim] = lo, hi - lo
        return self.read_box(group, name, offsets, sizes)

    def read_box(self, group: str, name: str, offsets: Sequence[int], sizes: Sequence[int]) -> Tensor:
        return dcp.read_box(self._reader, f"{group}/{name}", offsets, sizes)

    def verify(self) -> None:
        dcp.verify(self.root)
