"""PerVFI (Wu et al., CVPR 2024): perception-oriented frame interpolation with asymmetric blending.

Pipeline for two frames I0, I1 and a time t in (0, 1):

1. A frozen optical-flow estimator gives F0->1 and F1->0 (pixels; see flow.py).
2. A feature pyramid of both frames (level 0 at full resolution carries the image itself).
3. Frame 0 is the primary side: its features are forward softmax-splatted to time t with flow
   t*F0->1 and a metric Z (derived photometric consistency + learned refinement); a hole mask marks
   pixels no frame-0 pixel reached.
4. Frame 1 is the complementary side: its features are aligned to time t by modulated deformable
   convolution (DCNv2, pure torch) whose offsets start at the splatted flow F_t->1 and are refined
   from the splatted features, the hole mask and that flow, coarse to fine.
5. Asymmetric soft-binary blending f0*(1 - m) + f1*m with m = tanh(|x|): x is computed from the
   dilated hole mask gated by channel attention, so m is near 0 (use frame 0) outside holes.
6. A multiscale (HRNet-style) fusion turns the blended pyramid into conditions at 1/2, 1/4, 1/8.
7. A conditional Glow maps the target frame to latents given those conditions (training: NLL in
   bits/dim); sampling draws latents with a temperature `heat` from the learned priors and inverts.
   With config["residual"] (default) the flow models the target relative to a base estimate, the
   level-0 asymmetric blend of the splatted frame 0 and the flow-warped frame 1 (a conditional
   shift: log-det 0). This departs from the paper, whose flow models the frame itself; it makes
   an untrained model start from a sensible interpolation, so short training runs converge
   (residual=False is the paper's formulation).

The flow estimator is not a registered submodule: it is frozen, kept out of `state_dict()` and of
`parameters()` (so the optimizer never sees it), and still follows `.to(device)`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import flow as flowlib
from resnet_3D import scaled_channels


def default_pervfi_config(**overrides):
    """The default PerVFI configuration (plain types only, stored in checkpoints).

    width scales every channel count (1.0 = the published size, ~8.7M parameters without the flow
    estimator); levels is the number of pyramid scales = normalizing-flow levels; steps_per_level
    is K, the flow steps per level; heat is the sampling temperature at inference; train_heat is
    the temperature of the sample returned during training for the Lap/perceptual terms
    ("latent_std" = the std of the encoded latents, as in the official training code, or a float);
    residual: model the target relative to the blended base estimate (see the module docstring).
    """
    config = dict(model="pervfi", scale=2, width=1.0, flow_estimator="dis", levels=3,
                  steps_per_level=16, fusion_units=5, heat=0.3, train_heat="latent_std",
                  mask_jitter=0.01, dcn_groups=8, residual=True)
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


def pyramid_channels(levels, width):
    """Feature channels per pyramid level (32, 64, 96, ... at width 1, as in softmax splatting)."""
    return [scaled_channels(32 * (level + 1), width) for level in range(levels)]


# ----------------------------------------------------------------------------------------------
# Modulated deformable convolution (DCNv2), pure torch
# ----------------------------------------------------------------------------------------------

def kernel_offsets(kernel_size, device, dtype):
    """(K*K, 2) (x, y) displacement of every kernel tap from the centre (stride 1, dilation 1)."""
    taps = torch.arange(kernel_size, device=device, dtype=dtype) - kernel_size // 2
    ys, xs = torch.meshgrid(taps, taps, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def deform_conv2d(x, offset, mask, weight, bias=None):
    """Modulated deformable convolution (stride 1, 'same' padding, zeros outside the image).

    x (B, C, H, W); weight (Cout, C, k, k); offset (B, G*k*k*2, H, W) laid out as
    [group, tap, (dx, dy)] in pixels; mask (B, G*k*k, H, W) laid out as [group, tap]; G (offset
    groups) divides C. Every tap is sampled bilinearly at p + tap + offset, scaled by its mask,
    and the taps are contracted with the weights as one 1x1 convolution.
    """
    batch, channels, height, width = x.shape
    out_channels, in_channels, kernel_size, _ = weight.shape
    if in_channels != channels:
        raise ValueError(f"pervfi.py: deform_conv2d weight expects {in_channels} channels, got {channels}")
    taps = kernel_size * kernel_size
    groups = offset.shape[1] // (2 * taps)
    if groups * 2 * taps != offset.shape[1] or mask.shape[1] != groups * taps or channels % groups:
        raise ValueError(f"pervfi.py: deform_conv2d offset/mask channels {offset.shape[1]}/{mask.shape[1]} "
                         f"do not match {taps} taps and {channels} input channels")
    base = flowlib.pixel_grid(height, width, x.device, offset.dtype).view(1, 1, 1, 2, height, width)
    tap_xy = kernel_offsets(kernel_size, x.device, offset.dtype).view(1, 1, taps, 2, 1, 1)
    position = base + tap_xy + offset.view(batch, groups, taps, 2, height, width)
    grid_x = (2 * position[:, :, :, 0] + 1) / width - 1
    grid_y = (2 * position[:, :, :, 1] + 1) / height - 1
    grid = torch.stack([grid_x, grid_y], dim=-1).view(batch * groups, taps * height, width, 2)
    sampled = F.grid_sample(x.reshape(batch * groups, channels // groups, height, width), grid.to(x.dtype),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(batch, groups, channels // groups, taps, height, width)
    sampled = sampled * mask.view(batch, groups, 1, taps, height, width).to(x.dtype)
    columns = sampled.reshape(batch, channels * taps, height, width)
    return F.conv2d(columns, weight.reshape(out_channels, channels * taps, 1, 1), bias)


class FlowGuidedDeformConv(nn.Module):
    """DCNv2 whose offsets are a given flow plus a learned residual (zero at initialisation).

    Starting from the flow makes the alignment exact for correct flow and lets the network learn
    only the corrections, which a purely learned offset field struggles with for large motions.
    """

    def __init__(self, channels, guide_channels, groups, kernel_size=3):
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        taps = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_and_mask = nn.Conv2d(guide_channels, groups * taps * 3, 3, padding=1)
        nn.init.zeros_(self.offset_and_mask.weight)
        nn.init.zeros_(self.offset_and_mask.bias)

    def forward(self, x, flow, guide):
        batch, _, height, width = x.shape
        taps = self.kernel_size * self.kernel_size
        residual, mask_logits = self.offset_and_mask(guide).split(
            [self.groups * taps * 2, self.groups * taps], dim=1)
        offset = residual.view(batch, self.groups, taps, 2, height, width) + flow.view(batch, 1, 1, 2, height, width)
        return deform_conv2d(x, offset.reshape(batch, -1, height, width), torch.sigmoid(mask_logits),
                             self.weight, self.bias)


def offset_groups(channels, wanted):
    """The largest number of offset groups <= wanted that divides the channels."""
    return max(g for g in range(1, wanted + 1) if channels % g == 0)


# ----------------------------------------------------------------------------------------------
# Splatting helpers
# ----------------------------------------------------------------------------------------------

def downsample_flow(flow, factor):
    """Average-pool a flow by an integer factor and rescale it to the coarser pixel units."""
    return flow if factor == 1 else F.avg_pool2d(flow, factor) / factor


def hole_mask(flow):
    """1 where no source pixel lands when splatting along `flow` (splatted count < 0.5), else 0."""
    return (flowlib.splat_coverage(flow) < 0.5).to(flow.dtype)


def splat_pyramid(features, flow, metric):
    """Softmax-splat every pyramid level along `flow` (full resolution) with metric Z.

    Returns the splatted features and the hole masks, one per level.
    """
    splatted, holes = [], []
    for level, feature in enumerate(features):
        factor = 2 ** level
        level_flow = downsample_flow(flow, factor)
        level_metric = metric if factor == 1 else F.avg_pool2d(metric, factor)
        splatted.append(flowlib.softmax_splat(feature, level_flow, level_metric)[0])
        holes.append(hole_mask(level_flow))
    return splatted, holes


# ----------------------------------------------------------------------------------------------
# Conditioning network: pyramid, splatting metric, deformable alignment, blending, fusion
# ----------------------------------------------------------------------------------------------

def conv_prelu(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


class FeaturePyramid(nn.Module):
    """Two conv+PReLU per level, stride 2 between levels; level 0 also carries the image."""

    def __init__(self, channels):
        super().__init__()
        cins = [3] + channels[:-1]
        self.levels = nn.ModuleList(
            nn.Sequential(conv_prelu(cin, cout, 1 if level == 0 else 2), conv_prelu(cout, cout))
            for level, (cin, cout) in enumerate(zip(cins, channels)))

    def forward(self, image):
        features, x = [], image
        for level in self.levels:
            x = level(x)
            features.append(x)
        features[0] = torch.cat([image, features[0]], dim=1)
        return features


class SplatMetric(nn.Module):
    """Softmax-splatting metric Z = -alpha * photometric error + learned refinement (Niklaus 2020).

    The derived term ranks pixels by brightness constancy along the flow (an occluded pixel does not
    match its target); the refinement (zero at initialisation) learns from image and features.
    """

    def __init__(self, feature_channels, hidden):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(1))
        self.refine = nn.Sequential(conv_prelu(3 + 1 + feature_channels, hidden), nn.Conv2d(hidden, 1, 3, padding=1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def forward(self, image, other_image, flow, feature):
        error = (image - flowlib.backward_warp(other_image, flow)).abs().mean(dim=1, keepdim=True)
        metric = -self.log_alpha.exp() * error + self.refine(torch.cat([image, error, feature], dim=1))
        return metric.clamp(-20.0, 20.0)


class DeformableAlignment(nn.Module):
    """Aligns frame-1 features to time t, coarse to fine, and merges them with splatted frame 0.

    Per level the offset features come from [splatted f0, flow-warped f1, hole mask, F_t->1] (plus
    the upsampled coarser offset features); the DCN output is merged with the splatted frame-0
    features and the hole mask into the complementary feature of the asymmetric blend.
    """

    def __init__(self, channels, groups):
        super().__init__()
        self.channels = channels
        levels = len(channels)
        self.offset_in = nn.ModuleList(nn.Conv2d(2 * c + 3, c, 3, padding=1) for c in channels)
        self.offset_mix = nn.ModuleList(nn.Conv2d(c + channels[i + 1], c, 3, padding=1) if i + 1 < levels else
                                        nn.Conv2d(c, c, 3, padding=1) for i, c in enumerate(channels))
        self.dcn = nn.ModuleList(FlowGuidedDeformConv(c, c, offset_groups(c, groups)) for c in channels)
        self.aligned_mix = nn.ModuleList(nn.Conv2d(c + channels[i + 1], c, 3, padding=1)
                                         for i, c in enumerate(channels[:-1]))
        self.merge = nn.ModuleList(nn.Conv2d(2 * c + 1, c, 3, padding=1) for c in channels)
        self.merge_mix = nn.ModuleList(nn.Conv2d(c + channels[i + 1], c, 3, padding=1)
                                       for i, c in enumerate(channels[:-1]))

    def forward(self, splatted0, features1, holes, flow_t1):
        levels = len(self.channels)
        outputs = [None] * levels
        coarser = None
        for level in reversed(range(levels)):
            flow = downsample_flow(flow_t1, 2 ** level)
            f0, f1, hole = splatted0[level], features1[level], holes[level]
            warped = flowlib.backward_warp(f1, flow, padding_mode="zeros")
            guide = F.leaky_relu(self.offset_in[level](torch.cat([f0, warped, hole, flow], 1)), 0.1)
            if coarser is not None:
                guide = torch.cat([guide, upsample(coarser["guide"])], 1)
            guide = F.leaky_relu(self.offset_mix[level](guide), 0.1)
            aligned = self.dcn[level](f1, flow, guide)
            if coarser is not None:
                aligned = F.leaky_relu(self.aligned_mix[level](torch.cat([aligned, upsample(coarser["aligned"])], 1)), 0.1)
            merged = self.merge[level](torch.cat([f0, aligned, hole], 1))
            if coarser is not None:
                merged = self.merge_mix[level](torch.cat([merged, upsample(coarser["merged"])], 1))
            outputs[level] = merged
            coarser = dict(guide=guide, aligned=aligned, merged=merged)
        return outputs


def upsample(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class SoftBinaryBlend(nn.Module):
    """Asymmetric synergistic blending: out = f0*(1 - m) + f1*m with a quasi-binary m = tanh(|x|).

    x comes from the hole mask through bias-free convolutions (a wide first kernel dilates the
    holes) gated per channel by attention over both features; without holes x = 0, so m = 0 and
    the primary frame 0 is used as is. `jitter` perturbs m in training as the official code does.
    """

    def __init__(self, channels, hidden, dilate_size=7, reduction=8):
        super().__init__()
        self.spatial = nn.Sequential(
            nn.Conv2d(1, hidden, dilate_size, padding=dilate_size // 2, bias=False), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1, bias=False))
        self.attention_in = nn.Conv2d(2 * channels, hidden, 3, padding=1)
        squeezed = max(hidden // reduction, 1)
        self.attention = nn.Sequential(nn.Linear(hidden, squeezed, bias=False), nn.ReLU(),
                                       nn.Linear(squeezed, hidden, bias=False), nn.Sigmoid())
        self.to_mask = nn.Conv2d(hidden, 1, 1, bias=False)

    def soft_mask(self, hole, f0, f1):
        gate = self.attention(self.attention_in(torch.cat([f0, f1], 1)).mean(dim=(2, 3)))
        x = self.to_mask(self.spatial(hole) * gate[:, :, None, None])
        return torch.tanh(x.abs())

    def forward(self, hole, f0, f1, jitter=0.0):
        mask = self.soft_mask(hole, f0, f1)
        if self.training and jitter > 0:
            mask = mask + (torch.rand_like(mask) - 0.5) * jitter
        return f0 * (1 - mask) + f1 * mask, mask


class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ExchangeUnit(nn.Module):
    """One HRNet unit: residual blocks per branch, then every branch receives every other branch
    (1x1 conv + nearest upsampling from coarser ones, strided 3x3 convs from finer ones)."""

    def __init__(self, widths, blocks=2):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w) for _ in range(blocks)]) for w in widths)
        self.transfer = nn.ModuleList(
            nn.ModuleList(self.transfer_layer(widths, source, target) for source in range(len(widths)))
            for target in range(len(widths)))

    @staticmethod
    def transfer_layer(widths, source, target):
        if source == target:
            return nn.Identity()
        if source > target:
            return nn.Sequential(nn.Conv2d(widths[source], widths[target], 1, bias=False),
                                 nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"))
        steps = []
        for step in range(target - source):
            last = step == target - source - 1
            steps.append(nn.Conv2d(widths[source], widths[target] if last else widths[source], 3, 2, 1, bias=False))
            if not last:
                steps.append(nn.ReLU())
        return nn.Sequential(*steps)

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        return [F.relu(sum(layer(x) for layer, x in zip(layers, xs))) for layers in self.transfer]


class MultiscaleFusion(nn.Module):
    """HRNet-style fusion of the blended pyramid; outputs one condition per flow level at half the
    resolution of its pyramid level (1/2, 1/4, 1/8 of the frame), matching the squeezed flow."""

    def __init__(self, channels, units):
        super().__init__()
        self.stems = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU())
                                   for c in channels)
        self.units = nn.Sequential(*[ExchangeUnit(channels) for _ in range(units)])
        self.heads = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in channels)

    def forward(self, features):
        xs = self.units([stem(x) for stem, x in zip(self.stems, features)])
        return [head(x) for head, x in zip(self.heads, xs)]


# ----------------------------------------------------------------------------------------------
# Conditional normalizing flow (Glow-style)
# ----------------------------------------------------------------------------------------------

def squeeze2d(x):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): every 2x2 patch becomes channels (invertible)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2d(x):
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


PRIOR_LOG_SD_BOUND = 3.0  # sd in [0.05, 20] latent units; finer densities come from the invertible layers


def gaussian_log_prob(z, mean, log_sd):
    """Per-sample log N(z; mean, exp(log_sd)^2) summed over all dimensions."""
    log_p = -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_sd)
    return log_p.flatten(1).sum(1)


class ActNorm(nn.Module):
    """Per-channel affine y = (x + loc) * exp(log_scale), identity at initialisation.

    Glow's data-dependent initialisation is left out: it makes the first batch special, which
    breaks determinism under DDP and resume; the identity start is stable with zero-initialised
    couplings.
    """

    def __init__(self, channels):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return (x + self.loc) * self.log_scale.exp(), logdet.expand(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.log_scale) - self.loc


class InvertibleConv1x1(nn.Module):
    """Invertible 1x1 convolution, LU-parametrised (W = P L (U + diag(sign*exp(s)))).

    The log-determinant is H*W*sum(s) (no slogdet on the hot path); initialised as a random rotation.
    """

    def __init__(self, channels):
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diagonal = nn.Parameter(diagonal.abs().log())

    def weight(self):
        eye = torch.eye(self.lower.shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_diagonal.exp())
        return self.permutation @ lower @ upper

    def forward(self, x):
        logdet = self.log_diagonal.sum() * x.shape[2] * x.shape[3]
        return F.conv2d(x, self.weight()[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y):
        inverse = torch.linalg.inv(self.weight().double()).to(y.dtype)
        return F.conv2d(y, inverse[:, :, None, None])


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to zero with a per-channel output gain exp(3*s) (Glow)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_gain = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(3 * self.log_gain)


def bounded_log_scale(raw, offset=2.0):
    """log(sigmoid(raw + offset) / sigmoid(offset)): 0 at raw = 0, at most log(1 + e^-offset)."""
    return F.logsigmoid(raw + offset) + math.log1p(math.exp(-offset))


class ConditionalAffineCoupling(nn.Module):
    """y_a = x_a * exp(s) + b, y_b = x_b with (s, b) = NN(x_b, condition).

    s = log sigmoid(raw + 2) - log sigmoid(2) (Glow's sigmoid scale, divided by its value at raw = 0
    so the zero-initialised step starts as the identity): a step expands by at most
    1/sigmoid(2) = 1.135 however large raw gets. A symmetric bound such as s = tanh(raw) lets every
    step expand by e when its input is large, and large inputs saturate raw: 48 steps then amplify
    an outlier residual by up to e^48 (demo training diverged with NLL 2e15 that way). Volume
    growth for typical data is left to the data-independent ActNorm and 1x1 convolutions.
    """

    def __init__(self, channels, cond_channels, hidden):
        super().__init__()
        self.transformed = channels // 2
        self.net = nn.Sequential(nn.Conv2d(channels - self.transformed + cond_channels, hidden, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                 ZeroConv2d(hidden, 2 * self.transformed))

    def scale_and_shift(self, x_b, condition):
        shift, raw = self.net(torch.cat([x_b, condition], 1)).chunk(2, dim=1)
        return bounded_log_scale(raw), shift

    def forward(self, x, condition):
        x_a, x_b = x[:, :self.transformed], x[:, self.transformed:]
        log_scale, shift = self.scale_and_shift(x_b, condition)
        return torch.cat([x_a * log_scale.exp() + shift, x_b], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y, condition):
        y_a, y_b = y[:, :self.transformed], y[:, self.transformed:]
        log_scale, shift = self.scale_and_shift(y_b, condition)
        return torch.cat([(y_a - shift) * torch.exp(-log_scale), y_b], 1)


class FlowStep(nn.Module):
    """ActNorm -> invertible 1x1 conv -> conditional affine coupling."""

    def __init__(self, channels, cond_channels, hidden):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvertibleConv1x1(channels)
        self.coupling = ConditionalAffineCoupling(channels, cond_channels, hidden)

    def forward(self, x, condition):
        x, logdet_norm = self.actnorm(x)
        x, logdet_conv = self.invconv(x)
        x, logdet_coupling = self.coupling(x, condition)
        return x, logdet_norm + logdet_conv + logdet_coupling

    def inverse(self, y, condition):
        return self.actnorm.inverse(self.invconv.inverse(self.coupling.inverse(y, condition)))


class FlowLevel(nn.Module):
    """squeeze -> ActNorm -> 1x1 conv -> K flow steps -> split (or the final latent).

    The factored-out half has a learned conditional prior N(mean, sd) = ZeroConv([kept, condition]);
    the last level's latent has a learned prior from the condition alone.
    """

    def __init__(self, in_channels, cond_channels, steps, hidden, final):
        super().__init__()
        channels = in_channels * 4
        self.final = final
        self.actnorm = ActNorm(channels)
        self.invconv = InvertibleConv1x1(channels)
        self.steps = nn.ModuleList(FlowStep(channels, cond_channels, hidden) for _ in range(steps))
        self.latent_channels = channels if final else channels // 2
        prior_in = cond_channels if final else channels - self.latent_channels + cond_channels
        self.prior = ZeroConv2d(prior_in, 2 * self.latent_channels)

    def prior_parameters(self, kept, condition):
        """Mean and log-sd of the conditional prior. The log-sd is squashed smoothly into
        ±PRIOR_LOG_SD_BOUND: unbounded, one AdamW step could collapse it while |z - mean| was still
        large, and the NLL of that batch exploded (demo training, step 25)."""
        prior_input = condition if self.final else torch.cat([kept, condition], 1)
        mean, log_sd = self.prior(prior_input).chunk(2, dim=1)
        return mean, PRIOR_LOG_SD_BOUND * torch.tanh(log_sd / PRIOR_LOG_SD_BOUND)

    def forward(self, x, condition):
        """Returns (kept half or None, latent z, log p(z), log|det|)."""
        x, logdet = self.actnorm(squeeze2d(x))
        x, logdet_conv = self.invconv(x)
        logdet = logdet + logdet_conv
        for step in self.steps:
            x, logdet_step = step(x, condition)
            logdet = logdet + logdet_step
        kept, z = (None, x) if self.final else (x[:, :-self.latent_channels], x[:, -self.latent_channels:])
        mean, log_sd = self.prior_parameters(kept, condition)
        return kept, z, gaussian_log_prob(z, mean, log_sd), logdet

    def inverse(self, kept, condition, z=None, heat=0.0, generator=None):
        """Inverts the level; z is given (reconstruction) or drawn as mean + heat*sd*eps."""
        if z is None:
            mean, log_sd = self.prior_parameters(kept, condition)
            z = mean if heat == 0 else mean + heat * log_sd.exp() * standard_normal(mean, generator)
        x = z if self.final else torch.cat([kept, z], 1)
        for step in reversed(self.steps):
            x = step.inverse(x, condition)
        return unsqueeze2d(self.actnorm.inverse(self.invconv.inverse(x)))


def standard_normal(like, generator=None):
    """N(0, 1) noise shaped like `like`, drawn on the generator's device (reproducible across devices)."""
    device = like.device if generator is None else generator.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class ConditionalGlow(nn.Module):
    """Multi-level conditional Glow: x (B, 3, H, W) <-> latents [z_0, ..., z_{L-1}] given conditions
    at 1/2, 1/4, ..., 1/2^L resolution. encode returns the latents, log p(z) and log|det dz/dx|."""

    def __init__(self, cond_channels, steps, hidden, in_channels=3):
        super().__init__()
        levels = []
        channels = in_channels
        for level, cond in enumerate(cond_channels):
            final = level == len(cond_channels) - 1
            levels.append(FlowLevel(channels, cond, steps, hidden, final))
            channels = channels * 2
        self.levels = nn.ModuleList(levels)

    def encode(self, x, conditions):
        latents, log_p, logdet = [], 0.0, 0.0
        for level, condition in zip(self.levels, conditions):
            x, z, level_log_p, level_logdet = level(x, condition)
            latents.append(z)
            log_p = log_p + level_log_p
            logdet = logdet + level_logdet
        return latents, log_p, logdet

    def decode(self, conditions, latents=None, heat=0.0, generator=None):
        """Inverse pass: from the given latents, or sampling every level (deepest first) at `heat`."""
        x = None
        for index in reversed(range(len(self.levels))):
            z = None if latents is None else latents[index]
            x = self.levels[index].inverse(x, conditions[index], z, heat, generator)
        return x


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class PerVFI(nn.Module):
    """PerVFI with the shared model interface of model.py: forward(inputs, audio, audio_times, has_audio,
    ts, target) -> {"pred", and "nll" with a target} (see the module docstring)."""

    uses_audio = False
    arbitrary_t = True  # any t in (0, 1) in one pass: 4x/8x need no recursion

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        width, levels = config["width"], config["levels"]
        if levels < 1:
            raise ValueError(f"pervfi.py: levels must be >= 1, got {levels}")
        features = pyramid_channels(levels, width)
        channels = [features[0] + 3] + features[1:]
        hidden = scaled_channels(64, width, minimum=8)
        self.multiple = 2 ** levels
        self.pyramid = FeaturePyramid(features)
        self.metric = SplatMetric(channels[0], scaled_channels(16, width))
        self.align = DeformableAlignment(channels, config["dcn_groups"])
        self.blend = nn.ModuleList(SoftBinaryBlend(c, hidden) for c in channels)
        self.fusion = MultiscaleFusion(channels, config["fusion_units"])
        self.glow = ConditionalGlow(channels, config["steps_per_level"], hidden)
        object.__setattr__(self, "flow_estimator", None)

    # --- flow estimator (frozen, outside state_dict / parameters) ---------------------------

    def set_flow_estimator(self, estimator=None, weights_dir=None, allow_download=True):
        """Use `estimator` (a module or a flow.py name; default: the config's) frozen and in eval mode."""
        if estimator is None or isinstance(estimator, str):
            name = estimator or self.config["flow_estimator"]
            estimator = flowlib.build_flow_estimator(name, weights_dir=weights_dir, allow_download=allow_download,
                                                     device=self.device)
        estimator.requires_grad_(False)
        estimator.eval()
        object.__setattr__(self, "flow_estimator", estimator.to(self.device))
        return estimator

    def _apply(self, fn, *args, **kwargs):
        """Let .to()/.cuda()/.double() also move the (unregistered) flow estimator."""
        super()._apply(fn, *args, **kwargs)
        if self.flow_estimator is not None:
            self.flow_estimator._apply(fn)
        return self

    @property
    def device(self):
        return next(self.parameters()).device

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def estimate_flows(self, frame0, frame1):
        """(F0->1, F1->0) from one batched call of the frozen estimator."""
        if self.flow_estimator is None:
            self.set_flow_estimator()
        flows = self.flow_estimator(torch.cat([frame0, frame1]), torch.cat([frame1, frame0])).float()
        return flows.chunk(2, dim=0)

    # --- conditions ---------------------------------------------------------------------------

    def conditions(self, frame0, frame1, times, flows=None):
        """Conditions for frames (B, 3, H, W) (H, W multiples of 2^levels) and times (B, n).

        Returns the flow-level conditions (one per level, float32) and the base image in [-1, 1]
        the flow models the target relative to (zeros unless config["residual"]). Per-frame work
        (flow, pyramid, metric) is done once; splatting onwards runs on B*n items.
        """
        flow01, flow10 = self.estimate_flows(frame0, frame1) if flows is None else flows
        n = times.shape[1]
        image0, image1 = frame0 * 2 - 1, frame1 * 2 - 1
        features0, features1 = self.pyramid(image0), self.pyramid(image1)
        metric0 = self.metric(image0, image1, flow01, features0[0])
        metric1 = self.metric(image1, image0, flow10, features1[0])
        repeat = lambda x: x.repeat_interleave(n, dim=0)
        t = times.reshape(-1, 1, 1, 1).to(frame0.dtype)
        flow01, flow10, metric0, metric1 = map(repeat, (flow01, flow10, metric0, metric1))
        features0, features1 = [repeat(f) for f in features0], [repeat(f) for f in features1]
        splatted0, holes = splat_pyramid(features0, t * flow01, metric0)
        flow_t1 = -flowlib.softmax_splat((1 - t) * flow10, (1 - t) * flow10, metric1)[0]
        complementary = self.align(splatted0, features1, holes, flow_t1)
        jitter = self.config["mask_jitter"]
        blended, masks = zip(*[blend(hole, f0, f1, jitter)
                               for blend, hole, f0, f1 in zip(self.blend, holes, splatted0, complementary)])
        conditions = [c.float() for c in self.fusion(list(blended))]
        base = torch.zeros_like(splatted0[0][:, :3])
        if self.config["residual"]:
            warped1 = flowlib.backward_warp(features1[0][:, :3], flow_t1)
            base = splatted0[0][:, :3] * (1 - masks[0]) + warped1 * masks[0]
        return conditions, base.float()

    # --- likelihood and sampling --------------------------------------------------------------

    def nll_bits_per_dim(self, target, conditions, base, generator=None):
        """-log2 p(target) per dimension for images in [0, 1] quantised to 256 levels.

        Dequantisation: y = target + u, u ~ U(-1/512, 1/512) (bin width 1/256); the flow sees
        x = 2y - 1 - base, whose Jacobian adds D*log 2 (the shift by the base adds nothing).
        bits/dim = (-log p_z - log|det| - D log 2 + D log 256) / (D log 2)
                 = -(log p_z + log|det|) / (D log 2) + 7.
        """
        noise = standard_uniform(target, generator) - 0.5
        y = target.float() + noise / 256
        latents, log_p, logdet = self.glow.encode(2 * y - 1 - base, conditions)
        dims = target[0].numel()
        return -(log_p + logdet) / (dims * math.log(2)) + 7.0, latents

    def decode(self, conditions, base, heat, generator=None, latents=None):
        """Image in [0, 1]-ish from latents, or sampled from the conditional priors at `heat`."""
        return (self.glow.decode(conditions, latents, heat, generator) + base + 1) / 2

    def training_heat(self, latents):
        heat = self.config["train_heat"]
        if heat == "latent_std":
            return torch.cat([z.detach().flatten() for z in latents]).std().item()
        return float(heat)

    # --- public API ---------------------------------------------------------------------------

    def forward(self, inputs, audio=None, audio_times=None, has_audio=None, ts=None, target=None,
                heat=None, generator=None, flows=None):
        """inputs (B, 4, 3, H, W) in [0, 1] (uses frames 1 and 2); ts (B, n) in (0, 1) or None
        (k/scale); target (B, n, 3, H, W) adds "nll" (B,) bits/dim. Audio arguments are ignored.

        "pred" (B, n, 3, H, W): with a target in training mode, a sample at the training heat
        (the official training code's choice for the Lap/perceptual terms); otherwise a sample at
        `heat` (default config["heat"]) drawn with `generator`. `flows` = (F0->1, F1->0) skips the
        estimator (cached flows, at the input size).
        """
        if inputs.dim() != 5 or inputs.shape[1] < 3 or inputs.shape[2] != 3:
            raise ValueError(f"pervfi.py: inputs must be (B, 4, 3, H, W), got {tuple(inputs.shape)}")
        batch, _, _, height, width = inputs.shape
        times = self.resolve_times(ts, batch, inputs.device)
        n = times.shape[1]
        frame0, frame1 = self.pad(inputs[:, 1]), self.pad(inputs[:, 2])
        if flows is not None:
            flows = tuple(self.pad(f) for f in flows)
        conditions, base = self.conditions(frame0, frame1, times, flows)
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            out = {}
            decode_heat = self.config["heat"] if heat is None else heat
            if target is not None:
                target_frames = self.pad(target.reshape(batch * n, *target.shape[2:]))
                nll, latents = self.nll_bits_per_dim(target_frames, conditions, base, generator)
                out["nll"] = nll.view(batch, n).mean(dim=1)
                if self.training:
                    decode_heat = self.training_heat(latents)
            pred = self.decode(conditions, base, decode_heat, generator)
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
        """Replicate-pad (.., H, W) to multiples of 2^levels (the output is cropped back)."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h == 0 and pad_w == 0:
            return x
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def standard_uniform(like, generator=None):
    """U(0, 1) noise shaped like `like`, drawn on the generator's device."""
    device = like.device if generator is None else generator.device
    return torch.rand(like.shape, generator=generator, device=device).to(device=like.device, dtype=torch.float32)
