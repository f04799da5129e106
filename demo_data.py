"""The synthetic audio-visual demo set: real AVI files with real audio, UCF-101 layout.

    make_demo("../data")   # ../data/demo/<Category>/v_<Category>_gXX_cYY.avi (prepare.py writes its split)

Each category shows one way in which the sound tells what the frames cannot:
  loudness: a lamp (a still disc or square) whose brightness follows the loudness of a tone and which
            lights the scene (the background brightens with it); the loudness is redrawn at random
            for every frame (constant over the 40 ms centred on the frame), so the light of an
            in-between frame is independent of its neighbours but readable from the audio at that
            instant. Light, not size: every pixel carries the information, so a convolutional
            network reads it locally at any frame size (a size would be readable only by comparing
            the shape's edge with its centre, far apart at 320×240).
  impacts:  a ball that changes direction at random sub-frame instants (and at the walls), each
            impact making a click at exactly that moment.
"""
import cv2
import numpy as np

from runs import dataset_paths
from utils import progress
from video_io import VideoWriter

DEMO_CATEGORIES = {  # name → (mechanisms, shape of the pulsing object)
    "PulsingDisc": (("loudness",), "disc"),
    "PulsingSquare": (("loudness",), "square"),
    "BouncingBall": (("impacts",), "disc"),
    "BallAndDisc": (("loudness", "impacts"), "disc"),
}
DEMO_AUDIO_RATE = 44100
DEMO_FPS = 25
DEMO_SHAPE_RADIUS = (0.16, 0.21)  # range of the pulsing shape's radius, a fraction of the frame width
DEMO_BALL_RADIUS = 0.035  # the bouncing ball's radius, a fraction of the frame width
DEMO_MIN_BRIGHTNESS = 0.15  # the lamp's colour scale at loudness 0 (1.0 at loudness 1)
DEMO_LAMP_LIGHT = 60.0  # grey levels the lamp adds to the background at loudness 1 (0 at loudness 0)
DEMO_LOUDNESS_DB = 36.0  # loudness 0 → -36 dB, loudness 1 → 0 dB (peak amplitude 0.7)


def demo_loudness_to_brightness(loudness):
    """Scale of the lamp's colour for a loudness in [0, 1]; monotonic, linear."""
    return DEMO_MIN_BRIGHTNESS + (1.0 - DEMO_MIN_BRIGHTNESS) * np.asarray(loudness)


def demo_loudness_to_amplitude(loudness):
    """Tone amplitude for a loudness in [0, 1]: linear in dB, so log-mel energy is linear in loudness."""
    return 0.7 * 10.0 ** (-DEMO_LOUDNESS_DB * (1.0 - np.asarray(loudness)) / 20.0)


def _demo_background(rng, width, height, frames):
    """A smooth random texture, larger than the frame, panned at a constant velocity of -1, 0 or 1 pixel
    per frame on each axis (a slow camera pan)."""
    velocity = rng.integers(-1, 2, size=2)
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


def make_demo_clip(path, seed, kinds, shape="disc", frames=100, size=(320, 240), fps=DEMO_FPS, group_seed=None):
    """Render one demo clip (video + aligned audio) to `path`; returns the hidden per-frame ground truth.

    `size` is (width, height).
    """
    width, height = size
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
        radius = group_rng.uniform(*DEMO_SHAPE_RADIUS) * width
        truth.update(loudness=loudness, center=center, radius=radius, shape_color=shape_color)
    if "impacts" in kinds:
        ball_radius = DEMO_BALL_RADIUS * width
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
                image = np.clip(image + DEMO_LAMP_LIGHT * loudness[k], 0, 255).astype(np.uint8)
                color = tuple(float(c) * demo_loudness_to_brightness(loudness[k]) for c in shape_color)
                _draw_shape(image, center, radius, color, shape == "square")
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


def make_demo(out_root, seed=0, categories=None, groups=6, clips=2, size=(320, 240), frames=100, show_progress=True):
    """Render the demo videos under `{out_root}/demo/<Category>/v_<Category>_gXX_cYY.avi`; returns that folder.

    Clips of one group share background, colours and tone (like UCF's groups). Deterministic from
    `seed`. `size` is (width, height). The split CSV and 16 kHz audio cache are made by
    `prepare.prepare(out_root, "demo")` (prepare.build_demo does both).
    """
    video_dir = dataset_paths(out_root, "demo")["videos"]
    width, height = size
    names = list(categories or DEMO_CATEGORIES)
    unknown = [name for name in names if name not in DEMO_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown demo categories {unknown}; choose from {list(DEMO_CATEGORIES)}")
    # Seeded by the category's place in DEMO_CATEGORIES, not in `categories`, so that a category's
    # clips are the same whichever others are made with it.
    jobs = [(list(DEMO_CATEGORIES).index(name), name, g, k)
            for name in names for g in range(1, groups + 1) for k in range(1, clips + 1)]
    for c, name, g, k in progress(jobs, "make-demo", show_progress):
        path = video_dir / name / f"v_{name}_g{g:02d}_c{k:02d}.avi"
        kinds, shape = DEMO_CATEGORIES[name]
        make_demo_clip(path, np.random.SeedSequence([seed, c, g, k]), kinds, shape, frames=frames, size=size,
                       fps=DEMO_FPS, group_seed=np.random.SeedSequence([seed, c, g]))
    return video_dir
