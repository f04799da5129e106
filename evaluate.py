"""Score generated frames against the ground truth: console table + evals/<Model>_<run>_s<s>.csv.

    python evaluate.py --optimizer adamw --lr 6e-4 -s 2               # ASVFI run adamw_6e-4, 2x
    python evaluate.py --model blend -s 2 --metrics psnr,ssim,lpips   # a baseline, some metrics
    python evaluate.py --model dis -s 4 --flow dis --offline          # no downloads; DIS flow for FloLPIPS

It compares `{data_root}/<Model>/scale/<s>[_<run>]/<Category>/<video>/frame_%05d.png` (inputs at
0, s, 2s, … copied, every other frame generated; written by inference.py) with
`{data_root}/GT/scale/<s>/<Category>/<video>/`:
- PSNR, SSIM and LPIPS are averaged over the generated frames (indices not multiples of s) of a
  video, then over videos;
- FloLPIPS and VFIPS score the whole sequence of each video; FVD compares the set of all
  16-frame clips of all outputs with those of the ground truth (one number; N clips reported).

Frames are read in chunks (never a whole video in memory). One CSV row per video is appended and
flushed as soon as the video is done, so an interrupted run resumes where it stopped; rows of
videos that failed (missing output, frame count or size mismatch) are dropped and retried on the
next run. The FVD needs every video's I3D features, so they are cached per video next to the CSV.
A metric whose weights cannot be had (e.g. `--offline` without them) is listed as unavailable;
the others still run. The summary (mean, std over videos, N) is printed and written atomically
to `<csv>_summary.json` and `<csv>_summary.txt`.

Unlike flolpips' `calc_flolpips` (mp4 → yuv420p → BT.601 RGB) and VFIPS' script (decoded video),
every metric reads the lossless PNG frames that inference.py writes.
"""
import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

import checkpoints
import cli
import fvd
import metrics
import registry
import runs
import runtime
import utils
import video_io
from utils import ASVFIError

FRAME_CHUNK = 48  # frames read at a time: a multiple of the 12-frame VFIPS and 16-frame FVD windows
DISPLAY = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "flolpips": "FloLPIPS", "vfips": "VFIPS",
           "fvd": "FVD"}
LABEL = 16  # width of the metric column of the console table
BASE_COLUMNS = ("video", "category", "frames", "generated")
TAIL_COLUMNS = ("error", "notes")


class VideoMismatch(ASVFIError):
    """The output of a video cannot be compared with its ground truth (the message says why)."""


# ----------------------------------------------------------------------------- videos and frames
def frame_files(folder):
    """Sorted `frame_%05d.png` files of a folder, checked to be numbered 0 … N−1 without gaps."""
    files = sorted(Path(folder).glob("frame_*.png"))
    for index, path in enumerate(files):
        if path.name != f"frame_{index:05d}.png":
            raise VideoMismatch(f"{folder}: frames are not numbered contiguously (expected "
                                f"frame_{index:05d}.png, found {path.name})")
    return files


def test_split_csv(args):
    """The split CSV whose test videos are scored: --dataset's (which must exist), or the default
    data set's when it has one (None: every ground-truth video)."""
    split_csv = runs.dataset_paths(args.data_root, cli.dataset_of(args))["split_csv"]
    if args.dataset and not split_csv.is_file():
        raise ASVFIError(f"--dataset {args.dataset}: {split_csv} not found")
    return split_csv if split_csv.is_file() else None


def list_videos(gt_root, split_csv=None):
    """(category, video) of every finished ground-truth folder; with a split CSV, only its test split."""
    if not gt_root.is_dir():
        raise ASVFIError(f"{gt_root}: no ground-truth frames; run inference.py for this scale first "
                         f"(it writes the ground truth next to the generated frames)")
    videos = [(folder.parent.name, folder.name) for folder in sorted(gt_root.glob("*/*"))
              if folder.is_dir() and not folder.name.endswith(".partial") and (folder / "frame_00000.png").is_file()]
    if split_csv is not None:
        table = pd.read_csv(split_csv)
        test = {(Path(p).parent.name, Path(p).stem) for p in table.loc[table["split"] == "test", "path"]}
        videos = [v for v in videos if v in test]
    return videos


def frame_size(path):
    with Image.open(path) as image:
        return image.size


