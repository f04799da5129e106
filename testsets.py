"""Readers for the standard VFI test sets in their published folder layouts.

| name              | layout (under root)                                          | inputs → target        |
|-------------------|--------------------------------------------------------------|------------------------|
| `flavr-ucf101`    | <sample>/frame0.png … frame3.png, framet.png (FLAVR           | 4 → 1, centre 224 crop |
|                   | dataset/ucf101_test.py; samples in sorted order)              |                        |
| `ucf101-triplets` | <sample>/frame_00.png, frame_01_gt.png, frame_02.png (DVF     | 2 → 1, whole 256x256   |
|                   | "ucf101_interp_ours", 379 folders; RIFE/EMA-VFI UCF101.py)    |                        |
| `vimeo-septuplet` | sep_testlist.txt / sep_trainlist.txt, sequences/<xxxxx>/<yyyy>/ | im1 im3 im5 im7 → im4  |
|                   | im1.png … im7.png (FLAVR dataset/vimeo90k_septuplet.py)       | (FLAVR's "1357")       |
| `vimeo-triplet`   | tri_testlist.txt / tri_trainlist.txt, sequences/<xxxxx>/<yyyy>/ | im1 im3 → im2          |
|                   | im1.png … im3.png (the set RIFE, EMA-VFI and PerVFI report;   |                        |
|                   | PerVFI's src/train/data/dataloader.py trains on it)           |                        |

A sample holds float32 (3, H, W) RGB frames in [0, 1] (PNG / 255, as torchvision's ToTensor),
their times and an id. Times are in units of the interval between the two central inputs, 0
being the input just before the target: FLAVR's four inputs are at −1, 0, 1, 2, the target at 0.5. RIFE's script reads
frames with OpenCV (BGR); these readers return RGB, and the "rife" protocol records the order.

A reader checks its whole layout when it is built and names the first missing file.
`check_model_fits` refuses a model whose number of inputs differs from the set's (never padded).

`training_windows` turns Vimeo-90K septuplets (the set FLAVR trains on) and triplets (the set
PerVFI trains on) into the training and validation items of `main.py --dataset vimeo-septuplet |
vimeo-triplet`, in dataset.VFIWindows' item format, with each set's own augmentation.
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dataset
import protocols
from utils import ASVFIError



class LayoutError(ASVFIError, ValueError):
    """A test-set folder does not have the published layout (the message names what is missing)."""


@dataclass(frozen=True)
class Sample:
    id: str
    inputs: tuple
    targets: tuple
    input_times: tuple
    target_times: tuple


def read_pixels(path):
    """uint8 (H, W, 3) RGB of an image file; an unreadable file is a LayoutError naming it."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise LayoutError(f"{path}: cannot be read as an image ({error})") from None


def read_frame(path, crop=None):
    """(3, H, W) float32 RGB in [0, 1] of an image file, after an optional protocol crop."""
    pixels = protocols.apply_frame_crop(read_pixels(path), crop)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div(255)


class FrameFolderSet:
    """A test set whose samples are lists of frame files; subclasses say which files and times."""

    name = ""
    layout = ""
    input_times = ()
    target_times = ()
    crop = None

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise LayoutError(f"{self.name}: {self.root} is not a folder; expected {self.layout}")
        self.sample_ids = self.list_samples()
        if not self.sample_ids:
            raise LayoutError(f"{self.name}: no samples under {self.root}; expected {self.layout}")
        for sample_id in self.sample_ids:
            for path in self.input_files(sample_id) + self.target_files(sample_id):
                if not path.is_file():
                    raise LayoutError(f"{self.name}: missing {path}; expected {self.layout}")

    @property
    def n_inputs(self):
        return len(self.input_times)

    def __len__(self):
        return len(self.sample_ids)

    def __getitem__(self, index):
        sample_id = self.sample_ids[index]
        return Sample(id=sample_id,
                      inputs=tuple(read_frame(p, self.crop) for p in self.input_files(sample_id)),
                      targets=tuple(read_frame(p, self.crop) for p in self.target_files(sample_id)),
                      input_times=self.input_times, target_times=self.target_times)

    def list_samples(self):
        raise NotImplementedError

    def input_files(self, sample_id):
        raise NotImplementedError

    def target_files(self, sample_id):
        raise NotImplementedError


