"""flow.py: PWC-Net against the FloLPIPS reference fixture, DIS, RAFT checkpoint structure, warping and
splatting (shifts, holes, gradients), and the one estimator interface."""

import pytest
import torch
import torch.nn.functional as F
from compat import load_fixture, recipe_state

import checkpoints
import flow
import pervfi_features
import raft
import weights

# ---------------------------------------------------------------------------------------------
# PWC-Net (fixture: danier97/flolpips pwcnet.py run on CPU with deterministic weights)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pwc_fixture():
    return load_fixture("pwcnet_compat.pt")




@pytest.fixture(scope="module")
def pwc_state(pwc_fixture):
    return recipe_state(pwc_fixture)


@pytest.fixture(scope="module")
def pwc_net(pwc_state):
    net = flow.PWCNet()
    net.load_state_dict(pwc_state)
    return net.freeze()


def test_pwcnet_state_dict_keys_and_shapes_equal_reference_in_order(pwc_fixture):
    ours = [(name, tuple(t.shape)) for name, t in flow.PWCNet().state_dict().items()]
    assert ours == [(name, tuple(shape)) for name, shape in pwc_fixture["keys"]]
    assert len(ours) == 126


def test_pwcnet_recipe_weights_match_checksums(pwc_fixture, pwc_state):
    for name, (total, total_abs, first) in pwc_fixture["weight_checksums"].items():
        tensor = pwc_state[name].double()
        assert tensor.sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), name
        assert tensor.abs().sum().item() == pytest.approx(total_abs, rel=1e-9), name
        assert tensor.flatten()[0].item() == first, name


def scale_tol(reference, rel=1e-4):
    """Max abs error allowed: 1e-4 relative to the reference's scale (its max magnitude)."""
    return rel * max(reference.abs().max().item(), 1.0)


def test_pwcnet_flow_and_internal_outputs_match_reference(pwc_fixture, pwc_net):
    inputs, outputs = pwc_fixture["inputs"], pwc_fixture["outputs"]
    with torch.no_grad():
        flow_a = pwc_net(inputs["first"], inputs["second"])
        levels = pwc_net.estimate_levels(inputs["first"], inputs["second"])
        pyramid = pwc_net.netExtractor(inputs["first"])
        flow_b = pwc_net(inputs["first_b"], inputs["second_b"])  # 72x120: resized to 128x128 and back
    assert flow_a.shape == (1, 2, 64, 64) and flow_b.shape == (2, 2, 72, 120)
    assert (flow_a - outputs["flow"]).abs().max() <= scale_tol(outputs["flow"])
    assert (flow_b - outputs["flow_b"]).abs().max() <= scale_tol(outputs["flow_b"])
    for name in flow.PWC_LEVEL_NAMES:
        expected = outputs[f"decoder_flow_{name}"]
        assert (levels[name] - expected).abs().max() <= scale_tol(expected), name
    assert (levels["refiner"] - outputs["refiner_out"]).abs().max() <= scale_tol(outputs["refiner_out"])
    for level, features in enumerate(pyramid, start=1):
        expected = outputs[f"extractor_first_level{level}"]
        assert features.shape == expected.shape
        assert (features - expected).abs().max() <= 1e-5 * expected.abs().max(), level


def test_pwcnet_float64_matches_float64_reference(pwc_fixture, pwc_state):
    net = flow.PWCNet().double()
    net.load_state_dict(pwc_state)
    inputs, outputs = pwc_fixture["inputs"], pwc_fixture["outputs"]
    with torch.no_grad():
        flow_a = net(inputs["first"].double(), inputs["second"].double())
        flow_b = net(inputs["first_b"].double(), inputs["second_b"].double())
    assert (flow_a - outputs["flow_fp64"]).abs().max() < 1e-9
    assert (flow_b - outputs["flow_b_fp64"]).abs().max() < 1e-9


