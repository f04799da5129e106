"""Streaming interpolation: one pass of a model over a stream of frames, and recursion over passes.

    engines = build_engines(network, device, scale=4, settings)   # 2x model: two 2x passes
    for frame, time in interpolate_video(frames, engines, wave, batch=4, input_fps=25): ...

Frames are streamed through a window buffer (never the whole video in RAM): inputs j-1, j, j+1,
j+2 make the window of interval (j, j+1), windows are batched, and every output frame is yielded
as soon as it is known. A model trained for scale m reaches m^k by recursion (each pass is a
stream feeding the next); models that take any t (PerVFI, baselines) produce all s-1 frames of an
interval in one pass. Each window gets the audio segment training used: centred on its interval,
three intervals long, with per-sample times in interval units. A sampling model's noise for a
window is seeded by (--seed, the interval's index), so the batch size does not change its frames.
Large frames can be split into overlapping tiles (`--tile`), blended back with ramps across the
overlaps (a tiled sample draws its noise tile by tile).
"""
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

import dataset
import registry
import runtime
from utils import ASVFIError


def pass_scales(native, scale, any_t):
    """Scale of each pass: one pass of `scale` for any-t models, k passes of `native` when scale = native^k."""
    if scale < 2:
        raise ASVFIError(f"--scale {scale}: the scale must be at least 2")
    if any_t:
        return [scale]
    passes = recursion_passes(native, scale)
    if passes is None:
        raise ASVFIError(unreachable_scale_message(native, scale))
    return passes


def recursion_passes(native, scale):
    """[native] * k when scale = native^k, else None."""
    passes = []
    while native ** len(passes) < scale:
        passes.append(native)
    return passes if native ** len(passes) == scale else None


def unreachable_scale_message(native, scale):
    """What a `native`x model reaches, and which trainable scale or any-t model gives `scale` instead."""
    others = [f"{m}x" for m in dataset.SCALES if recursion_passes(m, scale) is not None]
    advice = (f"a model trained for {' or '.join(others)} reaches it" if others else
              f"no model main.py trains ({', '.join(f'{m}x' for m in dataset.SCALES)}) reaches it; "
              f"--model pervfi and the baselines ({', '.join(registry.BASELINES)}) take any scale")
    return (f"a model trained for {native}x cannot produce {scale}x: it reaches {native}x, {native ** 2}x, "
            f"{native ** 3}x, ... (powers of {native}, by recursion); {advice}")


# ----------------------------------------------------------------------------- one pass on a batch
@dataclass
class Engine:
    """Runs one interpolation pass (scale `scale`) on batches of windows, optionally tiled."""
    network: torch.nn.Module
    device: torch.device
    scale: int
    amp: str = None  # None, "bf16" or "fp16": autocast on CUDA
    tile: int = 0
    tile_overlap: int = 32
    seed: int = 0  # of a sampling model's noise: window j's is keyed (seed, j) (runtime.noise_generators)

    def __post_init__(self):
        self.consumes = registry.consumes(self.network.config)

    def __call__(self, windows, audio, audio_times, has_audio, window_ids):
        """windows (B, 4, 3, H, W) float in [0, 1] (see `as_input`), audio/audio_times (B, A), the
        windows' indices (B,) → (B, s-1, H, W, 3) uint8, contiguous (the PNG and H.264 writers take
        it without a copy)."""
        pred = self.predict(windows, audio, audio_times, has_audio, window_ids)
        pred = pred.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return pred.permute(0, 1, 3, 4, 2).contiguous().cpu().numpy()

    def as_input(self, frame):
        """(H, W, 3) uint8 → (3, H, W) float in [0, 1] on the device, once per frame (each input
        frame is in four windows). Transposed as uint8 first: a float copy of a permuted view is
        several times slower."""
        channels_first = np.ascontiguousarray(frame.transpose(2, 0, 1))
        return torch.from_numpy(channels_first).to(self.device).float().div_(255)

    def predict(self, inputs, audio, audio_times, has_audio, window_ids, ts=None):
        """inputs (B, 4, 3, H, W) float in [0, 1] → the raw float32 prediction (B, n, 3, H, W), unclamped.

        window_ids (B,): what seeds each window's noise (sampling models only); ts (B, n): target
        times in the interval (any-t models only; default k/scale, k = 1..s-1).
        """
        extra = {}
        if self.consumes.audio:
            extra = {"audio": torch.from_numpy(audio).to(self.device),
                     "audio_times": torch.from_numpy(audio_times).to(self.device),
                     "has_audio": torch.full((len(inputs),), has_audio, dtype=torch.bool, device=self.device)}
        if self.consumes.any_t:
            native = torch.arange(1, self.scale, device=self.device) / self.scale
            extra["ts"] = (native.expand(len(inputs), -1) if ts is None else ts.to(self.device))
        if self.consumes.noise:
            extra["generator"] = runtime.noise_generators([(self.seed, j) for j in window_ids], self.device)
        with torch.no_grad(), runtime.autocast(self.device, self.amp):
            pred = self.run_tiled(inputs, extra) if self.tile else self.network(inputs, **extra)["pred"]
        return pred.float()

    def run_tiled(self, inputs, extra):
        """Overlapping tiles, blended back with weights that ramp down across the overlaps."""
        height, width = inputs.shape[-2:]
        if self.consumes.frame_mean:  # centre every tile as the whole frame is
            extra = {**extra, "frame_mean": inputs.mean(dim=(1, 3, 4))}
        out = weight_sum = None
        for top in tile_starts(height, self.tile, self.tile_overlap):
            for left in tile_starts(width, self.tile, self.tile_overlap):
                crop = inputs[..., top:top + self.tile, left:left + self.tile]
                pred = self.network(crop, **extra)["pred"].float()
                rows, cols = crop.shape[-2:]
                weight = (blend_ramp(rows, top, height, self.tile_overlap, pred.device)[:, None]
                          * blend_ramp(cols, left, width, self.tile_overlap, pred.device)[None, :])
                if out is None:
                    out = pred.new_zeros(*pred.shape[:-2], height, width)
                    weight_sum = pred.new_zeros(height, width)
                out[..., top:top + rows, left:left + cols] += pred * weight
                weight_sum[top:top + rows, left:left + cols] += weight
        return out / weight_sum


