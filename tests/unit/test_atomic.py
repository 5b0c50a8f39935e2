"""Write-then-rename: the output appears only when complete, replaces an older one, and leaves
nothing behind on failure; `out/` and `out` name the same output."""

import os

import pytest

from nemo_flm.atomic import atomic_output


@pytest.mark.parametrize("name", ["out", "out/"])
def test_directory_appears_complete_and_replaces_the_old_one(tmp_path, name):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with atomic_output(str(tmp_path / name)) as tmp:
        (tmp_path / "out" / "old.txt").read_text()  # the old output is intact while the new one is written
        assert not (tmp_path / "out" / "new.txt").exists()
        os.makedirs(tmp)
        (tmp_path / "out.partial" / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]


def test_failure_leaves_the_old_output_and_no_partial(tmp_path):
    (tmp_path / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(tmp_path / "report.json")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "report.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