def check_pair(gt_folder, out_folder):
    """Number of frames of a comparable (ground truth, output) pair; VideoMismatch otherwise."""
    if not out_folder.is_dir():
        raise VideoMismatch(f"no generated frames at {out_folder} (run inference.py for this model and scale)")
    gt_files, out_files = frame_files(gt_folder), frame_files(out_folder)
    if len(gt_files) != len(out_files):
        raise VideoMismatch(f"frame count mismatch: {len(out_files)} generated in {out_folder} vs "
                            f"{len(gt_files)} ground truth in {gt_folder}")
    if len(gt_files) < 2:
        raise VideoMismatch(f"{gt_folder}: {len(gt_files)} frame(s); at least 2 are needed")
    gt_size, out_size = frame_size(gt_files[0]), frame_size(out_files[0])
    if gt_size != out_size:
        raise VideoMismatch(f"frame size mismatch: {out_size[0]}x{out_size[1]} generated vs "
                            f"{gt_size[0]}x{gt_size[1]} ground truth ({out_folder})")
    return len(gt_files)


def load_chunk(folder, start, stop, device):
    """Frames [start, stop) as contiguous (N, 3, H, W) float32 in [0, 1] on `device`."""
    frames = torch.from_numpy(video_io.read_png_frames(folder, start, stop)).to(device)
    return frames.permute(0, 3, 1, 2).contiguous().float().div_(255)


# ----------------------------------------------------------------------------- one video
def score_video(gt_folder, out_folder, scale, built, device):
    """Run every metric over one video pair: (CSV values, FVD features or None)."""
    n_frames = check_pair(gt_folder, out_folder)
    scorers = {name: metric.scorer() for name, metric in built.items()}
    with torch.no_grad():
        for start in range(0, n_frames, FRAME_CHUNK):
            stop = min(start + FRAME_CHUNK, n_frames)
            ref, pred = load_chunk(gt_folder, start, stop, device), load_chunk(out_folder, start, stop, device)
            if ref.shape != pred.shape:
                raise VideoMismatch(f"frame size mismatch in frames {start}-{stop - 1}: generated "
                                    f"{tuple(pred.shape[-2:])} vs ground truth {tuple(ref.shape[-2:])}")
            generated = torch.arange(start, stop, device=device) % scale != 0
            for name, scorer in scorers.items():
                if built[name].scope == "generated":
                    scorer.update(ref[generated], pred[generated])
                else:
                    scorer.update(ref, pred)
    values = {"frames": n_frames, "generated": sum(1 for i in range(n_frames) if i % scale)}
    notes = []
    for name, scorer in scorers.items():
        result = scorer.result()
        values[built[name].column] = "" if result.value is None else result.value
        if result.reason:
            notes.append(f"{name}: {result.reason}")
    values["notes"] = "; ".join(notes)
    features = scorers["fvd"].features() if "fvd" in scorers else None
    return values, features


# ----------------------------------------------------------------------------- the CSV (resumable)
def csv_columns(metric_names, flow_name):
    return list(BASE_COLUMNS) + [metrics.metric_column(n, flow_name) for n in metric_names] + list(TAIL_COLUMNS)


def format_value(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


class ResultsCSV:
    """One row per video, appended and flushed as each video finishes.

    On start it keeps the finished rows of an earlier run with the same columns (a row cut off by
    an interruption and the rows of failed videos are dropped, so those videos are redone) and
    rewrites the file atomically; `done` holds the (category, video) keys already scored.
    """

    def __init__(self, path, columns, scale, restart=False):
        self.path, self.columns, self.scale = Path(path), list(columns), scale
        self.rows = [] if restart or not self.path.is_file() else self._read_previous()
        self.done = {(row["category"], row["video"]) for row in self.rows}
        utils.atomic_write_text(self.path, self._render(self.rows))

    def _read_previous(self):
        text = self.path.read_text()
        complete = text[:text.rfind("\n") + 1] if not text.endswith("\n") else text
        reader = csv.DictReader(io.StringIO(complete))
        if reader.fieldnames is None:
            return []
        if list(reader.fieldnames) != self.columns:
            raise ASVFIError(f"{self.path} was written with columns {reader.fieldnames}, this run has "
                             f"{self.columns} (other --metrics or --flow). Rerun with the same options to "
                             f"resume, or add --restart to start this report again.")
        return [row for row in reader if not row["error"] and None not in row.values()]

    def _render(self, rows):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def put_in_order(self, keys):
        """Rewrite the file with the rows in `keys` order (a resumed run then equals an uninterrupted
        one: rows of retried videos would otherwise come after those scored before the interruption)."""
        position = {key: i for i, key in enumerate(keys)}
        self.rows.sort(key=lambda row: position.get((row["category"], row["video"]), len(position)))
        utils.atomic_write_text(self.path, self._render(self.rows))

    def append(self, row):
        row = {column: format_value(row.get(column, "")) for column in self.columns}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, lineterminator="\n").writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        self.done.add((row["category"], row["video"]))


