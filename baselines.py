"""Training-free interpolators that every results table shows: repeat, blend, DIS optical flow.

They follow the model contract (forward(inputs (B,4,3,H,W), ..., ts) -> {"pred": (B,n,3,H,W)}),
so inference.py and evaluate.py treat them exactly like a trained network. They use only the
two frames around the target interval (inputs[:, 1] and inputs[:, 2]), no audio, and work at any
t, so one pass reaches any scale (registry.py declares this).
"""
import torch
from torch import nn

import flow
from utils import ASVFIError


class _TwoFrameInterpolator(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = dict(config)

    def forward(self, inputs, audio=None, audio_times=None, has_audio=None, ts=None, target=None):
        if ts is None:  # the native times k/s of the configured scale
            scale = self.config["scale"]
            ts = torch.arange(1, scale, device=inputs.device, dtype=inputs.dtype).expand(len(inputs), -1) / scale
        return {"pred": self.interpolate(inputs[:, 1], inputs[:, 2], ts.to(inputs.dtype))}

    def interpolate(self, frame0, frame1, ts):
        """(B, 3, H, W) frames around the interval, ts (B, n) → (B, n, 3, H, W)."""
        raise NotImplementedError


class Repeat(_TwoFrameInterpolator):
    """Frame repetition: every missing frame is a copy of the previous input frame."""

    def interpolate(self, frame0, frame1, ts):
        return frame0[:, None].repeat(1, ts.shape[1], 1, 1, 1)


class Blend(_TwoFrameInterpolator):
    """Linear cross-fade (1-t)·I0 + t·I1 (at t = 1/2, the mean of the neighbours)."""

    def interpolate(self, frame0, frame1, ts):
        t = ts[:, :, None, None, None]
        return (1 - t) * frame0[:, None] + t * frame1[:, None]


class DISWarp(_TwoFrameInterpolator):
    """Bidirectional DIS flow (computed once per frame pair), intermediate flows by the
    linear-motion approximation of Super SloMo (F_t0 = -(1-t)t·F01 + t²·F10,
    F_t1 = (1-t)²·F01 - t(1-t)·F10), backward warps of both frames blended with weights (1-t) and t."""

    def interpolate(self, frame0, frame1, ts):
        flow01, flow10 = flow.dis_flow(frame0, frame1), flow.dis_flow(frame1, frame0)
        preds = []
        for k in range(ts.shape[1]):
            t = ts[:, k].view(-1, 1, 1, 1)
            flow_t0 = -(1 - t) * t * flow01 + t * t * flow10
            flow_t1 = (1 - t) * (1 - t) * flow01 - t * (1 - t) * flow10
            warped0, warped1 = flow.backward_warp(frame0, flow_t0), flow.backward_warp(frame1, flow_t1)
            preds.append((1 - t) * warped0 + t * warped1)
        return torch.stack(preds, 1)


BASELINES = {"repeat": Repeat, "blend": Blend, "dis": DISWarp}


def default_config(name, **overrides):
    """{"model": name, "scale": 2} with overrides; a baseline has nothing else to configure."""
    config = {"model": name, "scale": 2, **overrides}
    unknown = sorted(set(config) - {"model", "scale"})
    if unknown or name not in BASELINES:
        raise ASVFIError(f"baseline {name!r} (one of {list(BASELINES)}) takes only 'scale', got {unknown}")
    if int(config["scale"]) != config["scale"] or config["scale"] < 2:
        raise ASVFIError(f"scale must be an integer >= 2, got {config['scale']!r}")
    return config


def build_baseline(config):
    options = {key: value for key, value in config.items() if key != "model"}
    return BASELINES[config["model"]](default_config(config["model"], **options))
