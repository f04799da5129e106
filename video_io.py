"""Video and audio I/O with PyAV, and the lossless PNG frame folders.

    info = probe(path)                       # VideoInfo: fps, frames (decoded), size, audio
    frames = read_frames(path, 10, 20)       # (10, H, W, 3) uint8, seeking to the key frame before 10
    wave = read_audio(path)                  # 16 kHz mono float32, sample n at time n / 16000
    with VideoWriter("out.mp4", 50, W, H, audio_from=path) as writer: writer.write(frame)

Frames are identified by their index in the decoder's output order (never re-sorted by pts);
frame times come from the stream when its pts are monotonic and from index / fps otherwise;
frame counts come from decoding (headers lie); a corrupt packet costs at most its own frame.
Unreadable files raise MediaError, which names the file.
"""
import fractions
import functools
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

import utils
from utils import AUDIO_RATE, ASVFIError


class MediaError(ASVFIError):
    """A file that cannot be read as a video (or a frame that cannot be written); the message names it."""


VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
WRITE_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}  # VideoWriter's containers
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
    declared_duration: float = 0.0  # what the container/stream header says (0: not stated)

    @property
    def truncation(self):
        """Why the decoded video is well short of its declared length (a truncated or damaged file), or None."""
        shortfall = self.declared_duration - self.duration
        if self.declared_duration <= 0 or shortfall <= max(2 / self.fps, 0.1 * self.declared_duration):
            return None
        return (f"only {self.n_frames} frames ({self.duration:.2f} s) decode of the {self.declared_duration:.2f} s "
                f"its header declares (truncated or damaged file)")


@dataclass(frozen=True)
class _FrameIndex:
    """One decode pass over a video without pixel conversion: per-frame pts, key frames, size."""
    pts: tuple
    keyframe: tuple
    time_base: fractions.Fraction
    fps: float
    start_time: float
    width: int  # as displayed: upright when the file carries a rotation
    height: int
    declared_duration: float = 0.0
    rotation: int = 0  # degrees counter-clockwise the display turns the decoded frames (phone videos)

    @property
    def stored_size(self):
        """(width, height) of the decoded frames, before they are turned upright."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)

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
        reason = err.strerror or err
        raise MediaError(f"{path}: cannot open as a video/audio file ({reason})") from err


def _video_stream(container, path):
    if not container.streams.video:
        raise MediaError(f"{path}: has no video stream")
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


def _to_rgb(frame, stored_size):
    """(H, W, 3) RGB as displayed: cropped to the stored size (VideoWriter pads odd sizes), then
    turned upright by the frame's display rotation (a portrait phone video is stored landscape)."""
    rgb = frame.to_ndarray(format="rgb24")
    width, height = stored_size
    if rgb.shape[:2] != (height, width):
        rgb = rgb[:height, :width]
    quarter_turns = _quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _quarter_turns(rotation):
    """Counter-clockwise quarter turns of a display rotation in degrees (other angles are not shown
    turned by players either)."""
    turns = rotation / 90
    return round(turns) % 4 if abs(turns - round(turns)) < 1e-3 else 0


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


def frame_index(path, record=None):
    """The frame index of a video: rebuilt from `record` (what `frame_index_record` stored) when that
    was made from this version of the file (same size and mtime), else scanned (one decode pass)."""
    if record is not None and record.get("key") == list(_file_key(path)[1:3]):
        return _FrameIndex(tuple(record["pts"]), tuple(record["keyframe"]), fractions.Fraction(record["time_base"]),
                           record["fps"], record["start_time"], record["width"], record["height"],
                           record["declared_duration"], record.get("rotation", 0))
    return _frame_index(path)


def frame_index_record(path):
    """A JSON-ready copy of a video's frame index, keyed by the file's size and mtime (prepare stores it
    so training never scans a video again)."""
    index = _frame_index(path)
    return {"key": list(_file_key(path)[1:3]), "pts": list(index.pts), "keyframe": list(index.keyframe),
            "time_base": str(index.time_base), "fps": index.fps, "start_time": index.start_time,
            "width": index.width, "height": index.height, "declared_duration": index.declared_duration,
            "rotation": index.rotation}


@functools.lru_cache(maxsize=512)
def _scan_video(path, size, mtime_ns, inode):
    with _open(path) as container:
        stream = _video_stream(container, path)
        width, height = _display_size(container, stream)
        pts, keyframe, rotation = [], [], 0
        for frame in _decode_packets(container, stream):
            if not pts:
                rotation = _quarter_turns(frame.rotation) * 90
            pts.append(frame.pts)
            keyframe.append(bool(frame.key_frame))
        start = stream.start_time * stream.time_base if stream.start_time is not None else 0.0
        fps = _stream_fps(stream)
        if rotation % 180:
            width, height = height, width
        return _FrameIndex(tuple(pts), tuple(keyframe), stream.time_base, fps, float(start), width, height,
                           _declared_duration(path, container, stream, fps, float(start)), rotation)


