"""Training through main.py on the tiny demo set: checkpoints, resume, best model, curves, NaN
stop, PerVFI through the same loop, and a 2-process gloo DDP run (CPU, no network)."""
import csv
import math
import random
import re
import shutil
import socket
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import torch

import launch
import losses
import main
import metrics
import optimisation
import registry
import runtime
import train
import training_log

RUN = "adamw_6e-4"
TINY = ["--dataset", "demo", "--device", "cpu", "--width", "0.125", "--crop", "32", "--batch_size", "2",
        "--windows-per-video", "2", "--val-windows", "4", "--workers", "0"]
PERVFI = ["--model", "pervfi", "--loss", "1*NLL+0.1*PerVFILap"]  # the preset's VGG term needs downloaded weights
PERVFI_RUN = "adamw_5e-4"  # the preset's learning rate


def run_main(demo_root, out_dir, *flags):
    return main.main([*TINY, "--data-root", str(demo_root), "--out-dir", str(out_dir), *flags])


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def without_timing(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def straight_run(demo_root, tmp_path_factory):
    """2 epochs in one go, keeping a snapshot every epoch."""
    out = tmp_path_factory.mktemp("straight")
    assert run_main(demo_root, out, "--epochs", "2", "--save-every", "1") == 0
    return out


@pytest.fixture
def poison(monkeypatch):
    """Criteria whose loss turns NaN from call number `poison.first_bad_call` on (training and
    validation calls both count); off until a test sets it. `poison.training_losses` keeps the loss
    of each training call (those with gradients on)."""
    build = losses.build_criterion
    state = SimpleNamespace(first_bad_call=math.inf, calls=0, training_losses=[])

    def poisoned(*args, **kwargs):
        criterion = build(*args, **kwargs)

        def call(out, target):
            state.calls += 1
            total, terms = criterion(out, target)
            if torch.is_grad_enabled():
                state.training_losses.append(float(total.detach()))
            return (total * math.nan, terms) if state.calls >= state.first_bad_call else (total, terms)
        call.names = criterion.names
        return call
    monkeypatch.setattr(losses, "build_criterion", poisoned)
    return state


# ----------------------------------------------------------------------------- CLI
def test_documented_defaults_and_presets():
    args = main.parse_args(["--dataset", "demo"])
    assert (args.start_epoch, args.lr, args.optimizer, args.loss, args.beta1, args.beta2, args.random_seed,
            args.batch_size, args.model, args.scale, args.scheduler) == \
        (0, "6e-4", "adamw", "1*L1", 0.9, 0.99, 12345, 1, "asvfi", 2, "cosine")
    pervfi = main.parse_args(["--dataset", "demo", "--model", "pervfi"])
    assert (pervfi.optimizer, pervfi.scheduler, pervfi.grad_clip, pervfi.loss, pervfi.beta2, pervfi.lr,
            pervfi.weight_decay) == ("adamw", "onecycle", 0.1, "1*NLL+0.1*PerVFILap+0.2*VGG", 0.999, "5e-4", 0.01)
    assert args.weight_decay is None  # ASVFI: the optimiser's default
    assert (args.epochs, args.decay_all, pervfi.epochs, pervfi.decay_all) == (200, False, 96, True)
    given = main.parse_args(["--dataset", "demo", "--model", "pervfi", "--loss", "1*NLL", "--optimizer", "adam"])
    assert (given.loss, given.optimizer, given.scheduler) == ("1*NLL", "adam", "onecycle")
    assert main.parse_args(["--dataset", "demo", "--lr", "1e-3"]).lr == "1e-3"


@pytest.mark.parametrize("flags, message", [
    (["--model", "pervfi", "--depth", "unet_34"], "--depth configures ASVFI and does not apply to --model pervfi"),
    (["--model", "pervfi", "--depth", "unet_34", "--audio", "none"],
     "--depth, --audio configure ASVFI and do not apply to --model pervfi"),
    (["--lr", "fast"], "not a number"),
    (["--start_epoch", "5", "--epochs", "5"], r"--start_epoch 5 must be in \[0, --epochs 5\)"),
    (["--loss", "1*L1+0.1*Lapp"], "--loss: .*unknown term 'Lapp'"),
    (["--loss", "L1 plus Lap"], "--loss: .*cannot parse"),
    (["--loss", "1*NLL"], r"--loss 1\*NLL: NLL is a likelihood, and --model asvfi has none \(only pervfi does\)"),
    (["--overwrite", "--start-epoch", "1"], "--overwrite .* does not go with --start-epoch"),
])
def test_contradictory_flags_are_rejected(flags, message, capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--dataset", "demo", *flags])
    assert re.search(message, capsys.readouterr().err)


def test_every_run_keeps_its_own_best_checkpoint(tmp_path):
    plain = train.RunPaths(tmp_path, "asvfi", RUN)
    tagged = train.RunPaths(tmp_path, "asvfi", f"{RUN}_noaudio", "noaudio")
    other = train.RunPaths(tmp_path, "asvfi", "adamw_1e-3")
    assert plain.best == tmp_path / f"weights/asvfi/{RUN}_best.pth"
    assert tagged.best == tmp_path / "weights/asvfi/adamw_6e-4_noaudio_best.pth"
    assert other.best == tmp_path / "weights/asvfi/adamw_1e-3_best.pth"
    assert tagged.latest == tmp_path / "weights/asvfi/adamw_6e-4_noaudio.pth"
    assert tagged.figure == tmp_path / "figs/asvfi/adamw_6e-4_noaudio.png"


def test_runs_of_two_models_with_one_name_keep_their_own_curves_and_log(tmp_path):
    """An ASVFI and a PerVFI run named alike must not block or --overwrite each other's files."""
    asvfi, pervfi = train.RunPaths(tmp_path, "asvfi", RUN), train.RunPaths(tmp_path, "pervfi", RUN)
    assert asvfi.log == tmp_path / f"figs/asvfi/{RUN}.csv" and pervfi.log == tmp_path / f"figs/pervfi/{RUN}.csv"
    assert asvfi.figure != pervfi.figure


# ----------------------------------------------------------------------------- checkpoints, best, curves
def test_checkpoint_contents(straight_run):
    checkpoint = load(straight_run / f"weights/asvfi/{RUN}.pth")
    assert set(checkpoint) == {"model", "config", "state_dict", "optimizer", "scheduler", "scaler", "epoch",
                               "best_psnr", "args", "history", "rng"}
    assert checkpoint["model"] == "asvfi" and checkpoint["epoch"] == 2
    assert checkpoint["config"] == registry.default_config("asvfi", width=0.125)
    assert not any(k.startswith("module.") for k in checkpoint["state_dict"])
    registry.build_model(checkpoint["config"]).load_state_dict(checkpoint["state_dict"])  # strict
    assert checkpoint["args"]["lr"] == "6e-4" and checkpoint["args"]["crop"] == 32
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in checkpoint["args"].values())
    assert checkpoint["scheduler"]["last_epoch"] == 2
    assert len(checkpoint["optimizer"]["state"]) == len(checkpoint["state_dict"])  # every parameter trained
    assert [r["epoch"] for r in checkpoint["history"]] == [1, 2]
    assert [r["lr"] for r in checkpoint["history"]] == pytest.approx([6e-4, 3e-4])  # cosine to 0 at --epochs
    (rng,) = checkpoint["rng"]
    assert rng["torch"].dtype == torch.uint8 and rng["numpy"]["keys"].shape == (624,)
    for epoch in (1, 2):
        snapshot = load(straight_run / f"weights/asvfi/{RUN}_epoch{epoch}.pth")
        assert snapshot["epoch"] == epoch
    assert_same_weights(load(straight_run / f"weights/asvfi/{RUN}_epoch2.pth")["state_dict"],
                        checkpoint["state_dict"])


def test_best_checkpoint_is_the_best_validation_psnr(straight_run):
    history = load(straight_run / f"weights/asvfi/{RUN}.pth")["history"]
    best = load(straight_run / f"weights/asvfi/{RUN}_best.pth")
    best_record = max(history, key=lambda r: r["val_psnr"])
    assert best["epoch"] == best_record["epoch"]
    assert best["best_psnr"] == best_record["val_psnr"] > 10
    snapshot = load(straight_run / f"weights/asvfi/{RUN}_epoch{best_record['epoch']}.pth")
    assert_same_weights(best["state_dict"], snapshot["state_dict"])


def test_a_tied_validation_psnr_keeps_the_earlier_epoch_as_best(monkeypatch):
    """write_epoch's strict > agrees with best_epoch() (the first of the highest): a later tie must not replace the best file."""
    saved = []
    monkeypatch.setattr(train, "checkpoint_dict", lambda state, run, epoch, rng: {"epoch": epoch})
    monkeypatch.setattr(train, "save_epoch", lambda checkpoint, run, is_best: saved.append((checkpoint["epoch"], is_best)))
    monkeypatch.setattr(train, "summary_line", lambda record, run, is_best: "")
    state = train.TrainState(network=None, optimizer=None)
    run = SimpleNamespace(procs=runtime.Processes())
    for epoch, psnr in enumerate([20.0, 25.0, 25.0, 24.0], 1):
        train.write_epoch(state, run, {"epoch": epoch, "val_psnr": psnr})
    assert saved == [(1, True), (2, True), (3, False), (4, False)]
    assert state.best_psnr == 25.0 and train.best_epoch(state.history) == 2


def test_curves_and_log(straight_run):
    history = load(straight_run / f"weights/asvfi/{RUN}.pth")["history"]
    with open(straight_run / f"figs/asvfi/{RUN}.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, record in zip(rows, history):
        for key in ("train_loss", "val_loss", "val_psnr", "val_ssim", "train_L1", "lr"):
            assert float(row[key]) == pytest.approx(record[key], rel=1e-12)
        assert 0 < record["val_ssim"] < 1 and record["train_loss"] == pytest.approx(record["train_L1"])
    image = matplotlib.image.imread(straight_run / f"figs/asvfi/{RUN}.png")
    assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0


def test_the_log_holds_every_records_columns_in_the_order_first_seen(tmp_path):
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.75, "val_psnr": 20.0, "lr": 0.001},
               {"epoch": 2, "train_loss": 0.25, "val_loss": 0.5, "val_psnr": 21.5, "lr": 0.0005, "val_NLL": -3.0}]
    training_log.write_log(tmp_path / "run.csv", history)
    assert (tmp_path / "run.csv").read_text() == ("epoch,train_loss,val_loss,val_psnr,lr,val_NLL\n"
                                                  "1,0.5,0.75,20.0,0.001,\n2,0.25,0.5,21.5,0.0005,-3.0\n")


