"""Generate the missing frames: the test split (evaluation protocol) or one video in → one video out.

    python inference.py --optimizer adamw --lr 6e-4 -s 2            # test split -> frames + MP4 + GT
    python inference.py --input in.mp4 --output out.mp4 --scale 4   # any video, any size
    python inference.py --input frames/ --output out.mp4 --fps 50   # a folder of frames (--input-fps)
    python inference.py --model blend -s 2                           # a baseline, no weights needed

Test split (DESIGN §2): frames 0, s, 2s, … of every test video are the input, every frame in
between is regenerated (first and last intervals too, edge frames replicated into the 4-frame
window); output frames, an MP4 with the original audio and the matching ground truth are written.
Frames after the last multiple of s have no right neighbour and are left out of both.

Frames are streamed through a window buffer (never the whole video in RAM): inputs j-1, j, j+1,
j+2 make the window of interval (j, j+1), windows are batched, and every output frame is written
as soon as it is known. A model trained for scale m reaches m^k by recursion (each pass is a
stream feeding the next); models that take any t (PerVFI, baselines) produce all s-1 frames of an
interval in one pass. Each window gets the audio segment training used: centred on its interval,
three intervals long, with per-sample times in interval units.
"""
import argparse
import os
import shutil
import sys
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import dataset
import prepare
import registry
import runs
import runtime
import video_io
from utils import AUDIO_RATE, ASVFIError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# What a broken or unsupported input file raises; anything else is a bug and stops the run.
UNREADABLE_ERRORS = (OSError, ValueError, video_io.MediaError, av.error.FFmpegError)


class InputError(ValueError):
    """An input the protocol cannot use (too few frames, ...): reported, and the run goes on."""


# ----------------------------------------------------------------------------- model loading
def checkpoint_file(args):
    if args.weights:
        return Path(args.weights)
    return runs.checkpoint_path(args.model, runs.run_name(args.optimizer, args.lr, args.tag), args.epoch)


def run_of(args):
    return runs.generated_run(args.model, args.optimizer, args.lr, args.tag, args.epoch, args.weights)


def missing_weights_message(args, path):
    tag = f" --tag {args.tag}" if args.tag else ""
    snapshot = f" --save-every {args.epoch}" if args.epoch and not args.weights else ""
    return (f"{path}: no such checkpoint. Train it first:\n"
            f"  python main.py --model {args.model} --optimizer {args.optimizer} --lr {args.lr} "
            f"--scale {args.scale}{tag}{snapshot}\n"
            f"or pass --weights PATH (or --model repeat/blend/dis, which need no weights).")


def load_model(args, device):
    """The network (or baseline) named by --model, with its weights from --weights or the run's checkpoint."""
    if args.model in registry.BASELINES:
        return registry.build_model(registry.default_config(args.model, scale=args.scale)).to(device).eval()
    path = checkpoint_file(args)
    if not path.is_file():
        raise SystemExit(missing_weights_message(args, path))
    overrides = {"heat": args.heat} if args.model == "pervfi" else {}
    try:
        network, checkpoint = registry.load_model(path, overrides, weights_dir=args.weights_dir)
    except ASVFIError as error:  # names the file and what is wrong with it
        raise SystemExit(str(error))
    if checkpoint["config"]["model"] != args.model:
        raise SystemExit(f"{path}: holds a {checkpoint['config']['model']} checkpoint; pass --model "
                         f"{checkpoint['config']['model']}")
    return network.to(device).eval()


def pass_scales(native, scale, any_t):
    """Scale of each pass: one pass of `scale` for any-t models, k passes of `native` when scale = native^k."""
    if scale < 2:
        raise SystemExit(f"--scale {scale}: the scale must be at least 2")
    if any_t:
        return [scale]
    passes = []
    while native ** len(passes) < scale:
        passes.append(native)
    if native ** len(passes) != scale:
        raise SystemExit(f"a model trained for {native}x cannot produce {scale}x: use a power of {native} "
                         f"({native}, {native ** 2}, ...) or a model trained for {scale}x")
    return passes


