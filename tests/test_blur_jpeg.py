"""data.augment.blur_jpeg_prob: CNNDetection's blur + JPEG of training images, off at 0, seeded, alike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from ffd.data.datamodule import FacesDataModule
from ffd.data.dataset import FaceImages
from ffd.data.gpu_augment import BatchAugment
from ffd.data.synthetic import generate
from ffd.data.transforms import (
    BLUR_SIGMA,
    JPEG_QUALITY,
    RandomBlurJpeg,
    ResizeIfNeeded,
    train_transform,
)
from ffd.errors import UserError
from ffd.trust.robustness import perturb

S = 32
IDENTITY = {
    "rotation": 0,
    "zoom": 0,
    "translate": 0,
    "contrast": 0,
    "flip": False,
}  # conf/data/synthetic.yaml


def noise_image(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gradient_image() -> torch.Tensor:
    """A ramp with a little noise: no structure at the 8-px block boundaries until JPEG puts it there."""
    y, x = torch.meshgrid(torch.arange(S * 1.0), torch.arange(S * 1.0), indexing="ij")
    noise = torch.randn(3, S, S, generator=torch.Generator().manual_seed(1)) * 3
    return (x * 4 + y * 2 + noise).round().clamp(0, 255).to(torch.uint8)


def high_frequency_share(image: torch.Tensor) -> float:
    """The share of the image's spectral energy above half the Nyquist frequency."""
    power = torch.fft.fft2(image.float() - image.float().mean()).abs() ** 2
    freq = torch.fft.fftfreq(image.shape[-1]).abs()
    high = (freq[:, None] > 0.25) | (freq[None, :] > 0.25)
    return float(power[..., high].sum() / power.sum())


def blockiness(image: torch.Tensor) -> float:
    """Mean step across the 8-px JPEG block boundaries over the mean step elsewhere (about 1 without JPEG)."""
    steps = (image.float().mean(0).diff(dim=1)).abs().mean(0)
    boundary = torch.arange(steps.numel()) % 8 == 7
    return float(steps[boundary].mean() / steps[~boundary].mean())


def seeded(transform: torch.nn.Module, image: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return transform(image)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("faces"), image_size=S, train=4, val=2, test=2, progress=False)


def module(root: Path, **kwargs) -> FacesDataModule:
    return FacesDataModule(str(root), **({"image_size": S, "batch_size": 4, "num_workers": 0} | kwargs))


def train_images(datamodule: FacesDataModule, seed: int) -> list[torch.Tensor]:
    """The training split's images in index order, under one seed."""
    datamodule.setup("fit")
    dataset = datamodule.train_dataloader().dataset
    torch.manual_seed(seed)
    return [dataset[i]["image"] for i in range(len(dataset))]


def test_prob_0_is_the_reference_pipeline_unchanged() -> None:
    """The same steps and the same random stream as before the option: identical outputs per seed."""
    reference = v2.Compose(
        [
            ResizeIfNeeded(S),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=36, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ColorJitter(contrast=0.1),
        ]
    )
    image = noise_image()
    for seed in range(4):
        assert torch.equal(
            seeded(train_transform(S, blur_jpeg_prob=0), image, seed), seeded(reference, image, seed)
        )
    assert not any(isinstance(t, RandomBlurJpeg) for t in train_transform(S).transforms)


def test_synthetic_config_at_prob_0_trains_on_the_files_as_they_are(faces: Path) -> None:
    """conf/data/synthetic.yaml's all-identity mapping gives what augment=false gave: the decoded files."""
    plain = train_images(module(faces, augment=False), seed=0)
    for place in ("cpu", "gpu"):
        datamodule = module(faces, augment={**IDENTITY, "blur_jpeg_prob": 0}, augment_on=place)
        assert all(torch.equal(a, b) for a, b in zip(train_images(datamodule, seed=0), plain, strict=True))
    batch = torch.stack(plain)
    assert BatchAugment(**IDENTITY)(batch) is batch


def test_prob_1_blurs_then_jpeg_encodes_with_the_evaluation_functions() -> None:
    """Replaying the draws (blur?, sigma, JPEG?, quality) gives the robustness passes' own blur and JPEG."""
    image, transform = noise_image(), RandomBlurJpeg(1.0)
    sigmas, qualities = [], []
    for seed in range(12):
        torch.manual_seed(seed)
        assert torch.rand(()) < 1
        sigma = float(torch.empty(()).uniform_(*BLUR_SIGMA))
        assert torch.rand(()) < 1
        quality = int(torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, ()))
        expected = perturb(perturb(image, "blur", sigma, 0, 0), "jpeg", quality, 0, 0)
        assert torch.equal(seeded(transform, image, seed), expected)
        sigmas.append(sigma)
        qualities.append(quality)
    assert 0 <= min(sigmas) < 1 and 2 < max(sigmas) <= 3
    assert 30 <= min(qualities) < 55 and 75 < max(qualities) <= 100


