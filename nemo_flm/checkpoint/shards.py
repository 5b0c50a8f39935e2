"""The project's tensor storage: a directory of safetensors files, one per tensor and TP shard.

    index.json                         tp_size, every tensor's full shape and partition dim, meta
    <group>/<name>.safetensors         a replicated tensor, or any tensor when tp_size is 1
    <group>/<name>.tp<r>.safetensors   shard r of a tensor split along its partition dim (tp_size > 1)

Every tensor-parallel rank writes its own shards (no gather, no rank holding the model); TP rank 0
writes the replicated tensors and the index. A reader at any TP size assembles the contiguous
range it needs from safetensors slices (megatron's shards are contiguous chunks of the full
tensor), so resume, restore and growth may change TP. safetensors maps files into memory: a
tensor read from a tp_size-1 directory costs no anonymous memory until it is used, which is what
keeps offline growth near one tensor (growth/offline.py). Lightning checkpoints
(checkpoint/lightning_io.py), .nemo weights (checkpoint/nemo_file.py) and grown checkpoints
(growth/grown_checkpoint.py) all use it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from nemo_flm import parallel

INDEX = "index.json"
FORMAT = "nemo_flm.shards/1"


def _file(root: str, group: str, name: str, shard: Optional[int]) -> str:
    """The file of a tensor; names come from an index a checkpoint folder carries, so one that would
    lead outside the folder (`..`, a path separator, an absolute path) is refused."""
    for part in (group, name):
        if not part or part in (".", "..") or os.sep in part or "/" in part or "\\" in part:
            raise ValueError(f"'{root}' names a tensor '{group}/{name}' outside its folder: a corrupt or crafted index")
    suffix = f".tp{shard}" if shard is not None else ""
    return os.path.join(root, group, f"{name}{suffix}.safetensors")


class ShardWriter:
    """Writes one rank's tensors into `root` (which the caller stages and renames when complete)."""

    def __init__(self, root: str, tp_rank: int = 0, tp_size: int = 1):
        self.root, self.tp_rank, self.tp_size = root, tp_rank, tp_size
        self.tensors: Dict[str, Dict[str, Dict[str, Any]]] = {}

    def add(self, group: str, name: str, tensor: Tensor, partition_dim: Optional[int] = None) -> None:
        """Store `tensor`, this rank's shard of a tensor split along `partition_dim` (None: replicated)."""
        self.record(group, name, self.write(group, name, tensor, partition_dim))

    def write(self, group: str, name: str, tensor: Tensor, partition_dim: Optional[int] = None) -> Dict[str, Any]:
        """Write `tensor`'s file and return its index record, which `record` enters: writers on
        several threads, one thread keeping the index in a fixed order."""
        split = partition_dim is not None and self.tp_size > 1
        shape = list(tensor.shape)
        if split:
            shape[partition_dim] *= self.tp_size
        if split or self.tp_rank == 0:
            os.makedirs(os.path.join(self.root, group), exist_ok=True)
            save_file(
                {"t": tensor.detach().contiguous().cpu()},
                _file(self.root, group, name, self.tp_rank if split else None),
            )
        return {"shape": shape, "partition_dim": partition_dim}

    def record(self, group: str, name: str, entry: Dict[str, Any]) -> None:
        self.tensors.setdefault(group, {})[name] = entry

    def add_tensors(
        self, group: str, items: Iterable[Tuple[str, Any]], dims: Mapping[str, Optional[int]]
    ) -> Dict[str, Any]:
        """Store every tensor of `items` (a state dict's, possibly streamed) with its partition dim;
        returns the entries that are not tensors (megatron's empty `_extra_state`)."""
        rest = {}
        for name, value in items:
            if torch.is_tensor(value):
                self.add(group, name, value, dims.get(name))
            else:
                rest[name] = value
        return rest

    def write_index(self, meta: Optional[Dict[str, Any]] = None) -> None:
        """TP rank 0 only: all ranks hold the same names, so its record describes every shard."""
        if self.tp_rank != 0:
            return
        index = {"format": FORMAT, "tp_size": self.tp_size, "tensors": self.tensors, "meta": meta or {}}
        with open(os.path.join(self.root, INDEX), "w") as handle:
            json.dump(index, handle, indent=1)


class TensorTable:
    """What every checkpoint reader answers from its table of tensors (group -> name -> full
    shape and partition dim): names, shapes, a TP shard's range, lazily read groups."""

    tensors: Dict[str, Dict[str, Dict[str, Any]]]

    def names(self, group: str) -> List[str]:
        return list(self.tensors.get(group, {}))

    def shape(self, group: str, name: str) -> torch.Size:
        return torch.Size(self.tensors[group][name]["shape"])

    def tp_range(self, group: str, name: str, tp_rank: int, tp_size: int) -> Tuple[int, int]:
        """[lo, hi) of the partition dim that shard `tp_rank` of `tp_size` holds (megatron's shards
        are contiguous chunks of the full tensor)."""
        info = self.tensors[group][name]
        dim = info["partition_dim"]
        length = info["shape"][dim]
        if length % tp_size:
            raise ValueError(
                f"'{name}' has {length} entries along dim {dim}, which do not split into "
                f"{tp_size} tensor-parallel shards: choose a tensor_model_parallel_size dividing it"
            )
        return tp_rank * length // tp_size, (tp_rank + 1) * length // tp_size

    def group(self, name: str, prefix: str = "", tp_rank: int = 0, tp_size: int = 1) -> "LazyGroup":
        return LazyGroup(self, name, prefix, tp_rank, tp_size)


