"""evaluate.py end to end on small generated ground-truth / output folders: the CSV values against an
independent numpy / scikit-image computation, resume after an interruption, per-video errors,
unavailable weights, FVD through a scripted stand-in detector, and the demo data with the blend
baseline of inference.py."""
import json
import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

import dataset
import eval_report
import evaluate
import identity
import inference
import metric_registry
import metrics
import protocols
import publish
import runs
import utils
import video_io
import weights

SCALE = 2


def write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index:05d}.png")


def moving_pattern(rng, n_frames, height, width):
    """A textured pattern drifting by one pixel per frame plus noise, uint8."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(n_frames):
        base = 0.5 + 0.4 * np.sin((xs + t) / 3.0)[..., None] * np.cos(ys[..., None] / 4.0 + np.arange(3))
        frames.append(np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1))
    return np.round(np.stack(frames) * 255).astype(np.uint8)


def blend_of_neighbours(gt, scale):
    """Inputs 0, s, 2s, … copied; frame i = s·k + j blended from the inputs around it."""
    out = gt.copy()
    for i in range(len(gt)):
        if i % scale:
            left = i // scale * scale
            right = min(left + scale, len(gt) - 1)
            t = (i - left) / scale
            out[i] = np.round((1 - t) * gt[left].astype(float) + t * gt[right].astype(float)).astype(np.uint8)
    return out


VIDEOS = {("Alpha", "v_Alpha_g01_c01"): 9, ("Alpha", "v_Alpha_g01_c02"): 7, ("Beta", "v_Beta_g01_c01"): 10}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """GT + Blend folders for three videos; cwd and torch hub cache are private to the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    frames = {}
    for (category, video), n_frames in VIDEOS.items():
        gt = moving_pattern(rng, n_frames, 24, 30)
        frames[category, video] = gt
        write_frames(runs.gt_dir(root, SCALE) / category / video, gt)
        write_frames(runs.output_dir(root, "blend", SCALE) / category / video, blend_of_neighbours(gt, SCALE))
    return root, frames


def run(root, *extra, metrics="psnr,ssim", weights_dir=None):
    weights_dir = weights_dir or Path.cwd() / "no_weights"
    chosen = ["--metrics", metrics] if metrics else []
    return evaluate.main(["--model", "blend", "-s", str(SCALE), "--data-root", str(root), *chosen,
                          "--device", "cpu", "--offline", "--weights-dir", str(weights_dir), *map(str, extra)])


def expected_scores(gt, scale):
    out = blend_of_neighbours(gt, scale)
    generated = [i for i in range(len(gt)) if i % scale]
    psnr = [10 * np.log10(1 / np.mean((out[i] / 255.0 - gt[i] / 255.0) ** 2)) for i in generated]
    ssim = [structural_similarity(out[i] / 255.0, gt[i] / 255.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1, channel_axis=2) for i in generated]
    return np.mean(psnr), np.mean(ssim), len(generated)


def csv_path():
    return runs.eval_csv_path("blend", None, "demo", SCALE)


def test_psnr_ssim_columns_match_independent_computation(data, capsys):
    root, frames = data
    assert run(root) == 0
    table = pd.read_csv(csv_path())
    assert list(table.columns) == ["video", "category", "frames", "generated", "psnr", "ssim", "error", "notes",
                                   "data_root", "gt_digest", "out_digest", "protocol", "code"]
    assert len(table) == len(VIDEOS)
    for row in table.itertuples():
        psnr, ssim, generated = expected_scores(frames[row.category, row.video], SCALE)
        assert row.frames == VIDEOS[row.category, row.video] and row.generated == generated
        assert row.psnr == pytest.approx(psnr, abs=1e-6)
        assert row.ssim == pytest.approx(ssim, abs=1e-6)
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert summary["videos"] == 3 and summary["metrics"]["psnr"]["n"] == 3
    assert summary["metrics"]["psnr"]["mean"] == pytest.approx(table["psnr"].mean(), abs=1e-9)
    assert summary["metrics"]["ssim"]["std"] == pytest.approx(table["ssim"].std(ddof=0), abs=1e-9)
    assert summary["metrics"]["psnr"]["frames"] == table["generated"].sum()
    assert summary["metrics"]["psnr"]["std_over"] == "videos"
    assert summary["made_by"] == [{"model": None, "checkpoint": None, "settings": None, "videos": 3}]
    printed = capsys.readouterr().out
    assert "PSNR (dB)" in printed and f"{table['psnr'].mean():.4f}" in printed
    assert "outputs made by: ?, no identity record: 3 video(s)" in printed  # these frames were written by hand
    code = eval_report.code_version()
    assert summary["data_root"] == str(Path(root).resolve()) and summary["code"] == [{"commit": code, "videos": 3}]
    assert f"data root: {summary['data_root']}; code that scored them: {code or 'not recorded'} (3)" in printed
    assert Path(str(csv_path().with_suffix("")) + "_summary.txt").read_text() in printed


