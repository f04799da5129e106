"""Shared helpers: run names and output paths, atomic writes, device choice.

Video/audio I/O (PyAV), the data-preparation CLI (`python utils.py prepare`) and the demo data
generator (`python utils.py make-demo`) live here too.
"""
import argparse
import fractions
import functools
import json
import os
import re
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

# Model names as they appear in output folders and report names.
DISPLAY_NAMES = {"asvfi": "ASVFI", "pervfi": "PerVFI", "repeat": "Repeat", "blend": "Blend", "dis": "DIS"}
TRAINED_MODELS = ("asvfi", "pervfi")


# ----------------------------------------------------------------------------- run names and paths
def run_name(optimizer, lr, tag=None):
    """`<optimizer>_<lr>` with the learning rate exactly as typed (`6e-4` stays `6e-4`)."""
    name = f"{optimizer}_{lr}"
    return f"{name}_{tag}" if tag else name


def dataset_paths(data_root, dataset):
    """(video folder, split CSV, audio cache folder) of `--dataset {ucf101,demo}` under data_root."""
    root = Path(data_root)
    folder = {"ucf101": "UCF-101", "demo": "demo"}[dataset]
    return root / folder, root / f"{folder}_split.csv", root / f"{folder}_audio16k"


def weights_dir(model):
    return Path("weights") / model


def checkpoint_path(model, run, epoch=0):
    """Latest checkpoint of a run (epoch 0) or its epoch-N snapshot."""
    suffix = f"_epoch{epoch}" if epoch else ""
    return weights_dir(model) / f"{run}{suffix}.pth"


def generated_run(model, optimizer, lr, tag=None, epoch=0, weights=None):
    """Run part of the folder and report of a checkpoint's frames: the checkpoint file's stem
    (`adamw_6e-4`, `adamw_6e-4_epoch5`, or the stem of `--weights`), so frames of different
    checkpoints never mix; None for the training-free baselines."""
    if model not in TRAINED_MODELS:
        return None
    return Path(weights).stem if weights else checkpoint_path(model, run_name(optimizer, lr, tag), epoch).stem


def best_checkpoint_path(model):
    return weights_dir(model) / f"best_{model}.pth"


def output_dir(data_root, model, scale, run=None):
    """Generated frames of a model: `{data_root}/<Model>/scale/<s>_<run>`; baselines have no run."""
    tail = f"{scale}_{run}" if run else f"{scale}"
    return Path(data_root) / DISPLAY_NAMES[model] / "scale" / tail


def gt_dir(data_root, scale):
    return Path(data_root) / "GT" / "scale" / str(scale)


def eval_csv_path(model, run, scale):
    """`evals/<Model>_<run>.csv` (the scale is appended so 2x and 4x reports do not mix)."""
    name = f"{DISPLAY_NAMES[model]}_{run}" if run else DISPLAY_NAMES[model]
    return Path("evals") / f"{name}_s{scale}.csv"


# ----------------------------------------------------------------------------- atomic writes
def atomic_write(path, write):
    """Write through a temp file in the same folder and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_torch_save(obj, path):
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path, text):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


AUDIO_RATE = 16000  # every waveform the models see (and the prepare cache) is 16 kHz mono


# ----------------------------------------------------------------------------- devices
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, amp):
    """Mixed precision for `--amp bf16|fp16` on CUDA; a no-op without --amp or on another device."""
    return torch.autocast(device.type, dtype=AMP_DTYPES.get(amp, torch.bfloat16),
                          enabled=bool(amp) and device.type == "cuda")


def pick_device(name=None):
    """`--device` value → torch.device; default CUDA when present."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


# ----------------------------------------------------------------------------- video/audio I/O (PyAV)
# Frames are identified by their index in the decoder's output order; frame times and audio samples
# live on the container's timeline (seconds), so frame k and audio sample n = round(t_k * rate) coincide.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
_DISPLAY_SIZE_TAG = "asvfi-display-size="


@dataclass
class VideoInfo:
    """What `prepare` and the datasets need to know about a video file."""
    fps: float
    n_frames: int
    width: int
    height: int
    duration: float
    has_audio: bool
    audio_rate: int
    audio_channels: int


@dataclass(frozen=True)
class _FrameIndex:
    """One decode pass over a video without pixel conversion: per-frame pts, key frames, size."""
    pts: tuple
    keyframe: tuple
    time_base: fractions.Fraction
    fps: float
    start_time: float
    width: int
    height: int

    @functools.cached_property
    def pts_monotonic(self):
        """Frame pts usable as timestamps and seek targets (present and strictly increasing)."""
        return all(p is not None for p in self.pts) and all(a < b for a, b in zip(self.pts, self.pts[1:]))

    @functools.cached_property
    def position(self):
        """pts → frame index (meaningful when pts_monotonic)."""
        return {pts: i for i, pts in enumerate(self.pts)}


