"""A .nemo read in place: every tensor, whole or as any TP shard, equals what the extracted folder
holds, read from the archive's bytes (nothing extracted); a truncated or foreign archive is named
in one line; restoring through NeMo extracts the config, not the weights."""

import os
import tarfile
import time

import pytest
import torch

from nemo_flm.checkpoint.nemo_archive import CONFIG, WEIGHTS, open_nemo
from nemo_flm.checkpoint.nemo_file import pack_nemo
from nemo_flm.checkpoint.shards import ShardReader, ShardWriter

FULL = {
    "qkv": (torch.arange(48.0).reshape(12, 4), 0),
    "fc2": (torch.arange(36.0, dtype=torch.bfloat16).reshape(3, 12), 1),
    "ln": (torch.arange(5.0), None),
}


def _nemo(tmp_path, tp_size=2):
    staging = tmp_path / "staging"
    for rank in range(tp_size):
        writer = ShardWriter(str(staging / WEIGHTS), rank, tp_size)
        for name, (full, dim) in FULL.items():
            writer.add("model", name, full if dim is None else full.chunk(tp_size, dim)[rank], dim)
        writer.write_index()
    (staging / CONFIG).write_text("hidden_size: 64\n")
    pack_nemo(str(staging), str(tmp_path / "m.nemo"))
    return str(tmp_path / "m.nemo"), ShardReader(str(staging / WEIGHTS))


@pytest.mark.parametrize("tp_size", [1, 2, 3])
def test_tensors_read_in_place_equal_the_extracted_ones(tmp_path, tp_size):
    path, extracted = _nemo(tmp_path)
    reader, cfg = open_nemo(path)
    assert cfg.hidden_size == 64 and reader.tp_size == 2
    for name, (full, dim) in FULL.items():
        for rank in range(tp_size if dim is not None and full.shape[dim] % tp_size == 0 else 1):
            size = tp_size if dim is not None and full.shape[dim] % tp_size == 0 else 1
            got = reader.read("model", name, rank, size)
            assert got.dtype == full.dtype and torch.equal(got, extracted.read("model", name, rank, size))
    with tarfile.open(path) as tar:  # what open_nemo read is inside the archive, nothing beside it
        assert any(m.name.endswith("qkv.tp1.safetensors") for m in tar.getmembers())
    assert sorted(os.listdir(tmp_path)) == ["m.nemo", "staging"]


def test_truncated_and_foreign_archives_are_one_line_errors(tmp_path):
    path, _ = _nemo(tmp_path)
    data = open(path, "rb").read()
    (tmp_path / "cut.nemo").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        open_nemo(str(tmp_path / "cut.nemo"))
    assert "cut.nemo" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "text.nemo").write_text("not a tar")
    with pytest.raises(ValueError, match="is not a readable .nemo"):
        open_nemo(str(tmp_path / "text.nemo"))
    with pytest.raises(FileNotFoundError, match="not found"):
        open_nemo(str(tmp_path / "none.nemo"))


def test_nemo_restore_extracts_the_config_not_the_weights(single_process, tmp_path, monkeypatch):
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    from nemo_flm.training.flm_model import FLMModel
    from tests.helpers import tiny_cfg

    model = FLMModel(tiny_cfg())
    model.save_to(str(tmp_path / "tiny.nemo"))
    extracted = []
    unpack = SaveRestoreConnector._unpack_nemo_file

    def recording(path2file, out_folder, members=None):
        extracted.extend(m.name for m in members or [])
        return unpack(path2file, out_folder, members)

    monkeypatch.setattr(SaveRestoreConnector, "_unpack_nemo_file", staticmethod(recording))
    restored = FLMModel.restore_from(str(tmp_path / "tiny.nemo"), map_location="cpu")
    assert extracted and not any(WEIGHTS in name for name in extracted), extracted
    for (name, param), (_, mine) in zip(model.named_parameters(), restored.named_parameters()):
        assert torch.equal(param, mine), name


def test_a_checkpoint_exported_offline_restores_its_weights(single_process, tmp_path, monkeypatch):
    """scripts/export_nemo.py's packing: the .nemo of a training checkpoint, made in one process
    tensor by tensor, restores through FLMModel with exactly the checkpoint's weights."""
    from nemo_flm.checkpoint.nemo_file import export_nemo, packed_from
    from nemo_flm.training.flm_model import FLMModel
    from tests.helpers import local_engine, tiny_cfg, trained_model, write_checkpoint

    cfg = tiny_cfg()
    model, opt = trained_model(cfg, 2)
    write_checkpoint(tmp_path / "c.ckpt", cfg, local_engine(cfg, model, opt), 2)
    monkeypatch.chdir(tmp_path)  # a bare file name: written in the working directory
    export_nemo(str(tmp_path / "c"), "c.nemo")
    restored = FLMModel.restore_from(str(tmp_path / "c.nemo"), map_location="cpu")
    mine = dict(restored.model.named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, mine[name]), name
    # what a re-run of the export keeps: this .nemo, not a damaged one, nor one older than the checkpoint
    assert packed_from("c.nemo", str(tmp_path / "c"))
    os.utime(tmp_path / "c", (time.time() + 60,) * 2)
    assert not packed_from("c.nemo", str(tmp_path / "c"))
    os.utime(tmp_path / "c", (time.time() - 60,) * 2)
    (tmp_path / "c.nemo").write_bytes((tmp_path / "c.nemo").read_bytes()[:-4096])
    assert not packed_from("c.nemo", str(tmp_path / "c"))


def test_a_header_that_claims_more_bytes_than_its_member_holds_is_refused(tmp_path):
    """A tensor is mapped straight from the archive: a header whose shape needs more bytes than
    its data offsets give would read the next member's bytes as weights."""
    import json
    import struct

    _nemo(tmp_path, tp_size=1)
    (member,) = (tmp_path / "staging" / WEIGHTS).rglob("ln*.safetensors")
    header = json.dumps({"t": {"dtype": "F32", "shape": [50], "data_offsets": [0, 20]}}).encode()
    member.write_bytes(struct.pack("<Q", len(header)) + header + torch.arange(5.0).numpy().tobytes())
    pack_nemo(str(tmp_path / "staging"), str(tmp_path / "crafted.nemo"))
    reader, _ = open_nemo(str(tmp_path / "crafted.nemo"))
    with pytest.raises(ValueError, match="holds 20 bytes for a \\[50\\]"):
        reader.read("model", "ln")