def test_interrupted_run_resumes_to_the_same_csv_without_duplicates(data, monkeypatch, tmp_path):
    root, _ = data
    assert run(root) == 0
    uninterrupted = csv_path().read_text()
    csv_path().unlink()

    real_score_video = evaluate.score_video
    calls = []

    def interrupted_on_second_video(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_score_video(*args, **kwargs)

    monkeypatch.setattr(evaluate, "score_video", interrupted_on_second_video)
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C: one line, status 130
        run(root)
    assert stopped.value.code == 130
    assert len(pd.read_csv(csv_path())) == 1
    with open(csv_path(), "a") as f:  # a row cut off in the middle of writing
        f.write("v_Beta_g01_c01,Beta,10,5,31.2")
    monkeypatch.setattr(evaluate, "score_video", real_score_video)
    assert run(root) == 0
    assert csv_path().read_text() == uninterrupted
    assert run(root) == 0  # nothing left to do: unchanged, still no duplicates
    assert csv_path().read_text() == uninterrupted


def test_mismatched_videos_get_error_rows_and_the_others_are_scored(data, capsys):
    root, frames = data
    out_root = runs.output_dir(root, "blend", SCALE)
    short = out_root / "Alpha" / "v_Alpha_g01_c02" / "frame_00006.png"
    short.unlink()  # one frame short
    resized = out_root / "Beta" / "v_Beta_g01_c01"
    for path in resized.glob("*.png"):
        Image.open(path).resize((32, 24)).save(path)
    assert run(root) == 1  # some videos failed
    table = pd.read_csv(csv_path(), keep_default_na=False)
    by_video = {row.video: row for row in table.itertuples()}
    assert "frame count mismatch: 6 generated" in by_video["v_Alpha_g01_c02"].error
    assert "frame size mismatch: 32x24 generated vs 30x24" in by_video["v_Beta_g01_c01"].error
    good = by_video["v_Alpha_g01_c01"]
    expected_psnr = expected_scores(frames["Alpha", good.video], SCALE)[0]
    assert good.error == "" and float(good.psnr) == pytest.approx(expected_psnr, abs=1e-6)
    printed = capsys.readouterr().out
    assert "1 of 3 scored, 2 failed: Alpha/v_Alpha_g01_c02" in printed and "FAILED Alpha/v_Alpha_g01_c02" in printed
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert [entry["videos"] for entry in summary["made_by"]] == [1]  # what made the scored outputs only
    assert summary["metrics"]["psnr"]["n"] == 1 and "without_value" not in summary["metrics"]["psnr"]  # failures
    write_frames(short.parent, blend_of_neighbours(frames["Alpha", "v_Alpha_g01_c02"], SCALE))
    assert run(root) == 1  # failed videos are retried on the next run, finished ones are kept
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table["video"]) == [v for _, v in sorted(VIDEOS)] and list(table["error"] == "") == [True, True, False]
    with pytest.raises(evaluate.VideoMismatch, match="no generated frames"):
        evaluate.check_pair(runs.gt_dir(root, SCALE) / "Beta" / "v_Beta_g01_c01", out_root / "Beta" / "missing")
    with pytest.raises(evaluate.VideoMismatch, match="no ground-truth frames at .*missing for the generated"):
        evaluate.check_pair(runs.gt_dir(root, SCALE) / "Beta" / "missing", out_root / "Beta" / "v_Beta_g01_c01")


def test_unavailable_weights_are_listed_and_the_other_metrics_still_run(data, capsys):
    root, _ = data
    assert run(root, "--flow", "dis", metrics="psnr,lpips,flolpips,vfips,fvd") == 0
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table.columns)[4:9] == ["psnr", "lpips", "flolpips_dis", "vfips", "fvd_clips"]
    assert (table["psnr"] != "").all() and (table["lpips"] == "").all()
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    for name, filename in (("lpips", "alexnet"), ("flolpips", "alexnet"), ("vfips", "vfips"), ("fvd", "i3d")):
        assert summary["metrics"][name]["status"] == "unavailable"
        assert weights.REGISTRY[filename].filename in summary["metrics"][name]["reason"]
    printed = capsys.readouterr().out
    assert "LPIPS           unavailable (" in printed and "FVD             unavailable (" in printed
    assert "FloLPIPS (DIS)  unavailable (" in printed
    assert run(root) == 1  # a metric the report lacks: no silent mixing on resume
    assert "this run adds ssim (other --metrics or --flow)" in capsys.readouterr().err
    assert run(root, "--restart") == 0
    assert list(pd.read_csv(csv_path()).columns)[4:6] == ["psnr", "ssim"]


def touch(frame):
    """A new modification time: the output's fingerprint changes, so its video is to score again."""
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))


def test_a_subset_of_the_recorded_metrics_is_reported_from_the_recorded_rows(data, capsys):
    root, _ = data
    assert run(root) == 0
    recorded = csv_path().read_text()
    assert run(root, metrics="ssim") == 0
    assert csv_path().read_text() == recorded
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert list(summary["metrics"]) == ["ssim"] and summary["metrics"]["ssim"]["n"] == 3
    assert "3 of 3 scored" in capsys.readouterr().out
    out_root = runs.output_dir(root, "blend", SCALE)
    shutil.rmtree(out_root / "Beta" / "v_Beta_g01_c01")  # an error row, no metric to leave out: still reported
    assert run(root, metrics="ssim") == 1
    assert "2 of 3 scored, 1 missing output: Beta/v_Beta_g01_c01" in capsys.readouterr().out
    assert list(pd.read_csv(csv_path()).columns)[4:6] == ["psnr", "ssim"]
    touch(out_root / "Alpha" / "v_Alpha_g01_c01" / "frame_00001.png")  # new output: to score
    before = csv_path().read_text()
    assert run(root, metrics="ssim") == 1
    assert ("1 video(s) to score (Alpha/v_Alpha_g01_c01), and the report also records psnr"
            in capsys.readouterr().err)
    assert csv_path().read_text() == before


def test_recorded_columns_without_a_value_do_not_stop_a_run_of_fewer_metrics(data, capsys):
    """LPIPS unavailable offline leaves its column empty in every row: a later run without it scores
    a video and keeps the empty column, so that a run with LPIPS resumes and, once its weights exist,
    scores those rows again. A report whose rows are all stale holds nothing: a run of other metrics
    starts it again."""
    root, _ = data
    assert run(root, metrics="psnr,lpips") == 0
    assert (pd.read_csv(csv_path(), keep_default_na=False)["lpips"] == "").all()
    out_root = runs.output_dir(root, "blend", SCALE)
    touch(out_root / "Alpha" / "v_Alpha_g01_c01" / "frame_00001.png")
    assert run(root, metrics="psnr") == 0
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table.columns)[4:7] == ["psnr", "lpips", "error"] and len(table) == 3
    assert (table["psnr"] != "").all() and (table["lpips"] == "").all()
    assert "3 of 3 scored" in capsys.readouterr().out
    assert run(root, metrics="psnr,lpips") == 0  # LPIPS still unavailable: nothing to score again
    assert "resuming, 3 video(s) already scored" in capsys.readouterr().out
    for frame in out_root.glob("*/*/frame_00001.png"):  # every row stale: none kept
        touch(frame)
    assert run(root, metrics="ssim,lpips") == 0
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table.columns)[4:7] == ["ssim", "lpips", "error"] and (table["ssim"] != "").all()


