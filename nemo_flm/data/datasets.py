"""Training and validation datasets through megatron.core.datasets.

Training reads a blend (config/blend.py: e.g. English:Chinese) with BlendedMegatronDatasetBuilder +
GPTDataset; validation keeps one dataset per blend entry so losses are reported per dataset. The
same `split` applies to every prefix, so validation documents never appear in training.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import (
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from nemo_flm.config.blend import Dataset, parse_blend
from nemo_flm.data.corpus import SOURCES, build_default_corpus, corpus_dir
from nemo_flm.data.tokenizer import FLMTokenizer
from nemo_flm.errors import ConfigError


def blend_datasets(data_cfg: Any) -> List[Dataset]:
    """The configured blend (config/blend.py), or the built-in corpus's datasets weighted by
    data.corpus.weights, without building anything (the corpus's place is known beforehand)."""
    datasets = parse_blend(data_cfg)
    if datasets is not None:
        # absolute: `data/en_text` in another directory is another dataset
        return [Dataset(d.name, os.path.abspath(os.path.expanduser(d.prefix)), d.weight) for d in datasets]
    out = corpus_dir(data_cfg)
    return [Dataset(lang, os.path.join(out, lang), float(data_cfg.corpus.weights[lang])) for lang in SOURCES]


def data_blend(data_cfg: Any) -> List[Dataset]:
    """blend_datasets, the built-in corpus built on first use; every dataset's training and
    validation shares checked to hold a document."""
    if parse_blend(data_cfg) is None:
        build_default_corpus(data_cfg)
    blend = blend_datasets(data_cfg)
    for split in (0, 1):
        require_documents(data_cfg, blend, split)
    return blend


def index_cache_base(data_cfg: Any, prefixes: List[str]) -> str:
    """Where megatron's indices of these datasets live: data.index_cache_dir, or beside the data
    (megatron's own default): storage every node reads anyway, as rank 0 alone builds them."""
    if data_cfg.index_cache_dir:
        return os.path.expanduser(data_cfg.index_cache_dir)
    return os.path.join(os.path.dirname(sorted(prefixes)[0]), "index-cache")


def data_fingerprint(prefixes: List[str]) -> str:
    """The .idx files' sizes and times: megatron keys its index cache by the prefix path, not by the
    data, so a dataset rewritten under the same prefix (re-preprocessed, --overwrite) would be read
    through the old indices (an IndexError, or wrong samples); the cache lives under this instead."""
    digest = hashlib.sha256()
    for prefix in sorted(prefixes):
        stat = os.stat(f"{prefix}.idx")
        digest.update(f"{prefix}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _cache_dir(data_cfg: Any, prefixes: List[str]) -> str:
    return os.path.join(index_cache_base(data_cfg, prefixes), data_fingerprint(prefixes))


def _config(data_cfg: Any, seq_length: int, blend) -> GPTDatasetConfig:
    return GPTDatasetConfig(
        random_seed=data_cfg.seed,
        sequence_length=seq_length,
        blend=blend,
        split=data_cfg.split,
        tokenizer=FLMTokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        path_to_cache=_cache_dir(data_cfg, blend[0]),
    )


def require_documents(data_cfg: Any, datasets: List[Dataset], split: int) -> None:
    """Each dataset's share of split `split` (0 train, 1 validation) holds a document, counted as
    megatron splits them: an empty share that is asked for samples makes megatron's epoch count
    loop forever (a dataset under ~25 documents has an empty 2% validation share)."""
    share = convert_split_vector_to_split_matrix(parse_and_normalize_split(data_cfg.split))[split]
    if share is None:
        return
    config = _config(data_cfg, 2, ([d.prefix for d in datasets], None))
    for d in datasets:
        count = GPTDataset.numel_low_level_dataset(GPTDataset.build_low_level_dataset(d.prefix, config))
        if int(round(share[1] * count)) - int(round(share[0] * count)) < 1:
            raise ConfigError(
                f"dataset '{d.name}' has {count} documents: its {('training', 'validation')[split]} share of "
                f"data.split '{data_cfg.split}' holds none; add documents or change data.split"
            )


def build_train_dataset(data_cfg: Any, datasets: List[Dataset], seq_length: int, num_samples: int):
    """The blended training split with at least `num_samples` samples."""
    weights = [d.weight for d in datasets] if len(datasets) > 1 else None
    blend = ([d.prefix for d in datasets], weights)
    builder = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 1, 1], lambda: True, _config(data_cfg, seq_length, blend)
    )
    return builder.build()[0]


def build_valid_datasets(
    data_cfg: Any, datasets: List[Dataset], seq_length: int, num_samples: int
) -> Dict[str, Optional[Any]]:
    """Dataset name -> its validation split (None where data.split gives validation no share)."""
    out = {}
    for d in datasets:
        builder = BlendedMegatronDatasetBuilder(
            GPTDataset,
            [None, num_samples, None],
            lambda: True,
            _config(data_cfg, seq_length, ([d.prefix], None)),
        )
        out[d.name] = builder.build()[1]
    return out


BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def collate(samples: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
    """Dataset samples -> one batch of BATCH_KEYS (the loaders' collate_fn; width sweeps batch the same way)."""
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in BATCH_KEYS}
