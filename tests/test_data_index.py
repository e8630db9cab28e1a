"""Layout discovery, Kaggle CSVs (inverted numeric label), layout errors and index-time bad files."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchvision.io import encode_jpeg

import ffd
from ffd.data.index import DatasetIndex, index_dataset
from ffd.errors import DatasetLayoutError

KAGGLE_NEST = "real_vs_fake/real-vs-fake"
CONF = Path(ffd.__file__).resolve().parent / "conf"


def write_images(folder: Path, n: int, size: int = 8) -> list[Path]:
    """n tiny JPEGs in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = torch.full((3, size, size), 40 * i % 256, dtype=torch.uint8)
        path = folder / f"{i:03d}.jpg"
        path.write_bytes(encode_jpeg(image).numpy().tobytes())
        paths.append(path)
    return paths


def write_tree(base: Path, splits=("train", "valid", "test"), classes=("real", "fake"), n: int = 2) -> None:
    for split in splits:
        for name in classes:
            write_images(base / split / name, n)


def write_kaggle_csvs(root: Path, base: Path) -> None:
    """The Kaggle CSVs: an unnamed index, original_path, id, label (1 = REAL there), label_str, path."""
    for split in ("train", "valid", "test"):
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "original_path", "id", "label", "label_str", "path"])
            for i, path in enumerate(sorted((base / split).rglob("*.jpg"))):
                label_str = path.parent.name
                writer.writerow(
                    [i, "x", i, int(label_str == "real"), label_str, path.relative_to(base).as_posix()]
                )


def test_finds_the_nested_kaggle_layout(tmp_path: Path) -> None:
    write_tree(tmp_path / KAGGLE_NEST, n=3)
    index = index_dataset(tmp_path)
    assert index.root == tmp_path / KAGGLE_NEST
    assert index.source == "folders"
    assert index.counts() == {split: {0: 3, 1: 3} for split in ("train", "val", "test")}
    for split, rows in index.samples.items():
        for path, label in rows:
            assert Path(path).is_absolute()
            assert Path(path).parent.name == ("real", "fake")[label]
            assert Path(path).parent.parent.name == {"train": "train", "val": "valid", "test": "test"}[split]


def test_real_faces_fake_faces_and_val_folder(tmp_path: Path) -> None:
    write_tree(tmp_path, splits=("train", "val", "test"), classes=("real_faces", "fake_faces"))
    index = index_dataset(tmp_path)
    assert index.root == tmp_path
    assert index.counts()["val"] == {0: 2, 1: 2}
    assert all(
        (Path(p).parent.name == "fake_faces") == bool(y) for rows in index.samples.values() for p, y in rows
    )


def test_configurable_names(tmp_path: Path) -> None:
    write_tree(tmp_path, splits=("training", "dev", "eval"), classes=("genuine", "gan"))
    index = index_dataset(
        tmp_path,
        split_dirs={"train": ["training"], "val": ["dev"], "test": ["eval"]},
        class_dirs={0: ["genuine"], 1: ["gan"]},
    )
    assert index.counts()["test"] == {0: 2, 1: 2}
    assert all(("gan" in Path(p).parent.name) == bool(y) for rows in index.samples.values() for p, y in rows)


def test_val_and_valid_together_is_ambiguous(tmp_path: Path) -> None:
    write_tree(tmp_path, splits=("train", "val", "valid", "test"))
    with pytest.raises(DatasetLayoutError, match=r"more than one folder for split 'val' \(val, valid\)"):
        index_dataset(tmp_path)


def test_two_dataset_roots_at_the_same_depth_is_ambiguous(tmp_path: Path) -> None:
    write_tree(tmp_path / "a")
    write_tree(tmp_path / "b")
    with pytest.raises(DatasetLayoutError, match="several folders") as error:
        index_dataset(tmp_path)
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)


def test_kaggle_csvs_use_label_str_not_the_inverted_numeric_label(tmp_path: Path) -> None:
    base = tmp_path / KAGGLE_NEST
    write_tree(base, n=3)
    write_kaggle_csvs(tmp_path, base)
    index = index_dataset(tmp_path)
    assert index.source == "csv"
    assert index.counts() == {split: {0: 3, 1: 3} for split in ("train", "val", "test")}
    # The CSV says label 1 for every real file; ffd must say 0 (real).
    assert all(
        label == (Path(path).parent.name == "fake") for rows in index.samples.values() for path, label in rows
    )


