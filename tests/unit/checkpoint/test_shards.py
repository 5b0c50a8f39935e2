"""The sharded checkpoint directory: shards written by T ranks read back at any TP size as the
contiguous chunks of the full tensor; replicated tensors whole; clear errors for bad input."""

import json

import pytest
import torch

from nemo_flm.checkpoint.shards import ShardReader, ShardWriter, consolidate

FULL = {
    "qkv": (torch.arange(48.0).reshape(12, 4), 0),
    "fc2": (torch.arange(36.0).reshape(3, 12), 1),
    "ln": (torch.arange(5.0), None),
    "step": (torch.tensor(3.0), None),
}


def write(root, tp_size):
    """What `tp_size` ranks write, each its chunk of every split tensor."""
    for rank in range(tp_size):
        writer = ShardWriter(str(root), rank, tp_size)
        for name, (full, dim) in FULL.items():
            writer.add("model", name, full if dim is None else full.chunk(tp_size, dim)[rank], dim)
        writer.write_index({"note": "meta"})
    return ShardReader(str(root))


@pytest.mark.parametrize("written", [1, 2, 3])
@pytest.mark.parametrize("read", [1, 2, 3, 4, 6])
def test_any_tp_reads_any_tp(tmp_path, written, read):
    reader = write(tmp_path, written)
    assert reader.meta == {"note": "meta"} and reader.tp_size == written
    for name, (full, dim) in FULL.items():
        assert reader.shape("model", name) == full.shape
        for rank in range(read):
            expected = full if dim is None else full.chunk(read, dim)[rank]
            torch.testing.assert_close(reader.read("model", name, rank, read), expected, rtol=0, atol=0)


def test_consolidate_and_lazy_group(tmp_path):
    reader = consolidate(write(tmp_path / "tp2", 2), str(tmp_path / "tp1"), ["model"])
    assert reader.tp_size == 1 and sorted((tmp_path / "tp1" / "model").iterdir())[0].name.count(".tp") == 0
    group = reader.group("model")
    assert set(group) == set(FULL)
    torch.testing.assert_close(group["fc2"], FULL["fc2"][0], rtol=0, atol=0)


def test_errors_are_one_line(tmp_path):
    reader = write(tmp_path / "ok", 1)
    with pytest.raises(ValueError, match="do not split into 5 tensor-parallel shards"):
        reader.read("model", "qkv", 0, 5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a complete nemo_flm checkpoint") as err:
        ShardReader(str(tmp_path / "empty"))
    assert "\n" not in str(err.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "index.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="format 'x'"):
        ShardReader(str(tmp_path / "other"))


@pytest.mark.parametrize("name", ["../../secret", "/etc/passwd", "..", "a/b"])
def test_an_index_naming_a_file_outside_its_folder_is_refused(tmp_path, name):
    """Names come from the index.json a checkpoint folder carries: a crafted one must not read a
    file elsewhere (here a real tensor file beside the folder)."""
    from safetensors.torch import save_file

    root = tmp_path / "ckpt"
    reader = write(root, 1)
    save_file({"t": torch.zeros(2)}, str(tmp_path / "secret.safetensors"))
    index = json.loads((root / "index.json").read_text())
    index["tensors"]["model"][name] = {"shape": [2], "partition_dim": None}
    (root / "index.json").write_text(json.dumps(index))
    reader = ShardReader(str(root))
    with pytest.raises(ValueError, match="outside its folder"):
        reader.read("model", name)
    with pytest.raises(ValueError, match="outside its folder"):
        reader.verify()
