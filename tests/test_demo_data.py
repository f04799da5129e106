"""The synthetic demo set (demo_data.py): its layout, what its groups share, what each category's sound
tells, and the hidden ground truth that the videos are rendered from."""
import numpy as np
import pytest

import demo_data
import runs
import video_io

FPS = demo_data.DEMO_FPS
SMALL = dict(frames=6, size=(96, 72), show_progress=False)


def clip(video_dir, category, group=1, number=1):
    return video_dir / category / f"v_{category}_g{group:02d}_c{number:02d}.avi"


def test_make_demo_returns_the_video_folder_in_ucf_layout(tmp_path):
    video_dir = demo_data.make_demo(tmp_path, categories=["PulsingSquare", "BouncingBall"], groups=2, clips=3, **SMALL)
    assert video_dir == runs.dataset_paths(tmp_path, "demo")["videos"]
    names = sorted(str(path.relative_to(video_dir)) for path in video_dir.rglob("*.avi"))
    assert names == sorted(f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in ("PulsingSquare", "BouncingBall")
                           for g in (1, 2) for k in (1, 2, 3))


def test_unknown_categories_are_refused_before_any_video_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"unknown demo categories \['Juggling'\]; choose from .*'PulsingDisc'"):
        demo_data.make_demo(tmp_path, categories=["PulsingDisc", "Juggling"], **SMALL)
    assert not list(tmp_path.rglob("*.avi"))


def test_clips_of_a_group_share_their_scene_but_not_their_content(tmp_path):
    """Like UCF's groups: one background per group, and each clip its own motion and sound."""
    video_dir = demo_data.make_demo(tmp_path, categories=["BouncingBall"], groups=2, clips=2, **SMALL)
    first, second, other = (video_io.read_frames(clip(video_dir, "BouncingBall", g, k), 0, 1)[0].astype(int)
                            for g, k in ((1, 1), (1, 2), (2, 1)))
    assert np.median(np.abs(first - second)) < 3 < 10 < np.median(np.abs(first - other))
    assert not np.array_equal(video_io.read_audio(clip(video_dir, "BouncingBall", 1, 1)),
                              video_io.read_audio(clip(video_dir, "BouncingBall", 1, 2)))


def test_another_seed_changes_the_sound_of_every_clip(tmp_path):
    for seed in (3, 4):
        demo_data.make_demo(tmp_path / str(seed), seed=seed, categories=["BouncingBall"], groups=1, clips=1, **SMALL)
    three, four = (video_io.read_audio(clip(runs.dataset_paths(tmp_path / str(seed), "demo")["videos"], "BouncingBall"))
                   for seed in (3, 4))
    assert not np.allclose(three, four, atol=1e-3)


def test_a_category_renders_the_same_clips_whichever_categories_come_with_it(tmp_path):
    """A subset of the demo set is a subset of its videos, not a new set under the same names."""
    alone = demo_data.make_demo(tmp_path / "alone", categories=["BouncingBall"], groups=1, clips=1, **SMALL)
    second = demo_data.make_demo(tmp_path / "with", categories=["PulsingDisc", "BouncingBall"], groups=1, clips=1,
                                 **SMALL)
    for read in (video_io.read_audio, lambda path: video_io.read_frames(path, 0, 6)):
        assert np.array_equal(read(clip(alone, "BouncingBall")), read(clip(second, "BouncingBall")))


def test_each_category_sounds_its_mechanisms(tmp_path):
    """Loudness: a tone (300-900 Hz); impacts: 3 kHz clicks; BallAndDisc has both."""
    sounds = {"PulsingDisc": {"tone"}, "PulsingSquare": {"tone"}, "BouncingBall": {"clicks"},
              "BallAndDisc": {"tone", "clicks"}}
    video_dir = demo_data.make_demo(tmp_path, groups=1, clips=1, frames=25, size=(96, 72), show_progress=False)
    for category, expected in sounds.items():
        audio = video_io.read_audio(clip(video_dir, category))
        power = np.abs(np.fft.rfft(audio)) ** 2
        freq = np.fft.rfftfreq(len(audio), 1 / 16000)
        tone, clicks = (power[band].sum() / power.sum() for band in ((freq > 250) & (freq < 1000), freq > 2000))
        heard = {name for name, share, least in (("tone", tone, 0.5), ("clicks", clicks, 0.1)) if share > least}
        assert heard == expected, category


