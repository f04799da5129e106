"""RAFT (princeton-vl/RAFT, full model), checkpoint-compatible with the released `raft-things.pth`.

flow.build_flow_estimator("raft") builds it; it takes two (B, 3, H, W) RGB frames in [0, 1] and
returns the flow from the first to the second in pixels, like every estimator in flow.py.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import weights
from flow import FrozenFlowModule, load_frozen, pixel_grid, sample_at_pixels

PADDING_MODES = {"replicate": "replicate", "zeros": "constant"}  # name -> F.pad mode
RAFT_HIDDEN = 128
RAFT_CONTEXT = 128


def _norm(kind, channels):
    """The encoders' normalisation; "instance" has no parameters (affine=False, as in RAFT)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"flow.py: unknown RAFT norm {kind!r} (use 'instance' or 'batch')")


class RAFTResidualBlock(nn.Module):
    """Two 3x3 convs with norm + ReLU and a (1x1 conv + norm) shortcut when striding."""

    def __init__(self, in_channels, channels, norm, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = _norm(norm, channels)
        self.norm2 = _norm(norm, channels)
        if stride == 1:
            self.downsample = None
        else:
            # Registered twice, as in RAFT: under `norm3` and as `downsample.1` (both in the checkpoint).
            self.norm3 = _norm(norm, channels)
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride), self.norm3)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class RAFTEncoder(nn.Module):
    """RAFT's BasicEncoder: 7x7/2 conv, residual stages 64, 96/2, 128/2, 1x1 output conv (1/8 size)."""

    def __init__(self, output_dim, norm):
        super().__init__()
        self.norm1 = _norm(norm, 64)  # registered before conv1, as in RAFT: the checkpoint's key order
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        stages, in_channels = [], 64
        for channels, stride in ((64, 1), (96, 2), (128, 2)):
            stages.append(nn.Sequential(RAFTResidualBlock(in_channels, channels, norm, stride),
                                        RAFTResidualBlock(channels, channels, norm)))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(128, output_dim, 1)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class RAFTMotionEncoder(nn.Module):
    """Encodes the looked-up correlation and the current flow into 126 + 2 channels."""

    def __init__(self, correlation_channels):
        super().__init__()
        self.convc1 = nn.Conv2d(correlation_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow, correlation):
        cor = F.relu(self.convc2(F.relu(self.convc1(correlation))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], 1))), flow], 1)


