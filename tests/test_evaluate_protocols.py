"""evaluate.py: rows rescored when frames change, a wrong-size frame fails only its video, and
image test sets scored under a published protocol with the paper's row."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import evaluate
import protocols
import runs
from test_evaluate import SCALE, blend_of_neighbours, csv_path, data, run, write_frames  # noqa: F401


def test_regenerated_frames_under_the_same_run_are_rescored(data):
    root, frames = data
    assert run(root) == 0
    first = pd.read_csv(csv_path()).set_index("video")
    folder = runs.output_dir(root, "blend", SCALE) / "Alpha" / "v_Alpha_g01_c01"
    write_frames(folder, frames["Alpha", "v_Alpha_g01_c01"])  # regenerated: now equal to the ground truth
    stamp = os.stat(folder / "frame_00001.png").st_mtime_ns + 10 ** 9
    os.utime(folder / "frame_00001.png", ns=(stamp, stamp))
    assert run(root) == 0
    second = pd.read_csv(csv_path()).set_index("video")
    assert len(second) == 3 and second.loc["v_Alpha_g01_c01", "psnr"] == pytest.approx(100.0)
    assert second.loc["v_Beta_g01_c01", "psnr"] == first.loc["v_Beta_g01_c01", "psnr"]
    assert second.loc["v_Alpha_g01_c01", "out_digest"] != first.loc["v_Alpha_g01_c01", "out_digest"]


def test_wrong_size_frame_mid_video_fails_that_video_naming_the_file(data, capsys):
    root, _ = data
    bad = runs.output_dir(root, "blend", SCALE) / "Alpha" / "v_Alpha_g01_c01" / "frame_00004.png"
    Image.open(bad).resize((32, 24)).save(bad)
    missing = runs.output_dir(root, "blend", SCALE) / "Beta" / "v_Beta_g01_c01"
    for path in missing.glob("*.png"):
        path.unlink()
    missing.rmdir()
    assert run(root) == 1
    table = pd.read_csv(csv_path(), keep_default_na=False).set_index("video")
    assert str(bad) in table.loc["v_Alpha_g01_c01", "error"]
    assert table.loc["v_Alpha_g01_c02", "error"] == "" and table.loc["v_Alpha_g01_c02", "psnr"] != ""
    printed = capsys.readouterr().out
    assert "1 of 3 scored, 1 missing output: Beta/v_Beta_g01_c01, 1 failed: Alpha/v_Alpha_g01_c01" in printed


def flavr_testset(root, n_samples=3, size=(240, 320)):
    rng = np.random.default_rng(0)
    targets = {}
    for k in range(n_samples):
        folder = runs.testset_dir(root, "flavr-ucf101") / f"sample_{k:03d}"
        folder.mkdir(parents=True)
        for name in ("frame0.png", "frame1.png", "frame2.png", "frame3.png", "framet.png"):
            frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(frame).save(folder / name)
        targets[folder.name] = frame
    return targets


def test_flavr_protocol_on_its_ucf101_set_prints_the_paper_row(data, capsys):
    root, _ = data
    targets = flavr_testset(root)
    out_root = runs.testset_output_dir(root, "blend", "flavr-ucf101")
    expected = []
    for index, (sample, target) in enumerate(sorted(targets.items())):
        if index == 2:
            continue  # a missing prediction is counted, not dropped
        gt = torch.from_numpy(target).permute(2, 0, 1).float() / 255
        pred = (gt + 0.03 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(index)))[None]
        (out_root / sample).mkdir(parents=True)
        np.save(out_root / sample / "pred.npy", pred.numpy())
        top, left = protocols.center_crop_offsets(240, 320, 224)
        crop = (slice(None), slice(top, top + 224), slice(left, left + 224))
        expected.append(protocols.score_frame("flavr", pred[0][crop], gt[crop]))
    code = run(root, "--dataset", "flavr-ucf101", "--protocol", "flavr", metrics=None)
    assert code == 1  # one prediction missing
    path = runs.eval_csv_path("blend", None, "flavr-ucf101").with_name("Blend_flavr-ucf101_flavr.csv")
    summary = json.loads(Path(str(path.with_suffix("")) + "_summary.json").read_text())
    psnr = np.mean([e["psnr"] for e in expected])
    ssim = np.mean([e["ssim"] for e in expected])
    assert summary["metrics"]["psnr"]["mean"] == pytest.approx(psnr, abs=1e-5)
    assert summary["metrics"]["ssim"]["mean"] == pytest.approx(ssim, abs=1e-6)
    assert summary["missing_output"] == ["flavr-ucf101/sample_002"]
    assert set(pd.read_csv(path)["protocol"]) == {"flavr"}  # each row says which protocol scored it
    printed = capsys.readouterr().out
    assert f"PSNR {psnr:.2f} | SSIM {ssim:.3f}" in printed and "protocol flavr: reproduces tarun005/FLAVR@" in printed
    assert "centre 224x224 crop; raw float prediction;" in printed  # what this set's scoring did
    assert "std and N over samples" in printed


def test_a_protocol_on_videos_says_it_scored_the_8_bit_pngs_not_the_references_prediction(data, capsys):
    """Inference keeps a video's frames as rounded PNGs: VFIBenchmark's truncation cannot happen, and
    the report must not claim it did."""
    root, _ = data
    assert run(root, "--protocol", "vfibench", metrics="psnr") == 0
    printed = capsys.readouterr().out
    assert "frames cut to even size; prediction clamped and rounded to 8 bits;" in printed
    assert "not the reference's prediction clamped and truncated to 8 bits" in printed
    summary = json.loads(Path(str(runs.eval_csv_path("blend", None, "demo", SCALE).with_suffix("")).replace(
        f"_s{SCALE}", f"_s{SCALE}_vfibench") + "_summary.json").read_text())
    assert "truncat" in summary["protocol"]["departures"] and "truncated" not in summary["protocol"]["summary"]


def test_protocol_refuses_metrics_it_does_not_define(data, capsys):
    root, _ = data
    assert run(root, "--protocol", "flavr", metrics="psnr,lpips") == 1
    assert "does not define lpips" in capsys.readouterr().err
