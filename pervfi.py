"""PerVFI (Wu et al., CVPR 2024): perception-oriented frame interpolation with asymmetric blending.

This is the authors' released generator (mulns/PerVFI, `PFlowVFI_V0.Network(dilate_size=9)`, the
network of their v00 checkpoint): the same module tree, parameter names, shapes and arithmetic,
so their checkpoint loads with `strict=True` (`load_official_state_dict`) and the outputs match.
`width` scales every channel count for small CPU experiments; width 1.0 is the official network.

Pipeline for frames I0, I1 in [0, 1] (mapped to [-1, 1] inside), flows F0->1, F1->0 in pixels and a
time t in (0, 1):

1. Feature pyramid (softmax splatting's encoder): level 0 = [image, 32 ch] at full size, 64 ch at
   1/2, 96 ch at 1/4. A GridNet-style metric network scores every frame-0 pixel by brightness
   constancy along the flow; the metric is scaled by 2t (2(1-t) for frame 1) and NEGATED before
   softmax splatting (the authors' convention: a low score wins).
2. Frame 0 (the primary side) is softmax-splatted to t at every level (flows and metrics are
   bilinearly resized level to level); a hole mask marks pixels no frame-0 pixel reached. Frame 1
   is not splatted: the flow t->1 is obtained by splatting (1-t)F1->0 and negating it.
3. Frame 1's features are aligned to t, coarse to fine, by modulated deformable convolutions whose
   offsets are learned from [splatted f0, f1, hole mask, flow t->1] (the flow is an input, not the
   offset's starting point), and merged with the splatted frame-0 features.
4. Asymmetric soft-binary blending per level, f0 (1 - m) + f1' m with m = tanh(|x|); x comes from
   the hole mask (9x9 conv) gated by channel attention, so m ~ 0 (frame 0) away from holes.
5. An HRNet-style fusion turns the blended pyramid into conditions at 1/2, 1/4, 1/8.
6. A conditional Glow (3 blocks x K = 16 steps: ActNorm with data-dependent initialisation, dense
   invertible 1x1 conv, affine coupling log-scale = scale*tanh(.) + scale_shift conditioned on the
   level's condition) maps the target frame itself to latents. The priors do not see the
   condition; the last block's prior is a learned constant. Sampling treats the given latents as
   standard-normal noise: z = mean + sd * eps, eps ~ heat * N(0, 1).

The flow estimator is not a registered submodule: it is frozen, kept out of `state_dict()` and of
`parameters()` (so the optimizer never sees it), and still follows `.to(device)`.

Official training recipe (src/train): loss = NLL (`official_nll`) + 0.1 * `lap_loss` + 0.2 * VGG
on a sample drawn at heat = std of the encoded latents (`training_heat`).
"""
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import flow as flowlib
import losses
import weights
from checkpoints import CheckpointError
from resnet_3D import scaled_channels

GLOW_BLOCKS = 3        # pyramid levels = Glow blocks = squeezes, so frames are padded to 2**3
BLEND_DILATION = 9     # SoftBinary's hole-mask kernel (Network(dilate_size=9))
METRIC_CLIP = 20.0     # splatting metrics are clipped to +-20 before exp()
SPLAT_EPS = 1e-7       # normaliser epsilon of softmax / average splatting
HOLE_LEVEL = 0.5       # average-splatted ones <= 0.5: no frame-0 pixel arrived
MASK_JITTER = 100.0    # training noise on the soft masks: (U(0, 1) - 0.5) / 100
DEQUANT_LEVELS = 255.0  # dequantisation noise and constant of the official NLL
OFFICIAL_ROOT = "featurePyramid."  # every key of the authors' generator file starts with a known root
INFERENCE_FLOW_ESTIMATOR = "raft_sintel"  # the authors' inference: RAFT, Sintel weights, 12 iterations
OFFLINE_FLOW_ESTIMATOR = "dis"  # used, with a warning, when a learned estimator's weights are unavailable


def default_pervfi_config(**overrides):
    """The default PerVFI configuration (plain types only, stored in checkpoints).

    width scales every channel count (1.0 = the official network, 8,667,545 parameters without the
    flow estimator); steps_per_level is K, the flow steps per Glow block (16 official); heat is
    the sampling temperature at inference (0.3 in the released inference code); train_heat is the
    temperature of the sample returned during training for the Lap/perceptual terms
    ("latent_std" = the std of the encoded latents, as in the official training code, or a float).
    flow_estimator names a flow.py estimator; the authors ran RAFT with its Sintel weights (their
    training used flows precomputed by RAFT or GMFlow); "dis" needs no downloaded weights.
    """
    config = dict(model="pervfi", scale=2, width=1.0, flow_estimator="dis", steps_per_level=16,
                  heat=0.3, train_heat="latent_std")
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"pervfi.py: unknown PerVFI config keys {unknown}; known: {sorted(config)}")
    config.update(overrides)
    return config


default_config = default_pervfi_config  # the generic name model.default_config(model="pervfi") looks up


def build_pervfi(config, flow_estimator=None):
    """PerVFI from a config dict: the keys of `default_pervfi_config` are used, others are ignored
    (model.default_config(model="pervfi") also carries ASVFI's keys); `.config` keeps PerVFI's.

    `flow_estimator` (an nn.Module: forward(img0, img1) -> (B, 2, H, W)) replaces the one named in
    the config; otherwise `flow.build_flow_estimator(config["flow_estimator"])` is built on first
    use (or call `model.set_flow_estimator(name, weights_dir=...)`).
    """
    if config.get("model", "pervfi") != "pervfi":
        raise ValueError(f"pervfi.py: build_pervfi got model={config['model']!r}, expected 'pervfi'")
    known = {k: v for k, v in config.items() if k in default_pervfi_config()}
    model = PerVFI(default_pervfi_config(**known))
    if flow_estimator is not None:
        model.set_flow_estimator(flow_estimator)
    return model


# ----------------------------------------------------------------------------------------------
# The authors' checkpoint
# ----------------------------------------------------------------------------------------------

def official_state_dict(checkpoint):
    """The generator's state dict from what `torch.load` returns for the authors' v00 file.

    Their file is the generator's plain state_dict, possibly with DDP's `module.` (their loader
    strips it: `k.replace("module.", "")`); a dict wrapping it under "state_dict" / "model" /
    "netG" is accepted too.
    """
    state = checkpoint
    while isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        wrapped = [state[k] for k in ("state_dict", "model", "netG", "generator") if isinstance(state.get(k), dict)]
        if len(wrapped) != 1:
            raise ValueError(f"pervfi.py: no PerVFI state dict in this checkpoint (keys {sorted(state)[:8]})")
        state = wrapped[0]
    if not isinstance(state, dict):
        raise ValueError(f"pervfi.py: expected a state dict, got {type(state).__name__}")
    return {".".join(part for part in key.split(".") if part != "module"): value for key, value in state.items()}


