"""ASVFI forward / training-step ms per window, audio on vs off: what the audio branch adds.

At FLAVR size by default.

    python tools.py bench-model                        # 256x256, 2x, width 1.0 (FLAVR size), batch 1
    python tools.py bench-model --size 128 --width 0.125 --reps 5
    python tools.py bench-model --device cuda          # + bf16 autocast and channels_last_3d variants

Both models share the video weights. Measurements of the variants are interleaved (off, on, off,
on, ...) so that load from other processes on a shared machine hits them alike; the medians are
reported together with the load average.
"""
import argparse
import os
import statistics
import sys
import time

import torch

import runtime
import tools
from model import default_config
from registry import build_model
from utils import ASVFIError

DEVICE = tools.load_bench("_device")

AUDIO_RATE, AUDIO_HOP = 16000, 160
# label: (autocast dtype, channels_last_3d)
BF16 = runtime.AMP_DTYPES["bf16"]
VARIANTS = {"fp32": (None, False), "fp32+cl3d": (None, True), "bf16": (BF16, False), "bf16+cl3d": (BF16, True)}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools.py bench-model", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="square frame size H = W")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = FLAVR)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--depth", default="unet_18", choices=["unet_18", "unet_34"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fps", type=float, default=25.0, help="video rate that sets the audio segment length")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-train", action="store_true", help="time the forward pass only")
    parser.add_argument("--fuse-decoder", type=int, default=1, choices=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=None,
                        help=f"comma list of {', '.join(VARIANTS)} (default: fp32 on CPU, all on CUDA)")
    return parser.parse_args(argv)


