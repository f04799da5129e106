"""`python tools.py gpu-check`: what every step shares, and the correctness steps (the speed and
distributed steps are in bench/_gpu_speed.py; bench/gpu_check.py runs, bounds, times and reports them).

A step is `step(check, results)`: it writes what it measures into `results` as it goes (so a step
that fails or runs out of time still leaves what it had), raises on errors, raises SkipStep with a
reason when it does not apply, and calls `check.on_time()` between repetitions. A results entry
with an "ok" key is a judged row (measured value, tolerance, ok); any row with ok False fails the step.

Differences are max |a - b| / max(1, max |b|): absolute for frames in [0, 1] and scores up to 1,
relative for larger values (flows in pixels). Correctness in fp32 runs with TF32 off (the CPU's
math); the default CUDA fp32 (TF32 convolutions) is checked separately with its own tolerance.
"""
import copy
import math
import os
import time
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

import flow
import lpips_parts
import metrics
import pervfi
import prepare
import runtime
import tools
import vfips

DEVICE = tools.load_bench("_device")
BENCH_MODEL = tools.load_bench("model")  # ASVFI pairs with open gates, synthetic batches, timed steps
COMPAT = tools.load_module(tools.REPO_DIR / "tests" / "compat.py", "fixture_compat")  # fixture weights by recipe

TOLERANCES = {
    "asvfi_fp32_vs_cpu": 1e-3,  # TF32 off: other kernels, same math (observed ~1e-6 per layer)
    "asvfi_tf32_vs_cpu": 3e-2,  # CUDA's default fp32: TF32 convolutions keep 10 mantissa bits
    "asvfi_fp32_grad_vs_cpu": 2e-3,  # worst parameter's ||g - g_cpu|| / ||g_cpu||, TF32 off (attention backward)
    "asvfi_bf16_vs_fp32": 6e-2,  # 8 mantissa bits through ~20 layers at FLAVR size, random weights
    "asvfi_fp16_vs_fp32": 1.5e-2,
    "pervfi_fp32_vs_reference": 1e-4,  # the fixture's suggested 1e-5 for a CPU port, x10 for GPU kernels
    "pervfi_bf16_vs_fp32": 6e-2,  # the Glow runs in fp32 under autocast; its conditions do not
    "pervfi_fp16_vs_fp32": 1.5e-2,
    "ssim_vs_cpu": 1e-5,
    "lpips_vs_reference": 1e-4,
    "pwc_flow_vs_reference": 1e-3,
    "flolpips_vs_reference": 1e-4,
    "vfips_vs_reference": 1e-4,
}


class SkipStep(Exception):
    """The step does not apply here; its message says why."""


class StepTimeout(Exception):
    """The step ran past its time budget."""


@dataclass(frozen=True)
class Sizes:
    width: float  # ASVFI channel multiplier (1.0 = FLAVR)
    check_size: int  # square frames of the correctness checks
    crop: int  # training crop (square)
    batch: int  # training batch (halved on out-of-memory)
    video: tuple  # (W, H) of the inference timing
    infer_batch: int  # windows per batch of our inference path (halved on out-of-memory)
    infer_windows: int  # timed windows per inference variant
    reps: int  # timed training steps per variant
    warmup: int
    loader_seconds: float  # per data-loader phase
    workers: int
    main_crop: int  # crop of the torchrun run of main.py
    small_pervfi: bool  # autocast/gradient checks on a small PerVFI (CPU bf16 convolutions are ~40x fp32)
    demo: dict = field(default_factory=dict)  # prepare.build_demo options of the generated data set


FULL = Sizes(width=1.0, check_size=128, crop=256, batch=8, video=(1280, 720), infer_batch=8, infer_windows=48,
             reps=6, warmup=2, loader_seconds=8.0, workers=min(8, os.cpu_count() or 1), main_crop=64,
             small_pervfi=False, demo=dict(categories=["PulsingDisc", "BouncingBall"], groups=4, clips=2,
                                           frames=48, size=(352, 288)))
TINY = Sizes(width=0.125, check_size=32, crop=16, batch=2, video=(64, 48), infer_batch=2, infer_windows=4, reps=1,
             warmup=1, loader_seconds=0.5, workers=1, main_crop=32, small_pervfi=True,
             demo=dict(categories=["PulsingDisc", "BouncingBall"], groups=4, clips=1, frames=24, size=(64, 48)))


