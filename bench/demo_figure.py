"""Why the sound helps, shown: how much brighter each generated frame is than its neighbours, against the truth.

    python tools.py demo-figure --data-root ../data/demo-160x120 --tag-prefix demo_   # after `make demo`

On the demo's lamp videos the light of a frame follows the loudness at that instant and is
redrawn every frame, so the neighbours cannot tell it. For every generated frame of the test
split this plots, per method, the mean brightness of the prediction minus the mean of its two
input neighbours against the same for the ground truth. A model that reads the sound lies on the
diagonal (slope 1); one that cannot lies on the horizontal line (slope 0). Reads the frames that
`tools.py demo` (or inference.py) wrote; writes `figs/<prefix>light.png` and prints each slope.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import demo_data
import runs
import tools
import utils
import video_io

ABLATION = tools.load_bench("audio_ablation")  # the two ASVFI arms
DEMO = tools.load_bench("demo")  # the runs' tag prefix

SCALE = 2
LAMP_CATEGORIES = [name for name, (kinds, _) in demo_data.DEMO_CATEGORIES.items() if "loudness" in kinds]


def build_parser():
    p = argparse.ArgumentParser(prog="tools.py demo-figure", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../data/demo-160x120")
    p.add_argument("--tag-prefix", default=DEMO.TAG_PREFIX,
                   help=f"of the two ASVFI runs (tools.py demo's: {DEMO.TAG_PREFIX})")
    p.add_argument("--lr", default="2e-3", help="as typed in the runs' names")
    p.add_argument("--out-dir", default=".", help="root of figs/")
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def methods(args):
    """(label, folder of its generated frames) for the two ASVFI arms (best checkpoints) and DIS."""
    def arm(tag):
        best = runs.best_checkpoint_path("asvfi", runs.run_name("adamw", args.lr, tag))
        return runs.output_dir(args.data_root, "asvfi", SCALE, runs.generated_run("asvfi", "adamw", args.lr, checkpoint=best))
    return [(label, arm(args.tag_prefix + tag)) for tag, _, label in ABLATION.ARMS] + [
        ("DIS", runs.output_dir(args.data_root, "dis", SCALE))]


def mean_brightness(folder, index):
    path = Path(folder) / video_io.png_name(index)
    if not path.is_file():
        raise utils.ASVFIError(f"{path}: missing; run `python tools.py demo` (or inference.py) first")
    return float(video_io.read_png(path).mean(dtype=np.float64))


def generated_indices(n_frames):
    """Indices of the frames a 2x run generates: the odd ones with both neighbours."""
    return range(1, n_frames - 1, SCALE)


def truth_of(gt_video):
    """(generated indices, each one's true mean brightness, the mean of its two neighbours' means)."""
    means = [mean_brightness(gt_video, t) for t in range(len(list(Path(gt_video).glob("frame_*.png"))))]
    indices = generated_indices(len(means))
    return indices, np.array([means[t] for t in indices]), np.array([(means[t - 1] + means[t + 1]) / 2 for t in indices])


def lamp_test_videos(data_root):
    gt_root = runs.gt_dir(data_root, SCALE)
    videos = [video for category in LAMP_CATEGORIES for video in sorted((gt_root / category).glob("v_*"))]
    if not videos:
        raise utils.ASVFIError(f"{gt_root}: no lamp videos ({', '.join(LAMP_CATEGORIES)}); run `python tools.py demo` first")
    return videos


def collect(args):
    """label -> (truth, prediction): each generated frame's mean brightness minus its neighbours'
    mean, over every generated frame of the lamp test videos (each ground-truth frame read once)."""
    videos = lamp_test_videos(args.data_root)
    truth = {video: truth_of(video) for video in videos}
    results = {}
    for label, folder in methods(args):
        changes = [(true - around, np.array([mean_brightness(folder / video.parent.name / video.name, t)
                                             for t in indices]) - around)
                   for video, (indices, true, around) in truth.items()]
        results[label] = tuple(np.concatenate([pair[i] for pair in changes]) for i in (0, 1))
    return results


def slope(truth, prediction):
    return float(np.polyfit(truth, prediction, 1)[0])


def plot(results, path, title):
    figure = Figure(figsize=(5.4, 4.4), tight_layout=True)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    limit = max(np.abs(truth).max() for truth, _ in results.values())
    axis.plot([-limit, limit], [-limit, limit], color="0.7", lw=1, zorder=0)
    for (label, (truth, prediction)), marker in zip(results.items(), "o^s"):
        axis.scatter(truth, prediction, s=10, marker=marker, alpha=0.6, label=f"{label} (slope {slope(truth, prediction):.2f})")
    axis.set(xlabel="true frame − mean of its neighbours (grey levels)",
             ylabel="generated frame − mean of its neighbours", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    utils.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = collect(args)
    print(f"generated − neighbours vs true − neighbours, mean brightness of each generated frame of the "
          f"lamp videos ({', '.join(LAMP_CATEGORIES)}):")
    path = Path(args.out_dir) / "figs" / f"{args.tag_prefix}light.png"
    plot(results, path, title=f"Demo test split, lamp videos, 2x ({Path(args.data_root).name})")
    for label, (truth, prediction) in results.items():
        print(f"{label:16s} slope {slope(truth, prediction):+.2f} over {len(truth)} generated frames")
    print(f"wrote {path}")
    return 0

