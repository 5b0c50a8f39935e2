"""What a kill leaves beside the checkpoints is cleared before exp_manager looks: NeMo's top-k
bookkeeping takes every folder for a checkpoint, so a staging folder named for a better
validation loss would rank as the best and push a real checkpoint out."""

from nemo_flm.training.resume import clear_leftovers


def test_leftovers_are_cleared_and_a_checkpoint_moved_aside_is_put_back(tmp_path):
    folder = tmp_path / "checkpoints"
    names = [
        "flm--val_loss=2.30-step=1000-last.old",  # killed between publish's two renames: nothing under its name
        "flm--val_loss=2.10-step=2000.partial",  # a killed write, named as a better top-k
        "flm--val_loss=2.50-step=500.removing",  # a killed removal
        "flm--val_loss=2.40-step=800",  # a whole checkpoint ...
        "flm--val_loss=2.40-step=800.old",  # ... and its previous version, moved aside
    ]
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__0_0.distcp").write_bytes(name.encode())
    (folder / "flm--val_loss=2.40-step=800-unfinished").touch()  # NeMo's marker

    clear_leftovers(folder).join()  # (launch rank 0 empties the trash on a thread)

    assert sorted(p.name for p in folder.iterdir()) == [
        "flm--val_loss=2.30-step=1000-last",
        "flm--val_loss=2.40-step=800",
    ]
    restored = folder / "flm--val_loss=2.30-step=1000-last" / "__0_0.distcp"
    assert restored.read_bytes() == names[0].encode()
    assert (folder / "flm--val_loss=2.40-step=800" / "__0_0.distcp").read_bytes() == names[3].encode()
    assert not any((tmp_path / ".checkpoints-leftovers").iterdir())  # what was moved out is deleted


def test_leftovers_of_any_earlier_start_are_moved_aside_and_emptied(tmp_path, monkeypatch):
    """A leftover is renamed away at once (unique names: an interrupted earlier emptying does not
    block it), and the trash is emptied by launch rank 0 only, on a thread."""
    folder, trash = tmp_path / "checkpoints", tmp_path / ".checkpoints-leftovers"
    (trash / "flm--step=3000.partial-0" / "stale").mkdir(parents=True)  # an emptying cut short
    (folder / "flm--step=3000.partial").mkdir(parents=True)
    (folder / "flm--step=3000.partial" / "__0_0.distcp").write_bytes(b"x")
    monkeypatch.setenv("RANK", "1")
    assert clear_leftovers(folder) is None
    assert not any(folder.iterdir()) and len(list(trash.iterdir())) == 2
    monkeypatch.setenv("RANK", "0")
    clear_leftovers(folder).join()
    assert trash.is_dir() and not any(trash.iterdir())
