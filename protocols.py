"""Published VFI evaluation protocols as declarative records, and the primitives they name.

A number is comparable with a published table only if it was computed the way that table was:
the same quantisation of the prediction, colour path, crop, SSIM variant, PSNR epsilon, windows,
clip sampling and averaging order. Each `Protocol` below states those choices for one reference
(repository and commit); the functions after it implement each choice once, and `score_frame`,
`aggregate`, `video_plan`, `flolpips_input` and `fvd_from_features` read a record to apply them.
Every value is pinned by `tests/fixtures/protocols_compat.pt` (see its notes).

Where a reference returns inf or NaN or stops (PSNR of a prediction equal to the ground truth
without an epsilon, VFIPS of a video without a window, an infinite VFIPS window), these functions
return a finite value or None with a reason instead, and the record's `departures` says so.

Frames are (3, H, W) float tensors, RGB, ground truth in [0, 1]; uint8 images are (H, W, 3).
"""
import dataclasses
import math
import random
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

import yuv420

# MSE floor of the toolkit's own PSNR: identical frames score 100 dB instead of +inf. Only values
# above 100 dB change (an RMS error under 1e-5, e.g. one level off in a few pixels of a large
# frame); every value below is the exact 10·log10(1 / MSE).
ASVFI_MSE_FLOOR = 1e-10
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW = 0.01, 0.03, 1.5, 11
VFIPS_WINDOW = 12
FVD_CLIP_FRAMES = 16


@dataclass(frozen=True)
class Protocol:
    """How one reference turns predictions into the numbers of its tables.

    metrics: the metrics this protocol defines; the other fields only matter for those.
    frame_crop: applied when frames are read, to inputs and ground truth alike ("center224":
        torchvision CenterCrop((224, 224)); "even": the top-left even-sized part; None: whole).
    quantize: what happens to the prediction before any metric ("none"; "round": round(255·x)/255,
        half to even, not clamped; "clamp_round": the same after clamping to [0, 1], as inference.py
        writes PNGs; "truncate": floor(255·x)/255 of the clamped value, as to_pil_image writes PNGs).
        Each is idempotent, so frames read back from such PNGs score the same.
    psnr_eps, psnr_mse_floor: PSNR = −10·log10(max(MSE, floor) + eps) over C, H, W of one frame.
    ssim: "gaussian" (skimage / pytorch_msssim, per channel, valid 11x11 window) or "matlab"
        (FLAVR's ssim_matlab: one 11x11x11 window over the RGB volume, replicate padding).
    ssim_clamp: clamp both images to [0, 1] before SSIM. channel_order: the order the reference
        scores ("bgr" changes ssim_matlab by float rounding only).
    average: "per_video" (mean per video, then over videos) or "pooled" (over every frame).
    vfips_windows: "all_full" (every full 12-frame window) or "reference" (range(0, N−12, 12)).
    vfips_pool: "mean" (raw mean, +inf windows dropped) or "abs_of_mean".
    flolpips_colour: "rgb" (lossless frames) or "yuv420p" (RGB → YUV 4:2:0 BT.601 → RGB first).
    fvd_clips: "all" (every consecutive non-overlapping 16-frame clip) or "one_per_video"
        (StyleGAN-V: real clip at a random start, generated clip at frame 0).
    fvd_max_videos, fvd_seed: the first videos used, and the seed of the real clip starts.
    fvd_stats: "centred" or "raw_moments" covariance; fvd_sqrtm: which product is square-rooted.
    fvd_detector_input: "float_resized" ([−1, 1] clips resized here, rescale/resize False) or
        "uint8" (uint8 clips, the detector rescales and resizes: rescale=True, resize=True).
    table_decimals: (metric, decimals) of the reference's printed tables (FLAVR: 33.33 / 0.971).
    """
    name: str
    reproduces: str
    summary: str
    metrics: tuple
    frame_crop: str | None = None
    quantize: str = "none"
    psnr_eps: float = 0.0
    psnr_mse_floor: float = ASVFI_MSE_FLOOR
    ssim: str = "gaussian"
    ssim_clamp: bool = False
    channel_order: str = "rgb"
    average: str = "per_video"
    vfips_windows: str = "all_full"
    vfips_pool: str = "mean"
    flolpips_colour: str = "rgb"
    fvd_clips: str = "all"
    fvd_max_videos: int | None = None
    fvd_seed: int = 0
    fvd_stats: str = "centred"
    fvd_sqrtm: str = "real_fake"
    fvd_detector_input: str = "float_resized"
    departures: str = ""
    table_decimals: tuple = (("psnr", 2), ("ssim", 4), ("lpips", 4), ("flolpips", 4), ("vfips", 4), ("fvd", 1))

    def covers(self, metric):
        return metric in self.metrics

    def description(self):
        """The summary with the crop and the prediction's quantisation this record applies."""
        return f"{CROP_TEXT[self.frame_crop]}; {QUANTIZE_TEXT[self.quantize]}; {self.summary}"


