"""ffd.predict: inputs (folder, glob, list), rows and files, unreadable files, .ckpt vs fp32 .onnx, errors.

The models are the session's tiny checkpoints (a few training steps at 32 px): their probabilities are
all near 0.5, so the tests that need both verdicts pick the threshold from the probabilities computed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from rich.console import Console
from torchvision.io import write_jpeg, write_png

from cli import run_dirs, run_ffd
from ffd.assets import sha256_of
from ffd.data.transforms import eval_transform
from ffd.errors import UserError
from ffd.images import find_images, read_rgb
from ffd.inference import predict
from ffd.models.checkpoint import load_classifier
from ffd.models.notes import update_notes
from ffd.predictions import OUTPUT_FILES, Prediction, PredictRun
from ffd.report import verdict
from ffd.runtime import exit_on_user_error
from ffd.trust.decision import decision_for


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """a.png, b.jpg, sub/c.png (40x48: resized), sub/d.jpeg, a corrupt e.jpg, and a notes.txt to ignore."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    write_png(random_image(32, 32, 0), str(folder / "a.png"))
    write_jpeg(random_image(32, 32, 1), str(folder / "b.jpg"), quality=95)
    write_png(random_image(40, 48, 2), str(folder / "sub" / "c.png"))
    write_jpeg(random_image(32, 32, 3), str(folder / "sub" / "d.jpeg"), quality=95)
    (folder / "e.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then nothing decodable")
    (folder / "notes.txt").write_text("not an image; not picked up from a folder")
    return folder


READABLE = ["a.png", "b.jpg", "sub/c.png", "sub/d.jpeg"]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None)


def reference_probs(checkpoint: Path, files: list[Path]) -> np.ndarray:
    """P(fake) straight from the model, one image at a time, with the evaluation's resize, calibrated
    with the temperature training stored in the checkpoint (as predict reports it)."""
    model = load_classifier(checkpoint).eval()
    resize = eval_transform(model.image_size)
    with torch.inference_mode():
        raw = np.array([torch.sigmoid(model(resize(read_rgb(f))[None])).item() for f in files])
    return decision_for(model.notes, None).calibrate(raw)


def threshold_between(probs: np.ndarray) -> float:
    """A threshold in the widest gap between sorted probabilities: both verdicts, none on the edge."""
    ordered = np.sort(probs)
    gap = int(np.argmax(np.diff(ordered)))
    return float(ordered[gap : gap + 2].mean())


def test_folder_gives_a_row_per_image_and_lists_the_corrupt_file(tiny_checkpoints, photos, tmp_path):
    checkpoint = tiny_checkpoints["densenet"]
    expected = reference_probs(checkpoint, [photos / name for name in READABLE])
    threshold = threshold_between(expected)
    console, out = quiet(), tmp_path / "run"
    result = predict(photos, checkpoint, out, threshold, batch_size=2, num_workers=0, console=console)

    assert [row.path for row in result.rows] == [str(photos / name) for name in READABLE]
    np.testing.assert_allclose([row.p_fake for row in result.rows], expected, atol=1e-5)
    for row in result.rows:
        assert row.verdict == ("fake" if row.p_fake > threshold else "real")  # as ffd.report.verdict
        assert row.confidence == pytest.approx(row.p_fake if row.verdict == "fake" else 1 - row.p_fake)
    assert {row.verdict for row in result.rows} == {"real", "fake"}
    corrupt = (str(photos / "e.jpg"), "cannot be decoded: truncated or corrupt JPEG")  # path-free reason
    assert result.bad == [corrupt]

    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["path"], r["verdict"]) for r in rows] == [(r.path, r.verdict) for r in result.rows]
    np.testing.assert_allclose([float(r["p_fake"]) for r in rows], expected, atol=1e-5)
    summary = json.loads((out / "predictions.json").read_text())
    real = sum(r.verdict == "real" for r in result.rows)
    counts = {"images": 4, "photos": 4, "faces": 0, "real": real, "fake": 4 - real, "no_face": 0}
    assert summary["counts"] == counts | {"unreadable": 1}
    assert summary["threshold"] == threshold and summary["model"]["runtime"] == "pytorch"
    assert summary["unreadable"] == [{"path": corrupt[0], "reason": corrupt[1]}]
    assert "\t".join(corrupt) in (out / "bad_files.txt").read_text().splitlines()

    printed = console.file.getvalue()
    assert "Unreadable files" in printed and "e.jpg" in printed
    assert printed.count("Real") + printed.count("Fake") >= 4  # the table's verdict column
    assert f"4 image(s): {real} real, {4 - real} fake" in printed and "1 unreadable" in printed