def audio_samples(scale, fps):
    """Same rule as the data set: three frame intervals plus 10 ms each side, rounded up to the hop."""
    span = 3 * scale / fps * AUDIO_RATE + 2 * AUDIO_HOP
    return -(-int(span) // AUDIO_HOP) * AUDIO_HOP


def make_batch(args, device):
    generator = torch.Generator().manual_seed(0)
    n_samples = audio_samples(args.scale, args.fps)
    batch = {
        "inputs": torch.rand(args.batch, 4, 3, args.size, args.size, generator=generator),
        "target": torch.rand(args.batch, args.scale - 1, 3, args.size, args.size, generator=generator),
        "audio": 0.1 * torch.randn(args.batch, n_samples, generator=generator),
        "audio_times": torch.linspace(-1.1, 2.1, n_samples).expand(args.batch, -1).contiguous(),
        "has_audio": torch.ones(args.batch, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in batch.items()}


def build_pair(args, device):
    """(video-only model, audio model) with identical video weights and open gates."""
    common = dict(scale=args.scale, width=args.width, depth=args.depth, fuse_decoder=bool(args.fuse_decoder))
    torch.manual_seed(0)
    with_audio = build_model(default_config(audio="mel", **common))
    with torch.no_grad():
        for gate in with_audio.audio.gates():
            gate.fill_(0.1)  # the real cost path; closed gates cost the same but look like a no-op
    video_only = build_model(default_config(audio="none", **common))
    video_only.load_state_dict(with_audio.state_dict(), strict=False)
    return video_only.to(device), with_audio.to(device)


def forward_ms(model, batch, device, autocast_dtype=None):
    model.eval()
    DEVICE.synchronize(device)
    tick = time.perf_counter()
    with torch.no_grad(), DEVICE.autocast(device, autocast_dtype):
        model(batch["inputs"], **audio_kwargs(model, batch))
    DEVICE.synchronize(device)
    return (time.perf_counter() - tick) * 1000


def train_step_ms(model, optimizer, batch, device, autocast_dtype=None):
    model.train()
    DEVICE.synchronize(device)
    tick = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with DEVICE.autocast(device, autocast_dtype):
        pred = model(batch["inputs"], **audio_kwargs(model, batch))["pred"]
        loss = (pred.float() - batch["target"]).abs().mean()
    loss.backward()
    optimizer.step()
    DEVICE.synchronize(device)
    return (time.perf_counter() - tick) * 1000


def audio_branch_ms(model, batch, device, autocast_dtype=None):
    """Forward ms of the audio branch alone (front-end, encoder, both fusions) on the feature maps
    the video branch hands it: a direct measure of the overhead, less exposed to machine load than
    the difference of two whole-model timings."""
    captured = {}
    fusions = [f for f in (model.audio.bottleneck_fusion, model.audio.decoder_fusion) if f is not None]
    hooks = [f.register_forward_pre_hook(lambda module, args: captured.setdefault(id(module), args))
             for f in fusions]
    model.eval()
    with torch.no_grad(), DEVICE.autocast(device, autocast_dtype):
        model(batch["inputs"], **audio_kwargs(model, batch))
        for hook in hooks:
            hook.remove()
        DEVICE.synchronize(device)
        tick = time.perf_counter()
        model.audio.tokens(batch["audio"], batch["audio_times"], batch["has_audio"], batch["audio"].shape[0], device)
        for fusion in fusions:
            fusion(*captured[id(fusion)])
        DEVICE.synchronize(device)
    return (time.perf_counter() - tick) * 1000


def audio_kwargs(model, batch):
    if not model.uses_audio:
        return {}
    return {"audio": batch["audio"], "audio_times": batch["audio_times"], "has_audio": batch["has_audio"]}


def variants(args, device):
    """(label, autocast dtype, channels_last_3d) settings to measure."""
    if args.variants:
        labels = args.variants.split(",")
        unknown = sorted(set(labels) - set(VARIANTS))
        if unknown:
            raise ASVFIError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    elif device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        labels = [v for v in VARIANTS if bf16 or not v.startswith("bf16")]
    else:
        labels = ["fp32"]
    return [(label, *VARIANTS[label]) for label in labels]


def to_layout(model, batch, channels_last):
    """channels_last_3d for the convolutions; the (B, 4, 3, H, W) input is permuted to (B, 3, 4, H, W)
    inside the model, so it is stored so that this permutation is channels_last_3d already."""
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    for param in model.parameters():  # only the 3-D convolutions have a channels_last_3d layout
        if param.dim() == 5:
            param.data = param.data.contiguous(memory_format=fmt)
    if channels_last:
        inputs = batch["inputs"].transpose(1, 2).contiguous(memory_format=torch.channels_last_3d).transpose(1, 2)
        batch = {**batch, "inputs": inputs}
    return batch


def measure(args, device):
    video_only, with_audio = build_pair(args, device)
    base_batch = make_batch(args, device)
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (video_only, with_audio)}
    results = {"params": {name: sum(p.numel() for p in model.parameters())
                          for name, model in (("off", video_only), ("on", with_audio))}}
    for label, dtype, channels_last in variants(args, device):
        runs = {(kind, name): [] for kind in ("forward", "train") for name in ("off", "on")}
        runs["branch", "on"] = []
        for rep in range(args.warmup + args.reps):
            for name, model in (("off", video_only), ("on", with_audio)):
                batch = to_layout(model, base_batch, channels_last)
                runs["forward", name].append(forward_ms(model, batch, device, dtype))
                if model.uses_audio:
                    runs["branch", "on"].append(audio_branch_ms(model, batch, device, dtype))
                if not args.no_train:
                    runs["train", name].append(train_step_ms(model, optimizers[id(model)], batch, device, dtype))
        for key, values in runs.items():
            if values:
                results[label, *key] = statistics.median(values[args.warmup:])
        for model in (video_only, with_audio):
            to_layout(model, base_batch, False)
    return results


def report(args, device, results):
    params = results["params"]
    print(f"bench-model: {args.size}x{args.size}, scale {args.scale}, {args.depth}, width {args.width}, "
          f"batch {args.batch}, device {device}, threads {torch.get_num_threads()}, reps {args.reps} (median), "
          f"fuse_decoder {bool(args.fuse_decoder)}")
    print(f"parameters: audio off {params['off']:,}  audio on {params['on']:,}  "
          f"(audio branch {params['on'] - params['off']:,})")
    print(f"{'variant':<12}{'step':<9}{'audio off ms':>14}{'audio on ms':>14}{'overhead':>10}")
    for label, _, _ in variants(args, device):
        for kind in ("forward", "train"):
            if (label, kind, "off") in results:
                off, on = results[label, kind, "off"], results[label, kind, "on"]
                print(f"{label:<12}{kind:<9}{off:>14.1f}{on:>14.1f}{(on / off - 1) * 100:>9.1f}%")
        branch, off = results[label, "branch", "on"], results[label, "forward", "off"]
        print(f"{label:<12}{'audio branch alone (forward)':<37}{branch:>8.1f} ms = {branch / off * 100:.1f}% "
              "of the video forward")
    print("load average (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = runtime.pick_device(args.device)
    results = measure(args, device)
    report(args, device, results)
    return 0