def test_csv_label_str_decides_the_label(tmp_path: Path) -> None:
    """A file listed under label_str 'fake' is fake, wherever it lies: the CSV, not the folder, is read."""
    base = tmp_path / KAGGLE_NEST
    write_tree(base)
    write_kaggle_csvs(tmp_path, base)
    with open(tmp_path / "test.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][4] = "fake"  # first row is test/fake/000.jpg or test/real/000.jpg; force "fake"
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    index = index_dataset(tmp_path, use_csv=True)
    assert dict(index.samples["test"])[str(base / rows[1][5])] == 1
    assert index_dataset(tmp_path, use_csv=False).source == "folders"


def test_a_csv_cut_short_lists_its_last_row_and_keeps_the_rest(tmp_path: Path) -> None:
    """A download cut mid-row leaves a row without label_str (or path): listed as skipped, not a crash."""
    base = tmp_path / KAGGLE_NEST
    write_tree(base, n=3)
    write_kaggle_csvs(tmp_path, base)
    test_csv = tmp_path / "test.csv"
    test_csv.write_bytes(test_csv.read_bytes().rstrip(b"\r\n").rsplit(b",", 1)[0] + b"\n")  # no path
    with test_csv.open("a") as handle:
        handle.write("7,x,7,1\n")  # no label_str, no path
    index = index_dataset(tmp_path)
    assert index.source == "csv"
    assert sum(index.counts()["test"].values()) == 5
    assert sorted(index.skipped) == [
        (f"{test_csv}:7", "incomplete row (no path or no label_str)"),
        (f"{test_csv}:8", "incomplete row (no path or no label_str)"),
    ]


def test_auto_scans_folders_when_csv_paths_do_not_resolve(tmp_path: Path) -> None:
    base = tmp_path / KAGGLE_NEST
    write_tree(base)
    write_kaggle_csvs(tmp_path, base)
    (tmp_path / "train.csv").write_text("path,label_str\nnowhere/x.jpg,real\n")
    assert index_dataset(tmp_path).source == "folders"


def test_use_csv_true_without_csvs_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path)
    with pytest.raises(DatasetLayoutError, match="use_csv=true"):
        index_dataset(tmp_path, use_csv=True)


def test_empty_split_and_class_error_lists_what_was_found(tmp_path: Path) -> None:
    write_tree(tmp_path, splits=("train",), n=2)
    write_images(tmp_path / "valid" / "real", 3)
    (tmp_path / "valid" / "fake").mkdir()
    index = index_dataset(tmp_path)
    index.require(["train"])  # train alone is fine
    with pytest.raises(DatasetLayoutError) as error:
        index.require()
    message = str(error.value)
    assert "split 'val' has no fake images" in message
    assert "split 'test' is empty" in message
    assert "train: 2 real, 2 fake" in message and "val: 3 real, 0 fake" in message
    assert "Expected layout" in message


@pytest.mark.parametrize("root", [None, "does/not/exist"])
def test_missing_root_says_how_to_set_it(root: str | None) -> None:
    with pytest.raises(DatasetLayoutError, match=r"data\.root.*data=synthetic"):
        index_dataset(root)


def test_no_split_folders_is_an_error(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 2)
    with pytest.raises(DatasetLayoutError, match="no split folders found"):
        index_dataset(tmp_path)


@pytest.mark.parametrize("classes", [("real", "fake"), ("fake_faces",)])
def test_class_folders_without_splits_are_the_test_split(tmp_path: Path, classes: tuple[str, ...]) -> None:
    """A set to evaluate a detector on, e.g. another generator's faces: ffd.eval reads it; training asks
    for its splits."""
    for name in classes:
        write_images(tmp_path / name, 3)
    index = index_dataset(tmp_path)
    assert index.root == tmp_path and sum(index.counts()["test"].values()) == 3 * len(classes)
    assert index.source == "class folders, read as the test split"
    for path, label in index.samples["test"]:
        assert Path(path).parent.name.startswith(("real", "fake")[label])
    index.require(["test"], one_class_will_do=["test"])
    with pytest.raises(DatasetLayoutError, match=r"split 'train' is empty.*Class folders directly in ROOT"):
        index.require(["train", "val"])


