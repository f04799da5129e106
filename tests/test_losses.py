"""Loss strings and the value of every term on inputs whose answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

import checkpoints
import losses
import weights


def frames(seed=0, shape=(2, 1, 3, 32, 40)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def checkerboard(height, width):
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    return ((rows + cols) % 2 * 2 - 1).float()  # ±1


def reconstruct_from_pyramid(pyramid):
    """Inverse of losses.laplacian_pyramid: shows the pyramid loses nothing."""
    image = pyramid[-1]
    kernel = losses.gaussian_kernel_5x5(image.shape[1], image.device, image.dtype)
    for band in reversed(pyramid[:-1]):
        image = band + losses._upsample(image, kernel, band.shape[-2:])
    return image


# ----------------------------------------------------------------------------- parser
@pytest.mark.parametrize("spec, expected", [
    ("1*L1", [(1.0, "L1")]),
    ("1*L1+0.1*Lap", [(1.0, "L1"), (0.1, "Lap")]),
    (" 1 * L1 + 2e-1*VGG ", [(1.0, "L1"), (0.2, "VGG")]),
    ("NLL+.5*Charbonnier", [(1.0, "NLL"), (0.5, "Charbonnier")]),
    ("1*MSE+1*SSIM", [(1.0, "MSE"), (1.0, "SSIM")]),
])
def test_parse_loss_spec(spec, expected):
    assert losses.parse_loss_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("1*L3", "unknown term 'L3'"),
    ("1*l1", "unknown term 'l1'"),
    ("", "empty loss string"),
    ("1*", "cannot parse '1*'"),
    ("*L1", "cannot parse '*L1'"),
    ("x*L1", "cannot parse 'x*L1'"),
    ("1*L1+", "cannot parse ''"),
    ("1*L1++0.1*Lap", "cannot parse ''"),
    ("-1*L1", "cannot parse '-1*L1'"),
    ("1*L1 0.1*Lap", "cannot parse"),
    ("0*L1", "must be a positive number"),
    ("1e999*L1", "must be a positive number, got inf"),
    ("1*L1+0.5*L1", "appears twice"),
])
def test_malformed_loss_strings_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("+", r"\+")):
        losses.build_criterion(spec)


# ----------------------------------------------------------------------------- pixel terms
def test_pixel_terms_on_a_constant_error():
    target = torch.full((1, 1, 3, 8, 8), 0.5)
    out = {"pred": torch.zeros_like(target)}
    for spec, expected in [("1*L1", 0.5), ("1*MSE", 0.25), ("1*Charbonnier", math.sqrt(0.25 + 1e-6))]:
        total, terms = losses.build_criterion(spec)(out, target)
        assert total.item() == pytest.approx(expected, rel=1e-6)
        assert list(terms.values()) == [pytest.approx(expected, rel=1e-6)]


def test_charbonnier_is_eps_at_zero_error_and_smooth():
    x = frames().requires_grad_(True)
    value = losses.charbonnier_loss(x, x.detach())
    assert value.item() == pytest.approx(losses.CHARBONNIER_EPS, rel=1e-5)
    value.backward()
    assert torch.all(x.grad == 0)


def test_weighted_sum_and_term_values():
    pred, target = frames(0), frames(1)
    total, terms = losses.build_criterion("1*L1+0.5*MSE+0.1*Lap")({"pred": pred}, target)
    l1 = (pred - target).abs().mean().item()
    mse = (pred - target).pow(2).mean().item()
    assert terms["L1"] == pytest.approx(l1, rel=1e-6)
    assert terms["MSE"] == pytest.approx(mse, rel=1e-6)
    assert total.item() == pytest.approx(l1 + 0.5 * mse + 0.1 * terms["Lap"], rel=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="prediction .* and target .* differ"):
        losses.build_criterion("1*L1")({"pred": frames(shape=(1, 1, 3, 8, 8))}, frames(shape=(1, 2, 3, 8, 8)))


# ----------------------------------------------------------------------------- Laplacian pyramid
@pytest.mark.parametrize("size", [(32, 40), (37, 29), (8, 8)])
def test_laplacian_pyramid_reconstructs_the_image(size):
    image = frames(shape=(2, 3, *size))
    pyramid = losses.laplacian_pyramid(image)
    assert torch.allclose(reconstruct_from_pyramid(pyramid), image, atol=1e-6)
    assert pyramid[0].shape == image.shape and pyramid[1].shape[-2:] == ((size[0] + 1) // 2, (size[1] + 1) // 2)


def test_laplacian_pyramid_still_splits_a_side_of_exactly_three_pixels():
    """Three pixels take the reflect-padded 5x5 blur: 6x6 gives bands at 6x6 and 3x3 and a 2x2 residual."""
    image = frames(shape=(1, 3, 6, 6))
    pyramid = losses.laplacian_pyramid(image)
    assert [tuple(level.shape[-2:]) for level in pyramid] == [(6, 6), (3, 3), (2, 2)]
    assert torch.allclose(reconstruct_from_pyramid(pyramid), image, atol=1e-6)


def test_laplacian_loss_known_values():
    x = frames()
    assert losses.laplacian_loss(x, x).item() == 0
    # a constant offset lives only in the low-pass residual
    assert losses.laplacian_loss(x, x + 0.3).item() == pytest.approx(0.3, abs=1e-6)
    # a checkerboard (the Nyquist frequency, which the binomial blur removes) only in the finest band
    assert losses.laplacian_loss(x, x + 0.2 * checkerboard(32, 40)).item() == pytest.approx(0.2, abs=1e-6)


# ----------------------------------------------------------------------------- SSIM
def test_ssim_matches_skimage():
    a = frames(0, (1, 3, 48, 48))
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    reference = structural_similarity(a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(),
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1, channel_axis=2)
    _, terms = losses.build_criterion("1*SSIM")({"pred": b[:, None]}, a[:, None])
    assert terms["SSIM"] == pytest.approx(1 - reference, abs=1e-5)
    assert losses.ssim_loss(a, a).item() == pytest.approx(0, abs=1e-6)
    two = torch.stack([a, b], 1)  # (1, 2, 3, H, W): every frame of the n counts, not just the first
    _, terms = losses.build_criterion("1*SSIM")({"pred": torch.stack([a, a], 1)}, two)
    assert terms["SSIM"] == pytest.approx((1 - reference) / 2, abs=1e-5)
    assert losses.ssim_loss(a, b).dtype == torch.float32


# ----------------------------------------------------------------------------- NLL
def test_nll_reads_the_model_output():
    total, terms = losses.build_criterion("1*NLL")({"nll": torch.tensor([1.0, 3.0])}, None)
    assert total.item() == 2.0 and terms == {"NLL": 2.0}
    with pytest.raises(ValueError, match=r"NLL needs out\['nll'\]"):
        losses.build_criterion("1*NLL+1*L1")({"pred": frames()}, frames())


def test_every_term_has_a_gradient():
    pred, target = frames(0).requires_grad_(True), frames(1)
    total, _ = losses.build_criterion("1*L1+1*MSE+1*Charbonnier+1*Lap+1*SSIM")({"pred": pred}, target)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- VGG
def fake_vgg19_file(tmp_path):
    """A random checkpoint with torchvision's VGG-19 key names (incl. the classifier we ignore)."""
    generator = torch.Generator().manual_seed(0)
    state, channels = {}, 3
    index = 0
    for item in losses.VGG19_LAYOUT:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3, generator=generator) * 0.1
        state[f"features.{index}.bias"] = torch.randn(item, generator=generator) * 0.1
        channels, index = item, index + 2
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    return path, state


