"""inference.py: test-split generation, single-video mode, recursion, tiling, resume, failure messages."""
import os
import re
import shutil
import warnings
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import checkpoints
import dataset
import evaluate
import inference
import interpolate
import main
import registry
import runs
import video_io
from utils import ASVFIError

TINY = dict(width=0.125, audio_dim=32, audio_heads=2)
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- helpers
def save_tiny_checkpoint(path, scale=2, steps=2):
    """A tiny ASVFI after a couple of AdamW steps, audio gates opened, saved as a training checkpoint."""
    torch.manual_seed(0)
    config = registry.default_config("asvfi", scale=scale, **TINY)
    network = registry.build_model(config)
    with torch.no_grad():
        for gate in network.audio.gates():
            gate.fill_(0.5)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    for _ in range(steps):
        frames = torch.rand(2, 4, 3, 32, 32)
        audio = 0.1 * torch.randn(2, 4160)
        times = torch.linspace(-1.5, 2.5, 4160).expand(2, -1)
        out = network(frames, audio=audio, audio_times=times, has_audio=torch.ones(2, dtype=torch.bool))
        loss = (out["pred"] - frames[:, 1:3].mean(1, keepdim=True)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoints.save({"model": "asvfi", "config": config, "state_dict": network.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": None, "epoch": 1,
                             "best_psnr": 0.0, "args": {"optimizer": "adamw", "lr": "1e-3"}}, path)
    return Path(path)


def moving_frames(n, height, width, seed=0):
    """A textured square moving right over a noisy background: frames that differ everywhere."""
    rng = np.random.default_rng(seed)
    blocks = lambda h, w, low, high: np.kron(rng.integers(low, high, (h // 4 + 1, w // 4 + 1, 3)),
                                            np.ones((4, 4, 1)))[:h, :w].astype(np.uint8)  # codec-friendly
    background = blocks(height, width, 0, 120)
    texture = blocks(height // 2, width // 3, 120, 256)
    frames = []
    for i in range(n):
        frame = background.copy()
        left = 2 + 3 * i
        visible = max(0, min(texture.shape[1], width - left))
        frame[4:4 + texture.shape[0], left:left + visible] = texture[:, :visible]
        frames.append(frame)
    return frames


def tone(seconds, rate=16000):
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def write_video(path, frames, fps=25, audio=True):
    height, width = frames[0].shape[:2]
    wave = (tone(len(frames) / fps), 16000) if audio else None
    with video_io.VideoWriter(path, fps, width, height, audio=wave) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def audio_seconds(path):
    wave = video_io.read_audio(path, 16000)
    return None if wave is None else len(wave) / 16000


def run(*argv):
    return inference.main([str(a) for a in argv] + ["--device", "cpu"])


def copy_demo(demo_root, target):
    """A private copy of the demo data (the session fixture is shared with other test files)."""
    shutil.copytree(demo_root / "demo", target / "demo")
    shutil.copy(demo_root / "demo_split.csv", target / "demo_split.csv")
    return target


def split_test_rows(root):
    table = pd.read_csv(root / "demo_split.csv")
    return table[table["split"] == "test"]


def engine_args(**overrides):
    return Namespace(**{"amp": None, "tile": 0, "tile_overlap": 32, "seed": 0, **overrides})


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture(scope="module")
def network(checkpoint):
    return registry.load_model(checkpoint)[0].eval()


@pytest.fixture(scope="module")
def asvfi_split(demo_root, checkpoint, tmp_path_factory):
    """The ASVFI test-split run (first test video) on a copy of the demo data: (data root, exit status)."""
    root = copy_demo(demo_root, tmp_path_factory.mktemp("asvfi_split"))
    status = run("--weights", checkpoint, "--data-root", root, "--dataset", "demo", "-s", 2, "--batch", 3,
                 "--limit", 1)
    return root, status


@pytest.fixture(scope="module")
def odd_video(tmp_path_factory):
    """7 frames of 75x51 (odd sizes) at 25 fps with a tone."""
    return write_video(tmp_path_factory.mktemp("odd") / "odd.mp4", moving_frames(7, 51, 75))


# ----------------------------------------------------------------------------- test-split mode
def test_test_split_writes_frames_mp4_and_gt_with_matching_counts(asvfi_split):
    root, status = asvfi_split
    assert status == 0
    rows = split_test_rows(root)
    assert not (root / "ASVFI" / "scale" / "2_tiny" / Path(rows["path"].iloc[1]).parent).exists()  # --limit 1
    for row in rows.head(1).itertuples():
        rel = Path(row.path)
        out = root / "ASVFI" / "scale" / "2_tiny" / rel.parent / rel.stem
        gt = root / "GT" / "scale" / "2" / rel.parent / rel.stem
        n_out = (row.n_frames - 1) // 2 * 2 + 1
        generated, truth = video_io.read_png_frames(out), video_io.read_png_frames(gt)
        assert generated.shape == truth.shape == (n_out, row.height, row.width, 3)
        source = video_io.read_frames(root / "demo" / rel, 0, n_out)
        np.testing.assert_array_equal(truth, source)  # GT = the native frames
        np.testing.assert_array_equal(generated[::2], source[::2])  # inputs pass through unchanged
        assert not (out.parent / f"{rel.stem}.partial").exists()
        mp4 = out.parent / f"{rel.stem}.mp4"
        info = video_io.probe(mp4)
        assert (info.n_frames, info.width, info.height, info.fps) == (n_out, row.width, row.height, row.fps)
        assert info.has_audio
        # the original soundtrack, whole (AAC adds at most one 1024-sample frame at its rate)
        assert abs(audio_seconds(mp4) - audio_seconds(root / "demo" / rel)) < 1024 / info.audio_rate + 1e-3
        decoded = video_io.read_frames(mp4, 0, n_out).astype(float)
        mse = ((decoded - generated) ** 2).mean()
        assert 10 * np.log10(255 ** 2 / mse) > 35  # the MP4 shows the PNG frames, in order


def test_under_torchrun_each_process_writes_every_world_th_test_video_and_only_the_first_names_the_split(
        demo_root, tmp_path, monkeypatch, capsys):
    root = copy_demo(demo_root, tmp_path)
    first, second = [Path(p) for p in split_test_rows(root)["path"]]
    out_root = root / "Blend" / "scale" / "2"
    argv = ("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run(*argv) == 0
    out = capsys.readouterr().out
    assert "1 video(s) written" in out and "test split" not in out
    assert (out_root / second.parent / f"{second.stem}.mp4").is_file()
    assert not (out_root / first.parent / first.stem).exists()
    monkeypatch.setenv("RANK", "0")
    assert run(*argv) == 0
    out = capsys.readouterr().out
    assert "demo test split" in out and "2 video(s)" in out and "1 video(s) written" in out
    assert (out_root / first.parent / f"{first.stem}.mp4").is_file()


def test_test_split_frames_are_the_stream_of_its_inputs_at_their_own_rate(asvfi_split, network):
    """Frames 0, 2, 4, ... at 12.5 fps with the soundtrack: each interval gets the audio it got in
    training. The stream at the run's --batch 3 gives the same bits (another input rate moves a few
    pixels by one level)."""
    import sources
    root, status = asvfi_split
    assert status == 0
    rel = Path(split_test_rows(root)["path"].iloc[0])
    source = sources.open_source(root / "demo" / rel)
    n_out = (source.n_frames - 1) // 2 * 2 + 1
    inputs = list(sources.source_frames(source))[:n_out:2][:7]  # two batches; windows 0-4 as in the whole video
    engines = interpolate.build_engines(network, CPU, 2, engine_args())
    stream = interpolate.interpolate_video(iter(inputs), engines, sources.load_wave(source), batch=3,
                                           input_fps=source.fps / 2)
    expected = np.stack([frame for frame, _ in stream])[:11]
    generated = video_io.read_png_frames(root / "ASVFI" / "scale" / "2_tiny" / rel.parent / rel.stem, 0, 11)
    np.testing.assert_array_equal(generated, expected)


def test_blend_output_is_the_mean_of_its_neighbours(demo_root, tmp_path):
    root = copy_demo(demo_root, tmp_path)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 0
    for row in split_test_rows(root).itertuples():
        rel = Path(row.path)
        out = video_io.read_png_frames(root / "Blend" / "scale" / "2" / rel.parent / rel.stem).astype(float)
        gt = video_io.read_png_frames(root / "GT" / "scale" / "2" / rel.parent / rel.stem).astype(float)
        np.testing.assert_array_equal(out[::2], gt[::2])
        assert np.abs(out[1::2] - (gt[:-2:2] + gt[2::2]) / 2).max() <= 0.5  # rounding of x.5 only


def test_the_run_names_the_data_set_and_why_when_it_chose_it(demo_root, tmp_path, capsys):
    root = copy_demo(demo_root, tmp_path)
    assert run("--model", "repeat", "--data-root", root, "-s", 2, "--limit", 1) == 0
    out = capsys.readouterr().out
    assert f"demo test split ({root / 'demo_split.csv'}): 1 video(s) (no --dataset given, and no UCF-101 is under " \
           f"--data-root {root}; pass --dataset to choose)" in out
    assert run("--model", "repeat", "--data-root", root, "--dataset", "demo", "-s", 2, "--limit", 1) == 0
    assert "demo test split" in (out := capsys.readouterr().out) and "no --dataset given" not in out


def test_resume_skips_finished_videos_and_redoes_interrupted_ones(demo_root, tmp_path, capsys):
    root = copy_demo(demo_root, tmp_path)
    argv = ("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2)
    assert run(*argv) == 0
    first, second = [Path(p) for p in split_test_rows(root)["path"]]
    out_root = root / "Blend" / "scale" / "2"
    done = out_root / second.parent / second.stem / "frame_00001.png"
    stamp = done.stat().st_mtime_ns
    capsys.readouterr()

    assert run(*argv) == 0
    assert "0 video(s) written" in capsys.readouterr().out and done.stat().st_mtime_ns == stamp

    # an interrupted run on `first`: only its .partial folder (with a stray frame) and MP4 are left
    folder = out_root / first.parent / first.stem
    shutil.rmtree(folder)
    (out_root / first.parent / f"{first.stem}.mp4").unlink()
    (out_root / first.parent / f"{first.stem}.partial").mkdir()
    (out_root / first.parent / f"{first.stem}.partial" / "frame_00999.png").write_bytes(b"junk")
    dead_mp4 = out_root / first.parent / f"{first.stem}.mp4.partial-1-0dead.mp4"
    dead_mp4.write_bytes(b"junk")
    assert run(*argv) == 0
    assert "1 video(s) written" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:05d}.png" for i in range(47)] + ["identity.json"]
    assert not (out_root / first.parent / f"{first.stem}.partial").exists() and not dead_mp4.exists()
    assert done.stat().st_mtime_ns == stamp

    assert run(*argv, "--overwrite", "--limit", 1) == 0
    assert "1 video(s) written" in capsys.readouterr().out


def test_bad_videos_are_reported_and_the_run_goes_on(demo_root, tmp_path, capsys):
    """Unreadable → reported and skipped; 1 frame → clear message; no audio → warning, MP4 without audio."""
    root = copy_demo(demo_root, tmp_path)
    good = split_test_rows(root)
    extra = {"Broken/v_Broken_g01_c01.mp4": None, "Short/v_Short_g01_c01.mp4": moving_frames(1, 32, 48),
             "Silent/v_Silent_g01_c01.mp4": moving_frames(5, 32, 48)}
    rows = []
    for rel, frames in extra.items():
        path = root / "demo" / rel
        path.parent.mkdir(parents=True)
        if frames is None:
            path.write_bytes(b"this is not a video file" * 100)
        else:
            write_video(path, frames, audio=False)
        rows.append(dict(path=rel, category=rel.split("/")[0], split="test", fps=25.0, n_frames=len(frames or [0]),
                         width=48, height=32, has_audio=False, audio_rate=0, duration=0.2))
    pd.concat([good, pd.DataFrame(rows)]).to_csv(root / "demo_split.csv", index=False)

    with pytest.warns(UserWarning, match="v_Silent_g01_c01.mp4: no audio stream"):
        status = run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2)
    assert status == 1  # something failed, and it says so
    captured = capsys.readouterr()
    assert "3 video(s) written" in captured.out and "2 failed" in captured.out
    assert "Broken/v_Broken_g01_c01.mp4" in captured.err and "cannot open" in captured.err
    assert "v_Short_g01_c01.mp4: the video has only 1 frame" in captured.err
    out_root = root / "Blend" / "scale" / "2"
    silent = video_io.probe(out_root / "Silent" / "v_Silent_g01_c01.mp4")
    assert (silent.n_frames, silent.has_audio) == (5, False)
    for rel in good["path"]:
        assert video_io.probe(out_root / Path(rel).parent / f"{Path(rel).stem}.mp4").n_frames == 47
    assert not (out_root / "Broken").exists() or not any((out_root / "Broken").glob("*.mp4"))


# ----------------------------------------------------------------------------- single-video mode
def test_single_video_odd_size_gives_every_frame_at_the_original_size(odd_video, checkpoint, tmp_path, capsys):
    output = tmp_path / "out" / "odd_4x.mp4"
    assert run("--weights", checkpoint, "--input", odd_video, "--output", output, "-s", 4) == 0
    assert "(7 in, 4x, 75x51, stored as 76x52 (yuv420p needs even sizes: ASVFI's reader crops back to 75x51" \
        in capsys.readouterr().out  # the summary says what the file holds
    info = video_io.probe(output)
    assert (info.n_frames, info.width, info.height, info.fps) == ((7 - 1) * 4 + 1, 75, 51, 100)
    assert info.has_audio  # the soundtrack, whole: the duration is preserved
    assert abs(audio_seconds(output) - audio_seconds(odd_video)) < 1024 / 16000 + 1e-3
    frames = video_io.read_frames(output, 0, info.n_frames).astype(float)
    source = video_io.read_frames(odd_video, 0, 7).astype(float)
    distance = np.abs(frames[::4, None] - source[None]).mean(axis=(2, 3, 4))  # (output input, source)
    assert (distance.argmin(axis=1) == np.arange(7)).all() and distance.diagonal().max() < 12  # H.264 loss only


def test_single_video_frames_are_the_stream_of_the_input_at_its_own_rate(odd_video, checkpoint, network, tmp_path,
                                                                         monkeypatch):
    """What is encoded is what the streaming API gives for the video's frames, soundtrack and 25 fps."""
    import sources
    encoded, write = [], video_io.VideoWriter.write

    def keep(self, frame):
        encoded.append(frame.copy())
        return write(self, frame)
    monkeypatch.setattr(video_io.VideoWriter, "write", keep)
    assert run("--weights", checkpoint, "--input", odd_video, "--output", tmp_path / "out.mp4", "--batch", 2) == 0
    source = sources.open_source(odd_video)
    engines = interpolate.build_engines(network, CPU, 2, engine_args())
    stream = interpolate.interpolate_video(sources.source_frames(source), engines, sources.load_wave(source), batch=2,
                                           input_fps=25)
    np.testing.assert_array_equal(np.stack(encoded), np.stack([frame for frame, _ in stream]))


def test_single_video_from_a_folder_of_frames_with_fps(tmp_path, capsys):
    frames = moving_frames(5, 40, 56)
    folder = tmp_path / "frames"
    for i, frame in enumerate(frames):
        video_io.write_png_frames(folder, [frame], start=i)
    output = tmp_path / "out.mp4"
    assert run("--model", "blend", "--input", folder, "--input-fps", 12, "--output", output, "--fps", 36) == 0
    info = video_io.probe(output)
    assert (info.n_frames, info.width, info.height, info.fps, info.has_audio) == (13, 56, 40, 36, False)
    captured = capsys.readouterr()
    assert "assumed" not in captured.err and "56x40)" in captured.out  # even: no stored size

    # without --input-fps the rate is assumed, and the note says so and how to set it
    assert run("--model", "blend", "--input", folder, "--output", tmp_path / "assumed.mp4") == 0
    assert f"note: {folder} is a folder of frames, which holds no frame rate: 25 fps assumed; set it with " \
           f"--input-fps" in capsys.readouterr().err
    assert video_io.probe(tmp_path / "assumed.mp4").fps == 50


# ----------------------------------------------------------------------------- streaming API
def test_4x_by_recursion_equals_2x_applied_twice(network):
    items = [(frame, i / 25) for i, frame in enumerate(moving_frames(5, 40, 56))]
    wave = tone(0.4)
    engines_2x = interpolate.build_engines(network, CPU, 2, engine_args())
    engines_4x = interpolate.build_engines(network, CPU, 4, engine_args())
    assert [e.scale for e in engines_4x] == [2, 2]
    four = list(interpolate.interpolate_video(iter(items), engines_4x, wave, batch=3, input_fps=25))
    two = list(interpolate.interpolate_video(iter(items), engines_2x, wave, batch=1, input_fps=25))
    twice = list(interpolate.interpolate_video(iter(two), engines_2x, wave, batch=2, input_fps=50))
    assert len(four) == len(twice) == (5 - 1) * 4 + 1
    np.testing.assert_allclose([t for _, t in four], np.arange(17) / 100, atol=1e-9)
    np.testing.assert_allclose([t for _, t in twice], np.arange(17) / 100, atol=1e-9)
    difference = np.abs(np.stack([f for f, _ in four]).astype(int) - np.stack([f for f, _ in twice]))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # batch size only moves rounding
    assert np.abs(np.stack([f for f, _ in four[2::4]]).astype(int) - np.stack([f for f, _ in two[1::2]])).max() <= 1


def test_stream_replicates_edges_and_batches_do_not_change_results(network):
    items = [(frame, i / 25) for i, frame in enumerate(moving_frames(4, 24, 32))]
    engines = interpolate.build_engines(network, CPU, 2, engine_args())
    by_one = [f for f, _ in interpolate.interpolate_video(iter(items), engines, None, batch=1, input_fps=25)]
    by_four = [f for f, _ in interpolate.interpolate_video(iter(items), engines, None, batch=4, input_fps=25)]
    assert len(by_one) == 7
    assert np.abs(np.stack(by_one).astype(int) - np.stack(by_four)).max() <= 1
    # the first interval's window is frames (0, 0, 1, 2): the same as a call with that window
    window = np.stack([items[0][0], items[0][0], items[1][0], items[2][0]])[None]
    audio, times = dataset.audio_segment(None, 0.0, 0.04, 4160)
    inputs = torch.stack([engines[0].as_input(frame) for frame in window[0]])[None]
    direct = engines[0](inputs, audio[None], times[None], False, [0])[0, 0]
    assert np.abs(direct.astype(int) - by_one[1]).max() <= 1


def per_window_reference(network, frames, scale):
    """The stream as the engine computed it before frames were converted once: every window of four
    uint8 frames → float / 255 → model → clamp, ×255, round → uint8."""
    n = len(frames)
    out = []
    for j in range(n - 1):
        window = np.stack([frames[min(max(i, 0), n - 1)] for i in (j - 1, j, j + 1, j + 2)])
        inputs = torch.from_numpy(window).permute(0, 3, 1, 2).float().div(255)[None]
        with torch.no_grad():
            pred = network(inputs)["pred"].float().clamp(0, 1).mul(255).round().to(torch.uint8)
        out += [frames[j], *pred[0].permute(0, 2, 3, 1).numpy()]
    return out + [frames[-1]]


@pytest.mark.parametrize("model", ["repeat", "blend"])
@pytest.mark.parametrize("scale", [2, 4])
def test_baseline_frames_are_bit_identical_to_the_per_window_float_path(model, scale):
    frames = moving_frames(6, 24, 32)
    network = registry.build_model(registry.default_config(model, scale=scale)).eval()
    engines = interpolate.build_engines(network, CPU, scale, engine_args())
    items = [(frame, i / 25) for i, frame in enumerate(frames)]
    streamed = [f for f, _ in interpolate.interpolate_video(iter(items), engines, None, batch=3, input_fps=25)]
    reference = per_window_reference(network, frames, scale)
    assert len(streamed) == len(reference) == 5 * scale + 1
    for got, expected in zip(streamed, reference):
        np.testing.assert_array_equal(got, expected)


class RecordingEngine:
    """Stands in for a network pass: records what each window gets, returns black frames."""
    scale = 2

    def __init__(self):
        self.calls = []

    @staticmethod
    def as_input(frame):
        return torch.from_numpy(frame)

    def __call__(self, windows, audio, audio_times, has_audio, window_ids):
        self.calls.append((windows.numpy(), audio, audio_times, has_audio, window_ids))
        return np.zeros((len(windows), 1, *windows.shape[2:]), np.uint8)


def test_windows_replicate_edges_and_get_the_training_audio_segments():
    frames = moving_frames(5, 8, 12)
    items = [(frame, 0.1 + i / 25) for i, frame in enumerate(frames)]  # a stream that starts at 0.1 s
    wave = tone(0.4)
    engine = RecordingEngine()
    out = list(interpolate.interpolate_stream(iter(items), engine, wave, batch=3, input_fps=25))
    assert [t for _, t in out] == pytest.approx(0.1 + np.arange(9) / 50)
    windows = np.concatenate([c[0] for c in engine.calls])
    expected = [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]]
    np.testing.assert_array_equal(windows, np.stack(frames)[expected])
    n_audio = dataset.audio_samples_for(25, 1)
    assert n_audio == dataset.audio_samples_for(50, 2)  # 2x on a 50 fps video: as in training
    audio, times = np.concatenate([c[1] for c in engine.calls]), np.concatenate([c[2] for c in engine.calls])
    for j in range(4):
        segment, segment_times = dataset.audio_segment(wave, items[j][1], items[j + 1][1], n_audio)
        np.testing.assert_array_equal(audio[j], segment)
        np.testing.assert_array_equal(times[j], segment_times)
    assert [c[3] for c in engine.calls] == [True, True]
    assert [len(c[0]) for c in engine.calls] == [3, 1]
    assert [c[4] for c in engine.calls] == [[0, 1, 2], [3]]  # each window named by its interval


def test_a_two_frame_stream_gives_both_inputs_and_the_frame_between():
    """The shortest stream still has one interval: 2 inputs at 2x make 3 frames at 0, 0.02 and 0.04 s (25 fps)."""
    frames = moving_frames(2, 8, 12)
    engine = RecordingEngine()
    out = list(interpolate.interpolate_stream(iter([(f, i / 25) for i, f in enumerate(frames)]), engine, None,
                                              batch=4, input_fps=25))
    assert [t for _, t in out] == pytest.approx([0, 0.02, 0.04])
    np.testing.assert_array_equal(out[0][0], frames[0])
    np.testing.assert_array_equal(out[1][0], np.zeros_like(frames[0]))
    np.testing.assert_array_equal(out[2][0], frames[1])
    np.testing.assert_array_equal(engine.calls[0][0], np.stack(frames)[[[0, 0, 1, 1]]])


def test_a_one_frame_stream_is_passed_through_and_a_silent_stream_is_marked_silent():
    frames = moving_frames(3, 8, 12)
    engine = RecordingEngine()
    out = list(interpolate.interpolate_stream(iter([(frames[0], 0.5)]), engine, None, batch=4, input_fps=25))
    assert len(out) == 1 and out[0][1] == 0.5 and engine.calls == []  # no interval: nothing to generate
    np.testing.assert_array_equal(out[0][0], frames[0])
    out = list(interpolate.interpolate_stream(iter([(f, i / 25) for i, f in enumerate(frames)]), engine, None,
                                              batch=4, input_fps=25))
    assert len(out) == 5 and [c[3] for c in engine.calls] == [False]


def test_a_faster_stream_gets_audio_segments_three_of_its_own_intervals_long():
    """At 50 fps an interval is half as long as at 25 fps, and so is each window's segment of sound."""
    frames = moving_frames(4, 8, 12)
    items = [(frame, i / 50) for i, frame in enumerate(frames)]
    wave = tone(0.2)
    engine = RecordingEngine()
    list(interpolate.interpolate_stream(iter(items), engine, wave, batch=2, input_fps=50))
    audio = np.concatenate([c[1] for c in engine.calls])
    n_audio = dataset.audio_samples_for(50, 1)
    assert audio.shape == (3, n_audio) and n_audio < dataset.audio_samples_for(25, 1)
    for j in range(3):
        np.testing.assert_array_equal(audio[j], dataset.audio_segment(wave, items[j][1], items[j + 1][1], n_audio)[0])


class Overshooting(torch.nn.Module):
    """A 2x model whose prediction leaves [0, 1]: 3 x the left input - 1 (black → -1, white → 2)."""
    config = registry.default_config("blend", scale=2)

    def forward(self, inputs, **extra):
        return {"pred": inputs[:, 1:2] * 3 - 1}


def test_engine_frames_clamp_predictions_outside_0_1_to_black_and_white():
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:, 2:4], frame[:, 4:] = 128, 255
    engine = interpolate.Engine(Overshooting(), CPU, 2)
    inputs = torch.stack([engine.as_input(frame)] * 4)[None]
    silence = np.zeros((1, 10), np.float32)
    out = engine(inputs, silence, silence, False, [0])
    assert out.shape == (1, 1, 4, 6, 3) and out.dtype == np.uint8
    assert (out[..., :2, :] == 0).all() and (out[..., 2:4, :] == 129).all() and (out[..., 4:, :] == 255).all()

# ----------------------------------------------------------------------------- tiling
def test_tiling_blends_the_tile_predictions_of_asvfi(network):
    """Tiles of a frame larger than the tile get the same audio, batch and centring (the whole frame's
    mean, as untiled) and are blended back: one tile's own prediction where it alone covers a pixel,
    a convex mix of the covering tiles elsewhere.

    (A barely trained ASVFI is not local - its receptive field spans the tile - so here tiled and
    untiled differ by the model, not the blending; the blending itself is checked exactly against
    untiled output with a local model below.)
    """
    frames = np.stack(moving_frames(4, 80, 112))[None]
    audio, times = dataset.audio_segment(tone(0.3), 0.04, 0.08, 4160)
    as_inputs = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 1, 4, 2, 3).float() / 255  # noqa: E731
    tiled = interpolate.Engine(network, CPU, 2, tile=64, tile_overlap=16)(as_inputs(frames), audio[None], times[None],
                                                                          True, [0])
    whole_mean = as_inputs(frames).mean(dim=(1, 3, 4))

    def tile_prediction(crop):
        with torch.no_grad():
            pred = network(as_inputs(crop), audio=torch.from_numpy(audio[None]), audio_times=torch.from_numpy(times[None]),
                           has_audio=torch.tensor([True]), frame_mean=whole_mean)["pred"]
        return (pred.clamp(0, 1) * 255).round()[0, 0].permute(1, 2, 0).numpy().astype(int)

    low, high = np.full(tiled.shape[2:], 255), np.zeros(tiled.shape[2:], int)
    predictions = {}
    for top in interpolate.tile_starts(80, 64, 16):
        for left in interpolate.tile_starts(112, 64, 16):
            predictions[top, left] = tile_prediction(frames[:, :, top:top + 64, left:left + 64])
            region = (slice(top, top + 64), slice(left, left + 64))
            low[region] = np.minimum(low[region], predictions[top, left])
            high[region] = np.maximum(high[region], predictions[top, left])
    assert sorted(predictions) == [(0, 0), (0, 48), (16, 0), (16, 48)]
    out = tiled[0, 0].astype(int)
    assert ((out >= low - 1) & (out <= high + 1)).all()
    assert np.abs(out[:16, :48] - predictions[0, 0][:16, :48]).max() <= 1
    assert np.abs(out[64:, 64:] - predictions[16, 48][48:, 16:]).max() <= 1


def test_tiling_matches_untiled_for_a_local_model():
    """Blend is local, so tiled output must equal untiled output: the blend weights add up exactly."""
    blend = registry.build_model(registry.default_config("blend", scale=2))
    frames = torch.from_numpy(np.stack(moving_frames(4, 51, 75))[None]).permute(0, 1, 4, 2, 3).float() / 255
    audio = np.zeros((1, 10), np.float32)
    whole = interpolate.Engine(blend, CPU, 2)(frames, audio, audio, False, [0])
    tiled = interpolate.Engine(blend, CPU, 2, tile=32, tile_overlap=8)(frames, audio, audio, False, [0])
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    assert interpolate.tile_starts(75, 32, 8) == [0, 24, 43] and interpolate.tile_starts(20, 32, 8) == [0]


def test_tile_starts_never_repeat_a_tile():
    """When the tiles fit exactly, the flush last tile is the last step's tile, not a second copy of it."""
    assert interpolate.tile_starts(56, 32, 8) == [0, 24]
    assert interpolate.tile_starts(80, 32, 8) == [0, 24, 48]
    assert interpolate.tile_starts(32, 32, 8) == [0]


def test_blend_ramp_rises_from_the_shared_edge_and_never_reaches_zero():
    """Over an overlap of k pixels the weight is 1/(k+1) .. k/(k+1) rising away from the neighbour, 1 elsewhere."""
    ramp = lambda length, start, total: interpolate.blend_ramp(length, start, total, 3, CPU).tolist()  # noqa: E731
    assert ramp(8, 4, 20) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25])  # neighbours on both sides
    assert ramp(8, 0, 20) == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])  # first tile: no ramp at the frame edge
    assert ramp(8, 12, 20) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1])  # last tile, flush with the edge
    assert ramp(8, 0, 8) == pytest.approx([1] * 8)  # one tile covers the frame



