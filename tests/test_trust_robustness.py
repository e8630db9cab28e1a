"""ffd.trust.robustness: the perturbations, the config checks, and `ffd.eval robustness=default` end to end.

The end-to-end model is a tiny ViT trained in-process for a second on the synthetic set (whose fakes carry a
period-2 upsampling trace): it detects that trace cleanly, and blur, downscaling and resampling crops wipe
it out, so its curves must fall from the clean score towards chance.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli import run_ffd, run_in_process
from ffd.data.index import index_dataset
from ffd.data.synthetic import generate
from ffd.deploy.convert import export_onnx
from ffd.errors import UserError
from ffd.eval import evaluate
from ffd.images import read_rgb
from ffd.models.checkpoint import load_classifier
from ffd.models.classifier import DeepfakeClassifier
from ffd.sweep import ROBUSTNESS_SUMMARY
from ffd.trust.perturbations import CLEAN, PERTURBATIONS, perturb
from ffd.trust.robustness import (
    COLUMNS,
    CSV_FILE,
    FIGURE_FILE,
    JSON_FILE,
    RobustnessConfigError,
    robustness_plan,
    tpr_at_fpr,
)

DEFAULT = {
    "jpeg": [100, 90, 75, 50, 30],
    "blur": [0.5, 1, 2, 3],
    "downscale": [0.75, 0.5, 0.25],
    "noise": [2, 5, 10],
    "crop": [0.9, 0.8, 0.7],
}
# On 20 real and 20 fake images a chance-level AUROC wanders by about this much between severities.
CHANCE_SLACK = 0.1


def photo(seed: int = 0, height: int = 48, width: int = 40) -> torch.Tensor:
    """A non-square uint8 image with smooth shading and fine texture (what blur and JPEG act on)."""
    generator = torch.Generator().manual_seed(seed)
    shading = torch.nn.functional.interpolate(
        torch.rand(1, 3, 6, 5, generator=generator), (height, width), mode="bilinear"
    )[0]
    texture = torch.rand(3, height, width, generator=generator) - 0.5
    return ((0.7 * shading + 0.3 * texture + 0.15) * 255).clamp(0, 255).to(torch.uint8)


def error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def high_frequency_energy(image: torch.Tensor) -> float:
    """Spectral energy of the grey image beyond a quarter of the sampling rate."""
    grey = image.float().mean(0)
    spectrum = torch.fft.fftshift(torch.fft.fft2(grey - grey.mean())).abs() ** 2
    fy = torch.fft.fftshift(torch.fft.fftfreq(grey.shape[0]))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(grey.shape[1]))[None, :]
    return spectrum[(fy**2 + fx**2).sqrt() > 0.25].sum().item()


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_keeps_dtype_and_shape_and_is_deterministic(name):
    image = photo()
    harshest = sorted(DEFAULT[name], reverse=PERTURBATIONS[name].harsher_is_lower)[-1]
    out = perturb(image, name, harshest, seed=7, index=3)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert torch.equal(out, perturb(image, name, harshest, seed=7, index=3))
    assert error(out, image) > 0.5
    assert torch.equal(perturb(image, CLEAN, None, seed=7, index=3), image)


def test_noise_is_seeded_per_image_and_has_the_asked_spread():
    image = torch.full((3, 64, 64), 128, dtype=torch.uint8)  # far from 0 and 255: no clipping
    first = perturb(image, "noise", 10, seed=0, index=0)
    assert not torch.equal(first, perturb(image, "noise", 10, seed=0, index=1))
    assert not torch.equal(first, perturb(image, "noise", 10, seed=1, index=0))
    assert (first.float() - 128).std().item() == pytest.approx(10, rel=0.1)


def test_a_lower_jpeg_quality_loses_more():
    image = photo()
    assert error(perturb(image, "jpeg", 30, 0, 0), image) > error(perturb(image, "jpeg", 90, 0, 0), image) > 0


def test_blur_removes_high_frequencies():
    image = photo()
    energies = [high_frequency_energy(perturb(image, "blur", s, 0, 0)) for s in (0.5, 1, 3)]
    assert high_frequency_energy(image) > energies[0] > energies[1] > energies[2]
    assert energies[2] < 0.05 * high_frequency_energy(image)


@pytest.mark.parametrize(("name", "milder", "harsher"), [("downscale", 0.75, 0.25), ("crop", 0.9, 0.7)])
def test_a_smaller_scale_loses_more(name, milder, harsher):
    image = photo()
    assert error(perturb(image, name, harsher, 0, 0), image) > error(
        perturb(image, name, milder, 0, 0), image
    )


def test_tpr_at_one_percent_fpr_is_the_best_rate_that_calls_at_most_one_percent_of_reals_fake():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(500, generator=generator) < 0.5).long()
    probs = (torch.rand(500, generator=generator) + 0.6 * labels).clamp(max=1)
    best = 0.0
    for threshold in probs.unique():
        called = probs >= threshold
        if called[labels == 0].float().mean() <= 0.01:
            best = max(best, called[labels == 1].float().mean().item())
    assert tpr_at_fpr(labels, probs) == pytest.approx(best)
    assert math.isnan(tpr_at_fpr(torch.ones(4, dtype=torch.long), torch.rand(4)))


def test_severities_run_mildest_first_after_the_clean_pass():
    plan = robustness_plan({"perturbations": {"jpeg": [30, 100, 75], "blur": [2, 0.5], "downscale": 0.5}})
    assert plan is not None and plan.passes == [
        (CLEAN, None),
        ("jpeg", 100),
        ("jpeg", 75),
        ("jpeg", 30),
        ("blur", 0.5),
        ("blur", 2),
        ("downscale", 0.5),
    ]
    assert robustness_plan(None) is None and robustness_plan({}) is None


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"perturbations": {"jpg": [90]}}, "robustness.perturbations.jpg"),
        ({"perturbations": {"jpeg": [0]}}, "robustness.perturbations.jpeg=0"),
        ({"perturbations": {"jpeg": [90, 101]}}, "robustness.perturbations.jpeg=101"),
        ({"perturbations": {"jpeg": [50.5]}}, "robustness.perturbations.jpeg=50.5"),
        ({"perturbations": {"blur": [-1]}}, "robustness.perturbations.blur=-1"),
        ({"perturbations": {"downscale": [0]}}, "robustness.perturbations.downscale=0"),
        ({"perturbations": {"downscale": [1.5]}}, "robustness.perturbations.downscale=1.5"),
        ({"perturbations": {"crop": ["a"]}}, "robustness.perturbations.crop=a"),
        ({"perturbations": {"noise": []}}, "robustness.perturbations.noise=an empty list"),
        ({"perturbations": {"noise": [2]}, "batch_size": 0}, "robustness.batch_size=0"),
        ({"perturbations": {"noise": [2]}, "severity": 1}, "robustness.severity is not an option"),
        ({"perturbations": {"noise": [2]}, "device": "gpu0"}, "robustness.device=gpu0"),
    ],
)
def test_a_bad_setting_is_one_error_naming_the_key(settings, key):
    with pytest.raises(RobustnessConfigError) as caught:
        robustness_plan(settings)
    assert key in str(caught.value) and isinstance(caught.value, UserError)
    assert "\n" not in str(caught.value)


def test_the_command_refuses_a_bad_severity_before_reading_the_model(tmp_path):
    overrides = ["ckpt_path=missing.ckpt", "robustness=default", "robustness.perturbations.blur=[-2]"]
    result = run_in_process("ffd.eval", *overrides, root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "robustness.perturbations.blur=-2" in result.stderr, result.stderr[-2000:]
    assert "does not exist" not in result.stderr


def test_an_onnx_file_without_robustness_passes_says_how_to_score_it():
    """ffd.eval's report is the Lightning test of a checkpoint; an .onnx is scored by the passes alone."""
    cfg = OmegaConf.create({"ckpt_path": "missing.onnx", "seed": 0, "robustness": None})
    with pytest.raises(UserError, match="add robustness=default"):
        evaluate(cfg)


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(faces root, tiny.ckpt, its fp32 tiny.onnx): a 32 px ViT trained for 8 epochs on 200 images."""
    folder = tmp_path_factory.mktemp("robustness")
    faces = generate(folder / "faces", 32, 200, 8, 40, progress=False)  # one chunk: no worker processes
    samples = index_dataset(faces).samples["train"]
    images = torch.stack([read_rgb(path) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.float32)
    torch.manual_seed(0)
    net = {
        "name": "vit",
        "image_size": 32,
        "patch_size": 4,
        "dim": 16,
        "depth": 1,
        "heads": 2,
        "head_dim": 8,
        "mlp_dim": 32,
        "dropout": 0.0,
        "head_dims": [32],
        "head_dropout": [0.0, 0.0],
    }
    model = DeepfakeClassifier(net=net)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(8):
        for batch in torch.randperm(len(images)).split(32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    checkpoint = folder / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"net": net}}, checkpoint)
    onnx_file = export_onnx(load_classifier(checkpoint).eval(), folder / "tiny.onnx", "0" * 64)
    return faces, checkpoint, onnx_file


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / CSV_FILE).open() as handle:
        return list(csv.DictReader(handle))


def test_a_sweep_over_a_checkpoint_and_its_onnx_export_writes_and_compares_their_curves(detectors, tmp_path):
    faces, checkpoint, onnx_file = detectors
    result = run_ffd(
        "ffd.eval",
        "-m",
        f"ckpt_path={checkpoint},{onnx_file}",
        f"data.root={faces}",
        "data.num_workers=0",
        "robustness=default",
        root=tmp_path,
    )
    sweep = next((tmp_path / "outputs" / "eval" / "multirun").iterdir())
    runs = {
        json.loads((sweep / num / JSON_FILE).read_text())["model"]["runtime"]: sweep / num for num in "01"
    }
    assert set(runs) == {"pytorch", "onnxruntime"}
    expected = [(CLEAN, None)] + [(name, float(s)) for name, values in DEFAULT.items() for s in values]
    curves = {}
    for runtime, run in runs.items():
        summary = json.loads((run / JSON_FILE).read_text())
        rows = summary["rows"]
        assert [(row["perturbation"], row["severity"]) for row in rows] == expected
        assert all(row["images"] == 40 for row in rows)
        assert list(read_rows(run)[0]) == list(COLUMNS) and len(read_rows(run)) == len(expected)
        assert (run / FIGURE_FILE).stat().st_size > 10_000
        for name, area in summary["curve_areas"].items():
            chosen = [row for row in rows if row["perturbation"] == name]
            assert chosen[0]["auroc"] >= chosen[-1]["auroc"] - CHANCE_SLACK, name
            assert area["auroc"] == pytest.approx(sum(row["auroc"] for row in chosen) / len(chosen))
        clean = rows[0]["auroc"]
        assert clean > 0.9  # the trace is learnt; blur and downscaling erase it
        assert (
            max(
                row["auroc"]
                for row in rows
                if (row["perturbation"], row["severity"]) in {("blur", 3.0), ("downscale", 0.25)}
            )
            < clean - 0.3
        )
        tags: dict[str, set[str]] = {"images": set(), "scalars": set()}
        for file in (run / "tensorboard").glob("events.out.tfevents.*"):  # the test's, then ours
            events = EventAccumulator(str(file))
            events.Reload()
            for kind, found in tags.items():
                found |= set(events.Tags()[kind])
        assert "robustness/curves" in tags["images"]
        assert {"robustness/jpeg/auroc", "robustness/crop/tpr_at_1pct_fpr"} <= tags["scalars"]
        curves[runtime] = rows
    # The checkpoint's clean pass is its test report; the fp32 ONNX file's curves are the checkpoint's.
    report = json.loads((runs["pytorch"] / "report" / "metrics.json").read_text())
    assert curves["pytorch"][0]["auroc"] == pytest.approx(report["metrics"]["auroc"])
    for ours, theirs in zip(curves["pytorch"], curves["onnxruntime"], strict=True):
        for key in ("auroc", "ap", "tpr_at_1pct_fpr"):
            assert ours[key] == pytest.approx(theirs[key], abs=0.03), (ours, theirs)
    with (sweep / ROBUSTNESS_SUMMARY).open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["job"] for row in table] == ["0", "1"] and "blur AUROC" in table[0]
    assert "Robustness: clean AUROC and mean AUROC" in result.stdout
