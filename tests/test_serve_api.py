"""ffd.serve's API through FastAPI's TestClient: verdicts equal to ffd.predict's on the same files and model,
each bad upload's status and message (and the service serving on after it), the key, the queue.

The model is the session's tiny ViT checkpoint (its verdicts mean nothing; the machinery is checked).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from matplotlib import cbook
from PIL import Image
from rich.console import Console
from skimage import data as skdata
from torchvision.io import decode_png, encode_jpeg

from cli import run_ffd
from ffd.assets import sha256_of
from ffd.inference import predict
from ffd.serve.app import create_app
from ffd.serve.batching import Batcher
from ffd.serve.service import Limits, open_service
from ffd.serve.uploads import safe_name

LIMITS = Limits(max_upload_mb=4, max_pixels=40_000_000, max_images=3, timeout_s=60)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height with a few hundred bytes of pixel data: a decompression bomb's header
    (its rows would inflate from a stream of zeros)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(4096), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder with the astronaut (one face), Grace Hopper (one face) and a noise image (no face)."""
    folder = tmp_path_factory.mktemp("serve_photos")
    (folder / "astronaut.png").write_bytes(png_bytes(skdata.astronaut()))
    (folder / "grace_hopper.jpg").write_bytes(
        Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    )
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    (folder / "noise.png").write_bytes(png_bytes(noise))
    return {path.name: path for path in folder.iterdir()}


@pytest.fixture(scope="module")
def service(tiny_checkpoints, finder):
    with open_service(
        tiny_checkpoints["vit"], face="auto", finder=finder, limits=LIMITS, device="cpu"
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as test_client:
        yield test_client


@pytest.fixture
def limits(service, monkeypatch):
    """Change the running service's limits for one test: limits(max_images=1)."""
    return lambda **changes: monkeypatch.setattr(
        service, "limits", dataclasses.replace(service.limits, **changes)
    )


def files(*named: tuple[str, bytes], kind: str = "image/png") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, content, kind)) for name, content in named]