class SampleFolders(FrameFolderSet):
    """One sub-folder per sample, in sorted order, each holding the same file names."""

    input_names = ()
    target_names = ()

    def list_samples(self):
        return sorted(entry.name for entry in self.root.iterdir() if entry.is_dir())

    def input_files(self, sample_id):
        return [self.root / sample_id / name for name in self.input_names]

    def target_files(self, sample_id):
        return [self.root / sample_id / name for name in self.target_names]


class FlavrUCF101(SampleFolders):
    """FLAVR's UCF101 test set: frame0..frame3 in, framet (between frame1 and frame2) out."""

    name = "flavr-ucf101"
    layout = "<root>/<sample>/frame0.png, frame1.png, frame2.png, frame3.png, framet.png"
    input_names = ("frame0.png", "frame1.png", "frame2.png", "frame3.png")
    target_names = ("framet.png",)
    input_times = (-1.0, 0.0, 1.0, 2.0)
    target_times = (0.5,)

    def __init__(self, root, crop=protocols.get_protocol("flavr").frame_crop):
        self.crop = crop
        super().__init__(root)


class UCF101Triplets(SampleFolders):
    """The DVF UCF101 triplets RIFE and EMA-VFI report: frame_00, frame_02 in, frame_01_gt out."""

    name = "ucf101-triplets"
    layout = "<root>/<sample>/frame_00.png, frame_01_gt.png, frame_02.png (DVF ucf101_interp_ours)"
    input_names = ("frame_00.png", "frame_02.png")
    target_names = ("frame_01_gt.png",)
    input_times = (0.0, 1.0)
    target_times = (0.5,)


class VimeoSequences(FrameFolderSet):
    """A Vimeo-90K set: the sequences named in the split's list file (blank lines skipped), each
    `sequences/<xxxxx>/<yyyy>/im<n>.png`; subclasses name the list files and the frames read."""

    list_files = {}
    frames_per_sequence = 0
    target_frame = 0
    frame_numbers = ()

    def __init__(self, root, split="test"):
        if split not in self.list_files:
            raise ValueError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.list_files)}")
        self.split = split
        self.layout = (f"<root>/{self.list_files[split]} (one <xxxxx>/<yyyy> per line) and "
                       f"<root>/sequences/<xxxxx>/<yyyy>/im1.png … im{self.frames_per_sequence}.png")
        super().__init__(root)

    @property
    def list_file(self):
        return self.root / self.list_files[self.split]

    def list_samples(self):
        if not self.list_file.is_file():
            raise LayoutError(f"{self.name}: missing {self.list_file}; expected {self.layout}")
        # utf-8-sig: a list file saved by an editor that writes a byte-order mark reads the same
        return [line.strip() for line in self.list_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]

    def input_files(self, sample_id):
        return [self.root / "sequences" / sample_id / f"im{n}.png" for n in self.frame_numbers]

    def target_files(self, sample_id):
        return [self.root / "sequences" / sample_id / f"im{self.target_frame}.png"]


class VimeoSeptuplet(VimeoSequences):
    """Vimeo-90K septuplets as FLAVR reads them. input_frames: FLAVR's digits of the input frames
    ("1357": im1, im3, im5, im7; "35": im3, im5); the target is always im4."""

    name = "vimeo-septuplet"
    list_files = {"test": "sep_testlist.txt", "train": "sep_trainlist.txt"}
    frames_per_sequence = 7
    target_frame = 4
    input_frames_for = {4: "1357", 2: "35"}  # FLAVR's inputs for a model of 4 and of 2 frames

    def __init__(self, root, split="test", input_frames="1357"):
        self.frame_numbers = self.parse_input_frames(input_frames)
        half = len(self.frame_numbers) // 2
        before, after = self.frame_numbers[half - 1], self.frame_numbers[half]  # the central inputs: 0 and 1
        self.input_times = tuple(float(n - before) / (after - before) for n in self.frame_numbers)
        self.target_times = (float(self.target_frame - before) / (after - before),)
        super().__init__(root, split)

    @classmethod
    def parse_input_frames(cls, digits):
        """Frame numbers of FLAVR's input_frames string: 2 or 4 of 1..7, half before im4, half after."""
        numbers = [int(c) for c in str(digits) if c.isdigit()]
        half = len(numbers) // 2
        valid = (len(numbers) == len(str(digits)) and len(numbers) in (2, 4) and numbers == sorted(set(numbers))
                 and all(1 <= n < cls.target_frame for n in numbers[:half])
                 and all(cls.target_frame < n <= 7 for n in numbers[half:]))
        if not valid:
            raise ValueError(f"vimeo-septuplet: input_frames {digits!r} must be 2 or 4 increasing frame "
                             f"numbers of 1..7, half before {cls.target_frame} and half after (e.g. '1357', '35')")
        return tuple(numbers)


