"""PerVFI: the official generator (keys, weights, every recorded output of the reference fixture),
deformable convolution, splatting, conditional Glow (invertibility, log-det), NLL, sampling, API."""
import copy
import math
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import interpolate
import losses
import pervfi
from compat import FIXTURES, load_fixture, recipe_state

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_PARAMETERS = 8_667_545


# --- helpers ----------------------------------------------------------------------------------

class ShiftFlow(torch.nn.Module):
    """A small 'flow estimator' with parameters: a horizontal shift plus a learned-looking field."""

    def __init__(self, shift=2.0):
        super().__init__()
        self.shift = shift
        self.conv = torch.nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, img0, img1):
        field = self.conv(torch.cat([img0, img1], 1))
        direction = torch.tensor([self.shift, 0.0], device=img0.device).view(1, 2, 1, 1)
        sign = torch.where(img0.mean() >= img1.mean(), 1.0, -1.0)
        return field + direction * sign


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = pervfi.default_pervfi_config(width=0.125, steps_per_level=2, **overrides)
    return pervfi.build_pervfi(config, flow_estimator=ShiftFlow())


def perturb(module, std=0.05, seed=1):
    """Move every parameter away from its (often zero) initialisation, like a trained network."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def frames(batch=2, size=(32, 32), seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(batch, 3, *size, generator=generator)
    smooth = F.avg_pool2d(base, 5, stride=1, padding=2)
    inputs = torch.stack([smooth, smooth, torch.roll(smooth, 2, dims=3), torch.roll(smooth, 4, dims=3)], 1)
    target = torch.roll(smooth, 1, dims=3)[:, None]
    return inputs, target


def trained_looking(model, inputs, target, std=0.05):
    """Perturbed weights and ActNorms initialised from data (the official first-batch init)."""
    perturb(model, std).eval()
    with torch.no_grad():
        model(inputs, target=target, heat=0.0)
    assert all(m.initialized.item() == 1 for m in model.modules() if isinstance(m, pervfi.ActNorm))
    return model


def max_diff(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max(max_diff(x, y) for x, y in zip(a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


# --- the official network, pinned by the reference fixture -------------------------------------

@pytest.fixture(scope="module")
def fixture():
    return load_fixture("pervfi_compat.pt")


@pytest.fixture(scope="module")
def official(fixture):
    model = pervfi.build_pervfi(pervfi.default_pervfi_config())
    model.load_state_dict(recipe_state(fixture), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def half_time(official, fixture):
    """Conditions, soft masks and intermediates at t = 0.5 (eval), computed once."""
    inputs, trace = fixture["inputs"], {}
    with torch.no_grad():
        conditions, masks = official.conditions(inputs["img0"], inputs["img1"], torch.tensor([[0.5]]),
                                                (inputs["fflow"], inputs["bflow"]), trace=trace)
    return conditions, masks, trace


def test_keys_shapes_and_parameter_count_equal_the_official_network(fixture):
    model = pervfi.build_pervfi(pervfi.default_pervfi_config())
    ours = [(name, list(value.shape)) for name, value in model.state_dict().items()]
    assert ours == [(name, list(shape)) for name, shape in fixture["keys"]]
    listed = []
    for line in (FIXTURES / "pervfi_keys.txt").read_text().splitlines():
        _, name, shape = line.split("\t")
        listed.append((name, [int(s) for s in shape.strip("[]").split(",") if s]))
    assert ours == listed
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS == fixture["meta"]["param_count"]
    assert sum(p.numel() for p in model.trainable_parameters()) == OFFICIAL_PARAMETERS


def test_official_checkpoint_format_loads_strictly(fixture, tmp_path):
    # their v00.pth is the generator's state_dict, saved from DDP (`module.` prefix, which their loader strips)
    state = recipe_state(fixture)
    path = tmp_path / "v00.pth"
    torch.save({f"module.{name}": value for name, value in state.items()}, path)
    model = pervfi.load_official_state_dict(pervfi.build_pervfi(pervfi.default_pervfi_config()), path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items())
    assert loaded["condFLownet.blocks.0.actnorm.initialized"].dtype == torch.uint8
    again = pervfi.build_official_pervfi({"state_dict": state})  # wrapped and unprefixed works too
    assert torch.equal(again.state_dict()["multiscaleFuse.final_layers.2.bias"], state["multiscaleFuse.final_layers.2.bias"])
    with pytest.raises(RuntimeError, match="Missing key"):
        pervfi.load_official_state_dict(pervfi.build_pervfi(pervfi.default_pervfi_config()),
                                        {k: v for k, v in state.items() if "softbinary.0" not in k})


def test_intermediates_match_the_reference(fixture, half_time):
    _, _, trace = half_time
    recorded = fixture["outputs"]["intermediates_t0p5_heat0"]
    assert set(recorded) - {"decode_block_out"} <= set(trace)
    for name, value in recorded.items():
        if name == "decode_block_out":
            continue
        if name == "holes":
            assert all(torch.equal(a, b) for a, b in zip(trace[name], value))
        else:
            assert max_diff(trace[name], value) < 5e-5, name


def test_heat_zero_predictions_and_soft_masks_match(official, fixture, half_time):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    conditions, masks, _ = half_time
    trace = {}
    with torch.no_grad():
        pred = official.decode(conditions, official.draw_eps(conditions, 0.0), trace=trace)
        conditions3, masks3 = official.conditions(inputs["img0"], inputs["img1"], torch.tensor([[0.3]]),
                                                  (inputs["fflow"], inputs["bflow"]))
        pred3 = official.decode(conditions3, official.draw_eps(conditions3, 0.0))
        encoded3 = official.likelihood(inputs["gt_t0p3"], conditions3)
    assert max_diff(pred, outputs["pred_t0p5_heat0"]) < 1e-5
    assert max_diff(trace["decode_block_out"], outputs["intermediates_t0p5_heat0"]["decode_block_out"]) < 5e-5
    assert max_diff(pred3, outputs["pred_t0p3_heat0"]) < 1e-5
    assert max_diff(masks, outputs["soft_masks_t0p5"]) < 1e-5
    assert max_diff(masks3, outputs["soft_masks_t0p3"]) < 1e-5
    assert max_diff(pred, outputs["pred_t0p5_heat0_fp64"]) < 1e-5
    for term in ("nll", "log_p", "log_det"):
        assert max_diff(encoded3[term], outputs[f"{term}_t0p3"]) < 2e-5
    for term in ("log_p_raw", "log_det_raw"):
        torch.testing.assert_close(encoded3[term], outputs[f"{term}_t0p3"], rtol=1e-5, atol=0)
    assert max_diff(encoded3["latents"], outputs["zs_gt_t0p3"]) < 2e-5


def test_nonzero_heat_and_latents_are_used_as_noise(official, fixture, half_time):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    conditions, _, _ = half_time
    with torch.no_grad():
        pred = official.decode(conditions, inputs["zs_heat0p3"])
        encoded = official.likelihood(inputs["gt_t0p5"], conditions)
        from_latents = official.decode(conditions, encoded["latents"])  # the official decode: eps semantics
        exact = official.decode(conditions, latents=encoded["latents"])
    assert max_diff(pred, outputs["pred_t0p5_heat0p3"]) < 2e-5
    assert max_diff(from_latents, outputs["pred_from_zs_gt_t0p5"]) < 2e-5
    assert max_diff(exact, inputs["gt_t0p5"]) < 1e-3  # while the exact inverse gives the target back
    assert max_diff(official.training_heat(encoded["latents"]), outputs["train_heat_from_zs_gt_t0p5"]) < 1e-6


def test_nll_terms_match_in_eval_mode(official, fixture, half_time):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    conditions, _, _ = half_time
    with torch.no_grad():
        encoded = official.likelihood(inputs["gt_t0p5"], conditions)
    for term in ("nll", "log_p", "log_det"):
        assert max_diff(encoded[term], outputs[f"{term}_t0p5"]) < 2e-5, term
    for term in ("log_p_raw", "log_det_raw"):
        torch.testing.assert_close(encoded[term], outputs[f"{term}_t0p5"], rtol=1e-5, atol=0)
    assert max_diff(encoded["nll"], outputs["nll_t0p5_fp64"]) < 2e-5
    assert max_diff(encoded["latents"], outputs["zs_gt_t0p5"]) < 2e-5


def test_nll_terms_match_in_training_mode_with_the_given_noise(official, fixture):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    mask_noise = inputs["train_noise_softbinary"][::-1]  # recorded in call order (level 2 first)
    official.train()
    try:
        with torch.no_grad():
            conditions, masks = official.conditions(inputs["img0"], inputs["img1"], torch.tensor([[0.5]]),
                                                    (inputs["fflow"], inputs["bflow"]), mask_noise=mask_noise)
            encoded = official.likelihood(inputs["gt_t0p5"], conditions, gt_noise=inputs["train_noise_gt"])
    finally:
        official.eval()
    assert max_diff(masks, outputs["train_soft_masks_t0p5"]) < 1e-5
    assert max_diff(encoded["nll"], outputs["train_nll_t0p5"]) < 2e-5
    for term in ("log_p_raw", "log_det_raw"):
        torch.testing.assert_close(encoded[term], outputs[f"train_{term}_t0p5"], rtol=1e-5, atol=0)
    assert max_diff(official.training_heat(encoded["latents"]), outputs["train_heat_t0p5"]) < 1e-6
    nll, _, _ = pervfi.official_nll(torch.zeros(1), torch.zeros(1), 64 * 96, dequantized=True)
    assert max_diff(-nll, outputs["train_loss_const_t0p5"].reshape(1)) < 1e-6  # -log2(255) per pixel


def test_fresh_actnorm_initialises_from_the_first_batch(official, fixture, half_time):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    conditions, _, _ = half_time
    fresh = copy.deepcopy(official)
    for module in fresh.modules():
        if isinstance(module, pervfi.ActNorm):
            module.initialized.zero_()
    with torch.no_grad():
        encoded = fresh.likelihood(inputs["gt_t0p5"], conditions)
    assert max_diff(encoded["nll"], outputs["fresh_init_nll_t0p5"]) < 2e-5
    state = fresh.state_dict()
    recorded = outputs["fresh_init_actnorm"]
    assert len(recorded) == 2 * 51
    assert max(max_diff(state[name], value) for name, value in recorded.items()) < 2e-5
    assert all(m.initialized.item() == 1 for m in fresh.modules() if isinstance(m, pervfi.ActNorm))


def test_batch_of_two_is_computed_per_sample(official, fixture):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    img0, img1 = torch.cat([inputs["img0"], inputs["img1"]]), torch.cat([inputs["img1"], inputs["img0"]])
    flows = (torch.cat([inputs["fflow"], inputs["bflow"]]), torch.cat([inputs["bflow"], inputs["fflow"]]))
    with torch.no_grad():
        conditions, _ = official.conditions(img0, img1, torch.full((2, 1), 0.5), flows)
        pred = official.decode(conditions, official.draw_eps(conditions, 0.0))
        encoded = official.likelihood(inputs["gt_t0p5"].expand(2, -1, -1, -1), conditions)
    assert max_diff(pred, outputs["batch2_pred_heat0"]) < 1e-5
    assert max_diff(encoded["nll"], outputs["batch2_nll"]) < 2e-5


def test_forward_wires_the_official_computation(official, fixture):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    clip = torch.stack([inputs["img0"], inputs["img0"], inputs["img1"], inputs["img1"]], 1)
    with torch.no_grad():
        out = official(clip, ts=torch.tensor([[0.5]]), target=inputs["gt_t0p5"][:, None], heat=0.0,
                       flows=(inputs["fflow"], inputs["bflow"]))
    assert max_diff(out["pred"][:, 0], outputs["pred_t0p5_heat0"]) < 1e-5
    assert max_diff(out["nll"], outputs["nll_t0p5"]) < 2e-5


def test_laplacian_loss_and_deformable_convolution_unit_case(fixture):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    loss = losses.pervfi_laplacian_loss(outputs["pred_t0p5_heat0"], inputs["gt_t0p5"])
    assert max_diff(loss, outputs["lap_loss_pred_t0p5_heat0"]) < 1e-6
    unit = inputs["dcn_unit"]
    out = pervfi.deform_conv2d(unit["x"], unit["offset"], unit["mask"], unit["weight"], unit["bias"],
                               padding=unit["padding"])
    assert max_diff(out, outputs["dcn_unit_out"]) < 1e-5


def test_float64_model_matches_the_float64_reference(official, fixture):
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    model = copy.deepcopy(official).double()
    wide = {k: inputs[k].double() for k in ("img0", "img1", "fflow", "bflow", "gt_t0p5")}
    with torch.no_grad():
        conditions, _ = model.conditions(wide["img0"], wide["img1"], torch.tensor([[0.5]]), (wide["fflow"], wide["bflow"]))
        pred = model.decode(conditions, model.draw_eps(conditions, 0.0))
        encoded = model.likelihood(wide["gt_t0p5"], conditions)
    assert pred.dtype == torch.float64
    assert max_diff(pred, outputs["pred_t0p5_heat0_fp64"]) < 1e-10
    assert max_diff(encoded["nll"], outputs["nll_t0p5_fp64"]) < 1e-10
    torch.testing.assert_close(encoded["log_p_raw"], outputs["log_p_raw_t0p5_fp64"], rtol=1e-12, atol=0)


# --- deformable convolution --------------------------------------------------------------------

def test_deform_conv_with_zero_offsets_and_unit_masks_equals_conv2d():
    x = torch.randn(2, 8, 7, 9)
    weight, bias = torch.randn(5, 8, 3, 3), torch.randn(5)
    groups = 2
    out = pervfi.deform_conv2d(x, torch.zeros(2, groups * 18, 7, 9), torch.ones(2, groups * 9, 7, 9), weight, bias)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=1), atol=1e-5, rtol=1e-5)


def test_deform_conv_offsets_are_dy_dx_per_group_and_tap():
    x = torch.randn(1, 4, 6, 8)
    weight = torch.randn(3, 4, 3, 3)
    offset = torch.zeros(1, 2, 9, 2, 6, 8)  # (group, tap, (dy, dx))
    offset[:, 0, :, 1] = 1.0  # group 0 (channels 0-1): every tap one pixel to the right
    offset[:, 1, :, 0] = 1.0  # group 1 (channels 2-3): every tap one pixel down
    mask = torch.full((1, 18, 6, 8), 0.5)
    out = pervfi.deform_conv2d(x, offset.view(1, 36, 6, 8), mask, weight)
    shifted = torch.cat([F.pad(x[:, :2, :, 1:], (0, 1)), F.pad(x[:, 2:, 1:], (0, 0, 0, 1))], 1)
    expected = 0.5 * F.conv2d(shifted, weight, padding=1)
    # the first row/column taps read real pixels where the shifted copy pads with zeros
    torch.testing.assert_close(out[..., 1:, 1:], expected[..., 1:, 1:], atol=1e-5, rtol=1e-5)


# --- splatting ---------------------------------------------------------------------------------

def test_splatting_hand_computed_cases():
    flow = torch.zeros(1, 2, 4, 4)
    values = torch.zeros(1, 1, 4, 4)
    values[..., 1, 1] = 1.0
    flow[:, 0, 1, 1], flow[:, 1, 1, 1] = 0.25, 0.5
    out = pervfi.softsplat(values, flow, mode="sum")
    assert out[0, 0, 1:3, 1:3].tolist() == [[0.375, 0.125], [0.375, 0.125]] and out.sum() == 1.0
    # two pixels land on one target: sum, average and softmax-weighted average
    values = torch.tensor([[[[2.0, 4.0]]]])
    flow = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    metric = torch.tensor([[[[1.0, 3.0]]]])
    assert pervfi.softsplat(values, flow, mode="sum")[0, 0, 0, 1].item() == 6.0
    torch.testing.assert_close(pervfi.softsplat(values, flow, mode="avg")[0, 0, 0, 1], torch.tensor(6 / (2 + 1e-7)))
    soft = (2 * math.e + 4 * math.e ** 3) / (math.e + math.e ** 3 + 1e-7)
    torch.testing.assert_close(pervfi.softsplat(values, flow, metric, "soft")[0, 0, 0, 1], torch.tensor(soft))
    # half a pixel beyond the border keeps half its weight inside; a NaN flow is skipped
    flow = torch.tensor([[[[-0.5, float("nan")]], [[0.0, 0.0]]]])
    assert pervfi.softsplat(torch.ones(1, 1, 1, 2), flow, mode="sum").tolist() == [[[[0.5, 0.0]]]]


def test_splat_pyramid_shifts_features_and_marks_holes():
    features = [torch.randn(1, 3, 8, 8), torch.randn(1, 5, 4, 4)]
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 2.0
    splatted, holes = pervfi.splat_pyramid(features, torch.zeros(1, 1, 8, 8), flow)
    torch.testing.assert_close(splatted[0][..., 2:], features[0][..., :-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(splatted[1][..., 1:], features[1][..., :-1], atol=1e-5, rtol=1e-5)
    expected0, expected1 = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)
    expected0[..., :2], expected1[..., :1] = 1, 1
    assert torch.equal(holes[0], expected0) and torch.equal(holes[1], expected1)


def test_low_metric_wins_the_softmax_splat():
    # the official convention: the network's metric is NEGATED, so the lower score is in front
    values = torch.zeros(1, 1, 8, 8)
    values[..., 2:4, 1:3] = 1.0
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0, 2:4, 1:3] = 3.0
    splatted, holes = pervfi.splat_pyramid([values], -5.0 * values, flow)
    expected_holes = torch.zeros(1, 1, 8, 8)
    expected_holes[..., 2:4, 1:3] = 1
    assert torch.equal(holes[0], expected_holes)
    assert splatted[0][..., 2:4, 4:6].min() > 0.99  # exp(5) outweighs the background it lands on


# --- conditional Glow -------------------------------------------------------------------------

def small_glow(channels=(5, 6, 7), steps=2, size=16, batch=2, std=0.05, dtype=torch.float32):
    glow = perturb(pervfi.CondFlowNet(list(channels), steps=steps, hidden=8), std=std).to(dtype)
    conditions = [torch.randn(batch, c, size // 2 ** (i + 1), size // 2 ** (i + 1), dtype=dtype)
                  for i, c in enumerate(channels)]
    return glow, conditions


def test_conditional_glow_is_invertible_and_actnorm_initialises_from_data():
    glow, conditions = small_glow()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    _, _, latents = glow.encode(x, conditions)  # the first call initialises every ActNorm
    first = glow.blocks[0].actnorm
    squeezed = pervfi.squeeze2d(x)
    normalised = (first.logs.exp() + 1e-8) * (squeezed + first.loc)
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3)), torch.ones(12), atol=1e-4, rtol=0)
    assert [tuple(z.shape[1:]) for z in latents] == [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    assert (glow.decode(conditions, latents=latents) - x).abs().max() < 1e-4
    assert (glow.decode(conditions, eps=latents) - x).abs().max() > 1e-2  # eps semantics differ


def test_actnorm_reads_its_flag_once_and_again_only_after_the_flag_changes(monkeypatch):
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(self.dtype) or item(self))
    actnorm = pervfi.ActNorm(3)
    x = torch.randn(4, 3, 5, 5)
    for _ in range(3):
        actnorm(x)
        actnorm(x, reverse=True)
    assert reads == [torch.uint8, torch.uint8]  # 0: initialise; 1: trusted from then on (a host sync on CUDA)
    actnorm.initialized.zero_()
    actnorm.logs.data.fill_(5.0)
    actnorm(x)
    assert actnorm.logs.abs().max() < 2  # re-initialised from the data
    state = actnorm.state_dict()
    state["initialized"] = torch.tensor(0, dtype=torch.uint8)
    actnorm.load_state_dict(state)
    before = len(reads)
    actnorm(x)
    assert len(reads) > before


def mark_initialized(module, seed=2):
    """ActNorms as after training: `initialized` set, scales near 1 (no data-dependent init)."""
    generator = torch.Generator().manual_seed(seed)
    for actnorm in module.modules():
        if isinstance(actnorm, pervfi.ActNorm):
            with torch.no_grad():
                actnorm.logs.copy_(0.1 * torch.randn(actnorm.logs.shape, generator=generator))
            actnorm.initialized.fill_(1)
    return module


def jacobian_logdet(function, x):
    jacobian = torch.autograd.functional.jacobian(lambda v: function(v.view_as(x)).flatten(), x.flatten())
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign != 0
    return logabsdet


def test_flow_step_logdet_equals_autograd_jacobian():
    step = mark_initialized(perturb(pervfi.FlowStep(12, 3, hidden=8), std=0.2)).double()
    x = torch.randn(1, 12, 2, 2, dtype=torch.float64)
    condition = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    _, logdet = step(x, condition)
    expected = jacobian_logdet(lambda v: step(v, condition)[0], x)
    assert abs(logdet.item() - expected.item()) < 1e-6  # the 1x1 conv's log|det| is float32 (official)
    assert abs(expected.item()) > 1e-2


def test_whole_flow_logdet_equals_autograd_jacobian():
    glow, conditions = small_glow((2, 3, 4), size=8, batch=1, std=0.1, dtype=torch.float64)
    mark_initialized(glow)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    _, logdet, _ = glow.encode(x, conditions)

    def all_latents(v):
        return torch.cat([z.flatten() for z in glow.encode(v, conditions)[2]])

    expected = jacobian_logdet(all_latents, x)
    assert abs(logdet.item() - expected.item()) < 1e-4
    assert abs(expected.item()) > 1.0


def test_official_nll_normalisation():
    log_p, log_det, pixels = torch.tensor([-300.0]), torch.tensor([100.0]), 10
    nll, norm_log_p, norm_log_det = pervfi.official_nll(log_p, log_det, pixels, dequantized=False)
    torch.testing.assert_close(nll, torch.tensor([200.0 / (pixels * math.log(2))]))
    torch.testing.assert_close(norm_log_p, log_p / (pixels * math.log(2)))
    train_nll, _, _ = pervfi.official_nll(log_p, log_det, pixels, dequantized=True)
    torch.testing.assert_close(train_nll, nll + math.log2(255))
    torch.testing.assert_close(pervfi.bits_per_dim(train_nll), train_nll / 3)


def test_nll_falls_over_eight_steps_on_a_fixed_batch():
    model = tiny_model().train()
    inputs, target = frames(size=(24, 24))
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=2e-3)
    history = []
    for step in range(8):
        out = model(inputs, target=target, generator=torch.Generator().manual_seed(step))
        loss = out["nll"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] - 1.0, history
    assert all(math.isfinite(v) for v in history)


# --- sampling ---------------------------------------------------------------------------------

def test_heat_zero_is_deterministic_and_seeds_reproduce():
    inputs, target = frames(size=(24, 32))
    model = trained_looking(tiny_model(), inputs, target)
    frame0, frame1 = inputs[:, 1], inputs[:, 2]
    a = model.sample(frame0, frame1, 0.5, heat=0.0, seed=1)
    b = model.sample(frame0, frame1, 0.5, heat=0.0, seed=2)
    assert a.shape == (2, 3, 24, 32) and torch.equal(a, b)
    s1 = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(7))
    s1_again = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(7))
    s2 = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1, s1_again)
    assert (s1 - s2).abs().max() > 1e-3
    assert (s1 - a).abs().max() > 1e-3


def test_each_samples_noise_comes_from_its_own_generator():
    """With one generator per sample, a sample's noise does not depend on the others in its batch (in
    float64: in float32 the Glow amplifies batch-size-dependent rounding to about 1e-3)."""
    inputs, target = frames(size=(24, 32))
    model = trained_looking(tiny_model(), inputs, target).double()
    inputs, times = inputs.double(), torch.tensor([[0.25, 0.5]])

    def sample(clip, *seeds):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        return model(clip, ts=times, heat=0.3, generator=generators)["pred"]
    both = sample(inputs, 1, 2)
    assert torch.allclose(sample(inputs[1:], 2), both[1:], atol=1e-12)
    reseeded = sample(inputs, 3, 2)
    assert (reseeded[0] - both[0]).abs().max() > 1e-3
    assert torch.allclose(reseeded[1], both[1], atol=1e-12)
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        sample(inputs, 1, 2, 3)


def test_streamed_samples_depend_on_the_seed_and_not_on_the_batch_size():
    """interpolate.py seeds each window's noise by (seed, its interval's index): a video sampled with
    --batch 1 or 3 gives the same frames, another seed other frames."""
    inputs, target = frames(size=(24, 32))
    model = trained_looking(tiny_model(), inputs, target)
    clip = torch.cat([inputs[0], inputs[1, 3:]])  # 5 frames, 4 intervals
    items = [((frame.permute(1, 2, 0) * 255).round().byte().numpy(), i / 25) for i, frame in enumerate(clip)]

    def sampled(batch, seed=0):
        settings = Namespace(amp=None, tile=0, tile_overlap=32, seed=seed)
        engines = interpolate.build_engines(model, torch.device("cpu"), 4, settings)
        return np.stack([frame for frame, _ in interpolate.interpolate_video(iter(items), engines, None, batch, 25)])
    one_at_a_time = sampled(1).astype(int)
    assert one_at_a_time.shape == (17, 24, 32, 3)
    assert np.abs(sampled(3) - one_at_a_time).max() <= 1  # float32 rounding (see the test above)
    assert np.abs(sampled(1, seed=1) - one_at_a_time).max() > 2


def test_each_interval_of_a_stream_draws_its_own_noise():
    """A still clip gives every interval the same window; only each interval's own noise (keyed by its
    index) tells the sampled frames of one interval from another's."""
    inputs, target = frames(size=(24, 32))
    model = trained_looking(tiny_model(), inputs, target)
    still = (inputs[0, 1].permute(1, 2, 0) * 255).round().byte().numpy()
    items = [(still, i / 25) for i in range(4)]
    settings = Namespace(amp=None, tile=0, tile_overlap=32, seed=0)
    engines = interpolate.build_engines(model, torch.device("cpu"), 2, settings)
    out = np.stack([frame for frame, _ in interpolate.interpolate_video(iter(items), engines, None, 3, 25)])
    assert out.shape == (7, 24, 32, 3)
    between = out[1::2].astype(int)
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(between[a] - between[b]).max() > 2, (a, b)


