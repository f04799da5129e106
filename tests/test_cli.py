"""The entry points' shared wrapper (cli.run_entry_point): project errors as one message, warnings
as one line, and SIGTERM unwinding the run like Ctrl-C."""
import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import cli
import dataset
import runs
import utils

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_unwinds_an_entry_point_so_no_temporary_file_is_left(tmp_path):
    """A cluster's time limit sends SIGTERM: the half-written file goes, the old one stays."""
    target = tmp_path / "report.csv"
    target.write_text("old")

    def killed_while_writing(tmp):
        Path(tmp).write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises during the sleep

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        cli.run_entry_point(lambda argv: utils.atomic_write(target, killed_while_writing))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"] and target.read_text() == "old"
    assert signal.getsignal(signal.SIGTERM) == before


def test_ctrl_c_ends_an_entry_point_with_one_line_and_status_130_after_its_cleanup(tmp_path):
    """Ctrl-C in any script (inference, prepare, evaluate): the half-written file goes and the run ends
    with `stopped (Ctrl-C)`, no traceback."""
    target = tmp_path / "report.csv"
    code = ("import os, signal, time, cli, utils; "
            "cli.run_entry_point(lambda argv: utils.atomic_write(%r, lambda tmp: (open(tmp, 'w').write('half'), "
            "os.kill(os.getpid(), signal.SIGINT), time.sleep(5))))" % str(target))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT
    assert done.stderr.strip() == "stopped (Ctrl-C)" and list(tmp_path.iterdir()) == []


