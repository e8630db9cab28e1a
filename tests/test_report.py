"""The report's files agree with each other and with an independent computation."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from ffd.report import (
    REPORT_FILES,
    Predictions,
    compute_metrics,
    confusion_figure,
    pick_verdict_examples,
    pr_figure,
    roc_figure,
    verdict,
    verdicts_figure,
    write_report,
)


def roc_auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney: the chance that a random fake scores above a random real (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
        / (len(pos) * len(neg))
    )


def average_precision_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of the precision at the rank of each fake (scores have no ties here)."""
    order = np.argsort(-scores)
    hits = labels[order] == 1
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at_k[hits].mean())


@pytest.fixture(autouse=True)
def close_figures():
    """write_report hands its figures to the caller (the callback closes them after TensorBoard)."""
    yield
    plt.close("all")


@pytest.fixture
def predictions(tmp_path) -> Predictions:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    logits = (labels * 2.0 - 1.0) * 1.5 + rng.normal(0, 1.5, 40)  # informative but imperfect
    paths = []
    for i in range(40):
        path = tmp_path / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return Predictions(paths, labels, logits)


def test_report_files_agree(tmp_path, predictions):
    out = tmp_path / "report"
    summary, _ = write_report(out, predictions, threshold=0.5, bad_files=[("x.jpg", "truncated")])
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in rows])
    p_fake = np.array([float(r["p_fake"]) for r in rows])
    said = np.array([r["verdict"] == "fake" for r in rows])
    assert np.array_equal(said, p_fake > 0.5)
    assert metrics["accuracy"] == pytest.approx(
        float(np.mean(said == labels)), abs=1e-6
    )  # torchmetrics computes in float32
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, p_fake), abs=1e-5)
    assert metrics["auprc"] == pytest.approx(average_precision_score(labels, p_fake), abs=1e-5)
    counts = summary["counts"]
    assert counts["true_positives"] + counts["false_negatives"] == int(labels.sum())
    assert counts["unreadable_skipped"] == 1
    assert "x.jpg\ttruncated" in (out / "bad_files.txt").read_text()


def test_loss_is_mean_bce():
    labels = np.array([0, 1, 1, 0])
    logits = np.array([-2.0, 0.5, 3.0, 1.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits), torch.tensor(labels, dtype=torch.float64)
    ).item()
    assert compute_metrics(labels, logits)["loss"] == pytest.approx(expected)


def test_verdict_confidence_is_probability_of_predicted_class():
    assert verdict(0.9) == ("fake", 0.9)
    assert verdict(0.2)[0] == "real" and verdict(0.2)[1] == pytest.approx(0.8)
    assert verdict(0.6, threshold=0.7)[0] == "real"


def test_verdicts_and_metrics_agree_at_the_threshold():
    """P(fake) exactly at the threshold (logit 0): torchmetrics counts it real, and so must the verdict."""
    labels, logits = np.array([0, 1, 1, 0]), np.array([-3.0, 0.0, 3.0, 0.0])
    said = [verdict(p)[0] == "fake" for p in 1 / (1 + np.exp(-logits))]
    assert compute_metrics(labels, logits)["accuracy"] == pytest.approx(np.mean(np.array(said) == labels))


def test_verdict_examples_show_confident_mistakes_first():
    labels = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array([0.95, 0.6, 0.1, 0.9, 0.2, 0.8])  # index 0 most confidently wrong, then 2
    chosen = pick_verdict_examples(labels, probs, 0.5, 4)
    assert chosen[:2] == [0, 2]
    assert len(chosen) == 4 and len(set(chosen)) == 4


def test_the_confusion_matrix_gives_shares_of_each_true_class_and_none_for_an_absent_class():
    labels, probs = np.array([1, 1, 1]), np.array([0.9, 0.8, 0.2])  # fakes only: two caught, one missed
    fig = confusion_figure(labels, probs, 0.5)
    texts = [text.get_text() for text in fig.axes[0].texts]
    plt.close(fig)
    assert texts == ["0", "0", "1\n33.3%", "2\n66.7%"]  # rows true real, true fake; columns predicted


def test_verdict_examples_show_the_closest_correct_calls_after_the_mistakes():
    """The right verdicts follow from the least sure to the surest, not in file order."""
    labels = np.zeros(9, dtype=int)
    probs = np.array([0.05, 0.45, 0.01, 0.3, 0.2, 0.4, 0.1, 0.35, 0.6])  # index 8 is wrong
    chosen = pick_verdict_examples(labels, probs, 0.5, 5)
    sureness = [1 - probs[i] for i in chosen[1:]]
    assert chosen[0] == 8 and chosen[1] == 1 and sureness == sorted(sureness)


