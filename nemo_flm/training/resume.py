"""Which checkpoint a job resumes from: decided once, by rank 0, past anything a kill left behind.

exp_manager (resume_if_exists) finds the newest 'last' checkpoint on every rank. nemo_flm's
checkpoint folders appear by rename, whole or not at all, and disappear by rename before they are
deleted (checkpoint/lightning_io.py); so what a kill can leave is a staging folder (`.partial`),
a folder being deleted (`.removing`), or NeMo's `-unfinished` marker beside a checkpoint that is
whole (set before each save and removal, cleared after). exp_manager would refuse to resume past
such a marker; here they are cleared first, the staging leftovers removed, and the checkpoint
rank 0 finds whole (verified, else the newest whole one beside it) is the one every rank loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint
from nemo.utils.exp_manager import ExpManagerConfig, get_log_dir
from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import discard
from nemo_flm.checkpoint.lightning_io import checkpoint_problem, last_good_checkpoint
from nemo_flm.errors import ConfigError

LEFTOVERS = (".partial", ".removing")  # suffixes of folders a killed write or removal leaves


def checkpoint_folder(trainer: Any, exp_cfg: Dict[str, Any]) -> Optional[Path]:
    """The folder exp_manager will resume from (its own get_log_dir), or None when not resuming."""
    cfg = OmegaConf.merge(OmegaConf.structured(ExpManagerConfig), exp_cfg)
    if not cfg.resume_if_exists:
        return None
    if cfg.checkpoint_callback_params.dirpath:
        return Path(cfg.checkpoint_callback_params.dirpath)
    args = (cfg.exp_dir, cfg.name, cfg.version, cfg.explicit_log_dir, cfg.use_datetime_version, cfg.resume_if_exists)
    return Path(get_log_dir(trainer, *args)[0]) / "checkpoints"


def clear_unfinished_markers(folder: Optional[Path]) -> None:
    """Before exp_manager looks (every rank, before any process group exists: removing a file that
    another rank removed is fine)."""
    if folder is not None and folder.is_dir():
        for marker in folder.glob(f"*{NeMoModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX}"):
            marker.unlink(missing_ok=True)


def choose_checkpoint(path: Optional[str]) -> Optional[str]:
    """Rank 0: the checkpoint to resume from (exp_manager's, or the newest whole one beside it),
    after removing what killed writes and removals left in its folder; None to start afresh."""
    if not path:
        return None
    folder = os.path.dirname(os.path.normpath(str(path).removesuffix(".ckpt")))
    for name in os.listdir(folder):
        if name.endswith(LEFTOVERS):
            discard(os.path.join(folder, name))
    good = last_good_checkpoint(path)
    if good is None:
        raise ConfigError(
            f"cannot resume: {checkpoint_problem(path)}, and no whole checkpoint is beside it: move the "
            f"'{folder}' folder away to start over"
        )
    return good


def decide_resume(path: Optional[str]) -> Optional[str]:
    """Rank 0's choice, on every rank (a rank's passing filesystem error must not make it resume
    from another checkpoint than the rest)."""
    return parallel.broadcast_object(choose_checkpoint(path) if parallel.is_rank_zero() else None)