def kept_figures(monkeypatch):
    """The list every matplotlib Figure training_log makes from now on is appended to."""
    figures = []

    class KeptFigure(training_log.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(training_log, "Figure", KeptFigure)
    return figures


def test_the_curves_plot_each_loss_and_the_psnr_against_the_epoch(tmp_path, monkeypatch):
    figures = kept_figures(monkeypatch)
    history = [{"epoch": 3, "train_loss": 0.5, "val_loss": 0.75, "val_psnr": 20.0},
               {"epoch": 4, "train_loss": 0.25, "val_loss": 0.5, "val_psnr": 21.5}]
    training_log.plot_curves(tmp_path / "run.png", history, RUN)
    (loss_axis, psnr_axis), = [figure.axes for figure in figures]
    assert [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in loss_axis.lines] == \
        [("train", [3, 4], [0.5, 0.25]), ("val", [3, 4], [0.75, 0.5])]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in psnr_axis.lines] == [([3, 4], [20.0, 21.5])]
    assert psnr_axis.get_title() == f"{RUN}: validation PSNR"
    assert matplotlib.image.imread(tmp_path / "run.png").std() > 0


def test_the_log_ends_its_lines_with_a_bare_newline_on_every_platform(tmp_path):
    training_log.write_log(tmp_path / "run.csv", [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
    assert (tmp_path / "run.csv").read_bytes() == b"epoch,train_loss\n1,0.5\n2,0.25\n"


def test_the_curves_name_their_axes_and_tick_whole_epochs_only(tmp_path, monkeypatch):
    figures = kept_figures(monkeypatch)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.5 / e, "val_psnr": 20.0 + e} for e in (1, 2, 3)]
    training_log.plot_curves(tmp_path / "run.png", history, RUN)
    (loss_axis, psnr_axis), = [figure.axes for figure in figures]
    assert (loss_axis.get_title(), loss_axis.get_xlabel(), loss_axis.get_ylabel()) == (f"{RUN}: loss", "epoch", "loss")
    assert (psnr_axis.get_xlabel(), psnr_axis.get_ylabel()) == ("epoch", "PSNR (dB)")
    for axis in (loss_axis, psnr_axis):
        ticks = [t for t in axis.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


# ----------------------------------------------------------------------------- resume
def test_one_epoch_plus_resume_equals_two_epochs(demo_root, straight_run, tmp_path):
    assert run_main(demo_root, tmp_path, "--epochs", "1") == 0
    assert run_main(demo_root, tmp_path, "--epochs", "2", "--start_epoch", "1") == 0
    straight, resumed = load(straight_run / f"weights/asvfi/{RUN}.pth"), load(tmp_path / f"weights/asvfi/{RUN}.pth")
    assert_same_weights(straight["state_dict"], resumed["state_dict"])
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    assert straight["optimizer"]["param_groups"][0]["lr"] == resumed["optimizer"]["param_groups"][0]["lr"]


def test_a_resume_from_an_earlier_epochs_snapshot_retrains_to_the_same_weights(demo_root, straight_run, tmp_path):
    """--start_epoch 1 after 2 epochs: the latest checkpoint holds epoch 2, so the run goes on from
    the epoch-1 snapshot --save-every kept, and ends where it ended."""
    shutil.copytree(straight_run, tmp_path, dirs_exist_ok=True)
    straight = load(tmp_path / f"weights/asvfi/{RUN}.pth")
    assert run_main(demo_root, tmp_path, "--epochs", "2", "--start_epoch", "1", "--save-every", "1") == 0
    resumed = load(tmp_path / f"weights/asvfi/{RUN}.pth")
    assert_same_weights(straight["state_dict"], resumed["state_dict"])
    assert without_timing(straight["history"]) == without_timing(resumed["history"])


def test_resume_errors_name_the_file(demo_root, straight_run, tmp_path, capsys):
    assert run_main(demo_root, tmp_path, "--epochs", "3", "--start_epoch", "1") == 1
    assert f"no checkpoint {tmp_path / 'weights/asvfi' / RUN}.pth" in capsys.readouterr().err
    assert run_main(demo_root, straight_run, "--epochs", "3", "--start_epoch", "2", "--width", "0.25") == 1
    assert "checkpoint config does not match (width: checkpoint 0.125 vs requested 0.25)" in capsys.readouterr().err
    for flags, said in ((["--decay-all"], "trained with --no-decay-all, not --decay-all"),
                        (["--weight-decay", "0.05"], "trained with --weight-decay None, not --weight-decay 0.05")):
        assert run_main(demo_root, straight_run, "--epochs", "3", "--start_epoch", "2", *flags) == 1
        assert said in capsys.readouterr().err  # the optimiser state would keep the old decay
    (straight_run / f"weights/asvfi/{RUN}_epoch1.pth").rename(tmp_path / "moved.pth")
    try:
        assert run_main(demo_root, straight_run, "--epochs", "3", "--start_epoch", "1") == 1
        assert "holds epoch 2 and there is no snapshot" in capsys.readouterr().err
        assert run_main(demo_root, straight_run, "--epochs", "2", "--start_epoch", "1") == 1  # a finished run
        assert "has finished its 2 epochs: train it further with --start_epoch 2 and a larger --epochs" in \
            capsys.readouterr().err
    finally:
        (tmp_path / "moved.pth").rename(straight_run / f"weights/asvfi/{RUN}_epoch1.pth")


def test_a_checkpoint_with_other_optimiser_groups_is_refused_naming_the_file(demo_root, tmp_path, capsys):
    assert run_main(demo_root, tmp_path, "--epochs", "1", "--limit-steps", "1", "--val-windows", "2") == 0
    path = tmp_path / f"weights/asvfi/{RUN}.pth"
    checkpoint = load(path)
    groups = checkpoint["optimizer"]["param_groups"]
    merged = {**groups[0], "params": [i for g in groups for i in g["params"]]}
    checkpoint["optimizer"]["param_groups"] = [merged]  # as written before the no-decay groups existed
    torch.save(checkpoint, path)
    assert run_main(demo_root, tmp_path, "--epochs", "2", "--start_epoch", "1", "--limit-steps", "1",
                    "--val-windows", "2") == 1
    err = capsys.readouterr().err
    assert f"{path}: its optimiser state has 1 parameter groups, this run {len(groups)}" in err


# ----------------------------------------------------------------------------- NaN
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(demo_root, tmp_path, poison, capsys):
    poison.first_bad_call = 5  # epoch 1 = 2 training steps + 2 validation batches
    assert run_main(demo_root, tmp_path, "--epochs", "3", "--limit-steps", "2", "--save-every", "1") == 1
    err = capsys.readouterr().err
    latest = tmp_path / f"weights/asvfi/{RUN}.pth"
    assert "loss is nan at epoch 2, step 1" in err and f"last good checkpoint {latest} is left as it was" in err
    checkpoint = load(latest)
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]) == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (tmp_path / f"weights/asvfi/{RUN}_epoch2.pth").exists()
    assert len((tmp_path / f"figs/asvfi/{RUN}.csv").read_text().splitlines()) == 2


