"""Inference speed and peak memory: interpolated frames/s, and memory that does not grow with video length.

    python tools.py bench-infer                                  # ASVFI (width 0.25) at 256x256 and 640x480, CPU
    python tools.py bench-infer --width 1.0 --sizes 256x256      # FLAVR size (slow on a small CPU)
    python tools.py bench-infer --device cuda --amp --width 1.0 --sizes 1280x720   # a GPU at 720p
    python tools.py bench-infer --lengths 50,400 --length-model blend            # memory vs length only: --sizes ""
    python tools.py bench-infer --pipeline                       # test-split I/O: pure decode vs inference.py --model repeat

Speed: the model (random weights unless --weights: speed does not depend on them) interpolates a
generated clip through inference.py's streaming path (window buffer, batches, audio segments);
decoding and encoding are left out, frames/s counts generated frames only, after one warm-up batch.
Length: the whole single-video command (decode → interpolate → encode MP4 with audio) on
generated 320x240 videos of each length. Every measurement runs in a fresh subprocess, so each
reports its own peak memory: the RSS high-water mark (VmHWM from /proc/self/status) and, on
CUDA, torch.cuda.max_memory_allocated. Generated videos live under --work (default .cache/bench-infer).
Pipeline: on the demo test split (320x240, generated once under --work), the seconds of decoding
every test video alone and of the whole `inference.py --model repeat -s 2` run (decode, model, PNG
frames and GT, H.264 with audio), in one process, and their ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

import checkpoints
import inference
import interpolate
import registry
import runtime
import tools
import video_io
from utils import AUDIO_RATE, ASVFIError

DEVICE = tools.load_bench("_device")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools.py bench-infer", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="asvfi", choices=["asvfi", *registry.BASELINES])
    p.add_argument("--width", type=float, default=0.25, help="ASVFI channel multiplier (1.0 = FLAVR)")
    p.add_argument("--audio", default="mel", choices=["mel", "none"], help="ASVFI audio branch")
    p.add_argument("--weights", default=None, help="a checkpoint instead of a random ASVFI")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--sizes", default="256x256,640x480", help="WxH list for the speed table ('' = none)")
    p.add_argument("--windows", type=int, default=4, help="timed windows per size (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tile", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", nargs="?", const="bf16", default=None, choices=["bf16", "fp16"],
                   help="mixed precision on CUDA (--amp = bf16)")
    p.add_argument("--lengths", default="50,400", help="video lengths (frames) for the memory table ('' = none)")
    p.add_argument("--length-model", default="blend", choices=["asvfi", *registry.BASELINES],
                   help="model of the length runs (asvfi uses --width/--weights)")
    p.add_argument("--work", default=str(tools.REPO_DIR / ".cache" / "bench-infer"))
    p.add_argument("--pipeline", action="store_true", help="time pure decoding vs the test-split command")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # set by the driver for a subprocess:
    p.add_argument("--size", default=None, help=argparse.SUPPRESS)  # its speed-table size
    p.add_argument("--video", default=None, help=argparse.SUPPRESS)  # or its length-table video
    args = p.parse_args(argv)
    args.weights = args.weights or None
    return args


# ----------------------------------------------------------------------------- measurements (in a subprocess)
def peak_rss_mb():
    """This process's RSS high-water mark (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_network(args, device):
    if args.model in registry.BASELINES:
        return registry.build_model(registry.default_config(args.model, scale=args.scale)).to(device).eval()
    if args.weights:
        return registry.load_model(args.weights)[0].to(device).eval()
    config = registry.default_config("asvfi", scale=2, width=args.width, audio=args.audio)
    return registry.build_model(config).to(device).eval()