def test_the_table_is_bounded_and_the_files_hold_every_row(tmp_path):
    run = PredictRun(model={"name": "densenet", "runtime": "pytorch"}, input="photos", threshold=0.5)
    probs = np.linspace(0.05, 0.95, 30)  # 15 under 0.5, 15 over
    run.rows = [Prediction(f"img{i:03d}.png", float(p), *verdict(float(p))) for i, p in enumerate(probs)]
    console = quiet()
    run.print(console, max_rows=5)
    run.write(tmp_path)
    printed = console.file.getvalue()
    assert "img004.png" in printed and "img005.png" not in printed
    assert "first 5 of 30 rows" in printed and "30 image(s): 15 real, 15 fake" in printed
    assert len(json.loads((tmp_path / "predictions.json").read_text())["predictions"]) == 30


# DenseNet121's torch.export-based ONNX export takes 30-60 s on 2 cores; the predict path is the same for
# both networks, and the export tests check DenseNet's fp32 parity. `pytest -m slow` runs it.
@pytest.mark.parametrize("name", [pytest.param("densenet", marks=pytest.mark.slow), "vit"])
def test_checkpoint_and_fp32_onnx_give_the_same_verdicts(tiny_checkpoints, photos, tmp_path, name):
    from ffd.deploy.convert import export_onnx

    checkpoint = tiny_checkpoints[name]
    exported = tmp_path / f"{name}.onnx"
    export_onnx(load_classifier(checkpoint).eval(), exported, sha256_of(checkpoint))
    threshold = threshold_between(reference_probs(checkpoint, [photos / f for f in READABLE]))
    consoles = {"pytorch": quiet(), "onnxruntime": quiet()}
    runs = {
        runtime: predict(
            photos, model, tmp_path / runtime, threshold, num_workers=0, console=consoles[runtime]
        )
        for runtime, model in (("pytorch", checkpoint), ("onnxruntime", exported))
    }
    torch_run, onnx_run = runs["pytorch"], runs["onnxruntime"]
    assert onnx_run.model["runtime"] == "onnxruntime" and onnx_run.model["name"] == name
    # The title names the ONNX file's precision (fp32, fp16 or int8), as predictions.json does.
    assert (
        f"ffd.predict: {name} (onnxruntime, {onnx_run.model['precision']})"
        in consoles["onnxruntime"].file.getvalue()
    )
    assert [r.path for r in onnx_run.rows] == [r.path for r in torch_run.rows]
    assert [r.verdict for r in onnx_run.rows] == [r.verdict for r in torch_run.rows]
    assert {r.verdict for r in onnx_run.rows} == {"real", "fake"}
    np.testing.assert_allclose(
        [r.p_fake for r in onnx_run.rows], [r.p_fake for r in torch_run.rows], atol=1e-4
    )
    assert onnx_run.bad == torch_run.bad


def test_inputs_from_a_folder_a_glob_and_a_list(photos, tmp_path):
    in_folder = ["a.png", "b.jpg", "e.jpg", "sub/c.png", "sub/d.jpeg"]  # sorted; notes.txt left out
    assert find_images(photos) == [photos / name for name in in_folder]
    assert find_images(photos / "a.png") == [photos / "a.png"]
    assert find_images(f"{photos}/**/*.png") == [photos / "a.png", photos / "sub" / "c.png"]
    listing = photos / "sub" / "list.txt"
    listing.write_text(f"# picked by hand\n\nc.png\n  ../b.jpg  \n{photos / 'a.png'}\nmissing.jpg\n")
    expected = ["sub/c.png", "sub/../b.jpg", "a.png", "sub/missing.jpg"]  # listed order, missing kept
    assert find_images(listing) == [photos / name for name in expected]


