"""checkpoints.py and registry.load_model on files that are not ours: pickles that run code, FLAVR releases."""
import os

import pytest
import torch

import checkpoints
import model as asvfi
import pervfi
import raft
import registry
import weights


class RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_pickle_that_would_run_code_is_refused_naming_the_file_and_the_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": RunsCode()}, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.load_file(path)
    message = str(error.value)
    assert str(path) in message and "system" in message
    assert "weights_only=False" not in message and "weights_only" not in message


def test_unreadable_file_names_the_file_without_torchs_advice(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="broken.pth: not a loadable PyTorch checkpoint: not "
                                                          "written by torch.save, or cut short") as error:
        checkpoints.load_file(path)
    assert "weights_only" not in str(error.value)


def test_a_flavr_release_of_any_shape_builds_its_network_and_other_foreign_files_are_refused(tmp_path):
    for config in (dict(width=0.125, scale=2), dict(width=0.25, scale=8, depth="unet_34"), dict(width=0.3, scale=4)):
        network = asvfi.ASVFI(asvfi.default_config(audio="none", **config))
        torch.save(network.state_dict(), tmp_path / "bare.pth")  # a bare state dict loads too
        loaded, checkpoint = registry.load_model(tmp_path / "bare.pth")
        assert {k: checkpoint["config"][k] for k in config if k != "width"} == {k: v for k, v in config.items()
                                                                                if k != "width"}
        assert all(torch.equal(v, network.state_dict()[k]) for k, v in loaded.state_dict().items())
    encoder_only = {k: v for k, v in network.state_dict().items() if k.startswith("encoder.")}
    torch.save(encoder_only, tmp_path / "cut.pth")
    with pytest.raises(checkpoints.CheckpointError, match=r"cut.pth: a FLAVR network without outconv.1.weight"):
        registry.load_model(tmp_path / "cut.pth")
    torch.save({"state_dict": {"other.weight": torch.ones(1)}}, tmp_path / "other.pth")
    with pytest.raises(checkpoints.CheckpointError, match="no model config.*main.py"):
        registry.load_model(tmp_path / "other.pth")


def test_saved_epoch_reads_the_epoch_without_the_weights_and_refuses_a_file_without_one(tmp_path):
    path = tmp_path / "run.pth"
    checkpoints.save({"epoch": 3, "state_dict": {"w": torch.arange(4.0)}}, path)
    assert checkpoints.saved_epoch(path) == 3
    checkpoints.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "bare.pth")
    with pytest.raises(checkpoints.CheckpointError, match=r"bare\.pth: not a training checkpoint"):
        checkpoints.saved_epoch(tmp_path / "bare.pth")


def test_weights_holding_nan_or_inf_are_refused_naming_the_file_and_the_tensors(tmp_path):
    """A diverged run's or a damaged file's weights would generate black frames without a word."""
    config = asvfi.default_config(width=0.125)
    weights = asvfi.ASVFI(config).state_dict()
    weights["encoder.stem.0.weight"][0, 0, 0, 0, 0] = float("nan")
    weights["outconv.1.weight"][0, 0, 0, 0] = float("inf")
    path = tmp_path / "diverged.pth"
    checkpoints.save({"model": "asvfi", "config": config, "state_dict": weights}, path)
    said = r"diverged.pth: 2 weight tensor\(s\) hold NaN or infinite values \(e.g. \['encoder.stem.0.weight'"
    with pytest.raises(checkpoints.CheckpointError, match=said):
        registry.load_model(path)
    with pytest.raises(checkpoints.CheckpointError, match=said):  # --pretrained
        asvfi.load_pretrained(asvfi.ASVFI(config), path)


@pytest.mark.parametrize("change, said", [
    ({"depth": "unet_99"}, "unknown depth 'unet_99'"),
    ({"extra": 1}, "unknown ASVFI config keys ['extra']"),
])
def test_a_checkpoint_whose_config_cannot_be_built_is_refused_naming_the_file(change, said, tmp_path):
    config = asvfi.default_config(width=0.125)
    path = tmp_path / "edited.pth"
    checkpoints.save({"model": "asvfi", "config": {**config, **change},
                      "state_dict": asvfi.ASVFI(config).state_dict()}, path)
    with pytest.raises(checkpoints.CheckpointError) as error:
        registry.load_model(path)
    assert str(error.value).startswith(f"{path}: its config does not describe a network") and said in str(error.value)


def test_a_pervfi_checkpoint_naming_an_unknown_flow_estimator_is_refused_naming_the_file(tmp_path):
    config = pervfi.default_pervfi_config(width=0.125, steps_per_level=2)
    path = tmp_path / "edited.pth"
    checkpoints.save({"model": "pervfi", "config": {**config, "flow_estimator": "bogus"},
                      "state_dict": pervfi.build_pervfi(config).state_dict()}, path)
    with pytest.raises(checkpoints.CheckpointError, match=r"edited.pth: its config does not describe a network "
                                                          r"that can be built \(flow.py: unknown flow estimator"):
        registry.load_model(path)


def test_a_folder_or_an_unreadable_file_is_named_as_such_not_as_missing_or_damaged(tmp_path, monkeypatch):
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match=r"folder.pth: a folder, not a checkpoint file"):
        checkpoints.load_file(tmp_path / "folder.pth")
    path = tmp_path / "locked.pth"
    checkpoints.save({"state_dict": {"w": torch.ones(1)}}, path)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # chmod 000 does not stop root
    with pytest.raises(checkpoints.CheckpointError, match=r"locked.pth: no permission to read the file"):
        checkpoints.load_file(path)


