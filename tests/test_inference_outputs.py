"""inference.py test split: paths confined to the data root, one writer per output, identity-keyed
"finished", ground truth shared by all models, clean failure on a full disk; and what sources.py makes
of its inputs: folders of frames, stream times, and soundtracks missing, broken, short or too long."""
import errno
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import identity
import inference
import sources
import video_io

REPO = Path(__file__).resolve().parents[1]


def run(*argv):
    return inference.main([str(a) for a in argv] + ["--device", "cpu"])


@pytest.fixture
def root(one_test_video_root):
    return one_test_video_root


def first_test_path(root):
    table = pd.read_csv(root / "demo_split.csv")
    return Path(table[table["split"] == "test"]["path"].iloc[0])


def folders(root, model="Blend"):
    rel = first_test_path(root)
    return root / model / "scale" / "2" / rel.parent / rel.stem, root / "GT" / "scale" / "2" / rel.parent / rel.stem


@pytest.mark.parametrize("bad", ["absolute", "climbing"])
def test_split_paths_outside_the_video_folder_are_refused_and_nothing_is_deleted(root, tmp_path_factory, bad, capsys):
    victim = tmp_path_factory.mktemp("victim")
    (victim / "precious").mkdir()
    (victim / "precious" / "keep.txt").write_text("mine")
    video = root / "demo" / first_test_path(root)
    outside = victim / "precious.mp4"
    outside.write_bytes(video.read_bytes())
    table = pd.read_csv(root / "demo_split.csv")
    test = table.index[table["split"] == "test"][0]
    relative = os.path.relpath(outside, root / "demo")
    table.loc[test, "path"] = str(outside) if bad == "absolute" else relative
    table.to_csv(root / "demo_split.csv", index=False)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 1
    err = capsys.readouterr().err
    assert "demo_split.csv" in err and "row" in err and ("absolute" in err or "'..'" in err)
    assert (victim / "precious" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in victim.iterdir()) == ["precious", "precious.mp4"]


def test_two_processes_on_one_output_folder_write_each_video_once_and_completely(root):
    command = [sys.executable, str(REPO / "inference.py"), "--model", "blend", "--data-root", str(root),
               "--dataset", "demo", "-s", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in runs]
    assert [process.returncode for process in runs] == [0, 0], outputs
    written = sorted(int(out.split(" video(s) written")[0].split()[-1]) for out, _ in outputs)
    assert written == [0, 1]  # one run waited for the other's lock, then found the video finished
    out, gt = folders(root)
    assert len(video_io.read_png_frames(out)) == len(video_io.read_png_frames(gt)) == 47
    assert identity.read_identity(out)["kind"] == "output" and identity.read_identity(gt)["kind"] == "gt"
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]
    assert not [p for p in gt.parent.iterdir() if ".partial" in p.name]


def test_regenerated_source_is_redone_and_gt_is_shared_not_rewritten_by_overwrite(root, capsys):
    argv = ("--data-root", root, "--dataset", "demo", "-s", 2)
    assert run("--model", "blend", *argv) == 0 and run("--model", "repeat", *argv) == 0
    blend, gt = folders(root)
    repeat, _ = folders(root, "Repeat")
    gt_record, repeat_record = identity.read_identity(gt), identity.read_identity(repeat)
    assert gt_record["source"]["path"] == f"demo/{first_test_path(root).as_posix()}" and gt_record["frames"] == 47
    assert identity.read_identity(blend)["model"] == "blend"
    gt_stamp = (gt / "frame_00001.png").stat().st_mtime_ns
    capsys.readouterr()

    # --overwrite on one model rewrites its own frames, never the GT the other model was scored on
    assert run("--model", "blend", *argv, "--overwrite") == 0
    assert "1 video(s) written" in capsys.readouterr().out
    assert (gt / "frame_00001.png").stat().st_mtime_ns == gt_stamp and identity.read_identity(gt) == gt_record
    assert run("--model", "repeat", *argv) == 0
    assert "0 video(s) written" in capsys.readouterr().out

    # the source changes (re-encoded, touched): GT and outputs are rebuilt for it
    source = root / "demo" / first_test_path(root)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10 ** 9))
    assert run("--model", "repeat", *argv) == 0
    assert "1 video(s) written" in capsys.readouterr().out
    assert identity.read_identity(gt) != gt_record and identity.read_identity(repeat) != repeat_record
    assert identity.is_current(gt, identity.gt_record(source, root, 47, 2))


