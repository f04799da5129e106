"""`python tools.py gpu-check`: the speed and distributed steps (contract in bench/_gpu_steps.py).

Timings synchronise the device around each measured call and follow warm-up calls; peak memory
(torch.cuda.max_memory_allocated) is reset before each variant.
"""
import os
import shutil
import subprocess
import sys
import time
from argparse import Namespace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import checkpoints
import dataset
import interpolate
import runs
import tools
from utils import AUDIO_RATE

S = tools.load_bench("_gpu_steps")
DEVICE = tools.load_bench("_device")
BENCH_INFER = tools.load_bench("infer")  # generated clips

# label: (mixed precision, channels_last_3d, audio)
TRAIN_VARIANTS = {"fp32": (False, False, True), "fp32 no audio": (False, False, False),
                  "amp+cl3d": (True, True, True), "amp+cl3d no audio": (True, True, False)}
# label: (scale, mixed precision and batched windows (ours) or fp32 batch 1 (FLAVR's script), audio)
INFER_VARIANTS = {"2x ours": (2, True, True), "2x ours no audio": (2, True, False), "2x fp32 batch 1": (2, False, True),
                  "4x ours": (4, True, True), "4x fp32 batch 1": (4, False, True)}
FEEDING_ENOUGH = 0.9  # loader-fed training at >= 90 % of the synthetic-batch rate: the GPU is not starved


def median(values):
    return float(np.median(values))


