"""PerVFI's splatting and feature pyramid: softmax splatting (Niklaus & Liu, CVPR 2020) in pure
torch, the hole mask, the three-level encoder and the GridNet splatting metric ("Softmetric"),
with the authors' module names. The metric's backward warp is flow.backward_warp with zeros
outside (the softmax-splatting code's align_corners=True grid samples the same points).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import flow as flow_ops

METRIC_CLIP = 20.0     # splatting metrics are clipped to +-20 before exp()
SPLAT_EPS = 1e-7       # normaliser epsilon of softmax / average splatting
HOLE_LEVEL = 0.5       # average-splatted ones <= 0.5: no frame-0 pixel arrived


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
        raise ValueError(f"pervfi_features.py: softsplat mode must be 'sum', 'avg' or 'soft', got {mode!r}")
    out = splat_sum(weighted, flow)
    return out[:, :-1] / (out[:, -1:] + SPLAT_EPS)


def binary_hole(flow):
    """1 where average splatting of ones along `flow` gives <= 0.5, i.e. (because of the 1e-7 in
    the normaliser) where practically no source pixel arrived; else 0."""
    ones = torch.ones(flow.shape[0], 1, *flow.shape[2:], device=flow.device, dtype=flow.dtype)
    coverage = softsplat(ones, flow, mode="avg")
    return (coverage <= HOLE_LEVEL).to(coverage.dtype)


def resize(x, size, rescale):
    """Bilinear resize (align_corners=False); `rescale` multiplies by the height ratio (flows)."""
    out = F.interpolate(x, size, mode="bilinear", align_corners=False)
    return out * (size[0] / x.shape[-2]) if rescale else out



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

    The error is the channel mean of |f0 - backward_warp(f1, F0->1)| over the level-0 features (image
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
        error = (features[0] - flow_ops.backward_warp(other_features[0], flow, "zeros")).abs().mean(1, keepdim=True)
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
