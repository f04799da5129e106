"""The training loop: one `train(args)` that reads top to bottom.

seed → data (DistributedSampler, also in a single process, so the shuffling is a function of the
seed and the epoch) → network from its config → optimiser + scheduler → (resume) → epochs of
training steps, each followed by validation (loss, PSNR, SSIM on the val windows, summed over
processes) → checkpoints, curves and a log written by process 0 while the others wait.

Checkpoints (DESIGN §3) are plain dicts loadable with `torch.load(weights_only=True)`: model,
config, state_dict (no `module.` prefix), optimizer, scheduler, scaler, epoch (finished epochs),
best_psnr, args (plain types), history (the per-epoch log) and rng (each process's torch, CUDA,
numpy and python RNG states as tensors and numbers). Resuming restores all of it, so 2 epochs in
one go and 1 epoch + `--start_epoch 1` produce the same weights.

A non-finite loss (training or validation) stops the run before anything is written, so the
last good checkpoint stays as it was.
"""
import csv
import io
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

import checkpoints
import losses
import metrics
import prepare
import runs
import runtime
import utils
import model as model_lib
from dataset import VFIWindows

BATCH_TENSORS = ("inputs", "targets", "audio", "audio_times", "has_audio", "ts")


class TrainingStopped(RuntimeError):
    """Ends a run with a message for the user instead of a traceback (main.py prints it)."""


class NonFiniteLoss(TrainingStopped):
    pass


class ResumeError(TrainingStopped):
    pass


# ----------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Processes:
    """This process's place in a DDP job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls):
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def sum(self, values, device):
        """Element-wise sum of a list of floats over all processes."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered


# ----------------------------------------------------------------------------- run outputs
@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: latest/best/snapshot checkpoints, curves figure and CSV log."""
    root: Path
    model: str
    run: str
    tag: str = None

    @property
    def latest(self):
        return self.root / runs.checkpoint_path(self.model, self.run)

    @property
    def best(self):
        """`best_<model>.pth` (DESIGN §3); a tagged run (an ablation arm) gets `best_<model>_<tag>.pth`
        so that it never replaces the main run's best model."""
        path = self.root / runs.best_checkpoint_path(self.model)
        return path.with_name(f"{path.stem}_{self.tag}{path.suffix}") if self.tag else path

    def snapshot(self, epoch):
        return self.root / runs.checkpoint_path(self.model, self.run, epoch)

    @property
    def figure(self):
        return self.root / "figs" / f"{self.run}.png"

    @property
    def log(self):
        return self.root / "figs" / f"{self.run}.csv"


def run_paths(args):
    return RunPaths(Path(args.out_dir), args.model, runs.run_name(args.optimizer, args.lr, args.tag), args.tag)


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

    Process 0 generates the demo data on first use while the others wait.
    """
    if procs.is_main:
        prepare.ensure_dataset(args.data_root, args.dataset)
    procs.barrier()
    crop = args.crop or None
    train_set = VFIWindows(args.data_root, args.dataset, "train", args.scale, crop=crop, train=True,
                           windows_per_video=args.windows_per_video, seed=args.random_seed)
    val_set = VFIWindows(args.data_root, args.dataset, "val", args.scale, crop=args.val_crop or None, train=False)
    if args.val_windows and len(val_set) > args.val_windows:
        keep = np.unique(np.round(np.linspace(0, len(val_set) - 1, args.val_windows)).astype(int))
        val_set = Subset(val_set, keep.tolist())
    return train_set, val_set


def train_loader(train_set, args, procs):
    sampler = DistributedSampler(train_set, num_replicas=procs.world, rank=procs.rank, shuffle=True,
                                 seed=args.random_seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=torch.device(args.device).type == "cuda")
    steps = len(loader) if not args.limit_steps else min(len(loader), args.limit_steps)
    if steps == 0:
        raise TrainingStopped(f"{train_set.csv_path}: the train split gives {len(sampler)} windows per process, "
                              f"fewer than --batch_size {args.batch_size}; raise --windows-per-video")
    return loader, sampler, steps


def val_loader(val_set, args, procs):
    """Each process validates its own share (no padding, so every window counts once)."""
    shard = Subset(val_set, list(range(procs.rank, len(val_set), procs.world)))
    return DataLoader(shard, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)


def to_device(batch, device):
    return {k: batch[k].to(device, non_blocking=True) for k in BATCH_TENSORS}


# ----------------------------------------------------------------------------- model and optimiser
def model_config(args):
    """The network config: the model's defaults with the flags that were given."""
    overrides = {"scale": args.scale, "depth": args.depth, "width": args.width, "audio": args.audio}
    return model_lib.default_config(model=args.model, **{k: v for k, v in overrides.items() if v is not None})


