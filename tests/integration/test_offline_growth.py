"""Offline growth: the same tensors as in-process growth, refusals that touch nothing, and peak
anonymous memory bounded by a few of the largest tensors (not twice the model)."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_flm.checkpoint.lightning_io import checkpoint_dir
from nemo_flm.checkpoint.shards import ShardReader
from nemo_flm.errors import ConfigError
from nemo_flm.growth.grown_checkpoint import read_grown_meta
from nemo_flm.growth.offline import grow_checkpoint
from nemo_flm.growth.operators import default_fill, iter_grown
from nemo_flm.growth.plan import make_plan
from tests.helpers import local_engine, tiny_cfg, trained_model, write_checkpoint

SCRIPT = str(Path(__file__).parents[2] / "scripts" / "grow_checkpoint.py")
OLD = dict(num_layers=2, hidden_size=32, num_attention_heads=2, ffn_hidden_size=64)
NEW = dict(num_layers=3, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128)


def lightning_checkpoint(path, cfg, steps=2):
    """A checkpoint written the way FLMModel's Lightning runs write it (`x.ckpt` -> directory `x`)."""
    model, opt = trained_model(cfg, steps)
    write_checkpoint(path, cfg, local_engine(cfg, model, opt), steps, consumed_samples=24)
    return model


def _digest(path):
    """sha256 over every file of a checkpoint directory (names and contents)."""
    h = hashlib.sha256()
    for f in sorted(Path(checkpoint_dir(path)).rglob("*")):
        h.update(str(f).encode() + (f.read_bytes() if f.is_file() else b""))
    return h.hexdigest()


def test_offline_equals_in_process(single_process, tmp_path):
    old_cfg, new_cfg = tiny_cfg(**OLD), tiny_cfg(**NEW)
    model = lightning_checkpoint(tmp_path / "s1.ckpt", old_cfg)
    before = _digest(tmp_path / "s1.ckpt")
    grow_checkpoint(str(tmp_path / "s1.ckpt"), new_cfg, str(tmp_path / "g"), seed=7)
    expected = dict(
        iter_grown(
            model.state_dict(),
            make_plan(old_cfg, new_cfg),
            default_fill(new_cfg.init_method_std, 7),
        )
    )
    index = read_grown_meta(str(tmp_path / "g"))
    assert index["consumed_samples"] == 24 and index["adam_step"] == 2.0
    reader = ShardReader(str(tmp_path / "g"))
    assert set(reader.names("model")) == {k for k, v in expected.items() if torch.is_tensor(v)}
    for name in reader.names("model"):
        torch.testing.assert_close(reader.read("model", name), expected[name], rtol=0, atol=0)
    assert _digest(tmp_path / "s1.ckpt") == before  # the input is never modified
    # three tensors grown at once on threads: the same files, the same index, byte for byte
    grow_checkpoint(str(tmp_path / "s1.ckpt"), new_cfg, str(tmp_path / "g3"), seed=7, workers=3)
    assert _same_files(tmp_path / "g", tmp_path / "g3")


def _same_files(a: Path, b: Path) -> bool:
    """The same file names under both directories, with the same bytes."""
    names = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
    same_names = names == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
    return same_names and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_refusals_leave_files_untouched(single_process, tmp_path):
    lightning_checkpoint(tmp_path / "s1.ckpt", tiny_cfg(**OLD))
    before = _digest(tmp_path / "s1.ckpt")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        grow_checkpoint(str(tmp_path / "s1.ckpt"), tiny_cfg(**NEW), str(tmp_path / "exists"))
    with pytest.raises(FileNotFoundError, match="not found"):
        grow_checkpoint(str(tmp_path / "nope.ckpt"), tiny_cfg(**NEW), str(tmp_path / "o1"))
    with pytest.raises(ConfigError, match="shrinks"):
        grow_checkpoint(str(tmp_path / "s1.ckpt"), tiny_cfg(**dict(OLD, num_layers=1)), str(tmp_path / "o2"))
    with pytest.raises(ConfigError, match="head dim changes"):
        grow_checkpoint(str(tmp_path / "s1.ckpt"), tiny_cfg(**dict(NEW, num_attention_heads=2)), str(tmp_path / "o3"))
    assert sorted(os.listdir(tmp_path)) == ["exists", "s1"] and not os.listdir(tmp_path / "exists")
    assert _digest(tmp_path / "s1.ckpt") == before


def test_checkpoint_not_matching_its_config_is_refused(single_process, tmp_path):
    cfg = tiny_cfg(**OLD)
    lightning_checkpoint(tmp_path / "bad.ckpt", cfg)
    state_file = tmp_path / "bad" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=False)
    state["hyper_parameters"]["cfg"]["ffn_hidden_size"] = 96
    torch.save(state, state_file)
    with pytest.raises(ConfigError, match="does not match its own config"):
        grow_checkpoint(str(tmp_path / "bad.ckpt"), tiny_cfg(**NEW), str(tmp_path / "o"))


def test_peak_memory_of_the_script_stays_near_the_largest_tensor(single_process, tmp_path):
    """A checkpoint of ~620 MiB (embeddings 100352 x 256 fp32 plus Adam moments) grown to hidden 512:
    the grown output is ~1.3 GiB; growth holds at most a few tensors of 196 MiB at once."""
    old = dict(num_layers=2, hidden_size=256, num_attention_heads=2, ffn_hidden_size=1024, vocab_size=100256)
    lightning_checkpoint(tmp_path / "big.ckpt", tiny_cfg(**old), steps=1)
    out = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--checkpoint",
            str(tmp_path / "big.ckpt"),
            "--config-name",
            "flm_tiny",
            "--output",
            str(tmp_path / "grown"),
            "model.hidden_size=512",
            "model.num_attention_heads=4",
            "model.ffn_hidden_size=2048",
            "model.num_layers=2",
            "model.seq_length=32",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peak = float(re.search(r"peak anonymous memory during growth ([\d.]+) MiB", out.stdout).group(1))
    largest = 100352 * 512 * 4 / 2**20  # the grown embedding / output layer: 196 MiB
    grown_total = sum(f.stat().st_size for f in (tmp_path / "grown").rglob("*.safetensors")) / 2**20
    assert grown_total > 1200
    assert peak < 3 * largest, (peak, largest)
    print(
        f"peak anonymous memory {peak:.0f} MiB, largest tensor {largest:.0f} MiB, "
        f"grown checkpoint {grown_total:.0f} MiB"
    )
