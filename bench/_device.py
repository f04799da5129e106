"""What the timed bench tools share about the device: synchronising, peak memory, autocast.

    DEVICE = tools.load_bench("_device")
    DEVICE.reset_peak(device); ...; DEVICE.synchronize(device); DEVICE.peak_mb(device)
    with DEVICE.autocast(device, torch.bfloat16): ...

Devices come from runtime.pick_device and autocast dtypes from runtime.AMP_DTYPES.
"""
from contextlib import nullcontext

import torch


def synchronize(device):
    """Wait for the device's queued work, so that a timer read afterwards counts it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    """torch.cuda.max_memory_allocated in MiB since the last reset_peak; None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def autocast(device, dtype):
    """Autocast to `dtype` (None: off) on any device. Not runtime.autocast: that one is CUDA-only, as
    training and inference run fp32 on a CPU, while the checks and bench-model measure CPU autocast too."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
