"""Windows for training and evaluation: 4 input frames, the s-1 frames between the middle two,
and the audio around them with per-sample times relative to the target interval.

For scale s a window starting at frame i has inputs i, i+s, i+2s, i+3s and targets
i+s+1 .. i+2s-1. Its audio is a fixed-length 16 kHz segment centred on the target interval and
covering at least [t(i), t(i+3s)]; each sample carries its time in target-interval units
(0 = input i+s, 1 = input i+2s), computed from the video's own frame times so variable-frame-rate
files stay aligned with their sound.

Training draws a random window per item and one crop / flip / temporal reversal for the whole
window, from an RNG seeded by (seed, epoch, index): the same item comes out whatever the number
of workers or ranks, and a resumed run sees the same batches. Evaluation walks each video with
stride s so that every middle interval appears once.

Frames are decoded from the video files (only the frames a window spans) or read from extracted
PNG folders, with identical results. Nothing holding a file handle is created before the
DataLoader forks; per-worker caches only hold frame indices and recently used waveforms. Frame
times and seek points come from the index prepare stored beside the audio cache while it matches
the video file (size, mtime); otherwise the video is scanned once per worker.
"""
import json
import math
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

import prepare
import runs
import video_io
from utils import AUDIO_RATE, MEL_HOP, ASVFIError, some_of

SCALES = (2, 4, 8)
WAVEFORM_CACHE_SIZE = 8  # decoded waveforms kept per worker when there is no 16 kHz cache file


