"""Pieces through torch.distributed.checkpoint: a tensor written as one layout's pieces reads back
as any other's boxes; `.metadata` builds nothing but DCP's own records and names no file outside
its folder; a truncated file, a missing key and a wrong shape are named in one line."""

import os
import pathlib
import pickle

import pytest
import torch

from nemo_flm import parallel
from nemo_flm.checkpoint import dcp
from nemo_flm.checkpoint.pieces import range_pieces, shard_piece

FULL = torch.arange(48.0).view(6, 8)


def _written(folder, ranges=((0, 13), (13, 30), (30, 48))):
    """FULL as three data-parallel ranks' flat ranges (one process writes all of them)."""
    pieces = [
        p
        for lo, hi in ranges
        for p in range_pieces(("exp_avg/w",), FULL.view(-1)[lo:hi].clone(), FULL.shape, lo, None, 0, 1)
    ]
    dcp.save(pieces, str(folder), parallel.checkpoint_group())
    return str(folder)


@pytest.mark.parametrize("tp_size, dim", [(1, None), (2, 0), (3, 0), (2, 1), (4, 1)])
def test_flat_ranges_read_back_as_any_tp_shard(single_process, tmp_path, tp_size, dim):
    folder = _written(tmp_path / "ckpt")
    for rank in range(tp_size):
        want = FULL if dim is None else FULL.chunk(tp_size, dim)[rank]
        out = torch.full_like(want, -1.0)
        read = dcp.load([shard_piece(("exp_avg/w",), out, dim, rank, tp_size)], folder, parallel.checkpoint_group())
        assert torch.equal(out, want) and read > 0


def test_a_first_missing_key_falls_back_to_the_next(single_process, tmp_path):
    folder = _written(tmp_path / "ckpt")
    out = torch.zeros(6, 8)
    dcp.load([shard_piece(("main_param/w", "exp_avg/w"), out, None, 0, 1)], folder)
    assert torch.equal(out, FULL)


def test_missing_keys_wrong_shapes_and_truncated_files_are_one_line_errors(single_process, tmp_path):
    folder = _written(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="holds no 'model/v': it was written for another model"):
        dcp.load([shard_piece(("model/v",), torch.zeros(2), None, 0, 1)], folder)
    with pytest.raises(ValueError, match=r"holds 'exp_avg/w' with shape \(6, 8\), this model \(6, 9\)"):
        dcp.load([shard_piece(("exp_avg/w",), torch.zeros(6, 9), None, 0, 1)], folder)
    dcp.verify(folder)
    (data,) = [f for f in os.listdir(folder) if f.endswith(".distcp")]
    with open(os.path.join(folder, data), "r+b") as handle:
        handle.truncate(os.path.getsize(os.path.join(folder, data)) - 10)
    with pytest.raises(ValueError, match=f"{data}' is missing or truncated") as err:
        dcp.verify(folder)
    assert "\n" not in str(err.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_metadata_runs_no_code_and_reads_no_file_outside(single_process, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _written(tmp_path / "ckpt")
    metadata = os.path.join(folder, dcp.METADATA)
    original = open(metadata, "rb").read()
    with open(metadata, "wb") as handle:
        pickle.dump(_Exploit(), handle)
    with pytest.raises(ValueError, match="posix.system is not part of a checkpoint's metadata"):
        dcp.read_metadata(folder)
    assert not (tmp_path / "pwned").exists()

    with open(metadata, "wb") as handle:
        handle.write(original)
    md = dcp.read_metadata(folder)
    for info in md.storage_data.values():
        info.relative_path = "../outside.distcp"
    with open(metadata, "wb") as handle:
        pickle.dump(md, handle)
    with pytest.raises(ValueError, match="names a file '../outside.distcp' outside its folder"):
        dcp.load([shard_piece(("exp_avg/w",), torch.zeros(6, 8), None, 0, 1)], folder)


CLASS_BUILD = b"\x80\x04cpathlib\nPosixPath\nN}X\n\x00\x00\x00__fspath__ctorch\nSize\ns\x86b0N."
ENUM = b"torch.distributed.checkpoint.metadata\n_MEM_FORMAT_ENCODING\n"
ENUM_BUILD = b"\x80\x04c" + ENUM + b"K\x00\x85RN}\x8c\x07_value_Kcs\x86b0N."


@pytest.mark.parametrize("payload, target", [(CLASS_BUILD, "type"), (ENUM_BUILD, "_MEM_FORMAT_ENCODING")])
def test_a_crafted_metadata_cannot_set_attributes_of_shared_objects(single_process, tmp_path, payload, target):
    """BUILD on a class (PosixPath.__fspath__ = torch.Size) or on an enum member (the memory
    format every later save writes) would change them for the whole process: only DCP's own
    freshly made records may be filled in."""
    from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING

    folder = _written(tmp_path / "ckpt")
    with open(os.path.join(folder, dcp.METADATA), "wb") as handle:
        handle.write(payload)
    fspath, encoding = pathlib.PosixPath.__fspath__, _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value
    with pytest.raises(ValueError, match=f"setting attributes of {target} is not part of a checkpoint's metadata"):
        dcp.read_metadata(folder)
    assert pathlib.PosixPath.__fspath__ is fspath
    assert _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value == encoding


def test_a_damaged_metadata_is_one_line(single_process, tmp_path):
    """Cut or flipped anywhere, .metadata fails as one ValueError naming the folder."""
    folder = _written(tmp_path / "ckpt")
    path = os.path.join(folder, dcp.METADATA)
    original = open(path, "rb").read()
    damaged = [original[:cut] for cut in range(1, len(original), max(1, len(original) // 40))]
    damaged += [original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1 :] for i in range(2, len(original), 7)]
    for data in damaged:
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            dcp.read_metadata(folder)
        except ValueError as err:
            assert folder in str(err) and "\n" not in str(err)
