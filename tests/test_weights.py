"""weights.py: hashes, HTML pages, format checks, temp-file downloads, HTTPS only (a local fake downloader)."""
import dataclasses
import hashlib
import io
import zipfile

import pytest
import torch

import weights


class FakeResponse(io.BytesIO):
    headers = {}


@pytest.fixture()
def served(monkeypatch, tmp_path):
    """Serve `served[url] = bytes` instead of the network; the hub cache is a temp folder."""
    pages = {}
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(weights, "open_url", lambda url: FakeResponse(pages[url]))
    return pages


def register(monkeypatch, name="test_file", **fields):
    spec = weights.WeightSpec(**{"filename": "test.pth", "url": "https://example.org/test.pth",
                                 "about": "a test file", **fields})
    monkeypatch.setitem(weights.REGISTRY, name, spec)
    return spec


def torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_every_registry_entry_is_https_and_checked():
    for name, spec in weights.REGISTRY.items():
        assert spec.url.startswith("https://"), name
        assert spec.sha256 == "" or len(spec.sha256) == 64, name
        assert spec.sha256 or spec.hub_prefix or spec.keys or spec.torchscript or name == "vfips", name
        assert weights.verification(name) in ("sha256", "sha256-prefix", "unverified")
    assert weights.verification("lpips_alex") == "sha256"
    assert weights.verification("alexnet") == "sha256-prefix"
    assert weights.verification("pervfi_v00") == "unverified"


def test_download_with_the_pinned_hash_lands_in_the_cache(served, monkeypatch):
    payload = torch_bytes({"w": torch.ones(2)})
    spec = register(monkeypatch, sha256=hashlib.sha256(payload).hexdigest())
    served[spec.url] = payload
    path = weights.locate("test_file")
    assert path.read_bytes() == payload and path.parent == weights.cache_dir()
    assert [p.name for p in path.parent.iterdir()] == ["test.pth"]  # the temp folder is gone


def test_a_full_hash_covers_every_byte_of_a_file_larger_than_one_read(served, monkeypatch, tmp_path):
    """Files are hashed in 1 MiB blocks: a difference after the first block is still a different file."""
    good = bytes(range(256)) * (6 << 10)  # 1.5 MiB
    register(monkeypatch, sha256=hashlib.sha256(good).hexdigest())
    (tmp_path / "test.pth").write_bytes(good[:-1] + b"x")
    with pytest.raises(weights.WeightsUnavailable, match="has SHA-256"):
        weights.locate("test_file", weights_dir=tmp_path, allow_download=False)
    (tmp_path / "test.pth").write_bytes(good)
    assert weights.locate("test_file", weights_dir=tmp_path, allow_download=False) == tmp_path / "test.pth"


def test_a_hub_prefix_must_start_the_digest_not_merely_occur_in_it(served, monkeypatch, tmp_path):
    data = torch_bytes({"w": torch.ones(1)})
    register(monkeypatch, hub_prefix=hashlib.sha256(data).hexdigest()[8:16])
    (tmp_path / "test.pth").write_bytes(data)
    with pytest.raises(weights.WeightsUnavailable, match="expected"):
        weights.locate("test_file", weights_dir=tmp_path, allow_download=False)


def test_a_full_hash_is_the_verification_even_beside_a_hub_prefix(monkeypatch):
    register(monkeypatch, sha256="ab" * 32, hub_prefix="abababab")
    assert weights.verification("test_file") == "sha256"


def test_wrong_hash_is_rejected_naming_url_file_and_hash_and_nothing_is_cached(served, monkeypatch):
    spec = register(monkeypatch, sha256="ab" * 32)
    served[spec.url] = torch_bytes({"w": torch.ones(2)})
    with pytest.raises(weights.WeightsUnavailable, match=rf"(?s)example.org/test.pth.*expected {'ab' * 32}.*test.pth"):
        weights.locate("test_file")
    assert not (weights.cache_dir() / "test.pth").exists()


