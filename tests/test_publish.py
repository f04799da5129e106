"""publish.exclusive: one holder per result, a refusal at once with wait=False, no lock file left."""
import pytest

import publish


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
