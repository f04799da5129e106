"""Score generated frames against the ground truth: console table + evals/<Model>_<run>_<dataset>_s<s>.csv.

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
next run. A run asking for a subset of the metrics a report records reports them from its rows. The
FVD needs every video's I3D features, so they are cached per video next to the CSV.
A metric whose weights cannot be had (e.g. `--offline` without them) is listed as unavailable;
the others still run (when none can, the run stops, naming what each lacks), and a later run that
has the weights scores those videos again. The summary (mean, std over videos, N) is printed and written atomically
to `<csv>_summary.json` and `<csv>_summary.txt`.

The videos scored are the test split of the split CSV, in its order (without one, every ground-truth
folder), written or not: a video inference.py has not written yet counts as missing output, so a
partial run reads "2 of 8 scored, 6 missing output" and exits 1; `--limit N` scores the first N, the
ones `inference.py --limit N` writes, and the report names the set it scored.

`--protocol` (asvfi, flavr, rife, vfibench, stylegan-v; protocols.py) decides quantisation, crop,
SSIM variant, PSNR epsilon/floor, windows, averaging and FVD sampling for every metric; a
non-default protocol's report is `..._<protocol>.csv`. `--dataset flavr-ucf101|ucf101-triplets|
vimeo-septuplet|vimeo-triplet` scores the predictions under `runs.testset_output_dir` (`pred.npy`, else
`pred_<k>.png`) against the test set's targets and prints the row the reference's paper prints.
Rows are keyed by data root, ground-truth and output digests and protocol (eval_report.py).
Under `torchrun --nproc_per_node=N` the videos are split across ranks; rank 0 writes the report.

Unlike flolpips' `calc_flolpips` (mp4 → yuv420p → BT.601 RGB) and VFIPS' script (decoded video),
every metric reads the lossless PNG frames that inference.py writes.
"""

import argparse
import contextlib
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

import cli
import dataset
import eval_report
import identity
import metric_registry
import protocols
import publish
import registry
import runs
import runtime
import testsets
import utils
import video_io
from utils import ASVFIError

FRAME_CHUNK = 48  # frames read at a time: a multiple of the 12-frame VFIPS and 16-frame FVD windows
READ_THREADS = 4  # PNG decoding releases the GIL


class VideoMismatch(ASVFIError):
    """The output of a video cannot be compared with its ground truth (the message says why)."""


@dataclass
class Item:
    """One scored unit: a video (frame folders) or a test-set sample (target files, prediction folder)."""
    category: str
    video: str
    gt: object
    out: Path
    signature: dict
    # test sets: the crop their reader applies (FLAVR's UCF101: centre 224), which inference applied to
    # the inputs, so the targets get it too before the protocol's own crop
    gt_crop: str = None
    # a split's video: its file relative to the data root, which its frames' identity records must name
    source: str = None


@dataclass
class Run:
    """What every video of this evaluation is scored with."""
    names: list
    built: dict
    unavailable: dict
    protocol: object
    scale: int
    device: object
    pool: object
    flow: str = "pwc"
    code: str = ""  # eval_report.code_version(), recorded in each row it scores


# ----------------------------------------------------------------------------- folders and keys
def frame_files(folder):
    """Sorted `frame_%05d.png` files of a folder, checked to be numbered 0 … N−1 without gaps."""
    files = sorted(Path(folder).glob("frame_*.png"))
    for index, path in enumerate(files):
        if path.name != video_io.png_name(index):
            raise VideoMismatch(f"{folder}: frames are not numbered contiguously (expected "
                                f"{video_io.png_name(index)}, found {path.name})")
    return files


def folder_digest(folder, files):
    """identity.digest of the folder's identity.json; without one (older output), a digest of the
    files' names, sizes and modification times, so new frames under the same name are rescored."""
    record = identity.read_identity(folder)
    if record is None:
        record = {"fingerprint": [(Path(f).name, *(lambda st: (st.st_size, st.st_mtime_ns))(Path(f).stat()))
                                  for f in files]}
    return identity.digest(record)


