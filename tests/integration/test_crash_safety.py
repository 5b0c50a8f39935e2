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

from nemo_flm.training.curves import read_scalars
from tests.helpers import compose_job

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


def _run(cwd: Path, max_steps: int, kill_after_checkpoint: bool = False) -> int:
    """scripts/train.py in `cwd`; with kill_after_checkpoint, SIGKILL it soon after the first
    checkpoint appears (mid-step or mid-save). Returns the exit code."""
    cwd.mkdir(exist_ok=True)
    cmd = [sys.executable, SCRIPT, *SMALL, f"trainer.max_steps={max_steps}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_checkpoint:
        folder = cwd / "nemo_experiments" / "flm_tiny" / "checkpoints"
        deadline = time.time() + 300
        while time.time() < deadline and not any(p.name.endswith("-last") for p in folder.glob("*")):
            time.sleep(0.05)
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert kill_after_checkpoint or proc.returncode == 0, err[-3000:]
    return proc.returncode


def test_killed_run_resumes_on_the_uninterrupted_trajectory(tmp_path):
    _run(tmp_path / "whole", 8)
    assert _run(tmp_path / "killed", 8, kill_after_checkpoint=True) == -signal.SIGKILL
    _run(tmp_path / "killed", 8)
    tags = ["train_loss", "grad_norm"]
    whole = read_scalars(str(tmp_path / "whole" / "nemo_experiments" / "flm_tiny"), tags)
    resumed = read_scalars(str(tmp_path / "killed" / "nemo_experiments" / "flm_tiny"), tags)
    for tag in tags:
        assert dict(resumed[tag]) == dict(whole[tag]), tag


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_whole_one(tmp_path, caplog):
    from nemo_flm.checkpoint.lightning_io import read_trainer_state

    _train(tmp_path, "trainer.max_steps=4")
    folder = tmp_path / "flm_tiny" / "checkpoints"
    (last,) = [p for p in folder.iterdir() if p.name.endswith("-last")]
    victim = next((last / "model").glob("*.safetensors"))
    victim.write_bytes(victim.read_bytes()[:-64])  # truncated, as by a full disk
    others = [p for p in folder.iterdir() if p.is_dir() and p != last]
    assert others and all(read_trainer_state(p)["global_step"] in (2, 4) for p in others)
    _, trainer, _ = _train(tmp_path, "trainer.max_steps=6")
    assert trainer.global_step == 6
    lines = [r.getMessage() for r in caplog.records if "not resuming from" in r.getMessage()]
    assert len(lines) == 1 and str(victim) in lines[0]
    assert any(lines[0].endswith(f"resuming from {p}") for p in others), lines