def test_vgg_key_names_follow_torchvision():
    convs = sorted(int(k.split(".")[1]) for k in losses.VGG19Features().state_dict() if k.endswith("weight"))
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]


def test_vgg_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(weights.WeightsUnavailable, match="vgg19-dcbb9e9d.pth"):
        losses.build_criterion("1*L1+0.1*VGG", weights_dir=tmp_path, allow_download=False)


# The published perceptual loss, written out here rather than read from losses.py: torchvision's
# ImageNet normalisation, relu1_1 .. relu5_1 (features indices) and their weights.
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
RELU_X_1 = (1, 6, 11, 20, 29)
RELU_X_1_WEIGHTS = (0.1 / 2.6, 0.1 / 4.8, 0.1 / 3.7, 0.1 / 5.6, 1.0 / 1.5)


def test_vgg_perceptual_value(tmp_path, monkeypatch):
    path, state = fake_vgg19_file(tmp_path)
    monkeypatch.setattr(weights, "locate", lambda name, weights_dir=None, allow_download=True: path)
    criterion = losses.build_criterion("1*VGG")
    pred, target = frames(0, (1, 1, 3, 32, 32)), frames(1, (1, 1, 3, 32, 32))
    assert criterion({"pred": target}, target)[0].item() == 0

    def activations(x):
        """relu1_1 .. relu5_1 computed straight from the state dict, after ImageNet normalisation."""
        x, out, index = (x - IMAGENET_MEAN) / IMAGENET_STD, [], 0
        for item in losses.VGG19_LAYOUT:
            if item == "M":
                x, index = F.max_pool2d(x, 2), index + 1
                continue
            x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
            if index + 1 in RELU_X_1:
                out.append(x)
            index += 2
            if index > RELU_X_1[-1]:
                break
        return out

    expected = sum(w * (a - b).abs().mean() for w, a, b in
                   zip(RELU_X_1_WEIGHTS, activations(pred[0]), activations(target[0])))
    total, terms = criterion({"pred": pred}, target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["VGG"] > 0


def test_vgg_weights_are_frozen_and_the_gradient_reaches_the_prediction(tmp_path, monkeypatch):
    path, _ = fake_vgg19_file(tmp_path)
    monkeypatch.setattr(weights, "locate", lambda name, weights_dir=None, allow_download=True: path)
    criterion = losses.build_criterion("1*VGG")
    assert not any(p.requires_grad for p in criterion.perceptual.parameters())
    pred = frames(0, (1, 1, 3, 16, 16)).requires_grad_(True)
    criterion({"pred": pred}, frames(1, (1, 1, 3, 16, 16)))[0].backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in criterion.perceptual.parameters())