def test_bad_files_are_skipped_and_listed_at_index_time(tmp_path: Path) -> None:
    write_tree(tmp_path)
    folder = tmp_path / "train" / "real"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image at all")
    (folder / "notes.txt").write_text("hello")
    (folder / "truncated.jpg").write_bytes((folder / "000.jpg").read_bytes()[:40])  # magic bytes intact
    index = index_dataset(tmp_path)
    reasons = {Path(path).name: reason for path, reason in index.skipped}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "text.jpg": "not an image (unknown file signature)",
        "notes.txt": "not an image file (suffix '.txt')",
    }
    assert index.skipped_per_split == {"train": 3, "val": 0, "test": 0}
    assert index.counts()["train"] == {0: 3, 1: 2}  # the truncated file is only found when decoded


def test_symlinked_folders_inside_a_class_are_followed_once(tmp_path: Path) -> None:
    write_tree(tmp_path / "data")
    elsewhere = tmp_path / "more_real"
    write_images(elsewhere, 3)
    real = tmp_path / "data" / "train" / "real"
    (real / "linked").symlink_to(elsewhere, target_is_directory=True)
    (real / "linked_again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice
    (elsewhere / "loop").symlink_to(real, target_is_directory=True)  # and a loop back
    index = index_dataset(tmp_path / "data")
    assert index.counts()["train"] == {0: 2 + 3, 1: 2}
    assert index.skipped == []


def test_a_training_split_given_as_the_root_is_tested_with_a_warning(tmp_path: Path, caplog) -> None:
    """data.root=.../train by mistake: its images would pass for test images."""
    write_tree(tmp_path, n=2)
    index = index_dataset(tmp_path / "train")
    assert index.counts()["test"] == {0: 2, 1: 2}
    assert "is named like a train split and is read as the test split" in caplog.text
    assert f"own test split, point data.root at {tmp_path}." in caplog.text


def layout_error(root: Path) -> str:
    with pytest.raises(DatasetLayoutError, match="no split folders found") as error:
        index_dataset(root)
    assert "Expected layout" in str(error.value)
    return str(error.value)


def index_as_suggested(root: Path, message: str) -> DatasetIndex:
    """Run the overrides the message suggests (between backticks) through Hydra, as ffd.eval would."""
    overrides = shlex.split(re.search(r"run with `([^`]*)`", message).group(1))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=[f"data.root={root}", *overrides])
    return index_dataset(cfg.data.root, cfg.data.split_dirs, cfg.data.class_dirs)


@pytest.mark.parametrize("classes", [("real", "fake"), ("fake",)])
def test_class_folders_a_level_down_name_their_folder(tmp_path: Path, classes: tuple[str, ...]) -> None:
    for name in classes:
        write_images(tmp_path / "stylegan3" / name, 2)
    message = layout_error(tmp_path)
    assert f"run with `data.root={tmp_path / 'stylegan3'}`" in message
    assert sum(index_as_suggested(tmp_path, message).counts()["test"].values()) == 2 * len(classes)


def test_class_folders_in_several_folders_suggest_the_first(tmp_path: Path) -> None:
    write_tree(tmp_path, splits=("stylegan2", "stylegan3"))
    message = layout_error(tmp_path)
    assert "stylegan2/real" in message and "stylegan3/fake" in message
    assert f"first of the 2 folders holding them, run with `data.root={tmp_path / 'stylegan2'}`" in message


@pytest.mark.parametrize(
    ("nest", "classes", "override"),
    [
        ("", ("0_real", "1_fake"), "'data.class_dirs={0:[0_real],1:[1_fake]}'"),  # CNNDetection
        ("x", ("Real Images", "fakes"), """'data.class_dirs={0:["Real Images"],1:[fakes]}'"""),
        ("x", ("real", "FakeFaces"), "'data.class_dirs={0:[real,real_faces],1:[FakeFaces]}'"),
    ],
    ids=["cnndetection", "quoted", "one-configured"],
)
def test_class_folders_under_other_names_get_the_class_dirs_override(
    tmp_path: Path, nest: str, classes: tuple[str, ...], override: str
) -> None:
    for name in classes:
        write_images(tmp_path / nest / name, 2)
    message = layout_error(tmp_path)
    assert all(f"{Path(nest, name).as_posix()}" in message for name in classes)
    assert override in message
    assert (f"data.root={tmp_path / nest}" in message) == bool(nest)
    index = index_as_suggested(tmp_path, message)
    assert index.counts()["test"] == {0: 2, 1: 2}
    assert all(Path(path).parent.name == classes[label] for path, label in index.samples["test"])


