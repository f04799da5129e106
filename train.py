"""The training loop: one `train(args, procs)` that reads top to bottom.

seed → data (DistributedSampler, also in a single process, so the shuffling is a function of the
seed and the epoch) → network from its config → optimiser + scheduler → (resume) → epochs of
training steps, each followed by validation (loss, PSNR, SSIM on the val windows, summed over
processes) → checkpoints, curves and a log written by process 0 while the others wait. A run that already has
outputs is only continued (`--start_epoch`) or, with `--overwrite`, started again. Process 0 holds the
run's lock while it trains, so a second process starting the same run stops at once.

The latest checkpoint is an epoch's commit point: the best checkpoint, snapshot, log and curves are
written first and it last, so a stop anywhere (SIGTERM, Ctrl-C, kill -9) leaves the run at an epoch
that a resume continues from, redoing the interrupted one whole. A stop ends with one line naming
the epoch the latest checkpoint holds and the `--start-epoch` that resumes it.

Checkpoints are plain dicts loadable with `torch.load(weights_only=True)`: model, config,
state_dict (no `module.` prefix), optimizer, scheduler, scaler, epoch (finished epochs),
best_psnr, args (plain types), history (the per-epoch log) and rng (each process's torch, CUDA,
numpy and python RNG states as tensors and numbers). Resuming restores all of it, so 2 epochs in
one go and 1 epoch + `--start_epoch 1` produce the same weights.

A non-finite loss (training or validation) stops the run before anything is written, so the
last good checkpoint stays as it was.
"""
import contextlib
import math
import random
import re
import shutil
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

import checkpoints
import cli
import losses
import metrics
import model as asvfi
import optimisation
import prepare
import publish
import registry
import runs
import runtime
import testsets
import training_log
import utils
from dataset import Sampling, VFIWindows
from utils import ASVFIError

BATCH_TENSORS = ("inputs", "targets", "audio", "audio_times", "has_audio", "ts")


class TrainingStopped(ASVFIError):
    """Ends a run with a message for the user instead of a traceback."""


class NonFiniteLoss(TrainingStopped):
    pass


class ResumeError(TrainingStopped):
    pass


# ----------------------------------------------------------------------------- the run and its state
@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: latest/best/snapshot checkpoints, curves figure and CSV log (runs.py names them)."""
    root: Path
    model: str
    run: str
    tag: str = None

    @property
    def latest(self):
        return runs.checkpoint_path(self.model, self.run, out_dir=self.root)

    @property
    def best(self):
        return runs.best_checkpoint_path(self.model, self.run, out_dir=self.root)

    def existing(self):
        """The outputs of this run already on disk (what starting it from scratch would replace)."""
        return [path for path in (self.latest, self.best, self.log) if path.is_file()]

    def snapshot(self, epoch):
        return runs.checkpoint_path(self.model, self.run, epoch, out_dir=self.root)

    @property
    def figure(self):
        return runs.figure_path(self.model, self.run, self.root)

    @property
    def log(self):
        return runs.log_path(self.model, self.run, self.root)


def run_paths(args):
    return RunPaths(Path(args.out_dir), args.model, runs.run_name(args.optimizer, args.lr, args.tag), args.tag)


@dataclass(frozen=True)
class Run:
    """What every step needs to know and what stays fixed for the whole run."""
    args: object  # the parsed command line (never modified)
    procs: runtime.Processes
    paths: RunPaths
    config: dict  # the network's config, stored in every checkpoint


@dataclass
class TrainState:
    """Everything training updates and a checkpoint holds."""
    network: torch.nn.Module  # the bare network (checkpoints, validation)
    optimizer: torch.optim.Optimizer
    scheduler: object = None
    scheduler_per_batch: bool = False
    scaler: object = None  # fp16 GradScaler on CUDA
    model: torch.nn.Module = None  # what the training forward runs through: DDP's wrapper or the network
    history: list = field(default_factory=list)
    best_psnr: float = -math.inf


# ----------------------------------------------------------------------------- RNG
def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    """This process's RNG states as tensors and numbers (weights_only-loadable)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore_rng(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))


