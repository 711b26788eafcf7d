"""One way to write: a file or a folder appears whole under its name, or the previous one stays."""

import errno

import pytest

from fusemycell.io.atomic import LocalFiles, replace_folder, temporary_sibling, writing_atomically


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_and_a_folder_are_renamed_into_place_once_written(tmp_path):
    with writing_atomically(tmp_path / "sub" / "report.txt") as temporary:
        temporary.write_text("new")
        assert not (tmp_path / "sub" / "report.txt").exists()  # nothing under the name while writing
    assert (tmp_path / "sub" / "report.txt").read_text() == "new"
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "old.npy").write_text("old")
    with writing_atomically(tmp_path / "store") as temporary:
        temporary.mkdir()
        (temporary / "new.npy").write_text("new")
        assert (tmp_path / "store" / "old.npy").exists()
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["new.npy"]  # the folder replaced as a whole
    assert _hidden(tmp_path) == [] and _hidden(tmp_path / "sub") == []


def test_a_failed_write_leaves_the_previous_version_and_no_temporary(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "old.npy").write_text("old")
    with pytest.raises(OSError, match="No space left"), writing_atomically(tmp_path / "store") as temporary:
        temporary.mkdir()
        (temporary / "half.npy").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["old.npy"]
    assert _hidden(tmp_path) == []


class _FailingRename(LocalFiles):
    """The new folder cannot be renamed into place (the old one was already moved aside)."""

    def move(self, source, target):
        if source.name.endswith(".partial"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        super().move(source, target)


def test_a_folder_whose_rename_fails_is_rolled_back(tmp_path):
    target = tmp_path / "figures"
    target.mkdir()
    (target / "old.png").write_text("old")
    new = temporary_sibling(target)
    new.mkdir()
    (new / "new.png").write_text("new")
    with pytest.raises(OSError, match="cross-device"):
        replace_folder(new, target, _FailingRename())
    assert [p.name for p in target.iterdir()] == ["old.png"]  # put back where it was
    assert not any(p.name.endswith(".old") for p in tmp_path.iterdir())
