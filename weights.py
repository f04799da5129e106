"""Pretrained weights: one registry (name → URL, hash, file name), download-and-cache, offline use.

Files are looked up first in `--weights-dir` (for offline machines), then in the torch hub cache
(`torch.hub.get_dir()/checkpoints`), and only then downloaded (with a progress bar) into that
cache. Nothing is ever downloaded when `allow_download` is false or the environment sets
ASVFI_OFFLINE=1, which is how the tests and offline runs work.

How sure we are that a file is the authors' (`verification(name)`, for reports):
- "sha256": a full SHA-256 is pinned (computed from the file the authors' package ships);
- "sha256-prefix": only the 8-hex-digit prefix torch hub puts into the file name is known;
- "unverified": no published hash; a download is only checked for its format (a PyTorch file
  that loads with weights_only=True and holds the expected keys, or a TorchScript archive).
Every file, cached or downloaded, is rejected when it is an HTML page or its hash differs.
Downloads use HTTPS only, go to a temp file, are checked, then renamed into place.
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

import checkpoints
import utils

OFFLINE_ENV = "ASVFI_OFFLINE"


@dataclass(frozen=True)
class WeightSpec:
    filename: str
    url: str
    sha256: str = ""  # the full digest, when one can be known
    hub_prefix: str = ""  # torch hub's file-name prefix of the digest (only a partial check)
    member: str = ""  # for archives: the file to extract from the downloaded zip
    keys: tuple = ()  # keys a download must hold (format check of files without a full hash)
    torchscript: bool = False  # a TorchScript archive rather than a (weights_only) state dict
    about: str = ""


RAFT_KEYS = ("module.fnet.conv1.weight", "module.update_block.mask.2.weight")
REGISTRY = {
    "alexnet": WeightSpec(
        "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        hub_prefix="7be5be79", keys=("features.0.weight", "features.10.weight"),
        about="torchvision ImageNet AlexNet (LPIPS trunk)"),
    "lpips_alex": WeightSpec(  # sha256 of lpips/weights/v0.1/alex.pth in the lpips 0.1.4 wheel on PyPI
        "lpips_v0.1_alex.pth",
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        keys=("lin0.model.1.weight", "lin4.model.1.weight"), about="LPIPS v0.1 lin layers for AlexNet"),
    "vgg19": WeightSpec(
        "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        hub_prefix="dcbb9e9d", keys=("features.0.weight", "features.34.weight"),
        about="torchvision ImageNet VGG-19 (perceptual loss)"),
    "pwcnet": WeightSpec(
        "network-default.pytorch", "https://content.sniklaus.com/github/pytorch-pwc/network-default.pytorch",
        keys=("moduleExtractor.moduleOne.0.weight",),
        about="PWC-Net (sniklaus/pytorch-pwc network-default), the flow network of FloLPIPS"),
    "vfips": WeightSpec(
        "vfips_multiscale_v33.pytorch",
        "https://github.com/hqqxyy/VFIPS/raw/main/exp/eccv_ms_multiscale_v33/model.pytorch",
        about="VFIPS multiscale_v33 (ECCV 2022)"),
    "i3d": WeightSpec(
        "i3d_torchscript.pt", "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        torchscript=True, about="I3D Kinetics-400 TorchScript detector used by StyleGAN-V for FVD"),
    "raft_things": WeightSpec(  # princeton-vl/RAFT download_models.sh
        "raft-things.pth", "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
        member="models/raft-things.pth", keys=RAFT_KEYS, about="RAFT trained on FlyingThings (princeton-vl/RAFT)"),
    "raft_sintel": WeightSpec(
        "raft-sintel.pth", "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
        member="models/raft-sintel.pth", keys=RAFT_KEYS,
        about="RAFT fine-tuned on Sintel (princeton-vl/RAFT), PerVFI's flow estimator"),
    "pervfi_v00": WeightSpec(  # mulns/PerVFI README: "Default checkpoint ... trained only using Vimeo90K"
        "v00.pth", "https://huggingface.co/Mulns/PerVFI-v1-0/resolve/main/PerVFI/v00.pth",
        keys=("featurePyramid.netEncode.netOne.0.weight",), about="PerVFI v00 generator (CVPR 2024, Vimeo90K)"),
}


class WeightsUnavailable(checkpoints.CheckpointError):
    """A weight file that is neither on disk nor downloadable, or corrupt; the message says how to fix it."""


def cache_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def verification(name):
    """How a registered file is checked: "sha256", "sha256-prefix" or "unverified" (format only)."""
    spec = REGISTRY[name]
    return "sha256" if spec.sha256 else "sha256-prefix" if spec.hub_prefix else "unverified"


def offline():
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_html(path):
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))


def check_content(path, spec, source):
    """Reject an HTML page or a file whose hash differs; the message names source, file and hash."""
    if looks_like_html(path):
        raise WeightsUnavailable(f"{source}: {path} is an HTML page, not {spec.about}; delete it and download "
                                 f"{spec.filename} again from {spec.url}")
    expected = spec.sha256 or spec.hub_prefix
    if expected:
        actual = sha256_of(path)
        if not actual.startswith(expected):
            raise WeightsUnavailable(f"{source}: {path} has SHA-256 {actual}, expected {expected}"
                                     f"{'' if spec.sha256 else '...'} ({spec.about}); the file is corrupt or "
                                     f"another one: delete it and download {spec.filename} again from {spec.url}")


def check_readable(path, spec):
    """checkpoints.check_readable_file as a WeightsUnavailable: a folder or a file without read
    permission where `spec`'s file is looked for."""
    try:
        checkpoints.check_readable_file(path)
    except checkpoints.CheckpointError as error:
        raise WeightsUnavailable(f"{spec.about}: {error}") from None


