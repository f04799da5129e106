"""testsets.py on synthetic folders in each published layout (tiny PNGs written here)."""
import numpy as np
import pytest
import torch
from PIL import Image

import testsets
from compat import load_fixture
from dataset import Sampling
from utils import ASVFIError


def write_png(path, value=None, size=(6, 8), pixels=None):
    """A PNG of constant RGB (value, value + 1, value + 2), or of the given (H, W, 3) pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = np.empty(size + (3,), np.uint8)
        pixels[...] = (value, value + 1, value + 2)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)


def value_of(frame):
    """The red level of a constant frame written by write_png, checking the frame is RGB."""
    assert frame.dtype == torch.float32 and frame.dim() == 3 and frame.shape[0] == 3
    levels = torch.round(frame[:, 0, 0] * 255).int().tolist()
    assert levels[1] == levels[0] + 1 and levels[2] == levels[0] + 2
    return levels[0]


def make_flavr_ucf101(root, samples=("s2", "s1")):
    for s, sample in enumerate(samples):
        for k in range(4):
            write_png(root / sample / f"frame{k}.png", 10 * s + k)
        write_png(root / sample / "framet.png", 10 * s + 5)
    return root


def make_triplets(root, samples=("b", "a")):
    for s, sample in enumerate(samples):
        write_png(root / sample / "frame_00.png", 20 * s)
        write_png(root / sample / "frame_01_gt.png", 20 * s + 1)
        write_png(root / sample / "frame_02.png", 20 * s + 2)
    return root


def make_vimeo(root, test=("00001/0001", "00002/0010"), train=("00001/0002",)):
    for sequence in test + train:
        for n in range(1, 8):
            write_png(root / "sequences" / sequence / f"im{n}.png", 10 * n)
    (root / "sep_testlist.txt").write_text("\n".join(test) + "\n\n")
    (root / "sep_trainlist.txt").write_text("\n".join(train) + "\n")
    return root


# ----------------------------------------------------------------------------- FLAVR UCF101
def test_flavr_ucf101_order_frames_and_times(tmp_path):
    data = testsets.FlavrUCF101(make_flavr_ucf101(tmp_path), crop=None)
    assert len(data) == 2 and data.n_inputs == 4
    first = data[0]
    assert first.id == "s1"
    assert [value_of(f) for f in first.inputs] == [10, 11, 12, 13]
    assert [value_of(f) for f in first.targets] == [15]
    assert first.input_times == (-1.0, 0.0, 1.0, 2.0) and first.target_times == (0.5,)
    assert data[1].id == "s2" and value_of(data[1].targets[0]) == 5


def test_flavr_ucf101_centre_crop_as_torchvision(tmp_path):
    sample = load_fixture("protocols_compat.pt")["flavr"]["ucf101_sample"]
    for name, frame in sample["frames_u8"].items():
        write_png(tmp_path / "sample" / name, pixels=frame.numpy())
    read = testsets.FlavrUCF101(tmp_path)[0]
    for frame, name, (top, left) in zip(read.inputs + read.targets, sample["file_names"], sample["crop_top_left"]):
        expected = sample["frames_u8"][name][top:top + 224, left:left + 224].permute(2, 0, 1).float() / 255
        assert torch.equal(frame, expected), name
    shapes = sample["loader_batch"]
    assert [[1, *f.shape] for f in read.inputs] == shapes["inputs"]
    assert [[1, *f.shape] for f in read.targets] == shapes["targets"]


# ----------------------------------------------------------------------------- UCF101 triplets
def test_ucf101_triplets(tmp_path):
    data = testsets.UCF101Triplets(make_triplets(tmp_path))
    assert len(data) == 2 and data.n_inputs == 2
    sample = data[0]
    assert sample.id == "a"
    assert [value_of(f) for f in sample.inputs] == [20, 22] and value_of(sample.targets[0]) == 21
    assert sample.input_times == (0.0, 1.0) and sample.target_times == (0.5,)
    assert sample.inputs[0].shape == (3, 6, 8)  # whole frames, no crop


def test_files_beside_the_sample_folders_are_not_samples(tmp_path):
    root = make_triplets(tmp_path)
    (root / "README.txt").write_text("DVF UCF101 triplets\n")
    data = testsets.UCF101Triplets(root)
    assert data.sample_ids == ["a", "b"]


def test_image_set_items_take_a_crop_as_large_as_the_frames_and_refuse_mixed_sizes(tmp_path):
    root = make_triplets(tmp_path)
    training = testsets.ImageSetWindows(testsets.UCF101Triplets(root),
                                        Sampling(train=True, crop=(6, 8), windows_per_video=3))
    assert len(training) == 6 and training[0]["inputs"].shape == (4, 3, 6, 8)
    validation = testsets.ImageSetWindows(testsets.UCF101Triplets(root), Sampling(windows_per_video=3))
    assert len(validation) == 2 and [validation[i]["video"] for i in range(2)] == ["a", "b"]
    assert [value_of(f) for f in validation[0]["inputs"]] == [20, 20, 22, 22]
    write_png(root / "a" / "frame_02.png", 22, size=(6, 9))
    with pytest.raises(testsets.LayoutError, match=r"a/frame_02\.png: 9x6, but .*a/frame_00\.png is 8x6"):
        validation[0]

# ----------------------------------------------------------------------------- Vimeo septuplets
def test_vimeo_septuplet_test_list_and_flavr_inputs(tmp_path):
    data = testsets.VimeoSeptuplet(make_vimeo(tmp_path))
    assert len(data) == 2 and data.n_inputs == 4  # the blank last line is skipped
    sample = data[1]
    assert sample.id == "00002/0010"
    assert [value_of(f) for f in sample.inputs] == [10, 30, 50, 70]
    assert [value_of(f) for f in sample.targets] == [40]
    assert sample.input_times == (-1.0, 0.0, 1.0, 2.0) and sample.target_times == (0.5,)


def test_vimeo_septuplet_two_inputs_and_train_split(tmp_path):
    root = make_vimeo(tmp_path)
    two = testsets.VimeoSeptuplet(root, input_frames="35")
    assert two.n_inputs == 2 and [value_of(f) for f in two[0].inputs] == [30, 50]
    assert two[0].input_times == (0.0, 1.0) and two[0].target_times == (0.5,)
    train = testsets.VimeoSeptuplet(root, split="train")
    assert [s for s in train.sample_ids] == ["00001/0002"]
    for bad in ("1347", "1457", "45", "13", "135", "3157", "x35", "3355", "0357", "1358", "123567"):
        with pytest.raises(ValueError, match="input_frames"):
            testsets.VimeoSeptuplet(root, input_frames=bad)
    with pytest.raises(ValueError, match="split"):
        testsets.VimeoSeptuplet(root, split="val")


def test_vimeo_septuplet_times_are_in_units_of_the_interval_between_the_central_inputs(tmp_path):
    """Whatever the frames chosen, the input before im4 is at 0 and the one after it at 1."""
    root = make_vimeo(tmp_path)
    for digits, input_times, target_time in (("1357", (-1, 0, 1, 2), 0.5), ("35", (0, 1), 0.5),
                                             ("25", (0, 1), 2 / 3), ("36", (0, 1), 1 / 3),
                                             ("1256", (-1 / 3, 0, 1, 4 / 3), 2 / 3)):
        data = testsets.VimeoSeptuplet(root, input_frames=digits)
        assert data.input_times == pytest.approx(input_times) and data.target_times == pytest.approx((target_time,))
        assert [value_of(f) for f in data[0].inputs] == [10 * int(d) for d in digits]


def test_a_reversed_training_item_plays_its_frames_backwards_and_takes_the_mirrored_target_time(tmp_path):
    """im2, im5 → im4 sits at t = 2/3; played backwards (im5, im2) the target is at 1 - 2/3."""
    reader = testsets.VimeoSeptuplet(make_vimeo(tmp_path), input_frames="25")
    items = testsets.ImageSetWindows(reader, Sampling(train=True, windows_per_video=8, hflip=False))
    seen = set()
    for item in items:
        inputs = [value_of(f) for f in item["inputs"]]
        backwards = inputs == [50, 50, 20, 20]
        assert backwards or inputs == [20, 20, 50, 50]
        assert [value_of(f) for f in item["targets"]] == [40]
        assert item["ts"].tolist() == pytest.approx([1 / 3 if backwards else 2 / 3])
        assert item["indices"].tolist() == ([1, 1, 0, 0, 2] if backwards else [0, 0, 1, 1, 2])  # positions in the files
        seen.add(backwards)
    assert seen == {False, True}


def test_vimeo_septuplet_missing_list_or_frame(tmp_path):
    root = make_vimeo(tmp_path)
    (root / "sequences" / "00002" / "0010" / "im5.png").unlink()
    with pytest.raises(testsets.LayoutError, match=r"missing .*00002/0010/im5\.png.*sequences/<xxxxx>/<yyyy>"):
        testsets.VimeoSeptuplet(root)
    (root / "sep_testlist.txt").unlink()
    with pytest.raises(testsets.LayoutError, match=r"missing .*sep_testlist\.txt"):
        testsets.VimeoSeptuplet(root)


# ----------------------------------------------------------------------------- wrong layouts
def test_wrong_layout_names_the_missing_file(tmp_path):
    flavr_root = make_flavr_ucf101(tmp_path / "flavr")
    triplet_root = make_triplets(tmp_path / "triplets")
    with pytest.raises(testsets.LayoutError, match=r"missing .*s1/frame_00\.png; expected .*frame_01_gt"):
        testsets.UCF101Triplets(flavr_root)
    with pytest.raises(testsets.LayoutError, match=r"missing .*a/frame0\.png; expected .*framet\.png"):
        testsets.FlavrUCF101(triplet_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(testsets.LayoutError, match="no samples"):
        testsets.UCF101Triplets(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        testsets.FlavrUCF101(tmp_path / "absent")


def test_a_missing_target_frame_is_named_when_the_set_is_opened(tmp_path):
    root = make_vimeo(tmp_path / "v")
    (root / "sequences" / "00001" / "0001" / "im4.png").unlink()
    with pytest.raises(testsets.LayoutError, match=r"missing .*00001/0001/im4\.png"):
        testsets.VimeoSeptuplet(root)
    flavr = make_flavr_ucf101(tmp_path / "f")
    (flavr / "s2" / "framet.png").unlink()
    with pytest.raises(testsets.LayoutError, match=r"missing .*s2/framet\.png"):
        testsets.FlavrUCF101(flavr, crop=None)


def test_grey_and_rgba_frames_are_read_as_rgb(tmp_path):
    root = make_triplets(tmp_path)
    Image.fromarray(np.full((6, 8), 40, np.uint8), mode="L").save(root / "a" / "frame_00.png")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[...] = (60, 61, 62, 128)
    Image.fromarray(rgba, mode="RGBA").save(root / "a" / "frame_02.png")
    sample = testsets.UCF101Triplets(root)[0]
    assert [tuple(f.shape) for f in sample.inputs] == [(3, 6, 8), (3, 6, 8)]
    assert torch.equal(sample.inputs[0], torch.full((3, 6, 8), 40 / 255))
    assert value_of(sample.inputs[1]) == 60


def test_a_crop_larger_than_the_frames_in_one_direction_is_refused_when_the_items_are_made(tmp_path):
    reader = testsets.UCF101Triplets(make_triplets(tmp_path))  # frames 8x6
    for crop in ((7, 8), (6, 9)):
        with pytest.raises(ASVFIError, match=r"a/frame_00\.png: frames are 8x6, smaller than the "
                                                      r"training crop \d+x\d+ \(--crop"):
            testsets.ImageSetWindows(reader, Sampling(train=True, crop=crop))
    with pytest.raises(ASVFIError, match=r"smaller than the validation crop 8x7 \(--val-crop"):
        testsets.ImageSetWindows(reader, Sampling(crop=(7, 8)))


def test_image_set_items_out_of_range_are_refused_on_both_sides(tmp_path):
    items = testsets.ImageSetWindows(testsets.UCF101Triplets(make_triplets(tmp_path)), Sampling())
    assert len(items) == 2 and [item["video"] for item in items] == ["a", "b"]  # iteration stops at the end
    for index in (-1, 2):
        with pytest.raises(IndexError, match=f"item {index} out of range \\(2\\)"):
            items[index]


def test_training_items_are_refused_for_a_set_without_a_training_list_or_a_model_it_has_no_frames_for(tmp_path):
    with pytest.raises(ValueError, match="ucf101-triplets: not a set with a training list; trainable: "
                                         "vimeo-septuplet, vimeo-triplet"):
        testsets.training_windows("ucf101-triplets", make_triplets(tmp_path / "t"), "train", 2, Sampling(train=True))
    with pytest.raises(ASVFIError, match=r"vimeo-triplet: no input frames for a model of 4 inputs \(its models take 2\)"):
        testsets.training_windows("vimeo-triplet", tmp_path / "v", "train", 4, Sampling(train=True))


# ----------------------------------------------------------------------------- registry, refusal
def test_registry_and_model_fit(tmp_path):
    assert set(testsets.TESTSETS) == {"flavr-ucf101", "ucf101-triplets", "vimeo-septuplet", "vimeo-triplet"}
    triplets = testsets.open_testset("ucf101-triplets", make_triplets(tmp_path / "t"))
    flavr = testsets.open_testset("flavr-ucf101", make_flavr_ucf101(tmp_path / "f"), crop=None)
    assert isinstance(triplets, testsets.UCF101Triplets) and isinstance(flavr, testsets.FlavrUCF101)
    with pytest.raises(ValueError, match="flavr-ucf101, ucf101-triplets, vimeo-septuplet, vimeo-triplet"):
        testsets.open_testset("davis", tmp_path)
    testsets.check_model_fits(2, triplets)
    testsets.check_model_fits(4, flavr)
    with pytest.raises(ValueError, match="4 input frames .* ucf101-triplets.* give 2.*never padded"):
        testsets.check_model_fits(4, triplets)
    with pytest.raises(ValueError, match="2 input frames .* flavr-ucf101"):
        testsets.check_model_fits(2, flavr)


def test_a_list_file_saved_with_a_byte_order_mark_reads_the_same(tmp_path):
    root = make_vimeo(tmp_path / "v")
    listed = (root / "sep_testlist.txt").read_text()
    (root / "sep_testlist.txt").write_text(listed, encoding="utf-8-sig")
    assert testsets.VimeoSeptuplet(root).sample_ids == [line for line in listed.splitlines() if line.strip()]
