"""Training windows/s from the DataLoader (measured at 2 workers, 2x, 224 crops of 320x240).

    python tools.py bench-data [--scale 2 --crop 224 --workers 2 --batch 4 --seconds 20]
    python tools.py bench-data --profile     # where one window's time goes, in this process

Run with OMP_NUM_THREADS=1 on a shared machine (the workers already use one thread each).

Makes the demo set under --data-root on first use (default `.cache/bench-data`, ignored by git).
Frames are decoded on the fly (or read from --frames-root); nothing decoded is stored on disk.
"""
import argparse
import os
import sys
import time

import torch
from torch.utils.data import DataLoader

import dataset as windows
import prepare
import tools


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools.py bench-data", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(tools.REPO_DIR / ".cache" / "bench-data"))
    parser.add_argument("--dataset", default="demo", choices=["demo", "ucf101"])
    parser.add_argument("--split", default="train")
    parser.add_argument("--frames-root", default=None, help="read extracted PNG frames instead of decoding")
    parser.add_argument("--scale", type=int, default=2, choices=windows.SCALES)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--windows-per-video", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time after warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="batches dropped before timing (worker start)")
    parser.add_argument("--profile", action="store_true", help="time the stages of one window instead")
    return parser.parse_args(argv)


def build_dataset(args):
    if args.dataset == "demo":
        prepare.ensure_dataset(args.data_root, args.dataset)
    sampling = windows.Sampling(train=True, crop=args.crop, windows_per_video=args.windows_per_video)
    return windows.VFIWindows(args.data_root, args.dataset, args.split, args.scale, sampling,
                              frames_root=args.frames_root)


def measure_loader(data, args):
    """Windows/s over `seconds` of DataLoader iteration (epochs roll over), after warm-up batches."""
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                        persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(0))
    seen, batches, started, epoch = 0, 0, None, 0
    while True:
        data.set_epoch(epoch)
        for batch in loader:
            batches += 1
            if batches == args.warmup:
                started = time.perf_counter()
            elif batches > args.warmup:
                seen += batch["inputs"].shape[0]
                if time.perf_counter() - started >= args.seconds:
                    return seen / (time.perf_counter() - started), seen
        epoch += 1


def profile_stages(data, n_items=200):
    """Mean ms per window of decoding, crop + float conversion and audio, measured in this process."""
    torch.set_num_threads(1)
    totals = {"decode": 0.0, "decode+crop+float": 0.0, "audio": 0.0, "whole item": 0.0}
    for index in range(n_items):
        video_index, start, augmentation = data.training_draw(index % len(data))
        entry = data.videos[video_index]
        inputs, targets = windows.window_indices(start, data.scale)
        order = inputs + targets
        for stage, work in (("decode", lambda: data._read_frames(entry, order)),
                            ("decode+crop+float", lambda: data._augmented_frames(entry, order, augmentation)),
                            ("audio", lambda: data._audio_segment(entry, inputs[1], inputs[2])),
                            ("whole item", lambda: data[index % len(data)])):
            tick = time.perf_counter()
            work()
            totals[stage] += time.perf_counter() - tick
    for stage, total in totals.items():
        print(f"  {stage:18s} {1000 * total / n_items:7.2f} ms/window")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    data = build_dataset(args)
    sizes = {(v.width, v.height) for v in data.videos}
    print(f"{len(data.videos)} videos {sorted(sizes)}, {len(data)} training windows/epoch, scale {args.scale}, "
          f"crop {args.crop}, audio {data.audio_samples} samples, "
          f"frames from {'PNG folders' if args.frames_root else 'video files'}")
    if args.profile:
        for index in range(0, len(data), data.windows_per_video):
            data[index]  # warm the per-video caches (frame index, times) as a running worker has them
        profile_stages(data)
        return 0
    rate, seen = measure_loader(data, args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{rate:.1f} training windows/s ({seen} windows, batch {args.batch}, {args.workers} workers, "
          f"{args.seconds:.0f} s; load average {load:.2f}, {os.cpu_count()} cores)")
    return 0

