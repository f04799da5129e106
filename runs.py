"""Every path convention in one place: run names, checkpoint files, data-set folders, outputs.

    run_name("adamw", "6e-4", "noaudio")       -> "adamw_6e-4_noaudio"
    checkpoint_path("asvfi", "adamw_6e-4")     -> weights/asvfi/adamw_6e-4.pth
    output_dir("../data", "asvfi", 2, run)     -> ../data/ASVFI/scale/2_<run>
    gt_dir("../data", 2)                       -> ../data/GT/scale/2
    eval_csv_path("asvfi", run, "ucf101", 2)   -> evals/ASVFI_<run>_ucf101_s2.csv

Checkpoint, figure and report paths are relative to `--out-dir` (the repository root by default);
frames and data live under `--data-root`.
"""
import os
import re
from collections import Counter
from pathlib import Path

from utils import ASVFIError

# Model names as they appear in output folders and report names.
DISPLAY_NAMES = {"asvfi": "ASVFI", "pervfi": "PerVFI", "repeat": "Repeat", "blend": "Blend", "dis": "DIS"}
TRAINED_MODELS = ("asvfi", "pervfi")
# The learning rate each model's training preset uses, as typed: with --optimizer adamw it names
# the run the three scripts look for when --lr is not given (adamw_6e-4, adamw_5e-4).
PRESET_LR = {"asvfi": "6e-4", "pervfi": "5e-4"}
DATASET_FOLDERS = {"ucf101": "UCF-101", "demo": "demo"}
# The standard image test sets (testsets.py), each under --data-root by the folder name its
# publishers use; `testset_dir` / `testset_output_dir` give their input and output folders.
TESTSET_FOLDERS = {"flavr-ucf101": "ucf101_flavr", "ucf101-triplets": "ucf101_interp_ours",
                   "vimeo-septuplet": "vimeo_septuplet", "vimeo-triplet": "vimeo_triplet"}
_GROUP_PATTERN = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


# ----------------------------------------------------------------------------- runs and checkpoints
def default_lr(model):
    """--lr when none is given: the model's preset learning rate (None for the baselines)."""
    return PRESET_LR.get(model)


def run_name(optimizer, lr, tag=None):
    """`<optimizer>_<lr>` with the learning rate exactly as typed (`6e-4` stays `6e-4`)."""
    name = f"{optimizer}_{lr}"
    return f"{name}_{tag}" if tag else name


def checkpoint_dir(model, out_dir="."):
    """`weights/<model>/`: the checkpoints training writes (not the pretrained files of weights.py)."""
    return Path(out_dir) / "weights" / model


def checkpoint_path(model, run, epoch=0, out_dir="."):
    """Latest checkpoint of a run (epoch 0) or its epoch-N snapshot."""
    suffix = f"_epoch{epoch}" if epoch else ""
    return checkpoint_dir(model, out_dir) / f"{run}{suffix}.pth"


def best_checkpoint_path(model, run, out_dir="."):
    """`<run>_best.pth`: every run keeps its own best checkpoint, so no run replaces another's."""
    return checkpoint_dir(model, out_dir) / f"{run}_best.pth"


def figure_dir(model, out_dir="."):
    """`figs/<model>/`: a run's curves and log sit under its model, as its checkpoints do, so an
    ASVFI and a PerVFI run of the same name never share (or --overwrite) each other's."""
    return Path(out_dir) / "figs" / model


def figure_path(model, run, out_dir="."):
    return figure_dir(model, out_dir) / f"{run}.png"


def log_path(model, run, out_dir="."):
    return figure_dir(model, out_dir) / f"{run}.csv"


def generated_run(model, optimizer, lr, tag=None, epoch=0, checkpoint=None):
    """Run part of the folder and report of a checkpoint's frames: the checkpoint file's stem
    (`adamw_6e-4`, `adamw_6e-4_epoch5`, or the stem of `--checkpoint`), so frames of different
    checkpoints never mix; None for the training-free baselines."""
    if model not in TRAINED_MODELS:
        return None
    return Path(checkpoint).stem if checkpoint else checkpoint_path(model, run_name(optimizer, lr, tag), epoch).stem


