"""dataset.VFIWindows: window indices, augmentation consistency, audio alignment, sources, workers.

Test videos are tiny (64x48, 30 frames) and their frames encode what they are: red = 8*index + 4,
green = 4*row, blue = 4*column. Read losslessly from PNG folders, every output pixel tells which
frame and which source pixel it came from.
"""
import dataclasses
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import dataset
import runs
import utils
import video_io
from dataset import Augmentation, Sampling, VFIWindows

FPS, HEIGHT, WIDTH, N_FRAMES = 25, 48, 64, 30
RATE = 16000
CLICK_FRAME = 13
CODED = "Coded/v_Coded_g01_c01.avi"          # coded frames, PCM audio with a click at CLICK_FRAME
CODED_AAC = "Coded/v_Coded_g02_c01.mp4"      # the same as H.264 + AAC (encoder priming to undo)
SILENT = "Coded/v_Coded_g03_c01.avi"         # no audio stream
SHORT = "Short/v_Short_g01_c01.avi"          # 12 frames: enough for 2x (7), not for 4x (13)


def coded_frame(index, height=HEIGHT, width=WIDTH):
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([np.full((height, width), 8 * index + 4), 4 * rows, 4 * cols], axis=-1).astype(np.uint8)


def click_track(n_frames):
    """Silence with one 2 ms windowed 3 kHz burst whose peak sits exactly at frame CLICK_FRAME's time."""
    wave = np.zeros(int(n_frames / FPS * RATE), np.float32)
    burst = np.hanning(33) * np.sin(2 * np.pi * 3000 * (np.arange(33) - 16) / RATE + np.pi / 2)
    centre = int(round(CLICK_FRAME / FPS * RATE))
    wave[centre - 16:centre + 17] = 0.8 * burst
    return wave


def write_video(path, n_frames, audio):
    with video_io.VideoWriter(path, FPS, WIDTH, HEIGHT, audio=audio) as writer:
        for j in range(n_frames):
            writer.write(coded_frame(j))


def write_split(root, relative_paths, has_audio_override=None):
    """Split CSV from the files' probes, every video in 'train' (tests pick train/eval mode themselves)."""
    rows = []
    for relative in relative_paths:
        info = video_io.probe(root / "demo" / relative)
        has_audio = info.has_audio if has_audio_override is None else has_audio_override.get(relative, info.has_audio)
        rows.append(dict(path=relative, category=relative.split("/")[0], split="train", fps=info.fps,
                         n_frames=info.n_frames, width=info.width, height=info.height, has_audio=has_audio,
                         audio_rate=info.audio_rate, duration=info.duration))
    pd.DataFrame(rows).to_csv(root / "demo_split.csv", index=False)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Data root with the tiny videos, their coded PNG frames (`coded_imgs`) and their decoded frames
    written the way `prepare --extract-frames` does (`demo_imgs`)."""
    root = tmp_path_factory.mktemp("tiny_windows")
    clicks = (click_track(N_FRAMES), RATE)
    write_video(root / "demo" / CODED, N_FRAMES, clicks)
    write_video(root / "demo" / CODED_AAC, N_FRAMES, clicks)
    write_video(root / "demo" / SILENT, N_FRAMES, None)
    write_video(root / "demo" / SHORT, 12, None)
    videos = [CODED, CODED_AAC, SILENT, SHORT]
    write_split(root, videos)
    for relative in videos:
        stem = relative.rsplit(".", 1)[0]
        n = video_io.probe(root / "demo" / relative).n_frames
        video_io.write_png_frames(root / "coded_imgs" / stem, [coded_frame(j) for j in range(n)])
        video_io.write_png_frames(root / "demo_imgs" / stem, video_io.iter_frames(root / "demo" / relative))
    return root


def root_with_split(tiny_root, tmp_path, edit=None):
    """A data root sharing `tiny_root`'s videos, its split CSV passed through `edit(table)`."""
    (tmp_path / "demo").symlink_to(tiny_root / "demo")
    table = pd.read_csv(tiny_root / "demo_split.csv")
    (table if edit is None else edit(table)).to_csv(tmp_path / "demo_split.csv", index=False)
    return tmp_path


def windows(root, scale, frames_root=None, **sampling):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SHORT is skipped at 4x/8x; tested on its own below
        return VFIWindows(root, "demo", "train", scale, Sampling(**sampling), frames_root=frames_root)


def video_index(data, relative):
    return [v.path for v in data.videos].index(relative)


def decode_codes(frames):
    """(N, 3, h, w) floats of coded frames → (frame index per frame, source rows, source cols)."""
    pixels = torch.round(frames * 255).to(torch.int64)
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    assert (red == red[:, :1, :1]).all(), "a frame mixes pixels of different source frames"
    return (red[:, 0, 0] - 4) // 8, green // 4, blue // 4


