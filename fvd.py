"""FVD: StyleGAN-V's I3D TorchScript features of 16-frame clips and the Fréchet distance between sets.

    value, reason, clips = fvd(detector, real_videos, fake_videos)   # videos (N, 3, H, W) in [0, 1]

The detector gets [-1, 1] clips already resized to 224x224 (rescale=False, resize=False);
statistics as StyleGAN-V (population covariance); clips are the consecutive non-overlapping
16-frame clips of each video. With few clips FVD is biased: the clip count is always reported.
"""
import warnings

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

import checkpoints
import weights

FVD_CLIP_FRAMES = 16
I3D_SIZE = 224


def load_i3d(weights_dir=None, allow_download=True, device=None):
    """StyleGAN-V's I3D (Kinetics-400) TorchScript detector; CheckpointError names a corrupt file."""
    path = weights.locate("i3d", weights_dir, allow_download)
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise checkpoints.CheckpointError(f"{path}: not a loadable TorchScript I3D detector ({first_line}); "
                                          f"delete it and download it again") from error


def i3d_clip(frames):
    """(T, 3, H, W) [0, 1] frames → (3, T, 224, 224) in [−1, 1], the detector's input layout.

    Bilinear resize (align_corners=False, no antialias) to 224x224, then 2x − 1, clamped because
    the interpolation weights can overshoot by an ulp. StyleGAN-V feeds uint8 videos with
    rescale=True, resize=True and lets the detector do both; we do them here and call it with
    rescale=False, resize=False, as the common PyTorch FVD ports of StyleGAN-V do.
    """
    resized = F.interpolate(frames.float(), size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    return (2 * resized - 1).clamp(-1, 1).permute(1, 0, 2, 3)


def i3d_features(detector, clips):
    """Features (B, D) float64 numpy of clips (B, 3, T, 224, 224), the pre-softmax logits."""
    with torch.no_grad():
        feats = detector(clips, rescale=False, resize=False, return_features=True)
    return feats.detach().double().cpu().numpy()


def clip_features(detector, clips, detector_input="float_resized"):
    """Features (B, D) of frame stacks (T, 3, H, W) in [0, 1] of one size.

    "float_resized": resized and mapped to [−1, 1] here (i3d_clip), rescale=False, resize=False;
    "uint8": 8-bit clips (B, 3, T, H, W), the detector rescales and resizes (StyleGAN-V's call).
    """
    if detector_input == "uint8":
        batch = torch.stack([torch.round(c.clamp(0, 1) * 255).to(torch.uint8).permute(1, 0, 2, 3) for c in clips])
        with torch.no_grad():
            feats = detector(batch, rescale=True, resize=True, return_features=True)
        return feats.detach().double().cpu().numpy()
    if detector_input != "float_resized":
        raise ValueError(f"unknown detector input {detector_input!r}; known: 'float_resized', 'uint8'")
    return i3d_features(detector, torch.stack([i3d_clip(c) for c in clips]))


def feature_stats(features):
    """Mean and covariance as StyleGAN-V computes them (population covariance, divisor N)."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    centred = features - mean
    return mean, centred.T @ centred / len(features)


def _sqrtm_of_product(sigma1, sigma2, eps):
    """sqrtm(Σ1 Σ2), checked: when scipy's result is not finite or does not square back to Σ1 Σ2
    (relative residual > 1e-6; singular products, e.g. from fewer clips than feature dimensions,
    can do that), it is recomputed with eps·I added to both covariances. Tiny imaginary parts
    (numerical noise of the Schur method) are discarded; large ones are an error."""
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "matrix is singular" is judged by the residual below
        root = scipy.linalg.sqrtm(product)
        scale = max(np.abs(product).max(), np.finfo(np.float64).tiny)
        if not np.isfinite(root).all() or np.abs(root @ root - product).max() > 1e-6 * scale:
            offset = np.eye(len(sigma1)) * eps
            root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        imaginary = np.abs(np.diagonal(root).imag).max()
        if imaginary > 1e-3:
            raise ValueError(f"FVD: the matrix square root has imaginary parts up to {imaginary:.3g}")
        root = root.real
    return root


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    root = _sqrtm_of_product(sigma1, sigma2, eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def fvd_from_features(real, fake):
    """FVD of two feature sets (N, D); (value or None, reason, N clips)."""
    count = min(len(real), len(fake))
    if count < 2:
        return None, f"FVD needs at least 2 clips of {FVD_CLIP_FRAMES} frames, got {count}", count
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return frechet_distance(*feature_stats(real), *feature_stats(fake)), "", count