def test_the_background_pans_by_a_whole_pixel_per_frame_at_a_constant_velocity(tmp_path):
    """A slow camera pan of -1, 0 or 1 pixel per frame on each axis, the same for the whole clip."""
    video_dir = demo_data.make_demo(tmp_path, categories=["BouncingBall"], groups=4, clips=1, frames=11,
                                    size=(96, 72), show_progress=False)
    pans = set()
    for group in range(1, 5):
        frames = video_io.read_frames(clip(video_dir, "BouncingBall", group), 0, 11).astype(int)
        found = set()
        for k in (5, 10):
            # the median, since the pan moves most pixels and the ball and the codec's errors only some
            error = {(dx, dy): np.median(np.abs(frames[k] - np.roll(frames[0], (k * dy, k * dx), axis=(0, 1)))
                                         [12:-12, 12:-12]) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
            best, second = sorted(error.values())[:2]
            assert best < 5 and second > 2 * best, group
            found.add(min(error, key=error.get))
        assert len(found) == 1, group
        pans |= found
    assert pans - {(0, 0)}, "no group's camera pans"


def test_the_lamp_goes_from_a_fraction_of_its_colour_when_silent_to_full_colour_over_36_db(tmp_path):
    path = tmp_path / "v_PulsingDisc_g01_c01.avi"
    truth = demo_data.make_demo_clip(path, seed=6, kinds=("loudness",), frames=30, size=(160, 120))
    frames = video_io.read_frames(path, 0, 30).astype(float)
    cx, cy = (int(v) for v in truth["center"])
    inner = int(truth["radius"] / 2)
    scale = frames[:, cy - inner:cy + inner, cx - inner:cx + inner].mean(axis=(1, 2)) / truth["shape_color"]
    slope, intercept = np.polyfit(truth["loudness"], scale.mean(axis=1), 1)
    assert intercept == pytest.approx(demo_data.DEMO_MIN_BRIGHTNESS, abs=0.03)
    assert intercept + slope == pytest.approx(1.0, abs=0.03)
    audio = video_io.read_audio(path)
    centres = (np.arange(1, 29) / FPS * 16000).astype(int)
    level_db = [10 * np.log10(np.mean(audio[c - 240:c + 240] ** 2)) for c in centres]
    assert max(level_db) - min(level_db) > 0.75 * demo_data.DEMO_LOUDNESS_DB  # the loudness covers [0, 1]


def test_a_square_lamp_fills_the_corners_a_disc_lamp_leaves_out(tmp_path):
    colours = {}
    for shape in ("square", "disc"):
        path = tmp_path / f"{shape}.avi"
        truth = demo_data.make_demo_clip(path, seed=2, kinds=("loudness",), shape=shape, frames=5, size=(160, 120))
        frames = video_io.read_frames(path, 0, 5).astype(float)
        cx, cy = (int(v) for v in truth["center"])
        corner = int(0.85 * truth["radius"])
        colours[shape] = np.abs(frames[:, cy + corner, cx + corner] - frames[:, cy, cx]).mean()
    assert colours["square"] < 10 < 30 < colours["disc"]


@pytest.fixture(scope="module")
def bouncing(tmp_path_factory):
    """The hidden path of a 4-second ball clip: positions at the frame times and impact times."""
    path = tmp_path_factory.mktemp("ball") / "v_BouncingBall_g01_c01.avi"
    truth = demo_data.make_demo_clip(path, seed=11, kinds=("impacts",), frames=100, size=(160, 120))
    times = np.arange(100) / FPS
    impacts_after = np.array([np.sum((truth["impacts"] > a) & (truth["impacts"] <= b))
                              for a, b in zip(times, times[1:])])  # impacts in each frame interval
    return truth["ball"], truth["impacts"], times, impacts_after


def test_the_ball_moves_in_a_straight_line_at_constant_speed_between_impacts(bouncing):
    ball, _, _, impacts_after = bouncing
    free = (impacts_after[:-1] == 0) & (impacts_after[1:] == 0)
    assert free.sum() >= 20 and (~free).sum() >= 20
    second_difference = ball[2:] - 2 * ball[1:-1] + ball[:-2]
    assert np.abs(second_difference[free]).max() < 1e-6


def test_the_ball_turns_at_the_instant_of_its_impact(bouncing):
    """Where a lone impact falls between two frames, the lines through the frames on either side meet
    at the impact's time (turns are exact; a wall reflection is clipped to the wall, so is left out)."""
    ball, impacts, times, impacts_after = bouncing
    radius, (width, height) = demo_data.DEMO_BALL_RADIUS * 160, (160, 120)
    checked = 0
    for k in range(1, len(times) - 2):
        if impacts_after[k] != 1 or impacts_after[k - 1] or impacts_after[k + 1]:
            continue
        impact = impacts[(impacts > times[k]) & (impacts <= times[k + 1])][0]
        before, after = (ball[k] - ball[k - 1]) * FPS, (ball[k + 2] - ball[k + 1]) * FPS
        where = ball[k] + before * (impact - times[k])
        if np.any(np.abs(where - radius) < 1) or np.any(np.abs(where - [width - radius, height - radius]) < 1):
            continue
        change = after - before
        meet = change @ (ball[k] - ball[k + 1] + after * times[k + 1] - before * times[k]) / (change @ change)
        assert meet == pytest.approx(impact, abs=1e-4)
        checked += 1
    assert checked >= 5


def test_the_ball_stays_wholly_inside_the_frame(bouncing):
    """Its centre keeps a radius away from every edge."""
    ball = bouncing[0]
    radius = demo_data.DEMO_BALL_RADIUS * 160
    assert np.all(ball >= radius - 1e-9) and np.all(ball <= np.array([160, 120]) - radius + 1e-9)
