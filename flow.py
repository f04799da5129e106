"""Optical flow and warping shared by PerVFI and FloLPIPS.

Flows are (B, 2, H, W) tensors in pixels: channel 0 is the horizontal displacement, channel 1 the
vertical one. `flow[:, :, y, x]` moves the pixel at (x, y) of the source frame to
(x + u, y + v) of the target frame; `backward_warp(img1, flow_0to1)` therefore approximates img0.

Flow estimators (one interface, `build_flow_estimator(name)`; all take two (B, 3, H, W) RGB frames
in [0, 1] and return the flow from the first to the second frame in pixels; all are frozen):
- "pwc":  PWC-Net as used by FloLPIPS (sniklaus/pytorch-pwc "default", via danier97/flolpips),
          checkpoint-compatible with `network-default.pytorch`.
- "raft": RAFT (princeton-vl/RAFT, full model), checkpoint-compatible with `raft-things.pth`.
- "raft_sintel": the same with the released Sintel weights `raft-sintel.pth` and zero padding to
          multiples of 8, as PerVFI's inference runs it (12 iterations).
- "dis":  OpenCV DIS (no weights; for machines without the pretrained files).
"""
import math

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import weights


# ---------------------------------------------------------------------------------------------
# Grids, warping and splatting
# ---------------------------------------------------------------------------------------------

