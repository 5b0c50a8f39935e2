"""Crash safety on CPU: a NaN step stops the run before its update (the last checkpoint kept) or
is skipped; a corrupt last checkpoint is passed over for the previous whole one; a run killed with
SIGKILL resumes with the same command and reproduces the uninterrupted run's losses exactly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from nemo_flm.compose import compose_job
from nemo_flm.curves import read_scalars

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "train.py")
SMALL = [
    "trainer.accelerator=cpu",
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=2",
    "model.seq_length=64",
    "model.micro_batch_size=4",
    "model.global_batch_size=8",
    "model.data.eval_samples=8",
    "trainer.log_every_n_steps=1",
    "trainer.val_check_interval=2",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    "exp_manager.checkpoint_callback_params.save_top_k=-1",
]


class Poison(pl.Callback):
    """The embedding output is NaN during step `at` only; records the weights around that step."""

    def __init__(self, at: int):
        self.at, self.hook, self.before, self.after = at, None, None, None

    def _weights(self, module):
        return {n: p.detach().clone() for n, p in module.model.named_parameters()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step + 1 == self.at:
            self.before = self._weights(module)
            self.hook = module.model.embedding.register_forward_hook(lambda m, a, out: out * float("nan"))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.hook is not None:
            self.hook.remove()
            self.hook, self.after = None, self._weights(module)


def _train(tmp_path, *overrides, callbacks=()):
    from nemo_flm.training.run import train

    cfg = compose_job("flm_tiny", [*SMALL, f"exp_manager.exp_dir={tmp_path}", *overrides])
    return train(cfg, callbacks=list(callbacks))


def test_a_nan_step_is_skipped_without_touching_weights_or_adam(tmp_path):
    poison = Poison(at=3)
    model, trainer, _ = _train(tmp_path, "trainer.max_steps=5", "model.optim.on_nonfinite=skip", callbacks=[poison])
    assert trainer.global_step == 5 and model.skipped_updates == 1
    for name, value in poison.before.items():
        assert torch.equal(value, poison.after[name]), name
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_nan_step_stops_before_its_update_and_keeps_the_last_checkpoint(tmp_path):
    from nemo_flm.checkpoint.lightning_io import checkpoint_problem, read_trainer_state
    from nemo_flm.training.nonfinite import NonFiniteError

    with pytest.raises(NonFiniteError, match="step 3: non-finite loss"):
        _train(tmp_path, "trainer.max_steps=6", callbacks=[Poison(at=3)])
    checkpoints = [p for p in (tmp_path / "flm_tiny" / "checkpoints").iterdir() if p.is_dir()]
    assert checkpoints and all(checkpoint_problem(p) is None for p in checkpoints)
    assert max(read_trainer_state(p)["global_step"] for p in checkpoints) == 2


def _published(folder: Path) -> bool:
    return any(p.name.endswith("-last") for p in folder.glob("*"))


def _writing(folder: Path) -> bool:
    """A checkpoint is being written (its staging folder holds a file) after one was published."""
    return _published(folder) and any(any(p.iterdir()) for p in folder.glob("*.partial"))


def _run(cwd: Path, max_steps: int, *overrides: str, kill_when=None, delay: float = 0.0) -> int:
    """scripts/train.py in `cwd`; with kill_when (a test of the checkpoint folder), SIGKILL it
    `delay` seconds after the test first holds. Returns the exit code."""
    cwd.mkdir(exist_ok=True)
    cmd = [sys.executable, SCRIPT, *SMALL, f"trainer.max_steps={max_steps}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_when is not None:
        folder = cwd / "nemo_experiments" / "flm_tiny" / "checkpoints"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not kill_when(folder):
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert kill_when is not None or proc.returncode == 0, err[-3000:]
    return proc.returncode


def _same_trajectory(run: Path, reference: Path) -> None:
    tags = ["train_loss", "grad_norm"]
    whole = read_scalars(str(reference / "nemo_experiments" / "flm_tiny"), tags)
    resumed = read_scalars(str(run / "nemo_experiments" / "flm_tiny"), tags)
    for tag in tags:
        assert dict(resumed[tag]) == dict(whole[tag]), tag


@pytest.fixture(scope="module")
def whole(module_tmp) -> Path:
    _run(module_tmp / "whole", 8)
    return module_tmp / "whole"


def test_killed_run_resumes_on_the_uninterrupted_trajectory(whole, tmp_path):
    assert _run(tmp_path / "killed", 8, kill_when=_published, delay=1.5) == -signal.SIGKILL
    _run(tmp_path / "killed", 8)
    _same_trajectory(tmp_path / "killed", whole)


def test_a_run_killed_during_an_async_save_resumes_on_the_uninterrupted_trajectory(whole, tmp_path):
    """kill -9 while the background thread writes a checkpoint (its staging folder is filling):
    the previous checkpoint is whole (nothing is removed before the new one is published), and the
    same command resumes from it onto the uninterrupted (synchronous) run's losses."""
    from nemo_flm.checkpoint.lightning_io import checkpoint_problem

    run = tmp_path / "killed"
    assert _run(run, 8, "checkpoint.async_save=true", kill_when=_writing) == -signal.SIGKILL
    folder = run / "nemo_experiments" / "flm_tiny" / "checkpoints"
    assert _writing(folder), "killed after the write, not during it"
    published = [p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    assert published and all(checkpoint_problem(p) is None for p in published), published
    _run(run, 8, "checkpoint.async_save=true")
    _same_trajectory(run, whole)


def test_nemos_unfinished_marker_beside_a_whole_checkpoint_does_not_stop_the_resume(whole, tmp_path):
    """NeMo sets '<checkpoint>-unfinished' before each save and removal and clears it after: a kill
    in between leaves it beside a 'last' checkpoint that is whole (folders appear and disappear by
    rename), and exp_manager alone would refuse to resume."""
    run = tmp_path / "marked"
    _run(run, 4)
    folder = run / "nemo_experiments" / "flm_tiny" / "checkpoints"
    (last,) = [p for p in folder.iterdir() if p.name.endswith("-last")]
    (folder / f"{last.name}-unfinished").touch()
    _run(run, 8)
    _same_trajectory(run, whole)
    assert not list(folder.glob("*-unfinished"))


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_whole_one(tmp_path, caplog):
    """Step 4's 'last' is a hard link of step 4's top-k checkpoint (one write per event), so a
    damaged file damages both: the resume falls back to step 4's. (Step 2 saves 'last' alone: its
    validation runs after the save, so top-k has no val_loss yet.)"""
    from nemo_flm.checkpoint.lightning_io import read_trainer_state

    name = "+exp_manager.checkpoint_callback_params.filename='flm-{step}'"
    _train(tmp_path, "trainer.max_steps=6", name)
    folder = tmp_path / "flm_tiny" / "checkpoints"
    (last,) = [p for p in folder.iterdir() if p.name.endswith("-last")]
    steps = {p.name: read_trainer_state(p)["global_step"] for p in folder.iterdir() if p.is_dir()}
    assert steps == {"flm-step=4": 4, "flm-step=6": 6, "flm-step=6-last": 6}, steps
    victim = next(last.glob("*.distcp"))
    assert victim.stat().st_nlink == 2  # shared with flm-step=6
    victim.write_bytes(victim.read_bytes()[:-64])  # truncated, as by a full disk
    _, trainer, _ = _train(tmp_path, "trainer.max_steps=8", name)
    assert trainer.global_step == 8
    lines = [r.getMessage() for r in caplog.records if "not resuming from" in r.getMessage()]
    assert len(lines) == 1 and str(victim) in lines[0]
    assert lines[0].endswith(f"resuming from {folder / 'flm-step=4'}"), lines