def all_frames(item):
    return torch.cat([item["inputs"], item["targets"]])


def assert_items_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ----------------------------------------------------------------------------- window geometry
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_window_indices_put_targets_between_inputs_two_and_three(scale):
    inputs, targets = dataset.window_indices(5, scale)
    assert inputs == [5, 5 + scale, 5 + 2 * scale, 5 + 3 * scale]
    assert targets == list(range(inputs[1] + 1, inputs[2]))
    assert len(targets) == scale - 1
    assert dataset.evaluation_starts(30, scale) == list(range(0, 30 - 3 * scale, scale))
    assert dataset.evaluation_starts(3 * scale, scale) == []


def test_evaluation_starts_include_the_last_window_that_ends_on_the_last_frame():
    """A window spans 3s+1 frames: 25 frames at 4x fit a window at 12 (frames 12..24); dropping it loses a middle interval."""
    assert dataset.evaluation_starts(25, 4) == [0, 4, 8, 12]
    assert dataset.window_indices(12, 4)[0][-1] == 24
    assert dataset.evaluation_starts(24, 4) == [0, 4, 8]
    assert dataset.evaluation_starts(13, 4) == [0] and dataset.evaluation_starts(7, 2) == [0]


def test_audio_segment_is_centred_on_the_interval_sample_for_sample_with_zeros_past_either_end():
    """Sample k of a segment is waveform sample round(centre * rate) - A // 2 + k, at its own time in
    interval units; samples before the waveform's start or past its end are zeros."""
    waveform = np.arange(1, 1001, dtype=np.float32)  # sample n holds n + 1: every value tells its index
    for t0, t1 in ((0.01, 0.02), (0.001, 0.003), (0.058, 0.062)):  # inside, over the start, over the end
        segment, times = dataset.audio_segment(waveform, t0, t1, 320)
        first = int(round((t0 + t1) / 2 * RATE)) - 160
        index = first + np.arange(320)
        inside = (index >= 0) & (index < len(waveform))
        np.testing.assert_array_equal(segment, np.where(inside, index + 1, 0).astype(np.float32))
        np.testing.assert_allclose(times, (index / RATE - t0) / (t1 - t0), rtol=1e-6, atol=1e-6)
    assert not dataset.audio_segment(waveform, 0.058, 0.062, 320)[0][-100:].any()
    assert not dataset.audio_segment(None, 0.01, 0.02, 320)[0].any()


def test_audio_length_is_three_intervals_at_the_slowest_fps_plus_a_hop_each_side_rounded_up_to_the_hop():
    """25 fps at 2x: 3 * 2 / 25 s = 3840 samples + 2 * 160 = 4160 (26 hops); 29.97 fps: 3203.2 + 320 → 23 hops."""
    assert dataset.audio_samples_for(25, 2) == 4160
    assert dataset.audio_samples_for(30, 4) == 6400 + 2 * utils.MEL_HOP
    assert dataset.audio_samples_for(29.97, 2) == 23 * utils.MEL_HOP


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_evaluation_windows_read_exactly_their_frames_and_cover_every_middle_interval(tiny_root, scale):
    data = windows(tiny_root, scale, frames_root=tiny_root / "coded_imgs")
    coded = [i for i, (v, _) in enumerate(data.eval_windows) if data.videos[v].path == CODED]
    middles = set()
    for index in coded:
        item = data[index]
        assert item["inputs"].shape == (4, 3, HEIGHT, WIDTH) and item["inputs"].dtype == torch.float32
        assert item["targets"].shape == (scale - 1, 3, HEIGHT, WIDTH)
        codes, rows, cols = decode_codes(all_frames(item))
        start = int(item["indices"][0])
        assert item["indices"].tolist() == sum(dataset.window_indices(start, scale), [])
        assert codes.tolist() == item["indices"].tolist()
        assert (rows == torch.arange(HEIGHT)[:, None]).all() and (cols == torch.arange(WIDTH)).all()
        assert torch.allclose(item["ts"], torch.arange(1, scale) / scale)
        middles.add((int(item["indices"][1]), int(item["indices"][2])))
    last = (N_FRAMES - 1) // scale - 2  # last k whose window (k-1)s .. (k+2)s fits
    assert middles == {(k * scale, (k + 1) * scale) for k in range(1, last + 1)}