def test_disk_full_stops_with_the_path_and_leaves_no_partials(root, monkeypatch, capsys):
    written = []

    def full_disk(path, data):
        if len(written) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
    monkeypatch.setattr(video_io, "write_png_bytes", full_disk)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 1
    err = capsys.readouterr().err
    out, gt = folders(root)
    assert "No space left on device" in err and str(out.parent) in err
    assert not out.exists() and not gt.exists() and not (out.parent / f"{out.name}.mp4").exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]
    assert not [p for p in gt.parent.iterdir() if ".partial" in p.name]


def test_summary_reports_bytes_per_output_frame(root, capsys):
    assert run("--model", "repeat", "--data-root", root, "--dataset", "demo", "-s", 2) == 0
    assert "KiB per output frame" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [(["-s", "0"], "--scale 0: must be at least 2"),
                                            (["--output", "SAME"], "would replace the source"),
                                            (["--output", "DIR"], "is a folder")])
def test_single_video_flag_mistakes_fail_before_any_work(root, tmp_path, flags, message, capsys):
    video = root / "demo" / first_test_path(root)
    flags = [str(video) if f == "SAME" else str(tmp_path) if f == "DIR" else f for f in flags]
    output = [] if "--output" in flags else ["--output", str(tmp_path / "out.mp4")]
    with pytest.raises(SystemExit):
        run("--model", "repeat", "--input", video, *output, *flags)
    assert message in capsys.readouterr().err
    assert video.stat().st_size > 0


def test_published_files_follow_the_umask(root):
    old = os.umask(0o022)
    try:
        assert run("--model", "repeat", "--data-root", root, "--dataset", "demo", "-s", 2) == 0
    finally:
        os.umask(old)
    out, gt = folders(root, "Repeat")
    for path in (out / "identity.json", gt / "identity.json", out.parent / f"{out.name}.mp4", out / "frame_00000.png"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_truncated_input_is_named_in_a_warning_and_its_audio_cut_to_the_video(tmp_path):
    from test_prepare import truncated_mp4
    source = truncated_mp4(tmp_path / "cut.mp4")
    output = tmp_path / "out.mp4"
    with pytest.warns(UserWarning, match=r"cut\.mp4: only \d+ frames .*truncated.*audio is cut"):
        assert run("--model", "repeat", "--input", source, "--output", output) == 0
    info = video_io.probe(source)
    assert info.truncation and info.n_frames < 40
    audio_seconds = len(video_io.read_audio(output)) / 16000
    assert audio_seconds <= info.n_frames / info.fps + 0.1


def flash_and_click_video(path, video_start, flash=10, frames=25, fps=25, rate=16000, audio_seconds=None):
    """A 64x48 MKV whose video starts `video_start` s after its audio (a clip cut without re-encoding):
    frame `flash` is bright and the audio clicks at that frame's time. The audio lasts `audio_seconds`
    (None: until the last frame ends; 0: no audio stream)."""
    import fractions

    import av
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = fractions.Fraction(1, 1000)
        audio = None if audio_seconds == 0 else container.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 250 if i == flash else 20, np.uint8),
                                               format="rgb24")
            frame.pts = round(1000 * (video_start + i / fps))
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is None:
            return path
        seconds = video_start + frames / fps if audio_seconds is None else audio_seconds
        wave = np.zeros(int(seconds * rate), np.int16)
        click = round((video_start + flash / fps) * rate)
        wave[click:click + 80] = 30000
        sound = av.AudioFrame.from_ndarray(wave[None], format="s16", layout="mono")
        sound.sample_rate, sound.pts = rate, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode())
    return path


