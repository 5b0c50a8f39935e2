"""Which checkpoint a job resumes from: decided once, by rank 0, past anything a kill left behind.

exp_manager (resume_if_exists) finds the newest 'last' checkpoint on every rank. nemo_flm's
checkpoint folders appear by rename, whole or not at all, and disappear by rename before they are
deleted (checkpoint/lightning_io.py); so what a kill can leave is a staging folder (`.partial`),
a folder being deleted (`.removing`), a checkpoint moved aside while its same-named successor was
renamed in (`.old`), or NeMo's `-unfinished` marker beside a checkpoint that is whole (set before
each save and removal, cleared after). All of them are cleared before exp_manager looks: it would
refuse to resume past a marker, and its top-k bookkeeping takes every folder for a checkpoint (a
`val_loss=2.10-step=2000.partial` would rank as the best and push a real one out). Then the
checkpoint rank 0 finds whole (verified, else the newest whole one beside it) is the one every
rank loads.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint
from nemo.utils.exp_manager import ExpManagerConfig, get_log_dir
from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import discard
from nemo_flm.checkpoint.lightning_io import LEFTOVERS, checkpoint_problem, last_good_checkpoint
from nemo_flm.errors import ConfigError


def checkpoint_folder(trainer: Any, exp_cfg: Dict[str, Any]) -> Optional[Path]:
    """The folder exp_manager will resume from (its own get_log_dir), or None when not resuming."""
    cfg = OmegaConf.merge(OmegaConf.structured(ExpManagerConfig), exp_cfg)
    if not cfg.resume_if_exists:
        return None
    if cfg.checkpoint_callback_params.dirpath:
        return Path(cfg.checkpoint_callback_params.dirpath)
    args = (cfg.exp_dir, cfg.name, cfg.version, cfg.explicit_log_dir, cfg.use_datetime_version, cfg.resume_if_exists)
    return Path(get_log_dir(trainer, *args)[0]) / "checkpoints"


def clear_leftovers(folder: Optional[Path]) -> Optional[threading.Thread]:
    """Before exp_manager looks, on every rank and before any process group exists: each leftover
    is moved out of `folder` (renames only: instant, and whichever rank renames first wins), into
    a trash folder beside it that launch rank 0 empties on a thread of its own while the job starts
    (returned; what a kill leaves there is emptied at the next start). A checkpoint left as `.old`
    with nothing under its name is put back."""
    if folder is None or not folder.is_dir():
        return None
    for marker in folder.glob(f"*{NeMoModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX}"):
        marker.unlink(missing_ok=True)
    trash = folder.parent / f".{folder.name}-leftovers"
    for path in sorted(folder.iterdir()):
        name = path.name.removesuffix(".old")
        if name != path.name and not (folder / name).exists():
            _move(path, folder / name)  # killed between publish's two renames: the old one back
        elif path.name.endswith(LEFTOVERS):
            _move(path, trash / f"{path.name}-{uuid.uuid4().hex}")
    if parallel.launch_rank() != 0 or not trash.is_dir():
        return None
    sweeper = threading.Thread(target=_empty, args=(trash,), name="leftover-sweeper", daemon=True)
    sweeper.start()
    return sweeper


def _empty(trash: Path) -> None:
    """Delete what the trash holds now (its folder stays: other ranks may be moving into it)."""
    for entry in trash.iterdir():
        discard(str(entry))


def _move(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, unless another rank moved it first."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        pass


def choose_checkpoint(path: Optional[str]) -> Optional[str]:
    """Rank 0: the checkpoint to resume from (exp_manager's, or the newest whole one beside it);
    None to start afresh."""
    if not path:
        return None
    good = last_good_checkpoint(path)
    if good is None:
        folder = os.path.dirname(os.path.normpath(str(path).removesuffix(".ckpt")))
        raise ConfigError(
            f"cannot resume: {checkpoint_problem(path)}, and no whole checkpoint is beside it: move the "
            f"'{folder}' folder away to start over"
        )
    return good


def decide_resume(path: Optional[str]) -> Optional[str]:
    """Rank 0's choice, on every rank (a rank's passing filesystem error must not make it resume
    from another checkpoint than the rest)."""
    chosen = choose_checkpoint(path) if parallel.is_rank_zero() else None
    if chosen:
        print(f"resuming from {chosen}", flush=True)
    return parallel.broadcast_object(chosen)