def _declared_duration(path, container, stream, fps, video_start):
    """Seconds the header claims the video lasts: its stream's duration, or its frame count over the
    rate when longer (an AVI cut short keeps the count in its header, while FFmpeg derives the duration
    from what is left). A container that states only where it ends (Matroska, WebM: FFmpeg reads its
    segment duration, which counts from time 0, not from the first packet) is taken to end the video
    there, unless its audio reaches that end: the file is whole and its sound merely outlasts the
    picture, so the video's length is not stated (0)."""
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        container_end = container.duration / av.time_base
        whole = container.streams.audio and _audio_packets_end(path) >= container_end - 2 / fps
        duration = 0.0 if whole else container_end - video_start
    else:
        duration = 0.0
    return max(duration, stream.frames / fps if stream.frames and fps else 0.0)


def _audio_packets_end(path):
    """Where the first audio stream's last packet ends (s; 0 without timestamps), read without decoding."""
    end = 0.0
    with _open(path) as container:
        stream = container.streams.audio[0]
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.error.FFmpegError:  # a garbled tail: what was read so far is where it ends
            pass
    return end


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
                     audio_channels=int(audio_channels), declared_duration=index.declared_duration)


def frame_times(path, index=None):
    """Time (s, container timeline) of each frame: stream pts where monotonic, else start + index/fps.

    `index`: a `frame_index` already at hand (no scan)."""
    index = index or _frame_index(path)
    if index.pts and index.pts_monotonic:
        return np.array(index.pts, dtype=np.float64) * float(index.time_base)
    return index.start_time + np.arange(len(index.pts), dtype=np.float64) / index.fps


def constant_rate_drift(times, fps, tolerance=0.1):
    """Largest gap (s) between frame times and the constant-rate timeline start + index/fps, when the
    frame intervals spread by more than `tolerance` of 1/fps (a variable-frame-rate file); else None."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 3 or np.ptp(np.diff(times)) <= tolerance / fps:
        return None
    return float(np.abs(times - (times[0] + np.arange(len(times)) / fps)).max())


def iter_frames(path):
    """Stream (H, W, 3) uint8 RGB frames in decode order without holding the video in memory."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        size = _display_size(container, stream)
        for frame in _decode_packets(container, stream):
            yield _to_rgb(frame, size)


def read_frames(path, start, stop, index=None):
    """Frames [start, stop) as (N, H, W, 3) uint8, decoding from the key frame before `start` only.

    Frames after a seek are placed by their pts in the file's frame index (`index`: a `frame_index`
    already at hand, else scanned); files whose pts are missing or non-monotonic (some AVIs) are
    decoded from the beginning, counting frames, instead.
    """
    index = index or _frame_index(path)
    if not 0 <= start < stop <= len(index.pts):
        raise MediaError(f"{path}: frames [{start}, {stop}) requested but the video has {len(index.pts)} frames")
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
                wanted[i] = _to_rgb(frame, index.stored_size)
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
                frames.append(_to_rgb(frame, index.stored_size))
            if i >= stop - 1:
                break
    if len(frames) != stop - start:
        raise MediaError(f"{path}: only {start + len(frames)} frames decode, [{start}, {stop}) requested")
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


def _audio_span(wave, rate, start, until):
    """(wave, rate) of (C, T) `wave` from `start` s (zeros lead a negative start) to `start + until`
    (None: the end)."""
    first = int(round(start * rate))
    wave = wave[:, first:] if first >= 0 else np.pad(wave, ((0, 0), (-first, 0)))
    return (wave if until is None else wave[:, :int(round(until * rate))]), rate