def _open(path):
    """Open a media file; errors name the file (PyAV's own messages often do not)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        reason = getattr(err, "strerror", None) or err
        raise ValueError(f"{path}: cannot open as a video/audio file ({reason})") from err


def _video_stream(container, path):
    if not container.streams.video:
        raise ValueError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return stream


def _stream_fps(stream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _display_size(container, stream):
    """(width, height) to show: odd sizes written by VideoWriter are stored padded to even plus a tag."""
    tag = container.metadata.get("comment", "")
    if tag.startswith(_DISPLAY_SIZE_TAG):
        width, height = tag[len(_DISPLAY_SIZE_TAG):].split("x")
        return int(width), int(height)
    return stream.codec_context.width, stream.codec_context.height


def _decode_packets(container, stream):
    """Decoded frames of one stream; a corrupt packet costs its own frame(s), not the rest of the file."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            return  # the demuxer cannot go on (truncated or garbled file): keep what decoded so far
        try:
            frames = packet.decode()
        except av.error.FFmpegError:  # InvalidDataError and kin: drop this packet only
            continue
        yield from frames


def _to_rgb(frame, size):
    rgb = frame.to_ndarray(format="rgb24")
    width, height = size
    return rgb[:height, :width] if rgb.shape[:2] != (height, width) else rgb


def _file_key(path):
    """Identifies one version of a file; the inode changes when a file is replaced by a rename."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def _frame_index(path):
    """Cached per file version: the decode pass is done once per process, not once per read."""
    return _scan_video(*_file_key(path))


@functools.lru_cache(maxsize=512)
def _scan_video(path, size, mtime_ns, inode):
    with _open(path) as container:
        stream = _video_stream(container, path)
        width, height = _display_size(container, stream)
        pts, keyframe = [], []
        for frame in _decode_packets(container, stream):
            pts.append(frame.pts)
            keyframe.append(bool(frame.key_frame))
        start = stream.start_time * stream.time_base if stream.start_time is not None else 0.0
        return _FrameIndex(tuple(pts), tuple(keyframe), stream.time_base, _stream_fps(stream),
                           float(start), width, height)


def probe(path):
    """VideoInfo of a file. n_frames counts what actually decodes (header counts can be wrong)."""
    index = _frame_index(path)
    audio_rate = audio_channels = 0
    with _open(path) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_rate = audio.codec_context.sample_rate or audio.rate or 0
            audio_channels = audio.codec_context.channels or 0
    n_frames = len(index.pts)
    return VideoInfo(fps=index.fps, n_frames=n_frames, width=index.width, height=index.height,
                     duration=n_frames / index.fps, has_audio=audio_rate > 0, audio_rate=int(audio_rate),
                     audio_channels=int(audio_channels))


def frame_times(path):
    """Time (s, container timeline) of each frame: stream pts where monotonic, else start + index/fps."""
    index = _frame_index(path)
    if index.pts and index.pts_monotonic:
        return np.array(index.pts, dtype=np.float64) * float(index.time_base)
    return index.start_time + np.arange(len(index.pts), dtype=np.float64) / index.fps


def iter_frames(path):
    """Stream (H, W, 3) uint8 RGB frames in decode order without holding the video in memory."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        size = _display_size(container, stream)
        for frame in _decode_packets(container, stream):
            yield _to_rgb(frame, size)


def read_frames(path, start, stop):
    """Frames [start, stop) as (N, H, W, 3) uint8, decoding from the key frame before `start` only.

    Frames after a seek are placed by their pts in the file's frame index; files whose pts are missing
    or non-monotonic (some AVIs) are decoded from the beginning, counting frames, instead.
    """
    index = _frame_index(path)
    if not 0 <= start < stop <= len(index.pts):
        raise ValueError(f"{path}: frames [{start}, {stop}) requested but the video has {len(index.pts)} frames")
    frames = _read_by_seeking(path, index, start, stop) if start > 0 and index.pts_monotonic else None
    if frames is None:
        frames = _read_sequentially(path, index, start, stop)
    return np.stack(frames)


def _read_by_seeking(path, index, start, stop):
    """Seek to the last key frame at or before `start`; None when the decoder lands elsewhere."""
    keyframes = [i for i in range(start + 1) if index.keyframe[i]]
    seek_pts = index.pts[keyframes[-1]] if keyframes else index.pts[0]
    wanted = {}
    with _open(path) as container:
        stream = _video_stream(container, path)
        container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        for frame in _decode_packets(container, stream):
            i = index.position.get(frame.pts)
            if i is None:
                continue
            if i > start and not wanted:
                return None  # landed after the first wanted frame
            if start <= i < stop:
                wanted[i] = _to_rgb(frame, (index.width, index.height))
            if i >= stop - 1:
                break
    if len(wanted) != stop - start:
        return None
    return [wanted[i] for i in range(start, stop)]


def _read_sequentially(path, index, start, stop):
    frames = []
    with _open(path) as container:
        stream = _video_stream(container, path)
        for i, frame in enumerate(_decode_packets(container, stream)):
            if i >= start:
                frames.append(_to_rgb(frame, (index.width, index.height)))
            if i >= stop - 1:
                break
    if len(frames) != stop - start:
        raise ValueError(f"{path}: only {start + len(frames)} frames decode, [{start}, {stop}) requested")
    return frames


