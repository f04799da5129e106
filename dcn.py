"""Modulated deformable convolution (DCNv2) in pure torch, with torchvision.ops.deform_conv2d's
layout and sampling, and the parameters/initialisation of torchvision.ops.DeformConv2d: PerVFI's
alignment of frame-1 features (`DCNPack`) runs on any device without compiled extensions.
"""
import math

import torch
import torch.nn as nn

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
        raise ValueError(f"dcn.py: deform_conv2d got {channels} input channels, weight {tuple(weight.shape)}, "
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
