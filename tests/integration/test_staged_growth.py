"""Staged growth from one command: stages run in order, each from the previous stage's grown
checkpoint; a run killed mid-ramp and resumed follows the uninterrupted loss trajectory."""

import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
from safetensors.torch import load_file

from nemo_flm.compose import compose_job
from nemo_flm.curves import read_scalars
from nemo_flm.growth.grown_checkpoint import read_grown_meta
from nemo_flm.growth.ramp import MaskRamp
from nemo_flm.growth.staged import run_stages
from nemo_flm.training.run import train

CONF = str(Path(__file__).parents[2] / "conf")
ARGS = [
    "stages.0.max_steps=4",
    "stages.1.max_steps=6",
    "stages.2.max_steps=5",
    "model.growth.grow_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    "model.seq_length=32",
    "model.data.eval_samples=4",
    "stages.0.model.optim.lr_warmup_samples=8",
    "stages.1.model.optim.lr_warmup_samples=8",
    "stages.2.model.optim.lr_warmup_samples=8",
]


def _cfg(tmp_path):
    return compose_job("flm_tiny_growth", ARGS + [f"exp_manager.exp_dir={tmp_path}"])


class StageRecorder(pl.Callback):
    """Losses and mask values of grown stages by (hidden size, step); optionally stops the first
    grown stage (hidden 96) after `stop_at` steps."""

    def __init__(self, stop_at=None):
        self.losses, self.masks, self.stop_at = {}, {}, stop_at

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        if model.cfg.hidden_size == 64:  # stage 1 has no ramp
            return
        key = (model.cfg.hidden_size, trainer.global_step)
        self.losses[key] = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        ramp = next(c for c in trainer.callbacks if isinstance(c, MaskRamp))
        masked = any("Masked" in type(m).__name__ for m in model.model.modules())
        assert masked == (ramp.masks is not None)  # folded means no mask code left
        self.masks[key] = ramp.masks.c if masked else "folded"
        if self.stop_at is not None and key[0] == 96 and trainer.global_step >= self.stop_at:
            trainer.should_stop = True


def test_staged_run_and_resume_mid_ramp(tmp_path):
    straight = StageRecorder()
    nemos = run_stages(_cfg(tmp_path / "a"), train, callbacks=[straight])
    assert nemos and all(Path(p).exists() for p in nemos)
    assert [straight.masks[(96, s)] for s in range(1, 7)] == [0.0, 0.25, 0.5, 0.75, "folded", "folded"]
    assert [straight.masks[(128, s)] for s in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, "folded"]
    grown = tmp_path / "a" / "flm_tiny_growth" / "stage2.grown"
    assert read_grown_meta(str(grown))["consumed_samples"] == 4 * 8  # stage 2 continues where stage 1 stopped
    fc1 = load_file(grown / "model" / "decoder.layers.2.mlp.linear_fc1.weight.safetensors")["t"]
    assert fc1.shape == (384, 96)
    # the grown model before its first step gives the previous stage's final validation loss
    report = json.loads((tmp_path / "a" / "flm_tiny_growth" / "growth_report.json").read_text())
    assert len(report["growths"]) == 2
    for growth in report["growths"]:
        assert growth["val_loss_after"] == pytest.approx(growth["val_loss_before"], rel=1e-5), growth
    shutil.rmtree(tmp_path / "a")  # ~2 GB of checkpoints (100K-vocabulary embeddings and Adam moments)

    first = StageRecorder(stop_at=2)
    assert run_stages(_cfg(tmp_path / "b"), train, callbacks=[first]) is None  # killed mid-ramp
    for tensors in (tmp_path / "b" / "flm_tiny_growth" / "stage2.grown").iterdir():
        if tensors.is_dir():  # a resumed stage reads its own checkpoint: the grown tensors are not needed
            shutil.rmtree(tensors)
    second = StageRecorder()
    assert run_stages(_cfg(tmp_path / "b"), train, callbacks=[second])
    assert sorted(first.losses) == [(96, 1), (96, 2)]
    assert sorted(second.losses) == [(96, s) for s in range(3, 7)] + [(128, s) for s in range(1, 6)]
    for key, loss in {**first.losses, **second.losses}.items():
        assert loss == pytest.approx(straight.losses[key], rel=1e-6, abs=1e-6), key


def test_growth_as_a_job_of_its_own_between_the_stages(tmp_path):
    """The launcher's chain: stage 1's job ends; the grow job (scripts/grow_checkpoint.py --stage 1,
    CPUs only) writes stage 2's grown checkpoint; stage 2's job, which may not grow
    (growth.grow_in_job=false), starts from it exactly: its grown model's validation loss before
    any step is stage 1's final one. Before the grow job ran, that job refuses to start."""
    import subprocess
    import sys

    from nemo_flm.errors import ConfigError

    base = [*ARGS, f"exp_manager.exp_dir={tmp_path}"]

    def cfg(*more):
        return compose_job("flm_tiny_growth", base + list(more))

    assert run_stages(cfg("growth.stop_after=stage1"), train)
    stage2 = ("growth.stop_after=stage2", "growth.grow_in_job=false")
    with pytest.raises(ConfigError, match="stage 'stage2' starts from .*stage2.grown', which is not there") as err:
        run_stages(cfg(*stage2), train)
    assert "\n" not in str(err.value) and not (tmp_path / "flm_tiny_growth" / "stage2").exists()
    grow = [sys.executable, str(Path(CONF).parent / "scripts" / "grow_checkpoint.py"), "--config-name"]
    done = subprocess.run(
        [*grow, "flm_tiny_growth", "--stage", "1", *base], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grew " in done.stdout and (tmp_path / "flm_tiny_growth" / "stage2.grown").is_dir()
    assert run_stages(cfg(*stage2), train)
    job = tmp_path / "flm_tiny_growth"
    before = read_scalars(str(job / "stage1"), ["val_loss"])["val_loss"][-1][1]
    after = read_scalars(str(job / "stage2"), ["val_loss_after_growth"])["val_loss_after_growth"][0][1]
    assert after == pytest.approx(before, rel=1e-5)


def test_only_rank_0_looks_for_a_finished_stages_output(tmp_path, monkeypatch):
    """With async saves rank 0 publishes a stage's last checkpoint after the other ranks are done:
    they must not look for it (it may be missing or still the previous one)."""
    from nemo_flm.growth.staged import done_marker, stage_job

    cfg = _cfg(tmp_path)
    for index in range(len(cfg.stages)):  # every stage done, and no checkpoint on disk yet
        Path(done_marker(stage_job(cfg, index))).parent.mkdir(parents=True, exist_ok=True)
        Path(done_marker(stage_job(cfg, index))).write_text("4\n")
    monkeypatch.setenv("RANK", "1")
    assert run_stages(cfg, train_fn=None) == ["", "", ""]
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(FileNotFoundError, match="has no '\\*-last' checkpoint"):
        run_stages(cfg, train_fn=None)
