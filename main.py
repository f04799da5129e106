"""Train ASVFI or PerVFI: the command line, then `train.train(args, procs)`.

    python main.py --optimizer adamw --lr 6e-4                       # -> weights/asvfi/adamw_6e-4.pth, figs/
    python main.py --dataset demo --width 0.125 --crop 128 --batch-size 4 --epochs 6 --windows-per-video 8
    python main.py --optimizer adamw --lr 6e-4 --start-epoch 10      # resume after 10 finished epochs
    python main.py --model pervfi --loss '1*NLL+0.1*PerVFILap'       # PerVFI recipe without VGG weights
    python main.py --dataset vimeo-septuplet --data-root ../data --audio none  # FLAVR's data: README has its recipe
    python main.py --model pervfi --dataset vimeo-triplet --data-root ../data  # PerVFI's data
    torchrun --nproc_per_node=4 main.py ...                          # DDP (NCCL on GPUs, gloo on CPU)

The run name is `<optimizer>_<lr>` with the learning rate as typed (`--lr 6e-4` -> `adamw_6e-4`),
plus `_<tag>` with `--tag`. Outputs go under `--out-dir` (default: the current directory, i.e. the
repository root when run as documented): `weights/<model>/<run>.pth` (latest, every epoch),
`weights/<model>/<run>_best.pth` (best validation PSNR of this run),
`weights/<model>/<run>_epoch<N>.pth` (with --save-every), `figs/<model>/<run>.png` + `.csv`.
A run that already has outputs is never replaced silently: resume it with `--start-epoch N`, or
pass `--overwrite` to start it again from scratch.

Presets bundle the optimiser recipe of a model; a flag given on the command line wins:
    asvfi  (default for --model asvfi):  --lr 6e-4 --beta2 0.99 --scheduler cosine --loss 1*L1
                                         --epochs 200 --no-decay-all
    pervfi (default for --model pervfi): the authors' recipe (src/train, pvfi-v00.yml): --lr 5e-4
                                         --beta2 0.999 --weight-decay 0.01 --decay-all --scheduler
                                         onecycle (max lr = --lr, cosine annealing, per step)
                                         --grad-clip 0.1 --loss 1*NLL+0.1*PerVFILap+0.2*VGG --epochs 96
Both train with --optimizer adamw unless told otherwise.
"""
import argparse
import sys

import cli
import losses
import registry
import runs
import runtime
import testsets
import train

PRESETS = {  # weight_decay None = the optimiser's own default
    "asvfi": {"lr": runs.PRESET_LR["asvfi"], "beta2": 0.99, "weight_decay": None, "decay_all": False,
              "scheduler": "cosine", "grad_clip": 0.0, "loss": "1*L1", "epochs": 200},
    "pervfi": {"lr": runs.PRESET_LR["pervfi"], "beta2": 0.999, "weight_decay": 0.01, "decay_all": True,
               "scheduler": "onecycle", "grad_clip": 0.1, "loss": "1*NLL+0.1*PerVFILap+0.2*VGG", "epochs": 96},
}
ASVFI_ONLY = (("--depth", "depth"), ("--audio", "audio"), ("--pretrained", "pretrained"),
              ("--fusion-init", "fusion_init"))