def load_official_state_dict(model, checkpoint, strict=True):
    """Load the authors' weights (a path or a loaded object, see `official_state_dict`) into
    `model` (a width-1.0 PerVFI) with strict key checking; returns the model."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(official_state_dict(checkpoint), strict=strict)
    return model


def is_official_checkpoint(obj):
    """True for what torch.load gives for the authors' file: PerVFI's keys and none of our config."""
    if not isinstance(obj, dict) or "config" in obj:
        return False
    try:
        state = official_state_dict(obj)
    except ValueError:
        return False
    return any(key.startswith(OFFICIAL_ROOT) for key in state)


def load_official_checkpoint(obj, path, overrides=None, weights_dir=None):
    """(network, checkpoint record) for the authors' file at `path` (`obj` = its torch.load), run as
    their inference pipeline: RAFT with the Sintel weights as flow estimator (unless `overrides`
    name another), DIS with a warning when those weights cannot be had."""
    config = default_pervfi_config(**{"flow_estimator": INFERENCE_FLOW_ESTIMATOR, **(overrides or {})})
    if config["width"] != 1.0 or config["steps_per_level"] != 16:
        raise CheckpointError(f"{path}: the authors' PerVFI checkpoint needs width 1.0 and steps_per_level 16")
    network = PerVFI(config)
    state = official_state_dict(obj)
    checkpoints.load_strict(network, state, path, hint="Expected the authors' PerVFI v00 generator.")
    network.set_flow_estimator(weights_dir=weights_dir)
    return network, {"model": "pervfi", "config": config, "format": "official", "state_dict": state}


def build_official_pervfi(checkpoint, flow_estimator=None, **overrides):
    """A width-1.0 PerVFI carrying the authors' weights (`checkpoint`: path or loaded object)."""
    config = default_pervfi_config(**overrides)
    if config["width"] != 1.0 or config["steps_per_level"] != 16:
        raise ValueError("pervfi.py: the official checkpoint needs width=1.0 and steps_per_level=16")
    return load_official_state_dict(build_pervfi(config, flow_estimator), checkpoint)


# ----------------------------------------------------------------------------------------------
# Splatting and warping (pure torch)
# ----------------------------------------------------------------------------------------------

def splat_sum(values, flow):
    """Summation (forward) splatting: every source pixel adds its value bilinearly at p + flow(p).

    Corners outside the image are dropped (no renormalisation); pixels with a non-finite target
    are skipped. Differentiable w.r.t. values and flow.
    """
    batch, channels, height, width = values.shape
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype).view(1, 1, width)
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype).view(1, height, 1)
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    finite = torch.isfinite(x) & torch.isfinite(y)
    x, y = torch.where(finite, x, 0.0), torch.where(finite, y, 0.0)
    x0, y0 = x.floor(), y.floor()
    x1, y1 = x0 + 1, y0 + 1
    corners = ((x0, y0, (x1 - x) * (y1 - y)), (x1, y0, (x - x0) * (y1 - y)),
               (x0, y1, (x1 - x) * (y - y0)), (x1, y1, (x - x0) * (y - y0)))
    source = values.reshape(batch, channels, -1)
    out = values.new_zeros(batch, channels, height * width)
    for corner_x, corner_y, weight in corners:
        inside = finite & (corner_x >= 0) & (corner_x < width) & (corner_y >= 0) & (corner_y < height)
        weight = torch.where(inside, weight, 0.0).to(values.dtype).view(batch, 1, -1)
        index = torch.where(inside, corner_y * width + corner_x, 0.0).long().view(batch, 1, -1)
        out = out.scatter_add(2, index.expand(-1, channels, -1), source * weight)
    return out.view(batch, channels, height, width)


def softsplat(values, flow, metric=None, mode="soft"):
    """Splatting of Niklaus & Liu (CVPR 2020), modes "sum", "avg" (normalised by the splatted ones)
    and "soft" (weights exp(metric), metric (B, 1, H, W)); normalisers get + 1e-7.

    Runs in float32 (or wider) whatever autocast does: exp(20) overflows float16.
    """
    work = torch.promote_types(values.dtype, torch.float32)
    values, flow = values.to(work), flow.to(work)
    if mode == "sum":
        return splat_sum(values, flow)
    if mode == "avg":
        weighted = torch.cat([values, values.new_ones(values.shape[0], 1, *values.shape[2:])], 1)
    elif mode == "soft":
        importance = metric.to(work).exp()
        weighted = torch.cat([values * importance, importance], 1)
    else:
        raise ValueError(f"pervfi.py: softsplat mode must be 'sum', 'avg' or 'soft', got {mode!r}")
    out = splat_sum(weighted, flow)
    return out[:, :-1] / (out[:, -1:] + SPLAT_EPS)


def binary_hole(flow):
    """1 where average splatting of ones along `flow` gives <= 0.5, i.e. (because of the 1e-7 in
    the normaliser) where practically no source pixel arrived; else 0."""
    ones = torch.ones(flow.shape[0], 1, *flow.shape[2:], device=flow.device, dtype=flow.dtype)
    coverage = softsplat(ones, flow, mode="avg")
    return (coverage <= HOLE_LEVEL).to(coverage.dtype)


def backwarp(image, flow):
    """Backward warp of the softmax-splatting code: grid_sample at p + flow(p) with
    align_corners=True and zeros outside (used by the metric network)."""
    _, _, height, width = flow.shape
    horizontal = torch.linspace(-1.0, 1.0, width, dtype=flow.dtype, device=flow.device).view(1, 1, 1, -1)
    vertical = torch.linspace(-1.0, 1.0, height, dtype=flow.dtype, device=flow.device).view(1, 1, -1, 1)
    grid = torch.cat([horizontal.expand(-1, -1, height, -1), vertical.expand(-1, -1, -1, width)], 1)
    normalised = torch.cat([flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0),
                            flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)], 1)
    return F.grid_sample(image, (grid + normalised).permute(0, 2, 3, 1), mode="bilinear",
                         padding_mode="zeros", align_corners=True)


def resize(x, size, rescale):
    """Bilinear resize (align_corners=False); `rescale` multiplies by the height ratio (flows)."""
    out = F.interpolate(x, size, mode="bilinear", align_corners=False)
    return out * (size[0] / x.shape[-2]) if rescale else out


# ----------------------------------------------------------------------------------------------
# Modulated deformable convolution (torchvision.ops.deform_conv2d semantics), pure torch
# ----------------------------------------------------------------------------------------------