# ----------------------------------------------------------------------------- one pass on a batch
@dataclass
class Engine:
    """Runs one interpolation pass (scale `scale`) on batches of windows, optionally tiled."""
    network: torch.nn.Module
    device: torch.device
    scale: int
    amp: str = None  # None, "bf16" or "fp16": autocast on CUDA
    tile: int = 0
    tile_overlap: int = 32

    def __post_init__(self):
        self.consumes = registry.consumes(self.network.config)

    def __call__(self, windows, audio, audio_times, has_audio):
        """windows (B, 4, H, W, 3) uint8, audio/audio_times (B, A) → (B, s-1, H, W, 3) uint8."""
        inputs = torch.from_numpy(windows).to(self.device).permute(0, 1, 4, 2, 3).float().div_(255)
        extra = {}
        if self.consumes.audio:
            extra = {"audio": torch.from_numpy(audio).to(self.device),
                     "audio_times": torch.from_numpy(audio_times).to(self.device),
                     "has_audio": torch.full((len(windows),), has_audio, dtype=torch.bool, device=self.device)}
        if self.consumes.any_t:
            extra["ts"] = (torch.arange(1, self.scale, device=self.device) / self.scale).expand(len(windows), -1)
        with torch.no_grad(), runtime.autocast(self.device, self.amp):
            pred = self.run_tiled(inputs, extra) if self.tile else self.network(inputs, **extra)["pred"]
        pred = pred.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return pred.permute(0, 1, 3, 4, 2).cpu().numpy()

    def run_tiled(self, inputs, extra):
        """Overlapping tiles, blended back with weights that ramp down across the overlaps."""
        height, width = inputs.shape[-2:]
        if self.consumes.frame_mean:  # centre every tile as the whole frame is
            extra = {**extra, "frame_mean": inputs.mean(dim=(1, 3, 4))}
        out = weight_sum = None
        for top in tile_starts(height, self.tile, self.tile_overlap):
            for left in tile_starts(width, self.tile, self.tile_overlap):
                crop = inputs[..., top:top + self.tile, left:left + self.tile]
                pred = self.network(crop, **extra)["pred"].float()
                rows, cols = crop.shape[-2:]
                weight = (blend_ramp(rows, top, height, self.tile_overlap, pred.device)[:, None]
                          * blend_ramp(cols, left, width, self.tile_overlap, pred.device)[None, :])
                if out is None:
                    out = pred.new_zeros(*pred.shape[:-2], height, width)
                    weight_sum = pred.new_zeros(height, width)
                out[..., top:top + rows, left:left + cols] += pred * weight
                weight_sum[top:top + rows, left:left + cols] += weight
        return out / weight_sum


