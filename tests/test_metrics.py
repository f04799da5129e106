"""metrics.py against its references: numpy (PSNR), scikit-image (SSIM), the lpips / flolpips /
VFIPS fixtures (deterministic weights + reference outputs), closed-form Fréchet distances and a
scripted stand-in for the I3D detector."""
import dataclasses
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from compat import load_fixture, recipe_state
from skimage.metrics import structural_similarity

import flow
import fvd
import lpips_parts
import metric_registry
import metrics
import protocols
import vfips
import weights
import yuv420
from utils import ASVFIError

# ----------------------------------------------------------------------------- helpers


def assert_close(actual, expected, atol, what):
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


@pytest.fixture(scope="module")
def lpips_fixture():
    return load_fixture("lpips_alex_compat.pt")


@pytest.fixture(scope="module")
def pwc_fixture():
    return load_fixture("pwcnet_compat.pt")


@pytest.fixture(scope="module")
def lpips_net(lpips_fixture):
    net = lpips_parts.LPIPS()
    net.load_state_dict(recipe_state(lpips_fixture, net))
    return net


@pytest.fixture(scope="module")
def pwc_net(pwc_fixture):
    net = flow.PWCNet()
    net.load_state_dict(recipe_state(pwc_fixture, net))
    return net.eval()


def skimage_ssim(pred, gt):
    """Reference SSIM per frame of (B, 3, H, W) arrays."""
    return np.array([structural_similarity(p.transpose(1, 2, 0), g.transpose(1, 2, 0), gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=2)
                     for p, g in zip(pred, gt)])


def flolpips_triplet(lpips_net, flow_fn, frame0, frame1, frame_pred, frame_ref, reference_nan=False):
    """The reference's frame-interpolation API: flows from the middle frame to each true neighbour,
    reference minus prediction, scored with each and averaged, (B,)."""
    scores = [metrics.flolpips_from_flow(lpips_net, frame_ref, frame_pred,
                                         flow_fn(frame_ref, neighbour) - flow_fn(frame_pred, neighbour), reference_nan)
              for neighbour in (frame0, frame1)]
    return (scores[0] + scores[1]) / 2


# ----------------------------------------------------------------------------- PSNR
def test_psnr_matches_numpy_per_frame():
    rng = np.random.default_rng(1)
    gt = rng.random((3, 3, 17, 29))
    pred = np.clip(gt + rng.normal(0, [0.01, 0.05, 0.2], (17, 29, 3, 3)).transpose(3, 2, 0, 1), 0, 1)
    expected = [10 * np.log10(1 / np.mean((p - g) ** 2)) for p, g in zip(pred, gt)]
    actual = metrics.psnr(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    assert actual.dtype == torch.float64 and actual.shape == (3,)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=1e-4)
    assert actual[0] > actual[1] > actual[2]


def test_psnr_of_identical_frames_is_floored_and_shapes_are_checked():
    frame = torch.rand(2, 3, 8, 8)
    assert torch.equal(metrics.psnr(frame, frame.clone()), torch.full((2,), 100.0, dtype=torch.float64))
    assert torch.isinf(metrics.psnr(frame, frame.clone(), mse_floor=0.0)).all()  # the reference's +inf
    with pytest.raises(ValueError, match="psnr"):
        metrics.psnr(frame, frame[:, :, :4])


# ----------------------------------------------------------------------------- SSIM
def test_gaussian_window_is_scipys_11_tap_kernel():
    taps = metrics.gaussian_window()
    impulse = np.zeros(21)
    impulse[10] = 1
    expected = scipy.ndimage.gaussian_filter1d(impulse, 1.5, truncate=3.5, mode="constant")[5:16]
    assert taps.numel() == 11
    np.testing.assert_allclose(taps.numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("height,width", [(32, 32), (23, 41), (40, 19), (11, 16), (150, 37)])
def test_ssim_matches_skimage_on_random_frames(height, width):
    rng = np.random.default_rng(height * width)
    gt = rng.random((3, 3, height, width))
    pred = np.clip(gt + rng.normal(0, 0.15, gt.shape), 0, 1)
    expected = skimage_ssim(pred, gt)
    for dtype, atol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):  # float64 frames are filtered in float64
        actual = metrics.ssim(torch.from_numpy(pred).to(dtype), torch.from_numpy(gt).to(dtype))
        assert actual.shape == (3,) and actual.dtype == torch.float64
        np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=atol, err_msg=str(dtype))


def test_ssim_matches_skimage_on_structured_and_quantised_frames():
    """Smooth gradients, flat areas (where float32 variances would cancel badly without centring),
    a shifted copy, an 8-bit quantised blend, a constant frame and an exact copy."""
    ys, xs = np.mgrid[0:36, 0:52] / 10.0
    smooth = np.stack([0.5 + 0.45 * np.sin(xs + c) * np.cos(ys / 2) for c in range(3)])
    flat = np.full((3, 36, 52), 0.9)
    flat[:, 10:20, 15:40] = 0.2
    quantised = np.round((0.5 * smooth + 0.5 * np.roll(smooth, 3, axis=2)) * 255) / 255
    pairs = [(smooth, np.roll(smooth, 2, axis=1)), (flat, np.clip(flat + 0.003, 0, 1)), (quantised, smooth),
             (np.full_like(smooth, 0.3), np.full_like(smooth, 0.3)), (smooth, smooth.copy())]
    pred = np.stack([p for p, _ in pairs])
    gt = np.stack([g for _, g in pairs])
    expected = skimage_ssim(pred, gt)
    actual = metrics.ssim(torch.from_numpy(pred).float(), torch.from_numpy(gt).float()).numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    assert actual[-1] == pytest.approx(1.0, abs=1e-7) and actual[-2] == pytest.approx(1.0, abs=1e-7)


