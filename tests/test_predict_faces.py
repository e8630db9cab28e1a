"""ffd.predict face=align|auto|none: a row per face, annotated photos, heatmaps, the model card, the
README's onnxruntime-only snippet against ffd.

The models are the session's tiny checkpoints (a few steps at 32 px on the synthetic set): their verdicts
mean nothing, which is what the card's warning says; the tests check the machinery.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from rich.console import Console
from skimage import data as skdata
from torchvision.io import write_jpeg, write_png
from torchvision.transforms.v2 import functional as TF

from cli import run_dirs, run_ffd
from ffd.assets import sha256_of
from ffd.data.transforms import eval_transform
from ffd.images import read_rgb
from ffd.inference import PredictError, predict
from ffd.models.card import SYNTHETIC
from ffd.models.checkpoint import load_classifier

README = Path(__file__).resolve().parents[1] / "README.md"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None)


def astronaut() -> torch.Tensor:
    return torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).contiguous()


def grace_hopper() -> torch.Tensor:
    return read_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x400 canvas holding the astronaut (her head, rotated 20°) and Grace Hopper side by side.

    MediaPipe's detector sees the photo at 128 px: each face spans about a fifth of the canvas."""
    canvas = torch.full((3, 400, 640), 90, dtype=torch.uint8)
    head = TF.resize(astronaut()[:, 0:300, 100:400], [380, 380], antialias=True)
    canvas[:, 10:390, 0:380] = TF.rotate(head, 20.0, fill=[90, 90, 90])
    canvas[:, 10:390, 355:640] = TF.resize(grace_hopper(), [380, 285], antialias=True)
    folder = tmp_path_factory.mktemp("two_faces")
    write_jpeg(canvas, str(folder / "two.jpg"), quality=95)
    return folder / "two.jpg"


def test_align_judges_each_face_writes_boxes_and_heatmaps(tiny_checkpoints, two_faces, finder, tmp_path):
    out = tmp_path / "run"
    console = quiet()
    checkpoint = tiny_checkpoints["vit"]
    run = predict(
        two_faces, checkpoint, out, num_workers=0, console=console,
        face="align", finder=finder, annotate=True, explain=True,
    )  # fmt: skip
    assert [row.face for row in run.rows] == [0, 1]
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["face"] for row in rows] == ["0", "1"]
    boxes = [[float(v) for v in row["box"].split()] for row in rows]
    centres = sorted((x0 + x1) / 2 for x0, _, x1, _ in boxes)
    assert 60 < centres[0] < 320 < centres[1] < 640  # each box on its portrait
    for row in rows:
        shares = {key: float(value) for key, value in row.items() if key.startswith("share_")}
        assert shares and abs(sum(shares.values()) - 1.0) < 1e-4
    assert (out / "annotated" / "two.png").is_file()
    heatmaps = sorted(path.name for path in (out / "heatmaps").iterdir())
    assert heatmaps == ["two.png", "two_f0.png", "two_f1.png"]
    annotated = read_rgb(out / "annotated" / "two.png")
    assert annotated.shape == read_rgb(two_faces).shape
    assert not torch.equal(annotated, read_rgb(two_faces))  # boxes drawn
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["counts"]["faces"] == 2 and summary["face"] == "align"
    assert summary["model_card"]["training_data"] == SYNTHETIC
    printed = console.file.getvalue()
    assert "Model card: vit" in printed and "synthetic demo set" in printed
    assert printed.count("Warning:") == 1  # once per run, not per image


def test_the_command_composes_the_face_group(tiny_checkpoints, two_faces, tmp_path):
    """face=align is a config group option and face.fallback one of its keys, through the real CLI."""
    run_ffd("ffd.predict", f"input={two_faces}", f"model={tiny_checkpoints['vit']}", "face=align",
            "face.fallback=whole", "face.max_faces=1", "annotate=true", root=tmp_path)  # fmt: skip
    (run,) = run_dirs(tmp_path, "predict")
    summary = json.loads((run / "predictions.json").read_text())
    assert summary["face"] == "align" and summary["face_fallback"] == "whole"
    assert [row["face"] for row in summary["predictions"]] == [0]  # max_faces=1: the larger face
    assert "face.max_faces=1" in summary["predictions"][0]["notes"]
    assert (run / "annotated" / "two.png").is_file()