class DataError(ASVFIError, ValueError):
    """A split CSV or video that cannot give windows; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoEntry:
    """One row of the split CSV, the fields windows need."""
    path: str  # relative to the dataset's video folder
    category: str
    split: str
    fps: float
    n_frames: int
    width: int
    height: int
    has_audio: bool
    name: str = None  # folder/cache name (runs.video_names): the stem unless a sibling shares it


@dataclass(frozen=True)
class Augmentation:
    """One draw of the training augmentation, applied identically to every frame of a window.

    `top`/`left`/`height`/`width` select the crop (height None = full frame); flips act on the
    cropped frames; `reverse` plays the window backwards (frames, audio and times); `jitter` is a
    colour jitter draw (see jitter_colours) or None.
    """
    top: int = 0
    left: int = 0
    height: int = None
    width: int = None
    hflip: bool = False
    vflip: bool = False
    reverse: bool = False
    jitter: tuple = None


@dataclass(frozen=True)
class Sampling:
    """How a split is walked: training draws (a random window, crop, flips and reversal per item)
    or evaluation windows (every middle interval once, centre crop).

    crop: int or (h, w), None = full frames. windows_per_video: training items per video per epoch.
    max_windows_per_video: evaluation windows per video, evenly spaced (None = all). hflip / vflip /
    reverse: which training augmentations may be drawn. color_jitter: torchvision's
    ColorJitter(j, j, j, j) strength (0 = off), drawn once per window.
    """
    train: bool = False
    crop: object = None
    windows_per_video: int = 1
    max_windows_per_video: int = None
    seed: int = 0
    hflip: bool = True
    vflip: bool = False
    reverse: bool = True
    color_jitter: float = 0.0


# ----------------------------------------------------------------------------- window geometry
def window_indices(start, scale):
    """(input indices, target indices) of the window starting at frame `start`."""
    inputs = [start + k * scale for k in range(4)]
    targets = list(range(start + scale + 1, start + 2 * scale))
    return inputs, targets


def frames_needed(scale):
    """Frames a window spans: a video needs at least this many for one window."""
    return 3 * scale + 1


def evaluation_starts(n_frames, scale, max_windows=None):
    """Window starts 0, s, 2s, ... so every middle interval [ks, (k+1)s] appears once.

    With `max_windows`, that many starts evenly spaced over the video (validation speed).
    """
    starts = np.arange(0, n_frames - frames_needed(scale) + 1, scale)
    if max_windows is not None and len(starts) > max_windows:
        keep = np.unique(np.round(np.linspace(0, len(starts) - 1, max_windows)).astype(int))
        starts = starts[keep]
    return [int(s) for s in starts]


def audio_samples_for(min_fps, scale):
    """Fixed segment length A: three frame intervals at the slowest frame rate plus 10 ms each
    side, rounded up to the 10 ms hop, so every window of the data set gets the same length."""
    span = 3 * scale / float(min_fps) * AUDIO_RATE + 2 * MEL_HOP
    return int(math.ceil(span / MEL_HOP)) * MEL_HOP


def audio_segment(waveform, t0, t1, n_samples):
    """`n_samples` of a 16 kHz waveform centred on the interval [t0, t1] (seconds on the waveform's
    timeline), zeros past its ends (or all zeros for None), and each sample's time in interval units
    (t0 → 0, t1 → 1). Returns float32 (segment, times). Inference builds its segments with this too."""
    first = int(round((t0 + t1) / 2 * AUDIO_RATE)) - n_samples // 2
    interval = max(t1 - t0, 1e-6)
    times = ((first + np.arange(n_samples)) / AUDIO_RATE - t0) / interval
    segment = np.zeros(n_samples, dtype=np.float32)
    if waveform is not None:
        lo, hi = max(first, 0), min(first + n_samples, len(waveform))
        if hi > lo:
            segment[lo - first:hi - first] = waveform[lo:hi]
    return segment, times.astype(np.float32)


def crop_size(crop):
    """(height, width) of a crop given as an int (square) or a pair; None stays None (whole frames)."""
    if crop is None:
        return None
    if isinstance(crop, int):
        return crop, crop
    height, width = crop
    return int(height), int(width)


TOO_SHORT, TOO_SMALL = "too short for one window", "smaller than the crop"
SKIPPED_SHOWN = 5  # videos named in the warning about the ones skipped (UCF-101 can skip hundreds)


def unusable_summary(verdicts):
    """How many videos were dropped for each reason, an example of each, and the way out."""
    counts, examples = Counter(), {}
    for entry, (kind, reason) in verdicts:
        counts[kind] += 1
        examples.setdefault(kind, f"{entry.path}: {reason}")
    summary = "; ".join(f"{n} {kind} (e.g. {examples[kind]})" for kind, n in counts.items())
    if TOO_SMALL in counts:
        summary += "; train with a smaller --crop, or --crop 0 for whole frames"
    return summary


# ----------------------------------------------------------------------------- augmentation
def draw_augmentation(rng, frame_size, sampling):
    """One training Augmentation for frames of `frame_size` (height, width): a random crop of
    sampling.crop (whole frames when None) and each flip / reversal the sampling allows with
    probability 1/2. Every training set draws through this, so all train alike."""
    height, width = crop_size(sampling.crop) or frame_size
    top = int(rng.integers(0, frame_size[0] - height + 1))
    left = int(rng.integers(0, frame_size[1] - width + 1))
    hflip, vflip, reverse = (rng.random(3) < 0.5).tolist()
    return Augmentation(top=top, left=left, height=height, width=width, hflip=sampling.hflip and hflip,
                        vflip=sampling.vflip and vflip, reverse=sampling.reverse and reverse,
                        jitter=draw_jitter(rng, sampling.color_jitter) if sampling.color_jitter else None)


def draw_jitter(rng, strength):
    """(order of the four steps, brightness, contrast, saturation, hue) as torchvision's
    ColorJitter(strength, ...) draws them: factors in [max(0, 1 - j), 1 + j], hue in [-j, j]."""
    order = tuple(int(i) for i in rng.permutation(4))
    brightness, contrast, saturation = rng.uniform(max(0.0, 1 - strength), 1 + strength, 3).tolist()
    return order, brightness, contrast, saturation, float(rng.uniform(-strength, strength))


def grey(frames):
    """ITU-R 601 luma of (..., 3, H, W) RGB, keeping the channel axis (torchvision's weights)."""
    return (0.2989 * frames[..., 0:1, :, :] + 0.587 * frames[..., 1:2, :, :] + 0.114 * frames[..., 2:3, :, :])


def rotate_hue(frames, shift):
    """Hue rotated by `shift` turns (HSV, saturation and value kept) of (N, 3, H, W) RGB in [0, 1]."""
    value = frames.amax(dim=1)
    chroma = value - frames.amin(dim=1)
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    red, green, blue = frames.unbind(1)
    safe = chroma.clamp_min(1e-12)
    sector = torch.where(value == red, ((green - blue) / safe) % 6,
                         torch.where(value == green, (blue - red) / safe + 2, (red - green) / safe + 4))
    hue = torch.where(chroma > 0, sector / 6, torch.zeros_like(sector))
    hue = (hue + shift) % 1.0
    # back to RGB: each channel k is v - v s clamp(min(n, 4 - n), 0, 1), n = (k + 6 h) mod 6
    channels = [value - value * saturation * (torch.minimum((k + 6 * hue) % 6, 4 - (k + 6 * hue) % 6)).clamp(0, 1)
                for k in (5, 3, 1)]
    return torch.stack(channels, dim=1)


def jitter_colours(frames, jitter):
    """torchvision ColorJitter on float (N, 3, H, W) frames in [0, 1] with one draw for all of
    them (FLAVR's and PerVFI's Vimeo loaders seed every frame's transform alike): brightness
    scales, contrast blends with the frame's mean luma, saturation with its luma, hue rotates, in
    the drawn order, each clamped to [0, 1]."""
    order, brightness, contrast, saturation, hue = jitter
    steps = (lambda x: (x * brightness).clamp(0, 1),
             lambda x: (contrast * x + (1 - contrast) * grey(x).mean(dim=(-3, -2, -1), keepdim=True)).clamp(0, 1),
             lambda x: (saturation * x + (1 - saturation) * grey(x)).clamp(0, 1),
             lambda x: rotate_hue(x, hue))
    for step in order:
        frames = steps[step](frames)
    return frames


def centre_crop(frame_size, crop):
    """The evaluation Augmentation: the centre `crop` (int or (h, w)) of frames of `frame_size`, or whole frames."""
    if crop is None:
        return Augmentation()
    height, width = crop_size(crop)
    return Augmentation(top=(frame_size[0] - height) // 2, left=(frame_size[1] - width) // 2,
                        height=height, width=width)


def augment(frames, positions, augmentation):
    """uint8 (M, H, W, 3) frames → float32 (N, 3, h, w) in [0, 1]: frames[positions], cropped,
    flipped and colour-jittered as `augmentation` says (reversal is the caller's order of `positions`).

    Crops are taken before anything is copied, so only cropped pixels are converted to float.
    """
    a = augmentation
    height, width = a.height or frames.shape[1], a.width or frames.shape[2]
    window = frames[:, a.top:a.top + height, a.left:a.left + width][positions]
    if a.hflip:
        window = window[:, :, ::-1]
    if a.vflip:
        window = window[:, ::-1]
    chw = np.ascontiguousarray(window.transpose(0, 3, 1, 2))
    frames = torch.from_numpy(chw).to(torch.float32).div_(255)
    return frames if a.jitter is None else jitter_colours(frames, a.jitter)


class EpochDraws(Dataset):
    """A data set whose training items are drawn from (seed, epoch, index) only: the same item comes
    out whatever the number of workers or ranks, and a resumed run sees the same batches."""

    def __init__(self, seed):
        self.seed = int(seed)
        # Shared with forked workers, so set_epoch reaches persistent workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch):
        """Choose the epoch whose training draws __getitem__ returns (call before iterating)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self):
        return int(self._epoch)

    def rng(self, index, epoch=None):
        """RNG of one training item: a function of (seed, epoch, index) only."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def __getitem__(self, index):
        """`item(index)` (the subclass's item dict) with window = index: train.py keys a sampling
        model's noise by it, as the augmentation is keyed here."""
        return {**self.item(index), "window": torch.tensor(index)}


# ----------------------------------------------------------------------------- split CSV
def read_split(csv_path, split=None):
    """VideoEntry list of a split CSV (all rows when split is None)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ASVFIError(f"{csv_path}: split CSV not found; run `python utils.py prepare --data-root ...` "
                         f"(or prepare.ensure_dataset for --dataset demo) first")
    table = pd.read_csv(csv_path)
    missing = {"path", "category", "split", "fps", "n_frames", "width", "height", "has_audio"} - set(table.columns)
    if missing:
        raise DataError(f"{csv_path}: missing columns {sorted(missing)}")
    bad = [f"row {i + 2}: {path!r}: {problem}" for i, path in enumerate(table["path"])
           if (problem := runs.relative_path_problem(path))]
    if bad:  # a path outside the video folder would make inference read and write outside the data root
        raise ASVFIError(f"{csv_path}: {len(bad)} path(s) not under the video folder: {'; '.join(bad[:5])}; "
                         f"fix those rows or re-run prepare")
    # prepare names every file it saw; rows written without a name get one from the CSV's own rows
    names = runs.video_names(table["path"].astype(str))
    if "name" in table.columns:
        names.update({str(path): str(name) for path, name in zip(table["path"], table["name"]) if not pd.isna(name)})
    if split is not None:
        table = table[table["split"] == split]
    return [
        VideoEntry(path=str(row.path), category=str(row.category), split=str(row.split), fps=float(row.fps),
                   n_frames=int(row.n_frames), width=int(row.width), height=int(row.height),
                   has_audio=_as_bool(row.has_audio), name=names[str(row.path)])
        for row in table.itertuples(index=False)
    ]


def _as_bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def refuse_changed_videos(paths, csv_path, rows):
    """A DataError before any epoch when a video changed after prepare read it: its windows would
    fail (or differ) mid-training."""
    changed = prepare.changed_since_prepare(paths, [row.path for row in rows])
    if changed:
        listing = some_of([str(paths["videos"] / path) for path in changed], 3)
        raise DataError(f"{csv_path}: {len(changed)} video(s) changed since prepare read them (size or modification "
                        f"time): {listing}; re-run prepare for this data set: `python utils.py prepare --data-root "
                        f"{paths['videos'].parent} --dataset-dir {paths['videos'].name}`")


# ----------------------------------------------------------------------------- the dataset
class VFIWindows(EpochDraws):
    """Windows of one split of `--dataset {ucf101,demo}` under data_root (see module docstring).

    sampling: a Sampling (training draws or evaluation windows). frames_root: folder of extracted
    frames (`<Category>/<video>/frame_%05d.png`) read instead of decoding. audio_samples: override
    the segment length A (default from the slowest fps of the whole CSV, so splits agree).
    """

    def __init__(self, data_root, dataset, split, scale, sampling=Sampling(), frames_root=None, audio_samples=None):
        crop, windows_per_video = sampling.crop, sampling.windows_per_video
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale}")
        if int(windows_per_video) < 1:
            raise ValueError(f"windows_per_video must be >= 1, got {windows_per_video}")
        if crop is not None and min(crop_size(crop)) < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        super().__init__(sampling.seed)
        paths = runs.dataset_paths(data_root, dataset)
        self.video_dir, self.csv_path, self.audio_dir = paths["videos"], paths["split_csv"], paths["audio"]
        self.frames_root = Path(frames_root) if frames_root is not None else None
        self.split, self.scale, self.train = split, int(scale), bool(sampling.train)
        self.crop = crop_size(crop)
        self.windows_per_video = int(windows_per_video)
        self.sampling = sampling
        all_rows = read_split(self.csv_path)
        if not all_rows:
            raise DataError(f"{self.csv_path}: no videos listed")
        self.audio_samples = int(audio_samples or audio_samples_for(min(r.fps for r in all_rows), self.scale))
        rows = [r for r in all_rows if r.split == split]
        refuse_changed_videos(paths, self.csv_path, rows)
        self.videos, self.skipped = self._usable_videos(rows)
        self.eval_windows = [] if self.train else [
            (v, start) for v, entry in enumerate(self.videos)
            for start in evaluation_starts(entry.n_frames, self.scale, sampling.max_windows_per_video)]
        self._frame_indices, self._frame_times = {}, {}
        self._waveforms = OrderedDict()
        self.target_times = torch.arange(1, self.scale, dtype=torch.float32) / self.scale

    def _usable_videos(self, rows):
        """Drop videos too short for one window (or smaller than the crop), with one warning; when
        none is left, an error that says why."""
        if not rows:
            raise DataError(f"{self.csv_path}: split {self.split!r} has no videos")
        verdicts = [(entry, self.why_unusable(entry)) for entry in rows]
        usable = [entry for entry, why in verdicts if why is None]
        skipped = [(entry.path, why[1]) for entry, why in verdicts if why is not None]
        if not usable:  # the error says why; a warning listing every video would only precede it
            raise DataError(f"{self.csv_path} split {self.split!r}: none of its {len(rows)} videos is usable: "
                             f"{unusable_summary(verdicts)}")
        if skipped:
            listing = some_of((f"{path} ({why})" for path, why in skipped), SKIPPED_SHOWN)
            warnings.warn(f"{self.csv_path} split {self.split!r}: skipped {len(skipped)} of {len(rows)} "
                          f"videos: {listing}", stacklevel=3)
        return usable, skipped

    def why_unusable(self, entry):
        """None for a video that gives windows, else (kind, reason)."""
        needed = frames_needed(self.scale)
        if entry.n_frames < needed:
            return TOO_SHORT, f"{entry.n_frames} frames < {needed} needed for one {self.scale}x window"
        if self.crop and (entry.height < self.crop[0] or entry.width < self.crop[1]):
            return TOO_SMALL, f"{entry.width}x{entry.height} smaller than crop {self.crop[1]}x{self.crop[0]}"
        return None

    def frame_sizes(self):
        """The (height, width) of its windows: the crop, or the distinct sizes of its videos."""
        return {self.crop} if self.crop else {(entry.height, entry.width) for entry in self.videos}

    # ------------------------------------------------------------------ Dataset protocol
    def __len__(self):
        return len(self.videos) * self.windows_per_video if self.train else len(self.eval_windows)

    def item(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range ({len(self)})")
        if self.train:
            video_index, start, augmentation = self.training_draw(index)
        else:
            video_index, start = self.eval_windows[index]
            augmentation = self.centre_crop(self.videos[video_index])
        return self.window(video_index, start, augmentation)

    # ------------------------------------------------------------------ augmentation draws
    def training_draw(self, index, epoch=None):
        """(video index, window start, Augmentation) of training item `index` in `epoch`."""
        video_index = index // self.windows_per_video
        entry = self.videos[video_index]
        rng = self.rng(index, epoch)
        start = int(rng.integers(0, entry.n_frames - frames_needed(self.scale) + 1))
        return video_index, start, draw_augmentation(rng, (entry.height, entry.width), self.sampling)

    def centre_crop(self, entry):
        return centre_crop((entry.height, entry.width), self.crop)

    # ------------------------------------------------------------------ one window
    def window(self, video_index, start, augmentation=Augmentation()):
        """The item dict of the window at `start` in video `video_index`: inputs (4,3,H,W), targets (s-1,3,H,W),
        audio and audio_times (A,), has_audio, video, indices (4+s-1,), ts (s-1,); an item got by index
        also carries its index (`EpochDraws.__getitem__`)."""
        entry = self.videos[video_index]
        if not 0 <= start <= entry.n_frames - frames_needed(self.scale):
            raise IndexError(f"{entry.path}: window start {start} out of range for {entry.n_frames} frames "
                             f"at scale {self.scale}")
        inputs, targets = window_indices(start, self.scale)
        audio, audio_times, has_audio = self._audio_segment(entry, inputs[1], inputs[2])
        if augmentation.reverse:  # frames are read in reversed order: no float copy spent on it
            inputs, targets = inputs[::-1], targets[::-1]
            audio, audio_times = audio.flip(0), 1.0 - audio_times.flip(0)
        order = inputs + targets
        frames = self._augmented_frames(entry, order, augmentation)
        return {
            "inputs": frames[:4],
            "targets": frames[4:],
            "audio": audio,
            "audio_times": audio_times,
            "has_audio": torch.tensor(has_audio),
            "video": entry.path,
            "indices": torch.tensor(order, dtype=torch.int64),
            "ts": self.target_times.clone(),
        }

    def _augmented_frames(self, entry, indices, augmentation):
        """Frames at `indices` cropped and flipped, as float32 (N, 3, h, w) in [0, 1]."""
        frames, positions = self._read_frames(entry, indices)
        if frames.shape[1:3] != (entry.height, entry.width):
            raise DataError(f"{self.video_dir / entry.path}: frames are {frames.shape[2]}x{frames.shape[1]} "
                             f"but the split CSV says {entry.width}x{entry.height}; re-run prepare")
        return augment(frames, positions, augmentation)

    def _read_frames(self, entry, indices):
        """(uint8 (M, H, W, 3) frames, position of each of `indices` in them).

        Video files decode only the span the indices cover; PNG folders read only the indices.
        """
        if self.frames_root is not None:
            folder = runs.video_folder(self.frames_root, entry.path, entry.name)
            return (np.stack([video_io.read_png(folder / video_io.png_name(j)) for j in indices]),
                    list(range(len(indices))))
        first, last = min(indices), max(indices)
        span = video_io.read_frames(self.video_dir / entry.path, first, last + 1, self._frame_index(entry))
        if len(span) != last + 1 - first:
            raise DataError(f"{self.video_dir / entry.path}: decoded {len(span)} frames for [{first}, {last + 1}) "
                             f"but the split CSV says {entry.n_frames}; re-run prepare")
        return span, [j - first for j in indices]

    # ------------------------------------------------------------------ audio
    def _audio_segment(self, entry, first_input, second_input):
        """(audio (A,), audio_times (A,), has_audio) of the interval between two input frames."""
        times = self._times(entry)
        t0, t1 = self._frame_time(entry, times, first_input), self._frame_time(entry, times, second_input)
        waveform = self._waveform(entry)
        segment, audio_times = audio_segment(waveform, t0, t1, self.audio_samples)
        return torch.from_numpy(segment), torch.from_numpy(audio_times), waveform is not None

    def _frame_index(self, entry):
        """The video's frame index, from the file prepare stored when it matches the video (size,
        mtime), else scanned once; cached per worker."""
        if entry.path not in self._frame_indices:
            stored = runs.frame_index_path(self.audio_dir, entry.path, entry.name)
            try:
                record = json.loads(stored.read_text())
            except (OSError, ValueError):  # absent or damaged: the video is scanned instead
                record = None
            self._frame_indices[entry.path] = video_io.frame_index(self.video_dir / entry.path, record)
        return self._frame_indices[entry.path]

    def _times(self, entry):
        """Per-frame times of a video (seconds), cached per worker."""
        if entry.path not in self._frame_times:
            path = self.video_dir / entry.path
            self._frame_times[entry.path] = (video_io.frame_times(path, self._frame_index(entry))
                                             if path.is_file() else np.arange(entry.n_frames) / entry.fps)
        return self._frame_times[entry.path]

    @staticmethod
    def _frame_time(entry, times, index):
        """Time of frame `index`; past the end of the measured times, extrapolated at the video's fps."""
        if index < len(times):
            return float(times[index])
        return float(times[-1]) + (index - len(times) + 1) / entry.fps

    def _waveform(self, entry):
        """16 kHz mono waveform: the prepare cache (memory-mapped, never kept open) or decoded
        from the video (kept in a small per-worker cache); None for videos without audio."""
        if not entry.has_audio:
            return None
        cached = runs.audio_cache_path(self.audio_dir, entry.path, entry.name)
        if cached.is_file():
            return np.load(cached, mmap_mode="r")
        if entry.path not in self._waveforms:
            self._waveforms[entry.path] = self._decode_audio(entry)
            while len(self._waveforms) > WAVEFORM_CACHE_SIZE:
                self._waveforms.popitem(last=False)
        self._waveforms.move_to_end(entry.path)
        return self._waveforms[entry.path]

    def _decode_audio(self, entry):
        path = self.video_dir / entry.path
        try:
            waveform = video_io.read_audio(path, rate=AUDIO_RATE)
        except (video_io.MediaError, OSError, av.error.FFmpegError) as error:  # costs the sound, not the run
            warnings.warn(f"{path}: audio could not be decoded ({error}); using silence")
            return None
        if waveform is None:
            warnings.warn(f"{path}: the split CSV says it has audio but none decodes; using silence")
            return None
        return np.asarray(waveform, dtype=np.float32)
