"""Disk use of the frame stores: inference.py's PNG folders share the input frames with the ground
truth through hard links (and its summary does not count them), and the FFV1/Matroska store that
`tools.py bench-pipeline --frame-stores` compares them with gives every frame back bit-exactly."""
import os
import re

import av
import numpy as np
import pytest

import evaluate
import inference
import tools
import video_io
from video_io import MediaError

STORES = tools.load_bench("_pipeline_stores")


def noise_frames(n, height, width, seed=0):
    """Frames no predictor can guess: a lossy or colour-converting store cannot give them back."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("variant", list(STORES.FFV1_VARIANTS))
def test_ffv1_round_trip_is_bit_exact(tmp_path, variant):
    frames = noise_frames(5, 17, 33)  # odd sizes: no chroma subsampling could hide here
    frames[0][:] = 0
    frames[1][:] = 255
    path = tmp_path / "frames.mkv"
    STORES.write_ffv1(path, frames, STORES.FFV1_VARIANTS[variant])
    back = STORES.read_ffv1(path)
    assert len(back) == len(frames)
    for expected, got in zip(frames, back):
        assert got.dtype == np.uint8 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    assert STORES.same_frames(frames, path)
    assert not STORES.same_frames(frames[:4], path) and not STORES.same_frames(frames[::-1], path)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_damaged_ffv1_file_is_named_and_fails_the_round_trip_check(tmp_path):
    frames = noise_frames(6, 24, 32)
    path = tmp_path / "frames.mkv"
    STORES.write_ffv1(path, frames, STORES.FFV1_VARIANTS["ffv1"])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # cut mid-stream
    assert not STORES.same_frames(frames, path)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"not a matroska file" * 10)
    with pytest.raises(MediaError, match=re.escape(str(garbage))):
        STORES.read_ffv1(garbage)


def test_an_ffv1_file_of_another_pixel_format_is_refused_naming_it(tmp_path):
    path = tmp_path / "yuv.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv444p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(noise_frames(1, 24, 32)[0], format="rgb24")))
        container.mux(stream.encode())
    with pytest.raises(MediaError, match=re.escape(str(path)) + ".*yuv444p"):
        STORES.read_ffv1(path)


def png_pair(root, n=5):
    """A GT folder of n PNGs and an output folder whose even (input) frames are hard links to it."""
    gt, out = root / "GT" / "Cat" / "v", root / "Out" / "Cat" / "v"
    video_io.write_png_frames(gt, noise_frames(n, 24, 32, seed=1))
    out.mkdir(parents=True)
    generated = noise_frames(n, 24, 32, seed=2)
    for index in range(n):
        if index % 2:
            video_io.write_png_frames(out, [generated[index]], start=index)
        else:
            os.link(gt / video_io.png_name(index), out / video_io.png_name(index))
    return gt, out


def test_store_comparison_counts_links_once_and_measures_every_store(tmp_path):
    gt, out = png_pair(tmp_path)
    figures = STORES.compare_stores([(gt, out)], tmp_path / "stores")
    assert [f.name for f in figures] == ["png", *STORES.FFV1_VARIANTS]
    png = figures[0]
    assert png.frames == 5 and png.exact
    assert png.gt_bytes == sum(p.stat().st_size for p in evaluate.frame_files(gt))
    assert png.own_output_bytes == sum((out / video_io.png_name(i)).stat().st_size for i in (1, 3))
    for figure, folder in zip(figures[1:], ("ffv1", "ffv1_range_coder")):
        assert figure.frames == 5 and figure.exact and figure.read_s > 0
        assert figure.gt_bytes == (tmp_path / "stores" / folder / "0_gt.mkv").stat().st_size
        assert figure.own_output_bytes == (tmp_path / "stores" / folder / "0_out.mkv").stat().st_size
        # noise does not compress: FFV1 holds near the raw 3 bytes per pixel, PNG's output shares 3 of 5 frames
        assert figure.own_output_bytes > png.own_output_bytes
    lines = STORES.table(figures)
    assert len(lines) == 4 and all(line.rstrip().endswith("exact") for line in lines[1:])


@pytest.fixture
def root(one_test_video_root):
    return one_test_video_root


def test_inference_links_input_frames_to_the_ground_truth_and_reports_only_its_own_bytes(root, capsys):
    argv = ["--model", "blend", "-s", "2", "--data-root", str(root), "--dataset", "demo", "--device", "cpu"]
    assert inference.main(argv) == 0  # the ground truth is written in the same run
    summary = capsys.readouterr().out
    (out,) = [p.parent for p in (root / "Blend" / "scale" / "2").glob("*/*/frame_00000.png")]
    gt = root / "GT" / "scale" / "2" / out.parent.name / out.name
    files = evaluate.frame_files(out)
    assert len(files) == len(evaluate.frame_files(gt)) == 47
    for index, path in enumerate(files):
        assert os.path.samefile(path, gt / path.name) == (index % 2 == 0), path.name
    own = sum(p.stat().st_size for p in out.iterdir() if not (gt / p.name).is_file()
              or not os.path.samefile(p, gt / p.name))
    own += (out.parent / f"{out.name}.mp4").stat().st_size
    assert f", {own / len(files) / 1024:.0f} KiB per output frame" in summary
    assert np.array_equal(video_io.read_png_frames(out, 0, 1), video_io.read_png_frames(gt, 0, 1))
