"""Read any image file a user may hand us as an RGB uint8 tensor (C, H, W).

One decoder for the whole project (training data, segmentation, prediction) so that every part
sees the same pixels: torchvision.io, EXIF orientation applied, grayscale / RGBA / CMYK / 16-bit
inputs converted to 8-bit RGB.
"""

from __future__ import annotations

import glob
import re
import warnings
from pathlib import Path

import torch
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

# "decode_jpeg, /path/to/decode_jpeg.cpp:171, " before torchvision's reason for a failed decode.
_SOURCE_LOCATION = re.compile(r"^\w+, \S+\.cpp:\d+,?")
# File signatures of the formats torchvision.io decodes; anything else is not an image to us.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


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


def decode_rgb(data: torch.Tensor, source: str | Path = "<bytes>") -> torch.Tensor:
    """Decode encoded bytes (a 1-D uint8 tensor) to an RGB uint8 tensor of shape (3, H, W)."""
    if data.numel() == 0:
        raise UnreadableImageError(f"{source}: the file is empty (0 bytes); delete it or replace it.")
    try:
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError) as error:
        # torchvision prefixes its reason with the C++ function and source line: keep the reason only.
        reason = _SOURCE_LOCATION.sub("", str(error).splitlines()[0]).strip(" ,")
        raise UnreadableImageError(
            f"{source}: cannot be decoded as an image ({reason}). It is truncated, corrupt or not a "
            "JPEG/PNG/BMP/GIF/WebP file; re-download or re-export it, or remove it from the folder."
        ) from error
    if image.dtype == torch.uint16:  # 16-bit PNG: keep the 8 most significant bits
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    elif image.dtype != torch.uint8:
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


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def find_images(spec: str | Path) -> list[Path]:
    """The files named by ``input=``: an image, a folder (recursive), a glob, or a .txt list of paths.

    Folders and globs keep image suffixes only; files named explicitly (directly or in a list) are all
    kept, so that an unreadable one is reported rather than silently dropped.
    """
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == LIST_SUFFIX:
        lines = (line.strip() for line in path.read_text().splitlines())
        files = [path.parent / Path(line).expanduser() for line in lines if line and not line.startswith("#")]
        where = f"the list {path} names"
    elif path.is_file():
        return [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if _is_image_file(p))
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