def test_a_shortened_list_of_videos_says_how_many_it_leaves_out(data):
    root, _ = data
    assert run(root) == 0
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    videos = [f"Cat/v{k}" for k in range(8)]
    summary.update(missing_output=videos, stale_outputs=videos)
    table = eval_report.format_table(summary)
    assert "8 missing output: Cat/v0, Cat/v1, Cat/v2, Cat/v3, Cat/v4 and 3 more\n" in table
    assert ("NOTE 8 output(s) were made by an earlier state of their checkpoint file: Cat/v0, Cat/v1, Cat/v2, "
            "Cat/v3, Cat/v4 and 3 more\n") in table
    with pytest.warns(UserWarning, match=r"^8 output\(s\) \(Cat/v0, Cat/v1, Cat/v2 and 5 more\) were made by"):
        evaluate.warn_stale(videos, evaluate.parse_args(["--model", "blend", "-s", "2"]))
    assert utils.some_of(videos[:3], 3) == "Cat/v0, Cat/v1, Cat/v2"


def test_missing_output_or_ground_truth_folders_are_clear_errors(data, capsys):
    root, _ = data
    shutil.rmtree(runs.output_dir(root, "blend", SCALE))
    assert run(root) == 1
    assert "no generated frames; run inference.py" in capsys.readouterr().err
    shutil.rmtree(runs.gt_dir(root, SCALE))
    assert run(root) == 1
    assert "no ground-truth frames; run inference.py" in capsys.readouterr().err


class StandInI3D(torch.nn.Module):
    """Tiny detector with StyleGAN-V's I3D call signature: per-channel clip means and mean squares."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.pow(2).mean(dim=(2, 3, 4))], 1)


def fvd_videos(tmp_path, monkeypatch, seed):
    """Three ground-truth / blend videos of 17, 33 and 12 frames: 1, 2 and no 16-frame FVD clips."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root = tmp_path / "data"
    rng = np.random.default_rng(seed)
    for index, n_frames in enumerate((17, 33, 12)):
        gt = moving_pattern(rng, n_frames, 16, 20)
        write_frames(runs.gt_dir(root, SCALE) / "Gamma" / f"v_Gamma_g0{index}_c01", gt)
        write_frames(runs.output_dir(root, "blend", SCALE) / "Gamma" / f"v_Gamma_g0{index}_c01",
                     blend_of_neighbours(gt, SCALE))
    return root


def stand_in_i3d_weights(tmp_path):
    """A weights folder whose I3D file is StandInI3D."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.jit.script(StandInI3D()).save(str(weights_dir / weights.REGISTRY["i3d"].filename))
    return weights_dir


def test_fvd_is_set_level_with_clip_count_and_survives_a_resume(tmp_path, monkeypatch, capsys):
    root = fvd_videos(tmp_path, monkeypatch, seed=1)
    weights_dir = stand_in_i3d_weights(tmp_path)
    assert run(root, metrics="psnr,fvd", weights_dir=weights_dir) == 0
    summary_path = Path(str(csv_path().with_suffix("")) + "_summary.json")
    first = json.loads(summary_path.read_text())["metrics"]["fvd"]
    assert first["status"] == "ok" and first["clips"] == 1 + 2 and first["value"] > 0
    assert first["weights"] == "i3d: unverified"  # no published hash: the report says so
    table = pd.read_csv(csv_path())
    assert list(table["fvd_clips"]) == [1, 2, 0] and "no FVD clip" in table.loc[2, "notes"]
    lines = csv_path().read_text().splitlines()
    csv_path().write_text("\n".join(lines[:2]) + "\n")  # as if interrupted after the first video
    assert run(root, metrics="psnr,fvd", weights_dir=weights_dir) == 0
    assert json.loads(summary_path.read_text())["metrics"]["fvd"] == first
    out = capsys.readouterr().out
    assert "3 clips of 16 frames" in out and "weights checked by: FVD i3d: unverified" in out


def test_rows_scored_while_a_metric_was_unavailable_are_scored_again_once_it_can_run(tmp_path, monkeypatch, capsys):
    """FVD without its weights leaves fvd_clips empty with no note; with the weights a resumed run
    (even after a run without FVD) scores those videos again (a row FVD ran on, noted or not, is kept) and its set FVD covers them all."""
    root = fvd_videos(tmp_path, monkeypatch, seed=2)
    assert run(root, metrics="psnr,fvd") == 0
    without = pd.read_csv(csv_path(), keep_default_na=False)
    assert (without["fvd_clips"] == "").all() and (without["notes"] == "").all()
    assert run(root, metrics="psnr") == 0  # a run without FVD between keeps the empty column
    weights_dir = stand_in_i3d_weights(tmp_path)
    capsys.readouterr()
    assert run(root, metrics="psnr,fvd", weights_dir=weights_dir) == 0
    out = capsys.readouterr().out
    assert "scoring 3 video(s) again (Gamma/v_Gamma_g00_c01, Gamma/v_Gamma_g01_c01, Gamma/v_Gamma_g02_c01): " \
           "fvd could not run when they were scored" in out and "resuming" not in out
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table["fvd_clips"]) == [1, 2, 0] and list(table["psnr"]) == list(without["psnr"])
    summary_path = Path(str(csv_path().with_suffix("")) + "_summary.json")
    scored = json.loads(summary_path.read_text())["metrics"]["fvd"]
    assert scored["status"] == "ok" and scored["clips"] == 3
    recorded = csv_path().read_text()
    assert run(root, metrics="psnr,fvd", weights_dir=weights_dir) == 0  # every row has FVD now: nothing again
    out = capsys.readouterr().out
    assert "resuming, 3 video(s) already scored" in out and "again" not in out
    assert csv_path().read_text() == recorded
    assert eval_report.scored_while_unavailable({"lpips": "", "notes": "vfips: too small; lpips: no frames"},
                                                {"lpips": "lpips"}) == []


def test_a_metric_noted_first_in_a_row_ran_on_it():
    """A metric that ran without a value notes "name: reason", maybe as the row's first note."""
    assert eval_report.scored_while_unavailable({"lpips": "", "notes": "lpips: no frames"}, {"lpips": "lpips"}) == []
    assert eval_report.scored_while_unavailable({"lpips": "", "notes": "vfips: too small"},
                                                {"lpips": "lpips"}) == ["lpips"]


