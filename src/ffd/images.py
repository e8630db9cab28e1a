"""Read any image file a user may hand us as an RGB uint8 tensor (C, H, W).

One decoder for the whole project (training data, segmentation, prediction) so that every part
sees the same pixels: torchvision.io for JPEG and GIF, Pillow for PNG, BMP, TIFF and WebP, EXIF
orientation applied, grayscale / RGBA / CMYK / 16-bit inputs converted to 8-bit RGB, the first frame
of an animation. A file it cannot read raises UnreadableImageError, whose ``reason`` is what the lists of
skipped files show beside the path.
"""

from __future__ import annotations

import glob
import io
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

from ffd.errors import ImageInputError, UnreadableImageError

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec, warning on every call.
# They are still the fastest decoder we can depend on; this module is the one place to switch later.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

LIST_SUFFIX = ".txt"  # input=paths.txt: one image path per line
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
FORMATS = "JPEG, PNG, BMP, TIFF, GIF and WebP"
EMPTY_FILE = "empty file (0 bytes)"  # a skip reason, as ffd.data.index words it
NOT_REGULAR = "not a regular file (a named pipe, socket or device)"

# File signatures of the formats we decode (WebP: RIFF....WEBP, see _image_format), and their names.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# Decoded with Pillow: BMP and TIFF, which torchvision.io does not decode; PNG, because a damaged PNG (a
# flipped byte, a bad filter value) kills the whole process in torchvision 0.29's decoder (SIGSEGV on any
# libpng error) where Pillow raises, and a run must skip such a file, not die of it; WebP, whose EXIF
# orientation and animations torchvision.io ignores or refuses.
_FOR_PILLOW = frozenset({"PNG", "BMP", "TIFF", "WebP"})
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow's modes for 16-bit grey


def _image_format(head: bytes) -> str | None:
    """The format a file's first 12 bytes announce, or None for a file we do not decode."""
    if head[:4] == b"RIFF":
        return "WebP" if head[8:12] == b"WEBP" else None
    return next((name for magic, name in _SIGNATURES.items() if head.startswith(magic)), None)


def looks_like_image(path: str | Path) -> bool:
    """Cheap check (first bytes only) used when indexing thousands of files."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    return _image_format(head) is not None


def not_an_image(suffix: str | None = None) -> str:
    """The skip reason for a file whose first bytes are no image's: by its suffix when that is not an
    image's, else "unknown file signature"; worded as ffd.data.index words it."""
    if suffix is not None and suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix '{suffix.lower()}')"
    return "not an image (unknown file signature)"


def _too_many_pixels(source: str | Path) -> UnreadableImageError:
    return UnreadableImageError(
        source,
        f"too many pixels to decode safely (over {2 * Image.MAX_IMAGE_PIXELS:,})",
        "downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file and have the memory",
    )


# JPEG frame headers (SOFn), which hold the image's height and width.
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_pixels(raw: memoryview) -> int | None:
    """Width x height as a JPEG's frame header claims it, or None if not found. Read here, in a few
    microseconds: Pillow's header parse costs a fifth of a 256 px JPEG's decode."""
    at = 2  # after the start-of-image marker
    while at + 9 <= len(raw) and raw[at] == 0xFF:
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in _JPEG_FRAMES:  # FF Cn, length (2), precision (1), height (2), width (2)
            return int.from_bytes(raw[at + 5 : at + 7], "big") * int.from_bytes(raw[at + 7 : at + 9], "big")
        else:
            at += 2 + int.from_bytes(raw[at + 2 : at + 4], "big")
    return None


def _check_size(raw: memoryview, source: str | Path, kind: str) -> None:
    """Pillow's pixel limit for JPEGs, which torchvision decodes at whatever size the header claims: a 1 KB
    JPEG whose header said 65000 x 65000 took 13 GB and a minute, then was scored as an image."""
    pixels = _jpeg_pixels(raw) if kind == "JPEG" else None
    if pixels is not None and pixels > 2 * Image.MAX_IMAGE_PIXELS:
        raise _too_many_pixels(source)


