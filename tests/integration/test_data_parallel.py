"""Data parallelism: `torchrun --nproc_per_node 2 scripts/train.py trainer.devices=2` (gloo, CPU)
follows the single-process run step for step (same global batch, gradients reduced over DP)."""
import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import free_port

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "train.py")
ARGS = [
    "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
    "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=2", "model.seq_length=64",
    "model.data.eval_samples=8",
]


def _scalars(run_dir: Path, tag: str):
    events = glob.glob(str(run_dir / "nemo_experiments" / "flm_tiny" / "version_0" / "events*"))
    acc = EventAccumulator(events[0])
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_dp2_follows_the_single_process_run(tmp_path):
    (tmp_path / "dp1").mkdir()
    (tmp_path / "dp2").mkdir()
    _run([sys.executable, SCRIPT, *ARGS], tmp_path / "dp1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    _run([*torchrun, SCRIPT, "trainer.devices=2", *ARGS], tmp_path / "dp2")
    for tag in ("train_loss", "val_loss", "grad_norm"):
        one, two = _scalars(tmp_path / "dp1", tag), _scalars(tmp_path / "dp2", tag)
        assert [s for s, _ in one] == [s for s, _ in two] and len(one) >= 2, tag
        for (_, a), (_, b) in zip(one, two):
            assert b == pytest.approx(a, rel=1e-5), tag
    assert (tmp_path / "dp2" / "nemo_experiments" / "flm_tiny" / "checkpoints" / "flm_tiny.nemo").exists()