def test_a_video_that_starts_after_its_audio_keeps_its_sound_in_step(tmp_path):
    """The output starts at the first frame, so its audio starts at that frame's time too: the click
    still plays with the (interpolated video's) flash frame."""
    source, output = tmp_path / "late video.mkv", tmp_path / "out.mp4"
    flash_and_click_video(source, video_start=0.5)
    assert video_io.frame_times(source)[0] == pytest.approx(0.5)
    assert run("--model", "repeat", "--input", source, "--output", output) == 0
    frames = video_io.read_frames(output, 0, 49)
    flash_time = int(np.argmax(frames.reshape(len(frames), -1).mean(1))) / 50
    wave = video_io.read_audio(output)
    click_time = int(np.argmax(np.abs(wave) > 0.3)) / 16000
    assert flash_time == pytest.approx(0.4) and click_time == pytest.approx(flash_time, abs=0.005)
    assert len(wave) / 16000 == pytest.approx(49 / 50, abs=0.05)  # the sound before the first frame is gone


def test_a_video_that_starts_after_its_audio_measures_the_audio_from_its_first_frame(tmp_path):
    """The sound before the first frame is not the output's: a clip 1.5 s into its sound is not said
    to run past its picture, and one whose sound ends 0.5 s after its first frame is warned about."""
    whole = sources.open_source(flash_and_click_video(tmp_path / "whole.mkv", video_start=1.5, frames=50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sources.audio_cut(whole, sources.load_wave(whole)) is None
    short = sources.open_source(flash_and_click_video(tmp_path / "short.mkv", video_start=1.5, frames=50,
                                                      audio_seconds=2.0))
    with pytest.warns(UserWarning, match=r"short\.mkv: the audio ends at 0\.50 s, 1\.50 s before the last frame"):
        sources.load_wave(short)


def test_confined_refuses_a_symlink_that_leads_outside_the_video_folder(tmp_path):
    import runs
    from utils import ASVFIError
    videos, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    (videos / "Cat").mkdir(parents=True), elsewhere.mkdir()
    (elsewhere / "secret.mp4").write_bytes(b"x")
    (videos / "Cat" / "v_link.mp4").symlink_to(elsewhere / "secret.mp4")
    (videos / "Cat" / "v_real.mp4").write_bytes(b"x")
    assert runs.confined(videos, "Cat/v_real.mp4") == videos / "Cat" / "v_real.mp4"
    with pytest.raises(ASVFIError, match=r"'Cat/v_link.mp4'.*outside"):
        runs.confined(videos, "Cat/v_link.mp4", "split CSV path")


def vfr_video(path, times_ms):
    """A 64x48 H.264 MP4 whose frames sit at `times_ms` (irregular pts: variable frame rate)."""
    import fractions

    import av
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 12 * i, np.uint8), format="rgb24")
            frame.pts = ms
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_variable_frame_rate_input_is_resampled_with_a_warning_and_an_identity_field(tmp_path):
    times_ms = [0, 40, 80, 200, 240, 280, 400, 440, 480, 600]  # 25 fps with three 120 ms holes
    source_path = vfr_video(tmp_path / "vfr.mp4", times_ms)
    steady = sources.open_source(vfr_video(tmp_path / "cfr.mp4", [40 * i for i in range(10)]))
    assert steady.vfr_drift is None and sources.resampling_setting(steady) == {}
    source = sources.open_source(source_path)
    np.testing.assert_allclose(video_io.frame_times(source_path), np.array(times_ms) / 1000)
    constant_rate = np.arange(10) / source.fps  # the output's timeline at the stream's average rate
    assert source.vfr_drift == pytest.approx(np.abs(np.array(times_ms) / 1000 - constant_rate).max())
    assert source.vfr_drift > 0.05
    with pytest.warns(UserWarning, match=r"vfr\.mp4: variable frame rate; .* constant .* up to \d+ ms"), \
            pytest.warns(UserWarning, match="no audio stream"):  # the test clip has no sound
        assert run("--model", "blend", "--input", source_path, "--output", tmp_path / "out.mp4") == 0
    records = inference.records_of(source, tmp_path, 10, 2, ("blend", None, {"seed": 0}))
    setting = records.output["settings"]["resampled_to_constant_fps"]
    assert setting["max_drift_ms"] == round(source.vfr_drift * 1000, 1) and records.output["settings"]["seed"] == 0


