"""Data preparation: the split CSV, the 16 kHz audio cache and (optionally) PNG frames of a video folder.

    python utils.py prepare --data-root ../data
    python utils.py prepare --data-root ../data --extract-frames
    python utils.py make-demo --out ../data --seed 0                # the synthetic demo set + its split

(`utils.py`, the original project's entry point, runs this file's command line.)

`prepare` writes one row per video (path, category, split, fps, frame count, size, audio,
duration, name: the stem, or stem_<ext> where two files of a folder share a stem) and, beside
each 16 kHz audio cache file, the video's frame index (frame times, seek points), so training
never scans a video again. It uses UCF-101's official split 1 when `{data_root}/ucfTrainTestlist` is there,
otherwise a deterministic split by group (a `gXX` group never spans two splits), with val carved
from train by group. Corrupt, empty, one-frame and (with require_audio) silent videos are excluded and
reported; re-running only looks at new or changed files. `ensure_dataset` is what the scripts
call: it returns a ready data set's paths and generates the demo on first use (`ensure_demo`,
which the demo tools call with the frame size they want, refusing a demo of another size).
"""
import argparse
import json
import sys
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

import cli
import demo_data
import publish
from runs import audio_cache_path, dataset_paths, frame_index_path, video_folder, video_group, video_names
from utils import AUDIO_RATE, ASVFIError, atomic_write, atomic_write_text, progress
from video_io import (VIDEO_EXTENSIONS, MediaError, VideoInfo, frame_index_record, iter_frames, png_name, probe,
                      read_audio, write_png_frames)

SPLIT_COLUMNS = ["path", "category", "split", "fps", "n_frames", "width", "height", "has_audio", "audio_rate",
                 "duration", "name"]


def _group_sort_key(group):
    """Group numbers in order (as the official split, whose test set is g01-g07); names by a stable hash."""
    return (0, group, "") if isinstance(group, int) else (1, zlib.crc32(group.encode()), group)


def _carve_groups(groups, fraction, minimum):
    """The last `fraction` of the ordered groups (at least `minimum` when enough groups exist)."""
    ordered = sorted(set(groups), key=_group_sort_key)
    count = max(minimum, int(round(fraction * len(ordered)))) if len(ordered) > minimum else 0
    return set(ordered[len(ordered) - count:]) if count else set()


def assign_splits(paths, official=None, test_fraction=0.2, val_fraction=0.1):
    """{relative path: train/val/test}; videos of one group never land in two splits.

    official: (train names, test names) of UCF-101 split 1, lower-cased relative paths; videos in
    neither list are left out. Without it the first groups in order are test (as UCF's g01-g07).
    Val is always carved from train by group (the last groups in order).
    """
    if official is not None:
        train_names, test_names = official
        split = {p: "test" if p.lower() in test_names else "train" for p in paths
                 if p.lower() in test_names or p.lower() in train_names}
    else:
        ordered = sorted({video_group(p) for p in paths}, key=_group_sort_key)
        n_test = max(1, int(round(test_fraction * len(ordered)))) if len(ordered) > 1 else 0
        test_groups = set(ordered[:n_test])
        split = {p: "test" if video_group(p) in test_groups else "train" for p in paths}
    train = [p for p, s in split.items() if s == "train"]
    val_groups = _carve_groups([video_group(p) for p in train], val_fraction, minimum=1)
    return {p: "val" if s == "train" and video_group(p) in val_groups else s for p, s in split.items()}


def read_official_split(list_dir):
    """(train, test) sets of lower-cased relative paths from `trainlist01.txt`/`testlist01.txt`, or None.

    Lines look like `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1` (train, with class index) and
    `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi` (test). Compared case-insensitively because the lists
    spell some folders differently from the archive (HandStandPushups vs HandstandPushups).
    """
    train_file, test_file = Path(list_dir) / "trainlist01.txt", Path(list_dir) / "testlist01.txt"
    if not (train_file.is_file() and test_file.is_file()):
        return None

    def names(file):
        lines = file.read_text().splitlines()
        return {line.split()[0].strip().replace("\\", "/").lower() for line in lines if line.strip()}
    return names(train_file), names(test_file)


