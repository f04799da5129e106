"""ASVFI network: FLAVR compatibility (fixture), checkpoint loading, audio front-end and fusion."""
import numpy as np
import pytest
import torch
from compat import load_fixture, recipe_state

import baselines
import checkpoints
import dataset
import model as asvfi
import registry
from model import AudioFusion, LogMel, default_config, load_pretrained
from registry import build_model, load_model
from utils import AUDIO_RATE, ASVFIError


@pytest.fixture(scope="module")
def flavr():
    return load_fixture("flavr_compat.pt")




def weight_stats(weights):
    return torch.stack([torch.stack([v.double().sum(), v.double().abs().sum(), v.flatten()[0].double(),
                                     v.flatten()[-1].double()]) for v in weights.values()])


def tiny_config(**overrides):
    return default_config(**{"width": 0.125, "audio_dim": 32, **overrides})


def demo_audio(batch, samples=4800, seed=0):
    """Random audio with times spanning the 4-frame window, like dataset windows."""
    generator = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(batch, samples, generator=generator)
    times = torch.linspace(-1.1, 2.1, samples).expand(batch, -1).contiguous()
    return audio, times


def wake_audio(model, gate=0.5, seed=1):
    """A trained-looking audio branch: gates open and non-zero output projections (fresh ones are zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for fusion in model.audio.fusions():
            fusion.gate.fill_(gate)
            fusion.out.weight.copy_(0.05 * torch.randn(fusion.out.weight.shape, generator=generator))


# ----------------------------------------------------------------------------- FLAVR fixture
@pytest.mark.parametrize("scale,fusion_init", [(2, "zero_gate"), (4, "zero_gate"), (2, "zero_out")])
def test_fresh_model_matches_flavr_fixture_with_audio_off_and_on(flavr, scale, fusion_init):
    keys = flavr[f"keys_{scale}x"]
    weights = recipe_state(flavr, keys=keys)
    assert torch.allclose(weight_stats(weights), flavr[f"weight_stats_{scale}x"], rtol=1e-9, atol=1e-6)
    frames = flavr["input"].transpose(0, 1)  # fixture (4, B, 3, H, W) -> ours (B, 4, 3, H, W)
    expected = flavr[f"output_{scale}x"].transpose(0, 1)
    audio, times = demo_audio(1)

    video_only = build_model(default_config(scale=scale, audio="none")).eval()
    assert [(k, list(v.shape)) for k, v in video_only.state_dict().items()] == [(k, list(s)) for k, s in keys]
    assert sum(p.numel() for p in video_only.parameters()) == flavr[f"param_count_{scale}x"]
    video_only.load_state_dict(weights, strict=True)
    with_audio = build_model(default_config(scale=scale, audio="mel", fusion_init=fusion_init)).eval()
    with_audio.load_state_dict(weights, strict=False)
    with torch.no_grad():
        pred_video = video_only(frames)["pred"]
        pred_audio = with_audio(frames, audio=audio, audio_times=times, has_audio=torch.tensor([True]))["pred"]
    assert pred_video.shape == expected.shape == (1, scale - 1, 3, 64, 96)
    assert (pred_video - expected).abs().max() <= 1e-5
    assert (pred_audio - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("scale", [2, 4])
def test_a_flavr_release_runs_as_flavr_with_no_training(flavr, scale, tmp_path):
    """FLAVR_2x.pth / FLAVR_4x.pth as published ({'state_dict': module.*}, no config of ours) build
    FLAVR's network, and it computes the original code's output."""
    path = tmp_path / f"FLAVR_{scale}x.pth"
    weights = recipe_state(flavr, keys=flavr[f"keys_{scale}x"])
    torch.save({"epoch": 200, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)
    network, checkpoint = load_model(path, model="asvfi")
    assert checkpoint["config"] == default_config(scale=scale, audio="none", encoder_bias=scale != 2)
    with torch.no_grad():
        pred = network.eval()(flavr["input"].transpose(0, 1))["pred"]
    assert (pred - flavr[f"output_{scale}x"].transpose(0, 1)).abs().max() <= 1e-5
    with pytest.raises(checkpoints.CheckpointError, match="holds a checkpoint of asvfi, not pervfi"):
        load_model(path, model="pervfi")


def test_released_flavr_checkpoint_with_module_prefix_loads(tmp_path):
    source = build_model(tiny_config(audio="none"))
    path = tmp_path / "FLAVR_2x.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = build_model(tiny_config(audio="mel"))
    audio_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("audio.")}
    load_pretrained(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    for key, value in audio_before.items():
        assert torch.equal(target.state_dict()[key], value), key
    # A bare state_dict (no wrapper dict) loads too.
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    load_pretrained(build_model(tiny_config(audio="none")), tmp_path / "bare.pth")


def test_pretrained_takes_an_asvfi_checkpoint_whole_or_its_video_branch(tmp_path):
    """main.py's own checkpoints start a new run too: one with audio fills the whole network, one
    of an --audio none run the video branch (as a FLAVR release); another model's is refused."""
    torch.manual_seed(0)
    source = build_model(tiny_config(audio="mel"))
    with torch.no_grad():
        for gate in source.audio.gates():
            gate.fill_(0.3)  # trained gates, unlike a fresh model's zeros
    path = tmp_path / "adamw_6e-4_best.pth"
    torch.save({"model": "asvfi", "config": source.config, "epoch": 5, "state_dict": source.state_dict()}, path)
    target = build_model(tiny_config(audio="mel"))
    load_pretrained(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    video_only = build_model(tiny_config(audio="none"))
    torch.save({"model": "asvfi", "config": video_only.config, "state_dict": video_only.state_dict()}, path)
    fresh = build_model(tiny_config(audio="mel"))
    audio_before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("audio.")}
    load_pretrained(fresh, path)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in audio_before.items())
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in video_only.state_dict().items())
    torch.save({"model": "pervfi", "config": {}, "state_dict": video_only.state_dict()}, path)
    with pytest.raises(checkpoints.CheckpointError, match="holds a checkpoint of pervfi; --pretrained takes"):
        load_pretrained(build_model(tiny_config()), path)


