"""The one decoder: every input a user may have becomes RGB uint8 (3, H, W), or one clear error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ffd.images import UnreadableImageError, looks_like_image, read_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _check(image: torch.Tensor, height: int = 12, width: int = 20) -> None:
    assert image.dtype == torch.uint8 and image.shape == (3, height, width)


def test_png_and_grayscale_and_rgba(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    assert torch.equal(read_rgb(tmp_path / "rgb.png"), torch.from_numpy(RGB).permute(2, 0, 1))
    Image.fromarray(RGB[..., 0]).save(tmp_path / "gray.png")
    gray = read_rgb(tmp_path / "gray.png")
    _check(gray)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    Image.fromarray(np.dstack([RGB, np.full((12, 20), 128, np.uint8)])).save(tmp_path / "rgba.png")
    _check(read_rgb(tmp_path / "rgba.png"))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image = read_rgb(tmp_path / "cmyk.jpg")
    _check(image)
    # Close to the original colours (JPEG and the CMYK round trip lose a little).
    assert (image.float() - torch.from_numpy(RGB).permute(2, 0, 1).float()).abs().mean() < 20


def test_16_bit_png_keeps_the_top_8_bits(tmp_path):
    deep = RGB.astype(np.uint16) * 257  # 8-bit value v becomes 16-bit v * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    image = read_rgb(tmp_path / "deep.png")
    _check(image)
    assert torch.equal(image, torch.from_numpy(RGB).permute(2, 0, 1))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(RGB).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    _check(read_rgb(tmp_path / "rotated.jpg"), height=20, width=12)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xd8\xff\xe0truncated", "cannot be decoded"), (b"hello", "cannot be decoded")],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=message) as error:
        read_rgb(path)
    assert str(path) in str(error.value) and ".cpp" not in str(error.value)


def test_magic_bytes_tell_images_from_other_files(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not an image")
    assert looks_like_image(tmp_path / "a.jpg")
    assert not looks_like_image(tmp_path / "b.jpg")
    assert not looks_like_image(tmp_path / "missing.jpg")
