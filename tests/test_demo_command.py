"""`python tools.py demo` (what `make demo` runs) end to end on a tiny demo set."""
import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import tools
from utils import ASVFIError

ARM_LABELS = ("ASVFI, audio", "ASVFI, no audio")
TINY = ["--size", "64x48", "--frames", "12", "--epochs", "1", "--windows-per-video", "1", "--val-windows", "4"]
demo = tools.load_bench("demo")
ablation = tools.load_bench("audio_ablation")
figure = tools.load_bench("demo_figure")
job_runner = tools.load_bench("_jobs")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    flags = ["--data-root", str(root / "data"), "--out-dir", str(root / "out"), *TINY]
    assert tools.run_bench("demo", flags) == 0
    return root, flags


def test_demo_ends_with_one_table_of_five_methods_best_first(demo_run, capsys):
    root, _ = demo_run
    table = (root / "out" / "figs" / "demo.md").read_text()
    rows = re.findall(r"^\| (.+?) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \| [\d.]+ \|$", table, re.M)
    labels = [label for label, _, _ in rows]
    assert sorted(labels) == sorted(["Repeat (previous frame)", "Blend (mean of neighbours)",
                                     "DIS (OpenCV optical flow, bidirectional warp)", *ARM_LABELS])
    psnrs = [float(psnr) for _, psnr, _ in rows]
    assert psnrs == sorted(psnrs, reverse=True) and all(10 < p < 60 for p in psnrs)
    assert "64x48" in table and "protocol asvfi" in table
    # both arms were trained by main.py with their own tags, and their curves plotted
    assert (root / "out" / "figs" / "demo_audio_ablation.png").is_file()
    assert all(f"| {label} PSNR |" in (root / "out" / "figs" / "demo_audio_ablation.md").read_text()
               for label in ARM_LABELS)  # the arms are named alike in every table and figure
    assert (root / "out" / "figs" / "demo_light.png").is_file()
    for tag in ("audio", "noaudio"):
        assert (root / "out" / "weights" / "asvfi" / f"adamw_2e-3_demo_{tag}_best.pth").is_file()
        # the arms train at once: their progress bars go to a file each, not over each other
        assert "epoch 1/1" in (root / "out" / "figs" / "demo_logs" / f"train_{tag}.log").read_text()


def test_light_slopes_of_the_figure_read_the_generated_frames(demo_run, capsys):
    root, flags = demo_run
    assert tools.run_bench("demo_figure", ["--data-root", str(root / "data"), "--out-dir", str(root / "out")]) == 0
    slopes = dict(re.findall(r"^(ASVFI, audio|ASVFI, no audio|DIS) +slope ([-+][\d.]+)", capsys.readouterr().out, re.M))
    assert set(slopes) == {"ASVFI, audio", "ASVFI, no audio", "DIS"}
    assert abs(float(slopes["DIS"])) < 0.2  # flow warping cannot know the light of an in-between frame


def test_demo_refuses_a_demo_set_of_another_size(demo_run):
    root, flags = demo_run
    other = [*flags[:flags.index("--size")], "--size", "32x24", *flags[flags.index("--size") + 2:]]
    with pytest.raises(ASVFIError, match=r"demo: the demo there is 64x48, 12 frames, not 32x24, 12 frames"):
        tools.run_bench("demo", other)


def test_a_failed_job_is_named_with_the_end_of_its_log(tmp_path):
    failing = job_runner.Job("broken step", [["-c", "import sys; print('boom: no such file', file=sys.stderr); "
                                                   "sys.exit(3)"]])
    with pytest.raises(ASVFIError, match=r"failed \(exit 3\); the end of .*broken_step\.log:\nboom: no such file"):
        job_runner.run_jobs([failing], tmp_path / "logs")


def test_jobs_run_in_the_callers_folder_where_their_relative_paths_were_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = job_runner.Job("where", [["-c", "import os; open('cwd.txt', 'w').write(os.getcwd())"],
                                    ["main.py", "--help"]])  # a repository script, found from elsewhere
    job_runner.run_jobs([here], "logs")
    assert (tmp_path / "cwd.txt").read_text() == str(tmp_path) and (tmp_path / "logs" / "where.log").is_file()


def printed_command(text, parser):
    """The settings of the `Command: ...` line under a table, parsed by the command's own parser
    (and the script it names)."""
    words = shlex.split(re.search(r"^Command: `(.+)`$", text, re.M)[1])
    assert words[:1] == ["python"] and words[2:len(parser.prog.split()) + 1] == parser.prog.split()[1:]
    return words[1], parser.parse_args(words[len(parser.prog.split()) + 1:])


def test_the_commands_under_the_tables_are_those_the_demo_ran(demo_run):
    root, flags = demo_run
    script, settings = printed_command((root / "out" / "figs" / "demo_audio_ablation.md").read_text(),
                                       ablation.build_parser())
    assert Path(script).resolve() == tools.REPO_DIR / "tools.py"
    # the audio_ablation command trains the very main.py runs of the demo, on a demo of its size
    trained = [job.commands[0][1:] for job in demo.demo_jobs(demo.parse_args(flags)) if job.name.startswith("train")]
    assert [ablation.training_flags(settings, demo.TAG_PREFIX + tag, audio) for tag, audio, _ in ablation.ARMS] == trained
    assert (str(settings.size), settings.frames, settings.out_dir) == ("64x48", 12, str(root / "out"))
    # and the demo's own command is the demo that made the test table
    _, settings = printed_command((root / "out" / "figs" / "demo.md").read_text(), demo.build_parser())
    assert settings == demo.parse_args(flags)


