"""protocols.py against every case of tests/fixtures/protocols_compat.pt, and finiteness."""
import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import protocols
import yuv420
from compat import load_fixture

FIXTURE = load_fixture("protocols_compat.pt")
TOL = FIXTURE["tolerances"]
PAIRS = FIXTURE["inputs"]["pairs"]
VIDEO = FIXTURE["vfibench"]["video"]
FVD = FIXTURE["fvd"]
YUV = FIXTURE["flolpips_yuv"]


def gt_of(name):
    return PAIRS[name]["gt_u8"].permute(2, 0, 1).float() / 255


def scored(protocol, name):
    return protocols.score_frame(protocol, PAIRS[name]["pred"], gt_of(name))


def with_seed(name, seed):
    return dataclasses.replace(protocols.get_protocol(name), fvd_seed=seed)


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_sources():
    assert set(protocols.PROTOCOLS) >= {"asvfi", "flavr", "rife", "vfibench", "stylegan-v"}
    sources = FIXTURE["sources"]
    for protocol_name, source_keys in {"flavr": ["flavr"], "rife": ["rife", "ema"], "vfibench": ["vfibench"],
                                       "stylegan-v": ["styleganv"]}.items():
        record = protocols.get_protocol(protocol_name)
        for key in source_keys:
            assert f"{sources[key]['repo']}@{sources[key]['commit']}" in record.reproduces
        assert record.departures


def test_unknown_protocol_lists_known_names():
    with pytest.raises(ValueError, match="asvfi.*flavr.*rife.*vfibench.*stylegan-v"):
        protocols.get_protocol("nope")


# ----------------------------------------------------------------------------- PSNR, SSIM per frame
@pytest.mark.parametrize("protocol, section", [("flavr", FIXTURE["flavr"]),
                                               ("rife", FIXTURE["ucf101_benchmarks_rife_ema"]["rife"]),
                                               ("rife", FIXTURE["ucf101_benchmarks_rife_ema"]["ema"]),
                                               ("vfibench", FIXTURE["vfibench"])])
def test_psnr_and_ssim_per_frame(protocol, section):
    for name, expected in section["psnr"].items():
        result = scored(protocol, name)
        assert abs(result["psnr"] - expected) <= TOL["psnr_db_abs"], name
        assert abs(result["ssim"] - section["ssim"][name]) <= TOL["ssim_abs"], name


def test_rife_where_the_reference_crashes_is_finite():
    for name in FIXTURE["ucf101_benchmarks_rife_ema"]["rife"]["errors_when_prediction_rounds_to_gt"]:
        assert scored("rife", name)["psnr"] == pytest.approx(100.0)


def test_flavr_ssim_unclamped_and_channel_order():
    for name, expected in FIXTURE["flavr"]["ssim_unclamped"].items():
        value = protocols.ssim_matlab(PAIRS[name]["pred"], gt_of(name))
        assert abs(float(value) - expected) <= TOL["ssim_abs"], name
    rgb, bgr = FIXTURE["ucf101_benchmarks_rife_ema"]["ssim_rgb_vs_bgr"]
    pred = torch.round(PAIRS["noisy"]["pred"] * 255) / 255
    assert abs(float(protocols.ssim_matlab(gt_of("noisy"), pred)) - rgb) <= TOL["ssim_abs"]
    assert abs(float(protocols.ssim_matlab(gt_of("noisy").flip(0), pred.flip(0))) - bgr) <= TOL["ssim_abs"]


def test_ssim_matlab_window_taps():
    assert torch.equal(protocols.gaussian_taps(11), FIXTURE["flavr"]["gaussian_1d"])


def test_vfibench_psnr_of_the_float_prediction():
    for name, expected in FIXTURE["vfibench"]["psnr_fn_on_float_prediction"].items():
        value = protocols.psnr_db(PAIRS[name]["pred"], gt_of(name), eps=1e-8, mse_floor=0.0)
        assert abs(value - expected) <= TOL["psnr_db_abs"], name


def test_ssim_gaussian_equals_skimage():
    for name in ("noisy", "noisy_odd_37x45", "out_of_range"):
        pred, gt = PAIRS[name]["pred"].double(), gt_of(name).double()
        expected = structural_similarity(pred.permute(1, 2, 0).numpy(), gt.permute(1, 2, 0).numpy(),
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1, channel_axis=-1)
        value = protocols.ssim_gaussian(pred, gt)
        assert value.shape == (1,) and value.dtype == torch.float64, name
        assert abs(float(value) - expected) <= 1e-6, name


