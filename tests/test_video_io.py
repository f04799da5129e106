"""Video/audio I/O (PyAV) and the demo data: round trips, ranges, alignment, odd sizes, corruption."""
import os

import av
import numpy as np
import pytest

import demo_data
import video_io

FPS = 25


def moving_frames(n, width=64, height=48):
    """Smooth frames whose content encodes their index (a bright bar at x = 2*index, gradient background)."""
    x = np.linspace(0, 120, width, dtype=np.float32)
    frames = []
    for i in range(n):
        frame = np.empty((height, width, 3), np.uint8)
        frame[...] = x[None, :, None].astype(np.uint8)
        frame[..., 1] = np.uint8(4 * i)
        frame[:, (2 * i) % width:(2 * i) % width + 4] = 250
        frames.append(frame)
    return frames


def tone(seconds, rate, hz=1000.0, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_video(path, frames, audio=None, gop=12, fps=FPS):
    height, width = frames[0].shape[:2]
    with video_io.VideoWriter(path, fps, width, height, audio=audio, gop=gop) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.mark.parametrize("ext, audio_rate", [("mp4", 48000), ("avi", 44100)])
def test_encode_probe_decode_round_trip(tmp_path, ext, audio_rate):
    frames = moving_frames(30)
    path = write_video(tmp_path / f"clip.{ext}", frames, audio=(tone(30 / FPS, audio_rate), audio_rate))
    info = video_io.probe(path)
    assert (info.n_frames, info.width, info.height, info.fps) == (30, 64, 48, FPS)
    assert info.has_audio and info.audio_rate == audio_rate and info.audio_channels == 1
    assert info.duration == pytest.approx(30 / FPS)
    decoded = video_io.read_frames(path, 0, 30)
    assert decoded.shape == (30, 48, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - np.stack(frames)).mean() < 3.0
    audio = video_io.read_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - 30 / FPS) < 1 / FPS
    np.testing.assert_allclose(video_io.frame_times(path), np.arange(30) / FPS, atol=1e-6)


