"""Checkpoints and weight files: saving, loading (weights_only), unwrapping, `module.` prefixes.

    checkpoints.save(checkpoint, path)                  # atomic: a crash never leaves half a file
    checkpoint = checkpoints.load_checkpoint(path)      # a training checkpoint dict, prefixes stripped
    state = checkpoints.unwrap_state_dict(torch_object, path)   # bare or {'state_dict': ...}, any prefix

A training checkpoint is a dict of plain types and tensors: model, config, state_dict, optimizer,
scheduler, scaler, epoch, best_psnr, args, history, rng. Every file is read with
`torch.load(weights_only=True)`, so loading never runs pickled code. Problems raise
CheckpointError with the file name. (registry.load_model rebuilds the network a checkpoint describes.)
"""
import os
import re
from pathlib import Path

import torch

from utils import ASVFIError, atomic_write

# torch's wording for a pickle global outside the weights_only allow-list (two spellings across versions)
BLOCKED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")
MODULE_PREFIX = "module."  # DataParallel/DDP wrappers; released FLAVR and RAFT checkpoints carry it


class CheckpointError(ASVFIError):
    """A checkpoint or weight file that is missing, unreadable or does not fit."""


def save(obj, path):
    """torch.save through a temp file and a rename."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_file(path, mmap=False):
    """Any torch file, weights_only; CheckpointError names the file when it is missing or not loadable.
    mmap=True maps the tensors instead of reading them, for a look at the plain fields."""
    path = Path(path)
    check_readable_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise CheckpointError(f"{path}: {load_failure(error)}") from None


def check_readable_file(path):
    """A CheckpointError naming `path` unless it is a file this process may read: missing, a folder
    where the file should be, or a file without read permission (torch would call it damaged)."""
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: no permission to read the file; fix its permissions (chmod u+r)")


def saved_epoch(path):
    """The finished epochs a training checkpoint records, without reading its weights."""
    epoch = load_file(path, mmap=True).get("epoch")
    if not isinstance(epoch, int):
        raise CheckpointError(f"{path}: not a training checkpoint (it records no epoch)")
    return epoch


def load_failure(error):
    """Why torch.load(weights_only=True) failed, in our words: the blocked global of a pickle that
    would run code (never torch's advice to retry with weights_only=False), else the first line."""
    text = str(error)
    blocked = BLOCKED_GLOBAL.search(text)
    if blocked:
        return (f"the file asks to run or import {blocked.group(1)} when unpickled, which a weight file never "
                f"needs; it was not loaded. Use a checkpoint from a trusted source saved with torch.save of "
                f"tensors and plain types")
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line]
    detail = type(error).__name__ + (f": {lines[0]}" if lines else "")
    return (f"not a loadable PyTorch checkpoint: not written by torch.save, or cut short or damaged since "
            f"(the unpickler says {detail})")


def strip_module_prefix(state_dict):
    return {key[len(MODULE_PREFIX):] if key.startswith(MODULE_PREFIX) else key: value
            for key, value in state_dict.items()}


def unwrap_state_dict(obj, source):
    """The tensors of a bare state_dict or a {'state_dict': ...} wrapper, `module.` prefixes stripped."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{source}: not a checkpoint: expected a state_dict of tensors (or a dict with "
                              f"'state_dict'), found {found}")
    return strip_module_prefix(state)


def load_state_dict(path):
    """Tensors of a weight file (bare or wrapped), prefixes stripped."""
    return unwrap_state_dict(load_file(path), path)


def load_checkpoint(path, expect_config=None):
    """A training checkpoint dict with its state_dict unwrapped.

    With `expect_config`, the stored config must agree on every key both define, else a
    CheckpointError names the file and the differing keys.
    """
    return as_training_checkpoint(load_file(path), path, expect_config)


def as_training_checkpoint(obj, path, expect_config=None):
    """`load_checkpoint` on an object already loaded from `path`."""
    if not isinstance(obj, dict) or "state_dict" not in obj:
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a training checkpoint (no 'state_dict' entry; found {found})")
    checkpoint = {**obj, "state_dict": unwrap_state_dict(obj, path)}
    if expect_config is not None:
        differing = [f"{k}: checkpoint {stored!r} vs requested {wanted!r}"
                     for k, stored, wanted in config_differences(checkpoint.get("config") or {}, expect_config)]
        if differing:
            raise CheckpointError(f"{path}: checkpoint config does not match ({', '.join(differing)})")
    return checkpoint


def config_differences(stored, wanted, keys=None):
    """(key, stored value, wanted value) for each of `keys` (default: every key both configs define,
    sorted) on which a checkpoint's config and the one asked for disagree."""
    keys = sorted(set(stored) & set(wanted)) if keys is None else [k for k in keys if k in stored and k in wanted]
    return [(k, stored[k], wanted[k]) for k in keys if stored[k] != wanted[k]]


def load_strict(model, state_dict, source, keys=None, hint=""):
    """Load `state_dict` into `model` requiring exactly `keys` (default: all of the model's keys).

    Errors list the missing, unexpected and wrongly shaped keys, name `source` and add `hint`;
    weights holding NaN or inf are refused too (`refuse_non_finite`).
    """
    expected = {k: v.shape for k, v in model.state_dict().items() if keys is None or k in keys}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
                   for k in expected if k in state_dict and state_dict[k].shape != expected[k]]
    problems = [f"{len(items)} {name} (e.g. {items[:4]})" for name, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape))
                if items]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(problems)}. {hint}".rstrip())
    refuse_non_finite(state_dict, source)
    model.load_state_dict(state_dict, strict=keys is None)
    return model


def refuse_non_finite(state_dict, source):
    """A CheckpointError naming `source` and the tensors holding NaN or inf: such weights (a diverged
    run, a damaged file) would only produce NaN outputs, written as black frames or NaN scores."""
    broken = sorted(k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:
        raise CheckpointError(f"{source}: {len(broken)} weight tensor(s) hold NaN or infinite values (e.g. "
                              f"{broken[:4]}); the file is damaged or comes from a run that diverged: use an "
                              f"earlier checkpoint")

