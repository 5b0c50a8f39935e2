"""Hugging Face weight files: written as safetensors shards, read as safetensors or pickled .bin shards.

Written: `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json` (HF's layout),
filled tensor by tensor, so at most one shard is held in memory. Read: whatever an HF folder
holds (an index over safetensors or `pytorch_model-*.bin` shards, as CofeAI publishes FLM-101B, or
a single file), one file at a time: safetensors tensor by tensor, .bin files memory-mapped
(`torch.load(mmap=True, weights_only=True)`), so reading never holds the whole model.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterator, List, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'2GB' -> 2e9 bytes (HF's units: KB/MB/GB are powers of 10, KiB/MiB/GiB of 2)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS:
        raise ValueError(f"shard size '{text}' is not a size like 2GB, 500MB or 1GiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


class SafetensorsShards:
    """Collects tensors into shards of at most `max_bytes` (a larger tensor gets a shard of its own)."""

    def __init__(self, root: str, max_bytes: int):
        self.root, self.max_bytes = root, max_bytes
        self.pending: Dict[str, Tensor] = {}
        self.pending_bytes = 0
        self.files: List[List[str]] = []  # tensor names of each written shard
        self.total = 0

    def add(self, name: str, tensor: Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total += size

    def _flush(self) -> None:
        save_file(self.pending, self._path(len(self.files)), metadata={"format": "pt"})
        self.files.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def _path(self, index: int) -> str:
        return os.path.join(self.root, f"model-{index + 1:05d}.safetensors")

    def finish(self) -> None:
        """Write the last shard, give every shard its final `-of-` name and write the index."""
        if self.pending:
            self._flush()
        count = len(self.files)
        weight_map = {}
        for index, names in enumerate(self.files):
            final = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
            os.replace(self._path(index), os.path.join(self.root, final))
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        with open(os.path.join(self.root, SAFETENSORS_INDEX), "w") as handle:
            json.dump(index, handle, indent=2)


def weight_files(folder: str) -> Dict[str, str]:
    """{tensor name: file} of an HF folder's weights (an index, or a single file's own names)."""
    for index in (SAFETENSORS_INDEX, BIN_INDEX):
        path = os.path.join(folder, index)
        if os.path.isfile(path):
            with open(path) as handle:
                files = json.load(handle)["weight_map"]
            absent = sorted(f for f in set(files.values()) if not os.path.isfile(os.path.join(folder, f)))
            if absent:  # found before any shard is converted, not halfway through
                raise FileNotFoundError(f"'{folder}' lacks {absent[0]} (and {len(absent) - 1} more), named in {index}")
            return files
    for single in SINGLE_FILES:
        if os.path.isfile(os.path.join(folder, single)):
            return dict.fromkeys(_names(os.path.join(folder, single)), single)
    raise FileNotFoundError(
        f"'{folder}' has no weights: expected {SAFETENSORS_INDEX}, {BIN_INDEX} or one of {', '.join(SINGLE_FILES)}"
    )


def _names(path: str) -> List[str]:
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as handle:
            return list(handle.keys())
    return list(_load_bin(path))


def _load_bin(path: str) -> Dict[str, Tensor]:
    """A pickled state dict, memory-mapped: its tensors are read from disk when used."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def iter_tensors(folder: str, files: Dict[str, str]) -> Iterator[Tuple[str, Tensor]]:
    """(name, tensor) of every tensor `files` maps to a file, one file open at a time."""
    for file in sorted(set(files.values())):
        path = os.path.join(folder, file)
        if file.endswith(".safetensors"):
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    if files.get(name) == file:
                        yield name, handle.get_tensor(name)
        else:
            state = _load_bin(path)
            yield from ((name, t) for name, t in state.items() if files.get(name) == file)
            del state
