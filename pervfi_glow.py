"""PerVFI's conditional Glow (3 blocks x K flow steps: ActNorm with data-dependent
initialisation, dense invertible 1x1 conv, conditional affine coupling) and its official NLL
normalisation, with the authors' parameter names.
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

GLOW_BLOCKS = 3        # pyramid levels = Glow blocks = squeezes, so frames are padded to 2**3
DEQUANT_LEVELS = 255.0  # dequantisation noise and constant of the official NLL


def squeeze2d(x):
    """Space-to-depth 2x2: channel c*4 + dy*2 + dx."""
    batch, channels, height, width = x.shape
    x = x.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(batch, channels * 4, height // 2, width // 2)


def unsqueeze2d(x):
    batch, channels, height, width = x.shape
    x = x.view(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(batch, channels // 4, height * 2, width * 2)


def summed_over_processes(tensor):
    """In a training process group (DDP), the sum over every process; otherwise the tensor itself."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def channel_mean_and_std(x):
    """Per-channel mean and (n - 1) std of an N C H W batch; under DDP, of the batches of all processes
    together, so that every replica starts from the same statistics. Two passes in float64."""
    flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    count = summed_over_processes(torch.tensor(float(flat.shape[1]), dtype=torch.float64, device=x.device))
    mean = summed_over_processes(flat.sum(1)) / count
    variance = summed_over_processes((flat - mean[:, None]).square().sum(1)) / (count - 1)
    return mean.float(), variance.sqrt().float()


def gaussian_log_p(x, mean, log_sd):
    return -0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (x - mean) ** 2 * torch.exp(-2 * log_sd)


class ActNorm(nn.Module):
    """y = (exp(logs) + 1e-8) (x + loc); log|det| = H W sum(logs) (one value for the batch).

    While `initialized` is 0, the first call (in either direction) sets loc = -mean and
    logs = log(1 / (std + 1e-6) + 1e-6) per channel from its input (under DDP, from the inputs of
    all processes: the official code lets each GPU start from its own batch, and the replicas then
    never agree). The inverse is
    x = y exp(-logs) - loc (it ignores the 1e-8, as the official code does).
    """

    def __init__(self, channels):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._flag_seen_set = None  # (flag, its version) when it last read 1

    @torch.no_grad()
    def initialize(self, x):
        mean, std = channel_mean_and_std(x)
        self.loc.copy_(-mean.view(1, -1, 1, 1))
        self.logs.copy_(torch.log(1 / (std + 1e-6) + 1e-6).view(1, -1, 1, 1))
        self.initialized.fill_(1)

    def needs_initialization(self):
        """Whether `initialized` is 0. Reading a CUDA flag is a host sync, and a PerVFI pass calls 51
        ActNorms, so a flag once read as 1 is trusted until it is replaced or changed in place (a
        load_state_dict, zero_(), .to() all change its identity or version)."""
        flag = self.initialized
        seen = self._flag_seen_set
        if not flag.is_inference() and seen is not None and seen[0] is flag and seen[1] == flag._version:
            return False
        if flag.item() == 0:
            return True
        self._flag_seen_set = None if flag.is_inference() else (flag, flag._version)
        return False

    def forward(self, x, reverse=False):
        if self.needs_initialization():
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


def bits_per_dim(nll, channels=3):
    """The official NLL (bits per pixel over all channels) in bits per dimension."""
    return nll / channels
