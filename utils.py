"""Small shared helpers: the project's error type, shared constants, atomic writes, padding, progress bars.

`python utils.py prepare ...` and `python utils.py make-demo ...` still work: they run prepare.py.
"""
import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import torch.nn.functional as F

# The audio every model sees: 16 kHz mono, read by a log-mel front-end with a 10 ms hop and 64 bands.
AUDIO_RATE = 16000
MEL_HOP = 160
MEL_BANDS = 64


class ASVFIError(Exception):
    """A problem the user can fix (a missing or invalid file, an incompatible checkpoint or flag).

    Library code raises it (or a subclass) with a message that says what to do; the scripts'
    entry points print the message and exit with status 1 (cli.run_entry_point).
    """


def umask_mode(mode=0o666):
    """`mode` as the process umask filters it (the umask can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return mode & ~umask


def sync_to_disk(path):
    """fsync a file or a folder, so that a power cut after this returns keeps what was written there
    (a rename alone orders nothing: the new name can survive the cut while the data it names does not)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """A temp file in `path`'s folder to write to: synced and renamed to `path` when the block ends,
    removed when it fails, so neither a crash nor a power cut leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600; the result follows the user's umask like any file
        sync_to_disk(tmp)  # the data is on disk before the new name points at it
        os.replace(tmp, path)
        sync_to_disk(path.parent)  # and so is the rename
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_leftovers(folder, name_pattern):
    """The temp files atomic_path made in `folder` for files whose names fullmatch the regex
    `name_pattern` and that a process killed while writing left behind (call with the writer's lock
    held, so that none is still being written)."""
    pattern = re.compile(rf"\.(?:{name_pattern})\.\w+\.tmp")
    folder = Path(folder)
    return sorted(path for path in folder.iterdir() if pattern.fullmatch(path.name)) if folder.is_dir() else []


def atomic_write(path, write):
    """`write(tmp)`, then the rename of atomic_path."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def atomic_write_text(path, text):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def pad_to_multiple(x, multiple, mode="replicate"):
    """Pad the last two dims (bottom, right) of (..., H, W) up to multiples of `multiple`.

    Works on any number of leading dims (frames, clips); replicate padding is what the
    networks were trained with at the borders.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    flat = x.reshape(-1, *x.shape[-3:])
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*x.shape[:-2], height + pad_h, width + pad_w)


def check_frame_pair(pred, ref, name):
    """Both (B, 3, H, W) and of one shape, else a ValueError naming the metric."""
    if pred.shape != ref.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"metrics.{name}: expected two (B, 3, H, W) tensors of equal shape, "
                         f"got {tuple(pred.shape)} and {tuple(ref.shape)}")


def some_of(names, shown):
    """The first `shown` names and how many more there are: 'A/a, A/b and 3 more'."""
    names = list(names)
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


def progress(items, desc, show=True, unit="video", **options):
    """The project's tqdm bar over `items` (None: updated by hand, give `total`); silent with
    show=False; `options` go to tqdm (total, leave, unit_scale)."""
    from tqdm import tqdm
    return tqdm(items, desc=desc, disable=not show, unit=unit, dynamic_ncols=True, **options)


if __name__ == "__main__":
    import prepare
    sys.exit(prepare.main(sys.argv[1:]))