def _decode_audio(path, rate=None, layout=None):
    """(channels, T) float32 resampled waveform and its rate, sample n at container time n/rate.

    Audio that starts before 0 (encoder priming) is trimmed, audio that starts later is zero-padded,
    gaps left by corrupt packets are zero-filled. None when the file has no (decodable) audio.
    """
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = rate or stream.codec_context.sample_rate
        channels = stream.codec_context.channels or 1
        layout = layout or ("mono" if channels == 1 else "stereo")
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks, cursor = [], None
        for frame in _chain_flush(_decode_packets(container, stream)):
            for out in resampler.resample(frame):
                samples = out.to_ndarray().astype(np.float32, copy=False)
                if cursor is None:
                    t0 = float(out.pts * out.time_base) if out.pts is not None else 0.0
                    cursor = int(round(t0 * rate))
                elif out.pts is not None:
                    expected = int(round(float(out.pts * out.time_base) * rate))
                    if expected - cursor > 1:  # a hole left by a dropped packet
                        chunks.append(np.zeros((samples.shape[0], expected - cursor), np.float32))
                        cursor = expected
                chunks.append(samples)
                cursor += samples.shape[1]
    if not chunks:
        return None
    wave = np.concatenate(chunks, axis=1)
    first = cursor - wave.shape[1]
    if first > 0:
        wave = np.concatenate([np.zeros((wave.shape[0], first), np.float32), wave], axis=1)
    elif first < 0:
        wave = wave[:, -first:]
    return np.ascontiguousarray(wave), rate


def _chain_flush(frames):
    """Decoded audio frames followed by None, which flushes the resampler's buffered tail."""
    yield from frames
    yield None


def read_audio(path, rate=AUDIO_RATE):
    """Mono float32 waveform at `rate`, sample n at time n/rate on the container's timeline.

    Returns None when the file has no audio stream (or none of its audio decodes); callers treat that
    as silence with has_audio=False.
    """
    decoded = _decode_audio(path, rate=rate, layout="mono")
    return None if decoded is None else decoded[0][0]


def _as_channels_first(wave):
    """(T,), (C, T) or (T, C) with C <= 2 → float32 (C, T)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 1:
        return wave[None]
    if wave.ndim == 2 and wave.shape[0] > 2 and wave.shape[1] <= 2:
        return np.ascontiguousarray(wave.T)
    if wave.ndim == 2 and wave.shape[0] <= 2:
        return wave
    raise ValueError(f"audio waveform must be (T,), (C, T) or (T, C) with C <= 2, got shape {wave.shape}")


class VideoWriter:
    """Write RGB uint8 frames (and an audio track) to a video file, atomically on close.

    Codecs follow the extension: .mp4/.mov/.mkv → H.264 (libx264, yuv420p) + AAC; .avi → MPEG-4 part 2
    (as UCF-101's xvid files) + 16-bit PCM. 4:2:0 video cannot hold odd sizes: odd frames are padded
    by one replicated edge row/column and the real size is stored in the container's comment tag,
    which `probe`/`read_frames`/`iter_frames` honour (other players show the extra edge line).
    Audio: `audio=(waveform, rate)` with waveform (T,) or (C, T), or `audio_from=path` to re-encode
    another file's audio (nothing is added when that file has none). Sample n plays at n/rate, frame k
    at k/fps.
    """

    def __init__(self, path, fps, width, height, audio=None, audio_from=None, gop=12, quality=18):
        if audio is not None and audio_from is not None:
            raise ValueError(f"{path}: give either audio=(waveform, rate) or audio_from=path, not both")
        self.path = Path(path)
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self.size = (int(width), int(height))
        self.gop, self.quality = gop, quality
        if audio_from is not None:
            decoded = _decode_audio(audio_from)
            audio = None if decoded is None else decoded
        self.audio = None if audio is None else (_as_channels_first(audio[0]), int(audio[1]))
        self.container = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=self.path.suffix)
        os.close(fd)
        fmt = {".mkv": "matroska", ".mov": "mov", ".avi": "avi"}.get(self.path.suffix.lower(), "mp4")
        self.container = av.open(self._tmp, "w", format=fmt)
        avi = fmt == "avi"
        width, height = self.size
        if width % 2 or height % 2:
            self.container.metadata["comment"] = f"{_DISPLAY_SIZE_TAG}{width}x{height}"
        self.video = self.container.add_stream("mpeg4" if avi else "libx264", rate=self.fps)
        self.video.width, self.video.height = width + width % 2, height + height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.gop_size = self.gop
        self.video.codec_context.time_base = 1 / self.fps
        if avi:  # quantiser 2..31 (2 best); single thread keeps the bytes deterministic
            self.video.options = {"flags": "+qscale", "global_quality": str(max(2, self.quality // 6) * 118)}
            self.video.codec_context.thread_count = 1
        else:
            self.video.options = {"crf": str(self.quality), "preset": "fast"}
        self.frames_written = 0
        self.audio_written = 0
        if self.audio is not None:
            wave, rate = self.audio
            self.audio_stream = self.container.add_stream("pcm_s16le" if avi else "aac", rate=rate)
            self.audio_stream.layout = "mono" if wave.shape[0] == 1 else "stereo"
        return self

    def write(self, frame):
        """Append one (H, W, 3) uint8 RGB frame of the size given at construction."""
        frame = np.asarray(frame)
        width, height = self.size
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: frame must be uint8 ({height}, {width}, 3), "
                             f"got {frame.dtype} {frame.shape}")
        if width % 2 or height % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        self.container.mux(self.video.encode(video_frame))
        self.frames_written += 1
        self._write_audio_until(self.frames_written / self.fps)

    def _write_audio_until(self, seconds):
        """Encode audio up to the current video time so the file interleaves both streams."""
        if self.audio is None:
            return
        wave, rate = self.audio
        end = wave.shape[1] if seconds is None else min(wave.shape[1], int(seconds * rate))
        chunk = self.audio_stream.codec_context.frame_size or 1024
        is_pcm = self.audio_stream.codec_context.name.startswith("pcm")
        while self.audio_written + (1 if seconds is None else chunk) <= end:
            piece = wave[:, self.audio_written:self.audio_written + chunk]
            if is_pcm:
                samples = (np.clip(piece, -1, 1) * 32767).round().astype(np.int16)
                packed = samples.T.reshape(1, -1)
                audio_frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=self.audio_stream.layout.name)
            else:
                audio_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp",
                                                         layout=self.audio_stream.layout.name)
            audio_frame.sample_rate = rate
            audio_frame.pts = self.audio_written
            self.container.mux(self.audio_stream.encode(audio_frame))
            self.audio_written += piece.shape[1]

    def close(self):
        self._write_audio_until(None)
        self.container.mux(self.video.encode())
        if self.audio is not None:
            self.container.mux(self.audio_stream.encode())
        self.container.close()
        os.replace(self._tmp, self.path)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        try:
            self.container.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)


def write_png_frames(folder, frames, start=0):
    """Lossless `frame_%05d.png` files numbered from `start`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames, start=start):
        path = folder / f"frame_{i:05d}.png"
        bgr = cv2.cvtColor(np.asarray(frame, dtype=np.uint8), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"{path}: could not write PNG")
        paths.append(path)
    return paths