# ----------------------------------------------------------------------------- data
def build_datasets(args, procs):
    """Training windows (random crops, per-epoch draws) and a fixed, evenly spaced val subset.

    Process 0 generates the demo data on first use while the others wait. An image set with a
    training list (Vimeo-90K septuplets) gives the input frames the model reads (registry.consumes).
    """
    if args.dataset not in runs.TESTSET_FOLDERS:
        procs.main_only(prepare.ensure_dataset, args.data_root, args.dataset)
    training = Sampling(train=True, crop=args.crop or None, windows_per_video=args.windows_per_video,
                        seed=args.random_seed, color_jitter=args.color_jitter)
    return split_windows(args, "train", training), validation_windows(args)


def validation_windows(args):
    """The val split's windows, or --val-windows of them evenly spaced: the same ones every epoch."""
    val_set = split_windows(args, "val", Sampling(crop=args.val_crop or None))
    if args.val_windows and len(val_set) > args.val_windows:
        keep = np.unique(np.round(np.linspace(0, len(val_set) - 1, args.val_windows)).astype(int))
        val_set = Subset(val_set, keep.tolist())
    return val_set


def split_windows(args, split, sampling):
    """The windows of one split of the data set, sampled as `sampling` says."""
    if args.dataset in runs.TESTSET_FOLDERS:
        root = runs.testset_dir(args.data_root, args.dataset)
        n_inputs = registry.consumes(model_config(args)).input_frames[0]
        return testsets.training_windows(args.dataset, root, split, n_inputs, sampling)
    return VFIWindows(args.data_root, args.dataset, split, args.scale, sampling)


def frame_sizes(windows):
    """The frame sizes of a set's windows (one for Vimeo-90K, whose frames are all 448x256)."""
    windows = windows.dataset if isinstance(windows, Subset) else windows
    return windows.frame_sizes() if isinstance(windows, VFIWindows) else {None}


def check_one_frame_size(train_set, args):
    """Whole-frame training batches need one frame size; say so before the DataLoader fails to stack."""
    sizes = frame_sizes(train_set)
    if args.batch_size > 1 and len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:4])
        raise TrainingStopped(f"{train_set.csv_path}: --crop 0 trains on whole frames, but the train split's videos "
                              f"have {len(sizes)} frame sizes ({shown}); a batch needs one size: pass --crop N "
                              f"(at most the smallest frame) or --batch-size 1")


def train_loader(train_set, args, procs):
    check_one_frame_size(train_set, args)
    sampler = DistributedSampler(train_set, num_replicas=procs.world, rank=procs.rank, shuffle=True,
                                 seed=args.random_seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=procs.device.type == "cuda")
    steps = len(loader) if not args.limit_steps else min(len(loader), args.limit_steps)
    if steps == 0:
        raise TrainingStopped(f"{train_set.csv_path}: the train split gives {len(sampler)} windows per process, "
                              f"fewer than --batch_size {args.batch_size}; raise --windows-per-video")
    return loader, sampler, steps


def val_loader(val_set, args, procs):
    """The val windows in fixed batches (the same whatever the number of processes), dealt out to the
    processes in turn: every window counts once (no padding), and each window's sampling noise is the
    same in any job (`validate`). Whole frames of several sizes go one window at a time (the sums do
    not depend on the batch size). Its own generator seeds the workers, so that validation draws
    nothing from the training's RNG."""
    batch_size = args.batch_size if len(frame_sizes(val_set)) == 1 else 1
    windows = list(range(len(val_set)))
    batches = [windows[first:first + batch_size] for first in range(0, len(windows), batch_size)]
    return DataLoader(val_set, batch_sampler=procs.shard(batches), num_workers=args.workers,
                      generator=torch.Generator())


def to_device(batch, device):
    return {k: batch[k].to(device, non_blocking=True) for k in BATCH_TENSORS}


