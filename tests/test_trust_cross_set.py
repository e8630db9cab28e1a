"""ffd.trust.cross_set: `ffd.eval data.roots=[A,B,C]`, one checkpoint tested on several sets, one table.

The model is test_trust_robustness's tiny ViT, trained in-process on a synthetic set whose fakes carry a
period-2 trace; the sets are that set, another drawn with another seed (two classes, the same trace), and a
folder of that other set's fakes alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import test_trust_robustness
from ffd.data.synthetic import generate
from ffd.errors import UserError
from ffd.eval import evaluate
from ffd.models.notes import update_notes
from ffd.trust.cross_set import COLUMNS, CSV_FILE, JSON_FILE, CrossSetError, set_names

# (faces root, tiny.ckpt, tiny.onnx): test_trust_robustness's module-scoped fixture, a tiny ViT trained there.
detectors = test_trust_robustness.detectors

CONF = Path(__file__).resolve().parents[1] / "conf"


def eval_config(out: Path, *overrides: str) -> DictConfig:
    """ffd.eval's config as the command composes it, quiet and on the CPU, writing into ``out``."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "eval",
            overrides=[
                "data.num_workers=0",
                "data.batch_size=16",
                "data.show_table=false",
                "trainer.accelerator=cpu",
                "~logger",
                "callbacks.progress=null",
                f"paths.output_dir={out}",
                *overrides,
            ],
        )


def roots_override(*roots: Path) -> str:
    return f"data.roots=[{','.join(map(str, roots))}]"


def predictions(report: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(fake)) of a report's predictions.csv."""
    with (report / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["p_fake"]) for r in rows])


@pytest.fixture(scope="module")
def sets(detectors, tmp_path_factory) -> list[Path]:
    """[the training set, another two-class set named alike, a folder of that set's fakes alone]."""
    folder = tmp_path_factory.mktemp("cross_sets")
    other = generate(folder / "other" / "faces", 32, 2, 2, 40, seed=1, progress=False)
    fakes = folder / "gen2" / "fake"
    shutil.copytree(other / "test" / "fake", fakes)
    return [detectors[0], other, fakes.parent]


@pytest.fixture(scope="module")
def cross_run(detectors, sets, tmp_path_factory) -> tuple[Path, str]:
    """(run folder, console output) of one eval over the three sets; the checkpoint stores no decision."""
    out = tmp_path_factory.mktemp("cross_run")
    cfg = eval_config(out, f"ckpt_path={detectors[1]}", roots_override(*sets))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluate(cfg)
    return out, printed.getvalue()


def test_one_row_per_set_with_its_report_and_plausible_metrics(cross_run, sets):
    out, printed = cross_run
    result = json.loads((out / JSON_FILE).read_text())
    rows = result["sets"]
    names = [row["set"] for row in rows]
    assert names == set_names(sets) and len(set(names)) == 3
    assert names[0].endswith("-faces") and names[1] == "other-faces" and names[2] == "gen2"
    trained, other, fakes = rows
    assert (trained["real"], trained["fake"], other["real"], other["fake"]) == (20, 20, 20, 20)
    assert (fakes["real"], fakes["fake"], fakes["images"]) == (0, 20, 20)
    assert trained["auroc"] > 0.9 and other["auroc"] > 0.9  # the trace is learnt
    assert 0 <= trained["eer"] < 0.2 and trained["ap"] > 0.9 and trained["share_caught"] is None
    assert trained["tpr_at_1pct_fpr"] is None  # 20 reals cannot measure a 1 % false-positive rate
    assert [fakes[key] for key in ("auroc", "ap", "eer", "tpr_at_1pct_fpr", "accuracy")] == [None] * 5
    assert fakes["caught"] == "fakes called fake" and fakes["share_caught"] > 0.5
    assert result["decision"]["threshold"] == 0.5 and "stores no decision" in result["decision"]["source"]
    for row in rows:  # each set's whole report in report/<set>/, and the row agrees with it
        report = out / "report" / row["set"]
        assert Path(row["report"]) == report
        metrics = json.loads((report / "metrics.json").read_text())
        assert metrics["data"]["root"] == str(Path(row["root"]).resolve())
        labels, probs = predictions(report)
        assert len(labels) == row["images"]
        right = float(np.mean((probs > 0.5) == labels))
        assert (row["accuracy"] if row["accuracy"] is not None else row["share_caught"]) == pytest.approx(
            right
        )
    with (out / CSV_FILE).open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(COLUMNS) and [row["set"] for row in table] == names
    assert table[2]["auroc"] == "" and float(table[0]["auroc"]) == pytest.approx(trained["auroc"])
    assert "Cross-set test" in printed and "gen2" in printed and "(fakes called fake)" in printed