@dataclass(frozen=True)
class Check:
    device: torch.device
    sizes: Sizes
    out: Path
    data_root: Path
    deadline: float = math.inf  # time.perf_counter() at which the running step is out of time

    @property
    def cuda(self):
        return self.device.type == "cuda"

    def seconds_left(self):
        return self.deadline - time.perf_counter()

    def on_time(self):
        if self.seconds_left() <= 0:
            raise StepTimeout("ran past its time budget")

    def amp_dtypes(self):
        """(label, dtype) of the autocast modes this device runs (CPU autocast takes both)."""
        bf16 = not self.cuda or torch.cuda.is_bf16_supported()
        return [(label, dtype) for label, dtype in runtime.AMP_DTYPES.items() if bf16 or label != "bf16"]

    def fast_dtype(self):
        """Our mixed precision: bf16 where supported, else fp16."""
        return self.amp_dtypes()[0]

    def train_dtype(self):
        """What training runs in: our mixed precision on CUDA, fp32 elsewhere (train.py's --amp rule)."""
        return self.fast_dtype() if self.cuda else ("fp32", None)


# ----------------------------------------------------------------------------- helpers
def ensure_demo(check):
    """The demo set of the check's size under its data root, generated once (kept between runs)."""
    prepare.ensure_demo(check.data_root, seed=0, show_progress=False, **check.sizes.demo)


def difference(actual, expected):
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    return (actual - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def within(name, measured):
    tolerance = TOLERANCES[name]
    return {"measured": measured, "tolerance": tolerance, "ok": measured <= tolerance}


@contextmanager
def strict_fp32():
    """TF32 off for matmuls and convolutions (a no-op on CPU), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def halving(measure, batch, device):
    """(measure(batch), batch) for the largest batch <= `batch` (halving) that fits in memory."""
    while True:
        try:
            return measure(batch), batch
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        batch //= 2  # out of the handler: the failed attempt's tensors went with its traceback
        torch.cuda.empty_cache()
        DEVICE.reset_peak(device)


def repeat(check, run):
    """Seconds of `run()` (which returns its own synchronised seconds) after warm-up; stops early,
    with what it has, when the step's time is up."""
    for _ in range(check.sizes.warmup):
        run()
        check.on_time()
    seconds = []
    while len(seconds) < check.sizes.reps and (not seconds or check.seconds_left() > 0):
        seconds.append(run())
    return seconds


def asvfi_pair(check, scale=2, device=None):
    """(video-only, with-audio) ASVFI of the check's width with shared video weights and gates at 0.1."""
    spec = Namespace(scale=scale, width=check.sizes.width, depth="unet_18", fuse_decoder=1)
    return BENCH_MODEL.build_pair(spec, device or check.device)


def asvfi_batch(check, size, batch, device=None):
    """A synthetic training batch; the last window has no audio, so the no-audio token is used too."""
    spec = Namespace(batch=batch, scale=2, size=size, fps=25.0)
    made = BENCH_MODEL.make_batch(spec, device or check.device)
    made["has_audio"][-1] = False
    return made


def predict(network, batch, dtype=None):
    network.eval()
    with torch.no_grad(), DEVICE.autocast(batch["inputs"].device, dtype):
        return network(batch["inputs"], **BENCH_MODEL.audio_kwargs(network, batch))["pred"].float()


def fixture_network(network, name, device):
    fixture = COMPAT.load_fixture(name)
    network.load_state_dict(COMPAT.recipe_state(fixture, network), strict=True)
    return network.eval().to(device), fixture


def pervfi_case(check, small):
    """(network, inputs, flows, target): the official PerVFI with the fixture's weights and inputs, or
    a small one with weights moved off their (often zero) initialisation and ActNorms set from data."""
    if not small:
        network, fixture = fixture_network(pervfi.build_pervfi(pervfi.default_pervfi_config()),
                                           "pervfi_compat.pt", check.device)
        given = {k: v.to(check.device) for k, v in fixture["inputs"].items() if torch.is_tensor(v)}
        inputs = torch.stack([given["img0"], given["img0"], given["img1"], given["img1"]], 1)
        return network, inputs, (given["fflow"], given["bflow"]), given["gt_t0p5"][:, None]
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    network = pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.125, steps_per_level=2))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    size = check.sizes.check_size
    inputs = torch.rand(1, 4, 3, size, size, generator=generator)
    flows = tuple(2 * torch.randn(1, 2, size, size, generator=generator) for _ in range(2))
    target = inputs[:, 1:2].roll(1, dims=-1)
    network = network.to(check.device).eval()
    moved = [t.to(check.device) for t in (inputs, *flows, target)]
    with torch.no_grad():
        network(moved[0], ts=torch.tensor([[0.5]]), target=moved[3], heat=0.0, flows=moved[1:3])
    return network, moved[0], tuple(moved[1:3]), moved[3]


