"""Reading a nemo_flm .nemo without NeMo: its `model_config.yaml` and its sharded weights.

A .nemo is a tar of `model_config.yaml` and `model_weights/` (checkpoint/nemo_file.py writes it).
Offline growth and the HF export extract those two members beside their output and read the
weights tensor by tensor (memory-mapped safetensors), whatever TP size wrote them.
"""

from __future__ import annotations

import os
import tarfile
from typing import Any, Tuple

from omegaconf import OmegaConf

from nemo_flm.checkpoint.shards import ShardReader

CONFIG = "model_config.yaml"
WEIGHTS = "model_weights"


def extract_nemo(path: str, workdir: str) -> Tuple[ShardReader, Any]:
    """(weights reader, model config as written) of the .nemo at `path`, extracted into `workdir`;
    a missing, non-tar, truncated or foreign file is refused in one line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f".nemo '{path}' not found (or not a file)")
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.name.lstrip("./").startswith((WEIGHTS, CONFIG))]
            tar.extractall(workdir, members=members, filter="data")
    except (tarfile.TarError, EOFError) as err:
        reason = str(err).splitlines()[0].rstrip(":")
        raise ValueError(f"'{path}' is not a readable .nemo (a tar archive): {type(err).__name__}: {reason}") from None
    if not os.path.isfile(os.path.join(workdir, CONFIG)):
        raise ValueError(f"'{path}' is not a nemo_flm .nemo: it has no {CONFIG}")
    reader = ShardReader(os.path.join(workdir, WEIGHTS))
    reader.verify()
    return reader, OmegaConf.load(os.path.join(workdir, CONFIG))