def read_png_frames(folder, start=0, stop=None):
    """Frames [start, stop) of a `frame_%05d.png` folder as (N, H, W, 3) uint8 RGB (stop=None: to the end)."""
    folder = Path(folder)
    if stop is None:
        stop = start
        while (folder / f"frame_{stop:05d}.png").is_file():
            stop += 1
    frames = []
    for i in range(start, stop):
        path = folder / f"frame_{i:05d}.png"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{path}: missing or unreadable frame")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not frames:
        raise FileNotFoundError(f"{folder}: no frames [{start}, {stop})")
    return np.stack(frames)


# ----------------------------------------------------------------------------- demo data
# Each category shows one way in which the sound tells what the frames cannot:
#   loudness: a shape whose size follows the loudness of a tone; the loudness is redrawn at random for
#             every frame (constant over the 40 ms centred on the frame), so the size of an in-between
#             frame is independent of its neighbours but readable from the audio at that instant.
#   impacts:  a ball that changes direction at random sub-frame instants (and at the walls), each
#             impact making a click at exactly that moment.
DEMO_CATEGORIES = {  # name → (mechanisms, shape of the pulsing object)
    "PulsingDisc": (("loudness",), "disc"),
    "PulsingSquare": (("loudness",), "square"),
    "BouncingBall": (("impacts",), "disc"),
    "BallAndDisc": (("loudness", "impacts"), "disc"),
}
DEMO_AUDIO_RATE = 44100
DEMO_MIN_SIZE, DEMO_MAX_SIZE = 0.04, 0.22  # shape radius as a fraction of the frame width
DEMO_LOUDNESS_DB = 36.0  # loudness 0 → -36 dB, loudness 1 → 0 dB (peak amplitude 0.7)


def demo_loudness_to_size(loudness, width):
    """Radius (pixels) of the pulsing shape for a loudness in [0, 1]; monotonic, linear."""
    return width * (DEMO_MIN_SIZE + (DEMO_MAX_SIZE - DEMO_MIN_SIZE) * np.asarray(loudness))


def demo_loudness_to_amplitude(loudness):
    """Tone amplitude for a loudness in [0, 1]: linear in dB, so log-mel energy is linear in loudness."""
    return 0.7 * 10.0 ** (-DEMO_LOUDNESS_DB * (1.0 - np.asarray(loudness)) / 20.0)