def test_a_nan_validation_loss_stops_before_the_epoch_is_written(demo_root, tmp_path, poison, capsys):
    poison.first_bad_call = 7  # epoch 2's first validation batch
    assert run_main(demo_root, tmp_path, "--epochs", "3", "--limit-steps", "2") == 1
    latest = tmp_path / f"weights/asvfi/{RUN}.pth"
    err = capsys.readouterr().err
    assert "loss is nan at validation after epoch 2" in err and f"last good checkpoint {latest} is left" in err
    assert load(latest)["epoch"] == 1


def test_the_logged_training_loss_is_the_mean_of_the_epochs_steps(demo_root, tmp_path, poison):
    assert run_main(demo_root, tmp_path, "--epochs", "1", "--limit-steps", "3") == 0
    assert len(poison.training_losses) == 3
    logged = load(tmp_path / f"weights/asvfi/{RUN}.pth")["history"][0]
    assert logged["train_loss"] == pytest.approx(sum(poison.training_losses) / 3, rel=1e-6)
    assert logged["train_L1"] == pytest.approx(logged["train_loss"], rel=1e-6)  # the only term, weight 1


def test_a_run_with_only_a_log_is_refused_with_the_overwrite_advice_once(demo_root, tmp_path, capsys):
    log = tmp_path / f"figs/asvfi/{RUN}.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,train_loss\n")
    assert run_main(demo_root, tmp_path, "--epochs", "1", "--limit-steps", "1") == 1
    err = capsys.readouterr().err
    assert "no epoch was finished" in err and err.count("--overwrite") == 1


def test_a_finished_run_is_never_replaced_unasked(demo_root, tmp_path, capsys):
    flags = ["--epochs", "1", "--limit-steps", "1", "--val-windows", "2"]
    assert run_main(demo_root, tmp_path, *flags) == 0
    latest, best = tmp_path / f"weights/asvfi/{RUN}.pth", tmp_path / f"weights/asvfi/{RUN}_best.pth"
    before = latest.read_bytes(), best.read_bytes()
    assert run_main(demo_root, tmp_path, *flags, "--random-seed", "7") == 1
    assert "already has" in capsys.readouterr().err and (latest.read_bytes(), best.read_bytes()) == before
    assert run_main(demo_root, tmp_path, *flags, "--random-seed", "7", "--overwrite") == 0
    assert latest.read_bytes() != before[0]
    assert run_main(demo_root, tmp_path, *flags, "--lr", "1e-3") == 0  # another run: its own best
    assert best.read_bytes() != b"" and (tmp_path / "weights/asvfi/adamw_1e-3_best.pth").is_file()


