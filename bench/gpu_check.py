"""Every CUDA path checked and timed in one bounded command; a markdown table and a JSON file.

    python tools.py gpu-check --device cuda --out gpu-check     # a GPU machine, at most ~6 min
    python tools.py gpu-check --device cpu --tiny               # the same steps at tiny sizes (the test suite)
    python tools.py gpu-check --device cuda --only infer_speed,ddp --out gpu-check-2   # rerun some steps

Steps (each timed, with its own time budget; one that fails, errors or runs out is recorded and the
rest go on; once --budget-s is spent the remaining steps are recorded as skipped, and a step still
running 30 s later is stopped with the report written):
  correctness   ASVFI (FLAVR size, audio path open) fp32 vs CPU, bf16/fp16 autocast vs fp32; PerVFI and
                the metric networks (SSIM, LPIPS, PWC-Net, FloLPIPS, VFIPS) with the fixture weights vs
                the reference outputs; one training step per autocast mode with finite gradients
  training      steps/s and peak memory at 256x256, batch 8 (halved on out-of-memory): fp32 vs bf16 +
                channels_last_3d, audio on vs off; torch.compile in a subprocess with a hard timeout;
                dataset.VFIWindows windows/s alone and while feeding training steps
  inference     interpolated frames/s and peak memory at 1280x720, 2x and 4x: ours (bf16, batched
                windows) vs the same network in fp32 batch 1 (what FLAVR's own script does)
  distributed   a one-process NCCL group with DDP (gloo on CPU), in a child process like torch.compile;
                `torchrun --nproc_per_node=1 main.py`
The report ends with the targets, measured and marked met / not met (never asserted). Exit status 1
when a step failed, errored or timed out (the report is written either way).
"""
import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import runtime
import tools
import utils

S = tools.load_bench("_gpu_steps")
DEVICE = tools.load_bench("_device")
SPEED = tools.load_bench("_gpu_speed")
ON_CUDA_ONLY = "torch.compile is timed on CUDA only (on a CPU its compile time is the whole story)"


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable  # (check, results) -> None
    budget: tuple  # seconds: (full sizes, --tiny)
    cuda_only: str = ""  # why it is skipped elsewhere
    isolated: bool = False  # run in a child process killed at its budget: a compilation or a process
    # group that hangs cannot be interrupted in this one


STEPS = (
    Step("asvfi_correctness", S.step_asvfi_correctness, (25, 15)),
    Step("pervfi_correctness", S.step_pervfi_correctness, (20, 15)),
    Step("metric_networks", S.step_metric_networks, (15, 10)),
    Step("train_gradients", S.step_train_gradients, (20, 15)),
    Step("train_speed", SPEED.step_train_speed, (45, 15)),
    Step("infer_speed", SPEED.step_infer_speed, (55, 15)),
    Step("data_loader", SPEED.step_data_loader, (40, 15)),
    Step("ddp", SPEED.step_ddp, (30, 60), isolated=True),
    Step("torchrun_main", SPEED.step_torchrun_main, (45, 60)),
    Step("train_compile", SPEED.step_train_compile, (65, 10), cuda_only=ON_CUDA_ONLY, isolated=True),
)
STEP_NAMES = tuple(step.name for step in STEPS)
# The default overall budget is the sum of the full-size steps' budgets, so that no step starts
# with less than its own budget because an earlier one took all of its.
FULL_BUDGET_S = float(sum(step.budget[0] for step in STEPS))
FAILED = ("fail", "error", "timeout")
GRACE_S = 30.0  # past --budget-s, the watchdog stops a step that cannot be interrupted
CHILD_REPORT_S = 10.0  # past an isolated step's deadline, for its child to write what it measured


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tools.py gpu-check", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: CUDA when present)")
    p.add_argument("--out", default=str(tools.REPO_DIR / ".cache" / "gpu-check"), help="folder of gpu_check.md/.json")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (width 0.125, small frames, few reps)")
    p.add_argument("--budget-s", type=float, default=FULL_BUDGET_S,
                   help="overall time budget; later steps are skipped (default: the sum of the steps' budgets)")
    p.add_argument("--data-root", default=None,
                   help="where the demo set of the check's sizes is generated once (default: --out/data)")
    p.add_argument("--only", default=None, help=f"comma list of steps to run: {', '.join(STEP_NAMES)}")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # set for an isolated step's child
    p.add_argument("--until", type=float, default=None, help=argparse.SUPPRESS)  # the child's deadline (time.time())
    args = p.parse_args(argv)
    if args.until is not None:  # the child's budget counts from its parent's start of the step, not its own
        args.budget_s = max(args.until - time.time(), 0.0)
    args.only = args.only.split(",") if args.only else list(STEP_NAMES)
    unknown = sorted(set(args.only) - set(STEP_NAMES))
    if unknown:
        raise utils.ASVFIError(f"--only: unknown steps {unknown}; choose from {', '.join(STEP_NAMES)}")
    return args


