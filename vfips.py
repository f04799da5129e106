"""VFIPS network (Hou et al., ECCV 2022), model 'multiscale_v33', checkpoint-compatible with the release.

The original is `networks.lpips_3d.LPIPS_3D_Diff(net='multiscale_v33')` of hqqxyy/VFIPS. It scores one
12-frame window of a distorted video against the same window of the reference:

1. both clips (B, 12, 3, H, W) in [-1, 1] go through the LPIPS scaling layer and, frame by frame,
   through a PWC-Net-style extractor (six levels are built and loaded, five are used);
2. per level, unit-normalised reference and distorted features and their absolute difference are
   concatenated and the 12 frames are stacked into channels, frame-major;
3. a SwinIR-style merge layer per level (conv, one window-attention block without LayerNorm and
   without shift, conv) maps them to 32 channels;
4. a non-negative 1x1 "lin" layer per level, averaged over space and summed over levels, gives the
   score (lower is better; it can be negative).

Module and attribute names mirror the original so that its `state_dict` (101 entries, including the
scaling constants, the unused sixth extractor level and the int64 relative-position indices) loads
with `strict=True`. The 12-frame window protocol over a whole video lives in metrics.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import weights
from lpips_parts import LinLayer, ScalingLayer, unit_normalize
from utils import pad_to_multiple

WINDOW_FRAMES = 12
MIN_SIZE = 65
EXTRACTOR_CHANNELS = (16, 32, 64, 96, 128, 192)
USED_LEVELS = 5
MERGE_CHANNELS = 32


def extractor_level(in_channels, out_channels):
    """One pyramid level: a stride-2 conv and a conv, each followed by LeakyReLU(0.1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1),
        nn.LeakyReLU(0.1),
    )


class Extractor(nn.Module):
    """PWC-Net-style feature pyramid. The sixth level is part of the checkpoint but its output is
    discarded by the original, so it is not evaluated here."""

    LEVEL_NAMES = ("moduleFirst", "moduleSecond", "moduleThird", "moduleFourth", "moduleFifth", "moduleSixth")

    def __init__(self):
        super().__init__()
        in_channels = (3,) + EXTRACTOR_CHANNELS[:-1]
        for name, cin, cout in zip(self.LEVEL_NAMES, in_channels, EXTRACTOR_CHANNELS):
            self.add_module(name, extractor_level(cin, cout))

    def forward(self, frames):
        """(N, 3, H, W) -> the first five levels, each at half the previous resolution."""
        features = []
        for name in self.LEVEL_NAMES[:USED_LEVELS]:
            frames = getattr(self, name)(frames)
            features.append(frames)
        return features


def relative_position_index(window_size):
    """Index into the (2w-1)^2 bias table for every (query, key) token pair of a w x w window,
    tokens in row-major order: (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


def window_partition(tokens, window_size):
    """(B, H, W, C) -> (B * windows, w * w, C), windows and the tokens inside them row-major."""
    b, h, w, c = tokens.shape
    tokens = tokens.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return tokens.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows, window_size, height, width):
    """Inverse of `window_partition`."""
    c = windows.shape[-1]
    grid = windows.view(-1, height // window_size, width // window_size, window_size, window_size, c)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias.

    The original also adds a shifted-window mask when the padded map is not 64x64; with no shift
    that mask is all zeros, so it is omitted."""

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self):
        """(heads, w*w, w*w) bias gathered from the table."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, windows):
        """(B_, N, C) -> (B_, N, C)."""
        b, n, c = windows.shape
        qkv = self.qkv(windows).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) + self.position_bias().unsqueeze(0)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Token-wise feed-forward: Linear, exact GELU, Linear."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens):
        return self.fc2(F.gelu(self.fc1(tokens)))


class SwinBlock(nn.Module):
    """Swin block without LayerNorm (VFIPS removed it) and without window shift (single block)."""

    def __init__(self, dim, num_heads, window_size, mlp_ratio):
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens):
        """(B, H, W, C) with H, W multiples of the window size -> same shape."""
        _, h, w, _ = tokens.shape
        attended = self.attn(window_partition(tokens, self.window_size))
        tokens = tokens + window_merge(attended, self.window_size, h, w)
        return tokens + self.mlp(tokens)


class SwinLayer(nn.Module):
    """A sequence of Swin blocks (one in VFIPS)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth))

    def forward(self, tokens):
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