def test_verdicts_equal_ffd_predicts_on_the_same_files_and_model(
    client, photos, tiny_checkpoints, finder, tmp_path
):
    sent = [(name, path.read_bytes()) for name, path in sorted(photos.items())]
    answer = client.post("/v1/predict", files=files(*sent, kind="application/octet-stream"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    console = Console(file=io.StringIO(), width=200)
    run = predict(photos["noise.png"].parent, tiny_checkpoints["vit"], tmp_path / "run", num_workers=0,
                  console=console, face="auto", finder=finder)  # fmt: skip
    expected = {}
    for row in run.rows:
        expected.setdefault(Path(row.path).name, []).append(row)
    images = {image["name"]: image for image in body["images"]}
    assert sorted(images) == sorted(photos)
    for name, rows in expected.items():
        got = images[name]["predictions"]
        assert [(r["face"], r["box"], r["verdict"], r["notes"]) for r in got] == [
            (row.face, row.box, row.verdict, row.notes) for row in rows
        ]
        assert [r["p_fake"] for r in got] == pytest.approx([row.p_fake for row in rows], abs=1e-5)
        assert [r["confidence"] for r in got] == pytest.approx([row.confidence for row in rows], abs=1e-5)
    assert {Path(path).name: reason for path, reason in run.no_face} == {
        "noise.png": images["noise.png"]["no_face"]
    }
    assert images["noise.png"]["predictions"] == []
    assert body["threshold"] == run.threshold
    assert body["model"]["sha256"] == sha256_of(tiny_checkpoints["vit"])


def test_explain_adds_heatmaps_and_region_shares(client, photos):
    answer = client.post("/v1/explain", files=files(("astronaut.png", photos["astronaut.png"].read_bytes())))
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["images"][0]["predictions"]
    heatmap = decode_png(torch.frombuffer(bytearray(base64.b64decode(row["heatmap_png"])), dtype=torch.uint8))
    assert heatmap.shape == (3, 32, 32)  # the crop the 32 px model saw, with its heatmap
    assert set(row["regions"]) >= {"eyes", "lips", "skin"} and sum(row["regions"].values()) == pytest.approx(
        1
    )
    (a, b, e), (c, d, f) = row["to_photo"]  # the crop's centre lands inside the face's box
    x, y = a * 16 + b * 16 + e, c * 16 + d * 16 + f
    x0, y0, x1, y1 = row["box"]
    assert x0 < x < x1 and y0 < y < y1


def test_model_healthz_docs_and_the_page(client, service, tiny_checkpoints):
    assert client.get("/healthz").json() == {"status": "ok"}
    about = client.get("/v1/model").json()
    assert about["model"]["name"] == "vit" and about["model"]["sha256"] == sha256_of(tiny_checkpoints["vit"])
    assert about["decision"]["threshold"] == service.decision.threshold
    assert about["explain"] is True and about["limits"]["max_images"] == LIMITS.max_images
    assert about["batching"]["images"] >= 1  # the earlier tests' requests went through the queue
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/page/app.js">' in page.text
    assert "/v1/predict" in client.get("/page/app.js").text
    assert client.get("/page/style.css").status_code == 200


BOMB = png_header_only(100_000, 100_000)  # over twice Pillow's own limit
TRUNCATED = encode_jpeg(torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).contiguous()).numpy().tobytes()


@pytest.mark.parametrize(
    ("sent", "kind", "status", "words"),
    [
        (("bomb.png", BOMB), "image/png", 413, ["bomb.png", "decompression bomb"]),
        (
            ("big.png", png_header_only(8000, 6000)),
            "image/png",
            413,
            ["big.png", "48,000,000 pixels", "max_pixels"],
        ),
        (
            ("cut.jpg", TRUNCATED[: len(TRUNCATED) // 2]),
            "image/jpeg",
            422,
            ["cut.jpg", "truncated or corrupt JPEG"],
        ),
        (("notes.jpg", b"a text file, named .jpg"), "image/jpeg", 422, ["notes.jpg", "not an image"]),
        (("empty.png", b""), "image/png", 422, ["empty.png", "empty file"]),
        (("notes.txt", b"plain text"), "text/plain", 415, ["notes.txt", "text/plain", "not as an image"]),
    ],
)
def test_a_bad_upload_gets_a_4xx_naming_it_and_the_service_serves_on(
    client, photos, sent, kind, status, words
):
    answer = client.post("/v1/predict", files=files(sent, kind=kind))
    assert answer.status_code == status, answer.text
    for word in words:
        assert word in answer.json()["detail"]
    assert (
        client.post("/v1/predict", files=files(("a.png", photos["astronaut.png"].read_bytes()))).status_code
        == 200
    )


def test_a_request_names_every_bad_photo_in_it(client, photos):
    sent = [("a.png", photos["astronaut.png"].read_bytes()), ("x.jpg", b"text"), ("y.jpg", b"more text")]
    answer = client.post("/v1/predict", files=files(*sent))
    assert answer.status_code == 422
    assert "2 of 3 photos cannot be judged" in answer.json()["detail"]
    assert "x.jpg" in answer.json()["detail"] and "y.jpg" in answer.json()["detail"]


def test_too_many_photos_too_big_a_body_and_the_wrong_content_type(client, photos, limits):
    one = ("a.png", photos["astronaut.png"].read_bytes())
    answer = client.post("/v1/predict", files=files(*[one] * 4))
    assert (
        answer.status_code == 400 and "4 photos in one request, over max_images=3" in answer.json()["detail"]
    )
    empty = {"content": b"--b--\r\n", "headers": {"content-type": "multipart/form-data; boundary=b"}}
    answer = client.post("/v1/predict", **empty)
    assert answer.status_code == 400 and "the request holds no photo" in answer.json()["detail"]
    answer = client.post("/v1/predict", files=files(one), data={"note": "a field, not a file"})
    assert answer.status_code == 400 and "the form field 'note' is not a file" in answer.json()["detail"]
    limits(max_upload_mb=0.1)
    answer = client.post("/v1/predict", files=files(one))  # the astronaut's PNG is 0.5 MB
    assert answer.status_code == 413 and "max_upload_mb=0.1" in answer.json()["detail"]
    answer = client.post(
        "/v1/predict", content=json.dumps({"image": "..."}), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 415 and "not multipart/form-data" in answer.json()["detail"]


def test_a_request_over_its_time_gets_504_and_the_service_serves_on(client, photos, limits):
    limits(timeout_s=0.001)  # below the face search's own time
    answer = client.post("/v1/predict", files=files(("a.png", photos["astronaut.png"].read_bytes())))
    assert answer.status_code == 504 and "timeout_s=0.001" in answer.json()["detail"]
    limits(timeout_s=60)
    assert (
        client.post("/v1/predict", files=files(("a.png", photos["astronaut.png"].read_bytes()))).status_code
        == 200
    )


def test_explain_with_an_onnx_model_is_refused_naming_the_fix(client, service, photos, monkeypatch):
    monkeypatch.setattr(service, "detector", dataclasses.replace(service.detector, classifier=None))
    answer = client.post("/v1/explain", files=files(("a.png", photos["astronaut.png"].read_bytes())))
    assert answer.status_code == 400 and "needs the model's .ckpt" in answer.json()["detail"]


def test_nothing_is_written_to_disk_without_save_uploads(client, photos, monkeypatch, tmp_path):
    """A 2 MB upload, over the 1 MB at which Starlette's own form parser spools a part to a temporary file."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = png_bytes(np.random.default_rng(1).integers(0, 256, (900, 900, 3), dtype=np.uint8))
    assert len(big) > 2**21
    assert client.post("/v1/predict", files=files(("noise.png", big))).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_save_uploads_keeps_each_upload_inside_its_folder_under_a_safe_name(client, photos, limits, tmp_path):
    folder = (tmp_path / "kept").resolve()
    folder.mkdir()
    limits(save_uploads=folder)
    content = photos["astronaut.png"].read_bytes()
    names = ["../../escape.png", "..\\..\\win.png", "/etc/passwd", ".hidden.png", "ok face.png"]
    answer = client.post("/v1/predict", files=files(*[(name, content) for name in names]))
    assert answer.status_code == 400  # five photos, over max_images=3: refused, and nothing is kept
    assert list(folder.iterdir()) == []
    limits(save_uploads=folder, max_images=5)
    assert client.post("/v1/predict", files=files(*[(name, content) for name in names])).status_code == 200
    kept = sorted(path.name.split("-", 2)[2] for path in folder.iterdir())
    assert kept == sorted(["escape.png", "win.png", "passwd", "hidden.png", "ok_face.png"])
    assert all(path.read_bytes() == content for path in folder.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]  # nothing beside or above it
    assert safe_name("..") == "upload" and safe_name("a/b/../../c.jpg") == "c.jpg"


def test_the_api_key_guards_every_v1_call_but_not_healthz(tiny_checkpoints, photos):
    with (
        open_service(tiny_checkpoints["vit"], face="none", device="cpu", limits=LIMITS) as opened,
        TestClient(create_app(opened, api_key="s3cret")) as keyed,
    ):
        assert keyed.get("/healthz").status_code == 200
        for given, word in ((None, "no API key"), ("wrong", "a wrong API key")):
            headers = {"X-API-Key": given} if given else {}
            answer = keyed.get("/v1/model", headers=headers)
            assert answer.status_code == 401 and word in answer.json()["detail"]
            sent = files(("a.png", photos["astronaut.png"].read_bytes()))
            assert keyed.post("/v1/predict", files=sent, headers=headers).status_code == 401
        assert keyed.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        sent = files(("a.png", photos["astronaut.png"].read_bytes()))
        answer = keyed.post("/v1/predict", files=sent, headers={"X-API-Key": "s3cret"})
        assert answer.status_code == 200 and answer.json()["images"][0]["predictions"][0]["face"] is None


def test_a_bug_is_a_json_500_and_the_service_serves_on(tiny_checkpoints, photos, monkeypatch):
    with open_service(tiny_checkpoints["vit"], face="none", device="cpu", limits=LIMITS) as opened:
        real = opened.answer

        async def broken_once(*args, **kwargs):
            monkeypatch.setattr(opened, "answer", real)
            raise RuntimeError("a bug")

        monkeypatch.setattr(opened, "answer", broken_once)
        with TestClient(create_app(opened), raise_server_exceptions=False) as test_client:
            sent = files(("a.png", photos["astronaut.png"].read_bytes()))
            answer = test_client.post("/v1/predict", files=sent)
            assert answer.status_code == 500 and answer.json() == {
                "detail": "internal error (RuntimeError): a bug"
            }
            assert test_client.post("/v1/predict", files=sent).status_code == 200


def test_requests_arriving_together_are_judged_in_one_batch_and_each_gets_its_own_answer():
    sizes = []

    def run(images: torch.Tensor) -> np.ndarray:
        sizes.append(len(images))
        if (images == 255).any():
            raise ValueError("a broken batch")
        return images[:, 0, 0, 0].float().numpy()

    async def scenario() -> list:
        batcher = Batcher(run, batch_size=4, max_wait_ms=50)
        batcher.start()
        requests = [torch.full((2, 3, 1, 1), value, dtype=torch.uint8) for value in (1, 2, 3)]
        answers = await asyncio.gather(*(batcher(images) for images in requests))
        broken = await asyncio.gather(
            batcher(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)), return_exceptions=True
        )
        after = await batcher(torch.full((1, 3, 1, 1), 7, dtype=torch.uint8))
        stats = batcher.stats.summary()
        await batcher.stop()
        return [answers, broken, after, stats]

    answers, broken, after, stats = asyncio.run(scenario())
    assert sizes == [4, 2, 1, 1]  # two requests filled a batch of 4; the third waited for the next
    assert [list(answer) for answer in answers] == [[1, 1], [2, 2], [3, 3]]
    assert isinstance(broken[0], ValueError) and list(after) == [7]  # the queue serves on after a failure
    assert stats["batches"] == 3 and stats["requests"] == 4 and stats["largest_batch"] == 4


def test_the_command_refuses_bad_options_naming_them(tiny_checkpoints, tmp_path):
    options = [f"model={tiny_checkpoints['vit']}", "max_images=0", "timeout_s=-1", "face=none"]
    result = run_ffd("ffd.serve", *options, root=tmp_path, expect_ok=False)
    assert result.returncode == 1
    assert "max_images=0 must be a whole number, at least 1" in result.stderr
    assert "timeout_s=-1 must be a number above 0" in result.stderr and "conf/serve.yaml" in result.stderr
    help_text = run_ffd("ffd.serve", "--help", root=tmp_path).stdout
    assert "python -m ffd.serve model=CKPT_OR_ONNX" in help_text and "max_upload_mb: 20" in help_text
