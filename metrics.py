"""Video quality metrics: PSNR, SSIM, LPIPS, FloLPIPS, VFIPS, FVD — each equal to its reference.

Frames are (B, 3, H, W) RGB tensors in [0, 1] on any device; videos are (N, 3, H, W) frame stacks.

| metric   | reference it reproduces                                            | weights            |
|----------|--------------------------------------------------------------------|--------------------|
| PSNR     | 10·log10(1 / MSE) per frame (float64 mean; +inf when identical)     | —                  |
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

`build_metrics(names, ...)` is the registry evaluate.py uses: it returns streaming scorers for the
metrics it could build and a reason for each one it could not (e.g. weights missing offline).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import flow
import vfips
import weights
from fvd import FVD_CLIP_FRAMES, fvd_from_features, i3d_clip, i3d_features, load_i3d
from lpips_parts import load_lpips, unit_normalize
from utils import check_frame_pair

# ----------------------------------------------------------------------------- PSNR


def psnr(pred, gt):
    """Per-frame PSNR in dB of [0, 1] frames, (B,) float64; +inf for identical frames.

    Differences and squares in the input precision, their mean accumulated in float64: equal to a
    float64 numpy reference within ~1e-6 dB for float32 frames.
    """
    check_frame_pair(pred, gt, "psnr")
    diff = pred - gt
    mse = (diff * diff).flatten(1).sum(dim=1, dtype=torch.float64) / diff[0].numel()
    return 10 * torch.log10(1 / mse)


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


def vfips_window_starts(n_frames, window=VFIPS_WINDOW):
    """Non-overlapping windows [s, s+12), the last full one included.

    The reference script uses range(0, N − 12, 12), which skips the window starting at N − 12
    (so N = 24 scores one window and N = 12 none); we score every full window.
    """
    return list(range(0, n_frames - window + 1, window))


def vfips_window_score(net, ref, pred):
    """Score of one 12-frame window ([0, 1] frames (12, 3, H, W)); the reference clip comes first."""
    with torch.no_grad():
        return float(net((2 * ref - 1)[None].contiguous(), (2 * pred - 1)[None].contiguous()).flatten()[0])


def vfips_pool(window_scores):
    """Video VFIPS from window scores: +inf windows dropped (as the reference does), raw mean.

    Returns (score or None, reason). The raw score can be negative; it is never abs()-ed.
    """
    kept = [s for s in window_scores if s != math.inf]
    if not window_scores:
        return None, f"not enough frames (VFIPS needs {VFIPS_WINDOW})"
    if not kept:
        return None, "every VFIPS window scored +inf"
    return float(np.mean(np.asarray(kept, dtype=np.float64))), ""


def vfips_video(net, ref, pred):
    """VFIPS of two videos (N, 3, H, W) in [0, 1]: (score or None, reason)."""
    if min(ref.shape[-2:]) < VFIPS_MIN_SIZE:
        return None, VFIPS_TOO_SMALL
    scores = [vfips_window_score(net, ref[s:s + VFIPS_WINDOW], pred[s:s + VFIPS_WINDOW])
              for s in vfips_window_starts(len(ref))]
    return vfips_pool(scores)


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
        return Result(float(torch.cat(self.values).mean()))


class FloLPIPSPairs:
    """Streams consecutive frame chunks; keeps the last frame of a chunk for the pair that spans it."""

    def __init__(self, lpips_net, flow_fn, batch=8):
        self.lpips_net, self.flow_fn, self.batch = lpips_net, flow_fn, batch
        self.previous = None
        self.scores = []

    def update(self, ref, pred):
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
    """Buffers frames into the non-overlapping 12-frame windows of `vfips_window_starts`."""

    def __init__(self, net):
        self.net = net
        self.buffer_ref, self.buffer_pred = [], []
        self.scores = []
        self.too_small = False

    def update(self, ref, pred):
        if min(ref.shape[-2:]) < VFIPS_MIN_SIZE:
            self.too_small = True
            return
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
        return Result(*vfips_pool(self.scores))


class FVDClips:
    """Collects I3D features of the 16-frame clips of one video pair (the set-level FVD uses them)."""

    def __init__(self, detector, batch=4):
        self.detector, self.batch = detector, batch
        self.buffer_ref, self.buffer_pred = [], []
        self.pending_ref, self.pending_pred = [], []
        self.real, self.fake = [], []

    def update(self, ref, pred):
        self.buffer_ref.append(ref)
        self.buffer_pred.append(pred)
        ref, pred = torch.cat(self.buffer_ref), torch.cat(self.buffer_pred)
        full = len(ref) // FVD_CLIP_FRAMES * FVD_CLIP_FRAMES
        for start in range(0, full, FVD_CLIP_FRAMES):
            self.pending_ref.append(i3d_clip(ref[start:start + FVD_CLIP_FRAMES]))
            self.pending_pred.append(i3d_clip(pred[start:start + FVD_CLIP_FRAMES]))
            if len(self.pending_ref) == self.batch:
                self.flush()
        self.buffer_ref, self.buffer_pred = [ref[full:]], [pred[full:]]

    def flush(self):
        if self.pending_ref:
            self.real.extend(i3d_features(self.detector, torch.stack(self.pending_ref)))
            self.fake.extend(i3d_features(self.detector, torch.stack(self.pending_pred)))
            self.pending_ref, self.pending_pred = [], []

    def result(self):
        self.flush()
        return Result(len(self.real), "" if self.real else f"fewer than {FVD_CLIP_FRAMES} frames (no FVD clip)")

    def features(self):
        """(real, fake) feature arrays (clips, D), or None when the video has no full clip."""
        self.flush()
        return (np.stack(self.real), np.stack(self.fake)) if self.real else None


def fvd(detector, real_videos, fake_videos, batch=4):
    """FVD between two lists of videos (N_i, 3, H, W) in [0, 1], over all their consecutive
    non-overlapping 16-frame clips (`batch` clips per detector call).

    Returns (value or None, reason, N clips). FVD from few clips is strongly biased: report N.
    """
    real, fake = [], []
    for ref, pred in zip(real_videos, fake_videos):
        scorer = FVDClips(detector, batch)
        scorer.update(ref, pred)
        scorer.flush()
        real.extend(scorer.real)
        fake.extend(scorer.fake)
    return fvd_from_features(real, fake)


# ----------------------------------------------------------------------------- registry
@dataclass
class Metric:
    """A metric evaluate.py can run.

    scope: "generated" (averaged over generated frames), "sequence" (the whole video) or "set"
    (FVD: per-video clip features, one number for the whole set). `scorer()` makes a fresh
    streaming accumulator for one video; `column` is its CSV column; `about` says what was used.
    """
    name: str
    scope: str
    scorer: object
    column: str
    about: str = ""
    info: dict = field(default_factory=dict)


METRIC_NAMES = ("psnr", "ssim", "lpips", "flolpips", "vfips", "fvd")
FLOW_NAMES = {"pwc": "PWC-Net", "dis": "OpenCV DIS"}


def metric_column(name, flow_name="pwc"):
    """CSV column of a metric. FloLPIPS with DIS flow gets its own column so that it never mixes
    with PWC-Net FloLPIPS; FVD is set-level, so a video's row holds its number of clips."""
    if name == "flolpips" and flow_name == "dis":
        return "flolpips_dis"
    return "fvd_clips" if name == "fvd" else name


