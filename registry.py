"""The models, by name: default config, constructor and what each one's forward consumes.

    config = registry.default_config("asvfi", scale=2, width=0.125)   # validated by the model itself
    network = registry.build_model(config)                            # config["model"] picks the entry
    network, checkpoint = registry.load_model("weights/asvfi/adamw_6e-4.pth")
    registry.consumes(config).audio                                   # feed audio? any t? a frame mean?

Every model follows one call: forward(inputs (B, 4, 3, H, W), audio, audio_times, has_audio, ts,
target) -> {"pred": (B, n, 3, H, W), ...}; `Consumes` says which of those inputs it reads.
"""
from dataclasses import dataclass
from typing import Callable

import baselines
import checkpoints
import model as asvfi
import pervfi
from utils import ASVFIError


@dataclass(frozen=True)
class Consumes:
    """What a model reads besides the four frames."""
    audio: bool  # audio / audio_times / has_audio (otherwise they are not even built)
    any_t: bool  # ts at any times in (0, 1), one pass for any scale (otherwise only k/scale)
    frame_mean: bool  # frame_mean: centre by a given mean (tiles then share the whole frame's)
    # how many input frames it can use: ASVFI 4, PerVFI 2; the baselines read only the two around
    # the target, so a 2- or a 4-frame test-set sample gives them the same pair
    input_frames: tuple = (4,)
    noise: bool = False  # draws sampling noise: forward takes generator=, a list of one per sample


@dataclass(frozen=True)
class ModelSpec:
    default_config: Callable  # (**overrides) -> a complete config dict, validated
    build: Callable  # (config, weights_dir) -> nn.Module; weights_dir holds pretrained parts (PerVFI's flow)
    consumes: Callable  # (config) -> Consumes
    trained: bool  # has checkpoints (baselines need none)
    fit_hint: Callable = lambda config: ""  # (config) -> advice when a checkpoint's weights do not fit
    likelihood: bool = False  # returns out["nll"] given the target (the loss term NLL needs it)


def _build_pervfi(config, weights_dir=None):
    network = pervfi.build_pervfi(config)
    network.set_flow_estimator(weights_dir=weights_dir)  # frozen, may need pretrained files
    return network


def _baseline(name):
    return ModelSpec(default_config=lambda **overrides: baselines.default_config(name, **overrides),
                     build=lambda config, weights_dir=None: baselines.build_baseline(config),
                     consumes=lambda config: Consumes(audio=False, any_t=True, frame_mean=False,
                                                      input_frames=(2, 4)),
                     trained=False)


MODELS = {
    "asvfi": ModelSpec(default_config=asvfi.default_config,
                       build=lambda config, weights_dir=None: asvfi.ASVFI(asvfi.default_config(**config)),
                       consumes=lambda config: Consumes(audio=config["audio"] != "none", any_t=False,
                                                        frame_mean=True),
                       trained=True, fit_hint=asvfi.fit_hint),
    "pervfi": ModelSpec(default_config=pervfi.default_pervfi_config, build=_build_pervfi,
                        consumes=lambda config: Consumes(audio=pervfi.PerVFI.uses_audio,
                                                         any_t=pervfi.PerVFI.arbitrary_t, frame_mean=False,
                                                         input_frames=(2,), noise=True),
                        trained=True, likelihood=True),
    **{name: _baseline(name) for name in baselines.BASELINES},
}
TRAINED = tuple(name for name, spec in MODELS.items() if spec.trained)
BASELINES = tuple(name for name, spec in MODELS.items() if not spec.trained)


def spec(name):
    if name not in MODELS:
        raise ASVFIError(f"unknown model {name!r}; choose one of {list(MODELS)}")
    return MODELS[name]


def default_config(name, **overrides):
    return spec(name).default_config(**overrides)


def build_model(config, weights_dir=None):
    """The network a config describes (config["model"] names it)."""
    return spec(config["model"]).build(config, weights_dir)


def consumes(config):
    return spec(config["model"]).consumes(config)


def load_model(path, overrides=None, weights_dir=None, model=None):
    """(network, checkpoint): the network described by a checkpoint's config (with `overrides`,
    e.g. PerVFI's sampling heat or flow estimator), carrying the checkpoint's weights, on the CPU.

    A file in the PerVFI authors' format (their generator's bare state dict, e.g. v00.pth) builds
    the published network (`pervfi.load_official_checkpoint`); a FLAVR release (FLAVR_2x.pth, ...)
    builds FLAVR's network, ASVFI with the audio off (`load_flavr_release`); other files without our
    config are refused with what to do. With `model`, a checkpoint of another model is refused
    before the overrides (meant for `model`) are applied.
    """
    obj = checkpoints.load_file(path)
    if pervfi.is_official_checkpoint(obj):
        check_model_name(path, "pervfi", model)
        return pervfi.load_official_checkpoint(obj, path, overrides, weights_dir)
    flavr_weights = flavr_release_weights(obj)
    if flavr_weights is not None:
        check_model_name(path, "asvfi", model)
        return load_flavr_release(flavr_weights, path, overrides)
    checkpoint = checkpoints.as_training_checkpoint(obj, path)
    if not isinstance(checkpoint.get("config"), dict):
        raise checkpoints.CheckpointError(f"{path}: checkpoint has no model config, so the network cannot be "
                                          f"rebuilt; pass a checkpoint written by main.py (or the PerVFI "
                                          f"authors' v00.pth with --model pervfi, or a FLAVR release)")
    saved = {"model": checkpoint.get("model", "asvfi"), **checkpoint["config"]}
    check_model_name(path, saved["model"], model)
    config = {**saved, **(overrides or {})}
    network = build_checkpoint_network(path, config, weights_dir)
    checkpoints.load_strict(network, checkpoint["state_dict"], path, hint=spec(config["model"]).fit_hint(config))
    return network, checkpoint


def build_checkpoint_network(path, config, weights_dir=None):
    """build_model for the config a checkpoint records: a config its model refuses (an unknown key,
    a value it cannot be built with) raises a CheckpointError naming the file; errors of the weight
    files the network needs name those files already and pass as they are."""
    try:
        return build_model(config, weights_dir)
    except checkpoints.CheckpointError:
        raise
    except (ASVFIError, ValueError) as error:
        raise checkpoints.CheckpointError(f"{path}: its config does not describe a network that can be built "
                                          f"({error})") from None


def check_model_name(path, held, expected):
    if expected is not None and held != expected:
        raise checkpoints.CheckpointError(f"{path}: holds a checkpoint of {held}, not {expected}; pass --model {held}")


def flavr_release_weights(obj):
    """The state dict of a FLAVR checkpoint as its authors publish it (the video network's weights,
    bare or under 'state_dict', `module.` prefixes stripped; no config of ours), else None."""
    if not isinstance(obj, dict) or "config" in obj:
        return None
    try:
        state_dict = checkpoints.unwrap_state_dict(obj, "checkpoint")
    except checkpoints.CheckpointError:
        return None
    return state_dict if asvfi.is_flavr_state_dict(state_dict) else None


def load_flavr_release(state_dict, path, overrides=None):
    """(network, checkpoint) of a FLAVR release's weights: ASVFI with the audio off, of the scale,
    depth, width and encoder biases they have (asvfi.flavr_config), which is FLAVR's network exactly."""
    config = {**asvfi.flavr_config(state_dict, path), **(overrides or {})}
    network = build_model(config)
    checkpoints.load_strict(network, state_dict, path, hint=asvfi.fit_hint(config))
    return network, {"model": "asvfi", "config": config, "state_dict": state_dict, "source": "FLAVR release"}