def deform_conv2d(x, offset, mask, weight, bias=None, padding=1, stride=1, dilation=1):
    """Modulated deformable convolution with torchvision's layout and sampling.

    x (B, C, H, W); weight (Cout, C, kh, kw); offset (B, 2*G*kh*kw, Ho, Wo) where channel
    2*(g*kh*kw + k) is the vertical (dy) and the next one the horizontal (dx) displacement of tap
    k = ky*kw + kx of offset group g (input channels split into G contiguous groups); mask
    (B, G*kh*kw, Ho, Wo). Tap k of output pixel (oy, ox) samples bilinearly at
    (oy*stride - padding + ky*dilation + dy, ...), a point at or beyond one pixel outside the
    image reads 0 and so do out-of-image corners; the sample is multiplied by the mask.
    """
    batch, channels, height, width = x.shape
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    groups = offset.shape[1] // (2 * taps)
    if (in_channels != channels or groups < 1 or groups * 2 * taps != offset.shape[1]
            or mask.shape[1] != groups * taps or channels % groups):
        raise ValueError(f"pervfi.py: deform_conv2d got {channels} input channels, weight {tuple(weight.shape)}, "
                         f"offset {offset.shape[1]} and mask {mask.shape[1]} channels")
    out_h = (height + 2 * padding - dilation * (kernel_h - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kernel_w - 1) - 1) // stride + 1
    offset = offset.to(torch.promote_types(offset.dtype, torch.float32))  # exact pixel positions under autocast
    grid = dict(device=x.device, dtype=offset.dtype)
    tap_y, tap_x = torch.meshgrid(torch.arange(kernel_h, **grid) * dilation,
                                  torch.arange(kernel_w, **grid) * dilation, indexing="ij")
    rows = (torch.arange(out_h, **grid) * stride - padding).view(1, 1, 1, out_h, 1)
    cols = (torch.arange(out_w, **grid) * stride - padding).view(1, 1, 1, 1, out_w)
    offset = offset.view(batch, groups, taps, 2, out_h, out_w)
    y = rows + tap_y.reshape(1, 1, taps, 1, 1) + offset[:, :, :, 0]
    x_pos = cols + tap_x.reshape(1, 1, taps, 1, 1) + offset[:, :, :, 1]
    reachable = (y > -1) & (y < height) & (x_pos > -1) & (x_pos < width)
    y0, x0 = y.floor(), x_pos.floor()
    low_y, low_x = y - y0, x_pos - x0
    high_y, high_x = 1 - low_y, 1 - low_x
    per_group = channels // groups
    source = x.reshape(batch, groups, per_group, height * width)
    sampled = 0
    for corner_y, corner_x, corner_weight in ((y0, x0, high_y * high_x), (y0, x0 + 1, high_y * low_x),
                                              (y0 + 1, x0, low_y * high_x), (y0 + 1, x0 + 1, low_y * low_x)):
        valid = reachable & (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
        index = torch.where(valid, corner_y * width + corner_x, 0.0).long().view(batch, groups, 1, -1)
        corner_weight = torch.where(valid, corner_weight, 0.0).to(x.dtype).view(batch, groups, 1, -1)
        sampled = sampled + corner_weight * source.gather(3, index.expand(-1, -1, per_group, -1))
    sampled = sampled.view(batch, groups, per_group, taps, out_h, out_w)
    sampled = sampled * mask.view(batch, groups, 1, taps, out_h, out_w).to(x.dtype)
    columns = sampled.reshape(batch, channels * taps, out_h * out_w)
    out = torch.matmul(weight.reshape(out_channels, channels * taps), columns)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out.view(batch, out_channels, out_h, out_w)


class DeformConv2d(nn.Module):
    """Parameters (`weight`, `bias`) and initialisation of torchvision.ops.DeformConv2d(c, c, k)."""

    def __init__(self, channels, kernel_size=3, padding=1):
        super().__init__()
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x, offset, mask):
        return deform_conv2d(x, offset, mask, self.weight, self.bias, padding=self.padding)


class DCNPack(nn.Module):
    """Offsets and modulation masks predicted from `feat` (zero at initialisation), then DCNv2."""

    def __init__(self, channels, groups, kernel_size=3):
        super().__init__()
        self.conv_offset = nn.Conv2d(channels, groups * 3 * kernel_size ** 2, 3, 1, 1)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.dconv = DeformConv2d(channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x, feat, trace=None):
        raw = self.conv_offset(feat)
        if trace is not None:
            trace["conv_offset"] = raw
        first, second, mask_logits = raw.chunk(3, dim=1)
        return self.dconv(x, torch.cat([first, second], 1), torch.sigmoid(mask_logits))


def offset_groups(channels, wanted=8):
    """The largest number of offset groups <= wanted that divides the channels (8, 8, 7 officially)."""
    return max(g for g in range(1, wanted + 1) if channels % g == 0)


# ----------------------------------------------------------------------------------------------
# Feature pyramid and splatting metric (softmax splatting's encoder and "Softmetric")
# ----------------------------------------------------------------------------------------------

def conv3x3(in_channels, out_channels, stride=1, bias=False):
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)


def encoder_stage(in_channels, out_channels, stride):
    return nn.Sequential(conv3x3(in_channels, out_channels, stride), nn.PReLU(out_channels, 0.25),
                         conv3x3(out_channels, out_channels), nn.PReLU(out_channels, 0.25))


class PyramidEncoder(nn.Module):
    """Three conv-PReLU stages (stride 2 between them); level 0 also carries the image."""

    def __init__(self, channels):
        super().__init__()
        self.netOne = encoder_stage(3, channels[0], 1)
        self.netTwo = encoder_stage(channels[0], channels[1], 2)
        self.netThr = encoder_stage(channels[1], channels[2], 2)

    def forward(self, image):
        one = self.netOne(image)
        two = self.netTwo(one)
        return [torch.cat([image, one], 1), two, self.netThr(two)]