def test_an_asvfi_checkpoint_of_another_width_is_refused_naming_the_width_it_was_trained_with(tmp_path):
    """main.py's checkpoint records its config: the error says which flag differs, not FLAVR's advice."""
    path = tmp_path / "adamw_6e-4_best.pth"
    source = build_model(tiny_config())
    torch.save({"model": "asvfi", "config": source.config, "state_dict": source.state_dict()}, path)
    wider = tiny_config(width=2 * source.config["width"])
    with pytest.raises(checkpoints.CheckpointError, match="shape mismatches") as error:
        load_pretrained(build_model(wider), path)
    assert str(error.value).endswith(f"The checkpoint was trained with --width {source.config['width']} "
                                     f"(here {wider['width']}): start with the same flags.")


def test_an_asvfi_checkpoint_of_another_depth_is_refused_naming_the_depth_it_was_trained_with(tmp_path):
    path = tmp_path / "adamw_6e-4_best.pth"
    source = build_model(tiny_config(depth="unet_34", audio="none"))
    torch.save({"model": "asvfi", "config": source.config, "state_dict": source.state_dict()}, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        load_pretrained(build_model(tiny_config(audio="none")), path)
    assert str(error.value).endswith("The checkpoint was trained with --depth unet_34 (here unet_18): "
                                     "start with the same flags.")


def test_encoder_stages_that_fit_no_width_multiplier_are_refused():
    stages = {f"encoder.layer{i}.0.conv1.0.weight": torch.zeros(c, 1) for i, c in enumerate((8, 16, 32, 100), 1)}
    with pytest.raises(checkpoints.CheckpointError, match=r"F.pth: encoder stages of \[8, 16, 32, 100\] channels"):
        asvfi.encoder_width(stages, "F.pth")
    stages["encoder.layer4.0.conv1.0.weight"] = torch.zeros(64, 1)
    assert asvfi.encoder_width(stages, "F.pth") == 0.125


def test_flavr_checkpoint_of_the_wrong_scale_is_refused_naming_file_and_keys(tmp_path):
    path = tmp_path / "FLAVR_4x.pth"
    torch.save({"state_dict": build_model(tiny_config(scale=4, audio="none")).state_dict()}, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        load_pretrained(build_model(tiny_config(scale=2)), path)
    message = str(error.value)
    assert str(path) in message and "17 unexpected keys" in message and "encoder.layer1.0.conv1.0.bias" in message
    assert "outconv.1.weight" in message  # 9 vs 3 output channels


def test_only_weights_with_an_encoder_and_nothing_but_the_video_branch_are_a_flavr_network():
    video = build_model(tiny_config(audio="none")).state_dict()
    assert asvfi.is_flavr_state_dict(video)
    assert not asvfi.is_flavr_state_dict({})
    assert not asvfi.is_flavr_state_dict({k: v for k, v in video.items() if k.startswith("outconv.")})
    assert not asvfi.is_flavr_state_dict({**video, "audio.no_audio_token": torch.zeros(32)})


def test_checkpoint_from_before_fusion_init_loads_and_computes_the_same(tmp_path):
    """Checkpoints written before the config had fusion_init: same keys, same forward."""
    torch.manual_seed(0)
    trained = build_model(tiny_config())
    wake_audio(trained)
    old_config = {k: v for k, v in trained.config.items() if k != "fusion_init"}
    checkpoints.save({"model": "asvfi", "config": old_config, "state_dict": trained.state_dict()}, tmp_path / "old.pth")
    loaded, _ = load_model(tmp_path / "old.pth")
    inputs, (audio, times) = torch.rand(1, 4, 3, 16, 16), demo_audio(1)
    with torch.no_grad():
        expected = trained.eval()(inputs, audio=audio, audio_times=times)["pred"]
        assert torch.equal(loaded.eval()(inputs, audio=audio, audio_times=times)["pred"], expected)


def test_load_checkpoint_strips_prefix_and_reports_bad_files(tmp_path):
    model = build_model(tiny_config())
    path = tmp_path / "run.pth"
    torch.save({"model": "asvfi", "config": model.config, "epoch": 1,
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    checkpoint = checkpoints.load_checkpoint(path, expect_config=model.config)
    assert list(checkpoint["state_dict"]) == list(model.state_dict()) and checkpoint["epoch"] == 1

    rebuilt, _ = load_model(path)
    assert rebuilt.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))

    with pytest.raises(checkpoints.CheckpointError, match="missing.pth"):
        checkpoints.load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="garbage.pth"):
        checkpoints.load_checkpoint(tmp_path / "garbage.pth")
    torch.save({"epoch": 1}, tmp_path / "no_weights.pth")
    with pytest.raises(checkpoints.CheckpointError, match="no_weights.pth.*state_dict"):
        checkpoints.load_checkpoint(tmp_path / "no_weights.pth")
    with pytest.raises(checkpoints.CheckpointError, match=r"run.pth.*scale: checkpoint 2 vs requested 4"):
        checkpoints.load_checkpoint(path, expect_config={**model.config, "scale": 4})


# ----------------------------------------------------------------------------- structure and config
def test_unet_34_extends_unet_18_with_more_blocks(flavr):
    with torch.device("meta"):
        deep = build_model(default_config(depth="unet_34", audio="none"))
    shapes = {k: list(v.shape) for k, v in deep.state_dict().items()}
    for key, shape in flavr["keys_2x"]:
        assert shapes[key] == shape, key
    blocks = {layer: len(getattr(deep.encoder, layer)) for layer in ("layer1", "layer2", "layer3", "layer4")}
    assert blocks == {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    assert "encoder.layer3.5.fg.attn_layer.0.weight" in shapes


def test_audio_none_has_no_audio_parameters(flavr):
    with torch.device("meta"):
        video_only = build_model(default_config(audio="none"))
        with_audio = build_model(default_config(audio="mel"))
    assert not video_only.uses_audio and with_audio.uses_audio
    assert list(video_only.state_dict()) == [k for k, _ in flavr["keys_2x"]]
    extra = set(with_audio.state_dict()) - set(video_only.state_dict())
    assert extra and all(k.startswith("audio.") for k in extra)


def test_config_validation_and_dispatch():
    assert default_config()["encoder_bias"] is None and default_config(scale=8)["scale"] == 8
    assert asvfi.encoder_bias(default_config(scale=2)) is False and asvfi.encoder_bias(default_config(scale=4))
    assert asvfi.encoder_bias(default_config(scale=4, encoder_bias=False)) is False
    with pytest.raises(ASVFIError, match="unknown ASVFI config keys"):
        default_config(widht=0.5)
    with pytest.raises(ASVFIError, match="unknown model"):
        build_model({**tiny_config(), "model": "flavr"})
    with pytest.raises(ASVFIError, match="depth"):
        default_config(depth="unet_50")
    model = build_model(tiny_config(scale=4))
    with pytest.raises(ValueError, match="k/4"):
        model(torch.rand(1, 4, 3, 16, 16), ts=torch.tensor([[0.5, 0.6, 0.7]]))


@pytest.mark.parametrize("shape", [(1, 3, 3, 16, 16), (1, 4, 1, 16, 16), (4, 3, 16, 16)])
def test_inputs_other_than_four_rgb_frames_are_refused(shape):
    with pytest.raises(ValueError, match=r"inputs must be \(B, 4, 3, H, W\)"):
        build_model(tiny_config(audio="none"))(torch.rand(shape))


def test_ts_must_hold_one_time_per_generated_frame():
    model = build_model(tiny_config(audio="none"))
    with pytest.raises(ValueError, match="at scale 2 predicts only t = k/2"):
        model(torch.rand(1, 4, 3, 16, 16), ts=torch.tensor([[0.5, 0.5]]))
    assert model(torch.rand(1, 4, 3, 16, 16), ts=torch.tensor([[0.5]]))["pred"].shape == (1, 1, 3, 16, 16)


def test_fuse_decoder_off_leaves_only_the_bottleneck_fusion():
    branch = build_model(tiny_config(fuse_decoder=False)).audio
    assert branch.decoder_fusion is None and len(branch.gates()) == 1
    assert len(build_model(tiny_config()).audio.gates()) == 2


@pytest.mark.parametrize("overrides,message", [
    ({"scale": 2.5}, "scale must be an integer >= 2"), ({"scale": 1}, "scale must be an integer >= 2"),
    ({"audio": "wav"}, "unknown audio mode 'wav'"), ({"fusion_init": "xavier"}, "unknown fusion_init 'xavier'"),
    ({"width": 0}, "width must be positive"), ({"width": -0.5}, "width must be positive"),
    ({"audio_dim": 30}, "audio_dim 30 must be a multiple of audio_heads 4"),
    ({"decoder_fusion_dim": 30}, "decoder_fusion_dim 30 must be a multiple of audio_heads 4"),
])
def test_config_refuses_values_the_network_cannot_be_built_from(overrides, message):
    with pytest.raises(ASVFIError, match=message):
        default_config(**overrides)


def test_registry_builds_every_model_from_its_own_config():
    """One registry: each model's default config is its own (PerVFI's carries no ASVFI keys) and says
    what its forward consumes."""
    import pervfi
    assert registry.default_config("pervfi", scale=4) == pervfi.default_pervfi_config(scale=4)
    assert registry.consumes(registry.default_config("asvfi")) == registry.Consumes(True, False, True, (4,))
    assert registry.consumes(registry.default_config("asvfi", audio="none")).audio is False
    assert registry.consumes(registry.default_config("pervfi")) == registry.Consumes(False, True, False, (2,), noise=True)
    assert registry.consumes(registry.default_config("blend")) == registry.Consumes(False, True, False, (2, 4))
    for name in registry.BASELINES:
        assert registry.build_model(registry.default_config(name, scale=4)).config == {"model": name, "scale": 4}
    with pytest.raises(ASVFIError, match="takes only 'scale'"):
        registry.default_config("blend", width=2)


def test_baselines_default_to_2x_and_refuse_other_models_and_scales():
    assert registry.default_config("repeat") == {"model": "repeat", "scale": 2}
    for name, scale in (("flavr", 2), ("blend", 1), ("blend", 2.5)):
        with pytest.raises(ASVFIError):
            baselines.default_config(name, scale=scale)


def test_repeat_and_blend_use_the_frames_around_the_interval_at_each_t():
    frames = torch.stack([torch.full((1, 3, 2, 2), value) for value in (0.0, 0.2, 0.6, 1.0)], 1)
    ts = torch.tensor([[0.25, 0.5]], dtype=torch.float64)
    repeat = build_model(registry.default_config("repeat"))(frames, ts=ts)["pred"]
    blend = build_model(registry.default_config("blend"))(frames, ts=ts)["pred"]
    assert repeat.dtype == blend.dtype == torch.float32 and repeat.shape == (1, 2, 3, 2, 2)
    assert torch.equal(repeat, frames[:, [1, 1]])
    torch.testing.assert_close(blend[0, :, 0, 0, 0], torch.tensor([0.3, 0.4]))


def test_dis_baseline_follows_the_motion_and_blends_towards_the_nearer_frame():
    noise = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    base = torch.nn.functional.interpolate(noise, size=(96, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    moved = lambda dx: base[..., 16:80, 16 - dx:112 - dx]  # the content dx px further right
    network = build_model(registry.default_config("dis", scale=4))
    pred = network(torch.stack([moved(0), moved(0), moved(4), moved(4)], 1))["pred"][0]
    for k in range(3):
        assert (pred[k] - moved(k + 1))[..., 8:-8, 8:-8].abs().mean() < 0.01, k
    flat = torch.stack([torch.full((1, 3, 32, 32), value) for value in (0.2, 0.2, 0.6, 0.6)], 1)
    flat_pred = network(flat, ts=torch.tensor([[0.25]]))["pred"]
    torch.testing.assert_close(flat_pred, torch.full_like(flat_pred, 0.3))


def test_odd_size_input_comes_back_at_its_size():
    model = build_model(tiny_config(scale=4)).eval()
    audio, times = demo_audio(2)
    with torch.no_grad():
        pred = model(torch.rand(2, 4, 3, 37, 29), audio=audio, audio_times=times,
                     ts=torch.tensor([[0.25, 0.5, 0.75]] * 2))["pred"]
    assert pred.shape == (2, 3, 3, 37, 29) and torch.isfinite(pred).all()


def test_constant_video_is_reproduced_when_the_head_outputs_zero():
    """The per-sample mean is added back after the head: a zero head returns each clip's mean colour."""
    model = build_model(tiny_config(audio="none")).eval()
    with torch.no_grad():
        model.outconv[1].weight.zero_()
        model.outconv[1].bias.zero_()
        colours = torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.4]])
        inputs = colours.view(2, 1, 3, 1, 1).expand(2, 4, 3, 21, 30)
        pred = model(inputs)["pred"]
    assert torch.allclose(pred, colours.view(2, 1, 3, 1, 1).expand_as(pred), atol=1e-6)


# ----------------------------------------------------------------------------- audio front-end
def numpy_log_mel(audio, rate=16000, window=400, hop=160, n_fft=512, n_mels=64, f_lo=125.0, f_hi=7500.0):
    """Independent reference: VGGish's definition written with numpy."""
    n_frames = 1 + (len(audio) - window) // hop
    frames = np.stack([audio[i * hop:i * hop + window] for i in range(n_frames)]).astype(np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    spectrum = np.abs(np.fft.rfft(frames * hann, n_fft))
    to_mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    bins_mel = to_mel(np.linspace(0, rate / 2, n_fft // 2 + 1))
    edges = np.linspace(to_mel(f_lo), to_mel(f_hi), n_mels + 2)
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for band in range(n_mels):
        lo, mid, hi = edges[band:band + 3]
        for b, m in enumerate(bins_mel):
            bank[b, band] = max(0.0, min((m - lo) / (mid - lo), (hi - m) / (hi - mid)))
    bank[0] = 0.0
    return np.log(spectrum @ bank + 0.01).T


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * np.linspace(0, 1, len(t)) + 0.05 * rng.standard_normal(len(t)))
    audio[3000:3010] += 0.8  # a click
    ours = LogMel()(torch.tensor(audio, dtype=torch.float32)[None])[0].numpy()
    reference = numpy_log_mel(audio.astype(np.float32))
    assert ours.shape == reference.shape == (64, 1 + (8000 - 400) // 160)
    assert np.abs(ours - reference).max() < 2e-4
    # Loudness is visible: the band holding 440 Hz grows with the tone's ramp.
    band = int(np.argmax(reference[:, -1]))
    assert reference[band, -1] > reference[band, 5] + 2


def test_a_clip_shorter_than_one_window_is_zero_padded_to_one_frame():
    log_mel = LogMel()
    short = 0.1 * torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([short, torch.zeros(1, 300)], 1)
    assert torch.equal(log_mel(short), log_mel(padded)) and log_mel(short).shape == (1, 64, 1)
    for n_samples in (100, 400, 559, 560, 8000):
        assert log_mel.n_frames(n_samples) == log_mel(torch.zeros(1, n_samples)).shape[-1], n_samples
    model = build_model(tiny_config())
    times = torch.linspace(0, 1, 100)[None]
    _, token_times = model.audio.tokens(short, times, None, 1, "cpu")
    assert token_times.tolist() == [[1.0]]  # the frame's centre (sample 200) clamped to the last sample


def test_audio_encoder_maps_silence_to_zero_input():
    """The log-mel enters shifted by log(0.01) and divided by 5: silence is 0, loudness stays visible."""
    encoder = asvfi.AudioEncoder(n_mels=64, dim=8)
    log_mel = torch.full((1, 64, 6), np.log(0.01))
    with torch.no_grad():
        assert torch.allclose(encoder(log_mel), encoder.layers(torch.zeros(1, 64, 6)).transpose(1, 2))
        assert torch.allclose(encoder(log_mel + 5), encoder.layers(torch.ones(1, 64, 6)).transpose(1, 2))


def test_audio_needs_audio_times_of_its_shape():
    model = build_model(tiny_config())
    audio, times = demo_audio(1)
    with pytest.raises(ValueError, match=r"audio_times of the same shape .* audio_times \(1, 4799\)"):
        model.audio.tokens(audio, times[:, 1:], None, 1, "cpu")
    with pytest.raises(ValueError, match="audio_times None"):
        model.audio.tokens(audio, None, None, 1, "cpu")


def test_audio_tokens_carry_the_time_of_their_centre():
    model = build_model(tiny_config(audio_stride=2))
    audio, times = demo_audio(1, samples=3200)
    tokens, token_times = model.audio.tokens(audio, times, None, 1, "cpu")
    n_frames = 1 + (3200 - 400) // 160
    centres = torch.arange(0, n_frames, 2) * 160 + 200
    assert tokens.shape == (1, len(centres), 32)
    assert torch.allclose(token_times[0], times[0, centres])


def test_time_bias_lets_each_target_read_the_audio_at_its_instant():
    """With content-blind queries and keys, the time bias alone selects the token at t = k/s."""
    torch.manual_seed(0)
    n_targets, dim = 3, 8
    fusion = AudioFusion(channels=8, token_dim=dim, dim=dim, heads=2, n_targets=n_targets)
    with torch.no_grad():
        for layer in (fusion.query, fusion.query_time, fusion.query_y, fusion.query_x, fusion.query_target_time,
                      fusion.key):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
        fusion.time_slope.fill_(200.0)  # softplus(200) = 200: very sharp in time
    token_times = torch.linspace(-1, 2, 25)[None]  # one token every 1/8 interval
    tokens = torch.randn(1, 25, dim)
    targets = torch.tensor([0.25, 0.5, 0.75])
    captured = {}
    fusion.out.register_forward_pre_hook(lambda module, inputs: captured.update(attended=inputs[0]))
    with torch.no_grad():
        fusion(torch.randn(1, 8, 4, 3, 2), tokens, token_times, targets, torch.tensor([-1.0, 0.0, 1.0, 2.0]))
        values = fusion.value(tokens)[0]
    per_target = captured["attended"].view(1, -1, n_targets, dim)[0]
    for k, t in enumerate(targets):
        nearest = int(torch.argmin((token_times[0] - t).abs()))
        assert torch.allclose(per_target[:, k], values[nearest].expand_as(per_target[:, k]), atol=1e-5)


def test_the_loudness_of_a_token_reaches_what_the_fusion_adds():
    """Values are not normalised: the token's magnitude (the encoder's response to a louder sound) changes
    what is added. One token, so the attention weight is 1 whatever the keys."""
    torch.manual_seed(0)
    fusion = AudioFusion(channels=8, token_dim=16, dim=16, heads=2, n_targets=1)
    with torch.no_grad():
        fusion.gate.fill_(0.5)
    x, token = torch.randn(1, 8, 4, 3, 2), torch.randn(1, 1, 16)
    times = (torch.zeros(1, 1), torch.tensor([0.5]), torch.tensor(asvfi.INPUT_FRAME_TIMES))
    with torch.no_grad():
        quiet, loud = (fusion(x, scale * token, *times) - x for scale in (1.0, 2.0))
    assert (loud - quiet).abs().max() > 0.1 * quiet.abs().max()


def test_time_slopes_start_from_broad_to_sharp_and_at_8_for_a_single_head():
    def slopes(heads):
        return torch.nn.functional.softplus(AudioFusion(8, 8, 8, heads, 1).time_slope.detach())

    assert torch.allclose(slopes(4), torch.tensor([1.0, 4.0, 16.0, 64.0]), rtol=1e-4)
    assert torch.allclose(slopes(1), torch.tensor([8.0]), rtol=1e-4)


def test_fusion_adds_its_result_through_tanh_of_the_gate():
    """x + tanh(gate) * result: the gate saturates, so what gate 1 adds is tanh(1)/tanh(0.5) = 1.648 times gate 0.5's, not 2."""
    torch.manual_seed(0)
    fusion = AudioFusion(channels=8, token_dim=16, dim=16, heads=2, n_targets=1)
    x, tokens = torch.randn(1, 8, 4, 3, 2), torch.randn(1, 5, 16)
    times = (torch.linspace(-1, 2, 5)[None], torch.tensor([0.5]), torch.tensor(asvfi.INPUT_FRAME_TIMES))
    added = {}
    with torch.no_grad():
        for gate in (1.0, 0.5):
            fusion.gate.fill_(gate)
            added[gate] = fusion(x, tokens, *times) - x
    assert added[0.5].abs().max() > 1e-3
    ratio = np.tanh(1.0) / np.tanh(0.5)
    assert ratio == pytest.approx(1.6480, abs=1e-4)
    torch.testing.assert_close(added[1.0], ratio * added[0.5], atol=1e-5, rtol=1e-4)


def test_time_penalty_is_the_softplus_slope_times_the_absolute_time_distance():
    """Each head's logit bias is -softplus(slope_h) * |k/s - t_token| (linear in the distance, as the docstring says)."""
    fusion = AudioFusion(channels=8, token_dim=8, dim=8, heads=2, n_targets=2)
    with torch.no_grad():
        fusion.query_target_time.weight.zero_()  # no content term: the bias is the time penalty alone
        fusion.time_slope.copy_(torch.log(torch.expm1(torch.tensor([1.0, 3.0]))))  # softplus -> 1, 3
    token_times = torch.tensor([[-1.0, 0.0, 0.25, 1.0, 2.0]])
    targets = torch.tensor([0.5, 0.75])
    keys = torch.randn(1, 2, 5, 4)
    with torch.no_grad():
        bias = fusion._logit_bias(keys, token_times, targets)
    distance = np.abs(np.array([0.5, 0.75])[:, None] - np.array([-1.0, 0.0, 0.25, 1.0, 2.0])[None])  # (n, S)
    expected = -np.array([1.0, 3.0])[None, :, None] * distance[:, None, :]  # (n, heads, S)
    assert bias.shape == (1, 2, 2, 5)
    np.testing.assert_allclose(bias[0].numpy(), expected, atol=1e-5)
    assert bias[0, 0, 1, 2].item() == pytest.approx(-0.75, abs=1e-5)  # |0.5 - 0.25| * 3


def test_input_frame_times_follow_the_datasets_interval_units():
    """The model places input frame k of a window where the dataset's audio times put that frame: 0 = input 1, 1 = input 2."""
    fps = 25
    for scale in dataset.SCALES:
        inputs, _ = dataset.window_indices(3, scale)
        frame_times = [i / fps for i in inputs]
        n_samples = dataset.audio_samples_for(fps, scale)
        _, sample_times = dataset.audio_segment(None, frame_times[1], frame_times[2], n_samples)
        first = int(round((frame_times[1] + frame_times[2]) / 2 * AUDIO_RATE)) - n_samples // 2
        at_frames = [float(sample_times[int(round(t * AUDIO_RATE)) - first]) for t in frame_times]
        assert at_frames == pytest.approx(list(asvfi.INPUT_FRAME_TIMES), abs=1e-4), scale
    assert build_model(tiny_config()).frame_times.tolist() == list(asvfi.INPUT_FRAME_TIMES)


def test_checkpoint_with_normalised_values_is_refused_with_advice(tmp_path):
    model = build_model(tiny_config())
    state = model.state_dict()
    for name in ("bottleneck_fusion", "decoder_fusion"):
        state[f"audio.{name}.value_norm.weight"] = torch.ones(32)
        state[f"audio.{name}.value_norm.bias"] = torch.zeros(32)
    path = tmp_path / "old.pth"
    checkpoints.save({"model": "asvfi", "config": model.config, "state_dict": state}, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        load_model(path)
    message = str(error.value)
    assert str(path) in message and "audio.bottleneck_fusion.value_norm.weight" in message
    assert "normalised the attention values" in message


# ----------------------------------------------------------------------------- gates and the no-audio token
def test_fresh_model_ignores_audio_and_a_trained_branch_uses_it():
    torch.manual_seed(0)
    model = build_model(tiny_config(scale=4)).eval()
    video_only = build_model(tiny_config(scale=4, audio="none")).eval()
    video_only.load_state_dict(model.state_dict(), strict=False)
    inputs = torch.rand(2, 4, 3, 24, 32)
    audio, times = demo_audio(2)
    with torch.no_grad():
        baseline = video_only(inputs)["pred"]
        closed = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([True, True]))["pred"]
        silent = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([False, False]))["pred"]
        assert torch.equal(closed, baseline) and torch.equal(silent, baseline)
        wake_audio(model)
        sounding = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([True, True]))["pred"]
        quieter = model(inputs, audio=0.1 * audio, audio_times=times, has_audio=torch.tensor([True, True]))["pred"]
        silent = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([False, False]))["pred"]
        silent_other = model(inputs, audio=audio.flip(-1), audio_times=times,
                             has_audio=torch.tensor([False, False]))["pred"]
        no_audio_given = model(inputs)["pred"]
    assert (sounding - baseline).abs().max() > 1e-3 and (sounding - quieter).abs().max() > 1e-4
    assert (silent - sounding).abs().max() > 1e-4
    assert torch.allclose(silent, silent_other, atol=1e-6) and torch.allclose(silent, no_audio_given, atol=1e-6)


def test_mixed_batch_uses_no_audio_token_only_where_there_is_no_sound():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    wake_audio(model)
    inputs = torch.rand(2, 4, 3, 16, 24)
    audio, times = demo_audio(2)
    with torch.no_grad():
        mixed = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([True, False]))["pred"]
        first = model(inputs[:1], audio=audio[:1], audio_times=times[:1])["pred"]
        second = model(inputs[1:])["pred"]
    assert torch.allclose(mixed[:1], first, atol=1e-5) and torch.allclose(mixed[1:], second, atol=1e-5)


