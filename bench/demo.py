"""The demo end to end: does the sound help? Trained, generated and scored in one command (`make demo`).

    python tools.py demo                                   # ../data/demo-160x120, 2-5 min on 2 CPU cores
    python tools.py demo --size 320x240 --data-root ../data/demo-320x240 --epochs 12

1. generates the demo set at --size under --data-root (once);
2. trains the small ASVFI twice, with audio and with `--audio none`, at the same time (one CPU
   thread each; the runs of `tools.py audio_ablation` with the tag prefix `demo_`);
3. regenerates the test split at 2x with the repeat, blend and DIS baselines as soon as a CPU is
   free, and with each arm's best checkpoint once it is trained (two processes at a time);
4. scores all five with PSNR and SSIM and prints one table, best first, and the time each stage took;
5. plots why (`tools.py demo-figure`): the light of each generated lamp frame against the truth.

Every step is an ordinary script run; the commands are printed so that each can be rerun alone,
from the folder the demo ran in. The table is also written to `figs/demo.md`, with what its
numbers are of and the command that makes it again.
"""
import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import prepare
import runs
import tools
import utils

ablation = tools.load_bench("audio_ablation")
job_runner = tools.load_bench("_jobs")

BASELINES = (("repeat", "Repeat (previous frame)"), ("blend", "Blend (mean of neighbours)"),
             ("dis", "DIS (OpenCV optical flow, bidirectional warp)"))
TAG_PREFIX = "demo_"


def build_parser():
    p = argparse.ArgumentParser(prog="tools.py demo", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../data/demo-160x120", help="the demo set is generated here once")
    p.add_argument("--size", type=prepare.parse_size, default="160x120", help="WxH of the generated demo frames")
    p.add_argument("--frames", type=int, default=100, help="frames per generated clip (25 fps)")
    p.add_argument("--epochs", type=int, default=4)
    # Small crops: on 2 CPU cores a step's cost is proportional to its pixels, and the sound is
    # learned sooner from many small steps than from a few large ones (README, "Does the sound help?").
    p.add_argument("--crop", type=int, default=32, help="random training crop; 0 = full frames")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--windows-per-video", type=int, default=32)
    p.add_argument("--val-windows", type=int, default=16, help="about a tenth of an epoch's time")
    p.add_argument("--lr", default="2e-3")
    p.add_argument("--out-dir", default=".", help="root of weights/, figs/ and evals/ (as main.py)")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


class Stages:
    """Wall-clock time of each named stage, for the summary."""

    def __init__(self):
        self.times, self.start = [], time.perf_counter()

    def run(self, name, work):
        began = time.perf_counter()
        result = work()
        self.times.append((name, time.perf_counter() - began))
        return result

    def summary(self):
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.times)
        return f"total {time.perf_counter() - self.start:.0f} s ({parts})"


def ablation_args(args):
    """`tools.py audio_ablation`'s settings for the two arms (its report, and the command in it, is
    written from them)."""
    return ablation.parse_args([
        "--data-root", args.data_root, "--size", str(args.size), "--frames", str(args.frames),
        "--epochs", str(args.epochs), "--crop", str(args.crop),
        "--batch-size", str(args.batch_size), "--windows-per-video", str(args.windows_per_video),
        "--val-windows", str(args.val_windows), "--lr", args.lr, "--workers", "0", "--parallel",
        "--overwrite", "--tag-prefix", TAG_PREFIX, "--out-dir", args.out_dir])


def best_checkpoint(args, tag):
    run = runs.run_name("adamw", args.lr, TAG_PREFIX + tag)
    return runs.best_checkpoint_path("asvfi", run, out_dir=args.out_dir)


@dataclass
class Method:
    """One row of the table: its label, the ASVFI arm's tag (None for a baseline) and its script flags."""
    label: str
    tag: str
    model: str
    checkpoint: str
    flags: list


def methods(args):
    """The five methods of the table: the baselines, then the two ASVFI arms' best checkpoints."""
    common = ["--dataset", "demo", "--data-root", args.data_root, "--out-dir", args.out_dir, "-s", "2"]
    rows = [Method(label, None, model, None, ["--model", model]) for model, label in BASELINES]
    for tag, _, label in ablation.ARMS:
        checkpoint = str(best_checkpoint(args, tag))
        rows.append(Method(label, tag, "asvfi", checkpoint, ["--model", "asvfi", "--checkpoint", checkpoint]))
    for row in rows:
        row.flags += common
    return rows


def generate_and_score(flags):
    return [[job_runner.script_path("inference.py"), *flags, "--overwrite"],
            [job_runner.script_path("evaluate.py"), *flags, "--metrics", "psnr,ssim", "--restart"]]