class TileMean(torch.nn.Module):
    """A 2x model that is not local at all: every pixel of its prediction is the mean of its whole input."""
    config = registry.default_config("blend", scale=2)

    def forward(self, inputs, **extra):
        return {"pred": inputs.mean(dim=(1, 3, 4))[:, None, :, None, None].expand(-1, 1, -1, *inputs.shape[-2:])}


@pytest.mark.parametrize("wide", [True, False])
def test_overlapping_tiles_cross_fade_linearly_across_the_overlap(wide):
    """Tiles 32 wide at overlap 8 over 56 pixels start at 0 and 24. The first tile sees black only,
    the second 24 white columns of its 32 (mean 0.75): the frame between is black up to the overlap,
    0.75 after it, and over the 8 shared pixels the second tile's weight rises (1 .. 8) / 9 while the
    first's falls, so the mix there is 0.75 (i + 1) / 9. The same holds down a tall frame's rows."""
    frame = np.zeros((8, 56, 3), np.uint8)
    frame[:, 32:] = 255
    if not wide:
        frame = np.ascontiguousarray(frame.transpose(1, 0, 2))
    items = [(frame, i / 25) for i in range(2)]
    engines = interpolate.build_engines(TileMean(), CPU, 2, engine_args(tile=32, tile_overlap=8))
    between = list(interpolate.interpolate_video(iter(items), engines, None, batch=1, input_fps=25))[1][0]
    profile = between[0, :, 0] if wide else between[:, 0, 0]
    expected = np.concatenate([np.zeros(24), 0.75 * np.arange(1, 9) / 9, np.full(24, 0.75)]) * 255
    assert np.abs(profile.astype(float) - expected).max() <= 0.5
    assert (between == (between[:1, :, :1] if wide else between[:, :1, :1])).all()  # constant across the other axis