def test_single_video_on_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    source = vfr_video(tmp_path / "in.mp4", [40 * i for i in range(6)])
    written = []

    def disk_full(self, frame):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(frame)
    monkeypatch.setattr(video_io.VideoWriter, "write", disk_full)
    output = tmp_path / "out" / "result.mp4"
    with pytest.warns(UserWarning, match="no audio stream"):  # the test clip has no sound
        assert run("--model", "blend", "--input", source, "--output", output) == 1
    message = capsys.readouterr().err
    assert f"{output}: cannot write the results" in message and "No space left on device" in message
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file


def test_single_video_keeps_an_existing_output_unless_overwrite(tmp_path, monkeypatch, capsys):
    source = vfr_video(tmp_path / "in.mp4", [40 * i for i in range(6)])
    output = tmp_path / "out.mp4"
    output.write_bytes(b"an earlier result")
    with pytest.raises(SystemExit):
        run("--model", "blend", "--input", source, "--output", output)
    message = capsys.readouterr().err
    assert f"--output {output} already exists" in message and "--overwrite" in message
    assert output.read_bytes() == b"an earlier result"

    def disk_full(self, frame):
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patch, pytest.warns(UserWarning, match="no audio stream"):
        patch.setattr(video_io.VideoWriter, "write", disk_full)  # a failed --overwrite leaves the old file
        assert run("--model", "blend", "--input", source, "--output", output, "--overwrite") == 1
    assert output.read_bytes() == b"an earlier result"
    with pytest.warns(UserWarning, match="no audio stream"):  # the VFR test clip has no sound
        assert run("--model", "blend", "--input", source, "--output", output, "--overwrite") == 0
    assert video_io.probe(output).n_frames == 11