def demo_jobs(args):
    """Both arms first; the baselines when a slot frees up; each arm's frames once it is trained."""
    settings = ablation_args(args)
    jobs = [job_runner.Job(f"train {tag}", [[job_runner.script_path("main.py"),
                                             *ablation.training_flags(settings, TAG_PREFIX + tag, audio)]],
                           quiet=False) for tag, audio, _ in ablation.ARMS]
    rows = methods(args)
    jobs.append(job_runner.Job("baselines", [command for row in rows if row.tag is None
                                             for command in generate_and_score(row.flags)]))
    jobs += [job_runner.Job(f"ASVFI {row.tag}", generate_and_score(row.flags), after=(f"train {row.tag}",))
             for row in rows if row.tag is not None]
    return jobs


def summary_of(args, row):
    """The evaluation summary JSON that evaluate.py wrote for one method of the table."""
    run = runs.generated_run(row.model, "adamw", args.lr, checkpoint=row.checkpoint)
    csv_path = runs.eval_csv_path(row.model, run, "demo", 2, out_dir=args.out_dir)
    return json.loads(csv_path.with_name(csv_path.stem + "_summary.json").read_text())


def scored_set(summaries):
    """(videos, generated frames) that every row was scored on; the caption states them once."""
    scored = {(summary["videos"], summary["metrics"]["psnr"]["frames"]) for summary in summaries}
    if len(scored) != 1:
        raise utils.ASVFIError("the rows of the demo table were scored on different sets: " + "; ".join(
            f"{summary['csv']}: {summary['videos']} videos" for summary in summaries))
    return scored.pop()


def table_caption(args, summaries):
    """What the table's numbers are of: the data, the protocol and the checkpoints, from the reports."""
    videos, frames = scored_set(summaries)
    protocol = {summary["protocol"]["name"] for summary in summaries}
    checkpoints = ", ".join(f"`{Path(row.checkpoint).name}`" for row in methods(args) if row.tag is not None)
    return (f"Demo test split, {args.size}, 2x (frames 0, 2, 4, ... in, every other frame generated): PSNR and "
            f"SSIM of the {frames} generated frames of the {videos} test videos, averaged per video, then over "
            f"the videos (protocol {', '.join(sorted(protocol))}); std: of the per-video means over those {videos} "
            f"videos. The ASVFI rows are each arm's best-validation-epoch checkpoint ({checkpoints}).")


def std_text(entry, decimals):
    return "—" if entry["std"] is None else f"{entry['std']:.{decimals}f}"  # undefined over one video


def result_table(args):
    """Markdown table of the five methods on the demo test split, best PSNR first, with its caption
    and the command that makes it again."""
    summaries = {row.label: summary_of(args, row) for row in methods(args)}
    rows = sorted(summaries.items(), key=lambda item: item[1]["metrics"]["psnr"]["mean"], reverse=True)
    lines = [table_caption(args, summaries.values()), "",
             "| model | PSNR (dB) | PSNR std | SSIM | SSIM std |", "|---|---:|---:|---:|---:|"]
    for label, summary in rows:
        psnr, ssim = summary["metrics"]["psnr"], summary["metrics"]["ssim"]
        lines.append(f"| {label} | {psnr['mean']:.2f} | {std_text(psnr, 2)} | {ssim['mean']:.3f} | {std_text(ssim, 3)} |")
    lines += ["", f"Command: `{job_runner.command_line(build_parser(), args)}`"]
    return "\n".join(lines)


def draw_figure(args):
    """`tools.py demo-figure` on the demo's runs, printed as the other steps are."""
    figure = tools.load_bench("demo_figure")  # here, not at import: demo_figure imports this module
    settings = figure.parse_args(["--data-root", args.data_root, "--lr", args.lr, "--tag-prefix", TAG_PREFIX,
                                  "--out-dir", args.out_dir])
    print(f"$ {job_runner.command_line(figure.build_parser(), settings)}", flush=True)
    return figure.main(job_runner.command_args(figure.build_parser(), settings))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stages = Stages()
    stages.run("data", lambda: prepare.ensure_demo(args.data_root, size=args.size, frames=args.frames))
    log_dir = Path(args.out_dir) / "figs" / "demo_logs"
    seconds = stages.run("training, generation, scoring", lambda: job_runner.run_jobs(demo_jobs(args), log_dir))
    ablation.write_report(ablation_args(args))
    table = result_table(args)
    utils.atomic_write_text(Path(args.out_dir) / "figs" / "demo.md", table + "\n")
    print("\n" + table + "\n")
    stages.run("figure", lambda: draw_figure(args))
    print("jobs, two at a time: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    print(f"make demo: {stages.summary()}")
    return 0