def test_split_folders_with_other_class_names_keep_the_root(tmp_path: Path) -> None:
    """Split folders are found from the given root, so only the class names need overriding (the Kaggle
    CSVs are looked for from that root down)."""
    write_tree(tmp_path / KAGGLE_NEST, classes=("0_real", "1_fake"))
    message = layout_error(tmp_path)
    assert "data.root" not in message.split("Expected layout")[0]
    assert index_as_suggested(tmp_path, message).counts() == {
        s: {0: 2, 1: 2} for s in ("train", "val", "test")
    }


@pytest.mark.parametrize("name", ["real_vs_fake", "unreal", "fakeness", "photos"])
def test_folder_names_without_one_class_word_are_not_taken_for_classes(tmp_path: Path, name: str) -> None:
    write_images(tmp_path / name / "images", 2)
    assert "data.class_dirs" not in layout_error(tmp_path)


def test_class_folders_next_to_split_folders_are_named_in_a_warning(tmp_path: Path, caplog) -> None:
    write_tree(tmp_path)
    index_dataset(tmp_path)
    assert "not read" not in caplog.text
    write_images(tmp_path / "fake", 3)
    write_images(tmp_path / "0_real", 3)
    assert index_dataset(tmp_path).counts() == {s: {0: 2, 1: 2} for s in ("train", "val", "test")}
    assert (
        f"{tmp_path}: 0_real, fake, next to the split folders, look like class folders but are not read"
        in (caplog.text)
    )


def test_a_flat_folder_of_images_points_to_predict(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    write_images(tmp_path / "thumbnails" / "small", 1)  # a folder, but no class folder
    message = layout_error(tmp_path)
    assert (
        f"{tmp_path} holds 4 image files (3 directly, 1 in thumbnails/small) and no class folders" in message
    )
    command = re.search(r"`python -m ffd.predict ([^`]*)`", message).group(1)
    arguments = dict(argument.split("=", 1) for argument in shlex.split(command))
    assert arguments["input"] == str(tmp_path)
    assert set(arguments) <= set(OmegaConf.load(CONF / "predict.yaml"))


def test_unlabelled_images_a_folder_down_point_to_predict_too(tmp_path: Path) -> None:
    """The hint named ffd.predict only for images directly in data.root; one folder down got the bare
    'no split folders found'."""
    write_images(tmp_path / "imgs", 2)
    message = layout_error(tmp_path)
    assert f"{tmp_path} holds 2 image files (2 in imgs) and no class folders" in message
    assert f"python -m ffd.predict input={tmp_path} model=CHECKPOINT" in message


@pytest.mark.parametrize("in_split", [False, True], ids=["test-set-folder", "split-folder"])
def test_a_class_folder_under_another_name_beside_a_read_one_is_named_with_its_override(
    tmp_path: Path, caplog, in_split: bool
) -> None:
    """ROOT/{real,fakes} was tested as reals alone without a word: `fakes` is no configured class name."""
    base = tmp_path / "test" if in_split else tmp_path
    write_images(base / "real", 2)
    write_images(base / "fakes", 3)
    index_dataset(tmp_path, split_dirs={"test": ("test",)})
    assert f"Not read, though named like class folders: {base / 'fakes'}" in caplog.text
    override = re.search(r"run with (.*)\.$", caplog.text.strip()).group(1)
    index = index_as_suggested(tmp_path, f"run with `{override}`")
    assert index.counts()["test"] == {0: 2, 1: 3}


def test_no_class_folder_warning_when_every_class_folder_is_read(tmp_path: Path, caplog) -> None:
    write_tree(tmp_path)
    write_images(tmp_path / "test" / "thumbnails", 1)  # not named like a class: nothing to say
    index_dataset(tmp_path)
    assert "Not read" not in caplog.text
