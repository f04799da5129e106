"""Stopping and resuming a training run: the latest checkpoint as each epoch's commit point, the
one-line stop message, the flags a resume may not change, the run's lock and killed writes' temp files."""
import csv
import fcntl
import os
import re
import signal
import time
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch

import checkpoints
import publish
import registry
import runtime
import train
import training_log
from test_train import RUN, _single_process, assert_same_weights, load, run_main, without_timing  # noqa: F401

SHORT = ["--limit-steps", "2", "--val-windows", "2"]
WEIGHTS = f"weights/asvfi/{RUN}"


def log_rows(out_dir):
    """The CSV log without its timing column."""
    with open(out_dir / f"figs/asvfi/{RUN}.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def sigterm_now():
    """What a cluster's time limit does: the handler raises during the sleep."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)


def stopped_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stopped")]
    assert len(lines) == 1
    return lines[0]


@pytest.fixture(scope="module")
def three_epochs(demo_root, tmp_path_factory):
    """An uninterrupted 3-epoch run whose last epoch is its best (so it writes _best.pth)."""
    out = tmp_path_factory.mktemp("three_epochs")
    assert run_main(demo_root, out, "--epochs", "3", *SHORT) == 0
    assert train.best_epoch(load(out / f"{WEIGHTS}.pth")["history"]) == 3
    return out


@pytest.fixture(scope="module")
def one_epoch(demo_root, tmp_path_factory):
    """A run of 1 finished epoch, to resume (to more) with changed flags."""
    out = tmp_path_factory.mktemp("one_epoch")
    assert run_main(demo_root, out, "--epochs", "1", *SHORT) == 0
    return out


# ----------------------------------------------------------------------------- the commit point
@pytest.mark.parametrize("interrupted", ["best", "log", "figure", "latest"])
def test_a_stop_between_the_last_epochs_writes_resumes_to_the_uninterrupted_run(
        interrupted, demo_root, three_epochs, tmp_path, monkeypatch, capsys):
    """SIGTERM while the last epoch writes its files; the resume the stop line advises ends with the
    weights, history, best checkpoint, log and curves of the run that was never stopped."""
    out = tmp_path / "stopped"
    target = {"best": out / f"{WEIGHTS}_best.pth", "latest": out / f"{WEIGHTS}.pth"}.get(interrupted)
    save, write_log, plot_curves = checkpoints.save, training_log.write_log, training_log.plot_curves

    def stopping_save(checkpoint, path):
        if path == target and checkpoint["epoch"] == 3:
            sigterm_now()
        return save(checkpoint, path)

    def stopping_log(path, history):
        if interrupted == "log" and len(history) == 3:
            sigterm_now()
        return write_log(path, history)

    def stopping_curves(path, history, run):
        if interrupted == "figure" and len(history) == 3:
            sigterm_now()
        return plot_curves(path, history, run)

    monkeypatch.setattr(checkpoints, "save", stopping_save)
    monkeypatch.setattr(training_log, "write_log", stopping_log)
    monkeypatch.setattr(training_log, "plot_curves", stopping_curves)
    with pytest.raises(SystemExit) as stopped:
        run_main(demo_root, out, "--epochs", "3", *SHORT)
    assert stopped.value.code == 128 + signal.SIGTERM
    monkeypatch.undo()
    line = stopped_line(capsys)
    assert line == (f"stopped (SIGTERM): last checkpoint {out / WEIGHTS}.pth holds epoch 2; "
                    f"resume with --start-epoch 2")
    finished = int(re.search(r"holds epoch (\d+)", line)[1])
    assert run_main(demo_root, out, "--epochs", "3", *SHORT, "--start-epoch", str(finished)) == 0

    straight, resumed = load(three_epochs / f"{WEIGHTS}.pth"), load(out / f"{WEIGHTS}.pth")
    assert_same_weights(straight["state_dict"], resumed["state_dict"])
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    best = load(out / f"{WEIGHTS}_best.pth")
    assert best["epoch"] == 3
    assert_same_weights(best["state_dict"], load(three_epochs / f"{WEIGHTS}_best.pth")["state_dict"])
    assert log_rows(out) == log_rows(three_epochs)
    assert (matplotlib.image.imread(out / f"figs/asvfi/{RUN}.png") ==
            matplotlib.image.imread(three_epochs / f"figs/asvfi/{RUN}.png")).all()


def saved(path, epoch, history):
    """A stand-in checkpoint file of `epoch` with the given val PSNRs as its history."""
    records = [{"epoch": e, "val_psnr": psnr} for e, psnr in enumerate(history, 1)]
    torch.save({"epoch": epoch, "history": records, "state_dict": {"w": torch.full((1,), float(epoch))}}, path)
    return path


@pytest.fixture
def paths(tmp_path):
    paths = train.RunPaths(tmp_path, "asvfi", RUN)
    paths.latest.parent.mkdir(parents=True)
    return paths


def test_resume_leaves_a_right_best_checkpoint_and_one_a_stopped_epoch_wrote(paths, capsys):
    latest = saved(paths.latest, 3, [20.0, 21.0, 22.0])
    for best_epoch in (3, 4):  # the resumed history's best; one written by the epoch the resume redoes
        before = saved(paths.best, best_epoch, [20.0])
        train.check_best_checkpoint(paths, latest, train.checkpoints.load_file(latest))
        assert paths.best.read_bytes() == before.read_bytes() and capsys.readouterr().out == ""


def test_resume_rewrites_an_older_best_checkpoint_from_the_checkpoint_of_the_best_epoch(paths, capsys):
    """The resumed checkpoint's own epoch was its best, but _best.pth was left at an older one."""
    latest = saved(paths.latest, 3, [20.0, 21.0, 22.0])
    saved(paths.best, 2, [20.0, 21.0])
    train.check_best_checkpoint(paths, latest, train.checkpoints.load_file(latest))
    assert paths.best.read_bytes() == latest.read_bytes()
    assert (f"note: {paths.best} holds epoch 2, but epoch 3 has the best validation PSNR (22.00 dB) in "
            f"{latest}'s history; copied {latest} to it") in capsys.readouterr().out


def test_resume_restores_a_missing_best_checkpoint_from_the_best_epochs_snapshot(paths, capsys):
    latest = saved(paths.latest, 3, [20.0, 22.0, 21.0])
    snapshot = saved(paths.snapshot(2), 2, [20.0, 22.0])
    train.check_best_checkpoint(paths, latest, train.checkpoints.load_file(latest))
    assert paths.best.read_bytes() == snapshot.read_bytes()
    assert f"there is no {paths.best}, but epoch 2 has the best" in capsys.readouterr().out


def test_resume_warns_when_no_file_keeps_the_best_epochs_weights(paths):
    latest = saved(paths.latest, 3, [20.0, 22.0, 21.0])
    before = saved(paths.best, 1, [20.0])
    with pytest.warns(UserWarning, match=re.escape(
            f"{paths.best} holds epoch 1, but epoch 2 has the best validation PSNR (22.00 dB) in {latest}'s "
            f"history, and no file keeps that epoch's weights; {paths.best} stays behind until an epoch "
            f"beats 22.00 dB")):
        train.check_best_checkpoint(paths, latest, train.checkpoints.load_file(latest))
    assert load(paths.best)["epoch"] == 1 and paths.best.read_bytes() == before.read_bytes()


def test_resume_replaces_a_best_checkpoint_of_the_resumed_epoch_that_is_not_the_best(paths, capsys):
    latest = saved(paths.latest, 3, [20.0, 22.0, 21.0])
    saved(paths.best, 3, [20.0, 22.0, 21.0])
    snapshot = saved(paths.snapshot(2), 2, [20.0, 22.0])
    train.check_best_checkpoint(paths, latest, train.checkpoints.load_file(latest))
    assert paths.best.read_bytes() == snapshot.read_bytes()
    assert f"note: {paths.best} holds epoch 3, but epoch 2 has the best" in capsys.readouterr().out


# ----------------------------------------------------------------------------- flags a resume may not change
@pytest.mark.parametrize("flags, said", [
    (["--beta1", "0.8"], "trained with --beta1 0.9, not --beta1 0.8; the optimiser state it holds keeps its own"),
    (["--beta2", "0.999"], "trained with --beta2 0.99, not --beta2 0.999; the optimiser state"),
    (["--gate-lr-mult", "5"], "trained with --gate-lr-mult 10.0, not --gate-lr-mult 5.0; the optimiser state"),
    (["--dataset", "other"], "trained with --dataset demo, not --dataset other; its earlier epochs trained so"),
    (["--loss", "1*L1+0.1*Lap"], "trained with --loss 1*L1, not --loss 1*L1+0.1*Lap; its earlier epochs"),
    (["--crop", "16"], "trained with --crop 32, not --crop 16; its earlier epochs"),
    (["--batch-size", "1"], "trained with --batch-size 2, not --batch-size 1; its earlier epochs"),
    (["--random-seed", "7"], "trained with --random-seed 12345, not --random-seed 7; its earlier epochs"),
])
def test_a_resume_that_changes_what_the_run_is_or_its_optimiser_is_refused(flags, said, demo_root, one_epoch,
                                                                            capsys):
    latest = one_epoch / f"{WEIGHTS}.pth"
    before = latest.read_bytes()
    assert run_main(demo_root, one_epoch, "--epochs", "3", *SHORT, "--start-epoch", "1", *flags) == 1
    err = capsys.readouterr().err
    assert f"error: --start_epoch 1: {latest} was {said}" in err
    assert "resume with the same flag" in err and latest.read_bytes() == before


def test_a_resume_whose_one_cycle_schedule_would_span_other_steps_is_refused(demo_root, tmp_path, capsys):
    """The one-cycle rate is a function of the step out of --epochs x steps per epoch: a resume to more
    epochs would continue another curve than the one its rates so far came from."""
    flags = ["--scheduler", "onecycle", *SHORT]
    assert run_main(demo_root, tmp_path, "--epochs", "1", *flags) == 0
    latest = tmp_path / f"{WEIGHTS}.pth"
    before = latest.read_bytes()
    assert run_main(demo_root, tmp_path, "--epochs", "2", "--start-epoch", "1", *flags) == 1
    assert f"error: {latest}: its one-cycle schedule spans 2 steps, this run 4; resume with the same --epochs" in \
        capsys.readouterr().err
    assert latest.read_bytes() == before


def test_a_resume_with_another_number_of_processes_is_refused(demo_root, one_epoch, tmp_path, capsys):
    """A run of 2 processes (one RNG state each) resumed by one would train on with half its batch."""
    out = tmp_path / "run"
    status, unchanged = resume_from(demo_root, one_epoch, out, lambda c: c.update(rng=c["rng"] * 2))
    assert status == 1 and unchanged
    assert (f"error: --start_epoch 1: {out / WEIGHTS}.pth was trained by 2 process(es) of --batch-size 2, this "
            f"run has 1; resume it with 2 (torchrun --nproc_per_node=2") in capsys.readouterr().err
    assert load(out / f"{WEIGHTS}.pth")["epoch"] == 1


def test_a_resume_of_a_one_process_run_by_two_processes_is_refused(tmp_path):
    """The other way round too: two processes would each take a whole batch, doubling it."""
    args = SimpleNamespace(start_epoch=1, batch_size=2)
    with pytest.raises(train.ResumeError, match=r"trained by 1 process\(es\) of --batch-size 2, this run has 2"):
        train.refuse_other_process_count(tmp_path / "run.pth", args, {"rng": [train.rng_state()]}, 2)
    train.refuse_other_process_count(tmp_path / "run.pth", args, {"rng": [train.rng_state()] * 2}, 2)


def test_a_checkpoint_older_than_a_flag_is_taken_as_trained_with_its_earlier_value(tmp_path):
    """The first checkpoints recorded no --gate-lr-mult, --beta1 or --decay-all: their gates trained at the
    base rate, with beta1 0.9 and no decay on the 1-D parameters."""
    args = SimpleNamespace(start_epoch=1, scheduler="cosine", weight_decay=None, decay_all=False, beta1=0.9,
                           beta2=0.99, gate_lr_mult=1.0)
    older = {"scheduler": "cosine", "weight_decay": None, "beta2": 0.99}
    train.refuse_changed_flags(tmp_path / "run.pth", args, older, train.RESUMED_FROM_THE_CHECKPOINT, "why")
    for key, value, said in (("gate_lr_mult", 10.0, "--gate-lr-mult 1.0, not --gate-lr-mult 10.0"),
                             ("decay_all", True, "--no-decay-all, not --decay-all")):
        with pytest.raises(train.ResumeError, match=rf"run.pth was trained with {said}; why$"):
            train.refuse_changed_flags(tmp_path / "run.pth", SimpleNamespace(**{**vars(args), key: value}), older,
                                       train.RESUMED_FROM_THE_CHECKPOINT, "why")


def test_each_resumed_process_restores_its_own_rng_state(tmp_path):
    """A checkpoint keeps one RNG state per process; process 1 goes on from its own, not process 0's."""
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(train.rng_state())
    network = registry.build_model(registry.default_config("asvfi", width=0.125))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    checkpoint = {"model": "asvfi", "state_dict": network.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": None, "rng": states, "history": [], "best_psnr": 0.0}
    state = SimpleNamespace(network=network, optimizer=optimizer, scheduler=None, scaler=None)
    train.restore(tmp_path / "run.pth", checkpoint, state, runtime.Processes(rank=1, world=2))
    drawn = torch.rand(3)
    torch.manual_seed(2)
    assert torch.equal(drawn, torch.rand(3))


def test_a_resume_from_moved_data_says_where_it_was(demo_root, one_epoch, tmp_path, capsys):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("demo", "demo_split.csv"):
        (moved / name).symlink_to(demo_root / name)
    out = tmp_path / "run"  # a copy of the checkpoint: the module's run stays at epoch 1
    (out / "weights/asvfi").mkdir(parents=True)
    (out / f"{WEIGHTS}.pth").write_bytes((one_epoch / f"{WEIGHTS}.pth").read_bytes())
    assert run_main(moved, out, "--epochs", "2", *SHORT, "--start-epoch", "1") == 0
    assert (f"note: {out / WEIGHTS}.pth was trained on --data-root {demo_root}; it now reads demo from "
            f"--data-root {moved}") in capsys.readouterr().out
    assert load(out / f"{WEIGHTS}.pth")["args"]["data_root"] == str(moved)


# ----------------------------------------------------------------------------- stops and reruns
def interrupted_at_step(monkeypatch, step):
    """Ctrl-C at the `step`-th optimisation step of the process (counting over epochs)."""
    real, calls = train.optimisation_step, []

    def step_or_interrupt(*args):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(train, "optimisation_step", step_or_interrupt)


def exit_status_of_ctrl_c(*run_main_arguments):
    """main.py's exit status when Ctrl-C stops it (a KeyboardInterrupt escaping fails the test
    instead of ending the test session)."""
    try:
        run_main(*run_main_arguments)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended main.py with a KeyboardInterrupt")
    except SystemExit as stopped:
        return stopped.code
    pytest.fail("main.py returned after Ctrl-C")


def test_ctrl_c_ends_with_one_line_naming_the_epoch_to_resume(demo_root, tmp_path, monkeypatch, capsys):
    interrupted_at_step(monkeypatch, 3)  # the first step of epoch 2
    assert exit_status_of_ctrl_c(demo_root, tmp_path, "--epochs", "3", *SHORT) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"stopped (Ctrl-C): last checkpoint {tmp_path / WEIGHTS}.pth holds epoch 1; "
                                    f"resume with --start-epoch 1")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_an_overwrite_stopped_before_its_first_epoch_leaves_nothing_of_the_earlier_run(demo_root, tmp_path,
                                                                                       monkeypatch, capsys):
    """--overwrite removes the run's outputs first: no earlier checkpoint stands beside the new run's files."""
    assert run_main(demo_root, tmp_path, "--epochs", "1", *SHORT) == 0
    interrupted_at_step(monkeypatch, 1)
    assert exit_status_of_ctrl_c(demo_root, tmp_path, "--epochs", "1", *SHORT, "--overwrite") == 128 + signal.SIGINT
    assert stopped_line(capsys) == (f"stopped (Ctrl-C): no epoch was finished (there is no checkpoint "
                                    f"{tmp_path / WEIGHTS}.pth); run the command again to start it")
    assert not (tmp_path / f"{WEIGHTS}.pth").exists() and not (tmp_path / f"{WEIGHTS}_best.pth").exists()
    monkeypatch.undo()
    assert run_main(demo_root, tmp_path, "--epochs", "1", *SHORT) == 0


def test_a_rerun_of_an_existing_run_names_the_epoch_to_resume(demo_root, one_epoch, capsys):
    assert run_main(demo_root, one_epoch, "--epochs", "3", *SHORT) == 1
    assert (f"last checkpoint {one_epoch / WEIGHTS}.pth holds epoch 1; resume with --start-epoch 1 (or choose "
            f"another --tag or --out-dir, or pass --overwrite") in capsys.readouterr().err
    assert run_main(demo_root, one_epoch, "--epochs", "1", *SHORT) == 1
    assert (f"holds epoch 1, all of --epochs 1; train it further with --start-epoch 1 and a larger --epochs"
            in capsys.readouterr().err)


# ----------------------------------------------------------------------------- the run's lock, killed writes
def test_a_run_being_trained_by_another_process_is_refused(demo_root, tmp_path, capsys):
    lock = publish.lock_path(tmp_path / f"{WEIGHTS}.pth")
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file description: conflicts as another process would
        assert run_main(demo_root, tmp_path, "--epochs", "1", *SHORT) == 1
    assert f"run {RUN} is being trained by another process (it holds {lock})" in capsys.readouterr().err
    assert not (tmp_path / f"{WEIGHTS}.pth").exists()


def test_the_run_holds_its_lock_while_it_trains(demo_root, tmp_path, monkeypatch):
    """A second process starting the same run mid-epoch is refused, not only one starting before it."""
    real, refused = train.optimisation_step, []

    def step_while_another_tries(*args):
        try:
            with publish.exclusive(tmp_path / f"{WEIGHTS}.pth", wait=False):
                refused.append(False)
        except publish.Busy:
            refused.append(True)
        return real(*args)
    monkeypatch.setattr(train, "optimisation_step", step_while_another_tries)
    assert run_main(demo_root, tmp_path, "--epochs", "1", *SHORT) == 0
    assert refused == [True, True]


def test_temp_files_of_killed_checkpoint_writes_are_removed_and_the_lock_file_goes(demo_root, tmp_path, capsys):
    folder = tmp_path / "weights/asvfi"
    folder.mkdir(parents=True)
    ours = [f".{RUN}.pth.k1x_9abc.tmp", f".{RUN}_best.pth.0a1b2c3d.tmp", f".{RUN}_epoch4.pth.zz12ab34.tmp"]
    others = [f".{RUN}_noaudio.pth.q1w2e3r4.tmp", ".adamw_1e-3.pth.a1b2c3d4.tmp", f".{RUN}.pth.keep"]
    for name in ours + others:
        (folder / name).write_bytes(b"half a checkpoint")
    assert run_main(demo_root, tmp_path, "--epochs", "1", *SHORT) == 0
    assert "removed 3 temporary file(s) left by an interrupted checkpoint write: " in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == sorted([*others, f"{RUN}.pth", f"{RUN}_best.pth"])


def resume_from(demo_root, one_epoch, out, change):
    """Resume a copy of the 1-epoch run's checkpoint after `change(checkpoint)`; the exit status and
    whether the checkpoint file was left as it was."""
    (out / "weights/asvfi").mkdir(parents=True)
    checkpoint = load(one_epoch / f"{WEIGHTS}.pth")
    change(checkpoint)
    checkpoints.save(checkpoint, out / f"{WEIGHTS}.pth")
    before = (out / f"{WEIGHTS}.pth").read_bytes()
    status = run_main(demo_root, out, "--epochs", "2", *SHORT, "--start-epoch", "1")
    return status, (out / f"{WEIGHTS}.pth").read_bytes() == before


@pytest.mark.parametrize("change, said", [
    (lambda c: c["state_dict"].pop("outconv.1.weight"), "weights do not fit the model: 1 missing keys"),
    (lambda c: c["state_dict"].update(extra=torch.zeros(1)), "weights do not fit the model: 1 unexpected keys"),
    (lambda c: c["state_dict"].update({"outconv.1.bias": torch.zeros(2)}), "1 shape mismatches"),
    (lambda c: c["state_dict"]["outconv.1.bias"].fill_(float("nan")), "hold NaN or infinite values"),
])
def test_a_resume_from_weights_that_do_not_fit_is_refused_naming_the_file(change, said, demo_root, one_epoch,
                                                                           tmp_path, capsys):
    status, unchanged = resume_from(demo_root, one_epoch, tmp_path / "run", change)
    err = capsys.readouterr().err
    assert status == 1 and unchanged and "Traceback" not in err
    assert f"error: {tmp_path / 'run' / WEIGHTS}.pth: " in err and said in err


@pytest.mark.parametrize("entry", ["optimizer", "rng", "model"])
def test_a_resume_from_a_file_without_the_training_state_is_refused_naming_what_it_lacks(entry, demo_root,
                                                                                        one_epoch, tmp_path, capsys):
    status, unchanged = resume_from(demo_root, one_epoch, tmp_path / "run", lambda c: c.pop(entry))
    err = capsys.readouterr().err
    assert status == 1 and unchanged and "Traceback" not in err
    assert (f"error: --start_epoch 1: {tmp_path / 'run' / WEIGHTS}.pth is not a training checkpoint of main.py: "
            f"it has no {entry}") in err


def test_a_resume_from_a_folder_where_the_checkpoint_should_be_names_it(demo_root, tmp_path, capsys):
    (tmp_path / f"{WEIGHTS}.pth").mkdir(parents=True)
    assert run_main(demo_root, tmp_path, "--epochs", "2", *SHORT, "--start-epoch", "1") == 1
    assert f"{tmp_path / WEIGHTS}.pth: a folder, not a checkpoint file" in capsys.readouterr().err


def test_an_epoch_writes_the_best_file_when_best_and_a_snapshot_every_save_every_epochs(paths, monkeypatch):
    monkeypatch.setattr(training_log, "plot_curves", lambda path, history, run: None)
    run = SimpleNamespace(args=SimpleNamespace(save_every=2), paths=paths)
    history = []
    for epoch in (1, 2, 3, 4, 5):
        history.append({"epoch": epoch, "train_loss": 0.5, "val_loss": 0.5, "val_psnr": 20.0 + (epoch == 3)})
        train.save_epoch({"epoch": epoch, "history": list(history)}, run, is_best=epoch in (1, 3))
        assert load(paths.latest)["epoch"] == epoch
    assert [load(paths.snapshot(epoch))["epoch"] for epoch in (2, 4)] == [2, 4]
    assert not any(paths.snapshot(epoch).exists() for epoch in (1, 3, 5))
    assert load(paths.best)["epoch"] == 3 and len(paths.log.read_text().splitlines()) == 6