def _demo_background(rng, width, height, frames):
    """A smooth random texture, larger than the frame, panned at a constant whole-pixel velocity."""
    velocity = rng.integers(-3, 4, size=2)
    margin = np.abs(velocity) * frames + 1
    big_h, big_w = height + margin[1], width + margin[0]
    noise = rng.random((big_h // 8 + 2, big_w // 8 + 2, 3)).astype(np.float32)
    texture = cv2.resize(noise, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((big_h, big_w, 1)).astype(np.float32), (0, 0), 1.5)[..., None]
    tint = rng.uniform(0.25, 0.6, size=3).astype(np.float32)
    texture = np.clip((0.55 * texture + 0.45 * fine) * tint * 255, 0, 255).astype(np.uint8)
    origin = np.where(velocity < 0, margin - 1, 0)

    def crop(k):
        x, y = origin + velocity * k
        return texture[y:y + height, x:x + width].copy()
    return crop


def _demo_loudness_track(rng, frames, fps, rate, n_samples):
    """Per-frame random loudness, held on [t_k - T/2, t_k + T/2) with 3 ms raised-cosine crossfades."""
    loudness = rng.uniform(0.0, 1.0, size=frames)
    t = np.arange(n_samples) / rate
    held = loudness[np.clip(np.floor(t * fps + 0.5).astype(int), 0, frames - 1)]
    fade = max(1, int(0.003 * rate))
    kernel = np.hanning(2 * fade + 1)
    amplitude = np.convolve(demo_loudness_to_amplitude(held), kernel / kernel.sum(), mode="same")
    return loudness, amplitude


def _demo_ball_path(rng, frames, fps, width, height, radius):
    """Piecewise-linear ball path: random speed/direction changes at random times, reflections at walls.

    Returns (position at each frame time, impact times). Simulated on a 1 ms grid, so impact times are
    exact to 1 ms and the click is placed at the same instant.
    """
    step = 0.001
    n_steps = int(np.ceil(frames / fps / step)) + 1
    position = rng.uniform([radius, radius], [width - radius, height - radius])
    speed = rng.uniform(0.3, 0.8) * width  # pixels per second
    angle = rng.uniform(0, 2 * np.pi)
    next_turn = rng.exponential(0.12)
    path, impacts = np.empty((n_steps, 2)), []
    for i in range(n_steps):
        path[i] = position
        t = i * step
        velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        position = position + velocity * step
        hit = False
        for axis, limit in ((0, width), (1, height)):
            if position[axis] < radius or position[axis] > limit - radius:
                position[axis] = np.clip(position[axis], radius, limit - radius)
                angle = np.pi - angle if axis == 0 else -angle
                hit = True
        if t + step >= next_turn:
            speed = rng.uniform(0.3, 0.8) * width
            angle = rng.uniform(0, 2 * np.pi)
            next_turn += rng.exponential(0.12)
            hit = True
        if hit:
            impacts.append(t + step)
    frame_steps = np.round(np.arange(frames) / fps / step).astype(int)
    return path[frame_steps], np.array(impacts)


def _demo_click(rate, rng):
    """A 6 ms damped 3 kHz burst: short, broadband and unmistakable next to the tone."""
    t = np.arange(int(0.006 * rate)) / rate
    return (0.9 * np.sin(2 * np.pi * 3000 * t) * np.exp(-t / 0.0015) * rng.choice([-1, 1])).astype(np.float32)


def make_demo_clip(path, seed, kinds, shape="disc", frames=100, width=320, height=240, fps=25, group_seed=None):
    """Render one demo clip (video + aligned audio) to `path`; returns the hidden per-frame ground truth."""
    rng = np.random.default_rng(seed)
    group_rng = np.random.default_rng(seed if group_seed is None else group_seed)
    rate = DEMO_AUDIO_RATE
    n_samples = int(round(frames / fps * rate))
    background = _demo_background(group_rng, width, height, frames)
    shape_color = tuple(int(c) for c in group_rng.integers(150, 256, size=3))
    ball_color = tuple(int(c) for c in group_rng.integers(150, 256, size=3)[::-1])
    tone_hz = group_rng.uniform(300.0, 900.0)
    wave = (0.003 * rng.standard_normal(n_samples)).astype(np.float32)
    truth = {}
    if "loudness" in kinds:
        loudness, amplitude = _demo_loudness_track(rng, frames, fps, rate, n_samples)
        wave += (amplitude * np.sin(2 * np.pi * tone_hz * np.arange(n_samples) / rate)).astype(np.float32)
        center = group_rng.uniform([0.3 * width, 0.3 * height], [0.7 * width, 0.7 * height])
        truth.update(loudness=loudness, center=center, shape_color=shape_color)
    if "impacts" in kinds:
        ball_radius = 0.035 * width
        ball, impacts = _demo_ball_path(rng, frames, fps, width, height, ball_radius)
        click = _demo_click(rate, rng)
        for t in impacts:
            start = int(round(t * rate))
            piece = click[:max(0, n_samples - start)]
            wave[start:start + len(piece)] += piece
        truth["ball"], truth["impacts"] = ball, impacts
    with VideoWriter(path, fps, width, height, audio=(np.clip(wave, -1, 1), rate)) as writer:
        for k in range(frames):
            image = background(k)
            if "loudness" in kinds:
                radius = demo_loudness_to_size(truth["loudness"][k], width)
                _draw_shape(image, center, radius, shape_color, shape == "square")
            if "impacts" in kinds:
                _draw_shape(image, truth["ball"][k], ball_radius, ball_color, False)
            writer.write(image)
    return truth


def _draw_shape(image, center, radius, color, square):
    """Anti-aliased disc or square at sub-pixel position (4 fractional bits)."""
    scale = 16
    cx, cy = (int(round(v * scale)) for v in center)
    r = int(round(radius * scale))
    if square:
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), color, -1, cv2.LINE_AA, shift=4)
    else:
        cv2.circle(image, (cx, cy), r, color, -1, cv2.LINE_AA, shift=4)


