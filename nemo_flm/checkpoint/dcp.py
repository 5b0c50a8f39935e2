"""Pieces (checkpoint/pieces.py) to and from disk with torch.distributed.checkpoint (DCP).

DCP is PyTorch's distributed checkpointing: every rank writes its own file in parallel, the
coordinator gathers the ranks' plans, gives each tensor chunk that several ranks hold (a data-parallel
replica's weights) to the rank with the least to write, and records where each chunk went in
`.metadata`; loading reads, for each box a rank asks for, the stored chunks that overlap it, at any
layout. It runs the same over gloo on CPUs and alongside NCCL on GPUs (its collectives use the
process group given, parallel.checkpoint_group). megatron-core's `dist_checkpointing` stores the
same DCP files, but its save path needs CUDA (synchronize, CUDA tensors in its checks).

The planners here only describe pieces as DCP chunks; DCP plans, deduplicates, writes, reads and
reshards. `.metadata` is a pickle: it is read with an unpickler that builds DCP's metadata classes
and nothing else, and the files it names must lie inside the checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pickle
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadPlan, SavePlan, TensorWriteData, WriteItem, WriteItemType
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.distributed.checkpoint.staging import AsyncStager
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse

from nemo_flm.atomic import discard
from nemo_flm.checkpoint.pieces import Piece

METADATA = ".metadata"

# DCP warns that it "assumes" a single process even when told so (no_dist=True), once per tensor
# the offline tools read (from several threads in a growth): that one message, from DCP only
warnings.filterwarnings(
    "ignore",
    message="torch.distributed is disabled, unavailable or uninitialized",
    module="torch.distributed.checkpoint",
)

# what DCP's .metadata may be built from (its dataclasses, torch's dtypes and sizes, containers)
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by its name, from torch's own table
    ("pathlib", "PosixPath"),  # the path it was written to
}
# the records BUILD may fill in: fresh instances of DCP's own dataclasses, nothing shared
_RECORDS = {
    getattr(importlib.import_module(module), name)
    for module, name in _ALLOWED
    if module.startswith("torch.distributed.checkpoint") and name != "_MEM_FORMAT_ENCODING"
}
_DTYPES = {str(dtype).removeprefix("torch.") for dtype in vars(torch).values() if isinstance(dtype, torch.dtype)}


class _MetadataUnpickler(pickle._Unpickler):
    """Python's own unpickler (not the C one), whose opcodes can be checked one by one: classes
    only from the list above, and BUILD only on DCP's freshly made records (on a class, an enum
    member or a function it would change them for the whole process)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "torch" and name in _DTYPES):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")

    def load_build(self) -> None:
        target = self.stack[-2]
        if type(target) not in _RECORDS:  # a class, an enum member, a function: shared by the whole process
            raise pickle.UnpicklingError(
                f"setting attributes of {type(target).__name__} is not part of a checkpoint's metadata"
            )
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


class CheckpointReader(FileSystemReader):
    """DCP's file reader with a safe, cached `.metadata` and a count of the bytes it read."""

    def __init__(self, path: str):
        super().__init__(path)
        self._metadata: Optional[Metadata] = None
        self.bytes_read = 0

    def read_metadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = read_metadata(str(self.path))
        return self._metadata

    def read_data(self, plan: LoadPlan, planner) -> Future:
        self.bytes_read += sum(self.storage_data[item.storage_index].length for item in plan.items)
        return super().read_data(plan, planner)