def test_the_logged_test_metrics_call_verdicts_at_the_reports_threshold(tmp_path):
    """eval with callbacks.report.threshold=0.3 printed two tables that disagreed (torchmetrics at 0.5)."""
    from ffd.callbacks.report import ReportWriter
    from ffd.models.classifier import DeepfakeClassifier

    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 16, "depth": 1})
    ReportWriter(tmp_path, threshold=0.3).on_test_start(None, model)
    probs, labels = torch.tensor([0.4, 0.2]), torch.tensor([1, 0])  # right at 0.3, one wrong at 0.5
    model.test_metrics.update(probs, labels)
    model.val_metrics.update(probs, labels)
    assert model.test_metrics.compute()["test/accuracy"] == 1.0
    assert model.val_metrics.compute()["val/accuracy"] == 0.5  # validation keeps 0.5


@pytest.mark.parametrize("only", [0, 1])
def test_a_one_class_report_has_null_curves_a_note_and_strict_json(tmp_path, predictions, only):
    """AUROC and AUPRC need both classes: metrics.json said NaN, which strict JSON parsers refuse."""
    one_class = Predictions(predictions.paths, np.full(40, only), predictions.logits)
    out = tmp_path / "report"
    write_report(out, one_class)

    def refuse(constant: str) -> None:
        raise ValueError(f"metrics.json holds {constant}")

    summary = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert summary["metrics"]["auroc"] is None and summary["metrics"]["auprc"] is None
    assert summary["metrics"]["accuracy"] is not None
    assert f"every test image is {'real' if only == 0 else 'fake'}" in summary["notes"][0]
    assert not (out / "roc.png").exists() and not (out / "pr.png").exists()
    assert (out / "verdicts.png").exists() and (out / "confusion_matrix.png").exists()


@pytest.mark.parametrize(
    ("labels", "logits"),
    [
        ([0, 0, 0], [-2.0, 1.0, -1.0]),  # reals alone, one called fake: no fake to recall
        ([0, 0], [-2.0, -1.0]),  # reals alone, all called real: every ratio is 0/0
        ([0, 1], [-2.0, -1.0]),  # nothing called fake: precision has no flagged image
    ],
    ids=["reals-one-flagged", "reals-all-right", "none-flagged"],
)
def test_a_ratio_of_zero_over_zero_is_null_with_a_note_not_zero(tmp_path, labels, logits):
    """torchmetrics scores 0/0 as 0: a set of reals alone read "recall 0.0000", as if no fake was caught."""
    labels, logits = np.array(labels), np.array(logits)
    called_fake, fake = logits > 0, labels == 1
    expected_null = {
        name
        for name, denominator in (
            ("precision", called_fake.sum()),
            ("recall", fake.sum()),
            ("f1", called_fake.sum() + fake.sum()),
        )
        if denominator == 0
    }
    write_report(tmp_path, Predictions([f"{i}.png" for i in range(len(labels))], labels, logits))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    ratios = ("precision", "recall", "f1")
    assert {name for name in ratios if on_disk["metrics"][name] is None} == expected_null
    assert all(on_disk["metrics"][name] == 0.0 for name in set(ratios) - expected_null)
    note = next(note for note in on_disk["notes"] if "0/0" in note)
    assert all(name in note for name in expected_null)
    assert all(name not in note.split(":")[0] for name in set(ratios) - expected_null)


@pytest.mark.parametrize("draw", [roc_figure, pr_figure])
def test_a_perfect_curve_is_drawn_inside_the_view_not_on_its_frame(draw):
    """At a perfect score the ROC curve runs along x=0 and y=1 (PR along y=1 and x=1): a view that ends
    there hides the curve under the frame."""
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    figure = draw(labels, probs, 1.0)
    (ax,) = figure.axes
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    curve = ax.get_lines()[0].get_xydata()
    assert x0 < curve[:, 0].min() and curve[:, 0].max() < x1
    assert y0 < curve[:, 1].min() and curve[:, 1].max() < y1
    plt.close(figure)