class GridBlock(nn.Module):
    """One edge of the metric's GridNet (`netMain`, plus `netShortcut` where the channels change).

    kind: "lateral" (PReLU-conv-PReLU-conv + skip), "down" (stride 2), "up" (bilinear x2 first),
    "output" (conv-PReLU-conv + 1x1 skip).
    """

    def __init__(self, channels, kind):
        super().__init__()
        c_in, c_mid, c_out = channels
        self.residual = kind in ("lateral", "output")
        layers = [nn.PReLU(c_in, 0.25), conv3x3(c_in, c_mid, 2 if kind == "down" else 1),
                  nn.PReLU(c_mid, 0.25), conv3x3(c_mid, c_out)]
        if kind == "up":
            layers.insert(0, nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        if kind == "output":
            layers.pop(0)
        self.netMain = nn.Sequential(*layers)
        if self.residual and c_in != c_out:
            self.netShortcut = nn.Conv2d(c_in, c_out, 1, bias=False)
        else:
            self.netShortcut = None

    def forward(self, x):
        out = self.netMain(x)
        if not self.residual:
            return out
        return out + (x if self.netShortcut is None else self.netShortcut(x))


class SplatMetric(nn.Module):
    """Softmax-splatting metric: a 4-row GridNet over [conv(image), conv(photometric error)].

    The error is the channel mean of |f0 - backwarp(f1, F0->1)| over the level-0 features (image
    included); the output is one channel at full resolution. Module names are the official ones
    ("0x0 - 0x1" = row 0, column 0 -> 1, ...).
    """

    def __init__(self, rows):
        super().__init__()
        error_channels = max(1, int(round(rows[0] / 4)))
        self.netInput = conv3x3(3, rows[0] - error_channels)
        self.netError = conv3x3(1, error_channels)
        self.rows = len(rows)
        for row, c in enumerate(rows):
            self.add_module(f"{row}x0 - {row}x1", GridBlock([c, c, c], "lateral"))
        for row in range(self.rows - 1):
            self.add_module(f"{row}x0 - {row + 1}x0", GridBlock([rows[row], rows[row + 1], rows[row + 1]], "down"))
        for row in range(self.rows - 1, 0, -1):
            self.add_module(f"{row}x1 - {row - 1}x1", GridBlock([rows[row], rows[row - 1], rows[row - 1]], "up"))
        self.netOutput = GridBlock([rows[0], rows[0], 1], "output")

    def forward(self, features, other_features, flow):
        error = (features[0] - backwarp(other_features[0], flow)).abs().mean(1, keepdim=True)
        columns = [torch.cat([self.netInput(features[0][:, :3]), self.netError(error)], 1)]
        for row in range(1, self.rows):
            columns.append(self._modules[f"{row - 1}x0 - {row}x0"](columns[-1]))
        for row in range(self.rows - 1, -1, -1):
            columns[row] = self._modules[f"{row}x0 - {row}x1"](columns[row])
            if row < self.rows - 1:
                up = self._modules[f"{row + 1}x1 - {row}x1"](columns[row + 1])
                columns[row] = columns[row] + up[..., :columns[row].shape[2], :columns[row].shape[3]]
        return self.netOutput(columns[0])


class FeaturePyramid(nn.Module):
    """Encoder and splatting metric (the official `featurePyramid`; the splatting itself is done
    by `PerVFI.conditions`, which runs the per-frame parts once for all times)."""

    def __init__(self, channels, metric_rows):
        super().__init__()
        self.netEncode = PyramidEncoder(channels)
        self.netSoftmetric = SplatMetric(metric_rows)


def splat_pyramid(features, metric, flow, trace=None):
    """Softmax-splat every level of `features` along `flow` with the NEGATED metric.

    Level 0 uses (metric, flow) as given; each coarser level bilinearly resizes the previous
    level's metric and flow (the flow also rescaled). Returns splatted features and hole masks.
    """
    splatted, holes, flows = [], [], []
    for level, feature in enumerate(features):
        if level:
            size = feature.shape[-2:]
            metric, flow = resize(metric, size, False), resize(flow, size, True)
        splatted.append(softsplat(feature, flow, metric.neg().clip(-METRIC_CLIP, METRIC_CLIP), "soft"))
        holes.append(binary_hole(flow))
        flows.append(flow)
    if trace is not None:
        trace["splat_flow"] = flows
    return splatted, holes


# ----------------------------------------------------------------------------------------------
# Deformable alignment and soft-binary blending
# ----------------------------------------------------------------------------------------------

class DeformableAlign(nn.Module):
    """Aligns frame-1 features to t, coarse (l2) to fine (l0), and merges them with splatted f0.

    Per level: offset features from [splatted f0, f1, hole, flow t->1] (plus the upsampled coarser
    offset features), DCNv2 of f1, refinement with the upsampled coarser aligned features, and a
    merge with [splatted f0, hole] (plus the upsampled coarser merge). Output per level = merge.
    """

    def __init__(self, channels):
        super().__init__()
        top = len(channels) - 1
        self.top = top
        for name in ("offset_conv1", "offset_conv2", "offset_conv3", "deform_conv", "feat_conv",
                     "merge_conv1", "merge_conv2"):
            setattr(self, name, nn.ModuleDict())
        for i in range(top, -1, -1):
            level, c = f"l{i}", channels[i]
            coarser = channels[i + 1] if i < top else 0
            self.offset_conv1[level] = nn.Conv2d(2 * c + 3, c, 3, 1, 1)
            self.offset_conv2[level] = nn.Conv2d(c + coarser, c, 3, 1, 1)
            if i < top:
                self.offset_conv3[level] = nn.Conv2d(c, c, 3, 1, 1)
            self.deform_conv[level] = DCNPack(c, offset_groups(c))
            self.merge_conv1[level] = nn.Conv2d(2 * c + 1, c, 3, 1, 1)
            if i < top:
                self.feat_conv[level] = nn.Conv2d(c + coarser, c, 3, 1, 1)
                self.merge_conv2[level] = nn.Conv2d(c + coarser, c, 3, 1, 1)

    @staticmethod
    def lrelu(x):
        return F.leaky_relu(x, 0.1)

    @staticmethod
    def upsample(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, splatted, features1, holes, flow_t1, trace=None):
        merged_levels, dcn_out = [None] * len(holes), [None] * len(holes)
        for i in range(self.top, -1, -1):
            level = f"l{i}"
            flow = resize(flow_t1, holes[i].shape[2:], True)
            offset = self.lrelu(self.offset_conv1[level](torch.cat([splatted[i], features1[i], holes[i], flow], 1)))
            if i == self.top:
                offset = self.lrelu(self.offset_conv2[level](offset))
            else:
                offset = self.lrelu(self.offset_conv2[level](torch.cat([offset, up_offset], 1)))
                offset = self.lrelu(self.offset_conv3[level](offset))
            dcn_trace = {} if trace is not None and i == self.top else None
            aligned = self.deform_conv[level](features1[i], offset, dcn_trace)
            dcn_out[i] = aligned
            if dcn_trace is not None:
                trace[f"dcn_feat_l{i}"], trace[f"dcn_conv_offset_l{i}"] = offset, dcn_trace["conv_offset"]
            if i < self.top:
                aligned = self.feat_conv[level](torch.cat([aligned, up_aligned], 1))
            merged = self.merge_conv1[level](torch.cat([splatted[i], aligned, holes[i]], 1))
            if i < self.top:
                merged = self.merge_conv2[level](torch.cat([merged, up_merged], 1))
            merged_levels[i] = merged
            if i > 0:
                up_offset = self.upsample(offset) * 2
                up_aligned = self.upsample(self.lrelu(aligned))
                up_merged = self.upsample(merged)
        if trace is not None:
            trace["dcn_out"], trace["align_out"] = dcn_out, merged_levels
        return merged_levels


class SoftBinary(nn.Module):
    """Soft-binary mask m = tanh(|x|) of the asymmetric blend: x = conv1x1(hole features * channel
    attention of [f0, f1']), hole features = 9x9 -> 3x3 -> 1x1 convs of the hole mask."""

    def __init__(self, feature_channels, channels=64, reduction=8, dilate_size=BLEND_DILATION):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, channels, dilate_size, 1, padding="same", bias=False), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 3, 1, padding="same", bias=False), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 1, 1, padding="same", bias=False))
        self.att = nn.Conv2d(2 * feature_channels, channels, 3, 1, padding="same")
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())
        self.conv2 = nn.Conv2d(channels, 1, 1, 1, padding="same", bias=False)

    def logit(self, hole, primary, complementary):
        gate = self.fc(self.att(torch.cat([primary, complementary], 1)).mean(dim=(2, 3)))
        return self.conv2(self.conv1(hole) * gate[:, :, None, None])

    def forward(self, hole, primary, complementary, noise=None):
        """`noise` U(0, 1) shaped like the mask: added as (noise - 0.5) / 100 (training only)."""
        mask = torch.tanh(self.logit(hole, primary, complementary).abs())
        return mask if noise is None else mask + (noise.to(mask.dtype) - 0.5) / MASK_JITTER


