"""inference.py → evaluate.py on synthetic image test sets in their published layouts: the blend
baseline's predictions scored under the reference's protocol give the PSNR computed here from the
input PNGs alone."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import evaluate
import inference
import runs

# dataset → (protocol, input names (the two around the target last), target name, frame size HxW)
SETS = {
    "ucf101-triplets": ("rife", ("frame_00.png", "frame_02.png"), "frame_01_gt.png", (40, 48)),
    "flavr-ucf101": ("flavr", ("frame0.png", "frame3.png", "frame1.png", "frame2.png"), "framet.png", (228, 240)),
}
SAMPLES = 3


def make_testset(root, dataset):
    """Smooth random frames (PIL-written PNGs) per sample; {sample: (left, right, target) uint8}."""
    _, inputs, target, (height, width) = SETS[dataset]
    rng = np.random.default_rng(7)
    frames = {}
    for k in range(SAMPLES):
        folder = runs.testset_dir(root, dataset) / f"s{k}"
        folder.mkdir(parents=True)
        coarse = rng.random((height // 4, width // 4, 3))
        for index, name in enumerate(inputs + (target,)):
            frame = np.kron(np.roll(coarse, index, axis=1), np.ones((4, 4, 1))) + rng.normal(0, 0.05, (height, width, 3))
            image = np.clip(np.round(frame * 255), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / name)
            frames.setdefault(folder.name, {})[name] = image
    return {sample: (f[inputs[-2]], f[inputs[-1]], f[target]) for sample, f in frames.items()}


def centre_crop(frame, size):
    top, left = (frame.shape[0] - size) // 2, (frame.shape[1] - size) // 2
    return frame[top:top + size, left:left + size]


def expected_psnr(left, right, target, protocol, dataset):
    """The reference's PSNR of the mid-point blend under `protocol` (FLAVR's UCF101 set is read at its
    centre 224 crop whatever the protocol, as the model saw it): flavr scores the raw float prediction
    with +1e-8; rife rounds to 8 bits, no epsilon; vfibench truncates to 8 bits, +1e-8; asvfi clamps
    and rounds (its PNGs), MSE floor."""
    left, right, target = (f.astype(np.float32) / np.float32(255) for f in (left, right, target))
    if dataset == "flavr-ucf101":
        left, right, target = (centre_crop(f, 224) for f in (left, right, target))
    pred = np.float32(0.5) * left + np.float32(0.5) * right
    if protocol in ("rife", "asvfi"):
        pred = np.round(np.clip(pred, 0, 1) * 255) / np.float32(255)
    elif protocol == "vfibench":
        pred = np.floor(np.clip(pred, 0, 1) * 255) / np.float32(255)
    mse = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)
    return -10 * np.log10(mse + (1e-8 if protocol in ("flavr", "vfibench") else 0.0))


FRAME_PROTOCOLS = ("asvfi", "flavr", "rife", "vfibench")


def score(common, protocol, out_dir, dataset):
    """evaluate.py under `protocol`: its per-sample table (indexed by sample) and the printed output."""
    assert evaluate.main(common + ["--protocol", protocol, "--metrics", "psnr,ssim", "--offline",
                                   "--out-dir", str(out_dir)]) == 0
    suffix = "" if protocol == "asvfi" else f"_{protocol}"
    csv = next(Path(out_dir).rglob(f"Blend_*{dataset}{suffix}.csv"))
    return pd.read_csv(csv).set_index("video"), csv


@pytest.mark.parametrize("dataset", list(SETS))
def test_blend_inference_then_evaluation_gives_each_protocols_psnr(dataset, tmp_path, capsys):
    root = tmp_path / "data"
    frames = make_testset(root, dataset)
    common = ["--model", "blend", "--dataset", dataset, "--data-root", str(root), "--device", "cpu"]
    assert inference.main(common) == 0
    for protocol in FRAME_PROTOCOLS:
        table, csv = score(common, protocol, tmp_path / "out", dataset)
        assert sorted(table.index) == sorted(frames)
        for sample, (left, right, target) in frames.items():
            assert table.loc[sample, "psnr"] == pytest.approx(
                expected_psnr(left, right, target, protocol, dataset), abs=1e-5), protocol
        summary = json.loads(Path(str(csv.with_suffix("")) + "_summary.json").read_text())
        assert summary["metrics"]["psnr"]["mean"] == pytest.approx(table["psnr"].mean(), abs=1e-9)
        assert summary["protocol"]["name"] == protocol
    assert f"{table['psnr'].mean():.2f}" in capsys.readouterr().out  # the paper-style row


def make_vimeo_septuplets(root, sequences=("00001/0001", "00001/0002", "00002/0001")):
    """Vimeo-90K's layout: sep_testlist.txt and sequences/<xxxxx>/<yyyy>/im1..im7.png; {id: (im3, im5, im4)}."""
    folder = runs.testset_dir(root, "vimeo-septuplet")
    rng = np.random.default_rng(3)
    frames = {}
    for sequence in sequences:
        coarse = rng.random((8, 12, 3))
        images = {}
        for n in range(1, 8):
            frame = np.kron(np.roll(coarse, n, axis=1), np.ones((4, 4, 1))) + rng.normal(0, 0.05, (32, 48, 3))
            images[n] = np.clip(np.round(frame * 255), 0, 255).astype(np.uint8)
            (folder / "sequences" / sequence).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[n]).save(folder / "sequences" / sequence / f"im{n}.png")
        frames[sequence] = (images[3], images[5], images[4])
    (folder / "sep_testlist.txt").write_text("\n".join(sequences) + "\n\n")
    return frames