def make_check(args):
    sizes = S.TINY if args.tiny else S.FULL
    out = Path(args.out).resolve()
    data_root = Path(args.data_root).resolve() if args.data_root else out / "data"
    return S.Check(runtime.pick_device(args.device), sizes, out, data_root)


# ----------------------------------------------------------------------------- running steps
def step_budget(step, check):
    return step.budget[check.sizes is S.TINY]


def run_in_process(step, check, results):
    """Run one step, filling `results`; its record (status, seconds, peak memory, results, error)
    whatever happens."""
    record = {"budget_s": round(step_budget(step, check), 1)}
    started = time.perf_counter()
    DEVICE.reset_peak(check.device)
    try:
        step.run(check, results)
        failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("ok") is False]
        record["status"] = "fail" if failed else "ok"
        if failed:
            record["error"] = f"outside tolerance: {', '.join(failed)}"
    except S.SkipStep as reason:
        record.update(status="skip", note=str(reason))
    except S.StepTimeout as reason:
        record.update(status="timeout", error=f"{reason} ({record['budget_s']} s); results are partial")
    except Exception as error:  # a broken step must not stop the others: its error is the finding
        record.update(status="error", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=-4))
    record["seconds"] = time.perf_counter() - started
    record["peak_mb"] = DEVICE.peak_mb(check.device)
    record["results"] = results
    return record


def isolated_command(step, check, args):
    """The child's command line: the step alone, with the step's deadline as a wall-clock time
    (the child's start-up counts against it) so that it stops itself and reports in time."""
    child_out = check.out / step.name
    return [sys.executable, str(tools.REPO_DIR / "tools.py"), "gpu-check", "--only", step.name, "--in-process",
            "--out", str(child_out), "--device", str(check.device), "--data-root", str(check.data_root),
            "--until", repr(time.time() + max(check.seconds_left(), 0)), *(["--tiny"] if args.tiny else [])]


def run_isolated(step, check, args):
    """Run one step in a child process (`--only STEP --in-process`): it stops at the step's deadline
    with its partial results; one still running CHILD_REPORT_S later (a hung kernel) is killed."""
    report = check.out / step.name / "gpu_check.json"
    report.unlink(missing_ok=True)  # a report left by an earlier run is not this child's
    started = time.perf_counter()
    try:
        done = subprocess.run(isolated_command(step, check, args), cwd=tools.REPO_DIR, capture_output=True,
                              text=True, timeout=max(check.seconds_left(), 0) + CHILD_REPORT_S)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - started, "results": {},
                "error": f"killed after {time.perf_counter() - started:.0f} s (its budget and "
                         f"{CHILD_REPORT_S:.0f} s to report)"}
    if not report.is_file():
        return {"status": "error", "seconds": time.perf_counter() - started, "results": {},
                "error": f"the child process (exit {done.returncode}) wrote no report: {done.stderr[-1500:]}"}
    record = json.loads(report.read_text())["steps"][step.name]
    record["seconds"] = time.perf_counter() - started  # with the child's start-up
    return record


