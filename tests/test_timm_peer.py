"""benchmarks/timm_peer.py (ffd.train against timm's train.py): its refusals, its arithmetic, the timm
registration of ffd's networks, and both sides' plumbing on the CPU (timm's through a stand-in train.py
written here: the real one ships in no timm package)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from timm.data import resolve_data_config

from cli import CONF

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    """A benchmarks/ module, imported once per session (the models module registers names in timm)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    return _load("timm_peer")


@pytest.fixture(scope="module")
def peer_models() -> ModuleType:
    return _load("timm_peer_models")


TINY = ["--device", "cpu", "--images", "64", "--small-images", "16", "--val-images", "16"]
TINY += ["--image-size", "64", "--batch-size", "8", "--workers", "0"]


# ---------------------------------------------------------------- no train.py: one error, before any work


@pytest.mark.parametrize("given", [None, "missing.py", "folder"])
def test_no_timm_train_is_one_error_naming_the_flag_and_the_clone(
    peer: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, given
) -> None:
    monkeypatch.delenv("TIMM_TRAIN", raising=False)
    (tmp_path / "folder").mkdir()
    flag = [] if given is None else ["--timm-train", str(tmp_path / given)]
    code = peer.main([*TINY, *flag, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert "--timm-train" in error and "--skip-timm" in error
    assert f"git clone --depth 1 --branch v{timm.__version__} https://github.com/huggingface/" in error
    assert len(error.strip().splitlines()) == 1  # one paragraph
    assert not (tmp_path / "out").exists()  # before any work: no folder, no images


def test_timm_train_from_the_environment_is_named_when_missing(
    peer: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TIMM_TRAIN", str(tmp_path / "nowhere" / "train.py"))
    assert peer.main([*TINY, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "TIMM_TRAIN=" in error and "no such file" in error and "git clone" in error


def test_skip_both_sides_is_an_option_error(peer: ModuleType) -> None:
    with pytest.raises(SystemExit) as stop:
        peer.parse_args(["--skip-timm", "--skip-ffd"])
    assert stop.value.code == 2


# ---------------------------------------------------------------- timm's log lines and the arithmetic

TIMM_LOG = "\n".join(
    [
        "Training with a single process on 1 device (cuda).",
        "Model densenet121 created, param count:6955906",
        "Train: 0 [   0/390 (  0%)]  Loss: 0.696 (0.696)  Time: 58.210s,    2.20/s  (58.210s,    2.20/s)  "
        "LR: 1.000e-03  Data: 1.100 (1.100)",
        "Train: 0 [  50/390 ( 13%)]  Loss: 0.693 (0.693)  Time: 0.123s, 1040.50/s  (1.262s,  101.40/s)  "
        "LR: 1.000e-03  Data: 0.001 (0.023)",
        "Train: 0 [ 100/390 ( 26%)]  Loss: 0.690 (0.692)  Time: 0.120s, 1066.67/s  (0.693s,  184.70/s)  "
        "LR: 9.800e-04  Data: 0.001 (0.012)",
        "Train: 0 [ 150/390 ( 39%)]  Loss: 0.52 (0.61)  Time: 0.1 garbled",
        "Train: 0 [ 150/390 ( 39%)]  Loss: 0.510 (0.650)  Time: 0.125s, 1024.00/s  (0.503s,  254.47/s)  "
        "LR: 9.1e-04  Data: 0.001 (0.008)",
        "Train: 0 [ 200/390 ( 52%)]  Updates: 200  Loss: 0.401 (0.600)  "
        "Time: 0.118s, 1084.75/s  (0.407s,  314.50/s)  "
        "LR: 8.000e-04  Data: 0.001 (0.006)",
        "Train: 0 [ 250/390 ( 64%)]  Loss: 0.300 (0.550)  Time: 0.130s,  984.62/s  (0.350s,  365.71/s)  "
        "LR: 6.000e-04  Data: 0.001 (0.005)",
        "Test: [   0/7]  Time: 0.900 (0.900)  Loss:   0.400 ( 0.400)  "
        "Acc@1:  90.000 ( 90.000)  Acc@5: 100.000 (100.000)",
    ]
)


def test_the_log_parser_reads_timms_lines_and_skips_the_rest(peer: ModuleType) -> None:
    lines = peer.parse_timm_log(TIMM_LOG)
    assert [line.step for line in lines] == [0, 50, 100, 150, 200, 250]  # the garbled 150 and Test: left out
    assert {line.steps for line in lines} == {390} and {line.epoch for line in lines} == {0}
    assert lines[1].rate == 1040.50 and lines[1].mean_rate == 101.40
    assert lines[4].rate == 1084.75  # a version that logs "Updates: N" between the fields


def test_timms_own_rate_is_the_median_after_the_first_lines(peer: ModuleType) -> None:
    lines = peer.parse_timm_log(TIMM_LOG)
    assert peer.reported_rate(lines, skip=3) == 1024.00  # median of 1024.00, 1084.75, 984.62
    assert peer.reported_rate(lines, skip=1) == 1040.50  # step 0 (compilation) left out
    assert peer.reported_rate(lines, skip=6) is None
    assert peer.reported_rate(peer.parse_timm_log("no log lines at all")) is None


def test_the_steady_rate_leaves_the_start_up_out(peer: ModuleType) -> None:
    # 1,000 images/s after 30 s of start-up: 6,400 images in 36.4 s, 51,200 in 81.2 s.
    steady, startup = peer.steady_rate(6400, 36.4, 51200, 81.2)
    assert steady == pytest.approx(1000.0)
    assert startup == pytest.approx(30.0)
    with pytest.raises(ValueError, match="took no longer"):
        peer.steady_rate(16, 32.1, 64, 12.0)  # noise larger than the difference (seen on 2 cores)
    with pytest.raises(ValueError, match="more images"):
        peer.steady_rate(64, 1.0, 64, 2.0)


def test_counts_are_whole_batches_with_as_many_reals_as_fakes(peer: ModuleType) -> None:
    assert peer.round_count(51200, 128) == 51200
    assert peer.round_count(100, 128) == 128
    assert peer.round_count(129, 128) == 256
    assert peer.round_count(10, 3) == 12  # batches of 3, an even total


# ---------------------------------------------------------------- both tools' commands


def test_the_gpu_commands_hold_the_issues_settings(peer: ModuleType, tmp_path: Path) -> None:
    args = peer.parse_args(["--device", "cuda", "--batch-size", "128", "--workers", "15"])
    ffd = peer.ffd_command("densenet", tmp_path / "root", tmp_path / "run", args)
    assert "trainer=gpu" in ffd and "callbacks.speed.compile=true" in ffd and "data.batch_size=128" in ffd
    # the whole DenseNet trains in the epoch measured, not fine-tuning's frozen first stage
    assert "model.net.pretrained=false" in ffd and "callbacks.finetune=null" in ffd
    assert not any(o.startswith(("callbacks.report", "test=", "callbacks.model_checkpoint")) for o in ffd)
    timm_side = peer.timm_command(
        "densenet", tmp_path / "root", tmp_path / "runs" / "t", Path("train.py"), True, args
    )
    joined = " ".join(timm_side)
    assert "--model densenet121 --num-classes 2" in joined and "--batch-size 128" in joined
    assert "--amp --amp-dtype bfloat16 --channels-last" in joined and "--torchcompile inductor" in joined
    assert "--workers 15" in joined and "--epochs 1" in joined and f"--data-dir {tmp_path / 'root'}" in joined
    assert (tmp_path / "runs" / "class_map.txt").read_text() == "real\nfake\n"  # ffd's labels: 0 real
    vit = peer.timm_command("vit", tmp_path / "root", tmp_path / "runs" / "v", Path("train.py"), False, args)
    assert vit[vit.index("--model") + 1] == "ffd_vit" and vit[vit.index("train.py") + 1] == str(
        tmp_path / "root"
    )


@pytest.mark.parametrize("model", ["densenet", "vit"])
def test_ffds_gpu_overrides_compose(peer: ModuleType, tmp_path: Path, model: str) -> None:
    """Every override the benchmark gives ffd.train names a config key (trainer=gpu adds callbacks.speed)."""
    args = peer.parse_args(["--device", "cuda"])
    overrides = peer.ffd_command(model, tmp_path, tmp_path / "run", args)[3:]
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.callbacks.speed.compile is True and cfg.trainer.max_epochs == 1
    assert cfg.callbacks.report is not None and cfg.test is True  # the report and metrics stay on
    assert cfg.callbacks.get("finetune") is None


# ---------------------------------------------------------------- ffd's networks in timm's registry


# What timm's train.py passes to create_model for its defaults (create_model drops the None ones).
TRAIN_PY_KWARGS = {
    "pretrained": False,
    "in_chans": 3,
    "num_classes": 2,
    "drop_rate": 0.0,
    "drop_path_rate": None,
    "drop_block_rate": None,
    "global_pool": None,
    "bn_momentum": None,
    "bn_eps": None,
    "scriptable": False,
    "checkpoint_path": "",
}


@pytest.mark.parametrize("name", ["ffd_vit", "ffd_densenet"])
def test_registered_networks_give_two_logits_whose_softmax_is_ffds_sigmoid(
    peer_models: ModuleType, name: str
) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=32, **TRAIN_PY_KWARGS).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32)).float()
    with torch.no_grad():
        scores = model(images)
        logit = model.net(images)  # ffd's own network, its one logit per image
    assert scores.shape == (3, 2) and logit.shape == (3,)
    torch.testing.assert_close(scores.softmax(dim=1)[:, 1], torch.sigmoid(logit))
    # timm's loader normalises with the model's config: mean 0, std 1/255 hands ffd's network 0..255
    config = resolve_data_config({}, model=model)
    assert config["mean"] == (0.0, 0.0, 0.0) and config["input_size"] == (3, 32, 32)
    assert config["std"] == pytest.approx((1 / 255,) * 3)


def test_registered_networks_refuse_what_they_cannot_be(peer_models: ModuleType) -> None:
    with pytest.raises(ValueError, match="--num-classes must be 2"):
        timm.create_model("ffd_vit", num_classes=1000, img_size=32)
    with pytest.raises(ValueError, match="--pretrained"):
        timm.create_model("ffd_densenet", pretrained=True, img_size=32)


def test_the_launcher_runs_a_script_as_main_with_its_arguments(
    peer_models: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """\
            import sys
            from pathlib import Path
            import timm
            if __name__ == "__main__":
                net = timm.create_model("ffd_vit", num_classes=2, img_size=16)
                Path(sys.argv[0]).with_suffix(".seen").write_text(" ".join(sys.argv[1:]))
            """
        )
    )
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    peer_models.launch(script, ["--model", "ffd_vit", "-b", "8"])
    assert (tmp_path / "train.seen").read_text() == "--model ffd_vit -b 8"


# ---------------------------------------------------------------- both sides end to end on the CPU

# A stand-in for timm's train.py: its options, log lines in its format, and the registered network built
# and run once. It trains nothing: each step sleeps 0.04 s per image, 25 images/s.
STAND_IN = """\
import argparse, json, sys, time
from pathlib import Path
import timm, torch

parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="?")
parser.add_argument("--data-dir")
for flag in ("--train-split", "--val-split", "--class-map", "--model", "--num-classes", "--batch-size",
             "--epochs", "--warmup-epochs", "--cooldown-epochs", "--sched", "--opt", "--lr", "--workers",
             "--log-interval", "--output", "--experiment", "--device", "--seed", "--amp-dtype"):
    parser.add_argument(flag)
for flag in ("--amp", "--channels-last", "--pin-mem"):
    parser.add_argument(flag, action="store_true")
parser.add_argument("--torchcompile", nargs="?", const="inductor")
parser.add_argument("--input-size", nargs=3, type=int)
args = parser.parse_args()
root = Path(args.data_dir or args.data)
images = len(list((root / args.train_split).glob("*/*.jpg")))
size = args.input_size[-1]
model = timm.create_model(args.model, num_classes=int(args.num_classes), in_chans=3, pretrained=False)
shape = list(model(torch.zeros(2, 3, size, size)).shape)
out = Path(args.output) / args.experiment
out.mkdir(parents=True, exist_ok=True)
seen = {"argv": sys.argv[1:], "images": images, "shape": shape, "class_map": Path(args.class_map).read_text()}
(out / "seen.json").write_text(json.dumps(seen))
batch = int(args.batch_size)
steps = images // batch
for step in range(steps):
    time.sleep(0.04 * batch)
    if step % int(args.log_interval) == 0:
        pct = 100 * step / max(steps - 1, 1)
        print(f"Train: 0 [{step:>4d}/{steps} ({pct:>3.0f}%)]  Loss: 0.693 (0.693)  "
              f"Time: {0.04 * batch:.3f}s, {1 / 0.04:>7.2f}/s  ({0.04 * batch:.3f}s, {1 / 0.04:>7.2f}/s)  "
              "LR: 1.000e-03  Data: 0.001 (0.001)", file=sys.stderr)
"""


def test_timms_side_end_to_end_with_a_stand_in_train_py(
    peer: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train_py = tmp_path / "stand_in" / "train.py"
    train_py.parent.mkdir()
    train_py.write_text(STAND_IN)
    out = tmp_path / "out"
    argv = [*TINY, "--models", "vit", "--skip-ffd", "--no-warmup", "--log-interval", "1"]
    code = peer.main([*argv, "--timm-train", str(train_py), "--out", str(out)])
    console = capsys.readouterr().out
    report = json.loads((out / "timm_peer.json").read_text())
    (row,) = report["rows"]
    assert (row["tool"], row["model"], row["network"]) == ("timm", "vit", "ffd_vit")
    assert row["reported"] == 25.0  # the stand-in's per-step rate, from its log lines
    assert code == 0 and row["steady"] > 0, console
    seen = {
        size: json.loads((out / "runs" / f"timm_vit_{size}" / "seen.json").read_text())
        for size in ("small", "big")
    }
    assert seen["small"]["images"] == 16 and seen["big"]["images"] == 64
    assert seen["big"]["shape"] == [2, 2]  # ffd's ViT, registered by the launcher, built by "train.py"
    assert seen["big"]["class_map"] == "real\nfake\n"
    argv_seen = " ".join(seen["big"]["argv"])
    assert "--device cpu" in argv_seen and "--amp" not in argv_seen and "--torchcompile" not in argv_seen
    assert "timm" in (out / "timm_peer.md").read_text()


def test_a_train_py_without_a_flag_is_refused_before_any_work(
    peer: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train_py = tmp_path / "train.py"
    train_py.write_text(STAND_IN.replace('"--cooldown-epochs", ', ""))
    code = peer.main([*TINY, "--timm-train", str(train_py), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "--cooldown-epochs" in error and "git clone" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ffds_side_end_to_end_on_the_cpu(peer: ModuleType, tmp_path: Path, capsys) -> None:
    """ffd.train three times (warm-up, small, big) on the tiny set: about 35 s on 2 cores. The rates of
    so few images are noise (a status of 1 says so), the plumbing is what is checked."""
    out = tmp_path / "out"
    code = peer.main([*TINY, "--models", "vit", "--skip-timm", "--out", str(out)])
    console = capsys.readouterr().out
    assert code in (0, 1), console
    (row,) = json.loads((out / "timm_peer.json").read_text())["rows"]
    assert (row["tool"], row["model"], row["reported"]) == ("ffd", "vit", None)
    assert code == 1 or (row["steady"] > 0 and not math.isnan(row["steady"]))
    for size in ("warmup", "small", "big"):  # each run wrote ffd's report: the metrics stay on
        assert (out / "runs" / f"ffd_vit_{size}" / "report" / "metrics.json").is_file()
    assert "trainer=cpu" in (out / "runs" / "ffd_vit_big.log").read_text().splitlines()[0]
    assert "ffd.train vs timm's train.py" in console