class SwinGroup(nn.Module):
    """SwinIR's residual Swin group as trimmed by VFIPS: no conv and no skip connection, only the
    blocks (kept as a wrapper because the checkpoint names it `residual_group`)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio):
        super().__init__()
        self.residual_group = SwinLayer(dim, depth, num_heads, window_size, mlp_ratio)

    def forward(self, tokens):
        return self.residual_group(tokens)


class SwinMerge(nn.Module):
    """Per-level merge network (the original `SwinDiffTiny`): reflect-pad to the window size,
    conv, Swin blocks, conv, crop back."""

    def __init__(self, in_channels, out_channels=MERGE_CHANNELS, embed_dim=32, depth=1, num_heads=2,
                 window_size=4, mlp_ratio=2.0):
        super().__init__()
        self.window_size = window_size
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.layers = nn.ModuleList([SwinGroup(embed_dim, depth, num_heads, window_size, mlp_ratio)])
        self.conv_after_body = nn.Conv2d(embed_dim, out_channels, 3, 1, 1)

    def pad_to_window(self, x):
        """Reflect-pad bottom/right to a multiple of the window; reflect needs pad < size."""
        h, w = x.shape[-2:]
        if (-h) % self.window_size >= h or (-w) % self.window_size >= w:
            raise ValueError(f"vfips.py: a {h}x{w} feature map is too small for reflect padding to a "
                             f"multiple of {self.window_size}; frames must be at least {MIN_SIZE}x{MIN_SIZE}")
        return pad_to_multiple(x, self.window_size, mode="reflect")

    def forward(self, x):
        h, w = x.shape[-2:]
        tokens = self.conv_first(self.pad_to_window(x)).permute(0, 2, 3, 1)
        for layer in self.layers:
            tokens = layer(tokens)
        out = self.conv_after_body(tokens.permute(0, 3, 1, 2).contiguous())
        return out[:, :, :h, :w]


class MultiScaleV33(nn.Module):
    """Extractor plus one merge network per level; returns the five (B, 32, h_k, w_k) maps."""

    def __init__(self, frames=WINDOW_FRAMES):
        super().__init__()
        self.frames = frames
        self.moduleExtractor = Extractor()
        self.merge_layers = nn.ModuleList(
            SwinMerge(frames * 3 * c) for c in EXTRACTOR_CHANNELS[:USED_LEVELS])

    @staticmethod
    def difference_features(ref_level, pred_level, batch):
        """Per frame [ref, pred, |ref - pred|] of unit-normalised features, frames stacked into channels
        frame-major: channel t * 3c + j."""
        ref_level, pred_level = unit_normalize(ref_level), unit_normalize(pred_level)
        stacked = torch.cat([ref_level, pred_level, torch.abs(ref_level - pred_level)], dim=1)
        return stacked.view(batch, -1, stacked.shape[2], stacked.shape[3])

    def forward(self, ref, pred):
        """ref, pred: scaled clips (B, T, 3, H, W)."""
        b, t, c, h, w = ref.shape
        both = torch.cat([ref.reshape(b * t, c, h, w), pred.reshape(b * t, c, h, w)], dim=0)
        outs = []
        for level, merge in zip(self.moduleExtractor(both), self.merge_layers):
            ref_level, pred_level = level.split(b * t, dim=0)
            outs.append(merge(self.difference_features(ref_level, pred_level, b)))
        return outs


class VFIPSNet(nn.Module):
    """VFIPS multiscale_v33. `forward(ref, pred)`: reference clip first (the metric is not symmetric)."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = MultiScaleV33()
        self.lins = nn.ModuleList(LinLayer(MERGE_CHANNELS) for _ in range(USED_LEVELS))

    def check_window(self, ref, pred):
        """Clear errors for inputs the original cannot score."""
        if ref.dim() != 5 or ref.shape != pred.shape:
            raise ValueError(f"vfips.py: expected ref and pred of equal shape (B, {WINDOW_FRAMES}, 3, H, W), "
                             f"got {tuple(ref.shape)} and {tuple(pred.shape)}")
        _, t, c, h, w = ref.shape
        if t != WINDOW_FRAMES:
            raise ValueError(f"vfips.py: VFIPS scores windows of exactly {WINDOW_FRAMES} frames (the number is "
                             f"part of the weight shapes), got {t}")
        if c != 3:
            raise ValueError(f"vfips.py: expected RGB frames (3 channels), got {c}")
        if h < MIN_SIZE or w < MIN_SIZE:
            raise ValueError(f"vfips.py: frames must be at least {MIN_SIZE}x{MIN_SIZE} (reflect padding at the "
                             f"coarsest of the 5 scales), got {h}x{w}")

    def merge_outputs(self, ref, pred, normalize=False):
        """The five per-level (B, 32, h_k, w_k) maps before the lin layers. Inputs in [-1, 1], or in
        [0, 1] with normalize=True."""
        self.check_window(ref, pred)
        if normalize:
            ref, pred = 2 * ref - 1, 2 * pred - 1
        return self.net(self.scaling_layer(ref), self.scaling_layer(pred))

    def scale_scores(self, ref, pred, normalize=False):
        """(B, 5): spatial mean of each level's lin output; `forward` is their sum."""
        maps = self.merge_outputs(ref, pred, normalize)
        return torch.cat([lin(m).mean(dim=(2, 3)) for lin, m in zip(self.lins, maps)], dim=1)

    def forward(self, ref, pred, normalize=False):
        """ref, pred: (B, 12, 3, H, W), H, W >= 65 -> score (B, 1, 1, 1); lower is better."""
        per_scale = self.scale_scores(ref, pred, normalize)
        score = per_scale[:, :1]
        for k in range(1, per_scale.shape[1]):
            score = score + per_scale[:, k:k + 1]
        return score.view(-1, 1, 1, 1)


def load_vfips(weights_dir=None, allow_download=True, device=None):
    """The released VFIPS weights in eval mode, frozen, on `device` (CPU when None)."""
    state, path = weights.load_state_dict("vfips", weights_dir=weights_dir, allow_download=allow_download)
    model = checkpoints.load_strict(VFIPSNet(), state, path, hint="Expected a VFIPS multiscale_v33 checkpoint.")
    model.eval().requires_grad_(False)
    return model.to(torch.device("cpu") if device is None else device)