def run_steps(steps, check, args, records=None):
    """{name: record} of every step: run, skipped (device or budget) or recorded as failed; filled
    step by step into `records` (the watchdog reads it)."""
    budget_end = time.perf_counter() + args.budget_s
    records = {} if records is None else records
    for step in utils.progress(steps, "gpu-check", unit="step"):
        left = budget_end - time.perf_counter()
        if step.cuda_only and not check.cuda:
            records[step.name] = {"status": "skip", "note": step.cuda_only, "seconds": 0.0, "results": {}}
        elif left <= 0 and args.in_process:  # an isolated step's child that started too late
            records[step.name] = {"status": "timeout", "seconds": 0.0, "results": {},
                                  "error": "its budget was spent starting its child process"}
        elif left <= 0:
            records[step.name] = {"status": "skip", "note": f"overall budget of {args.budget_s:.0f} s spent",
                                  "seconds": 0.0, "results": {}}
        else:
            timed = dataclasses.replace(check, deadline=time.perf_counter() + min(step_budget(step, check), left))
            isolated = step.isolated and not args.in_process
            records[step.name] = {"status": "running", "seconds": 0.0, "results": {}}  # what the watchdog sees
            records[step.name] = (run_isolated(step, timed, args) if isolated
                                  else run_in_process(step, timed, records[step.name]["results"]))
    return records


def stop_at_the_budget(steps, check, args, records, started, exit=os._exit):
    """The watchdog's action once the budget and its grace are spent while a step still runs (a
    kernel or a CPU call cannot be interrupted): the running step is recorded as timed out, the rest
    as skipped, the report is written and the process ends with status 1."""
    for step in steps:
        record = records.get(step.name)
        if record is None:
            records[step.name] = {"status": "skip", "seconds": 0.0, "results": {},
                                  "note": f"overall budget of {args.budget_s:.0f} s spent"}
        elif record["status"] == "running":  # its results so far are kept
            record.update(status="timeout", error="still running when the overall budget ran out; "
                                                  "the command was stopped")
    print(write_report(check, args, records, time.perf_counter() - started), flush=True)
    exit(1)


def watchdog(steps, check, args, records, started):
    timer = threading.Timer(args.budget_s + GRACE_S, stop_at_the_budget, (steps, check, args, records, started))
    timer.daemon = True
    return timer


# ----------------------------------------------------------------------------- targets and report
def result(records, step, *keys):
    """records[step]["results"][k1][k2]... or None where that step did not get so far."""
    value = records.get(step, {}).get("results", {})
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def ratio(a, b):
    return a / b if a is not None and b else None


def targets(records):
    """(what, measured, goal, higher is better) of each target."""
    fps = lambda name: result(records, "infer_speed", name, "frames_per_s")
    steps_per_s = lambda name: result(records, "train_speed", name, "steps_per_s")
    audio_on, audio_off = fps("2x ours"), fps("2x ours no audio")
    share = 1 - audio_on / audio_off if audio_on and audio_off else None
    return [
        ("inference ours vs fp32 batch 1 (2x, audio on), x", ratio(fps("2x ours"), fps("2x fp32 batch 1")), 2.0, True),
        ("inference ours vs fp32 batch 1 (4x, audio on), x", ratio(fps("4x ours"), fps("4x fp32 batch 1")), 2.0, True),
        ("interpolated frames/s at 2x with audio (ours)", audio_on, 30.0, True),
        ("audio branch share of the forward time (2x inference)", share, 0.10, False),
        ("training step amp+cl3d vs fp32 (audio on), x", ratio(steps_per_s("amp+cl3d"), steps_per_s("fp32")), 2.0, True),
        ("torch.compile helps: amp+cl3d step compiled vs eager, x",
         ratio(result(records, "train_compile", "amp+cl3d+compile", "steps_per_s"), steps_per_s("amp+cl3d")), 1.0, True),
    ]


def verdict(measured, goal, higher):
    if measured is None:
        return "not measured"
    return "met" if (measured >= goal if higher else measured <= goal) else "not met"


