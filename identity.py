"""What a folder of frames was made from, so "finished" means "finished for this source".

Every published ground-truth and output folder holds `identity.json`: the source video's identity
(path relative to the data root, size, modification time), its frame count, the scale and, for
outputs, the model and the checkpoint's identity and the generation settings. `digest(record)`
condenses a record to one string; evaluation keys its rows by the digests of the ground truth and
of the output, so a regenerated source or another checkpoint is rescored, never reused.

    record = output_record(source_path, data_root, n_frames, scale, model="asvfi", checkpoint=path)
    write_identity(folder, record)           # atomically, beside the frames
    read_identity(folder) == record          # None when the folder has no identity file
"""
import hashlib
import json
import os
from pathlib import Path

import utils

IDENTITY_FILE = "identity.json"


def relative_path(path, root):
    """`path` (links resolved) relative to `root`, with forward slashes: how records name sources."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def file_identity(path, root=None):
    """{path, size, mtime_ns} of a file; `path` relative to `root` when given (portable records)."""
    path = Path(path)
    stat = path.stat()
    shown = relative_path(path, root) if root is not None else path.resolve().as_posix()
    return {"path": shown, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def gt_record(source_path, data_root, n_frames, scale):
    """Identity of the ground truth cut from one source video."""
    return {"kind": "gt", "source": file_identity(source_path, data_root), "frames": int(n_frames),
            "scale": int(scale)}


def output_record(source_path, data_root, n_frames, scale, model, checkpoint=None, settings=None):
    """Identity of generated frames: the ground truth's fields plus what made them."""
    record = gt_record(source_path, data_root, n_frames, scale)
    record.update(kind="output", model=model,
                  checkpoint=None if checkpoint is None else file_identity(checkpoint),
                  settings=dict(settings or {}))
    return record


def digest(record):
    """A short stable hash of a record (canonical JSON), for CSV keys and comparisons."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_identity(folder, record):
    utils.atomic_write_text(Path(folder) / IDENTITY_FILE, json.dumps(record, sort_keys=True, indent=1) + "\n")


def read_identity(folder):
    """The folder's record, or None when it has none or it cannot be parsed (then it is not current)."""
    path = Path(folder) / IDENTITY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_current(folder, record):
    """True when the folder holds frames published for exactly this record."""
    return read_identity(folder) == record
