"""Training and validation datasets through megatron.core.datasets.

Training reads a blend of languages (e.g. English:Chinese) with BlendedMegatronDatasetBuilder +
GPTDataset; validation keeps one dataset per language so losses are reported per language. The
same `split` applies to every prefix, so validation documents never appear in training.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

from nemo_flm.data.corpus import build_default_corpus
from nemo_flm.data.tokenizer import FLMTokenizer


def data_prefixes(data_cfg: Any) -> Dict[str, str]:
    """The configured prefixes, or the built-in corpus (built on first use)."""
    if data_cfg.prefixes:
        return {lang: os.path.expanduser(p) for lang, p in data_cfg.prefixes.items()}
    return build_default_corpus(data_cfg)


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


def build_train_dataset(data_cfg: Any, prefixes: Dict[str, str], seq_length: int, num_samples: int):
    """The blended training split with at least `num_samples` samples."""
    langs = sorted(prefixes)
    blend = ([prefixes[lang] for lang in langs], [float(data_cfg.weights[lang]) for lang in langs])
    if len(langs) == 1:
        blend = (blend[0], None)
    builder = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, 1, 1], lambda: True, _config(data_cfg, seq_length, blend)
    )
    return builder.build()[0]


def build_valid_datasets(
    data_cfg: Any, prefixes: Dict[str, str], seq_length: int, num_samples: int
) -> Dict[str, Optional[Any]]:
    """Language -> its validation split (None where the split holds no document)."""
    out = {}
    for lang in sorted(prefixes):
        builder = BlendedMegatronDatasetBuilder(
            GPTDataset,
            [None, num_samples, None],
            lambda: True,
            _config(data_cfg, seq_length, ([prefixes[lang]], None)),
        )
        out[lang] = builder.build()[1]
    return out
