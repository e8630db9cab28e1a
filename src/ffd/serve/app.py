"""The FastAPI application: the REST API, the page at ``/`` and OpenAPI at ``/docs``.

Every refusal is a 4xx JSON answer ``{"detail": "..."}`` naming the problem and the fix, and the service
goes on serving. With an API key, every ``/v1/`` call needs it in the ``X-API-Key`` header; ``/healthz``,
the page's own files (which hold nothing of the model) and the OpenAPI description stay open, so that a
browser can load the page and then send the key it is given.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from ffd import __version__
from ffd.serve.service import Service
from ffd.serve.uploads import FIELD, ServeError, boundary_of, photos_of, read_body

PAGE = Path(__file__).resolve().parent / "page"
KEY_HEADER = "X-API-Key"
# The upload, described for OpenAPI: the body is read by ffd.serve.uploads, not by FastAPI's form parser.
UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": [FIELD],
                }
            }
        },
    }
}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "no photo, too many photos, or a body that is not valid multipart"},
    401: {"description": "a missing or wrong X-API-Key (when the service has a key)"},
    413: {"description": "over max_upload_mb, or a photo over max_pixels (a decompression bomb)"},
    415: {"description": "not multipart/form-data, or a part that is not sent as an image"},
    422: {"description": "a file that is no image: truncated, corrupt, another format"},
    504: {"description": "the request took longer than timeout_s"},
}


def create_app(service: Service, api_key: str | None = None) -> FastAPI:
    """The app over an open ``service``; the model's queue runs from the app's start to its stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(
        title="ffd",
        version=__version__,
        summary="Real/Fake verdicts per face for uploaded photos, as python -m ffd.predict gives them.",
        lifespan=lifespan,
    )
    key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="when started with api_key")

    @app.exception_handler(ServeError)
    async def refused(request: Request, error: ServeError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        """A bug, not the request's fault: JSON as every answer is, and uvicorn logs the trace."""
        return JSONResponse({"detail": f"internal error ({type(error).__name__}): {error}"}, status_code=500)

    def check_key(given: str | None = Depends(key_header)) -> None:
        if api_key and not hmac.compare_digest((given or "").encode(), api_key.encode()):
            wrong = "a wrong" if given else "no"
            raise ServeError(
                401,
                f"{wrong} API key: this service needs its key in the {KEY_HEADER} header of every /v1/ call.",
            )

    async def judge(request: Request, explain: bool) -> dict[str, Any]:
        limits = service.limits

        async def read_and_answer() -> dict[str, Any]:
            boundary = boundary_of(request.headers.get("content-type"))
            declared = request.headers.get("content-length")
            body = await read_body(request.stream(), limits.max_upload_mb, declared)
            return await service.answer(photos_of(body, boundary, limits.max_images), explain)

        try:
            return await asyncio.wait_for(read_and_answer(), limits.timeout_s)
        except asyncio.TimeoutError:
            raise ServeError(
                504,
                f"the request took over timeout_s={limits.timeout_s:g} s: send fewer photos per request, "
                "or start the service with a larger timeout_s.",
            ) from None

    guarded = [Depends(check_key)]

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Up and serving (never needs the key)."""
        return {"status": "ok"}

    @app.get("/v1/model", tags=["service"], dependencies=guarded, responses={401: REFUSALS[401]})
    async def model() -> dict[str, Any]:
        """The model (name, file, sha256), its card and decision, the face mode, the limits, the queue."""
        return service.info()

    @app.post("/v1/predict", tags=["judge"], dependencies=guarded, openapi_extra=UPLOAD, responses=REFUSALS)
    async def predict(request: Request) -> dict[str, Any]:
        """Per photo, per face judged (or the whole image): box, P(fake), verdict, confidence, notes."""
        return await judge(request, explain=False)

    @app.post("/v1/explain", tags=["judge"], dependencies=guarded, openapi_extra=UPLOAD, responses=REFUSALS)
    async def explain(request: Request) -> dict[str, Any]:
        """As /v1/predict, and per face its Grad-CAM heatmap (a PNG, base64) and region shares."""
        return await judge(request, explain=True)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    app.mount("/page", StaticFiles(directory=PAGE), name="page")
    return app