def pixel_grid(height, width, device=None, dtype=torch.float32):
    """(1, 2, H, W) pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def sample_at_pixels(image, coords, padding_mode="zeros"):
    """Bilinear samples of `image` (N, C, H, W) at pixel coordinates `coords` (N, h, w, 2) as (x, y).

    Pixel centres sit at integer coordinates. The normalisation (2x + 1) / W - 1 with
    align_corners=False is exact for any size, including the 1-pixel maps of coarse pyramids
    where the usual 2x / (W - 1) - 1 divides by zero.
    """
    height, width = image.shape[-2:]
    grid = torch.stack([(2 * coords[..., 0] + 1) / width - 1,
                        (2 * coords[..., 1] + 1) / height - 1], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def backward_warp(image, flow, padding_mode="border"):
    """Sample `image` at p + flow(p) (bilinear): the warp that pulls pixels along `flow`."""
    _, _, height, width = image.shape
    coords = pixel_grid(height, width, image.device, flow.dtype) + flow
    return sample_at_pixels(image, coords.permute(0, 2, 3, 1), padding_mode)


# ---------------------------------------------------------------------------------------------
# Frozen estimators
# ---------------------------------------------------------------------------------------------

class FrozenFlowModule(nn.Module):
    """Base of the flow estimators: once `freeze()`d, `train()` can no longer switch it to training.

    PerVFI's flow estimator is frozen; as a submodule of a model that calls `.train()` every epoch,
    its batch norms (RAFT's context encoder) would otherwise start using batch statistics.
    """

    frozen = False

    def freeze(self):
        self.frozen = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode=True):
        return super().train(mode and not self.frozen)


# ---------------------------------------------------------------------------------------------
# PWC-Net (sniklaus/pytorch-pwc "default", as used by FloLPIPS)
# ---------------------------------------------------------------------------------------------

PWC_LEVEL_NAMES = ("netTwo", "netThr", "netFou", "netFiv", "netSix")  # pyramid levels 2..6
PWC_EXTRACTOR_CHANNELS = (16, 32, 64, 96, 128, 196)  # levels 1..6
PWC_DENSE_CHANNELS = (128, 128, 96, 64, 32)
PWC_SEARCH_RADIUS = 4  # 9x9 = 81 correlation channels


def local_correlation(first, second, max_displacement=PWC_SEARCH_RADIUS):
    """Cost volume of the PWC-Net correlation layer (FlowNet-style, patch 1, stride 1).

    out[:, k, y, x] = mean_c first[:, c, y, x] * second[:, c, y + dy, x + dx] with
    dx = k % D - d, dy = k // D - d, D = 2d + 1; `second` is zero outside the image. Computed by
    padding once and summing over D² shifted views (the fastest pure-torch form on CPU: no D²-fold
    copy of the features as an unfold would make).
    """
    _, channels, height, width = first.shape
    span = 2 * max_displacement + 1
    padded = F.pad(second, [max_displacement] * 4)
    volume = [(first * padded[:, :, dy:dy + height, dx:dx + width]).sum(1)
              for dy in range(span) for dx in range(span)]
    return torch.stack(volume, 1) / channels


def pwc_backwarp(image, flow):
    """PWC-Net's own backward warp, reproduced with its quirks (needed for checkpoint equality).

    The flow is normalised by (W - 1) / 2 although the grid uses align_corners=False pixel centres,
    and a sampled all-ones channel is thresholded at 0.999 to zero out samples that touched the
    zero padding.
    """
    _, _, height, width = flow.shape
    grid_x = torch.linspace(-1.0 + 1.0 / width, 1.0 - 1.0 / width, width, device=flow.device, dtype=flow.dtype)
    grid_y = torch.linspace(-1.0 + 1.0 / height, 1.0 - 1.0 / height, height, device=flow.device, dtype=flow.dtype)
    grid = torch.stack([grid_x.view(1, 1, width).expand(flow.shape[0], height, width)
                        + flow[:, 0] / ((image.shape[3] - 1.0) / 2.0),
                        grid_y.view(1, height, 1).expand(flow.shape[0], height, width)
                        + flow[:, 1] / ((image.shape[2] - 1.0) / 2.0)], dim=-1)
    with_ones = torch.cat([image, image.new_ones(image.shape[0], 1, *image.shape[2:])], 1)
    sampled = F.grid_sample(with_ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = (sampled[:, -1:] > 0.999).to(image.dtype)
    return sampled[:, :-1] * mask


def _conv_lrelu(in_channels, out_channels, stride=1, dilation=1):
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation),
            nn.LeakyReLU(0.1)]


class PWCExtractor(nn.Module):
    """Six-level feature pyramid, each level a stride-2 conv and two convs (LeakyReLU 0.1)."""

    def __init__(self):
        super().__init__()
        in_channels = 3
        for name, channels in zip(("netOne",) + PWC_LEVEL_NAMES, PWC_EXTRACTOR_CHANNELS):
            layers = (_conv_lrelu(in_channels, channels, stride=2) + _conv_lrelu(channels, channels)
                      + _conv_lrelu(channels, channels))
            setattr(self, name, nn.Sequential(*layers))
            in_channels = channels

    def forward(self, image):
        levels = []
        for name in ("netOne",) + PWC_LEVEL_NAMES:
            image = getattr(self, name)(image)
            levels.append(image)
        return levels


def _pwc_decoder_input_channels(level):
    """Channels entering the dense block of pyramid level `level` (2..6)."""
    volume = (2 * PWC_SEARCH_RADIUS + 1) ** 2
    if level == 6:
        return volume
    return volume + PWC_EXTRACTOR_CHANNELS[level - 1] + 2 + 2


class PWCDecoder(nn.Module):
    """One pyramid level: correlation with the warped second frame, a DenseNet block, a flow head.

    Raw flows are in units of 1/20 pixel at the network's (padded-to-64) input resolution, so the
    upsampled coarser flow is turned into level-`level` pixels by 20 / 2**level before warping.
    """

    def __init__(self, level):
        super().__init__()
        self.level = level
        channels = _pwc_decoder_input_channels(level)
        if level < 6:
            previous = _pwc_decoder_input_channels(level + 1) + sum(PWC_DENSE_CHANNELS)
            self.netUpflow = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
            self.netUpfeat = nn.ConvTranspose2d(previous, 2, 4, stride=2, padding=1)
            self.warp_scale = 20.0 / 2 ** level
        for name, out_channels in zip(("netOne", "netTwo", "netThr", "netFou", "netFiv"), PWC_DENSE_CHANNELS):
            setattr(self, name, nn.Sequential(*_conv_lrelu(channels, out_channels)))
            channels += out_channels
        self.netSix = nn.Sequential(nn.Conv2d(channels, 2, 3, padding=1))

    def forward(self, first, second, previous=None):
        """Returns (raw flow, dense features) of this level; `previous` is the coarser level's."""
        if previous is None:
            features = F.leaky_relu(local_correlation(first, second), 0.1)
        else:
            flow = self.netUpflow(previous[0])
            upsampled = self.netUpfeat(previous[1])
            volume = F.leaky_relu(local_correlation(first, pwc_backwarp(second, flow * self.warp_scale)), 0.1)
            features = torch.cat([volume, first, flow, upsampled], 1)
        for name in ("netOne", "netTwo", "netThr", "netFou", "netFiv"):
            features = torch.cat([getattr(self, name)(features), features], 1)
        return self.netSix(features), features


class PWCRefiner(nn.Module):
    """Context network: dilated convolutions (1, 2, 4, 8, 16, 1, 1) that add a residual flow."""

    def __init__(self):
        super().__init__()
        channels = _pwc_decoder_input_channels(2) + sum(PWC_DENSE_CHANNELS)
        layers = []
        for out_channels, dilation in zip((128, 128, 128, 96, 64, 32), (1, 2, 4, 8, 16, 1)):
            layers += _conv_lrelu(channels, out_channels, dilation=dilation)
            channels = out_channels
        layers.append(nn.Conv2d(channels, 2, 3, padding=1))
        self.netMain = nn.Sequential(*layers)

    def forward(self, features):
        return self.netMain(features)


class PWCNet(FrozenFlowModule):
    """PWC-Net exactly as FloLPIPS runs it (state_dict keys of the original `Network`).

    Call: `flow = net(first, second)`, both (B, 3, H, W) RGB in [0, 1] (no channel flip, no
    normalisation; FloLPIPS feeds RGB even though sniklaus' demo fed BGR). Returns (B, 2, H, W),
    the flow from `first` to `second` in pixels of the input. Any H, W: inputs are resized
    (bilinear, align_corners=False) to multiples of 64 and the flow is resized back and rescaled.
    """

    def __init__(self):
        super().__init__()
        self.netExtractor = PWCExtractor()
        for level, name in enumerate(PWC_LEVEL_NAMES, start=2):
            setattr(self, name, PWCDecoder(level))
        self.netRefiner = PWCRefiner()

    def estimate_levels(self, first, second):
        """Raw coarse-to-fine outputs on inputs already sized to multiples of 64.

        Returns {decoder name: raw flow} for netSix ... netTwo (1/20 px at the input resolution)
        and "refiner": the residual added to netTwo's flow.
        """
        pyramid = self.netExtractor(torch.cat([first, second], 0))
        batch = first.shape[0]
        outputs, previous = {}, None
        for level in range(6, 1, -1):
            name = PWC_LEVEL_NAMES[level - 2]
            features = pyramid[level - 1]
            previous = getattr(self, name)(features[:batch], features[batch:], previous)
            outputs[name] = previous[0]
        outputs["refiner"] = self.netRefiner(previous[1])
        return outputs

    def forward(self, first, second):
        height, width = first.shape[-2:]
        padded_height, padded_width = 64 * math.ceil(height / 64), 64 * math.ceil(width / 64)
        first, second = (F.interpolate(image, size=(padded_height, padded_width), mode="bilinear",
                                       align_corners=False) for image in (first, second))
        levels = self.estimate_levels(first, second)
        flow = 20.0 * F.interpolate(levels["netTwo"] + levels["refiner"], size=(height, width),
                                    mode="bilinear", align_corners=False)
        scale = flow.new_tensor([width / padded_width, height / padded_height]).view(1, 2, 1, 1)
        return flow * scale


def remap_pwc_keys(state_dict):
    """Keys of a released PWC-Net file → our keys.

    sniklaus' `network-*.pytorch` files spell every `net` prefix as `module`
    (`moduleExtractor.moduleOne.0.weight` → `netExtractor.netOne.0.weight`), which the original
    loader fixed with `key.replace('module', 'net')`; a DataParallel `module.` prefix is dropped
    first.
    """
    return {key.replace("module", "net"): tensor for key, tensor in checkpoints.strip_module_prefix(state_dict).items()}


def load_frozen(network, state_dict, path, device):
    checkpoints.load_strict(network, state_dict, path, hint=f"Expected the released {type(network).__name__} weights.")
    return network.to(device).freeze()


def load_pwcnet(weights_dir=None, allow_download=True, device=None):
    """Frozen PWC-Net with the released `network-default.pytorch` weights (weights.locate("pwcnet"))."""
    state, path = weights.load_state_dict("pwcnet", weights_dir, allow_download)
    return load_frozen(PWCNet(), remap_pwc_keys(state), path, device)


# ---------------------------------------------------------------------------------------------
# OpenCV DIS
# ---------------------------------------------------------------------------------------------

def _to_gray_uint8(image):
    """(3, H, W) RGB in [0, 1] → (H, W) uint8 luma, ITU-R BT.601 weights (cv2.COLOR_RGB2GRAY)."""
    rgb = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    return cv2.cvtColor(np.ascontiguousarray(rgb.cpu().numpy()), cv2.COLOR_RGB2GRAY)


def dis_flow(img0, img1, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
    """OpenCV DIS optical flow from img0 to img1: (B, 3, H, W) RGB in [0, 1] → (B, 2, H, W) pixels.

    Frames are quantised to uint8 and converted to gray with BT.601 luma (0.299 R + 0.587 G +
    0.114 B, cv2.COLOR_RGB2GRAY), which is what DIS works on. Not differentiable; runs on the CPU
    and returns a tensor on img0's device and dtype.
    """
    estimator = cv2.DISOpticalFlow_create(preset)
    flows = [estimator.calc(_to_gray_uint8(first), _to_gray_uint8(second), None)
             for first, second in zip(img0, img1)]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(device=img0.device, dtype=img0.dtype)


class DISFlow(FrozenFlowModule):
    """`dis_flow` as a module, so that it plugs in wherever a learned estimator does."""

    def __init__(self, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        super().__init__()
        self.preset = preset

    def forward(self, img0, img1):
        return dis_flow(img0, img1, self.preset)


# ---------------------------------------------------------------------------------------------
# One interface
# ---------------------------------------------------------------------------------------------

FLOW_ESTIMATORS = ("pwc", "raft", "raft_sintel", "dis")


def build_flow_estimator(name, weights_dir=None, allow_download=True, device=None):
    """Frozen flow estimator `name` (one of FLOW_ESTIMATORS): forward(img0, img1) → flow img0→img1.

    Inputs (B, 3, H, W) RGB in [0, 1], output (B, 2, H, W) in pixels. Learned estimators load their
    released weights through weights.py (`weights.WeightsUnavailable` names the file when absent);
    "dis" needs none.
    """
    if name == "pwc":
        return load_pwcnet(weights_dir, allow_download, device)
    if name == "raft":
        import raft  # raft.py builds on this module's warping and base class
        return raft.load_raft(weights_dir, allow_download, device)
    if name == "raft_sintel":
        import raft
        return raft.load_raft(weights_dir, allow_download, device, checkpoint="raft_sintel", padding="zeros")
    if name == "dis":
        return DISFlow().to(device).freeze()
    raise ValueError(f"flow.py: unknown flow estimator {name!r}; choose one of {', '.join(FLOW_ESTIMATORS)}")