def _build_one(name, device, weights_dir, allow_download, flow_name, shared):
    def lpips_net():
        if "lpips" not in shared:
            shared["lpips"] = load_lpips(weights_dir, allow_download, device)
        return shared["lpips"]

    column = metric_column(name, flow_name)
    if name == "psnr":
        return Metric(name, "generated", lambda: FrameMean(lambda ref, pred: psnr(pred, ref)), column,
                      "dB, higher is better")
    if name == "ssim":
        return Metric(name, "generated", lambda: FrameMean(lambda ref, pred: ssim(pred, ref)), column,
                      "Gaussian σ=1.5, higher is better")
    if name == "lpips":
        net = lpips_net()
        return Metric(name, "generated", lambda: FrameMean(net), column, "v0.1 AlexNet, lower is better")
    if name == "flolpips":
        net = lpips_net()
        flow_fn = flow.build_flow_estimator(flow_name, weights_dir=weights_dir, allow_download=allow_download,
                                            device=device)
        return Metric(name, "sequence", lambda: FloLPIPSPairs(net, flow_fn), column,
                      f"{FLOW_NAMES[flow_name]} flow, lower is better", {"flow": flow_name})
    if name == "vfips":
        net = vfips.load_vfips(weights_dir=weights_dir, allow_download=allow_download, device=device)
        return Metric(name, "sequence", lambda: VFIPSWindows(net), column,
                      "multiscale_v33, 12-frame windows, lower is better (can be negative)")
    if name == "fvd":
        detector = load_i3d(weights_dir, allow_download, device)
        return Metric(name, "set", lambda: FVDClips(detector), column,
                      f"I3D, {FVD_CLIP_FRAMES}-frame clips, lower is better")
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")


def build_metrics(names, device=None, weights_dir=None, allow_download=True, flow_name="pwc"):
    """Build the requested metrics: ({name: Metric}, {name: reason it is unavailable}).

    Missing weights (weights.WeightsUnavailable) make a metric unavailable with the reason; the
    others are still built. Unknown names or flows raise at once.
    """
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or flow_name not in FLOW_NAMES:
        raise ValueError(f"unknown metric(s) {unknown} or flow {flow_name!r}; metrics: "
                         f"{', '.join(METRIC_NAMES)}; flows: {', '.join(FLOW_NAMES)}")
    built, unavailable, shared = {}, {}, {}
    for name in names:
        try:
            built[name] = _build_one(name, device, weights_dir, allow_download, flow_name, shared)
        except weights.WeightsUnavailable as err:
            unavailable[name] = str(err)
    return built, unavailable