class VimeoTriplet(VimeoSequences):
    """Vimeo-90K triplets (`vimeo_triplet`, 448x256): im1, im3 in, im2 out."""

    name = "vimeo-triplet"
    list_files = {"test": "tri_testlist.txt", "train": "tri_trainlist.txt"}
    frames_per_sequence = 3
    target_frame = 2
    frame_numbers = (1, 3)
    input_times = (0.0, 1.0)
    target_times = (0.5,)


TESTSETS = {reader.name: reader for reader in (FlavrUCF101, UCF101Triplets, VimeoSeptuplet, VimeoTriplet)}


# ----------------------------------------------------------------------------- training on a set's lists
class ImageSetWindows(dataset.EpochDraws):
    """A reader's samples as training or validation items in dataset.VFIWindows' format, so train.py
    trains on them as on video windows: inputs (4, 3, h, w), targets, ts, video (the sample id),
    indices (each frame's position in the sample's files, inputs then targets), window (the item's
    index) and silent audio placeholders (has_audio False: main.py refuses models that read sound on
    these sets).

    Training draws crop / flips / temporal reversal with dataset.draw_augmentation from (seed,
    epoch, index), sampling.windows_per_video items per sample; evaluation takes the centre
    sampling.crop (None = whole frames). A 2-frame sample fills the four input slots as a, a, b, b
    (two-frame models read the middle two, as in test-set inference). Reversal plays the inputs and
    targets backwards and maps each target time t to 1 - t.
    """

    def __init__(self, reader, sampling):
        if reader.n_inputs not in (2, 4):
            raise ValueError(f"{reader.name}: samples of {reader.n_inputs} inputs do not fill 4 input slots")
        super().__init__(sampling.seed)
        self.reader, self.sampling = reader, sampling
        self.repeats = int(sampling.windows_per_video) if sampling.train else 1
        self.csv_path = getattr(reader, "list_file", reader.root)  # what train.py's messages name
        first = reader.input_files(reader.sample_ids[0])[0]
        with Image.open(first) as image:  # a crop that does not fit fails now, not in a worker
            self.check_crop_fits(first, image.size[::-1])
        segment, times = dataset.audio_segment(None, 0.0, 1 / 25, dataset.audio_samples_for(25, 1))
        self.silence = torch.from_numpy(segment), torch.from_numpy(times)

    def check_crop_fits(self, path, frame_size):
        crop = dataset.crop_size(self.sampling.crop)
        if crop and (crop[0] > frame_size[0] or crop[1] > frame_size[1]):
            raise ASVFIError(f"{path}: frames are {frame_size[1]}x{frame_size[0]}, smaller than the "
                             f"{'training' if self.sampling.train else 'validation'} crop {crop[1]}x{crop[0]} "
                             f"({'--crop' if self.sampling.train else '--val-crop'}; 0 = whole frames)")

    def __len__(self):
        return len(self.reader) * self.repeats

    def item(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range ({len(self)})")
        sample_id = self.reader.sample_ids[index // self.repeats]
        files = self.reader.input_files(sample_id) + self.reader.target_files(sample_id)
        frames = self.read_sample(files)
        size = frames.shape[1:3]
        augmentation = (dataset.draw_augmentation(self.rng(index), size, self.sampling) if self.sampling.train
                        else dataset.centre_crop(size, self.sampling.crop))
        n_inputs = self.reader.n_inputs
        inputs = list(range(4)) if n_inputs == 4 else [0, 0, 1, 1]
        targets = list(range(n_inputs, len(files)))
        ts = torch.tensor(self.reader.target_times, dtype=torch.float32)
        if augmentation.reverse:
            inputs, targets, ts = inputs[::-1], targets[::-1], 1.0 - ts.flip(0)
        pixels = dataset.augment(frames, inputs + targets, augmentation)
        audio, audio_times = self.silence
        return {"inputs": pixels[:4], "targets": pixels[4:], "audio": audio, "audio_times": audio_times,
                "has_audio": torch.tensor(False), "video": sample_id,
                "indices": torch.tensor(inputs + targets, dtype=torch.int64), "ts": ts}

    def read_sample(self, files):
        """uint8 (N, H, W, 3) of a sample's files; frames of another size than the first are refused."""
        frames = [read_pixels(path) for path in files]
        for path, pixels in zip(files, frames):
            if pixels.shape != frames[0].shape:
                raise LayoutError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}, but {files[0]} is "
                                  f"{frames[0].shape[1]}x{frames[0].shape[0]}; a sample's frames must share a size")
        self.check_crop_fits(files[0], frames[0].shape[:2])
        return np.stack(frames)