def test_ssim_rejects_frames_smaller_than_the_window():
    with pytest.raises(ValueError, match="11x11"):
        metrics.ssim(torch.rand(1, 3, 10, 30), torch.rand(1, 3, 10, 30))


# ----------------------------------------------------------------------------- LPIPS
def test_lpips_state_dict_keys_shapes_and_order(lpips_fixture):
    state = lpips_parts.LPIPS().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(k, list(s)) for k, s in lpips_fixture["keys"]]
    for name, value in lpips_fixture["constants"].items():
        assert torch.equal(state[name], value), name


def test_lpips_recipe_reproduces_fixture_checksums(lpips_net, lpips_fixture):
    state = lpips_net.state_dict()
    for name, (total, total_abs, first) in lpips_fixture["weight_checksums"].items():
        value = state[name].double()
        assert value.sum().item() == pytest.approx(total, abs=1e-6), name
        assert value.abs().sum().item() == pytest.approx(total_abs, abs=1e-6), name
        assert value.flatten()[0].item() == first, name
    assert lpips_net.lins[2].model[1].weight is lpips_net.lin2.model[1].weight


def test_lpips_features_and_scaled_input_match_fixture(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    assert_close(lpips_net.scaling_layer(2 * inputs["img0"] - 1), outputs["scaled_input0"], 1e-6, "scaled input")
    with torch.no_grad():
        for which, image in (("feat0", inputs["img0"]), ("feat1", inputs["img1"])):
            for k, feature in enumerate(lpips_net.features(image), 1):
                assert_close(feature, outputs[f"{which}_relu{k}"], 1e-4, f"{which}_relu{k}")


def test_lpips_distances_layers_and_maps_match_fixture(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    img0, img1 = inputs["img0"], inputs["img1"]
    with torch.no_grad():
        assert_close(lpips_net(img0, img1), outputs["lpips_dist"].flatten(), 1e-5, "distance")
        assert_close(lpips_net(img0, inputs["img_near"]), outputs["lpips_dist_near"].flatten(), 1e-5, "near")
        assert_close(lpips_net.per_layer(img0, img1), outputs["lpips_per_layer"], 1e-5, "per layer")
        maps = lpips_net.layer_maps(img0, img1)
        for k, layer_map in enumerate(maps):
            assert_close(layer_map, outputs[f"lin_map_native_{k}"], 1e-5, f"native map {k}")
            upsampled = F.interpolate(layer_map, size=(64, 64), mode="bilinear", align_corners=False)
            assert_close(upsampled, outputs["lpips_spatial_per_layer"][k], 1e-5, f"spatial layer {k}")
        assert_close(lpips_net.spatial(img0, img1), outputs["lpips_spatial_map"], 1e-5, "spatial map")
    assert_close(outputs["flolpips_copy_lpips_dist"], outputs["lpips_dist"].flatten(), 1e-6, "flolpips copy")


def test_lpips_float64_matches_float64_reference(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    net64 = lpips_parts.LPIPS().double()
    net64.load_state_dict(lpips_net.state_dict())
    img0, img1 = inputs["img0"].double(), inputs["img1"].double()
    with torch.no_grad():
        assert_close(net64(img0, img1), outputs["lpips_dist_fp64"].flatten(), 1e-12, "fp64 distance")
        assert_close(net64.spatial(img0, img1), outputs["lpips_spatial_map_fp64"], 1e-12, "fp64 spatial")


def test_lpips_is_zero_for_identical_frames_and_stays_deterministic_in_train_mode(lpips_net, lpips_fixture):
    img0 = lpips_fixture["inputs"]["img0"]
    with torch.no_grad():
        assert lpips_net(img0, img0).abs().max() == 0
        before = lpips_net(img0, lpips_fixture["inputs"]["img1"])
        lpips_net.train()
        after = lpips_net(img0, lpips_fixture["inputs"]["img1"])
        lpips_net.eval()
    assert torch.equal(before, after)


def test_official_checkpoint_layout_maps_onto_lpips(lpips_net, lpips_fixture):
    """torchvision's `features.J.*` + alex.pth's `linK.model.1.weight` give the same network."""
    state = lpips_net.state_dict()
    alexnet = {f"features.{j}.{kind}": state[f"net.slice{k}.{j}.{kind}"]
               for k, j in lpips_parts.ALEXNET_CONVS for kind in ("weight", "bias")}
    alexnet.update({"classifier.1.weight": torch.zeros(4096, 9216)})  # extra torchvision keys are ignored
    lins = {f"lin{k}.model.1.weight": state[f"lin{k}.model.1.weight"] for k in range(5)}
    fresh = lpips_parts.LPIPS()
    fresh.load_state_dict(lpips_parts.official_lpips_state(fresh, alexnet, lins))
    inputs = lpips_fixture["inputs"]
    with torch.no_grad():
        assert torch.equal(fresh(inputs["img0"], inputs["img1"]), lpips_net(inputs["img0"], inputs["img1"]))
    del lins["lin3.model.1.weight"]
    with pytest.raises(ValueError, match="lin3.model.1.weight"):
        lpips_parts.official_lpips_state(fresh, alexnet, lins)
    alexnet["features.3.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="features.3.weight"):
        lpips_parts.official_lpips_state(fresh, alexnet, {**lins, "lin3.model.1.weight": state["lin3.model.1.weight"]})


def test_load_lpips_loads_both_files_onto_the_device(lpips_net, lpips_fixture, monkeypatch):
    state = lpips_net.state_dict()
    files = {"alexnet": {f"features.{j}.{kind}": state[f"net.slice{k}.{j}.{kind}"]
                         for k, j in lpips_parts.ALEXNET_CONVS for kind in ("weight", "bias")},
             "lpips_alex": {f"lin{k}.model.1.weight": state[f"lin{k}.model.1.weight"] for k in range(5)}}
    monkeypatch.setattr(lpips_parts.weights, "load_state_dict", lambda name, *args: (files[name], name))
    loaded = lpips_parts.load_lpips()
    inputs = lpips_fixture["inputs"]
    with torch.no_grad():
        assert torch.equal(loaded(inputs["img0"], inputs["img1"]), lpips_net(inputs["img0"], inputs["img1"]))
    assert {p.device.type for p in lpips_parts.load_lpips(device="meta").parameters()} == {"meta"}


def test_lpips_refuses_frames_of_different_shapes_instead_of_broadcasting(lpips_net):
    with pytest.raises(ValueError, match="metrics.LPIPS: expected two"):
        lpips_net(torch.rand(1, 3, 32, 32), torch.rand(2, 3, 32, 32))


# ----------------------------------------------------------------------------- FloLPIPS
def test_flolpips_with_given_flow_matches_fixture(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    with torch.no_grad():
        score = metrics.flolpips_from_flow(lpips_net, inputs["img0"], inputs["img1"], inputs["flow_diff"])
        per_layer = metrics.flolpips_per_layer(lpips_net, inputs["img0"], inputs["img1"], inputs["flow_diff"])
    assert_close(score, outputs["flolpips_given_flow"], 1e-5, "flolpips")
    assert_close(per_layer, outputs["flolpips_given_flow_per_layer"], 1e-5, "flolpips per layer")


def test_flolpips_float64_matches_float64_reference(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    net64 = lpips_parts.LPIPS().double()
    net64.load_state_dict(lpips_net.state_dict())
    with torch.no_grad():
        score = metrics.flolpips_from_flow(net64, inputs["img0"].double(), inputs["img1"].double(),
                                           inputs["flow_diff"].double())
    assert_close(score, outputs["flolpips_given_flow_fp64"], 1e-12, "fp64 flolpips")


def test_flolpips_zero_flow_difference_nan_in_reference_uniform_fallback_ours(lpips_net, lpips_fixture):
    inputs, outputs = lpips_fixture["inputs"], lpips_fixture["outputs"]
    flow_diff = inputs["flow_diff"].clone()
    flow_diff[1] = 0
    with torch.no_grad():
        reference = metrics.flolpips_from_flow(lpips_net, inputs["img0"], inputs["img1"], flow_diff,
                                               reference_nan=True)
        ours = metrics.flolpips_from_flow(lpips_net, inputs["img0"], inputs["img1"], flow_diff)
        plain = lpips_net(inputs["img0"], inputs["img1"])
    expected = outputs["flolpips_flow_sample1_zero"]
    assert torch.isnan(reference[1]) and torch.isnan(expected[1])
    assert_close(reference[:1], expected[:1], 1e-5, "reference NaN mode, sample 0")
    assert_close(ours[0], expected[0], 1e-5, "fallback leaves sample 0 alone")
    assert_close(ours[1], plain[1], 1e-6, "zero flow difference → uniform weights = plain LPIPS")


def test_flow_weights_fall_back_per_layer_when_difference_misses_a_coarse_grid():
    """A difference in the top-left 2x2 pixels of 64x64 reaches the 15x15 grid but not 7x7 or 3x3
    (the reference gives NaN there); weights always sum to one per sample."""
    flow_diff = torch.zeros(1, 2, 64, 64)
    flow_diff[:, :, :2, :2] = 1.0
    for size, spread in (((15, 15), False), ((7, 7), True), ((3, 3), True)):
        w = metrics.flow_weights(flow_diff, size)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.isfinite(w).all()
        assert bool((w == w.flatten()[0]).all()) == spread, size
        assert torch.isnan(metrics.flow_weights(flow_diff, size, reference_nan=True)).any() == spread


def test_flolpips_end_to_end_with_pwcnet_matches_fixture(lpips_net, pwc_net, pwc_fixture):
    inputs, outputs = pwc_fixture["inputs"], pwc_fixture["outputs"]
    ref, pred = inputs["video_ref"], inputs["video_dis"]
    with torch.no_grad():
        assert_close(pwc_net(inputs["first"], inputs["second"]), outputs["flow"], 1e-4, "PWC-Net flow")
        per_pair = metrics.flolpips_pairs(lpips_net, pwc_net, ref, pred)
        video = metrics.flolpips_video(lpips_net, pwc_net, ref, pred, batch=2)
        triplet = flolpips_triplet(lpips_net, pwc_net, inputs["triplet_I0"], inputs["triplet_I1"],
                                           inputs["triplet_frame_dis"], inputs["triplet_frame_ref"])
    assert_close(per_pair, outputs["flolpips_video_per_pair"], 1e-5, "per pair")
    assert video == pytest.approx(outputs["flolpips_video_mean"].item(), abs=1e-5)
    assert_close(triplet, outputs["flolpips_triplet"], 1e-5, "triplet")


def test_flolpips_streaming_equals_whole_video_and_identical_videos_score_zero(lpips_net, pwc_net, pwc_fixture):
    ref, pred = pwc_fixture["inputs"]["video_ref"], pwc_fixture["inputs"]["video_dis"]
    scorer = metrics.FloLPIPSPairs(lpips_net, pwc_net, batch=2)
    for start, stop in ((0, 1), (1, 3), (3, 4)):
        scorer.update(ref[start:stop], pred[start:stop])
    with torch.no_grad():
        whole = metrics.flolpips_video(lpips_net, pwc_net, ref, pred)
        assert metrics.flolpips_video(lpips_net, pwc_net, ref, ref.clone()) == 0.0
        assert math.isnan(metrics.flolpips_video(lpips_net, pwc_net, ref, ref.clone(), reference_nan=True))
    assert scorer.result().value == pytest.approx(whole, abs=1e-7)
    single = metrics.FloLPIPSPairs(lpips_net, pwc_net)
    single.update(ref[:1], pred[:1])
    assert single.result().value is None and "2 frames" in single.result().reason


def through_yuv420p(frames):
    """[0, 1] frames as VFIBenchmark's FloLPIPS sees them: nearest 8-bit level, raw yuv420p and back."""
    as_u8 = np.round(frames.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    return torch.stack([torch.from_numpy(yuv420.yuv420_round_trip(f)).permute(2, 0, 1).float() / 255 for f in as_u8])


def test_flolpips_streaming_under_vfibench_scores_the_frames_after_the_yuv420p_round_trip(lpips_net, pwc_net,
                                                                                         pwc_fixture):
    """Frames a little off the 8-bit grid (under half a level) round to their level, then go through 4:2:0."""
    ref, pred = pwc_fixture["inputs"]["video_ref"], pwc_fixture["inputs"]["video_dis"]
    generator = torch.Generator().manual_seed(6)
    ref, pred = (torch.round(v.clamp(0, 1) * 255) / 255 + (torch.rand(v.shape, generator=generator) - 0.5) * 0.7 / 255
                 for v in (ref, pred))
    scorer = metrics.FloLPIPSPairs(lpips_net, pwc_net, batch=2, protocol="vfibench")
    for start, stop in ((0, 1), (1, 3), (3, 4)):
        scorer.update(ref[start:stop], pred[start:stop])
    with torch.no_grad():
        expected = metrics.flolpips_video(lpips_net, pwc_net, through_yuv420p(ref), through_yuv420p(pred))
        lossless = metrics.flolpips_video(lpips_net, pwc_net, ref, pred)
    assert scorer.result().value == pytest.approx(expected, abs=1e-6)
    assert abs(expected - lossless) > 1e-4, "the colour path must matter on these frames"


# ----------------------------------------------------------------------------- VFIPS
class StubVFIPS(torch.nn.Module):
    """Records the windows it sees; scores mean(pred − ref) of the window (negative allowed)."""

    def __init__(self, inf_windows=()):
        super().__init__()
        self.calls = []
        self.inf_windows = set(inf_windows)

    def forward(self, ref, pred):
        assert ref.shape[:3] == (1, 12, 3) and ref.min() >= -1 and ref.max() <= 1
        self.calls.append((ref.clone(), pred.clone()))
        if len(self.calls) - 1 in self.inf_windows:
            return torch.full((1, 1, 1, 1), math.inf)
        return (pred - ref).mean().view(1, 1, 1, 1)


@pytest.mark.parametrize("n_frames,starts", [(11, []), (12, [0]), (23, [0]), (24, [0, 12]), (37, [0, 12, 24])])
def test_vfips_windows_include_the_last_full_window(n_frames, starts):
    assert metrics.vfips_window_starts(n_frames) == starts


def test_vfips_protocol_with_stub_network():
    torch.manual_seed(3)
    ref = torch.rand(30, 3, 70, 66)
    pred = (ref - 0.1 * torch.rand(30, 3, 70, 66)).clamp(0, 1)
    net = StubVFIPS()
    score, reason = metrics.vfips_video(net, ref, pred)
    assert reason == "" and len(net.calls) == 2
    assert torch.allclose(net.calls[1][0][0], 2 * ref[12:24] - 1), "window 2 = frames 12..23, in [-1, 1], ref first"
    expected = np.mean([(2 * (pred[s:s + 12] - ref[s:s + 12])).mean().item() for s in (0, 12)])
    assert score == pytest.approx(expected, abs=1e-6) and score < 0, "raw score, never abs()"
    streamed = metrics.VFIPSWindows(StubVFIPS())
    for start in range(0, 30, 7):
        streamed.update(ref[start:start + 7], pred[start:start + 7])
    assert streamed.result().value == pytest.approx(score, abs=1e-9)


@pytest.mark.parametrize("chunks", [(36,), (25, 11), (12, 12, 12), (5, 30, 1)])
def test_vfips_streaming_scores_every_full_window_whatever_the_chunk_sizes(chunks):
    """A chunk may hold several windows (evaluate.py feeds whole read chunks): each is scored once, in order."""
    generator = torch.Generator().manual_seed(8)
    ref = torch.rand(36, 3, 65, 65, generator=generator)
    pred = (ref - 0.2 * torch.rand(ref.shape, generator=generator)).clamp(0, 1)
    streamed, whole = metrics.VFIPSWindows(StubVFIPS()), StubVFIPS()
    expected, _ = metrics.vfips_video(whole, ref, pred)
    start = 0
    for size in chunks:
        streamed.update(ref[start:start + size], pred[start:start + size])
        start += size
    assert len(streamed.net.calls) == len(whole.calls) == 3
    for (got_ref, _), (want_ref, _) in zip(streamed.net.calls, whole.calls):
        assert torch.equal(got_ref, want_ref)
    assert streamed.result().value == pytest.approx(expected, abs=1e-9)


def test_vfips_reference_window_rule_scores_only_the_kept_prefix():
    """Under "vfibench" a 24-frame video scores only window 0 (range(0, N-12, 12)); the full second window is not pooled."""
    assert protocols.vfips_window_starts(24, "reference") == [0]
    torch.manual_seed(5)
    ref = 0.5 + 0.1 * torch.rand(24, 3, 65, 65)
    pred = torch.cat([ref[:12] - 0.1, ref[12:] - 0.3])  # window scores 2*(pred-ref): -0.2, -0.6
    streamed = metrics.VFIPSWindows(StubVFIPS(), protocol="vfibench")
    for start in range(0, 24, 8):
        streamed.update(ref[start:start + 8], pred[start:start + 8])
    assert streamed.result().value == pytest.approx(0.2, abs=1e-5), "abs of window 0 alone, not of mean(-0.2, -0.6)"


def test_vfips_drops_inf_windows_and_explains_missing_scores():
    frames = torch.rand(36, 3, 65, 65)
    score, _ = metrics.vfips_video(StubVFIPS(inf_windows={1}), frames, frames * 0.5)
    expected = np.mean([(frames[s:s + 12] * 0.5 * 2 - (2 * frames[s:s + 12])).mean().item() for s in (0, 24)])
    assert score == pytest.approx(expected, abs=1e-6)
    short = metrics.vfips_video(StubVFIPS(), frames[:11], frames[:11])
    assert short[0] is None and short[1].startswith("not enough frames (VFIPS needs")
    all_inf = metrics.vfips_video(StubVFIPS(inf_windows={0}), frames[:12], frames[:12])
    assert all_inf[0] is None and "+inf" in all_inf[1]
    small = metrics.VFIPSWindows(StubVFIPS())
    small.update(torch.rand(12, 3, 64, 80), torch.rand(12, 3, 64, 80))
    assert small.result().value is None and "65x65" in small.result().reason
    net = StubVFIPS()
    assert metrics.vfips_video(net, frames[:12, :, :64], frames[:12, :, :64]) == (None, metrics.VFIPS_TOO_SMALL)
    assert not net.calls, "a 64-px frame never reaches the network"


def test_vfips_window_score_matches_fixture_through_the_01_mapping():
    fixture = load_fixture("vfips_compat.pt")
    net = vfips.VFIPSNet()
    net.load_state_dict(recipe_state(fixture, net))
    net.eval()
    ref = (fixture["inputs"]["ref"][0] + 1) / 2
    pred = (fixture["inputs"]["dis"][0] + 1) / 2
    score, reason = metrics.vfips_video(net, torch.cat([ref, ref[:5]]), torch.cat([pred, pred[:5]]))
    assert reason == ""
    assert score == pytest.approx(fixture["outputs"]["score"].item(), abs=1e-5)


# ----------------------------------------------------------------------------- FVD
def test_frechet_distance_matches_closed_form_for_diagonal_and_rotated_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert protocols.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(closed, rel=1e-9)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # same eigenbasis: Σ1 and Σ2 commute
    sigma1, sigma2 = rotation @ np.diag(var1) @ rotation.T, rotation @ np.diag(var2) @ rotation.T
    assert protocols.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(closed, rel=1e-8)
    assert protocols.frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_with_singular_covariances_stays_finite_and_close():
    var1, var2 = np.array([1.0, 2.0, 0.0, 0.0]), np.array([0.5, 0.0, 3.0, 0.0])
    closed = np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    value = protocols.frechet_distance(np.zeros(4), np.diag(var1), np.zeros(4), np.diag(var2))
    assert math.isfinite(value) and value == pytest.approx(closed, abs=1e-6)


def test_frechet_distance_falls_back_to_an_offset_when_sqrtm_fails(monkeypatch):
    real_sqrtm = protocols.scipy.linalg.sqrtm
    calls = []

    def failing_once(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(protocols.scipy.linalg, "sqrtm", failing_once)
    var1, var2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    value = protocols.frechet_distance(np.zeros(2), np.diag(var1), np.ones(2), np.diag(var2), eps=1e-6)
    assert len(calls) == 2 and np.allclose(calls[1], np.diag((var1 + 1e-6) * (var2 + 1e-6)))
    assert value == pytest.approx(2 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2), abs=1e-5)


def test_feature_stats_use_population_covariance_like_stylegan_v():
    feats = np.random.default_rng(2).normal(size=(50, 3))
    mean, cov = protocols.feature_stats(feats, "centred")
    np.testing.assert_allclose(mean, feats.mean(0))
    np.testing.assert_allclose(cov, np.cov(feats, rowvar=False, bias=True), atol=1e-12)


class StandInI3D(torch.nn.Module):
    """Same call signature as StyleGAN-V's I3D; features = per-channel clip mean and mean square."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("metrics must call the detector with rescale=False, resize=False, return_features=True")
        if x.shape[1] != 3 or x.shape[2] != 16 or x.shape[3] != 224 or x.shape[4] != 224:
            raise RuntimeError("expected (B, 3, 16, 224, 224)")
        if bool(x.min() < -1) or bool(x.max() > 1):
            raise RuntimeError("expected values in [-1, 1]")
        return torch.cat([x.mean(dim=(2, 3, 4)), x.pow(2).mean(dim=(2, 3, 4))], 1)


def test_fvd_whole_path_with_scripted_stand_in_detector(tmp_path):
    """Frames that are flat per frame survive the resize exactly, so the features are known in
    closed form and the FVD can be computed independently with numpy."""
    torch.jit.script(StandInI3D()).save(str(tmp_path / weights.REGISTRY["i3d"].filename))
    detector = fvd.load_i3d(weights_dir=tmp_path, allow_download=False)
    rng = np.random.default_rng(5)
    levels_real = [rng.uniform(0, 1, (n, 3)) for n in (40, 33, 16)]
    levels_fake = [np.clip(level + rng.normal(0, 0.1, level.shape), 0, 1) for level in levels_real]

    def video(levels, height=20, width=28):
        return torch.from_numpy(levels).float()[:, :, None, None].expand(-1, -1, height, width).contiguous()

    def clip_features(real_videos, fake_videos):
        """Every consecutive 16-frame clip of each pair, through the scorer evaluate.py uses."""
        real, fake = [], []
        for ref, pred in zip(real_videos, fake_videos):
            scorer = metrics.FVDClips(detector)
            scorer.update(ref, pred)
            pair = scorer.features()
            if pair is not None:
                real.append(pair[0])
                fake.append(pair[1])
        return np.concatenate(real), np.concatenate(fake)

    measured_real, measured_fake = clip_features([video(v) for v in levels_real], [video(v) for v in levels_fake])
    value = protocols.fvd_from_features("asvfi", measured_real, measured_fake)

    def features(levels_list):
        rows = []
        for levels in levels_list:
            for start in range(0, len(levels) - 15, 16):
                clip = 2 * levels[start:start + 16].astype(np.float32) - 1
                rows.append(np.concatenate([clip.mean(0), (clip ** 2).mean(0)]))
        return np.array(rows)

    real, fake = features(levels_real), features(levels_fake)
    mu1, mu2 = real.mean(0), fake.mean(0)
    cov1, cov2 = np.cov(real, rowvar=False, bias=True), np.cov(fake, rowvar=False, bias=True)
    expected = protocols.frechet_distance(mu1, cov1, mu2, cov2)
    assert len(measured_real) == len(real) == 2 + 2 + 1
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-6)
    same = protocols.fvd_from_features("asvfi", *clip_features([video(v) for v in levels_real],
                                                               [video(v) for v in levels_real]))
    assert same == pytest.approx(0, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2 clips"):
        protocols.fvd_from_features("asvfi", *clip_features([video(levels_real[2])], [video(levels_fake[2])]))


def test_i3d_clip_layout_and_range():
    clip = fvd.i3d_clip(torch.rand(16, 3, 24, 40))
    assert clip.shape == (3, 16, 224, 224) and clip.min() >= -1 and clip.max() <= 1


def test_i3d_clip_resizes_with_pixel_centres_not_corners():
    """align_corners=False: a 2-pixel [0, 1] row spreads to 224 with its outer quarters flat at -1 and +1."""
    frame = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(16, 3, 2, 2)
    clip = fvd.i3d_clip(frame)
    assert torch.all(clip[..., :56] == -1) and torch.allclose(clip[..., 168:], torch.ones(()))
    assert torch.all(clip[..., 56:168] > -0.995) and torch.all(clip[..., 56:168] < 0.995)


def test_uint8_detector_input_hands_rounded_8_bit_clips_for_the_detector_to_rescale_and_resize():
    """StyleGAN-V's call: (B, 3, T, H, W) uint8 of the clamped, rounded frames, rescale=True, resize=True."""
    calls = []

    def detector(batch, **kwargs):
        calls.append((batch, kwargs))
        return batch.float().mean(dim=(2, 3, 4))

    clips = [torch.tensor([-0.5, 0.5 / 255, 1.6 / 255, 1.5]).view(4, 1, 1, 1).expand(4, 3, 2, 5)] * 2
    features = fvd.clip_features(detector, clips, detector_input="uint8")
    batch, kwargs = calls[0]
    assert kwargs == {"rescale": True, "resize": True, "return_features": True}
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 4, 2, 5)
    assert batch[0, 0, :, 0, 0].tolist() == [0, 0, 2, 255]  # clamped, then rounded half to even
    assert features.dtype == np.float64 and features.shape == (2, 3)
    with pytest.raises(ValueError, match="unknown detector input 'uint16'"):
        fvd.clip_features(detector, clips, detector_input="uint16")


# ----------------------------------------------------------------------------- registry
def test_build_metrics_offline_lists_unavailable_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    built, unavailable = metric_registry.build_metrics(list(metric_registry.METRIC_NAMES), weights_dir=tmp_path / "empty",
                                               allow_download=False, flow_name="dis")
    assert set(built) == {"psnr", "ssim"}
    assert set(unavailable) == {"lpips", "flolpips", "vfips", "fvd"}
    for name, files in (("lpips", ("alexnet", "lpips_alex")), ("flolpips", ("alexnet", "lpips_alex"))):
        assert all(weights.REGISTRY[file].filename in unavailable[name] for file in files)  # every file at once
    assert unavailable["lpips"].count(weights.REGISTRY["lpips_alex"].filename) == 1
    assert weights.REGISTRY["vfips"].filename in unavailable["vfips"]
    assert weights.REGISTRY["i3d"].filename in unavailable["fvd"]
    frames = torch.rand(2, 3, 16, 16)
    scorer = built["psnr"].scorer()
    scorer.update(frames, frames * 0.5)
    assert scorer.result().value == pytest.approx(metrics.psnr(frames * 0.5, frames).mean().item())


def test_build_metrics_with_stand_in_detector_and_dis_flow_column(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.jit.script(StandInI3D()).save(str(tmp_path / weights.REGISTRY["i3d"].filename))
    built, unavailable = metric_registry.build_metrics(["fvd", "psnr"], weights_dir=tmp_path, allow_download=False)
    assert set(built) == {"fvd", "psnr"} and not unavailable and built["fvd"].scope == "set"
    assert metric_registry.metric_column("flolpips", "dis") == "flolpips_dis"
    assert metric_registry.metric_column("flolpips", "pwc") == "flolpips"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_registry.build_metrics(["psnr", "niqe"])


def test_build_metrics_gives_each_scorer_the_protocol_and_loads_lpips_once(monkeypatch):
    """vfibench's window rule, pooling and FloLPIPS colour path and stylegan-v's uint8 detector call
    reach the scorers; LPIPS and FloLPIPS share one network."""
    loads = []
    monkeypatch.setattr(metric_registry, "load_lpips", lambda *args: loads.append(args) or "lpips-net")
    monkeypatch.setattr(metric_registry.vfips, "load_vfips", lambda **kwargs: "vfips-net")
    monkeypatch.setattr(metric_registry.flow, "build_flow_estimator", lambda *args, **kwargs: "flow-fn")
    monkeypatch.setattr(metric_registry, "load_i3d", lambda *args: "i3d")
    built, _ = metric_registry.build_metrics(["lpips", "flolpips", "vfips"], flow_name="dis", protocol="vfibench")
    assert len(loads) == 1 and built["lpips"].scorer().fn == "lpips-net"
    assert built["flolpips"].scorer().protocol.name == "vfibench"
    assert built["vfips"].scorer().protocol.name == "vfibench"
    built, _ = metric_registry.build_metrics(["fvd"], protocol="stylegan-v")
    assert built["fvd"].scorer().detector_input == "uint8"


def test_unavailable_reason_adds_only_the_other_files_not_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    (tmp_path / weights.REGISTRY["pwcnet"].filename).write_bytes(b"on disk")
    error = ASVFIError(f"{weights.REGISTRY['alexnet'].filename} is missing")
    reason = metric_registry.unavailable_reason(error, ("alexnet", "lpips_alex", "pwcnet"), tmp_path)
    assert reason.startswith(str(error) + "; it also needs " + weights.REGISTRY["lpips_alex"].filename)
    assert reason.count(weights.REGISTRY["alexnet"].filename) == 1
    assert weights.REGISTRY["pwcnet"].filename not in reason


def test_flolpips_with_pwc_flow_needs_pwcnet_and_an_unknown_flow_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert metric_registry.metric_files("flolpips", "pwc") == ("alexnet", "lpips_alex", "pwcnet")
    assert metric_registry.metric_files("flolpips", "dis") == ("alexnet", "lpips_alex")
    _, unavailable = metric_registry.build_metrics(["flolpips"], weights_dir=tmp_path, allow_download=False)
    assert weights.REGISTRY["pwcnet"].filename in unavailable["flolpips"]  # one trip fetches all three
    with pytest.raises(ValueError, match="flow 'raft'"):
        metric_registry.build_metrics(["psnr"], flow_name="raft")


# ----------------------------------------------------------------------------- protocols
@pytest.mark.parametrize("protocol", ["asvfi", "flavr", "rife", "vfibench"])
def test_protocol_frame_metrics_equal_protocols_score_frame(protocol):
    generator = torch.Generator().manual_seed(3)
    gt = torch.round(torch.rand((3, 3, 20, 26), generator=generator) * 255) / 255
    pred = gt + 0.05 * torch.randn(gt.shape, generator=generator)
    record = protocols.get_protocol(protocol)
    quantized = protocols.quantize_prediction(pred, record.quantize)
    psnr_values = metrics.protocol_psnr(protocol)(quantized, gt)
    ssim_values = metrics.protocol_ssim(protocol)(quantized, gt)
    for k in range(len(gt)):
        expected = protocols.score_frame(protocol, pred[k], gt[k])
        assert float(psnr_values[k]) == pytest.approx(expected["psnr"], abs=1e-5)
        assert float(ssim_values[k]) == pytest.approx(expected["ssim"], abs=1e-6)


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 2, 7), (3, 16, 16)])
def test_default_protocol_frame_metrics_are_finite_for_identical_constant_and_tiny_frames(shape):
    for frame in (torch.zeros(shape), torch.full(shape, 0.5), torch.rand(shape)):
        for name in ("psnr", "ssim"):
            built, _ = metric_registry.build_metrics([name], allow_download=False)
            scorer = built[name].scorer()
            scorer.update(frame[None], frame[None].clone())
            assert math.isfinite(scorer.result().value), (name, shape)


def test_frame_mean_averages_every_batch_and_refuses_a_non_finite_frame():
    """A protocol without epsilon or floor gives identical frames +inf dB: the video gets no mean, with the reason."""
    generator = torch.Generator().manual_seed(4)
    gt = torch.rand((5, 3, 6, 7), generator=generator)
    pred = (gt + 0.1 * torch.randn(gt.shape, generator=generator)).clamp(0, 1)
    scorer = metrics.FrameMean(metrics.psnr, batch=2)
    scorer.update(gt, pred)
    assert scorer.result().value == pytest.approx(float(metrics.psnr(pred, gt).mean()), abs=1e-12)
    no_floor = dataclasses.replace(protocols.get_protocol("asvfi"), psnr_mse_floor=0.0)
    scorer = metrics.FrameMean(metrics.protocol_psnr(no_floor), batch=2)
    scorer.update(gt, torch.cat([pred[:4], gt[4:]]))
    assert scorer.result() == metrics.Result(None, "non-finite frame value (the protocol has no epsilon or floor)")
    assert metrics.FrameMean(metrics.psnr).result() == metrics.Result(None, "no generated frames")


def test_protocol_refuses_metrics_it_does_not_define():
    with pytest.raises(ASVFIError, match="'flavr' does not define lpips"):
        metric_registry.build_metrics(["psnr", "lpips"], protocol="flavr")


def test_corrupt_cached_weight_file_makes_that_metric_alone_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in ("i3d", "vfips"):
        (tmp_path / weights.REGISTRY[name].filename).write_bytes(b"not a torch file")
    built, unavailable = metric_registry.build_metrics(["psnr", "vfips", "fvd"], weights_dir=tmp_path, allow_download=False)
    assert set(built) == {"psnr"}
    for name in ("i3d", "vfips"):
        assert str(tmp_path / weights.REGISTRY[name].filename) in unavailable[name if name != "i3d" else "fvd"]
    pwc = tmp_path / weights.REGISTRY["pwcnet"].filename  # FloLPIPS's flow: the same message as the others
    pwc.write_bytes(b"not a torch file")
    with pytest.raises(weights.WeightsUnavailable, match=f"Delete {pwc} and download {pwc.name} again from http"):
        flow.load_pwcnet(tmp_path, allow_download=False)


def test_fvd_clips_follow_a_selection_and_keep_only_open_frames():
    detector = torch.jit.script(StandInI3D())
    frames = torch.rand(40, 3, 8, 8)
    chosen = metrics.FVDClips(detector)
    chosen.select([list(range(5, 21))], [list(range(16))])
    for start in range(0, 40, 7):
        chosen.update(frames[start:start + 7], frames[start:start + 7] * 0.5)
    real, fake = chosen.features()
    assert np.allclose(real[0], fvd.clip_features(detector, [frames[5:21]])[0])
    assert np.allclose(fake[0], fvd.clip_features(detector, [frames[:16] * 0.5])[0])
    assert not chosen.frames[0] and not chosen.frames[1]
    every = metrics.FVDClips(detector, batch=1)
    for start in range(0, 40, 7):
        every.update(frames[start:start + 7], frames[start:start + 7])
    assert len(every.features()[0]) == 2 and len(every.frames[0]) <= 16


def test_a_torchscript_file_that_is_not_the_i3d_detector_makes_fvd_unavailable_naming_it(tmp_path, monkeypatch):
    """Its hash is unknown, so the call is what tells another TorchScript network from the detector."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = tmp_path / weights.REGISTRY["i3d"].filename
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    built, unavailable = metric_registry.build_metrics(["fvd", "psnr"], weights_dir=tmp_path, allow_download=False)
    assert set(built) == {"psnr"}
    assert unavailable["fvd"].startswith(f"{path}: a TorchScript module whose forward takes no rescale, resize, "
                                         f"return_features, so not StyleGAN-V's I3D detector")
