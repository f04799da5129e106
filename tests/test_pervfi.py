"""PerVFI: DCNv2, splatting holes, conditional Glow (invertibility, log-det), NLL, sampling, API."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import flow as flowlib
import pervfi

REPO = Path(__file__).resolve().parents[1]


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
    config = pervfi.default_pervfi_config(width=0.125, steps_per_level=2, fusion_units=1, **overrides)
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


# --- deformable convolution --------------------------------------------------------------------

def test_deform_conv_with_zero_offsets_and_unit_masks_equals_conv2d():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 9)
    weight, bias = torch.randn(5, 8, 3, 3), torch.randn(5)
    groups = 2
    offset = torch.zeros(2, groups * 9 * 2, 7, 9)
    mask = torch.ones(2, groups * 9, 7, 9)
    out = pervfi.deform_conv2d(x, offset, mask, weight, bias)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=1), atol=1e-5, rtol=1e-5)


def test_deform_conv_offsets_are_dx_dy_in_pixels():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 8)
    weight = torch.randn(3, 4, 3, 3)
    offset = torch.zeros(1, 9, 2, 6, 8)
    offset[:, :, 0] = 1.0  # every tap samples one pixel to the right
    mask = torch.full((1, 9, 6, 8), 0.5)
    out = pervfi.deform_conv2d(x, offset.view(1, 18, 6, 8), mask, weight)
    shifted = F.pad(x[..., 1:], (0, 1))  # x(p + (1, 0)) with zeros beyond the right border
    expected = 0.5 * F.conv2d(shifted, weight, padding=1)
    # column 0's left tap reads x(0) (inside the image), where the shifted copy pads with zero
    torch.testing.assert_close(out[..., 1:], expected[..., 1:], atol=1e-5, rtol=1e-5)


# --- softmax splatting with hole masks --------------------------------------------------------

def test_splat_pyramid_shifts_features_and_marks_holes():
    torch.manual_seed(0)
    features = [torch.randn(1, 3, 8, 8), torch.randn(1, 5, 4, 4)]
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 2.0
    splatted, holes = pervfi.splat_pyramid(features, flow, torch.zeros(1, 1, 8, 8))
    torch.testing.assert_close(splatted[0][..., 2:], features[0][..., :-2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(splatted[1][..., 1:], features[1][..., :-1], atol=1e-5, rtol=1e-5)
    expected0 = torch.zeros(1, 1, 8, 8)
    expected0[..., :2] = 1
    expected1 = torch.zeros(1, 1, 4, 4)
    expected1[..., :1] = 1
    assert torch.equal(holes[0], expected0) and torch.equal(holes[1], expected1)


def test_moving_block_leaves_a_hole_and_wins_where_the_metric_says():
    values = torch.zeros(1, 1, 8, 8)
    values[..., 2:4, 1:3] = 1.0
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0, 2:4, 1:3] = 3.0
    metric = 5.0 * values  # the moving block is in front
    splatted, holes = pervfi.splat_pyramid([values], flow, metric)
    expected_holes = torch.zeros(1, 1, 8, 8)
    expected_holes[..., 2:4, 1:3] = 1
    assert torch.equal(holes[0], expected_holes)
    block = splatted[0][..., 2:4, 4:6]
    assert block.min() > 0.99  # exp(5) outweighs the background it lands on


# --- conditional Glow -------------------------------------------------------------------------

def test_conditional_glow_is_invertible():
    torch.manual_seed(0)
    glow = perturb(pervfi.ConditionalGlow([5, 6, 7], steps=2, hidden=8))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    conditions = [torch.randn(2, c, 16 // 2 ** (i + 1), 16 // 2 ** (i + 1)) for i, c in enumerate([5, 6, 7])]
    latents, _, _ = glow.encode(x, conditions)
    assert [tuple(z.shape[1:]) for z in latents] == [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    assert (latents[0] - x[:, :1, ::2, ::2]).abs().max() > 1e-2  # not an identity
    reconstruction = glow.decode(conditions, latents)
    assert (reconstruction - x).abs().max() < 1e-4


def jacobian_logdet(function, x):
    jacobian = torch.autograd.functional.jacobian(lambda v: function(v.view_as(x)).flatten(), x.flatten())
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign != 0
    return logabsdet


def test_flow_step_logdet_equals_autograd_jacobian():
    torch.manual_seed(0)
    step = perturb(pervfi.FlowStep(12, 3, hidden=8), std=0.2).double()
    x = torch.randn(1, 12, 2, 2, dtype=torch.float64)
    condition = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    _, logdet = step(x, condition)
    expected = jacobian_logdet(lambda v: step(v, condition)[0], x)
    assert abs(logdet.item() - expected.item()) < 1e-8
    assert abs(expected.item()) > 1e-2  # the perturbed step really scales volume


def test_whole_flow_logdet_equals_autograd_jacobian():
    torch.manual_seed(0)
    # a moderate perturbation keeps the 192x192 Jacobian well conditioned for slogdet while changing volume
    glow = perturb(pervfi.ConditionalGlow([2, 3, 4], steps=2, hidden=8), std=0.1).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    conditions = [torch.randn(1, c, 8 // 2 ** (i + 1), 8 // 2 ** (i + 1), dtype=torch.float64)
                  for i, c in enumerate([2, 3, 4])]
    _, _, logdet = glow.encode(x, conditions)

    def all_latents(v):
        return torch.cat([z.flatten() for z in glow.encode(v, conditions)[0]])

    expected = jacobian_logdet(all_latents, x)
    assert abs(logdet.item() - expected.item()) < 1e-8
    assert abs(expected.item()) > 1.0


def test_saturated_couplings_cannot_blow_up_an_outlier_residual():
    # Regression (demo training: NLL 8.4 -> 5.9, then 2e15 and NaN): with s = tanh(raw) a coupling whose
    # input is large saturates at s = 1 and multiplies its half by e, so 48 steps amplified an outlier
    # residual by up to e^48. Each step may now expand by at most 1/sigmoid(2) = 1 + e^-2.
    assert pervfi.bounded_log_scale(torch.zeros(1)).abs().item() < 1e-7  # identity at initialisation
    assert abs(pervfi.bounded_log_scale(torch.tensor([50.0])).item() - math.log1p(math.exp(-2))) < 1e-6
    torch.manual_seed(0)
    channels, steps = [2, 3, 4], 4
    glow = pervfi.ConditionalGlow(channels, steps=steps, hidden=8)
    with torch.no_grad():
        for level in glow.levels:
            for step in level.steps:
                step.coupling.net[-1].conv.bias[step.coupling.transformed:] = 10.0  # raw >> 0: expand
    x = 4 * torch.rand(2, 3, 16, 16) - 2  # a residual far off the base
    conditions = [torch.randn(2, c, 16 // 2 ** (i + 1), 16 // 2 ** (i + 1)) for i, c in enumerate(channels)]
    latents, _, logdet = glow.encode(x, conditions)
    # ActNorm is the identity and the 1x1 convolutions are rotations here, so only couplings change the norm
    gain = torch.cat([z.flatten(1) for z in latents], 1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert (gain <= (1 + math.exp(-2)) ** (len(channels) * steps) + 1e-4).all(), gain  # was ~5000 with tanh
    assert (gain > 1.2).all() and (logdet > 0).all()  # the couplings do expand, within the bound
    assert (glow.decode(conditions, latents) - x).abs().max() < 1e-4


# --- NLL --------------------------------------------------------------------------------------

def test_nll_bits_per_dim_accounts_for_scaling_and_quantisation():
    # At initialisation the flow is a rotation and the priors are N(0, 1): for a mid-grey target
    # (x = 2y - 1 ~ 0) -log2 N(0) = 0.5*log2(2*pi) per dim, plus 8 bits (1/256 bins) - 1 (the x2 scale).
    model = tiny_model(residual=False)
    inputs, _ = frames()
    target = torch.full((2, 1, 3, 32, 32), 0.5)
    out = model(inputs, target=target, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * math.log2(2 * math.pi) + 7.0
    assert out["nll"].shape == (2,)
    torch.testing.assert_close(out["nll"], torch.full((2,), expected), atol=1e-3, rtol=0)


def test_residual_base_shifts_the_target_without_changing_the_volume():
    # residual=True models x = 2y - 1 - base: at initialisation -log2 N(x; 0, 1) per dim + 7 bits.
    model = tiny_model(residual=True).eval()
    inputs, target = frames()
    with torch.no_grad():
        _, base = model.conditions(inputs[:, 1], inputs[:, 2], torch.full((2, 1), 0.5))
        out = model(inputs, target=target, heat=0.0)
    x = 2 * target[:, 0] - 1 - base
    expected = (0.5 * math.log(2 * math.pi) + 0.5 * x ** 2).mean(dim=(1, 2, 3)) / math.log(2) + 7.0
    torch.testing.assert_close(out["nll"], expected, atol=1e-3, rtol=0)
    assert (base.abs() > 0.05).float().mean() > 0.5  # the base is an image estimate, not zeros
    # untrained, the flow is volume-preserving around z = 0: the heat-0 frame is the base estimate
    torch.testing.assert_close(out["pred"][:, 0], (base + 1) / 2, atol=1e-5, rtol=0)

def test_nll_falls_over_twenty_steps_on_a_fixed_batch():
    model = tiny_model()
    inputs, target = frames()
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=2e-3)
    history = []
    for _ in range(20):
        out = model(inputs, target=target, generator=torch.Generator().manual_seed(0))
        loss = out["nll"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] - 0.5, history
    assert all(math.isfinite(v) for v in history)


# --- sampling ---------------------------------------------------------------------------------

def test_heat_zero_is_deterministic_and_seeds_reproduce():
    model = perturb(tiny_model()).eval()
    inputs, _ = frames(size=(24, 28))
    frame0, frame1 = inputs[:, 1], inputs[:, 2]
    a = model.sample(frame0, frame1, 0.5, heat=0.0, seed=1)
    b = model.sample(frame0, frame1, 0.5, heat=0.0, seed=2)
    assert a.shape == (2, 3, 24, 28) and torch.equal(a, b)
    s1 = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(7))
    s1_again = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(7))
    s2 = model.sample(frame0, frame1, 0.5, heat=0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1, s1_again)
    assert (s1 - s2).abs().max() > 1e-3
    assert (s1 - a).abs().max() > 1e-3


def test_arbitrary_times_give_different_frames_and_batch_like_single_calls():
    model = perturb(tiny_model()).eval()
    inputs, _ = frames(batch=1)
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

def test_gradients_reach_blending_and_fusion_but_not_the_frozen_flow_estimator():
    model = perturb(tiny_model()).train()
    model.set_flow_estimator(ShiftFlow(shift=8.0))  # holes at every pyramid level
    inputs, target = frames()
    out = model(inputs, target=target)
    (out["nll"].mean() + (out["pred"] - target).abs().mean()).backward()

    def has_grad(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert all(has_grad(blend) for blend in model.blend)
    assert has_grad(model.fusion) and has_grad(model.align) and has_grad(model.pyramid)
    estimator = model.flow_estimator
    assert all(not p.requires_grad and p.grad is None for p in estimator.parameters())
    assert not any(p is q for p in model.parameters() for q in estimator.parameters())
    assert not any(k.startswith("flow_estimator") for k in model.state_dict())


def test_state_dict_round_trip_reproduces_samples_and_moves_the_estimator():
    model = perturb(tiny_model()).eval()
    copy = tiny_model(seed=5).eval()
    copy.set_flow_estimator(model.flow_estimator)
    copy.load_state_dict(model.state_dict())
    inputs, _ = frames(batch=1)
    a = model.sample(inputs[:, 1], inputs[:, 2], 0.5, heat=0.3, seed=3)
    b = copy.sample(inputs[:, 1], inputs[:, 2], 0.5, heat=0.3, seed=3)
    assert torch.equal(a, b)
    copy.double()
    assert copy.flow_estimator.conv.weight.dtype == torch.float64


def test_config_and_published_parameter_count():
    with pytest.raises(ValueError, match="pervfi.py"):
        pervfi.default_pervfi_config(widht=1.0)
    model = pervfi.build_pervfi(dict(model="pervfi", scale=2, depth="unet_18", audio="mel", encoder_bias=None))
    assert model.config == pervfi.default_pervfi_config()  # ASVFI's keys are dropped
    with pytest.raises(ValueError, match="pervfi.py"):
        pervfi.build_pervfi(dict(model="asvfi"))
    count = sum(p.numel() for p in model.trainable_parameters())
    assert 8.0e6 < count < 9.5e6  # the published PerVFI has ~8.7M without its flow estimator


def test_params_tool_prints_the_pervfi_count(capsys):
    spec = importlib.util.spec_from_file_location("bench_params", REPO / "bench" / "params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--models", "pervfi"])
    printed = capsys.readouterr().out
    count = sum(p.numel() for p in pervfi.build_pervfi(pervfi.default_pervfi_config()).trainable_parameters())
    assert f"{count:,}" in printed


def test_default_dis_flow_estimator_runs_end_to_end():
    if not hasattr(flowlib, "build_flow_estimator"):
        pytest.skip("flow.build_flow_estimator is not in flow.py yet")
    torch.manual_seed(0)
    model = pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.125, steps_per_level=2, fusion_units=1))
    inputs, target = frames(batch=1)
    out = model(inputs, target=target)
    assert out["pred"].shape == (1, 1, 3, 32, 32) and torch.isfinite(out["nll"]).all()
    assert not any(p.requires_grad for p in model.flow_estimator.parameters())