def tile_starts(size, tile, overlap):
    """Tile offsets along one axis: step tile-overlap, the last tile flush with the edge."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def blend_ramp(length, start, total, overlap, device):
    """Blend weight along one axis of a tile: 1 inside, falling linearly (never to 0) over the
    `overlap` pixels it shares with a neighbour, so the seams cross-fade instead of jumping."""
    weight = torch.ones(length, device=device)
    n = min(overlap, length)
    ramp = torch.arange(1, n + 1, device=device) / (overlap + 1)
    if start > 0:
        weight[:n] = torch.minimum(weight[:n], ramp)
    if start + length < total:
        weight[length - n:] = torch.minimum(weight[length - n:], ramp.flip(0))
    return weight


# ----------------------------------------------------------------------------- streaming interpolation
def interpolate_stream(frames, engine, wave, batch, input_fps):
    """(frame uint8 HWC, time s) stream → the stream at `engine.scale`× the rate, in order.

    Input j is emitted, then the s-1 frames of interval (j, j+1). The window of that interval is
    inputs j-1 … j+2, the first/last input replicated at the edges: only the last four inputs and
    one batch of windows are held. Audio segments are as long as in training at this input rate.
    """
    n_audio = dataset.audio_samples_for(input_fps, 1)
    recent = deque(maxlen=4)
    pending = []
    newest = -1
    for newest, item in enumerate(frames):
        recent.append(item)
        if newest >= 2:  # inputs up to `newest` complete the window of interval newest-2
            pending.append(window_of(recent, newest, newest - 2))
            if len(pending) == batch:
                yield from run_batch(pending, engine, wave, n_audio)
                pending = []
    if newest >= 1:  # the last interval, right edge replicated
        pending.append(window_of(recent, newest, newest - 1))
    if pending:
        yield from run_batch(pending, engine, wave, n_audio)
    if newest >= 0:
        yield recent[-1]


def window_of(recent, newest, j):
    """(frames (4, H, W, 3), t_j, t_j+1) of interval j from the held inputs, indices clamped to [0, newest]."""
    oldest = newest - len(recent) + 1
    picks = [recent[min(max(i, 0), newest) - oldest] for i in (j - 1, j, j + 1, j + 2)]
    return np.stack([frame for frame, _ in picks]), picks[1][1], picks[2][1]


def run_batch(pending, engine, wave, n_audio):
    """Interpolate a batch of windows; yield each interval's left input, then its generated frames."""
    segments = [dataset.audio_segment(wave, t0, t1, n_audio) for _, t0, t1 in pending]
    generated = engine(np.stack([frames for frames, _, _ in pending]),
                       np.stack([audio for audio, _ in segments]),
                       np.stack([times for _, times in segments]), wave is not None)
    for (frames, t0, t1), between in zip(pending, generated):
        yield frames[1], t0
        for k, frame in enumerate(between, 1):
            yield frame, t0 + (t1 - t0) * k / engine.scale


def interpolate_video(frames, engines, wave, batch, input_fps):
    """Chain the passes of recursion: each engine's output stream is the next one's input."""
    for engine in engines:
        frames = interpolate_stream(frames, engine, wave, batch, input_fps)
        input_fps *= engine.scale
    return frames


def build_engines(network, device, scale, args):
    native = network.config.get("scale", scale)
    return [Engine(network, device, step, args.amp, args.tile, args.tile_overlap)
            for step in pass_scales(native, scale, registry.consumes(network.config).any_t)]


# ----------------------------------------------------------------------------- sources
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
    return Source(path, info.fps, info.n_frames, info.width, info.height, info.has_audio)


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
    return wave


def check_length(source, needed=2):
    """A clear message for inputs too short to interpolate (`needed` frames: s+1 for the s× test protocol)."""
    if source.n_frames < 2:
        raise InputError(f"{source.path}: the video has only {source.n_frames} frame; "
                         f"interpolation needs at least 2 frames")
    if source.n_frames < needed:
        raise InputError(f"{source.path}: {source.n_frames} frames; the {needed - 1}x test protocol "
                         f"(inputs 0, {needed - 1}, ...) needs at least {needed}")


# ----------------------------------------------------------------------------- test-split mode
@dataclass
class Destination:
    """Where one test video's results go; `frames`/`gt` are folders, `mp4` sits beside `frames`."""
    frames: Path
    mp4: Path
    gt: Path

    @classmethod
    def of(cls, out_root, gt_root, rel):
        rel = Path(rel)
        frames = out_root / rel.parent / rel.stem
        return cls(frames, frames.parent / f"{rel.stem}.mp4", gt_root / rel.parent / rel.stem)

    def finished(self):
        """The MP4 is renamed into place last, so its presence means everything else is complete."""
        return self.frames.is_dir() and self.gt.is_dir() and self.mp4.is_file()