class AttentionMerge(nn.Module):
    """Per level, blended = f0 (1 - m) + f1' m with the level's soft-binary mask m."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.softbinary = nn.ModuleDict()
        for i in range(len(channels) - 1, -1, -1):
            self.softbinary[str(i)] = SoftBinary(channels[i], hidden)

    def forward(self, primary, complementary, holes, noise=None, trace=None):
        blended, masks, logits = [], [], []
        for i, (f0, f1, hole) in enumerate(zip(primary, complementary, holes)):
            blend = self.softbinary[str(i)]
            if trace is not None:
                logits.append(blend.logit(hole, f0, f1))
            mask = blend(hole, f0, f1, None if noise is None else noise[i])
            blended.append(f0 * (1 - mask) + f1 * mask)
            masks.append(mask)
        if trace is not None:
            trace["blend_logit"], trace["soft_mask"], trace["blended"] = logits, masks, blended
        return blended, masks


# ----------------------------------------------------------------------------------------------
# Multiscale fusion (HRNet-style, without batch norm)
# ----------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.conv2 = conv3x3(planes, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.downsample = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x):
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def conv_relu(in_channels, out_channels, stride=1):
    return nn.Sequential(conv3x3(in_channels, out_channels, stride), nn.ReLU())


def exchange(in_channels, out_channels, steps_down):
    """HRNet's path from one branch to another: 1x1 conv + nearest upsampling (steps_down < 0) or
    stride-2 3x3 convs (ReLU between them, none after the last)."""
    if steps_down < 0:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
                             nn.Upsample(scale_factor=2 ** -steps_down, mode="nearest"))
    layers = [conv_relu(in_channels, in_channels, 2) for _ in range(steps_down - 1)]
    return nn.Sequential(*layers, conv3x3(in_channels, out_channels, 2))


class HighResolutionModule(nn.Module):
    """Parallel branches of two BasicBlocks each, then every branch sums all branches (resampled)."""

    def __init__(self, channels, blocks=2):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(None if j == i else exchange(channels[j], channels[i], i - j) for j in range(len(channels)))
            for i in range(len(channels)))

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, paths in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else paths[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else paths[j](xs[j]))
            fused.append(F.relu(y))
        return fused


def transition(previous, current):
    """New branches for the next HRNet stage: 3x3 convs where the channels change, a stride-2 path
    from the last branch for each added branch (None where nothing changes)."""
    layers = []
    for i, channels in enumerate(current):
        if i < len(previous):
            layers.append(conv_relu(previous[i], channels) if previous[i] != channels else None)
        else:
            steps = [conv_relu(previous[-1], channels if k == i - len(previous) else previous[-1], 2)
                     for k in range(i + 1 - len(previous))]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class MultiscaleFuse(nn.Module):
    """Blended pyramid [level 0, 1, 2] -> Glow conditions at 1/2, 1/4, 1/8 of the frame size.

    Stems (one per level), a Bottleneck stage on level 0, then stage 2 (2 branches) and stage 3
    (3 branches) of two HR modules each; the stem of level l is concatenated into the new branch
    of the stage that adds it (`extra1`, `extra2`); stride-2 `final_layers` give the conditions.
    """

    def __init__(self, level_channels, stem=64, branches=(32, 64, 96), modules=2):
        super().__init__()
        self.stems = nn.ModuleList(conv_relu(c, stem) for c in level_channels)
        planes = stem
        self.layer1 = nn.Sequential(Bottleneck(stem, planes),
                                    *[Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(3)])
        stage2, stage3 = list(branches[:2]), list(branches)
        self.transition1 = transition([planes * Bottleneck.expansion], stage2)
        self.extra1 = conv_relu(stem + stage2[-1], stage2[-1])
        self.stage2 = nn.Sequential(*[HighResolutionModule(stage2) for _ in range(modules)])
        self.transition2 = transition(stage2, stage3)
        self.extra2 = conv_relu(stem + stage3[-1], stage3[-1])
        self.stage3 = nn.Sequential(*[HighResolutionModule(stage3) for _ in range(modules)])
        self.final_layers = nn.ModuleList(nn.Conv2d(stage3[i], level_channels[i], 3, 2, 1)
                                          for i in range(len(level_channels)))

    def forward(self, levels):
        stems = [stem(x) for stem, x in zip(self.stems, levels)]
        x = self.layer1(stems[0])
        branches = [x if layer is None else layer(x) for layer in self.transition1]
        branches[-1] = self.extra1(torch.cat([stems[1], branches[-1]], 1))
        branches = self.stage2(branches)
        branches = [branches[i] if layer is None else layer(branches[-1]) for i, layer in enumerate(self.transition2)]
        branches[-1] = self.extra2(torch.cat([stems[2], branches[-1]], 1))
        branches = self.stage3(branches)
        return [final(x) for final, x in zip(self.final_layers, branches)]


# ----------------------------------------------------------------------------------------------
# Conditional Glow
# ----------------------------------------------------------------------------------------------

def squeeze2d(x):
    """Space-to-depth 2x2: channel c*4 + dy*2 + dx."""
    batch, channels, height, width = x.shape
    x = x.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(batch, channels * 4, height // 2, width // 2)


def unsqueeze2d(x):
    batch, channels, height, width = x.shape
    x = x.view(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(batch, channels // 4, height * 2, width * 2)


def gaussian_log_p(x, mean, log_sd):
    return -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (x - mean) ** 2 * torch.exp(-2 * log_sd)


class ActNorm(nn.Module):
    """y = (exp(logs) + 1e-8) (x + loc); log|det| = H W sum(logs) (one value for the batch).

    While `initialized` is 0, the first call (in either direction) sets loc = -mean and
    logs = log(1 / (std + 1e-6) + 1e-6) per channel from its input. The inverse is
    x = y exp(-logs) - loc (it ignores the 1e-8, as the official code does).
    """

    def __init__(self, channels):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x):
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
        self.logs.copy_(torch.log(1 / (flat.std(1) + 1e-6) + 1e-6).view(1, -1, 1, 1))
        self.initialized.fill_(1)

    def forward(self, x, reverse=False):
        if self.initialized.item() == 0:
            self.initialize(x)
        if reverse:
            return x * torch.exp(-self.logs) - self.loc
        return (torch.exp(self.logs) + 1e-8) * (x + self.loc), x.shape[2] * x.shape[3] * self.logs.sum()


class InvConv2d(nn.Module):
    """Dense invertible 1x1 convolution; log|det| from a float64 slogdet, returned as float32."""

    def __init__(self, channels):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q[:, :, None, None])

    def forward(self, x, reverse=False):
        channels = self.weight.shape[0]
        if reverse:
            return F.conv2d(x, self.weight.view(channels, channels).inverse()[:, :, None, None])
        logdet = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight.view(channels, channels).double())[1].float()
        return F.conv2d(x, self.weight), logdet


class ZeroConv2d(nn.Module):
    """3x3 conv (zero padding) zero at initialisation, output scaled by exp(3 * scale)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(self.scale * 3)


