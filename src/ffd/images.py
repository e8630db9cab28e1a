"""Read any image file a user may hand us as an RGB uint8 tensor (C, H, W).

One decoder for the whole project (training data, segmentation, prediction) so that every part
sees the same pixels: torchvision.io for JPEG and GIF, Pillow for PNG, BMP, TIFF and WebP, EXIF
orientation applied, grayscale / RGBA / CMYK / 16-bit inputs converted to 8-bit RGB, the first frame
of an animation.
"""

from __future__ import annotations

import glob
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec, warning on every call.
# They are still the fastest decoder we can depend on; this module is the one place to switch later.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

LIST_SUFFIX = ".txt"  # input=paths.txt: one image path per line
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})

# "decode_jpeg, /path/to/decode_jpeg.cpp:171, " (or "operator(), ...") before torchvision's reason for a
# failed decode.
_SOURCE_LOCATION = re.compile(r"^[^,]+, \S+\.cpp:\d+,?")
# Decoded with Pillow: BMP and TIFF, which torchvision.io does not decode; PNG, because a damaged PNG (a
# flipped byte, a bad filter value) kills the whole process in torchvision 0.29's decoder (SIGSEGV on any
# libpng error) where Pillow raises, and a run must skip such a file, not die of it; WebP, whose EXIF
# orientation and animations torchvision.io ignores or refuses.
_FOR_PILLOW = (b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
# File signatures of the formats we decode; anything else is not an image to us.
_MAGIC = (b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", *_FOR_PILLOW)
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow's modes for 16-bit grey


class UnreadableImageError(ValueError):
    """A file that is not a decodable image (empty, truncated, corrupt or another format)."""


class ImageInputError(ValueError):
    """An ``input=`` that names no image: a path that does not exist, an empty folder, glob or list."""


def looks_like_image(path: str | Path) -> bool:
    """Cheap check (first bytes only) used when indexing thousands of files."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    if head.startswith(b"RIFF") and head[8:12] != b"WEBP":
        return False
    return any(head.startswith(magic) for magic in _MAGIC)


def _undecodable(source: str | Path, reason: str) -> UnreadableImageError:
    return UnreadableImageError(
        f"{source}: cannot be decoded as an image ({reason}). It is truncated, corrupt or not a "
        "JPEG/PNG/BMP/TIFF/GIF/WebP file; re-download or re-export it, or remove it from the folder."
    )


def _decode_with_pillow(raw: memoryview, source: str | Path) -> torch.Tensor:
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
        raise UnreadableImageError(
            f"{source}: {error} It is skipped; downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if you "
            "trust the file and have the memory."
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _undecodable(source, str(error) or type(error).__name__) from error
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def decode_rgb(data: torch.Tensor, source: str | Path = "<bytes>") -> torch.Tensor:
    """Decode encoded bytes (a 1-D uint8 tensor) to an RGB uint8 tensor of shape (3, H, W)."""
    if data.numel() == 0:
        raise UnreadableImageError(f"{source}: the file is empty (0 bytes); delete it or replace it.")
    raw = memoryview(data.numpy())
    webp = raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    if webp or any(raw[: len(magic)] == magic for magic in _FOR_PILLOW):
        image = _decode_with_pillow(raw, source)
    else:
        try:
            image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except (RuntimeError, ValueError) as error:
            # torchvision prefixes its reason with the C++ function and source line: keep the reason only.
            reason = _SOURCE_LOCATION.sub("", str(error).splitlines()[0]).strip(" ,")
            raise _undecodable(source, reason) from error
    if image.ndim == 4:  # an animated GIF or WebP: its first frame
        image = image[0]
    if image.dtype != torch.uint8:
        raise UnreadableImageError(f"{source}: unsupported pixel type {image.dtype}; save it as 8-bit.")
    if image.ndim != 3 or image.shape[0] != 3:
        raise UnreadableImageError(f"{source}: decoded to shape {tuple(image.shape)}, expected (3, H, W).")
    return image


def read_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB uint8 (3, H, W); raises UnreadableImageError naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"{path}: cannot be read ({error.strerror}).") from error
    # torch.frombuffer refuses an empty buffer; decode_rgb reports an empty file clearly.
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return decode_rgb(data, path)


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