@pytest.mark.parametrize("source_rate", [48000, 44100, 8000])
def test_resampling_keeps_a_1khz_tone_at_1khz(tmp_path, source_rate):
    path = write_video(tmp_path / "tone.mp4", moving_frames(25), audio=(tone(1.0, source_rate), source_rate))
    audio = video_io.read_audio(path, 16000)
    segment = audio[1600:1600 + 8000]  # 0.5 s away from the edges → 2 Hz bins
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    peak_hz = np.argmax(spectrum) * 16000 / len(segment)
    assert peak_hz == pytest.approx(1000.0, abs=2.0)
    assert np.sqrt(np.mean(segment ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_audio_sample_times_match_frame_times(tmp_path, ext):
    """A click written at the time of frame 17 is read back at sample 17/fps*16000 (AAC priming removed)."""
    rate = 48000
    wave = np.zeros(int(40 / FPS * rate), np.float32)
    click_at = 17 / FPS
    wave[int(click_at * rate):int(click_at * rate) + 24] = 0.9
    path = write_video(tmp_path / f"click.{ext}", moving_frames(40), audio=(wave, rate))
    audio = video_io.read_audio(path, 16000)
    click_time = np.argmax(np.abs(audio)) / 16000
    assert click_time == pytest.approx(video_io.frame_times(path)[17], abs=0.002)


def test_stereo_audio_is_mixed_to_mono_and_audio_from_copies_a_track(tmp_path):
    rate = 44100
    stereo = np.stack([tone(1.0, rate, 1000.0, 0.4), tone(1.0, rate, 1000.0, 0.4)])
    source = write_video(tmp_path / "stereo.mp4", moving_frames(25), audio=(stereo, rate))
    assert video_io.probe(source).audio_channels == 2
    copy = tmp_path / "copy.mp4"
    with video_io.VideoWriter(copy, FPS, 64, 48, audio_from=source) as writer:
        for frame in moving_frames(25):
            writer.write(frame)
    original, copied = video_io.read_audio(source), video_io.read_audio(copy)
    assert video_io.probe(copy).audio_rate == rate
    middle = slice(2000, 14000)
    assert np.corrcoef(original[middle], copied[middle])[0, 1] > 0.99


def test_audio_start_and_audio_until_place_the_sound_from_the_first_frame(tmp_path):
    """audio_start is the sound that plays with the first frame (earlier sound goes, a negative start
    leads with silence) and audio_until counts from that frame: a click at 0.5 s plays at 0.5 - start."""
    rate = 16000
    wave = np.zeros(2 * rate, np.float32)
    wave[rate // 2:rate // 2 + 24] = 0.9
    for n, (start, until, click, length) in enumerate(((0.3, 1.0, 0.2, 1.0), (-0.2, None, 0.7, 2.2))):
        path = tmp_path / f"shifted{n}.avi"  # PCM: every sample as written
        with video_io.VideoWriter(path, FPS, 64, 48, audio=(wave, rate), audio_start=start,
                                  audio_until=until) as writer:
            for frame in moving_frames(25):
                writer.write(frame)
        audio = video_io.read_audio(path, rate)
        assert np.argmax(np.abs(audio)) / rate == pytest.approx(click, abs=0.002)
        assert len(audio) / rate == pytest.approx(length, abs=0.01)


def test_audio_given_samples_first_keeps_both_channels(tmp_path):
    """A (T, 2) waveform is the same stereo track as its (2, T) transpose."""
    rate = 16000
    stereo = np.stack([tone(1.0, rate, 1000.0, 0.4), tone(1.0, rate, 500.0, 0.2)])
    paths = []
    for name, wave in (("channels_first.avi", stereo), ("samples_first.avi", stereo.T)):
        with video_io.VideoWriter(tmp_path / name, FPS, 64, 48, audio=(wave, rate)) as writer:
            for frame in moving_frames(25):
                writer.write(frame)
        paths.append(tmp_path / name)
    assert [video_io.probe(path).audio_channels for path in paths] == [2, 2]
    np.testing.assert_array_equal(video_io.read_audio(paths[1], rate), video_io.read_audio(paths[0], rate))
    decoded, decoded_rate = video_io._decode_audio(paths[1])  # each channel as written (16-bit PCM)
    assert decoded_rate == rate and decoded.shape == stereo.shape
    np.testing.assert_allclose(decoded, stereo, atol=1 / 32767)


def chunked_sound_video(path, audio_start, missing=(), rate=16000, chunk=1600, chunks=10, click_chunk=6):
    """25 flat frames and PCM audio written as `chunks` packets of `chunk` samples from sample
    `audio_start` (negative: before the first frame, stored as written), leaving out the chunks in
    `missing` (dropped packets); chunk `click_chunk` starts with a click."""
    with av.open(str(path), "w", container_options={"avoid_negative_ts": "disabled"}) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        for frame in moving_frames(25):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        for k in set(range(chunks)) - set(missing):
            wave = np.zeros(chunk, np.int16)
            wave[:80] = 30000 if k == click_chunk else 0
            sound = av.AudioFrame.from_ndarray(wave[None], format="s16", layout="mono")
            sound.sample_rate, sound.pts = rate, audio_start + k * chunk
            container.mux(audio.encode(sound))
        container.mux(audio.encode())
    return path


def test_sound_before_the_first_frame_is_trimmed_and_a_dropped_packet_leaves_silence(tmp_path):
    early = video_io.read_audio(chunked_sound_video(tmp_path / "early.mkv", audio_start=-800), 16000)
    assert np.argmax(np.abs(early) > 0.3) == 6 * 1600 - 800 and len(early) == 10 * 1600 - 800
    holed = video_io.read_audio(chunked_sound_video(tmp_path / "holed.mkv", audio_start=0, missing=(3,)), 16000)
    assert np.argmax(np.abs(holed) > 0.3) == 6 * 1600 and len(holed) == 10 * 1600
    assert not holed[3 * 1600:4 * 1600].any()


def test_sound_starting_after_the_first_frame_is_led_by_silence(tmp_path):
    """Audio whose first packet is at 0.05 s: sample n is still the sound at n / rate, zeros before."""
    late = video_io.read_audio(chunked_sound_video(tmp_path / "late.mkv", audio_start=800), 16000)
    assert np.argmax(np.abs(late) > 0.3) == 6 * 1600 + 800 and len(late) == 10 * 1600 + 800
    assert not late[:800].any()


def test_video_without_audio_reads_as_none(tmp_path):
    path = write_video(tmp_path / "silent.mp4", moving_frames(10))
    assert not video_io.probe(path).has_audio
    assert video_io.read_audio(path) is None


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_read_frames_range_equals_full_decode(tmp_path, ext):
    """Seeking to the key frame before `start` gives the same frames as decoding everything (H.264 has B-frames)."""
    path = write_video(tmp_path / f"range.{ext}", moving_frames(50), gop=12)
    full = video_io.read_frames(path, 0, 50)
    np.testing.assert_array_equal(np.stack(list(video_io.iter_frames(path))), full)
    for start, stop in [(1, 4), (11, 13), (12, 20), (23, 37), (47, 50), (49, 50)]:
        np.testing.assert_array_equal(video_io.read_frames(path, start, stop), full[start:stop])


def with_pts(index, pts, start_time=0.0):
    """`index` with other frame pts (None: a frame without one) and first-frame time."""
    keyframe = (index.keyframe + (False,) * len(pts))[:len(pts)]
    return video_io._FrameIndex(tuple(pts), keyframe, index.time_base, index.fps, start_time,
                                index.width, index.height)


def test_read_frames_decodes_from_the_start_when_pts_are_not_monotonic(tmp_path, monkeypatch):
    """Out-of-order pts (some AVIs): frames are counted in decode order and times come from index/fps."""
    path = write_video(tmp_path / "pts.avi", moving_frames(30))
    full = video_io.read_frames(path, 0, 30)
    index = video_io._frame_index(path)
    shuffled = index.pts[:5] + index.pts[5:10][::-1] + index.pts[10:]
    broken = with_pts(index, shuffled)
    monkeypatch.setattr(video_io, "_frame_index", lambda p: broken)
    np.testing.assert_array_equal(video_io.read_frames(path, 14, 21), full[14:21])
    np.testing.assert_allclose(video_io.frame_times(path), np.arange(30) / FPS)


def test_repeated_pts_are_not_timestamps_and_times_then_count_from_the_stream_start(tmp_path):
    """Two frames sharing a pts cannot both be placed by it: times come from start + index/fps, and
    a range is read by counting frames."""
    path = write_video(tmp_path / "dup.avi", moving_frames(30))
    full = video_io.read_frames(path, 0, 30)
    index = video_io._frame_index(path)
    repeated = with_pts(index, index.pts[:8] + index.pts[7:8] + index.pts[9:], start_time=0.5)
    np.testing.assert_allclose(video_io.frame_times(path, repeated), 0.5 + np.arange(30) / FPS)
    np.testing.assert_array_equal(video_io.read_frames(path, 6, 12, index=repeated), full[6:12])


def test_a_frame_index_claiming_frames_that_do_not_decode_is_a_media_error(tmp_path):
    """A frame index (a stale or wrong record) longer than what decodes: the read says how many
    frames decode instead of returning fewer than asked for."""
    path = write_video(tmp_path / "short.avi", moving_frames(12))
    index = video_io._frame_index(path)
    longer = with_pts(index, index.pts + (None,) * 3)
    with pytest.raises(video_io.MediaError, match=r"short.avi: only 12 frames decode, \[10, 15\) requested"):
        video_io.read_frames(path, 10, 15, index=longer)


def test_a_stored_frame_index_is_used_only_for_the_file_version_it_was_made_from(tmp_path):
    """The record is keyed by size and mtime: touching the file alone makes it stale, so it is scanned."""
    path = write_video(tmp_path / "clip.avi", moving_frames(12))
    record = video_io.frame_index_record(path)
    record.update(pts=record["pts"][:5], keyframe=record["keyframe"][:5])  # tells the two paths apart
    assert len(video_io.frame_index(path, record).pts) == 5
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert len(video_io.frame_index(path, record).pts) == 12
    assert len(video_io.frame_index(path, None).pts) == 12


def test_a_file_replaced_by_a_rename_is_scanned_again_even_with_the_same_size_and_mtime(tmp_path):
    """A new version moved over the old one (as atomic writers do) is another file, though its size
    and mtime match: what is read is the new file, not the frame index of the old one."""
    path = write_video(tmp_path / "clip.avi", moving_frames(20), gop=1)
    assert video_io.probe(path).n_frames == 20
    replacement = with_corrupt_packet(path, 10, tmp_path / "replacement.avi")
    stat = path.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert video_io.probe(path).n_frames == 19


def test_frame_times_spread_beyond_the_tolerance_are_variable_rate():
    steady = np.arange(10) / FPS
    assert video_io.constant_rate_drift(steady, FPS) is None
    assert video_io.constant_rate_drift(steady[:1], FPS) is None and video_io.constant_rate_drift(steady[:2], FPS) is None
    assert video_io.constant_rate_drift(steady + [0, 0.0015] * 5, FPS) is None  # intervals spread by 0.075 of one
    jittered = steady.copy()
    jittered[4:] += 0.02
    assert video_io.constant_rate_drift(jittered, FPS) == pytest.approx(0.02)
    assert video_io.constant_rate_drift(jittered + 3.0, FPS) == pytest.approx(0.02)  # from the first frame's time


def test_truncation_is_a_shortfall_of_more_than_a_tenth_or_two_frames():
    def info(duration, declared):
        return video_io.VideoInfo(fps=FPS, n_frames=round(duration * FPS), width=64, height=48, duration=duration,
                                  has_audio=False, audio_rate=0, audio_channels=0, declared_duration=declared)
    assert info(1.84, 2.0).truncation is None and info(1.82, 2.0).truncation is None
    assert "only 43 frames (1.72 s) decode of the 2.00 s" in info(1.72, 2.0).truncation
    assert info(0.44, 0.5).truncation is None  # 1.5 frames short: within two frames
    assert info(0.4, 0.5).truncation is not None
    assert info(1.0, 0.0).truncation is None  # no declared length


@pytest.mark.parametrize("start, stop", [(5, 9), (3, 3), (4, 2), (-2, 3)])
def test_read_frames_rejects_ranges_outside_the_video_naming_the_file(tmp_path, start, stop):
    """Past the end, empty, reversed or before the first frame: the error names the file, the range
    asked for and the frames the video has."""
    path = write_video(tmp_path / "short.avi", moving_frames(8))
    with pytest.raises(video_io.MediaError, match=rf"short.avi: frames \[{start}, {stop}\) requested but the video has 8 frames"):
        video_io.read_frames(path, start, stop)


def test_unreadable_file_error_names_it(tmp_path):
    path = tmp_path / "garbage.avi"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(video_io.MediaError, match="garbage.avi"):
        video_io.probe(path)


def with_corrupt_packet(path, k, out):
    """A copy of `path` at `out`, of the same size, whose k-th video packet is garbled."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    position, size = packets[k]
    data[position + 8:position + size] = np.random.default_rng(1).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def test_a_corrupt_packet_costs_only_its_frame(tmp_path):
    frames = moving_frames(20)
    path = write_video(tmp_path / "intra.avi", frames, gop=1)
    broken = with_corrupt_packet(path, 10, tmp_path / "broken.avi")
    info = video_io.probe(broken)
    assert info.n_frames == 19
    good, damaged = video_io.read_frames(path, 0, 20), video_io.read_frames(broken, 0, 19)
    np.testing.assert_array_equal(damaged, np.concatenate([good[:10], good[11:]]))
    times = video_io.frame_times(broken)  # times stay tied to the stream, so audio stays aligned
    np.testing.assert_allclose(times, np.delete(np.arange(20) / FPS, 10), atol=1e-6)


class DemuxFailsAfter:
    """A container whose demuxer gives up with FFmpeg's InvalidDataError after `packets` packets,
    as it does on some garbled files; everything else is the real container."""

    def __init__(self, container, packets):
        self._container, self._packets = container, packets

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def demux(self, *streams):
        for count, packet in enumerate(self._container.demux(*streams)):
            if count == self._packets:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield packet


def test_a_demuxer_that_gives_up_keeps_the_frames_read_so_far(tmp_path, monkeypatch):
    path = write_video(tmp_path / "intra.avi", moving_frames(20), gop=1)
    good = video_io.read_frames(path, 0, 20)
    real_open = video_io._open
    monkeypatch.setattr(video_io, "_open", lambda p: DemuxFailsAfter(real_open(p), packets=12))
    video_io._scan_video.cache_clear()
    assert video_io.probe(path).n_frames == 12
    np.testing.assert_array_equal(video_io.read_frames(path, 0, 12), good[:12])


def test_sound_outlasting_the_picture_is_not_truncation_but_a_file_cut_short_is(tmp_path):
    """Matroska states only the file's length, which counts the audio: a whole file whose audio runs
    0.3 s past its 40 frames is not called truncated, while the same file cut in half is."""
    whole = write_video(tmp_path / "whole.mkv", moving_frames(40), audio=(tone(40 / FPS + 0.3, 16000), 16000))
    info = video_io.probe(whole)
    assert info.n_frames == 40 and info.truncation is None
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    assert "truncated or damaged file" in (video_io.probe(cut).truncation or "")


def test_a_silent_matroska_whose_video_starts_late_declares_its_picture_length(tmp_path):
    """Matroska states only the file's end: the video's length is that end less the first frame's
    time, so a whole clip starting at 0.5 s is not called truncated."""
    from test_inference_outputs import flash_and_click_video
    late = flash_and_click_video(tmp_path / "late.mkv", video_start=0.5, frames=40, audio_seconds=0)
    info = video_io.probe(late)
    assert info.n_frames == 40 and not info.has_audio and info.truncation is None
    assert info.declared_duration == pytest.approx(40 / FPS, abs=0.05)


def test_png_frames_are_identical_to_decoded_frames(tmp_path):
    decoded = video_io.read_frames(write_video(tmp_path / "p.mp4", moving_frames(12)), 0, 12)
    paths = video_io.write_png_frames(tmp_path / "frames", decoded, start=3)
    assert [p.name for p in paths[:2]] == ["frame_00003.png", "frame_00004.png"]
    np.testing.assert_array_equal(video_io.read_png_frames(tmp_path / "frames", 3, 15), decoded)
    np.testing.assert_array_equal(video_io.read_png_frames(tmp_path / "frames", 5), decoded[2:])


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_odd_sizes_read_back_at_the_size_written(tmp_path, ext):
    """4:2:0 needs even sizes: the file holds a padded frame, our readers return the 33x25 written."""
    frames = [frame[:25, :33].copy() for frame in moving_frames(10)]
    path = write_video(tmp_path / f"odd.{ext}", frames)
    info = video_io.probe(path)
    assert (info.width, info.height) == (33, 25)
    decoded = video_io.read_frames(path, 2, 6)
    assert decoded.shape == (4, 25, 33, 3)
    assert np.abs(decoded.astype(int) - np.stack(frames[2:6])).mean() < 4.0
    assert next(video_io.iter_frames(path)).shape == (25, 33, 3)


@pytest.mark.parametrize("rotation, quarter_turns", [(-90, -1), (90, 1), (180, 2), (60, 0)])
def test_a_rotated_video_reads_upright(tmp_path, rotation, quarter_turns):
    """A phone's portrait video is stored landscape with a display rotation: frames come back as a
    player shows them (probe's size too), in every reader and from a stored frame index. An angle
    that is no multiple of 90 degrees is not shown turned (players do not turn it either)."""
    frames = [frame[:32, :48].copy() for frame in moving_frames(8)]  # 48 wide, 32 high: asymmetric
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    upright = np.stack([np.rot90(frame, quarter_turns) for frame in frames])
    info = video_io.probe(path)
    assert (info.width, info.height) == upright.shape[2:0:-1] and info.n_frames == 8
    record = video_io.frame_index_record(path)
    for decoded in (video_io.read_frames(path, 0, 8), video_io.read_frames(path, 3, 6,
                    index=video_io.frame_index(path, record)), np.stack(list(video_io.iter_frames(path)))):
        expected = upright if len(decoded) == 8 else upright[3:6]
        assert decoded.shape == expected.shape and np.abs(decoded.astype(int) - expected).mean() < 4.0


@pytest.mark.parametrize("frame", [np.zeros((48, 63, 3), np.uint8), np.zeros((48, 64, 3), np.float32)])
def test_writer_rejects_frames_of_the_wrong_size_or_type_and_leaves_no_file(tmp_path, frame):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match=r"bad.mp4: frame must be uint8 \(48, 64, 3\)"):
        with video_io.VideoWriter(path, FPS, 64, 48) as writer:
            writer.write(frame)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, kwargs, message", [
    ("clip.webm", {}, r"clip.webm: cannot write .webm; the video formats written are .mp4, .mov, .mkv, .avi"),
    ("clip", {}, r"clip: cannot write a file without an extension"),
    ("clip.mp4", {"audio": (np.zeros(100, np.float32), 16000), "audio_from": "other.mp4"}, r"clip.mp4: give either"),
    ("clip.mp4", {"audio": (np.zeros((3, 100), np.float32), 16000)}, r"must be \(T,\), \(C, T\) or \(T, C\) with C <= 2"),
])
def test_writer_refuses_what_it_cannot_write_before_writing_anything(tmp_path, name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        video_io.VideoWriter(tmp_path / name, FPS, 64, 48, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- demo data
def test_demo_loudness_is_readable_from_audio_but_not_from_neighbouring_frames(tmp_path):
    path = tmp_path / "v_PulsingDisc_g01_c01.avi"
    truth = demo_data.make_demo_clip(path, seed=5, kinds=("loudness",), frames=100)
    audio = video_io.read_audio(path)
    centres = (np.arange(1, 99) / FPS * 16000).astype(int)
    level_db = np.array([10 * np.log10(np.mean(audio[c - 240:c + 240] ** 2)) for c in centres])
    loudness = truth["loudness"][1:99]
    assert np.corrcoef(loudness, level_db)[0, 1] > 0.99
    slope = np.polyfit(loudness, level_db, 1)[0]
    assert slope == pytest.approx(demo_data.DEMO_LOUDNESS_DB, rel=0.05)
    neighbours = (truth["loudness"][:98] + truth["loudness"][2:]) / 2
    assert abs(np.corrcoef(loudness, neighbours)[0, 1]) < 0.3


def test_demo_lamp_and_its_light_follow_loudness_in_the_decoded_frames(tmp_path):
    path = tmp_path / "v_PulsingDisc_g01_c01.avi"
    truth = demo_data.make_demo_clip(path, seed=6, kinds=("loudness",), frames=30)
    frames = video_io.read_frames(path, 0, 30).astype(float)
    cx, cy = (int(v) for v in truth["center"])
    inner = int(truth["radius"] / 2)
    mean_colour = frames[:, cy - inner:cy + inner, cx - inner:cx + inner].mean(axis=(1, 2))
    expected = np.outer(demo_data.demo_loudness_to_brightness(truth["loudness"]), truth["shape_color"])
    assert np.abs(mean_colour - expected).max() < 6  # codec error only
    assert truth["radius"] > 0.1 * 320  # large enough to matter in the frame's PSNR
    corner = frames[:, :40, :40].mean(axis=(1, 2, 3))  # background only: the lamp sits in the middle
    assert np.corrcoef(corner, truth["loudness"])[0, 1] > 0.95
    assert np.polyfit(truth["loudness"], corner, 1)[0] == pytest.approx(demo_data.DEMO_LAMP_LIGHT, rel=0.15)


def test_demo_impacts_click_at_their_time(tmp_path):
    path = tmp_path / "v_BouncingBall_g01_c01.avi"
    truth = demo_data.make_demo_clip(path, seed=7, kinds=("impacts",), frames=50)
    audio = video_io.read_audio(path)
    gaps = np.diff(truth["impacts"])
    isolated = np.concatenate([[True], gaps > 0.01]) & np.concatenate([gaps > 0.01, [True]])
    isolated &= (truth["impacts"] > 0.01) & (truth["impacts"] < 1.99)
    impacts = truth["impacts"][isolated]
    assert len(impacts) >= 5
    for t in impacts:
        window = np.abs(audio[int(t * 16000) - 80:int(t * 16000) + 80])
        assert abs(np.argmax(window) - 80) / 16000 < 0.002  # the click is within 2 ms of the impact
    positions = truth["ball"]
    assert np.all(positions.min(0) >= 0) and np.all(positions[:, 0] <= 320) and np.all(positions[:, 1] <= 240)


def test_make_demo_is_deterministic(tmp_path):
    size = dict(categories=["BallAndDisc"], groups=1, clips=1, frames=10, show_progress=False)
    demo_data.make_demo(tmp_path / "a", seed=3, **size)
    demo_data.make_demo(tmp_path / "b", seed=3, **size)
    demo_data.make_demo(tmp_path / "c", seed=4, **size)
    name = "demo/BallAndDisc/v_BallAndDisc_g01_c01.avi"
    a, b, c = (video_io.read_frames(tmp_path / d / name, 0, 10) for d in "abc")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(video_io.read_audio(tmp_path / "a" / name), video_io.read_audio(tmp_path / "b" / name))
    assert not np.array_equal(a, c)


def test_demo_root_fixture_is_real_320x240_video_with_audio(demo_root):
    info = video_io.probe(demo_root / "demo" / "PulsingDisc" / "v_PulsingDisc_g01_c01.avi")
    assert (info.width, info.height, info.fps, info.n_frames) == (320, 240, 25.0, 48)
    assert info.has_audio and info.audio_rate == demo_data.DEMO_AUDIO_RATE


def test_png_frames_that_cannot_be_read_are_a_media_error_naming_the_file(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)
    paths = video_io.write_png_frames(tmp_path, frames)
    np.testing.assert_array_equal(video_io.read_png(paths[1]), frames[1])
    with pytest.raises(video_io.MediaError, match=r"frame_00001.png: frame of 8x6, the other frames are 4x2"):
        video_io.read_png(paths[1], shape=(2, 4, 3))
    paths[2].write_bytes(b"not a png")
    with pytest.raises(video_io.MediaError, match=r"frame_00002.png: missing or unreadable frame"):
        video_io.read_png_frames(tmp_path)
    with pytest.raises(video_io.MediaError, match="no frames"):
        video_io.read_png_frames(tmp_path / "empty")