def test_inspect_describes_a_published_release_and_refuses_other_weight_files(tmp_path, capsys):
    """FLAVR and PerVFI releases load in inference, so inspect says what they are instead of refusing
    them as files without a training state."""
    import tools
    flavr = asvfi.ASVFI(asvfi.default_config(audio="none", width=0.125)).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in flavr.items()}}, tmp_path / "FLAVR_2x.pth")
    generator = pervfi.build_pervfi(pervfi.default_pervfi_config(width=0.25)).state_dict()
    torch.save({f"module.{k}": v for k, v in generator.items()}, tmp_path / "v00.pth")
    for name, what, state in (("FLAVR_2x.pth", "a FLAVR release", flavr),
                              ("v00.pth", "the PerVFI authors' generator", generator)):
        assert tools.main(["inspect", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        values = sum(t.numel() for t in state.values() if t.is_floating_point())
        assert f"  release    {what}" in out and f"{len(state)} entries, {values:,} floating-point values" in out
        assert "not resumable" in out
    torch.save({"other.weight": torch.ones(1)}, tmp_path / "other.pth")
    assert tools.main(["inspect", str(tmp_path / "other.pth")]) == 1
    assert "other.pth: not a training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("obj", [{}, {"state_dict": {}}, {"state_dict": {"w": torch.ones(1), "epoch": 3}},
                                 [torch.ones(1)]])
def test_an_empty_or_not_all_tensor_state_dict_is_refused_naming_the_source(obj):
    with pytest.raises(checkpoints.CheckpointError, match=r"^weights.pth: not a checkpoint: expected a state_dict"):
        checkpoints.unwrap_state_dict(obj, "weights.pth")
    assert checkpoints.unwrap_state_dict({"state_dict": {"module.w": torch.ones(1), "b": torch.zeros(1)}},
                                         "weights.pth").keys() == {"w", "b"}


def test_expected_config_keys_only_one_side_defines_are_not_compared(tmp_path):
    path = tmp_path / "run.pth"
    checkpoints.save({"config": {"scale": 2, "width": 0.125}, "state_dict": {"w": torch.ones(1)}}, path)
    assert checkpoints.load_checkpoint(path, expect_config={"scale": 2, "audio": "mel"})["config"]["width"] == 0.125
    with pytest.raises(checkpoints.CheckpointError, match=r"run.pth: checkpoint config does not match \(width: "
                                                          r"checkpoint 0.125 vs requested 0.25\)$"):
        checkpoints.load_checkpoint(path, expect_config={"width": 0.25, "audio": "mel"})


def test_config_differences_keep_the_order_asked_for_and_skip_keys_one_side_lacks():
    stored, wanted = {"width": 0.5, "scale": 2, "depth": "unet_18"}, {"scale": 4, "width": 1.0, "audio": "mel"}
    assert checkpoints.config_differences(stored, wanted, ("width", "depth", "scale")) == [("width", 0.5, 1.0),
                                                                                           ("scale", 2, 4)]
    assert checkpoints.config_differences(stored, wanted) == [("scale", 2, 4), ("width", 0.5, 1.0)]
    assert checkpoints.config_differences(stored, dict(stored, audio="mel")) == []


def test_our_own_checkpoint_keeps_its_config_takes_overrides_and_is_refused_for_another_model(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    config = asvfi.default_config(width=0.125, audio="none")  # a FLAVR-shaped network, but ours
    path = tmp_path / "ours.pth"
    checkpoints.save({"model": "asvfi", "config": config, "state_dict": asvfi.ASVFI(config).state_dict(),
                      "epoch": 4}, path)
    _, checkpoint = registry.load_model(path, model="asvfi")
    assert checkpoint["epoch"] == 4 and "source" not in checkpoint and checkpoint["config"] == config
    with pytest.raises(checkpoints.CheckpointError, match=r"ours.pth: holds a checkpoint of asvfi, not pervfi"):
        registry.load_model(path, model="pervfi")
    torch.save(asvfi.ASVFI(config).state_dict(), tmp_path / "bare.pth")  # the same weights as a FLAVR release
    flavr, checkpoint = registry.load_model(tmp_path / "bare.pth", {"fusion_init": "zero_out"}, model="asvfi")
    assert checkpoint["source"] == "FLAVR release" and flavr.config["fusion_init"] == "zero_out"
    config = pervfi.default_pervfi_config(width=0.125, steps_per_level=2, flow_estimator="dis")
    checkpoints.save({"model": "pervfi", "config": config, "state_dict": pervfi.build_pervfi(config).state_dict()},
                     tmp_path / "pervfi.pth")
    network, _ = registry.load_model(tmp_path / "pervfi.pth", {"heat": 0.5}, model="pervfi")
    assert config["heat"] != 0.5 and network.config["heat"] == 0.5
    torch.save(raft.RAFT().state_dict(), tmp_path / "raft-sintel.pth")  # the flow weights PerVFI looks for
    network, _ = registry.load_model(tmp_path / "pervfi.pth", {"flow_estimator": "raft_sintel"},
                                     weights_dir=tmp_path)
    assert network.flow_estimator_used == "raft_sintel" and network.flow_estimator_note == ""