def test_a_list_input_through_the_command_line(tiny_checkpoints, photos, tmp_path):
    """The real CLI (Hydra, model= despite the training config group of that name), run folder, output,
    and its log. The input is typed relative to the shell's folder (tmp_path), the run folder is elsewhere:
    the files record absolute paths."""
    listing = photos / "list.txt"
    listing.write_text("# two images, one missing file\na.png\nsub/c.png\nsub/missing.jpg\n")
    typed = listing.relative_to(tmp_path)
    result = run_ffd(
        "ffd.predict", f"input={typed}", f"model={tiny_checkpoints['vit']}", "threshold=0.5", "face=none",
        root=tmp_path,
    )  # fmt: skip
    (run,) = run_dirs(tmp_path, "predict")
    with (run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [str(photos / "a.png"), str(photos / "sub" / "c.png")]
    # The run's log says what was done, as the train and eval logs do (it was empty).
    log = (run / "predict.log").read_text()
    assert str(listing) in log and str(tiny_checkpoints["vit"]) in log and str(run) in log
    assert "2 image(s)" in log and "1 unreadable" in log
    assert all(r["verdict"] == ("fake" if float(r["p_fake"]) > 0.5 else "real") for r in rows)
    assert "missing.jpg" in (run / "bad_files.txt").read_text()
    printed = "".join(result.stdout.split())  # rich wraps and folds the table to the terminal's width
    assert "ffd.predict:vit(pytorch)" in printed and "Unreadablefiles(skipped)" in printed
    assert "2image(s)" in printed and "1unreadable" in printed


def onnx_without_ffd_metadata(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["p_fake"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("p_fake", TensorProto.FLOAT, [None])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


BAD_MODELS = {
    "missing.ckpt": None,
    "missing.onnx": None,
    "text.ckpt": lambda p: p.write_text("not a checkpoint"),
    "foreign.ckpt": lambda p: torch.save({"state_dict": {}, "hyper_parameters": {}}, p),
    "garbage.onnx": lambda p: p.write_bytes(b"\x00not onnx"),
    "plain.onnx": onnx_without_ffd_metadata,
    "weights.pt": lambda p: p.write_bytes(b"any"),
}


@pytest.mark.parametrize("name", BAD_MODELS)
def test_a_bad_model_file_is_one_clear_error(photos, tmp_path, capsys, name):
    model = tmp_path / name
    if BAD_MODELS[name]:
        BAD_MODELS[name](model)
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(photos, model, tmp_path / "run", console=quiet())
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert str(model) in error and "Traceback" not in error
    assert not (tmp_path / "run").exists(), "nothing is written for a model that cannot be used"


BAD_INPUTS = {
    "missing": ("no/such/folder", "does not exist"),
    "no images": ("photos/empty", "holds no image"),
    "glob": ("photos/**/*.gif", "matches no image"),
    "empty list": ("photos/empty/list.txt", "names no image"),
    "unreadable file": ("photos/e.jpg", "e.jpg: cannot be decoded: truncated or corrupt JPEG. ffd.predict"),
    "unreadable list": ("photos/empty/bad.txt", "none of its 2 file(s) could be read"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_error(tiny_checkpoints, photos, tmp_path, capsys, case):
    (photos / "empty").mkdir()
    (photos / "empty" / "readme.md").write_text("no images here")
    (photos / "empty" / "list.txt").write_text("# nothing listed yet\n\n")
    (photos / "empty" / "bad.txt").write_text("../e.jpg\nreadme.md\n")
    spec, says = BAD_INPUTS[case]
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(
            tmp_path / spec, tiny_checkpoints["densenet"], tmp_path / "run", num_workers=0, console=quiet()
        )
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert str(tmp_path / spec) in error and says in error and "Traceback" not in error


def test_a_text_file_as_input_is_not_an_image_and_is_named_once(tiny_checkpoints, tmp_path, capsys):
    """input=README.md was listed as `README.md<TAB>README.md: cannot be decoded ... Only jpeg, png, webp
    and gif are currently supported. For avif and heic format, please rely on `decode_avif` ...`:
    the path twice and torchvision's advice on its own API. The reason is now the dataset index's."""
    readme = tmp_path / "README.md"
    readme.write_text("# ffd\n")
    console, out = quiet(), tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(readme, tiny_checkpoints["vit"], out, num_workers=0, console=console)
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error
    # One file named: the error gives its reason and what to pass instead, not "Replace or re-export them"
    assert f"input={readme}: not an image file (suffix '.md'). ffd.predict reads images (JPEG" in error, error
    reason = "not an image file (suffix '.md')"
    shown = console.file.getvalue()
    assert reason in shown and shown.count(str(readme)) == 1 and "decode_avif" not in shown
    assert (out / "bad_files.txt").read_text().splitlines()[1:] == [f"{readme}\t{reason}"]
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["unreadable"] == [{"path": str(readme), "reason": reason}]


def test_threshold_must_be_a_probability(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(photos, tmp_path / "m.ckpt", tmp_path / "run", threshold=1.5)
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert "threshold=1.5" in error and "Traceback" not in error


def test_an_onnx_model_without_onnxruntime_says_what_to_install(photos, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"checked for onnxruntime before being read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when absent
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(photos, model, tmp_path / "run")
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert "ffd[export]" in error and str(model) in error and "Traceback" not in error


def test_odd_file_names_are_written_and_shown_as_they_are(tiny_checkpoints, tmp_path, monkeypatch):
    """A Latin-1 name (not UTF-8: surrogates in Python) once lost every prediction when the CSV was
    written; a [/x] in a name crashed the table (read as markup)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    latin = [os.fsdecode(os.fsencode(folder) + b"/caf\xe9" + suffix) for suffix in (b".png", b".jpg")]
    write_png(random_image(32, 32, 0), str(folder / "plain.png"))
    write_jpeg(random_image(32, 32, 2), str(folder / "plain.jpg"))
    for name, suffix in zip(latin, (".png", ".jpg"), strict=True):
        os.rename(folder / f"plain{suffix}", name)
    (folder / "a [").mkdir()  # a path with "[/x]" in it, which rich reads as a closing tag
    write_png(random_image(32, 32, 1), str(folder / "a [" / "x] b [red]c.png"))
    (folder / "a [" / "y] bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    console, out = quiet(), tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # a relative input: made absolute in the files, names kept byte for byte
    predict("odd", tiny_checkpoints["vit"], out, num_workers=0, console=console)
    shown = console.file.getvalue()
    assert "a [/x] b [red]c.png" in shown and "a [/y] bad.jpg" in shown
    with (out / "predictions.csv").open(newline="", errors="surrogateescape") as handle:
        listed = {row["path"] for row in csv.DictReader(handle)}
    assert set(latin) < listed and all(Path(path).is_file() for path in listed)  # each opens its file
    assert "a [/y] bad.jpg" in (out / "bad_files.txt").read_text()


def test_the_files_record_absolute_paths_and_keep_links(tiny_checkpoints, photos, tmp_path, monkeypatch):
    """Paths typed relative to the shell's folder do not resolve from the run folder: the files record them
    absolute, through a symbolic link as given (not its target); the console keeps them short."""
    shell = tmp_path / "shell"
    shell.mkdir()
    (shell / "linked").symlink_to(photos)
    (shell / "model.ckpt").symlink_to(tiny_checkpoints["vit"])
    monkeypatch.chdir(shell)
    console, out = quiet(), tmp_path / "run"
    result = predict("linked", "model.ckpt", out, num_workers=0, console=console)
    given = shell / "linked"
    with (out / "predictions.csv").open() as handle:
        assert [row["path"] for row in csv.DictReader(handle)] == [str(given / name) for name in READABLE]
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["input"] == str(given) and summary["model"]["file"] == str(shell / "model.ckpt")
    assert [row["path"] for row in summary["predictions"]] == [str(given / name) for name in READABLE]
    assert summary["unreadable"][0]["path"] == str(given / "e.jpg")
    assert f"{given / 'e.jpg'}\t" in (out / "bad_files.txt").read_text()
    printed = console.file.getvalue()
    assert str(given) not in printed and os.path.join("linked", "sub", "c.png") in printed
    assert len(result.rows) == len(READABLE)


def test_the_run_is_recorded_for_its_log(tiny_checkpoints, photos, tmp_path, caplog):
    """predict.log (Hydra's file handler on ffd.record) gets the input, model, counts and the output."""
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="ffd.record"):
        predict(photos, tiny_checkpoints["vit"], out, num_workers=0, console=quiet())
    (said,) = [r.getMessage() for r in caplog.records if r.name == "ffd.record"]
    assert str(photos) in said and str(tiny_checkpoints["vit"]) in said and '"runtime": "pytorch"' in said
    assert f"{len(READABLE)} image(s)" in said and "1 unreadable" in said and str(out) in said
    assert "stopped early" not in said


@pytest.mark.parametrize(
    "option",
    [{"threshold": "abc"}, {"threshold": 1.5}, {"batch_size": 0}, {"device": "gpu"}, {"overwrite": "no"}],
)
def test_an_option_out_of_range_is_named_before_the_model_loads(photos, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(predict)(photos, tmp_path / "none.ckpt", tmp_path / "run", **option)
    assert stop.value.code == 1
    error = capsys.readouterr().err
    (name,) = option
    assert f"{name}=" in error and "conf/predict.yaml" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()


def test_an_earlier_runs_files_are_replaced_only_when_asked(tiny_checkpoints, photos, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "predictions.csv").write_text("an earlier run's rows\n")
    with pytest.raises(UserError, match="overwrite=true"):
        predict(photos, tiny_checkpoints["vit"], out, num_workers=0, console=quiet())
    assert (out / "predictions.csv").read_text() == "an earlier run's rows\n"
    predict(photos, tiny_checkpoints["vit"], out, num_workers=0, overwrite=True, console=quiet())
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + len(READABLE)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_run_stopped_early_keeps_what_it_predicted(
    tiny_checkpoints, photos, tmp_path, monkeypatch, caplog, stop: str
) -> None:
    """A scheduler's SIGTERM used to end the run at once: no CSV, no JSON, an empty predict.log."""
    import ffd.inference as inference
    from ffd.runtime import Terminated, sigterm_stops_like_ctrl_c

    real_open = inference.open_detector

    def stops_at_the_second_batch(model, device="auto"):
        detector = real_open(model, device)
        calls = []

        def run(images):
            calls.append(1)
            if len(calls) == 2:
                if stop == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt
            return detector.run(images)

        return inference.Detector(run, detector.image_size, detector.about)

    monkeypatch.setattr(inference, "open_detector", stops_at_the_second_batch)
    out = tmp_path / "run"
    expected = Terminated if stop == "sigterm" else KeyboardInterrupt
    with pytest.raises(expected), caplog.at_level("INFO", logger="ffd.record"), sigterm_stops_like_ctrl_c():
        predict(photos, tiny_checkpoints["vit"], out, batch_size=2, num_workers=0, console=quiet())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["complete"] is False and summary["counts"]["images"] == 2
    assert len((out / "predictions.csv").read_text().splitlines()) == 3
    assert "stopped early" in caplog.text and "2 image(s)" in caplog.text  # the log says so too


@pytest.mark.parametrize(("inputs", "output", "key"), [("", "run", "input"), ("photos", "", "output")])
def test_an_empty_input_or_output_is_refused_not_read_as_the_current_folder(
    photos, tmp_path, monkeypatch, capsys, inputs, output, key
):
    """input=$PHOTOS with the variable unset searched the whole current folder; output= wrote into it."""
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit):
        exit_on_user_error(predict)(
            inputs and str(photos), tmp_path / "none.ckpt", output and str(tmp_path / output)
        )
    assert f"{key}= is empty" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_the_stored_decision_is_used_unless_threshold_overrides_it(tiny_checkpoints, photos, tmp_path):
    """Training stores a threshold chosen on validation; predict applies it, and says so."""
    from ffd.deploy.convert import export_onnx

    checkpoint = tmp_path / "vit.ckpt"
    shutil.copyfile(tiny_checkpoints["vit"], checkpoint)
    expected = reference_probs(checkpoint, [photos / name for name in READABLE])
    stored = threshold_between(expected)
    decision = {"policy": "eer", "threshold": stored, "temperature": 1.0, "chosen_on": "validation"}
    update_notes(checkpoint, decision=decision)
    exported = tmp_path / "vit.onnx"
    export_onnx(load_classifier(checkpoint).eval(), exported, sha256_of(checkpoint))
    for model in (checkpoint, exported):
        console = quiet()
        run = predict(photos, model, tmp_path / model.suffix[1:], num_workers=0, console=console)
        said = console.file.getvalue()
        assert run.threshold == stored, model
        assert f"> {stored:.4g} (chosen on validation (policy eer))" in said
        assert [row.verdict for row in run.rows] == [verdict(p, stored)[0] for p in expected]
        assert {row.verdict for row in run.rows} == {"real", "fake"}
        written = json.loads((tmp_path / model.suffix[1:] / "predictions.json").read_text())
        assert written["threshold"] == stored and written["decision"]["source"].startswith("chosen on")
    console = quiet()
    run = predict(photos, checkpoint, tmp_path / "override", 0.0, num_workers=0, console=console)
    assert run.threshold == 0.0 and {row.verdict for row in run.rows} == {"fake"}
    assert "(threshold= on the command line)" in console.file.getvalue()


def test_a_stored_temperature_calibrates_the_reported_probability(tiny_checkpoints, photos, tmp_path):
    checkpoint = tmp_path / "vit.ckpt"
    shutil.copyfile(tiny_checkpoints["vit"], checkpoint)
    update_notes(checkpoint, decision={"policy": "fixed", "threshold": 0.5, "temperature": 1.0})
    plain = predict(photos, checkpoint, tmp_path / "plain", num_workers=0, console=quiet())
    update_notes(checkpoint, decision={"policy": "fixed", "threshold": 0.5, "temperature": 4.0})
    console = quiet()
    soft = predict(photos, checkpoint, tmp_path / "soft", num_workers=0, console=console)
    raw = np.array([row.p_fake for row in plain.rows])
    logit = np.log(raw / (1 - raw))
    np.testing.assert_allclose([row.p_fake for row in soft.rows], 1 / (1 + np.exp(-logit / 4)), atol=1e-6)
    assert "calibrated with temperature 4" in console.file.getvalue()