def test_split_csv(args):
    """The split CSV whose test videos are scored: --dataset's (which must exist), or the default
    data set's when it has one (None: every ground-truth video)."""
    split_csv = runs.dataset_paths(args.data_root, cli.dataset_of(args))["split_csv"]
    if args.dataset and not split_csv.is_file():
        raise ASVFIError(f"--dataset {args.dataset}: {split_csv} not found")
    return split_csv if split_csv.is_file() else None


def finished_folders(root):
    """(category, video) of the published frame folders under `root`; partials are not results yet."""
    return [(f.parent.name, f.name) for f in sorted(Path(root).glob("*/*"))
            if f.is_dir() and not publish.is_partial(f) and (f / "frame_00000.png").is_file()]


def list_videos(gt_root, split_csv=None):
    """{(category, video): its file relative to the data set's video folder} of the videos an evaluation
    is over: with a split CSV every video of its test split, in the CSV's order (the order
    inference.py --limit takes), whether inference has written it yet or not, so a partial run counts
    the rest as missing; without one, every finished ground-truth folder (file None: not known)."""
    if not gt_root.is_dir():
        raise ASVFIError(f"{gt_root}: no ground-truth frames; run inference.py for this scale first "
                         f"(it writes the ground truth next to the generated frames)")
    if split_csv is None:
        return dict.fromkeys(finished_folders(gt_root))
    # The folder name inference used: the stem, or <stem>_<ext> when two files share a stem.
    return {(Path(entry.path).parent.name, entry.name): entry.path for entry in dataset.read_split(split_csv, "test")}


def signature(args, protocol, gt_digest, out_digest):
    return {"data_root": str(Path(args.data_root).resolve()), "gt_digest": gt_digest, "out_digest": out_digest,
            "protocol": protocol.name}


def video_items(args, protocol, videos, out_root):
    """Items of `videos` ({(category, video): file under the data set's video folder or None})."""
    gt_root = runs.gt_dir(args.data_root, args.scale)
    videos_dir = runs.dataset_paths(args.data_root, cli.dataset_of(args))["videos"]
    items = []
    for (category, video), file in videos.items():
        gt, out = gt_root / category / video, out_root / category / video
        gt_files, out_files = (frame_files(folder) if folder.is_dir() else [] for folder in (gt, out))
        source = identity.relative_path(videos_dir / file, args.data_root) if file else None
        items.append(Item(category, video, gt, out, signature(args, protocol,
                                                              folder_digest(gt, gt_files) if gt_files else "",
                                                              folder_digest(out, out_files) if out_files else ""),
                          source=source))
    return items


def prediction_files(folder, n_targets):
    """pred.npy when present, else pred_0.png … pred_<n−1>.png; [] when neither is complete."""
    if (folder / "pred.npy").is_file():
        return [folder / "pred.npy"]
    pngs = [folder / f"pred_{k}.png" for k in range(n_targets)]
    return pngs if all(p.is_file() for p in pngs) else []


def testset_items(args, protocol, testset, sample_ids, out_root):
    items = []
    for sample_id in sample_ids:
        targets, out = testset.target_files(sample_id), out_root / sample_id
        preds = prediction_files(out, len(targets))
        items.append(Item(testset.name, sample_id, targets, out,
                          signature(args, protocol, folder_digest(targets[0].parent, targets),
                                    folder_digest(out, preds) if preds else ""), testset.crop))
    return items


# ----------------------------------------------------------------------------- reading frames
def read_frame_tensor(path, shape, crop):
    """(3, H', W') float32 RGB in [0, 1] of one PNG after the protocol crop. Runs in the decode pool,
    so the conversion overlaps the scoring; cv2.split does BGR → RGB and HWC → CHW in one pass."""
    planes = cv2.split(protocols.apply_frame_crop(video_io.read_png_bgr(path, shape), crop))[::-1]
    return torch.from_numpy(np.stack(planes)).float().div_(255)


