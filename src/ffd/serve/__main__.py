"""python -m ffd.serve model=CKPT_OR_ONNX [host=127.0.0.1 port=8000] [api_key=KEY] [save_uploads=DIR]

Loads the model once, checks every option before, and serves the API and the page with uvicorn until
Ctrl-C. conf/serve.yaml holds the options and their defaults.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from ffd.errors import UserError
from ffd.faces.align import FINDER_OPTIONS, FaceFinder
from ffd.faces.judge import FACE_MODES, FALLBACKS
from ffd.hints import suggest_keys
from ffd.inference import decision_line
from ffd.models.card import card_line, synthetic_warning
from ffd.options import count_problem, device_problem, threshold_problem
from ffd.runtime import exit_on_user_error, needs_extra, store_task_config
from ffd.segmentation.pipeline import model_file
from ffd.serve.service import Limits, open_service

KEY_VARIABLE = "FFD_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SERVE_MODULES = ("fastapi", "uvicorn", "starlette", "python_multipart")

# As ffd.predict: composed from the config store, since model= is this command's argument and, in conf/, a
# config group of training.
store_task_config("serve", FACE_MODES)


class ServeOptionError(UserError):
    """An ffd.serve option that cannot be used."""


def positive_problem(value: Any, key: str, zero: bool = False) -> str | None:
    """Why ``value`` cannot be the size or time ``key`` (a number above 0, or at least 0), or None."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not zero)
    ):
        return f"{key}={value} must be a number {'of 0 or more' if zero else 'above 0'}"
    return None


def check_options(cfg: DictConfig) -> None:
    """Refuse every option that cannot be used, naming each, before the model loads."""
    port = cfg.port
    problems = [
        None
        if cfg.face.mode in FACE_MODES
        else f"face={cfg.face.mode} is not one of {', '.join(FACE_MODES)}",
        None
        if cfg.face.fallback in FALLBACKS
        else f"face.fallback={cfg.face.fallback} is not one of {', '.join(FALLBACKS)}",
        None if cfg.threshold is None else threshold_problem(cfg.threshold, "threshold"),
        device_problem(str(cfg.device)),
        count_problem(port, "port", minimum=0) or (f"port={port} is over 65535" if port > 65535 else None),
        count_problem(cfg.max_pixels, "max_pixels"),
        count_problem(cfg.max_images, "max_images"),
        count_problem(cfg.batch_size, "batch_size"),
        positive_problem(cfg.max_upload_mb, "max_upload_mb"),
        positive_problem(cfg.timeout_s, "timeout_s"),
        positive_problem(cfg.max_wait_ms, "max_wait_ms", zero=True),
        None if cfg.api_key is None or str(cfg.api_key).strip() else "api_key= is empty: give a key or null",
    ]
    if problems := [problem for problem in problems if problem]:
        raise ServeOptionError(
            f"{'; '.join(problems)}. Fix the option on the command line or in conf/serve.yaml."
        )


def upload_folder(value: str | None) -> Path | None:
    """save_uploads= as an existing folder (made if missing), resolved: uploads go there and nowhere else."""
    if value is None:
        return None
    folder = Path(value).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ServeOptionError(f"save_uploads={value} is a file: name a folder (made if missing), or null.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@suggest_keys("serve", config_dir=None)
@hydra.main(version_base="1.3", config_path=None, config_name="serve")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    try:
        import uvicorn

        from ffd.serve.app import create_app
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in SERVE_MODULES:
            raise
        raise ServeOptionError(f"python -m ffd.serve {needs_extra(error.name, 'serve')}") from error
    check_options(cfg)
    limits = Limits(
        float(cfg.max_upload_mb),
        cfg.max_pixels,
        cfg.max_images,
        float(cfg.timeout_s),
        upload_folder(cfg.save_uploads),
    )
    finder = None
    if cfg.face.mode != "none":
        landmarker = model_file(cfg, "face_landmarker.task")  # before the model: a missing file is one error
        finder = partial(FaceFinder, landmarker, **{key: cfg.face[key] for key in FINDER_OPTIONS})
    api_key = str(cfg.api_key) if cfg.api_key is not None else os.environ.get(KEY_VARIABLE) or None
    with open_service(
        cfg.model,
        threshold=cfg.threshold,
        device=cfg.device,
        face=cfg.face.mode,
        fallback=cfg.face.fallback,
        finder=finder,
        limits=limits,
        batch_size=cfg.batch_size,
        max_wait_ms=float(cfg.max_wait_ms),
    ) as service:
        about, card = service.about, service.detector.notes.get("card", {})
        print(f"ffd.serve: {about['name']} ({about['file']}, sha256 {about['sha256'][:12]}).")
        print(card_line(card), decision_line(service.decision), sep="\n")
        if warning := synthetic_warning(card):
            print(f"Warning: {warning}")
        if cfg.host not in LOOPBACK:
            print(
                f"Serving every network interface at {cfg.host}" + ("" if api_key else ", with no api_key.")
            )
        print(f"The page: http://{cfg.host}:{cfg.port}/  API docs: http://{cfg.host}:{cfg.port}/docs")
        uvicorn.run(create_app(service, api_key), host=cfg.host, port=cfg.port, log_level="info")


if __name__ == "__main__":
    main()