def check_format(path, spec):
    """A download with no full hash must at least be what it claims: a loadable file with the keys."""
    if spec.torchscript:
        if not zipfile.is_zipfile(path):
            raise WeightsUnavailable(f"{spec.url}: the download is not a TorchScript archive ({spec.about})")
        return
    try:
        state = checkpoints.load_file(path)
    except checkpoints.CheckpointError as error:
        raise WeightsUnavailable(f"{spec.url}: the download is not {spec.about}: {error}") from None
    missing = [k for k in spec.keys if not (isinstance(state, dict) and k in state)]
    if missing:
        raise WeightsUnavailable(f"{spec.url}: the download is not {spec.about} (no {', '.join(missing)})")


def open_url(url):
    """The HTTP response of `url` (HTTPS only); the tests replace this with a local fake."""
    return urllib.request.urlopen(url, timeout=60)


def download(name, target):
    """Download to a temp file with a progress bar, extract the archive member, check, then rename."""
    spec = REGISTRY[name]
    if not spec.url.startswith("https://"):
        raise WeightsUnavailable(f"{spec.about}: refusing to download {spec.filename} over plain HTTP "
                                 f"({spec.url}); only https:// URLs are used")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        raw = Path(tmp) / "download"
        with open_url(spec.url) as response, open(raw, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with utils.progress(None, spec.filename, unit="B", total=total, unit_scale=True) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if looks_like_html(raw):
            raise WeightsUnavailable(f"{spec.url} returned an HTML page instead of {spec.filename}; "
                                     f"nothing was written to {target}")
        if spec.member:
            with zipfile.ZipFile(raw) as archive, archive.open(spec.member) as src, \
                    open(raw.with_suffix(".member"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw = raw.with_suffix(".member")
        check_content(raw, spec, spec.url)
        if not spec.sha256:
            check_format(raw, spec)
            print(f"downloaded {spec.filename}: sha256 {sha256_of(raw)} ({verification(name)}: no full "
                  f"published hash, checked for format only)")
        os.replace(raw, target)


def candidate_paths(name, weights_dir=None):
    """Where registered file `name` is looked for, in order: `weights_dir`, then the hub cache."""
    filename = REGISTRY[name].filename
    return ([Path(weights_dir) / filename] if weights_dir else []) + [cache_dir() / filename]


def on_disk(name, weights_dir=None):
    """Whether registered file `name` is already where `locate` looks (not checked, not downloaded)."""
    return any(path.is_file() for path in candidate_paths(name, weights_dir))


def locate(name, weights_dir=None, allow_download=True):
    """Path of weight file `name`: `weights_dir`, then the hub cache, then a download into the cache."""
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    candidates = candidate_paths(name, weights_dir)
    for path in candidates:
        if path.exists():
            check_readable(path, spec)
            check_content(path, spec, spec.about)
            return path
    where = " or ".join(([f"{candidates[0]} (--weights-dir)"] if weights_dir else [])
                        + [str(candidates[-1])])
    if not allow_download or offline():
        raise WeightsUnavailable(f"{spec.about}: file {spec.filename} not found; download {spec.url} "
                                 f"and put it at {where}")
    try:
        download(name, candidates[-1])
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise WeightsUnavailable(f"{spec.about}: could not download {spec.filename} from {spec.url} "
                                 f"({err}); on an offline machine put the file at {where}") from err
    return candidates[-1]


def load_state_dict(name, weights_dir=None, allow_download=True):
    """Tensors of a registered file (weights_only, wrapper and `module.` prefixes removed) and its path.

    A file that does not load (truncated, not a PyTorch file) raises WeightsUnavailable naming it."""
    path = locate(name, weights_dir, allow_download)
    try:
        return checkpoints.load_state_dict(path), path
    except WeightsUnavailable:
        raise
    except checkpoints.CheckpointError as error:
        raise WeightsUnavailable(f"{error}. Delete {path} and download {REGISTRY[name].filename} again from "
                                 f"{REGISTRY[name].url}") from None