def test_html_error_page_is_rejected_and_not_cached(served, monkeypatch):
    spec = register(monkeypatch, keys=("w",))
    served[spec.url] = b"  <!DOCTYPE html><html><body>Quota exceeded</body></html>"
    with pytest.raises(weights.WeightsUnavailable, match=r"example.org/test.pth returned an HTML page instead of "
                                                         r"test.pth; nothing was written to .*hub"):
        weights.locate("test_file")
    assert not (weights.cache_dir() / "test.pth").exists()


def test_unpinned_download_is_checked_for_format(served, monkeypatch, capsys):
    spec = register(monkeypatch, keys=("w",))
    served[spec.url] = torch_bytes({"other": torch.ones(1)})
    with pytest.raises(weights.WeightsUnavailable, match="no w"):
        weights.locate("test_file")
    served[spec.url] = b"not a torch file at all"
    with pytest.raises(weights.WeightsUnavailable, match="not a test file"):
        weights.locate("test_file")
    served[spec.url] = torch_bytes({"w": torch.ones(1)})
    assert weights.locate("test_file").is_file()
    assert "unverified" in capsys.readouterr().out


def test_downloads_without_a_full_hash_are_format_checked_even_with_a_matching_hub_prefix(served, monkeypatch):
    """A hub prefix is only 8 hex digits: the file must still hold the keys it is expected to."""
    payload = torch_bytes({"other": torch.ones(1)})
    spec = register(monkeypatch, hub_prefix=hashlib.sha256(payload).hexdigest()[:8], keys=("w",))
    served[spec.url] = payload
    with pytest.raises(weights.WeightsUnavailable, match="no w"):
        weights.locate("test_file")
    assert not (weights.cache_dir() / "test.pth").exists()


@pytest.mark.parametrize("fields, payload, message", [
    ({"torchscript": True}, b"PK but not a zip archive", "not a TorchScript archive"),
    ({"keys": ("w",)}, torch_bytes(torch.ones(3)), "no w"),  # a tensor, not a dict of tensors
])
def test_a_download_of_another_kind_of_file_is_refused(served, monkeypatch, fields, payload, message):
    spec = register(monkeypatch, **fields)
    served[spec.url] = payload
    with pytest.raises(weights.WeightsUnavailable, match=message):
        weights.locate("test_file")
    assert not (weights.cache_dir() / "test.pth").exists()


def test_an_archive_download_that_is_not_a_zip_is_a_weights_error(served, monkeypatch):
    spec = register(monkeypatch, member="models/test.pth", keys=("w",))
    served[spec.url] = b"\x80\x02 a pickle, not the zip archive that holds the file"
    with pytest.raises(weights.WeightsUnavailable, match=r"could not download test.pth .*put the file at"):
        weights.locate("test_file")


def test_archive_member_is_extracted_and_checked(served, monkeypatch):
    member = torch_bytes({"module.fnet.conv1.weight": torch.ones(1), "module.update_block.mask.2.weight": torch.ones(1)})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("models/raft-sintel.pth", member)
    spec = dataclasses.replace(weights.REGISTRY["raft_sintel"], url="https://example.org/models.zip")
    monkeypatch.setitem(weights.REGISTRY, "raft_sintel", spec)
    served[spec.url] = archive.getvalue()
    assert weights.locate("raft_sintel").read_bytes() == member


def test_plain_http_is_refused(served, monkeypatch):
    register(monkeypatch, url="http://example.org/test.pth")
    with pytest.raises(weights.WeightsUnavailable, match="plain HTTP"):
        weights.locate("test_file")


def test_corrupt_cached_file_raises_a_project_error_naming_it(served, monkeypatch, tmp_path):
    register(monkeypatch)
    (tmp_path / "test.pth").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(weights.WeightsUnavailable, match="test.pth"):
        weights.load_state_dict("test_file", weights_dir=tmp_path, allow_download=False)
    (tmp_path / "test.pth").write_bytes(b"<html>cached error page</html>")
    with pytest.raises(weights.WeightsUnavailable, match="HTML page"):
        weights.locate("test_file", weights_dir=tmp_path)