def partial(path):
    """Temporary name of a folder or file being written; the suffix keeps the container format."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def fresh_folder(path):
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def publish(tmp, final):
    """Move a completed temporary folder or file into place, replacing an older result."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_test_video(source, dest, engines, scale, batch, write_gt):
    """Regenerate every frame of one test video from its frames 0, s, 2s, …; write frames, MP4, GT.

    Everything is written under temporary names and renamed when complete (MP4 last), so an
    interrupted run never leaves output that looks finished. Returns the number of output frames.
    """
    check_length(source, scale + 1)
    n_out = (source.n_frames - 1) // scale * scale + 1
    wave = load_wave(source)
    tmp_frames = fresh_folder(partial(dest.frames))
    tmp_gt = fresh_folder(partial(dest.gt)) if write_gt else None
    tmp_mp4 = partial(dest.mp4)

    def inputs():
        for index, (frame, time) in enumerate(source_frames(source)):
            if index == n_out:
                break
            if tmp_gt is not None:
                video_io.write_png_frames(tmp_gt, [frame], start=index)
            if index % scale == 0:
                yield frame, time

    written = 0
    audio = None if wave is None else source.path
    with video_io.VideoWriter(tmp_mp4, source.fps, source.width, source.height, audio_from=audio) as writer:
        for frame, _ in interpolate_video(inputs(), engines, wave, batch, source.fps / scale):
            video_io.write_png_frames(tmp_frames, [frame], start=written)
            writer.write(frame)
            written += 1
    if written != n_out:
        raise InputError(f"{source.path}: {written} frames came out, {n_out} expected (the video decodes "
                         f"to fewer frames than it was probed with)")
    if tmp_gt is not None:
        publish(tmp_gt, dest.gt)
    publish(tmp_frames, dest.frames)
    publish(tmp_mp4, dest.mp4)
    return n_out


