"""evaluate.py under torchrun: two gloo processes split the videos and rank 0 writes the same CSV,
summary and (gathered, not per-rank) FVD as one process."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import evaluate
import launch
import runs
import weights
from test_evaluate import SCALE, StandInI3D, blend_of_neighbours, moving_pattern, write_frames

LENGTHS = (17, 33, 12, 20, 16)  # five videos: rank 0 gets three, rank 1 two; one without an FVD clip


def flags(root, weights_dir, out_dir):
    return ["--model", "blend", "-s", str(SCALE), "--data-root", str(root), "--metrics", "psnr,ssim,fvd",
            "--device", "cpu", "--offline", "--weights-dir", str(weights_dir), "--out-dir", str(out_dir)]


def report(out_dir):
    csv = runs.eval_csv_path("blend", None, "demo", SCALE, out_dir=out_dir)
    return pd.read_csv(csv), json.loads(Path(str(csv.with_suffix("")) + "_summary.json").read_text())


def test_two_gloo_processes_write_the_one_process_report(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root, weights_dir = tmp_path / "data", tmp_path / "weights"
    rng = np.random.default_rng(3)
    for index, n_frames in enumerate(LENGTHS):
        gt = moving_pattern(rng, n_frames, 16, 20)
        category = "Alpha" if index % 2 else "Beta"
        write_frames(runs.gt_dir(root, SCALE) / category / f"v_{category}_g0{index}_c01", gt)
        write_frames(runs.output_dir(root, "blend", SCALE) / category / f"v_{category}_g0{index}_c01",
                     blend_of_neighbours(gt, SCALE))
    weights_dir.mkdir()
    torch.jit.script(StandInI3D()).save(str(weights_dir / weights.REGISTRY["i3d"].filename))

    assert evaluate.main(flags(root, weights_dir, tmp_path / "one")) == 0
    done = launch.two_process_torchrun(["evaluate.py", *flags(root, weights_dir, tmp_path / "two")],
                                       tmp_path / "torchrun_logs")
    assert done.returncode == 0, done.stderr[-3000:]

    (one, one_summary), (two, two_summary) = report(tmp_path / "one"), report(tmp_path / "two")
    assert len(one) == len(LENGTHS)
    pd.testing.assert_frame_equal(one, two)
    assert one_summary["metrics"]["fvd"]["clips"] == two_summary["metrics"]["fvd"]["clips"] == 1 + 2 + 1 + 1
    assert two_summary["metrics"]["fvd"]["value"] == pytest.approx(one_summary["metrics"]["fvd"]["value"], abs=1e-9)
    for name in ("psnr", "ssim"):
        assert two_summary["metrics"][name] == one_summary["metrics"][name]
    assert done.stdout.count("per-video results:") == 1  # rank 0 alone reports
