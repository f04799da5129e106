"""testsets.py on synthetic folders in each published layout (tiny PNGs written here)."""
import numpy as np
import pytest
import torch
from PIL import Image

import testsets
from compat import load_fixture
from dataset import Sampling


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
    for bad in ("1347", "1457", "45", "13", "135", "3157", "x35"):
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
