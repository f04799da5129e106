"""Shared helpers: run names and output paths, atomic writes, device choice.

Video/audio I/O (PyAV), the data-preparation CLI (`python utils.py prepare`) and the demo data
generator (`python utils.py make-demo`) live here too.
"""
import os
import tempfile
from pathlib import Path

import torch

# Model names as they appear in output folders and report names.
DISPLAY_NAMES = {"asvfi": "ASVFI", "pervfi": "PerVFI", "repeat": "Repeat", "blend": "Blend", "dis": "DIS"}
TRAINED_MODELS = ("asvfi", "pervfi")


# ----------------------------------------------------------------------------- run names and paths
def run_name(optimizer, lr, tag=None):
    """`<optimizer>_<lr>` with the learning rate exactly as typed (`6e-4` stays `6e-4`)."""
    name = f"{optimizer}_{lr}"
    return f"{name}_{tag}" if tag else name


def dataset_paths(data_root, dataset):
    """(video folder, split CSV, audio cache folder) of `--dataset {ucf101,demo}` under data_root."""
    root = Path(data_root)
    folder = {"ucf101": "UCF-101", "demo": "demo"}[dataset]
    return root / folder, root / f"{folder}_split.csv", root / f"{folder}_audio16k"


def weights_dir(model):
    return Path("weights") / model


def checkpoint_path(model, run, epoch=0):
    """Latest checkpoint of a run (epoch 0) or its epoch-N snapshot."""
    suffix = f"_epoch{epoch}" if epoch else ""
    return weights_dir(model) / f"{run}{suffix}.pth"


def best_checkpoint_path(model):
    return weights_dir(model) / f"best_{model}.pth"


def output_dir(data_root, model, scale, run=None):
    """Generated frames of a model: `{data_root}/<Model>/scale/<s>_<run>`; baselines have no run."""
    tail = f"{scale}_{run}" if run else f"{scale}"
    return Path(data_root) / DISPLAY_NAMES[model] / "scale" / tail


def gt_dir(data_root, scale):
    return Path(data_root) / "GT" / "scale" / str(scale)


def eval_csv_path(model, run, scale):
    """`evals/<Model>_<run>.csv` (the scale is appended so 2x and 4x reports do not mix)."""
    name = f"{DISPLAY_NAMES[model]}_{run}" if run else DISPLAY_NAMES[model]
    return Path("evals") / f"{name}_s{scale}.csv"


# ----------------------------------------------------------------------------- atomic writes
def _atomic_replace(path, write):
    """Write through a temp file in the same folder and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_torch_save(obj, path):
    return _atomic_replace(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path, text):
    return _atomic_replace(path, lambda tmp: Path(tmp).write_text(text))


# ----------------------------------------------------------------------------- devices
def pick_device(name=None):
    """`--device` value → torch.device; default CUDA when present."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device
