"""`proxies.json`: the finished μP proxies of a sweep, the contract between the sweep
(scaling/sweep.py) and what fits them (scaling/loss_prediction.py, the growth planner).

    {"proxies": [{"name", "hidden_size", "num_attention_heads", "num_layers",
                  "non_embedding_params", "tokens", "train_flops", "val_loss", "log_dir"}, ...]}

One record per trained (width, token budget): `tokens` are the tokens it trained on (whole
steps), `train_flops` its training FLOPs (flops.py, lm_head included), `val_loss` its
validation loss at its last step. Reading checks every field, so a hand-edited or truncated file
fails in one line instead of deep inside a fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import List

from nemo_flm.atomic import atomic_output
from nemo_flm.errors import ConfigError


@dataclass(frozen=True)
class Proxy:
    name: str
    hidden_size: int
    num_attention_heads: int
    num_layers: int
    non_embedding_params: int
    tokens: int
    train_flops: float
    val_loss: float
    log_dir: str


FIELDS = {f.name: f.type for f in dataclasses.fields(Proxy)}
TYPES = {"str": (str,), "int": (int,), "float": (int, float)}


def write_proxies(path: str, proxies: List[Proxy]) -> str:
    """Write the records (atomically: a reader never sees half a file); returns the path."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump({"proxies": [dataclasses.asdict(p) for p in proxies]}, handle, indent=1)
    return path


def _record(entry: dict, index: int, path: str) -> Proxy:
    """One checked record: every field present with its type, the numbers finite."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: proxy {index} is {entry!r}, not a record: rewrite it with scripts/predict_loss.py")
    missing = sorted(set(FIELDS) - set(entry))
    if missing:
        raise ConfigError(f"{path}: proxy {index} lacks {missing}: rewrite it with scripts/predict_loss.py")
    for key, kind in FIELDS.items():
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, TYPES[kind]):
            raise ConfigError(f"{path}: proxy {index} '{key}' must be a {kind}, got {value!r}: fix the record")
        if kind == "float" and not math.isfinite(value):
            raise ConfigError(f"{path}: proxy {index} '{key}' is {value}: re-run that proxy or drop it")
    return Proxy(**{key: entry[key] for key in FIELDS})


def read_proxies(path: str) -> List[Proxy]:
    """The records of a proxies.json, checked."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read proxies from {path} ({err}): give a proxies.json the sweep wrote") from None
    entries = data.get("proxies") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path} has no 'proxies' list: give a proxies.json the sweep wrote")
    return [_record(entry, i, path) for i, entry in enumerate(entries)]