class CouplingNet(nn.Module):
    """Shift and raw log-scale from [untouched half, condition]."""

    def __init__(self, in_channels, cond_channels, out_channels, hidden):
        super().__init__()
        self.tail = nn.Sequential(nn.Conv2d(in_channels + cond_channels, hidden, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 1, 1, 0), nn.ReLU(), ZeroConv2d(hidden, out_channels))

    def forward(self, x, condition):
        return self.tail(torch.cat([x, condition], 1))


class AffineCoupling(nn.Module):
    """on' = on exp(s) + shift with s = scale tanh(raw) + scale_shift; (shift, raw) from off."""

    def __init__(self, channels, cond_channels, hidden):
        super().__init__()
        self.affine = CouplingNet(channels // 2, cond_channels, channels, hidden)
        self.scale = nn.Parameter(torch.zeros(1))
        self.scale_shift = nn.Parameter(torch.zeros(1))

    def shift_and_log_scale(self, off, condition):
        shift, raw = self.affine(off, condition).chunk(2, 1)
        return shift, self.scale * torch.tanh(raw) + self.scale_shift

    def forward(self, x, condition, reverse=False):
        on, off = x.chunk(2, 1)
        shift, log_scale = self.shift_and_log_scale(off, condition)
        if reverse:
            return torch.cat([(on - shift) * torch.exp(-log_scale), off], 1)
        return torch.cat([on * torch.exp(log_scale) + shift, off], 1), log_scale.sum(dim=(1, 2, 3))


class FlowStep(nn.Module):
    """ActNorm -> invertible 1x1 conv -> conditional affine coupling."""

    def __init__(self, channels, cond_channels, hidden):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv2d(channels)
        self.coupling = AffineCoupling(channels, cond_channels, hidden)

    def forward(self, x, condition, reverse=False):
        if reverse:
            return self.actnorm(self.invconv(self.coupling(x, condition, reverse=True), reverse=True), reverse=True)
        x, logdet = self.actnorm(x)
        x, logdet_conv = self.invconv(x)
        x, logdet_coupling = self.coupling(x, condition)
        return x, logdet + logdet_conv + logdet_coupling


class FlowBlock(nn.Module):
    """squeeze -> ActNorm -> 1x1 conv -> K flow steps -> split half off as latent (or, last block,
    keep everything). The split-off half has the prior N(mean, exp(log_sd)) = prior(kept half);
    the last block's prior is prior(zeros), a learned constant. Neither sees the condition."""

    def __init__(self, in_channels, cond_channels, steps, hidden, split):
        super().__init__()
        channels = in_channels * 4
        self.split = split
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv2d(channels)
        self.flows = nn.ModuleList(FlowStep(channels, cond_channels, hidden) for _ in range(steps))
        self.prior = ZeroConv2d(in_channels * 2, in_channels * 4) if split else ZeroConv2d(channels, channels * 2)

    def encode(self, x, condition):
        """Returns (kept half or the whole output, latent z, log p(z) (B,), log|det| (B,))."""
        x, logdet = self.actnorm(squeeze2d(x))
        x, logdet_conv = self.invconv(x)
        logdet = logdet + logdet_conv
        for step in self.flows:
            x, logdet_step = step(x, condition)
            logdet = logdet + logdet_step
        if self.split:
            kept, z = x.chunk(2, 1)
            mean, log_sd = self.prior(kept).chunk(2, 1)
        else:
            kept, z = x, x
            mean, log_sd = self.prior(torch.zeros_like(x)).chunk(2, 1)
        log_p = gaussian_log_p(z, mean, log_sd).view(x.shape[0], -1).sum(1)
        return kept, z, log_p, logdet

    def decode(self, kept, condition, eps=None, z=None):
        """Inverse; the latent is mean + exp(log_sd) * eps (sampling) or the given z (exact inverse)."""
        template = kept if self.split else (eps if z is None else z)
        if z is None:
            mean, log_sd = self.prior(template if self.split else torch.zeros_like(template)).chunk(2, 1)
            z = mean + torch.exp(log_sd) * eps
        x = torch.cat([kept, z], 1) if self.split else z
        for step in reversed(self.flows):
            x = step(x, condition, reverse=True)
        return unsqueeze2d(self.actnorm(self.invconv(x, reverse=True), reverse=True))


class CondFlowNet(nn.Module):
    """Three-block conditional Glow: x (B, 3, H, W) <-> latents [(6, H/2), (12, H/4), (48, H/8)]
    given conditions at 1/2, 1/4, 1/8 (block b couples with condition b)."""

    def __init__(self, cond_channels, steps, hidden, in_channels=3):
        super().__init__()
        self.blocks = nn.ModuleList(
            FlowBlock(in_channels * 2 ** b, c, steps, hidden, split=b < len(cond_channels) - 1)
            for b, c in enumerate(cond_channels))

    def encode(self, x, conditions):
        """(log p (B,), log|det| (B,), latents z level 0 first): the raw sums, not normalised."""
        log_p, logdet, latents = 0, 0, []
        for block, condition in zip(self.blocks, conditions):
            x, z, block_log_p, block_logdet = block.encode(x, condition)
            latents.append(z)
            logdet = logdet + block_logdet
            log_p = log_p + block_log_p
        return log_p, logdet, latents

    def decode(self, conditions, eps=None, latents=None, trace=None):
        """Deepest block first, from noise `eps` (z = mean + sd * eps, the official decode) or from
        raw `latents` (the exact inverse of `encode`); both lists level 0 first."""
        x, outputs = None, []
        for b in reversed(range(len(self.blocks))):
            x = self.blocks[b].decode(x, conditions[b], None if eps is None else eps[b],
                                      None if latents is None else latents[b])
            outputs.append(x)
        if trace is not None:
            trace["decode_block_out"] = outputs
        return x


def latent_shapes(height, width, in_channels=3, blocks=GLOW_BLOCKS):
    """(C, h, w) of the latents of an H x W frame, level 0 first: (6, H/2, W/2), (12, H/4, W/4),
    (48, H/8, W/8)."""
    shapes, channels = [], in_channels
    for _ in range(blocks - 1):
        height, width, channels = height // 2, width // 2, channels * 2
        shapes.append((channels, height, width))
    shapes.append((channels * 4, height // 2, width // 2))
    return shapes


# ----------------------------------------------------------------------------------------------
# Official losses
# ----------------------------------------------------------------------------------------------

def official_nll(log_p, log_det, pixels, dequantized):
    """PerVFI's NLL normalisation (Network.encode): nll = -(c + log_det + log_p) / (H W log 2) with
    c = -log(255) H W when the target was dequantised (training), else 0.

    These are bits per PIXEL summed over the 3 channels (3x bits/dim), with a per-pixel (not
    per-dimension) dequantisation constant. Returns (nll, log_p, log_det), all normalised.
    """
    scale = float(math.log(2) * pixels)
    constant = (-math.log(DEQUANT_LEVELS) * pixels if dequantized else 0.0) / scale
    log_p, log_det = log_p / scale, log_det / scale
    return -(constant + log_det + log_p), log_p, log_det


def lap_loss(pred, target, levels=5):
    """The official Laplacian loss (src/train/loss.py LapLoss, max_levels=5): mean over the 5 band
    levels of mean |band(pred) - band(target)|, no low-pass residual; bands of losses.py's
    Laplacian pyramid (5x5 binomial blur /256, reflect padding, zero-insertion upsampling). On
    images too small for five levels (where the official reflect padding fails) the bands stop
    early and odd sizes crop the upsampled level; the sum is still divided by `levels`.
    Accepts (B, 3, H, W) or (B, n, 3, H, W). The loss term "PerVFILap"."""
    return losses.pervfi_laplacian_loss(pred, target, levels)


def bits_per_dim(nll, channels=3):
    """The official NLL (bits per pixel over all channels) in bits per dimension."""
    return nll / channels


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

def standard_normal(shape, like, generator=None):
    """N(0, 1) noise drawn on the generator's device (reproducible across devices)."""
    device = like.device if generator is None else generator.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


def standard_uniform(like, generator=None):
    """U(0, 1) noise shaped like `like`, drawn on the generator's device."""
    device = like.device if generator is None else generator.device
    noise = torch.rand(like.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class PerVFI(nn.Module):
    """PerVFI with the shared model interface of model.py: forward(inputs, audio, audio_times, has_audio,
    ts, target) -> {"pred", and "nll" with a target} (see the module docstring)."""

    uses_audio = False
    arbitrary_t = True  # any t in (0, 1) in one pass: 4x/8x need no recursion

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        width = config["width"]
        features = [scaled_channels(c, width) for c in (32, 64, 96)]
        levels = [features[0] + 3] + features[1:]
        hidden = scaled_channels(64, width, minimum=8)
        self.multiple = 2 ** GLOW_BLOCKS
        self.featurePyramid = FeaturePyramid(features, [scaled_channels(c, width) for c in (16, 32, 64, 96)])
        self.deformableAlign = DeformableAlign(levels)
        self.attentionMerge = AttentionMerge(levels, hidden)
        self.multiscaleFuse = MultiscaleFuse(levels, stem=hidden,
                                             branches=[scaled_channels(c, width) for c in (32, 64, 96)])
        self.condFLownet = CondFlowNet(levels, config["steps_per_level"], hidden)
        object.__setattr__(self, "flow_estimator", None)
        self.flow_estimator_used, self.flow_estimator_note = None, ""  # set with the estimator

    # --- flow estimator (frozen, outside state_dict / parameters) ---------------------------

    def set_flow_estimator(self, estimator=None, weights_dir=None, allow_download=True):
        """Use `estimator` (a module or a flow.py name; default: the config's) frozen and in eval mode.

        A named learned estimator whose weights cannot be had is replaced by OpenCV DIS with a
        warning; `flow_estimator_used` says which one runs (for reports), `flow_estimator_note` why.
        """
        if estimator is None or isinstance(estimator, str):
            name = estimator or self.config["flow_estimator"]
            estimator, self.flow_estimator_used, self.flow_estimator_note = self._build_estimator(
                name, weights_dir, allow_download)
        else:
            self.flow_estimator_used, self.flow_estimator_note = type(estimator).__name__, "given module"
        estimator.requires_grad_(False)
        estimator.eval()
        object.__setattr__(self, "flow_estimator", estimator.to(self.device))
        return estimator

    def _build_estimator(self, name, weights_dir, allow_download):
        """(estimator, name used, note): `name`, or DIS when its weights are unavailable."""
        try:
            return flowlib.build_flow_estimator(name, weights_dir=weights_dir, allow_download=allow_download,
                                                device=self.device), name, ""
        except weights.WeightsUnavailable as error:
            if name == OFFLINE_FLOW_ESTIMATOR:
                raise
            note = (f"{OFFLINE_FLOW_ESTIMATOR} instead of {name}: {error}. Results differ from the published "
                    f"pipeline; put the file in --weights-dir to use {name}")
            warnings.warn(f"PerVFI flow estimator: {note}", stacklevel=3)
            return (flowlib.build_flow_estimator(OFFLINE_FLOW_ESTIMATOR, device=self.device),
                    OFFLINE_FLOW_ESTIMATOR, note)

    def _apply(self, fn, *args, **kwargs):
        """Let .to()/.cuda()/.double() also move the (unregistered) flow estimator."""
        super()._apply(fn, *args, **kwargs)
        if self.flow_estimator is not None:
            self.flow_estimator._apply(fn)
        return self

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def glow_dtype(self):
        """The Glow runs in its parameters' dtype (float32 under autocast, float64 after .double())."""
        return self.condFLownet.blocks[0].prior.scale.dtype

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def estimate_flows(self, frame0, frame1):
        """(F0->1, F1->0) from one batched call of the frozen estimator."""
        if self.flow_estimator is None:
            self.set_flow_estimator()
        flows = self.flow_estimator(torch.cat([frame0, frame1]), torch.cat([frame1, frame0]))
        return flows.to(frame0.dtype).chunk(2, dim=0)

    # --- conditions ---------------------------------------------------------------------------

    def conditions(self, frame0, frame1, times, flows=None, mask_noise=None, generator=None, trace=None):
        """Glow conditions for frames (B, 3, H, W) in [0, 1] (H, W multiples of 8) and times (B, n).

        Returns the conditions (level 0 first, in `glow_dtype`) and the soft-binary masks (level 0 first)
        of the B*n items (sample-major). Per-frame work (flow, pyramid, metric) runs once. In
        training mode the masks get (U - 0.5) / 100 with U = `mask_noise` (list, level 0 first)
        or drawn from `generator`. `trace` (a dict) collects the intermediates.
        """
        flow01, flow10 = self.estimate_flows(frame0, frame1) if flows is None else flows
        n = times.shape[1]
        image0, image1 = frame0 * 2 - 1, frame1 * 2 - 1
        encode, metric = self.featurePyramid.netEncode, self.featurePyramid.netSoftmetric
        features0, features1 = encode(image0), encode(image1)
        metric0, metric1 = metric(features0, features1, flow01), metric(features1, features0, flow10)
        if trace is not None:
            trace["enc_frame0"], trace["softmetric_raw"] = features0, [metric0, metric1]
        repeat = lambda x: x.repeat_interleave(n, dim=0)
        flow01, flow10, metric0, metric1 = map(repeat, (flow01, flow10, metric0, metric1))
        features0, features1 = [repeat(f) for f in features0], [repeat(f) for f in features1]
        # t and 1 - t as the official Python floats would give them (1 - t in double, then cast)
        t64 = times.reshape(-1, 1, 1, 1).double()
        t, rest = t64.to(flow01.dtype), (1 - t64).to(flow01.dtype)
        metric0t, flow0t = metric0 * 2 * t, t * flow01
        metric1t, flow1t = metric1 * 2 * rest, rest * flow10
        flow_t1 = -1 * softsplat(flow1t, flow1t, metric1t.neg().clip(-METRIC_CLIP, METRIC_CLIP), "soft")
        splatted0, holes = splat_pyramid(features0, metric0t, flow0t, trace)
        if trace is not None:
            trace["splat_feat0"], trace["holes"], trace["Ft2"] = splatted0, holes, flow_t1
        complementary = self.deformableAlign(splatted0, features1, holes, flow_t1, trace)
        if self.training and mask_noise is None:
            mask_noise = [standard_uniform(h, generator) for h in holes]
        blended, masks = self.attentionMerge(splatted0, complementary, holes,
                                             mask_noise if self.training else None, trace)
        conditions = [c.to(self.glow_dtype) for c in self.multiscaleFuse(blended)]
        if trace is not None:
            trace["conds"] = conditions
        return conditions, masks

    # --- likelihood and sampling --------------------------------------------------------------

    def likelihood(self, target, conditions, gt_noise=None, generator=None):
        """Official NLL terms of target frames (N, 3, H, W) in [0, 1] given their conditions.

        In training mode the target in [-1, 1] gets (U - 0.5) / 255 with U = `gt_noise` or drawn
        from `generator`, and the per-pixel dequantisation constant enters (`official_nll`).
        Returns a dict: nll, log_p, log_det (normalised, (N,)), log_p_raw, log_det_raw (sums) and
        latents (raw z, level 0 first).
        """
        x = target.to(self.glow_dtype) * 2 - 1
        if self.training:
            noise = standard_uniform(x, generator) if gt_noise is None else gt_noise.to(x)
            x = x + (noise - 0.5) / DEQUANT_LEVELS
        log_p_raw, log_det_raw, latents = self.condFLownet.encode(x, conditions)
        nll, log_p, log_det = official_nll(log_p_raw, log_det_raw, x.shape[2] * x.shape[3], self.training)
        return dict(nll=nll, log_p=log_p, log_det=log_det, log_p_raw=log_p_raw, log_det_raw=log_det_raw,
                    latents=latents)

    def draw_eps(self, conditions, heat, generator=None):
        """Sampling noise heat * N(0, 1) for every latent (level 0 first; zeros at heat 0)."""
        shapes = latent_shapes(conditions[0].shape[2] * 2, conditions[0].shape[3] * 2)
        batch, like = conditions[0].shape[0], conditions[0]
        if not torch.is_tensor(heat) and heat == 0:
            return [like.new_zeros(batch, *shape) for shape in shapes]
        return [standard_normal((batch, *shape), like, generator) * heat for shape in shapes]

    def decode(self, conditions, eps=None, latents=None, trace=None):
        """Frames (N, 3, H, W), [0, 1]-ish and not clamped, from noise `eps` (z = mean + sd * eps)
        or from raw `latents` (exact inverse of `likelihood`'s encoding)."""
        return (self.condFLownet.decode(conditions, eps, latents, trace) + 1) / 2

    def training_heat(self, latents):
        heat = self.config["train_heat"]
        if heat == "latent_std":  # the official sqrt(var(all latents)), a tensor (not detached)
            return torch.sqrt(torch.var(torch.cat([z.flatten() for z in latents])))
        return float(heat)

    # --- public API ---------------------------------------------------------------------------

    def forward(self, inputs, audio=None, audio_times=None, has_audio=None, ts=None, target=None,
                heat=None, generator=None, flows=None):
        """inputs (B, 4, 3, H, W) in [0, 1] (uses frames 1 and 2); ts (B, n) in (0, 1) or None
        (k/scale); target (B, n, 3, H, W) adds "nll" (B,): the official NLL (`official_nll`).
        Audio arguments are ignored.

        "pred" (B, n, 3, H, W), not clamped: with a target in training mode, a sample at the
        training heat (the official training code's choice for the Lap/perceptual terms);
        otherwise a sample at `heat` (default config["heat"]) drawn with `generator`. `flows` =
        (F0->1, F1->0) skips the estimator (cached flows, at the input size). Frames are
        zero-padded to multiples of 8 (as the official inference does) and cropped back.
        """
        if inputs.dim() != 5 or inputs.shape[1] < 3 or inputs.shape[2] != 3:
            raise ValueError(f"pervfi.py: inputs must be (B, 4, 3, H, W), got {tuple(inputs.shape)}")
        batch, _, _, height, width = inputs.shape
        times = self.resolve_times(ts, batch, inputs.device)
        n = times.shape[1]
        frame0, frame1 = self.pad(inputs[:, 1]), self.pad(inputs[:, 2])
        if flows is not None:
            flows = tuple(self.pad(f).to(frame0.dtype) for f in flows)
        conditions, _ = self.conditions(frame0, frame1, times, flows, generator=generator)
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            out = {}
            decode_heat = self.config["heat"] if heat is None else heat
            if target is not None:
                target_frames = self.pad(target.reshape(batch * n, *target.shape[2:]))
                encoded = self.likelihood(target_frames, conditions, generator=generator)
                out["nll"] = encoded["nll"].view(batch, n).mean(dim=1)
                if self.training:
                    decode_heat = self.training_heat(encoded["latents"])
            pred = self.decode(conditions, self.draw_eps(conditions, decode_heat, generator))
        out["pred"] = pred[..., :height, :width].reshape(batch, n, 3, height, width)
        return out

    @torch.no_grad()
    def sample(self, frame0, frame1, t, heat=None, generator=None, seed=None, flows=None):
        """Interpolate (B, 3, H, W) frames at t (float or (B,)) -> (B, 3, H, W) clamped to [0, 1].

        heat 0 is deterministic (the priors' means); a `generator` or `seed` makes samples reproducible.
        """
        if seed is not None:
            if generator is not None:
                raise ValueError("pervfi.py: pass either generator or seed, not both")
            generator = torch.Generator().manual_seed(seed)
        times = torch.as_tensor(t, dtype=torch.float32, device=frame0.device).reshape(-1, 1)
        times = times.expand(frame0.shape[0], 1)
        inputs = torch.stack([frame0, frame0, frame1, frame1], dim=1)
        out = self.forward(inputs, ts=times, heat=heat, generator=generator, flows=flows)
        return out["pred"][:, 0].clamp(0, 1)

    def resolve_times(self, ts, batch, device):
        if ts is None:
            scale = self.config["scale"]
            ts = torch.arange(1, scale, dtype=torch.float32, device=device) / scale
        ts = torch.as_tensor(ts, dtype=torch.float32, device=device)
        if ts.dim() < 2:
            ts = ts.reshape(1, -1)
        ts = ts.expand(batch, -1)
        if ((ts <= 0) | (ts >= 1)).any():
            raise ValueError(f"pervfi.py: interpolation times must lie in (0, 1), got {ts.tolist()}")
        return ts

    def pad(self, x):
        """Zero-pad (.., H, W) on the right/bottom to multiples of 8 (the output is cropped back)."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h == 0 and pad_w == 0:
            return x
        return F.pad(x, (0, pad_w, 0, pad_h))
