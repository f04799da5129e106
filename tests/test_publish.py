"""publish.exclusive: one holder per result, a refusal at once with wait=False, no lock file left;
utils.atomic_leftovers finds what an interrupted utils.atomic_path write leaves; removed_on_failure
takes the partials made with it."""
from pathlib import Path

import pytest

import publish
import utils


def test_a_held_lock_refuses_a_second_holder_at_once_and_leaves_no_file_when_released(tmp_path):
    final = tmp_path / "out" / "video"
    with publish.exclusive(final):
        assert publish.lock_path(final).is_file()
        # flock locks belong to the open file, so a second open in this process is refused as another's would be
        with pytest.raises(publish.Busy) as refused, publish.exclusive(final, wait=False):
            pass
        assert refused.value.args[0] == publish.lock_path(final)
    assert not publish.lock_path(final).exists()
    with publish.exclusive(final, wait=False):  # free again
        publish.lock_path(final).unlink()  # removed by hand meanwhile: the release still succeeds
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_leftovers_are_the_temp_files_of_interrupted_writes_of_the_named_files(tmp_path):
    kept = tmp_path / "run.pth"
    with utils.atomic_path(kept) as tmp:
        left = utils.atomic_leftovers(tmp_path, r"run\.pth")
        assert left == [tmp_path / tmp.rsplit("/", 1)[-1]]  # the name atomic_path chose, while it writes
        assert utils.atomic_leftovers(tmp_path, r"other\.pth") == []
        (tmp_path / f"{Path(tmp).name}.keep").write_text("a file of its own")  # only whole names match
        assert utils.atomic_leftovers(tmp_path, r"run\.pth") == [tmp_path / Path(tmp).name]
        Path(tmp).write_text("done")
    assert utils.atomic_leftovers(tmp_path, r"run\.pth") == [] and kept.read_text() == "done"
    assert utils.atomic_leftovers(tmp_path / "absent", r"run\.pth") == []


def test_removed_on_failure_skips_none_and_lets_the_error_through(tmp_path):
    """None stands for a partial that was not made (a ground truth already current): the block's own
    error reaches the caller and the partials that were made go."""
    partial = publish.fresh_folder(tmp_path / "video.partial-1")
    with pytest.raises(OSError, match="disk full"), publish.removed_on_failure(partial, None):
        raise OSError("disk full")
    assert not partial.exists()
