"""A planned growth YAML runs as is: scripts/plan_growth.py writes it, `scripts/train.py
--config-dir` trains it (two tiny stages of a few steps), and the growth report carries each
stage's predicted loss beside the realised ones. Bad inputs stop the script in one line before it
writes anything."""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nemo_flm.compose import compose_job
from nemo_flm.config import load_shape_config
from nemo_flm.flops import train_flops_per_token

ROOT = Path(__file__).parents[2]
SCRIPT = str(ROOT / "scripts" / "plan_growth.py")
TINY = [  # the final shape flm_tiny, at a test's size; every stage a multiple of 4 steps
    "model.seq_length=32",
    "model.data.eval_samples=4",
    "trainer.log_every_n_steps=1",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=4",
    "trainer.val_check_interval=4",
]
LAW = {"E": 2.0, "A": 300.0, "alpha": 0.3, "B": 55.0, "beta": 0.3}  # synthetic


def final_step_flops() -> float:
    model = load_shape_config(compose_job("flm_tiny", TINY).model)
    return train_flops_per_token(model) * model.global_batch_size * model.seq_length


def plan_growth(args, monkeypatch, capsys) -> str:
    """Run the script in this process; its output (stdout, or the error it exits with)."""
    monkeypatch.setattr(sys, "argv", [SCRIPT, *args])
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    except SystemExit as stop:
        return str(stop.code)
    return capsys.readouterr().out


def test_planned_yaml_trains_and_reports_predictions(tmp_path, monkeypatch, capsys):
    (tmp_path / "law.json").write_text(json.dumps(LAW))
    out = tmp_path / "plans" / "tiny_plan.yaml"
    budget = 6.5 * final_step_flops()
    args = ["--law", str(tmp_path / "law.json"), "--eta", "0.8", "--budget-flops", str(budget), "--stages", "2"]
    printed = plan_growth([*args, "--grow-steps", "2", "--out", str(out), *TINY], monkeypatch, capsys)
    assert "stage2" in printed and "pred. loss" in printed, printed
    stages = yaml.safe_load(out.read_text())["stages"]
    assert [s["model"]["hidden_size"] < 128 for s in stages] == [True, False]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config-dir", str(out.parent)]
    done = subprocess.run(
        [*command, "--config-name", "tiny_plan"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "nemo_experiments" / "tiny_plan" / "growth_report.json").read_text())
    assert [s["predicted_loss"] for s in report["stages"]] == [s["predicted_loss"] for s in stages]
    assert all(s["final_val_loss"] is not None for s in report["stages"])  # realised, on the same footing
    assert (tmp_path / "nemo_experiments" / "tiny_plan" / "growth_report.png").exists()


PLAN = ["--eta", "0.8", "--budget-flops", "1e20"]
GRID = [(f"p{i}", 1e5 * (i % 3 + 1), 1e3 * (i // 3 + 1), float("nan")) for i in range(9)]  # 3 sizes x 3 budgets


@pytest.mark.parametrize(
    "proxies, args, message",
    [
        ([("a", 1e5, 1e3, 5.0)], PLAN, ">= 3 distinct sizes"),
        (GRID, PLAN, "proxy 0 'val_loss' is nan"),
        (None, ["--eta", "0.8", "--budget-flops", "1e9"], "below the .* the final shape needs"),
        (None, ["--eta", "2", "--budget-flops", "1e20"], "eta must be in"),
        (None, ["--eta", "0.8", "--gpu-hours", "10"], "--gpu-hours needs --mfu"),
    ],
    ids=["one-proxy", "nan-loss", "budget-too-small", "eta-out-of-range", "gpu-hours-without-mfu"],
)
def test_bad_inputs_stop_before_writing(tmp_path, monkeypatch, capsys, proxies, args, message):
    if proxies is None:
        (tmp_path / "law.json").write_text(json.dumps(LAW))
        source = ["--law", str(tmp_path / "law.json")]
    else:
        shape = {"hidden_size": 64, "num_attention_heads": 4, "num_layers": 2, "train_flops": 1.0, "log_dir": "runs"}
        rows = [
            {"name": n, "non_embedding_params": int(p), "tokens": int(d), "val_loss": v, **shape}
            for n, p, d, v in proxies
        ]
        (tmp_path / "proxies.json").write_text(json.dumps({"proxies": rows}))
        source = ["--proxies", str(tmp_path / "proxies.json")]
    out = tmp_path / "plan.yaml"
    error = plan_growth([*source, *args, "--grow-steps", "2", "--out", str(out), *TINY], monkeypatch, capsys)
    assert error.startswith("error: ") and "\n" not in error and re.search(message, error), error
    assert not out.exists()
