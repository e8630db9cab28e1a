"""A live ``python -m ffd.serve`` on 127.0.0.1, started as a user starts it: the key from the environment,
and the page in a real browser: Debian's chromium, headless, driven by playwright, loads ``/``, uploads
the astronaut photo, and shows a verdict and a drawn box.

The browser test is skipped where no chromium binary is on PATH (``apt-get install chromium`` runs it;
.ci/run installs it when it runs as root); tests/test_serve_api.py still covers the JSON the page draws.
Playwright's own browser download is never used. ``FFD_SCREENSHOT=1`` also writes the screenshot to
docs/images/serve_page.png, the one docs/serve.md shows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skdata

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve_page.png"
REAL = (40, 170, 70)  # ffd.faces.judge's verdict colours, which the page draws too
FAKE = (220, 40, 40)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_service(checkpoint: Path, folder: Path, *options: str, env: dict[str, str] | None = None):
    """``python -m ffd.serve`` as a user starts it, on a free port; its URL once /healthz answers."""
    port = free_port()
    command = [sys.executable, "-m", "ffd.serve", f"model={checkpoint}", f"port={port}", *options]
    command.append("models.download=false")  # the landmarker from the offline copy, as the tests take it
    log = (folder / "serve.log").open("w")
    environment = {**os.environ, "FFD_ROOT": str(folder), **(env or {})}
    process = subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"ffd.serve exited with {process.returncode}:\n{(folder / 'serve.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ffd.serve did not answer in 120 s:\n{(folder / 'serve.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_key_from_the_environment_guards_the_api_and_stays_out_of_the_run_folder(
    tiny_checkpoints, tmp_path
):
    with live_service(
        tiny_checkpoints["vit"], tmp_path, "face=none", env={"FFD_API_KEY": "k3y-from-env"}
    ) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "k3y-from-env"}).status_code == 200
        assert httpx.get(url).status_code == 200  # the page's own files are open: it asks for the key
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert written and not any("k3y-from-env" in path.read_text(errors="replace") for path in written)


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH: `apt-get install chromium` (Debian) runs this test"
)
def test_the_page_judges_an_uploaded_photo_and_draws_its_box(tiny_checkpoints, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    with live_service(tiny_checkpoints["vit"], tmp_path) as url, sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 880})
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.startsWith('Model vit')")
            page.check("#explain")
            page.set_input_files("#files", str(photo))
            page.wait_for_selector("canvas[data-boxes]", timeout=60_000)
            said = page.inner_text(".verdicts .verdict")
            assert said in ("Real", "Fake")
            assert "Face 0:" in page.inner_text(".verdicts") and "heatmap share" in page.inner_text(
                "table.regions"
            )
            answer = httpx.post(f"{url}/v1/predict", files={"files": photo.open("rb")}).json()
            (row,) = answer["images"][0]["predictions"]
            assert said.lower() == row["verdict"]  # the page shows what the API answers
            x0, y0, _, y1 = (round(value) for value in row["box"])
            pixel = page.evaluate(
                f"Array.from(document.querySelector('canvas').getContext('2d')"
                f".getImageData({x0}, {(y0 + y1) // 2}, 1, 1).data)"
            )
            assert tuple(pixel[:3]) == (REAL if said == "Real" else FAKE)  # the box's left edge
            assert page.get_attribute("canvas", "data-boxes") == "1"
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert Image.open(shot).size[0] == 1100
            if os.environ.get("FFD_SCREENSHOT") == "1":
                shutil.copyfile(shot, DOCS_SCREENSHOT)
        finally:
            browser.close()