def clip(n_frames, width, height, seed=0):
    """(frame, time) of a generated clip: a noise texture panning right, 25 fps."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height, width + 4 * n_frames, 3), dtype=np.uint8)
    return [(np.ascontiguousarray(texture[:, 4 * i:4 * i + width]), i / 25) for i in range(n_frames)]


def measure_speed(args):
    """Generated frames/s of the streaming path at one size, and the peak memory of doing it."""
    device = runtime.pick_device(args.device)
    width, height = (int(v) for v in args.size.split("x"))
    network = build_network(args, device)
    engines = interpolate.build_engines(network, device, args.scale,
                                      Namespace(amp=args.amp, tile=args.tile, tile_overlap=32, seed=0))
    wave = (0.1 * np.random.default_rng(0).standard_normal(AUDIO_RATE * 4)).astype(np.float32)
    rss_ready = peak_rss_mb()

    def run(n_windows):
        frames = clip(n_windows + 1, width, height)
        count = sum(1 for _ in interpolate.interpolate_video(iter(frames), engines, wave, args.batch, 25))
        DEVICE.synchronize(device)
        return count - (n_windows + 1)  # generated frames only

    run(args.batch)  # warm-up: allocator, kernels, first-call overheads
    started = time.perf_counter()
    generated = run(args.windows)
    seconds = time.perf_counter() - started
    return {"size": args.size, "generated": generated, "seconds": seconds, "fps": generated / seconds,
            "rss_ready_mb": rss_ready, "peak_rss_mb": peak_rss_mb(), "cuda_peak_mb": DEVICE.peak_mb(device)}


def measure_length(args):
    """Peak memory of the whole single-video command on one generated video."""
    output = Path(args.work) / f"out_{Path(args.video).stem}.mp4"
    argv = ["--model", args.length_model, "--input", args.video, "--output", str(output), "--overwrite",
            "-s", str(args.scale), "--batch", str(args.batch), "--device", args.device]
    if args.length_model == "asvfi":
        argv += ["--weights", args.weights]
    started = time.perf_counter()
    inference.main(argv)
    seconds = time.perf_counter() - started
    info = video_io.probe(output)
    return {"video": Path(args.video).name, "frames_out": info.n_frames, "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(), "cuda_peak_mb": DEVICE.peak_mb(runtime.pick_device(args.device))}


# ----------------------------------------------------------------------------- driver
def in_subprocess(argv, worker, **extra):
    """Run one measurement in a fresh interpreter (separate memory high-water mark); its JSON result."""
    command = [sys.executable, str(tools.REPO_DIR / "tools.py"), "bench-infer", *argv, "--worker", worker]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tools.REPO_DIR)
    if done.returncode != 0:
        raise ASVFIError(f"bench-infer worker {worker} {extra} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def generated_video(work, n_frames, width=320, height=240, fps=25):
    """A 320x240 test video with a soundtrack, made once per length."""
    path = Path(work) / f"pan_{n_frames}f_{width}x{height}.mp4"
    if not path.is_file():
        wave = (0.2 * np.sin(2 * np.pi * 330 * np.arange(int(AUDIO_RATE * n_frames / fps)) / AUDIO_RATE)).astype(np.float32)
        with video_io.VideoWriter(path, fps, width, height, audio=(wave, AUDIO_RATE)) as writer:
            for frame, _ in clip(n_frames, width, height):
                writer.write(frame)
    return path


def tiny_checkpoint(work, args):
    """A random ASVFI of --width saved as a checkpoint, for length runs with --length-model asvfi."""
    path = Path(work) / f"asvfi_w{args.width}.pth"
    config = registry.default_config("asvfi", scale=2, width=args.width, audio=args.audio)
    checkpoints.save({"model": "asvfi", "config": config, "state_dict": registry.build_model(config).state_dict()},
                     path)
    return path


def measure_pipeline(work):
    """(decode s, inference s, frames) on the demo test split: the I/O cost of the test protocol."""
    import dataset
    import prepare
    root = Path(work) / "pipeline_data"
    paths = prepare.ensure_dataset(root, "demo")
    entries = dataset.read_split(paths["split_csv"], "test")
    started = time.perf_counter()
    frames = sum(1 for entry in entries for _ in video_io.iter_frames(paths["videos"] / entry.path))
    decode = time.perf_counter() - started
    started = time.perf_counter()
    status = inference.main(["--model", "repeat", "-s", "2", "--data-root", str(root), "--dataset", "demo",
                             "--overwrite", "--device", "cpu"])
    infer = time.perf_counter() - started
    if status != 0:
        raise ASVFIError("bench-infer --pipeline: inference.py failed (see above)")
    return decode, infer, frames


def describe(args):
    if args.model in registry.BASELINES:
        return args.model
    if args.weights:
        return f"asvfi from {args.weights}"
    return f"asvfi width {args.width} audio {args.audio} (random weights)"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure_speed(args) if args.worker == "speed" else measure_length(args)))
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.pipeline:
        decode, infer, frames = measure_pipeline(args.work)
        print(f"demo test split, {frames} frames, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
        print(f"{'stage':>28} {'seconds':>8} {'frames/s':>9}")
        print(f"{'pure decode':>28} {decode:>8.2f} {frames / decode:>9.0f}")
        print(f"{'inference.py --model repeat':>28} {infer:>8.2f} {frames / infer:>9.0f}")
        print(f"ratio inference / decode: {infer / decode:.1f}x")
        return 0
    print(f"bench-infer: {describe(args)}, {args.scale}x, batch {args.batch}, device {args.device}"
          f"{' amp ' + args.amp if args.amp else ''}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    sizes = [s for s in args.sizes.split(",") if s]
    if sizes:
        print(f"\n{'size':>9} {'windows':>7} {'frames/s':>9} {'s/frame':>8} {'RSS ready MiB':>13} "
              f"{'peak RSS MiB':>12} {'CUDA peak MiB':>13}")
        for size in sizes:
            r = in_subprocess(argv, "speed", size=size)
            cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
            print(f"{size:>9} {r['generated']:>7} {r['fps']:>9.3f} {1 / r['fps']:>8.2f} {r['rss_ready_mb']:>13.0f} "
                  f"{r['peak_rss_mb']:>12.0f} {cuda:>13}")
    lengths = [int(n) for n in args.lengths.split(",") if n]
    if lengths:
        weights = tiny_checkpoint(args.work, args) if args.length_model == "asvfi" and not args.weights else args.weights
        print(f"\nwhole command on 320x240 videos ({args.length_model}, {args.scale}x): peak memory vs length")
        print(f"{'frames in':>9} {'frames out':>10} {'seconds':>8} {'peak RSS MiB':>12}")
        for n in lengths:
            video = generated_video(args.work, n)
            r = in_subprocess(argv, "length", video=video, weights=weights or "")
            print(f"{n:>9} {r['frames_out']:>10} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f}")
    return 0