def _list_videos(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def _load_prepare_cache(path):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def prepare_key(path):
    """What prepare records of a video file to know it unchanged: [size, mtime in ns]."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def changed_since_prepare(paths, relatives):
    """The videos (paths relative to paths["videos"]) whose file is not the one prepare read (size
    or mtime differ): their split CSV row and cached audio and frame index describe another file.
    A video prepare has no record of, or whose file is gone (its frames extracted), is not counted."""
    cache = _load_prepare_cache(paths["cache"])
    changed = []
    for relative in relatives:
        recorded = cache.get(relative, {}).get("key")
        file = paths["videos"] / relative
        if recorded is not None and file.is_file() and prepare_key(file) != recorded:
            changed.append(relative)
    return changed


def frames_wanted(has_audio, extract_frames, require_audio):
    """PNG frames are extracted only for videos the split keeps (UCF-101: about half has no sound)."""
    return extract_frames and (has_audio or not require_audio)


def _examine_video(video, relative, name, paths, extract_frames, require_audio, frames_current):
    """Probe one video, cache its frame index and 16 kHz audio (and frames) under its `name`; returns
    (info dict or None, problem or None). `frames_current`: the file is the one prepare last read,
    so frames already extracted from it are kept (a changed file's frames are extracted again)."""
    audio_dir, frames_dir = paths["audio"], paths["frames"]
    if video.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        info = probe(video)
        if info.n_frames == 0:
            return None, "empty: no frame decodes"
        if info.n_frames == 1:  # a still: nothing to interpolate, to train on or to test
            return None, "only 1 frame decodes; interpolation needs at least 2"
        index = frame_index_path(audio_dir, relative, name)
        with _cache_writes(index):  # training reads frame times and seek points from it, never re-scanning
            atomic_write_text(index, json.dumps(frame_index_record(video)))
        if info.has_audio:
            wave = _read_audio_or_none(video)
            if wave is None or wave.size == 0:
                info.has_audio, info.audio_rate, info.audio_channels = False, 0, 0
            else:
                cache = audio_cache_path(audio_dir, relative, name)
                with _cache_writes(cache):
                    atomic_write(cache, lambda tmp: _save_npy(tmp, wave))
        if frames_wanted(info.has_audio, extract_frames, require_audio):
            folder = video_folder(frames_dir, relative, name)
            with _cache_writes(folder):
                _extract_frames(video, folder, info.n_frames, reuse=frames_current)
        return asdict(info), None
    except (MediaError, OSError, av.error.FFmpegError) as err:
        return None, f"unreadable: {str(err).replace(f'{video}: ', '')}"


class CacheWriteError(publish.WriteError):
    """prepare could not write its own cache (disk full, read-only): the video is fine, the run stops."""


def _cache_writes(path):
    """A failed write is this machine's problem, not the video's: stop before the split CSV or the
    state file change, instead of excluding a good video."""
    return publish.write_errors_named(path, "the split CSV was left unchanged", what="the prepare cache",
                                      error_type=CacheWriteError)


def _read_audio_or_none(video):
    """A broken audio track makes a video audio-less, not unusable."""
    try:
        return read_audio(video, AUDIO_RATE)
    except (MediaError, av.error.FFmpegError):
        return None


def _save_npy(tmp, array):
    with open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float32))


PNG_END = b"IEND\xaeB`\x82"  # the last 8 bytes of every whole PNG file (its IEND chunk)


def _frames_complete(folder, n_frames):
    """Whether `folder` holds a video's frames whole. Frames are published as a folder once all are
    written; a folder written in place (as prepare used to) may end in a cut-off PNG, which has no IEND."""
    last = folder / png_name(n_frames - 1)
    if not last.is_file() or last.stat().st_size < len(PNG_END):
        return False
    with open(last, "rb") as handle:
        handle.seek(-len(PNG_END), 2)
        return handle.read() == PNG_END


