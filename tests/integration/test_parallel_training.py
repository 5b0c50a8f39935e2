"""Multi-process training with `torchrun ... scripts/train.py` (gloo, CPU) against one process:
data parallelism (DP=2) and tensor parallelism (TP=2) follow the single-process run step for step;
a TP=2 run's sharded checkpoint resumes at TP=1 on the same trajectory; its .nemo (written by both
TP ranks) restores at TP=1 with exactly the checkpoint's weights; a staged growth run DP=2 -> TP=2 is
exact end to end, also when re-run between its stages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_flm.curves import read_scalars
from tests.helpers import free_port

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "train.py")
ARGS = [
    "trainer.accelerator=cpu",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_attention_heads=2",
    "model.seq_length=64",
    "model.data.eval_samples=8",
]
TAGS = ("train_loss", "val_loss", "grad_norm")


def _run(cwd: Path, *args: str, nproc: int = 1, config: str = "flm_tiny") -> None:
    cwd.mkdir(exist_ok=True)
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*launch, SCRIPT, "--config-name", config, *ARGS, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _stage(cwd: Path) -> str:
    return str(cwd / "nemo_experiments" / "flm_tiny")


def _assert_same(run: Path, reference: Path, complete: bool) -> None:
    """Every logged value of `run` equals the reference run's at the same logging step; a
    `complete` run logged every step the reference did (resumed segments included)."""
    refs, runs = read_scalars(_stage(reference), list(TAGS)), read_scalars(_stage(run), list(TAGS))
    for tag in TAGS:
        ref, got = dict(refs[tag]), dict(runs[tag])
        assert got and (set(got) == set(ref) if complete else set(got) < set(ref)), (tag, sorted(got), sorted(ref))
        for step, value in got.items():
            assert value == pytest.approx(ref[step], rel=1e-5), (tag, step)


@pytest.fixture(scope="module")
def single(module_tmp) -> Path:
    cwd = module_tmp / "single"
    _run(cwd, "trainer.max_steps=6")
    return cwd


def _grown_from_tp2_equals_in_process_growth(last, out: Path) -> None:
    """scripts/grow_checkpoint.py on the TP=2 checkpoint = growing its full tensors in memory."""
    import torch

    from nemo_flm.checkpoint.lightning_io import read_trainer_state
    from nemo_flm.checkpoint.shards import ShardReader
    from nemo_flm.config import load_model_config
    from nemo_flm.growth.operators import default_fill, iter_grown
    from nemo_flm.growth.plan import make_plan

    grown = {"hidden_size": 128, "num_attention_heads": 4, "num_layers": 3, "ffn_hidden_size": 768}
    cmd = [
        sys.executable,
        str(Path(SCRIPT).parent / "grow_checkpoint.py"),
        "--checkpoint",
        last.root,
        "--config-name",
        "flm_tiny",
        "--output",
        str(out),
        "model.seq_length=64",
        *[f"model.{k}={v}" for k, v in grown.items()],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    old = {n.removeprefix("model."): last.read("model", n) for n in last.names("model")}
    cfg = read_trainer_state(last.root)["hyper_parameters"]["cfg"]
    old_cfg, new_cfg = load_model_config(cfg), load_model_config({**cfg, **grown})
    expected = dict(iter_grown(old, make_plan(old_cfg, new_cfg), default_fill(new_cfg.init_method_std, 0)))
    result = ShardReader(str(out))
    assert set(result.names("model")) == set(expected) and result.names("exp_avg")
    for name in expected:
        torch.testing.assert_close(result.read("model", name), expected[name], rtol=0, atol=0)


def test_dp2_follows_the_single_process_run(single, tmp_path):
    _run(tmp_path / "dp2", "trainer.max_steps=6", "trainer.devices=2", nproc=2)
    _assert_same(tmp_path / "dp2", single, complete=True)
    assert (Path(_stage(tmp_path / "dp2")) / "checkpoints" / "flm_tiny.nemo").exists()


def test_tp2_trains_saves_sharded_and_resumes_at_tp1(single, tmp_path):
    import torch

    from nemo_flm.checkpoint.source import open_checkpoint

    tp2 = tmp_path / "tp2"
    _run(tp2, "trainer.max_steps=4", "trainer.devices=2", "model.parallel.tensor_model_parallel_size=2", nproc=2)
    _assert_same(tp2, single, complete=False)
    ckpt_dir = Path(_stage(tp2)) / "checkpoints"
    last, _, _ = open_checkpoint(str(next(ckpt_dir.glob("*-last"))))
    assert {p.name for p in Path(last.root).glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}  # each rank wrote

    code = (
        "import torch\nfrom nemo_flm.training.flm_model import FLMModel\n"
        f"path = {str(ckpt_dir / 'flm_tiny.nemo')!r}\n"
        "cfg = FLMModel.restore_from(path, return_config=True)\n"
        "cfg.parallel.tensor_model_parallel_size = 1\n"
        "m = FLMModel.restore_from(path, override_config_path=cfg, map_location='cpu')\n"
        f"torch.save(m.state_dict(), {str(tmp_path / 'nemo_state.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    restored = torch.load(tmp_path / "nemo_state.pt")
    for name in last.names("model"):  # the .nemo holds the step-4 weights, assembled from both ranks
        torch.testing.assert_close(restored[name], last.read("model", name), rtol=0, atol=0)

    _grown_from_tp2_equals_in_process_growth(last, tmp_path / "grown")
    _run(tp2, "trainer.max_steps=6")  # the same job at TP=1 resumes from the TP=2 checkpoint
    _assert_same(tp2, single, complete=True)


STAGES = (
    "stages=[{name: s1, max_steps: 4, model: {num_layers: 2, hidden_size: 64, num_attention_heads: 2,"
    " parallel: {tensor_model_parallel_size: 1}}}, {name: s2, max_steps: 4, model: {num_layers: 3,"
    " hidden_size: 128, num_attention_heads: 4, parallel: {tensor_model_parallel_size: 2}}}]"
)


def test_staged_growth_dp2_to_tp2_is_exact_and_resumes_between_stages(tmp_path):
    """Stage 1 at DP=2, stage 2 at TP=2 (the layout changes with the stage, as in FLM's plan): the
    grown model, validated before its first step, gives stage 1's final validation loss (growth
    exact through the real pipeline: sharded checkpoint, offline growth, reload at another layout);
    re-running after stage 2 was lost grows it again once (rank 0) and finishes the same way."""
    args = [STAGES, "model.growth.grow_steps=2", "trainer.devices=2"]
    job = tmp_path / "nemo_experiments" / "flm_tiny_growth"
    for attempt in range(2):
        _run(tmp_path, *args, nproc=2, config="flm_tiny_growth")
        growth = json.loads((job / "growth_report.json").read_text())["growths"][0]
        assert growth["val_loss_after"] == pytest.approx(growth["val_loss_before"], rel=1e-5), (attempt, growth)
        if attempt == 0:  # as if killed between the stages: stage 1 done, stage 2 not begun
            for path in ("s2", "s2.grown", "s2.done", "growth_report.json"):
                shutil.rmtree(job / path) if (job / path).is_dir() else (job / path).unlink()