def write_frame_files(folder, names, size=(8, 6)):
    """Frame `i` of `names` (written in a shuffled order) is a flat image of value 20·i."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(1).permutation(len(names))
    for i in order:
        Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(folder / names[i])
    return folder


def test_a_folder_of_frames_streams_in_name_order_at_its_rate_whatever_the_suffixs_case(tmp_path):
    names = [f"frame_{i:02d}.{'PNG' if i % 3 == 0 else 'png'}" for i in range(12)]
    folder = write_frame_files(tmp_path / "frames", names)
    (folder / "notes.txt").write_text("not a frame")
    source = sources.open_source(folder, folder_fps=10.0)
    assert (source.n_frames, source.width, source.height, source.fps) == (12, 8, 6, 10.0)
    frames, times = zip(*sources.source_frames(source))
    assert [int(frame[0, 0, 0]) for frame in frames] == [20 * i for i in range(12)]
    np.testing.assert_allclose(times, np.arange(12) / 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder has no sound to warn about
        assert sources.load_wave(source) is None and sources.output_audio(source, None) == {}


def test_a_folder_without_frames_or_with_a_frame_of_another_size_is_refused_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    with pytest.raises(sources.InputError, match=r"empty: no image files \(\.png"):
        sources.open_source(tmp_path / "empty")
    folder = write_frame_files(tmp_path / "mixed", ["a.png", "b.png"])
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(folder / "c.png")
    source = sources.open_source(folder)
    with pytest.raises(sources.InputError, match=r"c\.png: 10x6, but the first frame is 8x6"):
        list(sources.source_frames(source))


def test_a_video_file_without_decodable_frames_is_refused(tmp_path):
    import av
    path = tmp_path / "sound only.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        sound.sample_rate, sound.pts = 16000, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode())
    with pytest.raises(sources.InputError, match=r"sound only\.mkv: no decodable video frames"):
        sources.open_source(path)


def test_a_soundtrack_that_cannot_be_decoded_costs_the_sound_with_a_warning_not_the_video(tmp_path, monkeypatch):
    import av
    path = tmp_path / "mute.mkv"
    with av.open(str(path), "w") as container:  # an audio stream that holds no audio
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        container.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
    source = sources.open_source(path)
    assert source.has_audio
    with pytest.warns(UserWarning, match=r"mute\.mkv: no decodable audio; the output video is written without"):
        assert sources.load_wave(source) is None

    def broken(*args, **kwargs):
        raise video_io.MediaError("invalid data in the audio packets")
    monkeypatch.setattr(video_io, "read_audio", broken)
    with pytest.warns(UserWarning, match=r"mute\.mkv: audio could not be decoded \(invalid data in the audio "
                                         r"packets\); the output video is written without audio"):
        assert sources.load_wave(source) is None


def test_a_soundtrack_within_a_second_of_the_picture_is_neither_warned_about_nor_cut(tmp_path):
    early = sources.open_source(flash_and_click_video(tmp_path / "early.mkv", video_start=0, frames=50,
                                                      audio_seconds=1.5))
    late = sources.open_source(flash_and_click_video(tmp_path / "late.mkv", video_start=0, frames=50,
                                                     audio_seconds=2.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in (early, late):
            assert sources.audio_cut(source, sources.load_wave(source)) is None


def test_a_soundtrack_running_well_past_the_picture_is_cut_at_the_last_frame_with_a_warning(tmp_path):
    source = sources.open_source(flash_and_click_video(tmp_path / "long.mkv", video_start=0, frames=25,
                                                       audio_seconds=3.0))
    wave = sources.load_wave(source)
    with pytest.warns(UserWarning, match=r"long\.mkv: the audio \(3\.00 s\) runs 2\.00 s past the last frame "
                                         r"\(1\.00 s\); it is cut at the last frame"):
        assert sources.output_audio(source, wave)["audio_until"] == pytest.approx(1.0)


def test_too_short_an_input_for_the_test_protocol_is_refused_with_the_frames_it_needs():
    two = sources.Source(Path("two.mp4"), 25.0, 2, 64, 48, False)
    sources.check_length(two)  # enough to interpolate
    with pytest.raises(sources.InputError, match=r"two\.mp4: 2 frames; the 2x test protocol \(inputs 0, 2, "
                                                 r"\.\.\.\) needs at least 3"):
        sources.check_length(two, 3)
    sources.check_length(sources.Source(Path("three.mp4"), 25.0, 3, 64, 48, False), 3)


def test_a_videos_frames_stream_at_the_times_its_file_gives_them(tmp_path):
    times_ms = [0, 40, 80, 200, 240, 280]
    source = sources.open_source(vfr_video(tmp_path / "vfr.mp4", times_ms))
    frames, times = zip(*sources.source_frames(source))
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    np.testing.assert_allclose(times, np.array(times_ms) / 1000)


def test_a_finished_video_whose_mp4_or_ground_truth_was_removed_is_written_again(root, capsys):
    argv = ("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2)
    assert run(*argv) == 0
    out, gt = folders(root)
    mp4 = out.parent / f"{out.name}.mp4"
    capsys.readouterr()
    mp4.unlink()
    assert run(*argv) == 0
    assert "1 video(s) written" in capsys.readouterr().out and video_io.probe(mp4).n_frames == 47
    shutil.rmtree(gt)
    assert run(*argv) == 0
    assert "1 video(s) written" in capsys.readouterr().out
    assert len(video_io.read_png_frames(gt)) == 47 and identity.read_identity(gt)["kind"] == "gt"


def test_tile_overlap_decides_the_output_only_when_tiling(root, capsys):
    argv = ("--model", "repeat", "--data-root", root, "--dataset", "demo", "-s", 2)
    assert run(*argv) == 0
    capsys.readouterr()
    assert run(*argv, "--tile-overlap", 8) == 0  # no --tile: the overlap is not used, the output is current
    assert "0 video(s) written" in capsys.readouterr().out
    assert run(*argv, "--tile", 128, "--tile-overlap", 8) == 0
    assert "1 video(s) written" in capsys.readouterr().out


def test_the_4x_split_takes_every_fourth_frame_as_input_and_shares_it_with_the_ground_truth(root):
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 4) == 0
    rel = first_test_path(root)
    out = root / "Blend" / "scale" / "4" / rel.parent / rel.stem
    gt = root / "GT" / "scale" / "4" / rel.parent / rel.stem
    n_out = (48 - 1) // 4 * 4 + 1
    generated, truth = video_io.read_png_frames(out), video_io.read_png_frames(gt)
    assert generated.shape[0] == truth.shape[0] == n_out == video_io.probe(out.parent / f"{out.name}.mp4").n_frames
    np.testing.assert_array_equal(generated[::4], truth[::4])
    for index in range(n_out):
        name = video_io.png_name(index)
        assert os.path.samefile(out / name, gt / name) == (index % 4 == 0), name


def test_a_second_model_shares_its_input_frames_with_the_published_ground_truth(root):
    argv = ("--data-root", root, "--dataset", "demo", "-s", 2)
    assert run("--model", "blend", *argv) == 0
    assert run("--model", "repeat", *argv) == 0  # the ground truth is current: only linked, not written
    repeat, gt = folders(root, "Repeat")
    for index in range(47):
        name = video_io.png_name(index)
        assert os.path.samefile(repeat / name, gt / name) == (index % 2 == 0), name
    np.testing.assert_array_equal(video_io.read_png_frames(repeat)[::2], video_io.read_png_frames(gt)[::2])


def test_without_hard_links_every_frame_is_still_written(root, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_links)
    argv = ("--data-root", root, "--dataset", "demo", "-s", 2)
    assert run("--model", "blend", *argv) == 0  # writes the ground truth
    assert run("--model", "repeat", *argv) == 0  # finds it current
    _, gt = folders(root)
    truth = video_io.read_png_frames(gt)
    for model in ("Blend", "Repeat"):
        out, _ = folders(root, model)
        generated = video_io.read_png_frames(out)
        assert len(generated) == len(truth) == 47
        np.testing.assert_array_equal(generated[::2], truth[::2])
        assert not any(os.path.samefile(out / video_io.png_name(i), gt / video_io.png_name(i)) for i in range(47))


def test_a_video_too_short_for_the_scale_is_reported_and_nothing_is_written(root, capsys):
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 64) == 1
    captured = capsys.readouterr()
    assert "48 frames; the 64x test protocol (inputs 0, 64, ...) needs at least 65" in captured.err
    assert "0 video(s) written" in captured.out and "1 failed" in captured.out
    out = root / "Blend" / "scale" / "64"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_a_video_that_decodes_to_fewer_frames_than_probed_fails_and_publishes_nothing(root, monkeypatch, capsys):
    probe = inference.open_source

    def overcounted(path):
        source = probe(path)
        source.n_frames += 4
        return source
    monkeypatch.setattr(inference, "open_source", overcounted)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 1
    assert "47 frames came out, 51 expected" in capsys.readouterr().err
    out, gt = folders(root)
    assert not out.exists() and not gt.exists() and not (out.parent / f"{out.name}.mp4").exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]
    assert not [p for p in gt.parent.iterdir() if ".partial" in p.name]


def test_a_variable_frame_rate_test_video_is_resampled_with_a_warning_and_an_identity_field(root):
    rel = "Vfr/v_Vfr_g01_c01.mp4"
    (root / "demo" / "Vfr").mkdir()
    vfr_video(root / "demo" / rel, [0, 40, 80, 200, 240, 280, 400, 440, 480, 600])
    table = pd.read_csv(root / "demo_split.csv")
    row = dict(path=rel, category="Vfr", split="test", fps=25.0, n_frames=10, width=64, height=48, has_audio=False,
               audio_rate=0, duration=0.64)
    pd.concat([table, pd.DataFrame([row])]).to_csv(root / "demo_split.csv", index=False)
    with pytest.warns(UserWarning, match=r"v_Vfr_g01_c01\.mp4: variable frame rate"), \
            pytest.warns(UserWarning, match="no audio stream"):  # the test clip has no sound
        assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 0
    out = root / "Blend" / "scale" / "2" / "Vfr" / "v_Vfr_g01_c01"
    assert len(video_io.read_png_frames(out)) == 9
    assert identity.read_identity(out)["settings"]["resampled_to_constant_fps"]["max_drift_ms"] > 50


def test_a_split_video_that_is_a_symlink_leading_outside_the_video_folder_is_refused(root, tmp_path_factory, capsys):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.mp4"
    video = root / "demo" / first_test_path(root)
    elsewhere.write_bytes(video.read_bytes())
    video.unlink()
    video.symlink_to(elsewhere)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 1
    err = capsys.readouterr().err
    split_csv = root / "demo_split.csv"
    assert f"{split_csv}: video path {first_test_path(root).as_posix()!r}: resolves to {elsewhere.resolve()}, outside" in err
    out, gt = folders(root)
    assert not out.exists() and not gt.exists()