# ----------------------------------------------------------------------------- model and optimiser
def model_config(args):
    """The network config: the model's defaults with the flags that were given."""
    overrides = {"scale": args.scale, "depth": args.depth, "width": args.width, "audio": args.audio,
                 "fusion_init": args.fusion_init}
    return registry.default_config(args.model, **{k: v for k, v in overrides.items() if v is not None})


def build_network(args, config, device):
    network = registry.build_model(config, weights_dir=args.weights_dir)
    if args.pretrained:
        asvfi.load_pretrained(network, args.pretrained)
    return network.to(device)


def predict(network, batch, amp, device, target=None, noise_keys=None):
    """Forward pass under autocast; outputs come back as float32 for the losses and metrics. With
    `noise_keys` (one tuple of ints per window), a sampling model's noise for a window comes from its
    key only (`runtime.noise_generators`), not from a shared RNG whose draws depend on the batch and
    the process."""
    model = network.module if isinstance(network, DistributedDataParallel) else network
    consumes = registry.consumes(model.config)
    extra = ({"audio": batch["audio"], "audio_times": batch["audio_times"], "has_audio": batch["has_audio"]}
             if consumes.audio else {})  # only a model that reads sound gets it
    if consumes.noise and noise_keys is not None:
        extra["generator"] = runtime.noise_generators(noise_keys, device)
    with runtime.autocast(device, amp):
        out = network(batch["inputs"], ts=batch["ts"], target=target, **extra)
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}


# ----------------------------------------------------------------------------- one epoch
def optimisation_step(state, loss, grad_clip):
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
    else:
        loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in state.network.parameters() if p.requires_grad], grad_clip)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    if state.scheduler is not None and state.scheduler_per_batch:
        state.scheduler.step()


def train_one_epoch(state, criterion, loader, steps, run, epoch):
    """Mean loss and terms over the epoch (averaged over processes)."""
    args, procs = run.args, run.procs
    state.model.train()
    sums = np.zeros(1 + len(criterion.names))
    # closed on the way out too, so a stop's message starts on a line of its own
    with utils.progress(None, f"epoch {epoch + 1}/{args.epochs}", show=procs.is_main, unit="step",
                        total=steps, leave=False) as bar:
        for step, batch in enumerate(loader):
            if step == steps:
                break
            keys = [(args.random_seed, epoch, window) for window in batch["window"].tolist()]
            batch = to_device(batch, procs.device)
            out = predict(state.model, batch, args.amp, procs.device, target=batch["targets"], noise_keys=keys)
            loss, terms = criterion(out, batch["targets"])
            values = np.array(procs.sum([float(loss.detach())] + [terms[n] for n in criterion.names])) / procs.world
            if not math.isfinite(values[0]):
                stop_on_non_finite(values[0], f"epoch {epoch + 1}, step {step + 1}", criterion.names, values[1:],
                                   run.paths)
            optimisation_step(state, loss, args.grad_clip)
            sums += values
            bar.update()
            bar.set_postfix(loss=f"{values[0]:.4f}")
    means = sums / steps
    return {"train_loss": float(means[0]), **{f"train_{n}": float(v) for n, v in zip(criterion.names, means[1:])}}


@torch.no_grad()
def validate(network, criterion, loader, run):
    """Val loss (per window), PSNR and SSIM (per generated frame), summed over all processes."""
    network.eval()
    device = run.procs.device
    n_terms = len(criterion.names)
    sums = [0.0] * (5 + n_terms)  # loss·B, PSNR sum, SSIM sum, frames, windows, then each term·B
    for batch in loader:
        keys = [(run.args.random_seed, window) for window in batch["window"].tolist()]
        batch = to_device(batch, device)
        out = predict(network, batch, run.args.amp, device, target=batch["targets"], noise_keys=keys)
        loss, terms = criterion(out, batch["targets"])
        pred = out["pred"].clamp(0, 1).flatten(0, 1)
        gt = batch["targets"].flatten(0, 1)
        b = batch["inputs"].shape[0]
        sums[0] += float(loss) * b
        sums[1] += float(metrics.psnr(pred, gt).sum())
        sums[2] += float(metrics.ssim(pred, gt).sum())
        sums[3] += pred.shape[0]
        sums[4] += b
        for i, name in enumerate(criterion.names):
            sums[5 + i] += terms[name] * b
    total = run.procs.sum(sums)
    windows, frames = max(total[4], 1), max(total[3], 1)
    return {"val_loss": total[0] / windows, "val_psnr": total[1] / frames, "val_ssim": total[2] / frames,
            **{f"val_{n}": total[5 + i] / windows for i, n in enumerate(criterion.names)}}


