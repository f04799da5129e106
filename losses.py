"""Training losses from FLAVR-style strings: `'1*L1'`, `'1*L1+0.1*Lap'`, `'1*NLL+0.1*PerVFILap+0.2*VGG'`.

A string is a sum of `weight*Term` parts (a bare `Term` has weight 1). Terms compare the model's
`out["pred"]` (B, n, 3, H, W) with the target frames of the same shape, except NLL which reads
the model's own `out["nll"]` (PerVFI's official NLL, `pervfi.official_nll`):

    L1           mean |pred - target|
    MSE          mean (pred - target)^2
    Charbonnier  mean sqrt((pred - target)^2 + eps^2), eps = 1e-3
    Lap          Laplacian-pyramid L1: sum over the 5 band levels and the low-pass residual of
                 mean |level(pred) - level(target)|
    PerVFILap    PerVFI's official Laplacian loss (`pervfi_laplacian_loss`): the same 5 band levels, their
                 mean, no residual
    SSIM         1 - SSIM (Gaussian window, sigma 1.5; metrics.py's definition)
    VGG          perceptual: weighted L1 between ImageNet VGG-19 activations (relu1_1 .. relu5_1)
    NLL          mean of out["nll"]

`build_criterion(spec)` parses once and returns a callable `(out, target) -> (total, terms)`, where
`total` is the weighted sum (a tensor to backpropagate) and `terms` maps each term name to its
unweighted value as a float, for logging.
"""
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

import checkpoints
import metrics
import weights

CHARBONNIER_EPS = 1e-3
LAPLACIAN_LEVELS = 5