def test_a_note_about_flolpips_is_not_a_note_about_lpips():
    """"flolpips: ..." ends in "lpips: ...": only a note that starts with the metric's own name counts."""
    row = {"lpips": "", "flolpips": "", "notes": "flolpips: no pairs"}
    assert eval_report.scored_while_unavailable(row, {"lpips": "lpips", "flolpips": "flolpips"}) == ["lpips"]


def test_reopened_report_drops_rows_of_another_protocol_and_rows_cut_short(tmp_path):
    """A row is kept only under the signature (data root, digests, protocol) it was scored with; a
    complete line with too few fields is not a scored row, even of a video outside this run."""
    path, columns = tmp_path / "report.csv", eval_report.csv_columns(["psnr"])
    signature = {"data_root": "/data", "gt_digest": "g", "out_digest": "o", "protocol": "asvfi"}
    current = {("A", "v1"): signature, ("A", "v2"): signature}
    report = eval_report.ResultsCSV(path, columns, current)
    for video in ("v1", "v2", "v3"):
        report.append({"video": video, "category": "A", "frames": 9, "generated": 4, "psnr": 30.5, **signature})
    with open(path, "a") as f:
        f.write("v4,A,9\n")
    reopened = eval_report.ResultsCSV(path, columns, {**current, ("A", "v2"): {**signature, "protocol": "vfibench"}})
    assert reopened.done == {("A", "v1"), ("A", "v3")}
    assert pd.read_csv(path)["video"].tolist() == ["v1", "v3"]


def test_set_fvd_skips_videos_without_a_clip_and_says_whose_features_are_missing(tmp_path):
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(3, 4)), rng.normal(1.0, 1.0, size=(3, 4))
    cache = eval_report.FeatureCache(tmp_path / "features")
    cache.save("A", "long", (real, fake))
    rows = [{"category": "A", "video": "long", "fvd_clips": "3"}, {"category": "A", "video": "short", "fvd_clips": "0"},
            {"category": "A", "video": "unscored", "fvd_clips": ""}]
    asvfi = protocols.get_protocol("asvfi")
    fvd = eval_report.set_level_fvd(rows, cache, asvfi)
    assert fvd == {"value": pytest.approx(protocols.fvd_from_features(asvfi, real, fake)), "clips": 3, "reason": ""}
    lost = eval_report.set_level_fvd(rows + [{"category": "B", "video": "lost", "fvd_clips": "2"}], cache, asvfi)
    assert lost["clips"] == 3 and lost["reason"] == f"features of 1 video(s) missing from {cache.folder}"


def test_a_metric_entry_says_why_videos_have_no_value():
    rows = [{"lpips": "0.25", "generated": "4", "notes": ""},
            {"lpips": "", "generated": "4", "notes": "vfips: too small; lpips: no generated frames"}]
    metric = metric_registry.Metric("lpips", "generated", None, "lpips", about="AlexNet")
    run_info = SimpleNamespace(unavailable={}, built={"lpips": metric}, protocol=protocols.get_protocol("asvfi"))
    entry = eval_report.metric_entry("lpips", rows, run_info, cache=None)
    assert entry["mean"] == 0.25 and entry["n"] == 1 and entry["about"] == "AlexNet"
    assert entry["without_value"] == 1 and entry["why"] == ["no generated frames"]


def test_rows_of_videos_outside_the_run_are_kept_as_they_are_not_scored_again(tmp_path, monkeypatch, capsys):
    """--limit 1 with FVD's weights scores again only its video; the rows of the others stay."""
    root = fvd_videos(tmp_path, monkeypatch, seed=3)
    assert run(root, metrics="psnr,fvd") == 0
    before = pd.read_csv(csv_path(), keep_default_na=False)
    capsys.readouterr()
    assert run(root, "--limit", 1, metrics="psnr,fvd", weights_dir=stand_in_i3d_weights(tmp_path)) == 0
    assert "scoring 1 video(s) again (Gamma/v_Gamma_g00_c01)" in capsys.readouterr().out
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert list(table["video"]) == list(before["video"]) and list(table["fvd_clips"]) == ["1", "", ""]