def test_the_engine_samples_at_the_target_times_it_is_given():
    """Test-set inference asks an any-t model for the set's target times: the engine passes them on
    (the default being k / scale)."""
    inputs, target = frames(batch=1)
    model = trained_looking(tiny_model(heat=0.0), inputs, target, std=0.1)  # couplings that use the time
    engine = interpolate.Engine(model, torch.device("cpu"), 2)
    silence = np.zeros((1, 10), np.float32)

    def at(ts):
        return engine.predict(inputs, silence, silence, False, [0], ts=ts)
    quarter, three_quarters = at(torch.tensor([[0.25]])), at(torch.tensor([[0.75]]))
    assert quarter.shape == three_quarters.shape == (1, 1, 3, 32, 32)
    assert (quarter - three_quarters).abs().max() > 1e-3
    assert torch.equal(at(torch.tensor([[0.5]])), at(None))
    both = at(torch.tensor([[0.25, 0.75]]))
    assert both.shape == (1, 2, 3, 32, 32)


def test_arbitrary_times_give_different_frames_and_batch_like_single_calls():
    inputs, target = frames(batch=1)
    model = trained_looking(tiny_model(), inputs, target, std=0.1)  # couplings that really use the condition
    frame0, frame1 = inputs[:, 1], inputs[:, 2]
    singles = [model.sample(frame0, frame1, t, heat=0.0) for t in (0.25, 0.5, 0.75)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (singles[i] - singles[j]).abs().max() > 1e-3
    with torch.no_grad():
        batched = model(inputs, ts=torch.tensor([[0.25, 0.5, 0.75]]), heat=0.0)["pred"].clamp(0, 1)
    assert batched.shape == (1, 3, 3, 32, 32)
    torch.testing.assert_close(batched, torch.stack(singles, 1), atol=1e-5, rtol=1e-5)


def test_default_times_follow_the_scale_and_odd_sizes_are_cropped_back():
    model = tiny_model(scale=4).eval()
    inputs, _ = frames(batch=1, size=(27, 30))
    with torch.no_grad():
        out = model(inputs)
    assert out["pred"].shape == (1, 3, 3, 27, 30)
    assert model.uses_audio is False and model.config["scale"] == 4
    with pytest.raises(ValueError, match="pervfi.py"):
        model(inputs, ts=torch.tensor([[0.0]]))


# --- training plumbing ------------------------------------------------------------------------

def test_training_forward_samples_at_the_latent_std_and_gradients_skip_the_flow_estimator():
    model = perturb(tiny_model()).train()
    model.set_flow_estimator(ShiftFlow(shift=16.0))  # holes at every pyramid level (no bias: no hole, no gradient)
    inputs, target = frames()
    out = model(inputs, target=target, generator=torch.Generator().manual_seed(0))
    assert out["pred"].shape == target.shape and out["nll"].shape == (2,)
    (out["nll"].mean() + losses.pervfi_laplacian_loss(out["pred"], target)).backward()

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert all(has_grad(blend) for blend in model.attentionMerge.softbinary.values())
    assert has_grad(model.multiscaleFuse) and has_grad(model.deformableAlign) and has_grad(model.featurePyramid)
    estimator = model.flow_estimator
    assert all(not p.requires_grad and p.grad is None for p in estimator.parameters())
    assert not any(p is q for p in model.parameters() for q in estimator.parameters())
    assert not any(k.startswith("flow_estimator") for k in model.state_dict())


def test_autocast_training_step_keeps_the_glow_in_float32():
    inputs, target = frames(size=(24, 40))  # odd sizes deep in the Laplacian pyramid too
    model = trained_looking(tiny_model(), inputs, target).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs, target=target, generator=torch.Generator().manual_seed(0))
    assert out["pred"].dtype == torch.float32 and torch.isfinite(out["pred"]).all()
    (out["nll"].mean() + losses.pervfi_laplacian_loss(out["pred"], target)).backward()
    assert torch.isfinite(model.condFLownet.blocks[0].prior.scale.grad).all()