@dataclass(frozen=True)
class TrainingRecipe:
    """How its authors' loader trains on a set with a training list.

    inputs: {number of model inputs: reader options giving those frames}; hflip / vflip: the
    spatial flips drawn (temporal reversal always is); crop and color_jitter: main.py's --crop and
    --color-jitter defaults (torchvision's ColorJitter(j, j, j, j))."""
    inputs: dict
    hflip: bool
    vflip: bool
    crop: int = 256
    color_jitter: float = 0.05


# FLAVR's Vimeo transforms flip both ways; PerVFI's triplet loader (src/train/data/dataloader.py)
# flips time only; both crop 256 and apply ColorJitter(0.05, 0.05, 0.05, 0.05).
TRAINING = {"vimeo-septuplet": TrainingRecipe({n: {"input_frames": frames}
                                               for n, frames in VimeoSeptuplet.input_frames_for.items()},
                                              hflip=True, vflip=True),
            "vimeo-triplet": TrainingRecipe({2: {}}, hflip=False, vflip=False)}
TRAINABLE = tuple(TRAINING)  # the sets with a training list: main.py trains on them


def training_windows(name, root, role, n_inputs, sampling):
    """Training (role "train") or validation ("val") items of a set in TRAINABLE with the frames a
    model of `n_inputs` inputs reads, the train list for training and the test list for validation:
    Vimeo-90K septuplets as FLAVR trains on them (im1, im3, im5, im7 or im3, im5 → im4) and
    triplets as PerVFI does (im1, im3 → im2), each with its authors' flips."""
    if name not in TRAINABLE:
        raise ValueError(f"{name}: not a set with a training list; trainable: {', '.join(TRAINABLE)}")
    recipe = TRAINING[name]
    if n_inputs not in recipe.inputs:
        raise ASVFIError(f"{name}: no input frames for a model of {n_inputs} inputs "
                         f"(its models take {' or '.join(map(str, sorted(recipe.inputs)))})")
    split = {"train": "train", "val": "test"}[role]
    reader = open_testset(name, root, split=split, **recipe.inputs[n_inputs])
    if sampling.train:
        sampling = dataclasses.replace(sampling, hflip=recipe.hflip, vflip=recipe.vflip)
    return ImageSetWindows(reader, sampling)


def open_testset(name, root, **options):
    """The reader of a registered test set on `root`; a clear error listing the known names."""
    try:
        reader = TESTSETS[name]
    except KeyError:
        raise ValueError(f"unknown test set {name!r}; known: {', '.join(TESTSETS)}") from None
    return reader(root, **options)


def check_model_fits(n_model_inputs, testset):
    """Refuse a model whose number of input frames differs from the test set's.

    Published numbers on a 2-frame set come from 2-input models; padding a 4-input model with
    repeated frames (as VFIBenchmark does for STMFNet) or dropping inputs changes the task.
    """
    if n_model_inputs != testset.n_inputs:
        raise ValueError(f"a model taking {n_model_inputs} input frames cannot be scored on {testset.name}, "
                         f"whose samples give {testset.n_inputs}; inputs are never padded or dropped "
                         f"(use a set with {n_model_inputs}-frame samples)")