CROP_TEXT = {None: "whole frames", "center224": "centre 224x224 crop", "even": "frames cut to even size"}
QUANTIZE_TEXT = {"none": "raw float prediction", "round": "prediction rounded to 8 bits, not clamped",
                 "clamp_round": "prediction clamped and rounded to 8 bits",
                 "truncate": "prediction clamped and truncated to 8 bits (PNG via to_pil_image)"}
# What scoring a video's 8-bit PNGs instead of the reference's prediction does to the numbers.
PNG_EFFECT = {"none": "clamping to [0, 1] and rounding move each pixel by at most half a level",
              "round": "they differ only where the prediction leaves [0, 1]",
              "truncate": "truncation lowers every pixel by half a level on average, so PSNR here reads "
                          "higher: by about 0.04 dB at 35 dB and 0.25 dB at 42 dB (Gaussian errors)"}


PROTOCOLS = {p.name: p for p in (
    Protocol(
        name="asvfi",
        reproduces="this toolkit (metrics.py), the default",
        summary="skimage SSIM; mean over the generated frames of a video, then over videos; VFIPS "
                "over every full 12-frame window, raw mean; FloLPIPS on the lossless frames; FVD over "
                "all consecutive 16-frame clips",
        metrics=("psnr", "ssim", "lpips", "flolpips", "vfips", "fvd"),
        quantize="clamp_round",
        departures="PSNR uses an MSE floor of 1e-10: identical frames score 100 dB, not +inf; every "
                   "value below 100 dB is the exact 10·log10(1/MSE). SSIM of frames under 11 px "
                   "skips the smoothing along the short axes (as pytorch_msssim) instead of raising. "
                   "VFIPS of a video without a full window is None with a reason, not NaN. FVD: a "
                   "non-finite matrix square root is recomputed with 1e-6·I added to both covariances. "
                   "The metric networks' own departures are documented in metrics.py."),
    Protocol(
        name="flavr",
        reproduces="tarun005/FLAVR@ee17951c69ec27ce8dfe38254f4b7fdbe08d4fba: myutils.calc_psnr, "
                   "eval_metrics, pytorch_msssim.ssim_matlab, dataset/ucf101_test.py, test.py",
        summary="PSNR with +1e-8; ssim_matlab on clamped frames; mean over every output frame of "
                "the set (FLAVR crops in its UCF101 loader only; its Vimeo-90K loader reads whole frames)",
        metrics=("psnr", "ssim"),
        frame_crop="center224", psnr_eps=1e-8, psnr_mse_floor=0.0, ssim="matlab", ssim_clamp=True,
        average="pooled", table_decimals=(("psnr", 2), ("ssim", 3)),
        departures="PSNR is computed in float64 (the reference: float32), within 1e-6 (SSIM in "
                   "float32, as there; the epsilon keeps PSNR finite: identical frames score 80 dB)."),
    Protocol(
        name="rife",
        reproduces="hzwer/ECCV2022-RIFE@5d8adbdd40e12c2c8f91930eff838aebe561c086 and "
                   "MCG-NJU/EMA-VFI@75b6f6a889e695df875e103374040d47a4cfac7c: benchmark/UCF101.py",
        summary="PSNR without epsilon; ssim_matlab; mean over the samples (its UCF101 script: the DVF "
                "triplets, 256x256). The script feeds the model BGR frames (RIFE and EMA-VFI are trained "
                "on BGR); frames here are read as RGB",
        metrics=("psnr", "ssim"),
        quantize="round", psnr_eps=0.0, psnr_mse_floor=ASVFI_MSE_FLOOR, ssim="matlab",
        channel_order="bgr", average="pooled",
        departures="the reference has no epsilon: a prediction that rounds to the ground truth makes "
                   "math.log10(0) raise and the script stop; here the MSE floor 1e-10 gives 100 dB."),
    Protocol(
        name="vfibench",
        reproduces="mulns/VFIBenchmark@40a05ecaf2513e9a9464dc3fa269de366959421b: metrics/__init__.py, "
                   "calc_metric.py, metrics/VFIPS, metrics/flolpips, tools.py, evaluate_*Dst.py",
        summary="PSNR +1e-8; pytorch_msssim SSIM; generated frames, mean per video then over videos "
                "(image sets: over all frames); VFIPS abs of the mean over windows range(0, N−12, 12); "
                "FloLPIPS on frames through raw yuv420p",
        metrics=("psnr", "ssim", "lpips", "flolpips", "vfips"),
        frame_crop="even", quantize="truncate", psnr_eps=1e-8, psnr_mse_floor=0.0,
        vfips_windows="reference", vfips_pool="abs_of_mean", flolpips_colour="yuv420p",
        departures="to_pil_image wraps values outside [0, 1] (undefined); they are clamped first (the "
                   "models clamp anyway). VFIPS: a video without a window gives None with a reason, "
                   "not NaN; +inf windows are dropped (as hqqxyy's script does), not averaged into "
                   "inf. An image set is one group (its folder), so per_video gives its mean over all "
                   "frames. The RGB → YUV 4:2:0 step emulates ffmpeg's swscale to within 1 level."),
    Protocol(
        name="stylegan-v",
        reproduces="universome/stylegan-v@3fecd69c602e1cda204357201461c0fb0a634909: "
                   "src/metrics/frechet_video_distance.py, metric_utils.py, metric_main.py, "
                   "src/training/dataset.py (fvd2048_16f)",
        summary="one 16-frame clip per video (real: random start, generated: frames 0-15), the first "
                "2048 videos, real videos under 16 frames dropped; uint8 clips into the detector with "
                "rescale=True, resize=True; raw-moment covariance; sqrtm(Σ_gen Σ_real)",
        metrics=("fvd",),
        quantize="clamp_round", fvd_clips="one_per_video", fvd_max_videos=2048, fvd_stats="raw_moments",
        fvd_sqrtm="gen_real", fvd_detector_input="uint8",
        departures="real clip starts are drawn in one process from random.Random(fvd_seed); the "
                   "reference's DataLoader workers reseed `random` themselves, so its published starts "
                   "cannot be reproduced. A generated video under 16 frames is an error naming it (the "
                   "reference fails an assert). A non-finite matrix square root is recomputed with "
                   "1e-6·I added to both covariances (the reference has no fallback)."),
)}