def build_network(args, config, device):
    network = model_lib.build_model(config)
    if args.pretrained:
        model_lib.load_flavr_weights(network, args.pretrained)
    if hasattr(network, "set_flow_estimator"):  # PerVFI's frozen flow may need pretrained files
        network.set_flow_estimator(weights_dir=args.weights_dir)
    return network.to(device)


def build_optimizer(args, network):
    """The optimiser; ASVFI's audio gates get `--gate-lr-mult` × the learning rate in a group of their own."""
    gates = {id(p) for p in (network.audio.gates() if getattr(network, "uses_audio", False) else [])}
    trainable = [p for p in network.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in gates], "lr": float(args.lr)}]
    if gates:
        groups.append({"params": [p for p in trainable if id(p) in gates], "lr": float(args.lr) * args.gate_lr_mult})
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    return kinds[args.optimizer](groups, betas=(args.beta1, args.beta2))


def build_scheduler(args, optimizer, steps_per_epoch):
    """(scheduler or None, steps every batch?). Cosine: once per epoch, from --lr to 0 at --epochs;
    one-cycle (PerVFI): every step over all --epochs."""
    if args.scheduler == "cosine":
        epochs = args.epochs
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))), False
    if args.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=args.epochs * steps_per_epoch), True
    return None, False


