"""Generate the missing frames: the test split (evaluation protocol) or one video in → one video out.

    python inference.py --optimizer adamw --lr 6e-4 -s 2            # test split -> frames + MP4 + GT
    python inference.py --input in.mp4 --output out.mp4 --scale 4   # any video, any size
    python inference.py --input frames/ --output out.mp4 --fps 50   # a folder of frames (--input-fps)
    python inference.py --model blend -s 2                           # a baseline, no weights needed

Test split: frames 0, s, 2s, … of every test video are the input, every frame in between is
regenerated (first and last intervals too, edge frames replicated into the 4-frame window);
output frames, an MP4 with the original audio and the matching ground truth are written. Frames
after the last multiple of s have no right neighbour and are left out of both. The streaming
window buffer, batching, recursion and tiling live in interpolate.py. Under torchrun each process
takes every world-th test video.
"""
import argparse
import contextlib
import functools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import cli
import dataset
import flow
import identity
import pipeline
import prepare
import publish
import registry
import runs
import runtime
import testset_inference
import utils
import video_io
import weights
from interpolate import build_engines, interpolate_video, recursion_passes, unreachable_scale_message
from sources import (UNREADABLE_ERRORS, InputError, check_length, load_wave, open_source, output_audio,
                     resampling_setting, source_frames, warn_resampling)
from utils import ASVFIError

TILE_OVERLAP = 32  # default pixels shared by neighbouring tiles


# ----------------------------------------------------------------------------- model loading
def missing_checkpoint_message(args, path, scale):
    """Why the checkpoint is missing and what helps: an explicit file is just absent; a run with other
    checkpoints lacks that snapshot; a run with none has to be trained."""
    if args.checkpoint:
        return f"--checkpoint {path}: no such file"
    run = runs.run_name(args.optimizer, args.lr, args.tag)
    latest = runs.checkpoint_path(args.model, run, out_dir=args.out_dir)
    epochs = snapshot_epochs(args.model, run, args.out_dir)
    if args.epoch and (latest.is_file() or epochs):
        listed = (f"its only snapshot is epoch {epochs[0]}" if len(epochs) == 1 else
                  f"its snapshots are epochs {', '.join(map(str, epochs))}")
        kept = (f"{listed} (--epoch N)" if epochs else
                "it kept no epoch snapshots (main.py --save-every N keeps one every N epochs)")
        latest_note = f"; without --epoch its latest checkpoint {latest} is used" if latest.is_file() else ""
        return f"{path}: run {run} has no epoch-{args.epoch} snapshot; {kept}{latest_note}"
    tag = f" --tag {args.tag}" if args.tag else ""
    snapshot = f" --save-every {args.epoch}" if args.epoch else ""
    out_dir = f" --out-dir {args.out_dir}" if args.out_dir != "." else ""
    trained_scale = scale_to_train(args.model, scale)
    if trained_scale is None:
        return f"{path}: no such checkpoint, and training would not help: {unreachable_scale_message(2, scale)}"
    return (f"{path}: no such checkpoint. Train it first:\n"
            f"  python main.py --model {args.model} --optimizer {args.optimizer} --lr {args.lr} "
            f"--scale {trained_scale}{tag}{snapshot}{out_dir}\n"
            f"or pass --checkpoint PATH (or --model repeat/blend/dis, which need no weights).")


def scale_to_train(model, scale):
    """The scale main.py should train for `scale`: itself when main.py trains it, else one whose
    powers reach it (any for a model that takes any t); None when no trainable scale reaches it."""
    any_t = registry.consumes(registry.default_config(model)).any_t
    reaching = [m for m in dataset.SCALES if any_t or recursion_passes(m, scale) is not None]
    return scale if scale in reaching else next(iter(reaching), None)


def snapshot_epochs(model, run, out_dir):
    """Epochs N whose `<run>_epoch<N>.pth` snapshot exists (the names are runs.checkpoint_path's)."""
    epochs = []
    for path in runs.checkpoint_dir(model, out_dir).glob("*.pth"):
        digits = re.search(r"\d+$", path.stem)
        if digits and runs.checkpoint_path(model, run, int(digits[0]), out_dir).name == path.name:
            epochs.append(int(digits[0]))
    return sorted(epochs)


