"""Does the sound help? Small ASVFI trained twice on the demo data: with audio and with `--audio none`.

    python tools.py audio_ablation                      # train both arms, then the table + figure
    python tools.py audio_ablation --epochs 10 --crop 96
    python tools.py audio_ablation --report-only        # only re-read the two logs

Both arms get the same data, windows, crops, seed, optimiser and number of steps; only the audio
branch differs. They are ordinary main.py runs tagged `audio` / `noaudio`
(`weights/asvfi/<opt>_<lr>_<tag>.pth`, `figs/asvfi/<opt>_<lr>_<tag>.csv`), so either can be resumed,
inspected or evaluated like any other run. The report is written to `figs/audio_ablation.md`
(validation PSNR per epoch and best, markdown, with what they were measured on and the command
that trains both arms again) and `figs/audio_ablation.png`.
"""
import argparse
import csv
import shlex
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.utils.data import Subset

import main as train_entry
import prepare
import runs
import tools
import train
import utils

job_runner = tools.load_bench("_jobs")

# (run tag, main.py --audio, label) of the two arms; tools.py demo and demo-figure show the same two
ARMS = (("audio", "mel", "ASVFI, audio"), ("noaudio", "none", "ASVFI, no audio"))


def build_parser():
    p = argparse.ArgumentParser(prog="tools.py audio_ablation", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../data", help="the demo is generated under it on first use")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--crop", type=int, default=128, help="random training crop; 0 = full frames")
    p.add_argument("--size", type=prepare.parse_size, default=None,
                   help="WxH: generate the demo at this frame size in --data-root first (default: 320x240)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per clip of the demo generated in --data-root first (default: 100)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--windows-per-video", type=int, default=8)
    p.add_argument("--val-windows", type=int, default=64)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adam"])
    p.add_argument("--lr", default="6e-4", help="as typed: part of the run names")
    p.add_argument("--scheduler", default="cosine", choices=["cosine", "onecycle", "none"])
    p.add_argument("--gate-lr-mult", type=float, default=10.0)
    p.add_argument("--fusion-init", default="zero_gate", choices=["zero_gate", "zero_out"],
                   help="the audio fusion's init (main.py --fusion-init)")
    p.add_argument("--start-epoch", type=int, default=0, help="resume both arms after this many epochs")
    p.add_argument("--tag-prefix", default="", help="prefix of the two run tags (e.g. tiny_ -> tiny_audio)")
    p.add_argument("--parallel", action="store_true",
                   help="train the two arms at the same time, one process (and one thread) each")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--out-dir", default=".", help="root of weights/ and figs/ (as main.py)")
    p.add_argument("--overwrite", action="store_true", help="start both arms again (main.py --overwrite)")
    p.add_argument("--report-only", action="store_true", help="skip training; report from the existing logs")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def rerun_settings(args):
    """The settings that train both arms again as `args` did: from scratch over the runs that exist
    (a resumed run ends with the same weights as one trained in one go)."""
    return argparse.Namespace(**{**vars(args), "overwrite": True, "start_epoch": 0, "report_only": False})


def demo_options(args):
    """The demo size and length asked for (ensure_demo's options); none: any demo there."""
    return {key: value for key, value in (("size", args.size), ("frames", args.frames)) if value}


def training_flags(args, tag, audio):
    flags = ["--model", "asvfi", "--dataset", "demo", "--data-root", args.data_root, "--audio", audio,
             "--tag", tag, "--epochs", str(args.epochs), "--width", str(args.width), "--crop", str(args.crop),
             "--batch_size", str(args.batch_size), "--windows-per-video", str(args.windows_per_video),
             "--val-windows", str(args.val_windows), "--optimizer", args.optimizer, "--lr", args.lr,
             "--random_seed", str(args.seed), "--workers", str(args.workers), "--out-dir", args.out_dir,
             "--scheduler", args.scheduler, "--gate-lr-mult", str(args.gate_lr_mult),
             "--fusion-init", args.fusion_init,
             "--start_epoch", str(args.start_epoch)]
    return flags + (["--device", args.device] if args.device else []) + (["--overwrite"] if args.overwrite else [])


def log_path(args, tag):
    return runs.log_path("asvfi", runs.run_name(args.optimizer, args.lr, args.tag_prefix + tag), args.out_dir)


