"""Real batches for width sweeps: fixed samples of the training blend (the built-in corpus by
default), the same at every width and LR, optionally in a compact vocabulary.

A sweep's model is small and its cost is the 100K-row embedding and output layer: at width 256
they do ~17x the blocks' work, so an LR sweep over the full vocabulary mostly trains the vocabulary
layers, which μP does not rescale. A compact vocabulary keeps the text and its token order but maps
the tokens outside the K-1 most frequent ones (counted on the training batches) to one shared id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from nemo_flm import parallel
from nemo_flm.data.datasets import build_train_dataset, build_valid_datasets, collate, data_blend
from nemo_flm.data.tokenizer import TOKENIZER_IDS
from nemo_flm.training.forward_step import Batch


@dataclass
class SweepData:
    train: List[Batch]  # one per step, the same at every width and LR
    held_out: Optional[Batch]  # validation samples (None: none asked for)
    vocab_size: int  # the ids the batches use
    shared_fraction: float  # of the training tokens mapped to the shared id (0 without compaction)


def _batches(dataset: Any, batch_size: int, count: int) -> List[Batch]:
    if len(dataset) < batch_size * count:
        raise ValueError(f"the data holds {len(dataset)} samples where {batch_size * count} are needed")
    return [collate([dataset[i] for i in range(k * batch_size, (k + 1) * batch_size)]) for k in range(count)]


def training_batches(data_cfg: Any, seq_length: int, batch_size: int, count: int) -> List[Batch]:
    """The first `count` batches of the blended training split, in order."""
    blend = parallel.rank_zero_first(lambda: data_blend(data_cfg))
    return _batches(build_train_dataset(data_cfg, blend, seq_length, batch_size * count), batch_size, count)


def held_out_batch(data_cfg: Any, seq_length: int, per_dataset: int) -> Batch:
    """The first `per_dataset` validation samples of every dataset of the blend, as one batch."""
    blend = parallel.rank_zero_first(lambda: data_blend(data_cfg))
    datasets = build_valid_datasets(data_cfg, blend, seq_length, per_dataset)
    parts = [_batches(d, per_dataset, 1)[0] for d in datasets.values() if d is not None]
    if not parts:
        raise ValueError(f"data.split '{data_cfg.split}' leaves no validation data")
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def compact_vocab(batches: List[Batch], size: int) -> torch.Tensor:
    """A map of every tokenizer id onto `size` ids: the size-1 most frequent tokens of `batches`
    (inputs and labels) to 0..size-2 by frequency, all others to size-1."""
    tokens = torch.cat([torch.cat((b["tokens"].flatten(), b["labels"].flatten())) for b in batches])
    counts = torch.bincount(tokens, minlength=TOKENIZER_IDS)
    mapping = torch.full((counts.numel(),), size - 1, dtype=torch.long)
    kept = counts.argsort(descending=True, stable=True)[: size - 1]
    mapping[kept] = torch.arange(kept.numel())
    return mapping


def remap(batch: Batch, mapping: torch.Tensor) -> Batch:
    return {**batch, "tokens": mapping[batch["tokens"]], "labels": mapping[batch["labels"]]}


def sweep_data(
    data_cfg: Any, seq_length: int, batch_size: int, steps: int, vocab: int = 0, held_out_per_dataset: int = 0
) -> SweepData:
    """`steps` training batches (and a held-out batch), in a compact vocabulary of `vocab` ids
    (0: the tokenizer's own)."""
    if vocab == 1 or vocab < 0:
        raise ValueError(f"a compact vocabulary needs at least 2 ids (0: the tokenizer's), got {vocab}")
    train = training_batches(data_cfg, seq_length, batch_size, steps)
    held_out = held_out_batch(data_cfg, seq_length, held_out_per_dataset) if held_out_per_dataset else None
    if not vocab:
        return SweepData(train, held_out, TOKENIZER_IDS, 0.0)
    mapping = compact_vocab(train, vocab)
    train = [remap(b, mapping) for b in train]
    shared = torch.cat([b["labels"].flatten() for b in train]).eq(vocab - 1).float().mean().item()
    return SweepData(train, held_out and remap(held_out, mapping), vocab, shared)
