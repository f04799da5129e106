"""`python tools.py gpu-check` at tiny sizes on the CPU: every step runs (the torchrun step through
gloo), the report holds every step with finite numbers; the runner survives failing, slow and
over-budget steps."""
import json
import math
import time

import pytest
import torch

import tools

GPU_CHECK = tools.load_bench("gpu_check")
STEPS = tools.load_bench("_gpu_steps")
# Skipped on a CPU by design: compilation time would be all torch.compile shows at tiny sizes.
CPU_SKIPS = {"train_compile"}


def numbers(value, where=""):
    """(path, number) of every int/float in a JSON tree."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{where}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")  # the demo of the tiny sizes is generated under it
    status = tools.main(["gpu-check", "--device", "cpu", "--tiny", "--out", str(out)])
    return status, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), out


def test_tiny_cpu_run_has_every_step_ok_or_a_justified_skip(tiny_run):
    status, report, _, out = tiny_run
    assert list(report["steps"]) == list(GPU_CHECK.STEP_NAMES)
    for name, record in report["steps"].items():
        if name in CPU_SKIPS:
            assert record["status"] == "skip" and "CUDA only" in record["note"], name
        else:
            assert record["status"] == "ok", (name, record.get("error"), record.get("traceback"))
            assert record["results"], name
    assert status == 0
    steps = report["steps"]
    assert steps["ddp"]["results"]["backend"] == "gloo"  # run in a child process: its own report is there
    assert json.loads((out / "ddp" / "gpu_check.json").read_text())["steps"]["ddp"]["status"] == "ok"
    assert steps["torchrun_main"]["results"]["returncode"] == 0
    assert set(steps["train_speed"]["results"]) >= {"fp32", "fp32 no audio", "amp+cl3d", "amp+cl3d no audio"}
    assert set(steps["infer_speed"]["results"]) >= {"2x ours", "2x fp32 batch 1", "4x ours", "4x fp32 batch 1"}
    for name in ("asvfi_correctness", "pervfi_correctness"):  # bf16 and fp16 autocast on the CPU too
        assert {"fp32_vs_cpu", "fp32_vs_reference"} & set(steps[name]["results"])
        assert {"bf16_vs_fp32", "fp16_vs_fp32"} <= set(steps[name]["results"])


def test_tiny_cpu_report_numbers_are_finite_and_targets_computed(tiny_run):
    _, report, markdown, _ = tiny_run
    found = dict(numbers(report))
    assert all(math.isfinite(value) for value in found.values()), [k for k, v in found.items() if not math.isfinite(v)]
    assert found[".steps.infer_speed.results.2x ours.frames_per_s"] > 0
    assert found[".steps.data_loader.results.alone_windows_per_s"] > 0
    assert report["environment"]["torch"] and report["environment"]["device"] == "cpu"
    verdicts = {t["what"]: t["verdict"] for t in report["targets"]}
    assert len(verdicts) == 6
    for what, verdict in verdicts.items():  # torch.compile is timed on CUDA only
        assert verdict == "not measured" if "torch.compile" in what else verdict in ("met", "not met"), what
    for name in GPU_CHECK.STEP_NAMES:
        assert f"| {name} | " in markdown
    assert "## Targets (measured, not asserted)" in markdown


def test_runner_records_errors_timeouts_failures_and_the_overall_budget(tmp_path):
    def broken(check, results):
        results["before"] = 1.0
        raise RuntimeError("kernel exploded")

    def slow(check, results):
        while True:
            time.sleep(0.01)
            check.on_time()

    def off_tolerance(check, results):
        results["diff"] = STEPS.within("ssim_vs_cpu", 1.0)

    def fine(check, results):
        results["value"] = 2.0

    steps = [GPU_CHECK.Step("broken", broken, (5, 5)), GPU_CHECK.Step("slow", slow, (0.2, 0.2)),
             GPU_CHECK.Step("off_tolerance", off_tolerance, (5, 5)), GPU_CHECK.Step("fine", fine, (5, 5)),
             GPU_CHECK.Step("gpu_only", fine, (5, 5), cuda_only="needs CUDA")]
    args = GPU_CHECK.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    records = GPU_CHECK.run_steps(steps, GPU_CHECK.make_check(args), args)
    assert records["broken"]["status"] == "error" and "kernel exploded" in records["broken"]["error"]
    assert records["broken"]["results"] == {"before": 1.0}  # what it measured before failing is kept
    assert records["slow"]["status"] == "timeout" and records["slow"]["seconds"] < 2
    assert records["off_tolerance"]["status"] == "fail" and "diff" in records["off_tolerance"]["error"]
    assert records["fine"] == {**records["fine"], "status": "ok", "results": {"value": 2.0}}
    assert records["gpu_only"]["status"] == "skip" and records["gpu_only"]["note"] == "needs CUDA"

    args.budget_s = 0
    spent = GPU_CHECK.run_steps(steps[3:4], GPU_CHECK.make_check(args), args)
    assert spent["fine"]["status"] == "skip" and "budget" in spent["fine"]["note"]


def test_an_isolated_step_that_does_not_report_in_time_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(GPU_CHECK, "CHILD_REPORT_S", 0.0)  # the child cannot even start in 0.5 s
    step = GPU_CHECK.Step("metric_networks", STEPS.step_metric_networks, (0.5, 0.5), isolated=True)
    args = GPU_CHECK.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    started = time.perf_counter()
    record = GPU_CHECK.run_steps([step], GPU_CHECK.make_check(args), args)["metric_networks"]
    assert record["status"] == "timeout" and "killed" in record["error"] and time.perf_counter() - started < 5


def test_an_isolated_steps_child_keeps_the_steps_deadline_and_reports_when_it_is_spent(tmp_path):
    """The child gets the step's deadline as a wall-clock time, so its start-up counts against it:
    it stops itself in time and its record (here: budget spent while starting) reaches the parent."""
    args = GPU_CHECK.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    check = GPU_CHECK.make_check(args)
    step = GPU_CHECK.Step("metric_networks", STEPS.step_metric_networks, (0.5, 0.5), isolated=True)
    timed = GPU_CHECK.dataclasses.replace(check, deadline=time.perf_counter() + 20)
    command = GPU_CHECK.isolated_command(step, timed, args)
    until = float(command[command.index("--until") + 1])
    assert abs(until - (time.time() + 20)) < 1
    child = GPU_CHECK.parse_args([*command[3:]])
    assert child.in_process and child.only == ["metric_networks"] and 18 < child.budget_s <= 20
    record = GPU_CHECK.run_steps([step], check, args)["metric_networks"]
    assert record["status"] == "timeout" and "starting its child" in record["error"], record


def test_the_watchdog_records_the_running_step_writes_the_report_and_exits(tmp_path):
    args = GPU_CHECK.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    steps = [GPU_CHECK.Step(name, None, (1, 1)) for name in ("done", "running", "next")]
    records = {"done": {"status": "ok", "seconds": 1.0, "results": {}},
               "running": {"status": "running", "seconds": 0.0, "results": {"measured_so_far": 3.0}}}
    codes = []
    GPU_CHECK.stop_at_the_budget(steps, GPU_CHECK.make_check(args), args, records, time.perf_counter(), codes.append)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [report["steps"][name]["status"] for name in ("done", "running", "next")] == ["ok", "timeout", "skip"]
    assert "stopped" in report["steps"]["running"]["error"] and codes == [1]
    assert report["steps"]["running"]["results"] == {"measured_so_far": 3.0}


def test_only_selects_steps_and_rejects_unknown_ones(tmp_path):
    assert GPU_CHECK.parse_args(["--only", "ddp,train_speed"]).only == ["ddp", "train_speed"]
    assert tools.main(["gpu-check", "--only", "warp_drive", "--out", str(tmp_path)]) == 1


def test_commands_name_bench_files_with_hyphens_as_underscores():
    assert tools.file_stem("gpu-check") == "gpu_check"
    assert tools.file_stem("bench-model") == tools.file_stem("model") == "model"
    assert tools.file_stem("inspect") == tools.file_stem("inspect-checkpoint") == "inspect_checkpoint"
    assert tools.command_name("gpu_check") == "gpu-check" and tools.command_name("infer") == "bench-infer"


@pytest.mark.parametrize("argv", [["bench-model"], ["bench-infer", "--worker", "speed", "--size", "64x48"]])
def test_bench_tools_take_their_device_from_runtime(argv, capsys):
    assert tools.main([*argv, "--device", "tpu"]) == 1
    assert "--device tpu: not a device name torch knows" in capsys.readouterr().err


def test_device_helpers_are_defined_once_in_bench_device():
    """Synchronising, peak memory and autocast come from bench/_device.py, dtypes from runtime."""
    import ast
    shared = {"synchronize", "reset_peak", "peak_mb", "cuda_peak_mb", "autocast"}
    for path in sorted(tools.BENCH_DIR.glob("*.py")):
        if path.stem == "_device":
            continue
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)} & shared
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        called = {ast.unparse(node.func) for node in calls}
        named_devices = [ast.unparse(node) for node in calls if ast.unparse(node.func) == "torch.device"
                         and not all(isinstance(arg, ast.Constant) for arg in node.args)]  # a --device: pick_device
        assigned = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                    if isinstance(target, ast.Name)}
        assert not defined, (path.name, defined)
        assert not called & {"torch.autocast", "torch.cuda.synchronize", "torch.cuda.max_memory_allocated"}, path.name
        assert not named_devices, (path.name, named_devices)
        assert "AMP" not in assigned, path.name


def listed_commands(capsys):
    assert tools.main(["--help"]) == 0
    printed = capsys.readouterr().out
    return printed, printed.rpartition("available: ")[2].strip().split(", ")


def test_every_listed_command_runs_under_the_name_it_is_listed_and_documented_by(capsys):
    docstring, commands = listed_commands(capsys)
    assert len(commands) == len(list(tools.BENCH_DIR.glob("[!_]*.py")))
    for command in commands:
        assert f"python tools.py {command} " in docstring, command
        with pytest.raises(SystemExit) as stopped:
            tools.main([command, "--help"])
        assert stopped.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: tools.py {command} "), command


def test_bench_files_are_modules_of_tools_py_not_scripts():
    for path in sorted(tools.BENCH_DIR.glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text and "__main__" not in text and "parents[1]" not in text, path.name


def test_bench_infer_measures_in_a_worker_started_through_tools_py(tmp_path, capsys):
    assert tools.main(["bench-infer", "--width", "0.125", "--sizes", "32x32", "--windows", "1", "--lengths", "",
                       "--work", str(tmp_path)]) == 0
    assert "    32x32       1 " in capsys.readouterr().out


def test_gradient_difference_finds_the_parameter_whose_gradient_is_wrong():
    expected = {"big": torch.full((4,), 2.0), "small": torch.full((3,), 1e-6), "slope": torch.tensor([0.5])}
    assert STEPS.gradient_difference(dict(expected), expected)[0] == 0.0
    wrong_slope = {**expected, "slope": torch.tensor([0.4])}
    measured, worst = STEPS.gradient_difference(wrong_slope, expected)
    assert worst == "slope" and measured == pytest.approx(0.2)
    # a near-zero gradient is judged on the network's scale (1e-3 of the largest norm), not its own
    noisy_small = {**expected, "small": torch.full((3,), 2e-6)}
    assert STEPS.gradient_difference(noisy_small, expected)[0] < 1e-3  # on its own scale: 1.0
    assert STEPS.gradient_difference({"big": expected["big"]}, expected) == (1.0, "slope")