class MeanCentred(torch.nn.Module):
    """A model that centres its window as ASVFI does (by the mean over its four frames and all their
    pixels, or by the frame_mean it is given) and predicts that mean everywhere."""
    config = registry.default_config("asvfi", scale=2, audio="none")

    def forward(self, inputs, frame_mean=None, **extra):
        mean = inputs.mean(dim=(1, 3, 4)) if frame_mean is None else frame_mean
        return {"pred": mean[:, None, :, None, None].expand(-1, 1, -1, *inputs.shape[-2:])}


def test_every_tile_is_centred_by_the_whole_windows_mean_as_untiled():
    """Each of the four frames has its own level and a dark left / bright right half: the tiles' own
    means differ from the window's, but a tiled pass centres every tile as the untiled pass does."""
    frames = np.zeros((4, 40, 72, 3), np.uint8)
    for k, level in enumerate((10, 60, 20, 200)):
        frames[k] = level
        frames[k, :, 40:] = level // 2 + 100
    inputs = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)[None]
    silence = np.zeros((1, 10), np.float32)
    whole = interpolate.Engine(MeanCentred(), CPU, 2).predict(inputs, silence, silence, False, [0])
    tiled = interpolate.Engine(MeanCentred(), CPU, 2, tile=32, tile_overlap=8).predict(inputs, silence, silence,
                                                                                       False, [0])
    torch.testing.assert_close(whole, inputs.mean(dim=(1, 3, 4))[:, None, :, None, None].expand_as(whole))
    torch.testing.assert_close(tiled, whole)

