"""`python tools.py inspect-checkpoint CKPT`: what a checkpoint or a published release holds.

A checkpoint main.py wrote: model, epoch, best PSNR, config, sizes. A release (a FLAVR checkpoint,
PerVFI's v00.pth): its format, sizes and the commands that take it.
"""
import argparse
import sys

import checkpoints
import pervfi
import registry


def released_weights(obj):
    """(what the file is, its state dict) for a published release, which holds weights and no
    training state; None for anything else."""
    if pervfi.is_official_checkpoint(obj):
        return ("the PerVFI authors' generator (their v00.pth format): runs with --model pervfi",
                pervfi.official_state_dict(obj))
    flavr = registry.flavr_release_weights(obj)
    if flavr is not None:
        return ("a FLAVR release (video network only): runs as ASVFI with the audio off, or starts a run "
                "with --pretrained"), flavr
    return None


def weights_line(state):
    values = sum(t.numel() for t in state.values() if t.is_floating_point())
    return f"  weights    {len(state)} entries, {values:,} floating-point values"


def describe(path):
    obj = checkpoints.load_file(path)
    release = released_weights(obj)
    if release is not None:
        what, state = release
        return "\n".join([f"{path}", f"  release    {what}", weights_line(state),
                          "  no training state (epoch, optimiser, config): not resumable"])
    checkpoint = checkpoints.as_training_checkpoint(obj, path)
    lines = [f"{path}",
             f"  model      {checkpoint.get('model', '?')}",
             f"  epoch      {checkpoint.get('epoch', '?')}",
             f"  best PSNR  {checkpoint.get('best_psnr', '?')}",
             weights_line(checkpoint["state_dict"]),
             f"  optimizer  {'yes' if checkpoint.get('optimizer') else 'no'}, "
             f"scheduler {'yes' if checkpoint.get('scheduler') else 'no'}",
             "  config"]
    lines += [f"    {key} = {value!r}" for key, value in sorted((checkpoint.get("config") or {}).items())]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools.py inspect-checkpoint",
                                description="What a checkpoint holds (model, epoch, best PSNR, config, sizes), "
                                            "or what a published release is (FLAVR, PerVFI v00).")
    p.add_argument("checkpoint", help="a checkpoint (.pth), e.g. weights/asvfi/adamw_6e-4_best.pth, "
                                      "or a published release (FLAVR_2x.pth, PerVFI's v00.pth)")
    return p.parse_args(argv)


def main(argv=None):
    """Returns the exit status; tools.py turns a CheckpointError into a message."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(describe(args.checkpoint))
    return 0
