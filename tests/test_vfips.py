"""VFIPS port against the reference fixture (hqqxyy/VFIPS multiscale_v33, deterministic weights)."""

import pytest
import torch
from compat import load_fixture, recipe_state

import checkpoints
import vfips
import weights

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("vfips_compat.pt")




@pytest.fixture(scope="module")
def model(fixture):
    net = vfips.VFIPSNet()
    net.load_state_dict(recipe_state(fixture, net), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def outputs(model, fixture):
    ref, pred = fixture["inputs"]["ref"], fixture["inputs"]["dis"]
    with torch.no_grad():
        return {
            "score": model(ref, pred),
            "per_scale": model.scale_scores(ref, pred),
            "merge": model.merge_outputs(ref, pred),
            "swapped": model(pred, ref),
            "batch2": model(torch.cat([ref, pred.flip(1)]), torch.cat([pred, ref.flip(1)])),
        }


def assert_matches(actual, expected, what):
    scale = max(expected.abs().max().item(), 1e-12)
    diff = (actual.double() - expected.double()).abs().max().item()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3g} > {REL_TOL} x {scale:.3g}"


def test_state_dict_keys_shapes_and_order(fixture):
    state = vfips.VFIPSNet().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(k, list(s)) for k, s in fixture["keys"]]
    assert len(state) == 101
    int_keys = [k for k, v in state.items() if not v.is_floating_point()]
    assert int_keys == list(fixture["nonfloat_buffers"]) and all(state[k].dtype == torch.int64 for k in int_keys)


def test_constructor_constants_and_relative_position_index(fixture):
    state = vfips.VFIPSNet().state_dict()
    for name, value in fixture["constants"].items():
        assert torch.equal(state[name], value), name
    for name, value in fixture["nonfloat_buffers"].items():
        assert torch.equal(state[name], value), name


def test_strict_load_of_fixture_key_list(fixture):
    model = vfips.VFIPSNet()
    blob = {name: torch.zeros(shape, dtype=model.state_dict()[name].dtype) for name, shape in fixture["keys"]}
    assert not model.load_state_dict(blob, strict=True).missing_keys
    with pytest.raises(RuntimeError):
        vfips.VFIPSNet().load_state_dict({k: v for k, v in blob.items() if "moduleSixth" not in k}, strict=True)


def test_recipe_weights_match_checksums(model, fixture):
    state = model.state_dict()
    assert len(fixture["weight_checksums"]) == 101 - 2 - 5
    for name, (total, abs_total, first) in fixture["weight_checksums"].items():
        value = state[name].double()
        assert value.sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), name
        assert value.abs().sum().item() == pytest.approx(abs_total, rel=1e-9), name
        assert value.flatten()[0].item() == first, name


def test_score_and_per_scale(outputs, fixture):
    expected = fixture["outputs"]
    assert_matches(outputs["score"], expected["score"], "score")
    assert_matches(outputs["per_scale"], expected["per_scale"], "per_scale")
    assert outputs["score"].item() == pytest.approx(outputs["per_scale"].sum().item(), abs=1e-6)


def test_merge_outputs(outputs, fixture):
    for k, merged in enumerate(outputs["merge"]):
        assert_matches(merged, fixture["outputs"][f"merge_out_{k}"], f"merge_out_{k}")


def test_extractor_features_of_first_reference_frame(model, fixture):
    frame0 = model.scaling_layer(fixture["inputs"]["ref"])[:, 0]
    with torch.no_grad():
        levels = model.net.moduleExtractor(frame0)
    for k, level in enumerate(levels):
        assert_matches(level, fixture["outputs"][f"ref_extractor_feat_{k}_frame0"], f"extractor level {k}")


def test_argument_order_and_batch(outputs, fixture):
    expected = fixture["outputs"]
    assert_matches(outputs["swapped"], expected["score_swapped_args"], "score_swapped_args")
    assert_matches(outputs["batch2"], expected["score_batch2"], "score_batch2")
    assert abs(outputs["swapped"].item() - outputs["score"].item()) > 1e-3


def test_float64_matches_float64_reference(fixture):
    net = vfips.VFIPSNet()
    net.load_state_dict(recipe_state(fixture, net))
    net = net.double().eval()
    with torch.no_grad():
        score = net(fixture["inputs"]["ref"].double(), fixture["inputs"]["dis"].double())
    assert abs(score.item() - fixture["outputs"]["score_fp64"].item()) < 1e-9


