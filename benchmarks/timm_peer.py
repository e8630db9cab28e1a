"""ffd.train against timm's own train.py: training images/s on the same GPU, files, batch size and settings.

    python benchmarks/timm_peer.py --timm-train PATH/train.py [--models densenet,vit] [--images 51200]
        [--small-images 6400] [--val-images 1024] [--image-size 256] [--batch-size 128] [--workers N]
        [--device cuda|cpu] [--densenet-peer timm|ffd] [--skip-timm | --skip-ffd] [--data DIR] [--out DIR]

timm's train.py is what an ML engineer would use to train DenseNet121 on an image folder. It ships in no
timm wheel or sdist: ``--timm-train`` (or ``TIMM_TRAIN``) points at train.py in a checkout of
pytorch-image-models at the installed timm's tag (the error without one prints the ``git clone``).

Both tools train one epoch on the synthetic set (``ffd.data.synthetic``) written at ``--image-size`` as
JPEG files in the layout both read, ROOT/{train,valid,test}/{real,fake}/ (timm reads train and valid; ffd
also tests on test and writes its report). On a GPU both run bf16 autocast, channels_last and
torch.compile (inductor, default mode):

- ffd: ``python -m ffd.train data=kaggle data.root=ROOT model=densenet|vit trainer=gpu
  trainer.max_epochs=1 callbacks.speed.compile=true``, the report, metrics, checkpoints and the start-up
  audit on, as a user runs it. DenseNet121 from random weights with ``callbacks.finetune=null``: the whole
  network trains in the one epoch measured (fine-tuning's frozen first stage would train the head only);
- timm: ``train.py --model densenet121 --num-classes 2 --amp --amp-dtype bfloat16 --channels-last
  --torchcompile inductor --opt adamw ...``; timm's own densenet121 is DenseNet's peer, the ViT is ffd's
  (``ffd_vit``, registered by benchmarks/timm_peer_models.py, which then runs train.py). Its class map
  puts real = 0, fake = 1 as in ffd; AdamW at ffd's 1e-3 so that both do the same update; its own
  augmentation (random resized crop, flip, colour jitter in the loader workers) and everything else at
  train.py's defaults.

``--batch-size`` and ``--workers`` are the same on both sides. Timing, on both sides the same: each tool
runs twice, on a train split of ``--small-images`` and of ``--images`` (the same validation split, one
epoch each), and the steady rate is (N_big - N_small) / (T_big - T_small) of wall time, so start-up,
compilation, validation and ffd's test and report (the same in both runs) drop out. An untimed warm-up run
on the small split comes first (``--no-warmup``: none): it fills each side's own inductor cache, so that
both timed runs load the compiled graphs instead of one of them compiling cold, and the disk cache (on 2
CPU cores a first ffd.train took 32 s, the next one 12 s). timm's own figure (the median of the per-step
images/s in its log lines, after the first few) is printed beside, as a cross-check.

``--device cpu`` runs ``trainer=cpu`` on ffd's side and fp32 without compile or channels_last on timm's:
a smoke test of the plumbing (``--skip-timm --device cpu --images 64 --image-size 64 --batch-size 8``),
not the measurement. The goal: ffd >= 1.1x timm's train.py for DenseNet121.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning
import timm
import torch
from rich.console import Console
from rich.table import Table

from ffd.data.synthetic import CLASS_FOLDERS, MARKER, SPLIT_FOLDERS, generate

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "timm_peer_models.py"
REPOSITORY = "https://github.com/huggingface/pytorch-image-models"
GOAL = 1.1  # ffd / timm for DenseNet121, the target
SKIP_LOG_LINES = 3  # timm's first log lines: step 0 (compilation) and the first intervals of warm-up
# timm's learning rate for AdamW: ffd's model.optimizer.lr, so that both sides do the same update.
TIMM_LR = "1e-3"
# The flags of timm's train.py this script passes, checked against its --help before any work.
TIMM_FLAGS = (
    "--train-split",
    "--val-split",
    "--class-map",
    "--model",
    "--num-classes",
    "--batch-size",
    "--epochs",
    "--warmup-epochs",
    "--cooldown-epochs",
    "--sched",
    "--opt",
    "--lr",
    "--input-size",
    "--workers",
    "--log-interval",
    "--output",
    "--experiment",
    "--device",
    "--seed",
)
TIMM_GPU_FLAGS = ("--amp", "--amp-dtype", "--channels-last", "--torchcompile", "--pin-mem")

# One of train.py's log lines, e.g.
#   Train: 0 [  50/390 ( 13%)]  Loss: 0.693 (0.693)  Time: 0.123s, 1040.50/s  (0.125s, 1024.00/s)  LR: ...
# the rate after "Time:" is the last step's, the one in brackets the epoch's mean so far. Versions put
# other fields between (Updates: N); only these are read.
TIMM_LINE = re.compile(
    r"Train:\s*(?P<epoch>\d+)\s*\[\s*(?P<step>\d+)\s*/\s*(?P<steps>\d+).*?"
    r"Time:\s*(?P<seconds>[\d.]+)s,\s*(?P<rate>[\d.]+)/s\s*"
    r"\(\s*(?P<mean_seconds>[\d.]+)s,\s*(?P<mean_rate>[\d.]+)/s\s*\)"
)


class SetupError(Exception):
    """A problem found before any measurement: printed as one paragraph, exit status 2."""


@dataclass(frozen=True)
class TimmLogLine:
    """The numbers of one of timm's training log lines."""

    epoch: int
    step: int
    steps: int
    rate: float  # images/s of the step logged
    mean_rate: float  # images/s over the epoch so far, start included


