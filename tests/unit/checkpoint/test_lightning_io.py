"""FLMCheckpointIO's bookkeeping: the trainer state is plain data (configs as dicts, classes by
name) and is read with weights_only; a second save of the same step links the first one's files;
a checkpoint removed while a save is in flight goes only once that save is published."""

import datetime
import os
from concurrent.futures import Future

import pytest
import torch
from omegaconf import OmegaConf

from nemo_flm.checkpoint import lightning_io
from nemo_flm.checkpoint.lightning_io import PIECES, TRAINER_STATE, FLMCheckpointIO, read_trainer_state
from nemo_flm.checkpoint.pieces import shard_piece


def _checkpoint(step=3, value=1.0):
    return {
        "global_step": step,
        "consumed_samples": 8 * step,
        "hyper_parameters": OmegaConf.create({"cfg": {"hidden_size": 64}}),
        "hparams_type": type(OmegaConf.create({})),
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}},
        PIECES: [shard_piece(("model/w",), torch.full((4,), value), None, 0, 1)],
    }


def test_the_trainer_state_is_plain_data_read_with_weights_only(single_process, tmp_path):
    FLMCheckpointIO().save_checkpoint(_checkpoint(), str(tmp_path / "a.ckpt"))
    state = read_trainer_state(str(tmp_path / "a.ckpt"))
    assert state["hyper_parameters"] == {"cfg": {"hidden_size": 64}}
    assert state["hparams_type"] == "omegaconf.dictconfig.DictConfig" and PIECES not in state
    with pytest.raises(TypeError, match="the checkpoint's 'callbacks' is not plain data: .*timedelta"):
        FLMCheckpointIO().save_checkpoint(
            {**_checkpoint(), "callbacks": {"t": datetime.timedelta(1)}}, str(tmp_path / "b.ckpt")
        )
    assert not (tmp_path / "b").exists()
    torch.save({"global_step": datetime.timedelta(1)}, tmp_path / "a" / TRAINER_STATE)  # as an older version wrote it
    with pytest.raises(ValueError, match="is not plain data .*nemo_flm 0.1") as err:
        read_trainer_state(str(tmp_path / "a"))
    assert "\n" not in str(err.value)


def test_a_second_save_of_the_same_step_links_the_first(single_process, tmp_path):
    io = FLMCheckpointIO()
    io.save_checkpoint(_checkpoint(), str(tmp_path / "top.ckpt"))
    io.save_checkpoint(_checkpoint(value=9.0), str(tmp_path / "top-last.ckpt"))  # same step: same tensors
    data = [f for f in os.listdir(tmp_path / "top-last") if f.endswith(".distcp")]
    assert data and all((tmp_path / "top-last" / f).stat().st_nlink == 2 for f in data)
    io.save_checkpoint(_checkpoint(step=4, value=9.0), str(tmp_path / "next.ckpt"))
    assert all((tmp_path / "next" / f).stat().st_nlink == 1 for f in os.listdir(tmp_path / "next"))


class _Response:
    """DCP's async answer: the copy is done, the write is `upload`."""

    def __init__(self, upload: Future):
        self.staging_completion, self.upload_completion = Future(), upload
        self.staging_completion.set_result(None)


def _writing_new(tmp_path, monkeypatch):
    """An async FLMCheckpointIO that saved `old` (step 2) and is writing `new` (step 4): its
    staging folder made, the write finishing when the returned future is resolved."""
    io = FLMCheckpointIO(async_save=True)
    io.save_checkpoint(_checkpoint(step=2), str(tmp_path / "old.ckpt"))
    io.wait()
    writing = Future()

    def slow_save(pieces, path, group, stager):
        os.makedirs(path)
        return _Response(writing)

    monkeypatch.setattr(lightning_io.dcp, "save", slow_save)
    io.save_checkpoint(_checkpoint(step=4), str(tmp_path / "new.ckpt"))
    return io, writing


def test_a_removal_waits_for_the_save_in_flight(single_process, tmp_path, monkeypatch):
    """The previous checkpoint must outlive the new one's write: a kill before the new one is
    published then still finds a whole checkpoint."""
    io, writing = _writing_new(tmp_path, monkeypatch)
    io.remove_checkpoint(str(tmp_path / "old.ckpt"))
    assert (tmp_path / "old").is_dir() and not (tmp_path / "new").exists()
    writing.set_result(None)  # every rank's files are on disk: rank 0 publishes, then removes
    io.wait()
    assert (tmp_path / "new").is_dir() and not (tmp_path / "old").exists()
    assert sorted(os.listdir(tmp_path)) == ["new"]


def test_after_the_publish_a_failed_link_is_raised_and_a_failed_removal_logged(
    single_process, tmp_path, monkeypatch, caplog
):
    """What waited for the publish runs on the writer thread: a 'last' that could not be linked
    must reach the training loop (as in a synchronous save); a removal that failed costs only disk,
    and is logged."""
    io, writing = _writing_new(tmp_path, monkeypatch)

    def refused(*args):
        raise PermissionError(f"refused {args[0]}")

    monkeypatch.setattr(lightning_io, "remove_checkpoint_folder", refused)
    monkeypatch.setattr(lightning_io, "link_checkpoint", refused)
    io.remove_checkpoint(str(tmp_path / "old.ckpt"))
    io.save_checkpoint(_checkpoint(step=4), str(tmp_path / "new-last.ckpt"))  # the same step: a link
    writing.set_result(None)
    with pytest.raises(PermissionError, match="refused .*new"):
        io.wait()
    io.wait()  # raised once
    assert "could not remove the replaced checkpoint" in caplog.text


def test_a_failed_write_publishes_and_removes_nothing(single_process, tmp_path, monkeypatch):
    io, failing = _writing_new(tmp_path, monkeypatch)
    io.remove_checkpoint(str(tmp_path / "old.ckpt"))
    failing.set_exception(OSError("No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        io.wait()
    assert (tmp_path / "old").is_dir() and not (tmp_path / "new").exists()


def test_an_async_save_writes_the_tensors_as_they_were_when_copied(single_process, tmp_path):
    """Training changes the weights once wait_for_copy returns (its next update): the write, still
    going on, holds the copy."""
    from nemo_flm.checkpoint import dcp

    weights = torch.ones(10_000_000)
    io = FLMCheckpointIO(async_save=True)
    io.save_checkpoint(
        {**_checkpoint(), PIECES: [shard_piece(("model/w",), weights, None, 0, 1)]}, str(tmp_path / "a.ckpt")
    )
    io.wait_for_copy()
    weights.fill_(7.0)  # the update
    io.wait()
    read = torch.zeros_like(weights)
    dcp.load([shard_piece(("model/w",), read, None, 0, 1)], str(tmp_path / "a"))
    assert torch.equal(read, torch.ones_like(read))
