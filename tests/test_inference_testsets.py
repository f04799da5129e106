"""inference.py --dataset <test set>: raw predictions per sample, 8-bit views, identity, input-count and
target-time checks, finished samples skipped (--overwrite, --limit), nothing half-written left by a failure."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import identity
import inference
import registry
import runs
import testset_inference
import video_io
from test_inference import save_tiny_checkpoint


def run(*argv):
    return inference.main([str(a) for a in argv] + ["--device", "cpu"])


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_samples(root, names, size, n=2, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        for name in names:
            write_png(root / f"sample_{i:03d}" / name, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


@pytest.fixture
def triplets(tmp_path):
    make_samples(runs.testset_dir(tmp_path, "ucf101-triplets"), ("frame_00.png", "frame_01_gt.png", "frame_02.png"), 24)
    return tmp_path


def frame(path):
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float().div(255).numpy()


def silent_prediction(checkpoint, sample):
    """The network's raw output on a FLAVR UCF-101 sample's four inputs, centre-cropped to 224, no sound."""
    network = registry.load_model(checkpoint)[0].eval()
    crop = slice(4, 228)
    inputs = torch.stack([torch.from_numpy(frame(sample / f"frame{i}.png")[:, crop, crop]) for i in range(4)])[None]
    n_audio = inference.dataset.audio_samples_for(25, 1)
    audio, times = inference.dataset.audio_segment(None, 0.0, 1 / 25, n_audio)
    with torch.no_grad():
        return network(inputs, audio=torch.from_numpy(audio[None]), audio_times=torch.from_numpy(times[None]),
                       has_audio=torch.zeros(1, dtype=torch.bool))["pred"][0].numpy()


def test_blend_on_triplets_writes_raw_pred_png_and_identity(triplets, capsys):
    assert run("--model", "blend", "--data-root", triplets, "--dataset", "ucf101-triplets") == 0
    sample = runs.testset_dir(triplets, "ucf101-triplets") / "sample_001"
    out = runs.testset_output_dir(triplets, "blend", "ucf101-triplets") / "sample_001"
    pred = np.load(out / "pred.npy")
    assert pred.dtype == np.float32 and pred.shape == (1, 3, 24, 24)
    expected = (frame(sample / "frame_00.png") + frame(sample / "frame_02.png")) / 2
    np.testing.assert_allclose(pred[0], expected, atol=1e-6)  # unrounded: not a multiple of 1/255
    png = np.array(Image.open(out / "pred_0.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(png, np.clip(pred[0] * 255, 0, 255).round().astype(np.uint8))
    record = identity.read_identity(out)
    assert record["source"]["path"] == "ucf101_interp_ours/sample_001/frame_01_gt.png"
    assert (record["model"], record["frames"], record["scale"]) == ("blend", 1, 2)
    capsys.readouterr()
    assert run("--model", "blend", "--data-root", triplets, "--dataset", "ucf101-triplets") == 0
    assert "0 sample(s) written" in capsys.readouterr().out
    assert run("--model", "blend", "--data-root", triplets, "--dataset", "ucf101-triplets", "-s", 2) == 0
    assert "0 sample(s) written" in capsys.readouterr().out  # without -s the run is the 2x one


def test_asvfi_is_refused_on_a_two_frame_set_and_runs_raw_on_flavr(triplets, tmp_path, capsys):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pth")
    assert run("--weights", checkpoint, "--data-root", triplets, "--dataset", "ucf101-triplets") == 1
    assert "4 input frames" in capsys.readouterr().err

    root = make_samples(runs.testset_dir(tmp_path, "flavr-ucf101"),
                        ("frame0.png", "frame1.png", "frame2.png", "frame3.png", "framet.png"), 232, n=1)
    assert run("--weights", checkpoint, "--data-root", tmp_path, "--dataset", "flavr-ucf101") == 0
    out = runs.testset_output_dir(tmp_path, "asvfi", "flavr-ucf101", "tiny") / "sample_000"
    pred = np.load(out / "pred.npy")
    assert pred.shape == (1, 3, 224, 224)  # FLAVR's centre crop
    raw = silent_prediction(checkpoint, root / "sample_000")
    np.testing.assert_allclose(pred, raw, atol=1e-5)
    assert identity.read_identity(out)["checkpoint"]["size"] == checkpoint.stat().st_size


def test_missing_file_is_named(triplets, capsys):
    (runs.testset_dir(triplets, "ucf101-triplets") / "sample_000" / "frame_02.png").unlink()
    assert run("--model", "repeat", "--data-root", triplets, "--dataset", "ucf101-triplets") == 1
    err = capsys.readouterr().err
    assert "sample_000/frame_02.png" in err and f"(under --data-root {triplets})" in err


def test_repeat_on_a_two_frame_set_gives_the_first_input(triplets):
    assert run("--model", "repeat", "--data-root", triplets, "--dataset", "ucf101-triplets") == 0
    sample = runs.testset_dir(triplets, "ucf101-triplets") / "sample_000"
    pred = np.load(runs.testset_output_dir(triplets, "repeat", "ucf101-triplets") / "sample_000" / "pred.npy")
    np.testing.assert_array_equal(pred[0], frame(sample / "frame_00.png"))


def test_finished_samples_are_skipped_and_overwrite_and_limit_redo_only_what_they_say(triplets, capsys):
    argv = ("--model", "blend", "--data-root", triplets, "--dataset", "ucf101-triplets")
    out_root = runs.testset_output_dir(triplets, "blend", "ucf101-triplets")
    assert run(*argv, "--limit", 1) == 0
    assert f"1 sample(s) written to {out_root}, 0 already finished" in capsys.readouterr().out
    assert sorted(p.name for p in out_root.iterdir()) == ["sample_000"]
    assert identity.read_identity(out_root / "sample_000")["settings"]["testset"] == "ucf101-triplets"
    assert run(*argv) == 0
    assert f"1 sample(s) written to {out_root}, 1 already finished" in capsys.readouterr().out
    stamp = (out_root / "sample_001" / "pred.npy").stat().st_mtime_ns
    assert run(*argv, "--overwrite") == 0
    assert f"2 sample(s) written to {out_root}, 0 already finished" in capsys.readouterr().out
    assert (out_root / "sample_001" / "pred.npy").stat().st_mtime_ns != stamp


def test_a_failed_sample_leaves_no_partial_or_half_written_folder_and_the_rerun_finishes_it(
        triplets, monkeypatch, capsys):
    argv = ("--model", "blend", "--data-root", triplets, "--dataset", "ucf101-triplets")
    out_root = runs.testset_output_dir(triplets, "blend", "ucf101-triplets")
    write_png_frames, calls = video_io.write_png_frames, []

    def full_disk(folder, frames, **kwargs):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return write_png_frames(folder, frames, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(video_io, "write_png_frames", full_disk)
        assert run(*argv) == 1
    assert len(calls) == 2
    assert (f"{out_root}: cannot write the results ([Errno 28] No space left on device); free disk space or fix "
            f"the folder's permissions, then run again (finished samples are kept)") in capsys.readouterr().err
    assert sorted(p.name for p in out_root.iterdir()) == ["sample_000"]  # sample_001 failed: nothing of it
    (out_root / "sample_001.partial-999-0dead").mkdir()  # what a killed run leaves
    (out_root / "sample_001.partial-999-0dead" / "pred.npy").write_bytes(b"junk")
    assert run(*argv) == 0
    assert f"1 sample(s) written to {out_root}, 1 already finished" in capsys.readouterr().out
    assert sorted(p.name for p in out_root.iterdir()) == ["sample_000", "sample_001"]
    assert sorted(p.name for p in (out_root / "sample_001").iterdir()) == ["identity.json", "pred.npy", "pred_0.png"]


def test_a_sample_keeps_the_raw_prediction_and_views_each_target_clamped_to_8_bits(tmp_path):
    target = tmp_path / "im4.png"
    write_png(target, np.zeros((2, 3, 3), np.uint8))
    pred = np.stack([np.full((3, 2, 3), -0.25), np.full((3, 2, 3), 1.5), np.full((3, 2, 3), 0.5)])
    record = identity.output_record(target, tmp_path, 3, 2, "blend", None, {"testset": "vimeo-septuplet"})
    folder = tmp_path / "out" / "00001_0001"
    testset_inference.write_sample(folder, pred, record)
    raw = np.load(folder / "pred.npy")
    assert raw.dtype == np.float32 and raw.shape == (3, 3, 2, 3)
    np.testing.assert_array_equal(raw, pred.astype(np.float32))
    views = [np.array(Image.open(folder / f"pred_{k}.png")) for k in range(3)]
    assert [int(view.min()) for view in views] == [0, 255, 128] and all(view.shape == (2, 3, 3) for view in views)
    assert identity.is_current(folder, record)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["00001_0001"]


def test_a_model_trained_for_another_scale_gives_its_mid_frame_or_says_it_has_none(tmp_path, capsys):
    root = make_samples(runs.testset_dir(tmp_path, "flavr-ucf101"),
                        ("frame0.png", "frame1.png", "frame2.png", "frame3.png", "framet.png"), 232, n=1)
    four = save_tiny_checkpoint(tmp_path / "tiny4x.pth", scale=4, steps=0)
    assert run("--weights", four, "--data-root", tmp_path, "--dataset", "flavr-ucf101") == 0
    pred = np.load(runs.testset_output_dir(tmp_path, "asvfi", "flavr-ucf101", "tiny4x") / "sample_000" / "pred.npy")
    raw = silent_prediction(four, root / "sample_000")
    assert raw.shape[0] == 3 and pred.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(pred[0], raw[1], atol=1e-5)  # t = 2/4, not 1/4 or 3/4

    three = save_tiny_checkpoint(tmp_path / "tiny3x.pth", scale=3, steps=0)
    capsys.readouterr()
    assert run("--weights", three, "--data-root", tmp_path, "--dataset", "flavr-ucf101") == 1
    assert ("a model trained for 3x gives only t = [0.3333333333333333, 0.6666666666666666]; sample sample_000 "
            "asks for t = [0.5]") in capsys.readouterr().err
    assert not (runs.testset_output_dir(tmp_path, "asvfi", "flavr-ucf101", "tiny3x") / "sample_000").exists()


def test_a_baseline_on_a_four_frame_set_blends_its_middle_two_inputs(tmp_path):
    root = make_samples(runs.testset_dir(tmp_path, "flavr-ucf101"),
                        ("frame0.png", "frame1.png", "frame2.png", "frame3.png", "framet.png"), 232, n=1)
    assert run("--model", "blend", "--data-root", tmp_path, "--dataset", "flavr-ucf101") == 0
    pred = np.load(runs.testset_output_dir(tmp_path, "blend", "flavr-ucf101") / "sample_000" / "pred.npy")
    crop = slice(4, 228)  # FLAVR's centre crop
    expected = (frame(root / "sample_000" / "frame1.png") + frame(root / "sample_000" / "frame2.png")) / 2
    assert pred.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(pred[0], expected[:, crop, crop], atol=1e-6)