def environment(check):
    cuda = check.cuda
    return {"device": str(check.device),
            "device_name": torch.cuda.get_device_name(check.device) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "sizes": dataclasses.asdict(check.sizes)}


def number(value):
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if math.isfinite(value) and value != 0 else str(value)


def summary(results):
    """One markdown cell: judged rows as 'name measured/tolerance ok', variants as 'name: k v, ...'."""
    parts = []
    for key, value in results.items():
        if isinstance(value, dict) and "tolerance" in value:
            parts.append(f"{key} {number(value['measured'])} (≤ {number(value['tolerance'])}"
                         f"{'' if value['ok'] else ', FAIL'})")
        elif isinstance(value, dict):
            fields = ", ".join(f"{k} {number(v)}" for k, v in value.items() if v is not None and k != "first_problems")
            parts.append(f"{key}: {fields}")
        else:
            parts.append(f"{key} {number(value)}")
    return "; ".join(parts).replace("|", "/")


def markdown(report):
    env = report["environment"]
    lines = [f"# gpu-check: {env['device_name']} ({env['device']})", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, bf16 {env['bf16_supported']}, "
             f"Python {env['python']}, {env['cpu_threads']} CPU threads; {report['sizes']} sizes (ASVFI width "
             f"{env['sizes']['width']}, training {env['sizes']['crop']}² batch {env['sizes']['batch']}, inference "
             f"{'x'.join(map(str, env['sizes']['video']))}); "
             f"{report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget"
             + ("; on the CPU, device-vs-CPU differences are 0 by construction" if env["device"] == "cpu" else ""), "",
             "| step | status | seconds | peak MiB | results |", "|---|---|---|---|---|"]
    for name, record in report["steps"].items():
        detail = record.get("error") or record.get("note") or ""
        cell = "; ".join(part for part in (summary(record["results"]), detail.replace("|", "/")) if part)
        peak = number(record.get("peak_mb"))
        lines.append(f"| {name} | {record['status']} | {record['seconds']:.1f} | {peak} | {cell} |")
    lines += ["", "## Targets (measured, not asserted)", "", "| target | measured | goal | verdict |", "|---|---|---|---|"]
    for row in report["targets"]:
        sign = "≥" if row["higher_is_better"] else "≤"
        lines.append(f"| {row['what']} | {number(row['measured'])} | {sign} {number(row['goal'])} | {row['verdict']} |")
    return "\n".join(lines) + "\n"


def write_report(check, args, records, seconds):
    report = {"environment": environment(check), "sizes": "tiny" if args.tiny else "full",
              "budget_s": args.budget_s, "seconds": seconds, "steps": records,
              "targets": [{"what": what, "measured": measured, "goal": goal, "higher_is_better": higher,
                           "verdict": verdict(measured, goal, higher)}
                          for what, measured, goal, higher in targets(records)],
              "tolerances": S.TOLERANCES}
    text = markdown(report)
    utils.atomic_write_text(check.out / "gpu_check.json", json.dumps(report, indent=1, default=str) + "\n")
    utils.atomic_write_text(check.out / "gpu_check.md", text)
    return text


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check = make_check(args)
    started = time.perf_counter()
    check.out.mkdir(parents=True, exist_ok=True)
    steps, records = [step for step in STEPS if step.name in args.only], {}
    timer = watchdog(steps, check, args, records, started)
    timer.start()
    try:
        run_steps(steps, check, args, records)
    finally:
        timer.cancel()
    text = write_report(check, args, records, time.perf_counter() - started)
    if not args.in_process:
        print(text)
        counts = {status: sum(r["status"] == status for r in records.values()) for status in ("ok", "skip", *FAILED)}
        print(f"gpu-check: {', '.join(f'{n} {s}' for s, n in counts.items() if n)}; "
              f"{check.out / 'gpu_check.md'}, {check.out / 'gpu_check.json'}")
    return int(any(r["status"] in FAILED for r in records.values()))