def test_max_windows_per_video_spreads_windows_evenly(tiny_root):
    full = windows(tiny_root, 2)
    few = windows(tiny_root, 2, max_windows_per_video=3)
    starts = [s for v, s in few.eval_windows if few.videos[v].path == CODED]
    all_starts = [s for v, s in full.eval_windows if full.videos[v].path == CODED]
    assert starts == [all_starts[0], all_starts[len(all_starts) // 2], all_starts[-1]]


def test_evaluation_crop_is_the_centre_of_the_frame_rounded_down(tiny_root):
    """Evaluation crops are taken at ((H-h)//2, (W-w)//2): 48x64 frames cropped to 15x21 start at row 16, column 21."""
    data = windows(tiny_root, 2, frames_root=tiny_root / "coded_imgs", crop=(15, 21))
    item = data[0]
    assert item["inputs"].shape == (4, 3, 15, 21)
    _, rows, cols = decode_codes(all_frames(item))
    assert (rows == torch.arange(16, 31)[:, None]).all() and (cols == torch.arange(21, 42)).all()


def test_too_short_video_is_skipped_with_a_warning_naming_it(tiny_root):
    with pytest.warns(UserWarning, match=SHORT):
        data = VFIWindows(tiny_root, "demo", "train", 4)
    assert [path for path, _ in data.skipped] == [SHORT]
    assert SHORT not in [v.path for v in data.videos]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SHORT in [v.path for v in VFIWindows(tiny_root, "demo", "train", 2).videos]


def test_a_video_of_exactly_one_window_is_usable_and_the_crop_is_checked_per_axis(tiny_root):
    """4x needs 13 frames: 13 give a window, 12 do not. A 40x60 (h, w) crop fits 48x64 frames; 60x40 is too tall."""
    data = windows(tiny_root, 4)
    entry = data.videos[video_index(data, CODED)]
    assert data.why_unusable(dataclasses.replace(entry, n_frames=13)) is None
    assert data.why_unusable(dataclasses.replace(entry, n_frames=12))[0] == dataset.TOO_SHORT
    wide = windows(tiny_root, 4, train=True, crop=(40, 60))
    assert CODED in [v.path for v in wide.videos] and wide[0]["inputs"].shape == (4, 3, 40, 60)
    with pytest.raises(dataset.DataError, match="64x48 smaller than crop 40x60"):
        windows(tiny_root, 4, train=True, crop=(60, 40))


# ----------------------------------------------------------------------------- training augmentation
def test_training_augmentation_is_identical_across_the_window(tiny_root):
    data = windows(tiny_root, 4, frames_root=tiny_root / "coded_imgs", train=True, crop=(16, 24), vflip=True,
                   windows_per_video=12)
    seen = {"hflip": set(), "vflip": set(), "reverse": set()}
    for index in range(len(data)):
        v, start, aug = data.training_draw(index)
        item = data[index]
        assert item["inputs"].shape == (4, 3, 16, 24) and item["targets"].shape == (3, 3, 16, 24)
        codes, rows, cols = decode_codes(all_frames(item))
        assert codes.tolist() == item["indices"].tolist()
        inputs, targets = dataset.window_indices(start, 4)
        expected = inputs[::-1] + targets[::-1] if aug.reverse else inputs + targets
        assert item["indices"].tolist() == expected
        assert (rows == rows[0]).all() and (cols == cols[0]).all(), "crop/flip differs between frames"
        row_order = torch.arange(aug.top, aug.top + 16)
        col_order = torch.arange(aug.left, aug.left + 24)
        assert torch.equal(rows[0][:, 0], row_order.flip(0) if aug.vflip else row_order)
        assert torch.equal(cols[0][0], col_order.flip(0) if aug.hflip else col_order)
        plain = data.window(v, start)
        assert torch.equal(item["audio"], plain["audio"].flip(0) if aug.reverse else plain["audio"])
        expected_times = 1 - plain["audio_times"].flip(0) if aug.reverse else plain["audio_times"]
        assert torch.allclose(item["audio_times"], expected_times)
        assert (item["audio_times"].diff() > 0).all()
        for name in seen:
            seen[name].add(getattr(aug, name))
    assert all(values == {False, True} for values in seen.values()), seen


def test_random_crop_offsets_reach_the_last_position_on_both_axes():
    """A crop one pixel smaller than the frame can start at 0 or 1 on each axis; never reaching 1 would bias crops."""
    sampling = Sampling(train=True, crop=(6, 8))
    draws = [dataset.draw_augmentation(np.random.default_rng(seed), (7, 9), sampling) for seed in range(40)]
    assert {d.top for d in draws} == {0, 1} and {d.left for d in draws} == {0, 1}
    assert all((d.height, d.width) == (6, 8) for d in draws)
    whole = dataset.draw_augmentation(np.random.default_rng(0), (6, 8), sampling)
    assert (whole.top, whole.left) == (0, 0)


def test_flips_and_reversal_are_drawn_half_the_time_and_never_when_turned_off():
    def fractions(sampling):
        draws = [dataset.draw_augmentation(np.random.default_rng(seed), (8, 8), sampling) for seed in range(400)]
        return [np.mean([getattr(d, name) for d in draws]) for name in ("hflip", "vflip", "reverse")]
    assert all(0.42 < f < 0.58 for f in fractions(Sampling(train=True, vflip=True)))
    assert fractions(Sampling(train=True, hflip=False, vflip=False, reverse=False)) == [0, 0, 0]


def test_training_window_starts_reach_the_last_window_of_a_video(tiny_root):
    """30 frames at 8x fit windows starting at 0..5; never drawing 5 would never train on the last frames."""
    data = windows(tiny_root, 8, train=True, windows_per_video=40)
    coded = video_index(data, CODED)
    starts = {start for v, start, _ in map(data.training_draw, range(len(data))) if v == coded}
    assert starts == set(range(N_FRAMES - dataset.frames_needed(8) + 1))


def test_colour_jitter_factors_stay_non_negative_above_strength_one():
    draws = [dataset.draw_jitter(np.random.default_rng(seed), 1.5) for seed in range(20)]
    factors = np.array([draw[1:4] for draw in draws])
    assert factors.min() >= 0 and factors.max() <= 2.5 and all(-1.5 <= draw[4] <= 1.5 for draw in draws)


def test_training_draws_depend_only_on_seed_epoch_and_index(tiny_root):
    def items(epoch, seed=0):
        data = windows(tiny_root, 2, train=True, crop=16, windows_per_video=2, seed=seed)
        data.set_epoch(epoch)
        return [data.training_draw(i) for i in range(len(data))], data[3]

    draws, item = items(epoch=1)
    again, item_again = items(epoch=1)
    assert draws == again
    assert_items_equal(item, item_again)
    assert items(epoch=2)[0] != draws
    assert items(epoch=1, seed=1)[0] != draws


def test_frames_from_video_equal_frames_from_extracted_pngs(tiny_root):
    from_video = windows(tiny_root, 2, train=True, crop=(16, 24), windows_per_video=3)
    from_pngs = windows(tiny_root, 2, train=True, crop=(16, 24), windows_per_video=3,
                        frames_root=tiny_root / "demo_imgs")
    for index in range(len(from_video)):
        assert_items_equal(from_video[index], from_pngs[index])
    full = windows(tiny_root, 8)
    full_pngs = windows(tiny_root, 8, frames_root=tiny_root / "demo_imgs")
    for index in (0, len(full) - 1):
        assert_items_equal(full[index], full_pngs[index])


def test_decoded_windows_hold_the_frames_at_their_indices(tiny_root):
    data = windows(tiny_root, 8, train=True, windows_per_video=2, hflip=False)  # reversal stays on
    for index in range(len(data)):
        item = data[index]
        decoded = video_io.read_frames(tiny_root / "demo" / item["video"], 0, N_FRAMES)
        expected = torch.from_numpy(decoded[item["indices"].numpy()]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(all_frames(item), expected)
        red = (all_frames(item)[:, 0].mean((1, 2)) * 255 - 4) / 8
        assert torch.allclose(red, item["indices"].float(), atol=0.25)  # lossy, but the index still reads


def test_workers_and_ranks_see_the_same_items_as_one_process(tiny_root):
    data = windows(tiny_root, 2, train=True, crop=16, windows_per_video=2)

    def epoch_batches(loader, epoch):
        data.set_epoch(epoch)
        return list(loader)

    single = DataLoader(data, batch_size=3, num_workers=0)
    expected = [epoch_batches(single, epoch) for epoch in (0, 1)]
    workers = DataLoader(data, batch_size=3, num_workers=2, persistent_workers=True)
    got = [epoch_batches(workers, epoch) for epoch in (0, 1)]
    for batches, reference in zip(got, expected):
        assert len(batches) == len(reference)
        for batch, ref in zip(batches, reference):
            assert_items_equal(batch, ref)
    assert not torch.equal(expected[0][0]["inputs"], expected[1][0]["inputs"])
    ranks = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(len(data)))
    data.set_epoch(1)
    for index in ranks[1]:
        batch, position = expected[1][index // 3], index % 3
        assert torch.equal(data[index]["inputs"], batch["inputs"][position])


# ----------------------------------------------------------------------------- audio
@pytest.mark.parametrize("relative", [CODED, CODED_AAC])
@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_click_lands_at_its_frame_time(tiny_root, relative, scale, reverse):
    data = windows(tiny_root, scale)
    start = CLICK_FRAME - scale - 1  # the click frame is the first target
    item = data.window(video_index(data, relative), start, Augmentation(reverse=reverse))
    assert item["has_audio"].item() is True
    assert item["audio"].shape == (dataset.audio_samples_for(FPS, scale),)
    times = video_io.frame_times(tiny_root / "demo" / relative)
    interval = times[start + 2 * scale] - times[start + scale]
    expected = (times[CLICK_FRAME] - times[start + scale]) / interval
    assert abs(expected - 1 / scale) < 1e-6
    if reverse:
        expected = 1 - expected
    peak = int(item["audio"].abs().argmax())
    assert abs(float(item["audio_times"][peak]) - expected) * interval < 0.010


@pytest.mark.parametrize("scale", [2, 8])
def test_audio_segment_covers_the_window_and_is_silent_past_the_file(tiny_root, scale):
    data = windows(tiny_root, scale)
    item = data.window(video_index(data, CODED), 0)
    times = item["audio_times"].double()
    assert len(times) % utils.MEL_HOP == 0
    assert times[0] <= -1 and times[-1] >= 2  # [t(i), t(i+3s)] in target-interval units
    step = times.diff()
    assert torch.allclose(step, torch.full_like(step, FPS / scale / RATE), rtol=2e-3)  # float32 times
    seconds = times * scale / FPS + (scale / FPS)  # t(i+s) = s / fps for this file
    before_start = seconds < -0.5 / RATE
    assert before_start.any() and (item["audio"][before_start] == 0).all()


def test_video_without_audio_gives_silence_and_flag(tiny_root):
    data = windows(tiny_root, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CSV says it is silent: nothing to warn about
        item = data.window(video_index(data, SILENT), 4)
    assert item["has_audio"].dtype == torch.bool and item["has_audio"].item() is False
    assert item["audio"].shape == (dataset.audio_samples_for(FPS, 2),) and (item["audio"] == 0).all()
    assert torch.isfinite(item["audio_times"]).all()


def test_csv_claiming_audio_for_a_silent_file_still_gives_silence(tiny_root, tmp_path):
    (tmp_path / "demo").symlink_to(tiny_root / "demo")
    write_split(tmp_path, [SILENT], has_audio_override={SILENT: True})
    data = VFIWindows(tmp_path, "demo", "train", 2)
    with pytest.warns(UserWarning, match="none decodes"):
        item = data[0]
    assert item["has_audio"].item() is False and (item["audio"] == 0).all()


def test_audio_cache_is_read_instead_of_decoding(tiny_root, tmp_path, monkeypatch):
    (tmp_path / "demo").symlink_to(tiny_root / "demo")
    shutil.copy(tiny_root / "demo_split.csv", tmp_path / "demo_split.csv")
    decoded = windows(tiny_root, 4).window(0, 3)
    waveform = video_io.read_audio(tiny_root / "demo" / CODED, RATE)
    cache = runs.audio_cache_path(runs.dataset_paths(tmp_path, "demo")["audio"], CODED)
    cache.parent.mkdir(parents=True)
    np.save(cache, waveform)

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio decoded although the cache exists")
    monkeypatch.setattr(video_io, "read_audio", no_decoding)
    cached = windows(tmp_path, 4).window(0, 3)
    assert cached["video"] == CODED
    assert_items_equal(cached, decoded)


def test_frame_times_past_the_measured_ones_continue_at_the_video_fps():
    """Frame 3 of a file whose last measured time is frame 2 at 0.08 s sits one 1/25 s step later."""
    entry = dataset.VideoEntry("A/v.avi", "A", "train", 25.0, 6, WIDTH, HEIGHT, True)
    times = np.array([0.0, 0.04, 0.08])
    assert VFIWindows._frame_time(entry, times, 2) == pytest.approx(0.08)
    assert VFIWindows._frame_time(entry, times, 3) == pytest.approx(0.12)
    assert VFIWindows._frame_time(entry, times, 5) == pytest.approx(0.20)


def test_decoded_waveforms_are_kept_for_the_most_recently_used_videos_only(tiny_root):
    data = windows(tiny_root, 2)
    entries = [dataclasses.replace(data.videos[0], path=f"Fake/v_{i}.avi", name=f"v_{i}", has_audio=True)
               for i in range(dataset.WAVEFORM_CACHE_SIZE + 1)]
    decoded = []
    data._decode_audio = lambda entry: decoded.append(entry.path) or np.full(4, len(decoded), np.float32)
    for entry in entries[:-1]:
        data._waveform(entry)
    assert data._waveform(entries[0])[0] == 1  # used again: now the most recent
    data._waveform(entries[-1])  # one too many: the least recently used (entries[1]) goes
    assert list(data._waveforms) == [e.path for e in entries[2:-1] + entries[:1] + entries[-1:]]
    data._waveform(entries[0])
    data._waveform(entries[1])
    assert decoded == [e.path for e in entries] + [entries[1].path]


def test_has_audio_cells_written_as_words_or_digits_are_read_as_such(tmp_path):
    cells = ["yes", "no", "1", "0", "True", "false", " YES "]
    rows = [dict(path=f"A/v_{i}.avi", category="A", split="train", fps=25, n_frames=30, width=WIDTH,
                 height=HEIGHT, has_audio=value) for i, value in enumerate(cells)]
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    assert [e.has_audio for e in dataset.read_split(tmp_path / "split.csv")] == [True, False, True, False, True,
                                                                                  False, True]


def test_read_split_keeps_the_rows_of_the_split_asked_for(tiny_root, tmp_path):
    table = pd.read_csv(tiny_root / "demo_split.csv")
    table.loc[[1, 3], "split"] = "val"
    table.to_csv(tmp_path / "split.csv", index=False)
    assert [e.path for e in dataset.read_split(tmp_path / "split.csv", "val")] == [CODED_AAC, SHORT]
    assert [e.path for e in dataset.read_split(tmp_path / "split.csv", "train")] == [CODED, SILENT]
    assert len(dataset.read_split(tmp_path / "split.csv")) == 4


def test_names_stored_in_the_split_csv_are_kept_and_blank_ones_come_from_the_rows(tiny_root, tmp_path):
    """prepare names a video after every file it saw (`v_X.avi` beside a dropped `v_X.mp4` is
    `v_X_avi`): the CSV's rows alone would name it `v_X`, another cache entry and output folder."""
    table = pd.read_csv(tiny_root / "demo_split.csv")
    table["name"] = ["v_Coded_g01_c01_avi", None, None, None]
    table.to_csv(tmp_path / "split.csv", index=False)
    names = [entry.name for entry in dataset.read_split(tmp_path / "split.csv")]
    assert names == ["v_Coded_g01_c01_avi", "v_Coded_g02_c01", "v_Coded_g03_c01", "v_Short_g01_c01"]


@pytest.mark.parametrize("path, problem", [("../elsewhere/v.avi", "'..' in the path"), ("/data/v.avi", "absolute path")])
def test_a_split_csv_row_naming_a_file_outside_the_video_folder_is_refused(tiny_root, tmp_path, path, problem):
    """Inference writes beside each video it reads: a row may not lead out of the data root."""
    table = pd.read_csv(tiny_root / "demo_split.csv")
    table.loc[2, "path"] = path
    table.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(utils.ASVFIError, match=rf"split.csv: 1 path\(s\) not under the video folder: row 4: '{path}': {problem}"):
        dataset.read_split(tmp_path / "split.csv")


def test_a_split_csv_without_a_needed_column_names_the_missing_ones(tmp_path):
    pd.DataFrame([dict(path="A/v.avi", category="A", split="train", fps=25, n_frames=30)]).to_csv(
        tmp_path / "split.csv", index=False)
    with pytest.raises(dataset.DataError, match=r"split.csv: missing columns \['has_audio', 'height', 'width'\]"):
        dataset.read_split(tmp_path / "split.csv")


@pytest.mark.parametrize("scale, sampling, message", [
    (3, Sampling(), r"scale must be one of \(2, 4, 8\), got 3"),
    (2, Sampling(train=True, windows_per_video=0), "windows_per_video must be >= 1, got 0"),
    (2, Sampling(train=True, crop=(0, 16)), r"crop must be positive, got \(0, 16\)"),
])
def test_bad_dataset_arguments_are_refused_with_what_was_given(tiny_root, scale, sampling, message):
    with pytest.raises(ValueError, match=message):
        VFIWindows(tiny_root, "demo", "train", scale, sampling)


def test_a_split_without_videos_is_a_data_error_naming_it(tiny_root):
    with pytest.raises(dataset.DataError, match=r"demo_split.csv: split 'val' has no videos"):
        VFIWindows(tiny_root, "demo", "val", 2)


def test_the_audio_length_follows_the_slowest_video_of_every_split(tiny_root, tmp_path):
    """Training and validation windows must have one audio length: a 20 fps video in another split
    sets it for this one too."""
    def slow_val_row(table):
        table.loc[1, ["split", "fps"]] = ["val", 20.0]
        return table
    root = root_with_split(tiny_root, tmp_path, slow_val_row)
    data = windows(root, 2)
    assert data.audio_samples == dataset.audio_samples_for(20.0, 2) > dataset.audio_samples_for(FPS, 2)
    assert data[0]["audio"].shape == (data.audio_samples,)


def test_windows_outside_the_dataset_or_the_video_are_index_errors(tiny_root):
    data = windows(tiny_root, 2)
    for index in (-1, len(data)):
        with pytest.raises(IndexError, match=rf"window {index} out of range \({len(data)}\)"):
            data[index]
    coded = video_index(data, CODED)
    for start in (-1, N_FRAMES - dataset.frames_needed(2) + 1):
        with pytest.raises(IndexError, match=rf"{CODED}: window start {start} out of range for 30 frames at scale 2"):
            data.window(coded, start)


def test_frames_of_another_size_than_the_split_csv_says_are_a_data_error(tiny_root, tmp_path):
    def wider(table):
        table["width"] = WIDTH + 2
        return table
    data = windows(root_with_split(tiny_root, tmp_path, wider), 2)
    with pytest.raises(dataset.DataError, match=rf"{CODED}: frames are 64x48 but the split CSV says 66x48; re-run prepare"):
        data[0]


def test_a_damaged_stored_frame_index_is_scanned_instead(tiny_root, tmp_path):
    root = root_with_split(tiny_root, tmp_path)
    stored = runs.frame_index_path(runs.dataset_paths(root, "demo")["audio"], CODED)
    stored.parent.mkdir(parents=True)
    stored.write_text('{"key": [1, 2], "pts": [')
    assert_items_equal(windows(root, 2).window(0, 5), windows(tiny_root, 2).window(0, 5))


def test_extracted_frames_give_windows_once_the_videos_are_gone(tiny_root, tmp_path):
    """prepare may have extracted the frames of videos since deleted: frame times then follow the
    CSV's fps."""
    shutil.copy(tiny_root / "demo_split.csv", tmp_path / "demo_split.csv")
    frames = tmp_path / "frames"
    shutil.copytree(tiny_root / "coded_imgs", frames)
    data = windows(tmp_path, 2, frames_root=frames)
    with pytest.warns(UserWarning, match="no such video file.*using silence"):  # nor an audio cache
        item = data.window(video_index(data, CODED), 4)
    assert decode_codes(all_frames(item))[0].tolist() == item["indices"].tolist()
    reference = windows(tiny_root, 2, frames_root=frames)
    torch.testing.assert_close(item["audio_times"], reference.window(video_index(reference, CODED), 4)["audio_times"])
    assert item["has_audio"].item() is False


def test_audio_that_fails_to_decode_costs_the_sound_with_a_warning(tiny_root, monkeypatch):
    data = windows(tiny_root, 2)

    def broken(path, rate):
        raise video_io.MediaError(f"{path}: invalid data in the audio stream")
    monkeypatch.setattr(video_io, "read_audio", broken)
    with pytest.warns(UserWarning, match=rf"{CODED}: audio could not be decoded .*invalid data.*; using silence"):
        item = data.window(video_index(data, CODED), 4)
    assert item["has_audio"].item() is False and not item["audio"].any()


def test_blank_has_audio_cells_read_as_no_audio(tmp_path):
    rows = [dict(path=f"A/v_{i}.avi", category="A", split="train", fps=25, n_frames=30, width=WIDTH,
                 height=HEIGHT, has_audio=value) for i, value in enumerate([True, None, False])]
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    assert [entry.has_audio for entry in dataset.read_split(tmp_path / "split.csv")] == [True, False, False]


# ----------------------------------------------------------------------------- the demo set
def test_demo_windows_batch_with_the_default_collate(demo_root):
    train = VFIWindows(demo_root, "demo", "train", 2, Sampling(train=True, crop=64))
    val = VFIWindows(demo_root, "demo", "val", 2, Sampling(max_windows_per_video=2))
    assert train.audio_samples == val.audio_samples == dataset.audio_samples_for(25, 2)
    batch = next(iter(DataLoader(train, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert batch["inputs"].shape == (2, 4, 3, 64, 64) and batch["targets"].shape == (2, 1, 3, 64, 64)
    assert batch["audio"].shape == batch["audio_times"].shape == (2, train.audio_samples)
    assert batch["has_audio"].all() and (batch["audio"].abs().amax(1) > 0).all()
    assert 0 <= batch["inputs"].min() and batch["inputs"].max() <= 1
    item = val[len(val) - 1]
    assert item["inputs"].shape == (4, 3, 240, 320) and len(val) == 2 * len(val.videos)


def test_a_crop_larger_than_every_video_says_so_and_how_to_fix_it(tiny_root):
    with pytest.raises(ValueError, match=r"none of its 4 videos is usable: 3 smaller than the crop \(e\.g\. "
                                         r"Coded/v_Coded_g01_c01\.avi: 64x48 smaller than crop 96x96\); "
                                         r"1 too short .*--crop 0 for whole frames"):
        windows(tiny_root, 4, train=True, crop=96)


def test_no_warning_precedes_the_error_when_no_video_is_usable(tiny_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error says why; a warning listing each video would come first
        with pytest.raises(ValueError, match="none of its 4 videos is usable"):
            VFIWindows(tiny_root, "demo", "train", 4, Sampling(train=True, crop=96))


def test_the_skipped_videos_warning_names_a_few_and_counts_the_rest(tmp_path, monkeypatch):
    shorts = [f"Short/v_Short_g0{g}_c01.avi" for g in (1, 2, 3)]
    for relative in shorts:
        write_video(tmp_path / "demo" / relative, 12, None)
    write_video(tmp_path / "demo" / SILENT, 13, None)
    write_split(tmp_path, [*shorts, SILENT])
    monkeypatch.setattr(dataset, "SKIPPED_SHOWN", 2)
    with pytest.warns(UserWarning, match=r"skipped 3 of 4 videos: Short/v_Short_g01_c01\.avi \(12 frames < 13 "
                                         r"needed for one 4x window\), Short/v_Short_g02_c01\.avi \([^)]+\) "
                                         r"and 1 more$"):
        data = VFIWindows(tmp_path, "demo", "train", 4)
    assert [path for path, _ in data.skipped] == shorts and [v.path for v in data.videos] == [SILENT]


def test_the_crop_hint_is_given_only_when_a_video_was_dropped_for_the_crop():
    entry = dataset.VideoEntry("Short/v.avi", "Short", "train", FPS, 12, WIDTH, HEIGHT, False)
    short = [(entry, (dataset.TOO_SHORT, "12 frames < 13 needed"))]
    assert dataset.unusable_summary(short) == "1 too short for one window (e.g. Short/v.avi: 12 frames < 13 needed)"
    small = short + [(entry, (dataset.TOO_SMALL, "64x48 smaller than crop 96x96"))]
    assert dataset.unusable_summary(small).endswith("; train with a smaller --crop, or --crop 0 for whole frames")


# ----------------------------------------------------------------------------- colour jitter
def test_hue_rotation_matches_colorsys():
    import colorsys
    pixels = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    rotated = dataset.rotate_hue(pixels, 0.3)
    for r, g, b, out in zip(*pixels[0].reshape(3, -1).tolist(), rotated[0].reshape(3, -1).t().tolist()):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        assert out == pytest.approx(colorsys.hsv_to_rgb((h + 0.3) % 1.0, s, v), abs=1e-5)


def test_colour_jitter_is_one_draw_for_every_frame_of_a_window_in_its_drawn_order():
    frames = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(2)).expand(3, -1, -1, -1)
    brighter = dataset.jitter_colours(frames, ((0, 1, 2, 3), 1.04, 1.0, 1.0, 0.0))
    torch.testing.assert_close(brighter, (frames * 1.04).clamp(0, 1))
    greyer = dataset.jitter_colours(frames, ((2, 0, 1, 3), 1.0, 1.0, 0.0, 0.0))
    assert torch.allclose(greyer, greyer[:, :1].expand_as(greyer))  # saturation 0: grey
    contrast = dataset.jitter_colours(frames, ((1, 0, 2, 3), 1.0, 0.0, 1.0, 0.0))
    torch.testing.assert_close(contrast, dataset.grey(frames).mean(dim=(-3, -2, -1), keepdim=True).expand_as(frames))
    draws = [dataset.draw_augmentation(np.random.default_rng(5), (6, 7), Sampling(train=True, color_jitter=0.05))
             for _ in range(2)]
    order, *factors = draws[0].jitter
    assert draws[0] == draws[1] and sorted(order) == [0, 1, 2, 3]
    assert all(0.95 <= f <= 1.05 for f in factors[:3]) and -0.05 <= factors[3] <= 0.05
    same = np.repeat(np.uint8(frames[:1].permute(0, 2, 3, 1) * 255), 3, 0)
    out = dataset.augment(same, [0, 1, 2], draws[0])
    plain = dataset.augment(same, [0, 1, 2], Augmentation(top=draws[0].top, left=draws[0].left))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]) and not torch.equal(out, plain)
    torch.testing.assert_close(out, dataset.jitter_colours(plain, draws[0].jitter))
    no_jitter = dataset.draw_augmentation(np.random.default_rng(5), (6, 7), Sampling(train=True))
    assert no_jitter.jitter is None and (no_jitter.top, no_jitter.left) == (draws[0].top, draws[0].left)


def test_contrast_jitter_blends_each_frame_with_its_own_mean_luma():
    """torchvision's adjust_contrast takes the grey mean per image: a dark and a bright frame of one window keep their own means."""
    rng = np.random.default_rng(7)
    frames = np.stack([0.2 * rng.random((3, 4, 5)), 0.6 + 0.4 * rng.random((3, 4, 5))])
    luma_mean = (0.2989 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]).mean(axis=(1, 2))
    expected = np.clip(0.5 * frames + 0.5 * luma_mean[:, None, None, None], 0, 1)
    out = dataset.jitter_colours(torch.from_numpy(frames).float(), ((1, 0, 2, 3), 1.0, 0.5, 1.0, 0.0))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