def test_state_dict_round_trip_reproduces_samples_and_moves_the_estimator():
    inputs, target = frames(batch=1)
    model = trained_looking(tiny_model(), inputs, target)
    copy_ = tiny_model(seed=5).eval()
    copy_.set_flow_estimator(model.flow_estimator)
    copy_.load_state_dict(model.state_dict())
    a = model.sample(inputs[:, 1], inputs[:, 2], 0.5, heat=0.3, seed=3)
    b = copy_.sample(inputs[:, 1], inputs[:, 2], 0.5, heat=0.3, seed=3)
    assert torch.equal(a, b)
    copy_.double()
    assert copy_.flow_estimator.conv.weight.dtype == torch.float64


def test_config_and_width():
    with pytest.raises(ValueError, match="pervfi.py"):
        pervfi.default_pervfi_config(widht=1.0)
    model = pervfi.build_pervfi(dict(model="pervfi", scale=2, depth="unet_18", audio="mel", encoder_bias=None))
    assert model.config == pervfi.default_pervfi_config()  # ASVFI's keys are dropped
    with pytest.raises(ValueError, match="pervfi.py"):
        pervfi.build_pervfi(dict(model="asvfi"))
    small = sum(p.numel() for p in tiny_model().trainable_parameters())
    assert small < OFFICIAL_PARAMETERS / 20
    with pytest.raises(ValueError, match="width=1.0"):
        pervfi.build_official_pervfi({}, width=0.5)


