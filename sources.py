"""What inference knows about an input before streaming it, and the warnings it owes the user.

A `Source` is a probed video file or a folder of frames: its rate, size, frame count, whether it
has sound, and whether it is truncated (decodes to well less than its header declares) or has a
variable frame rate. The functions here stream its frames with their times, read its audio, and
say, naming the file, what inference does about a short, silent, truncated or VFR input.
"""
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

import video_io
from utils import AUDIO_RATE, ASVFIError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class InputError(ASVFIError):
    """An input the protocol cannot use (too few frames, ...): reported, and the run goes on."""


# What a broken or unsupported input file raises; anything else is a bug and stops the run.
UNREADABLE_ERRORS = (OSError, ValueError, InputError, video_io.MediaError, av.error.FFmpegError)



@dataclass
class Source:
    """What inference needs to know about an input before streaming it."""
    path: Path
    fps: float
    n_frames: int
    width: int
    height: int
    has_audio: bool
    images: list = None  # the frame files of a folder input
    truncation: str = None  # why the file decodes to well less than it declares (VideoInfo.truncation)
    vfr_drift: float = None  # variable frame rate: the most its frames move (s) on the constant-rate output
    start_time: float = 0.0  # the first frame's time (s) on the file's timeline, where its audio starts at 0


def open_source(path, folder_fps=25.0):
    """Source of a video file (probed; raises on an unreadable file) or of a folder of frames."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        width, height = Image.open(images[0]).size
        return Source(path, folder_fps, len(images), width, height, False, images)
    info = video_io.probe(path)
    if info.n_frames < 1:
        raise InputError(f"{path}: no decodable video frames")
    times = video_io.frame_times(path)
    return Source(path, info.fps, info.n_frames, info.width, info.height, info.has_audio, truncation=info.truncation,
                  vfr_drift=video_io.constant_rate_drift(times, info.fps), start_time=float(times[0]))


def source_frames(source):
    """(frame uint8 HWC, time s) of every frame: stream times for a video, index/fps for a folder."""
    if source.images is not None:
        for index, file in enumerate(source.images):
            frame = np.asarray(Image.open(file).convert("RGB"))
            if frame.shape[:2] != (source.height, source.width):
                raise InputError(f"{file}: {frame.shape[1]}x{frame.shape[0]}, but the first frame is "
                                 f"{source.width}x{source.height}")
            yield frame, index / source.fps
        return
    times = video_io.frame_times(source.path)
    for index, frame in enumerate(video_io.iter_frames(source.path)):
        yield frame, float(times[index]) if index < len(times) else index / source.fps


def load_wave(source):
    """16 kHz mono audio of a video, or None with a warning: the output is then written without audio."""
    if source.images is not None:
        return None
    if not source.has_audio:
        warnings.warn(f"{source.path}: no audio stream; the output video is written without audio", stacklevel=2)
        return None
    try:
        wave = video_io.read_audio(source.path, AUDIO_RATE)
    except UNREADABLE_ERRORS as error:  # a broken soundtrack costs the sound, not the video
        wave, why = None, f"audio could not be decoded ({error})"
    else:
        why = "no decodable audio"
    if wave is None:
        warnings.warn(f"{source.path}: {why}; the output video is written without audio", stacklevel=2)
    else:
        warn_short_audio(source, wave)
    return wave


def warn_short_audio(source, wave):
    """A soundtrack that ends over a second before the last frame: the frames after its end are
    interpolated on silence, which an audio-guided model reads as a quiet scene."""
    audio_end, video_end = len(wave) / AUDIO_RATE - source.start_time, source.n_frames / source.fps
    if audio_end < video_end - 1.0:
        warnings.warn(f"{source.path}: the audio ends at {max(audio_end, 0.0):.2f} s, {video_end - audio_end:.2f} s "
                      f"before the last frame ({video_end:.2f} s); the frames after it are interpolated on "
                      f"silence", stacklevel=3)


def output_audio(source, wave):
    """VideoWriter's audio options for an output of `source` (none when `wave` is None): the source's
    own soundtrack from its first frame's time on, since the output starts at that frame (a file whose
    video starts after its audio, as a clip cut without re-encoding, keeps its sync), cut where
    `audio_cut` says."""
    if wave is None:
        return {}
    return {"audio_from": source.path, "audio_start": source.start_time, "audio_until": audio_cut(source, wave)}


def audio_cut(source, wave):
    """Where the output's audio ends (s from the first frame), with a warning, when the video part of the
    source is truncated or its audio runs well past the last frame: the output never plays sound over
    missing pictures. None when the source is complete."""
    video_end = source.n_frames / source.fps
    audio_end = 0.0 if wave is None else len(wave) / AUDIO_RATE - source.start_time
    if source.truncation:
        what = "; the audio is cut at the last frame" if wave is not None else ""
        warnings.warn(f"{source.path}: {source.truncation}: interpolating the {source.n_frames} frames that "
                      f"decode{what}", stacklevel=2)
    elif audio_end > video_end + 1.0:
        warnings.warn(f"{source.path}: the audio ({audio_end:.2f} s) runs {audio_end - video_end:.2f} s past "
                      f"the last frame ({video_end:.2f} s); it is cut at the last frame", stacklevel=2)
    else:
        return None
    return video_end


def warn_resampling(source):
    """Outputs are constant-rate: a variable-frame-rate source is said to be resampled, naming the file."""
    if source.vfr_drift is not None:
        warnings.warn(f"{source.path}: variable frame rate; the output is written at a constant "
                      f"{source.fps:g} fps (x scale), so frames move up to {source.vfr_drift * 1000:.0f} ms "
                      f"against the audio", stacklevel=2)


def resampling_setting(source):
    """The identity settings entry of a resampled variable-frame-rate source (empty otherwise)."""
    if source.vfr_drift is None:
        return {}
    return {"resampled_to_constant_fps": {"fps": source.fps, "max_drift_ms": round(source.vfr_drift * 1000, 1)}}


def check_length(source, needed=2):
    """A clear message for inputs too short to interpolate (`needed` frames: s+1 for the s× test protocol)."""
    if source.n_frames < 2:
        raise InputError(f"{source.path}: the video has only {source.n_frames} frame; "
                         f"interpolation needs at least 2 frames")
    if source.n_frames < needed:
        raise InputError(f"{source.path}: {source.n_frames} frames; the {needed - 1}x test protocol "
                         f"(inputs 0, {needed - 1}, ...) needs at least {needed}")