def make_demo(out_root, seed=0, categories=None, groups=6, clips=2, frames=100, width=320, height=240,
              fps=25, prepare_split=True, show_progress=True):
    """Synthetic audio-visual data in UCF-101 layout: `{out_root}/demo/<Category>/v_<Category>_gXX_cYY.avi`.

    Clips of one group share background, colours and tone (like UCF's groups); the split CSV and the
    16 kHz audio cache are then made by the same code as `python utils.py prepare --dataset demo`.
    Deterministic from `seed`.
    """
    video_dir, split_csv, _ = dataset_paths(out_root, "demo")
    names = list(categories or DEMO_CATEGORIES)
    unknown = [name for name in names if name not in DEMO_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown demo categories {unknown}; choose from {list(DEMO_CATEGORIES)}")
    jobs = [(c, name, g, k) for c, name in enumerate(names) for g in range(1, groups + 1) for k in range(1, clips + 1)]
    for c, name, g, k in _progress(jobs, "make-demo", show_progress):
        path = video_dir / name / f"v_{name}_g{g:02d}_c{k:02d}.avi"
        kinds, shape = DEMO_CATEGORIES[name]
        make_demo_clip(path, np.random.SeedSequence([seed, c, g, k]), kinds, shape, frames=frames, width=width,
                       height=height, fps=fps, group_seed=np.random.SeedSequence([seed, c, g]))
    if prepare_split:
        prepare(out_root, dataset="demo", require_audio=True, show_progress=show_progress)
    return split_csv


def _progress(items, desc, show):
    from tqdm import tqdm
    return tqdm(items, desc=desc, disable=not show, unit="video", dynamic_ncols=True)


# ----------------------------------------------------------------------------- data preparation
SPLIT_COLUMNS = ["path", "category", "split", "fps", "n_frames", "width", "height", "has_audio", "audio_rate",
                 "duration"]
_GROUP_PATTERN = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def prepared_paths(data_root, dataset="ucf101", dataset_dir=None):
    """Video folder, split CSV, audio cache, frame folder and prepare cache of a dataset folder.

    `dataset_dir` (e.g. a custom folder name) gives `{root}/{dir}_split.csv` etc., as dataset_paths does
    for UCF-101 and the demo.
    """
    root = Path(data_root)
    if dataset_dir:
        folder = root / dataset_dir
        split_csv, audio_dir = root / f"{folder.name}_split.csv", root / f"{folder.name}_audio16k"
    else:
        folder, split_csv, audio_dir = dataset_paths(root, dataset)
    return {"videos": folder, "split_csv": split_csv, "audio": audio_dir, "frames": root / f"{folder.name}_imgs",
            "cache": root / f".{folder.name}_prepare.json"}


def dataset_frames_dir(data_root, dataset):
    """`{root}/UCF-101_imgs` or `{root}/demo_imgs`: frames written by `prepare --extract-frames`."""
    return prepared_paths(data_root, dataset)["frames"]


def audio_cache_path(audio_dir, relative_video_path):
    """`<audio_dir>/<Category>/<video>.npy` for a video path relative to its dataset folder."""
    return Path(audio_dir) / Path(relative_video_path).with_suffix(".npy")


def video_group(relative_path):
    """UCF-style group number (`_gXX_`) of a video, or its stem when it has none (a group of its own)."""
    match = _GROUP_PATTERN.search(Path(relative_path).stem)
    return int(match.group(1)) if match else Path(relative_path).stem


def _group_sort_key(group):
    """Group numbers in order (as the official split, whose test set is g01-g07); names by a stable hash."""
    return (0, group, "") if isinstance(group, int) else (1, zlib.crc32(group.encode()), group)


def _carve_groups(groups, fraction, minimum):
    """The last `fraction` of the ordered groups (at least `minimum` when enough groups exist)."""
    ordered = sorted(set(groups), key=_group_sort_key)
    count = max(minimum, int(round(fraction * len(ordered)))) if len(ordered) > minimum else 0
    return set(ordered[len(ordered) - count:]) if count else set()


def assign_splits(paths, official=None, test_fraction=0.2, val_fraction=0.1):
    """{relative path: train/val/test}; videos of one group never land in two splits.

    official: (train names, test names) of UCF-101 split 1, lower-cased relative paths; videos in
    neither list are left out. Without it the first groups in order are test (as UCF's g01-g07).
    Val is always carved from train by group (the last groups in order).
    """
    if official is not None:
        train_names, test_names = official
        split = {p: "test" if p.lower() in test_names else "train" for p in paths
                 if p.lower() in test_names or p.lower() in train_names}
    else:
        ordered = sorted({video_group(p) for p in paths}, key=_group_sort_key)
        n_test = max(1, int(round(test_fraction * len(ordered)))) if len(ordered) > 1 else 0
        test_groups = set(ordered[:n_test])
        split = {p: "test" if video_group(p) in test_groups else "train" for p in paths}
    train = [p for p, s in split.items() if s == "train"]
    val_groups = _carve_groups([video_group(p) for p in train], val_fraction, minimum=1)
    return {p: "val" if s == "train" and video_group(p) in val_groups else s for p, s in split.items()}


def read_official_split(list_dir):
    """(train, test) sets of lower-cased relative paths from `trainlist01.txt`/`testlist01.txt`, or None.

    Lines look like `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1` (train, with class index) and
    `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi` (test). Compared case-insensitively because the lists
    spell some folders differently from the archive (HandStandPushups vs HandstandPushups).
    """
    train_file, test_file = Path(list_dir) / "trainlist01.txt", Path(list_dir) / "testlist01.txt"
    if not (train_file.is_file() and test_file.is_file()):
        return None

    def names(file):
        lines = file.read_text().splitlines()
        return {line.split()[0].strip().replace("\\", "/").lower() for line in lines if line.strip()}
    return names(train_file), names(test_file)


def _list_videos(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def _load_prepare_cache(path):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _examine_video(video, relative, audio_dir, frames_dir, extract_frames):
    """Probe one video, cache its 16 kHz audio (and frames); returns (info dict or None, problem or None)."""
    if video.stat().st_size == 0:
        return None, "empty file (0 bytes)"
    try:
        info = probe(video)
        if info.n_frames == 0:
            return None, "empty: no frame decodes"
        if info.has_audio:
            wave = _read_audio_or_none(video)
            if wave is None or wave.size == 0:
                info.has_audio, info.audio_rate, info.audio_channels = False, 0, 0
            else:
                atomic_write(audio_cache_path(audio_dir, relative), lambda tmp: _save_npy(tmp, wave))
        if extract_frames:
            _extract_frames(video, Path(frames_dir) / Path(relative).with_suffix(""), info.n_frames)
        return asdict(info), None
    except (ValueError, OSError, av.error.FFmpegError) as err:
        return None, f"unreadable: {str(err).replace(f'{video}: ', '')}"


def _read_audio_or_none(video):
    """A broken audio track makes a video audio-less, not unusable."""
    try:
        return read_audio(video, AUDIO_RATE)
    except (ValueError, av.error.FFmpegError):
        return None


def _save_npy(tmp, array):
    with open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float32))


