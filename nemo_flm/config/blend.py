"""The training data blend as configured: which indexed datasets, under which names, with which
weights (its files are checked by data/blend.py where they are used).

`data.blend` is written the way Megatron users write `--data-path`, or as a dict:
    [53.5, data/en_text, 46.5, data/zh_text]    weight/prefix pairs
    [data/en_text, data/zh_text]                prefixes alone: equal weights
    {en: data/en_text, zh: data/zh_text}        names -> prefixes; weights from data.weights
                                                (name -> weight), equal when it is not set
    null                                        the built-in bilingual corpus (data.corpus.weights)
A prefix is a path without `.bin`/`.idx` (scripts/preprocess_data.py writes them). In the list
forms a dataset is named by its file name (`en_text`); validation losses are logged per name.
The schema's defaults are null, so a blend given on the command line replaces the whole blend
(Hydra merges a dict into a dict, but not into null or a list).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from nemo_flm.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str
    weight: float


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(items: List[Any]):
    return zip(items[::2], items[1::2])


def _from_list(items: List[Any]) -> List[Dataset]:
    if items and all(isinstance(x, str) for x in items):
        pairs = [(1.0, x) for x in items]
    elif items and len(items) % 2 == 0 and all(_number(w) and isinstance(p, str) for w, p in _pairs(items)):
        pairs = list(_pairs(items))
    else:
        raise ConfigError(
            f"data.blend {items} is neither weight/prefix pairs [w1, prefix1, w2, prefix2, ...] nor prefixes "
            "alone [prefix1, prefix2, ...]"
        )
    datasets = [Dataset(os.path.basename(p.rstrip("/")), p, float(w)) for w, p in pairs]
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"data.blend names two datasets {duplicates[0]!r}: give them names with the dict form {{name: prefix}}"
        )
    return datasets


def _from_dict(prefixes: Dict[str, Any], weights: Optional[Dict[str, Any]]) -> List[Dataset]:
    if not prefixes or not all(isinstance(p, str) for p in prefixes.values()):
        raise ConfigError(f"data.blend {prefixes} must map names to prefixes, e.g. {{en: data/en_text}}")
    weights = weights if weights is not None else {name: 1.0 for name in prefixes}
    if not isinstance(weights, dict) or not all(_number(w) for w in weights.values()):
        raise ConfigError(f"data.weights {weights} must map dataset names to numbers, e.g. {{en: 53.5, zh: 46.5}}")
    if set(weights) != set(prefixes):
        raise ConfigError(
            f"data.weights names {sorted(weights)} but data.blend names {sorted(prefixes)}: give one weight per "
            "dataset of the blend (or leave data.weights unset for equal weights)"
        )
    return [Dataset(str(name), prefixes[name], float(weights[name])) for name in prefixes]


def parse_blend(data_cfg: Any) -> Optional[List[Dataset]]:
    """The configured datasets, or None for the built-in corpus; a one-line ConfigError when the
    blend is malformed (files are checked where they are used: `check_blend_files`)."""
    blend, weights = _plain(data_cfg.blend), _plain(data_cfg.weights)
    if blend is None:
        if weights is not None:
            raise ConfigError("data.weights goes with a dict data.blend; the built-in corpus takes data.corpus.weights")
        return None
    if isinstance(blend, str):
        blend = [blend]
    if isinstance(blend, dict):
        datasets = _from_dict(blend, weights)
    elif isinstance(blend, list):
        if weights is not None:
            raise ConfigError("data.weights goes with a dict data.blend; in a list, write weight/prefix pairs")
        datasets = _from_list(blend)
    else:
        raise ConfigError(f"data.blend must be a list or a dict, got {blend!r}")
    if not all(d.weight > 0 for d in datasets):
        raise ConfigError(f"data.blend weights must all be > 0, got {[d.weight for d in datasets]}")
    return datasets