def audio_gradients_after_steps(fusion_init, steps):
    """{name: grad} of every audio-branch parameter after `steps` AdamW updates of a fresh model.

    Half the batch has no sound, so the "no audio" token is used too."""
    torch.manual_seed(0)
    model = build_model(tiny_config(scale=4, fusion_init=fusion_init)).train()
    inputs, target = torch.rand(2, 4, 3, 16, 16), torch.rand(2, 3, 3, 16, 16)
    audio, times = demo_audio(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps + 1):
        optimizer.zero_grad()
        pred = model(inputs, audio=audio, audio_times=times, has_audio=torch.tensor([True, False]))["pred"]
        (pred - target).abs().mean().backward()
        if step < steps:
            optimizer.step()
    return {name: p.grad for name, p in model.audio.named_parameters()}


FRESH_LEARNERS = {"zero_gate": ("gate",), "zero_out": ("out.weight", "out.bias")}


@pytest.mark.parametrize("fusion_init", sorted(FRESH_LEARNERS))
def test_every_audio_parameter_learns_after_one_step_from_a_fresh_model(fusion_init):
    fresh = audio_gradients_after_steps(fusion_init, steps=0)
    learning = {name for name, grad in fresh.items() if grad is not None and grad.abs().sum() > 0}
    # At the very first step only the zero-initialised parameters learn: the rest sees them as zero.
    assert learning == {f"{block}.{kind}" for block in ("bottleneck_fusion", "decoder_fusion")
                        for kind in FRESH_LEARNERS[fusion_init]}
    assert default_config()["fusion_init"] == "zero_gate"
    after_one = audio_gradients_after_steps(fusion_init, steps=1)
    assert len(after_one) > 30
    for name, grad in after_one.items():
        assert grad is not None and grad.abs().sum() > 0, name


def test_frame_mean_replaces_the_frames_own_mean():
    """Tiled inference centres every tile by the whole frame's mean through `frame_mean`."""
    net = build_model(tiny_config()).eval()
    inputs = torch.rand(2, 4, 3, 32, 40)
    own = inputs.mean(dim=(1, 3, 4))
    with torch.no_grad():
        plain = net(inputs)["pred"]
        assert torch.allclose(net(inputs, frame_mean=own)["pred"], plain, atol=1e-6)
        shifted = net(inputs, frame_mean=own + 0.1)["pred"]
    assert (shifted - plain).abs().max() > 1e-3