def stop_on_non_finite(value, where, names, term_values, paths):
    terms = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, term_values))
    kept = (f"the last good checkpoint {paths.latest} is left as it was" if paths.latest.is_file()
            else "no checkpoint had been written yet")
    raise NonFiniteLoss(f"loss is {value} at {where} ({terms}); stopping the run: {kept}. "
                        f"Try a lower --lr, --grad-clip, or check the data.")


# ----------------------------------------------------------------------------- checkpoints
def plain_args(args):
    """argparse values as plain types, so checkpoints load with weights_only=True."""
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else str(v)) for k, v in vars(args).items()}


def checkpoint_dict(state, run, epoch, rng):
    return {
        "model": run.args.model,
        "config": run.config,
        "state_dict": state.network.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": epoch,
        "best_psnr": state.best_psnr,
        "args": plain_args(run.args),
        "history": state.history,
        "rng": rng,
    }


def save_epoch(checkpoint, run, is_best):
    """Best (when val PSNR improved), epoch snapshot (with --save-every), log and curves, and last the
    latest checkpoint (always): it is the commit point. A stop before it leaves the run at the
    previous epoch, and the resume redoes this one whole (training is deterministic), writing the
    others again as they were."""
    if is_best:
        checkpoints.save(checkpoint, run.paths.best)
    if run.args.save_every and checkpoint["epoch"] % run.args.save_every == 0:
        checkpoints.save(checkpoint, run.paths.snapshot(checkpoint["epoch"]))
    training_log.write_log(run.paths.log, checkpoint["history"])
    training_log.plot_curves(run.paths.figure, checkpoint["history"], run.paths.run)
    checkpoints.save(checkpoint, run.paths.latest)


def resume_checkpoint(args, paths, config, world):
    """The checkpoint after `--start_epoch` finished epochs: the latest one, or its epoch snapshot."""
    start = args.start_epoch
    if not paths.latest.exists():  # anything else there (a folder, say) is refused by load_for_resume, naming it
        raise ResumeError(f"--start_epoch {start}: no checkpoint {paths.latest} to resume run {paths.run} from "
                          f"(check --optimizer/--lr/--tag/--model/--out-dir, or train from --start_epoch 0)")
    latest = load_for_resume(paths.latest, args, config, world)
    if latest["epoch"] == start:
        return paths.latest, latest
    if paths.snapshot(start).is_file():
        return paths.snapshot(start), load_for_resume(paths.snapshot(start), args, config, world)
    done = latest["epoch"]
    advice = (f"use --start_epoch {done}" if done < args.epochs else
              f"the run has finished its {done} epochs: train it further with --start_epoch {done} and a larger "
              f"--epochs (not with a one-cycle schedule, which spans the first --epochs), or again with --overwrite")
    raise ResumeError(f"--start_epoch {start}: {paths.latest} holds epoch {done} and there is no "
                      f"snapshot {paths.snapshot(start)}; {advice}")


def load_for_resume(path, args, config, world):
    """A checkpoint of this run's model, config and number of processes, or a ResumeError naming the file."""
    try:
        checkpoint = checkpoints.load_checkpoint(path, expect_config=config)
    except checkpoints.CheckpointError as error:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {error}; resume with the flags the run "
                          f"was started with") from None
    refuse_without_training_state(path, args, checkpoint)
    if checkpoint.get("model") != args.model:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {path} holds a {checkpoint.get('model')!r} model, "
                          f"not {args.model!r}")
    trained = checkpoint.get("args", {})
    refuse_changed_flags(path, args, trained, RESUMED_FROM_THE_CHECKPOINT,
                         "the optimiser state it holds keeps its own, so resume with the same flag")
    refuse_changed_flags(path, args, trained, WHAT_THE_RUN_IS,
                         "its earlier epochs trained so, and the resumed run would record the new value as "
                         "if all had: resume with the same flag, or train a new run with another --tag")
    refuse_other_process_count(path, args, checkpoint, world)
    return checkpoint