def test_json_safe_turns_every_non_finite_number_into_null():
    from ffd.report import json_safe

    value = {"a": [float("nan"), np.float64("inf"), 1.5], "b": (np.float32("nan"), -float("inf"), 2)}
    assert json_safe(value) == {"a": [None, None, 1.5], "b": [None, None, 2]}


def test_a_two_class_report_has_no_notes(tmp_path, predictions):
    summary, _ = write_report(tmp_path, predictions)
    assert summary["notes"] == []


def test_verdict_tiles_cut_long_file_names_and_a_small_grid_fits_its_title(tmp_path, predictions):
    long_name = tmp_path / "fake" / ("a-very-long-generated-file-name-" * 4 + "end.png")
    long_name.parent.mkdir()
    long_name.write_bytes(Path(predictions.paths[0]).read_bytes())
    one = Predictions([str(long_name)], np.array([1]), np.array([2.0]))
    fig = verdicts_figure(one, threshold=0.5)
    title = fig.axes[0].get_title()
    name_line = title.splitlines()[-1]
    assert name_line.startswith("fake/a-very") and name_line.endswith("end.png") and "…" in name_line
    assert len(name_line) <= 30
    assert fig.get_figwidth() >= 7.8  # the suptitle is about 7 inches wide at its font size


@pytest.mark.parametrize("threshold", [1.5, -0.1, "abc", True])
def test_a_report_threshold_out_of_range_is_refused_at_once(tmp_path, threshold):
    from ffd.callbacks.report import ReportWriter
    from ffd.errors import UserError

    typed = str(threshold).lower() if isinstance(threshold, bool) else threshold  # as on the command line
    with pytest.raises(UserError, match=f"callbacks.report.threshold={typed} is not a probability"):
        ReportWriter(tmp_path, threshold=threshold)


def test_an_integer_report_threshold_works(tmp_path):
    """callbacks.report.threshold=1 reaches the callback as an int, which torchmetrics refused after the
    whole test epoch."""
    from ffd.callbacks.report import ReportWriter

    writer = ReportWriter(tmp_path, threshold=1)
    assert isinstance(writer.threshold, float)
    labels, logits = np.array([0, 1]), np.array([-1.0, 1.0])
    summary, _ = write_report(tmp_path, Predictions(["a", "b"], labels, logits), threshold=writer.threshold)
    assert summary["metrics"]["recall"] == 0.0  # nothing is above P(fake) = 1