def _extract_frames(video, folder, n_frames):
    if (folder / f"frame_{n_frames - 1:05d}.png").is_file():
        return
    write_png_frames(folder, iter_frames(video))


def _cache_complete(entry, relative, audio_dir, frames_dir, extract_frames):
    """A cached entry is reusable when its audio cache (and frames, if asked for) are still on disk."""
    info = entry.get("info")
    if info is None:
        return True
    if info["has_audio"] and not audio_cache_path(audio_dir, relative).is_file():
        return False
    last_frame = Path(frames_dir) / Path(relative).with_suffix("") / f"frame_{info['n_frames'] - 1:05d}.png"
    return not extract_frames or last_frame.is_file()


def prepare(data_root="../data", dataset="ucf101", dataset_dir=None, require_audio=True, extract_frames=False,
            show_progress=True):
    """Write the split CSV (+ 16 kHz audio cache, optional PNG frames) of a folder of videos.

    Incremental: files whose size and mtime are unchanged reuse their earlier result. Corrupt, empty and
    unreadable videos (and, with require_audio, videos without audio) are excluded and reported; no
    single file stops the run. Returns a summary dict.
    """
    paths = prepared_paths(data_root, dataset, dataset_dir)
    folder = paths["videos"]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: video folder not found (expected <Category>/<video>.avi inside; "
                                f"set --data-root/--dataset-dir)")
    cache = _load_prepare_cache(paths["cache"])
    new_cache, rows, excluded, silent, reused = {}, {}, [], [], 0
    for relative in _progress(_list_videos(folder), "prepare", show_progress):
        stat = (folder / relative).stat()
        key = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(relative)
        if entry and entry["key"] == key and _cache_complete(entry, relative, paths["audio"], paths["frames"],
                                                             extract_frames):
            reused += 1
        else:
            info, problem = _examine_video(folder / relative, relative, paths["audio"], paths["frames"],
                                           extract_frames)
            entry = {"key": key, "info": info, "problem": problem}
        new_cache[relative] = entry
        info = entry["info"]
        if info is None:
            excluded.append((relative, entry["problem"]))
        elif not info["has_audio"] and require_audio:
            excluded.append((relative, "no audio track (use --no-require-audio to keep it)"))
        else:
            if not info["has_audio"]:
                silent.append(relative)
            rows[relative] = info
    official = read_official_split(Path(data_root) / "ucfTrainTestlist")
    splits = assign_splits(list(rows), official)
    for relative in rows:
        if relative not in splits:
            excluded.append((relative, "not in the official split 1 lists"))
    table = [_split_row(relative, rows[relative], splits[relative]) for relative in rows if relative in splits]
    _write_split_csv(paths["split_csv"], table)
    atomic_write_text(paths["cache"], json.dumps(new_cache, indent=0, sort_keys=True))
    summary = {"csv": str(paths["split_csv"]), "videos": len(new_cache), "kept": len(table), "reused": reused,
               "excluded": sorted(excluded), "without_audio": silent, "official_split": official is not None,
               "splits": {name: sum(row["split"] == name for row in table) for name in ("train", "val", "test")}}
    return summary