def _extract_frames(video, folder, n_frames, reuse):
    """Write the frames into a partial folder and rename it into place, never leaving a folder that
    looks complete: a stop or an error removes the partial; one left by a killed run is removed by the
    next. `reuse`: a complete folder already there holds this file's frames and is kept."""
    with publish.exclusive(folder):
        if reuse and _frames_complete(folder, n_frames):
            return
        publish.remove_leftovers(folder)
        partial = publish.fresh_folder(publish.partial_name(folder))
        with publish.removed_on_failure(partial):
            write_png_frames(partial, iter_frames(video))
            publish.publish(partial, folder)


def _cache_complete(entry, relative, name, paths, extract_frames, require_audio):
    """A cached entry is reusable when its frame index, audio cache (and frames, if asked for) are still
    on disk under the video's current name."""
    audio_dir, frames_dir = paths["audio"], paths["frames"]
    info = entry.get("info")
    if info is None:
        return True
    if not frame_index_path(audio_dir, relative, name).is_file():
        return False
    if info["has_audio"] and not audio_cache_path(audio_dir, relative, name).is_file():
        return False
    return (not frames_wanted(info["has_audio"], extract_frames, require_audio)
            or _frames_complete(video_folder(frames_dir, relative, name), info["n_frames"]))


def prepare(data_root="../data", dataset="ucf101", dataset_dir=None, require_audio=True, extract_frames=False,
            show_progress=True):
    """Write the split CSV (+ 16 kHz audio cache, optional PNG frames) of a folder of videos.

    Incremental: files whose size and mtime are unchanged reuse their earlier result. Corrupt, empty and
    unreadable videos (and, with require_audio, videos without audio) are excluded and reported; no
    single file stops the run. Returns a summary dict.
    """
    paths = dataset_paths(data_root, dataset, dataset_dir)
    folder = paths["videos"]
    if not folder.is_dir():
        raise ASVFIError(f"{folder}: video folder not found (expected <Category>/<video>.avi inside; "
                         f"set --data-root/--dataset-dir)")
    cache = _load_prepare_cache(paths["cache"])
    new_cache, rows, excluded, silent, truncated, reused = {}, {}, [], [], [], 0
    listing = _list_videos(folder)
    try:
        names = video_names(listing)  # over every file, kept or not: a name never changes with a sibling's fate
    except ASVFIError as error:
        raise ASVFIError(f"{folder}: {error}") from None
    for relative in progress(listing, "prepare", show_progress):
        key = prepare_key(folder / relative)
        entry = cache.get(relative)
        same_file = bool(entry) and entry["key"] == key
        if same_file and _cache_complete(entry, relative, names[relative], paths, extract_frames, require_audio):
            reused += 1
        else:  # a changed file's frames are extracted again, those of one whose caches went missing kept
            info, problem = _examine_video(folder / relative, relative, names[relative], paths,
                                           extract_frames, require_audio, frames_current=same_file)
            entry = {"key": key, "info": info, "problem": problem}
        new_cache[relative] = entry
        info = entry["info"]
        if info is None:
            excluded.append((relative, entry["problem"]))
        elif not info["has_audio"] and require_audio:
            excluded.append((relative, "no audio track (use --no-require-audio to keep it)"))
        else:
            if not info["has_audio"]:
                silent.append(relative)
            if why := VideoInfo(**info).truncation:  # kept as the shorter video it decodes to, but said
                truncated.append((relative, why))
            rows[relative] = info
    official = read_official_split(Path(data_root) / "ucfTrainTestlist")
    splits = assign_splits(list(rows), official)
    for relative in rows:
        if relative not in splits:
            excluded.append((relative, "not in the official split 1 lists"))
    table = [_split_row(relative, rows[relative], splits[relative], names[relative]) for relative in rows
             if relative in splits]
    _write_split_csv(paths["split_csv"], table)
    atomic_write_text(paths["cache"], json.dumps(new_cache, indent=0, sort_keys=True))
    summary = {"csv": str(paths["split_csv"]), "videos": len(new_cache), "kept": len(table), "reused": reused,
               "excluded": sorted(excluded), "without_audio": silent, "truncated": truncated,
               "official_split": official is not None,
               "splits": {name: sum(row["split"] == name for row in table) for name in ("train", "val", "test")}}
    return summary