def test_unwritable_out_dir_and_unknown_device_fail_at_start(demo_root, tmp_path, capsys):
    blocked = tmp_path / "read_only"
    blocked.mkdir()
    (blocked / "weights").write_text("a file where the folder should be")
    assert run_main(demo_root, blocked, "--epochs", "1") == 1
    assert "cannot write checkpoints" in capsys.readouterr().err
    assert main.main([*TINY, "--data-root", str(demo_root), "--out-dir", str(tmp_path), "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert "--device tpu: not a device name" in err and "Traceback" not in err


def test_exploding_learning_rate_stops_before_any_checkpoint(demo_root, tmp_path, capsys):
    assert run_main(demo_root, tmp_path, "--epochs", "1", "--lr", "1e30") == 1
    assert "no checkpoint had been written yet" in capsys.readouterr().err
    assert not (tmp_path / "weights/asvfi/adamw_1e30.pth").exists()


def test_amp_is_a_noted_no_op_on_cpu(demo_root, tmp_path, capsys):
    flags = ["--epochs", "1", "--limit-steps", "1", "--val-windows", "2"]
    assert run_main(demo_root, tmp_path / "amp", *flags, "--amp") == 0
    assert "--amp bf16 applies to CUDA only; training in float32 on cpu" in capsys.readouterr().out
    assert run_main(demo_root, tmp_path / "fp32", *flags) == 0
    assert_same_weights(load(tmp_path / f"amp/weights/asvfi/{RUN}.pth")["state_dict"],
                        load(tmp_path / f"fp32/weights/asvfi/{RUN}.pth")["state_dict"])


# ----------------------------------------------------------------------------- PerVFI through the same loop
def test_pervfi_trains_and_resumes_after_an_interruption(demo_root, tmp_path, poison):
    """One-cycle schedule, grad clipping, NLL + Lap; the sampling RNG is part of the resumed state."""
    flags = [*PERVFI, "--epochs", "2", "--limit-steps", "2"]
    assert run_main(demo_root, tmp_path / "straight", *flags) == 0
    straight = load(tmp_path / f"straight/weights/pervfi/{PERVFI_RUN}.pth")
    nll = [r["val_NLL"] for r in straight["history"]]
    assert nll[1] < nll[0] and all(-12 < v < 12 for v in nll)
    assert straight["scheduler"]["total_steps"] == 4 and straight["args"]["grad_clip"] == 0.1

    poison.calls, poison.first_bad_call = 0, 5  # the run dies in epoch 2, after epoch 1's checkpoint
    assert run_main(demo_root, tmp_path / "resumed", *flags) == 1
    assert load(tmp_path / f"resumed/weights/pervfi/{PERVFI_RUN}.pth")["epoch"] == 1
    poison.first_bad_call = math.inf
    assert run_main(demo_root, tmp_path / "resumed", *flags, "--start_epoch", "1") == 0
    resumed = load(tmp_path / f"resumed/weights/pervfi/{PERVFI_RUN}.pth")
    assert_same_weights(straight["state_dict"], resumed["state_dict"])
    assert without_timing(straight["history"]) == without_timing(resumed["history"])


def test_pervfi_validation_draws_the_same_samples_in_any_job(demo_root, tmp_path):
    """A val window's sample comes from (seed, its index): the logged figures (validation after
    training's draws), a fresh single process, another batch size and the two shares of a 2-process
    job agree, and validation leaves the RNG as it was."""
    flags = [*TINY, *PERVFI, "--data-root", str(demo_root), "--out-dir", str(tmp_path), "--epochs", "1",
             "--limit-steps", "1", "--batch_size", "1", "--val-windows", "3", "--val-crop", "64"]
    assert main.main(flags) == 0
    checkpoint = load(tmp_path / f"weights/pervfi/{PERVFI_RUN}.pth")
    args = main.parse_args(flags)
    network = train.build_network(args, checkpoint["config"], torch.device("cpu"))
    network.load_state_dict(checkpoint["state_dict"])
    val_set = train.validation_windows(args)
    criterion = losses.build_criterion(args.loss)

    def validate(procs, batch_size=1):
        run = train.Run(args, procs, train.run_paths(args), checkpoint["config"])
        loader = train.val_loader(val_set, SimpleNamespace(**{**vars(args), "batch_size": batch_size}), procs)
        return train.validate(network, criterion, loader, run)

    torch.rand(7)  # another RNG state than after training
    before = torch.get_rng_state()
    single = validate(runtime.Processes())
    assert torch.equal(torch.get_rng_state(), before)
    rank0, rank1 = (validate(runtime.Processes(rank=rank, world=2)) for rank in (0, 1))  # windows 0, 2 and 1
    batched = validate(runtime.Processes(), batch_size=3)
    for key in ("val_psnr", "val_ssim", "val_PerVFILap"):
        assert single[key] == pytest.approx(checkpoint["history"][0][key], rel=1e-6)
        assert single[key] == pytest.approx((2 * rank0[key] + rank1[key]) / 3, rel=1e-6)
        assert single[key] == pytest.approx(batched[key], rel=1e-4)  # float32 rounding differs by batch


def test_pervfi_trains_and_validates_on_noise_keyed_by_each_window(demo_root, tmp_path, monkeypatch):
    """Training draws PerVFI's dequantisation, mask and sample noise from (seed, epoch, window) and
    validation from (seed, window): not from an RNG shared by the batch (the same in every process)."""
    keys = []

    def recording(window_keys, device):
        keys.extend(window_keys)
        return noise_generators(window_keys, device)
    noise_generators = runtime.noise_generators
    monkeypatch.setattr(runtime, "noise_generators", recording)
    flags = [*TINY, *PERVFI, "--data-root", str(demo_root), "--out-dir", str(tmp_path), "--epochs", "2",
             "--limit-steps", "2", "--val-windows", "3", "--val-crop", "64", "--random_seed", "7"]
    assert main.main(flags) == 0
    training, validation = [k for k in keys if len(k) == 3], [k for k in keys if len(k) == 2]
    for epoch in (0, 1):  # a window drawn again in a later epoch gets new noise
        drawn = [k for k in training if k[:2] == (7, epoch)]
        assert len(drawn) == 4 and len({k[2] for k in drawn}) == 4
    assert len(training) == 8
    val_windows = train.validation_windows(main.parse_args(flags)).indices
    assert sorted(validation) == sorted(2 * [(7, window) for window in val_windows])  # the same every epoch


def test_a_pervfi_training_step_draws_its_noise_from_the_keys_alone():
    """The same windows and keys give the same loss whatever the global RNG's state; another epoch's
    keys give other noise."""
    network = registry.build_model(registry.default_config("pervfi", width=0.125)).train()
    network.set_flow_estimator("dis")
    generator = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.rand(2, 4, 3, 32, 32, generator=generator), "ts": torch.full((2, 1), 0.5)}
    target = torch.rand(2, 1, 3, 32, 32, generator=generator)

    def nll(keys, global_seed):
        torch.manual_seed(global_seed)
        return train.predict(network, batch, None, torch.device("cpu"), target=target, noise_keys=keys)["nll"]
    nll([(0, 0, 5), (0, 0, 6)], 0)  # ActNorm's data initialisation
    first = nll([(0, 0, 5), (0, 0, 6)], 1)
    assert torch.equal(nll([(0, 0, 5), (0, 0, 6)], 2), first)
    assert not torch.equal(nll([(0, 1, 5), (0, 1, 6)], 1), first)


def test_noise_generators_draw_from_their_keys_only():
    """Each window draws its own noise (not one shared by every window), the same one every time."""
    def draw(*key):
        return torch.rand(4, generator=runtime.noise_generators([key], torch.device("cpu"))[0])
    assert torch.equal(draw(0, 3), draw(0, 3))
    assert not torch.equal(draw(0, 3), draw(1, 3)) and not torch.equal(draw(0, 3), draw(0, 4))
    assert not torch.equal(draw(0, 3), draw(0, 1, 3))  # (seed, epoch, window) of training


def test_pick_device_takes_auto_refuses_other_kinds_and_maps_cuda_to_the_local_rank(monkeypatch):
    assert runtime.pick_device("auto") == runtime.pick_device(None) == runtime.pick_device("")
    assert runtime.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(runtime.ASVFIError, match="--device meta: ASVFI runs on cpu or cuda"):
        runtime.pick_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(runtime.ASVFIError, match="--device cuda: CUDA is not available"):
            runtime.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.pick_device("cuda") == torch.device("cuda", 1)
    assert runtime.pick_device("cuda:0") == torch.device("cuda", 0)  # an index given is kept


def test_autocast_is_on_only_for_cuda_with_amp():
    """--amp is for CUDA: on the CPU a matmul stays float32 even with bf16 asked for."""
    a = torch.ones(2, 2)
    for amp in ("bf16", None):
        with runtime.autocast(torch.device("cpu"), amp):
            assert (a @ a).dtype == torch.float32


def test_one_process_runs_the_main_only_work_and_shards_nothing_away():
    calls = []
    single, second = runtime.Processes(), runtime.Processes(rank=1, world=2)
    assert single.shard(list(range(5))) == [0, 1, 2, 3, 4] and second.shard(list(range(5))) == [1, 3]
    second.main_only(calls.append, "second")
    single.main_only(calls.append, "first")
    assert calls == ["first"] and single.gather("x") == ["x"] and single.sum([1.0, 2.5]) == [1.0, 2.5]

    def refuse():
        raise runtime.ASVFIError("no data")
    with pytest.raises(runtime.ASVFIError, match="no data"):
        single.main_only(refuse)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_processes_join_a_group_only_under_torchrun_and_leave_it_after_the_block(monkeypatch):
    with runtime.processes("cpu") as procs:
        assert procs == runtime.Processes(torch.device("cpu"), 0, 1, False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with runtime.processes("cpu", join_group=False) as procs:
        assert not procs.grouped and not torch.distributed.is_initialized()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with runtime.processes("cpu") as procs:
        assert procs.grouped and torch.distributed.is_initialized() and procs.sum([2.0]) == [2.0]
    assert not torch.distributed.is_initialized()


# ----------------------------------------------------------------------------- DDP
def two_process_main_flags(demo_root, tmp_path, script, *flags):
    """`script` (a list: the file and its first arguments) with main.py's flags under torchrun with 2
    CPU processes, writing under tmp_path/ddp."""
    return launch.two_process_torchrun([*script, *TINY, "--data-root", demo_root, "--out-dir", tmp_path / "ddp",
                                        *flags], tmp_path / "torchrun_logs")


def two_process_gloo_run(demo_root, tmp_path, *flags):
    """main.py's training under torchrun with 2 CPU processes; every rank's final weights."""
    done = two_process_main_flags(demo_root, tmp_path, ["tests/ddp_worker.py", str(tmp_path / "ranks")], *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return load(tmp_path / "ranks/rank0.pth"), load(tmp_path / "ranks/rank1.pth")


def test_a_two_process_run_refused_by_process_0_stops_every_process_with_one_line(demo_root, tmp_path):
    """Only process 0 checks the run's outputs; the other learns that it refused, instead of failing in
    the next collective with a lost-connection traceback that torchrun then reports as the cause."""
    log = tmp_path / f"ddp/figs/asvfi/{RUN}.csv"  # an existing run: main.py refuses to replace it unasked
    log.parent.mkdir(parents=True)
    log.write_text("epoch\n")
    done = two_process_main_flags(demo_root, tmp_path, ["main.py"], "--epochs", "1")
    assert done.returncode != 0
    assert done.stderr.count(f"error: run {RUN} already has {log}") == 1
    assert "error: process 1: process 0 stopped the job (its error says why)" in done.stderr
    assert "Connection closed" not in done.stderr and "[rank1]: Traceback" not in done.stderr
    assert log.read_text() == "epoch\n"


def test_a_two_process_run_whose_data_process_0_cannot_prepare_stops_every_process_with_one_line(demo_root,
                                                                                                 tmp_path):
    """Process 0 prepares the data set while the other waits: its error stops the other too, which
    neither reads a data set that is not there nor reports an error of its own."""
    done = two_process_main_flags(demo_root, tmp_path, ["main.py"], "--epochs", "1", "--data-root",
                                str(tmp_path / "no_data"), "--dataset", "ucf101")
    assert done.returncode != 0
    assert done.stderr.count("UCF-101 not found") == 1
    assert "error: process 1: process 0 stopped the job (its error says why)" in done.stderr


def test_two_process_gloo_run_matches_one_process(demo_root, tmp_path):
    """2 processes x batch 1 == 1 process x batch 2 (same windows, averaged gradients); ranks end equal."""
    flags = ["--epochs", "1", "--limit-steps", "3", "--batch_size", "1"]
    rank0, rank1 = two_process_gloo_run(demo_root, tmp_path, *flags)
    saved = load(tmp_path / f"ddp/weights/asvfi/{RUN}.pth")
    assert_same_weights(rank0, rank1)
    assert_same_weights(rank0, saved["state_dict"])
    assert len(saved["rng"]) == 2

    assert run_main(demo_root, tmp_path / "single", "--epochs", "1", "--limit-steps", "3", "--batch_size", "2") == 0
    single = load(tmp_path / f"single/weights/asvfi/{RUN}.pth")
    torch.manual_seed(12345)  # --random_seed: the initial weights of both runs
    initial = registry.build_model(single["config"]).state_dict()
    assert single["state_dict"].keys() == initial.keys() == rank0.keys()
    moved = max((single["state_dict"][k] - initial[k]).abs().max() for k in rank0)
    gap = max((single["state_dict"][k] - rank0[k]).abs().max() for k in rank0)
    assert gap < 1e-5 < moved
    for key in ("train_loss", "val_loss", "val_psnr", "val_ssim"):
        assert saved["history"][0][key] == pytest.approx(single["history"][0][key], rel=1e-5)


def test_two_process_pervfi_from_scratch_keeps_its_replicas_equal(demo_root, tmp_path):
    """A fresh PerVFI sets its ActNorms from the first batch; under DDP from every process's batch,
    so the replicas start, and stay, equal (from its own batch, each replica's ActNorms differ)."""
    rank0, rank1 = two_process_gloo_run(demo_root, tmp_path, *PERVFI, "--epochs", "1", "--limit-steps", "2",
                                        "--batch_size", "1")
    assert_same_weights(rank0, rank1)
    assert_same_weights(rank0, load(tmp_path / f"ddp/weights/pervfi/{PERVFI_RUN}.pth")["state_dict"])
    actnorms = [k for k in rank0 if k.endswith("actnorm.initialized")]
    assert len(actnorms) == 51 and all(rank0[k] == 1 for k in actnorms)


# ----------------------------------------------------------------------------- a step, an epoch's figures
def linear_state(optimizer=torch.optim.SGD, **kwargs):
    """A TrainState around a 4-weight linear map starting at zero, with `optimizer(params, lr=1, ...)`."""
    network = torch.nn.Linear(4, 1, bias=False)
    torch.nn.init.zeros_(network.weight)
    return train.TrainState(network, optimizer(network.parameters(), lr=1.0, **kwargs))


def far_off_loss(network):
    return (network(torch.ones(2, 4)) - 100).pow(2).mean()  # gradient norm 400


def test_a_training_step_clips_the_gradient_norm_to_grad_clip():
    clipped, free = linear_state(), linear_state()
    train.optimisation_step(clipped, far_off_loss(clipped.network), grad_clip=0.5)
    train.optimisation_step(free, far_off_loss(free.network), grad_clip=0)
    assert float(clipped.network.weight.detach().norm()) == pytest.approx(0.5, rel=1e-5)  # lr 1 x the clipped norm
    assert float(free.network.weight.detach().norm()) == pytest.approx(400, rel=1e-5)


def test_a_per_batch_schedule_steps_after_every_training_step_and_a_per_epoch_one_never():
    for per_batch, steps_taken in ((True, 3), (False, 0)):
        state = linear_state()
        state.scheduler = torch.optim.lr_scheduler.OneCycleLR(state.optimizer, max_lr=1.0, total_steps=10)
        state.scheduler_per_batch = per_batch
        for _ in range(3):
            train.optimisation_step(state, far_off_loss(state.network), grad_clip=0)
        assert state.scheduler.last_epoch == steps_taken


def test_every_epoch_reshuffles_the_windows_redraws_their_crops_and_plateaus_on_the_validation_loss(
        demo_root, tmp_path, monkeypatch):
    heard = {"windows": [], "sampler": [], "plateau": []}

    def spy(key, method):
        def recording(self, value, *rest):
            heard[key].append(value)
            return method(self, value, *rest)
        return recording
    monkeypatch.setattr(train.VFIWindows, "set_epoch", spy("windows", train.VFIWindows.set_epoch))
    monkeypatch.setattr(train.DistributedSampler, "set_epoch", spy("sampler", train.DistributedSampler.set_epoch))
    monkeypatch.setattr(optimisation, "step_epoch", spy("plateau", optimisation.step_epoch))
    assert run_main(demo_root, tmp_path, "--epochs", "2", "--limit-steps", "1", "--scheduler", "plateau") == 0
    history = load(tmp_path / f"weights/asvfi/{RUN}.pth")["history"]
    assert heard["windows"] == heard["sampler"] == [0, 1]
    assert heard["plateau"] == [record["val_loss"] for record in history]  # FLAVR's: on validation, not training


def test_rng_states_round_trip_every_generator_a_run_draws_from():
    """torch, numpy and python, with the Gaussian each of numpy and python keeps for its next draw."""
    def draws():
        return (torch.rand(2).tolist(), np.random.normal(size=1).tolist(), random.gauss(0, 1), random.random())
    np.random.normal(size=1)  # each of these leaves half of a Gaussian pair in its generator
    random.gauss(0, 1)
    saved = train.rng_state()
    expected = draws()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    train.restore_rng(saved)
    assert draws() == expected


def scored_batches(window_ids_per_batch, frames=3, size=16):
    """Val batches of the given windows with `frames` targets each (4x), and predictions for them of
    which some pixels fall outside [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    batches, predictions = [], []
    for window_ids in window_ids_per_batch:
        b = len(window_ids)
        targets = torch.rand(b, frames, 3, size, size, generator=generator)
        batches.append({"window": torch.tensor(window_ids), "inputs": torch.zeros(b, 3, 4, size, size),
                        "targets": targets, "audio": torch.zeros(b, 1), "audio_times": torch.zeros(b, 2),
                        "has_audio": torch.ones(b, dtype=torch.bool), "ts": torch.zeros(b, frames)})
        predictions.append(targets + 0.5 * torch.randn(targets.shape, generator=generator))
    return batches, predictions


def l1_criterion(out, target):
    loss = (out["pred"] - target).abs().mean()
    return loss, {"L1": float(loss)}


l1_criterion.names = ("L1",)


def test_validation_averages_the_loss_per_window_and_psnr_ssim_per_clamped_frame(monkeypatch):
    """Batches of 2 and 1 windows, 3 generated frames each: the loss is each batch's mean weighted by
    its windows, PSNR and SSIM are means over the 9 frames of the prediction clamped to [0, 1]."""
    batches, predictions = scored_batches([[0, 1], [2]])
    outputs = iter(predictions)
    monkeypatch.setattr(train, "predict", lambda *args, **kwargs: {"pred": next(outputs)})
    run = train.Run(SimpleNamespace(random_seed=0, amp=None), runtime.Processes(), None, {})
    scores = train.validate(torch.nn.Identity(), l1_criterion, batches, run)

    losses_per_batch = [float((p - b["targets"]).abs().mean()) for p, b in zip(predictions, batches)]
    per_window = (2 * losses_per_batch[0] + losses_per_batch[1]) / 3
    assert scores["val_loss"] == pytest.approx(per_window) and scores["val_L1"] == pytest.approx(per_window)
    shown = torch.cat([p.clamp(0, 1).flatten(0, 1) for p in predictions]).double()
    truth = torch.cat([b["targets"].flatten(0, 1) for b in batches]).double()
    mse = ((shown - truth) ** 2).flatten(1).mean(dim=1)
    assert scores["val_psnr"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), rel=1e-6)
    assert scores["val_ssim"] == pytest.approx(float(metrics.ssim(shown, truth).mean()), rel=1e-6)


def test_limit_steps_beyond_the_epoch_trains_the_epoch_once(demo_root):
    windows = train.VFIWindows(demo_root, "demo", "train", 2, train.Sampling(train=True, crop=32))
    args = SimpleNamespace(batch_size=2, random_seed=0, workers=0, limit_steps=0)
    loader, _, steps = train.train_loader(windows, args, runtime.Processes())
    args.limit_steps = 10 * steps
    assert steps == len(loader) and train.train_loader(windows, args, runtime.Processes())[2] == steps


def test_processes_train_on_distinct_windows_when_the_windows_do_not_divide_among_them(demo_root):
    """5 windows, 2 processes: each trains on 2 and one window sits the epoch out, rather than one
    window counting twice in the epoch's gradients."""
    windows = train.Subset(train.VFIWindows(demo_root, "demo", "train", 2, train.Sampling(train=True, crop=32)),
                           range(5))
    args = SimpleNamespace(batch_size=1, random_seed=0, workers=0, limit_steps=0)
    shares = [list(train.train_loader(windows, args, runtime.Processes(rank=rank, world=2))[1]) for rank in (0, 1)]
    assert [len(share) for share in shares] == [2, 2] and not set(shares[0]) & set(shares[1])


# ----------------------------------------------------------------------------- frame sizes and crops
def demo_with_one_video_resized(demo_root, tmp_path, split, width, height):
    """The demo set with the split CSV saying one `split` video has another frame size."""
    (tmp_path / "demo").symlink_to(demo_root / "demo")
    with open(demo_root / "demo_split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first = next(row for row in rows if row["split"] == split)
    first.update(width=width, height=height)
    with open(tmp_path / "demo_split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path, first["path"]


def test_default_crop_fits_ucf101_sized_frames(demo_root):
    args = main.parse_args(["--data-root", str(demo_root)])  # the demo here is 320x240, as UCF-101
    train_set = train.VFIWindows(demo_root, "demo", "train", 2, train.Sampling(train=True, crop=args.crop))
    assert not train_set.skipped and train_set.frame_sizes() == {(args.crop, args.crop)}


def test_a_crop_larger_than_the_frames_stops_training_with_a_message(demo_root, tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_main(demo_root, out, "--crop", "480") == 1
    error = capsys.readouterr().err
    assert "none of its 4 videos is usable: 4 smaller than the crop" in error and "Traceback" not in error
    assert "smaller than crop 480x480" in error and "warning" not in error  # the error alone says why
    assert not out.exists()  # the folders made to check they can be written are gone again


def test_whole_frame_batches_of_several_sizes_stop_with_the_way_out(demo_root, tmp_path):
    root, resized = demo_with_one_video_resized(demo_root, tmp_path, "train", 322, 240)
    whole_frames = train.VFIWindows(root, "demo", "train", 2, train.Sampling(train=True))
    assert whole_frames.frame_sizes() == {(240, 320), (240, 322)}
    args = SimpleNamespace(batch_size=2, random_seed=0, workers=0, limit_steps=0)
    with pytest.raises(train.TrainingStopped, match=r"2 frame sizes \(320x240, 322x240\).*--crop N.*--batch-size 1"):
        train.train_loader(whole_frames, args, runtime.Processes())
    cropped = train.VFIWindows(root, "demo", "train", 2, train.Sampling(train=True, crop=32))
    assert train.train_loader(cropped, args, runtime.Processes())[0].batch_size == 2  # crops share a size
    args.batch_size = 1
    assert len(train.train_loader(whole_frames, args, runtime.Processes())[0]) > 0


def test_validation_on_whole_frames_of_several_sizes_goes_one_window_at_a_time(demo_root, tmp_path):
    root, _ = demo_with_one_video_resized(demo_root, tmp_path, "val", 322, 240)
    args = SimpleNamespace(batch_size=4, workers=0)
    mixed = train.VFIWindows(root, "demo", "val", 2, train.Sampling())
    one_size = train.VFIWindows(demo_root, "demo", "val", 2, train.Sampling())
    assert [len(b) for b in train.val_loader(mixed, args, runtime.Processes()).batch_sampler] == [1] * len(mixed)
    assert list(train.val_loader(train.Subset(one_size, range(6)), args, runtime.Processes()).batch_sampler) == \
        [[0, 1, 2, 3], [4, 5]]
    shares = [list(train.val_loader(train.Subset(one_size, range(6)), args, runtime.Processes(rank=rank, world=2))
                   .batch_sampler) for rank in (0, 1)]
    assert shares == [[[0, 1, 2, 3]], [[4, 5]]]  # the same batches, dealt out: each window once in the job


# ----------------------------------------------------------------------------- audio ablation report
def test_audio_ablation_report_from_logs(tmp_path, capsys):
    """`tools.py audio_ablation --report-only` turns the two runs' logs into the table and figure."""
    import tools
    for tag, psnrs in (("audio", [20.0, 22.5, 22.25]), ("noaudio", [20.0, 21.0, 21.5])):
        rows = "\n".join(f"{e},0.1,0.1,{p},0.9,0.0006,1.0" for e, p in enumerate(psnrs, 1))
        (tmp_path / "figs/asvfi").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"figs/asvfi/{RUN}_{tag}.csv").write_text(
            f"epoch,train_loss,val_loss,val_psnr,val_ssim,lr,seconds\n{rows}\n")
    assert tools.main(["audio_ablation", "--report-only", "--out-dir", str(tmp_path),
                       "--data-root", str(tmp_path / "moved")]) == 0
    table = (tmp_path / "figs/audio_ablation.md").read_text()
    assert "moved/demo_split.csv: split CSV not found" in table and not (tmp_path / "moved").exists()
    assert "| 2 | 22.50 | 21.00 | +1.50 |" in table and "| best | 22.50 | 21.50 | +1.00 |" in table
    assert matplotlib.image.imread(tmp_path / "figs/audio_ablation.png").std() > 0
    assert "| best |" in capsys.readouterr().out


def test_dataset_defaults_to_demo_without_ucf101(tmp_path):
    assert main.parse_args(["--data-root", str(tmp_path)]).dataset == "demo"
    (tmp_path / "UCF-101_split.csv").write_text("path\n")
    assert main.parse_args(["--data-root", str(tmp_path)]).dataset == "ucf101"


def test_audio_gates_get_their_own_learning_rate():
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio_dim=32))
    args = SimpleNamespace(lr="2e-3", gate_lr_mult=10.0, optimizer="adamw", beta1=0.9, beta2=0.99, weight_decay=None,
                           decay_all=False)
    groups = {g["name"]: g for g in optimisation.build_optimizer(args, network).param_groups}
    gates = {id(p) for p in network.audio.gates()}
    assert {id(p) for p in groups["gates_no_decay"]["params"]} == gates and len(gates) == 2
    assert groups["gates_no_decay"]["lr"] == pytest.approx(2e-2)
    assert groups["main"]["lr"] == groups["main_no_decay"]["lr"] == pytest.approx(2e-3)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(network.parameters()))


@pytest.mark.parametrize("weight_decay,expected", [(None, 0.01), (0.05, 0.05)])
def test_no_weight_decay_on_gates_norms_biases_tokens_and_time_slopes(weight_decay, expected):
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio_dim=32))
    args = SimpleNamespace(lr="2e-3", gate_lr_mult=1.0, optimizer="adamw", beta1=0.9, beta2=0.99,
                           weight_decay=weight_decay, decay_all=False)
    decay_of = {id(p): g["weight_decay"] for g in optimisation.build_optimizer(args, network).param_groups
                for p in g["params"]}
    names = dict(network.named_parameters())
    free = [n for n in names if n.endswith(("bias", "gate", "time_slope", "no_audio_token"))
            or "norm" in n or ".bn" in n]
    assert {"audio.no_audio_token", "audio.bottleneck_fusion.gate", "audio.decoder_fusion.time_slope",
            "audio.bottleneck_fusion.key_norm.weight", "audio.encoder.layers.0.bias"} <= set(free)
    for name in free:
        assert decay_of[id(names[name])] == 0.0, name
    for name in ("audio.bottleneck_fusion.query.weight", "audio.encoder.layers.0.weight", "encoder.stem.0.weight"):
        assert decay_of[id(names[name])] == pytest.approx(expected), name


