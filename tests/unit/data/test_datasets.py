"""Dataset building through megatron.core.datasets: inputs megatron would mishandle are refused
or made safe before it sees them."""

import json

import pytest
import torch

from nemo_flm.data.datasets import build_train_dataset, data_blend
from nemo_flm.data.preprocess import preprocess_files
from nemo_flm.errors import ConfigError
from tests.helpers import tiny_cfg


def write_dataset(folder, prefix, documents, overwrite=False):
    """An indexed dataset of `documents` at `prefix`, from a .jsonl of them."""
    folder.mkdir(exist_ok=True)
    source = folder / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"text": d}) for d in documents))
    preprocess_files([str(source)], str(prefix), workers=1, overwrite=overwrite)


def test_a_dataset_whose_validation_share_is_empty_is_refused(tmp_path):
    """17 documents at data.split 98,2,0: megatron's validation share rounds to no document and its
    epoch count would loop forever; the blend is refused in one line instead."""
    prefix = tmp_path / "few"
    write_dataset(tmp_path / "src", prefix, [f"document number {i}, a few words long." for i in range(17)])
    cfg = tiny_cfg(data={"blend": [str(prefix)], "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(ConfigError, match="'few' has 17 documents: its validation share") as err:
        data_blend(cfg.data)
    assert "\n" not in str(err.value)
    data_blend(tiny_cfg(data={"blend": [str(prefix)], "split": "90,10,0", "cache_dir": str(tmp_path / "cache")}).data)


def test_a_dataset_rewritten_under_its_prefix_is_read_afresh(tmp_path):
    """megatron keys its index cache by the prefix path: a dataset re-preprocessed under the same
    prefix must not be read through the old indices (an IndexError, or the old samples)."""
    prefix = tmp_path / "text"
    cfg = tiny_cfg(
        seq_length=8, data={"blend": [str(prefix)], "split": "50,50,0", "cache_dir": str(tmp_path / "cache")}
    )
    first = [f"first version, document {i}: " + "word " * 20 for i in range(40)]
    write_dataset(tmp_path / "src", prefix, first)
    old = build_train_dataset(cfg.data, data_blend(cfg.data), 8, 16)[0]["tokens"]
    second = [f"второй {i} " * 3 for i in range(12)]
    write_dataset(tmp_path / "src", prefix, second, overwrite=True)
    new = build_train_dataset(cfg.data, data_blend(cfg.data), 8, 16)
    assert not torch.equal(torch.as_tensor(new[0]["tokens"]), torch.as_tensor(old))
    assert len({int(t) for i in range(len(new)) for t in new[i]["tokens"]} - {100256}) > 0


def test_a_truncated_bin_is_refused_at_start_in_one_line(tmp_path):
    """megatron maps a .bin without checking its size: half of one builds, and fails mid-run on
    the rank that first samples past its end. check_blend_files compares it with its .idx."""
    from nemo_flm.data.blend import check_blend_files

    prefix = tmp_path / "text"
    write_dataset(tmp_path / "src", prefix, [f"document {i}: " + "word " * 30 for i in range(40)])
    cfg = tiny_cfg(data={"blend": [str(prefix)], "cache_dir": str(tmp_path / "cache")})
    check_blend_files(cfg.data)  # whole: accepted
    data = (tmp_path / "text.bin").read_bytes()
    (tmp_path / "text.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"'.*text.bin' holds [\d,]+ bytes but its .idx describes") as err:
        check_blend_files(cfg.data)
    assert "\n" not in str(err.value)
    (tmp_path / "text.bin").write_bytes(data + b"\0\0")  # one token too many: another .idx's data
    with pytest.raises(ConfigError, match="truncated or belongs to another .idx"):
        check_blend_files(cfg.data)