def one_class_test_run(tmp_path: Path, label: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The logged test metrics of a tiny untrained ViT on 6 images all labelled `label`, and its P(fake)."""
    import lightning as L

    from ffd.models.classifier import DeepfakeClassifier

    torch.manual_seed(0)
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 8, "depth": 1})
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    data = [{"image": images[i], "label": torch.tensor(label)} for i in range(6)]
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(model, torch.utils.data.DataLoader(data, batch_size=3), verbose=False)
    with torch.no_grad():
        probs = torch.sigmoid(model.eval()(images))
    return dict(trainer.callback_metrics), probs


def test_one_class_test_metrics_are_logged_as_nan_not_zero(tmp_path):
    """With only fakes in the test split, torchmetrics scores AUROC 0 and AUPRC 1: numbers that mean
    nothing, which reached TensorBoard and the value a sweep optimises."""
    metrics, probs = one_class_test_run(tmp_path, 1.0)
    assert torch.isnan(metrics["test/auroc"]) and torch.isnan(metrics["test/auprc"])
    called_fake = (probs > 0.5).float().mean()  # every label is fake: the accuracy is the share called fake
    assert float(metrics["test/accuracy"]) == pytest.approx(float(called_fake))


def test_a_ratio_of_zero_over_zero_is_logged_as_nan_not_zero(tmp_path):
    """The logged test metrics (TensorBoard, a sweep's objective) agree with the report: with reals alone,
    recall is NaN, not torchmetrics' 0."""
    metrics, probs = one_class_test_run(tmp_path, 0.0)
    flagged = int((probs > 0.5).sum())
    assert torch.isnan(metrics["test/recall"])
    assert torch.isnan(metrics["test/precision"]) == (flagged == 0)
    assert torch.isnan(metrics["test/f1"]) == (flagged == 0)
    assert float(metrics["test/accuracy"]) == pytest.approx(1 - flagged / 6)


@pytest.fixture(scope="module")
def console_of_a_run(tmp_path_factory) -> tuple[str, dict]:
    """What a tiny fit and test prints with the run's console callbacks (conf/callbacks/default.yaml) at
    80 columns, and the report's counts."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ffd.callbacks.report import ReportWriter
    from ffd.models.classifier import DeepfakeClassifier

    root = tmp_path_factory.mktemp("console")
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "callbacks" / "default.yaml")
    callbacks = [instantiate(conf[name]) for name in ("model_summary", "progress")]
    callbacks.append(ReportWriter(root / "report"))
    torch.manual_seed(0)
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 8, "depth": 1})
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    data = [{"image": images[i], "label": torch.tensor(float(i % 2)), "path": f"{i}.png"} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(
        max_epochs=1, logger=False, callbacks=callbacks, default_root_dir=root, enable_model_summary=False
    )
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("COLUMNS", "80")
        trainer.fit(model, loader, loader)
        trainer.test(model, loader, verbose=False)
    return printed.getvalue(), json.loads((root / "report" / "metrics.json").read_text())["counts"]


def test_the_model_summary_shows_no_flops_it_did_not_count(console_of_a_run):
    """Lightning 2.6 printed a FLOPs column of 0 and "Total FLOPs: 0" (it counts none without an example
    input, which would cost a forward pass at every start)."""
    printed, _ = console_of_a_run
    assert "Trainable params" in printed and "Params" in printed
    assert "FLOPs" not in printed


def test_the_report_comes_after_the_finished_test_bar(console_of_a_run):
    """The test bar was printed last, after "Report written to"."""
    printed, _ = console_of_a_run
    assert printed.index("Testing") < printed.index("Test report") < printed.index("Report written to")


def test_the_report_title_fits_on_one_line(console_of_a_run):
    """The title wrapped at 80 columns: "Test report: 400 images (200 real, 200" / "fake), threshold 0.5"."""
    printed, counts = console_of_a_run
    (title,) = [line for line in printed.splitlines() if "Test report" in line]
    assert "threshold 0.5" in title
    assert f"{counts['images']} ({counts['real']} / {counts['fake']})" in printed


def test_resuming_into_the_interrupted_runs_checkpoint_folder_gives_no_warning(tmp_path):
    """ffd.train resumes into the folder of the checkpoint it resumes from (continue_checkpoints), and
    Lightning warned "Checkpoint directory ... exists and is not empty" at every resume. ffd silences that
    warning, and only that one. In a fresh interpreter, as a user runs ffd: pytest resets the warning
    filters a module sets when it is imported."""
    (tmp_path / "last.ckpt").write_bytes(b"the interrupted run's")
    code = (
        "import warnings\n"
        "import ffd\n"
        "from lightning.pytorch.callbacks import ModelCheckpoint\n"
        f"ModelCheckpoint(dirpath={str(tmp_path)!r})._ModelCheckpoint__warn_if_dir_not_empty({str(tmp_path)!r})\n"
        "warnings.warn('Checkpoint directory settings: another warning still shows')\n"
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    assert "another warning still shows" in result.stderr
    assert "exists and is not empty" not in result.stderr


def test_predict_writes_the_reports_prediction_columns_less_the_label(tmp_path, predictions):
    """ffd.predict wrote path, verdict, confidence, p_fake and the test report path, label, p_fake, verdict,
    confidence: two files of the same images that did not line up."""
    from ffd.predictions import PREDICTION_COLUMNS

    write_report(tmp_path, predictions)
    with (tmp_path / "predictions.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert [column for column in header if column != "label"] == list(PREDICTION_COLUMNS)


@pytest.mark.parametrize(("stage", "written"), [("fit", True), ("test", False)])
def test_a_fit_stopped_early_lists_the_files_it_skipped(tmp_path, stage, written) -> None:
    """A stopped fit named its skipped files nowhere; a failed test has written the list of every process
    already, which this process's own must not replace."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    from ffd.callbacks.report import ReportWriter

    writer = ReportWriter(tmp_path / "report")
    writer.bad_files = {("/data/train/real/x.jpg", "cannot be decoded: truncated or corrupt JPEG")}
    fn = TrainerFn.FITTING if stage == "fit" else TrainerFn.TESTING
    trainer = SimpleNamespace(state=SimpleNamespace(fn=fn), datamodule=None, is_global_zero=True)
    writer.on_exception(trainer, None, KeyboardInterrupt())
    listed = tmp_path / "report" / "bad_files.txt"
    assert listed.is_file() == written
    if written:
        assert "/data/train/real/x.jpg\tcannot be decoded" in listed.read_text()