VIDEO_TRAINING_CROP = 224  # fits UCF-101's 320x240 frames
AT_LEAST_ONE = ("epochs", "batch_size", "windows_per_video")
NOT_NEGATIVE = ("crop", "val_windows", "workers", "save_every", "limit_steps", "grad_clip")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_argument_group("model")
    model.add_argument("--model", default="asvfi", choices=list(registry.TRAINED))
    model.add_argument("--scale", "-s", type=int, default=2, choices=[2, 4, 8], help="frame-rate factor (s-1 new frames)")
    model.add_argument("--depth", default=None, choices=["unet_18", "unet_34"], help="ASVFI encoder (default unet_18)")
    model.add_argument("--width", type=float, default=None,
                       help="channel multiplier (default 1.0 = FLAVR's / PerVFI's published size)")
    model.add_argument("--audio", default=None, choices=["mel", "none"], help="ASVFI audio branch (default mel)")
    model.add_argument("--fusion-init", default=None, choices=["zero_gate", "zero_out"],
                       help="how a fresh audio fusion adds zero (default zero_gate: zero gates, with "
                            "--gate-lr-mult; zero_out: zero output projections, for ablations)")
    model.add_argument("--pretrained", default=None, metavar="PATH",
                       help="starting weights: a FLAVR release (into the video branch; the audio branch "
                            "fresh) or an ASVFI checkpoint of main.py (whole, or its video branch if it has no audio)")

    data = cli.add_data_flags(p)
    data.add_argument("--crop", type=int, default=None,
                      help="random training crop, 0 = full frames (default: 256 on the Vimeo-90K sets, as "
                           "FLAVR's and PerVFI's loaders; 224 on video data sets, to fit UCF-101's 320x240)")
    data.add_argument("--color-jitter", type=float, default=None, metavar="J",
                      help="torchvision ColorJitter(J, J, J, J) per training window, 0 = off (default: 0.05 "
                           "on the Vimeo-90K sets, as FLAVR's and PerVFI's loaders; 0 on video data sets)")
    data.add_argument("--val-crop", type=int, default=0,
                      help="validation centre crop; 0 = full frames, as the evaluation protocol scores them")
    data.add_argument("--windows-per-video", type=int, default=1, help="random training windows per video per epoch")
    data.add_argument("--val-windows", type=int, default=64,
                      help="validation windows, evenly spaced over the val split, the same every epoch and "
                           "seed (0 = all); 64 keeps validation near 18%% of a demo-settings epoch")
    data.add_argument("--batch-size", "--batch_size", type=int, default=1, help="windows per step and process")
    data.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")

    cli.add_run_flags(p)
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: the --model name")
    optim.add_argument("--beta1", type=float, default=0.9)
    optim.add_argument("--beta2", type=float, default=None, help="(preset: 0.99 asvfi, 0.999 pervfi)")
    optim.add_argument("--weight-decay", type=float, default=None,
                       help="AdamW/Adam weight decay (preset: 0.01 pervfi; the optimiser's default for asvfi)")
    optim.add_argument("--decay-all", action=argparse.BooleanOptionalAction, default=None,
                       help="weight decay on every parameter; --no-decay-all spares biases, norms, gates and "
                            "tokens (preset: on for pervfi, whose authors decay all; off for asvfi)")
    optim.add_argument("--scheduler", default=None, choices=["cosine", "onecycle", "plateau", "none"],
                       help="cosine: per epoch to 0 at --epochs; onecycle: per step; plateau: FLAVR's, halved "
                            "when 6 epochs in a row bring no lower validation loss (patience 5) (preset: cosine "
                            "asvfi, onecycle pervfi)")
    optim.add_argument("--gate-lr-mult", type=float, default=10.0,
                       help="learning-rate factor of ASVFI's audio gates (zero at init, they open slowly at 1)")
    optim.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 = off (preset)")
    optim.add_argument("--loss", default=None, help="loss string, e.g. '1*L1+0.1*Lap' (preset)")
    optim.add_argument("--epochs", type=int, default=None, help="total epochs (preset: 200 asvfi as FLAVR, 96 pervfi)")
    optim.add_argument("--start-epoch", "--start_epoch", type=int, default=0,
                       help="N > 0 resumes the run from its checkpoint after N finished epochs")
    optim.add_argument("--overwrite", action="store_true",
                       help="start an existing run again from scratch, replacing its checkpoints and log")
    optim.add_argument("--random-seed", "--random_seed", type=int, default=12345)
    optim.add_argument("--limit-steps", type=int, default=0, help="at most this many steps per epoch (0 = all)")

    machine = cli.add_machine_flags(p)
    cli.add_amp_flag(machine)
    machine.add_argument("--save-every", type=int, default=0, help="also keep <run>_epoch<N>.pth every N epochs")
    return p


