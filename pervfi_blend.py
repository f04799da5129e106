"""PerVFI's merge of the two frames: deformable alignment of frame 1 to t, asymmetric soft-binary
blending with splatted frame 0, and the HRNet-style fusion into the Glow's conditions.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcn import DCNPack, offset_groups
from pervfi_features import conv3x3, resize

BLEND_DILATION = 9     # SoftBinary's hole-mask kernel (Network(dilate_size=9))
MASK_JITTER = 100.0    # training noise on the soft masks: (U(0, 1) - 0.5) / 100


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