def test_sixth_extractor_level_is_loaded_but_unused(model, fixture):
    ref, pred = fixture["inputs"]["ref"], fixture["inputs"]["dis"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k in state:
        if "moduleSixth" in k:
            state[k] = torch.full_like(state[k], 7.0)
    other = vfips.VFIPSNet().eval()
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(ref, pred), model(ref, pred))


def test_normalize_flag_accepts_unit_range(model, fixture):
    ref = fixture["inputs"]["ref"]
    with torch.no_grad():
        from_unit_range = model((ref + 1) / 2, (fixture["inputs"]["dis"] + 1) / 2, normalize=True)
    assert_matches(from_unit_range, fixture["outputs"]["score"], "normalize=True")


@pytest.mark.parametrize("size", [(64, 80), (80, 64), (40, 40)])
def test_too_small_frames_raise(model, size):
    clip = torch.zeros(1, 12, 3, *size)
    with pytest.raises(ValueError, match=rf"at least 65x65 \(reflect padding .*\), got {size[0]}x{size[1]}$"):
        model(clip, clip)


def test_a_feature_map_too_small_to_reflect_pad_is_a_clear_error(model):
    """Reflect padding needs pad < size: a 2x2 map cannot reach 4x4 (the check_window bound keeps it away)."""
    with pytest.raises(ValueError, match="a 2x2 feature map is too small"):
        model.net.merge_layers[4].pad_to_window(torch.zeros(1, 1, 2, 2))
    assert model.net.merge_layers[4].pad_to_window(torch.zeros(1, 1, 3, 3)).shape == (1, 1, 4, 4)


def test_frames_other_than_rgb_raise(model):
    clip = torch.zeros(1, 12, 1, 72, 80)
    with pytest.raises(ValueError, match="expected RGB frames \\(3 channels\\), got 1"):
        model(clip, clip)


def test_smallest_valid_size_runs(model):
    g = torch.Generator().manual_seed(3)
    ref, pred = torch.rand(1, 12, 3, 65, 65, generator=g) * 2 - 1, torch.rand(1, 12, 3, 65, 65, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.isfinite(model(ref, pred)).all()


@pytest.mark.parametrize("frames", [11, 13, 1])
def test_window_length_other_than_12_raises(model, frames):
    clip = torch.zeros(1, frames, 3, 72, 80)
    with pytest.raises(ValueError, match="exactly 12 frames"):
        model(clip, clip)


def test_mismatched_shapes_raise(model):
    with pytest.raises(ValueError, match="equal shape"):
        model(torch.zeros(1, 12, 3, 72, 80), torch.zeros(1, 12, 3, 72, 88))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub_cache"
    monkeypatch.setattr(weights, "cache_dir", lambda: cache)
    return cache


@pytest.mark.parametrize("wrap", ["plain", "state_dict_module"])
def test_load_vfips_from_weights_dir(model, fixture, tmp_path, isolated_cache, wrap):
    state = model.state_dict()
    if wrap == "state_dict_module":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(state, folder / weights.REGISTRY["vfips"].filename)
    loaded = vfips.load_vfips(weights_dir=folder, allow_download=False)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    ref, pred = fixture["inputs"]["ref"], fixture["inputs"]["dis"]
    with torch.no_grad():
        assert torch.equal(loaded(ref, pred), model(ref, pred))
    on_meta = vfips.load_vfips(weights_dir=folder, allow_download=False, device="meta")
    assert {p.device.type for p in on_meta.parameters()} == {"meta"}


def test_load_vfips_missing_file_names_url(tmp_path, isolated_cache):
    with pytest.raises(weights.WeightsUnavailable, match="vfips_multiscale_v33.pytorch"):
        vfips.load_vfips(weights_dir=tmp_path, allow_download=False)


def test_load_vfips_rejects_foreign_checkpoint(tmp_path, isolated_cache):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / weights.REGISTRY["vfips"].filename)
    with pytest.raises(checkpoints.CheckpointError, match="Expected a VFIPS multiscale_v33 checkpoint"):
        vfips.load_vfips(weights_dir=tmp_path, allow_download=False)
