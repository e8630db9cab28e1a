"""python -m ffd.export on the session's tiny checkpoints (a few training steps on a 32 px synthetic set).

What is checked is the plumbing and the parity, not accuracy: the models are barely trained. The int8
limit is relaxed for that reason (see EXPORT_TINY). DenseNet121's export goes through torch.export: about a
minute and a half of the suite on 2 CPU cores, the price of checking the model the project ships.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cli import TINY_DATA, run_dirs, run_ffd, run_in_process
from ffd.assets import sha256_of
from ffd.data.synthetic import generate
from ffd.deploy.parity import changed_verdicts, latency
from ffd.deploy.pipeline import REPORT_NAME
from ffd.deploy.results import limit_outcome
from ffd.deploy.session import INPUT_NAME, OUTPUT_NAME, PRECISIONS, ModelInfo, OnnxDetector
from ffd.models.checkpoint import load_classifier
from ffd.report import verdict

# Latency settings kept tiny (the figures are not checked, only that they are there), and the int8 AUROC
# limit relaxed: the tiny test split has 6 real and 6 fake images, so AUROC moves in steps of 1/36 and a
# single pair of near-equal probabilities put in the other order (or tied) by int8 rounding costs 0.014 to
# 0.028 -- over the 0.005 meant for real test sets. A few-step model's P(fake) all lie close to 0.5, so
# int8 may reorder several such pairs: 0.25 still fails an int8 file that scrambles the ranking.
EXPORT_TINY = [
    *TINY_DATA,
    "export.latency.warmup=1",
    "export.latency.repeats=2",
    "export.latency.batch_sizes=[1,4]",
    "export.calibration.batch_size=8",
    "export.limits.int8_auroc_drop=0.25",
]
MODELS = ["vit", "densenet"]


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tiny_checkpoints, tmp_path_factory) -> tuple[str, Path, Path]:
    """(model name, checkpoint, export run folder) of one `ffd.export` run per model, all precisions."""
    name = request.param
    root = tmp_path_factory.mktemp(f"export_{name}")
    run_ffd("ffd.export", f"ckpt_path={tiny_checkpoints[name]}", *EXPORT_TINY, root=root)
    (run,) = run_dirs(root, "export")
    return name, tiny_checkpoints[name], run


def test_export_writes_three_checked_files_within_their_limits(exported):
    name, checkpoint, run = exported
    report = json.loads((run / REPORT_NAME).read_text())
    assert report["passed"] and not report["failures"]
    assert report["model"]["name"] == name
    assert set(report["files"]) == set(PRECISIONS)
    sizes = {}
    for precision, file in report["files"].items():
        path = run / file
        assert precision in path.name and name in path.name  # a user can tell the files apart
        onnx.checker.check_model(str(path), full_check=True)
        sizes[precision] = path.stat().st_size
        row = report["results"][precision]
        assert row["size_bytes"] == sizes[precision]
        assert row["limit"]["ok"] and row["limit"]["value"] <= row["limit"]["max"]
        assert set(row["latency_ms"]) == {"batch_1", "batch_4"}
    for row in report["results"].values():  # the spread of the timed runs, the checkpoint's too
        for timing in row["latency_ms"].values():
            assert 0 < timing["min"] <= timing["median"] <= timing["p90"]
    results = report["results"]
    assert results["fp32"]["max_abs_diff"] <= 1e-4
    assert results["fp16"]["max_abs_diff"] <= 1e-2
    assert results["torch"]["auroc"] - results["int8"]["auroc"] == pytest.approx(
        results["int8"]["auroc_drop"]
    )
    assert results["fp16"]["mean_abs_diff"] <= results["fp16"]["max_abs_diff"]
    assert sizes["int8"] < 0.5 * sizes["fp32"] and sizes["fp16"] < 0.6 * sizes["fp32"]
    assert report["parity"]["images"] == 12 and report["calibration"]["images_used"] == 12
    assert report["checkpoint_sha256"] == sha256_of(checkpoint)


def test_the_report_counts_the_verdicts_each_file_changes(exported):
    """The int8 ViT of the README changed a few verdicts that no figure of the report showed."""
    _, _, run = exported
    report = json.loads((run / REPORT_NAME).read_text())
    images = report["parity"]["images"]
    reference = report["results"]["torch"]
    assert reference["verdicts_changed"] == 0
    for precision in report["files"]:
        row = report["results"][precision]
        changed = row["verdicts_changed"]
        assert isinstance(changed, int) and 0 <= changed <= images
        assert row["verdicts_changed_share"] == pytest.approx(changed / images)
        # Each changed verdict turns one image right or wrong: the accuracies can differ by no more.
        moved = round(abs(row["accuracy"] - reference["accuracy"]) * images)
        assert moved <= changed and (changed - moved) % 2 == 0


def test_the_log_records_each_file_and_the_outcome(exported):
    """export.log stopped at "Quantizing to int8": neither the figures nor pass / fail were in it."""
    _, checkpoint, run = exported
    report = json.loads((run / REPORT_NAME).read_text())
    lines = (run / "export.log").read_text().splitlines()
    images = report["parity"]["images"]
    for name, row in report["results"].items():
        shown, file = (
            ("torch fp32", checkpoint) if name == "torch" else (f"onnx {name}", run / report["files"][name])
        )
        (line,) = [line for line in lines if f"ffd.export {shown}: {file};" in line]
        assert f"verdicts changed at threshold 0.5: {row['verdicts_changed']} / {images}" in line
        assert "max |dP|" in line and "AUROC" in line and "batch 1 " in line and "batch 4 " in line
        assert name == "torch" or line.endswith(": ok")
    assert lines[-1].endswith(f"ffd.export passed: every file within its limit; report: {run / REPORT_NAME}")


def test_changed_verdicts_are_those_that_cross_the_threshold():
    """Fake strictly above the threshold, as ffd.predict says it, so the count matches two of its CSVs."""
    # Images 1 to 4 change side of 0.5 (0.5 itself is real); 0 and 5 move but keep their verdict.
    reference = np.float32([0.2, 0.7, 0.49, 0.51, 0.5, 0.9])
    exported = np.float32([0.3, 0.4, 0.51, 0.5, 0.51, 0.95])
    assert changed_verdicts(reference, exported, 0.5) == {
        "verdicts_changed": 4,
        "verdicts_changed_share": pytest.approx(4 / 6),
    }
    # float32(0.3) is just above 0.3: ffd.predict calls it fake, as a float32 comparison would not.
    reference, exported = np.float32([0.3, 0.3]), np.float32([0.29, 0.3])
    said = [
        verdict(float(r), 0.3)[0] != verdict(float(e), 0.3)[0]
        for r, e in zip(reference, exported, strict=True)
    ]
    assert changed_verdicts(reference, exported, 0.3)["verdicts_changed"] == sum(said) == 1
    assert changed_verdicts(np.zeros(0), np.zeros(0), 0.5) == {
        "verdicts_changed": 0,
        "verdicts_changed_share": 0.0,
    }


def test_latency_spread_comes_from_the_same_timed_runs():
    """min and p90 beside the median cost no extra run: warmup + repeats calls per batch size."""
    calls = []

    def predict(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return np.zeros(len(images), dtype=np.float32)

    timings = latency(predict, 4, [1, 3], warmup=2, repeats=5)
    assert calls == [1] * 7 + [3] * 7
    assert set(timings) == {"batch_1", "batch_3"}
    for timing in timings.values():
        assert timing["min"] <= timing["median"] <= timing["p90"]


def test_fp32_file_matches_the_checkpoint_on_fresh_random_images(exported):
    _, checkpoint, run = exported
    model = load_classifier(checkpoint).eval()
    detector = OnnxDetector(next(run.glob("*_fp32.onnx")))
    size = detector.image_size
    # A batch size the export never saw (dynamic batch axis), uint8 pixels as a user passes them.
    images = torch.randint(
        0, 256, (5, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    with torch.inference_mode():
        expected = torch.sigmoid(model(images)).numpy()
    got = detector(images.numpy())
    assert got.shape == (5,) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4
    # The graph contract: float32 RGB (N, 3, S, S) named "image" in, P(fake) (N,) named "p_fake" out.
    graph = onnx.load(next(run.glob("*_fp32.onnx"))).graph
    (source,), (sink,) = graph.input, graph.output
    assert (source.name, sink.name) == (INPUT_NAME, OUTPUT_NAME)
    assert source.type.tensor_type.elem_type == sink.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = source.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, size, size]


def test_metadata_round_trips(exported):
    name, checkpoint, run = exported
    net = dict(load_classifier(checkpoint).hparams["net"])
    for precision in PRECISIONS:
        (path,) = run.glob(f"*_{precision}.onnx")
        info = OnnxDetector(path).info
        stored = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
        assert ModelInfo.from_metadata(stored) == info
        assert (info.model, info.precision, info.image_size) == (name, precision, net["image_size"])
        assert info.checkpoint_sha256 == sha256_of(checkpoint)
        assert info.net == net
        assert info.labels == {"0": "real", "1": "fake"}


def test_a_failed_limit_leaves_the_report_and_exits_1(tiny_checkpoints, tmp_path):
    result = run_ffd(
        "ffd.export",
        f"ckpt_path={tiny_checkpoints['vit']}",
        *EXPORT_TINY,
        "export.precisions=[fp32]",
        "export.limits.fp32_max_abs_diff=-1",  # no file can meet it
        root=tmp_path,
        expect_ok=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "fp32: max_abs_diff" in result.stderr and "export.limits.fp32_max_abs_diff" in result.stderr
    (run,) = run_dirs(tmp_path, "export")
    report = json.loads((run / REPORT_NAME).read_text())
    assert not report["passed"] and report["results"]["fp32"]["limit"]["ok"] is False
    log = (run / "export.log").read_text()
    assert "ffd.export onnx fp32:" in log and "limit: max_abs_diff" in log and ": FAILED" in log
    assert "ffd.export failed its limits: fp32: max_abs_diff" in log and str(run / REPORT_NAME) in log
    assert list(report["files"]) == ["fp32"] and sorted(p.name for p in run.glob("*.onnx")) == [
        "vit_32px_fp32.onnx"
    ]


def test_int8_on_a_test_only_set_says_calibration_needs_validation_images(tiny_checkpoints, tmp_path):
    """A folder of another generator's faces has a test split only: int8 said "split 'val' is empty"."""
    made = generate(tmp_path / "made", 32, 2, 2, 6, progress=False)
    other = tmp_path / "other_gan"
    shutil.move(made / "test", other)
    settings = [o for o in EXPORT_TINY if not o.startswith("data")]  # not data=synthetic
    common = ["ffd.export", f"ckpt_path={tiny_checkpoints['vit']}", *settings, f"data.root={other}"]
    result = run_in_process(*common, root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "int8 needs validation images for its calibration" in result.stderr
    assert not list(tmp_path.glob("outputs/**/*.onnx"))
    run_ffd(*common, "export.precisions=[fp32,fp16]", root=tmp_path)  # the way out the message gives
    assert sorted(p.name for p in tmp_path.glob("outputs/**/*.onnx")) == [
        "vit_32px_fp16.onnx",
        "vit_32px_fp32.onnx",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path=missing.ckpt"], "missing.ckpt does not exist"),
        (["ckpt_path=missing.ckpt", "export.precisions=[fp32,int4]"], "unknown int4"),
        (["ckpt_path=missing.ckpt", "export.calibration.method=mse"], "export.calibration.method='mse'"),
        (
            ["ckpt_path=missing.ckpt", "export.parity_images=0"],
            "export.parity_images=0 must be a whole number, at least 2",
        ),
        (["ckpt_path=missing.ckpt", "export.calibration.batch_size=0"], "export.calibration.batch_size=0"),
        (["ckpt_path=missing.ckpt", "export.limits.fp32_max_abs_diff=null"], "fp32_max_abs_diff=None"),
        (["ckpt_path=missing.ckpt", "export.providers=[TPUExecutionProvider]"], "TPUExecutionProvider not"),
        (["ckpt_path=missing.ckpt", "export.threshold=2"], "export.threshold=2 is not a probability"),
        (["ckpt_path=missing.ckpt", "export.overwrite=no"], "export.overwrite=no is not a switch"),
        (["ckpt_path=missing.ckpt", "export.output_dir="], "export.output_dir= is empty"),
    ],
)
def test_bad_options_are_one_clear_error(tmp_path, overrides, message):
    result = run_in_process("ffd.export", *overrides, "data=synthetic", root=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("place", ["earlier export", "under a file"])
def test_an_unusable_output_folder_is_refused_before_any_export(tiny_checkpoints, tmp_path, place):
    """An earlier export's files are never replaced unasked (the folder would mix two checkpoints'
    files), and a folder that cannot be written to fails before the minute of torch.export."""
    out = tmp_path / "out"
    if place == "earlier export":
        out.mkdir()
        (out / "vit_32px_fp16.onnx").write_bytes(b"an earlier export")
        message = "already holds vit_32px_fp16.onnx from an earlier run. Pass export.overwrite=true"
    else:
        tmp_path.joinpath("a-file").write_text("")
        out = tmp_path / "a-file" / "out"
        message = "cannot be written to"
    ckpt = f"ckpt_path={tiny_checkpoints['vit']}"
    result = run_in_process("ffd.export", ckpt, *EXPORT_TINY, f"export.output_dir={out}", root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"export.output_dir={out}" in result.stderr and message in result.stderr
    if place == "earlier export":
        assert sorted(p.name for p in out.iterdir()) == ["vit_32px_fp16.onnx"]
        assert (out / "vit_32px_fp16.onnx").read_bytes() == b"an earlier export"


def test_an_integer_threshold_is_taken_as_a_probability():
    """export.threshold=1 reaches the options as an int, which torchmetrics refused after the export."""
    from hydra import compose, initialize_config_dir

    from ffd.deploy.pipeline import check_options

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="export", overrides=["export.threshold=1"])
    check_options(cfg)
    assert isinstance(cfg.export.threshold, float) and cfg.export.threshold == 1.0


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        (None, "none (the reference)"),
        (
            {"figure": "auroc_drop", "value": -0.0025, "max": 0.005, "ok": True},
            "auroc_drop -0.0025 (AUROC 0.0025 above the checkpoint's), at most 0.005: ok",
        ),
        (
            {"figure": "auroc_drop", "value": 0.01, "max": 0.005, "ok": False},
            "auroc_drop 0.01, at most 0.005: FAILED",
        ),
        (
            {"figure": "max_abs_diff", "value": 1.5e-7, "max": 1e-4, "ok": True},
            "max_abs_diff 1.5e-07, at most 0.0001: ok",
        ),
    ],
)
def test_the_log_says_a_file_s_limit_in_words(limit, words) -> None:
    assert limit_outcome(limit) == words


def test_an_export_stopped_before_its_checks_says_its_files_are_unchecked(
    tiny_checkpoints, tmp_path, monkeypatch, caplog
) -> None:
    """A Ctrl-C during calibration or parity left .onnx files and no export_report.json, looking like a
    finished export, and export.log ended at 'Quantizing to int8'."""
    from hydra import compose, initialize_config_dir

    from ffd.deploy import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("FFD_ROOT", str(tmp_path))
    monkeypatch.setattr(pipeline, "measure", interrupted)
    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = [
        f"ckpt_path={tiny_checkpoints['vit']}",
        *EXPORT_TINY,
        "export.precisions=[fp32]",
        f"export.output_dir={tmp_path / 'out'}",
    ]
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(config_name="export", overrides=overrides)
    with pytest.raises(KeyboardInterrupt), caplog.at_level("ERROR", logger="ffd.export"):
        pipeline.run(cfg)
    assert (tmp_path / "out" / "vit_32px_fp32.onnx").is_file()
    assert (
        f"stopped before its parity checks: vit_32px_fp32.onnx in {tmp_path / 'out'} are unchecked"
        in caplog.text
    )