class FeatureCache:
    """Per-video I3D features (real and fake clips) so a resumed run computes the same FVD."""

    def __init__(self, folder, device, restart=False):
        self.folder, self.device = Path(folder), device
        if restart and self.folder.is_dir():
            for path in self.folder.glob("*/*.pt"):
                path.unlink()

    def path(self, category, video):
        return self.folder / category / f"{video}.pt"

    def save(self, category, video, features):
        real, fake = features
        checkpoints.save({"real": torch.from_numpy(real), "fake": torch.from_numpy(fake)},
                                self.path(category, video))

    def load(self, category, video):
        path = self.path(category, video)
        if not path.is_file():
            return None
        state = checkpoints.load_file(path)
        return state["real"].numpy(), state["fake"].numpy()


# ----------------------------------------------------------------------------- summary
def column_stats(rows, column):
    values = np.array([float(r[column]) for r in rows if r.get(column, "") != ""], dtype=np.float64)
    if not len(values):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def set_level_fvd(rows, cache):
    """FVD over the cached clip features of every scored video."""
    real, fake, missing = [], [], 0
    for row in rows:
        if row.get("fvd_clips", "") == "" or int(float(row["fvd_clips"])) == 0:
            continue
        features = cache.load(row["category"], row["video"])
        if features is None:
            missing += 1
            continue
        real.append(features[0])
        fake.append(features[1])
    if not real:
        return {"value": None, "clips": 0, "reason": "no video has 16 frames"}
    value, reason, clips = fvd.fvd_from_features(np.concatenate(real), np.concatenate(fake))
    if missing:
        reason = (reason + "; " if reason else "") + f"features of {missing} video(s) missing from {cache.folder}"
    return {"value": value, "clips": clips, "reason": reason}


def summarize(rows, built, unavailable, names, args, csv_path, cache):
    scored = [r for r in rows if not r["error"]]
    summary = {"model": runs.DISPLAY_NAMES[args.model], "run": run_of(args), "scale": args.scale,
               "epoch": args.epoch, "csv": str(csv_path), "videos": len(scored),
               "failed": [f"{r['category']}/{r['video']}: {r['error']}" for r in rows if r["error"]],
               "metrics": {}}
    for name in names:
        if name in unavailable:
            entry = {"status": "unavailable", "reason": unavailable[name]}
        elif name == "fvd":
            entry = {"status": "ok", **set_level_fvd(scored, cache)}
        else:
            entry = {"status": "ok", **column_stats(scored, built[name].column)}
            without = [r for r in scored if r.get(built[name].column, "") == ""]
            if without:
                entry["without_value"] = len(without)
                entry["why"] = sorted({note[len(name) + 2:] for r in without for note in r["notes"].split("; ")
                                       if note.startswith(f"{name}: ")})
        if name in built:
            entry["about"] = built[name].about
            entry.update(built[name].info)
        if name == "flolpips":
            entry["flow"] = args.flow
        summary["metrics"][name] = entry
    return summary


def format_number(value):
    return "—" if value is None else f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"


def format_table(summary):
    run = f" {summary['run']}" if summary["run"] else ""
    lines = [f"{summary['model']}{run}, {summary['scale']}x: {summary['videos']} video(s) scored"
             + (f", {len(summary['failed'])} failed (see the CSV 'error' column)" if summary["failed"] else ""),
             f"{'metric':<{LABEL}}{'mean':>12}{'std':>12}{'N':>8}  notes"]
    for name, entry in summary["metrics"].items():
        label = DISPLAY[name] + (f" ({entry['flow'].upper()})" if "flow" in entry else "")
        if entry["status"] == "unavailable":
            lines.append(f"{label:<{LABEL}}unavailable ({entry['reason']})")
        elif name == "fvd":
            note = f"{entry['clips']} clips of {fvd.FVD_CLIP_FRAMES} frames" + (
                f"; {entry['reason']}" if entry["reason"] else "")
            lines.append(f"{label:<{LABEL}}{format_number(entry['value']):>12}{'':>12}{entry['clips']:>8}  {note}")
        else:
            note = (f"{entry['without_value']} video(s) without a value: {'; '.join(entry['why'])}"
                    if entry.get("without_value") else "")
            lines.append(f"{label:<{LABEL}}{format_number(entry['mean']):>12}{format_number(entry['std']):>12}"
                         f"{entry['n']:>8}  {note}".rstrip())
    for failure in summary["failed"]:
        lines.append(f"FAILED {failure}")
    return "\n".join(lines) + "\n"


