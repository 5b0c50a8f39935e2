"""Training and validation datasets through megatron.core.datasets.

Training reads a blend (data/blend.py: e.g. English:Chinese) with BlendedMegatronDatasetBuilder +
GPTDataset; validation keeps one dataset per blend entry so losses are reported per dataset. The
same `split` applies to every prefix, so validation documents never appear in training.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from nemo_flm.data.blend import Dataset, parse_blend
from nemo_flm.data.corpus import build_default_corpus
from nemo_flm.data.tokenizer import FLMTokenizer


def data_blend(data_cfg: Any) -> List[Dataset]:
    """The configured blend (data/blend.py), or the built-in corpus (built on first use) weighted
    by data.corpus.weights."""
    datasets = parse_blend(data_cfg)
    if datasets is not None:
        # absolute: megatron's index cache is keyed by the prefix string, and `data/en_text` in
        # another directory is another dataset
        return [Dataset(d.name, os.path.abspath(os.path.expanduser(d.prefix)), d.weight) for d in datasets]
    prefixes = build_default_corpus(data_cfg)
    return [Dataset(lang, prefix, float(data_cfg.corpus.weights[lang])) for lang, prefix in prefixes.items()]


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
        path_to_cache=os.path.join(os.path.expanduser(data_cfg.cache_dir), "index-cache"),
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
    """Dataset name -> its validation split (None where the split holds no document)."""
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
