"""The training data blend's files: every prefix has its .bin and .idx, of matching sizes.

The blend itself (names, prefixes, weights) is parsed with the config (config/blend.py); its files
are checked here, by training, before anything is built, and not by the schema, so that a .nemo
restores where its training data is absent.
"""

from __future__ import annotations

import os
from typing import Any

from nemo_flm.config.blend import parse_blend
from nemo_flm.errors import ConfigError


def check_blend_files(data_cfg: Any) -> None:
    """Every prefix of the blend has its .bin and .idx, of matching sizes."""
    for d in parse_blend(data_cfg) or []:
        path = os.path.expanduser(d.prefix)
        if not (os.path.exists(path + ".bin") and os.path.exists(path + ".idx")):
            raise ConfigError(
                f"data.blend: '{d.prefix}.bin/.idx' not found: run scripts/preprocess_data.py "
                "or leave data.blend unset for the built-in corpus"
            )
        check_bin_size(path)


def check_bin_size(prefix: str) -> None:
    """The .bin holds exactly the tokens its .idx points into. megatron maps the .bin without
    checking, so a truncated copy (a full disk, an interrupted transfer) would build and then fail
    mid-run on the one rank that first samples past its end."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    try:
        index = IndexedDataset(prefix, mmap=True).index
    except Exception as err:  # noqa: BLE001 - any failure to read the index means it is unusable
        raise ConfigError(
            f"'{prefix}.idx' is not a readable megatron index ({type(err).__name__}): re-run scripts/preprocess_data.py"
        ) from None
    expected = 0
    if len(index):  # the last sequence's start and length, in bytes
        expected = int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * index.dtype_size
    actual = os.path.getsize(prefix + ".bin")
    if actual != expected:
        raise ConfigError(
            f"'{prefix}.bin' holds {actual:,} bytes but its .idx describes {expected:,}: the .bin is truncated or "
            "belongs to another .idx; re-run scripts/preprocess_data.py"
        )