def load_model(args, scale, device):
    """The network (or baseline) named by --model, with its weights from --checkpoint or the run's checkpoint."""
    if args.model in registry.BASELINES:
        return registry.build_model(registry.default_config(args.model, scale=scale)).to(device).eval()
    path = runs.checkpoint_file_of(args)
    if not path.exists():  # anything else there (a folder, say) is refused by registry.load_model, naming it
        raise ASVFIError(missing_checkpoint_message(args, path, scale))
    check_named_flow_estimator(args)
    network, _ = registry.load_model(path, pervfi_overrides(args), weights_dir=args.weights_dir, model=args.model)
    network = network.to(device).eval()
    if args.model == "pervfi" and network.flow_estimator is None:
        # Built now, not at the first frame, so the output records name the estimator that runs
        # (DIS with a warning when a learned estimator's weights cannot be had).
        network.set_flow_estimator(weights_dir=args.weights_dir)
    return network


def check_named_flow_estimator(args):
    """The DIS stand-in is for a checkpoint's default estimator; one asked for by name must run, so
    its weights are checked before the network is built (which would warn and fall back to DIS)."""
    if args.model != "pervfi" or not args.flow_estimator:
        return
    try:
        flow.build_flow_estimator(args.flow_estimator, weights_dir=args.weights_dir)
    except weights.WeightsUnavailable as error:
        raise ASVFIError(f"--flow-estimator {args.flow_estimator} cannot run: {error}") from None


def pervfi_overrides(args):
    """PerVFI's sampling heat and, when given, its flow estimator; nothing for other models."""
    if args.model != "pervfi":
        return {}
    return {"heat": args.heat, **({"flow_estimator": args.flow_estimator} if args.flow_estimator else {})}


# ----------------------------------------------------------------------------- test-split mode
@dataclass
class Destination:
    """Where one test video's results go; `frames`/`gt` are folders, `mp4` sits beside `frames`."""
    frames: Path
    mp4: Path
    gt: Path

    @classmethod
    def of(cls, out_root, gt_root, rel, name=None):
        """`<Category>/<name>/` under both roots; name (runs.video_names) keeps `v_X.avi` and `v_X.mp4`
        apart, and is the stem otherwise."""
        frames = runs.video_folder(out_root, rel, name)
        return cls(frames, frames.parent / f"{frames.name}.mp4", runs.video_folder(gt_root, rel, name))

    def finished(self, records):
        """Published for exactly this source, these weights and settings: the frames folder's identity
        is written last, so its match means the MP4 and the ground truth beside it are complete."""
        return (identity.is_current(self.frames, records.output) and self.mp4.is_file()
                and identity.is_current(self.gt, records.gt))


@dataclass
class Records:
    gt: dict
    output: dict


def records_of(source, data_root, n_out, scale, made_by):
    """Identity records of one video's ground truth and output; made_by = (model, checkpoint, settings)."""
    model, checkpoint, settings = made_by
    settings = {**settings, **resampling_setting(source)}
    return Records(identity.gt_record(source.path, data_root, n_out, scale),
                   identity.output_record(source.path, data_root, n_out, scale, model, checkpoint, settings))


def made_by_of(args, network):
    """(model, checkpoint file or None, settings): what the output records say made the frames."""
    checkpoint = runs.checkpoint_file_of(args) if args.model in registry.TRAINED else None
    return args.model, checkpoint, settings_of(args, network)


def settings_of(args, network):
    """What besides the weights decides the frames (the model config holds heat, flow estimator, ...)."""
    config = json.loads(json.dumps(network.config, default=str))
    settings = {"config": config, "seed": args.seed, "amp": args.amp,
                "tile": args.tile, "tile_overlap": args.tile_overlap if args.tile else 0}
    if args.model == "pervfi":
        settings.update(flow_estimator_used=network.flow_estimator_used,
                        flow_estimator_note=network.flow_estimator_note)
    return settings