def test_default_dis_flow_estimator_runs_end_to_end():
    model = pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.125, steps_per_level=2))
    inputs, target = frames(batch=1)
    out = model(inputs, target=target)
    assert out["pred"].shape == (1, 1, 3, 32, 32) and torch.isfinite(out["nll"]).all()
    assert not any(p.requires_grad for p in model.flow_estimator.parameters())


# --- the authors' checkpoint through the registry and inference.py ------------------------------

def save_official_format(fixture, path):
    """The fixture's key list with recipe weights, saved as the authors save theirs (DDP's `module.`)."""
    torch.save({f"module.{name}": value for name, value in recipe_state(fixture).items()}, path)
    return path


def test_registry_loads_the_authors_file_strictly_with_their_flow_estimator(fixture, tmp_path, monkeypatch):
    import registry
    import weights
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    path = save_official_format(fixture, tmp_path / "v00.pth")
    with pytest.warns(UserWarning, match="dis instead of raft_sintel.*raft-sintel.pth"):
        network, checkpoint = registry.load_model(path, {"heat": 0.5}, weights_dir=tmp_path)
    state = recipe_state(fixture)
    assert all(torch.equal(network.state_dict()[name], value) for name, value in state.items())
    assert checkpoint["config"]["model"] == "pervfi" and checkpoint["format"] == "official"
    assert network.config["heat"] == 0.5 and network.config["flow_estimator"] == "raft_sintel"
    assert network.flow_estimator_used == "dis" and "raft-sintel.pth" in network.flow_estimator_note
    chosen, _ = registry.load_model(path, {"flow_estimator": "dis"})  # asked for: no warning, no note
    assert chosen.flow_estimator_used == "dis" and chosen.flow_estimator_note == ""
    torch.save({k: v for k, v in state.items() if "softbinary.0" not in k}, tmp_path / "partial.pth")
    with pytest.raises(pervfi.CheckpointError, match="partial.pth.*missing keys"):
        registry.load_model(tmp_path / "partial.pth", {"flow_estimator": "dis"})
    with pytest.raises(pervfi.CheckpointError, match=r"v00.pth: holds a checkpoint of pervfi, not asvfi"):
        registry.load_model(path, model="asvfi")


def test_inference_cli_runs_the_authors_checkpoint_on_a_video(fixture, tmp_path):
    import subprocess
    import sys
    import numpy as np
    import video_io
    path = save_official_format(fixture, tmp_path / "v00.pth")
    rng = np.random.default_rng(0)
    source = tmp_path / "clip.mp4"
    with video_io.VideoWriter(source, 25, 40, 36) as writer:
        for i in range(3):
            writer.write(np.roll(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8), i, axis=1))
    output = tmp_path / "out.mp4"
    env = {**__import__("os").environ, "ASVFI_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "hub"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "inference.py", "--model", "pervfi", "--checkpoint", str(path),
                           "--input", str(source), "--output", str(output), "--device", "cpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dis instead of raft_sintel" in done.stderr  # the offline fallback says so
    assert video_io.probe(output).n_frames == 5
