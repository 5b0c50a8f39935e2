"""Lightning checkpoints as folders that every rank writes and reads its own part of.

A checkpoint `<name>.ckpt` is the folder `<name>/` (NeMo's convention for distributed checkpoints,
which exp_manager's resume and top-k bookkeeping understand):

    .metadata, __<i>_0.distcp   torch.distributed.checkpoint's files: every rank's pieces of the
                                weights, fp32 main weights and Adam moments (checkpoint/pieces.py,
                                checkpoint/dcp.py), one file per rank that wrote
    trainer_state.pt            the rest of what Lightning saves (loops, callbacks, schedulers,
                                optimizer param groups, Adam's step, the model config) as plain
                                data, which loads with torch.load(weights_only=True)

Every rank calls save_checkpoint with its pieces (FLMModel.on_save_checkpoint puts them in the
checkpoint dict): all write in parallel into `<name>.partial/`, and rank 0 renames the folder
once every rank's files and `.metadata` are on disk, so a folder without `.partial` is whole.
With async_save the pieces are copied to host memory by a thread while the next step's forward
and backward run (the step waits for the copy before it updates the weights: wait_for_copy), and
written by another thread while training goes on; the next save, and the end of training, wait
for the write. Until it is renamed no checkpoint
is removed (top-k, the previous 'last'), so a kill at any moment leaves the previous one whole.
A second save of the same step (NeMo saves top-k and 'last') hard-links the first one's files.

Loading: load_checkpoint returns the trainer state and the folder; FLMModel.on_load_checkpoint
reads this rank's pieces into its parameters and optimizer state (training/checkpointing.py).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from nemo.utils.model_utils import ckpt_to_dir
from omegaconf import OmegaConf

from nemo_flm import parallel
from nemo_flm.atomic import discard, partial_path, publish
from nemo_flm.checkpoint import dcp

TRAINER_STATE = "trainer_state.pt"
PIECES = "flm_pieces"  # in the checkpoint dict on save: this rank's pieces (popped before writing)
FOLDER = "flm_checkpoint"  # in the checkpoint dict on load: the folder the pieces are read from
ADAM_STEP = "adam_step"  # Adam's step count in the trainer state, or None when it holds no Adam state
# suffixes of the folders that a kill can leave beside the checkpoints: a staging folder
# (atomic.partial_path), one being removed (remove_checkpoint_folder), one moved aside (atomic.publish)
LEFTOVERS = (".partial", ".removing", ".old")


def checkpoint_dir(path: Union[str, os.PathLike]) -> str:
    """The directory behind a Lightning checkpoint path (`x.ckpt` -> `x`, a directory stays)."""
    return str(ckpt_to_dir(path))


def read_trainer_state(path) -> Dict[str, Any]:
    """The checkpoint without its tensors (step, model config, consumed samples): cheap, and
    plain data only (a checkpoint folder cannot run code when it is read)."""
    root = checkpoint_dir(path)
    state_file = os.path.join(root, TRAINER_STATE)
    if not os.path.isfile(state_file):
        raise ValueError(
            f"'{root}' is not a complete nemo_flm checkpoint (no {TRAINER_STATE}): "
            "pass the checkpoint directory exp_manager wrote"
        )
    try:
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        reason = str(err).splitlines()[-1].strip()[:160] or type(err).__name__
        raise ValueError(
            f"'{state_file}' is not plain data ({reason}): a corrupt file, or one written by nemo_flm 0.1, "
            "whose checkpoints this version does not read (its .nemo files it does)"
        ) from None


def checkpoint_problem(path) -> Optional[str]:
    """Why the checkpoint at `path` cannot be resumed from (one line), or None when it is whole:
    its trainer state loads and every file its `.metadata` names is complete."""
    try:
        read_trainer_state(path)
        dcp.verify(checkpoint_dir(path))
    except Exception as err:  # noqa: BLE001 - whatever fails, the checkpoint is unusable
        return str(err).splitlines()[0]
    return None


def last_good_checkpoint(path) -> Optional[str]:
    """`path` if whole; otherwise the newest whole checkpoint beside it (logging why `path` is
    not used), or None. Folders of interrupted writes and removals are never candidates."""
    problem = checkpoint_problem(path)
    if problem is None:
        return str(path)
    folder = os.path.dirname(checkpoint_dir(path))
    candidates = [
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, name)) and not name.endswith(LEFTOVERS)
    ]
    candidates = sorted(candidates, key=os.path.getmtime, reverse=True)
    fallback = next((c for c in candidates if c != checkpoint_dir(path) and checkpoint_problem(c) is None), None)
    logging.warning(
        "not resuming from %s: %s; %s",
        checkpoint_dir(path),
        problem,
        f"resuming from {fallback}" if fallback else "no other whole checkpoint",
    )
    return fallback


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, type):  # Lightning's hparams_type: only load_from_checkpoint reads it
        return f"{value.__module__}.{value.__qualname__}"
    return str(value) if isinstance(value, Path) else value


def _serialized(value: Any) -> bytes:
    """`value` saved by torch, if it loads back with weights_only (plain data and tensors)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    return buffer.getvalue()


