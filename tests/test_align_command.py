"""ffd.align: labelled photo folders -> the Kaggle layout of aligned face crops that ffd's data index reads.

The photos are canvases holding the astronaut (real/) or Grace Hopper (fake/), each face about a fifth of
the canvas, which MediaPipe finds reliably (as in test_predict_faces).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from matplotlib import cbook
from rich.console import Console
from skimage import data as skdata
from torchvision.io import write_jpeg, write_png
from torchvision.transforms.v2 import functional as TF

from cli import run_dirs, run_ffd
from ffd import LABELS
from ffd.data.index import index_dataset
from ffd.faces.align import FaceFinder, apply, warp
from ffd.faces.dataset import (
    COLUMNS,
    OUTSIDE_CLASSES,
    OUTSIDE_SPLITS,
    AlignError,
    Photo,
    assign_splits,
    find_photos,
    run,
)
from ffd.hints import CONF
from ffd.images import read_rgb

SPLIT = "split=[0.34,0.33,0.33]"  # one photo per class and split, from three per class


def canvas(face: torch.Tensor, left: int) -> torch.Tensor:
    """A 640x400 grey canvas with ``face`` (3, 380, W) at ``left``."""
    image = torch.full((3, 400, 640), 90, dtype=torch.uint8)
    image[:, 10:390, left : left + face.shape[-1]] = face
    return image


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    """The astronaut's head (380 x 380) and Grace Hopper (380 x 285)."""
    astronaut = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[:, 0:300, 100:400]
    hopper = read_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return TF.resize(astronaut.contiguous(), [380, 380]), TF.resize(hopper, [380, 285])


def write_photos(
    root: Path, faces: tuple[torch.Tensor, torch.Tensor], real: list[str], fake: list[str]
) -> Path:
    """The astronaut in each of ``real`` (JPEG), Grace Hopper in each of ``fake`` (PNG), at three places."""
    for names, face, write in ((real, faces[0], write_jpeg), (fake, faces[1], write_png)):
        for name, left in zip(names, (0, 130, 255), strict=True):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            write(canvas(face, left), str(root / name))
    return root


@pytest.fixture(scope="module")
def presplit(tmp_path_factory: pytest.TempPathFactory, faces) -> Path:
    """train/, valid/ and test/ with a real and a fake photo each (one in a sub-folder), plus a .jpg that
    is text, a faceless PNG and a photo outside any class folder."""
    root = write_photos(
        tmp_path_factory.mktemp("presplit"),
        faces,
        ["train/real/a.jpg", "valid/real/b.jpg", "test/real/trip/c.jpg"],
        ["train/fake/a.png", "valid/fake/b.png", "test/fake/c.png"],
    )
    (root / "train" / "real" / "notes.jpg").write_text("not a photo")
    write_png(torch.full((3, 400, 640), 90, dtype=torch.uint8), str(root / "test" / "fake" / "blank.png"))
    (root / "holiday").mkdir()
    write_jpeg(canvas(faces[0], 100), str(root / "holiday" / "d.jpg"))
    return root


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("align", overrides=["models.download=false", *overrides])


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None)