def for_dataset(protocol, dataset, png_predictions):
    """A protocol as it applies to one data set: FLAVR crops only in its UCF101 loader (its
    Vimeo-90K loader reads whole frames), so the flavr record on another set has no crop. With
    `png_predictions` (a video's frames: inference.py keeps only the 8-bit PNGs of its MP4) the
    prediction is what those PNGs hold, and a reference that scores something else gets a departure."""
    protocol = get_protocol(protocol)
    if protocol.name == "flavr" and dataset != "flavr-ucf101":
        protocol = dataclasses.replace(protocol, frame_crop=None)
    if png_predictions and protocol.quantize != "clamp_round":
        departure = (f"a video's predictions are the 8-bit PNGs inference.py writes (clamped, rounded), "
                     f"not the reference's {QUANTIZE_TEXT[protocol.quantize]}: {PNG_EFFECT[protocol.quantize]}.")
        protocol = dataclasses.replace(protocol, quantize="clamp_round",
                                       departures=f"{departure} {protocol.departures}".strip())
    return protocol


def get_protocol(name):
    """The record of a protocol by name (a Protocol, e.g. a dataclasses.replace variant, passes
    through); a clear error listing the known names otherwise."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


# ----------------------------------------------------------------------------- crops
def center_crop_offsets(height, width, size):
    """(top, left) of torchvision's CenterCrop: int(round((H − size) / 2)), Python's half to even."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop(image, size):
    """torchvision CenterCrop((size, size)) of an (H, W, C) array: zero-padded first if smaller."""
    height, width = image.shape[:2]
    if height < size or width < size:
        pad_h, pad_w = max(size - height, 0), max(size - width, 0)
        image = np.pad(image, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = image.shape[:2]
    top, left = center_crop_offsets(height, width, size)
    return image[top:top + size, left:left + size]


def apply_frame_crop(image, crop):
    """A protocol's `frame_crop` on an (H, W, C) array (see Protocol)."""
    if crop is None:
        return image
    if crop == "even":
        return image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2]
    if crop.startswith("center"):
        return center_crop(image, int(crop[len("center"):]))
    raise ValueError(f"unknown frame crop {crop!r}; known: None, 'even', 'center<size>'")