def to_tensor(frames_hwc, crop, device):
    """(N, 3, H', W') float32 after the protocol crop; uint8 input becomes [0, 1]."""
    frames = np.stack([protocols.apply_frame_crop(f, crop) for f in frames_hwc])
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).contiguous().float()
    return tensor.div_(255) if frames.dtype == np.uint8 else tensor


def chunks(item, n_frames, run):
    """(start, ref, pred) chunks of a video pair, the next chunk decoded by the pool while this one is
    scored. The PNGs are 8-bit already, so the protocol's quantisation of predictions is the identity."""
    gt_files, out_files = frame_files(item.gt), frame_files(item.out)
    shape = video_io.read_png_bgr(gt_files[0]).shape

    def submit(start):
        stop = min(start + FRAME_CHUNK, n_frames)
        return start, [run.pool.submit(read_frame_tensor, f, shape, run.protocol.frame_crop)
                       for f in gt_files[start:stop] + out_files[start:stop]]

    pending = submit(0)
    while pending is not None:
        start, futures = pending
        pending = submit(start + FRAME_CHUNK) if start + FRAME_CHUNK < n_frames else None
        frames = [f.result() for f in futures]
        half = len(frames) // 2
        yield start, torch.stack(frames[:half]).to(run.device), torch.stack(frames[half:]).to(run.device)


# ----------------------------------------------------------------------------- scoring
def check_pair(gt_folder, out_folder):
    """Number of frames of a comparable (ground truth, output) pair; VideoMismatch otherwise."""
    if not out_folder.is_dir():
        raise VideoMismatch(f"{eval_report.MISSING_OUTPUT}: no generated frames at {out_folder} (run "
                            f"inference.py for this model and scale)")
    gt_files, out_files = frame_files(gt_folder), frame_files(out_folder)
    if not gt_files:
        raise VideoMismatch(f"no ground-truth frames at {gt_folder} for the generated frames in {out_folder} "
                            f"(inference.py writes both; rerun it for this video)")
    if len(gt_files) != len(out_files):
        raise VideoMismatch(f"frame count mismatch: {len(out_files)} generated in {out_folder} vs "
                            f"{len(gt_files)} ground truth in {gt_folder}")
    if len(gt_files) < 2:
        raise VideoMismatch(f"{gt_folder}: {len(gt_files)} frame(s); at least 2 are needed")
    gt_shape, out_shape = video_io.read_png(gt_files[0]).shape, video_io.read_png(out_files[0]).shape
    if gt_shape != out_shape:
        raise VideoMismatch(f"frame size mismatch: {out_shape[1]}x{out_shape[0]} generated vs "
                            f"{gt_shape[1]}x{gt_shape[0]} ground truth ({out_folder})")
    return len(gt_files)


def results_of(scorers, run, values):
    notes = []
    for name, scorer in scorers.items():
        result = scorer.result()
        values[run.built[name].column] = "" if result.value is None else result.value
        if result.reason:
            notes.append(f"{name}: {result.reason}")
    values["notes"] = "; ".join(notes)
    return values, scorers["fvd"].features() if "fvd" in scorers else None


def check_sources(item):
    """The ground truth and the output were cut from the split's own video. Outputs are kept by
    model, scale, category and video name, so inference for another data set under the same data
    root whose videos share those names (a copy, a re-encoded version) writes the same folders."""
    if item.source is None:
        return
    for kind, folder in (("ground truth", item.gt), ("output", item.out)):
        made_from = ((identity.read_identity(folder) or {}).get("source") or {}).get("path")
        if made_from is not None and made_from != item.source:
            raise VideoMismatch(f"{folder}: this {kind} was made from {made_from}, not from the split's "
                                f"{item.source} (inference.py for another data set wrote the same folder); "
                                f"rerun inference.py for this data set")