def test_prob_1_removes_high_frequencies_and_leaves_jpeg_blocks() -> None:
    noise, ramp, transform = noise_image(), gradient_image(), RandomBlurJpeg(1.0)
    outs = [seeded(transform, noise, seed) for seed in range(16)]
    assert all(
        not torch.equal(out, noise) and out.dtype == torch.uint8 and out.shape == noise.shape for out in outs
    )
    before = high_frequency_share(noise)
    after = sum(map(high_frequency_share, outs)) / len(outs)
    assert after < 0.5 * before, (before, after)
    blocky = [blockiness(seeded(transform, ramp, seed)) for seed in range(16)]
    assert blockiness(ramp) < 1.1 < 1.15 < sum(blocky) / len(blocky), (blockiness(ramp), blocky)


def test_prob_half_degrades_about_half_and_a_seed_repeats_its_draws() -> None:
    image, transform = noise_image(), RandomBlurJpeg(0.5)
    outs = [seeded(transform, image, seed) for seed in range(40)]
    assert all(torch.equal(out, seeded(transform, image, seed)) for seed, out in enumerate(outs))
    untouched = sum(torch.equal(out, image) for out in outs)  # neither step drawn: 1 in 4
    assert 3 <= untouched <= 20


def test_both_classes_are_degraded_alike(faces: Path) -> None:
    """The same file as a real and as a fake, under one seed, gets the same pixels."""
    path = str(next((faces / "train" / "fake").iterdir()))
    transform = train_transform(S, **IDENTITY, blur_jpeg_prob=1.0)
    as_real, as_fake = FaceImages([(path, 0)], transform), FaceImages([(path, 1)], transform)
    torch.manual_seed(3)
    real = as_real[0]["image"]
    torch.manual_seed(3)
    fake = as_fake[0]["image"]
    assert torch.equal(real, fake)
    assert not torch.equal(real, FaceImages([(path, 1)], ResizeIfNeeded(S))[0]["image"])


def test_gpu_path_degrades_in_the_workers_as_the_cpu_path_does(faces: Path) -> None:
    """augment_on=gpu: the workers blur + JPEG in the CPU pipeline's order, then the device does the rest."""
    options = {"augment": {**IDENTITY, "blur_jpeg_prob": 1.0}}
    on_cpu = train_images(module(faces, augment_on="cpu", **options), seed=5)
    on_gpu = train_images(module(faces, augment_on="gpu", **options), seed=5)
    plain = train_images(module(faces, augment=False), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(on_cpu, on_gpu, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(on_cpu, plain, strict=True))


def test_loader_workers_repeat_their_draws(faces: Path) -> None:
    """Two workers, one seed: the same degraded batches twice (each worker's RNG is seeded from it)."""

    def first_epoch() -> list[torch.Tensor]:
        datamodule = module(faces, augment={**IDENTITY, "blur_jpeg_prob": 0.5}, num_workers=2, batch_size=2)
        datamodule.persistent_workers = False
        datamodule.setup("fit")
        torch.manual_seed(7)
        return [batch["image"] for batch in datamodule.train_dataloader()]

    first, again = first_epoch(), first_epoch()
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("prob", [-0.1, 1.5, math.nan, "half", True])
def test_a_prob_outside_0_1_is_refused_before_any_work(tmp_path: Path, prob: object) -> None:
    """Refused by the data module's constructor, before the (missing) data root is even looked at."""
    with pytest.raises(UserError, match=r"data\.augment\.blur_jpeg_prob=.* is not a probability") as error:
        FacesDataModule(str(tmp_path / "missing"), augment={"blur_jpeg_prob": prob})
    assert "from 0 (off, the default) to 1" in str(error.value)
    with pytest.raises(UserError, match="not a probability"):
        RandomBlurJpeg(prob)  # type: ignore[arg-type]


def test_the_command_line_says_what_to_fix(tmp_path: Path) -> None:
    from cli import run_in_process

    result = run_in_process("ffd.train", "data=synthetic", "data.augment.blur_jpeg_prob=2", root=tmp_path)
    assert result.returncode != 0
    assert "data.augment.blur_jpeg_prob=2 is not a probability" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()