class RAFTSepConvGRU(nn.Module):
    """Convolutional GRU run twice: with 1x5 (horizontal) then 5x1 (vertical) kernels."""

    def __init__(self, hidden_dim, input_dim):
        super().__init__()
        for suffix, kernel, padding in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in ("z", "r", "q"):
                setattr(self, f"conv{gate}{suffix}", nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel,
                                                              padding=padding))

    def _step(self, h, x, suffix):
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
        r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
        q = torch.tanh(getattr(self, f"convq{suffix}")(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q

    def forward(self, h, x):
        return self._step(self._step(h, x, "1"), x, "2")


class RAFTFlowHead(nn.Module):
    def __init__(self, input_dim=128, hidden_dim=256):
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class RAFTUpdateBlock(nn.Module):
    """BasicUpdateBlock: motion encoder → SepConvGRU → flow delta; `upsampling_mask` for the output.

    The mask is computed only when a flow is upsampled (RAFT computes it every iteration and
    discards all but the last at test time; the result is the same).
    """

    def __init__(self, correlation_channels, hidden_dim=RAFT_HIDDEN):
        super().__init__()
        self.encoder = RAFTMotionEncoder(correlation_channels)
        self.gru = RAFTSepConvGRU(hidden_dim, 128 + hidden_dim)
        self.flow_head = RAFTFlowHead(hidden_dim, 256)
        self.mask = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, hidden, context, correlation, flow):
        """Returns the new hidden state and the flow update (1/8 resolution pixels)."""
        motion = self.encoder(flow, correlation)
        hidden = self.gru(hidden, torch.cat([context, motion], 1))
        return hidden, self.flow_head(hidden)

    def upsampling_mask(self, hidden):
        """Convex-upsampling logits (B, 9·8·8, H, W), scaled by 0.25 as in RAFT."""
        return 0.25 * self.mask(hidden)


def full_precision(tensor):
    """Autocast off on `tensor`'s device: RAFT builds and reads its correlation volume in the
    features' full precision even under mixed precision (a bf16 matmul would round every cost)."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def all_pairs_correlation_pyramid(fmap1, fmap2, levels=4):
    """RAFT's 4D cost volume: <f1(p), f2(q)> / sqrt(C) for every pair, q average-pooled `levels` times.

    Each level is (B·H·W, 1, H/2^l, W/2^l), one correlation image per source pixel.
    """
    batch, channels, height, width = fmap1.shape
    volume = torch.matmul(fmap1.flatten(2).transpose(1, 2), fmap2.flatten(2)) / math.sqrt(channels)
    volume = volume.reshape(batch * height * width, 1, height, width)
    pyramid = [volume]
    for _ in range(levels - 1):
        volume = F.avg_pool2d(volume, 2, stride=2)
        pyramid.append(volume)
    return pyramid


def lookup_correlation(pyramid, coords, radius=4):
    """Samples a (2r+1)² window of every pyramid level around `coords` (B, 2, H, W) → (B, L·(2r+1)², H, W).

    Channel order reproduces RAFT's: window index k = i·(2r+1) + j samples the offset
    (x + i − r, y + j − r) (its meshgrid puts the row offsets on x), which the weights were trained on.
    """
    batch, _, height, width = coords.shape
    offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    window = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # [i, j] -> (i-r, j-r)
    centres = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
    samples = []
    for level, volume in enumerate(pyramid):
        sampled = sample_at_pixels(volume, centres / 2 ** level + window[None])
        samples.append(sampled.view(batch, height, width, -1))
    return torch.cat(samples, -1).permute(0, 3, 1, 2).contiguous()


def convex_upsample(flow, mask, factor=8):
    """Upsamples a 1/8 flow as a softmax-weighted combination of each coarse pixel's 3x3 neighbours."""
    batch, _, height, width = flow.shape
    mask = torch.softmax(mask.view(batch, 1, 9, factor, factor, height, width), dim=2)
    neighbours = F.unfold(factor * flow, [3, 3], padding=1).view(batch, 2, 9, 1, 1, height, width)
    upsampled = (mask * neighbours).sum(2).permute(0, 1, 4, 2, 5, 3)
    return upsampled.reshape(batch, 2, factor * height, factor * width)


class RAFT(FrozenFlowModule):
    """RAFT (Teed & Deng, ECCV 2020), full model, state_dict keys of princeton-vl/RAFT (no `module.`).

    Call: `flow = net(img0, img1, iters=None)`, (B, 3, H, W) RGB in [0, 1] → (B, 2, H, W) pixels from
    img0 to img1. Inputs are mapped to [-1, 1] (RAFT's 2·(x/255) − 1) and padded to multiples of 8,
    centred: `padding="replicate"` is RAFT's own "sintel" padder, `"zeros"` PerVFI's (their
    InputPadder pads the [0, 255] frames with constant 0); the flow is cropped back. `iters`
    defaults to the constructor's (12, RAFT's test setting and PerVFI's; 20/32 for benchmarks).
    """

    def __init__(self, iters=12, corr_levels=4, corr_radius=4, padding="replicate"):
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"raft.py: padding must be one of {sorted(PADDING_MODES)}, got {padding!r}")
        self.iters = iters
        self.padding = padding
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.fnet = RAFTEncoder(256, "instance")
        self.cnet = RAFTEncoder(RAFT_HIDDEN + RAFT_CONTEXT, "batch")
        self.update_block = RAFTUpdateBlock(corr_levels * (2 * corr_radius + 1) ** 2, RAFT_HIDDEN)

    def _pad_to_8(self, images):
        """Centred padding of the [0, 1] frames (zeros there = 0 of PerVFI's [0, 255] input)."""
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        padding = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
        return F.pad(images, padding, mode=PADDING_MODES[self.padding]), padding

    def forward(self, img0, img1, iters=None, flow_init=None, return_all=False):
        """Final flow (or, with `return_all`, the list of upsampled flows of every iteration).

        `flow_init` (B, 2, H/8, W/8) warm-starts the iterations at the padded 1/8 resolution.
        """
        iters = self.iters if iters is None else iters
        height, width = img0.shape[-2:]
        images, padding = self._pad_to_8(torch.cat([img0, img1], 0))
        images = images * 2 - 1
        smallest = 8 * 2 ** (self.corr_levels - 1)
        if min(images.shape[-2:]) < smallest:
            raise ValueError(f"flow.py RAFT: frames of {height}x{width} are too small for a "
                             f"{self.corr_levels}-level correlation pyramid; need at least {smallest}x{smallest}")
        batch = img0.shape[0]
        features = self.fnet(images)
        fmap1, fmap2 = features.to(torch.promote_types(features.dtype, torch.float32)).split(batch, 0)
        with full_precision(images):
            pyramid = all_pairs_correlation_pyramid(fmap1, fmap2, self.corr_levels)
        hidden, context = self.cnet(images[:batch]).split([RAFT_HIDDEN, RAFT_CONTEXT], 1)
        hidden, context = torch.tanh(hidden), torch.relu(context)
        coords0 = pixel_grid(*fmap1.shape[-2:], device=images.device, dtype=fmap1.dtype).expand(batch, -1, -1, -1)
        coords1 = coords0 if flow_init is None else coords0 + flow_init
        predictions = []
        for step in range(iters):
            coords1 = coords1.detach()
            with full_precision(images):
                correlation = lookup_correlation(pyramid, coords1, self.corr_radius)
            hidden, delta = self.update_block(hidden, context, correlation, coords1 - coords0)
            coords1 = coords1 + delta
            if return_all or step == iters - 1:
                predictions.append(convex_upsample(coords1 - coords0, self.update_block.upsampling_mask(hidden)))
        left, top = padding[0], padding[2]
        predictions = [flow[..., top:top + height, left:left + width] for flow in predictions]
        return predictions if return_all else predictions[-1]


def load_raft(weights_dir=None, allow_download=True, device=None, iters=12, checkpoint="raft_things",
              padding="replicate"):
    """Frozen RAFT with released weights: `checkpoint` names a weights.py entry ("raft_things",
    "raft_sintel"); a file that does not load raises weights.WeightsUnavailable naming it."""
    state, path = weights.load_state_dict(checkpoint, weights_dir, allow_download)
    return load_frozen(RAFT(iters=iters, padding=padding), state, path, device)