def blend_on_demo(demo_root, tmp_path, monkeypatch, limit):
    """A private copy of the demo data with inference.py's blend frames for its first `limit` test videos."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root = tmp_path / "data"
    shutil.copytree(demo_root / "demo", root / "demo")
    shutil.copy(demo_root / "demo_split.csv", root / "demo_split.csv")
    assert inference.main(["--model", "blend", "--data-root", str(root), "--dataset", "demo", "-s", "2",
                           "--device", "cpu", "--limit", str(limit)]) == 0
    return root


def test_outputs_another_data_set_wrote_over_are_an_error_row_not_scored(demo_root, tmp_path, monkeypatch, capsys):
    """Outputs live under <Model>/scale/<s>/<Category>/<video>, whatever the data set: a copy of the
    demo under another name, run after it, writes the same folders. Evaluating the first then names
    the file they were made from instead of scoring the copy's frames as its own."""
    root = blend_on_demo(demo_root, tmp_path, monkeypatch, limit=1)
    shutil.copytree(root / "demo", root / "copy")
    shutil.copy(root / "demo_split.csv", root / "copy_split.csv")
    assert run(root, "--dataset", "demo", "--limit", 1) == 0
    assert inference.main(["--model", "blend", "--data-root", str(root), "--dataset", "copy", "-s", "2",
                           "--device", "cpu", "--limit", "1"]) == 0
    capsys.readouterr()
    assert run(root, "--dataset", "demo", "--limit", 1) == 1
    table = pd.read_csv(csv_path(), keep_default_na=False)
    video = pd.read_csv(root / "demo_split.csv").query("split == 'test'")["path"].iloc[0]
    assert f"this ground truth was made from copy/{video}, not from the split's demo/{video}" in table.loc[0, "error"]
    demo_report = csv_path().read_text()
    assert run(root, "--dataset", "copy", "--limit", 1) == 0  # the data set that made them scores them
    assert runs.eval_csv_path("blend", None, "copy", SCALE).is_file()  # in its own report: the demo's stays
    assert csv_path().read_text() == demo_report
    # another model's run for the demo writes the shared ground truth again; the blend output stays the copy's
    assert inference.main(["--model", "repeat", "--data-root", str(root), "--dataset", "demo", "-s", "2",
                           "--device", "cpu", "--limit", "1"]) == 0
    assert run(root, "--dataset", "demo", "--limit", 1) == 1
    error = pd.read_csv(csv_path(), keep_default_na=False).loc[0, "error"]
    assert f"this output was made from copy/{video}, not from the split's demo/{video}" in error


def test_the_same_videos_under_another_data_root_do_not_replace_a_reports_scores(data, tmp_path, capsys):
    """Another data root can hold videos of the same names (another rendering, a copy): its scores are
    other results, not newer ones, so the run is refused, naming both roots, and the report is kept."""
    root, _ = data
    assert run(root) == 0
    report = csv_path().read_text()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root, elsewhere)
    capsys.readouterr()
    assert run(elsewhere) == 1
    err = capsys.readouterr().err
    assert f"holds the scores of 3 of these videos under data root {root.resolve()}, not {elsewhere.resolve()}" in err
    assert "--out-dir" in err and csv_path().read_text() == report
    assert run(elsewhere, "--restart") == 0
    assert set(pd.read_csv(csv_path())["data_root"]) == {str(elsewhere.resolve())}


def test_the_summary_lists_outputs_outside_the_split_but_not_the_split_videos_past_limit(demo_root, tmp_path,
                                                                                        monkeypatch):
    """outside_set: output folders no split video owns; a test video --limit leaves out is in the split."""
    root = blend_on_demo(demo_root, tmp_path, monkeypatch, limit=2)
    out_root = runs.output_dir(root, "blend", SCALE)
    first = next(folder for folder in sorted(out_root.glob("*/*")) if folder.is_dir())
    shutil.copytree(first, out_root / "Stray" / "v_Stray_g01_c01")
    assert run(root, "--dataset", "demo", "--limit", 1) == 0
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert summary["outside_set"] == ["Stray/v_Stray_g01_c01"]


def test_without_a_split_the_outputs_inference_wrote_are_scored(demo_root, tmp_path, monkeypatch):
    """Every ground-truth folder is scored when no split CSV says which file each video is: the
    records' sources are not checked against one."""
    root = blend_on_demo(demo_root, tmp_path, monkeypatch, limit=1)
    (root / "demo_split.csv").unlink()
    assert run(root) == 0
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert len(table) == 1 and table.loc[0, "error"] == ""


def test_demo_data_blend_baseline_from_inference(demo_root, tmp_path, monkeypatch):
    """The README path: inference.py writes GT + blend frames for the demo test split, evaluate.py
    scores them and the PSNR column equals a numpy computation on the written frames."""
    root = blend_on_demo(demo_root, tmp_path, monkeypatch, limit=1)
    assert run(root, "--dataset", "demo", "--limit", 1, metrics="psnr,ssim") == 0
    table = pd.read_csv(csv_path())
    assert len(table) == 1 and table.loc[0, "error"] != table.loc[0, "error"]  # NaN: no error
    folder = Path(table.loc[0, "category"]) / table.loc[0, "video"]
    gt = video_io.read_png_frames(runs.gt_dir(root, 2) / folder) / 255.0
    out = video_io.read_png_frames(runs.output_dir(root, "blend", 2) / folder) / 255.0
    psnr = np.mean([10 * np.log10(1 / np.mean((out[i] - gt[i]) ** 2)) for i in range(1, len(gt), 2)])
    assert table.loc[0, "psnr"] == pytest.approx(psnr, abs=1e-6)
    assert table.loc[0, "generated"] == len(gt) // 2


def test_a_partial_inference_run_is_counted_against_the_whole_test_split(demo_root, tmp_path, monkeypatch, capsys):
    """inference.py --limit 1 writes 1 of the 2 test videos: evaluate.py counts the other as missing
    whether or not another model's run has written its ground truth, and --limit 1 scores the video
    inference took first, saying it is the first of 2."""
    root = blend_on_demo(demo_root, tmp_path, monkeypatch, limit=1)
    split_csv = root / "demo_split.csv"
    written, missing = [(Path(e.path).parent.name, e.name) for e in dataset.read_split(split_csv, "test")]
    counted = f"1 of 2 scored, 1 missing output: {missing[0]}/{missing[1]}\nscored set: the test videos of {split_csv}"
    assert run(root, "--dataset", "demo") == 1
    assert counted in capsys.readouterr().out
    gt_root = runs.gt_dir(root, SCALE)  # as if another model's inference had written every ground truth
    shutil.copytree(gt_root.joinpath(*written), gt_root.joinpath(*missing))
    assert run(root, "--dataset", "demo") == 1
    assert counted in capsys.readouterr().out
    assert run(root, "--dataset", "demo", "--limit", 1) == 0
    assert (f"1 of 1 scored\nscored set: --limit 1: the first 1 of the 2 test videos of {split_csv}"
            in capsys.readouterr().out)
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert (summary["videos"], summary["listed"], summary["limit"]) == (1, 1, 1)
    assert list(pd.read_csv(csv_path())["video"]) == [written[1]]


