"""Reading a nemo_flm .nemo in place: its `model_config.yaml` and its sharded weights, nothing extracted.

A .nemo is an uncompressed tar of `model_config.yaml` and `model_weights/` (checkpoint/nemo_file.py
writes it, as NeMo does). Every member's bytes sit at a known offset in the archive, and a
safetensors file is an 8-byte header length, a JSON header and the raw tensor: so a tensor, or a
TP shard's slice of it, is read by memory-mapping its bytes in the archive. Restore, growth, export
and inference thus read only the shards they need (a rank its own), and no rank writes a copy of a
~205 GB archive to local disk.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tarfile
from typing import Any, Dict, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from nemo_flm.checkpoint.shards import INDEX, ShardReader

CONFIG = "model_config.yaml"
WEIGHTS = "model_weights"
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _members(archive: str) -> Dict[str, Tuple[int, int]]:
    """Member name -> (offset of its data, size), or a one-line ValueError for what is not a
    readable uncompressed tar."""
    if not os.path.isfile(archive):
        raise FileNotFoundError(f".nemo '{archive}' not found (or not a file)")
    try:
        with tarfile.open(archive, "r:") as tar:
            return {os.path.normpath(m.name): (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError) as err:
        reason = str(err).splitlines()[0].rstrip(":")
        raise ValueError(
            f"'{archive}' is not a readable .nemo (an uncompressed tar): {type(err).__name__}: {reason}"
        ) from None


class ArchiveShardReader(ShardReader):
    """ShardReader over the `model_weights/` folder inside a .nemo, reading bytes in place."""

    def __init__(self, archive: str, folder: str = WEIGHTS):
        self.archive = archive
        self._members = _members(archive)
        super().__init__(folder)

    def member(self, name: str, start: int = 0, count: int = -1) -> bytes:
        """`count` bytes (all: -1) of member `name` from `start`."""
        key = os.path.normpath(name)
        if key not in self._members:
            raise ValueError(f"'{self.archive}' has no member '{name}'")
        offset, size = self._members[key]
        count = size - start if count < 0 else count
        if start + count > size:
            raise ValueError(f"'{self.archive}' member '{name}' is shorter than its header says")
        with open(self.archive, "rb") as handle:
            handle.seek(offset + start)
            data = handle.read(count)
        if len(data) != count:
            raise ValueError(f"'{self.archive}' is truncated inside '{name}'")
        return data

    def has(self, name: str) -> bool:
        return os.path.normpath(name) in self._members

    def _index(self) -> Dict[str, Any]:
        try:
            return json.loads(self.member(os.path.join(self.root, INDEX)))
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"'{self.archive}' holds no readable {WEIGHTS}/{INDEX}: {err}") from None

    def _header(self, path: str) -> Tuple[Dict[str, Any], int]:
        """The safetensors header of member `path` and where its data starts in the archive."""
        (length,) = struct.unpack("<Q", self.member(path, 0, 8))
        header = json.loads(self.member(path, 8, length))["t"]
        begin, end = header["data_offsets"]
        if end > begin:  # the member holds all of its data
            self.member(path, 8 + length + end - 1, 1)
        return header, self._members[os.path.normpath(path)][0] + 8 + length + begin

    def _open(self, path: str) -> None:
        self._header(path)

    def _slice(self, path: str, index) -> Tensor:
        header, start = self._header(path)
        dtype, shape = _DTYPES[header["dtype"]], header["shape"]
        count = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        begin, end = header["data_offsets"]
        if end - begin != count:  # else the mapping would run into the next member's bytes
            raise ValueError(f"'{self.archive}' member '{path}' holds {end - begin} bytes for a {shape} {dtype} tensor")
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        # copy-on-write: a private mapping torch may view without a copy; nothing is written back
        mapped = np.memmap(self.archive, dtype=np.uint8, mode="c", offset=start, shape=(count,))
        tensor = torch.from_numpy(np.asarray(mapped)).view(dtype).view(shape)  # no copy: mapped pages
        return (tensor if index is None else tensor[index]).clone()


def open_nemo(path: str) -> Tuple[ArchiveShardReader, Any]:
    """(weights reader, model config as written) of the .nemo at `path`, read in place; a missing,
    non-tar, truncated or foreign file is refused in one line."""
    reader = ArchiveShardReader(path)
    if not reader.has(CONFIG):
        raise ValueError(f"'{path}' is not a nemo_flm .nemo: it has no {CONFIG}")
    reader.verify()
    return reader, OmegaConf.create(reader.member(CONFIG).decode())