def test_vgg_rejects_a_file_that_is_not_vgg19(tmp_path, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    monkeypatch.setattr(weights, "locate", lambda name, weights_dir=None, allow_download=True: path)
    with pytest.raises(checkpoints.CheckpointError, match="other.pth: not a torchvision VGG-19 checkpoint"):
        losses.build_criterion("1*VGG")


def test_pervfi_laplacian_is_the_band_mean_without_residual():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 1, 3, 64, 64), torch.rand(2, 1, 3, 64, 64)
    criterion = losses.build_criterion("1*PerVFILap")
    value, terms = criterion({"pred": pred}, target)
    bands = losses.laplacian_pyramid(losses.as_images(pred - target))
    assert value.item() == pytest.approx(sum(b.abs().mean().item() for b in bands[:-1]) / 5, rel=1e-5)
    offset = losses.build_criterion("1*PerVFILap")({"pred": target + 0.3}, target)[0]
    assert offset.item() < 1e-6 and losses.laplacian_loss(target + 0.3, target).item() == pytest.approx(0.3, abs=1e-6)


def official_lap_bands(img, levels):
    """PerVFI src/train/loss.py LapLoss.laplacian_pyramid, transcribed (5x5 binomial /256, reflect pad, zero insertion)."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (torch.outer(taps, taps) / 256).repeat(img.shape[1], 1, 1, 1)
    conv_gauss = lambda x, k: F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])  # noqa: E731
    current, bands = img, []
    for _ in range(levels):
        down = conv_gauss(current, kernel)[:, :, ::2, ::2]
        up = torch.zeros(*down.shape[:2], 2 * down.shape[2], 2 * down.shape[3])
        up[:, :, ::2, ::2] = down
        bands.append(current - conv_gauss(up, 4 * kernel))
        current = down
    return bands


def test_pervfi_laplacian_divides_by_five_levels_even_when_a_small_crop_has_fewer_bands():
    """PerVFI's LapLoss returns sum / max_levels (5); a 16x16 crop has 3 bands, still divided by 5, not 3."""
    torch.manual_seed(1)
    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert len(losses.laplacian_pyramid(pred - target)) - 1 == 3
    reference = sum(F.l1_loss(a, b) for a, b in zip(official_lap_bands(pred, 3), official_lap_bands(target, 3))) / 5
    assert losses.pervfi_laplacian_loss(pred, target).item() == pytest.approx(reference.item(), rel=1e-5)