def score_video(item, run, fvd_clips=None):
    """Every metric over one video pair: (CSV values, FVD features or None)."""
    n_frames = check_pair(item.gt, item.out)
    check_sources(item)
    scorers = {name: metric.scorer() for name, metric in run.built.items()}
    if "fvd" in scorers and fvd_clips is not None:
        scorers["fvd"].select(*fvd_clips)
    with torch.no_grad():
        for start, ref, pred in chunks(item, n_frames, run):
            generated = torch.arange(start, start + len(ref), device=run.device) % run.scale != 0
            for name, scorer in scorers.items():
                if run.built[name].scope == "generated":
                    scorer.update(ref[generated], pred[generated])
                else:
                    scorer.update(ref, pred)
    generated = len(protocols.generated_frames(n_frames, run.scale))
    return results_of(scorers, run, {"frames": n_frames, "generated": generated})


def score_sample(item, run, fvd_clips=None):
    """Every (per-frame) metric of one test-set sample: targets vs pred.npy (raw float) or pred_<k>.png."""
    preds = prediction_files(item.out, len(item.gt))
    if not preds:
        raise VideoMismatch(f"{eval_report.MISSING_OUTPUT}: no pred.npy or pred_0..{len(item.gt) - 1}.png in "
                            f"{item.out} (run inference.py --dataset {item.category})")
    targets = [protocols.apply_frame_crop(video_io.read_png(path), item.gt_crop) for path in item.gt]
    ref = to_tensor(targets, run.protocol.frame_crop, run.device)
    if preds[0].suffix == ".npy":
        raw = np.load(preds[0])
        if raw.ndim != 4 or raw.shape[:2] != (len(item.gt), 3):
            raise VideoMismatch(f"{preds[0]}: shape {raw.shape}, expected ({len(item.gt)}, 3, H, W)")
        pred = to_tensor(list(raw.astype(np.float32).transpose(0, 2, 3, 1)), run.protocol.frame_crop, run.device)
    else:
        pred = to_tensor([video_io.read_png(p) for p in preds], run.protocol.frame_crop, run.device)
    if pred.shape != ref.shape:
        raise VideoMismatch(f"{item.out}: prediction {tuple(pred.shape[-2:])} vs target {tuple(ref.shape[-2:])} "
                            f"after the protocol's crop ({run.protocol.frame_crop})")
    scorers = {name: metric.scorer() for name, metric in run.built.items()}
    for scorer in scorers.values():
        scorer.update(ref, protocols.quantize_prediction(pred, run.protocol.quantize))
    return results_of(scorers, run, {"frames": len(ref), "generated": len(ref)})


# ----------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="asvfi", choices=list(registry.MODELS))
    p.add_argument("-s", "--scale", type=int, default=None,
                   help="the scale inference.py ran at (default: the one scale this run has frames of, else 2)")
    cli.add_run_flags(p)
    cli.add_checkpoint_flags(p)
    cli.add_data_flags(p)
    cli.add_machine_flags(p)
    p.add_argument("--protocol", default="asvfi", choices=list(protocols.PROTOCOLS),
                   help="published evaluation protocol to reproduce (protocols.py; default: this toolkit's)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of {','.join(metric_registry.METRIC_NAMES)} (default: the protocol's)")
    p.add_argument("--flow", default="pwc", choices=list(metric_registry.FLOW_NAMES),
                   help="FloLPIPS flow: pwc (the reference's PWC-Net) or dis (OpenCV DIS, no weights)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--limit", type=int, default=0,
                   help="only the first N test videos (samples), those inference.py --limit N writes")
    p.add_argument("--restart", action="store_true", help="discard an earlier report of this run instead of resuming")
    return p


def metric_names(args):
    """--metrics as a list without repeats, in the order given (default: what the protocol defines;
    on an image test set its per-frame metrics)."""
    protocol = protocols.get_protocol(args.protocol)
    if args.metrics is None:
        return [m for m in protocol.metrics if not is_testset(args) or m in metric_registry.FRAME_METRICS]
    return list(dict.fromkeys(m.strip() for m in args.metrics.split(",") if m.strip()))


