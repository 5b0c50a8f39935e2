"""Open a .nemo or an exp_manager checkpoint directory as (shard reader, model config, trainer state).

Growth, inference and export read checkpoints tensor by tensor through this; neither needs the
training data or a Lightning trainer. A path that is neither kind fails with one line.
"""

from __future__ import annotations

import os
import tarfile
from typing import Any, Dict, Tuple

from omegaconf import OmegaConf

from nemo_flm.checkpoint.lightning_io import checkpoint_dir, read_trainer_state
from nemo_flm.checkpoint.nemo_file import WEIGHTS
from nemo_flm.checkpoint.shards import ShardReader

CONFIG = "model_config.yaml"


def _extract_nemo(src: str, workdir: str) -> None:
    try:
        with tarfile.open(src) as tar:
            members = [m for m in tar.getmembers() if m.name.lstrip("./").startswith((WEIGHTS, CONFIG))]
            tar.extractall(workdir, members=members, filter="data")
    except (tarfile.TarError, EOFError):
        raise ValueError(
            f"'{src}' is not a .nemo file (not a readable tar archive): pass a .nemo written by nemo_flm"
        ) from None
    if not os.path.isfile(os.path.join(workdir, CONFIG)) or not os.path.isdir(os.path.join(workdir, WEIGHTS)):
        raise ValueError(f"'{src}' is a tar file but not a nemo_flm .nemo (no {CONFIG} and {WEIGHTS}/)")


def open_checkpoint(src: str, workdir: str) -> Tuple[ShardReader, Any, Dict[str, Any]]:
    """(shard reader, model config, trainer state or {}) of a .nemo (extracted into `workdir`) or
    of an exp_manager checkpoint (`x.ckpt` or its directory, read in place)."""
    if not os.path.exists(src) and not os.path.exists(src.removesuffix(".ckpt")):
        raise FileNotFoundError(f"checkpoint '{src}' not found")
    if os.path.isfile(src):
        _extract_nemo(src, workdir)
        return ShardReader(os.path.join(workdir, WEIGHTS)), OmegaConf.load(os.path.join(workdir, CONFIG)), {}
    state = read_trainer_state(src)
    return ShardReader(checkpoint_dir(src)), state["hyper_parameters"]["cfg"], state