def plain_trainer_state(checkpoint: Dict[str, Any]) -> bytes:
    """The trainer state serialized as plain data (configs as dicts, classes by name), checked to
    load with weights_only: a callback that stores an object fails here, at save, not at resume."""
    state = _plain(checkpoint)
    try:
        return _serialized(state)
    except pickle.UnpicklingError:
        for key, value in state.items():
            try:
                _serialized(value)
            except pickle.UnpicklingError as err:
                reason = next((x for x in str(err).splitlines() if "Unsupported global" in x), str(err)[:160])
                raise TypeError(f"the checkpoint's '{key}' is not plain data: {reason.strip()[:200]}") from None
        raise


def _write_state(folder: str, state: bytes) -> None:
    with open(os.path.join(folder, TRAINER_STATE), "wb") as handle:
        handle.write(state)
        handle.flush()
        os.fsync(handle.fileno())


def link_checkpoint(src: str, dst: str, state: bytes) -> None:
    """`dst` as a checkpoint holding `src`'s tensor files (hard links: no copy) and its own
    trainer state, published whole."""
    staging = partial_path(dst)
    discard(staging)
    os.makedirs(staging)
    for name in os.listdir(src):
        if name != TRAINER_STATE:
            try:
                os.link(os.path.join(src, name), os.path.join(staging, name))
            except OSError:  # a filesystem without hard links
                shutil.copy2(os.path.join(src, name), os.path.join(staging, name))
    _write_state(staging, state)
    publish(staging, dst)


def remove_checkpoint_folder(folder: str) -> None:
    """Renamed, then deleted: a kill mid-delete leaves a `.removing` folder (cleared at the next
    start), never a damaged checkpoint under a checkpoint's name."""
    doomed = f"{os.path.normpath(folder)}.removing"
    discard(doomed)
    if os.path.lexists(folder):
        os.replace(folder, doomed)
    discard(doomed)


def _remove_or_log(folder: str) -> None:
    try:
        remove_checkpoint_folder(folder)
    except OSError as err:
        logging.warning(
            "could not remove the replaced checkpoint %s (%s): it is cleared at the next start", folder, err
        )