def test_std_of_a_single_video_is_not_available(data, capsys):
    """A std over one video is undefined: null in the JSON, a dash in the table, never 0."""
    root, _ = data
    assert run(root, "--limit", 1) == 0
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert summary["metrics"]["psnr"]["n"] == 1 and summary["metrics"]["psnr"]["std"] is None
    psnr_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("PSNR"))
    assert psnr_line.split()[3:5] == ["—", "1"]


def test_pooled_protocols_weight_each_video_by_its_generated_frames():
    """FLAVR averages over every output frame of the set, so a 3-frame video counts three times a 1-frame one."""
    rows = [{"psnr": "30", "generated": "1"}, {"psnr": "40", "generated": "3"}, {"psnr": "", "generated": "5"}]
    pooled = eval_report.column_stats(rows, "psnr", protocols.get_protocol("flavr"))
    assert pooled["mean"] == pytest.approx((30 * 1 + 40 * 3) / 4) and pooled["frames"] == 4 and pooled["n"] == 2
    per_video = eval_report.column_stats(rows, "psnr", protocols.get_protocol("asvfi"))
    assert per_video["mean"] == pytest.approx(35.0) and per_video["std"] == pytest.approx(5.0)


def test_a_run_whose_every_metric_is_unavailable_stops_naming_the_missing_file(data, capsys):
    """No rows without values and no "3 of 3 scored" when nothing could be measured."""
    root, _ = data
    assert run(root, metrics="lpips") == 1
    err = capsys.readouterr().err
    assert "none of the requested metrics can run" in err and weights.REGISTRY["alexnet"].filename in err
    assert not csv_path().exists()


def test_offline_without_weights_dir_lists_unavailable_weights(data, capsys):
    root, _ = data
    assert evaluate.main(["--model", "blend", "-s", str(SCALE), "--data-root", str(root), "--metrics", "psnr,lpips",
                          "--device", "cpu", "--offline"]) == 0
    assert "LPIPS           unavailable (" in capsys.readouterr().out