def parse_args(argv=None):
    p = build_parser()
    args = cli.fill_preset_lr(p.parse_args(argv))
    names = metric_names(args)
    unknown = [m for m in names if m not in metric_registry.METRIC_NAMES]
    if unknown:
        p.error(f"--metrics: unknown {unknown}; choose from {','.join(metric_registry.METRIC_NAMES)}")
    if not names and is_testset(args):
        p.error(f"--protocol {args.protocol} defines {', '.join(protocols.get_protocol(args.protocol).metrics)}, "
                f"which need videos; {args.dataset} holds single target frames: use a protocol that scores "
                f"{', '.join(metric_registry.FRAME_METRICS)}")
    if not names:
        p.error("--metrics: none given")
    cli.refuse_checkpoint_for_baseline(p, args)
    if args.scale is None:
        args.scale = generated_scale(args, p)
    return args


def generated_scale(args, parser):
    """The scale of this run's generated frames when -s is not given: inference.py runs a checkpoint
    at its trained scale (FLAVR_4x at 4x), so a run may have frames of 4x only; 2 when it has none."""
    if is_testset(args):
        return 2
    scales = runs.generated_scales(args.data_root, args.model, runs.generated_run_of(args))
    if len(scales) > 1:
        parent = runs.output_dir(args.data_root, args.model, 2).parent
        parser.error(f"{parent} holds frames of this run at {', '.join(f'{s}x' for s in scales)}: choose one with -s")
    return scales[0] if scales else 2


def is_testset(args):
    return args.dataset in runs.TESTSET_FOLDERS


def report_path(args):
    """evals/<Model>_<run>_<dataset>_s<s>.csv (image test sets: no _s<s>); _<protocol> unless asvfi,
    so reports of different protocols never mix."""
    path = runs.eval_csv_path(args.model, runs.generated_run_of(args), cli.dataset_of(args),
                              None if is_testset(args) else args.scale, out_dir=args.out_dir)
    return path.with_name(path.stem + ("" if args.protocol == "asvfi" else f"_{args.protocol}") + ".csv")


def fvd_plan(items, run):
    """{key: (real clips, generated clips)} under the protocol's clip rule, decided over the whole set."""
    counted = [(item, len(frame_files(item.gt))) for item in items]
    counted = [(item, n) for item, n in counted if n]  # a video without ground truth fails on its own
    items, lengths = [item for item, _ in counted], [n for _, n in counted]
    try:
        real = protocols.fvd_clip_frames(run.protocol, lengths, real=True)
        fake = protocols.fvd_clip_frames(run.protocol, lengths, real=False)
    except ValueError as err:
        raise ASVFIError(f"FVD ({run.protocol.name}): {err}; videos in order: "
                         f"{', '.join(f'{i.category}/{i.video}' for i in items)}") from None
    return {(i.category, i.video): (real.get(k, []), fake.get(k, [])) for k, i in enumerate(items)}


def score_one(item, run, plan):
    row = {"video": item.video, "category": item.category, **item.signature, "code": run.code}
    score = score_sample if item.category in runs.TESTSET_FOLDERS else score_video
    try:
        values, features = score(item, run, plan.get((item.category, item.video)))
        row.update(values)
    except (VideoMismatch, video_io.MediaError, FileNotFoundError) as err:  # unreadable frames included
        row["error"], features = str(err), None
    return row, features