def test_the_stored_threshold_decides_accuracy_and_share_caught(cross_run, detectors, sets, tmp_path):
    out, _ = cross_run
    fakes, trained = sets[2], sets[0]
    _, fake_probs = predictions(out / "report" / "gen2")
    threshold = float(np.median(fake_probs))  # about half the fakes above it
    checkpoint = tmp_path / "decided.ckpt"
    shutil.copy(detectors[1], checkpoint)
    update_notes(
        checkpoint,
        decision={"policy": "fixed", "threshold": threshold, "temperature": 1.0, "chosen_on": "validation"},
    )
    evaluate(eval_config(tmp_path / "run", f"ckpt_path={checkpoint}", roots_override(fakes, trained)))
    result = json.loads((tmp_path / "run" / JSON_FILE).read_text())
    assert (
        result["decision"]["threshold"] == threshold
        and "chosen on validation" in result["decision"]["source"]
    )
    caught, first = result["sets"]
    assert caught["share_caught"] == pytest.approx(float(np.mean(fake_probs > threshold)))
    before = json.loads((out / JSON_FILE).read_text())["sets"][2]["share_caught"]
    assert caught["share_caught"] < before  # more fakes pass under the higher threshold
    labels, probs = predictions(tmp_path / "run" / "report" / first["set"])
    assert first["accuracy"] == pytest.approx(float(np.mean((probs > threshold) == labels)))


def test_one_root_is_a_plain_evaluation(detectors, tmp_path):
    faces, checkpoint, _ = detectors
    metrics = evaluate(eval_config(tmp_path, f"ckpt_path={checkpoint}", roots_override(faces)))
    assert metrics["test/auroc"] > 0.9
    assert (tmp_path / "report" / "metrics.json").is_file() and not (tmp_path / JSON_FILE).exists()


def test_names_of_folders_named_alike_take_their_parents():
    roots = [Path("/sets/a/faces"), Path("/sets/b/faces"), Path("/x/sg3"), Path("/y/b/faces")]
    assert set_names(roots) == ["a-faces", "sets-b-faces", "sg3", "y-b-faces"]


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """Two sets of one image (fake/x.png), an empty folder, and a folder of text files."""
    for name in ("one", "two"):
        (tmp_path / name / "fake").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / name / "fake" / "x.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "read_me.txt").write_text("no images here\n")
    return {name: tmp_path / name for name in ("one", "two", "empty", "notes")}


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["data.roots=one"], ["data.roots=one is not a list", "data.roots=[/sets/A,/sets/B]"]),
        (["data.roots=[]"], ["is not a list"]),
        (
            ["data.roots=[{one},{tmp}/nope,{tmp}/gone]"],
            ["{tmp}/nope, {tmp}/gone (the entries that are: {one})"],
        ),
        (["data.roots=[{one},{empty},{notes}]"], ["{empty}, {notes} holds no image file", ".png"]),
        (["data.roots=[{one},{one}/]"], ["the same folder more than once"]),
        (
            ["data.roots=[{one},{two}]", "data.root={notes}"],
            ["data.root={notes} are both set", "Drop data.root"],
        ),
        (["data.roots=[{one}]", "data.root={two}"], ["data.root={two} are both set"]),
        (["data.roots=[{one},{two}]", "robustness=default"], ["robustness is on", "-m "]),
        (["data.roots=[{one},{two}]", "explain=true"], ["explain is on"]),
        (["data.roots=[{one},{two}]", "ckpt_path=model.onnx"], ["is an .onnx file"]),
        (["data.roots=[{one}]", "data=synthetic"], ["data=synthetic"]),
    ],
)
def test_bad_roots_are_refused_before_the_model_is_read(folders, tmp_path, overrides, said):
    where = {name: str(path) for name, path in folders.items()} | {"tmp": str(tmp_path)}
    cfg = eval_config(tmp_path / "run", "ckpt_path=missing.ckpt", *(o.format(**where) for o in overrides))
    with pytest.raises(CrossSetError) as caught:
        evaluate(cfg)
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message and "missing.ckpt" not in message
    for part in said:
        assert part.format(**where) in message, message
    assert not (tmp_path / "run").exists()


def test_a_set_that_cannot_be_read_stops_the_run_before_any_set_is_tested(detectors, folders, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(folders["one"] / "fake" / "x.png", loose / "a.png")  # an image, but no class folder
    cfg = eval_config(tmp_path / "run", f"ckpt_path={detectors[1]}", roots_override(detectors[0], loose))
    with pytest.raises(CrossSetError, match=f"set loose \\({loose}\\): .*no split folders"):
        evaluate(cfg)
    assert not (tmp_path / "run" / "report").exists()
