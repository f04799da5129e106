"""Every network, loss and metric keeps its work on its inputs' device.

The suite has no GPU, so each one runs on PyTorch's `meta` device instead: meta tensors carry
shapes, dtypes and devices but no values. A tensor made inside a forward without `device=` (a
grid, a kernel, a mask) would pass every CPU test and fail on the first GPU with "expected all
tensors to be on the same device". Meta kernels check that for element-wise ops but not for
convolutions or matrix products, so every op is watched here (`SameDevice`) with CUDA's rule: the
tensors an op reads are on one device, 0-dim CPU scalars aside. Checks that read values
(`.item()`, `.any()`) cannot run on values that do not exist, so the few that the networks make
are answered on the CPU for the test; the values themselves are tested elsewhere.
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
    """autocast knows no meta device (CUDA and CPU autocast are tested in gpu-check); PerVFI's
    time-range check reads values, so it runs on the CPU and its result moves to the device."""
    real_autocast, real_resolve_times = torch.autocast, pervfi.PerVFI.resolve_times

    def autocast(device_type, *args, **kwargs):
        return contextlib.nullcontext() if device_type == "meta" else real_autocast(device_type, *args, **kwargs)

    def resolve_times_on_the_cpu(self, ts, batch, device):
        return real_resolve_times(self, ts, batch, torch.device("cpu")).to(device)

    monkeypatch.setattr(torch, "autocast", autocast)
    monkeypatch.setattr(pervfi.PerVFI, "resolve_times", resolve_times_on_the_cpu)
    with SameDevice():
        yield


def with_actnorms_initialised(network):
    """ActNorm asks its `initialized` flag for a value on every call: a 0-dim CPU flag set to 1
    answers it (a 0-dim CPU tensor may sit beside device tensors, as on CUDA) and skips the
    data-dependent initialisation, which needs values."""
    for module in network.modules():
        if isinstance(module, pervfi_glow.ActNorm):
            module.initialized = torch.ones((), dtype=torch.uint8)
    return network


def meta_tensor(*shape):
    return torch.empty(*shape, device=META)


def backward_through(outputs):
    total = sum(v.float().sum() for v in outputs.values() if torch.is_tensor(v) and v.is_floating_point())
    total.backward()


@pytest.mark.parametrize("mixed", [lambda: meta_tensor(2, 3) + torch.ones(2, 3),
                                   lambda: torch.nn.functional.conv2d(meta_tensor(1, 3, 8, 8), torch.ones(3, 1, 5, 5),
                                                                      groups=3)])
def test_a_cpu_tensor_mixed_into_meta_work_raises_as_on_cuda(mixed):
    with pytest.raises(RuntimeError, match="device"):
        mixed()


@pytest.mark.parametrize("scale,audio", [(2, "mel"), (4, "mel"), (2, "none")])
def test_asvfi_forward_and_backward_stay_on_the_device(scale, audio):
    network = asvfi.ASVFI(asvfi.default_config(scale=scale, width=0.125, audio=audio)).to(META)
    samples = 4096
    sound = {} if audio == "none" else {
        "audio": meta_tensor(2, samples), "audio_times": meta_tensor(2, samples),
        "has_audio": torch.ones(2, dtype=torch.bool, device=META)}
    out = network(meta_tensor(2, 4, 3, 32, 48), **sound)
    assert out["pred"].device == META and out["pred"].shape == (2, scale - 1, 3, 32, 48)
    backward_through(out)
    assert all(p.grad is None or p.grad.device == META for p in network.parameters())


@pytest.mark.parametrize("training", [False, True])
def test_pervfi_sampling_and_training_stay_on_the_device(training):
    network = with_actnorms_initialised(
        pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.125, steps_per_level=2)).to(META))
    network.train(training)
    inputs, flows = meta_tensor(1, 4, 3, 32, 48), (meta_tensor(1, 2, 32, 48), meta_tensor(1, 2, 32, 48))
    target = meta_tensor(1, 1, 3, 32, 48) if training else None
    with contextlib.nullcontext() if training else torch.no_grad():
        out = network(inputs, ts=torch.tensor([[0.5]]), target=target, heat=0.0, flows=flows)
    assert out["pred"].device == META and out["pred"].shape == (1, 1, 3, 32, 48)
    if training:
        backward_through(out)


def frames():
    return meta_tensor(2, 3, 64, 64)


NETWORK_CALLS = {
    "lpips": lambda: lpips_parts.LPIPS().to(META)(frames(), frames()),
    "pwc": lambda: flow.PWCNet().to(META)(frames(), frames()),
    "raft": lambda: raft.RAFT(iters=2).to(META)(frames(), frames()),
    "flolpips": lambda: metrics.flolpips_pairs(lpips_parts.LPIPS().to(META), flow.PWCNet().to(META),
                                               frames(), frames()),
    "vfips": lambda: vfips.VFIPSNet().to(META)(meta_tensor(1, 12, 3, 80, 80), meta_tensor(1, 12, 3, 80, 80)),
    "ssim": lambda: metrics.ssim(frames(), frames()),
}


@pytest.mark.parametrize("name", NETWORK_CALLS)
def test_metric_and_flow_networks_stay_on_the_device(name):
    with torch.no_grad():
        out = NETWORK_CALLS[name]()
    assert out.device == META


@pytest.mark.parametrize("loss", [losses.l1_loss, losses.charbonnier_loss, losses.laplacian_loss,
                                  losses.pervfi_laplacian_loss, losses.ssim_loss])
def test_pixel_losses_stay_on_the_device(loss):
    pred = meta_tensor(2, 1, 3, 64, 64).requires_grad_()
    value = loss(pred, meta_tensor(2, 1, 3, 64, 64))
    value.backward()
    assert value.device == META and pred.grad.device == META


@pytest.mark.parametrize("tile", [0, 32])
def test_interpolation_engine_batches_and_tiles_on_the_device(tile):
    network = asvfi.ASVFI(asvfi.default_config(scale=2, width=0.125, audio="mel")).to(META).eval()
    engine = interpolate.Engine(network, META, scale=2, tile=tile, tile_overlap=8)
    samples = np.zeros((3, 4096), dtype=np.float32)
    pred = engine.predict(meta_tensor(3, 4, 3, 48, 64), samples, samples, True, [0, 1, 2])
    assert pred.device == META and pred.shape == (3, 1, 3, 48, 64)
