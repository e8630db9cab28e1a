"""The shortcut audit (ffd.trust.audit, python -m ffd.audit): a property of the files alone that tells real
from fake is flagged, and only that one; a clean set passes; bad files and a bad root are handled."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from PIL import Image

from ffd.audit import audit
from ffd.data.datamodule import FacesDataModule
from ffd.data.index import index_dataset
from ffd.errors import DatasetLayoutError
from ffd.hints import CONF
from ffd.trust.audit import audit_index, audit_table, estimate_quality, read_header, warn_at_training_start

SIZE, PER_CLASS = 32, 20
CLEAN = {"format": "JPEG", "quality": 90, "subsampling": 2, "size": SIZE, "exif": False}


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0110] = "ffd test camera"  # Model
    return exif.tobytes()


def write_image(
    path: Path, rng: np.random.Generator, format: str, quality: int, subsampling: int, size: int, exif: bool
) -> None:
    """A random smooth-ish image (the same content distribution for both classes) written as asked."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
    options = {"exif": _exif()} if exif else {}
    if format == "JPEG":
        options |= {"quality": quality, "subsampling": subsampling}
    image.save(path, format, **options)


def make_set(root: Path, real: dict | None = None, fake: dict | None = None, seed: int = 0) -> Path:
    """root/train/{real,fake}/ with PER_CLASS files each, CLEAN but for the overrides."""
    rng = np.random.default_rng(seed)
    for name, override in (("real", real or {}), ("fake", fake or {})):
        spec = CLEAN | override
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for number in range(PER_CLASS):
            suffix = ".png" if spec["format"] == "PNG" else ".jpg"
            write_image(folder / f"{number:03d}{suffix}", rng, **spec)
    return root


def flagged(root: Path) -> set[str]:
    result = audit_index(index_dataset(root), ("train",), None, 0, progress=False)
    return {name for name, row in result["splits"]["train"]["properties"].items() if row["shortcut"]}


@pytest.mark.parametrize(
    ("real", "fake", "expected"),
    [
        ({"format": "PNG"}, {}, {"format"}),
        ({"quality": 95}, {"quality": 75}, {"jpeg_quality"}),
        ({"subsampling": 0}, {"subsampling": 2}, {"subsampling"}),
        ({"exif": True}, {}, {"exif"}),
    ],
    ids=["png-vs-jpeg", "q95-vs-q75", "444-vs-420", "exif-on-reals"],
)
def test_a_planted_shortcut_is_flagged_and_no_other_encoding_property(
    tmp_path: Path, real: dict, fake: dict, expected: set[str]
) -> None:
    # bytes per pixel follows the codec and its quality, which is what it is there to catch too
    assert flagged(make_set(tmp_path, real, fake)) - {"bytes_per_pixel"} == expected


def test_different_sizes_are_flagged(tmp_path: Path) -> None:
    assert {"width", "height"} <= flagged(make_set(tmp_path, {"size": 48}, {"size": 32}))


def test_a_clean_set_gives_no_warning(tmp_path: Path) -> None:
    result = audit_index(index_dataset(make_set(tmp_path)), ("train",), None, 0, progress=False)
    assert result["warnings"] == []
    rows = result["splits"]["train"]["properties"]
    assert rows["format"]["auroc"] == pytest.approx(0.5) and rows["bytes_per_pixel"]["auroc"] < 0.7


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_the_quality_estimate_recovers_the_quality_pillow_wrote(tmp_path: Path, quality: int) -> None:
    path = tmp_path / "a.jpg"
    write_image(path, np.random.default_rng(quality), "JPEG", quality, 2, SIZE, False)
    assert abs(read_header(str(path))["jpeg_quality"] - quality) <= 2
    with Image.open(path) as image:
        assert abs(estimate_quality(image.quantization[0]) - quality) <= 2


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path: Path) -> None:
    root = make_set(tmp_path)
    cut = root / "train" / "fake" / "cut.jpg"
    cut.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)  # JPEG magic bytes, then no header
    (root / "train" / "real" / "empty.jpg").write_bytes(b"")
    result = audit_index(index_dataset(root), ("train",), None, 0, progress=False)
    listed = {Path(row["path"]).name: row["reason"] for row in result["unreadable"]}
    assert result["unreadable_count"] == 2 and set(listed) == {"cut.jpg", "empty.jpg"}
    assert "header unreadable" in listed["cut.jpg"]
    assert result["splits"]["train"]["files"] == {"real": PER_CLASS, "fake": PER_CLASS}
    assert "2 unreadable file(s)" in str(audit_table(result).caption)


def test_max_images_per_class_samples_that_many(tmp_path: Path) -> None:
    result = audit_index(index_dataset(make_set(tmp_path)), ("train",), 7, 0, progress=False)
    assert result["splits"]["train"]["files"] == {"real": 7, "fake": 7}


def _config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("audit", overrides=[f"paths.output_dir={tmp_path / 'out'}", *overrides])
    (tmp_path / "out").mkdir()
    return cfg


def test_the_entry_point_writes_audit_json_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_set(tmp_path / "data", {"format": "PNG"})
    cfg = _config(tmp_path, f"data.root={root}", "audit.splits=[train]")
    with caplog.at_level(logging.WARNING):
        audit(cfg)
    written = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert written["splits"]["train"]["properties"]["format"]["shortcut"] is True
    assert "file format alone tells real from fake" in caplog.text and "re-encode both classes" in caplog.text


def test_a_missing_data_root_is_one_clear_error_before_any_work(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(InstantiationException) as raised:  # the CLI shows the cause alone (ffd.runtime)
        audit(cfg)
    assert isinstance(raised.value.__cause__, DatasetLayoutError)
    assert "is not an existing folder" in str(raised.value.__cause__)
    assert not (tmp_path / "out" / "audit.json").exists()


@pytest.mark.parametrize(("real", "warned"), [({"quality": 60}, True), ({}, False)])
def test_the_training_start_check_warns_on_a_planted_set_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, real: dict, warned: bool
) -> None:
    datamodule = FacesDataModule(str(make_set(tmp_path, real)), image_size=SIZE)
    with caplog.at_level(logging.WARNING, logger="ffd.trust.audit"):
        warnings = warn_at_training_start(datamodule)
    assert bool(warnings) is warned and ("JPEG quality alone" in caplog.text) is warned
    assert "audit_at_start=false" in caplog.text or not warned


def test_png_headers_give_no_jpeg_properties(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (SIZE, 16)).save(path)
    facts = read_header(str(path))
    assert facts["format"] == "PNG" and facts["jpeg_quality"] is None and facts["subsampling"] is None
    assert (facts["width"], facts["height"]) == (SIZE, 16)
    assert facts["bytes_per_pixel"] == pytest.approx(path.stat().st_size / (SIZE * 16))