class VideoWriter:
    """Write RGB uint8 frames (and an audio track) to a video file, atomically on close.

    Codecs follow the extension: .mp4/.mov/.mkv → H.264 (libx264, yuv420p) + AAC; .avi → MPEG-4 part 2
    (as UCF-101's xvid files) + 16-bit PCM. 4:2:0 video cannot hold odd sizes: odd frames are padded
    by one replicated edge row/column and the real size is stored in the container's comment tag,
    which `probe`/`read_frames`/`iter_frames` honour (other players show the extra edge line).
    Audio: `audio=(waveform, rate)` with waveform (T,) or (C, T), or `audio_from=path` to re-encode
    another file's audio (nothing is added when that file has none); `audio_start` is the time (s) of
    the audio that plays with the first frame (earlier sound is dropped, a negative start leads with
    silence) and `audio_until` cuts it at that time (s, from the first frame). Sample n plays at
    n/rate, frame k at k/fps.
    """

    QUALITY = 18  # x264 CRF (visually lossless); the AVI quantiser is derived from it

    def __init__(self, path, fps, width, height, audio=None, audio_from=None, gop=12, audio_until=None,
                 audio_start=0.0):
        if audio is not None and audio_from is not None:
            raise ValueError(f"{path}: give either audio=(waveform, rate) or audio_from=path, not both")
        self.path = Path(path)
        if self.path.suffix.lower() not in WRITE_FORMATS:
            raise ValueError(f"{path}: cannot write {self.path.suffix or 'a file without an extension'}; "
                             f"the video formats written are {', '.join(WRITE_FORMATS)}")
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self.size = (int(width), int(height))
        self.gop = gop
        if audio_from is not None:
            decoded = _decode_audio(audio_from)
            audio = None if decoded is None else decoded
        self.audio = None if audio is None else _audio_span(_as_channels_first(audio[0]), int(audio[1]),
                                                            audio_start, audio_until)
        self.container = None

    @property
    def stored_size(self):
        """(width, height) the file holds: the frame size, padded to even for 4:2:0."""
        width, height = self.size
        return width + width % 2, height + height % 2

    def __enter__(self):
        self._output = utils.atomic_path(self.path, suffix=self.path.suffix)
        self._tmp = self._output.__enter__()
        fmt = WRITE_FORMATS[self.path.suffix.lower()]
        self.container = av.open(self._tmp, "w", format=fmt)
        avi = fmt == "avi"
        width, height = self.size
        if width % 2 or height % 2:
            self.container.metadata["comment"] = f"{_DISPLAY_SIZE_TAG}{width}x{height}"
        self.video = self.container.add_stream("mpeg4" if avi else "libx264", rate=self.fps)
        self.video.width, self.video.height = self.stored_size
        self.video.pix_fmt = "yuv420p"
        self.video.gop_size = self.gop
        self.video.codec_context.time_base = 1 / self.fps
        if avi:  # quantiser 2..31 (2 best); single thread keeps the bytes deterministic
            self.video.options = {"flags": "+qscale", "global_quality": str(max(2, self.QUALITY // 6) * 118)}
            self.video.codec_context.thread_count = 1
        else:
            # veryfast: half the encode time of "fast" at the same crf (files ~10 % larger); the
            # MP4 is for watching, every metric reads the lossless PNG frames
            self.video.options = {"crf": str(self.QUALITY), "preset": "veryfast"}
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

    def _finish_streams(self):
        self._write_audio_until(None)
        self.container.mux(self.video.encode())
        if self.audio is not None:
            self.container.mux(self.audio_stream.encode())

    def __exit__(self, exc_type, exc, tb):
        """Publish the file when the block and the encoders' flush succeed; else remove the temp file."""
        try:
            if exc_type is None:
                self._finish_streams()
            self.container.close()
        except BaseException as error:
            self._output.__exit__(type(error), error, error.__traceback__)
            raise
        self._output.__exit__(exc_type, exc, tb)


# Lossless and fast: Huffman coding without match search writes a 320x240 frame in about 70 % of
# the time of zlib level 1 (and, on the demo, smaller); PNG compression was the slowest stage.
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


def png_name(index):
    return f"frame_{index:05d}.png"


def encode_png(frame):
    """The lossless PNG bytes of an (H, W, 3) uint8 RGB frame (encode once, write to several folders)."""
    bgr = cv2.cvtColor(np.asarray(frame, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", bgr, PNG_OPTIONS)
    if not ok:
        raise MediaError(f"could not encode a {frame.shape[1]}x{frame.shape[0]} frame as PNG")
    return data


def write_png_bytes(path, data):
    """Write encoded PNG bytes; a full disk raises OSError (ENOSPC) naming the file."""
    with open(path, "wb") as handle:
        handle.write(data)


def write_png_frames(folder, frames, start=0):
    """Lossless `frame_%05d.png` files numbered from `start`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames, start=start):
        path = folder / png_name(i)
        write_png_bytes(path, encode_png(frame))
        paths.append(path)
    return paths


def read_png_bgr(path, shape=None):
    """(H, W, 3) uint8 BGR (OpenCV's order) of one PNG; MediaError naming the file when it is
    missing, unreadable, or not of `shape`."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: missing or unreadable frame")
    if shape is not None and bgr.shape != tuple(shape):
        raise MediaError(f"{path}: frame of {bgr.shape[1]}x{bgr.shape[0]}, the other frames are {shape[1]}x{shape[0]}")
    return bgr


def read_png(path, shape=None):
    """(H, W, 3) uint8 RGB of one PNG (a view of read_png_bgr's array; see there)."""
    return read_png_bgr(path, shape)[..., ::-1]


def read_png_frames(folder, start=0, stop=None):
    """Frames [start, stop) of a `frame_%05d.png` folder as (N, H, W, 3) uint8 RGB (stop=None: to the end)."""
    folder = Path(folder)
    if stop is None:
        stop = start
        while (folder / png_name(stop)).is_file():
            stop += 1
    if stop <= start:
        raise MediaError(f"{folder}: no frames [{start}, {stop})")
    return np.stack([read_png(folder / png_name(i)) for i in range(start, stop)])