def manifest(output: Path) -> list[dict[str, str]]:
    with (output / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_aligns_each_face_into_the_kaggle_layout_and_resumes(presplit: Path, tmp_path: Path) -> None:
    output = tmp_path / "crops"
    cfg = config(f"input={presplit}", f"output={output}")
    first = run(cfg, console=quiet())

    rows = manifest(output)
    assert len(rows) == 6 and list(rows[0]) == list(COLUMNS)
    for row in rows:
        crop = read_rgb(output / row["crop"])
        assert crop.shape == (3, 256, 256)
        split, label = Path(row["source"]).relative_to(presplit).parts[:2]  # the input's folders, kept
        assert (row["split"], row["label"]) == (split, label)
        assert row["crop"].startswith(f"{split}/{label}/{split}_{label}_") and row["crop"].endswith("_f0.jpg")
        # The matrix is the crop's: the source's face box lands inside it, and warping the source by it
        # gives the crop back (up to JPEG's loss).
        matrix = np.array([float(row[f"m{i}{j}"]) for i in range(2) for j in range(3)]).reshape(2, 3)
        x0, y0, x1, y1 = (float(row[key]) for key in ("x0", "y0", "x1", "y1"))
        corners = apply(matrix, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        assert corners.min() > 0 and corners.max() < 256
        again = warp(read_rgb(row["source"]), matrix, 256)
        assert (again.float() - crop.float()).abs().mean() < 3
    assert (output / "test" / "real" / "test_real_trip_c_f0.jpg").is_file()  # the path, flattened

    bad = dict(line.split("\t") for line in (output / "bad_files.txt").read_text().splitlines()[1:])
    assert bad == {
        str(presplit / "train" / "real" / "notes.jpg"): "not an image (unknown file signature)",
        str(presplit / "test" / "fake" / "blank.png"): "no face found",
        str(presplit / "holiday" / "d.jpg"): OUTSIDE_CLASSES,
    }
    assert sum(counts["faces"] for counts in first.counts.values()) == 6

    index = index_dataset(output)
    index.require()  # both classes in train, val and test
    assert sum(n for split in index.counts().values() for n in split.values()) == 6

    written = {path: path.stat().st_mtime_ns for path in output.rglob("*.jpg")}
    before = (output / "manifest.csv").read_text()
    second = run(cfg, console=quiet())
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*.jpg")} == written
    assert (output / "manifest.csv").read_text() == before
    assert totals(second) == (0, 6)

    deleted = output / "test" / "real" / "test_real_trip_c_f0.jpg"
    deleted.unlink()
    assert totals(run(cfg, console=quiet())) == (1, 5)  # that photo alone aligned again
    assert deleted.is_file() and (output / "manifest.csv").read_text() == before


def totals(summary) -> tuple[int, int]:
    """(crops written, crops found already there) over every split and class."""
    return tuple(sum(counts[what] for counts in summary.counts.values()) for what in ("faces", "existing"))


def test_an_interrupted_run_keeps_what_it_did_and_resumes(
    presplit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "crops"
    cfg = config(f"input={presplit}", f"output={output}")
    find, calls = FaceFinder.find, []

    def stopped_on_the_third_photo(self, image):  # after test/fake's blank.png and c.png
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return find(self, image)

    monkeypatch.setattr(FaceFinder, "find", stopped_on_the_third_photo)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, console=quiet())
    (row,) = manifest(output)
    assert row["crop"] == "test/fake/test_fake_c_f0.jpg" and (output / row["crop"]).is_file()
    assert "blank.png\tno face found" in (output / "bad_files.txt").read_text()
    monkeypatch.setattr(FaceFinder, "find", find)
    assert totals(run(cfg, console=quiet())) == (5, 1)


def test_split_by_photo_within_each_class_seeded_and_kept_from_earlier_runs() -> None:
    photos = [
        Photo(Path(f"/p/{name}{i}.jpg"), label, None, "") for i in range(10) for label, name in LABELS.items()
    ]
    splits = assign_splits(photos, [0.8, 0.1, 0.1], 0, {})
    for label in LABELS:
        shares = Counter(splits[photo.path] for photo in photos if photo.label == label)
        assert shares == {"train": 8, "val": 1, "test": 1}
    assert assign_splits(photos, [0.8, 0.1, 0.1], 0, {}) == splits
    assert assign_splits(photos, [0.8, 0.1, 0.1], 1, {}) != splits
    moved = next(path for path, split in splits.items() if split == "train")
    assert assign_splits(photos, [0.8, 0.1, 0.1], 0, {str(moved): "test"})[moved] == "test"


def test_a_presplit_input_keeps_its_splits(tmp_path: Path) -> None:
    for name in ("train/real/a.jpg", "Valid/fake/b.jpg", "x/test/real_faces/c.jpg", "real/d.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\xff\xd8\xff")  # a JPEG's signature: enough to be listed
    found, skipped = find_photos(tmp_path)
    assert sorted((p.path.name, p.label, p.split, p.stem) for p in found) == [
        ("a.jpg", 0, "train", "train_real_a"),
        ("b.jpg", 1, "val", "Valid_fake_b"),
        ("c.jpg", 0, "test", "x_test_real_faces_c"),
    ]
    assert skipped == [(str(tmp_path / "real" / "d.jpg"), OUTSIDE_SPLITS)]
    with pytest.raises(AlignError, match="already split"):
        run(config(f"input={tmp_path}", f"output={tmp_path.parent / 'out'}", SPLIT))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["input=missing"], "input=missing is not an existing folder"),
        (["output=INPUT/crops"], "is inside input="),
        (["output=INPUT"], "is inside input="),
        (["split=[0.5,0.5]"], "three non-negative shares"),
        (["split=[0.9,0.2,-0.1]"], "three non-negative shares"),
        (["size=8"], "size=8 must be a whole number, at least 32"),
    ],
)
def test_refuses_bad_options_before_any_work(tmp_path: Path, overrides: list[str], message: str) -> None:
    (tmp_path / "in" / "real").mkdir(parents=True)
    defaults = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out")}
    given = dict(o.replace("INPUT", str(tmp_path / "in")).split("=", 1) for o in overrides)
    cfg = config(*(f"{key}={value}" for key, value in {**defaults, **given}.items()))
    with pytest.raises(AlignError, match=message):
        run(cfg, console=quiet())
    assert not (tmp_path / "out").exists()


def test_command_line_splits_class_folders_by_photo(faces, tmp_path: Path) -> None:
    photos = write_photos(
        tmp_path / "photos",
        faces,
        ["real/a.jpg", "real/b.jpg", "Real/c.jpg"],
        ["fake/a.png", "fake/b.png", "fake/c.png"],
    )
    output = tmp_path / "crops"
    result = run_ffd(
        "ffd.align", f"input={photos}", f"output={output}", SPLIT, "models.download=false", root=tmp_path
    )
    index_dataset(output).require()  # one photo per class and split
    assert len(list(output.glob("*/*/*.jpg"))) == 6
    assert "ffd.align" in result.stdout
    (folder,) = run_dirs(tmp_path, "align")
    assert "ffd.align: input" in (folder / "align.log").read_text()