# What a resume reads besides the weights (checkpoint_dict writes them all; scaler and args are
# read with defaults, as the first checkpoints had neither).
TRAINING_STATE = ("model", "epoch", "optimizer", "scheduler", "best_psnr", "history", "rng")


def refuse_without_training_state(path, args, checkpoint):
    """A ResumeError naming what is missing when `path` holds weights but not a run's training state
    (a FLAVR release, a file cut down to its weights), which a resume cannot continue from."""
    missing = [key for key in TRAINING_STATE if key not in checkpoint]
    if missing:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {path} is not a training checkpoint of main.py: it "
                          f"has no {', '.join(missing)} (weights alone can start a new ASVFI run with --pretrained); "
                          f"train this run again with --overwrite, or choose another --tag")


def refuse_other_process_count(path, args, checkpoint, world):
    """A ResumeError when the run trained with another number of processes: each step's batch is
    --batch-size from every process, so a resume with another number would change the batch (and the
    windows each process draws) as a changed --batch-size would."""
    trained = len(checkpoint["rng"])  # one RNG state per process
    if trained != world:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {path} was trained by {trained} process(es) of "
                          f"--batch-size {args.batch_size}, this run has {world}; resume it with {trained} "
                          f"(torchrun --nproc_per_node={trained}, or plain python for 1), or train a new run "
                          f"with another --tag")


def refuse_changed_flags(path, args, trained, flags, why):
    """A ResumeError for the first of `flags` whose value differs from the one `trained` records."""
    for flag, key, before in flags:
        trained_with = trained.get(key, before)
        if trained_with != getattr(args, key):
            raise ResumeError(f"--start_epoch {args.start_epoch}: {path} was trained with "
                              f"{flag_text(flag, trained_with)}, not {flag_text(flag, getattr(args, key))}; {why}")


# Flags whose effect lives in the restored scheduler or optimiser state (its groups keep their
# weight decay, betas and learning rates), so a resume cannot change them: (flag, args key, value
# of checkpoints without it; the first checkpoints, older than --gate-lr-mult, trained the gates at
# the base rate).
RESUMED_FROM_THE_CHECKPOINT = (("--scheduler", "scheduler", None), ("--weight-decay", "weight_decay", None),
                               ("--decay-all", "decay_all", False), ("--beta1", "beta1", 0.9),
                               ("--beta2", "beta2", None), ("--gate-lr-mult", "gate_lr_mult", 1.0))
# Flags that say what the run is: the data, loss, crop and batch of its earlier epochs, and the seed
# (the RNG states come from the checkpoint, but the seed still draws every later epoch's windows
# and their order, so a new one would continue as no seed's run). Same shape as above; every
# checkpoint records them. --data-root may change: the same data can move (resume notes it).
WHAT_THE_RUN_IS = (("--dataset", "dataset", None), ("--loss", "loss", None), ("--crop", "crop", None),
                   ("--batch-size", "batch_size", 1), ("--random-seed", "random_seed", 12345))


def flag_text(flag, value):
    """How a flag with `value` reads on the command line (a boolean flag as --x / --no-x)."""
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    return f"{flag} {value}"


