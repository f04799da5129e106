"""`python tools.py inspect CKPT`: what a checkpoint holds (model, epoch, best PSNR, config, sizes)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import model as model_lib  # noqa: E402


def describe(path):
    checkpoint = model_lib.load_checkpoint_state(path)
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


def main(argv):
    if len(argv) != 1:
        raise SystemExit("usage: python tools.py inspect CKPT")
    try:
        print(describe(argv[0]))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error))
    return 0
