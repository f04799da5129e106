"""Identity records: stable digests, relative source paths, and change detection."""
import os

import numpy as np

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


def test_a_rewrite_of_the_same_size_is_told_apart_by_its_mtime(tmp_path):
    video = tmp_path / "v.avi"
    video.write_bytes(b"x" * 10)
    os.utime(video, ns=(1, 1))
    first = identity.gt_record(video, tmp_path, n_frames=48, scale=2)
    video.write_bytes(b"y" * 10)
    os.utime(video, ns=(2, 2))
    second = identity.gt_record(video, tmp_path, n_frames=48, scale=2)
    assert (first["source"]["mtime_ns"], second["source"]["mtime_ns"]) == (1, 2)
    assert identity.digest(second) != identity.digest(first)


def test_digests_of_a_record_stay_what_earlier_reports_stored():
    record = {"kind": "gt", "frames": 48, "scale": 2,
              "source": {"path": "UCF-101/Cat/v_Cat_g01_c01.avi", "size": 10, "mtime_ns": 1}}
    assert identity.digest(record) == "ed4d30c2a2a748a1"


def test_sources_are_named_relative_to_a_data_root_reached_through_a_link(tmp_path, monkeypatch):
    real = tmp_path / "disk" / "data"
    (real / "UCF-101").mkdir(parents=True)
    (real / "UCF-101" / "v.avi").write_bytes(b"v")
    link = tmp_path / "data"
    link.symlink_to(real, target_is_directory=True)
    for video in (link / "UCF-101" / "v.avi", real / "UCF-101" / "v.avi"):
        assert identity.gt_record(video, link, n_frames=9, scale=2)["source"]["path"] == "UCF-101/v.avi"
    (link / "run.pth").write_bytes(b"w")
    monkeypatch.chdir(link)
    record = identity.output_record("UCF-101/v.avi", ".", 9, 2, model="asvfi", checkpoint="run.pth")
    assert record["source"]["path"] == "UCF-101/v.avi"
    assert record["checkpoint"]["path"] == (real / "run.pth").as_posix()  # absolute, links resolved


def test_counts_read_from_a_table_make_a_json_record(tmp_path):
    video = tmp_path / "v.avi"
    video.write_bytes(b"v")
    record = identity.gt_record(video, tmp_path, n_frames=np.int64(48), scale=np.int64(2))
    assert (record["frames"], record["scale"]) == (48, 2) and type(record["frames"]) is int
    identity.write_identity(tmp_path, record)
    assert identity.read_identity(tmp_path) == record and len(identity.digest(record)) == 16


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
