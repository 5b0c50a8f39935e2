"""The README's commands work as written: every shell command in its ```bash blocks runs, in order,
in one fresh working directory (so later commands find what earlier ones made), with only the
step counts made small where a command trains. Installing and the test command itself are CI's
own steps; commands that need a GPU or a cluster are skipped with the reason. A README that
drifts from the code fails here.

The own-data commands read `corpus/en/` (.txt) and `corpus/zh/*.jsonl`, written here from real
text: the English documentation topics and the Chinese People's Daily paragraphs the built-in
corpus is made from (data/corpus.py), as a user's own files would hold them.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SKIP = {  # command prefix -> why it does not run here
    "pip install": "installing is CI's own first step (.ci/run)",
    "ruff ": "the test command is CI's own last step",
    "python -m pytest": "the test command is CI's own last step",
    "bash scripts/gpu_check.sh": "needs a CUDA GPU",
    "torchrun": "needs several processes (tests/integration/test_parallel_training.py runs them)",
    "python scripts/launch.py launcher/flm_101b_growth --mode sbatch": "needs a SLURM cluster (sbatch)",
    "python scripts/launch.py launcher/flm_tiny_growth --mode": "needs SLURM: tests/integration/test_slurm.py "
    "starts one and runs these",
    "bash scripts/test_py312.sh": "the second stack is CI's own last step (.ci/run)",
    "python scripts/launch.py launcher/flm_16b --mode local": "needs 8 GPUs (the stage configs train on them)",
    "python scripts/train.py --config-dir plans": "trains a plan's hundreds of steps per stage; "
    "tests/integration/test_plan_growth.py trains a planned YAML end to end",
    "python scripts/predict_loss.py --config": "a sweep of 7 proxies, tens of minutes; tests/unit/scaling/ checks "
    "its configs and read-back, the README's --proxies command its fit and outputs",
}
SMALL = [  # appended to every training command: a few steps instead of hundreds
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "exp_manager.checkpoint_callback_params.every_n_train_steps=2",
    "model.data.eval_samples=8",
    "trainer.log_every_n_steps=1",
]
SMALL_STAGES = ["stages.0.max_steps=4", "stages.1.max_steps=4", "stages.2.max_steps=4"]
SMALL_SCRIPTS = {  # scripts that train inside
    "python scripts/eval_extrapolation.py": "--steps 4 --samples 1",
    "python scripts/mup_coord_check.py": "--widths 32 64 --head-dim 16 --steps 2 --seq 16 --batch 2 --vocab 256",
    "python scripts/mup_lr_sweep.py": "--widths 32 64 --head-dim 16 --log2-lr -7 -6 --steps 2 --warmup 1 --held-out 1 "
    "--seeds 1 --seq 16 --batch 2 --vocab 256",
    "python scripts/bench_checkpoint.py": "--nproc 2 --hidden 64 --layers 1",
    "python scripts/bench_preprocess.py": "--repeat 1",
}


def readme_commands() -> list:
    """The commands of the README's bash blocks, one per line, `&&` chains split, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def small(command: str) -> str:
    """The command with small step counts where it trains (Hydra: the last value of a key wins)."""
    for script, options in SMALL_SCRIPTS.items():
        if command.startswith(script):
            return f"{command} {options}"
    if not command.startswith("python scripts/train.py"):
        return command
    extra = SMALL + (SMALL_STAGES if "flm_tiny_growth" in command else [])
    if "growth.grow_steps" in command or "flm_tiny_growth" in command:
        extra.append("model.growth.grow_steps=2")
    return f"{command} {' '.join(extra)}"


def run(command: str, cwd: Path, env: dict) -> str:
    """Run `command` (made small) with bash in `cwd`; its output, or a failure that shows it."""
    done = subprocess.run(["bash", "-c", small(command)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"command failed: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def write_user_corpus(root: Path) -> None:
    from nemo_flm.config import load_model_config
    from nemo_flm.data.corpus import chinese_documents, english_documents

    corpus = load_model_config({}).data.corpus
    (root / "corpus" / "en").mkdir(parents=True)
    (root / "corpus" / "zh").mkdir(parents=True)
    english = [doc for _, doc in zip(range(300), english_documents(corpus))]
    for i in range(3):
        (root / "corpus" / "en" / f"part{i}.txt").write_text("\n\n".join(english[i::3]), encoding="utf-8")
    chinese = [doc for _, doc in zip(range(600), chinese_documents(corpus))]
    lines = "\n".join(json.dumps({"text": doc}, ensure_ascii=False) for doc in chinese)
    (root / "corpus" / "zh" / "people_daily.jsonl").write_text(lines + "\n", encoding="utf-8")


def test_readme_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert any(c.startswith("python scripts/train.py") for c in commands)  # the parser found the blocks
    for name in ("scripts", "conf", "docs"):  # docs/: measured results that commands read (docs/mup_proxies.json)
        (tmp_path / name).symlink_to(ROOT / name)
    write_user_corpus(tmp_path)
    # a HOME of its own: the built-in corpus and megatron's index cache are built here, as on a new machine
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path / "home")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # `python`: the one running the tests
    ran = {}
    for command in commands:
        reason = next((why for prefix, why in SKIP.items() if command.startswith(prefix)), None)
        if reason:
            print(f"skipped: {command}  ({reason})")
            continue
        ran[command] = run(command, tmp_path, env)
    assert len(ran) >= 6, list(ran)
    assert (tmp_path / "nemo_experiments" / "en_only" / "checkpoints" / "en_only.nemo").exists()
    _check_main_job_output(ran["python scripts/train.py"])
    one_language = next(out for command, out in ran.items() if "name=en_only" in command)
    _run_the_printed_next_commands(one_language, tmp_path, env)


def _run_the_printed_next_commands(output: str, cwd: Path, env: dict) -> None:
    """The end summary's "grow it" and "train the grown model" commands work as printed (here for
    the one-language run, whose name and blend they must carry)."""
    labels = ("resume, or", "grow it", "train the grown")
    printed = [line.split(":  ", 1)[1].strip() for line in output.splitlines() if line.strip().startswith(labels)]
    assert len(printed) == 3 and "name=en_only" in printed[0] and "data.blend" in printed[1], printed
    for command in printed[1:]:
        run(command, cwd, env)
    assert (cwd / "nemo_experiments" / "en_only_grown" / "checkpoints" / "en_only_grown.nemo").exists()


def _check_main_job_output(output: str) -> None:
    """The main job starts with what it trains and ends with what it made; expected noise is gone."""
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("built-in corpus [")]
    assert lines[0].startswith("model: 4 layers, hidden 128"), lines[:3]
    assert [line.split(":")[0] for line in lines[1:5]] == ["data (built-in corpus)", "layout", "backends", "output"]
    for noise in (
        "Transformer Engine and Apex are not installed",
        "No exporters were provided",
        "GPU available:",
        "Future Hydra versions",
        "total number of documents",
        "ExpManager schema",
    ):
        assert noise not in output, noise
    assert "done: step 4, 4,096 tokens seen" in output and "nemo_experiments/flm_tiny/loss_curves.png" in output
    assert "python scripts/grow_checkpoint.py --checkpoint" in output


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_is_run_or_skipped_with_a_reason(command):
    known = command.startswith(("python scripts/", *SKIP))
    assert known, f"README command of an unknown kind (teach test_readme.py how to run it): {command}"