def restore(path, checkpoint, state, procs):
    scheduler = state.scheduler
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and \
            checkpoint["scheduler"]["total_steps"] != scheduler.total_steps:
        raise ResumeError(f"{path}: its one-cycle schedule spans {checkpoint['scheduler']['total_steps']} steps, "
                          f"this run {scheduler.total_steps}; resume with the same --epochs, --batch_size, "
                          f"--windows-per-video and --limit-steps")
    checkpoints.load_strict(state.network, checkpoint["state_dict"], path,
                            hint=registry.spec(checkpoint["model"]).fit_hint(state.network.config))
    saved_groups = len(checkpoint["optimizer"]["param_groups"])
    if saved_groups != len(state.optimizer.param_groups):
        raise ResumeError(f"{path}: its optimiser state has {saved_groups} parameter groups, this run "
                          f"{len(state.optimizer.param_groups)} (it was written before weight decay was split "
                          f"off the 1-D parameters, or with other flags); it cannot be resumed: start a new run "
                          f"from its weights, or train it again with --overwrite")
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint["scheduler"] is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        optimisation.follow_schedule(scheduler, state.optimizer)
    if state.scaler is not None and checkpoint.get("scaler"):
        state.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint["rng"][procs.rank])
    state.history, state.best_psnr = list(checkpoint["history"]), checkpoint["best_psnr"]


def summary_line(record, run, is_best):
    """One line per epoch, naming the run (two runs may share a terminal)."""
    return (f"{run.paths.run}  epoch {record['epoch']}/{run.args.epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  PSNR {record['val_psnr']:.2f} dB  SSIM {record['val_ssim']:.4f}  "
            f"lr {record['lr']:.3g}  {record['seconds']:.1f} s" + ("  (best)" if is_best else ""))


# ----------------------------------------------------------------------------- the loop
@contextlib.contextmanager
def owned_outputs(run):
    """Process 0 owns the run's outputs while it trains (claim_outputs); when it cannot, every
    process stops."""
    with contextlib.ExitStack() as held:
        run.procs.main_only(claim_outputs, run, held)
        yield


def claim_outputs(run, held):
    """Fail now, not after an epoch, when the output folders cannot be written; hold the run's lock
    in `held`; never replace the run's results unasked (with --overwrite remove them, so no earlier
    checkpoint stands beside the new run's files); remove the temp files a killed write left."""
    for folder in (run.paths.latest.parent, run.paths.log.parent):
        check_writable(folder)
    held.enter_context(run_lock(run.paths))
    check_outputs(run.paths, run.args)
    remove_leftover_temp_files(run.paths)


def check_outputs(paths, args):
    """A fresh start of a run that has outputs needs --overwrite, which removes them."""
    existing = paths.existing()
    if args.start_epoch or not existing:
        return
    if not args.overwrite:
        # without a checkpoint, where_the_run_stands already advises --overwrite
        overwrite = ", or pass --overwrite to train it again from scratch" if paths.latest.is_file() else ""
        raise TrainingStopped(f"run {paths.run} already has {', '.join(map(str, existing))}; "
                              f"{where_the_run_stands(paths, args.epochs)} (or choose another --tag or "
                              f"--out-dir{overwrite})")
    for path in existing:
        path.unlink()
    print(f"--overwrite: removed {', '.join(map(str, existing))}")


def where_the_run_stands(paths, epochs):
    """The epoch the run's latest checkpoint holds and the flags that continue it, read from the file
    (after a stop the console's last epoch line may be behind it)."""
    if not paths.latest.is_file():
        again = "pass --overwrite to start it again" if paths.existing() else "run the command again to start it"
        return f"no epoch was finished (there is no checkpoint {paths.latest}); {again}"
    try:
        finished = checkpoints.saved_epoch(paths.latest)
    except checkpoints.CheckpointError as error:
        return str(error)
    if finished < epochs:
        return f"last checkpoint {paths.latest} holds epoch {finished}; resume with --start-epoch {finished}"
    return (f"last checkpoint {paths.latest} holds epoch {finished}, all of --epochs {epochs}; train it further "
            f"with --start-epoch {finished} and a larger --epochs")


@contextlib.contextmanager
def stops_say_where_the_run_stands(run):
    """A stop from outside ends as a cli.Stopped, which the entry point prints as one line, with
    process 0's note of where_the_run_stands; Ctrl-C becomes one too (exit status 130, no traceback)."""
    try:
        yield
        return
    except KeyboardInterrupt:
        stop = cli.Stopped(signal.SIGINT)
    except cli.Stopped as signalled:
        stop = signalled
    if run.procs.is_main:
        stop.add_note(where_the_run_stands(run.paths, run.args.epochs))
    raise stop from None


