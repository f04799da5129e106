"""Identity records: stable digests, relative source paths, and change detection."""
import os

import identity


def test_record_changes_when_the_source_changes_and_digest_is_stable(tmp_path):
    video = tmp_path / "UCF-101" / "Cat" / "v_Cat_g01_c01.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x" * 10)
    first = identity.gt_record(video, tmp_path, n_frames=48, scale=2)
    assert first["source"]["path"] == "UCF-101/Cat/v_Cat_g01_c01.avi"
    assert identity.digest(first) == identity.digest(dict(reversed(list(first.items()))))
    video.write_bytes(b"y" * 11)
    os.utime(video, ns=(1, 1))
    second = identity.gt_record(video, tmp_path, n_frames=48, scale=2)
    assert second != first and identity.digest(second) != identity.digest(first)


def test_written_identity_reads_back_and_marks_the_folder_current(tmp_path):
    video = tmp_path / "v.avi"
    video.write_bytes(b"v")
    checkpoint = tmp_path / "run.pth"
    checkpoint.write_bytes(b"w")
    record = identity.output_record(video, tmp_path, 9, 2, model="asvfi", checkpoint=checkpoint,
                                    settings={"heat": 0.3})
    folder = tmp_path / "out"
    folder.mkdir()
    assert identity.read_identity(folder) is None and not identity.is_current(folder, record)
    identity.write_identity(folder, record)
    assert identity.read_identity(folder) == record and identity.is_current(folder, record)
    assert not identity.is_current(folder, {**record, "scale": 4})
    (folder / identity.IDENTITY_FILE).write_text("{not json")
    assert identity.read_identity(folder) is None
