"""publish.exclusive: one holder per result, a refusal at once with wait=False, a wait otherwise, no
lock file left (a hidden one, removed while still held); utils.atomic_leftovers finds what an
interrupted utils.atomic_path write leaves, and atomic_path syncs the data, then the rename; removed_on_failure takes the partials made with it; partial
names carry the process id and a token; publish replaces a result whole, remove_leftovers takes only
the partials of its result, remove takes links (dangling ones too) and fresh_folder starts empty."""
import fcntl
import os
import threading
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


def test_atomic_path_syncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    kept, synced = tmp_path / "run.pth", []
    real_fsync = os.fsync

    def spy(fd):
        synced.append((Path(os.readlink(f"/proc/self/fd/{fd}")), kept.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with utils.atomic_path(kept) as tmp:
        Path(tmp).write_text("done")
    assert synced == [(Path(tmp), False), (tmp_path, True)]
    synced.clear()
    with pytest.raises(OSError, match="disk full"), utils.atomic_path(kept) as tmp:
        raise OSError("disk full")
    assert synced == [] and kept.read_text() == "done"  # a failed write syncs nothing and keeps the old file


def test_removed_on_failure_skips_none_and_lets_the_error_through(tmp_path):
    """None stands for a partial that was not made (a ground truth already current): the block's own
    error reaches the caller and the partials that were made go."""
    partial = publish.fresh_folder(tmp_path / "video.partial-1")
    with pytest.raises(OSError, match="disk full"), publish.removed_on_failure(partial, None):
        raise OSError("disk full")
    assert not partial.exists()


def test_removed_on_failure_takes_the_partials_on_ctrl_c_too_and_keeps_them_on_success(tmp_path):
    partial = tmp_path / "video.partial-1.mp4"
    partial.write_bytes(b"half")
    with pytest.raises(KeyboardInterrupt), publish.removed_on_failure(partial):
        raise KeyboardInterrupt
    assert not partial.exists()
    with publish.removed_on_failure(publish.fresh_folder(tmp_path / "frames.partial-2")):
        pass
    assert (tmp_path / "frames.partial-2").is_dir()


def test_a_waiting_holder_gets_the_lock_once_the_first_lets_go(tmp_path):
    final = tmp_path / "video"
    entered, refused = threading.Event(), []

    def second_writer():
        try:
            with publish.exclusive(final):
                entered.set()
        except publish.Busy as busy:
            refused.append(busy)

    with publish.exclusive(final):
        waiter = threading.Thread(target=second_writer)
        waiter.start()
        assert not entered.wait(0.2)  # blocked while the first holds the lock
    waiter.join(10)
    assert entered.is_set() and refused == []
    assert not publish.lock_path(final).exists()


def test_a_lock_file_removed_between_open_and_flock_is_opened_again(tmp_path, monkeypatch):
    """The last holder removes its lock file as it lets go: a process that opened it just before must
    lock a new file at the lock's path, not the removed one (a third process would not see that lock)."""
    final = tmp_path / "video"
    real_flock, calls = fcntl.flock, []

    def holder_finishes_first(handle, operation):
        calls.append(operation)
        if len(calls) == 1:
            publish.lock_path(final).unlink()
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", holder_finishes_first)
    with publish.exclusive(final):
        assert len(calls) == 2 and publish.lock_path(final).is_file()


def test_publish_replaces_an_existing_result_whole_and_leaves_nothing_aside(tmp_path):
    final = tmp_path / "Cat" / "video"
    (final / "frame_00001.png").parent.mkdir(parents=True)
    (final / "frame_00001.png").write_text("old")
    (final / "frame_00002.png").write_text("old")
    new = publish.fresh_folder(publish.partial_name(final))
    (new / "frame_00001.png").write_text("new")
    assert publish.publish(new, final) == final
    assert {p.name: p.read_text() for p in final.iterdir()} == {"frame_00001.png": "new"}
    assert [p.name for p in final.parent.iterdir()] == ["video"]
    movie = tmp_path / "video.mp4"
    movie.write_text("old")
    partial = publish.partial_name(movie)
    partial.write_text("new")
    publish.publish(partial, movie)
    assert movie.read_text() == "new" and not partial.exists()


def test_leftovers_are_the_partials_of_that_result_only(tmp_path):
    """A dead run's partials of `video` (and an older run's `video.partial`) go; a partial keeps the
    result's suffix, so an MP4 is still written as one; other results' partials stay."""
    movie = tmp_path / "video.mp4"
    partial = publish.partial_name(movie)
    assert partial.suffix == ".mp4" and publish.is_partial(partial) and not publish.is_partial(movie)
    partial.write_text("left by a run that died")
    dead = publish.fresh_folder(publish.partial_name(tmp_path / "video"))
    older = publish.fresh_folder(tmp_path / "video.partial")
    other = publish.fresh_folder(publish.partial_name(tmp_path / "video_2"))
    movie.write_text("done")
    publish.remove_leftovers(movie)
    assert not partial.exists() and dead.is_dir()
    publish.remove_leftovers(tmp_path / "video")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([movie.name, other.name]) and not older.exists()
    publish.remove_leftovers(tmp_path / "absent" / "video.mp4")  # no folder: nothing to do


def test_leftovers_of_one_result_spare_the_partials_of_a_neighbour_named_with_a_dot(tmp_path):
    """`clip.v2` and `clip.v3` are two results with their own locks, so two runs may write them at
    once: cleaning up after a dead run of one must not delete the partial the other is writing."""
    writing = publish.fresh_folder(publish.partial_name(tmp_path / "clip.v3"))
    (writing / "frame_00000.png").write_bytes(b"being written")
    dead = publish.fresh_folder(publish.partial_name(tmp_path / "clip.v2"))
    publish.remove_leftovers(tmp_path / "clip.v2")
    assert not dead.exists() and (writing / "frame_00000.png").is_file()


def test_remove_takes_a_symlink_and_leaves_the_folder_it_points_to(tmp_path):
    target = tmp_path / "frames"
    (target / "frame_00001.png").parent.mkdir()
    (target / "frame_00001.png").write_text("kept")
    link = tmp_path / "video.partial-1"
    link.symlink_to(target, target_is_directory=True)
    publish.remove(link)
    assert not link.is_symlink() and (target / "frame_00001.png").read_text() == "kept"


def test_the_lock_of_a_result_is_a_hidden_file_beside_it(tmp_path):
    final = tmp_path / "Cat" / "video.mp4"
    assert publish.lock_path(final) == tmp_path / "Cat" / ".video.mp4.lock"
    with publish.exclusive(final):
        assert [p.name for p in (tmp_path / "Cat").iterdir()] == [".video.mp4.lock"]


def test_the_lock_file_goes_while_the_lock_is_still_held(tmp_path, monkeypatch):
    """Removed after letting go, a lock file could be locked by a newcomer and then deleted under it,
    leaving two holders; removed first, a newcomer that opened it sees it gone and opens a new one."""
    final, seen = tmp_path / "video", []
    real_unlink = Path.unlink

    def unlink_and_probe(path, *args, **kwargs):
        if path == publish.lock_path(final):
            with open(path, "a") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen.append("free")
                except BlockingIOError:
                    seen.append("held")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink_and_probe)
    with publish.exclusive(final):
        pass
    assert seen == ["held"] and not publish.lock_path(final).exists()


def test_a_partial_name_carries_the_process_id_and_a_token_of_its_own(tmp_path):
    final = tmp_path / "video"
    first, second = publish.partial_name(final), publish.partial_name(final)
    assert first != second and first.parent == second.parent == tmp_path
    for partial in (first, second):
        assert partial.name.startswith(f"video.partial-{os.getpid()}-") and publish.is_partial(partial)


def test_remove_takes_a_dangling_symlink_and_ignores_a_path_that_is_not_there(tmp_path):
    link = tmp_path / "video.partial-1.mp4"
    link.symlink_to(tmp_path / "gone.mp4")
    publish.remove(link)
    assert not link.is_symlink()
    publish.remove(tmp_path / "absent")
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_folder_is_empty_even_where_one_was_left(tmp_path):
    left = tmp_path / "video.partial-1"
    (left / "frame_00001.png").parent.mkdir()
    (left / "frame_00001.png").write_text("stale")
    assert publish.fresh_folder(left) == left and list(left.iterdir()) == []
    assert publish.fresh_folder(tmp_path / "new" / "video.partial-2").is_dir()