@contextlib.contextmanager
def run_lock(paths):
    """Hold the run's lock (publish's lock beside its latest checkpoint) for the block: a second
    process training the same run would write over its checkpoints, so it stops at once. The folders
    made for the lock are removed again when still empty, so a refused run leaves nothing behind."""
    folder = paths.latest.parent
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        with publish.exclusive(paths.latest, wait=False):
            yield
    except publish.Busy as busy:
        raise TrainingStopped(f"run {paths.run} is being trained by another process (it holds {busy.args[0]}); "
                              f"wait for it to end, or choose another --tag or --out-dir") from None
    finally:
        for path in made:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                path.rmdir()


def remove_leftover_temp_files(paths):
    """Remove the temp files of the run's checkpoints (latest, best, epoch snapshots) that a process
    killed while writing left behind, each as large as a checkpoint. Called with the run's lock held."""
    names = [re.escape(path.name) for path in (paths.latest, paths.best)]
    leftovers = utils.atomic_leftovers(paths.latest.parent, rf"{'|'.join(names)}|{re.escape(paths.run)}_epoch\d+\.pth")
    for path in leftovers:
        path.unlink()
    if leftovers:
        print(f"removed {len(leftovers)} temporary file(s) left by an interrupted checkpoint write: "
              f"{', '.join(map(str, leftovers))}")


def check_writable(folder):
    """Write a file in `folder`; the folders made for the test are removed again (the writes that
    follow make them), so a run that stops before its first checkpoint leaves nothing behind."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise TrainingStopped(f"{folder}: cannot write checkpoints or logs there ({error.strerror}); "
                              f"choose a writable --out-dir") from None
    finally:
        for path in made:
            if path.is_dir():
                path.rmdir()


def build_state(args, network, steps, device):
    optimizer = optimisation.build_optimizer(args, network)
    scheduler, per_batch = optimisation.build_scheduler(args, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" and device.type == "cuda" else None
    return TrainState(network, optimizer, scheduler, per_batch, scaler)


def resume(state, run, path, checkpoint):
    restore(path, checkpoint, state, run.procs)
    if run.procs.is_main:
        print(f"resumed {path} (epoch {checkpoint['epoch']}, best PSNR {state.best_psnr:.2f} dB)")
        note_moved_data(path, checkpoint, run.args)
        check_best_checkpoint(run.paths, path, checkpoint)


def note_moved_data(path, checkpoint, args):
    """--data-root may change on resume (the same data at a new path); the console keeps the old one,
    as the checkpoints from now on record the new one."""
    before = checkpoint["args"].get("data_root")
    if before is not None and before != args.data_root:
        print(f"note: {path} was trained on --data-root {before}; it now reads {args.dataset} from "
              f"--data-root {args.data_root}")


def best_epoch(history):
    """The epoch <run>_best.pth should hold: the first of the highest val PSNR, as write_epoch decides."""
    return max(history, key=lambda record: record["val_psnr"])["epoch"]


def check_best_checkpoint(paths, path, checkpoint):
    """<run>_best.pth should hold the best epoch of the resumed history. A stop between an epoch's
    writes by code that wrote the latest checkpoint first, or a removed file, leaves it older or
    missing: it is copied from a file holding that epoch (the resumed checkpoint, or the epoch's
    snapshot), else a warning says it is behind. One written after the resumed epoch (a stop before
    its commit) is one this resume writes again."""
    if not checkpoint["history"]:
        return
    wanted = best_epoch(checkpoint["history"])
    held = checkpoints.saved_epoch(paths.best) if paths.best.is_file() else None
    if held == wanted or (held is not None and held > checkpoint["epoch"]):
        return
    psnr = max(record["val_psnr"] for record in checkpoint["history"])
    found = (f"{paths.best} holds epoch {held}" if held is not None else f"there is no {paths.best}") + \
        f", but epoch {wanted} has the best validation PSNR ({psnr:.2f} dB) in {path}'s history"
    holders = ((path, checkpoint["epoch"]), (paths.snapshot(wanted), wanted))
    source = next((file for file, epoch in holders if epoch == wanted and file.is_file()), None)
    if source is None:
        warnings.warn(f"{found}, and no file keeps that epoch's weights; {paths.best} stays behind until an "
                      f"epoch beats {psnr:.2f} dB")
        return
    utils.atomic_write(paths.best, lambda tmp: shutil.copyfile(source, tmp))
    print(f"note: {found}; copied {source} to it")


def run_epoch(state, criterion, data, run, epoch):
    """Train, validate and record one epoch; data = (train set, sampler, loader, steps, validation loader)."""
    train_set, sampler, loader, steps, validation = data
    started = time.time()
    train_set.set_epoch(epoch)
    sampler.set_epoch(epoch)
    record = {"epoch": epoch + 1}
    lr = state.optimizer.param_groups[0]["lr"]
    record.update(train_one_epoch(state, criterion, loader, steps, run, epoch))
    record.update(validate(state.network, criterion, validation, run))
    if not math.isfinite(record["val_loss"]):
        stop_on_non_finite(record["val_loss"], f"validation after epoch {epoch + 1}",
                           criterion.names, [record[f"val_{n}"] for n in criterion.names], run.paths)
    if state.scheduler is not None and not state.scheduler_per_batch:
        optimisation.step_epoch(state.scheduler, record["val_loss"])
    record.update(lr=lr, seconds=time.time() - started)
    return record


def write_epoch(state, run, record):
    """Append the record, then (process 0) the epoch's files (save_epoch) and the console line."""
    state.history.append(record)
    is_best = record["val_psnr"] > state.best_psnr
    state.best_psnr = max(state.best_psnr, record["val_psnr"])
    rng = run.procs.gather(rng_state())
    if run.procs.is_main:
        save_epoch(checkpoint_dict(state, run, record["epoch"], rng), run, is_best)
        tqdm.write(summary_line(record, run, is_best))
    run.procs.barrier()


