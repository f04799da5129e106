"""Frames/s of every metric at 320x240, and SSIM against scikit-image on the same frames.

    python tools.py bench-metrics                      # CPU, torch's default thread count
    python tools.py bench-metrics --threads 1          # single thread (what scikit-image uses)
    python tools.py bench-metrics --device cuda        # on a GPU
    python tools.py bench-metrics --weights-dir W      # real weights where present (else random)

Speed does not depend on the weight values, so networks whose weights are not on this machine are
timed with random weights (the output says which); FVD needs the I3D TorchScript file itself (its
architecture ships only inside it) and is skipped without it. The load average is printed before
and after: on a shared machine the figures are only as good as the machine was quiet.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from skimage.metrics import structural_similarity

import flow
import fvd
import lpips_parts
import metrics
import runtime
import tools
import vfips
import weights

DEVICE = tools.load_bench("_device")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools.py bench-metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=24, help="frames per timed pass (VFIPS: 12 per window)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest is reported")
    parser.add_argument("--ssim-repeats", type=int, default=10, help="rounds of the SSIM-vs-scikit-image race")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--weights-dir", default=str(weights.cache_dir()),
                        help="where to look for weight files (default: the torch hub cache, where downloads go)")
    parser.add_argument("--only", default="", help="comma-separated subset of the metric names")
    return parser.parse_args(argv)


def load_line():
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def synthetic_video(n_frames, height, width, seed=0):
    """A moving textured pattern (uint8-quantised, as decoded frames are) and a noisy copy."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    frames = torch.stack([0.5 + 0.4 * torch.sin((xs + 2 * t) / 7.0 + c) * torch.cos(ys / 9.0 - c)
                          for t in range(n_frames) for c in range(3)]).view(n_frames, 3, height, width)
    noisy = frames + 0.05 * torch.randn(frames.shape, generator=generator)
    return quantise(frames), quantise(noisy)


def quantise(frames):
    return (frames.clamp(0, 1) * 255).round() / 255


def best_time(fn, device, repeats):
    """Fastest of `repeats` timed calls after one warm-up call (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        DEVICE.synchronize(device)
        start = time.perf_counter()
        fn()
        DEVICE.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def network(loader, builder, weights_dir):
    """(module, 'official weights' | 'random weights') — the official ones when present offline."""
    try:
        return loader(weights_dir=weights_dir, allow_download=False), "official weights"
    except weights.WeightsUnavailable:
        return builder().eval().requires_grad_(False), "random weights"


def metric_cases(args, device):
    """name → (callable over (ref, dis) frame stacks, frames it scores per call, note)."""
    lpips_net, lpips_note = network(lpips_parts.load_lpips, lpips_parts.LPIPS, args.weights_dir)
    pwc, pwc_note = network(flow.load_pwcnet, flow.PWCNet, args.weights_dir)
    vfips_net, vfips_note = network(vfips.load_vfips, vfips.VFIPSNet, args.weights_dir)
    lpips_net, pwc, vfips_net = lpips_net.to(device), pwc.to(device), vfips_net.to(device)
    cases = {
        "psnr": (lambda r, d: metrics.psnr(d, r), args.frames, ""),
        "ssim": (lambda r, d: metrics.ssim(d, r), args.frames, ""),
        "lpips": (lambda r, d: torch.cat([lpips_net(r[i:i + 8], d[i:i + 8]) for i in range(0, len(r), 8)]),
                  args.frames, lpips_note),
        "flolpips": (lambda r, d: metrics.flolpips_video(lpips_net, pwc, r, d), args.frames - 1,
                     f"PWC-Net {pwc_note}, LPIPS {lpips_note}; per frame pair"),
        "flolpips_dis": (lambda r, d: metrics.flolpips_video(lpips_net, flow.dis_flow, r, d), args.frames - 1,
                         f"OpenCV DIS flow, LPIPS {lpips_note}; per frame pair"),
        "vfips": (lambda r, d: metrics.vfips_video(vfips_net, r[:12], d[:12]), 12,
                  f"{vfips_note}; one 12-frame window"),
    }
    try:
        detector = fvd.load_i3d(args.weights_dir, allow_download=False, device=device)
        cases["fvd"] = (lambda r, d: fvd.i3d_features(detector, torch.stack(
            [fvd.i3d_clip(r[:16]), fvd.i3d_clip(d[:16])])), 32, "I3D features of 2 clips of 16 frames")
    except weights.WeightsUnavailable:
        cases["fvd"] = (None, 0, "skipped: i3d_torchscript.pt not on this machine (pass --weights-dir)")
    return cases


def bench_ssim_vs_skimage(ref, dis, repeats):
    """ms/frame of metrics.ssim (float32, the evaluation path) and skimage (float64 and float32).

    The three are timed in turns, `repeats` rounds, fastest of each, so that a change in the load
    of a shared machine hits all of them alike.
    """
    ref_np = ref.permute(0, 2, 3, 1).double().numpy()
    dis_np = dis.permute(0, 2, 3, 1).double().numpy()
    ref32, dis32 = ref_np.astype(np.float32), dis_np.astype(np.float32)

    def skimage_all(a, b):
        return [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1, channel_axis=2) for x, y in zip(a, b)]

    contenders = {"ours": lambda: metrics.ssim(dis, ref), "skimage64": lambda: skimage_all(dis_np, ref_np),
                  "skimage32": lambda: skimage_all(dis32, ref32)}
    best = {name: float("inf") for name in contenders}
    for _ in range(repeats + 1):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) / len(ref))
    diff = np.abs(metrics.ssim(dis, ref).numpy() - np.array(skimage_all(dis_np, ref_np))).max()
    return best["ours"], best["skimage64"], best["skimage32"], diff


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.pick_device(args.device)
    print(f"before: {load_line()}")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
          f"{args.width}x{args.height}, {args.frames} frames per pass, fastest of {args.repeats}")
    ref, dis = synthetic_video(args.frames, args.height, args.width)
    cases = metric_cases(args, device)
    wanted = [n for n in args.only.split(",") if n] or list(cases)
    ref_d, dis_d = ref.to(device), dis.to(device)
    print(f"{'metric':<14}{'frames/s':>10}{'ms/frame':>10}  notes")
    with torch.no_grad():
        for name in wanted:
            fn, frames, note = cases[name]
            if fn is None:
                print(f"{name:<14}{'—':>10}{'—':>10}  {note}")
                continue
            seconds = best_time(lambda: fn(ref_d, dis_d), device, args.repeats)
            print(f"{name:<14}{frames / seconds:>10.1f}{1e3 * seconds / frames:>10.2f}  {note}")
    if "ssim" in wanted:
        ours, sk64, sk32, diff = bench_ssim_vs_skimage(ref, dis, args.ssim_repeats)
        print(f"SSIM on CPU, same {len(ref)} frames, timed in turns: metrics.ssim {1e3 * ours:.2f} ms/frame "
              f"({torch.get_num_threads()} thread(s)); skimage float64 {1e3 * sk64:.2f} ms/frame "
              f"(ours {sk64 / ours:.1f}x faster), skimage float32 {1e3 * sk32:.2f} ms/frame "
              f"(ours {sk32 / ours:.1f}x faster); max |difference| {diff:.1e}")
    print(f"after: {load_line()}")
    return 0

