"""inference.py --dataset <test set>: raw predictions per sample, 8-bit views, identity, input-count checks."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import identity
import inference
import registry
import runs
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
    network = registry.load_model(checkpoint)[0].eval()
    crop = slice(4, 228)
    inputs = torch.stack([torch.from_numpy(frame(root / "sample_000" / f"frame{i}.png")[:, crop, crop])
                          for i in range(4)])[None]
    n_audio = inference.dataset.audio_samples_for(25, 1)
    audio, times = inference.dataset.audio_segment(None, 0.0, 1 / 25, n_audio)
    with torch.no_grad():
        raw = network(inputs, audio=torch.from_numpy(audio[None]), audio_times=torch.from_numpy(times[None]),
                      has_audio=torch.zeros(1, dtype=torch.bool))["pred"][0].numpy()
    np.testing.assert_allclose(pred, raw, atol=1e-5)
    assert identity.read_identity(out)["checkpoint"]["size"] == checkpoint.stat().st_size


def test_missing_file_is_named(triplets, capsys):
    (runs.testset_dir(triplets, "ucf101-triplets") / "sample_000" / "frame_02.png").unlink()
    assert run("--model", "repeat", "--data-root", triplets, "--dataset", "ucf101-triplets") == 1
    assert "sample_000/frame_02.png" in capsys.readouterr().err
