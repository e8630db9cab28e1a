"""The one decoder: every input a user may have becomes RGB uint8 (3, H, W), or one clear error."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ffd.errors import UnreadableImageError
from ffd.images import NOT_REGULAR, find_images, looks_like_image, read_rgb

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
    assert all(torch.equal(channel, torch.from_numpy(RGB[..., 0])) for channel in gray)
    Image.fromarray(np.dstack([RGB, np.full((12, 20), 128, np.uint8)])).save(tmp_path / "rgba.png")
    rgba = read_rgb(tmp_path / "rgba.png")
    _check(rgba)
    assert torch.equal(rgba, torch.from_numpy(RGB).permute(2, 0, 1))  # alpha dropped, not blended


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
    Image.fromarray(RGB).save(tmp_path / "plain.jpg", quality=95)  # the same JPEG pixels, no EXIF
    rotated = read_rgb(tmp_path / "rotated.jpg")
    _check(rotated, height=20, width=12)
    assert torch.equal(rotated, read_rgb(tmp_path / "plain.jpg").rot90(-1, (1, 2)))  # clockwise


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bad.jpg", b"", "empty file (0 bytes)"),
        ("bad.jpg", b"\xff\xd8\xff\xe0truncated", "cannot be decoded: truncated or corrupt JPEG"),
        ("bad.gif", b"GIF89a truncated", "cannot be decoded: truncated or corrupt GIF"),
        ("bad.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "cannot be decoded: truncated or corrupt WebP"),
        ("bad.jpg", b"hello", "not an image (unknown file signature)"),
        ("README.md", b"# A text file named on the command line", "not an image file (suffix '.md')"),
        ("Notes.TXT", b"hello", "not an image file (suffix '.txt')"),
    ],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, name, content, reason):
    """The reason, listed beside the path (bad_files.txt, the predict and segment tables), says why in the
    index's words, without the path or a decoder's internals (torchvision once advised `decode_avif`);
    the message, for an error shown alone, names the file and says what to do."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError) as error:
        read_rgb(path)
    assert error.value.reason == reason and error.value.path == str(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {reason}; ") and message.count(str(path)) == 1
    assert ".cpp" not in message and "decode_" not in message


def test_a_small_jpeg_whose_header_claims_billions_of_pixels_is_refused_before_decoding(tmp_path):
    """torchvision decodes whatever size a header claims: a 1 KB JPEG saying 65000 x 65000 took 13 GB and
    a minute, then was scored as an image."""
    path = tmp_path / "bomb.jpg"
    Image.fromarray(RGB).save(path)
    raw = bytearray(path.read_bytes())
    at = next(i for i in range(2, len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xC0)  # the frame header
    raw[at + 5 : at + 9] = (65000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(raw))
    with pytest.raises(UnreadableImageError, match="too many pixels to decode safely"):
        read_rgb(path)


def test_a_named_pipe_is_skipped_not_waited_on(tmp_path):
    """Opening a FIFO named stuck.jpg blocked the dataset index (and a read) forever, with no message."""
    from ffd.data.index import index_dataset

    folder = tmp_path / "test" / "fake"
    folder.mkdir(parents=True)
    Image.fromarray(RGB).save(folder / "ok.jpg")
    os.mkfifo(folder / "stuck.jpg")
    assert index_dataset(tmp_path).skipped_by_split["test"] == [(str(folder / "stuck.jpg"), NOT_REGULAR)]
    with pytest.raises(UnreadableImageError, match="not a regular file"):
        read_rgb(folder / "stuck.jpg")


def test_a_file_that_cannot_be_read_is_not_called_not_an_image(tmp_path, monkeypatch):
    """A chmod 000 file was listed as "not an image (unknown file signature)" by the index, while reading
    it named the permission. (Simulated: root, which CI runs as, reads any file.)"""
    from ffd.data import index

    folder = tmp_path / "test" / "real"
    folder.mkdir(parents=True)
    Image.fromarray(RGB).save(folder / "locked.jpg")
    monkeypatch.setattr(index, "looks_like_image", lambda path: False)  # what open() refusing gives
    monkeypatch.setattr(index.os, "access", lambda path, mode: False)
    reasons = [reason for _, reason in index.index_dataset(tmp_path).skipped_by_split["test"]]
    assert reasons == ["cannot be read (Permission denied)"]


def test_the_reasons_of_files_skipped_at_index_time_and_at_decode_time_agree(tmp_path):
    """A file is skipped by the dataset index (first bytes) or when it is decoded (a file named directly
    to ffd.predict or ffd.segment): the same file gets the same words either way."""
    from ffd.data.index import index_dataset

    folder = tmp_path / "train" / "real"
    folder.mkdir(parents=True)
    for name, content in (("zero.jpg", b""), ("text.jpg", b"hello"), ("notes.md", b"hello")):
        (folder / name).write_bytes(content)
    skipped = index_dataset(tmp_path).skipped_by_split["train"]
    assert len(skipped) == 3
    for path, reason in skipped:
        with pytest.raises(UnreadableImageError) as error:
            read_rgb(path)
        assert error.value.reason == reason, path


def test_an_unreadable_image_error_survives_a_copy(tmp_path):
    """Errors cross process boundaries (DataLoader workers) pickled: the copy keeps path and reason."""
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"hello")
    with pytest.raises(UnreadableImageError) as error:
        read_rgb(path)
    copy = pickle.loads(pickle.dumps(error.value))
    assert (copy.path, copy.reason, str(copy)) == (error.value.path, error.value.reason, str(error.value))


def test_magic_bytes_tell_images_from_other_files(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not an image")
    assert looks_like_image(tmp_path / "a.jpg")
    assert not looks_like_image(tmp_path / "b.jpg")
    assert not looks_like_image(tmp_path / "missing.jpg")


def _png_with(transform) -> bytes:
    """A valid PNG of RGB, its chunks changed by transform(chunk type, data) -> data, CRCs recomputed."""
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="PNG")
    raw, out, pos = buffer.getvalue(), bytearray(buffer.getvalue()[:8]), 8
    while pos < len(raw):
        (length,) = struct.unpack_from(">I", raw, pos)
        kind, data = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        data = transform(kind, data)
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        pos += 12 + length
    return bytes(out)


def _bad_filter(kind: bytes, data: bytes) -> bytes:
    if kind != b"IDAT":
        return data
    rows = bytearray(zlib.decompress(data))
    rows[0] = 9  # a scanline filter type that does not exist (0-4 do)
    return zlib.compress(bytes(rows))


def _flipped_byte(kind: bytes, data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 0xFF]) + data[11:] if kind == b"IDAT" else data