def test_local_correlation_follows_kernel_index_order():
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(2, 2, 5, 3, 7, generator=generator, dtype=torch.float64)
    volume = flow.local_correlation(first, second, max_displacement=2)
    assert volume.shape == (2, 25, 3, 7)
    for k in (0, 7, 12, 24):
        dx, dy = k % 5 - 2, k // 5 - 2
        for y, x in ((0, 0), (1, 3), (2, 6)):
            inside = 0 <= y + dy < 3 and 0 <= x + dx < 7
            expected = (first[:, :, y, x] * second[:, :, y + dy, x + dx]).mean(1) if inside else torch.zeros(2, dtype=torch.float64)
            torch.testing.assert_close(volume[:, k, y, x], expected)


def test_pwc_backwarp_identity_and_threshold_mask():
    image = torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(flow.pwc_backwarp(image, torch.zeros(1, 2, 6, 8)), image)
    # 2 px to the right (times W/(W-1), the reference's normalisation quirk): the last columns sample
    # the zero padding, their mask falls below 0.999 and they become exactly 0.
    shifted = flow.pwc_backwarp(image, torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 6, 8))
    assert (shifted[..., -2:] == 0).all() and (shifted[..., :-3] != 0).all()


def test_released_pwc_key_spelling_module_is_remapped_and_loads(pwc_state, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "hub")
    released = {name.replace("net", "module"): tensor for name, tensor in pwc_state.items()}
    assert "moduleExtractor.moduleOne.0.weight" in released
    assert list(flow.remap_pwc_keys(released)) == list(pwc_state)
    with_prefix = {"module." + name: tensor for name, tensor in released.items()}  # a DataParallel save
    assert list(flow.remap_pwc_keys(with_prefix)) == list(pwc_state)
    torch.save(released, tmp_path / weights.REGISTRY["pwcnet"].filename)
    net = flow.load_pwcnet(weights_dir=tmp_path, allow_download=False)
    assert all(torch.equal(net.state_dict()[name], tensor) for name, tensor in pwc_state.items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert not net.train().training  # frozen: a parent's .train() does not switch it back


def test_missing_weights_name_the_file_and_unknown_estimator(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "hub")
    with pytest.raises(weights.WeightsUnavailable, match="pwc"):
        flow.build_flow_estimator("pwc", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(weights.WeightsUnavailable, match="raft-things.pth"):
        flow.build_flow_estimator("raft", weights_dir=tmp_path, allow_download=False)
    with pytest.raises(ValueError, match="unknown flow estimator"):
        flow.build_flow_estimator("farneback")


def test_build_flow_estimator_passes_weights_dir_download_and_device_on(monkeypatch):
    calls = []
    monkeypatch.setattr(flow, "load_pwcnet", lambda *args: calls.append(("pwc",) + args))
    monkeypatch.setattr(raft, "load_raft", lambda *args, **kwargs: calls.append(("raft",) + args + (kwargs,)))
    for name in ("pwc", "raft", "raft_sintel"):
        flow.build_flow_estimator(name, weights_dir="W", allow_download=False, device="meta")
    assert calls == [("pwc", "W", False, "meta"), ("raft", "W", False, "meta", {}),
                     ("raft", "W", False, "meta", {"checkpoint": "raft_sintel", "padding": "zeros"})]


# ---------------------------------------------------------------------------------------------
# DIS
# ---------------------------------------------------------------------------------------------

def smooth_image(height, width, seed=0):
    """A smooth random texture (bicubic upsampling of noise) that flow methods can track."""
    noise = torch.rand(1, 3, height // 4, width // 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def test_dis_recovers_a_translation():
    base = smooth_image(96, 128)
    img0 = base[..., 8:72, 8:104]
    img1 = base[..., 6:70, 5:101]  # the content of img0 appears 3 px right and 2 px down in img1
    estimator = flow.build_flow_estimator("dis")
    estimated = estimator(img0.double(), img1.double())
    assert estimated.shape == (1, 2, 64, 96) and estimated.dtype == torch.float64
    interior = estimated[..., 8:-8, 8:-8].mean((2, 3))[0]
    torch.testing.assert_close(interior, torch.tensor([3.0, 2.0], dtype=torch.float64), atol=0.1, rtol=0)
    assert not estimator.train().training


def test_dis_works_on_rounded_bt601_luma_of_rgb_frames():
    def gray(r, g, b):
        return int(flow._to_gray_uint8(torch.tensor([r, g, b]).view(3, 1, 1).expand(3, 2, 2))[0, 0])

    assert (gray(1.0, 0.0, 0.0), gray(0.0, 0.0, 1.0)) == (76, 29)  # 0.299 R, 0.114 B: RGB order
    assert gray(100.6 / 255, 100.6 / 255, 100.6 / 255) == 101  # rounded, not truncated


def test_dis_module_runs_opencv_with_its_preset(monkeypatch):
    presets = []
    create = flow.cv2.DISOpticalFlow_create
    monkeypatch.setattr(flow.cv2, "DISOpticalFlow_create", lambda preset: presets.append(preset) or create(preset))
    frames = smooth_image(16, 16)
    flow.DISFlow(preset=flow.cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)(frames, frames)
    flow.build_flow_estimator("dis")(frames, frames)
    assert presets == [flow.cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, flow.cv2.DISOPTICAL_FLOW_PRESET_MEDIUM]


# ---------------------------------------------------------------------------------------------
# RAFT (structure and load; no released checkpoint offline, so no numerical reference)
# ---------------------------------------------------------------------------------------------

# state_dict of princeton-vl/RAFT `RAFT(args)` (full model, not --small), derived by hand from the
# registration order of core/raft.py, extractor.py (BasicEncoder: norm1 before conv1; ResidualBlock:
# conv1, conv2, norm1, norm2, norm3, downsample = [1x1 conv, norm3]) and update.py (BasicUpdateBlock:
# encoder, gru, flow_head, mask). The released raft-things.pth has these keys with a `module.` prefix.
RAFT_KEYS = """
    fnet.conv1.weight 64,3,7,7
    fnet.conv1.bias 64
    fnet.layer1.0.conv1.weight 64,64,3,3
    fnet.layer1.0.conv1.bias 64
    fnet.layer1.0.conv2.weight 64,64,3,3
    fnet.layer1.0.conv2.bias 64
    fnet.layer1.1.conv1.weight 64,64,3,3
    fnet.layer1.1.conv1.bias 64
    fnet.layer1.1.conv2.weight 64,64,3,3
    fnet.layer1.1.conv2.bias 64
    fnet.layer2.0.conv1.weight 96,64,3,3
    fnet.layer2.0.conv1.bias 96
    fnet.layer2.0.conv2.weight 96,96,3,3
    fnet.layer2.0.conv2.bias 96
    fnet.layer2.0.downsample.0.weight 96,64,1,1
    fnet.layer2.0.downsample.0.bias 96
    fnet.layer2.1.conv1.weight 96,96,3,3
    fnet.layer2.1.conv1.bias 96
    fnet.layer2.1.conv2.weight 96,96,3,3
    fnet.layer2.1.conv2.bias 96
    fnet.layer3.0.conv1.weight 128,96,3,3
    fnet.layer3.0.conv1.bias 128
    fnet.layer3.0.conv2.weight 128,128,3,3
    fnet.layer3.0.conv2.bias 128
    fnet.layer3.0.downsample.0.weight 128,96,1,1
    fnet.layer3.0.downsample.0.bias 128
    fnet.layer3.1.conv1.weight 128,128,3,3
    fnet.layer3.1.conv1.bias 128
    fnet.layer3.1.conv2.weight 128,128,3,3
    fnet.layer3.1.conv2.bias 128
    fnet.conv2.weight 256,128,1,1
    fnet.conv2.bias 256
    cnet.norm1.weight 64
    cnet.norm1.bias 64
    cnet.norm1.running_mean 64
    cnet.norm1.running_var 64
    cnet.norm1.num_batches_tracked 
    cnet.conv1.weight 64,3,7,7
    cnet.conv1.bias 64
    cnet.layer1.0.conv1.weight 64,64,3,3
    cnet.layer1.0.conv1.bias 64
    cnet.layer1.0.conv2.weight 64,64,3,3
    cnet.layer1.0.conv2.bias 64
    cnet.layer1.0.norm1.weight 64
    cnet.layer1.0.norm1.bias 64
    cnet.layer1.0.norm1.running_mean 64
    cnet.layer1.0.norm1.running_var 64
    cnet.layer1.0.norm1.num_batches_tracked 
    cnet.layer1.0.norm2.weight 64
    cnet.layer1.0.norm2.bias 64
    cnet.layer1.0.norm2.running_mean 64
    cnet.layer1.0.norm2.running_var 64
    cnet.layer1.0.norm2.num_batches_tracked 
    cnet.layer1.1.conv1.weight 64,64,3,3
    cnet.layer1.1.conv1.bias 64
    cnet.layer1.1.conv2.weight 64,64,3,3
    cnet.layer1.1.conv2.bias 64
    cnet.layer1.1.norm1.weight 64
    cnet.layer1.1.norm1.bias 64
    cnet.layer1.1.norm1.running_mean 64
    cnet.layer1.1.norm1.running_var 64
    cnet.layer1.1.norm1.num_batches_tracked 
    cnet.layer1.1.norm2.weight 64
    cnet.layer1.1.norm2.bias 64
    cnet.layer1.1.norm2.running_mean 64
    cnet.layer1.1.norm2.running_var 64
    cnet.layer1.1.norm2.num_batches_tracked 
    cnet.layer2.0.conv1.weight 96,64,3,3
    cnet.layer2.0.conv1.bias 96
    cnet.layer2.0.conv2.weight 96,96,3,3
    cnet.layer2.0.conv2.bias 96
    cnet.layer2.0.norm1.weight 96
    cnet.layer2.0.norm1.bias 96
    cnet.layer2.0.norm1.running_mean 96
    cnet.layer2.0.norm1.running_var 96
    cnet.layer2.0.norm1.num_batches_tracked 
    cnet.layer2.0.norm2.weight 96
    cnet.layer2.0.norm2.bias 96
    cnet.layer2.0.norm2.running_mean 96
    cnet.layer2.0.norm2.running_var 96
    cnet.layer2.0.norm2.num_batches_tracked 
    cnet.layer2.0.norm3.weight 96
    cnet.layer2.0.norm3.bias 96
    cnet.layer2.0.norm3.running_mean 96
    cnet.layer2.0.norm3.running_var 96
    cnet.layer2.0.norm3.num_batches_tracked 
    cnet.layer2.0.downsample.0.weight 96,64,1,1
    cnet.layer2.0.downsample.0.bias 96
    cnet.layer2.0.downsample.1.weight 96
    cnet.layer2.0.downsample.1.bias 96
    cnet.layer2.0.downsample.1.running_mean 96
    cnet.layer2.0.downsample.1.running_var 96
    cnet.layer2.0.downsample.1.num_batches_tracked 
    cnet.layer2.1.conv1.weight 96,96,3,3
    cnet.layer2.1.conv1.bias 96
    cnet.layer2.1.conv2.weight 96,96,3,3
    cnet.layer2.1.conv2.bias 96
    cnet.layer2.1.norm1.weight 96
    cnet.layer2.1.norm1.bias 96
    cnet.layer2.1.norm1.running_mean 96
    cnet.layer2.1.norm1.running_var 96
    cnet.layer2.1.norm1.num_batches_tracked 
    cnet.layer2.1.norm2.weight 96
    cnet.layer2.1.norm2.bias 96
    cnet.layer2.1.norm2.running_mean 96
    cnet.layer2.1.norm2.running_var 96
    cnet.layer2.1.norm2.num_batches_tracked 
    cnet.layer3.0.conv1.weight 128,96,3,3
    cnet.layer3.0.conv1.bias 128
    cnet.layer3.0.conv2.weight 128,128,3,3
    cnet.layer3.0.conv2.bias 128
    cnet.layer3.0.norm1.weight 128
    cnet.layer3.0.norm1.bias 128
    cnet.layer3.0.norm1.running_mean 128
    cnet.layer3.0.norm1.running_var 128
    cnet.layer3.0.norm1.num_batches_tracked 
    cnet.layer3.0.norm2.weight 128
    cnet.layer3.0.norm2.bias 128
    cnet.layer3.0.norm2.running_mean 128
    cnet.layer3.0.norm2.running_var 128
    cnet.layer3.0.norm2.num_batches_tracked 
    cnet.layer3.0.norm3.weight 128
    cnet.layer3.0.norm3.bias 128
    cnet.layer3.0.norm3.running_mean 128
    cnet.layer3.0.norm3.running_var 128
    cnet.layer3.0.norm3.num_batches_tracked 
    cnet.layer3.0.downsample.0.weight 128,96,1,1
    cnet.layer3.0.downsample.0.bias 128
    cnet.layer3.0.downsample.1.weight 128
    cnet.layer3.0.downsample.1.bias 128
    cnet.layer3.0.downsample.1.running_mean 128
    cnet.layer3.0.downsample.1.running_var 128
    cnet.layer3.0.downsample.1.num_batches_tracked 
    cnet.layer3.1.conv1.weight 128,128,3,3
    cnet.layer3.1.conv1.bias 128
    cnet.layer3.1.conv2.weight 128,128,3,3
    cnet.layer3.1.conv2.bias 128
    cnet.layer3.1.norm1.weight 128
    cnet.layer3.1.norm1.bias 128
    cnet.layer3.1.norm1.running_mean 128
    cnet.layer3.1.norm1.running_var 128
    cnet.layer3.1.norm1.num_batches_tracked 
    cnet.layer3.1.norm2.weight 128
    cnet.layer3.1.norm2.bias 128
    cnet.layer3.1.norm2.running_mean 128
    cnet.layer3.1.norm2.running_var 128
    cnet.layer3.1.norm2.num_batches_tracked 
    cnet.conv2.weight 256,128,1,1
    cnet.conv2.bias 256
    update_block.encoder.convc1.weight 256,324,1,1
    update_block.encoder.convc1.bias 256
    update_block.encoder.convc2.weight 192,256,3,3
    update_block.encoder.convc2.bias 192
    update_block.encoder.convf1.weight 128,2,7,7
    update_block.encoder.convf1.bias 128
    update_block.encoder.convf2.weight 64,128,3,3
    update_block.encoder.convf2.bias 64
    update_block.encoder.conv.weight 126,256,3,3
    update_block.encoder.conv.bias 126
    update_block.gru.convz1.weight 128,384,1,5
    update_block.gru.convz1.bias 128
    update_block.gru.convr1.weight 128,384,1,5
    update_block.gru.convr1.bias 128
    update_block.gru.convq1.weight 128,384,1,5
    update_block.gru.convq1.bias 128
    update_block.gru.convz2.weight 128,384,5,1
    update_block.gru.convz2.bias 128
    update_block.gru.convr2.weight 128,384,5,1
    update_block.gru.convr2.bias 128
    update_block.gru.convq2.weight 128,384,5,1
    update_block.gru.convq2.bias 128
    update_block.flow_head.conv1.weight 256,128,3,3
    update_block.flow_head.conv1.bias 256
    update_block.flow_head.conv2.weight 2,256,3,3
    update_block.flow_head.conv2.bias 2
    update_block.mask.0.weight 256,128,3,3
    update_block.mask.0.bias 256
    update_block.mask.2.weight 576,256,1,1
    update_block.mask.2.bias 576
"""


def expected_raft_keys():
    rows = [line.split() for line in RAFT_KEYS.strip().splitlines()]
    return [(row[0], tuple(int(n) for n in row[1].split(",")) if len(row) > 1 else ()) for row in rows]


def test_raft_state_dict_equals_the_official_key_list():
    net = raft.RAFT()
    assert [(name, tuple(t.shape)) for name, t in net.state_dict().items()] == expected_raft_keys()
    assert len(net.state_dict()) == 179
    assert sum(p.numel() for p in net.parameters()) == 5257536


def random_raft_state(seed=0):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in raft.RAFT().state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(tensor.shape, generator=generator)
        else:
            state[name] = 0.05 * torch.randn(tensor.shape, generator=generator)
    # `norm3` and `downsample.1` are one module registered twice: a real checkpoint holds equal copies
    for name in state:
        if ".downsample.1." in name:
            state[name] = state[name.replace(".downsample.1.", ".norm3.")]
    return state


def test_raft_loads_a_module_prefixed_checkpoint_strictly(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "hub")
    state = random_raft_state()
    torch.save({"module." + name: tensor for name, tensor in state.items()}, tmp_path / "raft-things.pth")
    net = flow.build_flow_estimator("raft", weights_dir=tmp_path, allow_download=False)
    assert all(torch.equal(net.state_dict()[name], tensor) for name, tensor in state.items())
    assert not net.train().training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(checkpoints.CheckpointError, match="raft-things.pth"):
        torch.save({"module.fnet.conv1.weight": state["fnet.conv1.weight"]}, tmp_path / "raft-things.pth")
        raft.load_raft(weights_dir=tmp_path, allow_download=False)


@pytest.fixture(scope="module")
def raft_net():
    net = raft.RAFT()
    net.load_state_dict(random_raft_state(1))
    return net.freeze()


def test_raft_forward_shape_padding_and_iterations(raft_net):
    generator = torch.Generator().manual_seed(2)
    img0, img1 = torch.rand(2, 2, 3, 66, 75, generator=generator)  # padded to 72x80 inside
    with torch.no_grad():
        all_steps = raft_net(img0, img1, iters=3, return_all=True)
        one_step = raft_net(img0, img1, iters=1)
        default = raft_net(img0, img1)
    assert len(all_steps) == 3 and all(f.shape == (2, 2, 66, 75) for f in all_steps)
    torch.testing.assert_close(all_steps[0], one_step)
    assert default.shape == (2, 2, 66, 75) and torch.isfinite(default).all()
    assert (all_steps[2] - all_steps[0]).abs().max() > 1e-4  # iterations refine the estimate
    with pytest.raises(ValueError, match="too small"):
        raft_net(img0[..., :40, :40], img1[..., :40, :40])


def test_raft_correlation_pyramid_and_window_order():
    generator = torch.Generator().manual_seed(3)
    fmap1, fmap2 = torch.randn(2, 1, 4, 8, 8, generator=generator, dtype=torch.float64)
    pyramid = raft.all_pairs_correlation_pyramid(fmap1, fmap2, levels=2)
    assert pyramid[0].shape == (64, 1, 8, 8) and pyramid[1].shape == (64, 1, 4, 4)
    torch.testing.assert_close(pyramid[0][8 * 2 + 5, 0, 6, 1], (fmap1[0, :, 2, 5] * fmap2[0, :, 6, 1]).sum() / 2)
    coords = flow.pixel_grid(8, 8, dtype=torch.float64)
    window = raft.lookup_correlation(pyramid, coords, radius=1)
    assert window.shape == (1, 18, 8, 8)
    # RAFT's window order: channel k = i*3 + j samples (x + i - 1, y + j - 1) at level 0.
    y, x = 3, 4
    for k in range(9):
        i, j = divmod(k, 3)
        torch.testing.assert_close(window[0, k, y, x], pyramid[0][y * 8 + x, 0, y + j - 1, x + i - 1])


def test_raft_correlation_stays_full_precision_under_autocast(raft_net, monkeypatch):
    """As the official RAFT, the cost volume and its lookups leave autocast: the encoders may run
    in bf16, the correlation is built and sampled in fp32."""
    seen = []

    def recording_lookup(pyramid, coords, radius):
        sampled = lookup(pyramid, coords, radius)
        seen.append((pyramid[0].dtype, sampled.dtype))
        return sampled

    lookup = raft.lookup_correlation
    monkeypatch.setattr(raft, "lookup_correlation", recording_lookup)
    img0, img1 = torch.rand(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        estimate = raft_net(img0, img1, iters=2)
    assert seen == [(torch.float32, torch.float32)] * 2 and torch.isfinite(estimate).all()


def test_convex_upsampling_with_a_centre_mask_replicates_8x_flow():
    coarse = torch.randn(1, 2, 3, 4, generator=torch.Generator().manual_seed(4))
    mask = torch.full((1, 9, 8, 8, 3, 4), -50.0)
    mask[:, 4] = 50.0  # all weight on the centre of each 3x3 neighbourhood
    upsampled = raft.convex_upsample(coarse, mask.view(1, 576, 3, 4))
    torch.testing.assert_close(upsampled, 8 * coarse.repeat_interleave(8, 2).repeat_interleave(8, 3))


# ---------------------------------------------------------------------------------------------
# Warping and splatting
# ---------------------------------------------------------------------------------------------

def constant_flow(u, v, height, width, dtype=torch.float32):
    return torch.tensor([u, v], dtype=dtype).view(1, 2, 1, 1).expand(1, 2, height, width).contiguous()


def test_softmax_splat_of_integer_flow_is_a_shift_with_holes():
    image = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(5))
    shift = constant_flow(2.0, 1.0, 7, 9)
    metric = torch.randn(1, 1, 7, 9, generator=torch.Generator().manual_seed(6))
    splatted = pervfi_features.softsplat(image, shift, metric, "soft")
    torch.testing.assert_close(splatted[..., 1:, 2:], image[..., :-1, :-2])
    hole = pervfi_features.binary_hole(shift)
    expected_hole = torch.ones(1, 1, 7, 9)
    expected_hole[..., 1:, 2:] = 0
    torch.testing.assert_close(hole, expected_hole)
    assert (splatted[..., :1, :] == 0).all()  # holes stay empty instead of dividing by zero


def test_subpixel_splatting_distributes_bilinear_weights():
    values = torch.zeros(1, 1, 5, 5)
    values[0, 0, 1, 1] = 1.0
    splatted = pervfi_features.splat_sum(values, constant_flow(0.25, 0.5, 5, 5))
    expected = torch.zeros(1, 1, 5, 5)
    expected[0, 0, 1, 1], expected[0, 0, 1, 2] = 0.375, 0.125
    expected[0, 0, 2, 1], expected[0, 0, 2, 2] = 0.375, 0.125
    torch.testing.assert_close(splatted, expected)
    # every target pixel reached from a full neighbourhood receives total weight exactly 1
    coverage = pervfi_features.splat_sum(torch.ones(1, 1, 5, 5), constant_flow(0.25, 0.5, 5, 5))
    torch.testing.assert_close(coverage[..., 1:, 1:], torch.ones(1, 1, 4, 4))
    assert coverage[0, 0, 0, 0].item() == pytest.approx(0.75 * 0.5)
    # softmax splatting of a constant image stays that constant wherever anything landed
    constant = torch.full((1, 2, 5, 5), 0.7)
    splatted = pervfi_features.softsplat(constant, constant_flow(0.25, 0.5, 5, 5), torch.zeros(1, 1, 5, 5))
    torch.testing.assert_close(splatted, torch.full_like(splatted, 0.7), atol=1e-5, rtol=0)


def test_backward_warp_inverts_a_shift_and_matches_forward_splat():
    base = smooth_image(32, 40, seed=7)
    img0 = base[..., 4:24, 4:32]
    img1 = base[..., 2:22, 1:29]  # content of img0 appears 3 px right, 2 px down
    flow01 = constant_flow(3.0, 2.0, 20, 28)
    warped = flow.backward_warp(img1, flow01)
    torch.testing.assert_close(warped[..., :-2, :-3], img0[..., :-2, :-3])
    splatted = pervfi_features.splat_sum(img0, flow01)
    torch.testing.assert_close(splatted[..., 2:, 3:], img1[..., 2:, 3:])
    half = flow.backward_warp(base, constant_flow(0.5, 0.0, 32, 40))
    torch.testing.assert_close(half[..., :-1], (base[..., :-1] + base[..., 1:]) / 2)


def test_backward_warp_repeats_the_border_unless_told_to_pad_with_zeros():
    image = torch.arange(1.0, 7.0).view(1, 1, 2, 3)
    beyond = constant_flow(5.0, 0.0, 2, 3)  # every sample lands right of the last column
    assert flow.backward_warp(image, beyond)[0, 0].tolist() == [[3.0] * 3, [6.0] * 3]
    assert flow.backward_warp(image, beyond, padding_mode="zeros").abs().max() == 0


def tiny_double_case(seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(1, 2, 4, 5, generator=generator, dtype=torch.float64)
    # fractional parts in [0.2, 0.8]: finite differences never cross a pixel boundary
    whole = torch.randint(-1, 2, (1, 2, 4, 5), generator=generator).double()
    fractional = 0.2 + 0.6 * torch.rand(1, 2, 4, 5, generator=generator, dtype=torch.float64)
    metric = torch.randn(1, 1, 4, 5, generator=generator, dtype=torch.float64)
    return values.requires_grad_(), (whole + fractional).requires_grad_(), metric.requires_grad_()


def test_forward_splat_is_differentiable_wrt_values_and_flow():
    values, flow_, _ = tiny_double_case(8)
    assert torch.autograd.gradcheck(pervfi_features.splat_sum, (values, flow_))


def test_softmax_splat_is_differentiable_wrt_values_flow_and_metric():
    values, flow_, metric = tiny_double_case(9)
    assert torch.autograd.gradcheck(lambda v, f, z: pervfi_features.softsplat(v, f, z, "soft"), (values, flow_, metric))


def test_backward_warp_is_differentiable_wrt_image_and_flow():
    values, flow_, _ = tiny_double_case(10)
    assert torch.autograd.gradcheck(flow.backward_warp, (values, flow_))


def test_raft_zero_padding_is_pervfis_and_sintel_weights_load(tmp_path, monkeypatch):
    """PerVFI pads RAFT's [0, 255] input with constant 0 (centred): what the encoder sees at the
    border is -1 after normalisation, where RAFT's own padder replicates the edge."""
    replicate, zeros = raft.RAFT(padding="replicate"), raft.RAFT(padding="zeros")
    images = torch.rand(1, 3, 66, 75)
    padded_r, pad = replicate._pad_to_8(images)
    padded_z, same = zeros._pad_to_8(images)
    assert pad == same == [2, 3, 3, 3]
    assert (padded_z[..., 0, :] == 0).all() and (padded_r[..., 0, 2:-3] == images[..., 0, :]).all()
    with pytest.raises(ValueError, match="padding"):
        raft.RAFT(padding="reflect")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    state = random_raft_state()
    torch.save({"module." + name: tensor for name, tensor in state.items()}, tmp_path / "raft-sintel.pth")
    net = flow.build_flow_estimator("raft_sintel", weights_dir=tmp_path, allow_download=False)
    assert net.padding == "zeros" and torch.equal(net.fnet.conv1.weight, state["fnet.conv1.weight"])
    (tmp_path / "raft-sintel.pth").write_bytes(b"truncated")
    with pytest.raises(weights.WeightsUnavailable, match="raft-sintel.pth"):
        flow.build_flow_estimator("raft_sintel", weights_dir=tmp_path, allow_download=False)