def test_validation_subset_is_bounded_evenly_spaced_and_the_same_for_every_seed(demo_root):
    assert main.parse_args([]).val_windows == 64
    subsets = []
    for seed in ("1", "2"):
        args = main.parse_args(["--dataset", "demo", "--data-root", str(demo_root), "--crop", "64",
                                "--val-windows", "5", "--random-seed", seed])
        _, val_set = train.build_datasets(args, runtime.Processes())
        subsets.append(val_set.indices)
    total = len(val_set.dataset)
    assert total > 5 and subsets[0] == subsets[1] and len(subsets[0]) == 5
    assert subsets[0][0] == 0 and subsets[0][-1] == total - 1 and subsets[0] == sorted(set(subsets[0]))


def test_validation_scores_full_frames_unless_asked(demo_root):
    args = main.parse_args(["--dataset", "demo", "--data-root", str(demo_root), "--crop", "64"])
    assert args.val_crop == 0
    _, val_set = train.build_datasets(args, runtime.Processes())
    assert tuple(val_set[0]["inputs"].shape[-2:]) == (240, 320)


def test_tools_inspect_describes_a_checkpoint(straight_run, capsys):
    import tools
    path = straight_run / f"weights/asvfi/{RUN}.pth"
    assert tools.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    params = sum(t.numel() for t in load(path)["state_dict"].values() if t.is_floating_point())
    assert "model      asvfi" in out and "epoch      2" in out and f"{params:,} floating-point values" in out
    assert "width = 0.125" in out
    assert tools.main(["inspect", str(straight_run / "missing.pth")]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err


def test_an_image_test_set_is_refused_for_training_with_a_message(capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--dataset", "flavr-ucf101", "--data-root", "nowhere"])
    assert "is an image test set" in capsys.readouterr().err


def test_the_pervfi_preset_decays_every_parameter_as_its_authors_adamw_does():
    args = main.parse_args(["--dataset", "demo", "--model", "pervfi", "--loss", "1*NLL"])
    network = registry.build_model(registry.default_config("pervfi", width=0.125))
    groups = optimisation.build_optimizer(args, network).param_groups
    assert {g["weight_decay"] for g in groups} == {0.01}
    assert sum(len(g["params"]) for g in groups) == len([p for p in network.parameters() if p.requires_grad])
    spared = optimisation.build_optimizer(main.parse_args(["--dataset", "demo", "--model", "pervfi", "--loss", "1*NLL",
                                                          "--no-decay-all"]), network).param_groups
    assert {g["weight_decay"] for g in spared} == {0.0, 0.01}


def test_the_plateau_schedule_halves_the_rate_after_five_epochs_without_a_lower_validation_loss():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    scheduler, per_batch = optimisation.build_scheduler(SimpleNamespace(scheduler="plateau", epochs=20), optimizer, 3)
    rates = []
    for loss in (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5):
        optimisation.step_epoch(scheduler, loss)
        rates.append(optimizer.param_groups[0]["lr"])
    assert not per_batch and rates == [1.0] * 7 + [0.5] * 2  # FLAVR's ReduceLROnPlateau(factor 0.5, patience 5)


def two_groups():
    """An Adam optimiser over two one-parameter groups at rates 1 and 10."""
    return torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 10.0}])


