"""FVD's detector: StyleGAN-V's I3D TorchScript and the features of 16-frame clips.

    detector = load_i3d(weights_dir)
    features = clip_features(detector, clips)   # clips: (T, 3, H, W) in [0, 1] -> (B, D) float64

The detector gets [-1, 1] clips already resized to 224x224 (rescale=False, resize=False), or 8-bit
clips it rescales and resizes itself. Which clips, and the statistics and Fréchet distance over a
set, are a protocol's (protocols.fvd_clip_frames, protocols.fvd_from_features); metrics.FVDClips
gathers one video's clip features.
"""
import torch
import torch.nn.functional as F

import checkpoints
import weights

I3D_SIZE = 224
I3D_KEYWORDS = ("rescale", "resize", "return_features")  # what i3d_features and clip_features pass


def load_i3d(weights_dir=None, allow_download=True, device=None):
    """StyleGAN-V's I3D (Kinetics-400) TorchScript detector; CheckpointError names a corrupt file,
    or a TorchScript module that cannot be called as the detector is (the file has no known hash)."""
    path = weights.locate("i3d", weights_dir, allow_download)
    try:
        detector = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise checkpoints.CheckpointError(f"{path}: not a loadable TorchScript I3D detector ({first_line}); "
                                          f"delete it and download it again") from error
    check_i3d_call(detector, path)
    return detector


def check_i3d_call(detector, path):
    """A CheckpointError naming `path` when the module's forward lacks the detector's keywords: another
    TorchScript network would fail only at the first clip, with a traceback, after the other metrics ran."""
    schema = getattr(getattr(detector, "forward", None), "schema", None)
    accepted = {argument.name for argument in schema.arguments} if schema is not None else set()
    missing = [keyword for keyword in I3D_KEYWORDS if keyword not in accepted]
    if missing:
        raise checkpoints.CheckpointError(f"{path}: a TorchScript module whose forward takes no {', '.join(missing)}, "
                                          f"so not StyleGAN-V's I3D detector; delete it and download it again")


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
