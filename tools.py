"""Project tools: benchmarks, parameter counts, checkpoint inspection, the audio ablation.

    python tools.py bench-data                 # training windows/s from the DataLoader
    python tools.py bench-model                # ASVFI forward / training-step ms, audio on vs off
    python tools.py bench-infer                # interpolated frames/s and peak memory
    python tools.py bench-metrics              # frames/s per metric
    python tools.py params                     # parameter counts of the default models
    python tools.py inspect-checkpoint CKPT    # what a checkpoint holds (`inspect` works too)
    python tools.py audio_ablation             # ASVFI with audio vs --audio none on the demo data (see README)

Each command lives in `bench/<name>.py` with a `main(argv)`; this file only dispatches.
"""
import importlib.util
import sys
from pathlib import Path

import cli

BENCH_DIR = Path(__file__).resolve().parent / "bench"
NOT_BENCHMARKS = ("params", "inspect_checkpoint", "audio_ablation")
ALIASES = {"inspect": "inspect_checkpoint", "inspect-checkpoint": "inspect_checkpoint"}


def run_bench(name, argv):
    path = BENCH_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def command_name(stem):
    if stem in NOT_BENCHMARKS:
        return stem.replace("_checkpoint", "-checkpoint")
    return f"bench-{stem}"


def dispatch(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("available:", ", ".join(command_name(c) for c in commands))
        return 0
    command, rest = argv[0], argv[1:]
    name = ALIASES.get(command, command[len("bench-"):] if command.startswith("bench-") else command)
    if name not in commands:
        print(f"error: unknown command {command!r}; run `python tools.py --help`", file=sys.stderr)
        return 2
    return run_bench(name, rest)


def main(argv=None):
    return cli.run_entry_point(dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
