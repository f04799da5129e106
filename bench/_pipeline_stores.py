"""Disk use and read speed of two lossless frame stores for the same ground-truth and output frames:
the PNG folders inference.py writes, and FFV1 in Matroska (one `<folder>.mkv` per folder, written
here from the PNGs and checked to give back every frame bit-exactly). Used by bench-pipeline
`--frame-stores`.

    figures = compare_stores([(gt_folder, out_folder), ...], work_dir)   # [StoreFigures], PNG first

Disk use counts a hard-linked PNG once (inference links an output's input frames to the current
ground truth), so "own" output bytes are what one more model's output adds beside an existing
ground truth. Reading decodes every frame back to (H, W, 3) uint8 RGB in evaluate.py's pool of
decode threads, one file per task; FFV1 decodes with one codec thread per file so both stores get
the same parallelism.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

import evaluate
import publish
import utils
import video_io
from video_io import MediaError

# This FFmpeg's FFV1 encoder has no 8-bit planar RGB (gbrp); bgr0 is 8-bit RGB with a padding byte.
FFV1_PIXEL_FORMAT = "bgr0"
# Level 3 with the default Golomb-Rice coder (fast) and with the range coder and large contexts
# (FFV1's smallest output, slower to decode).
FFV1_VARIANTS = {"ffv1": {"level": "3"},
                 "ffv1 range coder": {"level": "3", "coder": "range_tab", "context": "1"}}


@dataclass
class StoreFigures:
    """One store of the same frames: bytes on disk, frames stored and the time to read them back."""
    name: str
    gt_bytes: int
    own_output_bytes: int  # output bytes not shared with the ground truth (hard links counted once)
    frames: int  # output frames (= ground-truth frames)
    read_s: float  # wall seconds to read every GT and output frame
    read_cpu_s: float  # process CPU seconds of that read
    exact: bool  # every frame read back equals the PNG frame

    def per_frame(self, n_bytes):
        return n_bytes / self.frames


def png_frames(folder):
    return [video_io.read_png(path) for path in evaluate.frame_files(folder)]


def write_ffv1(path, frames, options, fps=25):
    """Lossless FFV1/Matroska of (H, W, 3) uint8 RGB frames, written atomically."""
    height, width = frames[0].shape[:2]

    def write(tmp):
        with av.open(str(tmp), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=fps, options=dict(options))
            stream.width, stream.height, stream.pix_fmt = width, height, FFV1_PIXEL_FORMAT
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
    utils.atomic_write(path, write)


def rgb_view(frame, path):
    """(H, W, 3) uint8 RGB view of a decoded bgr0 frame: no conversion pass, like video_io.read_png's
    view of OpenCV's BGR (swscale's bgr0 -> rgb24 would add about a fifth to FFV1's decode time)."""
    if frame.format.name != FFV1_PIXEL_FORMAT:
        raise MediaError(f"{path}: {frame.format.name} frames, this store writes {FFV1_PIXEL_FORMAT}")
    plane = frame.planes[0]
    pixels = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size // 4, 4)
    return pixels[:, :plane.width, 2::-1]


def read_ffv1(path):
    """Every frame of an FFV1 file as (H, W, 3) uint8 RGB; MediaError naming the file when it is damaged."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            return [rgb_view(frame, path) for frame in container.decode(stream)]
    except (av.error.FFmpegError, IndexError) as error:
        raise MediaError(f"{path}: cannot be read as an FFV1 frame store ({error})") from error


def same_frames(expected, path):
    """True when the FFV1 file holds exactly `expected` (count, shape and every byte)."""
    try:
        back = read_ffv1(path)
    except MediaError:
        return False
    return len(back) == len(expected) and all(np.array_equal(a, b) for a, b in zip(back, expected))


def timed_read(read, units):
    """(frames, wall s, CPU s) of reading every unit in evaluation's decode pool."""
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(evaluate.READ_THREADS) as pool:
        frames = sum(pool.map(lambda unit: len(read(unit)), units))
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def unique_bytes(files, seen):
    """Bytes of the files whose inode is not in `seen` (which they are added to)."""
    total = 0
    for path in files:
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def png_store(pairs):
    seen = set()
    gt_files = [f for gt, _ in pairs for f in evaluate.frame_files(gt)]
    out_files = [f for _, out in pairs for f in evaluate.frame_files(out)]
    gt_bytes, out_bytes = unique_bytes(gt_files, seen), unique_bytes(out_files, seen)
    frames, wall, cpu = timed_read(lambda path: [video_io.read_png(path)], gt_files + out_files)
    return StoreFigures("png", gt_bytes, out_bytes, frames // 2, wall, cpu, True)


def ffv1_store(pairs, work_dir, name, options):
    """The frames of every folder written to `<work_dir>/<name>/<k>.mkv`, round trip checked, read back timed."""
    folder = Path(work_dir) / name.replace(" ", "_")
    publish.fresh_folder(folder)
    files, exact = [], True
    for k, (gt, out) in enumerate(pairs):
        for side, source in (("gt", gt), ("out", out)):
            frames, path = png_frames(source), folder / f"{k}_{side}.mkv"
            write_ffv1(path, frames, options)
            exact &= same_frames(frames, path)
            files.append(path)
    gt_bytes = sum(p.stat().st_size for p in files if p.stem.endswith("_gt"))
    out_bytes = sum(p.stat().st_size for p in files if p.stem.endswith("_out"))
    frames, wall, cpu = timed_read(read_ffv1, files)
    return StoreFigures(name, gt_bytes, out_bytes, frames // 2, wall, cpu, exact)


def compare_stores(pairs, work_dir):
    """PNG and every FFV1 variant on the same (gt, output) folder pairs."""
    return [png_store(pairs)] + [ffv1_store(pairs, work_dir, name, options) for name, options in FFV1_VARIANTS.items()]


def table(figures):
    """The comparison as text lines; ratios are PNG's bytes over the store's."""
    png = figures[0]
    png_disk = png.gt_bytes + png.own_output_bytes
    lines = [f"{'store':<18}{'GT B/frame':>12}{'x PNG':>7}{'output own B/frame':>20}{'GT+output B/frame':>19}"
             f"{'x PNG':>7}{'read frames/s':>15}{'CPU ms/frame':>14}  round trip"]
    for f in figures:
        disk = f.gt_bytes + f.own_output_bytes
        lines.append(f"{f.name:<18}{f.per_frame(f.gt_bytes):>12.0f}{png.gt_bytes / f.gt_bytes:>7.2f}"
                     f"{f.per_frame(f.own_output_bytes):>20.0f}{f.per_frame(disk):>19.0f}{png_disk / disk:>7.2f}"
                     f"{2 * f.frames / f.read_s:>15.0f}{1000 * f.read_cpu_s / (2 * f.frames):>14.2f}  "
                     f"{'exact' if f.exact else 'NOT EXACT'}")
    return lines