def write_test_video(source, dest, engines, scale, batch, records):
    """Regenerate every frame of one test video from its frames 0, s, 2s, …; write frames, MP4, GT.

    Called with the output's lock held. Everything is written under names private to this run and
    renamed when complete: GT (unless already current), MP4, then the frames folder with its
    identity. Decoding, the model, PNG writes and H.264 encoding overlap (pipeline.py). Returns the
    number of output frames and the bytes they add on disk (frames shared with the GT not counted).
    """
    n_out = (source.n_frames - 1) // scale * scale + 1
    wave = load_wave(source)
    warn_resampling(source)
    publish.remove_leftovers(dest.frames)
    publish.remove_leftovers(dest.mp4)  # beside the frames, under their lock
    tmp_frames, tmp_mp4 = publish.fresh_folder(publish.partial_name(dest.frames)), publish.partial_name(dest.mp4)
    with contextlib.ExitStack() as stack:
        tmp_gt = stack.enter_context(gt_writer(dest.gt, records.gt))
        stack.enter_context(publish.removed_on_failure(tmp_frames, tmp_mp4, tmp_gt))
        stack.enter_context(publish.write_errors_named(dest.frames.parent, "finished videos are kept"))
        written = stream_test_video(source, (tmp_frames, tmp_mp4, tmp_gt, dest.gt), engines, (scale, batch, n_out), wave)
        if written != n_out:
            raise InputError(f"{source.path}: {written} frames came out, {n_out} expected (the video decodes "
                             f"to fewer frames than it was probed with)")
        if tmp_gt is not None:
            identity.write_identity(tmp_gt, records.gt)
            publish.publish(tmp_gt, dest.gt)
        (dest.frames / identity.IDENTITY_FILE).unlink(missing_ok=True)  # old frames are no longer finished
        publish.publish(tmp_mp4, dest.mp4)
        identity.write_identity(tmp_frames, records.output)
        publish.publish(tmp_frames, dest.frames)
    return n_out, own_bytes(dest.frames, dest.gt) + dest.mp4.stat().st_size


@contextlib.contextmanager
def gt_writer(gt, record):
    """A private partial GT folder, with GT's own lock held, when the published GT is not current;
    None (nothing to write) when it is. GT is shared by all models: only its own record decides."""
    if identity.is_current(gt, record):
        yield None
        return
    with publish.exclusive(gt):
        if identity.is_current(gt, record):  # another run wrote it while we waited
            yield None
            return
        publish.remove_leftovers(gt)
        yield publish.fresh_folder(publish.partial_name(gt))


def stream_test_video(source, temporaries, engines, shape, wave):
    """Decode → model → (PNG frames, H.264, PNG ground truth), overlapped in threads; frames written.

    Output frame k·s is input frame k·s, so it is the ground truth's frame: encoded once, written into
    the ground truth and hard-linked into the output, or hard-linked from the published ground truth
    when that is current.
    """
    tmp_frames, tmp_mp4, tmp_gt, published_gt = temporaries
    scale, batch, n_out = shape
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(video_io.VideoWriter(tmp_mp4, source.fps, source.width, source.height,
                                                          **output_audio(source, wave)))
        encoder = stack.enter_context(pipeline.Sink(writer.write, name="h264"))
        pngs = stack.enter_context(pipeline.Sink(lambda job: job(), name="png"))

        def inputs():
            for index, (frame, time) in enumerate(pipeline.prefetch(source_frames(source))):
                if index == n_out:
                    break
                is_input = index % scale == 0
                if tmp_gt is not None:
                    folders = (tmp_gt, tmp_frames) if is_input else (tmp_gt,)
                    pngs.put(functools.partial(write_png, frame, index, folders))
                elif is_input:
                    pngs.put(functools.partial(link_png, published_gt, tmp_frames, frame, index))
                if is_input:
                    yield frame, time

        written = 0
        for frame, _ in interpolate_video(inputs(), engines, wave, batch, source.fps / scale):
            if written % scale:  # the inputs were written with the ground truth
                pngs.put(functools.partial(write_png, frame, written, (tmp_frames,)))
            encoder.put(frame)
            written += 1
    return written