def test_the_printed_ablation_command_reproduces_its_rows_from_elsewhere_on_a_fresh_data_root(
        demo_run, tmp_path, monkeypatch):
    root, _ = demo_run
    report = (root / "out" / "figs" / "demo_audio_ablation.md").read_text()
    words = shlex.split(re.search(r"^Command: `(.+)`$", report, re.M)[1])[3:]
    words[words.index("--data-root") + 1] = str(tmp_path / "fresh")  # the demo is made again from its size
    logs = {tag: ablation.read_log(ablation.log_path(ablation.parse_args(words), tag)) for tag, _, _ in ablation.ARMS}
    monkeypatch.chdir(tmp_path)  # the runs exist in --out-dir: the command must train them again there
    assert tools.run_bench("audio_ablation", words) == 0
    again = {tag: ablation.read_log(ablation.log_path(ablation.parse_args(words), tag)) for tag, _, _ in ablation.ARMS}
    assert all([r["val_psnr"] for r in again[tag]] == [r["val_psnr"] for r in logs[tag]] for tag in logs)
    assert not (tmp_path / "figs").exists() and not (tmp_path / "weights").exists()


def test_the_scripts_the_demo_runs_are_named_so_that_they_run_from_the_callers_folder(demo_run, tmp_path,
                                                                                      monkeypatch, capsys):
    root, flags = demo_run
    monkeypatch.chdir(tmp_path)
    commands = [command for job in demo.demo_jobs(demo.parse_args(flags)) for command in job.commands]
    assert {Path(command[0]).name for command in commands} == {"main.py", "inference.py", "evaluate.py"}
    assert all(Path(command[0]).is_file() for command in commands)  # as printed, not only as run
    # the figure step prints its command too, and runs what it prints
    assert demo.draw_figure(demo.parse_args(flags)) == 0
    line = re.search(r"^\$ (.+)$", capsys.readouterr().out, re.M)[1]
    script, settings = printed_command(f"Command: `{line}`", figure.build_parser())
    assert Path(script).is_file() and settings == figure.parse_args(
        ["--data-root", str(root / "data"), "--out-dir", str(root / "out"), "--tag-prefix", "demo_", "--lr", "2e-3"])


def split_rows(root, split):
    with open(root / "data" / "demo_split.csv") as f:
        return [row for row in csv.DictReader(f) if row["split"] == split]


def test_the_test_table_says_what_its_numbers_are_of(demo_run):
    root, _ = demo_run
    table = (root / "out" / "figs" / "demo.md").read_text()
    with open(root / "out" / "evals" / "DIS_demo_s2.csv") as f:
        per_video = list(csv.DictReader(f))
    frames = sum(int(row["generated"]) for row in per_video)
    assert f"of the {frames} generated frames of the {len(split_rows(root, 'test'))} test videos" in table
    assert "protocol asvfi" in table and "`adamw_2e-3_demo_audio_best.pth`, `adamw_2e-3_demo_noaudio_best.pth`" in table
    dis = re.search(r"^\| DIS .*? \| [\d.]+ \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|$", table, re.M)
    assert float(dis[1]) == pytest.approx(np.std([float(row["psnr"]) for row in per_video]), abs=0.006)
    assert float(dis[2]) == pytest.approx(np.std([float(row["ssim"]) for row in per_video]), abs=0.0006)


def test_the_validation_table_says_what_its_numbers_are_of(demo_run):
    root, flags = demo_run
    report = (root / "out" / "figs" / "demo_audio_ablation.md").read_text()
    found = re.search(r"on the same (\d+) windows of the val split \((\d+) videos\), full 64x48 frames, 2x", report)
    assert int(found[1]) == 4 and 1 <= int(found[2]) <= 4  # --val-windows 4
    assert "`best` is the maximum over the epochs on these same windows" in report
    # read from the data: all of the val split without a --val-windows limit
    every = ablation.validation_caption(ablation.parse_args([*job_runner.command_args(
        ablation.build_parser(), demo.ablation_args(demo.parse_args(flags))), "--val-windows", "0"]))
    windows, videos = map(int, re.search(r"on the same (\d+) windows of the val split \((\d+) videos\)", every).groups())
    assert videos == len(split_rows(root, "val")) and windows > videos


def test_a_resumed_or_report_only_ablation_prints_the_command_that_trains_both_arms_again_from_scratch():
    parser = ablation.build_parser()
    ran = ablation.parse_args(["--data-root", "d", "--size", "64x48", "--frames", "12", "--start-epoch", "1",
                               "--report-only", "--device", "cpu"])
    _, settings = printed_command(f"Command: `{job_runner.command_line(parser, ablation.rerun_settings(ran))}`", parser)
    # the runs exist once a report is written: --overwrite retrains them, from epoch 0 (resuming gives the same weights)
    assert settings.overwrite and settings.start_epoch == 0 and not settings.report_only
    assert vars(settings) == {**vars(ran), "overwrite": True, "start_epoch": 0, "report_only": False}