def pervfi_sample(network, inputs, flows, dtype=None):
    network.eval()
    with torch.no_grad(), DEVICE.autocast(inputs.device, dtype):
        return network(inputs, ts=torch.tensor([[0.5]]), heat=0.0, flows=flows)["pred"].float()


def gradient_check(network, loss_of, device, dtype):
    """One training step's backward under autocast: loss, and parameters without or with non-finite
    gradients. fp16 goes through a GradScaler; an overflowing scale is halved and the step redone,
    as the scaler's skipped steps would do."""
    network.train()
    scale, attempts = 2.0 ** 16, 0
    while True:
        attempts += 1
        network.zero_grad(set_to_none=True)
        scaler = torch.amp.GradScaler(device.type, init_scale=scale) if dtype == torch.float16 else None
        with DEVICE.autocast(device, dtype):
            loss = loss_of(network)
        (scaler.scale(loss) if scaler else loss).backward()
        grads = [(name, p.grad) for name, p in network.named_parameters() if p.requires_grad]
        bad = [name for name, g in grads if g is not None and not torch.isfinite(g).all()]
        if not (scaler and bad and attempts < 12):
            break
        scale /= 2
    missing = [name for name, g in grads if g is None]
    return {"loss": loss.item(), "parameters": len(grads), "missing_grad": len(missing), "non_finite_grad": len(bad),
            "grad_scale": scale if scaler else None, "attempts": attempts, "first_problems": (missing + bad)[:3],
            "ok": math.isfinite(loss.item()) and not missing and not bad}


def fp32_gradients(network, batch):
    """{name: gradient} of one fp32 training step's L1 loss (the weights are not updated)."""
    network.train()
    network.zero_grad(set_to_none=True)
    l1_loss_of(network, batch)(network).backward()
    grads = {name: p.grad.detach().double().cpu() for name, p in network.named_parameters() if p.grad is not None}
    network.zero_grad(set_to_none=True)
    return grads


def gradient_difference(actual, expected):
    """(worst relative difference ||a - b|| / ||b||, its parameter) over parameters; ||b|| is floored at
    1e-3 of the largest gradient norm, so near-zero gradients compare on the network's scale. A
    parameter with a gradient in one set only counts as 1."""
    if set(actual) != set(expected):
        return 1.0, sorted(set(actual) ^ set(expected))[0]
    floor = 1e-3 * max(g.norm().item() for g in expected.values())
    worst = max((((actual[k] - g).norm().item() / max(g.norm().item(), floor, 1e-30)), k) for k, g in expected.items())
    return worst


def l1_loss_of(network, batch):
    """loss(model) on the batch, for `network` or a wrapper of it (DDP)."""
    kwargs = BENCH_MODEL.audio_kwargs(network, batch)
    return lambda model: (model(batch["inputs"], **kwargs)["pred"].float() - batch["target"]).abs().mean()


# ----------------------------------------------------------------------------- correctness
def step_asvfi_correctness(check, results):
    """ASVFI with audio: the device's fp32 output and gradients vs the CPU's, and bf16/fp16 autocast
    outputs vs fp32."""
    cpu = torch.device("cpu")
    _, network = asvfi_pair(check, device=cpu)
    batch = asvfi_batch(check, check.sizes.check_size, 2, device=cpu)
    reference = predict(network, batch)
    on_device = copy.deepcopy(network).to(check.device)
    moved = {k: v.to(check.device) for k, v in batch.items()}
    results["parameters"] = sum(p.numel() for p in network.parameters())
    with strict_fp32():
        results["fp32_vs_cpu"] = within("asvfi_fp32_vs_cpu", difference(predict(on_device, moved), reference))
        # the backward too: the fused attention kernels a GPU picks have their own gradient code
        measured, worst = gradient_difference(fp32_gradients(on_device, moved), fp32_gradients(network, batch))
        results["fp32_grad_vs_cpu"] = {**within("asvfi_fp32_grad_vs_cpu", measured), "worst": worst}
    fp32 = predict(on_device, moved)
    if check.cuda:
        results["tf32_vs_cpu"] = within("asvfi_tf32_vs_cpu", difference(fp32, reference))
    for label, dtype in check.amp_dtypes():
        check.on_time()
        results[f"{label}_vs_fp32"] = within(f"asvfi_{label}_vs_fp32", difference(predict(on_device, moved, dtype), fp32))