def resolve_defaults(args, parser):
    """Part of parsing: fill what the preset decides, pick the dataset, reject contradictory flags."""
    args.preset = args.preset or args.model
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        terms = [name for _, name in losses.parse_loss_spec(args.loss)]
    except ValueError as error:
        parser.error(f"--loss: {error}")
    if "NLL" in terms and not registry.spec(args.model).likelihood:
        parser.error(f"--loss {args.loss}: NLL is a likelihood, and --model {args.model} has none "
                     f"(only {', '.join(n for n, s in registry.MODELS.items() if s.likelihood)} does); "
                     f"use a pixel term such as 1*L1")
    if args.overwrite and args.start_epoch:
        parser.error("--overwrite starts the run from scratch; it does not go with --start-epoch")
    args.dataset = cli.dataset_of(args)
    recipe = testsets.TRAINING.get(args.dataset)
    if args.crop is None:
        args.crop = recipe.crop if recipe else VIDEO_TRAINING_CROP
    if args.color_jitter is None:
        args.color_jitter = recipe.color_jitter if recipe else 0.0
    if not 0 <= args.color_jitter < 1:
        parser.error(f"--color-jitter {args.color_jitter}: must be in [0, 1)")
    given = [flag for flag, key in ASVFI_ONLY if getattr(args, key) is not None]
    if args.model != "asvfi" and given:
        verbs = "configures ASVFI and does" if len(given) == 1 else "configure ASVFI and do"
        parser.error(f"{', '.join(given)} {verbs} not apply to --model {args.model}")
    if args.dataset in runs.TESTSET_FOLDERS:
        check_image_set_training(args, parser)
    for name in AT_LEAST_ONE:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.start_epoch < args.epochs:
        parser.error(f"--start_epoch {args.start_epoch} must be in [0, --epochs {args.epochs})")
    for name in NOT_NEGATIVE:
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return args


def check_image_set_training(args, parser):
    """Only a set with a training list trains (Vimeo-90K septuplets and triplets): its one target lies
    midway between the central inputs, it has frames for some numbers of inputs only, and it has no
    sound for a model to read."""
    if args.dataset not in testsets.TRAINABLE:
        parser.error(f"--dataset {args.dataset} is an image test set: score models on it with inference.py and "
                     f"evaluate.py; main.py trains on video data sets ({', '.join(runs.DATASET_FOLDERS)} or a "
                     f"folder prepared with --dataset-dir) "
                     f"and on {', '.join(testsets.TRAINABLE)}")
    if args.scale != 2:
        parser.error(f"--dataset {args.dataset} has one target frame, midway between the central inputs: "
                     f"train with --scale 2, not {args.scale}")
    consumes = registry.consumes(train.model_config(args))
    inputs = testsets.TRAINING[args.dataset].inputs
    if consumes.input_frames[0] not in inputs:
        parser.error(f"--dataset {args.dataset} gives {' or '.join(map(str, sorted(inputs)))} input frames; "
                     f"--model {args.model} reads {consumes.input_frames[0]} (train a 2-frame model such as "
                     f"--model pervfi on it, or a 4-frame one on vimeo-septuplet)")
    if consumes.audio:
        parser.error(f"--dataset {args.dataset} has no audio: --model {args.model} with its audio branch would "
                     f"learn from silence; pass --audio none (FLAVR's setting: im1, im3, im5, im7 -> im4)")


def parse_args(argv=None):
    parser = build_parser()
    return resolve_defaults(parser.parse_args(argv), parser)


def train_from_command_line(argv=None):
    args = parse_args(argv)
    with runtime.processes(args.device) as procs:  # joins the torchrun group, if any
        train.train(args, procs)
    return 0


def main(argv=None):
    return cli.run_entry_point(train_from_command_line, argv)


if __name__ == "__main__":
    sys.exit(main())