def generated_run_of(args):
    """`generated_run` of an inference or evaluation command line."""
    return generated_run(args.model, args.optimizer, args.lr, args.tag, args.epoch, args.checkpoint)


def checkpoint_file_of(args):
    """The checkpoint an inference or evaluation command line names: --checkpoint, else its run's."""
    if args.checkpoint:
        return Path(args.checkpoint)
    return checkpoint_path(args.model, run_name(args.optimizer, args.lr, args.tag), args.epoch, out_dir=args.out_dir)


# ----------------------------------------------------------------------------- generated frames and reports
def output_dir(data_root, model, scale, run=None):
    """Generated frames of a model: `{data_root}/<Model>/scale/<s>_<run>`; baselines have no run."""
    tail = f"{scale}_{run}" if run else f"{scale}"
    return Path(data_root) / DISPLAY_NAMES[model] / "scale" / tail


def generated_scales(data_root, model, run=None):
    """The scales of which `output_dir` folders of this model and run exist, sorted."""
    parent = output_dir(data_root, model, 2, run).parent
    pattern = re.compile(r"(\d+)" + (re.escape(f"_{run}") if run else ""))
    matches = (pattern.fullmatch(path.name) for path in parent.iterdir() if path.is_dir()) if parent.is_dir() else ()
    return sorted(int(match[1]) for match in matches if match)


def gt_dir(data_root, scale):
    return Path(data_root) / "GT" / "scale" / str(scale)


def eval_csv_path(model, run, dataset, scale=None, out_dir="."):
    """`evals/<Model>_<run>_<dataset>_s<s>.csv`: the data set and the scale are in the name so that
    reports of two data sets, or of 2x and 4x, do not mix; an image test set (scale None) has no `_s<s>`."""
    name = f"{DISPLAY_NAMES[model]}_{run}" if run else DISPLAY_NAMES[model]
    return Path(out_dir) / "evals" / (f"{name}_{dataset}" + (f"_s{scale}" if scale else "") + ".csv")


# ----------------------------------------------------------------------------- data sets
def dataset_paths(data_root, dataset=None, folder=None):
    """Video folder, split CSV, 16 kHz audio cache, extracted frames and prepare cache of a data set.

    `dataset` is a preset (`ucf101` → `UCF-101`, `demo` → `demo`) or the name of any other video
    folder under data_root, as is `folder`: `{root}/{folder}_split.csv` etc. in the same way.
    """
    root = Path(data_root)
    name = folder or DATASET_FOLDERS.get(dataset, dataset)
    return {"videos": root / name, "split_csv": root / f"{name}_split.csv", "audio": root / f"{name}_audio16k",
            "frames": root / f"{name}_imgs", "cache": root / f".{name}_prepare.json"}


def testset_dir(data_root, dataset):
    """Folder of a standard test set: `{data_root}/ucf101_flavr`, `ucf101_interp_ours`, `vimeo_septuplet`,
    `vimeo_triplet`."""
    return Path(data_root) / TESTSET_FOLDERS[dataset]


def testset_output_dir(data_root, model, dataset, run=None):
    """A model's predictions on a test set: `{data_root}/<Model>/<dataset>/<run>` (baselines: `.../<dataset>`),
    one folder per sample id holding its predictions and identity."""
    folder = Path(data_root) / DISPLAY_NAMES[model] / dataset
    return folder / run if run else folder


def is_folder_name(text):
    """A plain folder name (no separators, not hidden): what names a video folder under --data-root."""
    return bool(text) and Path(text).name == text and not text.startswith(".")


def default_dataset(data_root):
    """`--dataset` when none is given: UCF-101 when its folder or split CSV is under data_root, else the demo."""
    paths = dataset_paths(data_root, "ucf101")
    return "ucf101" if paths["videos"].is_dir() or paths["split_csv"].is_file() else "demo"


