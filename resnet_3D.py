"""3D ResNet encoder of the video branch (r3d-18 / r3d-34 style with SE feature gating).

State_dict names and shapes follow FLAVR's `model/resnet_3D.py` (encoder of `UNet_3D_3D`), so a
released FLAVR checkpoint loads unchanged: `stem.0`, `layerN.M.conv1.0`, `layerN.M.conv2.0`,
`layerN.M.fg.attn_layer.0`, `layerN.M.downsample.0`. FLAVR switches the convolution biases on
through a module global; here `bias` is an argument that comes from the model config.
"""
import torch.nn as nn

# Blocks per stage of each encoder depth (r3d-18 and r3d-34).
ENCODER_LAYERS = {"unet_18": (2, 2, 2, 2), "unet_34": (3, 4, 6, 3)}
# FLAVR's channel counts per stage; the width multiplier scales them.
ENCODER_CHANNELS = (64, 128, 256, 512)


def scaled_channels(channels, width, minimum=4):
    """Channel count under the width multiplier (never below `minimum`, so tiny test models still work)."""
    return max(minimum, int(round(channels * width)))


class SEGating(nn.Module):
    """Squeeze-and-excitation style gating: a per-channel sigmoid gate from the global mean."""

    def __init__(self, channels):
        super().__init__()
        self.attn_layer = nn.Sequential(nn.Conv3d(channels, channels, kernel_size=1, bias=True), nn.Sigmoid())

    def forward(self, x):
        return x * self.attn_layer(x.mean(dim=(2, 3, 4), keepdim=True))


def conv3x3x3(in_channels, out_channels, stride, bias):
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


class BasicBlock(nn.Module):
    """Residual block: two 3x3x3 convolutions, SE gating, identity or 1x1x1 projection shortcut."""

    def __init__(self, in_channels, channels, stride=1, bias=False):
        super().__init__()
        self.conv1 = nn.Sequential(conv3x3x3(in_channels, channels, stride, bias), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv3x3x3(channels, channels, 1, bias))
        self.fg = SEGating(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            # FLAVR's projection shortcut never has a bias, whatever the other convolutions do.
            self.downsample = nn.Sequential(nn.Conv3d(in_channels, channels, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = self.fg(self.conv2(self.conv1(x)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return (out + shortcut).relu()


class ResNet3DEncoder(nn.Module):
    """Stem + four residual stages; returns the five feature maps the U-Net decoder joins.

    Spatial strides 2 (stem), 1, 2, 2, 1; time is never strided, so every feature keeps the
    input's T frames. Feature resolutions: H/2, H/2, H/4, H/8, H/8.
    """

    def __init__(self, depth="unet_18", width=1.0, bias=False):
        super().__init__()
        if depth not in ENCODER_LAYERS:
            raise ValueError(f"unknown encoder depth {depth!r}; choose one of {sorted(ENCODER_LAYERS)}")
        channels = [scaled_channels(c, width) for c in ENCODER_CHANNELS]
        self.channels = tuple(channels)
        self.stem = nn.Sequential(
            nn.Conv3d(3, channels[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=bias),
            nn.ReLU(inplace=True),
        )
        strides = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 1, 1))
        in_channels = channels[0]
        for index, (blocks, out_channels, stride) in enumerate(zip(ENCODER_LAYERS[depth], channels, strides)):
            self.add_module(f"layer{index + 1}", self._make_stage(in_channels, out_channels, blocks, stride, bias))
            in_channels = out_channels

    @staticmethod
    def _make_stage(in_channels, channels, blocks, stride, bias):
        stride = 1 if stride == (1, 1, 1) else stride
        first = BasicBlock(in_channels, channels, stride=stride, bias=bias)
        return nn.Sequential(first, *[BasicBlock(channels, channels, bias=bias) for _ in range(blocks - 1)])

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.layer1(x0)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return x0, x1, x2, x3, x4