def read_metadata(path: str) -> Metadata:
    """The checkpoint's DCP metadata, checked: built only from DCP's own classes, naming only
    files inside `path`. Raises ValueError in one line otherwise."""
    try:
        with open(os.path.join(path, METADATA), "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails in any of a dozen ways: one line
        raise ValueError(f"'{path}' has no readable {METADATA} ({type(err).__name__}: {err})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise ValueError(f"'{path}/{METADATA}' is not a checkpoint's metadata")
    for info in metadata.storage_data.values():
        name = info.relative_path
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(f"'{path}/{METADATA}' names a file '{name}' outside its folder: a corrupt or crafted file")
    return metadata


def verify(path: str) -> None:
    """Every file `.metadata` names is there and covers the bytes it is said to hold (a write cut
    short leaves a shorter file); raises ValueError naming the first that is not."""
    ends: Dict[str, int] = {}
    for info in read_metadata(path).storage_data.values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        file = os.path.join(path, name)
        size = os.path.getsize(file) if os.path.isfile(file) else None
        if size is None or size < end:
            raise ValueError(f"'{file}' is missing or truncated ({size} of {end} bytes)")


def _item_key(index: int) -> str:
    return f"piece{index}"


class _PieceSavePlanner(DefaultSavePlanner):
    """Each piece is one chunk (its offsets and sizes) of the full tensor `piece.key`."""

    def __init__(self, pieces: Sequence[Piece]):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.pieces = pieces
        self._by_index = {(p.key, tuple(p.offsets)): _item_key(i) for i, p in enumerate(pieces)}

    def create_local_plan(self) -> SavePlan:
        items = []
        for piece in self.pieces:
            offsets, sizes = torch.Size(piece.offsets), torch.Size(piece.tensor.shape)
            items.append(
                WriteItem(
                    index=MetadataIndex(piece.key, offsets),
                    type=WriteItemType.SHARD,
                    tensor_data=TensorWriteData(
                        chunk=ChunkStorageMetadata(offsets=offsets, sizes=sizes),
                        properties=TensorProperties.create_from_tensor(piece.tensor),
                        size=torch.Size(piece.shape),
                    ),
                )
            )
        self.plan = SavePlan(items)
        return self.plan

    def lookup_object(self, index: MetadataIndex) -> torch.Tensor:
        return self.state_dict[self._by_index[(index.fqn, tuple(index.offset))]]


class _PieceLoadPlanner(DefaultLoadPlanner):
    """Each piece reads the stored chunks that overlap its box of its first key the checkpoint
    has, into its own tensor; a piece no key of which is stored is an error. Reads are addressed
    to the piece, not to the stored key: two pieces may read the same box (a bf16 weight and its
    fp32 main weight, from a checkpoint without main weights)."""

    def __init__(self, pieces: Sequence[Piece], path: str):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.pieces, self.path = pieces, path

    def create_local_plan(self) -> LoadPlan:
        stored = self.metadata.state_dict_metadata
        items = []
        for i, piece in enumerate(self.pieces):
            key = next((k for k in piece.keys if k in stored), None)
            if key is None:
                raise ValueError(f"'{self.path}' holds no '{piece.key}': it was written for another model")
            md = stored[key]
            if not isinstance(md, TensorStorageMetadata) or tuple(md.size) != tuple(piece.shape):
                size = tuple(md.size) if isinstance(md, TensorStorageMetadata) else None
                raise ValueError(f"'{self.path}' holds '{key}' with shape {size}, this model {tuple(piece.shape)}")
            chunk = ChunkStorageMetadata(offsets=torch.Size(piece.offsets), sizes=torch.Size(piece.tensor.shape))
            reads = create_read_items_for_chunk_list(key, md, [chunk])
            if sum(math.prod(r.lengths) for r in reads) != piece.tensor.numel():
                raise ValueError(f"'{self.path}' does not cover '{key}' at {piece.offsets}: a corrupt checkpoint")
            to_piece = MetadataIndex(_item_key(i), torch.Size(piece.offsets))
            items += [dataclasses.replace(read, dest_index=to_piece) for read in reads]
        return LoadPlan(items)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self.state_dict[index.fqn]


def _state(pieces: Sequence[Piece]) -> Dict[str, torch.Tensor]:
    return {_item_key(i): piece.tensor for i, piece in enumerate(pieces)}


class _FreshFolderWriter(FileSystemWriter):
    """DCP's writer into a folder that holds nothing else: the coordinator empties what an
    interrupted earlier write left there, after every rank planned and before any rank writes."""

    def prepare_global_plan(self, plans: List[SavePlan]) -> List[SavePlan]:
        discard(str(self.path))
        self.fs.mkdir(self.path)
        return super().prepare_global_plan(plans)


class PieceStager(AsyncStager):
    """The host copy an asynchronous save writes from: each piece into a buffer of its own size
    (pinned on GPUs), by a thread, reused by the next save. DCP's DefaultStager copies each
    tensor's whole storage: for a view into megatron's parameter buffer, every weight of the rank
    instead of the range it owns."""

    _synchronize_after_execute = False  # training waits for the copy itself, before its update

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-copy")
        self._buffers: Dict[str, torch.Tensor] = {}
        self._stream = torch.cuda.Stream() if torch.cuda.is_available() else None

    def stage(self, state_dict: Dict[str, torch.Tensor]) -> Future:
        """The copy starts once the work queued so far (the update that made these values) is
        done, on a stream of its own, so the next step's kernels run beside it."""
        ready = torch.cuda.current_stream().record_event() if self._stream is not None else None
        return self._executor.submit(self._copy, state_dict, ready)

    def _buffer(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
            self._buffers[key] = buffer
        return buffer

    @torch.no_grad()
    def _copy(self, state_dict: Dict[str, torch.Tensor], ready) -> Dict[str, torch.Tensor]:
        if self._stream is None:
            staged = {key: self._buffer(key, tensor).copy_(tensor) for key, tensor in state_dict.items()}
        else:
            self._stream.wait_event(ready)
            with torch.cuda.stream(self._stream):
                staged = {
                    key: self._buffer(key, tensor).copy_(tensor, non_blocking=True)
                    for key, tensor in state_dict.items()
                }
            self._stream.synchronize()
        for key in set(self._buffers) - set(state_dict):
            del self._buffers[key]
        return staged

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._buffers.clear()


def save(
    pieces: Sequence[Piece], path: str, group: Optional[dist.ProcessGroup], stager: Optional[PieceStager] = None
) -> Optional[AsyncSaveResponse]:
    """Write this rank's pieces into the folder `path` (every rank of `group` calls it). With a
    stager, in the background: its thread copies the pieces to host memory and DCP's writes them
    from another: `staging_completion` is done when the copy is, after which the tensors may
    change, and `upload_completion` when every rank's files and `.metadata` are on disk."""
    writer = _FreshFolderWriter(path, single_file_per_rank=True, sync_files=True)
    kwargs = dict(storage_writer=writer, planner=_PieceSavePlanner(pieces), process_group=group)
    if stager is None:
        dcp.save(_state(pieces), **kwargs)
        return None
    return dcp.async_save(_state(pieces), async_stager=stager, **kwargs)


def load(pieces: Sequence[Piece], path: str, group: Optional[dist.ProcessGroup] = None) -> int:
    """Read every piece's box into its tensor (every rank of `group` calls it; `group` None: this
    process alone). Returns the bytes read from the checkpoint's files."""
    reader = CheckpointReader(path)
    reader.read_metadata()  # checked here, where its reason is one line
    try:
        dcp.load(
            _state(pieces),
            storage_reader=reader,
            planner=_PieceLoadPlanner(pieces, path),
            process_group=group,
            no_dist=group is None,
        )
    except CheckpointException as err:  # a rank's one-line reason, not DCP's traceback of every rank
        reasons = [failure[0] for failure in err.failures.values() if isinstance(failure[0], ValueError)]
        if reasons:
            raise ValueError(str(reasons[0])) from None
        raise
    return reader.bytes_read


def stored_tensors(path: str) -> Dict[str, TensorStorageMetadata]:
    """key -> DCP's record (full shape, dtype, chunks) of every tensor the checkpoint holds."""
    return {k: md for k, md in read_metadata(path).state_dict_metadata.items() if isinstance(md, TensorStorageMetadata)}


def read_box(reader: CheckpointReader, key: str, offsets: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """One box of the stored tensor `key`, read in this process alone (offline tools)."""
    md = reader.read_metadata().state_dict_metadata[key]
    out = torch.empty(tuple(sizes), dtype=md.properties.dtype)
    piece = Piece((key,), tuple(md.size), tuple(offsets), out)
    planner = _PieceLoadPlanner([piece], str(reader.path))
    dcp.load(_state([piece]), storage_reader=reader, planner=planner, no_dist=True)
    return out