def test_a_folder_or_an_unreadable_file_in_weights_dir_is_named_as_such(served, monkeypatch, tmp_path):
    """Not 'not found, put it at <the folder>', nor a PermissionError traceback from the hash check."""
    register(monkeypatch)
    (tmp_path / "test.pth").mkdir()
    with pytest.raises(weights.WeightsUnavailable, match=r"a test file: .*test.pth: a folder, not a checkpoint file"):
        weights.locate("test_file", weights_dir=tmp_path, allow_download=False)
    (tmp_path / "test.pth").rmdir()
    (tmp_path / "test.pth").write_bytes(torch_bytes({"w": torch.ones(1)}))
    monkeypatch.setattr(weights.os, "access", lambda *args, **kwargs: False)  # chmod 000 does not stop root
    with pytest.raises(weights.WeightsUnavailable, match=r"test.pth: no permission to read the file"):
        weights.locate("test_file", weights_dir=tmp_path, allow_download=False)


def test_cached_file_with_a_wrong_hash_is_rejected(served, monkeypatch, tmp_path):
    register(monkeypatch, hub_prefix="00000000")
    (tmp_path / "test.pth").write_bytes(torch_bytes({"w": torch.ones(1)}))
    with pytest.raises(weights.WeightsUnavailable, match="expected 00000000"):
        weights.locate("test_file", weights_dir=tmp_path)


def test_offline_environment_never_downloads(served, monkeypatch):
    register(monkeypatch)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(weights.WeightsUnavailable, match="not found"):
        weights.locate("test_file")


def test_weights_dir_comes_before_the_cache_and_a_hub_prefix_checks_only_the_start(served, monkeypatch, tmp_path):
    mine, cached = torch_bytes({"w": torch.ones(1)}), torch_bytes({"w": torch.zeros(1)})
    register(monkeypatch, hub_prefix=hashlib.sha256(mine).hexdigest()[:8])
    assert not weights.on_disk("test_file", tmp_path)
    (tmp_path / "test.pth").write_bytes(mine)
    assert weights.on_disk("test_file", tmp_path)  # not yet in the cache
    weights.cache_dir().mkdir(parents=True)
    (weights.cache_dir() / "test.pth").write_bytes(cached)
    assert weights.locate("test_file", weights_dir=tmp_path, allow_download=False) == tmp_path / "test.pth"
    with pytest.raises(weights.WeightsUnavailable, match="expected"):
        weights.locate("test_file", allow_download=False)  # the cached file has another hash


def test_allow_download_false_never_downloads_and_offline_0_means_online(served, monkeypatch, tmp_path):
    spec = register(monkeypatch, keys=("w",))
    served[spec.url] = torch_bytes({"w": torch.ones(1)})
    with pytest.raises(weights.WeightsUnavailable, match=rf"not found; download {spec.url} and put it at "
                                                         rf".*test.pth \(--weights-dir\) or .*hub"):
        weights.locate("test_file", weights_dir=tmp_path, allow_download=False)
    assert not (weights.cache_dir() / "test.pth").exists()
    monkeypatch.setenv(weights.OFFLINE_ENV, "0")
    path = weights.locate("test_file", weights_dir=tmp_path)
    assert path == weights.cache_dir() / "test.pth" and path.read_bytes() == served[spec.url]
    assert not (tmp_path / "test.pth").exists()  # downloads go to the cache, never into --weights-dir


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_any_offline_value_but_0_or_empty_means_offline(served, monkeypatch, value):
    spec = register(monkeypatch, keys=("w",))
    served[spec.url] = torch_bytes({"w": torch.ones(1)})
    monkeypatch.setenv(weights.OFFLINE_ENV, value)
    with pytest.raises(weights.WeightsUnavailable, match="not found"):
        weights.locate("test_file")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown weights 'nope'; known: alexnet, lpips_alex, "):
        weights.locate("nope", allow_download=False)