def rates_after_each_epoch(scheduler, optimizer, epochs):
    """Each group's learning rate after each of `epochs` epochs of one optimiser step."""
    rates = []
    for _ in range(epochs):
        optimizer.step()
        optimisation.step_epoch(scheduler, None)
        rates.append([g["lr"] for g in optimizer.param_groups])
    return rates


def test_the_cosine_schedule_reaches_zero_at_epochs_and_a_resume_follows_a_longer_curve():
    optimizer = two_groups()
    scheduler, per_batch = optimisation.build_scheduler(SimpleNamespace(scheduler="cosine", epochs=4), optimizer, 3)
    rates = [r for epoch in rates_after_each_epoch(scheduler, optimizer, 4) for r in epoch]
    curve = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3, 4)]
    assert not per_batch and rates == pytest.approx([r for c in curve for r in (c, 10 * c)])
    optimizer = two_groups()
    resumed, _ = optimisation.build_scheduler(SimpleNamespace(scheduler="cosine", epochs=8), optimizer, 3)
    resumed.load_state_dict({**scheduler.state_dict(), "last_epoch": 2})  # 2 of 4 epochs done, now --epochs 8
    optimisation.follow_schedule(resumed, optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5 * (1 + math.cos(math.pi / 4)),
                                                                       5 * (1 + math.cos(math.pi / 4))])