def step_pervfi_correctness(check, results):
    """PerVFI (fixture weights, given flows, heat 0) vs the reference's CPU output; autocast vs fp32."""
    network, inputs, flows, _ = pervfi_case(check, small=False)
    fixture = COMPAT.load_fixture("pervfi_compat.pt")
    with strict_fp32():
        pred = pervfi_sample(network, inputs, flows)
    results["fp32_vs_reference"] = within("pervfi_fp32_vs_reference",
                                          difference(pred[:, 0], fixture["outputs"]["pred_t0p5_heat0"]))
    if check.sizes.small_pervfi:
        results["autocast_on"] = "a small PerVFI (width 0.125, K=2): CPU bf16 convolutions are ~40x slower"
        network, inputs, flows, _ = pervfi_case(check, small=True)
    fp32 = pervfi_sample(network, inputs, flows)
    for label, dtype in check.amp_dtypes():
        check.on_time()
        results[f"{label}_vs_fp32"] = within(f"pervfi_{label}_vs_fp32",
                                             difference(pervfi_sample(network, inputs, flows, dtype), fp32))


def step_metric_networks(check, results):
    """SSIM vs the CPU; LPIPS, PWC-Net flow, FloLPIPS and VFIPS (fixture weights) vs the reference
    code's recorded CPU outputs."""
    device = check.device
    lpips, lpips_fixture = fixture_network(lpips_parts.LPIPS(), "lpips_alex_compat.pt", device)
    pwc, pwc_fixture = fixture_network(flow.PWCNet(), "pwcnet_compat.pt", device)
    vfips_net, vfips_fixture = fixture_network(vfips.VFIPSNet(), "vfips_compat.pt", device)
    moved = lambda fixture: {k: v.to(device) for k, v in fixture["inputs"].items() if torch.is_tensor(v)}
    lp, pw, vf = moved(lpips_fixture), moved(pwc_fixture), moved(vfips_fixture)
    frames = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), strict_fp32():
        results["ssim_vs_cpu"] = within("ssim_vs_cpu", difference(metrics.ssim(*frames.to(device)),
                                                                  metrics.ssim(*frames)))
        results["lpips_vs_reference"] = within("lpips_vs_reference", difference(
            lpips(lp["img0"], lp["img1"]), lpips_fixture["outputs"]["lpips_dist"].flatten()))
        results["pwc_flow_vs_reference"] = within("pwc_flow_vs_reference", difference(
            pwc(pw["first"], pw["second"]), pwc_fixture["outputs"]["flow"]))
        results["flolpips_vs_reference"] = within("flolpips_vs_reference", difference(
            metrics.flolpips_pairs(lpips, pwc, pw["video_ref"], pw["video_dis"]),
            pwc_fixture["outputs"]["flolpips_video_per_pair"]))
        results["vfips_vs_reference"] = within("vfips_vs_reference", difference(
            vfips_net(vf["ref"], vf["dis"]), vfips_fixture["outputs"]["score"]))


def step_train_gradients(check, results):
    """One training step under each autocast mode (fp16 with a GradScaler): finite gradients in every
    parameter of ASVFI (audio on, L1) and PerVFI (NLL + L1)."""
    _, network = asvfi_pair(check)
    batch = asvfi_batch(check, check.sizes.crop, 2)
    for label, dtype in check.amp_dtypes():
        check.on_time()
        results[f"asvfi_{label}"] = gradient_check(network, l1_loss_of(network, batch), check.device, dtype)
    network, inputs, flows, target = pervfi_case(check, small=check.sizes.small_pervfi)

    def pervfi_loss(model):
        out = model(inputs, ts=torch.tensor([[0.5]]), target=target, flows=flows)
        return out["nll"].mean() + (out["pred"].float() - target).abs().mean()

    for label, dtype in check.amp_dtypes():
        check.on_time()
        results[f"pervfi_{label}"] = gradient_check(network, pervfi_loss, check.device, dtype)