def test_entry_point_warnings_print_as_one_line():
    """Our warnings name the file they are about; the source line that raised them says nothing to a user."""
    code = ("import warnings, cli; cli.run_entry_point(lambda argv: warnings.warn('clip.mp4: no audio stream')); "
            "warnings.warn('outside')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert lines[0] == "warning: clip.mp4: no audio stream" and "UserWarning: outside" in lines[1]


def test_a_warning_during_a_progress_bar_starts_a_line_of_its_own():
    code = ("import warnings, cli, utils\n"
            "def job(argv):\n"
            "    with utils.progress(range(3), 'videos') as bar:\n"
            "        bar.refresh(); warnings.warn('clip.mp4: no audio stream')\n"
            "cli.run_entry_point(job)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    before = done.stderr[:done.stderr.index("warning: clip.mp4: no audio stream\n")]
    assert "videos" in before and before.endswith(("\r", "\n"))  # the bar's line was cleared first


class KilledWhileCollected:
    """Gets SIGTERM inside its __del__, as a DataLoader iterator shutting down its workers can."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler's SystemExit is raised here, where Python ignores it


def test_a_sigterm_swallowed_by_a_destructor_still_stops_the_entry_point():
    def body(argv):
        KilledWhileCollected()  # collected at once
        time.sleep(5)
        return 0

    with pytest.raises(SystemExit) as stopped:
        cli.run_entry_point(body)
    assert stopped.value.code == 128 + signal.SIGTERM


class UnusableWindows(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise dataset.DataError("/data/v_X.avi: frames are 320x240 but the split CSV says 322x240; re-run prepare")


def test_an_error_from_a_data_loader_worker_prints_its_own_message(capsys):
    """torch re-raises it with the worker's traceback in front; the user reads what went wrong."""
    def body(argv):
        next(iter(torch.utils.data.DataLoader(UnusableWindows(), num_workers=1)))

    assert cli.run_entry_point(body) == 1
    assert capsys.readouterr().err == ("error: /data/v_X.avi: frames are 320x240 but the split CSV says 322x240; "
                                       "re-run prepare\n")


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_a_checkpoint_for_a_baseline_is_refused_rather_than_ignored(command, capsys):
    module = importlib.import_module(command)
    with pytest.raises(SystemExit):
        module.parse_args(["--model", "blend", "--checkpoint", "FLAVR_2x.pth"])
    assert "--checkpoint does not apply to --model blend: it has no weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.parse_args(["--model", "blend", "--epoch", "3"])
    assert "--epoch does not apply to --model blend: it has no weights" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_without_lr_a_trained_model_names_the_run_its_preset_trains(command):
    module = importlib.import_module(command)
    assert [module.parse_args(["--model", model]).lr for model in ("asvfi", "pervfi")] == ["6e-4", "5e-4"]
    assert module.parse_args(["--model", "pervfi", "--lr", "1e-3"]).lr == "1e-3"


@pytest.mark.parametrize("text", ["0", "-1e-3", "nan"])
def test_a_learning_rate_that_is_not_positive_is_refused(text, capsys):
    parser = argparse.ArgumentParser()
    cli.add_run_flags(parser)
    assert parser.parse_args(["--lr", "2e-4"]).lr == "2e-4"
    with pytest.raises(SystemExit):
        parser.parse_args([f"--lr={text}"])
    assert f"must be positive: {text!r}" in capsys.readouterr().err


def test_a_given_dataset_wins_over_the_data_roots_default(tmp_path):
    (tmp_path / "UCF-101").mkdir()
    assert cli.dataset_of(argparse.Namespace(dataset=None, data_root=tmp_path)) == "ucf101"
    assert cli.dataset_of(argparse.Namespace(dataset="demo", data_root=tmp_path)) == "demo"
    assert cli.dataset_of(argparse.Namespace(dataset=None, data_root=tmp_path / "empty")) == "demo"


def test_only_user_warnings_drop_their_category_in_one_line_form():
    assert cli.one_line("clip.mp4: no audio stream", UserWarning, "dataset.py", 1) == \
        "warning: clip.mp4: no audio stream\n"
    assert cli.one_line("overflow", RuntimeWarning, "metrics.py", 1) == "RuntimeWarning: overflow\n"


def test_a_protocol_without_frame_metrics_on_an_image_test_set_says_so(capsys):
    with pytest.raises(SystemExit):
        importlib.import_module("evaluate").parse_args(["--dataset", "vimeo-triplet", "--protocol", "stylegan-v"])
    assert "--protocol stylegan-v defines fvd, which need videos; vimeo-triplet holds single target frames" in \
        capsys.readouterr().err


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_without_flags_a_trained_model_reads_its_preset_runs_latest_checkpoint_under_here(command):
    """adamw, the latest checkpoint (no epoch), weights/ under the working folder, data in ../data."""
    module = importlib.import_module(command)
    args = module.parse_args(["--model", "asvfi"])
    assert runs.checkpoint_file_of(args) == Path("weights/asvfi/adamw_6e-4.pth")
    assert runs.generated_run_of(args) == "adamw_6e-4"
    assert Path(args.data_root) == Path("../data") and args.device is None and args.weights_dir is None
    args = module.parse_args(["--model", "asvfi", "--optimizer", "adam", "--epoch", "3", "--out-dir", "out"])
    assert runs.checkpoint_file_of(args) == Path("out/weights/asvfi/adam_6e-4_epoch3.pth")


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_a_tag_names_its_own_run_and_an_epoch_its_own_snapshot(command):
    """--tag noaudio reads the checkpoint `main.py --tag noaudio` wrote and keeps its frames apart."""
    module = importlib.import_module(command)
    args = module.parse_args(["--model", "asvfi", "--tag", "noaudio"])
    assert runs.checkpoint_file_of(args) == Path("weights/asvfi/adamw_6e-4_noaudio.pth")
    assert runs.generated_run_of(args) == "adamw_6e-4_noaudio"
    args = module.parse_args(["--model", "pervfi", "--tag", "noaudio", "--epoch", "5"])
    assert runs.checkpoint_file_of(args) == Path("weights/pervfi/adamw_5e-4_noaudio_epoch5.pth")
    assert runs.generated_run_of(args) == "adamw_5e-4_noaudio_epoch5"


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_weights_is_another_spelling_of_checkpoint(command):
    module = importlib.import_module(command)
    args = module.parse_args(["--model", "pervfi", "--weights", "models/PerVFI_vb.pth"])
    assert runs.checkpoint_file_of(args) == Path("models/PerVFI_vb.pth")
    assert runs.generated_run_of(args) == "PerVFI_vb"


@pytest.mark.parametrize("command", ["inference", "evaluate"])
def test_a_baseline_without_checkpoint_flags_is_accepted(command):
    args = importlib.import_module(command).parse_args(["--model", "blend"])
    assert args.model == "blend" and runs.generated_run_of(args) is None


@pytest.mark.parametrize("command", ["main", "inference"])
def test_bare_amp_means_bf16_and_no_amp_means_full_precision(command):
    module = importlib.import_module(command)
    assert [module.parse_args(flags).amp for flags in ([], ["--amp"], ["--amp", "fp16"])] == [None, "bf16", "fp16"]


@pytest.mark.parametrize("command", ["main", "inference", "evaluate"])
def test_a_dataset_is_a_preset_or_a_plain_folder_name_never_a_path(command, capsys):
    module = importlib.import_module(command)
    assert [module.parse_args(["--dataset", name]).dataset for name in ("demo", "my_videos")] == ["demo", "my_videos"]
    for text in ("../my_videos", "videos/my_videos", ".hidden"):
        with pytest.raises(SystemExit):
            module.parse_args(["--dataset", text])
        assert f"{text!r}: not one of ucf101, demo" in capsys.readouterr().err


def test_a_learning_rate_that_is_not_a_number_is_refused(capsys):
    parser = argparse.ArgumentParser()
    cli.add_run_flags(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--lr", "fast"])
    assert "not a number: 'fast'" in capsys.readouterr().err


def test_a_stop_prints_one_line_with_the_notes_the_script_added(capsys):
    """What a script knows of where it stopped (the epoch its last checkpoint holds) follows the cause."""
    def body(argv):
        stop = cli.Stopped(signal.SIGTERM)
        stop.add_note("last checkpoint run.pth holds epoch 2")
        stop.add_note("resume with --resume")
        raise stop

    with pytest.raises(SystemExit) as stopped:
        cli.run_entry_point(body)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "stopped (SIGTERM): last checkpoint run.pth holds epoch 2; resume with --resume\n"


def test_a_programming_error_keeps_its_traceback_rather_than_becoming_a_message(capsys):
    """Only project errors are the user's to fix; any other exception is a bug and propagates as it is."""
    def body(argv):
        return {}["size"]

    with pytest.raises(KeyError):
        cli.run_entry_point(body)
    assert "error:" not in capsys.readouterr().err


class FailsWhenCollected:
    def __del__(self):
        raise ValueError("cache file left open")


def test_an_exception_in_a_destructor_is_still_reported_and_the_reporting_restored_afterwards(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def body(argv):
        FailsWhenCollected()  # collected at once
        return 0

    assert cli.run_entry_point(body) == 0
    assert [str(unraisable.exc_value) for unraisable in reported] == ["cache file left open"]
    assert sys.unraisablehook == reported.append


def test_an_entry_point_runs_outside_the_main_thread():
    """Signals reach only the main thread: elsewhere the body runs without the SIGTERM handler."""
    results = []
    thread = threading.Thread(target=lambda: results.append(cli.run_entry_point(lambda argv: 7)))
    thread.start()
    thread.join()
    assert results == [7]
