"""Frames/s of the whole test-split path on the demo set: decode, inference.py, evaluate.py.

    python tools.py bench-pipeline                     # 8 demo test videos of 320x240, 100 frames
    python tools.py bench-pipeline --groups 12         # 16 test videos instead of 8
    python tools.py bench-pipeline --skip-inference    # decode and evaluation only (outputs already there)
    python tools.py bench-pipeline --model blend --frame-stores   # + disk use and read speed, PNG vs FFV1

One run times, on the same videos and the same machine state: pure decoding of the test videos
(video_io.iter_frames), reading the PNG pairs evaluation reads (ground truth + output, the same
decode pool), `inference.py --model repeat -s 2` (or `--model blend`) and `evaluate.py --metrics
psnr,ssim`; it prints frames/s per stage, each stage's ratio to pure decoding, and what the
stages would take for the UCF-101 split-1 test set (3,783 videos, ~700k frames) on this machine.
The load average before and after is printed: on a shared machine only the ratios within one run
mean much.

`--frame-stores` also stores the same ground-truth and output frames as lossless FFV1/Matroska
(bench/_pipeline_stores.py; the round trip is checked bit-exact) and prints bytes per frame and
read frames/s (back to uint8 RGB) of the PNG folders and of each FFV1 variant.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import dataset
import evaluate
import inference
import prepare
import runs
import tools
import video_io
from utils import ASVFIError

STORES = tools.load_bench("_pipeline_stores")

UCF101_TEST_VIDEOS, UCF101_TEST_FRAMES = 3783, 700_000  # split 1 (testlist01), ~185 frames per video


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools.py bench-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/asvfi_bench_pipeline", help="data root the demo set is made in")
    parser.add_argument("--groups", type=int, default=6, help="demo groups per category; the split keeps "
                                                              "one in six for testing, 2 clips each: 6 -> 8 test videos")
    parser.add_argument("--frames", type=int, default=100, help="frames per demo video")
    parser.add_argument("--size", type=prepare.parse_size, default="320x240", help="WxH of the demo frames")
    parser.add_argument("--model", default="repeat", choices=["repeat", "blend"], help="the baseline inference runs")
    parser.add_argument("--skip-inference", action="store_true", help="reuse the outputs of an earlier run")
    parser.add_argument("--frame-stores", action="store_true",
                        help="also compare disk use and read speed of PNG folders and FFV1/Matroska on the same frames")
    return parser.parse_args(argv)


def load_line():
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def timed(fn):
    """(wall seconds, CPU seconds of this process) of fn(); on a busy machine the CPU time is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def demo_root(args):
    root = Path(args.work) / f"demo_{args.size}_g{args.groups}_f{args.frames}"
    prepare.ensure_demo(root, show_progress=False, groups=args.groups, frames=args.frames, size=args.size)
    return root


def decode_videos(root):
    paths = runs.dataset_paths(root, "demo")
    return sum(1 for entry in dataset.read_split(paths["split_csv"], "test")
               for _ in video_io.iter_frames(paths["videos"] / entry.path))


def folder_pairs(root, model):
    """(ground truth, output) frame folders of every finished test video at 2x."""
    gt_root, out_root = runs.gt_dir(root, 2), runs.output_dir(root, model, 2)
    return [(gt_root / category / video, out_root / category / video)
            for category, video in evaluate.finished_folders(gt_root)]


def read_png_pairs(root, model):
    """Decode every (ground truth, output) PNG pair the way evaluation reads them; frames read."""
    files = [f for pair in folder_pairs(root, model) for folder in pair for f in evaluate.frame_files(folder)]
    with ThreadPoolExecutor(evaluate.READ_THREADS) as pool, evaluate.scoring_threads(torch.device("cpu")):
        for _ in pool.map(lambda f: evaluate.read_frame_tensor(f, None, None), files):
            pass
    return len(files) // 2


def run_command(main, argv, name):
    if main(argv) != 0:
        raise ASVFIError(f"bench-pipeline: {name} failed (see above)")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = demo_root(args)
    print(f"before: {load_line()}; torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)")
    frames = decode_videos(root)  # warms the page cache for every stage alike
    seconds = {"pure decode (video_io.iter_frames)": timed(lambda: decode_videos(root))}
    common = ["--model", args.model, "-s", "2", "--data-root", str(root), "--dataset", "demo", "--device", "cpu"]
    if not args.skip_inference:
        seconds[f"inference.py --model {args.model}"] = timed(
            lambda: run_command(inference.main, common + ["--overwrite"], "inference.py"))
    seconds["read PNG pairs (GT + output)"] = timed(lambda: read_png_pairs(root, args.model))
    seconds["evaluate.py --metrics psnr,ssim"] = timed(lambda: run_command(
        evaluate.main, common + ["--metrics", "psnr,ssim", "--restart", "--out-dir", str(root)], "evaluate.py"))
    print(f"\ndemo test split: {frames} frames of {args.size}; after: {load_line()}")
    decode, decode_cpu = seconds["pure decode (video_io.iter_frames)"]
    print(f"{'stage':<36}{'seconds':>9}{'frames/s':>10}{'x decode':>10}{'CPU s':>8}{'x decode':>10}"
          f"{'UCF-101 split 1':>17}")
    for stage, (s, cpu) in seconds.items():
        projection = UCF101_TEST_FRAMES / (frames / s) / 3600
        print(f"{stage:<36}{s:>9.2f}{frames / s:>10.0f}{s / decode:>10.1f}{cpu:>8.2f}{cpu / decode_cpu:>10.1f}"
              f"{projection:>15.2f} h")
    total = sum(s for stage, (s, _) in seconds.items() if not stage.startswith("read PNG"))
    print(f"whole test-split path on this machine: {UCF101_TEST_FRAMES / (frames / total) / 3600:.1f} h for "
          f"UCF-101 split 1 ({UCF101_TEST_VIDEOS} videos); per GPU it needs a GPU run of this command")
    return compare_frame_stores(args, root) if args.frame_stores else 0


def compare_frame_stores(args, root):
    """Print the PNG vs FFV1 table on this run's frames; 1 when a store does not give them back exactly."""
    figures = STORES.compare_stores(folder_pairs(root, args.model), Path(args.work) / "frame_stores")
    print(f"\nframe stores of the same {figures[0].frames} ground-truth and {figures[0].frames} {args.model} "
          f"output frames ({args.size}); B = bytes, hard links counted once; after: {load_line()}")
    print("\n".join(STORES.table(figures)))
    return 0 if all(f.exact for f in figures) else 1

