"""Project tools: benchmarks, parameter counts, checkpoint inspection, the audio ablation.

    python tools.py bench-data                 # training windows/s from the DataLoader
    python tools.py bench-model                # ASVFI forward / training-step ms, audio on vs off
    python tools.py bench-infer                # interpolated frames/s and peak memory
    python tools.py bench-metrics              # frames/s per metric
    python tools.py bench-pipeline             # test-split path (decode, inference, evaluation) and UCF-101 projection
    python tools.py params                     # parameter counts of the default models
    python tools.py inspect-checkpoint CKPT    # what a checkpoint holds (`inspect` works too)
    python tools.py audio_ablation             # ASVFI with audio vs --audio none on the demo data (see README)
    python tools.py audio_gain                 # gradient reaching the audio branch in the first steps, per fusion init
    python tools.py demo                       # what `make demo` runs: both ASVFI arms + 3 baselines, one table
    python tools.py demo-figure                # why the sound helps: generated vs true lamp light (after demo)
    python tools.py gpu-check --device cuda    # every CUDA path checked and timed in ~6 min (see BENCHMARKS.md)

Each command lives in `bench/<name>.py` with a `main(argv)`; this file only dispatches. Hyphens
in a command are underscores in its file name (`gpu-check` -> bench/gpu_check.py); `bench-<name>`
names the same file as `<name>`. Bench files are modules this file loads, not scripts: they import
the project as any module of it does, with the repository on sys.path.
"""
import importlib.util
import sys
from pathlib import Path

import cli

REPO_DIR = Path(__file__).resolve().parent
BENCH_DIR = REPO_DIR / "bench"
# bench/ files that are not benchmarks, and the command each is listed as (the others: bench-<name>)
NOT_BENCHMARKS = {"params": "params", "inspect_checkpoint": "inspect-checkpoint",
                  "audio_ablation": "audio_ablation", "audio_gain": "audio_gain", "gpu_check": "gpu-check",
                  "demo": "demo", "demo_figure": "demo-figure"}
ALIASES = {"inspect": "inspect_checkpoint"}


def load_module(path, name):
    """A Python file as a module, imported by path under `name` once per process (like an import:
    every user of a bench helper sees the same classes)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def load_bench(name):
    """bench/<name>.py as a module (bench/ is not a package; its helpers are shared this way without
    putting bench/ on sys.path, where bench/model.py would shadow model.py)."""
    return load_module(BENCH_DIR / f"{name}.py", f"bench_{name}")


def run_bench(name, argv):
    return load_bench(name).main(argv)


def command_name(stem):
    return NOT_BENCHMARKS.get(stem, f"bench-{stem}")


def file_stem(command):
    """The bench/ file a command names: aliases, an optional bench- prefix, hyphens as underscores."""
    command = ALIASES.get(command, command)
    if command.startswith("bench-"):
        command = command[len("bench-"):]
    return command.replace("-", "_")


def dispatch(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("available:", ", ".join(command_name(c) for c in commands))
        return 0
    command, rest = argv[0], argv[1:]
    name = file_stem(command)
    if name not in commands:
        print(f"error: unknown command {command!r}; run `python tools.py --help`", file=sys.stderr)
        return 2
    return run_bench(name, rest)


def main(argv=None):
    return cli.run_entry_point(dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