def test_ssim_gaussian_smooths_an_axis_of_exactly_the_window_size_like_skimage():
    """11 px take the 11-tap window (one valid position); only shorter axes skip the smoothing."""
    generator = torch.Generator().manual_seed(5)
    gt = torch.rand((3, 11, 16), generator=generator, dtype=torch.float64)
    pred = (gt + 0.1 * torch.randn(gt.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    expected = structural_similarity(pred.permute(1, 2, 0).numpy(), gt.permute(1, 2, 0).numpy(), gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)
    assert abs(float(protocols.ssim_gaussian(pred, gt)) - expected) <= 1e-6


def test_asvfi_psnr_is_today_s_formula_below_the_cap():
    for name in ("plus_one_level", "noisy", "out_of_range", "small_8x10"):
        png = torch.round(PAIRS[name]["pred"].clamp(0, 1) * 255).to(torch.uint8)  # as inference.py writes
        diff = (png.float() / 255).double() - gt_of(name).double()  # float32 frames, as evaluate.py reads
        assert scored("asvfi", name)["psnr"] == pytest.approx(10 * math.log10(1 / float((diff ** 2).mean())),
                                                              abs=1e-9)
    assert scored("asvfi", "identical")["psnr"] == pytest.approx(100.0)


def test_psnr_adds_the_epsilon_after_the_mse_floor():
    """−10·log10(max(MSE, floor) + eps): with both set, identical frames score −10·log10(floor + eps)."""
    frame = torch.full((3, 4, 4), 0.5)
    assert protocols.psnr_db(frame, frame, eps=1e-8, mse_floor=1e-10) == pytest.approx(-10 * math.log10(1.01e-8),
                                                                                       abs=1e-9)
    shifted = frame + 1e-5  # MSE about 1e-10, under the floor: 4e-10 + 1e-9
    mse = float(((shifted.double() - frame.double()) ** 2).mean())
    assert protocols.psnr_db(shifted, frame, eps=1e-9, mse_floor=4e-10) == pytest.approx(-10 * math.log10(1.4e-9),
                                                                                         abs=1e-9)
    assert protocols.psnr_db(shifted, frame, eps=1e-9, mse_floor=0.0) == pytest.approx(-10 * math.log10(mse + 1e-9),
                                                                                       abs=1e-9)


# ----------------------------------------------------------------------------- quantisation, crop
def test_quantisation():
    quant = FIXTURE["vfibench"]["to_pil_quantisation"]
    truncated = protocols.quantize_prediction(torch.tensor(quant["x"]), "truncate") * 255
    assert torch.round(truncated).tolist() == quant["byte"]
    for name, png in FIXTURE["vfibench"]["pred_png_u8"].items():
        quantized = protocols.quantize_prediction(PAIRS[name]["pred"], "truncate")
        assert torch.equal(torch.round(quantized * 255).to(torch.uint8), png.permute(2, 0, 1)), name
    assert torch.equal(protocols.quantize_prediction(PAIRS["sub_level"]["pred"], "round"), gt_of("sub_level"))
    assert torch.equal(protocols.quantize_prediction(PAIRS["noisy"]["pred"], "none"), PAIRS["noisy"]["pred"])
    png_values = torch.arange(256.0) / 255
    for mode in ("round", "clamp_round", "truncate"):  # frames read back from 8-bit PNGs are unchanged
        assert torch.equal(protocols.quantize_prediction(png_values, mode), png_values), mode
    assert protocols.quantize_prediction(torch.tensor([-0.2, 1.3]), "clamp_round").tolist() == [0.0, 1.0]
    for mode in ("none", "round", "clamp_round", "truncate"):  # float32 whatever the model's dtype
        assert protocols.quantize_prediction(png_values.double(), mode).dtype == torch.float32, mode
    with pytest.raises(ValueError, match="round"):
        protocols.quantize_prediction(PAIRS["noisy"]["pred"], "dither")


def test_center_crop_offsets_and_frames():
    sample = FIXTURE["flavr"]["ucf101_sample"]
    for size, offset in sample["crop_offsets_formula"].items():
        height, width = map(int, size.split("x"))
        assert list(protocols.center_crop_offsets(height, width, 224)) == offset
    frame = sample["frames_u8"]["frame0.png"].numpy()
    top, left = sample["crop_top_left"][0]
    assert np.array_equal(protocols.apply_frame_crop(frame, "center224"), frame[top:top + 224, left:left + 224])
    assert protocols.center_crop(np.ones((100, 90, 3), np.uint8), 224).shape == (224, 224, 3)
    assert protocols.apply_frame_crop(np.zeros((37, 45, 3)), "even").shape == (36, 44, 3)


def test_center_crop_pads_a_small_frame_as_torchvision_does_the_odd_pixel_after():
    """CenterCrop pads (size - h) // 2 before and the rest after: 221 rows get 1 above and 2 below,
    91 columns 66 left and 67 right."""
    cropped = protocols.center_crop(np.ones((221, 91, 3), np.uint8), 224)
    rows, cols = np.nonzero(cropped[:, :, 0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 221, 66, 156)
    cropped = protocols.center_crop(np.ones((300, 101, 3), np.uint8), 224)  # only the width is short
    rows, cols = np.nonzero(cropped[:, :, 0])
    assert cropped.shape == (224, 224, 3) and (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 223, 61, 161)


# ----------------------------------------------------------------------------- averaging
def test_set_means():
    batch = FIXTURE["flavr"]["eval_metrics_batch"]
    per_image = {name: [value] for name, value in zip(batch["names"], batch["psnr_per_image"])}
    assert abs(protocols.aggregate("flavr", per_image) - batch["psnr_avg"]) <= TOL["psnr_db_abs"]
    ssims = {name: [value] for name, value in zip(batch["names"], batch["ssim_per_image"])}
    assert abs(protocols.aggregate("flavr", ssims) - batch["ssim_avg"]) <= TOL["ssim_abs"]

    rife = FIXTURE["ucf101_benchmarks_rife_ema"]["rife"]
    for key, tol in (("psnr", TOL["psnr_db_abs"]), ("ssim", TOL["ssim_abs"])):
        triplets = {name: [value] for name, value in rife[key].items()}
        assert abs(protocols.aggregate("rife", triplets) - rife[f"avg_{key}"]) <= tol
    running = [float(line.split()[2]) for line in rife["printed"][1:]]
    values = list(rife["psnr"].values())
    for count, printed in enumerate(running, 1):
        assert abs(protocols.aggregate("rife", {"set": values[:count]}) - printed) <= TOL["psnr_db_abs"]

    frame_mean = FIXTURE["vfibench"]["frame_mean"]
    for key, tol in (("psnr", TOL["psnr_db_abs"]), ("ssim", TOL["ssim_abs"])):
        values = [FIXTURE["vfibench"][key][name] for name in frame_mean["names"]]
        assert abs(protocols.aggregate("vfibench", {"image set": values}) - frame_mean[key]) <= tol

    videos = {"a": [1.0, 2.0, 3.0], "b": [10.0]}
    assert protocols.aggregate("asvfi", videos) == 6.0
    assert protocols.aggregate("flavr", videos) == 4.0
    with pytest.raises(ValueError):
        protocols.aggregate("asvfi", {"a": []})


# ----------------------------------------------------------------------------- video bookkeeping
@pytest.mark.parametrize("n_frames", [12, 24, 25, 37])
def test_vfibench_windows_pairs_and_frames(n_frames):
    case = VIDEO[str(n_frames)]
    windows = protocols.vfips_windows("vfibench", n_frames)
    assert windows == case["vfips_windows_ref"] == case["vfips_windows_dis"]
    value, reason = protocols.pool_vfips("vfibench", case["vfips_window_scores"])
    if math.isnan(case["vfips_returned"]):
        assert value is None and "not enough frames" in reason
    else:
        assert value == pytest.approx(case["vfips_returned"], abs=1e-6)
    batches = protocols.flolpips_pairs(n_frames)
    assert [[t for t, _ in batch] for batch in batches] == case["flolpips_batches_ref"]
    calls = [call for call in case["flolpips_flow_calls"] if call["video"] == "ref"]
    assert [[t for t, _ in b] for b in batches] == [c["from"] for c in calls]
    assert [[u for _, u in b] for b in batches] == [c["to"] for c in calls]
    stub_scores = [0.01 * (t + 1) for batch in batches for t, _ in batch]
    assert np.mean(stub_scores) == pytest.approx(case["flolpips_returned"], abs=1e-9)
    assert protocols.generated_frames(n_frames, 2) == case["psnr_frames_scored(skip=2)"]
    grey = torch.full((3, 16, 16), 10 / 255)
    assert protocols.psnr_db(grey + 3 / 255, grey, eps=1e-8, mse_floor=0.0) == pytest.approx(case["psnr"],
                                                                                            abs=TOL["psnr_db_abs"])


def test_toolkit_windows_keep_the_last_full_window():
    assert protocols.vfips_window_starts(12, "all_full") == [0]
    assert protocols.vfips_window_starts(24, "all_full") == [0, 12]
    assert protocols.vfips_window_starts(37, "all_full") == [0, 12, 24]
    assert protocols.pool_vfips("asvfi", [-0.3, 0.1, math.inf]) == (pytest.approx(-0.1), "")
    assert protocols.pool_vfips("vfibench", [-0.3, 0.1, math.inf]) == (pytest.approx(0.1), "")
    assert protocols.pool_vfips("vfibench", [math.inf])[0] is None


@pytest.mark.parametrize("key", sorted(VIDEO["eval_protocol"]))
def test_vfibench_eval_protocol(key):
    case = VIDEO["eval_protocol"][key]
    n_frames, scale = (int(part.split("=")[1]) for part in key.split(","))
    two, four = protocols.video_plan(n_frames, scale, 2), protocols.video_plan(n_frames, scale, 4)
    assert list(two.target_frames) == case["target_frames"]
    assert list(two.input_frames) == case["input_frames"]
    assert [list(w) for w in two.model_windows] == case["pairs_2_inputs"]
    assert [list(w) for w in four.model_windows] == case["windows_4_inputs(stmfnet)"]
    assert list(two.generated_frames) == case["frames_scored_psnr_ssim_lpips"]
    n_target = len(two.target_frames)
    assert protocols.vfips_window_starts(n_target, "reference") == case["vfips_window_starts"]
    assert sum(len(b) for b in protocols.flolpips_pairs(n_target)) == case["flolpips_pairs"]
    sequence = [f"input:{i}" if i % scale == 0 else f"generated:{i // scale * scale}+{i % scale}/{scale}"
                for i in two.target_frames]
    assert sequence == case["distorted_sequence"]


def test_video_plan_refuses_what_it_cannot_plan():
    with pytest.raises(ValueError, match="at least 3 frames"):
        protocols.video_plan(2, 2)
    with pytest.raises(ValueError, match="2 or 4"):
        protocols.video_plan(12, 2, 3)


# ----------------------------------------------------------------------------- YUV 4:2:0
def test_yuv420p_to_rgb_exact():
    planes = YUV["raw_yuv420p"]
    back = yuv420.yuv420p_to_rgb(planes["Y"].numpy(), planes["U"].numpy(), planes["V"].numpy())
    assert np.array_equal(back, YUV["raw_rgb_back_u8"].numpy())
    assert np.array_equal(back, YUV["mp4_lossless_qp0_rgb_back_u8"].numpy())


def test_yuv420p_to_rgb_equals_opencv():
    # Every (U, V) pair four times (512² chroma samples), each time with 4 luma values; the luma
    # offset per pair cycles, so every Y value meets many (U, V). (The fixture checked all 2²⁴.)
    index = np.arange(1 << 18, dtype=np.int64)
    u, v = (index & 255).reshape(512, 512), ((index >> 8) & 255).reshape(512, 512)
    repeat, offset = (index >> 16).reshape(512, 512), 16 * ((7 * u + 13 * v) % 16)
    y = np.empty((1024, 1024), np.int64)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        y[dy::2, dx::2] = (offset + 4 * repeat + k) % 256
    y, u, v = (plane.astype(np.uint8) for plane in (y, u, v))
    i420 = np.concatenate([y, u.reshape(256, 1024), v.reshape(256, 1024)])
    assert np.array_equal(yuv420.yuv420p_to_rgb(y, u, v), cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))


def test_rgb_to_yuv420p_within_one_level_of_ffmpeg():
    planes = yuv420.rgb_to_yuv420p(YUV["frame_rgb_u8"].numpy())
    for plane, name in zip(planes, "YUV"):
        diff = np.abs(plane.astype(int) - YUV["raw_yuv420p"][name].numpy().astype(int)).max()
        assert diff <= TOL["yuv_forward_levels"], name
    assert np.array_equal(planes[0], YUV["raw_yuv420p"]["Y"].numpy())
    # One level of Y, U or V moves R, G or B by at most 3 levels (coefficients up to 2.02).
    back = yuv420.yuv420_round_trip(YUV["frame_rgb_u8"].numpy())
    assert np.abs(back.astype(int) - YUV["raw_rgb_back_u8"].numpy().astype(int)).max() <= 3
    with pytest.raises(ValueError, match="even"):
        yuv420.rgb_to_yuv420p(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="even"):
        yuv420.rgb_to_yuv420p(np.zeros((4, 3, 3), np.uint8))


def test_rgb_to_yuv420p_chroma_mostly_exact():
    # Within one level is the tolerance, but the emulation is exact on all but 6 U and 5 V of the
    # 64 samples each; a coefficient, kernel, tap-weight or rounding slip breaks a few more.
    _, u, v = yuv420.rgb_to_yuv420p(YUV["frame_rgb_u8"].numpy())
    for plane, name, most in ((u, "U", 6), (v, "V", 5)):
        assert (plane != YUV["raw_yuv420p"][name].numpy()).sum() <= most, name


def test_yuv420p_to_rgb_odd_luma_takes_its_block_chroma():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    u, v = (rng.integers(0, 256, (2, 3), dtype=np.uint8) for _ in range(2))
    assert np.array_equal(yuv420.yuv420p_to_rgb(y[:3, :5], u, v), yuv420.yuv420p_to_rgb(y, u, v)[:3, :5])


def test_flolpips_input_per_protocol():
    grey = np.full((16, 16, 3), 10, np.uint8)
    assert torch.equal(protocols.flolpips_input("vfibench", grey), VIDEO["first_flolpips_ref_frame_after_yuv"])
    frame = YUV["frame_rgb_u8"].numpy()
    assert torch.equal(protocols.flolpips_input("asvfi", frame), torch.from_numpy(frame).permute(2, 0, 1) / 255)


# ----------------------------------------------------------------------------- FVD
@pytest.mark.parametrize("seed", sorted(FVD["clips_real_16f"]["frames_by_seed"]))
def test_styleganv_real_clip_starts(seed):
    lengths = FVD["video_lengths"]
    names = sorted(lengths)
    expected = FVD["clips_real_16f"]["frames_by_seed"][seed]
    clips = protocols.fvd_clip_frames(with_seed("stylegan-v", int(seed.split("=")[1])), [lengths[n] for n in names])
    assert {names[i]: c[0] for i, c in clips.items()} == expected
    assert [names[i] for i in clips] == FVD["clips_real_16f"]["videos_kept(sorted)"]


def test_styleganv_subsampled_and_generated_clips():
    case = FVD["clips_real_16f_subsample8"]
    lengths = [100, 128, 135]
    clips = protocols.fvd_clip_frames(with_seed("stylegan-v", 0), lengths, subsample=8)
    assert [clips[1][0], clips[2][0]] == list(case["frames_by_seed"]["seed=0"].values()) and 0 not in clips
    generated = protocols.fvd_clip_frames("stylegan-v", [16, 17, 40, 100], real=False)
    expected = FVD["clips_generated_as_dataset_16f"]["frames_by_seed"]["seed=0"]
    assert [c[0] for c in generated.values()] == list(expected.values())
    with pytest.raises(ValueError, match="fewer than 16"):
        protocols.fvd_clip_frames("stylegan-v", [15, 40], real=False)
    record, real_call = protocols.get_protocol("stylegan-v"), FVD["calls"][0]
    assert record.fvd_max_videos == real_call["max_items"]
    assert real_call["detector_kwargs"]["rescale"] and real_call["detector_kwargs"]["resize"]
    assert record.fvd_detector_input == "uint8"


def test_styleganv_uses_the_first_max_videos_of_those_long_enough():
    """Real videos under 16 frames are dropped before the first fvd_max_videos are taken."""
    record = dataclasses.replace(protocols.get_protocol("stylegan-v"), fvd_max_videos=2)
    assert sorted(protocols.fvd_clip_frames(record, [20, 10, 20, 20])) == [0, 2]
    generated = protocols.fvd_clip_frames(record, [16, 16, 16], real=False)
    assert generated == {0: [list(range(16))], 1: [list(range(16))]}


def test_toolkit_clips_are_all_consecutive_clips():
    clips = protocols.fvd_clip_frames("asvfi", [15, 16, 40])
    assert clips == {0: [], 1: [list(range(16))], 2: [list(range(16)), list(range(16, 32))]}


def test_feature_stats_and_frechet_distance():
    real, fake = FVD["features"]["real"].numpy(), FVD["features"]["fake"].numpy()
    mean, cov = protocols.feature_stats(real, "raw_moments")
    assert np.allclose(mean, FVD["real_mean_cov"]["mean"].numpy(), rtol=0, atol=1e-12)
    assert np.allclose(cov, FVD["real_mean_cov"]["cov"].numpy(), rtol=0, atol=1e-12)
    rel = TOL["fvd_rel"]
    assert protocols.fvd_from_features("stylegan-v", real, fake) == pytest.approx(FVD["fvd2048_16f"], rel=rel)
    assert protocols.fvd_from_features("asvfi", real, fake) == pytest.approx(FVD["fvd2048_16f"], rel=rel)
    cdfvd = dataclasses.replace(protocols.get_protocol("stylegan-v"), fvd_sqrtm="real_fake")
    assert protocols.fvd_from_features(cdfvd, real, fake) == pytest.approx(FVD["cdfvd"]["fvd_from_stats"], rel=rel)
    few_real, few_fake = FVD["features"]["real_few"].numpy(), FVD["features"]["fake_few"].numpy()
    assert protocols.fvd_from_features("stylegan-v", few_real, few_fake) == pytest.approx(
        FVD["fvd_fewer_clips_than_dims"], rel=rel)


def test_presumed_detector_resize():
    case = FVD["resize"]
    resized = protocols.presumed_styleganv_detector_input(case["clip_u8_BCTHW"])
    rows = torch.tensor(case["sample_rows_cols"])
    sampled = resized[..., rows, :][..., rows]
    assert torch.allclose(sampled, case["styleganv_presumed_trilinear"], atol=1e-6)
    assert float(resized.double().sum()) == pytest.approx(case["styleganv_presumed_sum"], rel=1e-6)


# ----------------------------------------------------------------------------- never inf or NaN
def finite_cases():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand((3, 8, 10), generator=generator)
    yield "identical", noise, noise.clone()
    yield "black", torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)
    yield "white", torch.ones(3, 16, 16), torch.ones(3, 16, 16)
    yield "black vs white", torch.zeros(3, 16, 16), torch.ones(3, 16, 16)
    yield "constant grey", torch.full((3, 12, 12), 0.5), torch.full((3, 12, 12), 0.5)
    yield "8x10", noise, torch.rand((3, 8, 10), generator=generator)
    yield "1x1", torch.rand((3, 1, 1), generator=generator), torch.rand((3, 1, 1), generator=generator)
    yield "1x1 identical", torch.full((3, 1, 1), 0.2), torch.full((3, 1, 1), 0.2)
    yield "2x7", torch.rand((3, 2, 7), generator=generator), torch.rand((3, 2, 7), generator=generator)
    yield "tiny difference", torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 0.5 + 1e-7)