def train(args, procs):
    """Train as the parsed command line says; returns the final TrainState."""
    seed_everything(args.random_seed)
    if args.amp and procs.device.type != "cuda" and procs.is_main:
        print(f"note: --amp {args.amp} applies to CUDA only; training in float32 on {procs.device}")
    run = Run(args, procs, run_paths(args), model_config(args))
    with stops_say_where_the_run_stands(run), owned_outputs(run):
        return train_run(run)


def train_run(run):
    """The run's epochs, from scratch or from the checkpoint --start-epoch names (read before the data
    is prepared, so a resume with changed flags stops at once)."""
    args, procs, device = run.args, run.procs, run.procs.device
    resumed = resume_checkpoint(args, run.paths, run.config, procs.world) if args.start_epoch > 0 else None
    network = build_network(args, run.config, device)
    criterion = losses.build_criterion(args.loss, weights_dir=args.weights_dir)
    train_set, val_set = build_datasets(args, procs)
    loader, sampler, steps = train_loader(train_set, args, procs)
    data = (train_set, sampler, loader, steps, val_loader(val_set, args, procs))
    state = build_state(args, network, steps, device)
    if resumed:
        resume(state, run, *resumed)
    state.model = (DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
                   if procs.grouped else network)
    if procs.is_main:
        n_params = sum(p.numel() for p in network.parameters())
        print(f"run {run.paths.run}: {args.model} {n_params / 1e6:.2f}M params, loss {args.loss}, {args.optimizer} "
              f"lr {args.lr} ({args.scheduler}); {args.dataset} {len(train_set)} train / {len(val_set)} val windows, "
              f"{steps} steps/epoch x {procs.world} process(es) x batch {args.batch_size}, {device}")
    for epoch in range(args.start_epoch, args.epochs):
        write_epoch(state, run, run_epoch(state, criterion, data, run, epoch))
    if procs.is_main:
        print(f"done: {run.paths.latest} (best {state.best_psnr:.2f} dB: {run.paths.best}); curves {run.paths.figure}")
    return state