def _split_row(relative, info, split, name):
    return {"path": relative, "category": Path(relative).parts[0] if len(Path(relative).parts) > 1 else "",
            "split": split, "fps": info["fps"], "n_frames": info["n_frames"], "width": info["width"],
            "height": info["height"], "has_audio": bool(info["has_audio"]), "audio_rate": info["audio_rate"],
            "duration": info["duration"], "name": name}


def _write_split_csv(path, rows):
    import pandas as pd
    table = pd.DataFrame(rows, columns=SPLIT_COLUMNS)
    atomic_write_text(path, table.to_csv(index=False))


def format_summary(summary):
    """A few lines for the console: counts per split, then every excluded file and why."""
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    lines = [f"{summary['csv']}: {summary['kept']} of {summary['videos']} videos ({splits}); "
             f"{summary['reused']} reused from the last run; "
             f"split: {'official split 1' if summary['official_split'] else 'by group'}"]
    if summary["without_audio"]:
        lines.append(f"kept without audio (has_audio=False): {len(summary['without_audio'])}")
        lines += [f"  {path}" for path in summary["without_audio"]]
    if summary["truncated"]:
        lines.append(f"kept, but shorter than their headers declare (check these files): {len(summary['truncated'])}")
        lines += [f"  {path}: {reason}" for path, reason in summary["truncated"]]
    if summary["excluded"]:
        lines.append(f"excluded: {len(summary['excluded'])}")
        lines += [f"  {path}: {reason}" for path, reason in summary["excluded"]]
    empty = [name for name in ("train", "val", "test") if not summary["splits"].get(name)]
    if summary["kept"] and empty:
        lines.append(f"warning: no {' or '.join(empty)} videos: main.py needs train and val, inference.py and "
                     f"evaluate.py test; splits are made by group (gXX), so add videos of more groups")
    return "\n".join(lines)


def ensure_dataset(data_root, dataset):
    """dataset_paths(...) of a ready dataset; the demo is generated under `{data_root}/demo` on first use."""
    if dataset == "demo":
        return ensure_demo(data_root)
    paths = dataset_paths(data_root, dataset)
    if not paths["videos"].is_dir() or not paths["split_csv"].is_file():
        missing = paths["videos"] if not paths["videos"].is_dir() else paths["split_csv"]
        if dataset == "ucf101":
            raise ASVFIError(f"{missing} not found: put UCF-101 videos in {paths['videos']}/<Category>/*.avi and "
                             f"run `python utils.py prepare --data-root {data_root}` (or use --dataset demo)")
        raise ASVFIError(f"{missing} not found: put the videos in {paths['videos']}/<Category>/<video> and run "
                         f"`python utils.py prepare --data-root {data_root} --dataset-dir {dataset}`")
    return paths


def build_demo(out_root, show_progress=True, **demo_options):
    """Render the demo set (demo_data.make_demo options) and prepare its split CSV and audio cache."""
    demo_data.make_demo(out_root, show_progress=show_progress, **demo_options)
    return prepare(out_root, "demo", show_progress=show_progress)


class DemoMismatchError(ASVFIError):
    """The demo under a data root was made with another frame size or length than the one asked for."""