def test_chunked_reading_with_one_torch_thread_matches_the_reference(data, monkeypatch):
    """Chunks smaller than a video (decoded ahead in the pool) give the per-frame reference values;
    on CPU the scoring runs with one torch thread and the caller's thread count comes back."""
    root, frames = data
    monkeypatch.setattr(evaluate, "FRAME_CHUNK", 4)
    threads_seen, ssim = [], metrics.ssim
    monkeypatch.setattr(metrics, "ssim", lambda *a, **k: threads_seen.append(torch.get_num_threads())
                        or ssim(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(root) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert threads_seen and set(threads_seen) == {1}
    for row in pd.read_csv(csv_path()).itertuples():
        psnr, ssim_value, _ = expected_scores(frames[row.category, row.video], SCALE)
        assert row.psnr == pytest.approx(psnr, abs=1e-6) and row.ssim == pytest.approx(ssim_value, abs=1e-6)


def test_chunks_starting_on_an_odd_frame_score_the_same_generated_frames(data, monkeypatch):
    """The generated-frame mask counts from the chunk's start: 5-frame chunks at 2x (the second starts on
    generated frame 5) must score frames 1, 3, 5, ... as whole-video reading does, not the inputs."""
    root, frames = data
    monkeypatch.setattr(evaluate, "FRAME_CHUNK", 5)
    assert run(root, metrics="psnr") == 0
    rows = list(pd.read_csv(csv_path()).itertuples())
    assert len(rows) == len(VIDEOS)
    for row in rows:
        psnr, _, generated = expected_scores(frames[row.category, row.video], SCALE)
        assert row.psnr == pytest.approx(psnr, abs=1e-6) and row.generated == generated


def test_partial_folders_left_by_a_dead_run_are_not_scored(tmp_path):
    finished = tmp_path / "Cat" / "v_Cat_g01_c01"
    left_over = publish.partial_name(tmp_path / "Cat" / "v_Cat_g01_c02")
    for folder in (finished, left_over):
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "frame_00000.png")
    assert publish.is_partial(left_over) and not publish.is_partial(finished)
    assert evaluate.finished_folders(tmp_path) == [("Cat", "v_Cat_g01_c01")]


def test_the_report_names_the_checkpoint_and_settings_that_made_the_scored_outputs(tmp_path):
    source, first, second = tmp_path / "v.avi", tmp_path / "a.pth", tmp_path / "b.pth"
    for path, size in ((source, 10), (first, 1234), (second, 99)):
        path.write_bytes(b"x" * size)

    def record(checkpoint, seed):
        return identity.output_record(source, tmp_path, 9, 2, "asvfi", checkpoint, {"seed": seed, "amp": None, "tile": 0})
    entries = eval_report.made_by([record(first, 0), record(first, 0), record(second, 0), record(first, 1)])
    assert [(Path(e["checkpoint"]["path"]).name, e["settings"]["seed"], e["videos"]) for e in entries] == [
        ("a.pth", 0, 2), ("b.pth", 0, 1), ("a.pth", 1, 1)]
    assert eval_report.made_by_lines(entries)[0] == (f"outputs made by: asvfi, checkpoint {first.resolve()} "
                                                     f"(1,234 bytes), seed 0: 2 video(s)")
    pervfi = {"seed": 3, "amp": "bf16", "tile": 0, "config": {"heat": 0.3}, "flow_estimator_used": "raft_sintel"}
    assert eval_report.generation_settings(pervfi) == [("seed", 3), ("amp", "bf16"), ("heat", 0.3),
                                                       ("flow", "raft_sintel")]


def test_a_report_from_before_rows_recorded_their_code_resumes_and_says_which_rows_lack_it(data, capsys):
    root, _ = data
    assert run(root) == 0
    table = pd.read_csv(csv_path(), keep_default_na=False, dtype=str)
    table.drop(columns=["code"]).iloc[:2].to_csv(csv_path(), index=False)  # the old format, one video to go
    assert run(root) == 0
    rescored = pd.read_csv(csv_path(), keep_default_na=False, dtype=str)
    assert list(rescored.columns) == list(table.columns) and list(rescored["code"][:2]) == ["", ""]
    code = eval_report.code_version()
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert summary["code"] == [{"commit": None, "videos": 2}, {"commit": code, "videos": 1}]
    assert f"code that scored them: not recorded (2); {code} (1)" in capsys.readouterr().out


def test_a_scale_3_run_scores_the_frames_that_are_not_multiples_of_3(tmp_path, monkeypatch):
    """At 3x, 9 frames hold 6 generated ones (not 9 // 3); the mean is over exactly those."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root = tmp_path / "data"
    gt = moving_pattern(np.random.default_rng(4), 10, 24, 30)  # frames 0..9: 6 generated (not 0, 3, 6, 9)
    write_frames(runs.gt_dir(root, 3) / "Alpha" / "v_Alpha_g01_c01", gt)
    write_frames(runs.output_dir(root, "blend", 3) / "Alpha" / "v_Alpha_g01_c01", blend_of_neighbours(gt, 3))
    assert evaluate.main(["--model", "blend", "-s", "3", "--data-root", str(root), "--metrics", "psnr,ssim",
                          "--device", "cpu", "--offline", "--weights-dir", str(tmp_path / "none")]) == 0
    row = pd.read_csv(runs.eval_csv_path("blend", None, "demo", 3)).iloc[0]
    psnr, ssim, generated = expected_scores(gt, 3)
    assert generated == 6 and row["generated"] == 6 and row["frames"] == 10
    assert row["psnr"] == pytest.approx(psnr, abs=1e-6) and row["ssim"] == pytest.approx(ssim, abs=1e-6)


def test_a_video_of_one_frame_or_with_a_gap_in_its_numbering_is_refused(tmp_path):
    frames = moving_pattern(np.random.default_rng(0), 3, 8, 8)
    single_gt, single_out = tmp_path / "gt1", tmp_path / "out1"
    write_frames(single_gt, frames[:1])
    write_frames(single_out, frames[:1])
    with pytest.raises(evaluate.VideoMismatch, match="1 frame\\(s\\); at least 2 are needed"):
        evaluate.check_pair(single_gt, single_out)
    gap = tmp_path / "gap"
    write_frames(gap, frames)
    (gap / "frame_00001.png").unlink()
    with pytest.raises(evaluate.VideoMismatch, match="expected frame_00001.png, found frame_00002.png"):
        evaluate.frame_files(gap)


def test_frames_are_read_as_rgb_in_0_1_after_the_crop(tmp_path):
    """PNGs decode as BGR in OpenCV: the tensor must come back in RGB order, the protocol crop applied."""
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, np.arange(7, dtype=np.uint8) * 30
    Image.fromarray(rgb).save(tmp_path / "frame_00000.png")
    tensor = evaluate.read_frame_tensor(tmp_path / "frame_00000.png", rgb.shape, "even")
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 4, 6)
    assert torch.equal(tensor, torch.from_numpy(rgb[:4, :6]).permute(2, 0, 1).float() / 255)


def test_a_metric_without_a_value_for_a_video_leaves_its_cell_empty_with_the_reason(data, monkeypatch):
    """An empty cell, never 0: a non-finite LPIPS frame value gives no video value, and the note says why."""
    root, _ = data
    monkeypatch.setattr(metric_registry, "load_lpips", lambda *args: lambda ref, pred: torch.full((len(ref),), np.nan))
    assert run(root, metrics="psnr,lpips") == 0
    table = pd.read_csv(csv_path(), keep_default_na=False)
    assert (table["lpips"] == "").all() and (table["psnr"] != "").all()
    assert all(note.startswith("lpips: non-finite frame value") for note in table["notes"])
    summary = json.loads(Path(str(csv_path().with_suffix("")) + "_summary.json").read_text())
    assert summary["metrics"]["lpips"]["n"] == 0 and summary["metrics"]["psnr"]["n"] == 3


def test_without_a_split_partial_folders_are_not_listed(tmp_path):
    for folder in (tmp_path / "Cat" / "v1", publish.partial_name(tmp_path / "Cat" / "v2"), tmp_path / "Cat" / "v3"):
        folder.mkdir(parents=True)
        if folder.name != "v3":  # v3: no frame 0 yet
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "frame_00000.png")
    assert evaluate.list_videos(tmp_path) == {("Cat", "v1"): None}


def test_an_image_test_set_defaults_to_the_protocols_per_frame_metrics(tmp_path):
    args = evaluate.parse_args(["--model", "blend", "--dataset", "ucf101-triplets", "--data-root", str(tmp_path)])
    assert evaluate.metric_names(args) == ["psnr", "ssim", "lpips"]
    args = evaluate.parse_args(["--model", "blend", "-s", "2", "--data-root", str(tmp_path)])
    assert evaluate.metric_names(args) == list(protocols.get_protocol("asvfi").metrics)


def test_only_outputs_of_an_earlier_state_of_the_named_checkpoint_are_stale(tmp_path):
    checkpoint = tmp_path / "run.pth"
    checkpoint.write_bytes(b"epoch 1")
    args = evaluate.parse_args(["--model", "asvfi", "-s", "2", "--data-root", str(tmp_path),
                                "--checkpoint", str(checkpoint)])
    current = identity.file_identity(checkpoint)
    identities = {("A", "now"): {"checkpoint": current}, ("A", "none"): None,
                  ("A", "before"): {"checkpoint": {**current, "size": 3}},
                  ("A", "other"): {"checkpoint": {**current, "path": "/elsewhere.pth", "size": 3}}}
    assert evaluate.stale_outputs(args, identities) == ["A/before"]


class UInt8StandInI3D(torch.nn.Module):
    """StyleGAN-V's call: uint8 clips, rescale and resize left to the detector; features = clip channel means/squares."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8 or not rescale or not resize:
            raise RuntimeError("expected uint8 clips with rescale=True, resize=True")
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3, 4)), x.pow(2).mean(dim=(2, 3, 4))], 1)


