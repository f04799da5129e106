"""Video quality metrics: PSNR, SSIM, LPIPS, FloLPIPS, VFIPS, FVD — each equal to its reference.

Frames are (B, 3, H, W) RGB tensors in [0, 1] on any device; videos are (N, 3, H, W) frame stacks.

| metric   | reference it reproduces                                            | weights            |
|----------|--------------------------------------------------------------------|--------------------|
| PSNR     | 10·log10(1 / MSE) per frame (float64 mean; 100 dB when identical)  | —                  |
| SSIM     | skimage `structural_similarity(gaussian_weights=True, sigma=1.5,    | —                  |
|          | use_sample_covariance=False, data_range=1, channel_axis=...)`       |                    |
| LPIPS    | lpips 0.1.4, v0.1, AlexNet                                          | alexnet, lpips_alex|
| FloLPIPS | danier97/flolpips `calc_flolpips` (PWC-Net or, on request, DIS flow)| + pwcnet           |
| VFIPS    | hqqxyy/VFIPS multiscale_v33, `test_bvivfi_fast.py` windows          | vfips              |
| FVD      | StyleGAN-V's I3D TorchScript detector + Fréchet distance            | i3d                |

Deliberate departures from the references (all documented where they happen):
- FloLPIPS: where the reference divides 0 by 0 (the flow difference is zero on a layer's grid,
  e.g. identical videos) that layer uses uniform weights, i.e. plain LPIPS, so identical videos
  score 0 instead of NaN (`reference_nan=True` reproduces the NaN).
- VFIPS: the last full 12-frame window is scored (the reference script skips it when N is a
  multiple of 12); videos shorter than 12 frames get "not enough frames" instead of NaN.
- FVD: the detector gets [−1, 1] clips already resized to 224x224 (rescale=False, resize=False)
  instead of StyleGAN-V's uint8 clips with rescale=True, resize=True (the same mapping and a
  bilinear resize, as far as the detector's bundled code is known); statistics as StyleGAN-V
  (population covariance); clips are the consecutive non-overlapping 16-frame clips of each video.

`metric_registry.build_metrics(names, ...)` builds the streaming scorers below for evaluate.py.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import protocols
import vfips
from fvd import clip_features
from utils import check_frame_pair

# ----------------------------------------------------------------------------- PSNR


def psnr(pred, gt, eps=0.0, mse_floor=protocols.ASVFI_MSE_FLOOR):
    """Per-frame PSNR in dB of [0, 1] frames, (B,) float64: −10·log10(max(MSE, floor) + eps).

    The default floor (protocols.ASVFI_MSE_FLOOR) gives identical frames 100 dB instead of +inf;
    a protocol passes its own eps and floor. Differences and squares in the input precision, their
    mean accumulated in float64: equal to a float64 numpy reference within ~1e-6 dB for float32.
    """
    check_frame_pair(pred, gt, "psnr")
    diff = pred - gt
    mse = (diff * diff).flatten(1).sum(dim=1, dtype=torch.float64) / diff[0].numel()
    return -10 * torch.log10(mse.clamp(min=mse_floor) + eps)


# ----------------------------------------------------------------------------- SSIM
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # skimage's choice: an 11-tap window for sigma 1.5, as in Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _ssim_frames_per_pass(device):
    """One frame per pass on CPU keeps its twelve filtered maps as close to the cache as possible
    (several frames at a time, or strips of rows, measured slower); accelerators want batches."""
    return 1 if device.type == "cpu" else 16


def gaussian_window(sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE):
    """Normalised 1-D Gaussian taps exactly as scipy.ndimage builds them (radius int(t·σ + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _blur_kernels(taps, channels):
    """Depthwise (vertical, horizontal) kernels of the separable Gaussian for `channels` maps."""
    size = taps.numel()
    return (taps.view(1, 1, size, 1).expand(channels, 1, size, 1).contiguous(),
            taps.view(1, 1, 1, size).expand(channels, 1, 1, size).contiguous())


def _blur_valid(maps, kernels):
    """Separable Gaussian filter without padding: only outputs whose window lies inside the frame.

    skimage filters with reflected borders but then crops (win_size - 1) / 2 pixels from every side
    of the SSIM map before averaging, which leaves exactly these "valid" positions, so the border
    rule never reaches the result. Channels-last depthwise convolutions are the fast CPU path.
    """
    vertical, horizontal = kernels
    return F.conv2d(F.conv2d(maps, vertical, groups=len(vertical)), horizontal, groups=len(horizontal))


def _ssim_map_sum(x, y, offset_x, offset_y, kernels, data_range):
    """Sum of the SSIM map over the valid positions of frames x + offset_x, y + offset_y, (B,) float64.

    The inputs come centred per channel (see `ssim`) so that the variances E[x²] − E[x]² lose
    little float32 precision to cancellation; the offsets are added back for the luminance term.
    The four filtered statistics per channel (x, y, x² + y², xy; only the sum of the variances is
    needed) are built channels-last for the fast depthwise convolution, then made contiguous per
    statistic for the element-wise part, which works in place to keep the memory traffic low.
    """
    x, y = x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)
    stats = torch.cat([x, y, x * x + y * y, x * y], 3).permute(0, 3, 1, 2)
    mean_x, mean_y, mean_sq_sum, mean_xy = _blur_valid(stats, kernels).contiguous().split(x.shape[3], 1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    half_contrast = mean_xy.addcmul(mean_x, mean_y, value=-1).add_(c2 / 2)  # (2·cov + C2) / 2
    variance_sum = mean_sq_sum.addcmul(mean_x, mean_x, value=-1).addcmul_(mean_y, mean_y, value=-1).add_(c2)
    mean_x, mean_y = mean_x + offset_x, mean_y + offset_y
    half_luminance = (mean_x * mean_y).add_(c1 / 2)  # (2·μx·μy + C1) / 2
    energy = (mean_x * mean_x).addcmul_(mean_y, mean_y).add_(c1)  # μx² + μy² + C1
    quarter_ssim = half_luminance.mul_(half_contrast).div_(energy.mul_(variance_sum))
    return 4 * quarter_ssim.flatten(1).sum(dim=1, dtype=torch.float64)


def ssim(pred, gt, data_range=1.0):
    """Per-frame SSIM (B,) float64, equal to skimage's Gaussian-window SSIM averaged over RGB.

    Matches `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=-1)` within ~1e-6 on [0, 1] frames (float32 maps; float64 inputs
    are filtered in float64). Frames must be at least 11x11 (skimage raises too). Each channel is
    centred on its frame mean before filtering (SSIM is unchanged; float32 keeps its precision).
    """
    check_frame_pair(pred, gt, "ssim")
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    taps = gaussian_window().to(device=pred.device, dtype=dtype)
    size = taps.numel()
    height, width = pred.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"metrics.ssim: frames of {height}x{width} are smaller than the {size}x{size} "
                         f"Gaussian window")
    kernels = _blur_kernels(taps, 4 * pred.shape[1])
    per_pass = _ssim_frames_per_pass(pred.device)
    sums = []
    for x, y in zip(pred.split(per_pass), gt.split(per_pass)):
        x, y = x.to(dtype), y.to(dtype)
        offset_x, offset_y = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
        sums.append(_ssim_map_sum(x - offset_x, y - offset_y, offset_x, offset_y, kernels, data_range))
    return torch.cat(sums) / (pred.shape[1] * (height - size + 1) * (width - size + 1))


# ----------------------------------------------------------------------------- FloLPIPS


def flow_weights(flow_diff, size, reference_nan=False):
    """FloLPIPS pooling weights on one layer grid: |S(Δ)| / Σ|S(Δ)|, (B, 1, h, w).

    S is bilinear resampling (align_corners=False, vectors not rescaled — a uniform scale cancels).
    Departure from the reference: a sample whose resampled flow difference is zero everywhere on
    this grid gets uniform weights (the layer then contributes its plain LPIPS mean) instead of
    0/0 = NaN; `reference_nan=True` reproduces the NaN.
    """
    resampled = F.interpolate(flow_diff, size=size, mode="bilinear", align_corners=False)
    magnitude = resampled.pow(2).sum(dim=1, keepdim=True).sqrt()
    total = magnitude.sum(dim=(1, 2, 3), keepdim=True)
    if reference_nan:
        return magnitude / total
    uniform = torch.full_like(magnitude, 1.0 / (size[0] * size[1]))
    return torch.where(total > 0, magnitude / torch.where(total > 0, total, torch.ones_like(total)), uniform)


def flolpips_per_layer(lpips_net, ref, pred, flow_diff, reference_nan=False):
    """Flow-weighted sum of each LPIPS layer map of (ref, pred), (B, 5)."""
    maps = lpips_net.layer_maps(ref, pred)
    return torch.cat([(m * flow_weights(flow_diff.to(m.dtype), m.shape[-2:], reference_nan)).sum(dim=(2, 3))
                      for m in maps], 1)


def flolpips_from_flow(lpips_net, ref, pred, flow_diff, reference_nan=False):
    """FloLPIPS of frame pairs given the flow difference Δ (B, 2, H, W), (B,) (tests/fixtures/flolpips_notes.md)."""
    return flolpips_per_layer(lpips_net, ref, pred, flow_diff, reference_nan).sum(dim=1)


def flolpips_pairs(lpips_net, flow_fn, ref, pred, reference_nan=False):
    """Scores of the pairs (t, t+1) of two frame stacks (N, 3, H, W) → (N−1,):
    Δ_t = flow(R_t → R_t+1) − flow(D_t → D_t+1), maps of (R_t, D_t)."""
    diff = flow_fn(ref[:-1], ref[1:]) - flow_fn(pred[:-1], pred[1:])
    return flolpips_from_flow(lpips_net, ref[:-1], pred[:-1], diff, reference_nan)


def flolpips_video(lpips_net, flow_fn, ref, pred, batch=8, reference_nan=False):
    """Video FloLPIPS: float64 mean over t of the per-pair float32 scores; None below 2 frames."""
    if len(ref) < 2:
        return None
    scores = [flolpips_pairs(lpips_net, flow_fn, ref[i:i + batch + 1], pred[i:i + batch + 1], reference_nan)
              for i in range(0, len(ref) - 1, batch)]
    return float(torch.cat(scores).double().mean())


# ----------------------------------------------------------------------------- VFIPS
VFIPS_WINDOW = vfips.WINDOW_FRAMES
VFIPS_MIN_SIZE = vfips.MIN_SIZE  # smaller frames make the reference's reflect padding fail at the 5th scale
VFIPS_TOO_SMALL = f"frames smaller than {VFIPS_MIN_SIZE}x{VFIPS_MIN_SIZE} px (VFIPS cannot score them)"


def vfips_window_starts(n_frames):
    """Non-overlapping windows [s, s+12), the last full one included (protocols: "all_full").

    The reference script uses range(0, N − 12, 12), which skips the window starting at N − 12
    (so N = 24 scores one window and N = 12 none); the "vfibench" protocol reproduces that.
    """
    return protocols.vfips_window_starts(n_frames, "all_full")


def vfips_window_score(net, ref, pred):
    """Score of one 12-frame window ([0, 1] frames (12, 3, H, W)); the reference clip comes first."""
    with torch.no_grad():
        return float(net((2 * ref - 1)[None].contiguous(), (2 * pred - 1)[None].contiguous()).flatten()[0])


def vfips_pool(window_scores):
    """Video VFIPS from window scores: +inf windows dropped (as the reference does), raw mean.

    Returns (score or None, reason). The raw score can be negative; it is never abs()-ed.
    """
    return protocols.pool_vfips("asvfi", window_scores)


def vfips_video(net, ref, pred):
    """VFIPS of two videos (N, 3, H, W) in [0, 1]: (score or None, reason)."""
    if min(ref.shape[-2:]) < VFIPS_MIN_SIZE:
        return None, VFIPS_TOO_SMALL
    scores = [vfips_window_score(net, ref[s:s + VFIPS_WINDOW], pred[s:s + VFIPS_WINDOW])
              for s in vfips_window_starts(len(ref))]
    return vfips_pool(scores)


# ----------------------------------------------------------------------------- per-frame metrics of a protocol
def protocol_ssim(protocol):
    """fn(pred, gt) -> (B,) SSIM the way a protocol computes it (variant, clamp, channel order).

    "gaussian" uses `ssim` (skimage-equal, fast) and, for frames under 11 px where skimage
    raises, protocols.ssim_gaussian (smoothing skipped along the short axes, finite).
    """
    protocol = protocols.get_protocol(protocol)
    if protocol.ssim not in protocols.SSIM_VARIANTS:
        raise ValueError(f"unknown SSIM variant {protocol.ssim!r}; known: {', '.join(protocols.SSIM_VARIANTS)}")

    def fn(pred, gt):
        if protocol.ssim_clamp:
            pred, gt = pred.clamp(0, 1), gt.clamp(0, 1)
        if protocol.channel_order == "bgr":
            pred, gt = pred.flip(1), gt.flip(1)
        if protocol.ssim == "matlab":
            return protocols.ssim_matlab(pred, gt).double()
        if min(pred.shape[-2:]) < protocols.SSIM_WINDOW:
            return protocols.ssim_gaussian(pred, gt)
        return ssim(pred, gt)
    return fn


def protocol_psnr(protocol):
    """fn(pred, gt) -> (B,) PSNR with a protocol's epsilon and MSE floor."""
    protocol = protocols.get_protocol(protocol)
    return lambda pred, gt: psnr(pred, gt, protocol.psnr_eps, protocol.psnr_mse_floor)


# ----------------------------------------------------------------------------- streaming scorers
@dataclass
class Result:
    """A per-video metric value (FVD: its clip count), or None with the reason it could not be computed."""
    value: float = None
    reason: str = ""


class FrameMean:
    """Mean over frames of a per-frame metric fn(ref, pred) -> (B,) (PSNR, SSIM, LPIPS), evaluated
    `batch` frames at a time so that large frames do not blow up network activations."""

    def __init__(self, fn, batch=8):
        self.fn, self.batch = fn, batch
        self.values = []

    def update(self, ref, pred):
        with torch.no_grad():
            for start in range(0, len(ref), self.batch):
                stop = start + self.batch
                self.values.append(self.fn(ref[start:stop], pred[start:stop]).double().cpu())

    def result(self):
        if not self.values:
            return Result(None, "no generated frames")
        values = torch.cat(self.values)
        if not torch.isfinite(values).all():
            return Result(None, "non-finite frame value (the protocol has no epsilon or floor)")
        return Result(float(values.mean()))


class FloLPIPSPairs:
    """Streams consecutive frame chunks; keeps the last frame of a chunk for the pair that spans it.
    The frames first take the protocol's colour path (e.g. "yuv420p": through 8-bit YUV 4:2:0)."""

    def __init__(self, lpips_net, flow_fn, batch=8, protocol="asvfi"):
        self.lpips_net, self.flow_fn, self.batch = lpips_net, flow_fn, batch
        self.protocol = protocols.get_protocol(protocol)
        self.previous = None
        self.scores = []

    def colour_path(self, frames):
        if self.protocol.flolpips_colour == "rgb":
            return frames
        as_u8 = torch.round(frames.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return torch.stack([protocols.flolpips_input(self.protocol, f) for f in as_u8]).to(frames.device)

    def update(self, ref, pred):
        ref, pred = self.colour_path(ref), self.colour_path(pred)
        if self.previous is not None:
            ref, pred = torch.cat([self.previous[0], ref]), torch.cat([self.previous[1], pred])
        with torch.no_grad():
            for i in range(0, len(ref) - 1, self.batch):
                self.scores.append(flolpips_pairs(self.lpips_net, self.flow_fn,
                                                  ref[i:i + self.batch + 1], pred[i:i + self.batch + 1]).cpu())
        self.previous = (ref[-1:], pred[-1:])

    def result(self):
        if not self.scores:
            return Result(None, "FloLPIPS needs at least 2 frames")
        return Result(float(torch.cat(self.scores).double().mean()))


class VFIPSWindows:
    """Buffers frames into non-overlapping 12-frame windows; the protocol's window rule and pooling
    decide at the end which windows count (the reference rule is a prefix of every full window)."""

    def __init__(self, net, protocol="asvfi"):
        self.net, self.protocol = net, protocols.get_protocol(protocol)
        self.buffer_ref, self.buffer_pred = [], []
        self.scores = []
        self.seen = 0
        self.too_small = False

    def update(self, ref, pred):
        if min(ref.shape[-2:]) < VFIPS_MIN_SIZE:
            self.too_small = True
            return
        self.seen += len(ref)
        self.buffer_ref.append(ref)
        self.buffer_pred.append(pred)
        ref, pred = torch.cat(self.buffer_ref), torch.cat(self.buffer_pred)
        full = len(ref) // VFIPS_WINDOW * VFIPS_WINDOW
        for start in range(0, full, VFIPS_WINDOW):
            self.scores.append(vfips_window_score(self.net, ref[start:start + VFIPS_WINDOW],
                                                  pred[start:start + VFIPS_WINDOW]))
        self.buffer_ref, self.buffer_pred = [ref[full:]], [pred[full:]]

    def result(self):
        if self.too_small:
            return Result(None, VFIPS_TOO_SMALL)
        kept = len(protocols.vfips_window_starts(self.seen, self.protocol.vfips_windows))
        return Result(*protocols.pool_vfips(self.protocol, self.scores[:kept]))


class FVDClips:
    """I3D features of chosen clips of one video pair (the set-level FVD uses them).

    `select(real_clips, fake_clips)` names the frame indices of each clip (protocols.fvd_clip_frames);
    without it every consecutive non-overlapping 16-frame clip is used on both sides. Only frames
    of clips not yet complete are kept.
    """

    def __init__(self, detector, batch=4, detector_input="float_resized"):
        self.detector, self.batch, self.detector_input = detector, batch, detector_input
        self.wanted = None
        self.frames, self.pending, self.done = ({}, {}), ([], []), [0, 0]
        self.real, self.fake = [], []
        self.seen = 0

    def select(self, real_clips, fake_clips):
        self.wanted = ([list(c) for c in real_clips], [list(c) for c in fake_clips])

    def clips_of(self, side):
        if self.wanted is not None:
            return self.wanted[side]
        length = protocols.FVD_CLIP_FRAMES
        return [list(range(s, s + length)) for s in range(0, self.seen - length + 1, length)]

    def still_needed(self, side):
        """Predicate: is frame i part of a clip not yet complete?"""
        if self.wanted is None:
            first_open = self.seen // protocols.FVD_CLIP_FRAMES * protocols.FVD_CLIP_FRAMES
            return lambda i: i >= first_open
        needed = {i for clip in self.wanted[side][self.done[side]:] for i in clip}
        return needed.__contains__

    def update(self, ref, pred):
        for side, frames in enumerate((ref, pred)):
            needed = self.still_needed(side)
            for offset, frame in enumerate(frames):
                if needed(self.seen + offset):
                    self.frames[side][self.seen + offset] = frame
        self.seen += len(ref)
        for side in (0, 1):
            clips = self.clips_of(side)
            while self.done[side] < len(clips) and clips[self.done[side]][-1] < self.seen:
                clip = clips[self.done[side]]
                self.pending[side].append(torch.stack([self.frames[side][i] for i in clip]))
                self.done[side] += 1
                if len(self.pending[side]) == self.batch:
                    self.flush(side)
            needed = self.still_needed(side)
            for index in [i for i in self.frames[side] if not needed(i)]:
                del self.frames[side][index]

    def flush(self, side=None):
        for s in ((0, 1) if side is None else (side,)):
            if self.pending[s]:
                (self.real if s == 0 else self.fake).extend(
                    clip_features(self.detector, self.pending[s], self.detector_input))
                self.pending[s].clear()

    def result(self):
        self.flush()
        return Result(len(self.real), "" if self.real else f"fewer than {protocols.FVD_CLIP_FRAMES} frames (no FVD clip)")

    def features(self):
        """(real, fake) feature arrays (clips, D), or None when the video has no clip."""
        self.flush()
        return (np.stack(self.real), np.stack(self.fake)) if self.real and self.fake else None