@dataclass
class Row:
    """One tool's figures on one model."""

    tool: str
    model: str
    network: str
    steady: float  # images/s, (N_big - N_small) / (T_big - T_small); NaN when T_big <= T_small
    startup_s: float  # T_small - N_small / steady
    small_s: float
    big_s: float
    reported: float | None = None  # timm's own per-step figure (median), None for ffd
    warmup_s: float | None = None  # the untimed first run (cold compile cache)


def clone_command() -> str:
    """The checkout of timm's repository at the installed version's tag, which holds its train.py."""
    return f"git clone --depth 1 --branch v{timm.__version__} {REPOSITORY}"


def resolve_timm_train(given: str | None) -> Path:
    """timm's train.py from --timm-train or TIMM_TRAIN; SetupError naming the flag and the fix otherwise."""
    source = "--timm-train" if given else "TIMM_TRAIN"
    value = given or os.environ.get("TIMM_TRAIN")
    fix = (
        f"timm's train.py ships in no timm wheel or sdist: get it with `{clone_command()}` (the tag of the "
        f"installed timm {timm.__version__}) and pass --timm-train pytorch-image-models/train.py (or set "
        "TIMM_TRAIN to it); or pass --skip-timm to measure ffd alone."
    )
    if not value:
        raise SetupError(f"No timm train.py: --timm-train PATH is not given and TIMM_TRAIN is not set. {fix}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise SetupError(f"{source}={value}: no such file. {fix}")
    if not os.access(path, os.R_OK):
        raise SetupError(f"{source}={value} cannot be read. {fix}")
    return path.resolve()


def check_timm_flags(train_py: Path, gpu: bool, env: dict[str, str]) -> bool:
    """Run train.py --help (under the launcher) and check that it takes every flag passed to it; returns
    whether it has --data-dir (newer versions) rather than only the positional data folder."""
    command = [sys.executable, str(LAUNCHER), str(train_py), "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise SetupError(
            f"{train_py} --help failed (exit {result.returncode}): {result.stderr.strip()[-1500:]} "
            f"Pass --timm-train a train.py of the installed timm {timm.__version__} ({clone_command()})."
        )
    flags = TIMM_FLAGS + (TIMM_GPU_FLAGS if gpu else ())
    missing = [
        flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout)
    ]
    if missing:
        raise SetupError(
            f"{train_py} does not take {', '.join(missing)} (its --help lists no such option). It is "
            f"probably from another timm version than the installed {timm.__version__}: check out the "
            f"matching tag (`{clone_command()}`) and pass its train.py to --timm-train."
        )
    return bool(re.search(r"(?<![\w-])--data-dir(?![\w-])", result.stdout))


