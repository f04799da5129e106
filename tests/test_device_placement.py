"""Every network, loss and metric keeps its work on its inputs' device.

The suite has no GPU, so each one runs on PyTorch's `meta` device instead: meta tensors carry
shapes, dtypes and devices but no values. A tensor made inside a forward without `device=` (a
grid, a kernel, a mask) would pass every CPU test and fail on the first GPU with "expected all
tensors to be on the same device". Meta kernels check that for element-wise ops but not for
convolutions or matrix products, so every op is watched here (`SameDevice`) with CUDA's rule: the
tensors an op reads are on one device, 0-dim CPU scalars aside. Checks that read values
(`.item()`, `.any()`) cannot run on values that do not exist, so the few that the networks make
are replaced for the test; the values themselves are tested elsewhere.
"""
import contextlib

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import flow
import interpolate
import losses
import lpips_parts
import metrics
import model as asvfi
import pervfi
import pervfi_glow
import raft
import vfips

META = torch.device("meta")
CROSS_DEVICE_OPS = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}  # moves are the point


class SameDevice(TorchDispatchMode):
    """Raises on an op whose tensor inputs (0-dim ones aside) lie on more than one device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in CROSS_DEVICE_OPS:
            tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor) and x.dim() > 0]
            devices = {x.device for x in tensors}
            if len(devices) > 1:
                raise RuntimeError(f"{func} mixes devices {sorted(map(str, devices))}")
        return func(*args, **kwargs)


@pytest.fixture(autouse=True)
def meta_without_values(monkeypatch):
    """autocast knows no meta device (CUDA and CPU autocast are tested in gpu-check); ActNorm's
    first-call initialisation and PerVFI's time-range check read values."""
    real_autocast = torch.autocast

    def autocast(device_type, *args, **kwargs):
        return contextlib.nullcontext() if device_type == "meta" else real_autocast(device_type, *args, **kwargs)

    def initialised_actnorm(self, x, reverse=False):
        if reverse:
            return x * torch.exp(-self.logs) - self.loc
        return (torch.exp(self.logs) + 1e-8) * (x + self.loc), x.shape[2] * x.shape[3] * self.logs.sum()

    monkeypatch.setattr(torch, "autocast", autocast)
    monkeypatch.setattr(pervfi_glow.ActNorm, "forward", initialised_actnorm)
    monkeypatch.setattr(pervfi.PerVFI, "resolve_times",
                        lambda self, ts, batch, device: torch.full((batch, 1), 0.5, device=device))
    with SameDevice():
        yield


def meta_rand(*shape):
    return torch.empty(*shape, device=META)


def backward_through(outputs):
    total = sum(v.float().sum() for v in outputs.values() if torch.is_tensor(v) and v.is_floating_point())
    total.backward()


@pytest.mark.parametrize("mixed", [lambda: meta_rand(2, 3) + torch.ones(2, 3),
                                   lambda: torch.nn.functional.conv2d(meta_rand(1, 3, 8, 8), torch.ones(3, 1, 5, 5),
                                                                      groups=3)])
def test_a_cpu_tensor_mixed_into_meta_work_raises_as_on_cuda(mixed):
    with pytest.raises(RuntimeError, match="device"):
        mixed()


@pytest.mark.parametrize("scale,audio", [(2, "mel"), (4, "mel"), (2, "none")])
def test_asvfi_forward_and_backward_stay_on_the_device(scale, audio):
    network = asvfi.ASVFI(asvfi.default_config(scale=scale, width=0.125, audio=audio)).to(META)
    samples = 4096
    sound = {} if audio == "none" else {
        "audio": meta_rand(2, samples), "audio_times": meta_rand(2, samples),
        "has_audio": torch.ones(2, dtype=torch.bool, device=META)}
    out = network(meta_rand(2, 4, 3, 32, 48), **sound)
    assert out["pred"].device == META and out["pred"].shape == (2, scale - 1, 3, 32, 48)
    backward_through(out)
    assert all(p.grad is None or p.grad.device == META for p in network.parameters())


@pytest.mark.parametrize("training", [False, True])
def test_pervfi_sampling_and_training_stay_on_the_device(training):
    network = pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.125, steps_per_level=2)).to(META)
    network.train(training)
    inputs, flows = meta_rand(1, 4, 3, 32, 48), (meta_rand(1, 2, 32, 48), meta_rand(1, 2, 32, 48))
    target = meta_rand(1, 1, 3, 32, 48) if training else None
    with contextlib.nullcontext() if training else torch.no_grad():
        out = network(inputs, ts=torch.tensor([[0.5]]), target=target, heat=0.0, flows=flows)
    assert out["pred"].device == META and out["pred"].shape == (1, 1, 3, 32, 48)
    if training:
        backward_through(out)


@pytest.mark.parametrize("name", ["lpips", "pwc", "raft", "flolpips", "vfips", "ssim"])
def test_metric_and_flow_networks_stay_on_the_device(name):
    frames = lambda: meta_rand(2, 3, 64, 64)
    with torch.no_grad():
        if name == "lpips":
            out = lpips_parts.LPIPS().to(META)(frames(), frames())
        elif name == "pwc":
            out = flow.PWCNet().to(META)(frames(), frames())
        elif name == "raft":
            out = raft.RAFT(iters=2).to(META)(frames(), frames())
        elif name == "flolpips":
            out = metrics.flolpips_pairs(lpips_parts.LPIPS().to(META), flow.PWCNet().to(META), frames(), frames())
        elif name == "vfips":
            out = vfips.VFIPSNet().to(META)(meta_rand(1, 12, 3, 80, 80), meta_rand(1, 12, 3, 80, 80))
        else:
            out = metrics.ssim(frames(), frames())
    assert out.device == META


@pytest.mark.parametrize("loss", [losses.l1_loss, losses.charbonnier_loss, losses.laplacian_loss,
                                  losses.pervfi_laplacian_loss, losses.ssim_loss])
def test_pixel_losses_stay_on_the_device(loss):
    pred = meta_rand(2, 1, 3, 64, 64).requires_grad_()
    value = loss(pred, meta_rand(2, 1, 3, 64, 64))
    value.backward()
    assert value.device == META and pred.grad.device == META


@pytest.mark.parametrize("tile", [0, 32])
def test_interpolation_engine_batches_and_tiles_on_the_device(tile):
    network = asvfi.ASVFI(asvfi.default_config(scale=2, width=0.125, audio="mel")).to(META).eval()
    engine = interpolate.Engine(network, META, scale=2, tile=tile, tile_overlap=8)
    samples = np.zeros((3, 4096), dtype=np.float32)
    pred = engine.predict(meta_rand(3, 4, 3, 48, 64), samples, samples, has_audio=True)
    assert pred.device == META and pred.shape == (3, 1, 3, 48, 64)
