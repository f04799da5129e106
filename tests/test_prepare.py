"""`python utils.py prepare` (prepare.py), split rules, the demo set and ensure_dataset."""
import json
import os
import re
import shutil
import signal

import numpy as np
import pandas as pd
import pytest

import cli
import demo_data
import prepare
import runs
import utils
import video_io


def copy_demo(demo_root, tmp_path):
    """A private, writable copy of the session demo videos (prepare writes next to them)."""
    shutil.copytree(demo_root / "demo", tmp_path / "demo")
    return tmp_path


def add_broken_videos(root):
    """A garbage .avi, an empty .mp4, a truncated copy and a valid video without audio."""
    folder = root / "demo" / "PulsingDisc"
    (folder / "v_PulsingDisc_g02_c07.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "v_PulsingDisc_g02_c08.mp4").write_bytes(b"")
    good = (folder / "v_PulsingDisc_g02_c01.avi").read_bytes()
    (folder / "v_PulsingDisc_g02_c09.avi").write_bytes(good[:2000])
    with video_io.VideoWriter(folder / "v_PulsingDisc_g03_c05.mp4", 25, 64, 48) as writer:
        for i in range(10):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    return {"corrupt": "PulsingDisc/v_PulsingDisc_g02_c07.avi", "empty": "PulsingDisc/v_PulsingDisc_g02_c08.mp4",
            "truncated": "PulsingDisc/v_PulsingDisc_g02_c09.avi", "silent": "PulsingDisc/v_PulsingDisc_g03_c05.mp4"}


def test_demo_root_split_csv_has_contract_columns_and_all_splits(demo_root):
    paths = runs.dataset_paths(demo_root, "demo")
    video_dir, split_csv, audio_dir = paths["videos"], paths["split_csv"], paths["audio"]
    table = pd.read_csv(split_csv)
    assert list(table.columns) == prepare.SPLIT_COLUMNS
    assert set(table["split"]) == {"train", "val", "test"}
    assert len(table) == 8 and set(table["category"]) == {"PulsingDisc", "BouncingBall"}
    assert (table["n_frames"] == 48).all() and (table["fps"] == 25).all() and table["has_audio"].all()
    assert (table["audio_rate"] == demo_data.DEMO_AUDIO_RATE).all() and np.allclose(table["duration"], 48 / 25)
    for relative in table["path"]:
        assert (video_dir / relative).is_file()
        audio = np.load(runs.audio_cache_path(audio_dir, relative))
        assert audio.dtype == np.float32 and abs(len(audio) / 16000 - 48 / 25) < 1 / 25
        np.testing.assert_array_equal(audio, video_io.read_audio(video_dir / relative))


def test_prepare_reports_and_excludes_broken_and_audio_less_videos(demo_root, tmp_path, capsys):
    root = copy_demo(demo_root, tmp_path)
    broken = add_broken_videos(root)
    prepare.main(["prepare", "--data-root", str(root), "--dataset", "demo"])
    printed = capsys.readouterr().out
    table = pd.read_csv(root / "demo_split.csv")
    assert len(table) == 8 and not set(broken.values()) & set(table["path"])
    for name in broken.values():
        assert name in printed
    assert "no audio track" in printed and "empty" in printed and "unreadable" in printed

    summary = prepare.prepare(root, "demo", require_audio=False, show_progress=False)
    table = pd.read_csv(root / "demo_split.csv")
    kept = table.set_index("path")
    assert kept.loc[broken["silent"], "has_audio"] == False  # noqa: E712 (numpy bool)
    assert kept.loc[broken["silent"], "audio_rate"] == 0 and kept.loc[broken["silent"], "n_frames"] == 10
    excluded = dict(summary["excluded"])
    assert set(excluded) == {broken["corrupt"], broken["empty"], broken["truncated"]}
    assert excluded[broken["empty"]] == "empty file (0 bytes)"
    assert excluded[broken["corrupt"]].startswith("unreadable: cannot open as a video/audio file")  # path said once
    assert summary["without_audio"] == [broken["silent"]]


def test_hidden_files_are_not_taken_for_videos(demo_root, tmp_path):
    """macOS leaves `._<name>` files beside copied videos: they are not listed, not even as excluded."""
    root = copy_demo(demo_root, tmp_path)
    (root / "demo" / "PulsingDisc" / "._v_PulsingDisc_g02_c01.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert (summary["videos"], summary["kept"], summary["excluded"]) == (8, 8, [])
    assert not pd.read_csv(root / "demo_split.csv")["path"].str.contains("/[.]").any()


def test_no_group_is_in_two_splits(demo_root):
    table = pd.read_csv(demo_root / "demo_split.csv")
    groups = {split: set(table[table["split"] == split]["path"].map(runs.video_group))
              for split in ("train", "val", "test")}
    assert groups["train"].isdisjoint(groups["val"]) and groups["train"].isdisjoint(groups["test"])
    assert groups["val"].isdisjoint(groups["test"])


def test_group_split_of_ucf_names_mirrors_the_official_layout():
    """25 groups: the first 5 group numbers are test, the last 2 of the remaining 20 are val."""
    names = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in ("Drumming", "PlayingCello") for g in range(1, 26)
             for k in range(1, 4)]
    splits = prepare.assign_splits(names)
    by_group = {}
    for name, split in splits.items():
        by_group.setdefault(runs.video_group(name), set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    assert {g for g, s in by_group.items() if s == {"test"}} == set(range(1, 6))
    assert {g for g, s in by_group.items() if s == {"val"}} == {24, 25}
    assert prepare.assign_splits(list(reversed(names))) == splits  # order of discovery does not matter


def test_names_without_groups_are_their_own_groups():
    names = [f"clips/video_{i}.mp4" for i in range(20)]
    splits = prepare.assign_splits(names)
    counts = pd.Series(splits).value_counts()
    assert counts["test"] == 4 and counts["val"] == 2 and counts["train"] == 14


def test_videos_of_a_single_group_all_train():
    """One group cannot be split without putting one group in two splits: it all stays train."""
    names = [f"Cat/v_Cat_g01_c{k:02d}.avi" for k in range(1, 6)]
    assert set(prepare.assign_splits(names).values()) == {"train"}


def test_official_lists_are_read_with_either_slash_and_blank_lines_and_only_as_a_pair(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("Cat\\v_Cat_g08_c01.avi 1\n\n  \nCat/v_Cat_g09_c01.avi 1\n\n")
    assert prepare.read_official_split(lists) is None  # no test list: split by group instead
    (lists / "testlist01.txt").write_text("\nCAT/v_Cat_g01_c01.avi\n")
    assert prepare.read_official_split(lists) == ({"cat/v_cat_g08_c01.avi", "cat/v_cat_g09_c01.avi"},
                                                  {"cat/v_cat_g01_c01.avi"})


def test_official_split_lists_are_honoured(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    # Real format: train lines carry a class index, test lines do not; folder case may differ.
    train = [f"PulsingDisc/v_PulsingDisc_g{g:02d}_c01.avi {1}" for g in (1, 2, 3)]
    train += [f"bouncingball/v_BouncingBall_g{g:02d}_c01.avi {2}" for g in (1, 2, 3)]
    test = ["PulsingDisc/v_PulsingDisc_g04_c01.avi", "BouncingBall/v_BouncingBall_g04_c01.avi"]
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    (lists / "classInd.txt").write_text("1 PulsingDisc\n2 BouncingBall\n")
    summary = prepare.prepare(root, "demo", show_progress=False)
    table = pd.read_csv(root / "demo_split.csv").set_index("path")
    assert summary["official_split"]
    assert sorted(table.index[table["split"] == "test"]) == sorted(test)
    assert set(table[table["split"] == "val"].index.map(runs.video_group)) == {3}
    assert set(table[table["split"] == "train"].index.map(runs.video_group)) == {1, 2}
    assert len(table) == 8


def test_videos_missing_from_official_lists_are_reported(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    train = ["PulsingDisc/v_PulsingDisc_g02_c01.avi 1", "PulsingDisc/v_PulsingDisc_g03_c01.avi 1"]
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("PulsingDisc/v_PulsingDisc_g01_c01.avi\n")
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert summary["kept"] == 3
    reasons = dict(summary["excluded"])
    assert reasons["BouncingBall/v_BouncingBall_g01_c01.avi"] == "not in the official split 1 lists"


def test_prepare_is_incremental(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    broken = add_broken_videos(root)
    first = prepare.prepare(root, "demo", show_progress=False)
    assert first["reused"] == 0
    csv_before = (root / "demo_split.csv").read_text()
    second = prepare.prepare(root, "demo", show_progress=False)
    assert second["reused"] == second["videos"] == 12
    assert (root / "demo_split.csv").read_text() == csv_before
    assert second["excluded"] == first["excluded"]

    changed = root / "demo" / "BouncingBall" / "v_BouncingBall_g02_c01.avi"
    demo_data.make_demo_clip(changed, seed=99, kinds=("impacts",), frames=30)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    os.remove(runs.audio_cache_path(root / "demo_audio16k", "PulsingDisc/v_PulsingDisc_g03_c01.avi"))
    (root / "demo" / broken["corrupt"]).unlink()
    third = prepare.prepare(root, "demo", show_progress=False)
    assert third["reused"] == 11 - 2 and third["videos"] == 11
    table = pd.read_csv(root / "demo_split.csv").set_index("path")
    assert table.loc["BouncingBall/v_BouncingBall_g02_c01.avi", "n_frames"] == 30
    assert runs.audio_cache_path(root / "demo_audio16k", "PulsingDisc/v_PulsingDisc_g03_c01.avi").is_file()


def test_a_file_touched_a_missing_frame_index_or_a_damaged_state_file_is_examined_again(demo_root, tmp_path):
    """Same size but another mtime is another file; a frame index that went missing is written again;
    a state file that does not parse is no state at all."""
    root = copy_demo(demo_root, tmp_path)
    assert prepare.prepare(root, "demo", show_progress=False)["reused"] == 0
    touched = root / "demo" / "BouncingBall" / "v_BouncingBall_g02_c01.avi"
    os.utime(touched, ns=(1, 1))
    index = runs.frame_index_path(root / "demo_audio16k", "PulsingDisc/v_PulsingDisc_g03_c01.avi")
    index.unlink()
    assert prepare.prepare(root, "demo", show_progress=False)["reused"] == 8 - 2
    assert index.is_file() and json.loads(index.read_text())["key"] == prepare.prepare_key(
        root / "demo" / "PulsingDisc" / "v_PulsingDisc_g03_c01.avi")
    assert prepare.prepare(root, "demo", show_progress=False)["reused"] == 8
    (root / ".demo_prepare.json").write_text('{"PulsingDisc/v_Puls')  # cut off mid-write
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert (summary["reused"], summary["kept"]) == (0, 8)


def test_a_changed_video_has_its_frames_extracted_again(demo_root, tmp_path):
    """The frames of the file prepare extracted before are not the new file's, even when the new one
    has as many frames: training would read the old video's pictures."""
    root = copy_demo(demo_root, tmp_path)
    for path in (root / "demo").glob("*/*.avi"):
        if "g01" not in path.name:
            path.unlink()
    prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    relative = "BouncingBall/v_BouncingBall_g01_c01"
    changed = root / "demo" / f"{relative}.avi"
    demo_data.make_demo_clip(changed, seed=99, kinds=("impacts",), frames=48)
    os.utime(changed, ns=(1, 1))
    prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    frames = video_io.read_png_frames(runs.dataset_paths(root, "demo")["frames"] / relative)
    np.testing.assert_array_equal(frames, video_io.read_frames(changed, 0, 48))


def test_a_video_whose_audio_fails_to_decode_is_kept_without_audio(demo_root, tmp_path, monkeypatch):
    root = copy_demo(demo_root, tmp_path)
    broken = "PulsingDisc/v_PulsingDisc_g02_c01.avi"
    real_read_audio = prepare.read_audio

    def read_audio(video, rate):
        if video.name == broken.split("/")[1]:
            raise video_io.MediaError(f"{video}: invalid data in the audio stream")
        return real_read_audio(video, rate)
    monkeypatch.setattr(prepare, "read_audio", read_audio)
    summary = prepare.prepare(root, "demo", require_audio=False, show_progress=False)
    assert summary["without_audio"] == [broken] and summary["kept"] == 8
    row = pd.read_csv(root / "demo_split.csv").set_index("path").loc[broken]
    assert not row["has_audio"] and row["audio_rate"] == 0
    assert not runs.audio_cache_path(root / "demo_audio16k", broken).exists()


def test_a_video_of_no_decodable_frame_is_excluded_with_its_reason(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    empty = root / "demo" / "PulsingDisc" / "v_PulsingDisc_g03_c06.avi"
    with video_io.VideoWriter(empty, 25, 64, 48, audio=(np.zeros(16000, np.float32), utils.AUDIO_RATE)):
        pass  # a header, a second of sound, no frame
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert ("PulsingDisc/v_PulsingDisc_g03_c06.avi", "empty: no frame decodes") in summary["excluded"]
    assert summary["kept"] == 8


def test_videos_outside_any_category_folder_have_an_empty_category(demo_root, tmp_path):
    (tmp_path / "Flat").mkdir()
    shutil.copy(demo_root / "demo/PulsingDisc/v_PulsingDisc_g01_c01.avi", tmp_path / "Flat" / "v_Flat_g01_c01.avi")
    prepare.prepare(tmp_path, dataset_dir="Flat", show_progress=False)
    table = pd.read_csv(tmp_path / "Flat_split.csv", keep_default_na=False)
    assert table[["path", "category"]].values.tolist() == [["v_Flat_g01_c01.avi", ""]]


def test_a_one_frame_video_is_excluded_with_its_reason(demo_root, tmp_path):
    """A still (one frame, with sound) cannot be interpolated, trained on or tested: prepare names it,
    where it used to land in a split for training to skip later."""
    root = copy_demo(demo_root, tmp_path)
    still = root / "demo" / "PulsingDisc" / "v_PulsingDisc_g03_c06.mp4"
    with video_io.VideoWriter(still, 25, 64, 48, audio=(np.zeros(16000, np.float32), utils.AUDIO_RATE)) as writer:
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert ("PulsingDisc/v_PulsingDisc_g03_c06.mp4", "only 1 frame decodes; interpolation needs at least 2") \
        in summary["excluded"]
    assert "PulsingDisc/v_PulsingDisc_g03_c06.mp4" not in set(pd.read_csv(root / "demo_split.csv")["path"])


def test_extract_frames_matches_decoded_frames(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    for path in (root / "demo").glob("*/*.avi"):
        if "g01" not in path.name:
            path.unlink()
    prepare.main(["prepare", "--data-root", str(root), "--dataset", "demo", "--extract-frames"])
    relative = "BouncingBall/v_BouncingBall_g01_c01"
    frames = video_io.read_png_frames(runs.dataset_paths(root, "demo")["frames"] / relative)
    np.testing.assert_array_equal(frames, video_io.read_frames(root / "demo" / f"{relative}.avi", 0, 48))


def test_frames_are_extracted_only_for_videos_the_split_keeps(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    silent = add_broken_videos(root)["silent"].removesuffix(".mp4")
    frames = runs.dataset_paths(root, "demo")["frames"]
    summary = prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    assert not (frames / silent).exists() and (frames / "BouncingBall/v_BouncingBall_g01_c01").is_dir()
    summary = prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    assert summary["reused"] == len(list((root / "demo").glob("*/*.*")))  # nothing re-examined
    prepare.prepare(root, "demo", require_audio=False, extract_frames=True, show_progress=False)
    assert len(video_io.read_png_frames(frames / silent)) == 10


def test_a_stop_during_frame_extraction_takes_its_partial_folder_with_it(demo_root, tmp_path, monkeypatch):
    """SIGTERM (cli.Stopped) or Ctrl-C while a video's frames are written: the partial folder goes
    before the stop reaches the user; only a kill -9 leaves one (for the next run to remove)."""
    root = copy_demo(demo_root, tmp_path)
    for path in (root / "demo").glob("*/*.avi"):
        if "g01" not in path.name:
            path.unlink()
    real_write = prepare.write_png_frames

    def stopped_after_three_frames(folder, frames):
        real_write(folder, (frame for _, frame in zip(range(3), frames)))
        raise cli.Stopped(signal.SIGTERM)

    monkeypatch.setattr(prepare, "write_png_frames", stopped_after_three_frames)
    with pytest.raises(cli.Stopped):
        prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    frames = runs.dataset_paths(root, "demo")["frames"]
    assert not [path for path in frames.rglob("*") if ".partial-" in path.name or path.suffix == ".png"]


def test_frames_cut_off_by_a_killed_extraction_are_extracted_again(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    for path in (root / "demo").glob("*/*.avi"):
        if "g01" not in path.name:
            path.unlink()
    frames = runs.dataset_paths(root, "demo")["frames"]
    prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    cut, unpublished = frames / "BouncingBall/v_BouncingBall_g01_c01", frames / "PulsingDisc/v_PulsingDisc_g01_c01"
    last = cut / "frame_00047.png"
    last.write_bytes(last.read_bytes()[:100])  # killed while writing the last frame in place
    unpublished.rename(unpublished.with_name(f"{unpublished.name}.partial-1-abcdef12"))  # killed before publishing
    summary = prepare.prepare(root, "demo", extract_frames=True, show_progress=False)
    assert summary["reused"] == 0
    for folder in (cut, unpublished):
        np.testing.assert_array_equal(video_io.read_png_frames(folder),
                                      video_io.read_frames(root / "demo" / f"{folder.relative_to(frames)}.avi", 0, 48))
    assert not [path for path in frames.rglob("*") if ".partial-" in path.name]


def test_a_prepared_folder_of_videos_trains_runs_and_scores_by_its_name(demo_root, tmp_path, capsys):
    """`prepare --dataset-dir MyVideos`, then `--dataset MyVideos` in main.py, inference.py, evaluate.py."""
    import evaluate
    import inference
    import main
    shutil.copytree(demo_root / "demo", tmp_path / "MyVideos")
    assert prepare.main(["prepare", "--data-root", str(tmp_path), "--dataset-dir", "MyVideos"]) == 0
    data = ["--data-root", str(tmp_path), "--dataset", "MyVideos", "--device", "cpu"]
    assert main.main([*data, "--width", "0.125", "--crop", "32", "--batch-size", "2", "--epochs", "1",
                      "--limit-steps", "1", "--val-windows", "2", "--workers", "0", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "weights/asvfi/adamw_6e-4.pth").is_file()
    assert inference.main([*data, "--model", "blend", "-s", "2", "--limit", "1"]) == 0
    assert evaluate.main([*data, "--model", "blend", "-s", "2", "--limit", "1", "--metrics", "psnr", "--offline",
                          "--out-dir", str(tmp_path)]) == 0
    assert "1 of 1" in capsys.readouterr().out
    assert main.main(["--data-root", str(tmp_path), "--dataset", "Elsewhere", "--device", "cpu",
                      "--out-dir", str(tmp_path / "elsewhere")]) == 1
    assert "--dataset-dir Elsewhere" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()  # a run that stops at the start leaves no folders


def test_no_empty_split_warning_when_no_video_was_kept():
    """With nothing kept the excluded list says why; a warning about empty splits would add nothing."""
    summary = {"csv": "demo_split.csv", "videos": 1, "kept": 0, "reused": 0, "official_split": False,
               "splits": {"train": 0, "val": 0, "test": 0}, "without_audio": [], "truncated": [],
               "excluded": [("A/v.avi", "empty file (0 bytes)")]}
    assert prepare.format_summary(summary) == ("demo_split.csv: 0 of 1 videos (train 0, val 0, test 0); 0 reused "
                                               "from the last run; split: by group\nexcluded: 1\n"
                                               "  A/v.avi: empty file (0 bytes)")


def test_a_split_left_empty_is_warned_about(demo_root, tmp_path):
    folder = tmp_path / "Two" / "Solo"
    folder.mkdir(parents=True)
    for group in (1, 2):  # two groups: one goes to test, one to train, none is left for val
        shutil.copy(demo_root / "demo/PulsingDisc/v_PulsingDisc_g01_c01.avi", folder / f"v_Solo_g0{group}_c01.avi")
    summary = prepare.prepare(tmp_path, dataset_dir="Two", show_progress=False)
    assert summary["splits"]["train"] == summary["splits"]["test"] == 1 and not summary["splits"].get("val")
    assert "warning: no val videos: main.py needs train and val" in prepare.format_summary(summary)
    whole = prepare.prepare(copy_demo(demo_root, tmp_path / "whole"), "demo", show_progress=False)
    assert "warning" not in prepare.format_summary(whole)


def test_video_names_never_nest_one_output_inside_another():
    names = runs.video_names(["A/x.mp4", "A/x/y.mp4", "A.mp4", "B/v.avi", "B/v.mp4", "B/w.avi"])
    assert names == {"A/x.mp4": "x_mp4", "A/x/y.mp4": "y", "A.mp4": "A_mp4",  # beside folders x/ and A/
                     "B/v.avi": "v_avi", "B/v.mp4": "v_mp4", "B/w.avi": "w"}


@pytest.mark.parametrize("paths, message", [
    (["B/v.avi", "B/v.AVI"], "B/v.avi and B/v.AVI: both videos would be kept under the name B/v_avi; rename one"),
    (["B/v.avi", "B/v.mp4", "B/v_avi.mkv"], "B/v.avi and B/v_avi.mkv: both videos would be kept under the name "
                                            "B/v_avi"),
    (["A/x.mp4", "A/x/y.mp4", "A/x_mp4/z.mp4"], "A/x_mp4/z.mp4: its folder A/x_mp4/z would lie inside A/x_mp4, "
                                                "the folder of A/x.mp4; rename one of them")])
def test_video_names_that_would_merge_or_nest_two_videos_folders_are_refused_naming_both(paths, message):
    with pytest.raises(utils.ASVFIError, match=re.escape(message)):
        runs.video_names(paths)


def test_prepare_refuses_a_folder_whose_videos_names_clash_before_writing_anything(demo_root, tmp_path):
    folder = tmp_path / "Clash" / "Cat"
    folder.mkdir(parents=True)
    for suffix in ("avi", "AVI"):
        shutil.copy(demo_root / "demo/PulsingDisc/v_PulsingDisc_g01_c01.avi", folder / f"v_Cat_g01_c01.{suffix}")
    with pytest.raises(utils.ASVFIError, match=re.escape(f"{tmp_path / 'Clash'}: Cat/v_Cat_g01_c01.AVI and "
                                                         f"Cat/v_Cat_g01_c01.avi: both videos")):
        prepare.prepare(tmp_path, dataset_dir="Clash", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Clash"]


def test_videos_of_one_stem_in_different_folders_keep_their_stems():
    names = runs.video_names(["Cat/v_X_g01_c01.avi", "Dog/v_X_g01_c01.avi", "Dog/v_X_g01_c01.mp4"])
    assert names == {"Cat/v_X_g01_c01.avi": "v_X_g01_c01",  # its folder holds no other v_X_g01_c01
                     "Dog/v_X_g01_c01.avi": "v_X_g01_c01_avi", "Dog/v_X_g01_c01.mp4": "v_X_g01_c01_mp4"}


def test_a_video_named_apart_from_its_stem_keeps_its_own_caches_and_folders(tmp_path):
    audio = tmp_path / "demo_audio16k"
    for relative, name in (("B/v.avi", "v_avi"), ("B/v.mp4", "v_mp4")):
        assert runs.audio_cache_path(audio, relative, name) == audio / "B" / f"{name}.npy"
        assert runs.frame_index_path(audio, relative, name) == audio / "B" / f"{name}.frames.json"
        assert runs.video_folder(tmp_path / "GT", relative, name) == tmp_path / "GT" / "B" / name
    assert runs.frame_index_path(audio, "B/w.avi") == audio / "B" / "w.frames.json"


def test_custom_dataset_dir_gets_its_own_csv_and_cache(demo_root, tmp_path):
    shutil.copytree(demo_root / "demo", tmp_path / "MyVideos")
    summary = prepare.prepare(tmp_path, dataset_dir="MyVideos", show_progress=False)
    assert summary["kept"] == 8 and (tmp_path / "MyVideos_split.csv").is_file()
    assert (tmp_path / "MyVideos_audio16k" / "PulsingDisc" / "v_PulsingDisc_g01_c01.npy").is_file()


def test_prepare_without_the_video_folder_says_what_to_do(tmp_path):
    with pytest.raises(utils.ASVFIError, match="UCF-101"):
        prepare.prepare(tmp_path, "ucf101", show_progress=False)


def test_ensure_dataset_demo_reuses_an_existing_set(demo_root, monkeypatch):
    monkeypatch.setattr(prepare, "build_demo", lambda *a, **k: pytest.fail("the demo exists already"))
    assert prepare.ensure_dataset(demo_root, "demo") == runs.dataset_paths(demo_root, "demo")


def test_ensure_dataset_demo_generates_on_first_use(tmp_path, monkeypatch):
    real_build_demo = prepare.build_demo
    tiny = dict(categories=["PulsingDisc"], groups=3, clips=1, frames=12, size=(64, 48), show_progress=False)
    monkeypatch.setattr(prepare, "build_demo", lambda root, **options: real_build_demo(root, **tiny))
    paths = prepare.ensure_dataset(tmp_path / "data", "demo")
    video_dir, split_csv, audio_dir = paths["videos"], paths["split_csv"], paths["audio"]
    assert video_dir == tmp_path / "data" / "demo" and len(pd.read_csv(split_csv)) == 3
    assert len(list(audio_dir.rglob("*.npy"))) == 3


def test_ensure_demo_reuses_a_demo_of_the_asked_size_and_refuses_another(demo_root, monkeypatch):
    monkeypatch.setattr(prepare, "build_demo", lambda *a, **k: pytest.fail("the demo exists already"))
    size = prepare.parse_size("320x240")
    assert prepare.ensure_demo(demo_root, size=size, frames=48) == runs.dataset_paths(demo_root, "demo")
    with pytest.raises(prepare.DemoMismatchError) as refused:
        prepare.ensure_demo(demo_root, size=prepare.parse_size("160x120"))
    message = str(refused.value)
    assert message.startswith(f"{demo_root / 'demo'}: the demo there is 320x240, 48 frames, not 160x120;")
    assert "another --data-root" in message and f"delete {demo_root / 'demo'}" in message
    with pytest.raises(prepare.DemoMismatchError, match="48 frames, not 320x240, 12 frames"):
        prepare.ensure_demo(demo_root, size=size, frames=12)


def test_a_demo_of_the_same_width_but_another_height_is_refused(demo_root):
    with pytest.raises(prepare.DemoMismatchError, match="the demo there is 320x240, 48 frames, not 320x120"):
        prepare.ensure_demo(demo_root, size=prepare.parse_size("320x120"))


def test_audio_ablation_at_another_size_than_the_demo_there_stops_before_training(demo_root, monkeypatch):
    import tools
    ablation = tools.load_bench("audio_ablation")
    monkeypatch.setattr(ablation, "train_arms", lambda args: pytest.fail("trained on a demo of another size"))
    with pytest.raises(prepare.DemoMismatchError, match="320x240, 48 frames, not 160x120"):
        ablation.main(["--data-root", str(demo_root), "--size", "160x120"])


@pytest.mark.parametrize("text", ["320", "320x", "axb", "0x240", "320x-2", "320x240x3"])
def test_a_bad_size_is_a_usage_error_naming_the_flag(text, capsys):
    with pytest.raises(SystemExit) as stopped:
        prepare.build_parser().parse_args(["make-demo", "--size", text])
    assert stopped.value.code == 2
    assert "argument --size" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["demo", "audio_ablation", "pipeline"])
def test_every_size_flag_of_the_demo_tools_reads_wxh(bench, capsys):
    import tools
    parse_args = tools.load_bench(bench).parse_args
    assert parse_args(["--size", "64x48"]).size == (64, 48)
    with pytest.raises(SystemExit):
        parse_args(["--size", "64"])
    assert "expected WxH, e.g. 320x240" in capsys.readouterr().err


def test_help_and_docstring_name_the_documented_entry_point(capsys):
    with pytest.raises(SystemExit):
        prepare.build_parser().parse_args(["prepare", "--help"])
    assert capsys.readouterr().out.startswith("usage: utils.py prepare ")
    assert "python utils.py prepare --data-root" in prepare.__doc__ and "prepare.py prepare" not in prepare.__doc__


def test_ensure_dataset_ucf101_missing_tells_the_user_to_prepare(tmp_path):
    with pytest.raises(utils.ASVFIError, match="python utils.py prepare"):
        prepare.ensure_dataset(tmp_path, "ucf101")


def test_ensure_dataset_names_the_split_csv_when_only_it_is_missing(tmp_path):
    (tmp_path / "MyVideos").mkdir()
    csv = re.escape(str(tmp_path / "MyVideos_split.csv"))
    with pytest.raises(utils.ASVFIError, match=rf"^{csv} not found: put the videos in .*--dataset-dir MyVideos`$"):
        prepare.ensure_dataset(tmp_path, "MyVideos")


def test_default_dataset_is_ucf101_only_when_it_is_there(tmp_path):
    assert runs.default_dataset(tmp_path) == "demo"
    (tmp_path / "UCF-101").mkdir()
    assert runs.default_dataset(tmp_path) == "ucf101"


def test_a_ucf101_split_csv_alone_makes_ucf101_the_default(tmp_path):
    """Frames extracted, videos moved elsewhere: the split CSV still says the data set is there."""
    (tmp_path / "UCF-101_split.csv").write_text("path,split\n")
    assert runs.default_dataset(tmp_path) == "ucf101"


def test_group_numbers_are_read_in_any_letter_case():
    assert runs.video_group("Cat/v_Cat_g03_c01.avi") == 3
    assert runs.video_group("Cat/V_CAT_G12_C02.AVI") == 12
    assert runs.video_group("clips/holiday.mp4") == "holiday"  # no group: a group of its own


def test_a_dataset_folder_name_is_one_plain_visible_name():
    assert runs.is_folder_name("MyVideos")
    for bad in ("", ".", "..", ".hidden", "a/b", "/MyVideos"):
        assert not runs.is_folder_name(bad), bad


def test_a_path_read_from_a_table_must_name_a_file_under_its_root(tmp_path):
    assert runs.relative_path_problem("Cat/v_Cat_g01_c01.avi") is None
    for text, problem in (("", "empty path"), ("  ", "empty path"), ("/data/v.avi", "absolute path"),
                          ("Cat/../../v.avi", "'..' in the path")):
        assert runs.relative_path_problem(text).startswith(problem), text
    with pytest.raises(utils.ASVFIError, match="split CSV path '': empty path; fix or remove it"):
        runs.confined(tmp_path, "", "split CSV path")


def test_a_root_reached_through_a_link_confines_the_files_under_it(tmp_path):
    real, link = tmp_path / "disk" / "videos", tmp_path / "videos"
    (real / "Cat").mkdir(parents=True)
    (real / "Cat" / "v.mp4").write_bytes(b"x")
    link.symlink_to(real, target_is_directory=True)
    assert runs.confined(link, "Cat/v.mp4") == link / "Cat" / "v.mp4"
    with pytest.raises(utils.ASVFIError, match=r"split CSV path '/etc/hosts': absolute path"):
        runs.confined(link, "/etc/hosts", "split CSV path")
    with pytest.raises(utils.ASVFIError, match=r"'Cat/\.\./Cat/v\.mp4': '\.\.' in the path"):
        runs.confined(link, "Cat/../Cat/v.mp4")  # even one that comes back under the root


def test_a_failed_cache_write_stops_prepare_and_changes_nothing(demo_root, tmp_path, monkeypatch):
    import errno
    import shutil
    shutil.copytree(demo_root / "demo", tmp_path / "demo")
    prepare.prepare(tmp_path, "demo", show_progress=False)
    csv, state = tmp_path / "demo_split.csv", tmp_path / ".demo_prepare.json"
    before = csv.read_bytes(), state.read_bytes()
    shutil.rmtree(tmp_path / "demo_audio16k")  # the cache must be written again

    def disk_full(tmp, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    monkeypatch.setattr(prepare, "_save_npy", disk_full)
    with pytest.raises(prepare.CacheWriteError, match="No space left on device.*split CSV was left unchanged"):
        prepare.prepare(tmp_path, "demo", show_progress=False)
    assert (csv.read_bytes(), state.read_bytes()) == before


def truncated_mp4(path, frames=100, keep=0.3):
    """A 64x48 MP4 with audio, its index first (faststart, as downloaded files often are), cut to
    `keep` of its bytes: it still opens and decodes, to far fewer frames than its header declares."""
    import av
    full = path.with_name(f"full_{path.name}")
    wave = (0.2 * np.sin(np.arange(utils.AUDIO_RATE * frames // 25) / 5)).astype(np.float32)
    rng = np.random.default_rng(0)
    with video_io.VideoWriter(full, 25, 64, 48, audio=(wave, utils.AUDIO_RATE)) as writer:
        for _ in range(frames):
            writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    faststart = path.with_name(f"faststart_{path.name}")
    with av.open(str(full)) as source, av.open(str(faststart), "w", format="mp4",
                                                options={"movflags": "faststart"}) as target:
        streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
    data = faststart.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    full.unlink(), faststart.unlink()
    return path


def truncated_avi(path, frames=100, keep=0.3):
    """A 64x48 AVI cut to `keep` of its bytes, as a broken UCF-101 download: its header still counts
    every frame, while FFmpeg's duration follows what is left."""
    wave = (0.2 * np.sin(np.arange(utils.AUDIO_RATE * frames // 25) / 5)).astype(np.float32)
    with video_io.VideoWriter(path, 25, 64, 48, audio=(wave, utils.AUDIO_RATE)) as writer:
        for value in np.random.default_rng(0).integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8):
            writer.write(value)
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    return path


@pytest.mark.parametrize("make, relative", [(truncated_mp4, "PulsingDisc/v_PulsingDisc_g04_c01.mp4"),
                                            (truncated_avi, "PulsingDisc/v_PulsingDisc_g04_c02.avi")])
def test_truncated_video_is_kept_but_marked_with_the_reason(demo_root, tmp_path, make, relative):
    root = copy_demo(demo_root, tmp_path)
    make(root / "demo" / relative)
    summary = prepare.prepare(root, "demo", show_progress=False)
    assert [path for path, _ in summary["truncated"]] == [relative]
    reason = dict(summary["truncated"])[relative]
    assert "4.00 s" in reason and "truncated" in reason
    assert f"{relative}: only" in prepare.format_summary(summary)


def windows_of(root):
    """Every evaluation window of the demo's train split (first two per video), as dicts."""
    import dataset
    data = dataset.VFIWindows(root, "demo", "train", 2, dataset.Sampling(max_windows_per_video=2))
    return [data[i] for i in range(len(data))]


def test_prepared_frame_index_spares_training_the_scan_and_follows_file_changes(demo_root, tmp_path, monkeypatch):
    root = copy_demo(demo_root, tmp_path)
    prepare.prepare(root, "demo", show_progress=False)
    audio_dir = root / "demo_audio16k"
    stored = sorted(audio_dir.rglob("*.frames.json"))
    assert len(stored) == 8
    hidden = tmp_path / "hidden"
    shutil.move(audio_dir, hidden)  # without the index (and the audio cache): scanned and decoded
    shutil.copytree(hidden, audio_dir, ignore=shutil.ignore_patterns("*.frames.json"))
    video_io._scan_video.cache_clear()
    scanned = windows_of(root)
    shutil.rmtree(audio_dir), shutil.move(hidden, audio_dir)

    def no_scan(*args):
        raise AssertionError("a video was scanned although prepare stored its frame index")
    video_io._scan_video.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(video_io, "_scan_video", no_scan)
        indexed = windows_of(root)
    assert len(indexed) == len(scanned) > 0
    for a, b in zip(indexed, scanned):
        assert a["video"] == b["video"] and torch_equal(a, b, ("inputs", "targets", "audio", "audio_times", "indices"))

    relative = "BouncingBall/v_BouncingBall_g02_c01.avi"
    index_file = runs.frame_index_path(audio_dir, relative)
    stale = json.loads(index_file.read_text())
    changed = root / "demo" / relative
    demo_data.make_demo_clip(changed, seed=99, kinds=("impacts",), frames=30)
    os.utime(changed, ns=(1, 1))
    assert len(video_io.frame_times(changed, video_io.frame_index(changed, stale))) == 30  # stale: scanned
    prepare.prepare(root, "demo", show_progress=False)
    rebuilt = json.loads(index_file.read_text())
    assert len(rebuilt["pts"]) == 30 and rebuilt["key"] == [changed.stat().st_size, 1]


def test_a_video_changed_since_prepare_stops_training_before_the_first_epoch(demo_root, tmp_path):
    """Its split CSV row (frame count) and cached audio describe the file prepare read: rather than
    fail when a window reaches it, the data set refuses at once, naming it; prepare again fixes it."""
    import dataset
    root = copy_demo(demo_root, tmp_path)
    prepare.prepare(root, "demo", show_progress=False)
    relative = "BouncingBall/v_BouncingBall_g02_c01.avi"
    changed = root / "demo" / relative
    demo_data.make_demo_clip(changed, seed=99, kinds=("impacts",), frames=30)
    os.utime(changed, ns=(1, 1))
    paths = runs.dataset_paths(root, "demo")
    assert prepare.changed_since_prepare(paths, [relative, "PulsingDisc/v_PulsingDisc_g03_c01.avi"]) == [relative]
    split = pd.read_csv(paths["split_csv"]).set_index("path").loc[relative, "split"]
    refusal = f"1 video\\(s\\) changed since prepare.*{changed}.*re-run prepare"
    with pytest.raises(dataset.DataError, match=refusal) as refused:
        dataset.VFIWindows(root, "demo", split, 2, dataset.Sampling(train=True))
    assert str(refused.value).endswith(f"`python utils.py prepare --data-root {root} --dataset-dir demo`")
    prepare.prepare(root, "demo", show_progress=False)
    assert len(dataset.VFIWindows(root, "demo", split, 2, dataset.Sampling(train=True))) > 0


def test_videos_prepare_has_no_record_of_or_whose_file_is_gone_are_not_changed(demo_root, tmp_path):
    """Frames extracted, video deleted: training from the frames goes on; a video added after prepare
    has no split CSV row to contradict."""
    root = copy_demo(demo_root, tmp_path)
    prepare.prepare(root, "demo", show_progress=False)
    gone = "BouncingBall/v_BouncingBall_g02_c01.avi"
    (root / "demo" / gone).unlink()
    added = "PulsingDisc/v_PulsingDisc_g05_c01.avi"
    shutil.copy(root / "demo" / "PulsingDisc/v_PulsingDisc_g01_c01.avi", root / "demo" / added)
    assert prepare.changed_since_prepare(runs.dataset_paths(root, "demo"), [gone, added]) == []


def torch_equal(a, b, keys):
    import torch
    return all(torch.equal(a[key], b[key]) for key in keys)


def test_videos_sharing_a_stem_get_their_own_names_and_audio(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    folder = root / "demo" / "PulsingDisc"
    rate = utils.AUDIO_RATE
    for suffix, pitch in ((".avi", 300), (".mp4", 900)):
        wave = (0.3 * np.sin(2 * np.pi * pitch * np.arange(2 * rate) / rate)).astype(np.float32)
        with video_io.VideoWriter(folder / f"v_Twin_g02_c01{suffix}", 25, 64, 48, audio=(wave, rate)) as writer:
            for i in range(40):
                writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    prepare.prepare(root, "demo", show_progress=False)
    table = pd.read_csv(root / "demo_split.csv").set_index("path")
    twins = {"PulsingDisc/v_Twin_g02_c01.avi": "v_Twin_g02_c01_avi", "PulsingDisc/v_Twin_g02_c01.mp4": "v_Twin_g02_c01_mp4"}
    assert {path: table.loc[path, "name"] for path in twins} == twins
    assert table.loc["PulsingDisc/v_PulsingDisc_g01_c01.avi", "name"] == "v_PulsingDisc_g01_c01"  # the usual layout
    caches = [np.load(runs.audio_cache_path(root / "demo_audio16k", path, name)) for path, name in twins.items()]
    for (path, _), cache in zip(twins.items(), caches):
        np.testing.assert_array_equal(cache, video_io.read_audio(root / "demo" / path))
    assert not np.allclose(caches[0][:len(caches[1])], caches[1][:len(caches[0])])
    import dataset
    entries = {entry.path: entry.name for entry in dataset.read_split(root / "demo_split.csv")}
    assert {path: entries[path] for path in twins} == twins
