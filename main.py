"""Train ASVFI or PerVFI: argparse, device and DDP setup, then `train.train(args)`.

    python main.py --optimizer adamw --lr 6e-4                       # -> weights/asvfi/adamw_6e-4.pth, figs/
    python main.py --dataset demo --width 0.125 --crop 128 --batch_size 4 --epochs 6 --windows-per-video 8
    python main.py --optimizer adamw --lr 6e-4 --start_epoch 10      # resume after 10 finished epochs
    python main.py --model pervfi --loss '1*NLL+0.1*Lap'             # PerVFI recipe without VGG weights
    torchrun --nproc_per_node=4 main.py ...                          # DDP (NCCL on GPUs, gloo on CPU)

The run name is `<optimizer>_<lr>` with the learning rate as typed (`--lr 6e-4` -> `adamw_6e-4`),
plus `_<tag>` with `--tag`. Outputs go under `--out-dir` (default: the current directory, i.e. the
repository root when run as documented): `weights/<model>/<run>.pth` (latest, every epoch),
`weights/<model>/best_<model>.pth` (best validation PSNR; `best_<model>_<tag>.pth` for tagged runs),
`weights/<model>/<run>_epoch<N>.pth` (with --save-every), `figs/<run>.png` + `figs/<run>.csv`.

Presets bundle the optimiser recipe of a model; a flag given on the command line wins:
    asvfi  (default for --model asvfi):  --optimizer adamw --beta2 0.99 --scheduler cosine --loss 1*L1
    pervfi (default for --model pervfi): --optimizer adamw --beta2 0.999 --scheduler onecycle
                                         --grad-clip 0.1 --loss 1*NLL+0.1*Lap+0.2*VGG
The learning rate is not part of a preset, so run names stay `<optimizer>_<lr>` as typed.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist

import runs
import runtime
import train
import weights

PRESETS = {
    "asvfi": {"optimizer": "adamw", "beta2": 0.99, "scheduler": "cosine", "grad_clip": 0.0, "loss": "1*L1"},
    "pervfi": {"optimizer": "adamw", "beta2": 0.999, "scheduler": "onecycle", "grad_clip": 0.1,
               "loss": "1*NLL+0.1*Lap+0.2*VGG"},
}


def positive_float_string(text):
    """--lr stays the string the user typed (it names the run) but must parse as a positive float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return text


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_argument_group("model")
    model.add_argument("--model", default="asvfi", choices=["asvfi", "pervfi"])
    model.add_argument("--scale", "-s", type=int, default=2, choices=[2, 4, 8], help="frame-rate factor (s-1 new frames)")
    model.add_argument("--depth", default=None, choices=["unet_18", "unet_34"], help="ASVFI encoder (default unet_18)")
    model.add_argument("--width", type=float, default=None,
                       help="channel multiplier (default 1.0 = FLAVR's / PerVFI's published size)")
    model.add_argument("--audio", default=None, choices=["mel", "none"], help="ASVFI audio branch (default mel)")
    model.add_argument("--pretrained", default=None, metavar="PATH",
                       help="FLAVR checkpoint loaded into the ASVFI video branch before training")

    data = p.add_argument_group("data")
    data.add_argument("--data-root", default="../data")
    data.add_argument("--dataset", default=None, choices=["ucf101", "demo"],
                      help="default: ucf101 when {data_root}/UCF-101 (or its split CSV) exists, else demo "
                           "(generated under {data_root} on first use)")
    data.add_argument("--crop", type=int, default=256, help="random training crop; 0 = full frames")
    data.add_argument("--val-crop", type=int, default=0,
                      help="validation centre crop; 0 = full frames, as the evaluation protocol scores them")
    data.add_argument("--windows-per-video", type=int, default=1, help="random training windows per video per epoch")
    data.add_argument("--val-windows", type=int, default=200,
                      help="validation windows, evenly spaced over the val split (0 = all)")
    data.add_argument("--batch_size", "--batch-size", type=int, default=1, help="windows per step and process")
    data.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: the --model name")
    optim.add_argument("--optimizer", default=None, choices=["adamw", "adam"], help="(preset: adamw)")
    optim.add_argument("--lr", default="6e-4", type=positive_float_string, help="learning rate, kept as typed for the run name")
    optim.add_argument("--beta1", type=float, default=0.9)
    optim.add_argument("--beta2", type=float, default=None, help="(preset: 0.99 asvfi, 0.999 pervfi)")
    optim.add_argument("--scheduler", default=None, choices=["cosine", "onecycle", "none"],
                       help="cosine: per epoch to 0 at --epochs; onecycle: per step (preset)")
    optim.add_argument("--gate-lr-mult", type=float, default=1.0,
                       help="learning-rate factor of ASVFI's zero-initialised audio gates (they open slowly)")
    optim.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 = off (preset)")
    optim.add_argument("--loss", default=None, help="loss string, e.g. '1*L1+0.1*Lap' (preset)")
    optim.add_argument("--epochs", type=int, default=200, help="total epochs")
    optim.add_argument("--start_epoch", "--start-epoch", type=int, default=0,
                       help="N > 0 resumes the run from its checkpoint after N finished epochs")
    optim.add_argument("--random_seed", "--random-seed", type=int, default=12345)
    optim.add_argument("--limit-steps", type=int, default=0, help="at most this many steps per epoch (0 = all)")

    run = p.add_argument_group("run")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    run.add_argument("--amp", nargs="?", const="bf16", default=None, choices=["bf16", "fp16"],
                     help="autocast on CUDA (bare --amp = bf16; fp16 adds a GradScaler); ignored on CPU")
    run.add_argument("--tag", default=None, help="run-name suffix, e.g. noaudio -> adamw_6e-4_noaudio")
    run.add_argument("--save-every", type=int, default=0, help="also keep <run>_epoch<N>.pth every N epochs")
    run.add_argument("--weights-dir", default=None, help="folder with pretrained weight files (offline machines)")
    run.add_argument("--out-dir", default=".", help="root of weights/ and figs/")
    run.add_argument("--save-rank-states", default=None, metavar="DIR",
                     help="after training, every process writes its weights to DIR/rank<r>.pth "
                          "(the DDP test uses it to check that ranks end in sync)")
    return p