# ----------------------------------------------------------------------------- failure messages
def fails_with(capsys, pattern, *argv):
    """The entry point turns the error into a message on stderr and exit status 1."""
    assert run(*argv) == 1
    message = capsys.readouterr().err
    assert re.search(pattern, message), message
    return message


def test_a_folder_where_the_checkpoint_should_be_is_named_as_one(tmp_path, odd_video, capsys):
    (tmp_path / "run.pth").mkdir()
    fails_with(capsys, f"error: {tmp_path / 'run.pth'}: a folder, not a checkpoint file", "--checkpoint",
               tmp_path / "run.pth", "--input", odd_video, "--output", tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_missing_weights_names_the_path_and_the_training_command(tmp_path, monkeypatch, odd_video, capsys):
    monkeypatch.chdir(tmp_path)
    message = fails_with(capsys, "no such checkpoint", "--optimizer", "adam", "--lr", "2e-4", "--data-root", tmp_path,
                         "--dataset", "demo")
    assert str(Path("weights") / "asvfi" / "adam_2e-4.pth") in message
    assert "python main.py --model asvfi --optimizer adam --lr 2e-4 --scale 2" in message
    fails_with(capsys, r"adam_2e-4_epoch5.pth: no such checkpoint(.|\n)* --save-every 5", "--optimizer", "adam",
               "--lr", "2e-4", "--epoch", 5, "--data-root", tmp_path, "--dataset", "demo")
    message = fails_with(capsys, f"--checkpoint {tmp_path / 'nowhere.pth'}: no such file", "--weights",
                         tmp_path / "nowhere.pth", "--input", odd_video, "--output", tmp_path / "x.mp4")
    assert "main.py" not in message  # an explicit file is not trained into existence
    message = fails_with(capsys, r"other_out/weights/asvfi/adamw_6e-4.pth: no such checkpoint", "--out-dir",
                         "other_out", "--data-root", tmp_path, "--dataset", "demo")
    assert "--scale 2 --out-dir other_out\n" in message  # the command trains into the folder looked in
    # a scale main.py trains is trained as itself
    fails_with(capsys, r"main.py --model asvfi --optimizer adam --lr 2e-4 --scale 4\n", "--optimizer", "adam",
               "--lr", "2e-4", "-s", 4, "--data-root", tmp_path, "--dataset", "demo")
    # main.py trains 2x, 4x, 8x: a 16x run is trained at 2x and reached by recursion
    fails_with(capsys, r"main.py .* --scale 2\n", "--optimizer", "adam", "--lr", "2e-4", "-s", 16,
               "--data-root", tmp_path, "--dataset", "demo")
    # no scale main.py trains reaches 3x: ASVFI is not sent to train, PerVFI is (it takes any t)
    message = fails_with(capsys, r"no such checkpoint, and training would not help: .*--model pervfi and the baselines",
                         "-s", 3, "--data-root", tmp_path, "--dataset", "demo")
    assert "main.py --model" not in message
    fails_with(capsys, r"main.py --model pervfi .* --scale 2\n", "--model", "pervfi", "-s", 3,
               "--data-root", tmp_path, "--dataset", "demo")


def test_a_checkpoint_of_the_other_model_is_refused_with_the_flag_to_pass(tmp_path, odd_video, capsys):
    """Checked before PerVFI's options (heat, flow estimator) are applied to the checkpoint's config."""
    asvfi_file = save_tiny_checkpoint(tmp_path / "tiny.pth")
    config = registry.default_config("pervfi", width=0.125, steps_per_level=2)
    pervfi_file = tmp_path / "tiny_pervfi.pth"
    checkpoints.save({"model": "pervfi", "config": config, "state_dict": registry.build_model(config).state_dict(),
                      "epoch": 1}, pervfi_file)
    for model, path, held in (("pervfi", asvfi_file, "asvfi"), ("asvfi", pervfi_file, "pervfi")):
        fails_with(capsys, re.escape(f"{path}: holds a checkpoint of {held}, not {model}; pass --model {held}"),
                   "--model", model, "--weights", path, "--input", odd_video, "--output", tmp_path / "x.mp4")


def test_a_flow_estimator_asked_for_by_name_runs_or_stops_the_command(tmp_path, odd_video, monkeypatch, capsys):
    """DIS stands in only for a checkpoint's default estimator (with a warning), never for a named one."""
    import weights
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    config = registry.default_config("pervfi", width=0.125, steps_per_level=2)
    path = tmp_path / "tiny_pervfi.pth"
    checkpoints.save({"model": "pervfi", "config": config, "state_dict": registry.build_model(config).state_dict(),
                      "epoch": 1}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "dis instead of" warning before the error: nothing falls back
        message = fails_with(capsys, r"--flow-estimator raft_sintel cannot run: .*file raft-sintel\.pth not found",
                             "--model", "pervfi", "--weights", path, "--flow-estimator", "raft_sintel",
                             "--input", odd_video, "--output", tmp_path / "x.mp4")
    assert "instead of" not in message
    assert not (tmp_path / "x.mp4").exists()


def test_a_missing_snapshot_of_a_trained_run_lists_what_the_run_has(tmp_path, monkeypatch, capsys):
    """Training again (--scale 4 --save-every 1) would make another model; the run's own files help."""
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "weights" / "asvfi"
    weights.mkdir(parents=True)
    (weights / "adam_2e-4.pth").touch()
    argv = ("--optimizer", "adam", "--lr", "2e-4", "-s", 4, "--epoch", 1, "--data-root", tmp_path, "--dataset", "demo")
    message = fails_with(capsys, "adam_2e-4_epoch1.pth: run adam_2e-4 has no epoch-1 snapshot; it kept no epoch "
                                 "snapshots", *argv)
    assert f"without --epoch its latest checkpoint {Path('weights/asvfi/adam_2e-4.pth')} is used" in message
    assert "--scale" not in message
    (weights / "adam_2e-4_epoch2.pth").touch()
    fails_with(capsys, r"no epoch-1 snapshot; its only snapshot is epoch 2 \(--epoch N\); without --epoch", *argv)
    for name in ("adam_2e-4_epoch10.pth", "adam_2e-4_best.pth", "adam_2e-4_x_epoch3.pth", "adamw_2e-4_epoch4.pth"):
        (weights / name).touch()
    fails_with(capsys, r"no epoch-1 snapshot; its snapshots are epochs 2, 10 \(--epoch N\); without --epoch", *argv)


def test_single_video_failures_give_clear_messages(tmp_path, odd_video, capsys):
    silent = write_video(tmp_path / "silent.mp4", moving_frames(3, 24, 32), audio=False)
    with pytest.warns(UserWarning, match="no audio stream"):
        assert run("--model", "repeat", "--input", silent, "--output", tmp_path / "silent_2x.mp4") == 0
    assert video_io.probe(tmp_path / "silent_2x.mp4").has_audio is False

    one = write_video(tmp_path / "one.mp4", moving_frames(1, 24, 32))
    fails_with(capsys, "only 1 frame; interpolation needs at least 2", "--model", "blend", "--input", one,
               "--output", tmp_path / "one_2x.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4000)
    fails_with(capsys, "broken.mp4: cannot be read", "--model", "blend", "--input", broken,
               "--output", tmp_path / "broken_2x.mp4")
    fails_with(capsys, "--fps 60: not an integer multiple .* 25 fps", "--model", "blend", "--input", odd_video,
               "--output", tmp_path / "x.mp4", "--fps", 60)
    assert not any((tmp_path / name).exists() for name in ("x.mp4", "one_2x.mp4", "broken_2x.mp4"))
    for output in ("x.webm", "x"):  # a container it does not write is refused, not written as MP4
        with pytest.raises(SystemExit):
            run("--model", "blend", "--input", odd_video, "--output", tmp_path / output)
        assert f"{tmp_path / output}: the video formats written are .mp4, .mov, .mkv, .avi" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"x\.webm: cannot write \.webm; the video formats written are"):
        video_io.VideoWriter(tmp_path / "x.webm", 25, 24, 32)
    assert not list(tmp_path.glob("x*"))


def test_an_output_extension_in_capitals_is_accepted(tmp_path, odd_video):
    """A camera's naming (clip.MP4): the case of the extension does not matter, as to VideoWriter."""
    args = inference.parse_args(["--model", "blend", "--input", str(odd_video), "--output", str(tmp_path / "x.MP4")])
    assert Path(args.output).name == "x.MP4"


def test_a_soundtrack_ending_well_before_the_picture_is_named_in_a_warning(tmp_path):
    """60 frames (2.4 s) over 0.8 s of sound: the last 1.6 s are interpolated on silence."""
    frames = moving_frames(60, 24, 32)
    source = tmp_path / "short sound.mp4"
    with video_io.VideoWriter(source, 25, 32, 24, audio=(tone(0.8), 16000)) as writer:
        for frame in frames:
            writer.write(frame)
    with pytest.warns(UserWarning, match=r"short sound\.mp4: the audio ends at 0\.8\d s, 1\.5\d s before the last "
                                         r"frame \(2\.40 s\); the frames after it are interpolated on silence"):
        assert run("--model", "repeat", "--input", source, "--output", tmp_path / "out.mp4") == 0


def test_fps_asked_of_an_ntsc_input_says_the_rate_it_gives(capsys):
    assert inference.resolve_scale(None, 50, 25.0) == 2 and capsys.readouterr().err == ""
    assert inference.resolve_scale(None, 60, 30000 / 1001) == 2
    assert "--fps 60 is 2x of the input's 29.97 fps; the output runs at 59.94 fps" in capsys.readouterr().err


def test_fps_below_twice_the_input_or_off_a_whole_multiple_or_against_scale_is_refused(capsys):
    for fps in (25, 30, 51):
        with pytest.raises(ASVFIError, match=rf"--fps {fps}: not an integer multiple \(at least 2x\) of the "
                                             rf"input's 25 fps"):
            inference.resolve_scale(None, fps, 25.0)
    with pytest.raises(ASVFIError, match=r"--scale 4 and --fps 50 disagree \(the input is 25 fps\)"):
        inference.resolve_scale(4, 50, 25.0)
    assert inference.resolve_scale(2, 50, 25.0) == 2 and inference.resolve_scale(4, None, 25.0) == 4
    assert inference.resolve_scale(None, 100, 25.0) == 4 and capsys.readouterr().err == ""


def test_a_missing_input_is_named_as_missing(tmp_path, capsys):
    fails_with(capsys, re.escape(f"{tmp_path / 'nowhere.mp4'}: no such file or folder"), "--model", "blend",
               "--input", tmp_path / "nowhere.mp4", "--output", tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("argv, message", [
    (["--output", "x.mp4"], "--input and --output go together"),
    (["--input", "x.mp4"], "--input and --output go together"),
    (["--fps", "50"], "--fps is for single-video mode (--input/--output); the test split uses --scale"),
    (["-s", "1"], "--scale 1: must be at least 2"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--tile", "64", "--tile-overlap", "-1"], "--tile-overlap -1 must be in [0, --tile 64)"),
])
def test_flag_values_and_combinations_that_cannot_work_are_refused_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit):
        inference.parse_args(["--model", "blend", *argv])
    assert message in capsys.readouterr().err


def test_pervfi_samples_at_its_configs_heat_unless_told_otherwise():
    """Without --heat PerVFI samples at its config's default, 0.3 as in the released inference code."""
    args = inference.parse_args(["--model", "pervfi"])
    assert inference.pervfi_overrides(args) == {"heat": registry.default_config("pervfi")["heat"]} == {"heat": 0.3}


def test_impossible_scale_combinations_are_errors(tmp_path, odd_video, checkpoint, capsys):
    four = save_tiny_checkpoint(tmp_path / "tiny4x.pth", scale=4, steps=0)
    for scale, advice in ((2, "a model trained for 2x reaches it"), (8, "a model trained for 2x or 8x reaches it")):
        fails_with(capsys, re.escape(f"trained for 4x cannot produce {scale}x: it reaches 4x, 16x, 64x, ... "
                                     f"(powers of 4, by recursion); {advice}"),
                   "--weights", four, "--input", odd_video, "--output", tmp_path / "x.mp4", "-s", scale)
    # main.py trains no 3x model: the advice names the models that take any scale instead
    message = fails_with(capsys, r"trained for 2x cannot produce 3x: it reaches 2x, 4x, 8x, \.\.\. (.|\n)*no model "
                                 r"main.py trains \(2x, 4x, 8x\) reaches it; --model pervfi and the baselines",
                         "--weights", checkpoint, "--input", odd_video, "--output", tmp_path / "x.mp4", "-s", 3)
    assert "trained for 3x" not in message
    assert interpolate.pass_scales(2, 8, any_t=False) == [2, 2, 2]
    assert interpolate.pass_scales(4, 16, any_t=False) == [4, 4]
    assert interpolate.pass_scales(2, 6, any_t=True) == [6]
    with pytest.raises(ASVFIError, match="trained for 2x cannot produce 6x"):
        interpolate.pass_scales(2, 6, any_t=False)


def test_a_scale_below_2_is_refused_for_every_kind_of_model():
    for any_t in (False, True):
        with pytest.raises(ASVFIError, match="--scale 1: the scale must be at least 2"):
            interpolate.pass_scales(2, 1, any_t=any_t)


def test_a_changed_checkpoint_makes_the_output_stale_and_keeps_the_ground_truth(tmp_path, capsys):
    import prepare
    for group in (1, 2, 3):
        video = tmp_path / "demo" / "Cat" / f"v_Cat_g0{group}_c01.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        with video_io.VideoWriter(video, 25, 32, 32, audio=(tone(0.4), 16000)) as writer:
            for frame in moving_frames(5, 32, 32, seed=group):
                writer.write(frame)
    prepare.prepare(tmp_path, "demo", show_progress=False)
    weights = tmp_path / "asvfi.pth"
    save_tiny_checkpoint(weights, steps=1)
    argv = ["--model", "asvfi", "--checkpoint", str(weights), "--data-root", str(tmp_path), "--dataset", "demo",
            "-s", "2", "--device", "cpu"]
    assert inference.main(argv) == 0
    (test,) = dataset.read_split(tmp_path / "demo_split.csv", "test")
    stem = Path(test.path)
    out = tmp_path / "ASVFI" / "scale" / "2_asvfi" / stem.parent / stem.stem
    gt = tmp_path / "GT" / "scale" / "2" / stem.parent / stem.stem
    first, gt_stamp = (out / "frame_00001.png").read_bytes(), (gt / "frame_00001.png").stat().st_mtime_ns
    capsys.readouterr()
    save_tiny_checkpoint(weights, steps=3)  # same path, other weights: another file identity
    assert inference.main(argv) == 0
    assert "1 video(s) written" in capsys.readouterr().out
    assert (out / "frame_00001.png").read_bytes() != first
    assert (gt / "frame_00001.png").stat().st_mtime_ns == gt_stamp


def test_videos_sharing_a_stem_get_their_own_output_and_gt_folders(demo_root, tmp_path):
    import prepare
    root = copy_demo(demo_root, tmp_path)
    folder = root / "demo" / "PulsingDisc"
    wave = (0.2 * np.sin(np.arange(8000) / 3)).astype(np.float32)  # prepare keeps videos with sound only
    with video_io.VideoWriter(folder / "v_PulsingDisc_g01_c01.mp4", 25, 64, 48, audio=(wave, 16000)) as writer:
        for i in range(9):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    prepare.prepare(root, "demo", show_progress=False)
    assert run("--model", "blend", "--data-root", root, "--dataset", "demo", "-s", 2) == 0
    for model in ("Blend", "GT"):
        base = root / model / "scale" / "2" / "PulsingDisc"
        avi, mp4 = (video_io.read_png_frames(base / f"v_PulsingDisc_g01_c01_{ext}") for ext in ("avi", "mp4"))
        assert avi.shape == (47, 240, 320, 3) and mp4.shape == (9, 48, 64, 3)
        assert not (base / "v_PulsingDisc_g01_c01").exists()
    blend = root / "Blend" / "scale" / "2" / "PulsingDisc"
    assert (blend / "v_PulsingDisc_g01_c01_avi.mp4").is_file() and (blend / "v_PulsingDisc_g01_c01_mp4.mp4").is_file()
    assert (root / "GT" / "scale" / "2" / "BouncingBall" / "v_BouncingBall_g01_c01").is_dir()  # the usual layout
    scored = evaluate.list_videos(root / "GT" / "scale" / "2", runs.dataset_paths(root, "demo")["split_csv"])
    assert {("PulsingDisc", "v_PulsingDisc_g01_c01_avi"), ("PulsingDisc", "v_PulsingDisc_g01_c01_mp4")} <= set(scored)


def test_without_lr_each_script_looks_for_the_run_its_model_preset_trains():
    """main.py trains pervfi at its preset's 5e-4, so inference.py and evaluate.py must look there too."""
    for parse in (inference.parse_args, evaluate.parse_args):
        assert parse(["--model", "pervfi"]).lr == "5e-4"
        assert parse(["--model", "asvfi"]).lr == "6e-4"
        assert parse(["--model", "pervfi", "--lr", "1e-4"]).lr == "1e-4"
    assert main.parse_args(["--model", "pervfi", "--dataset", "demo"]).lr == "5e-4"


def test_generated_scales_are_those_of_the_run_asked_for_and_test_set_outputs_are_kept_per_run(tmp_path):
    for scale, run_ in ((2, "adamw_6e-4"), (8, "adamw_6e-4"), (4, "adamw_6e-4_epoch5"), (16, "adam_1e-3")):
        runs.output_dir(tmp_path, "asvfi", scale, run_).mkdir(parents=True)
    runs.output_dir(tmp_path, "asvfi", 32, "adamw_6e-4").write_text("")  # a file, not a folder of frames
    runs.output_dir(tmp_path, "blend", 2).mkdir(parents=True)
    (runs.output_dir(tmp_path, "blend", 4).parent / "4_old").mkdir()
    assert runs.generated_scales(tmp_path, "asvfi", "adamw_6e-4") == [2, 8]
    assert runs.generated_scales(tmp_path, "asvfi", "adamw_6e-4_epoch5") == [4]
    assert runs.generated_scales(tmp_path, "blend") == [2]
    assert runs.generated_scales(tmp_path, "pervfi", "adamw_5e-4") == []
    assert (runs.testset_output_dir(tmp_path, "asvfi", "flavr-ucf101", "adamw_6e-4")
            == tmp_path / "ASVFI" / "flavr-ucf101" / "adamw_6e-4")
    assert runs.testset_output_dir(tmp_path, "blend", "flavr-ucf101") == tmp_path / "Blend" / "flavr-ucf101"


def test_pervfi_outputs_record_the_flow_estimator_that_ran():
    """--flow-estimator reaches PerVFI's config, and the output identity names the estimator in use."""
    args = inference.parse_args(["--model", "pervfi", "--flow-estimator", "dis", "--heat", "0.5"])
    assert inference.pervfi_overrides(args) == {"heat": 0.5, "flow_estimator": "dis"}
    assert inference.pervfi_overrides(inference.parse_args(["--model", "asvfi"])) == {}
    network = registry.build_model(registry.default_config("pervfi", width=0.125, **inference.pervfi_overrides(args)))
    network.set_flow_estimator()
    settings = inference.settings_of(args, network)
    assert settings["flow_estimator_used"] == "dis" and settings["config"]["flow_estimator"] == "dis"


@pytest.mark.parametrize("model", ["asvfi", "dis"])
def test_a_flow_estimator_for_another_model_than_pervfi_is_refused_rather_than_ignored(model, capsys):
    with pytest.raises(SystemExit):
        inference.parse_args(["--model", model, "--flow-estimator", "raft"])
    assert f"--flow-estimator is PerVFI's (--model pervfi): --model {model} would ignore it" in capsys.readouterr().err


def test_pervfi_output_records_name_the_seed_and_not_the_batch_size():
    """A sample's noise is drawn per window (the frames do not depend on --batch: see test_pervfi.py),
    so --batch is not in the records and an output made at another batch size is this run's."""
    network = registry.build_model(registry.default_config("pervfi", width=0.125, heat=0.3))
    network.set_flow_estimator("dis")

    def settings(*flags):
        return inference.settings_of(inference.parse_args(["--model", "pervfi", *flags]), network)
    assert settings("--batch", "2") == settings("--batch", "4")
    assert settings("--seed", "1") != settings("--seed", "2")


@pytest.mark.parametrize("scale", [2, 4])
def test_a_flavr_release_interpolates_a_video_as_it_is_at_its_own_scale(odd_video, tmp_path, scale):
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio="none", scale=scale))
    release = tmp_path / f"FLAVR_{scale}x.pth"
    torch.save({"epoch": 200, "state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, release)
    output = tmp_path / "flavr.mp4"
    assert run("--checkpoint", release, "--input", odd_video, "--output", output) == 0  # no -s: the release's
    assert video_io.probe(output).n_frames == (7 - 1) * scale + 1


def test_evaluating_outputs_of_a_checkpoint_that_changed_since_warns_and_says_so_in_the_report(
        demo_root, checkpoint, tmp_path, capsys):
    root = copy_demo(demo_root, tmp_path / "data")
    weights = tmp_path / "run.pth"
    shutil.copy(checkpoint, weights)
    common = ["--checkpoint", weights, "--data-root", root, "--dataset", "demo", "-s", 2, "--limit", 1]
    assert run(*common) == 0
    scored = [str(a) for a in common] + ["--metrics", "psnr", "--offline", "--out-dir", str(tmp_path)]
    assert evaluate.main(scored) == 0
    assert "made by" not in capsys.readouterr().err
    stamp = weights.stat().st_mtime_ns + 10 ** 9  # main.py rewrote the run's checkpoint
    os.utime(weights, ns=(stamp, stamp))
    with pytest.warns(UserWarning, match=r"1 output\(s\) \(.*\) were made by .*run.pth before it last changed"):
        assert evaluate.main(scored) == 0
    assert "NOTE 1 output(s) were made by an earlier state of their checkpoint file" in capsys.readouterr().out


def test_evaluate_scores_a_run_at_the_one_scale_inference_wrote(demo_root, tmp_path, capsys):
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio="none", scale=4))
    release = tmp_path / "FLAVR_4x.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, release)
    root = copy_demo(demo_root, tmp_path / "data")
    common = ["--checkpoint", str(release), "--data-root", str(root), "--dataset", "demo", "--limit", "1"]
    assert run(*common) == 0  # no -s: the release's 4x
    assert evaluate.main([*common, "--metrics", "psnr", "--offline", "--out-dir", str(tmp_path)]) == 0
    assert "4x: 1 of 1 scored" in capsys.readouterr().out
    (runs.output_dir(root, "asvfi", 2, "FLAVR_4x")).mkdir(parents=True)
    with pytest.raises(SystemExit):
        evaluate.parse_args([*common])
    assert "holds frames of this run at 2x, 4x: choose one with -s" in capsys.readouterr().err


def test_a_tile_no_larger_than_the_default_overlap_is_refused_saying_the_overlap_is_the_default(capsys):
    with pytest.raises(SystemExit):
        inference.parse_args(["--tile", "32"])
    assert "--tile-overlap 32 (the default) must be in [0, --tile 32)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference.parse_args(["--tile", "64", "--tile-overlap", "64"])
    assert "--tile-overlap 64 must be in [0, --tile 64)" in capsys.readouterr().err
    assert inference.parse_args(["--tile", "64"]).tile_overlap == inference.TILE_OVERLAP
