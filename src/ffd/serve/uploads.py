"""A request's photos, read into memory under the service's limits, and written to disk only where asked.

Starlette's own form parser spools a part over 1 MB to a temporary file; the service promises to write
nothing of a request unless ``save_uploads=`` names a folder, so the body is read here, bounded by
``max_upload_mb`` whether or not the client declared its length, and split into in-memory parts with
python-multipart's parser (the one Starlette uses).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from ffd.errors import UserError

FIELD = "files"  # the form field the photos are sent in: curl -F files=@photo.jpg
ACCEPTED_TYPES = ("image/", "application/octet-stream")  # curl sends octet-stream for an unknown suffix
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
HOW_TO_SEND = f"send the photos as multipart/form-data, one part per photo in the field '{FIELD}'"


class ServeError(UserError):
    """A request the service refuses: its HTTP status (4xx) and the one-paragraph reason it answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """One photo as the client sent it: its file name (for the answer, never used as a path)."""

    name: str
    content_type: str
    data: bytes


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a request's Content-Type; 415 for a body that is not multipart."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise ServeError(
            415,
            f"Content-Type {content_type or '(none)'} is not multipart/form-data: {HOW_TO_SEND} "
            f"(curl -F {FIELD}=@photo.jpg URL).",
        )
    return options[b"boundary"]


def too_big(size: int, max_mb: float) -> ServeError:
    return ServeError(
        413,
        f"the upload is {size / 2**20:.1f} MB or more, over max_upload_mb={max_mb:g}: send fewer or "
        "smaller photos per request, or start the service with a larger max_upload_mb.",
    )


async def read_body(chunks: AsyncIterator[bytes], max_mb: float, declared: str | None) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_mb`` MiB, or at once when its declared
    Content-Length does."""
    limit = int(max_mb * 2**20)
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big(int(declared), max_mb)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_big(len(body), max_mb)
    return bytes(body)


@dataclass
class Part:
    """One part of a multipart body, in memory: its headers (lower-case names) and its data."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False


def split_parts(body: bytes, boundary: bytes) -> list[Part]:
    """The parts of a multipart body; 400 for a body that is not valid multipart or ends inside a part."""
    parts: list[Part] = []
    name, value = bytearray(), bytearray()

    def on_header_end() -> None:
        parts[-1].headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_part_end() -> None:
        parts[-1].ended = True

    callbacks = {
        "on_part_begin": lambda: parts.append(Part()),
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": on_header_end,
        "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise ServeError(400, f"the multipart body cannot be parsed ({error}): {HOW_TO_SEND}.") from error
    if parts and not parts[-1].ended:
        raise ServeError(400, "the multipart body ends inside a part (a truncated upload?): send it again.")
    return parts


def photos_of(body: bytes, boundary: bytes, max_images: int) -> list[Upload]:
    """The photos of a multipart body; 400 for none, for more than ``max_images`` or for a part that is no
    file, 415 for a part whose type is not an image's."""
    uploads = []
    for part in split_parts(body, boundary):
        headers = part.headers
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        if filename is None:
            raise ServeError(400, f"the form field '{name}' is not a file: {HOW_TO_SEND}.")
        filename = filename.decode("utf-8", "replace")
        kind = headers.get(b"content-type", b"application/octet-stream").decode("latin-1").strip()
        if not kind.lower().startswith(ACCEPTED_TYPES):
            raise ServeError(
                415,
                f"{filename}: sent as {kind}, not as an image: send photos as image/* (curl -F "
                f"{FIELD}=@photo.jpg sets it from the suffix) or application/octet-stream.",
            )
        uploads.append(Upload(filename, kind, bytes(part.data)))
    if not uploads:
        raise ServeError(400, f"the request holds no photo: {HOW_TO_SEND}.")
    if len(uploads) > max_images:
        raise ServeError(
            400,
            f"{len(uploads)} photos in one request, over max_images={max_images}: send them in requests of "
            f"at most {max_images}, or start the service with a larger max_images.",
        )
    return uploads


def safe_name(name: str) -> str:
    """A client's file name reduced to a harmless one: its last path component, letters, digits, dots,
    dashes and underscores, no leading dot, at most 100 characters."""
    base = _UNSAFE.sub("_", re.split(r"[\\/]", name)[-1]).lstrip("._")[:100]
    return base or "upload"


def save_uploads(folder: Path, uploads: list[Upload]) -> list[Path]:
    """Write each upload into ``folder`` (resolved at start) under a new name: a timestamp, a random tag
    and the sanitised client name. Never outside the folder, never over an existing file."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    written = []
    for upload in uploads:
        target = folder / f"{stamp}-{uuid.uuid4().hex[:8]}-{safe_name(upload.name)}"
        with open(target, "xb") as handle:
            handle.write(upload.data)
        written.append(target)
    return written
