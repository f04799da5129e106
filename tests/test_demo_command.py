"""`python tools.py demo` (what `make demo` runs) end to end on a tiny demo set."""
import re

import pytest

import tools
from utils import ASVFIError

ARM_LABELS = ("ASVFI, audio", "ASVFI, no audio")
TINY = ["--size", "64x48", "--frames", "12", "--epochs", "1", "--windows-per-video", "1", "--val-windows", "4"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    flags = ["--data-root", str(root / "data"), "--out-dir", str(root / "out"), *TINY]
    assert tools.run_bench("demo", flags) == 0
    return root, flags


def test_demo_ends_with_one_table_of_five_methods_best_first(demo_run, capsys):
    root, _ = demo_run
    table = (root / "out" / "figs" / "demo.md").read_text()
    rows = re.findall(r"^\| (.+?) \| ([\d.]+) \| ([\d.]+) \|$", table, re.M)
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
    job_runner = tools.load_bench("_jobs")
    failing = job_runner.Job("broken step", [["-c", "import sys; print('boom: no such file', file=sys.stderr); "
                                                   "sys.exit(3)"]])
    with pytest.raises(ASVFIError, match=r"failed \(exit 3\); the end of .*broken_step\.log:\nboom: no such file"):
        job_runner.run_jobs([failing], tmp_path / "logs")


def test_jobs_run_in_the_callers_folder_where_their_relative_paths_were_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_runner = tools.load_bench("_jobs")
    here = job_runner.Job("where", [["-c", "import os; open('cwd.txt', 'w').write(os.getcwd())"],
                                    ["main.py", "--help"]])  # a repository script, found from elsewhere
    job_runner.run_jobs([here], "logs")
    assert (tmp_path / "cwd.txt").read_text() == str(tmp_path) and (tmp_path / "logs" / "where.log").is_file()
