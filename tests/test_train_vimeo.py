"""Training on Vimeo-90K septuplets (`main.py --dataset vimeo-septuplet`) on a tiny synthetic copy of
the published layout: which frames an item holds, the augmentation, and main.py end to end."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main
import runs
import testsets
from dataset import Sampling

HEIGHT, WIDTH, CROP = 48, 64, 32
TRAIN_IDS = ("00001/0001", "00001/0002", "00002/0001", "00003/0004")
TEST_IDS = ("00004/0001", "00004/0002", "00005/0003")
RUN = "adamw_6e-4"


def frame_pixels(sequence_number, frame_number):
    """Red = 30 x the frame number, green = 5 x the row, blue = 3 x the column + the sequence's number:
    every pixel says which frame, row and column it came from (PNG is lossless)."""
    rows, cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    return np.stack([np.full((HEIGHT, WIDTH), 30 * frame_number), 5 * rows, 3 * cols + sequence_number],
                    axis=-1).astype(np.uint8)


def make_vimeo(data_root, dataset="vimeo-septuplet"):
    """`{data_root}/vimeo_septuplet` (im1..im7) or `vimeo_triplet` (im1..im3): both list files (the
    train list ends with a blank line) and the frames of each sequence."""
    reader = testsets.TESTSETS[dataset]
    folder = runs.testset_dir(data_root, dataset)
    for number, sequence in enumerate(TRAIN_IDS + TEST_IDS):
        (folder / "sequences" / sequence).mkdir(parents=True)
        for n in range(1, reader.frames_per_sequence + 1):
            Image.fromarray(frame_pixels(number, n)).save(folder / "sequences" / sequence / f"im{n}.png")
    (folder / reader.list_files["train"]).write_text("\n".join(TRAIN_IDS) + "\n\n")
    (folder / reader.list_files["test"]).write_text("\n".join(TEST_IDS) + "\n")
    return folder


@pytest.fixture
def vimeo_root(tmp_path):
    make_vimeo(tmp_path / "data")
    return tmp_path / "data"


def windows(data_root, role, n_inputs, **sampling):
    root = runs.testset_dir(data_root, "vimeo-septuplet")
    return testsets.training_windows("vimeo-septuplet", root, role, n_inputs, Sampling(**sampling))


def decode(frames):
    """(frame numbers, rows, cols) of float (N, 3, h, w) frames made by frame_pixels."""
    pixels = (frames * 255).round().long()
    numbers = pixels[:, 0] // 30
    assert (numbers == numbers[:, :1, :1]).all(), "a frame mixes pixels of several frames"
    return numbers[:, 0, 0].tolist(), pixels[:, 1] // 5, pixels[:, 2] // 3


def all_frames(item):
    return torch.cat([item["inputs"], item["targets"]])


# ----------------------------------------------------------------------------- the items
@pytest.mark.parametrize("n_inputs, numbers", [(4, [1, 3, 5, 7]), (2, [3, 3, 5, 5])])
def test_validation_items_hold_the_flavr_frames_of_the_test_list(vimeo_root, n_inputs, numbers):
    data = windows(vimeo_root, "val", n_inputs)
    assert len(data) == len(TEST_IDS)
    for index, sequence in enumerate(TEST_IDS):
        item = data[index]
        assert item["video"] == sequence
        assert item["inputs"].shape == (4, 3, HEIGHT, WIDTH) and item["targets"].shape == (1, 3, HEIGHT, WIDTH)
        assert decode(item["inputs"])[0] == numbers and decode(item["targets"])[0] == [4]
        blue = (all_frames(item)[:, 2, 0, 0] * 255).round().long()
        assert (blue == len(TRAIN_IDS) + index).all(), "frames of another sequence"
        assert item["ts"].tolist() == [0.5] and not item["has_audio"]
        assert not item["audio"].any()
    again = windows(vimeo_root, "val", n_inputs)
    assert all(torch.equal(all_frames(data[i]), all_frames(again[i])) for i in range(len(data)))


@pytest.mark.parametrize("n_inputs, numbers", [(4, [1, 3, 5, 7]), (2, [3, 3, 5, 5])])
def test_training_crop_flips_and_reversal_act_alike_on_inputs_and_target(vimeo_root, n_inputs, numbers):
    data = windows(vimeo_root, "train", n_inputs, train=True, crop=CROP, windows_per_video=8, seed=3)
    assert len(data) == 8 * len(TRAIN_IDS)
    seen = {"hflip": set(), "vflip": set(), "reverse": set()}
    for index in range(len(data)):
        item = data[index]
        assert item["video"] == TRAIN_IDS[index // 8]
        assert item["inputs"].shape == (4, 3, CROP, CROP) and item["targets"].shape == (1, 3, CROP, CROP)
        frame_numbers, rows, cols = decode(all_frames(item))
        reverse = frame_numbers[:4] == numbers[::-1] and numbers != numbers[::-1]
        assert frame_numbers == (numbers[::-1] if reverse else numbers) + [4]
        assert (rows == rows[0]).all() and (cols == cols[0]).all(), "crop or flip differs between the frames"
        row_steps, col_steps = rows[0][:, 0].diff(), cols[0][0].diff()
        assert (row_steps == row_steps[0]).all() and abs(int(row_steps[0])) == 1  # one contiguous crop
        assert (col_steps == col_steps[0]).all() and abs(int(col_steps[0])) == 1
        assert item["ts"].tolist() == [0.5]
        seen["vflip"].add(int(row_steps[0]) < 0)
        seen["hflip"].add(int(col_steps[0]) < 0)
        seen["reverse"].add(reverse)
    assert all(values == {False, True} for values in seen.values()), seen


def test_training_draws_depend_only_on_seed_epoch_and_index(vimeo_root):
    def epoch_items(epoch, seed=0):
        data = windows(vimeo_root, "train", 4, train=True, crop=CROP, seed=seed)
        data.set_epoch(epoch)
        return [all_frames(data[i]) for i in range(len(data))]

    first = epoch_items(1)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_items(1)))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch_items(2)))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch_items(1, seed=1)))


# ----------------------------------------------------------------------------- main.py end to end
def train(data_root, out_dir, *flags):
    return main.main(["--dataset", "vimeo-septuplet", "--data-root", str(data_root), "--out-dir", str(out_dir),
                      "--device", "cpu", "--width", "0.125", "--crop", str(CROP), "--batch-size", "2",
                      "--workers", "0", "--epochs", "1", *flags])


def assert_trained_one_epoch(out_dir, model, run):
    checkpoint = torch.load(out_dir / f"weights/{model}/{run}.pth", map_location="cpu", weights_only=True)
    assert checkpoint["model"] == model and checkpoint["epoch"] == 1
    assert checkpoint["args"]["dataset"] == "vimeo-septuplet"
    (record,) = checkpoint["history"]
    assert all(math.isfinite(record[key]) for key in ("train_loss", "val_loss", "val_psnr"))
    assert (out_dir / f"weights/{model}/{run}_best.pth").is_file()
    log = (out_dir / f"figs/{model}/{run}.csv").read_text().splitlines()
    assert len(log) == 2 and "train_loss" in log[0]


def test_asvfi_without_audio_trains_on_the_train_list_and_validates_on_the_test_list(vimeo_root, tmp_path, capsys):
    assert train(vimeo_root, tmp_path / "out", "--audio", "none", "--val-windows", "0", "--scheduler", "plateau") == 0
    assert_trained_one_epoch(tmp_path / "out", "asvfi", RUN)
    assert f"vimeo-septuplet {len(TRAIN_IDS)} train / {len(TEST_IDS)} val windows" in capsys.readouterr().out


def test_pervfi_trains_from_im3_and_im5(vimeo_root, tmp_path, capsys):
    flags = ["--model", "pervfi", "--loss", "1*NLL+0.1*PerVFILap", "--val-windows", "2"]  # VGG needs weights
    assert train(vimeo_root, tmp_path / "out", *flags) == 0
    assert_trained_one_epoch(tmp_path / "out", "pervfi", "adamw_5e-4")
    assert f"{len(TRAIN_IDS)} train / 2 val windows" in capsys.readouterr().out


def test_a_model_reading_audio_is_refused_with_what_to_pass(vimeo_root, tmp_path, capsys):
    for flags in ([], ["--audio", "mel"]):  # ASVFI's default audio branch, then asked for by name
        with pytest.raises(SystemExit):
            train(vimeo_root, tmp_path / "out", *flags)
        err = capsys.readouterr().err
        assert re.search(r"vimeo-septuplet has no audio: .* pass --audio none", err), err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_other_scales_are_refused(vimeo_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(vimeo_root, tmp_path / "out", "--audio", "none", "--scale", "4")
    assert "train with --scale 2" in capsys.readouterr().err


@pytest.mark.parametrize("damage, named", [
    (lambda folder: (folder / "sep_trainlist.txt").unlink(), "sep_trainlist.txt"),
    (lambda folder: (folder / "sep_testlist.txt").unlink(), "sep_testlist.txt"),
    (lambda folder: (folder / "sep_trainlist.txt").write_text("00001/0001\n00009/0009\n"),
     "sequences/00009/0009/im1.png"),
    (lambda folder: (folder / "sequences/00002/0001/im5.png").unlink(), "sequences/00002/0001/im5.png"),
    (lambda folder: (folder / "sequences/00004/0002/im4.png").write_bytes(b"not a png"),
     "sequences/00004/0002/im4.png: cannot be read"),
])
def test_a_wrong_layout_stops_training_naming_the_file(tmp_path, capsys, damage, named):
    damage(make_vimeo(tmp_path / "data"))
    assert train(tmp_path / "data", tmp_path / "out", "--audio", "none", "--val-windows", "0") == 1
    err = capsys.readouterr().err
    assert re.search(r"error: .*" + re.escape(named), err), err


def test_a_crop_larger_than_the_frames_is_refused_naming_a_frame(vimeo_root, tmp_path, capsys):
    assert train(vimeo_root, tmp_path / "out", "--audio", "none", "--crop", "96") == 1
    err = capsys.readouterr().err
    assert re.search(r"00001/0001/im1\.png: frames are 64x48, smaller than the training crop 96x96", err), err


# ----------------------------------------------------------------------------- Vimeo-90K triplets (PerVFI's data)
def test_triplet_items_hold_im1_im3_to_im2_and_train_with_temporal_flips_only(tmp_path):
    root = make_vimeo(tmp_path / "data", "vimeo-triplet")
    val = testsets.training_windows("vimeo-triplet", root, "val", 2, Sampling())
    assert [val[i]["video"] for i in range(len(val))] == list(TEST_IDS)
    assert decode(val[0]["inputs"])[0] == [1, 1, 3, 3] and decode(val[0]["targets"])[0] == [2]
    data = testsets.training_windows("vimeo-triplet", root, "train", 2,
                                     Sampling(train=True, crop=CROP, windows_per_video=8, seed=3))
    reversed_seen = set()
    for index in range(len(data)):
        numbers, rows, cols = decode(all_frames(data[index]))
        reversed_seen.add(numbers[:4] == [3, 3, 1, 1])
        assert numbers[4] == 2 and data[index]["ts"].tolist() == [0.5]
        assert (rows[0][:, 0].diff() == 1).all() and (cols[0][0].diff() == 1).all(), "a spatial flip"
    assert reversed_seen == {False, True}


def test_pervfi_trains_on_vimeo_triplets_and_asvfi_is_refused_with_the_way_out(tmp_path, capsys):
    data_root = tmp_path / "data"
    make_vimeo(data_root, "vimeo-triplet")
    flags = ["--dataset", "vimeo-triplet", "--data-root", str(data_root), "--out-dir", str(tmp_path / "out"),
             "--device", "cpu", "--width", "0.125", "--crop", str(CROP), "--batch-size", "2", "--workers", "0",
             "--epochs", "1"]
    assert main.main([*flags, "--model", "pervfi", "--loss", "1*NLL+0.1*PerVFILap", "--val-windows", "2"]) == 0
    assert f"vimeo-triplet {len(TRAIN_IDS)} train / 2 val windows" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main.main([*flags, "--audio", "none"])
    assert "vimeo-triplet gives 2 input frames; --model asvfi reads 4" in capsys.readouterr().err


def test_the_vimeo_sets_train_with_their_loaders_crop_and_colour_jitter_and_video_sets_without(capsys):
    def jitter(*flags):
        args = main.parse_args(["--data-root", "nowhere", *flags])
        return args.crop, args.color_jitter
    assert jitter("--dataset", "vimeo-septuplet", "--audio", "none") == (256, 0.05)
    assert jitter("--dataset", "vimeo-triplet", "--model", "pervfi") == (256, 0.05)
    assert jitter("--dataset", "demo") == (224, 0.0)
    assert jitter("--dataset", "vimeo-septuplet", "--audio", "none", "--color-jitter", "0", "--crop", "0") == (0, 0.0)
    with pytest.raises(SystemExit):
        jitter("--dataset", "demo", "--color-jitter", "1.5")
    assert "--color-jitter 1.5: must be in [0, 1)" in capsys.readouterr().err