def _decode_with_pillow(raw: memoryview, source: str | Path, kind: str) -> torch.Tensor:
    """PNG, BMP, TIFF and WebP (the first page or frame) with Pillow; 16-bit images keep their 8 most
    significant bits, alpha is dropped, as torchvision does for the other formats."""
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.mode in _SIXTEEN_BIT_GREY:
                grey = (np.asarray(picture).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
                array = np.repeat(grey[..., None], 3, axis=2)
            else:  # Pillow reads 16-bit RGB(A) PNGs as 8-bit already, from their high bytes
                array = np.asarray(picture.convert("RGB"))
    except Image.DecompressionBombError as error:  # not damaged: too many pixels to decode safely
        raise _too_many_pixels(source) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImageError(source, f"cannot be decoded: truncated or corrupt {kind}") from error
    # A copy always: Pillow's array is read-only, and a 1-pixel-wide one is already contiguous (no copy).
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C"))


def _decode(data: torch.Tensor, source: str | Path, suffix: str | None) -> torch.Tensor:
    """decode_rgb; ``suffix``, a file's, words the reason for a file of another kind."""
    if data.numel() == 0:
        raise UnreadableImageError(source, EMPTY_FILE, "delete it or replace it")
    raw = memoryview(data.numpy())
    kind = _image_format(bytes(raw[:12]))
    if kind is None:  # no decoder's business: torchvision's reason would be advice on its own API
        raise UnreadableImageError(source, not_an_image(suffix), f"ffd reads {FORMATS} images")
    if kind in _FOR_PILLOW:
        image = _decode_with_pillow(raw, source, kind)
    else:
        _check_size(raw, source, kind)
        try:
            image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except (RuntimeError, ValueError) as error:  # its message names C++ functions: the format says it
            raise UnreadableImageError(source, f"cannot be decoded: truncated or corrupt {kind}") from error
    if image.ndim == 4:  # an animated GIF or WebP: its first frame
        image = image[0]
    if image.dtype != torch.uint8:
        raise UnreadableImageError(source, f"unsupported pixel type ({image.dtype})", "save it as 8-bit")
    if image.ndim != 3 or image.shape[0] != 3:
        raise UnreadableImageError(source, f"decoded to shape {tuple(image.shape)}, not (3, H, W)")
    return image


def decode_rgb(data: torch.Tensor, source: str | Path = "<bytes>") -> torch.Tensor:
    """Decode encoded bytes (a 1-D uint8 tensor) to an RGB uint8 tensor of shape (3, H, W)."""
    return _decode(data, source, suffix=None)


def read_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB uint8 (3, H, W); raises UnreadableImageError naming the file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # read_bytes says why
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a named pipe would block
        raise UnreadableImageError(path, NOT_REGULAR, "remove it from the folder")
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(
            path, f"cannot be read ({error.strerror})", "check that it exists and that you may read it"
        ) from error
    # torch.frombuffer refuses an empty buffer; _decode reports an empty file clearly.
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return _decode(data, path, Path(path).suffix)


def walk_files(folder: str | Path) -> Iterator[Path]:
    """Every file under ``folder``, in a stable order (a folder's files, then its sub-folders, each
    sorted), hidden files and folders left out. Symlinked folders are followed, each real folder once,
    so a link loop ends and a folder linked twice is not listed twice. Run folders (sub-folders holding a
    Hydra .hydra/, as each ffd run's does) are left out: a second run over `.` must not take the first
    run's annotated copies for input."""
    seen: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(
            name
            for name in dirs
            if not name.startswith(".") and not os.path.isdir(os.path.join(current, name, ".hydra"))
        )
        yield from (Path(current) / name for name in sorted(files) if not name.startswith("."))


def _is_image_file(path: Path) -> bool:
    """An image by its suffix; a broken link too, so that it is listed as unreadable, not lost."""
    return (path.is_file() or path.is_symlink()) and path.suffix.lower() in IMAGE_SUFFIXES


def find_images(spec: str | Path) -> list[Path]:
    """The files named by ``input=``: an image, a folder (recursive), a glob, or a .txt list of paths.

    Folders and globs keep image suffixes only; files named explicitly (directly or in a list) are all
    kept, so that an unreadable one is reported rather than silently dropped.
    """
    spec = str(spec)  # input=5 reaches here as an int
    if not spec.strip():  # Path("") is the current folder, which would be searched whole
        raise ImageInputError(
            "input= is empty (an unset shell variable?). Pass an image file, a folder of images, a quoted "
            f"glob such as 'photos/**/*.jpg', or a {LIST_SUFFIX} file listing image paths."
        )
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == LIST_SUFFIX:
        # utf-8-sig: a list saved by Windows Notepad starts with a byte-order mark, not part of the first path
        lines = (line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
        files = [path.parent / Path(line).expanduser() for line in lines if line and not line.startswith("#")]
        where = f"the list {path} names"
    elif path.is_file():
        return [path]
    elif path.is_dir():
        files = sorted(p for p in walk_files(path) if _is_image_file(p))
        where = f"the folder {path} holds"
    elif glob.has_magic(str(path)):
        files = sorted(p for p in map(Path, glob.glob(str(path), recursive=True)) if _is_image_file(p))
        where = "the pattern matches"
    else:
        raise ImageInputError(
            f"input={spec} does not exist. Pass an image file, a folder of images, a quoted glob such as "
            f"'photos/**/*.jpg', or a {LIST_SUFFIX} file listing image paths."
        )
    if not files:
        raise ImageInputError(
            f"input={spec}: {where} no image ({', '.join(sorted(IMAGE_SUFFIXES))}). Point input= at an "
            "image, or a folder, glob or list with images in it."
        )
    return files
