"""LPIPS v0.1 (AlexNet) and the LPIPS building blocks VFIPS reuses: one copy of each.

    net = load_lpips(weights_dir)      # official alex.pth lin layers + torchvision AlexNet
    distance = net(ref, pred)          # (B,) for [0, 1] frames (B, 3, H, W); lower is better

ScalingLayer (the fixed input normalisation), LinLayer (the non-negative 1x1 layer weighting) and
unit_normalize (channel-wise L2 normalisation) are shared by LPIPS (metrics.py, FloLPIPS) and
VFIPS (vfips.py); the state dicts match lpips 0.1.4's and VFIPS' releases key for key.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

import weights
from utils import check_frame_pair


class ScalingLayer(nn.Module):
    """LPIPS' fixed input normalisation (shared by LPIPS and VFIPS), kept as two constant buffers so
    the state dicts match the references'. Works on (B, 3, H, W) frames and (B, T, 3, H, W) clips."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x):
        return (x - self.shift) / self.scale


def unit_normalize(features, eps=1e-10):
    """Divide by the channel-wise L2 norm (LPIPS's normalize_tensor)."""
    return features / (torch.sqrt(torch.sum(features ** 2, dim=1, keepdim=True)) + eps)


class LinLayer(nn.Module):
    """LPIPS' learned non-negative 1x1 weighting of one layer to one channel, no bias (shared by
    LPIPS and VFIPS). Position 0 holds the originals' Dropout (active only in training); an identity
    there keeps the checkpoint key `model.1.weight` and makes the score deterministic even if the
    caller forgets `eval()`."""

    def __init__(self, channels):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


LPIPS_CHANNELS = (64, 192, 384, 256, 256)
# (slice, torchvision `features` index) of the five AlexNet convolutions LPIPS taps after their ReLU.
ALEXNET_CONVS = ((1, 0), (2, 3), (3, 6), (4, 8), (5, 10))


def _numbered(*layers):
    """nn.Sequential whose children keep torchvision's `features` indices as names."""
    return nn.Sequential(OrderedDict((str(index), layer) for index, layer in layers))


class AlexNetTaps(nn.Module):
    """torchvision AlexNet `features` cut into lpips' five slices (relu1 … relu5 outputs)."""

    def __init__(self):
        super().__init__()
        self.slice1 = _numbered((0, nn.Conv2d(3, 64, 11, stride=4, padding=2)), (1, nn.ReLU()))
        self.slice2 = _numbered((2, nn.MaxPool2d(3, 2)), (3, nn.Conv2d(64, 192, 5, padding=2)), (4, nn.ReLU()))
        self.slice3 = _numbered((5, nn.MaxPool2d(3, 2)), (6, nn.Conv2d(192, 384, 3, padding=1)), (7, nn.ReLU()))
        self.slice4 = _numbered((8, nn.Conv2d(384, 256, 3, padding=1)), (9, nn.ReLU()))
        self.slice5 = _numbered((10, nn.Conv2d(256, 256, 3, padding=1)), (11, nn.ReLU()))

    def forward(self, x):
        taps = []
        for block in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = block(x)
            taps.append(x)
        return taps


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk; state dict identical to `lpips.LPIPS(net='alex')`.

    Its 22 entries: the two ScalingLayer constants, `net.sliceK.J.*` (torchvision `features.J`),
    `linK.model.1.weight` and the same five Parameters again as `lins.K.model.1.weight` (lpips
    registers the lin layers twice). Inputs are [0, 1] frames (lpips' `normalize=True`).
    """

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = AlexNetTaps()
        for k, channels in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{k}", LinLayer(channels))
        self.lins = nn.ModuleList([getattr(self, f"lin{k}") for k in range(len(LPIPS_CHANNELS))])
        self.requires_grad_(False)
        self.eval()

    def features(self, frames):
        return self.net(self.scaling_layer(2 * frames - 1))

    def layer_maps(self, ref, pred):
        """Per-layer distance maps (B, 1, h_k, w_k) at each layer's native resolution."""
        check_frame_pair(ref, pred, "LPIPS")
        pairs = zip(self.features(ref), self.features(pred), self.lins)
        return [lin((unit_normalize(a) - unit_normalize(b)) ** 2) for a, b, lin in pairs]

    def per_layer(self, ref, pred):
        """Spatial mean of each layer map, (B, 5)."""
        return torch.cat([m.mean(dim=(2, 3)) for m in self.layer_maps(ref, pred)], 1)

    def spatial(self, ref, pred):
        """(B, 1, H, W) map: each layer map upsampled bilinearly to the frame size, then summed."""
        size = ref.shape[-2:]
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in self.layer_maps(ref, pred)]
        return sum(maps[1:], maps[0])

    def forward(self, ref, pred):
        """LPIPS distance per frame pair, (B,): Σ_k mean_{y,x} map_k (lower is better)."""
        means = [m.mean(dim=(2, 3)) for m in self.layer_maps(ref, pred)]
        return sum(means[1:], means[0])[:, 0]


def official_lpips_state(model, alexnet_state, lin_state):
    """Map torchvision's AlexNet (`features.J.*`) and lpips' `alex.pth` (`linK.model.1.weight`)
    onto an LPIPS state dict; a missing or misshaped tensor is a clear error."""
    state = model.state_dict()
    sources = {}
    for slice_index, feature_index in ALEXNET_CONVS:
        for kind in ("weight", "bias"):
            sources[f"net.slice{slice_index}.{feature_index}.{kind}"] = ("AlexNet", alexnet_state,
                                                                         f"features.{feature_index}.{kind}")
    for k in range(len(LPIPS_CHANNELS)):
        for prefix in (f"lin{k}", f"lins.{k}"):
            sources[f"{prefix}.model.1.weight"] = ("LPIPS alex.pth", lin_state, f"lin{k}.model.1.weight")
    for key, (what, source, source_key) in sources.items():
        if source_key not in source:
            raise ValueError(f"{what} weights: key {source_key!r} missing (has {len(source)} keys, "
                             f"e.g. {list(source)[:3]})")
        if tuple(source[source_key].shape) != tuple(state[key].shape):
            raise ValueError(f"{what} weights: {source_key!r} has shape {tuple(source[source_key].shape)}, "
                             f"expected {tuple(state[key].shape)}")
        state[key] = source[source_key]
    return state


def load_lpips(weights_dir=None, allow_download=True, device=None):
    """LPIPS with the official weights (raises weights.WeightsUnavailable when they cannot be had)."""
    model = LPIPS()
    alexnet, _ = weights.load_state_dict("alexnet", weights_dir, allow_download)
    lins, _ = weights.load_state_dict("lpips_alex", weights_dir, allow_download)
    model.load_state_dict(official_lpips_state(model, alexnet, lins))
    return model.to(device)
