"""End-to-end CPU training on the built-in corpus: loss falls, .nemo restores in a new process with
identical logits, and a resumed run continues at the same step and sample with the same losses."""

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from nemo_flm.checkpoint.lightning_io import read_trainer_state
from nemo_flm.compose import compose_job

CONF = str(Path(__file__).parents[2] / "conf")
SMALL = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=2",
    "model.ffn_hidden_size=256",
    "model.seq_length=64",
    "model.micro_batch_size=4",
    "model.global_batch_size=8",
    "model.data.eval_samples=8",
    "trainer.log_every_n_steps=1",
]


def job(tmp_path, *overrides):
    cfg = compose_job("flm_tiny", SMALL + [f"exp_manager.exp_dir={tmp_path}", *overrides])
    return cfg


class Recorder(pl.Callback):
    """Per-step train loss and consumed samples; optionally stops the run after `stop_at` steps."""

    def __init__(self, stop_at=None):
        self.losses, self.stop_at = {}, stop_at

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True


@pytest.fixture(scope="module")
def trained(module_tmp):
    from nemo_flm.training.run import train

    tmp = module_tmp
    rec = Recorder()
    cfg = job(
        tmp,
        "trainer.max_steps=40",
        "trainer.val_check_interval=20",
        "model.optim.lr_warmup_samples=40",
        "model.optim.lr_decay_samples=320",
    )
    model, trainer, log_dir = train(cfg, callbacks=[rec])
    return model, rec, Path(log_dir)


def test_loss_falls_on_default_corpus(trained):
    _, rec, _ = trained
    first = sum(rec.losses[s] for s in (1, 2, 3)) / 3
    last = sum(rec.losses[s] for s in (38, 39, 40)) / 3
    assert first > 10.5  # ~ln(100352) = 11.5 at init
    assert last < first - 2.0, (first, last)


def test_throughput_monitor_logs_tokens_and_flops_of_the_model(trained):
    """Lightning's ThroughputMonitor times the steps; the FLOPs it logs per token are the model's
    (flops.py), and its tokens per step are the global batch's (a wrong batch or length
    function, or FLOPs not per device, changes the ratio)."""
    from nemo_flm.curves import read_scalars
    from nemo_flm.flops import train_flops_per_token

    model, _, log_dir = trained
    tags = ["train/device/items_per_sec", "train/device/flops_per_sec", "train/lengths"]
    logged = read_scalars(str(log_dir), tags)
    assert logged["train/device/items_per_sec"], "no throughput logged"
    for (_, tokens_per_s), (_, flops_per_s) in zip(
        logged["train/device/items_per_sec"], logged["train/device/flops_per_sec"]
    ):
        # TensorBoard stores float32: 1e-6 is its rounding, a wrong count is off by a factor
        assert flops_per_s / tokens_per_s == pytest.approx(train_flops_per_token(model.cfg), rel=1e-6)
    assert logged["train/lengths"][-1][1] == model.consumed_samples * model.cfg.seq_length  # all 40 steps' tokens
    assert not read_scalars(str(log_dir), ["validate/samples"])["validate/samples"]  # validation is not measured


def test_start_lines_and_summary_describe_the_run(trained):
    """What the run prints before and after, checked against the model, the data and the logs."""
    from nemo_flm.curves import read_scalars
    from nemo_flm.training.summary import start_lines, summarize

    model, _, log_dir = trained
    lines = start_lines(model, model.trainer, str(log_dir))
    layers, h, f = 2, 64, 256  # SMALL's shape
    body = layers * (3 * h * h + 3 * h + h * h + h + h * f + f + f * h + h + 4 * h) + 2 * h  # blocks + final LN
    embeddings = 2 * 100352 * h  # untied input and output embeddings, padded vocab x hidden
    assert f"{(body + embeddings) / 1e6:.2f}M parameters, {body / 1e6:.2f}M without embeddings" in lines[0]
    assert lines[1].startswith("data (built-in corpus): en 53.5% (") and "zh 46.5% (" in lines[1]
    summary = summarize(model, model.trainer, str(log_dir), wall_s=1.0)
    logged = read_scalars(str(log_dir), ["val_loss_en", "val_loss_zh", "train_loss"])  # every step is logged
    for name in ("en", "zh"):
        assert summary.val_loss[name] == pytest.approx(logged[f"val_loss_{name}"][-1][1], rel=1e-6)
    assert summary.train_loss == pytest.approx(logged["train_loss"][-1][1], rel=1e-6)
    assert summary.tokens == 40 * 8 * 64 and summary.steps == 40
    assert Path(summary.nemo).exists() and Path(summary.checkpoint).is_dir() and Path(summary.curves).stat().st_size > 0


def test_nemo_restores_in_a_new_process_with_identical_logits(trained, tmp_path):
    model, _, log_dir = trained
    nemo = log_dir / "checkpoints" / "flm_tiny.nemo"
    assert nemo.exists() and not list(nemo.parent.glob("*.partial*"))
    tokens = torch.randint(0, 100256, (2, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        expected = model(tokens)
    torch.save(tokens, tmp_path / "tokens.pt")
    code = (
        "import torch, sys\n"
        "from nemo_flm.training.flm_model import FLMModel\n"
        f"m = FLMModel.restore_from({str(nemo)!r}, map_location='cpu').eval()\n"
        f"t = torch.load({str(tmp_path / 'tokens.pt')!r})\n"
        f"with torch.no_grad(): torch.save(m(t), {str(tmp_path / 'logits.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    restored = torch.load(tmp_path / "logits.pt")
    torch.testing.assert_close(restored, expected, rtol=0, atol=0)


def test_resume_continues_at_the_same_step_and_sample(tmp_path):
    from nemo_flm.training.run import train

    args = (
        "trainer.max_steps=7",  # not a multiple of the intervals: NeMo still saves "last" at step 7 (on_train_end)
        "trainer.val_check_interval=3",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=3",
        "model.optim.lr_warmup_samples=16",
    )
    straight = Recorder()
    train(job(tmp_path / "a", *args), callbacks=[straight])
    (last,) = (tmp_path / "a").glob("*/checkpoints/*-last")
    assert read_trainer_state(str(last))["global_step"] == 7

    first, second = Recorder(stop_at=3), Recorder()
    train(job(tmp_path / "b", *args), callbacks=[first])
    assert sorted(first.losses) == [1, 2, 3]
    model, trainer, _ = train(job(tmp_path / "b", *args), callbacks=[second])
    assert sorted(second.losses) == [4, 5, 6, 7]
    assert model.consumed_samples == 7 * 8
    for step in (4, 5, 6, 7):
        assert second.losses[step] == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-6)