def write_summary(summary, csv_path):
    stem = csv_path.with_suffix("")
    utils.atomic_write_text(f"{stem}_summary.json", json.dumps(summary, indent=2) + "\n")
    utils.atomic_write_text(f"{stem}_summary.txt", format_table(summary))


# ----------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="asvfi", choices=list(registry.MODELS))
    p.add_argument("-s", "--scale", type=int, default=2)
    cli.add_run_flags(p)
    cli.add_checkpoint_flags(p)
    cli.add_data_flags(p)
    cli.add_machine_flags(p)
    p.add_argument("--metrics", default=",".join(metrics.METRIC_NAMES),
                   help=f"comma-separated subset of {','.join(metrics.METRIC_NAMES)}")
    p.add_argument("--flow", default="pwc", choices=list(metrics.FLOW_NAMES),
                   help="FloLPIPS flow: pwc (the reference's PWC-Net) or dis (OpenCV DIS, no weights)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--limit", type=int, default=0, help="only the first N videos")
    p.add_argument("--restart", action="store_true", help="discard an earlier report of this run instead of resuming")
    return p


def metric_names(text):
    """--metrics as a list without repeats, in the order given."""
    return list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    names = metric_names(args.metrics)
    unknown = [m for m in names if m not in metrics.METRIC_NAMES]
    if unknown or not names:
        p.error(f"--metrics: unknown {unknown}; choose from {','.join(metrics.METRIC_NAMES)}")
    return args


def run_of(args):
    return runs.generated_run(args.model, args.optimizer, args.lr, args.tag, args.epoch, args.checkpoint)


def score_videos(videos, folders, built, results, cache):
    """Score the videos not yet in the CSV, appending one row each; folders = (gt root, output root)."""
    gt_root, out_root = folders
    for category, video in tqdm([v for v in videos if v not in results.done], desc=f"evaluate {out_root}",
                                unit="video"):
        row = {"video": video, "category": category}
        try:
            values, features = score_video(gt_root / category / video, out_root / category / video,
                                           results.scale, built, cache.device)
            if features is not None:
                cache.save(category, video, features)
            row.update(values)
        except (VideoMismatch, FileNotFoundError) as err:  # unreadable frames included
            row["error"] = str(err)
        results.append(row)
    results.put_in_order(videos)


def evaluate(argv=None):
    args = parse_args(argv)
    names = metric_names(args.metrics)
    device = runtime.pick_device(args.device)
    out_root = runs.output_dir(args.data_root, args.model, args.scale, run_of(args))
    gt_root = runs.gt_dir(args.data_root, args.scale)
    videos = list_videos(gt_root, test_split_csv(args))
    videos = videos[:args.limit] if args.limit else videos
    if not out_root.is_dir():
        raise ASVFIError(f"{out_root}: no generated frames; run inference.py with the same --model, "
                         f"--scale and run options first")
    built, unavailable = metrics.build_metrics(names, device, args.weights_dir,
                                               allow_download=not args.offline, flow_name=args.flow)
    for name, reason in unavailable.items():
        print(f"{name}: unavailable ({reason})", file=sys.stderr)
    csv_path = runs.eval_csv_path(args.model, run_of(args), args.scale, out_dir=args.out_dir)
    results = ResultsCSV(csv_path, csv_columns(names, args.flow), args.scale, restart=args.restart)
    cache = FeatureCache(csv_path.with_name(csv_path.stem + "_fvd"), device, restart=args.restart)
    if results.done & set(videos):
        print(f"{csv_path}: resuming, {len(results.done & set(videos))} video(s) already scored")
    score_videos(videos, (gt_root, out_root), built, results, cache)
    wanted = set(videos)
    rows = [r for r in results.rows if (r["category"], r["video"]) in wanted]
    summary = summarize(rows, built, unavailable, names, args, csv_path, cache)
    write_summary(summary, csv_path)
    print(format_table(summary), end="")
    print(f"per-video results: {csv_path}; summary: {csv_path.with_suffix('')}_summary.json")
    return 0 if summary["videos"] or not videos else 1


def main(argv=None):
    return cli.run_entry_point(evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