def follow_schedule(scheduler, optimizer):
    """After a resume, set the learning rate the cosine curve of the *current* --epochs gives at the
    restored epoch: a run resumed with a larger --epochs continues on the longer curve (the
    one-cycle schedule cannot be stretched; resume_checkpoint refuses that case)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)


def predict(network, batch, args, device, target=None):
    """Forward pass under autocast; outputs come back as float32 for the losses and metrics."""
    with runtime.autocast(device, args.amp):
        out = network(batch["inputs"], audio=batch["audio"], audio_times=batch["audio_times"],
                      has_audio=batch["has_audio"], ts=batch["ts"], target=target)
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}


# ----------------------------------------------------------------------------- one epoch
def train_one_epoch(net, optimizer, scheduler, step_scheduler_per_batch, scaler, criterion, loader, steps,
                    args, device, procs, epoch, paths):
    """Mean loss and terms over the epoch (averaged over processes)."""
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    sums = np.zeros(1 + len(criterion.names))
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not procs.is_main,
               leave=False, dynamic_ncols=True)
    for step, batch in enumerate(loader):
        if step == steps:
            break
        batch = to_device(batch, device)
        out = predict(net, batch, args, device, target=batch["targets"])
        loss, terms = criterion(out, batch["targets"])
        values = procs.sum([float(loss.detach())] + [terms[n] for n in criterion.names], device)
        values = np.array(values) / procs.world
        if not math.isfinite(values[0]):
            stop_on_non_finite(values[0], f"epoch {epoch + 1}, step {step + 1}", criterion.names, values[1:], paths)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None and step_scheduler_per_batch:
            scheduler.step()
        sums += values
        bar.update()
        bar.set_postfix(loss=f"{values[0]:.4f}")
    bar.close()
    means = sums / steps
    return {"train_loss": float(means[0]), **{f"train_{n}": float(v) for n, v in zip(criterion.names, means[1:])}}


@torch.no_grad()
def validate(network, criterion, loader, args, device, procs):
    """Val loss (per window), PSNR and SSIM (per generated frame), summed over all processes."""
    network.eval()
    n_terms = len(criterion.names)
    sums = [0.0] * (5 + n_terms)  # loss·B, PSNR sum, SSIM sum, frames, windows, then each term·B
    for batch in loader:
        batch = to_device(batch, device)
        out = predict(network, batch, args, device, target=batch["targets"])
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
    total = procs.sum(sums, device)
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


def checkpoint_dict(args, config, network, optimizer, scheduler, scaler, epoch, best_psnr, history, rng):
    return {
        "model": args.model,
        "config": config,
        "state_dict": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "best_psnr": best_psnr,
        "args": plain_args(args),
        "history": history,
        "rng": rng,
    }


def save_epoch(checkpoint, paths, args, is_best):
    """Latest (always), best (when val PSNR improved), epoch snapshot (with --save-every)."""
    checkpoints.save(checkpoint, paths.latest)
    if is_best:
        checkpoints.save(checkpoint, paths.best)
    if args.save_every and checkpoint["epoch"] % args.save_every == 0:
        checkpoints.save(checkpoint, paths.snapshot(checkpoint["epoch"]))


def resume_checkpoint(args, paths, config):
    """The checkpoint after `--start_epoch` finished epochs: the latest one, or its epoch snapshot."""
    start = args.start_epoch
    if not paths.latest.is_file():
        raise ResumeError(f"--start_epoch {start}: no checkpoint {paths.latest} to resume run {paths.run} from "
                          f"(check --optimizer/--lr/--tag/--model/--out-dir, or train from --start_epoch 0)")
    latest = load_for_resume(paths.latest, args, config)
    if latest["epoch"] == start:
        return paths.latest, latest
    if paths.snapshot(start).is_file():
        return paths.snapshot(start), load_for_resume(paths.snapshot(start), args, config)
    raise ResumeError(f"--start_epoch {start}: {paths.latest} holds epoch {latest['epoch']} and there is no "
                      f"snapshot {paths.snapshot(start)}; use --start_epoch {latest['epoch']}")


def load_for_resume(path, args, config):
    """A checkpoint of this run's model and config, or a ResumeError naming the file."""
    try:
        checkpoint = model_lib.load_checkpoint_state(path, expect_config=config)
    except ValueError as error:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {error}; resume with the flags the run "
                          f"was started with") from None
    if checkpoint.get("model") != args.model:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {path} holds a {checkpoint.get('model')!r} model, "
                          f"not {args.model!r}")
    trained_with = checkpoint.get("args", {}).get("scheduler")
    if trained_with != args.scheduler:
        raise ResumeError(f"--start_epoch {args.start_epoch}: {path} was trained with --scheduler {trained_with}, "
                          f"not {args.scheduler}")
    return checkpoint


def restore(path, checkpoint, network, optimizer, scheduler, scaler, procs):
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and \
            checkpoint["scheduler"]["total_steps"] != scheduler.total_steps:
        raise ResumeError(f"{path}: its one-cycle schedule spans {checkpoint['scheduler']['total_steps']} steps, "
                          f"this run {scheduler.total_steps}; resume with the same --epochs, --batch_size, "
                          f"--windows-per-video and --limit-steps")
    network.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint["scheduler"] is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        follow_schedule(scheduler, optimizer)
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    states = checkpoint["rng"]
    restore_rng(states[procs.rank] if len(states) == procs.world else states[0])


# ----------------------------------------------------------------------------- curves and log
def write_log(path, history):
    columns = list(dict.fromkeys(k for record in history for k in record))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    utils.atomic_write_text(path, text.getvalue())


