"""What a kill leaves beside the checkpoints is cleared before exp_manager looks: NeMo's top-k
bookkeeping takes every folder for a checkpoint, so a staging folder named for a better
validation loss would rank as the best and push a real checkpoint out."""

from nemo_flm.training.resume import _move, clear_leftovers


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

    clear_leftovers(folder)

    assert sorted(p.name for p in folder.iterdir()) == [
        "flm--val_loss=2.30-step=1000-last",
        "flm--val_loss=2.40-step=800",
    ]
    restored = folder / "flm--val_loss=2.30-step=1000-last" / "__0_0.distcp"
    assert restored.read_bytes() == names[0].encode()
    assert (folder / "flm--val_loss=2.40-step=800" / "__0_0.distcp").read_bytes() == names[3].encode()
    assert not any((tmp_path / ".checkpoints-leftovers").iterdir())  # what was moved out is deleted


def test_a_leftover_another_rank_moved_first_is_skipped(tmp_path):
    """Every rank clears before any process group exists: a rename that finds its folder gone
    (another rank moved it first) is not an error."""
    assert _move(tmp_path / "gone.partial", tmp_path / "trash" / "gone.partial-1") is False
    (tmp_path / "here.partial").mkdir()
    assert _move(tmp_path / "here.partial", tmp_path / "trash" / "here.partial-1") is True