def tile_starts(size, tile, overlap):
    """Tile offsets along one axis: step tile-overlap, the last tile flush with the edge."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def blend_ramp(length, start, total, overlap, device):
    """Blend weight along one axis of a tile: 1 inside, falling linearly (never to 0) over the
    `overlap` pixels it shares with a neighbour, so the seams cross-fade instead of jumping."""
    weight = torch.ones(length, device=device)
    n = min(overlap, length)
    ramp = torch.arange(1, n + 1, device=device) / (overlap + 1)
    if start > 0:
        weight[:n] = torch.minimum(weight[:n], ramp)
    if start + length < total:
        weight[length - n:] = torch.minimum(weight[length - n:], ramp.flip(0))
    return weight


# ----------------------------------------------------------------------------- streaming interpolation
def interpolate_stream(frames, engine, wave, batch, input_fps):
    """(frame uint8 HWC, time s) stream → the stream at `engine.scale`× the rate, in order.

    Input j is emitted, then the s-1 frames of interval (j, j+1). The window of that interval is
    inputs j-1 … j+2, the first/last input replicated at the edges: only the last four inputs and
    one batch of windows are held. Audio segments are as long as in training at this input rate.
    """
    n_audio = dataset.audio_samples_for(input_fps, 1)
    recent = deque(maxlen=4)  # (frame uint8, time, frame as the model's input)
    pending = []
    newest = -1
    for newest, (frame, time) in enumerate(frames):
        recent.append((frame, time, engine.as_input(frame)))
        if newest >= 2:  # inputs up to `newest` complete the window of interval newest-2
            pending.append(window_of(recent, newest, newest - 2))
            if len(pending) == batch:
                yield from run_batch(pending, engine, wave, n_audio)
                pending = []
    if newest >= 1:  # the last interval, right edge replicated
        pending.append(window_of(recent, newest, newest - 1))
    if pending:
        yield from run_batch(pending, engine, wave, n_audio)
    if newest >= 0:
        yield recent[-1][:2]


class Window(NamedTuple):
    """The window of interval `index`: the 4 model inputs, its left frame (uint8) and its times."""
    inputs: list
    left: np.ndarray
    t0: float
    t1: float
    index: int


def window_of(recent, newest, j):
    """The Window of interval j from the held inputs, indices clamped to [0, newest]. The inputs
    are stacked once per batch (one copy, not two)."""
    oldest = newest - len(recent) + 1
    picks = [recent[min(max(i, 0), newest) - oldest] for i in (j - 1, j, j + 1, j + 2)]
    return Window([tensor for _, _, tensor in picks], picks[1][0], picks[1][1], picks[2][1], j)


def run_batch(pending, engine, wave, n_audio):
    """Interpolate a batch of windows; yield each interval's left input, then its generated frames."""
    segments = [dataset.audio_segment(wave, window.t0, window.t1, n_audio) for window in pending]
    inputs = torch.stack([frame for window in pending for frame in window.inputs])
    generated = engine(inputs.view(len(pending), 4, *inputs.shape[1:]),
                       np.stack([audio for audio, _ in segments]),
                       np.stack([times for _, times in segments]), wave is not None,
                       [window.index for window in pending])
    for window, between in zip(pending, generated):
        yield window.left, window.t0
        for k, frame in enumerate(between, 1):
            yield frame, window.t0 + (window.t1 - window.t0) * k / engine.scale


def interpolate_video(frames, engines, wave, batch, input_fps):
    """Chain the passes of recursion: each engine's output stream is the next one's input."""
    for engine in engines:
        frames = interpolate_stream(frames, engine, wave, batch, input_fps)
        input_fps *= engine.scale
    return frames


def build_engines(network, device, scale, settings):
    """One Engine per pass; settings carries amp, tile, tile_overlap and seed (the parsed flags)."""
    native = network.config["scale"]
    return [Engine(network, device, step, settings.amp, settings.tile, settings.tile_overlap, settings.seed)
            for step in pass_scales(native, scale, registry.consumes(network.config).any_t)]