def train_arms(args):
    """Both arms through main.py: one after the other, or as two one-thread processes at once."""
    arms = [(label, training_flags(args, args.tag_prefix + tag, audio)) for tag, audio, label in ARMS]
    for label, flags in arms:
        print(f"== {label}: {shlex.join(['python', job_runner.script_path('main.py'), *flags])}")
    if not args.parallel:
        return all(train_entry.main(flags) == 0 for _, flags in arms)
    jobs = [job_runner.Job(f"train {args.tag_prefix}{tag}", [["main.py", *flags]], quiet=False)
            for (tag, _, _), (_, flags) in zip(ARMS, arms)]
    job_runner.run_jobs(jobs, Path(args.out_dir) / "figs" / "audio_ablation_logs")
    return True


def read_log(path):
    if not path.is_file():
        raise utils.ASVFIError(f"{path}: no training log; run `python tools.py audio_ablation` without --report-only")
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def markdown_table(logs):
    """Validation PSNR (dB) per epoch for both arms, their difference, and each arm's best."""
    (tag_a, _, name_a), (tag_b, _, name_b) = ARMS
    common = min(len(logs[tag_a]), len(logs[tag_b]))  # an arm cut short is compared on the epochs both have
    a, b = logs[tag_a][:common], logs[tag_b][:common]
    lines = [f"| epoch | {name_a} PSNR | {name_b} PSNR | audio − no audio |", "|---:|---:|---:|---:|"]
    for row_a, row_b in zip(a, b):
        lines.append(f"| {int(row_a['epoch'])} | {row_a['val_psnr']:.2f} | {row_b['val_psnr']:.2f} | "
                     f"{row_a['val_psnr'] - row_b['val_psnr']:+.2f} |")
    best_a, best_b = max(r["val_psnr"] for r in a), max(r["val_psnr"] for r in b)
    lines.append(f"| best | {best_a:.2f} | {best_b:.2f} | {best_a - best_b:+.2f} |")
    return "\n".join(lines)


def plot(logs, path, title="Demo data: audio vs no audio"):
    figure = Figure(figsize=(6, 4), tight_layout=True)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for tag, _, label in ARMS:
        axis.plot([r["epoch"] for r in logs[tag]], [r["val_psnr"] for r in logs[tag]], "o-", label=label)
    axis.set(xlabel="epoch", ylabel="validation PSNR (dB)", title=title)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend()
    utils.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def validation_caption(args):
    """What the validation PSNR of the table is of, read from the val windows main.py builds for the arms."""
    tag, audio, _ = ARMS[0]  # both arms are validated on the same windows
    settings = train_entry.parse_args(training_flags(rerun_settings(args), args.tag_prefix + tag, audio))
    try:
        windows = train.validation_windows(settings)
    except utils.ASVFIError as error:  # a report from the logs alone, the data moved or removed since
        return (f"Validation PSNR (dB) after each epoch, on --val-windows {settings.val_windows} windows of the val "
                f"split of {settings.data_root}, {settings.scale}x ({error}, so their videos and frame size are not "
                f"named). `best` is the maximum over the epochs on these same windows, which also picked each "
                f"arm's `_best` checkpoint: optimistic by that choice.")
    source, indices = (windows.dataset, windows.indices) if isinstance(windows, Subset) else (windows, range(len(windows)))
    n_videos = len({source.eval_windows[i][0] for i in indices})  # (video, start) of each window
    sizes = ", ".join(f"{w}x{h}" for h, w in sorted(train.frame_sizes(windows)))
    per_window = settings.scale - 1
    return (f"Validation PSNR (dB) after each epoch, on the same {len(windows)} windows of the val split "
            f"({n_videos} videos), full {sizes} frames, {settings.scale}x: {per_window} generated frame"
            f"{'s' if per_window > 1 else ''} per window. `best` is the maximum over the epochs on these same "
            f"windows, which also picked each arm's `_best` checkpoint: optimistic by that choice.")


def write_report(args):
    """The per-epoch table (markdown) and curves of both arms, from their training logs."""
    logs = {tag: read_log(log_path(args, tag)) for tag, _, _ in ARMS}
    command = job_runner.command_line(build_parser(), rerun_settings(args))
    report = f"{validation_caption(args)}\n\n{markdown_table(logs)}\n\nCommand: `{command}`\n"
    out = Path(args.out_dir) / "figs"
    name = f"{args.tag_prefix}audio_ablation"
    utils.atomic_write_text(out / f"{name}.md", report)
    plot(logs, out / f"{name}.png", title=f"Demo data{f' ({args.size})' if args.size else ''}: audio vs no audio")
    print(report)
    print(f"wrote {out / name}.md and {out / name}.png")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if demo_options(args) and not args.report_only:
        prepare.ensure_demo(args.data_root, **demo_options(args))
    if not args.report_only and not train_arms(args):
        raise utils.ASVFIError("training an arm failed (see above)")
    write_report(args)
    return 0