def resolve_defaults(args, parser):
    """Fill what the preset decides, pick the dataset, and reject contradictory flags."""
    args.preset = args.preset or args.model
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dataset is None:
        args.dataset = runs.default_dataset(args.data_root)
    if args.model == "pervfi":
        given = [flag for flag, key in (("--depth", "depth"), ("--audio", "audio"), ("--pretrained", "pretrained"))
                 if getattr(args, key) is not None]
        if given:
            parser.error(f"{', '.join(given)} configure ASVFI and do not apply to --model pervfi")
    for name in ("epochs", "batch_size", "windows_per_video"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('windows_per_video', 'windows-per-video')} must be at least 1")
    if not 0 <= args.start_epoch < args.epochs:
        parser.error(f"--start_epoch {args.start_epoch} must be in [0, --epochs {args.epochs})")
    for name in ("crop", "val_windows", "workers", "save_every", "limit_steps", "grad_clip"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return args


def parse_args(argv=None):
    parser = build_parser()
    return resolve_defaults(parser.parse_args(argv), parser)


def setup_distributed(device_name):
    """(device, distributed?) — torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process otherwise."""
    device = runtime.pick_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, False
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, True


def main(argv=None):
    args = parse_args(argv)
    device, distributed = setup_distributed(args.device)
    args.device = str(device)
    try:
        train.train(args)
        return 0
    except (train.TrainingStopped, weights.WeightsUnavailable, FileNotFoundError) as stop:
        print(f"error: {stop}", file=sys.stderr)
        return 1
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
