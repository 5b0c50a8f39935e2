"""Open a .nemo or an exp_manager checkpoint directory as (tensor reader, model config, trainer state).

Growth, inference and export read checkpoints tensor by tensor through this; neither needs the
training data or a Lightning trainer. A path that is neither kind fails with one line.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from nemo_flm.checkpoint.dcp_reader import TrainingCheckpointReader
from nemo_flm.checkpoint.lightning_io import checkpoint_dir, read_trainer_state
from nemo_flm.checkpoint.nemo_archive import open_nemo
from nemo_flm.config import load_shape_config
from nemo_flm.model.sharding import partition_dims
from nemo_flm.model.skeleton import skeleton


def open_checkpoint(src: str) -> Tuple[Any, Any, Dict[str, Any]]:
    """(reader, model config, trainer state or {}) of a .nemo (read inside the archive, an
    ArchiveShardReader) or of an exp_manager checkpoint (`x.ckpt` or its directory, a
    TrainingCheckpointReader): nothing is extracted or copied."""
    if not os.path.exists(src) and not os.path.exists(src.removesuffix(".ckpt")):
        raise FileNotFoundError(f"checkpoint '{src}' not found")
    if os.path.isfile(src):
        reader, cfg = open_nemo(src)
        return reader, cfg, {}
    state = read_trainer_state(src)
    cfg = state["hyper_parameters"]["cfg"]
    reader = TrainingCheckpointReader(checkpoint_dir(src), partition_dims(skeleton(load_shape_config(cfg))))
    return reader, cfg, state