def test_the_one_cycle_schedule_steps_every_batch_over_all_epochs_and_peaks_at_each_groups_rate():
    optimizer = two_groups()
    scheduler, per_batch = optimisation.build_scheduler(SimpleNamespace(scheduler="onecycle", epochs=2), optimizer, 5)
    peaks = [0.0, 0.0]
    for _ in range(2 * 5):  # raises once past total_steps
        optimizer.step()
        scheduler.step()
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, optimizer.param_groups)]
    assert per_batch and scheduler.total_steps == 10 and peaks == pytest.approx([1.0, 10.0], rel=0.05)


def test_an_asvfi_network_without_audio_has_no_gate_groups():
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio="none"))
    args = SimpleNamespace(lr="2e-3", gate_lr_mult=10.0, optimizer="adam", beta1=0.9, beta2=0.99, weight_decay=None,
                           decay_all=False)
    groups = optimisation.build_optimizer(args, network).param_groups
    assert [g["name"] for g in groups] == ["main_no_decay", "main"] and {g["lr"] for g in groups} == {2e-3}


def optimiser_args(**overrides):
    return SimpleNamespace(**{"lr": "2e-3", "gate_lr_mult": 1.0, "optimizer": "adamw", "beta1": 0.9, "beta2": 0.99,
                              "weight_decay": None, "decay_all": False, **overrides})