def ensure_demo(data_root, show_progress=True, **demo_options):
    """dataset_paths of the demo under `data_root`, built there (build_demo options) unless it is there.

    Holds a lock so that parallel ranks and workers build it once. A demo already there is reused
    when its clips have the asked `size` (W, H) and `frames` (either left out: any); otherwise
    DemoMismatchError says what is there and how to get the one asked for.
    """
    paths = dataset_paths(data_root, "demo")
    with publish.exclusive(paths["videos"]):
        if not paths["split_csv"].is_file():
            build_demo(data_root, show_progress=show_progress, **demo_options)
    if demo_options.get("size") or demo_options.get("frames"):  # the scripts ask for any demo
        _check_demo_shape(paths, demo_options.get("size"), demo_options.get("frames"))
    return paths


def _check_demo_shape(paths, size, frames):
    """Refuse a demo whose clips are not all of the asked size and length (None: any)."""
    import pandas as pd
    table = pd.read_csv(paths["split_csv"])
    found = sorted({(FrameSize(int(w), int(h)), int(n))
                    for w, h, n in zip(table["width"], table["height"], table["n_frames"])})
    if any(size and found_size != tuple(size) or frames and n != frames for found_size, n in found):
        shapes = "; ".join(f"{found_size}, {n} frames" for found_size, n in found)
        asked = ", ".join(part for part in (size and str(FrameSize(*size)), frames and f"{frames} frames") if part)
        raise DemoMismatchError(f"{paths['videos']}: the demo there is {shapes}, not {asked}; use another "
                                f"--data-root, or delete {paths['videos']} and {paths['split_csv']} to make it "
                                f"again")


# ----------------------------------------------------------------------------- command line
def build_parser():
    parser = argparse.ArgumentParser(prog="utils.py",  # the documented entry point, which runs this parser
                                     description="ASVFI data tools: prepare a video folder, make the demo set.")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="split CSV + 16 kHz audio cache (+ PNG frames) of a video folder")
    prep.add_argument("--data-root", default="../data")
    prep.add_argument("--dataset", choices=["ucf101", "demo"], default="ucf101",
                      help="folder preset: ucf101 → UCF-101, demo → demo")
    prep.add_argument("--dataset-dir", default=None, help="video folder name under --data-root (overrides --dataset)")
    prep.add_argument("--require-audio", action=argparse.BooleanOptionalAction, default=True,
                      help="exclude videos without an audio track (default); otherwise keep them with has_audio=False")
    prep.add_argument("--extract-frames", action="store_true",
                      help="also write <dir>_imgs/<Category>/<video>/frame_%%05d.png")
    demo = commands.add_parser("make-demo", help="generate the synthetic audio-visual demo set")
    demo.add_argument("--out", default="../data", help="data root: writes <out>/demo and <out>/demo_split.csv")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--groups", type=int, default=6)
    demo.add_argument("--clips", type=int, default=2, help="clips per group")
    demo.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps)")
    demo.add_argument("--size", type=parse_size, default="320x240", help="frame size WxH (the demo's default is UCF-101's 320x240)")
    return parser


class FrameSize(NamedTuple):
    """(width, height) of frames, written `WxH`."""
    width: int
    height: int

    def __str__(self):
        return f"{self.width}x{self.height}"

    def __format__(self, spec):
        return format(str(self), spec)


def parse_size(text):
    """`WxH` → FrameSize, for argparse's `type=` (a bad value is a usage error naming the flag)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WxH, e.g. 320x240") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive, e.g. 320x240")
    return FrameSize(width, height)


def run_command(argv):
    args = build_parser().parse_args(argv)
    started = time.time()
    if args.command == "prepare":
        summary = prepare(args.data_root, args.dataset, args.dataset_dir, args.require_audio, args.extract_frames)
    else:
        summary = build_demo(args.out, seed=args.seed, groups=args.groups, clips=args.clips, frames=args.frames,
                             size=args.size)
    print(format_summary(summary))
    print(f"done in {time.time() - started:.1f} s")
    return 0


def main(argv=None):
    return cli.run_entry_point(run_command, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