def relative_path_problem(relative):
    """Why a path read from a CSV, list or config cannot name a file under its root, or None."""
    text = str(relative)
    if not text.strip():
        return "empty path"
    if Path(text).is_absolute() or os.path.splitdrive(text)[0]:
        return "absolute path (paths must be relative to their root)"
    if ".." in Path(text).parts:
        return "'..' in the path (paths must stay under their root)"
    return None


def confined(root, relative, what="path"):
    """`root/relative`, refused (ASVFIError) when it is absolute, climbs with `..` or resolves
    (through symlinks) outside `root`: nothing read from a CSV may name a file elsewhere."""
    problem = relative_path_problem(relative)
    path = Path(root) / str(relative)
    if problem is None and not path.resolve().is_relative_to(Path(root).resolve()):
        problem = f"resolves to {path.resolve()}, outside {Path(root).resolve()}"
    if problem:
        raise ASVFIError(f"{what} {str(relative)!r}: {problem}; fix or remove it")
    return path


def video_names(relative_paths):
    """{relative path: video name}: the file's stem, or stem + `_<extension>` where another file of the
    same folder has the same stem (`v_X.avi` and `v_X.mp4` → `v_X_avi`, `v_X_mp4`) or a folder beside
    it of that name holds videos (`A/x.mp4` beside `A/x/y.mp4`), so that no two videos share an audio
    cache entry, an output or a ground-truth folder, and no output folder holds another's."""
    paths = [Path(str(p)) for p in relative_paths]
    shared = Counter((path.parent, path.stem) for path in paths)
    folders = {folder for path in paths for folder in path.parents}
    names = {str(path): f"{path.stem}_{path.suffix.lstrip('.').lower()}"
             if shared[path.parent, path.stem] > 1 or path.parent / path.stem in folders else path.stem
             for path in paths}
    refuse_clashing_names(names)
    return names


def refuse_clashing_names(names):
    """An ASVFIError naming two videos whose folders the names above would merge or nest (`v.avi`
    beside `v.AVI`, or `v.avi` and `v.mp4` beside `v_avi.mkv`): rare file names that only renaming
    one of them can part."""
    owner = {}
    for path, name in names.items():
        folder = Path(path).parent / name
        if folder in owner:
            raise ASVFIError(f"{owner[folder]} and {path}: both videos would be kept under the name {folder}; "
                             f"rename one of them")
        owner[folder] = path
    for folder, path in owner.items():
        outer = next((parent for parent in folder.parents if parent in owner), None)
        if outer is not None:
            raise ASVFIError(f"{path}: its folder {folder} would lie inside {outer}, the folder of "
                             f"{owner[outer]}; rename one of them")


def video_folder(root, relative_video_path, name=None):
    """`<root>/<Category>/<video name>`: where a video's frames, outputs or caches go (name: from
    `video_names`; the stem when None)."""
    relative = Path(relative_video_path)
    return Path(root) / relative.parent / (name or relative.stem)


def audio_cache_path(audio_dir, relative_video_path, name=None):
    """`<audio_dir>/<Category>/<video>.npy` for a video path relative to its dataset folder."""
    relative = Path(relative_video_path)
    return Path(audio_dir) / relative.parent / f"{name or relative.stem}.npy"


def frame_index_path(audio_dir, relative_video_path, name=None):
    """`<audio_dir>/<Category>/<video>.frames.json`: the frame index prepare stores beside the audio cache."""
    return audio_cache_path(audio_dir, relative_video_path, name).with_suffix(".frames.json")


def video_group(relative_path):
    """UCF-style group number (`_gXX_`) of a video, or its stem when it has none (a group of its own)."""
    match = _GROUP_PATTERN.search(Path(relative_path).stem)
    return int(match.group(1)) if match else Path(relative_path).stem