@pytest.mark.parametrize("damage", [_bad_filter, _flipped_byte])
def test_a_damaged_png_is_an_unreadable_file_not_a_crash(tmp_path, damage):
    """torchvision 0.29's PNG decoder dies with SIGSEGV on any libpng error (this test would kill the
    test run); ffd decodes PNGs with Pillow, which raises."""
    path = tmp_path / "damaged.png"
    path.write_bytes(_png_with(damage))
    with pytest.raises(UnreadableImageError, match="cannot be decoded") as error:
        read_rgb(path)
    assert str(path) in str(error.value)


def test_bmp_and_tiff_decode_to_the_same_pixels(tmp_path):
    expected = torch.from_numpy(RGB).permute(2, 0, 1)
    for name in ("photo.bmp", "photo.tif"):
        Image.fromarray(RGB).save(tmp_path / name)
        assert looks_like_image(tmp_path / name), name
        assert torch.equal(read_rgb(tmp_path / name), expected), name
    Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).save(tmp_path / "grey16.tif")
    grey = read_rgb(tmp_path / "grey16.tif")  # 16-bit: the 8 most significant bits
    assert torch.equal(grey, torch.from_numpy(RGB[..., 0]).expand(3, -1, -1))


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((12, 20, 3), value, np.uint8)) for value in (0, 255)]
    frames[0].save(tmp_path / "blink.gif", save_all=True, append_images=frames[1:], duration=100)
    image = read_rgb(tmp_path / "blink.gif")
    _check(image)
    assert image.max() == 0


def test_a_list_saved_with_a_byte_order_mark_keeps_its_first_path(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "first.png")
    Image.fromarray(RGB).save(tmp_path / "second.png")
    (tmp_path / "list.txt").write_text("first.png\nsecond.png\n", encoding="utf-8-sig")  # Windows Notepad
    assert find_images(tmp_path / "list.txt") == [tmp_path / "first.png", tmp_path / "second.png"]


def test_webp_gets_its_exif_orientation_and_its_first_frame(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(RGB).save(tmp_path / "rotated.webp", exif=exif, lossless=True)
    rotated = read_rgb(tmp_path / "rotated.webp")
    _check(rotated, height=20, width=12)
    assert torch.equal(rotated, torch.from_numpy(np.rot90(RGB, -1).copy()).permute(2, 0, 1))  # clockwise
    frames = [Image.fromarray(np.full((12, 20, 3), value, np.uint8)) for value in (0, 255)]
    animation = {"save_all": True, "append_images": frames[1:], "duration": 100, "lossless": True}
    frames[0].save(tmp_path / "blink.webp", **animation)
    image = read_rgb(tmp_path / "blink.webp")
    _check(image)
    assert image.max() == 0


def test_an_image_over_the_decompression_bomb_limit_says_so(tmp_path, monkeypatch):
    Image.fromarray(RGB).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 240 pixels is then over twice the limit
    with pytest.raises(UnreadableImageError, match="downscale it") as error:
        read_rgb(tmp_path / "big.png")
    assert "corrupt" not in str(error.value) and "big.png" in str(error.value)


def test_a_broken_link_in_a_folder_is_found_and_then_reported_unreadable(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "good.png")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    assert find_images(tmp_path) == [tmp_path / "gone.jpg", tmp_path / "good.png"]
    with pytest.raises(UnreadableImageError, match=r"gone\.jpg: cannot be read"):
        read_rgb(tmp_path / "gone.jpg")


@pytest.mark.parametrize("size", [(1, 1), (1, 7)])
def test_a_one_pixel_wide_png_decodes_without_torchs_read_only_warning(tmp_path, size):
    """Pillow's array is read-only and, one pixel wide, already contiguous: torch warned it was not
    writable (printed in the middle of a segment run)."""
    path = tmp_path / "thin.png"
    Image.new("RGB", size, (10, 20, 30)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_rgb(path)
    assert image.shape == (3, size[1], size[0]) and image[:, 0, 0].tolist() == [10, 20, 30]