@pytest.mark.parametrize("protocol", sorted(protocols.PROTOCOLS))
@pytest.mark.parametrize("case", list(finite_cases()), ids=lambda case: case[0])
def test_frame_metrics_are_finite(protocol, case):
    _, pred, gt = case
    result = protocols.score_frame(protocol, pred, gt)
    assert all(math.isfinite(value) for value in result.values()), result


@pytest.mark.parametrize("protocol", sorted(protocols.PROTOCOLS))
def test_video_metrics_are_finite_or_explained(protocol):
    assert protocols.pool_vfips(protocol, [])[0] is None
    assert protocols.pool_vfips(protocol, [math.inf, math.inf])[0] is None
    features = np.random.default_rng(0).normal(size=(5, 8))
    for real, fake in ((features, features), (np.zeros((4, 8)), np.zeros((4, 8))), (features, features + 1)):
        assert math.isfinite(protocols.fvd_from_features(protocol, real, fake))
    with pytest.raises(ValueError, match="at least 2 clips"):
        protocols.fvd_from_features(protocol, features[:1], features)
    assert torch.isfinite(protocols.flolpips_input(protocol, np.zeros((2, 2, 3), np.uint8))).all()


def test_psnr_without_epsilon_or_floor_is_an_error_not_inf():
    frame = torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match="inf"):
        protocols.psnr_db(frame, frame, eps=0.0, mse_floor=0.0)


@pytest.mark.parametrize("name", list(protocols.PROTOCOLS))
def test_on_videos_every_protocol_scores_the_rounded_pngs_and_says_so_where_its_reference_did_not(name):
    reference = protocols.get_protocol(name)
    on_videos = protocols.for_dataset(name, "demo", png_predictions=True)
    assert on_videos.quantize == "clamp_round"
    assert "prediction clamped and rounded to 8 bits" in on_videos.description()
    assert ("8-bit PNGs inference.py writes" in on_videos.departures) == (reference.quantize != "clamp_round")
    on_images = protocols.for_dataset(name, "vimeo-septuplet", png_predictions=False)
    assert on_images.quantize == reference.quantize and on_images.departures == reference.departures
