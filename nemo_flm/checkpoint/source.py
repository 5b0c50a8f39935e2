"""Open a .nemo or an exp_manager checkpoint directory as (shard reader, model config, trainer state).

Growth, inference and export read checkpoints tensor by tensor through this; neither needs the
training data or a Lightning trainer. A path that is neither kind fails with one line.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from nemo_flm.checkpoint.lightning_io import checkpoint_dir, read_trainer_state
from nemo_flm.checkpoint.nemo_archive import extract_nemo
from nemo_flm.checkpoint.shards import ShardReader


def open_checkpoint(src: str, workdir: str) -> Tuple[ShardReader, Any, Dict[str, Any]]:
    """(shard reader, model config, trainer state or {}) of a .nemo (extracted into `workdir`) or
    of an exp_manager checkpoint (`x.ckpt` or its directory, read in place)."""
    if not os.path.exists(src) and not os.path.exists(src.removesuffix(".ckpt")):
        raise FileNotFoundError(f"checkpoint '{src}' not found")
    if os.path.isfile(src):
        return (*extract_nemo(src, workdir), {})
    state = read_trainer_state(src)
    return ShardReader(checkpoint_dir(src)), state["hyper_parameters"]["cfg"], state