def write_png(frame, index, folders):
    """One PNG encode of a frame, written as `frame_<index>.png` into the first folder and hard-linked
    into the others (the ground truth and the output share an input frame's bytes on disk)."""
    data = video_io.encode_png(frame)
    first, *others = (Path(folder) / video_io.png_name(index) for folder in folders)
    video_io.write_png_bytes(first, data)
    for path in others:
        hard_link_or(first, path, lambda: video_io.write_png_bytes(path, data))


def link_png(gt, folder, frame, index):
    """The input frame's PNG hard-linked from the current ground truth (the same bytes); encoded
    when the link fails (another file system, the GT replaced meanwhile)."""
    name = video_io.png_name(index)
    hard_link_or(Path(gt) / name, Path(folder) / name, lambda: write_png(frame, index, (folder,)))


def hard_link_or(source, path, fallback):
    """Hard-link `path` to `source`; call `fallback()` where that fails (a file system without hard
    links, another file system, the source gone)."""
    try:
        os.link(source, path)
    except OSError:
        fallback()


def own_bytes(folder, shared_with):
    """Bytes of a folder's files, those hard-linked to the same name in `shared_with` not counted."""
    own = 0
    for entry in Path(folder).iterdir():
        twin = Path(shared_with) / entry.name
        if entry.is_file() and not (twin.is_file() and os.path.samefile(entry, twin)):
            own += entry.stat().st_size
    return own


def chosen_for_you(args, name):
    """Why this data set, when --dataset was not given."""
    if args.dataset:
        return ""
    found = "UCF-101 is" if name == "ucf101" else "no UCF-101 is"
    return f" (no --dataset given, and {found} under --data-root {args.data_root}; pass --dataset to choose)"


def test_sources(entries, video_dir, split_csv):
    """(entry, path) of each test video, every path confined to the video folder (CSV rows are data)."""
    return [(entry, runs.confined(video_dir, entry.path, f"{split_csv}: video path")) for entry in entries]