class FLMCheckpointIO(CheckpointIO):
    def __init__(self, async_save: bool = False):
        self.async_save = async_save
        self._last: Optional[Tuple[Tuple[int, Any], str]] = None  # (step, samples) and folder of the last save
        self._writing = None  # the future of the save in flight (async): done when written
        self._copying = None  # ... and of its copy to host memory: done when the tensors may change
        self._lock = threading.Lock()
        self._deferred: List[Callable[[], None]] = []  # rank 0: what waits for the save in flight
        self._error: Optional[BaseException] = None  # a failure of the background publish
        self._failed = None  # the future of a background write that failed
        self._done = threading.Event()  # set when no save is in flight
        self._done.set()
        self._stager: Optional[dcp.PieceStager] = None  # async: the host copy's buffers, reused

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        """Every rank calls this with its pieces (FLMStrategy)."""
        pieces = checkpoint.pop(PIECES, None)
        if pieces is None:
            raise ValueError(
                "this checkpoint has no pieces (FLMModel.on_save_checkpoint did not run): "
                "weights-only Lightning checkpoints are not supported, use the .nemo instead"
            )
        root = checkpoint_dir(path)
        event = (checkpoint["global_step"], checkpoint.get("consumed_samples"))
        state = plain_trainer_state(checkpoint) if parallel.is_rank_zero() else b""
        with self._lock:  # the writer thread forgets a save whose write failed
            last = self._last
        if last is not None and last[0] == event:  # the same weights again: link, write nothing
            source = last[1]
            if parallel.is_rank_zero() and source != root:
                self._when_written(lambda: link_checkpoint(source, root, state))
            return
        self.wait()
        staging = partial_path(root)
        if self.async_save and self._stager is None:
            self._stager = dcp.PieceStager()
        response = dcp.save(pieces, staging, parallel.checkpoint_group(), self._stager)
        self._last = (event, root)  # async: a link to it waits for its publish, and is dropped if it fails
        if response is None:
            self._publish(staging, root, state)
            return
        future = response.upload_completion
        with self._lock:
            self._writing, self._copying = future, response.staging_completion
            self._done.clear()
        future.add_done_callback(lambda done: self._finish_async(done, staging, root, state))

    def wait_for_copy(self) -> None:
        """Block until the save in flight has copied this rank's tensors (training calls this
        before it updates them: forward and backward overlap the copy)."""
        copying, self._copying = self._copying, None
        if copying is not None:
            copying.result()

    def _publish(self, staging: str, root: str, state: bytes) -> None:
        """Rank 0, once every rank's files are written: the trainer state, then the rename."""
        if parallel.is_rank_zero():
            _write_state(staging, state)
            publish(staging, root)

    def _finish_async(self, future, staging: str, root: str, state: bytes) -> None:
        """The writer thread: publish, then what waited for it (removals, links), on rank 0. A
        failed write publishes nothing and removes nothing: the older checkpoints stay."""
        published = False
        try:
            if future.exception() is None:
                self._publish(staging, root, state)
                published = True
            else:
                self._failed = future
                logging.error("checkpoint %s was not written: %s", root, future.exception())
        except BaseException as err:  # noqa: BLE001 - raised in the training loop by wait()
            self._error = err
        with self._lock:
            deferred = self._deferred if published else []
            self._writing, self._deferred = None, []
            if not published:
                self._last = None
        try:
            for action in deferred:
                action()
        except BaseException as err:  # noqa: BLE001 - a link that failed: raised by wait()
            self._error = self._error or err
        finally:
            self._done.set()

    def _when_written(self, action: Callable[[], None]) -> None:
        """Run `action` now, or after the save in flight is published."""
        with self._lock:
            if self._writing is not None:
                self._deferred.append(action)
                return
        action()

    def wait(self) -> None:
        """Block until the save in flight is written and published; raise what failed."""
        self._done.wait()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            failed.result()  # raises the write's own error
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def load_checkpoint(
        self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
    ) -> Dict[str, Any]:
        """The trainer state; the tensors are read by FLMModel.on_load_checkpoint, which knows
        which pieces this rank holds."""
        checkpoint = read_trainer_state(path)
        checkpoint[FOLDER] = checkpoint_dir(path)
        return checkpoint

    def remove_checkpoint(self, path) -> None:
        """Rank 0 (Lightning's strategy): after the save in flight is published, never before. A
        removal that fails is logged, not raised: it costs only disk (the renamed `.removing`
        folder is cleared at the next start), and raising on rank 0 alone would leave the other
        ranks in the next save's collective."""
        folder = checkpoint_dir(path)
        self._when_written(lambda: _remove_or_log(folder))

    def teardown(self) -> None:
        self.wait()
        if self._stager is not None:
            self._stager.close()
            self._stager = None
