"""Open a .nemo or an exp_manager checkpoint directory as (tensor reader, model config, trainer state).

Growth, inference and export read checkpoints tensor by tensor through this; neither needs the
training data or a Lightning trainer. A path that is neither kind fails with one line.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

from nemo_flm.checkpoint.dcp_reader import TrainingCheckpointReader
from nemo_flm.checkpoint.lightning_io import checkpoint_dir, read_trainer_state
from nemo_flm.checkpoint.nemo_archive import extract_nemo
from nemo_flm.config import load_shape_config
from nemo_flm.model.sharding import partition_dims
from nemo_flm.model.skeleton import skeleton


def open_checkpoint(src: str, workdir: str) -> Tuple[Any, Any, Dict[str, Any]]:
    """(reader, model config, trainer state or {}) of a .nemo (its weights extracted into
    `workdir`, a ShardReader) or of an exp_manager checkpoint (`x.ckpt` or its directory, read in
    place, a TrainingCheckpointReader)."""
    if not os.path.exists(src) and not os.path.exists(src.removesuffix(".ckpt")):
        raise FileNotFoundError(f"checkpoint '{src}' not found")
    if os.path.isfile(src):
        reader: Any
        reader, cfg = extract_nemo(src, workdir)
        return reader, cfg, {}
    state = read_trainer_state(src)
    cfg = state["hyper_parameters"]["cfg"]
    reader = TrainingCheckpointReader(checkpoint_dir(src), partition_dims(skeleton(load_shape_config(cfg))))
    return reader, cfg, state
