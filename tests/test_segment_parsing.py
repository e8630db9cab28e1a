"""BiSeNet parsing without the real weights: a freshly built facexlib BiSeNet, saved as a user would place it.

Random weights give meaningless labels, so these tests check the plumbing (no download, hash rules, shapes,
the 19 classes), not the parsing quality.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from facexlib.parsing.bisenet import BiSeNet
from hydra import compose, initialize_config_dir
from PIL import Image
from skimage import data as skdata

from ffd import assets
from ffd.images import read_rgb
from ffd.segmentation import draw
from ffd.segmentation.parsing import PARSING_CLASSES, FaceParser
from ffd.segmentation.pipeline import fit, open_backend, run

CONF = Path(__file__).resolve().parents[1] / "conf"


def refuse_download(url: str, *args: object, **kwargs: object) -> Path:
    raise AssertionError(f"a download was attempted: {url}")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model folder holding parsing_bisenet.pth from a fresh BiSeNet, and that file's sha256."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    torch.save(BiSeNet(num_class=len(PARSING_CLASSES)).state_dict(), folder / "parsing_bisenet.pth")
    return folder, hashlib.sha256((folder / "parsing_bisenet.pth").read_bytes()).hexdigest()


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "segment", overrides=[f"output={tmp_path / 'out'}", "backend=parsing", "device=cpu", *overrides]
        )


def test_parser_gives_a_19_class_map_the_size_of_the_input(model_folder, monkeypatch) -> None:
    folder, sha256 = model_folder
    monkeypatch.setattr(assets, "download", refuse_download)
    weights = assets.ensure("parsing_bisenet.pth", cache_dir=folder, sha256=sha256)
    parser = FaceParser(weights, half=True, size=128)  # 128 px keeps it quick; the config default is 512
    assert parser.dtype == torch.float32  # half precision is for GPUs only
    image = torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8)
    labels = parser(image)
    assert labels.shape == (90, 70) and labels.dtype == torch.uint8
    assert int(labels.max()) < len(PARSING_CLASSES) == 19


def test_parsing_run_writes_the_class_shares(model_folder, monkeypatch, tmp_path: Path) -> None:
    folder, sha256 = model_folder
    monkeypatch.setattr(assets, "download", refuse_download)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()[:300, 100:350]).save(photo)
    cfg = config(
        tmp_path, f"input={photo}", f"models.cache_dir={folder}", f"models.parsing_bisenet.sha256={sha256}"
    )
    summary = run(cfg)
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert record["faces"] is None  # BiSeNet labels pixels; it does not count faces
    assert list(record["class_share"]) == list(PARSING_CLASSES)
    assert sum(record["class_share"].values()) == pytest.approx(1.0, abs=1e-4)
    assert (record["width"], record["height"]) == (250, 300)
    assert summary.totals()["faces found"] is None and summary.processed == 1
    # It finds no faces: no image is a no-face image (this said 0), none reaches a face limit.
    assert summary.totals()["no-face images"] is None
    assert summary.totals()["images at landmarks.num_faces"] is None


@pytest.mark.parametrize("max_side", [4096, 64])
def test_parsing_saves_the_label_map_the_overlay_shows(
    model_folder, monkeypatch, tmp_path: Path, max_side: int
) -> None:
    """The map at the image's size, also when the model saw a copy of half the size (each working pixel's
    label then covers 2 x 2 pixels: nearest, never blended)."""
    folder, sha256 = model_folder
    monkeypatch.setattr(assets, "download", refuse_download)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()[:128, 180:276]).save(photo)
    cfg = config(
        tmp_path,
        f"input={photo}",
        f"models.cache_dir={folder}",
        f"models.parsing_bisenet.sha256={sha256}",
        "parsing.size=64",
        f"max_side={max_side}",
    )
    run(cfg)
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert record["labels"] == {
        "file": "astronaut_labels.png",
        "classes": {str(index): name for index, name in enumerate(PARSING_CLASSES)},
    }
    saved = Image.open(tmp_path / "out" / "astronaut_labels.png")
    assert saved.mode == "L" and saved.size == (96, 128)
    labels = torch.from_numpy(np.array(saved))
    working = fit(read_rgb(photo), max_side)
    expected = FaceParser(folder / "parsing_bisenet.pth", size=64)(working)
    factor = 128 // working.shape[1]
    assert torch.equal(labels, expected.repeat_interleave(factor, 0).repeat_interleave(factor, 1))
    overlay = read_rgb(tmp_path / "out" / "astronaut.png")[:, : working.shape[1], : working.shape[2]]
    assert torch.equal(overlay, draw.overlay_labels(working, expected, draw.palette(len(PARSING_CLASSES))))


def test_wrong_hash_weights_are_refused_and_never_loaded(model_folder, monkeypatch, tmp_path: Path) -> None:
    folder, _ = model_folder  # a real state dict, but not the official file: its hash does not match

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called on a refused file")

    monkeypatch.setattr(torch, "load", no_load)
    monkeypatch.setattr(assets, "download", refuse_download)
    with (
        pytest.raises(assets.AssetError, match="refused") as error,
        open_backend(config(tmp_path, "input=unused", f"models.cache_dir={folder}")),
    ):
        pass
    assert "models.parsing_bisenet.sha256=" in str(error.value)


def test_missing_weights_offline_stop_with_address_folder_and_hint(monkeypatch, tmp_path: Path) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> Path:
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(assets, "download", offline)
    cache = tmp_path / "empty-cache"
    with (
        pytest.raises(assets.AssetError) as error,
        open_backend(config(tmp_path, "input=unused", f"models.cache_dir={cache}")),
    ):
        pass
    message = str(error.value)
    assert assets.ASSETS["parsing_bisenet.pth"].url in message
    assert str(cache) in message
    assert "backend=regions" in message
    assert not any(cache.glob("*"))  # nothing half-written left behind


def test_a_run_whose_weights_cannot_be_had_leaves_no_output_folder(monkeypatch, tmp_path: Path) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> Path:
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(assets, "download", offline)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    with pytest.raises(assets.AssetError):
        run(config(tmp_path, f"input={photo}", f"models.cache_dir={tmp_path / 'empty-cache'}"))
    assert not (tmp_path / "out").exists()


def test_weights_of_another_network_stop_with_one_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(assets.AssetError, match="not the weights of facexlib's BiSeNet") as error:
        FaceParser(other)
    assert str(other) in str(error.value) and "parsing_bisenet.pth" in str(error.value)


@pytest.mark.parametrize("content", ["empty", "pickled module"])
def test_a_file_that_does_not_load_says_why_in_one_line(tmp_path: Path, content: str) -> None:
    """A zero-byte file once crashed the message itself; a pickled model must not be met with PyTorch's
    advice to load it with weights_only=False."""
    weights = tmp_path / "parsing_bisenet.pth"
    if content == "empty":
        weights.write_bytes(b"")
    else:
        torch.save(torch.nn.Linear(3, 2), weights)
    with pytest.raises(assets.AssetError) as error:
        FaceParser(weights)
    message = str(error.value)
    assert str(weights) in message and "\x1b" not in message and "weights_only" not in message
    assert ("empty or truncated" if content == "empty" else "never runs pickled code") in message