# ----------------------------------------------------------------------------- quantisation, PSNR
def quantize_prediction(pred, mode):
    """The prediction as the reference scores it (float32, same shape); see Protocol.quantize."""
    pred = pred.float()
    if mode == "none":
        return pred
    if mode == "round":
        return torch.round(pred * 255) / 255.0
    if mode == "clamp_round":
        return torch.round(pred.clamp(0, 1) * 255) / 255.0
    if mode == "truncate":
        return torch.floor(pred.clamp(0, 1) * 255) / 255.0
    raise ValueError(f"unknown quantisation {mode!r}; known: 'none', 'round', 'clamp_round', 'truncate'")


def psnr_db(pred, gt, eps=0.0, mse_floor=ASVFI_MSE_FLOOR):
    """−10·log10(max(MSE, mse_floor) + eps) of one frame, MSE over all elements in float64.

    Finite whenever eps > 0 or mse_floor > 0; a zero MSE with neither is an error, not +inf.
    """
    diff = pred.double() - gt.double()
    mse = float((diff * diff).mean())
    denominator = max(mse, mse_floor) + eps
    if denominator <= 0:
        raise ValueError("psnr_db: identical frames give +inf without an epsilon or an MSE floor")
    return -10 * math.log10(denominator)


# ----------------------------------------------------------------------------- SSIM
def gaussian_taps(size, sigma=SSIM_SIGMA):
    """FLAVR's / pytorch_msssim's 1-D Gaussian: float32, centred at size // 2, normalised."""
    taps = torch.tensor([math.exp(-(x - size // 2) ** 2 / float(2 * sigma ** 2)) for x in range(size)])
    return taps / taps.sum()


def _as_batch(image):
    return image[None] if image.dim() == 3 else image


def ssim_matlab(img1, img2, val_range=1.0):
    """FLAVR's ssim_matlab per frame: the RGB image as one (3, H, W) volume, 11x11x11 Gaussian.

    Window size min(11, H, W), padding 5 on all six sides (replicate, channel axis included),
    conv3d without a valid-region crop, population variances, mean of the whole map. Frames under
    11 px still give a value (a smaller window, a larger map), as in the reference. (B,) float.
    """
    x, y = _as_batch(img1).float()[:, None], _as_batch(img2).float()[:, None]
    size = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    taps = gaussian_taps(size)[:, None]
    window = ((taps @ taps.t())[:, :, None] @ taps.t()).expand(1, 1, size, size, size).contiguous()

    def blur(volume):
        return F.conv3d(F.pad(volume, (5,) * 6, mode="replicate"), window)

    mu1, mu2 = blur(x), blur(y)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq, sigma2_sq = blur(x * x) - mu1_sq, blur(y * y) - mu2_sq
    sigma12 = blur(x * y) - mu1_mu2
    c1, c2 = (SSIM_K1 * val_range) ** 2, (SSIM_K2 * val_range) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma1_sq + sigma2_sq + c2
    ssim_map = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.flatten(1).mean(1)


def ssim_gaussian(img1, img2, data_range=1.0):
    """Gaussian-window SSIM per frame, averaged over channels, (B,) float64.

    pytorch_msssim 1.0.0's ssim (separable 11-tap window, valid positions only), with its float32
    Gaussian taps; skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False), whose taps are float64, agrees within 1e-6. Along an axis shorter than the window the smoothing is skipped, as
    pytorch_msssim does (skimage raises), so tiny frames still get a finite value.
    """
    x, y = _as_batch(img1).double(), _as_batch(img2).double()
    taps = gaussian_taps(SSIM_WINDOW).double()
    channels = x.shape[1]

    def blur(maps):
        for axis in (2, 3):
            if maps.shape[axis] >= SSIM_WINDOW:
                shape = [1, 1, 1, 1]
                shape[axis] = SSIM_WINDOW
                maps = F.conv2d(maps, taps.view(shape).expand(channels, -1, -1, -1), groups=channels)
        return maps

    mu1, mu2 = blur(x), blur(y)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq, sigma2_sq = blur(x * x) - mu1_sq, blur(y * y) - mu2_sq
    sigma12 = blur(x * y) - mu1_mu2
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    contrast = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = (2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1) * contrast
    return ssim_map.flatten(2).mean(-1).mean(-1)


SSIM_VARIANTS = {"gaussian": ssim_gaussian, "matlab": ssim_matlab}


# ----------------------------------------------------------------------------- one frame, a set
def score_frame(protocol, pred, gt):
    """PSNR and SSIM of one predicted frame under a protocol: {"psnr": dB, "ssim": value}.

    pred: (3, H, W) float RGB as the model produced it (any range); gt: (3, H, W) float RGB in
    [0, 1]. Both are already cropped (the crop applies when frames are read, see frame_crop).
    """
    protocol = get_protocol(protocol)
    pred = quantize_prediction(pred, protocol.quantize)
    gt = gt.float()
    psnr = psnr_db(pred, gt, protocol.psnr_eps, protocol.psnr_mse_floor)
    x, y = (pred.clamp(0, 1), gt.clamp(0, 1)) if protocol.ssim_clamp else (pred, gt)
    if protocol.channel_order == "bgr":
        x, y = x.flip(0), y.flip(0)
    try:
        ssim_fn = SSIM_VARIANTS[protocol.ssim]
    except KeyError:
        raise ValueError(f"unknown SSIM variant {protocol.ssim!r}; known: {', '.join(SSIM_VARIANTS)}") from None
    return {"psnr": psnr, "ssim": float(ssim_fn(x, y)[0])}


def aggregate(protocol, values_by_video):
    """The set value of one metric from {video id: per-frame values} (float64)."""
    protocol = get_protocol(protocol)
    groups = [np.asarray(list(values), dtype=np.float64) for values in values_by_video.values()]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("aggregate: no values to average")
    if protocol.average == "pooled":
        return float(np.concatenate(groups).mean())
    if protocol.average == "per_video":
        return float(np.mean([g.mean() for g in groups]))
    raise ValueError(f"unknown averaging {protocol.average!r}; known: 'per_video', 'pooled'")


# ----------------------------------------------------------------------------- videos: frames, windows
@dataclass(frozen=True)
class VideoPlan:
    """Which frames of an N-frame ground-truth video a scale-s evaluation uses.

    target_frames: the frames up to the last multiple of s (later ones have no right input);
    input_frames: every s-th target frame; model_windows: the input frames each interval's model
    call gets (2 inputs: its ends; 4 inputs: one more on each side, end frames repeated);
    generated_frames: the target frames that are not inputs (PSNR, SSIM, LPIPS use only these).
    """
    target_frames: tuple
    input_frames: tuple
    model_windows: tuple
    generated_frames: tuple


def generated_frames(n_frames, scale):
    """Indices of the frames a scale-s model generates (not multiples of s): VFIBenchmark's
    `del images[::s]`, the frames PSNR, SSIM and LPIPS score."""
    return [i for i in range(n_frames) if i % scale]


def video_plan(n_frames, scale, n_model_inputs=2):
    """VideoPlan of VFIBenchmark's evaluate_videoDst.py, which the toolkit's inference also follows."""
    if scale < 2 or n_frames < scale + 1:
        raise ValueError(f"video_plan: {n_frames} frames cannot be evaluated at scale {scale} "
                         f"(needs at least {scale + 1} frames and scale >= 2)")
    if n_model_inputs not in (2, 4):
        raise ValueError(f"video_plan: models take 2 or 4 inputs, not {n_model_inputs}")
    n_target = (n_frames - 1) // scale * scale + 1
    inputs = tuple(range(0, n_target, scale))
    reach = n_model_inputs // 2
    windows = tuple(tuple(inputs[min(max(j + k, 0), len(inputs) - 1)] for k in range(1 - reach, 1 + reach))
                    for j in range(len(inputs) - 1))
    return VideoPlan(tuple(range(n_target)), inputs, windows, tuple(generated_frames(n_target, scale)))


def vfips_window_starts(n_frames, rule):
    """Starts of the non-overlapping 12-frame VFIPS windows of an N-frame sequence.

    "reference": range(0, N − 12, 12), VFIBenchmark and hqqxyy (N = 24 scores one window, N = 12
    none); "all_full": every full window, the toolkit's (N = 12 and 24 get one more).
    """
    if rule == "reference":
        return list(range(0, n_frames - VFIPS_WINDOW, VFIPS_WINDOW))
    if rule == "all_full":
        return list(range(0, n_frames - VFIPS_WINDOW + 1, VFIPS_WINDOW))
    raise ValueError(f"unknown VFIPS window rule {rule!r}; known: 'reference', 'all_full'")


def vfips_windows(protocol, n_frames):
    """Frame indices of each VFIPS window a protocol scores."""
    starts = vfips_window_starts(n_frames, get_protocol(protocol).vfips_windows)
    return [list(range(s, s + VFIPS_WINDOW)) for s in starts]


def pool_vfips(protocol, window_scores):
    """Video VFIPS from its window scores: (value or None, reason). +inf windows are dropped."""
    rule = get_protocol(protocol).vfips_pool
    if not window_scores:
        return None, f"not enough frames (VFIPS needs a window of {VFIPS_WINDOW})"
    kept = [float(s) for s in window_scores if float(s) != math.inf]
    if not kept:
        return None, "every VFIPS window scored +inf"
    mean = float(np.mean(kept))
    if rule == "mean":
        return mean, ""
    if rule == "abs_of_mean":
        return abs(mean), ""
    raise ValueError(f"unknown VFIPS pooling {rule!r}; known: 'mean', 'abs_of_mean'")


def flolpips_pairs(n_frames, batch=8):
    """The (t, t+1) pairs FloLPIPS scores, t = 0 … N−2, grouped in batches of `batch` pairs."""
    starts = list(range(n_frames - 1))
    return [[(t, t + 1) for t in starts[i:i + batch]] for i in range(0, len(starts), batch)]


def flolpips_input(protocol, frame_u8):
    """(3, H, W) float32 [0, 1] frame FloLPIPS gets from an (H, W, 3) uint8 RGB frame."""
    if get_protocol(protocol).flolpips_colour == "yuv420p":
        frame_u8 = yuv420.yuv420_round_trip(frame_u8)
    return torch.from_numpy(np.ascontiguousarray(frame_u8)).permute(2, 0, 1).float().div(255)


# ----------------------------------------------------------------------------- FVD
def fvd_clip_frames(protocol, lengths, real=True, n_frames=FVD_CLIP_FRAMES, subsample=1):
    """{video index: frame indices of its clips} for videos of the given lengths, in sorted order.

    "all": every consecutive non-overlapping clip (a video without one maps to []).
    "one_per_video" (StyleGAN-V): real videos under n·sf frames are dropped, the first
    fvd_max_videos of the rest get one clip at random.randint(0, L − n·sf + sf − 1) drawn in order
    from random.Random(fvd_seed), frames start + sf·k; generated videos get frames 0, sf, … .
    """
    protocol = get_protocol(protocol)
    span = n_frames * subsample
    if protocol.fvd_clips == "all":
        return {i: [list(range(s, s + span, subsample)) for s in range(0, length - span + 1, span)]
                for i, length in enumerate(lengths)}
    if protocol.fvd_clips != "one_per_video":
        raise ValueError(f"unknown FVD clip rule {protocol.fvd_clips!r}; known: 'all', 'one_per_video'")
    if real:
        kept = [i for i, length in enumerate(lengths) if length >= span]
    else:
        short = [i for i, length in enumerate(lengths) if length < span]
        if short:
            raise ValueError(f"generated video(s) {short} have fewer than {span} frames (StyleGAN-V "
                             f"needs {n_frames} frames every {subsample})")
        kept = list(range(len(lengths)))
    kept = kept[:protocol.fvd_max_videos]
    rng = random.Random(protocol.fvd_seed)
    clips = {}
    for i in kept:
        start = rng.randint(0, lengths[i] - span + subsample - 1) if real else 0
        clips[i] = [list(range(start, start + span, subsample))]
    return clips


def feature_stats(features, style):
    """(mean, covariance) in float64 of features (N, D): "centred" Σ(x−μ)(x−μ)ᵀ/N, or StyleGAN-V's
    "raw_moments" Σxxᵀ/N − μμᵀ of float32-cast features."""
    features = np.asarray(features)
    if style == "raw_moments":
        features = features.astype(np.float32).astype(np.float64)
        mean = features.sum(0) / len(features)
        return mean, features.T @ features / len(features) - np.outer(mean, mean)
    if style == "centred":
        features = features.astype(np.float64)
        mean = features.mean(0)
        centred = features - mean
        return mean, centred.T @ centred / len(features)
    raise ValueError(f"unknown FVD statistics {style!r}; known: 'centred', 'raw_moments'")


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """real(‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2·sqrtm(Σ1 Σ2))), finite: a non-finite square root is
    recomputed with eps·I added to both covariances."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular products; finiteness is checked
        root = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(root).all():
            offset = eps * np.eye(len(sigma1))
            root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(np.real(diff @ diff + np.trace(sigma1 + sigma2 - 2 * root)))


def fvd_from_features(protocol, real, generated):
    """FVD of real and generated detector features (N, D) under a protocol's statistics and order."""
    protocol = get_protocol(protocol)
    if min(len(real), len(generated)) < 2:
        raise ValueError(f"FVD needs at least 2 clips per side, got {len(real)} real, {len(generated)} generated")
    real_stats = feature_stats(real, protocol.fvd_stats)
    gen_stats = feature_stats(generated, protocol.fvd_stats)
    first, second = (gen_stats, real_stats) if protocol.fvd_sqrtm == "gen_real" else (real_stats, gen_stats)
    return frechet_distance(*first, *second)


def presumed_styleganv_detector_input(clip_u8):
    """What StyleGAN-V's TorchScript I3D presumably does with a uint8 clip (B, 3, T, H, W) given
    rescale=True, resize=True: x/255·2 − 1, then trilinear to (T, 224, 224). Its exact call is only
    inside the TorchScript file; this presumption is for checking equivalence, not for scoring."""
    clip = clip_u8.float() / 255 * 2 - 1
    return F.interpolate(clip, size=(clip.shape[2], 224, 224), mode="trilinear", align_corners=False)