def run_test_split(args, procs):
    network, scale = load_at_scale(args, procs.device)
    engines = build_engines(network, procs.device, scale, args)
    name = cli.dataset_of(args)
    paths = prepare.ensure_dataset(args.data_root, name)
    video_dir, split_csv = paths["videos"], paths["split_csv"]
    entries = dataset.read_split(split_csv, "test")
    entries = entries[:args.limit] if args.limit else entries
    if procs.is_main:
        print(f"{name} test split ({split_csv}): {len(entries)} video(s){chosen_for_you(args, name)}")
    entries = procs.shard(entries)
    sources = test_sources(entries, video_dir, split_csv)
    out_root = runs.output_dir(args.data_root, args.model, scale, runs.generated_run_of(args))
    gt_root = runs.gt_dir(args.data_root, scale)
    made_by = made_by_of(args, network)
    written, skipped, failures, frames_out, bytes_out = 0, 0, [], 0, 0
    for entry, path in utils.progress(sources, f"{runs.DISPLAY_NAMES[args.model]} {scale}x"):
        dest = Destination.of(out_root, gt_root, entry.path, entry.name)
        try:
            source = open_source(path)
            check_length(source, scale + 1)
            records = records_of(source, args.data_root, (source.n_frames - 1) // scale * scale + 1, scale, made_by)
            with publish.exclusive(dest.frames):  # one writer per output video, across processes
                if dest.finished(records) and not args.overwrite:
                    skipped += 1
                    continue
                n_frames, n_bytes = write_test_video(source, dest, engines, scale, args.batch, records)
            written, frames_out, bytes_out = written + 1, frames_out + n_frames, bytes_out + n_bytes
        except UNREADABLE_ERRORS as error:  # one bad video must not stop the run; reported below
            failures.append(f"{entry.path}: {error}")
            tqdm.write(f"skipped {entry.path}: {error}", file=sys.stderr)
    per_frame = (f", {bytes_out / frames_out / 1024:.0f} KiB per output frame (PNG + MP4; input frames "
                 f"hard-linked to the ground truth not counted)") if frames_out else ""
    print(f"{written} video(s) written to {out_root}, {skipped} already finished (--overwrite redoes them), "
          f"{len(failures)} failed; ground truth in {gt_root}{per_frame}")
    for failure in failures:
        print(f"  FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


# ----------------------------------------------------------------------------- single-video mode
def load_at_scale(args, device, input_fps=None):
    """(network, scale): --scale, else the factor --fps asks of the input, else the scale the
    checkpoint was trained for (a FLAVR_4x release runs at 4x), else 2."""
    asked = resolve_scale(args.scale, args.fps, input_fps) if input_fps is not None else args.scale
    network = load_model(args, asked or 2, device)
    return network, asked or trained_scale(network) or 2


def trained_scale(network):
    """The scale a fixed-output network was trained for; None for one that takes any t."""
    return None if registry.consumes(network.config).any_t else network.config["scale"]


def resolve_scale(scale, fps, input_fps):
    """--scale, or the integer factor that --fps asks for (None when neither is given)."""
    if fps is None:
        return scale
    factor = round(fps / input_fps)
    if factor < 2 or abs(factor * input_fps - fps) > 1e-3 * fps:
        raise ASVFIError(f"--fps {fps:g}: not an integer multiple (at least 2x) of the input's {input_fps:g} fps")
    if scale and scale != factor:
        raise ASVFIError(f"--scale {scale} and --fps {fps:g} disagree (the input is {input_fps:g} fps)")
    if factor * input_fps != fps:  # e.g. 60 asked of 29.97 (30000/1001) fps: the output is 59.94
        print(f"note: --fps {fps:g} is {factor}x of the input's {input_fps:.5g} fps; the output runs at "
              f"{factor * input_fps:.5g} fps", file=sys.stderr)
    return factor


def open_single_input(path, input_fps):
    """The Source of --input, or an ASVFIError that says why it cannot be used."""
    try:
        source = open_source(path, **({} if input_fps is None else {"folder_fps": input_fps}))
        check_length(source)
    except FileNotFoundError:
        raise ASVFIError(f"{path}: no such file or folder") from None
    except InputError:
        raise
    except UNREADABLE_ERRORS as error:
        raise ASVFIError(f"{path}: cannot be read as a video or a folder of frames ({error})") from None
    if source.images is not None and input_fps is None:
        print(f"note: {path} is a folder of frames, which holds no frame rate: {source.fps:g} fps assumed; "
              f"set it with --input-fps", file=sys.stderr)
    return source


def run_single(args, procs):
    source = open_single_input(args.input, args.input_fps)
    network, scale = load_at_scale(args, procs.device, source.fps)
    engines = build_engines(network, procs.device, scale, args)
    wave = load_wave(source)
    warn_resampling(source)
    output = Path(args.output)
    expected = (source.n_frames - 1) * scale + 1
    written = 0
    # VideoWriter writes to a temporary file and renames it on success: no half-written output, and
    # a file replaced with --overwrite stays as it was when the run fails.
    with publish.write_errors_named(output, "nothing was written there"), \
            video_io.VideoWriter(output, source.fps * scale, source.width, source.height,
                                 **output_audio(source, wave)) as writer:
        stream = interpolate_video(source_frames(source), engines, wave, args.batch, source.fps)
        for frame, _ in utils.progress(stream, f"{scale}x", unit="frame", total=expected):
            writer.write(frame)
            written += 1
    print(f"{output}: {written} frames at {source.fps * scale:g} fps "
          f"({source.n_frames} in, {scale}x, {frame_size(source.width, source.height, writer.stored_size)})")
    return 0


def frame_size(width, height, stored):
    """`WxH`, and the size the encoder stored where the writer padded the frames to even sizes."""
    size = f"{width}x{height}"
    if stored == (width, height):
        return size
    return (f"{size}, stored as {stored[0]}x{stored[1]} (yuv420p needs even sizes: ASVFI's reader crops back "
            f"to {size} by the file's size tag, other players show the replicated edge line)")


# ----------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="asvfi", choices=list(registry.MODELS))
    p.add_argument("-s", "--scale", type=int, default=None,
                   help="2, 4, 8, ... (default: what --fps asks, else the checkpoint's trained scale, else 2)")
    cli.add_run_flags(p)
    cli.add_checkpoint_flags(p)
    cli.add_data_flags(p)
    machine = cli.add_machine_flags(p)
    cli.add_amp_flag(machine)
    p.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--limit", type=int, default=0, help="only the first N test videos")
    p.add_argument("--overwrite", action="store_true",
                   help="redo test videos that are already finished; replace an existing --output")
    p.add_argument("--tile", type=int, default=0, help="split frames into tiles of this size (0 = off)")
    p.add_argument("--tile-overlap", type=int, default=TILE_OVERLAP)
    p.add_argument("--heat", type=float, default=0.3, help="PerVFI sampling temperature")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of a sampling model's noise (PerVFI): each window's is drawn from (seed, its index)")
    p.add_argument("--flow-estimator", default=None, choices=flow.FLOW_ESTIMATORS,
                   help="PerVFI's flow estimator (default: the checkpoint's; raft_sintel for the authors' "
                        "v00.pth, with DIS and a warning when its weights cannot be had; one named here "
                        "runs or stops the command)")
    single = p.add_argument_group("single-video mode")
    single.add_argument("--input", default=None, help="a video file or a folder of frames")
    single.add_argument("--output", default=None, help="output video: .mp4, .mov, .mkv (H.264 + AAC) or .avi (MPEG-4 + PCM)")
    single.add_argument("--fps", type=float, default=None, help="target frame rate instead of --scale")
    single.add_argument("--input-fps", type=float, default=None,
                        help="frame rate of a folder of frames (default 25, with a note)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = cli.fill_preset_lr(p.parse_args(argv))
    if bool(args.input) != bool(args.output):
        p.error("--input and --output go together")
    if args.fps and not args.input:
        p.error("--fps is for single-video mode (--input/--output); the test split uses --scale")
    if args.tile and not 0 <= args.tile_overlap < args.tile:
        default = " (the default)" if args.tile_overlap == TILE_OVERLAP else ""
        p.error(f"--tile-overlap {args.tile_overlap}{default} must be in [0, --tile {args.tile}): "
                f"a larger --tile or a smaller --tile-overlap")
    if args.scale is not None and args.scale < 2:
        p.error(f"--scale {args.scale}: must be at least 2 (2, 4, 8, ...)")
    cli.refuse_checkpoint_for_baseline(p, args)
    if args.flow_estimator and args.model != "pervfi":
        p.error(f"--flow-estimator is PerVFI's (--model pervfi): --model {args.model} would ignore it")
    if args.input and Path(args.output).resolve() == Path(args.input).resolve():
        p.error(f"--output {args.output} is the input: it would replace the source; choose another file")
    if args.input and Path(args.output).is_dir():
        p.error(f"--output {args.output} is a folder; give a file name such as {Path(args.output) / 'out.mp4'}")
    if args.input and Path(args.output).suffix.lower() not in video_io.WRITE_FORMATS:
        p.error(f"--output {args.output}: the video formats written are {', '.join(video_io.WRITE_FORMATS)} "
                f"(H.264 + AAC; .avi: MPEG-4 + PCM)")
    if args.input and Path(args.output).exists() and not args.overwrite:
        p.error(f"--output {args.output} already exists; pass --overwrite to replace it")
    if args.batch < 1:
        p.error("--batch must be at least 1")
    return args


def generate(argv=None):
    args = parse_args(argv)
    with runtime.processes(args.device, join_group=False) as procs:  # torchrun ranks shard the videos
        if args.input:
            return run_single(args, procs)
        if args.dataset in runs.TESTSET_FOLDERS:
            return run_testsets(args, procs)
        return run_test_split(args, procs)


def run_testsets(args, procs):
    network = load_model(args, args.scale or 2, procs.device)
    return testset_inference.run_testset(args, procs, network, made_by_of(args, network), runs.generated_run_of(args))


def main(argv=None):
    return cli.run_entry_point(generate, argv)


if __name__ == "__main__":
    sys.exit(main())
