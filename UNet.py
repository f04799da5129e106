"""3D U-Net video network (FLAVR's `UNet_3D_3D`): encoder, decoder blocks, multi-frame output head.

Checkpoint-compatible with FLAVR (`model/FLAVR_arch.py`, joinType "concat", upmode "transpose",
no batch norm): the parameter names are `encoder.*`, `decoder.0..4.*`, `feature_fuse.conv.0.weight`
and `outconv.1.*`. `VideoUNet` is the video branch; `model.ASVFI` extends it with the audio branch
and uses the two hook points of `decode` (bottleneck and one decoder scale) for the fusion.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from resnet_3D import ENCODER_CHANNELS, ResNet3DEncoder, SEGating, scaled_channels
from utils import pad_to_multiple

N_INPUT_FRAMES = 4
# Spatial down-sampling of the encoder: inputs are padded to a multiple of this.
SIZE_MULTIPLE = 8


class GatedConv3d(nn.Module):
    """3x3x3 convolution followed by SE gating (FLAVR's `Conv_3d`)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
                                  SEGating(out_channels))

    def forward(self, x):
        return self.conv(x)


class GatedUpConv3d(nn.Module):
    """Transposed convolution that doubles H and W (not T), then SE gating (FLAVR's `upConv3D`)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.upconv = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)),
            SEGating(out_channels),
        )

    def forward(self, x):
        return self.upconv(x)


class FrameFuse2d(nn.Module):
    """1x1 convolution without bias that mixes the per-frame decoder features (FLAVR's `Conv_2d`)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))

    def forward(self, x):
        return self.conv(x)


class VideoUNet(nn.Module):
    """FLAVR's 3D U-Net: 4 input frames -> n_outputs frames of the middle interval.

    `forward(frames)` takes (B, 3, T, H, W) frames and returns (B, n_outputs, 3, H, W).
    Per-sample, per-channel mean subtraction before the encoder and the add-back after the head
    are part of the network, as in FLAVR.
    """

    def __init__(self, n_outputs, depth="unet_18", width=1.0, encoder_bias=False):
        super().__init__()
        self.n_outputs = n_outputs
        enc = [scaled_channels(c, width) for c in ENCODER_CHANNELS]
        self.encoder = ResNet3DEncoder(depth=depth, width=width, bias=encoder_bias)
        # Concat joins double the input channels of every decoder block after the first.
        self.decoder = nn.Sequential(
            GatedConv3d(enc[3], enc[2]),
            GatedUpConv3d(enc[2] * 2, enc[1]),
            GatedUpConv3d(enc[1] * 2, enc[0]),
            GatedConv3d(enc[0] * 2, enc[0]),
            GatedUpConv3d(enc[0] * 2, enc[0]),
        )
        self.feature_fuse = FrameFuse2d(enc[0] * N_INPUT_FRAMES, enc[0])
        self.outconv = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(enc[0], 3 * n_outputs, kernel_size=7))
        self.bottleneck_channels = enc[3]
        self.decoder_fusion_channels = enc[0]

    @staticmethod
    def subtract_mean(frames, mean=None):
        """Per-sample, per-channel mean over time and space (FLAVR's CAIN-style normalisation).

        A given `mean` (B, 3) replaces the frames' own: tiles of a large frame are centred by the
        whole frame's mean, as the untiled network would centre them."""
        if mean is None:
            mean = frames.mean(2, keepdim=True).mean(3, keepdim=True).mean(4, keepdim=True)
        else:
            mean = mean.to(frames.dtype).view(frames.shape[0], frames.shape[1], 1, 1, 1)
        return frames - mean, mean

    def decode(self, features, fuse_bottleneck=None, fuse_decoder=None):
        """Decoder + head; the optional hooks map a feature map (B, C, T, h, w) to one of the same shape.

        `fuse_bottleneck` sees the deepest encoder feature (H/8), `fuse_decoder` the decoder
        feature at H/2 before its skip join.
        """
        x0, x1, x2, x3, x4 = features
        if fuse_bottleneck is not None:
            x4 = fuse_bottleneck(x4)
        act = self.leaky_relu
        d3 = torch.cat([act(self.decoder[0](x4)), x3], dim=1)
        d2 = torch.cat([act(self.decoder[1](d3)), x2], dim=1)
        d1 = torch.cat([act(self.decoder[2](d2)), x1], dim=1)
        d0 = act(self.decoder[3](d1))
        if fuse_decoder is not None:
            d0 = fuse_decoder(d0)
        d0 = torch.cat([d0, x0], dim=1)
        per_frame = act(self.decoder[4](d0))
        stacked = torch.cat(torch.unbind(per_frame, dim=2), dim=1)
        return self.outconv(act(self.feature_fuse(stacked)))

    @staticmethod
    def leaky_relu(x):
        return F.leaky_relu(x, 0.2)

    def predict(self, frames, fuse_bottleneck=None, fuse_decoder=None, frame_mean=None):
        """(B, 3, T, H, W) frames, any H, W -> (B, n_outputs, 3, H, W).

        The mean is taken over the real pixels (or is `frame_mean`); the centred frames are
        replicate-padded to a multiple of 8 and the prediction is cropped back (a no-op at FLAVR's sizes).
        """
        height, width = frames.shape[-2:]
        centred, mean = self.subtract_mean(frames, frame_mean)
        padded = pad_to_multiple(centred, SIZE_MULTIPLE)
        out = self.decode(self.encoder(padded), fuse_bottleneck, fuse_decoder)[..., :height, :width]
        return out.unflatten(1, (self.n_outputs, 3)) + mean.squeeze(2).unsqueeze(1)

    def forward(self, frames):
        return self.predict(frames)