def test_styleganv_fvd_takes_a_random_real_clip_and_the_first_16_generated_frames(tmp_path, monkeypatch):
    """The split also lists a video inference has not written: it is missing output on its own,
    and the clip plan (random starts drawn in order) covers the others as if it were not listed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root, rng = tmp_path / "data", np.random.default_rng(6)
    gts, outs = [], []
    for index, n_frames in enumerate((19, 33, 21)):
        gt = moving_pattern(rng, n_frames, 16, 20)
        gts.append(gt)
        outs.append(blend_of_neighbours(gt, SCALE))
        write_frames(runs.gt_dir(root, SCALE) / "Gamma" / f"v_Gamma_g0{index}_c01", gt)
        write_frames(runs.output_dir(root, "blend", SCALE) / "Gamma" / f"v_Gamma_g0{index}_c01", outs[-1])
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.jit.script(UInt8StandInI3D()).save(str(weights_dir / weights.REGISTRY["i3d"].filename))
    pd.DataFrame([{"path": f"Gamma/v_Gamma_g0{index}_c01.avi", "category": "Gamma", "split": "test", "fps": 25,
                   "n_frames": 40, "width": 20, "height": 16, "has_audio": False} for index in range(4)]
                 ).to_csv(root / "demo_split.csv", index=False)
    assert run(root, "--protocol", "stylegan-v", metrics="fvd", weights_dir=weights_dir) == 1  # one missing

    def features(clip):
        x = clip.astype(np.float64) / 255
        return np.concatenate([x.mean(axis=(0, 1, 2)), (x ** 2).mean(axis=(0, 1, 2))])

    starts = random.Random(0)  # the protocol's fvd_seed, one draw per real video in order
    real = [features(gt[start:start + 16]) for gt in gts for start in [starts.randint(0, len(gt) - 16)]]
    fake = [features(out[:16]) for out in outs]
    expected = protocols.fvd_from_features("stylegan-v", np.array(real), np.array(fake))
    path = Path(str(csv_path().with_suffix("")) + "_stylegan-v_summary.json")
    summary = json.loads(path.read_text())
    assert summary["missing_output"] == ["Gamma/v_Gamma_g03_c01"]
    assert summary["metrics"]["fvd"]["clips"] == 3
    assert summary["metrics"]["fvd"]["value"] == pytest.approx(expected, rel=1e-5)


SIGNED = {"data_root": "/data", "gt_digest": "g", "out_digest": "o", "protocol": "asvfi"}


def one_video_report(path, **row):
    """A report of video A/v1 with one appended row."""
    report = eval_report.ResultsCSV(path, eval_report.csv_columns(["psnr"]), {("A", "v1"): SIGNED})
    report.append({"video": "v1", "category": "A", "frames": 9, "generated": 4, **SIGNED, **row})
    return report


def test_report_values_round_trip_exactly_and_a_last_line_without_its_newline_is_not_a_row(tmp_path):
    """Every float is written with repr (no rounding); a line the writer did not finish with its
    newline is not known to be complete, even when it has every field (cut in the last one)."""
    path = tmp_path / "report.csv"
    one_video_report(path, psnr=31.123456789012345, code="0123abcd")
    assert float(pd.read_csv(path)["psnr"][0]) == 31.123456789012345
    reopened = eval_report.ResultsCSV(path, eval_report.csv_columns(["psnr"]), {("A", "v1"): SIGNED})
    assert reopened.done == {("A", "v1")} and float(reopened.rows[0]["psnr"]) == 31.123456789012345
    path.write_text(path.read_text()[:-3])  # cut inside the code column
    reopened = eval_report.ResultsCSV(path, eval_report.csv_columns(["psnr"]), {("A", "v1"): SIGNED})
    assert reopened.done == set() and pd.read_csv(path).empty


def test_restarting_the_feature_cache_forgets_earlier_features(tmp_path):
    features = (np.ones((2, 3)), np.zeros((2, 3)))
    eval_report.FeatureCache(tmp_path / "fvd").save("A", "v1", features)
    kept = eval_report.FeatureCache(tmp_path / "fvd").load("A", "v1")
    assert all(np.array_equal(a, b) for a, b in zip(kept, features))
    assert eval_report.FeatureCache(tmp_path / "fvd", restart=True).load("A", "v1") is None


def test_a_summary_write_that_fails_midway_leaves_the_previous_summary_whole(data, monkeypatch):
    root, _ = data
    assert run(root) == 0
    stem = str(csv_path().with_suffix(""))
    before = {suffix: Path(stem + suffix).read_text() for suffix in ("_summary.json", "_summary.txt")}
    summary = json.loads(before["_summary.json"])
    real_write_text = Path.write_text

    def half_then_disk_full(self, text, *args, **kwargs):
        real_write_text(self, text[:len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(Path, "write_text", half_then_disk_full)
        eval_report.write_summary({**summary, "title": "changed"}, csv_path())
    assert {suffix: Path(stem + suffix).read_text() for suffix in before} == before


def test_large_values_print_with_one_decimal_and_others_with_four():
    assert [eval_report.format_number(v) for v in (None, 0.123456, -3.5, 12345.678)] == ["—", "0.1235", "-3.5000",
                                                                                         "12345.7"]


def test_a_report_of_another_format_is_refused_not_read(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("video,category,psnr\nv1,A,30.0\n")
    with pytest.raises(utils.ASVFIError, match="add --restart to start this report again"):
        eval_report.ResultsCSV(path, eval_report.csv_columns(["psnr"]), {("A", "v1"): SIGNED})
    assert path.read_text() == "video,category,psnr\nv1,A,30.0\n"


def test_the_code_that_scored_the_rows_is_listed_in_order_of_first_appearance():
    rows = [{"code": "aaa"}, {"code": ""}, {"code": "bbb"}, {"code": "bbb"}, {}]
    assert eval_report.codes_of(rows) == [{"commit": "aaa", "videos": 1}, {"commit": None, "videos": 2},
                                          {"commit": "bbb", "videos": 2}]