@pytest.mark.parametrize("kind, optimiser, default_decay", [("adam", torch.optim.Adam, 0.0),
                                                            ("adamw", torch.optim.AdamW, 0.01)])
def test_the_optimiser_is_the_one_asked_for_with_the_given_betas_and_its_own_default_decay(kind, optimiser,
                                                                                          default_decay):
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio="none"))
    built = optimisation.build_optimizer(optimiser_args(optimizer=kind, beta1=0.8, beta2=0.95), network)
    assert type(built) is optimiser
    assert {g["betas"] for g in built.param_groups} == {(0.8, 0.95)}
    assert {g["weight_decay"] for g in built.param_groups if g["name"] == "main"} == {default_decay}


def test_frozen_parameters_are_left_out_of_the_optimiser():
    network = registry.build_model(registry.default_config("asvfi", width=0.125, audio_dim=32))
    frozen = network.encoder.stem[0].weight.requires_grad_(False)
    groups = optimisation.build_optimizer(optimiser_args(), network).param_groups
    held = {id(p) for g in groups for p in g["params"]}
    assert id(frozen) not in held
    assert held == {id(p) for p in network.parameters() if p.requires_grad}


class Tokens(torch.nn.Module):
    """A model holding a 2-D learned token beside a weight matrix and its bias."""
    config = {"model": "blend", "scale": 2}

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.class_token = torch.nn.Parameter(torch.zeros(1, 4))


def test_learned_tokens_take_no_weight_decay_whatever_their_shape():
    network = Tokens()
    decay_of = {id(p): g["weight_decay"] for g in optimisation.build_optimizer(optimiser_args(), network).param_groups
                for p in g["params"]}
    assert decay_of[id(network.class_token)] == 0.0 and decay_of[id(network.proj.bias)] == 0.0
    assert decay_of[id(network.proj.weight)] == pytest.approx(0.01)


def test_the_cosine_rate_stays_at_zero_after_the_last_epoch():
    optimizer = two_groups()
    scheduler, _ = optimisation.build_scheduler(SimpleNamespace(scheduler="cosine", epochs=2), optimizer, 3)
    rates = [epoch[0] for epoch in rates_after_each_epoch(scheduler, optimizer, 5)]
    assert rates == pytest.approx([0.5, 0.0, 0.0, 0.0, 0.0], abs=1e-12)


def test_the_one_cycle_rate_falls_from_its_peak_along_a_half_cosine():
    optimizer = two_groups()
    scheduler, _ = optimisation.build_scheduler(SimpleNamespace(scheduler="onecycle", epochs=4), optimizer, 5)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(4 * 5 - 1):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    peak = rates.index(max(rates))
    falling = len(rates) - 1 - peak
    assert 0 < peak < len(rates) // 2
    assert rates[peak:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / falling)) for k in range(falling + 1)],
                                         abs=1e-3)


@pytest.mark.parametrize("kind", ["plateau", "onecycle"])
def test_following_the_schedule_after_a_resume_leaves_other_schedules_rates_as_restored(kind):
    optimizer = two_groups()
    scheduler, _ = optimisation.build_scheduler(SimpleNamespace(scheduler=kind, epochs=2), optimizer, 5)
    before = [g["lr"] for g in optimizer.param_groups]
    optimisation.follow_schedule(scheduler, optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == before
