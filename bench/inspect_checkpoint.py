"""`python tools.py inspect-checkpoint CKPT`: what a checkpoint holds (model, epoch, best PSNR, config, sizes)."""
import argparse
import sys

import checkpoints


def describe(path):
    checkpoint = checkpoints.load_checkpoint(path)
    state = checkpoint["state_dict"]
    tensors = sum(t.numel() for t in state.values() if t.is_floating_point())
    lines = [f"{path}",
             f"  model      {checkpoint.get('model', '?')}",
             f"  epoch      {checkpoint.get('epoch', '?')}",
             f"  best PSNR  {checkpoint.get('best_psnr', '?')}",
             f"  weights    {len(state)} entries, {tensors:,} floating-point values",
             f"  optimizer  {'yes' if checkpoint.get('optimizer') else 'no'}, "
             f"scheduler {'yes' if checkpoint.get('scheduler') else 'no'}",
             "  config"]
    lines += [f"    {key} = {value!r}" for key, value in sorted((checkpoint.get("config") or {}).items())]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools.py inspect-checkpoint",
                                description="What a checkpoint holds (model, epoch, best PSNR, config, sizes).")
    p.add_argument("checkpoint", help="a checkpoint (.pth), e.g. weights/asvfi/adamw_6e-4_best.pth")
    return p.parse_args(argv)


def main(argv=None):
    """Returns the exit status; tools.py turns a CheckpointError into a message."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(describe(args.checkpoint))
    return 0