def shard(items):
    """This process's share under torchrun (RANK / WORLD_SIZE); everything in a plain run."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return items[rank::world]


def run_test_split(args, device):
    network = load_model(args, device)
    engines = build_engines(network, device, args.scale, args)
    name = args.dataset or runs.default_dataset(args.data_root)
    paths = prepare.ensure_dataset(args.data_root, name)
    video_dir, split_csv = paths["videos"], paths["split_csv"]
    entries = dataset.read_split(split_csv, "test")
    entries = shard(entries[:args.limit] if args.limit else entries)
    out_root = runs.output_dir(args.data_root, args.model, args.scale, run_of(args))
    gt_root = runs.gt_dir(args.data_root, args.scale)
    written, skipped, failures = 0, 0, []
    for entry in tqdm(entries, desc=f"{runs.DISPLAY_NAMES[args.model]} {args.scale}x", unit="video"):
        dest = Destination.of(out_root, gt_root, entry.path)
        if dest.finished() and not args.overwrite:
            skipped += 1
            continue
        torch.manual_seed(args.seed)  # sampling models give the same frames whatever the video order
        try:
            source = open_source(video_dir / entry.path)
            write_test_video(source, dest, engines, args.scale, args.batch,
                             write_gt=args.overwrite or not dest.gt.is_dir())
            written += 1
        except UNREADABLE_ERRORS as error:  # one bad video must not stop the run; reported below
            failures.append(f"{entry.path}: {error}")
            tqdm.write(f"skipped {entry.path}: {error}", file=sys.stderr)
    print(f"{written} video(s) written to {out_root}, {skipped} already finished (--overwrite redoes them), "
          f"{len(failures)} failed; ground truth in {gt_root}")
    for failure in failures:
        print(f"  FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- single-video mode
def resolve_scale(scale, fps, input_fps):
    """--scale, or the integer factor that --fps asks for (default 2)."""
    if fps is None:
        return scale or 2
    factor = round(fps / input_fps)
    if factor < 2 or abs(factor * input_fps - fps) > 1e-3 * fps:
        raise SystemExit(f"--fps {fps:g}: not an integer multiple (at least 2x) of the input's {input_fps:g} fps")
    if scale and scale != factor:
        raise SystemExit(f"--scale {scale} and --fps {fps:g} disagree (the input is {input_fps:g} fps)")
    return factor


def run_single(args, device):
    try:
        source = open_source(args.input, args.input_fps)
        check_length(source)
    except FileNotFoundError:
        raise SystemExit(f"{args.input}: no such file or folder")
    except InputError as error:
        raise SystemExit(str(error))
    except UNREADABLE_ERRORS as error:
        raise SystemExit(f"{args.input}: cannot be read as a video or a folder of frames ({error})")
    args.scale = resolve_scale(args.scale, args.fps, source.fps)
    network = load_model(args, device)
    engines = build_engines(network, device, args.scale, args)
    wave = load_wave(source)
    output = Path(args.output)
    expected = (source.n_frames - 1) * args.scale + 1
    written = 0
    audio = None if wave is None else source.path
    # VideoWriter writes to a temporary file and renames it on success: no half-written output.
    with video_io.VideoWriter(output, source.fps * args.scale, source.width, source.height, audio_from=audio) as writer:
        stream = interpolate_video(source_frames(source), engines, wave, args.batch, source.fps)
        for frame, _ in tqdm(stream, total=expected, desc=f"{args.scale}x", unit="frame"):
            writer.write(frame)
            written += 1
    print(f"{output}: {written} frames at {source.fps * args.scale:g} fps "
          f"({source.n_frames} in, {args.scale}x, {source.width}x{source.height})")
    return 0


# ----------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="asvfi", choices=list(registry.MODELS))
    p.add_argument("-s", "--scale", type=int, default=None, help="2, 4, 8, ... (default 2)")
    p.add_argument("--optimizer", default="adamw", help="run name part; same default as main.py")
    p.add_argument("--lr", default="6e-4", help="run name part, as typed; same default as main.py")
    p.add_argument("--tag", default=None, help="run name suffix used at training (e.g. noaudio)")
    p.add_argument("--epoch", type=int, default=0, help="0 = latest checkpoint of the run, N = its epoch-N snapshot "
                   "(frames go to <s>_<run>_epoch<N>)")
    p.add_argument("--weights", default=None, help="checkpoint path (its file name replaces the run name)")
    p.add_argument("--data-root", default="../data")
    p.add_argument("--dataset", default=None, choices=["ucf101", "demo"],
                   help="default: ucf101 when {data_root}/UCF-101_split.csv exists, else demo")
    p.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    p.add_argument("--amp", nargs="?", const="bf16", default=None, choices=["bf16", "fp16"],
                   help="mixed precision on CUDA (--amp = bf16), as in main.py")
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--limit", type=int, default=0, help="only the first N test videos")
    p.add_argument("--overwrite", action="store_true", help="redo videos that are already finished")
    p.add_argument("--tile", type=int, default=0, help="split frames into tiles of this size (0 = off)")
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--weights-dir", default=None, help="pretrained files for offline machines (PerVFI's flow)")
    p.add_argument("--heat", type=float, default=0.3, help="PerVFI sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling models (PerVFI), per video")
    p.add_argument("--input", default=None, help="a video file or a folder of frames (single-video mode)")
    p.add_argument("--output", default=None, help="output MP4 (single-video mode)")
    p.add_argument("--fps", type=float, default=None, help="target frame rate instead of --scale")
    p.add_argument("--input-fps", type=float, default=25.0, help="frame rate of a folder of frames")
    args = p.parse_args(argv)
    if bool(args.input) != bool(args.output):
        p.error("--input and --output go together")
    if args.fps and not args.input:
        p.error("--fps is for single-video mode (--input/--output); the test split uses --scale")
    if args.tile and not 0 <= args.tile_overlap < args.tile:
        p.error(f"--tile-overlap {args.tile_overlap} must be in [0, --tile {args.tile})")
    if args.batch < 1:
        p.error("--batch must be at least 1")
    return args


def torchrun_device(device):
    """Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def main(argv=None):
    args = parse_args(argv)
    device = torchrun_device(runtime.pick_device(args.device))
    torch.manual_seed(args.seed)
    if args.input:
        return run_single(args, device)
    args.scale = args.scale or 2
    return run_test_split(args, device)


if __name__ == "__main__":
    sys.exit(main())