@contextlib.contextmanager
def scoring_threads(device):
    """On CPU, torch runs one intra-op thread while the block runs; the cores go to PNG decoding.

    Per-frame ops are small, and with torch's threads competing with the decoders (and other jobs)
    every op's parallel region waits for a pre-empted thread: SSIM measured 55 ms/frame on 2 threads
    against 13 ms on 1 on the 2-core dev VM, and evaluation used twice the CPU time.
    """
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def score_items(items, run, results, cache, procs):
    """Score the items not yet in the report. Ranks take every world-th item; after each round
    rank 0 gathers the rows (and FVD features) and appends them, so the report stays resumable."""
    todo = [item for item in items if (item.category, item.video) not in results.done]
    plan = fvd_plan(items, run) if "fvd" in run.built and run.scale else {}
    mine = procs.shard(todo)
    rounds = -(-len(todo) // procs.world)
    for index in utils.progress(range(rounds), desc=f"evaluate ({run.protocol.name})", show=procs.is_main):
        scored = score_one(mine[index], run, plan) if index < len(mine) else None
        for result in procs.gather(scored):
            if result is not None and procs.is_main:
                row, features = result
                if features is not None:
                    cache.save(row["category"], row["video"], features)
                results.append(row)
    results.put_in_order([(item.category, item.video) for item in items])


def limited(args, keys, source):
    """The first --limit keys (all of them without it) and what they are, for the report's count line."""
    if not args.limit:
        return keys, f"the {source}"
    first = min(args.limit, len(keys))
    return keys[:args.limit], f"--limit {args.limit}: the first {first} of the {len(keys)} {source}"


def output_root(args):
    """The folder inference.py wrote this run's outputs to; an error when there is none."""
    run = runs.generated_run_of(args)
    root = (runs.testset_output_dir(args.data_root, args.model, args.dataset, run) if is_testset(args)
            else runs.output_dir(args.data_root, args.model, args.scale, run))
    if not root.is_dir():
        raise ASVFIError(f"{root}: no generated frames; run inference.py with the same --model, "
                         f"--scale/--dataset and run options first")
    return root


def model_label(args):
    run = runs.generated_run_of(args)
    return runs.DISPLAY_NAMES[args.model] + (f" {run}" if run else "")


def collect_testset(args, protocol):
    out_root, folder = output_root(args), runs.testset_dir(args.data_root, args.dataset)
    try:
        testset = testsets.open_testset(args.dataset, folder)
    except testsets.LayoutError as err:
        raise ASVFIError(str(err)) from None
    sample_ids, scope = limited(args, testset.sample_ids, f"samples of {folder}")
    extra = sorted(str(p.relative_to(out_root).parent) for p in out_root.rglob("identity.json")
                   if str(p.relative_to(out_root).parent) not in set(testset.sample_ids))
    items = testset_items(args, protocol, testset, sample_ids, out_root)
    return items, extra, f"{model_label(args)} on {args.dataset}", scope


def collect_items(args, protocol):
    """(items, outputs outside the set, title, what the set is) of a video data set or an image test set.
    The set is the whole test split or test set (its first --limit), outputs written or not, so that the
    count and the exit status of a partial run do not depend on which other outputs exist."""
    if is_testset(args):
        return collect_testset(args, protocol)
    gt_root, split_csv = runs.gt_dir(args.data_root, args.scale), test_split_csv(args)
    every_video = list_videos(gt_root, split_csv)
    out_root = output_root(args)
    keys, scope = limited(args, list(every_video), f"test videos of {split_csv}" if split_csv
                          else f"ground-truth videos under {gt_root}")
    videos = {key: every_video[key] for key in keys}
    extra = [f"{c}/{v}" for c, v in finished_folders(out_root) if (c, v) not in every_video]
    return video_items(args, protocol, videos, out_root), extra, f"{model_label(args)}, {args.scale}x", scope


def output_identities(items):
    """{(category, video): the identity record of its output folder, or None}, read once per run."""
    return {(item.category, item.video): identity.read_identity(item.out) for item in items}


def stale_outputs(args, identities):
    """The outputs whose identity record names the checkpoint file this command names, as it was
    when they were made, not as it is now (main.py rewrites a run's checkpoint every epoch): they
    are not the current weights' frames."""
    path = runs.checkpoint_file_of(args)
    if args.model not in registry.TRAINED or not path.is_file():
        return []
    now = identity.file_identity(path)
    stale = []
    for (category, video), record in identities.items():
        made_by = (record or {}).get("checkpoint")
        if made_by and made_by["path"] == now["path"] and made_by != now:
            stale.append(f"{category}/{video}")
    return stale


def warn_stale(stale, args):
    if stale:
        warnings.warn(f"{len(stale)} output(s) ({utils.some_of(stale, 3)}) were made "
                      f"by {runs.checkpoint_file_of(args)} before it last changed; they are scored as they are. "
                      f"Rerun inference.py to score the current weights.", stacklevel=2)


def report_header(args, title, scope, csv_path, identities, rows, stale):
    """What the summary says the numbers are of: the run, the set, the data, what made the scored
    outputs (their identity records) and which of them an earlier state of the checkpoint made."""
    scored = {eval_report.row_key(r) for r in rows if not r["error"]}
    return {"title": title, "model": runs.DISPLAY_NAMES[args.model], "run": runs.generated_run_of(args),
            "scale": args.scale, "dataset": args.dataset, "csv": str(csv_path), "scope": scope, "limit": args.limit,
            "unit": "sample" if is_testset(args) else "video", "data_root": str(Path(args.data_root).resolve()),
            "stale_outputs": stale,
            "made_by": eval_report.made_by(record for key, record in identities.items() if key in scored)}


def check_a_metric_can_run(built, unavailable):
    """With every asked-for metric unavailable a run would write rows without values and report
    every video as scored: stop instead, with what each metric lacks."""
    if not built:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in unavailable.items())
        raise ASVFIError(f"none of the requested metrics can run, so nothing was scored: {reasons}")