def plot_curves(path, history, run):
    """Train/val loss and val PSNR per epoch (Agg canvas: no pyplot state, works headless)."""
    epochs = [r["epoch"] for r in history]
    figure = Figure(figsize=(10, 4), tight_layout=True)
    FigureCanvasAgg(figure)
    loss_axis, psnr_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    loss_axis.set(xlabel="epoch", ylabel="loss", title=f"{run}: loss")
    loss_axis.legend()
    psnr_axis.plot(epochs, [r["val_psnr"] for r in history], "o-", color="tab:green")
    psnr_axis.set(xlabel="epoch", ylabel="PSNR (dB)", title=f"{run}: validation PSNR")
    for axis in (loss_axis, psnr_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    utils.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def summary_line(record, args, is_best):
    return (f"epoch {record['epoch']}/{args.epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  PSNR {record['val_psnr']:.2f} dB  SSIM {record['val_ssim']:.4f}  "
            f"lr {record['lr']:.3g}  {record['seconds']:.1f} s" + ("  (best)" if is_best else ""))


# ----------------------------------------------------------------------------- the loop
def train(args):
    procs = Processes.current()
    device = torch.device(args.device)
    paths = run_paths(args)
    seed_everything(args.random_seed)
    if args.amp and device.type != "cuda" and procs.is_main:
        print(f"note: --amp {args.amp} applies to CUDA only; training in float32 on {device}")

    config = model_config(args)
    network = build_network(args, config, device)
    criterion = losses.build_criterion(args.loss, weights_dir=args.weights_dir)
    train_set, val_set = build_datasets(args, procs)
    loader, sampler, steps = train_loader(train_set, args, procs)
    validation = val_loader(val_set, args, procs)
    optimizer = build_optimizer(args, network)
    scheduler, per_batch = build_scheduler(args, optimizer, steps)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" and device.type == "cuda" else None

    history, best_psnr = [], -math.inf
    if args.start_epoch > 0:
        path, checkpoint = resume_checkpoint(args, paths, config)
        restore(path, checkpoint, network, optimizer, scheduler, scaler, procs)
        history, best_psnr = list(checkpoint["history"]), checkpoint["best_psnr"]
        if procs.is_main:
            print(f"resumed {path} (epoch {checkpoint['epoch']}, best PSNR {best_psnr:.2f} dB)")
    net = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None) \
        if procs.world > 1 else network

    if procs.is_main:
        n_params = sum(p.numel() for p in network.parameters())
        print(f"run {paths.run}: {args.model} {n_params / 1e6:.2f}M params, loss {args.loss}, {args.optimizer} "
              f"lr {args.lr} ({args.scheduler}); {args.dataset} {len(train_set)} train / {len(val_set)} val windows, "
              f"{steps} steps/epoch x {procs.world} process(es) x batch {args.batch_size}, {device}")

    for epoch in range(args.start_epoch, args.epochs):
        started = time.time()
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        record = {"epoch": epoch + 1}
        record.update(train_one_epoch(net, optimizer, scheduler, per_batch, scaler, criterion, loader, steps,
                                      args, device, procs, epoch, paths))
        if scheduler is not None and not per_batch:
            scheduler.step()
        record.update(validate(network, criterion, validation, args, device, procs))
        if not math.isfinite(record["val_loss"]):
            stop_on_non_finite(record["val_loss"], f"validation after epoch {epoch + 1}",
                               criterion.names, [record[f"val_{n}"] for n in criterion.names], paths)
        record.update(lr=lr, seconds=time.time() - started)
        history.append(record)
        is_best = record["val_psnr"] > best_psnr
        best_psnr = max(best_psnr, record["val_psnr"])
        rng = procs.gather(rng_state())
        if procs.is_main:
            save_epoch(checkpoint_dict(args, config, network, optimizer, scheduler, scaler, epoch + 1, best_psnr,
                                       history, rng), paths, args, is_best)
            write_log(paths.log, history)
            plot_curves(paths.figure, history, paths.run)
            tqdm.write(summary_line(record, args, is_best))
        procs.barrier()

    if args.save_rank_states:
        checkpoints.save(network.state_dict(), Path(args.save_rank_states) / f"rank{procs.rank}.pth")
    if procs.is_main:
        print(f"done: {paths.latest} (best {best_psnr:.2f} dB: {paths.best}); curves {paths.figure}")
    return history
