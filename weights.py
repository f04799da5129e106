"""Pretrained weights: one registry (name → URL, hash, file name), download-and-cache, offline use.

Files are looked up first in `--weights-dir` (for offline machines), then in the torch hub cache
(`torch.hub.get_dir()/checkpoints`), and only then downloaded (with a progress bar) into that
cache. A hash is checked whenever one is pinned: the full SHA-256, or the 8+ hex digit prefix
torch hub puts into its file names. Nothing is ever downloaded when `allow_download` is false,
which is how the tests and `--offline` runs work.
"""
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import checkpoints
from utils import ASVFIError


@dataclass(frozen=True)
class WeightSpec:
    filename: str
    url: str
    sha256: str = ""  # full digest or a prefix; empty = not pinned (the digest is printed on download)
    member: str = ""  # for archives: the file to extract from the downloaded zip
    about: str = ""


REGISTRY = {
    "alexnet": WeightSpec(
        "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79", about="torchvision ImageNet AlexNet (LPIPS trunk)"),
    "lpips_alex": WeightSpec(
        "lpips_v0.1_alex.pth",
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        about="LPIPS v0.1 lin layers for AlexNet"),
    "vgg19": WeightSpec(
        "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "dcbb9e9d", about="torchvision ImageNet VGG-19 (perceptual loss)"),
    "pwcnet": WeightSpec(
        "network-default.pytorch", "http://content.sniklaus.com/github/pytorch-pwc/network-default.pytorch",
        about="PWC-Net (sniklaus/pytorch-pwc network-default), the flow network of FloLPIPS"),
    "vfips": WeightSpec(
        "vfips_multiscale_v33.pytorch",
        "https://github.com/hqqxyy/VFIPS/raw/main/exp/eccv_ms_multiscale_v33/model.pytorch",
        about="VFIPS multiscale_v33 (ECCV 2022)"),
    "i3d": WeightSpec(
        "i3d_torchscript.pt", "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        about="I3D Kinetics-400 TorchScript detector used by StyleGAN-V for FVD"),
    "raft_things": WeightSpec(
        "raft-things.pth", "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
        member="models/raft-things.pth", about="RAFT trained on FlyingThings (princeton-vl/RAFT)"),
}


class WeightsUnavailable(ASVFIError):
    """Raised when a weight file is neither on disk nor downloadable; the message says how to fix it."""


def cache_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_hash(path, spec):
    if spec.sha256 and not _sha256(path).startswith(spec.sha256):
        raise WeightsUnavailable(
            f"{path}: SHA-256 does not start with {spec.sha256}; the file is corrupt or not "
            f"{spec.about}. Delete it and download it again from {spec.url}")


def _download(spec, target):
    """Download to a temp file with a progress bar, extract the archive member if any, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        raw = Path(tmp) / "download"
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(raw, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if spec.member:
            with zipfile.ZipFile(raw) as archive, archive.open(spec.member) as src, open(raw.with_suffix(".x"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw = raw.with_suffix(".x")
        _check_hash(raw, spec)
        if not spec.sha256:
            print(f"downloaded {spec.filename} (sha256 {_sha256(raw)}, not pinned in weights.REGISTRY)")
        os.replace(raw, target)


def locate(name, weights_dir=None, allow_download=True):
    """Path of weight file `name`: `weights_dir`, then the hub cache, then a download into the cache."""
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    candidates = ([Path(weights_dir) / spec.filename] if weights_dir else []) + [cache_dir() / spec.filename]
    for path in candidates:
        if path.is_file():
            _check_hash(path, spec)
            return path
    where = " or ".join(([f"{candidates[0]} (--weights-dir)"] if weights_dir else [])
                        + [str(candidates[-1])])
    if not allow_download:
        raise WeightsUnavailable(f"{spec.about}: file {spec.filename} not found; download {spec.url} "
                                 f"and put it at {where}")
    try:
        _download(spec, candidates[-1])
    except (OSError, zipfile.BadZipFile) as err:
        raise WeightsUnavailable(f"{spec.about}: could not download {spec.filename} from {spec.url} "
                                 f"({err}); on an offline machine put the file at {where}") from err
    return candidates[-1]


def load_state_dict(name, weights_dir=None, allow_download=True):
    """Tensors of a registered file (weights_only, wrapper and `module.` prefixes removed) and its path."""
    path = locate(name, weights_dir, allow_download)
    return checkpoints.load_state_dict(path), path
