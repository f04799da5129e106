"""Start one of the repository's scripts under torchrun with 2 CPU processes, as a user would."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RANK_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def two_process_torchrun(script, log_dir, timeout=240):
    """`torchrun --nproc_per_node=2 --standalone <script...>` in the repository, outside any process
    group the test session may be in, one thread per process (two processes share the CI's cores).
    torchrun's per-rank logs go to `log_dir`: without it each run leaves a torchelastic_* folder in
    the system's temp folder."""
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "--log-dir", str(log_dir), *map(str, script)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
