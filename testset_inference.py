"""Predictions on the standard image test sets (`inference.py --dataset flavr-ucf101|ucf101-triplets|
vimeo-septuplet|vimeo-triplet`).

Reads `runs.testset_dir(data_root, dataset)` with testsets.open_testset, refuses a model whose
number of input frames differs from the set's, runs the model at each sample's target times and
writes, per sample id, under `runs.testset_output_dir(data_root, model, dataset, run)/<sample_id>/`:

    pred.npy        float32 (n_targets, 3, H, W): the raw, unclamped model output (FLAVR scores floats)
    pred_<k>.png    target k (0-based), clamped to [0, 1] and rounded to 8 bits, for viewing
    identity.json   identity.output_record with the sample's target file as the source (written last)

A sample whose folder's identity is current is skipped (--overwrite redoes it); each sample folder
is written under a private partial name with its lock held and renamed into place when complete.
"""
import fractions
import math

import numpy as np
import torch

import dataset
import identity
import publish
import registry
import runs
import testsets
import utils
import video_io
from interpolate import Engine
from utils import ASVFIError

def model_input_count(config, testset):
    """The number of inputs the model takes on this set (registry.consumes(config).input_frames)."""
    allowed = registry.consumes(config).input_frames
    return testset.n_inputs if testset.n_inputs in allowed else allowed[0]


def open_checked(args):
    """The test set's reader, with its layout checked (the error names the first missing file)."""
    root = runs.testset_dir(args.data_root, args.dataset)
    try:
        return testsets.open_testset(args.dataset, root)
    except ValueError as error:
        raise ASVFIError(f"{error} (under --data-root {args.data_root})") from None


def check_fits(network, testset):
    try:
        testsets.check_model_fits(model_input_count(network.config, testset), testset)
    except ValueError as error:
        raise ASVFIError(f"--model {network.config['model']}: {error}") from None


def scale_of(target_times):
    """The smallest s for which every target time is a multiple of 1/s (2 for the mid-frame)."""
    return math.lcm(*(fractions.Fraction(t).limit_denominator(64).denominator for t in target_times))


def window_of(sample):
    """(1, 4, 3, H, W): the four inputs, or a 2-frame sample's pair with each edge replicated (as the
    streaming engine does at a video's ends: the two-frame models read only the middle two)."""
    inputs = list(sample.inputs)
    if len(inputs) == 2:
        inputs = [inputs[0], inputs[0], inputs[1], inputs[1]]
    return torch.stack(inputs)[None]


def predict(engine, sample, index):
    """Raw float32 (n_targets, 3, H, W) at the sample's target times; `index` (the sample's place in
    the test set) seeds a sampling model's noise."""
    inputs = window_of(sample).to(engine.device)
    n_audio = dataset.audio_samples_for(25, 1)
    audio, audio_times = dataset.audio_segment(None, 0.0, 1 / 25, n_audio)  # image sets: no sound
    extra = (audio[None], audio_times[None], False)
    if engine.consumes.any_t:
        ts = torch.tensor([sample.target_times], dtype=torch.float32)
        return engine.predict(inputs, *extra, [index], ts=ts)[0].cpu().numpy()
    native = [k / engine.scale for k in range(1, engine.scale)]
    picks = [native.index(t) if t in native else None for t in sample.target_times]
    if None in picks:
        raise ASVFIError(f"a model trained for {engine.scale}x gives only t = {native}; sample {sample.id} "
                         f"asks for t = {list(sample.target_times)}")
    return engine.predict(inputs, *extra, [index])[0, picks].cpu().numpy()


def write_sample(folder, pred, record):
    """pred.npy (raw), pred_<k>.png (8-bit) and identity.json into a partial folder, then publish it."""
    tmp = publish.fresh_folder(publish.partial_name(folder))
    with publish.removed_on_failure(tmp):
        with open(tmp / "pred.npy", "wb") as handle:
            np.save(handle, pred.astype(np.float32))
        for k, frame in enumerate(pred):
            pixels = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
            video_io.write_png_frames(tmp, [pixels])[0].rename(tmp / f"pred_{k}.png")
        identity.write_identity(tmp, record)
        publish.publish(tmp, folder)


def run_testset(args, procs, network, made_by, run):
    """Predict every sample of --dataset; made_by = (model, checkpoint, settings) for the records,
    run = the run part of the output folder (None for baselines)."""
    testset = open_checked(args)
    check_fits(network, testset)
    engine = Engine(network, procs.device, network.config["scale"], args.amp, args.tile, args.tile_overlap, args.seed)
    model, checkpoint, settings = made_by
    out_root = runs.testset_output_dir(args.data_root, model, args.dataset, run)
    indices = procs.shard(list(range(len(testset)))[:args.limit or None])
    written = skipped = 0
    for index in utils.progress(indices, f"{runs.DISPLAY_NAMES[model]} {args.dataset}", unit="sample"):
        sample_id = testset.sample_ids[index]
        folder = runs.confined(out_root, sample_id, f"{args.dataset}: sample id")
        target_file = testset.target_files(sample_id)[0]
        record = identity.output_record(target_file, args.data_root, len(testset.target_times),
                                        scale_of(testset.target_times), model, checkpoint,
                                        {**settings, "testset": args.dataset})
        with publish.write_errors_named(out_root, "finished samples are kept"), publish.exclusive(folder):
            if identity.is_current(folder, record) and not args.overwrite:
                skipped += 1
                continue
            publish.remove_leftovers(folder)
            write_sample(folder, predict(engine, testset[index], index), record)
            written += 1
    print(f"{written} sample(s) written to {out_root}, {skipped} already finished (--overwrite redoes them)")
    return 0