# ----------------------------------------------------------------------------- training
def train_speed(check, model, dtype, channels_last, batch=None):
    """Steps/s, windows/s and peak memory of AdamW training steps (L1) at the check's crop."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def measure(size):
        made = S.BENCH_MODEL.to_layout(model, S.asvfi_batch(check, check.sizes.crop, size), channels_last)
        return S.repeat(check, lambda: S.BENCH_MODEL.train_step_ms(model, optimizer, made, check.device, dtype) / 1000)

    DEVICE.reset_peak(check.device)
    try:
        seconds, used = S.halving(measure, batch or check.sizes.batch, check.device)
    finally:
        S.BENCH_MODEL.to_layout(model, {}, False)  # back to the default layout (the batch is not touched)
    step = median(seconds)
    return {"batch": used, "steps_per_s": 1 / step, "windows_per_s": used / step, "ms_per_step": 1000 * step,
            "timed_steps": len(seconds), "peak_mb": DEVICE.peak_mb(check.device)}


def step_train_speed(check, results):
    """FLAVR-size training steps: fp32 vs mixed precision + channels_last_3d, audio on vs off."""
    video_only, with_audio = S.asvfi_pair(check)
    label, dtype = check.fast_dtype()
    results["amp"] = label
    if check.cuda:
        results["fp32_is"] = "torch's default: TF32 convolutions"
    for name, (amp, channels_last, audio) in TRAIN_VARIANTS.items():
        check.on_time()
        results[name] = train_speed(check, with_audio if audio else video_only, dtype if amp else None, channels_last)


def step_train_compile(check, results):
    """The mixed-precision channels_last_3d step through torch.compile: compile time, then steps/s."""
    _, network = S.asvfi_pair(check)
    label, dtype = check.fast_dtype()
    made = S.BENCH_MODEL.to_layout(network, S.asvfi_batch(check, check.sizes.crop, check.sizes.batch), True)
    compiled = torch.compile(network)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    started = time.perf_counter()
    S.BENCH_MODEL.train_step_ms(compiled, optimizer, made, check.device, dtype)
    results["compile_s"] = time.perf_counter() - started
    results["amp"] = label
    results["amp+cl3d+compile"] = train_speed(check, compiled, dtype, True)


# ----------------------------------------------------------------------------- data loading
def loader_batches(data, loader):
    """Batches of the loader for ever (epochs roll over)."""
    epoch = 0
    while True:
        data.set_epoch(epoch)
        yield from loader
        epoch += 1


def windows_per_s(check, batches, work):
    """Windows/s of `work(batch)` over the loader's batches for the check's loader seconds, after warm-up."""
    for _ in range(check.sizes.warmup):  # worker start-up, first decodes, first steps
        work(next(batches))
    seen, started = 0, time.perf_counter()
    while time.perf_counter() - started < check.sizes.loader_seconds:
        batch = next(batches)
        work(batch)
        seen += batch["inputs"].shape[0]
        check.on_time()
    return seen / (time.perf_counter() - started)


def step_data_loader(check, results):
    """dataset.VFIWindows through a DataLoader: windows/s alone, feeding training steps (mixed
    precision on CUDA; fp32 on CPU, as train.py does), and those steps on a fixed batch (what the
    device could take)."""
    S.ensure_demo(check)
    sampling = dataset.Sampling(train=True, crop=check.sizes.crop, windows_per_video=16)
    data = dataset.VFIWindows(check.data_root, "demo", "train", 2, sampling)
    loader = DataLoader(data, batch_size=check.sizes.batch, shuffle=True, num_workers=check.sizes.workers,
                        drop_last=True, persistent_workers=True, pin_memory=check.cuda,
                        generator=torch.Generator().manual_seed(0))
    results["workers"], results["batch"], results["videos"] = check.sizes.workers, check.sizes.batch, len(data.videos)
    batches = loader_batches(data, loader)
    _, network = S.asvfi_pair(check)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    label, dtype = check.train_dtype()

    def train_on(batch):
        made = {"inputs": batch["inputs"], "target": batch["targets"], "audio": batch["audio"],
                "audio_times": batch["audio_times"], "has_audio": batch["has_audio"]}
        made = {k: v.to(check.device, non_blocking=True) for k, v in made.items()}
        S.BENCH_MODEL.train_step_ms(network, optimizer, made, check.device, dtype)

    try:
        results["alone_windows_per_s"] = windows_per_s(check, batches, lambda batch: None)
        results["feeding_windows_per_s"] = windows_per_s(check, batches, train_on)
        fixed = next(batches)
        results["fixed_batch_windows_per_s"] = windows_per_s(check, iter(lambda: fixed, None), train_on)
    finally:
        batches.close()
        del loader
    results["feeding_vs_fixed"] = results["feeding_windows_per_s"] / results["fixed_batch_windows_per_s"]
    results["starves_the_device"] = results["feeding_vs_fixed"] < FEEDING_ENOUGH
    results["amp"] = label


# ----------------------------------------------------------------------------- inference
def infer_speed(check, network, amp, batch):
    """Generated frames/s of the streaming path (interpolate.py) on a generated clip at the check's
    video size, after one warm-up batch; and its peak memory."""
    width, height = check.sizes.video
    engines = interpolate.build_engines(network.eval(), check.device, network.config["scale"],
                                        Namespace(amp=amp, tile=0, tile_overlap=32, seed=0))
    seconds_of_audio = (check.sizes.infer_windows + check.sizes.infer_batch + 2) / 25 + 1
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(AUDIO_RATE * seconds_of_audio))).astype(np.float32)

    def run(windows, size):
        frames = BENCH_INFER.clip(windows + 1, width, height)
        DEVICE.synchronize(check.device)
        started = time.perf_counter()
        count = sum(1 for _ in interpolate.interpolate_video(iter(frames), engines, wave, size, 25))
        DEVICE.synchronize(check.device)
        return count - (windows + 1), time.perf_counter() - started

    def measure(size):
        run(size, size)
        check.on_time()
        return run(check.sizes.infer_windows, size)

    DEVICE.reset_peak(check.device)
    (generated, seconds), used = S.halving(measure, batch, check.device)
    return {"batch": used, "frames_per_s": generated / seconds, "generated": generated,
            "peak_mb": DEVICE.peak_mb(check.device)}


def step_infer_speed(check, results):
    """Interpolated frames/s at the check's video size, 2x and 4x: ours (mixed precision, batched
    windows) vs the same network in fp32 batch 1; 2x also without audio."""
    label, _ = check.fast_dtype()
    results["amp"] = label
    pairs = {}
    for name, (scale, ours, audio) in INFER_VARIANTS.items():
        check.on_time()
        video_only, with_audio = pairs.setdefault(scale, S.asvfi_pair(check, scale))
        results[name] = infer_speed(check, with_audio if audio else video_only, label if ours else None,
                                    check.sizes.infer_batch if ours else 1)
    if not check.cuda:
        results["note"] = "CPU: autocast is CUDA-only in inference (runtime.autocast), ours = fp32 batched"


# ----------------------------------------------------------------------------- distributed
def device_ids(check):
    """DDP's device_ids: the check's GPU (the current one for a bare "cuda"); None on CPU."""
    if not check.cuda:
        return None
    return [torch.cuda.current_device() if check.device.index is None else check.device.index]


def step_ddp(check, results):
    """A one-process group on the device's backend (NCCL on CUDA, gloo on CPU): DDP-wrapped ASVFI,
    one training step (mixed precision on CUDA) with finite gradients, and an all_reduce."""
    backend = "nccl" if check.cuda else "gloo"
    store = check.out / "ddp_store"
    store.unlink(missing_ok=True)
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        results["backend"] = dist.get_backend()
        _, network = S.asvfi_pair(check)
        model = DistributedDataParallel(network, device_ids=device_ids(check))
        label, dtype = check.train_dtype()
        batch = S.asvfi_batch(check, check.sizes.crop, 2)
        results[f"step_{label}"] = S.gradient_check(model, S.l1_loss_of(network, batch), check.device, dtype)
        total = torch.arange(4.0, device=check.device)
        dist.all_reduce(total)
        results["all_reduce"] = {"measured": float(total.sum()), "expected": 6.0, "ok": float(total.sum()) == 6.0}
    finally:
        dist.destroy_process_group()
        store.unlink(missing_ok=True)


def step_torchrun_main(check, results):
    """`torchrun --nproc_per_node=1 main.py`: two training steps and a checkpoint on the generated demo set."""
    S.ensure_demo(check)
    out = check.out / "torchrun"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (main.py keeps existing runs)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
               "--log-dir", str(out / "torchrun_logs"), str(tools.REPO_DIR / "main.py"), "--dataset", "demo", "--data-root", str(check.data_root),
               "--out-dir", str(out),
               "--device", check.device.type, "--width", "0.125", "--crop", str(check.sizes.main_crop),
               "--batch-size", "2", "--windows-per-video", "2", "--val-windows", "2", "--workers", "0",
               "--epochs", "1", "--limit-steps", "2", *(["--amp", check.fast_dtype()[0]] if check.cuda else [])]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    results["command"] = " ".join(["torchrun", *command[3:]])
    try:
        done = subprocess.run(command, cwd=tools.REPO_DIR, env=env, capture_output=True, text=True,
                              timeout=max(check.seconds_left(), 1))
    except subprocess.TimeoutExpired:
        raise S.StepTimeout("torchrun main.py did not finish within the step's budget") from None
    results["returncode"] = done.returncode
    if done.returncode != 0:
        raise RuntimeError(f"torchrun main.py exited with {done.returncode}: {done.stderr[-1500:]}")
    saved = checkpoints.load_checkpoint(runs.checkpoint_path("asvfi", runs.run_name("adamw", "6e-4"), out_dir=out))
    finite = all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    results["checkpoint_weights_finite"] = {"ok": bool(finite)}
    results["train_loss"] = saved["history"][-1]["train_loss"]
    results["process_group"] = (f"{'nccl' if check.cuda else 'gloo'}, one process: torchrun sets WORLD_SIZE, so "
                                "runtime.processes joins a group and train.py wraps the model in DDP")