def _split_row(relative, info, split):
    return {"path": relative, "category": Path(relative).parts[0] if len(Path(relative).parts) > 1 else "",
            "split": split, "fps": info["fps"], "n_frames": info["n_frames"], "width": info["width"],
            "height": info["height"], "has_audio": bool(info["has_audio"]), "audio_rate": info["audio_rate"],
            "duration": info["duration"]}


def _write_split_csv(path, rows):
    import pandas as pd
    table = pd.DataFrame(rows, columns=SPLIT_COLUMNS)
    atomic_write_text(path, table.to_csv(index=False))


def format_summary(summary):
    """A few lines for the console: counts per split, then every excluded file and why."""
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    lines = [f"{summary['csv']}: {summary['kept']} of {summary['videos']} videos ({splits}); "
             f"{summary['reused']} reused from the last run; "
             f"split: {'official split 1' if summary['official_split'] else 'by group'}"]
    if summary["without_audio"]:
        lines.append(f"kept without audio (has_audio=False): {len(summary['without_audio'])}")
        lines += [f"  {path}" for path in summary["without_audio"]]
    if summary["excluded"]:
        lines.append(f"excluded: {len(summary['excluded'])}")
        lines += [f"  {path}: {reason}" for path, reason in summary["excluded"]]
    return "\n".join(lines)


def default_dataset(data_root):
    """`--dataset` when none is given: UCF-101 when its folder or split CSV is under data_root, else the demo."""
    video_dir, split_csv, _ = dataset_paths(data_root, "ucf101")
    return "ucf101" if video_dir.is_dir() or split_csv.is_file() else "demo"


def ensure_dataset(data_root, dataset):
    """dataset_paths(...) of a ready dataset; the demo is generated under `{data_root}/demo` on first use."""
    video_dir, split_csv, audio_dir = dataset_paths(data_root, dataset)
    if dataset == "demo":
        if not split_csv.is_file():
            _make_demo_once(data_root)
    elif not video_dir.is_dir() or not split_csv.is_file():
        missing = video_dir if not video_dir.is_dir() else split_csv
        raise FileNotFoundError(f"{missing} not found: put UCF-101 videos in {video_dir}/<Category>/*.avi and run "
                                f"`python utils.py prepare --data-root {data_root}` (or use --dataset demo)")
    return video_dir, split_csv, audio_dir


def _make_demo_once(data_root):
    """Generate the demo under a file lock so parallel ranks/workers do not generate it twice."""
    import fcntl
    Path(data_root).mkdir(parents=True, exist_ok=True)
    with open(Path(data_root) / ".demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dataset_paths(data_root, "demo")[1].is_file():
            make_demo(data_root)


# ----------------------------------------------------------------------------- command line
def main(argv=None):
    parser = argparse.ArgumentParser(description="ASVFI data tools: prepare a video folder, make the demo set.")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="split CSV + 16 kHz audio cache (+ PNG frames) of a video folder")
    prep.add_argument("--data-root", default="../data")
    prep.add_argument("--dataset", choices=["ucf101", "demo"], default="ucf101",
                      help="folder preset: ucf101 → UCF-101, demo → demo")
    prep.add_argument("--dataset-dir", default=None, help="video folder name under --data-root (overrides --dataset)")
    prep.add_argument("--require-audio", action=argparse.BooleanOptionalAction, default=True,
                      help="exclude videos without an audio track (default); otherwise keep them with has_audio=False")
    prep.add_argument("--extract-frames", action="store_true",
                      help="also write <dir>_imgs/<Category>/<video>/frame_%%05d.png")
    demo = commands.add_parser("make-demo", help="generate the synthetic audio-visual demo set")
    demo.add_argument("--out", default="../data", help="data root: writes <out>/demo and <out>/demo_split.csv")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--groups", type=int, default=6)
    demo.add_argument("--clips", type=int, default=2, help="clips per group")
    demo.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps)")
    demo.add_argument("--size", default="320x240", help="frame size WxH (the demo's default is UCF-101's 320x240)")
    args = parser.parse_args(argv)
    started = time.time()
    if args.command == "prepare":
        summary = prepare(args.data_root, args.dataset, args.dataset_dir, args.require_audio, args.extract_frames)
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        make_demo(args.out, seed=args.seed, groups=args.groups, clips=args.clips, frames=args.frames,
                  width=width, height=height,
                  prepare_split=False)
        summary = prepare(args.out, dataset="demo")
    print(format_summary(summary))
    print(f"done in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