def parse_timm_log(text: str) -> list[TimmLogLine]:
    """timm's training log lines in ``text``, in order; any other line (or a garbled one) is skipped."""
    lines = []
    for match in TIMM_LINE.finditer(text):
        lines.append(
            TimmLogLine(
                epoch=int(match["epoch"]),
                step=int(match["step"]),
                steps=int(match["steps"]),
                rate=float(match["rate"]),
                mean_rate=float(match["mean_rate"]),
            )
        )
    return lines


def reported_rate(lines: Iterable[TimmLogLine], skip: int = SKIP_LOG_LINES) -> float | None:
    """The median of timm's per-step images/s after its first ``skip`` log lines (compilation and
    warm-up); None with no line left."""
    rates = [line.rate for line in list(lines)[skip:]]
    return statistics.median(rates) if rates else None


def steady_rate(n_small: int, t_small: float, n_big: int, t_big: float) -> tuple[float, float]:
    """(images/s, start-up s) from two runs' image counts and wall seconds: the rate of the extra images,
    with what both runs pay once (start-up, compilation, validation, testing) left out; start-up is the
    small run's time less its images at that rate."""
    if n_big <= n_small:
        raise ValueError(f"the big run must have more images than the small one ({n_big} <= {n_small})")
    if t_big <= t_small:
        raise ValueError(
            f"the big run ({n_big} images, {t_big:.1f} s) took no longer than the small one ({n_small} "
            f"images, {t_small:.1f} s): make --images larger so that the difference outweighs the noise"
        )
    steady = (n_big - n_small) / (t_big - t_small)
    return steady, t_small - n_small / steady