def evaluate(argv=None):
    args = parse_args(argv)
    protocol = protocols.for_dataset(args.protocol, args.dataset, png_predictions=not is_testset(args))
    names = metric_names(args)
    if is_testset(args) and set(names) - set(metric_registry.FRAME_METRICS):
        raise ASVFIError(f"{args.dataset} holds single target frames: {', '.join(set(names) - set(metric_registry.FRAME_METRICS))} "
                         f"need videos; choose from {', '.join(metric_registry.FRAME_METRICS)}")
    with runtime.processes(args.device) as procs, ThreadPoolExecutor(READ_THREADS) as pool, \
            scoring_threads(procs.device):
        items, extra, title, scope = collect_items(args, protocol)
        identities = output_identities(items) if procs.is_main else {}
        stale = stale_outputs(args, identities)
        warn_stale(stale, args)
        built, unavailable = metric_registry.build_metrics(names, procs.device, args.weights_dir, not args.offline,
                                                   args.flow, protocol)
        check_a_metric_can_run(built, unavailable)
        run = Run(names, built, unavailable, protocol, 1 if is_testset(args) else args.scale, procs.device, pool,
                  args.flow, eval_report.code_version() or "")
        csv_path = report_path(args)
        columns = eval_report.csv_columns(built[n].column if n in built else metric_registry.metric_column(n, args.flow)
                                          for n in names)
        current = {(i.category, i.video): i.signature for i in items}
        results = eval_report.ResultsCSV(csv_path, columns, current, args.restart, write=procs.is_main,
                                         computable={built[n].column: n for n in built})
        procs.barrier()
        cache = eval_report.FeatureCache(csv_path.with_name(csv_path.stem + "_fvd"), args.restart and procs.is_main)
        if procs.is_main:
            for name, reason in unavailable.items():
                print(f"{name}: unavailable ({reason})", file=sys.stderr)
            if results.done & set(current):
                print(f"{csv_path}: resuming, {len(results.done & set(current))} video(s) already scored")
            if results.rescored:
                print(f"{csv_path}: scoring {len(results.rescored)} video(s) again "
                      f"({utils.some_of([f'{c}/{v}' for c, v in results.rescored], 3)}): "
                      f"{', '.join(sorted(set().union(*results.rescored.values())))} could not run when they were scored")
        score_items(items, run, results, cache, procs)
        if not procs.is_main:
            return 0
        rows = [r for r in results.rows if eval_report.row_key(r) in current]
        header = report_header(args, title, scope, csv_path, identities, rows, stale)
        summary = eval_report.summarize(rows, run, cache, header, extra)
        eval_report.write_summary(summary, csv_path)
        print(eval_report.format_table(summary), end="")
        if is_testset(args) or protocol.name != "asvfi":
            print(eval_report.paper_row(summary, protocol.table_decimals))
        print(f"per-video results: {csv_path}; summary: {csv_path.with_suffix('')}_summary.json")
        return 1 if summary["failed"] or summary["missing_output"] or not items else 0


def main(argv=None):
    return cli.run_entry_point(evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