def test_auto_judges_a_face_crop_whole_and_lists_a_photo_without_a_face(tiny_checkpoints, finder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_png(torch.full((3, 32, 32), 128, dtype=torch.uint8), str(photos / "crop.png"))  # the model's size
    write_png(torch.full((3, 200, 300), 30, dtype=torch.uint8), str(photos / "empty.png"))
    run = predict(photos, tiny_checkpoints["vit"], tmp_path / "a", num_workers=0, console=quiet(),
                  face="auto", finder=finder)  # fmt: skip
    assert [Path(row.path).name for row in run.rows] == ["crop.png"] and run.rows[0].face is None
    assert [(Path(path).name, reason) for path, reason in run.no_face] == [("empty.png", "no face found")]
    assert "empty.png" in (tmp_path / "a" / "bad_files.txt").read_text()
    whole = predict(photos, tiny_checkpoints["vit"], tmp_path / "b", num_workers=0, console=quiet(),
                    face="auto", fallback="whole", finder=finder)  # fmt: skip
    notes = {Path(row.path).name: row.notes for row in whole.rows}
    assert set(notes) == {"crop.png", "empty.png"} and "face.fallback=whole" in notes["empty.png"]
    assert "shrunk 6.2x" in notes["empty.png"]  # 200 px short side to 32 px


def test_an_onnx_model_cannot_explain_and_a_bad_face_mode_is_named(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read")
    photo = tmp_path / "p.png"
    write_png(torch.zeros((3, 8, 8), dtype=torch.uint8), str(photo))
    with pytest.raises(PredictError, match="face=sideways"):
        predict(photo, model, tmp_path / "o", face="sideways", console=quiet())
    with pytest.raises(Exception, match=r"\.ckpt"):
        predict(photo, model, tmp_path / "o2", explain=True, console=quiet())


def readme_snippet() -> str:
    text = README.read_text()
    section = text[text.index("### Serving the ONNX file") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("shape", [(600, 512), (300, 420)])  # portrait (Grace Hopper's) and landscape
def test_the_readme_onnx_snippet_feeds_the_model_what_ffd_does(tiny_checkpoints, tmp_path, shape):
    from ffd.deploy.convert import export_onnx

    checkpoint = tiny_checkpoints["vit"]
    exported = tmp_path / "vit.onnx"
    export_onnx(load_classifier(checkpoint).eval(), exported, sha256_of(checkpoint))
    photo = tmp_path / "face.png"  # PNG: both read the same pixels
    write_png(TF.resize(grace_hopper(), list(shape), antialias=True), str(photo))
    code = readme_snippet().replace("densenet_256px_int8.onnx", str(exported)).replace("face.jpg", str(photo))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's code, as a user would paste it
    ours = eval_transform(32)(read_rgb(photo)).numpy().astype(np.float32)
    theirs = scope["batch"][0]
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).mean() < 1.0  # PIL's and torchvision's antialiased bilinear: ±1 levels
    squashed = np.asarray(Image.open(photo).convert("RGB").resize((32, 32)), np.float32).transpose(2, 0, 1)
    assert np.abs(squashed - ours).mean() > 2 * np.abs(theirs - ours).mean()  # the old snippet would fail
    console = quiet()
    run = predict(photo, exported, tmp_path / "run", face="none", num_workers=0, console=console)
    assert abs(run.rows[0].p_fake - scope["p_fake"]) < 0.01
    # the ONNX file carries the checkpoint's model card, and predict prints it
    assert run.settings["model_card"] == load_classifier(checkpoint).notes["card"]
    assert "Model card: vit" in console.file.getvalue()


def test_predict_judges_photos_without_the_explain_extra(tiny_checkpoints, tmp_path):
    """After a plain `pip install -e .` grad-cam is absent: ffd.predict imported it through the heatmap
    drawing and could not start at all, explain=false included."""
    shadow = tmp_path / "shadow" / "pytorch_grad_cam"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError('No module named pytorch_grad_cam', name='pytorch_grad_cam')"
    )
    photo = tmp_path / "face.png"
    write_png(TF.resize(grace_hopper(), [64, 64], antialias=True), str(photo))
    env = {"PYTHONPATH": str(shadow.parent)}
    run_ffd(
        "ffd.predict",
        f"input={photo}",
        f"model={tiny_checkpoints['vit']}",
        "face=none",
        root=tmp_path,
        env=env,
    )
    (run,) = run_dirs(tmp_path, "predict")
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["verdict"] in ("real", "fake")
    refused = run_ffd(
        "ffd.predict",
        f"input={photo}",
        f"model={tiny_checkpoints['vit']}",
        "explain=true",
        root=tmp_path,
        env=env,
        expect_ok=False,
    )
    assert refused.returncode == 1 and 'pip install -e ".[explain]"' in refused.stderr, refused.stderr[-2000:]