def test_vimeo_septuplets_blend_under_each_protocol_scores_whole_frames(tmp_path):
    """FLAVR's Vimeo-90K test: im1,3,5,7 in, im4 out, whole frames (no 224 crop) under every protocol."""
    root = tmp_path / "data"
    frames = make_vimeo_septuplets(root)
    common = ["--model", "blend", "--dataset", "vimeo-septuplet", "--data-root", str(root), "--device", "cpu"]
    assert inference.main(common) == 0
    assert_each_protocol_scores_the_blend(common, frames, "vimeo-septuplet", tmp_path / "out")


def assert_each_protocol_scores_the_blend(common, frames, dataset, out_dir):
    """evaluate.py under every frame protocol gives each sample's PSNR of the blend of its inputs."""
    for protocol in FRAME_PROTOCOLS:
        table, _ = score(common, protocol, out_dir, dataset)
        expected = sorted(expected_psnr(*triple, protocol, dataset) for triple in frames.values())
        assert sorted(table["psnr"]) == pytest.approx(expected, abs=1e-5), protocol


def test_limit_takes_the_samples_inference_took_and_the_rest_count_as_missing(tmp_path, capsys):
    root = tmp_path / "data"
    make_testset(root, "ucf101-triplets")
    common = ["--model", "blend", "--dataset", "ucf101-triplets", "--data-root", str(root), "--device", "cpu"]
    assert inference.main(common + ["--limit", "2"]) == 0
    scored = common + ["--metrics", "psnr", "--offline", "--out-dir", str(tmp_path / "out")]
    assert evaluate.main(scored) == 1
    assert "2 of 3 scored, 1 missing output: ucf101-triplets/s2\n" in capsys.readouterr().out
    assert evaluate.main(scored + ["--limit", "2"]) == 0
    folder = runs.testset_dir(root, "ucf101-triplets")
    assert f"2 of 2 scored\nscored set: --limit 2: the first 2 of the 3 samples of {folder}\n" in capsys.readouterr().out


def test_vimeo_triplets_blend_under_each_protocol_scores_im2_from_im1_and_im3(tmp_path):
    """The Vimeo-90K triplet test (RIFE, EMA-VFI, PerVFI tables): im1, im3 in, im2 out, whole frames."""
    root = tmp_path / "data"
    folder = runs.testset_dir(root, "vimeo-triplet")
    rng = np.random.default_rng(4)
    frames = {}
    for sequence in ("00001/0001", "00003/0002"):
        (folder / "sequences" / sequence).mkdir(parents=True)
        images = [np.clip(np.round(rng.random((24, 40, 3)) * 255), 0, 255).astype(np.uint8) for _ in range(3)]
        for n, image in enumerate(images, start=1):
            Image.fromarray(image).save(folder / "sequences" / sequence / f"im{n}.png")
        frames[sequence] = (images[0], images[2], images[1])
    (folder / "tri_testlist.txt").write_text("00001/0001\n00003/0002\n")
    common = ["--model", "blend", "--dataset", "vimeo-triplet", "--data-root", str(root), "--device", "cpu"]
    assert inference.main(common) == 0
    assert_each_protocol_scores_the_blend(common, frames, "vimeo-triplet", tmp_path / "out")