# VGG-19 `features` as torchvision numbers them: conv channel counts, "M" = max-pool. Each conv
# is followed by a ReLU, so conv k sits at an index that counts convs, ReLUs and pools before it.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Perceptual layers (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1) and their weights: the
# widely used VFI perceptual loss (also PerVFI's), which balances the layers' typical magnitudes.
VGG_LAYERS = (1, 6, 11, 20, 29)
VGG_LAYER_WEIGHTS = (0.1 / 2.6, 0.1 / 4.8, 0.1 / 3.7, 0.1 / 5.6, 1.0 / 1.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_PART = re.compile(rf"^(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z][A-Za-z0-9]*)$")


# ----------------------------------------------------------------------------- frames
def as_images(x):
    """(B, n, 3, H, W) or (B, 3, H, W) → (B·n, 3, H, W): image terms work per frame."""
    return x.reshape(-1, *x.shape[-3:]) if x.dim() == 5 else x


def _check_same_shape(pred, target, name):
    if pred.shape != target.shape:
        raise ValueError(f"loss {name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")


# ----------------------------------------------------------------------------- pixel terms
def l1_loss(pred, target):
    return (pred - target).abs().mean()


def mse_loss(pred, target):
    return (pred - target).pow(2).mean()


def charbonnier_loss(pred, target, eps=CHARBONNIER_EPS):
    """A smooth L1: quadratic below eps, so its gradient stays finite at zero error."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


# ----------------------------------------------------------------------------- Laplacian pyramid
def gaussian_kernel_5x5(channels, device, dtype):
    """Binomial [1 4 6 4 1]/16 outer product, one copy per channel for a depthwise conv."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype) / 16
    return torch.outer(taps, taps).expand(channels, 1, 5, 5).contiguous()


def _blur(x, kernel):
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def _upsample(x, kernel, size):
    """Zero-insertion ×2 then blur with 4× the kernel, which keeps a constant image constant."""
    b, c, h, w = x.shape
    up = torch.zeros(b, c, 2 * h, 2 * w, device=x.device, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4 * kernel)[:, :, :size[0], :size[1]]


def laplacian_pyramid(images, levels=LAPLACIAN_LEVELS):
    """Band-pass levels (finest first) plus the low-pass residual; they sum back to the image.

    Levels stop early on small images (the 5x5 blur needs at least 3 pixels per side).
    """
    kernel = gaussian_kernel_5x5(images.shape[1], images.device, images.dtype)
    bands, current = [], images
    for _ in range(levels):
        if min(current.shape[-2:]) < 3:
            break
        down = _blur(current, kernel)[:, :, ::2, ::2]
        bands.append(current - _upsample(down, kernel, current.shape[-2:]))
        current = down
    return bands + [current]


def laplacian_loss(pred, target):
    """L1 per pyramid level, summed. The residual is included so a global offset is not free."""
    diff = as_images(pred) - as_images(target)  # the pyramid is linear
    return sum(level.abs().mean() for level in laplacian_pyramid(diff))


def pervfi_laplacian_loss(pred, target, levels=LAPLACIAN_LEVELS):
    """PerVFI's LapLoss (src/train/loss.py, max_levels=5): the mean over `levels` band levels of
    mean |band(pred) - band(target)|, without the residual. Bands of `laplacian_pyramid` (5x5
    binomial blur /256, reflect padding, zero-insertion upsampling). On images too small for five
    levels (where the official reflect padding fails) the bands stop early and odd sizes crop the
    upsampled level; the sum is still divided by `levels`. Accepts (B, 3, H, W) or (B, n, 3, H, W)."""
    bands = laplacian_pyramid(as_images(pred) - as_images(target), levels)[:-1]  # the pyramid is linear
    return sum(band.abs().mean() for band in bands) / levels


# ----------------------------------------------------------------------------- SSIM
def ssim_loss(pred, target):
    """1 - SSIM with metrics.ssim (the evaluation's definition; differentiable), per frame then mean."""
    return 1 - metrics.ssim(as_images(pred), as_images(target)).mean().to(pred.dtype)


# ----------------------------------------------------------------------------- VGG perceptual
class VGG19Features(nn.Module):
    """VGG-19 `features` up to relu5_1, with torchvision's module indices so that
    `features.N.weight` keys of the ImageNet checkpoint load directly."""

    def __init__(self, last_layer=VGG_LAYERS[-1]):
        super().__init__()
        layers, in_channels = [], 3
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                in_channels = item
        self.features = nn.Sequential(*layers[:last_layer + 1])

    def forward(self, x, taps=VGG_LAYERS):
        """Activations after the layers in `taps`."""
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                outputs.append(x)
        return outputs


def load_vgg19_features(weights_dir=None, allow_download=True):
    """Frozen ImageNet VGG-19 features; weights.WeightsUnavailable names the file when offline."""
    state, path = weights.load_state_dict("vgg19", weights_dir, allow_download)
    net = VGG19Features()
    wanted = net.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise checkpoints.CheckpointError(f"{path}: not a torchvision VGG-19 checkpoint "
                                          f"(missing {', '.join(missing[:4])} ...)")
    net.load_state_dict({k: state[k] for k in wanted})
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG-19 activations of prediction and target (ImageNet-normalised)."""

    def __init__(self, vgg):
        super().__init__()
        self.vgg = vgg
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, pred, target):
        self.to(pred.device)
        x = (as_images(pred) - self.mean) / self.std
        y = (as_images(target) - self.mean) / self.std
        features = self.vgg(torch.cat([x, y]))
        return sum(w * (f[:len(x)] - f[len(x):].detach()).abs().mean()
                   for w, f in zip(VGG_LAYER_WEIGHTS, features))


# ----------------------------------------------------------------------------- NLL
def nll_term(out):
    if "nll" not in out:
        raise ValueError("loss term NLL needs out['nll'] (PerVFI's NLL) from the model; this model "
                         "did not return it (only PerVFI does, when given the target)")
    return out["nll"].mean()


# ----------------------------------------------------------------------------- parser
PIXEL_TERMS = {
    "L1": l1_loss,
    "MSE": mse_loss,
    "Charbonnier": charbonnier_loss,
    "Lap": laplacian_loss,
    "PerVFILap": pervfi_laplacian_loss,
    "SSIM": ssim_loss,
}
TERM_NAMES = (*PIXEL_TERMS, "VGG", "NLL")


def parse_loss_spec(spec):
    """`'1*L1+0.1*Lap'` → [(1.0, 'L1'), (0.1, 'Lap')]; ValueError naming the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty loss string {spec!r}; expected e.g. '1*L1+0.1*Lap'")
    parsed, seen = [], set()
    for part in spec.split("+"):
        match = _PART.match(part.strip())
        if not match:
            raise ValueError(f"loss string {spec!r}: cannot parse {part.strip()!r}; expected 'weight*Term' "
                             f"such as '0.1*Lap' (terms: {', '.join(TERM_NAMES)})")
        name = match["name"]
        if name not in TERM_NAMES:
            raise ValueError(f"loss string {spec!r}: unknown term {name!r}; known terms: {', '.join(TERM_NAMES)}")
        if name in seen:
            raise ValueError(f"loss string {spec!r}: term {name} appears twice")
        weight = float(match["weight"]) if match["weight"] is not None else 1.0
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"loss string {spec!r}: weight of {name} must be a positive number, got {weight}")
        seen.add(name)
        parsed.append((weight, name))
    return parsed


class Criterion:
    """The weighted sum of a parsed loss string; see the module docstring."""

    def __init__(self, spec, weights_dir=None, allow_download=True):
        self.spec = spec
        self.terms = parse_loss_spec(spec)
        needs_vgg = any(name == "VGG" for _, name in self.terms)
        self.perceptual = PerceptualLoss(load_vgg19_features(weights_dir, allow_download)) if needs_vgg else None

    @property
    def names(self):
        return [name for _, name in self.terms]

    def term(self, name, out, target):
        if name == "NLL":
            return nll_term(out)
        pred = out["pred"]
        _check_same_shape(pred, target, name)
        if name == "VGG":
            return self.perceptual(pred, target)
        return PIXEL_TERMS[name](pred, target)

    def __call__(self, out, target):
        total, values = 0.0, {}
        for weight, name in self.terms:
            value = self.term(name, out, target)
            total = total + weight * value
            values[name] = float(value.detach())
        return total, values


def build_criterion(spec, weights_dir=None, allow_download=True):
    """Parse `spec` once (errors before any training) and load what its terms need."""
    return Criterion(spec, weights_dir, allow_download)
