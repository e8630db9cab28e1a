"""The synthetic set: deterministic, written once, and separable by its upsampling trace only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from ffd.data.index import index_dataset
from ffd.data.synthetic import FINGERPRINT_GAIN, MARKER, gan_upsample, generate, main
from ffd.errors import UserError
from ffd.images import read_rgb


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    scores = (scores - scores.min()) / (scores.max() - scores.min())  # torchmetrics: scores in [0, 1]
    return binary_auroc(scores, labels.long()).item()


def nyquist_energy(image: torch.Tensor) -> float:
    """Spectral energy on the period-2 lines of the luminance FFT, against lines 3 bins away."""
    gray = image.float().mean(0)
    n = gray.shape[0] // 2
    power = torch.fft.fft2(gray - gray.mean()).abs() ** 2
    peak = power[n, :].sum() + power[:, n].sum()
    baseline = (
        power[n - 3, :].sum() + power[:, n - 3].sum() + power[n + 3, :].sum() + power[:, n + 3].sum()
    ) / 2
    return (peak / baseline).log().item()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", image_size=16, train=6, val=2, test=2, seed=3, progress=False)
    b = generate(tmp_path / "b", image_size=16, train=6, val=2, test=2, seed=3, progress=False)
    c = generate(tmp_path / "c", image_size=16, train=6, val=2, test=2, seed=4, progress=False)
    assert len(file_bytes(a)) == 10
    assert file_bytes(a) == file_bytes(b)
    assert file_bytes(a).keys() == file_bytes(c).keys() and file_bytes(a) != file_bytes(c)


def test_parallel_rendering_writes_the_same_bytes(tmp_path: Path) -> None:
    # 600 train images: three chunks, so two processes really split the work.
    one = generate(tmp_path / "one", image_size=8, train=600, val=2, test=2, progress=False)
    two = generate(tmp_path / "two", image_size=8, train=600, val=2, test=2, progress=False, workers=2)
    assert len(file_bytes(one)) == 604
    assert file_bytes(one) == file_bytes(two)


def test_layout_is_the_kaggle_one(tmp_path: Path) -> None:
    root = generate(tmp_path, image_size=16, train=6, val=4, test=2, progress=False)
    index = index_dataset(root)
    assert index.root == root and index.skipped == []
    assert index.counts() == {"train": {0: 3, 1: 3}, "val": {0: 2, 1: 2}, "test": {0: 1, 1: 1}}
    assert read_rgb(index.samples["test"][0][0]).shape == (3, 16, 16)


def test_complete_set_is_reused_incomplete_one_redone(tmp_path: Path) -> None:
    options = {"image_size": 16, "train": 4, "val": 2, "test": 2, "progress": False}
    generate(tmp_path, **options)
    original = file_bytes(tmp_path)
    victim = tmp_path / "train" / "fake" / "000000.jpg"
    victim.write_bytes(b"changed")
    generate(tmp_path, **options)  # marker present, parameters equal: nothing rewritten
    assert victim.read_bytes() == b"changed"
    marker = json.loads((tmp_path / MARKER).read_text())  # as if interrupted: the marker says so
    (tmp_path / MARKER).write_text(json.dumps({**marker, "complete": False}))
    generate(tmp_path, **options)
    assert file_bytes(tmp_path) == original
    assert json.loads((tmp_path / MARKER).read_text())["counts"] == {"train": 4, "val": 2, "test": 2}
    generate(tmp_path, **(options | {"train": 2}))  # other parameters: regenerated, stale files gone
    assert len(list((tmp_path / "train").rglob("*.jpg"))) == 2


def test_folders_ffd_did_not_write_are_never_replaced(tmp_path: Path) -> None:
    """A real dataset given as the synthetic root by mistake: refused, every file kept."""
    photo = tmp_path / "train" / "real" / "mine.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a user's photo")
    with pytest.raises(UserError, match=r"already holds train/ folders that ffd did not write"):
        generate(tmp_path, image_size=16, train=4, val=2, test=2, progress=False)
    assert photo.read_bytes() == b"a user's photo" and not (tmp_path / MARKER).exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--root", str(tmp_path), "--image-size", "16", "--train", "4", "--val", "2", "--test", "2"]
    main(args)
    assert len(file_bytes(tmp_path)) == 8
    assert "8 images of 16 px" in capsys.readouterr().out
    main(args)
    assert "already holds this set" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--image-size", "63"], "image_size must be an even number"), (["--train", "-3"], "train=-3")],
)
def test_cli_refuses_bad_parameters_in_one_line(tmp_path: Path, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--root", str(tmp_path), *args])
    assert exit_.value.code == 1 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_gan_upsampling_leaves_a_period_two_trace() -> None:
    """A flat image comes out as a 2x2-periodic pattern with phase gains (1 +- a)^2, mean unchanged."""
    up = gan_upsample(torch.full((1, 1, 8, 8), 0.5))[0, 0]
    assert up.shape == (16, 16)
    phases = torch.stack([up[i::2, j::2] for i in (0, 1) for j in (0, 1)])
    assert torch.allclose(phases, phases[:, :1, :1].expand_as(phases), atol=1e-6)  # periodic, no border
    gains = sorted(phases[:, 0, 0].div(0.5).tolist())
    a = FINGERPRINT_GAIN
    assert gains == pytest.approx([(1 - a) ** 2, 1 - a * a, 1 - a * a, (1 + a) ** 2], abs=1e-6)
    assert up.mean().item() == pytest.approx(0.5, abs=1e-6)


def test_the_trace_separates_the_classes_and_content_does_not(tmp_path: Path) -> None:
    root = generate(tmp_path, image_size=64, train=0, val=300, test=0, progress=False)
    index = index_dataset(root)
    paths, labels = zip(*index.samples["val"], strict=True)
    labels = torch.tensor(labels)
    images = [read_rgb(p) for p in paths]
    frequency = torch.tensor([nyquist_energy(image) for image in images])
    means = torch.stack([image.float().mean((1, 2)) for image in images])  # per-channel mean colour
    assert auroc(frequency, labels) > 0.9
    assert 0.35 < auroc(means.mean(1), labels) < 0.65  # brightness
    for channel in range(3):
        assert 0.35 < auroc(means[:, channel], labels) < 0.65


@pytest.mark.slow
def test_a_tiny_cnn_learns_the_trace(tmp_path: Path) -> None:
    """Learnability at the quickstart size (64 px, 2,000 train images): 3 conv layers, 2 epochs."""
    root = generate(tmp_path, image_size=64, train=2000, val=0, test=400, progress=False)
    index = index_dataset(root)

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        paths, labels = zip(*index.samples[split], strict=True)
        return torch.stack([read_rgb(p) for p in paths]).float() / 255, torch.tensor(
            labels, dtype=torch.float32
        )

    (x_train, y_train), (x_test, y_test) = load("train"), load("test")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(2):
        for batch in torch.randperm(len(x_train)).split(32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net((x_train[batch] - 0.5) / 0.25).squeeze(1), y_train[batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        scores = torch.sigmoid(net((x_test - 0.5) / 0.25).squeeze(1))
    assert binary_auroc(scores, y_test.long()).item() > 0.9