class ShardReader(TensorTable):
    """Reads tensors, whole or as any TP size's shard, from a directory ShardWriter wrote."""

    def __init__(self, root: str):
        self.root = root
        index = self._index()
        if index.get("format") != FORMAT:
            raise ValueError(f"'{root}' has checkpoint format {index.get('format')!r}, expected {FORMAT!r}")
        self.tp_size, self.meta = index["tp_size"], index["meta"]
        self.tensors: Dict[str, Dict[str, Dict[str, Any]]] = index["tensors"]

    def _index(self) -> Dict[str, Any]:
        try:
            with open(os.path.join(self.root, INDEX)) as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"'{self.root}' is not a complete nemo_flm checkpoint ({type(err).__name__} reading "
                f"{INDEX}): it was not written by nemo_flm, or its writing was interrupted"
            ) from None

    def read(self, group: str, name: str, tp_rank: int = 0, tp_size: int = 1) -> Tensor:
        """Chunk `tp_rank` of `tp_size` of the full tensor along its partition dim (the whole
        tensor when it is replicated or tp_size is 1)."""
        info = self.tensors[group][name]
        dim = info["partition_dim"]
        if dim is None or self.tp_size == tp_size == 1:
            return self._slice(_file(self.root, group, name, None), None)
        lo, hi = self.tp_range(group, name, tp_rank, tp_size)
        step = info["shape"][dim] // self.tp_size
        pieces = []
        for src in range(lo // step, (hi - 1) // step + 1):
            start, stop = max(lo, src * step) - src * step, min(hi, (src + 1) * step) - src * step
            index = [slice(None)] * len(info["shape"])
            index[dim] = slice(start, stop)
            shard = src if self.tp_size > 1 else None
            pieces.append(self._slice(_file(self.root, group, name, shard), tuple(index)))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)

    def read_box(self, group: str, name: str, offsets: Sequence[int], sizes: Sequence[int]) -> Tensor:
        """The box (offsets, sizes) of the full tensor; from a tp_size-1 folder only its bytes are
        read (memory-mapped slices)."""
        index = tuple(slice(o, o + n) for o, n in zip(offsets, sizes))
        if self.tp_size == 1 or self.tensors[group][name]["partition_dim"] is None:
            return self._slice(_file(self.root, group, name, None), index)
        return self.read(group, name)[index]

    def verify(self) -> None:
        """Open every file the index names (its header must fit in it): raises naming the first
        missing or truncated one."""
        for group, table in self.tensors.items():
            for name, info in table.items():
                split = info["partition_dim"] is not None and self.tp_size > 1
                for shard in range(self.tp_size) if split else [None]:
                    path = _file(self.root, group, name, shard)
                    try:
                        self._open(path)
                    except Exception as err:  # noqa: BLE001 - any failure to open means unusable
                        raise ValueError(f"'{path}' is missing or corrupt ({err})") from None

    def _open(self, path: str) -> None:
        with safe_open(path, framework="pt"):
            pass

    def _slice(self, path: str, index) -> Tensor:
        with safe_open(path, framework="pt") as handle:
            return handle.get_tensor("t") if index is None else handle.get_slice("t")[index]


class LazyGroup(Mapping[str, Tensor]):
    """A group's tensors whose names start with `prefix`, keyed without it, each read only when
    asked for: whole (memory-mapped when the directory's tp_size is 1), or as shard `tp_rank`
    of `tp_size`."""

    def __init__(self, reader: TensorTable, group: str, prefix: str = "", tp_rank: int = 0, tp_size: int = 1):
        self.reader, self.group_name, self.prefix = reader, group, prefix
        self.tp_rank, self.tp_size = tp_rank, tp_size
        self._keys = [n[len(prefix) :] for n in reader.names(group) if n.startswith(prefix)]

    def __getitem__(self, name: str) -> Tensor:
        return self.reader.read(self.group_name, self.prefix + name, self.tp_rank, self.tp_size)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def merge_tables(writer: ShardWriter, group) -> None:
    """Under pipeline parallelism each stage writes its own layers: give every writer of `group`
    (the pipeline group) all stages' tensor tables, so that one of them writes the whole index."""
    if group is None:
        return
    for table in parallel.all_gather_object(writer.tensors, group):
        for name, entries in table.items():
            writer.tensors.setdefault(name, {}).update(entries)


def consolidate(src: ShardReader, dst: str, groups: List[str]) -> ShardReader:
    """Rewrite `groups` of a TP-sharded directory as a tp_size-1 one at `dst`, tensor by tensor, so
    its tensors can then be memory-mapped whole (one full tensor in memory at a time)."""
    writer = ShardWriter(dst)
    for group in groups:
        for name in src.names(group):
            writer.add(group, name, src.read(group, name), src.tensors[group][name]["partition_dim"])
    writer.write_index(src.meta)
    return ShardReader(dst)