def round_count(images: int, batch_size: int) -> int:
    """``images`` rounded up to whole batches of an even size: no partial last batch (a recompilation,
    dropped by timm's loader) and as many reals as fakes."""
    step = batch_size * (2 // math.gcd(batch_size, 2))
    return max(step, -(-images // step) * step)


def write_sets(data: Path, images: int, small: int, val: int, size: int, workers: int) -> tuple[Path, Path]:
    """The big set (``ffd.data.synthetic.generate``, reused when complete) and the small one: the first
    ``small`` training images of the big set and all of its validation and test images, as hard links."""
    big = generate(data / "big", image_size=size, train=images, val=val, test=val, workers=max(1, workers))
    small_root = data / f"small_{small}"
    marker, made_of = small_root / "complete", (big / MARKER).read_text()  # the big set's parameters
    if marker.is_file() and marker.read_text() == made_of:
        return big, small_root
    shutil.rmtree(small_root, ignore_errors=True)
    for split, folder in SPLIT_FOLDERS.items():
        for label, name in CLASS_FOLDERS.items():
            source = sorted((big / folder / name).iterdir())
            if split == "train":  # generate() writes the first half real, the second fake
                source = source[: small // 2 if label == 0 else small - small // 2]
            target = small_root / folder / name
            target.mkdir(parents=True)
            for file in source:
                try:
                    os.link(file, target / file.name)
                except OSError:
                    shutil.copyfile(file, target / file.name)
    marker.write_text(made_of)
    return big, small_root


def ffd_command(model: str, root: Path, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """python -m ffd.train as a user runs it on a folder of images, at the benchmark's settings."""
    gpu = args.device == "cuda"
    command = [
        sys.executable,
        "-m",
        "ffd.train",
        "data=kaggle",
        f"data.root={root}",
        f"model={model}",
        f"trainer={'gpu' if gpu else 'cpu'}",
        "trainer.max_epochs=1",
        f"data.batch_size={args.batch_size}",
        f"data.image_size={args.image_size}",
        f"data.num_workers={args.workers}",
        f"hydra.run.dir={run_dir}",
    ]
    if model == "densenet":  # random weights: the whole network trains from the first step, in one stage
        command += ["model.net.pretrained=false", "callbacks.finetune=null"]
    if gpu and args.compile:
        command.append("callbacks.speed.compile=true")
    return command + list(args.ffd_override)


def timm_command(
    model: str, root: Path, run_dir: Path, train_py: Path, data_dir_flag: bool, args: argparse.Namespace
) -> list[str]:
    """timm's train.py under the launcher (ffd's ViT registered), at the same settings as ffd's side."""
    gpu = args.device == "cuda"
    network = timm_network(model, args.densenet_peer)
    class_map = run_dir.parent / "class_map.txt"  # line order = label: real 0, fake 1, as in ffd
    class_map.parent.mkdir(parents=True, exist_ok=True)
    class_map.write_text("".join(f"{CLASS_FOLDERS[label]}\n" for label in sorted(CLASS_FOLDERS)))
    command = [sys.executable, str(LAUNCHER), "--image-size", str(args.image_size), str(train_py)]
    command += ["--data-dir", str(root)] if data_dir_flag else [str(root)]
    command += [
        "--train-split",
        SPLIT_FOLDERS["train"],
        "--val-split",
        SPLIT_FOLDERS["val"],
        "--class-map",
        str(class_map),
        "--model",
        network,
        "--num-classes",
        "2",
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--cooldown-epochs",
        "0",
        "--sched",
        "cosine",
        "--opt",
        "adamw",
        "--lr",
        TIMM_LR,
        "--input-size",
        "3",
        str(args.image_size),
        str(args.image_size),
        "--workers",
        str(args.workers),
        "--log-interval",
        str(args.log_interval),
        "--output",
        str(run_dir.parent),
        "--experiment",
        run_dir.name,
        "--device",
        args.device,
        "--seed",
        "42",
    ]
    if gpu:
        command += ["--amp", "--amp-dtype", "bfloat16", "--channels-last", "--pin-mem"]
        if args.compile:
            command += ["--torchcompile", "inductor"]
    return command + list(args.timm_arg)


def timm_network(model: str, densenet_peer: str) -> str:
    """The name train.py builds for ``model``: timm's densenet121, or ffd's networks as registered."""
    if model == "vit":
        return "ffd_vit"
    return "densenet121" if densenet_peer == "timm" else "ffd_densenet"


def run_timed(command: list[str], log: Path, env: dict[str, str]) -> float:
    """Wall seconds of one command (start-up included); its output goes to ``log``. RuntimeError with the
    log's tail when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        out.write(" ".join(command) + "\n\n")
        out.flush()
        started = time.perf_counter()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"exit {result.returncode} of\n  {' '.join(command)}\n(log: {log}):\n{tail}")
    return seconds


def measure(
    tool: str,
    model: str,
    network: str,
    commands: dict[str, list[str]],
    counts: dict[str, int],
    runs: Path,
    env: dict[str, str],
    warm_up: bool,
    console: Console,
) -> Row:
    """Run a tool's small and big commands (after an untimed warm-up one) and make its row."""
    name = f"{tool}_{model}"
    # A compile cache of the tool's own per model, filled by the warm-up, read by both timed runs.
    cache = runs / "compile_cache" / name
    env = {
        **env,
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
    }
    warmup_s = None
    if warm_up:
        console.print(f"{name}: warm-up run, {counts['small']} images ...")
        warmup_s = run_timed(commands["warmup"], runs / f"{name}_warmup.log", env)
    seconds = {}
    for size in ("small", "big"):
        console.print(f"{name}: {counts[size]} images ...")
        seconds[size] = run_timed(commands[size], runs / f"{name}_{size}.log", env)
    try:
        steady, startup = steady_rate(counts["small"], seconds["small"], counts["big"], seconds["big"])
    except ValueError as error:  # noise larger than the difference: the row says n/a, the exit status 1
        console.print(f"[yellow]{name}: no steady rate: {error}[/yellow]")
        steady, startup = math.nan, math.nan
    reported = None
    if tool == "timm":
        reported = reported_rate(parse_timm_log((runs / f"{name}_big.log").read_text(errors="replace")))
    console.print(f"{name}: {steady:.1f} images/s steady, start-up {startup:.1f} s")
    return Row(tool, model, network, steady, startup, seconds["small"], seconds["big"], reported, warmup_s)


def machine() -> dict[str, str]:
    """What ran it: the host, the GPU, the versions."""
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def ratios(rows: list[Row]) -> dict[str, float]:
    """ffd / timm steady images/s per model measured on both sides (not where a rate is missing)."""
    by = {(row.tool, row.model): row.steady for row in rows if not math.isnan(row.steady)}
    return {
        model: by[("ffd", model)] / by[("timm", model)]
        for (tool, model) in by
        if tool == "ffd" and ("timm", model) in by
    }


COLUMNS = ("tool", "model", "network", "steady images/s", "timm's own images/s", "start-up s", "ffd / timm")


def cells(row: Row, ratio: dict[str, float]) -> list[str]:
    """A row's figures as text: the table's and the Markdown file's."""
    missing = math.isnan(row.steady)
    return [
        row.tool,
        row.model,
        row.network,
        "n/a" if missing else f"{row.steady:,.1f}",
        "—" if row.reported is None else f"{row.reported:,.1f}",
        "n/a" if missing else f"{row.startup_s:.1f}",
        f"{ratio[row.model]:.2f}" if row.tool == "ffd" and row.model in ratio else "",
    ]


def table(rows: list[Row], title: str) -> Table:
    """The rich table printed at the end."""
    result = Table(title=title)
    for column in COLUMNS:
        result.add_column(column, justify="left" if column in COLUMNS[:3] else "right")
    ratio = ratios(rows)
    for row in rows:
        result.add_row(*cells(row, ratio))
    return result


def markdown(rows: list[Row], settings: dict, info: dict[str, str]) -> str:
    """The same table as Markdown, with the machine and the settings."""
    ratio = ratios(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row, ratio)) + " |" for row in rows]
    lines += ["", ", ".join(f"{key} {value}" for key, value in info.items()), ""]
    lines.append(", ".join(f"{key}={value}" for key, value in settings.items()))
    return "\n".join(lines) + "\n"


def row_json(row: Row) -> dict:
    """A row for timm_peer.json: a missing rate is null (JSON has no NaN)."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in asdict(row).items()}


def tool_commands(
    tool: str,
    model: str,
    roots: dict[str, Path],
    runs: Path,
    train_py: Path | None,
    data_dir_flag: bool,
    args: argparse.Namespace,
) -> dict[str, list[str]]:
    """{run: command} of one tool on one model: the warm-up and the small run on the small set, the big
    run on the big one, each into its own folder under ``runs``."""
    commands = {}
    for run, root in (("warmup", roots["small"]), ("small", roots["small"]), ("big", roots["big"])):
        run_dir = runs / f"{tool}_{model}_{run}"
        if tool == "ffd":
            commands[run] = ffd_command(model, root, run_dir, args)
        else:
            assert train_py is not None
            commands[run] = timm_command(model, root, run_dir, train_py, data_dir_flag, args)
    return commands


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timm-train", default=None, help="timm's train.py (default: $TIMM_TRAIN)")
    parser.add_argument("--models", default="densenet,vit", help="comma-separated: densenet, vit")
    parser.add_argument("--images", type=int, default=51200, help="training images of the big run")
    parser.add_argument("--small-images", type=int, default=None, help="of the small run (default 1/8)")
    parser.add_argument("--val-images", type=int, default=1024, help="validation (and ffd's test) images")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=max(0, (os.cpu_count() or 1) - 1))
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if present")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="on a GPU: no compile")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="no untimed first run of each tool and model"
    )
    parser.add_argument(
        "--densenet-peer",
        choices=("timm", "ffd"),
        default="timm",
        help="timm's densenet121 (default) or ffd's DenseNet network in timm's train.py",
    )
    parser.add_argument(
        "--log-interval", type=int, default=20, help="timm's (ffd's trainer=gpu logs every 20)"
    )
    parser.add_argument("--skip-timm", action="store_true", help="measure ffd alone")
    parser.add_argument("--skip-ffd", action="store_true", help="measure timm alone")
    parser.add_argument(
        "--ffd-override", action="append", default=[], help="one more ffd.train override (repeatable)"
    )
    parser.add_argument(
        "--timm-arg",
        action="append",
        default=[],
        help="one more train.py argument (repeatable; --timm-arg=--no-prefetcher)",
    )
    parser.add_argument("--data", type=Path, default=None, help="keep the images here (reused when complete)")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/timm_peer/<timestamp>")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.model_list = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.model_list) - {"densenet", "vit"})
    if unknown or not args.model_list:
        parser.error(
            f"--models: {f'unknown {unknown}' if unknown else 'none given'}; choose from densenet, vit"
        )
    if args.skip_timm and args.skip_ffd:
        parser.error("--skip-timm and --skip-ffd together leave nothing to measure")
    if args.image_size % 8 or args.image_size < 16:
        parser.error("--image-size must be a multiple of 8 (the ViT's patch), 16 or more")
    if args.batch_size < 1 or args.workers < 0 or args.val_images < 2:
        parser.error("--batch-size must be >= 1, --workers >= 0 and --val-images >= 2")
    args.images = round_count(args.images, args.batch_size)
    small = args.small_images if args.small_images is not None else args.images // 8
    args.small_images = round_count(small, args.batch_size)
    if args.small_images >= args.images:
        parser.error(
            f"--small-images ({args.small_images} in whole batches) must be fewer than --images "
            f"({args.images}): the steady rate is that of the difference"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SetupError(
                "--device cuda: torch sees no CUDA GPU here. Pass --device cpu for a smoke test."
            )
        train_py, data_dir_flag = None, False
        if not args.skip_timm:
            train_py = resolve_timm_train(args.timm_train)
            data_dir_flag = check_timm_flags(train_py, args.device == "cuda", env)
    except SetupError as error:
        print(f"timm_peer.py: {error}", file=sys.stderr)
        return 2

    out = args.out or Path("outputs", "timm_peer", dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env["FFD_ROOT"] = str(out.resolve())  # anything ffd.train writes outside its run folder lands here
    warm_up = args.warmup
    counts = {"small": args.small_images, "big": args.images}
    tools = [tool for tool, skip in (("ffd", args.skip_ffd), ("timm", args.skip_timm)) if not skip]
    settings = {
        "device": args.device,
        "models": ",".join(args.model_list),
        "images": f"{args.small_images} / {args.images} train, {args.val_images} val",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "compile": args.device == "cuda" and args.compile,
        "densenet_peer": timm_network("densenet", args.densenet_peer),
        "timm_train": str(train_py) if train_py else None,
    }
    with tempfile.TemporaryDirectory(prefix="timm_peer_") as tmp:
        data = args.data or Path(tmp)
        total = args.images + 2 * args.val_images
        console.print(
            f"Writing {total} synthetic JPEGs of {args.image_size} px into {data} (reused if there) ..."
        )
        roots = dict(
            zip(
                ("big", "small"),
                write_sets(
                    data, args.images, args.small_images, args.val_images, args.image_size, args.workers + 1
                ),
                strict=True,
            )
        )
        rows, commands_run = [], {}
        try:
            for model in args.model_list:
                for tool in tools:
                    commands = tool_commands(tool, model, roots, runs, train_py, data_dir_flag, args)
                    network = f"ffd {model}" if tool == "ffd" else timm_network(model, args.densenet_peer)
                    rows.append(measure(tool, model, network, commands, counts, runs, env, warm_up, console))
                    commands_run[f"{tool}_{model}"] = " ".join(commands["big"])
        except RuntimeError as error:  # a run failed: its command and the tail of its log
            print(f"timm_peer.py: {error}", file=sys.stderr)
            return 1

    info = machine()
    title = (
        f"ffd.train vs timm's train.py: {args.image_size} px, batch {args.batch_size}, {args.device}"
        f"{', bf16 + channels_last + compile' if settings['compile'] else ''}"
    )
    console.print(table(rows, title))
    for model, ratio in ratios(rows).items():
        goal = (
            f" (goal >= {GOAL} for DenseNet121: {'met' if ratio >= GOAL else 'not met'})"
            if model == "densenet"
            else ""
        )
        console.print(f"{model}: ffd / timm = {ratio:.2f}{goal}")
    console.print(", ".join(f"{key} {value}" for key, value in info.items()))
    console.print(
        f"steady rate = (N - {args.small_images}) / (T(N) - T({args.small_images})) of wall time, N = "
        f"{args.images}; timm's own = median per-step rate of its log lines after the first {SKIP_LOG_LINES}."
    )
    report = {
        "settings": settings,
        "machine": info,
        "rows": [row_json(row) for row in rows],
        "ffd_over_timm": ratios(rows),
        "commands": commands_run,
    }
    (out / "timm_peer.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "timm_peer.md").write_text(markdown(rows, settings, info))
    console.print(f"Written: {out / 'timm_peer.json'}, {out / 'timm_peer.md'}; logs in {runs}")
    return 1 if any(math.isnan(row.steady) for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
