"""torchrun entry for the DDP test: main.py's training, then every rank writes its final weights.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py RANKS_DIR <main.py flags>

The test compares the ranks' weights with each other and with rank 0's checkpoint.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import checkpoints  # noqa: E402
import main  # noqa: E402
import runtime  # noqa: E402
import train  # noqa: E402


def run(ranks_dir, argv):
    args = main.parse_args(argv)
    with runtime.processes(args.device) as procs:
        state = train.train(args, procs)
        checkpoints.save(state.network.state_dict(), Path(ranks_dir) / f"rank{procs.rank}.pth")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
