"""``ffd.eval data.roots=[A,B,C]``: one checkpoint tested on several sets in turn, compared in one table.

The protocol of DeepfakeBench and the GAN-detection papers: train on one set, test on others (other
generators, other cameras) to see how far a detector carries. Each set is what ``data.root`` takes (a
Kaggle-layout tree, whose test split is used, or a folder of class folders, e.g. only ``fake/`` images of
another generator). Each gets the whole test report in ``report/<set>/``; the run's folder gets
``cross_set.json`` and ``cross_set.csv``, and the console one table: per set its images, AUROC, AP, EER,
TPR at 1 % FPR and the accuracy at the checkpoint's stored decision, or, for a set of one class, the share
it gets right ("share caught": fakes called fake, or reals called real).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.table import Table
from rich.text import Text

from ffd.callbacks.report import ReportWriter, _shown
from ffd.console import table_console
from ffd.data.datamodule import FacesDataModule
from ffd.errors import USER_ERRORS, UserError
from ffd.images import IMAGE_SUFFIXES, walk_files
from ffd.models.classifier import DeepfakeClassifier
from ffd.report import json_safe
from ffd.runtime import instantiate_all, make_trainer
from ffd.trust.decision import Decision, decision_for

JSON_FILE = "cross_set.json"
CSV_FILE = "cross_set.csv"
COLUMNS = (
    "set",
    "root",
    "trained_on",
    "images",
    "real",
    "fake",
    "auroc",
    "ap",
    "eer",
    "tpr_at_1pct_fpr",
    "accuracy",
    "share_caught",
    "caught",
    "report",
)


class CrossSetError(UserError):
    """A data.roots value that cannot be tested."""


def _listed(paths: Sequence[Path]) -> str:
    return ", ".join(str(path) for path in paths)


def _has_image(root: Path) -> bool:
    """Whether any file under ``root`` is named like an image (stops at the first)."""
    return any(path.suffix.lower() in IMAGE_SUFFIXES for path in walk_files(root))


def _several_sets_problem(cfg: DictConfig) -> str | None:
    """What cannot run once per set of data.roots, with the command that does it."""
    if str(cfg.get("ckpt_path") or "").lower().endswith(".onnx"):
        return (
            f"ckpt_path={cfg.ckpt_path} is an .onnx file: the per-set reports are written from the .ckpt it "
            "was exported from. Pass that .ckpt, or score the .onnx per set with "
            "`-m data.root=A,B robustness=default`"
        )
    for key, on in (("robustness", bool(cfg.get("robustness"))), ("explain", cfg.get("explain") is True)):
        if on:
            return (
                f"{key} is on: it runs on one test split. Run it per set as a sweep, "
                f"`python -m ffd.eval -m ckpt_path=... data.root=A,B {key}=...` (or drop {key})"
            )
    if not (cfg.get("callbacks") or {}).get("report"):
        return "callbacks.report is off: the table is made of the per-set reports. Leave it on"
    return None


def cross_set_roots(cfg: DictConfig) -> list[Path] | None:
    """Check ``data.roots`` before any work and take it out of ``cfg.data`` (the data module has no such
    option). None when it is not set; one root becomes ``data.root`` (a plain evaluation); several are
    returned, absolute, for `evaluate_sets`."""
    roots = OmegaConf.select(cfg, "data.roots")
    if "roots" in cfg.get("data", {}):
        with open_dict(cfg):
            del cfg.data["roots"]
    if roots is None:
        return None
    if not isinstance(roots, ListConfig | list) or not len(roots):
        raise CrossSetError(
            f"data.roots={roots} is not a list of folders: write data.roots=[/sets/A,/sets/B] (in brackets, "
            "comma-separated), or data.root=/sets/A for one set."
        )
    paths = [Path(os.path.expanduser(str(root))).absolute() for root in roots]
    if cfg.data.get("synthetic"):
        raise CrossSetError(
            "data.roots with data=synthetic: that config generates its set at data.root, and data.roots "
            "tests folders that exist. Leave data at its default (kaggle) and list the generated folder "
            "(data/synthetic/...) among data.roots."
        )
    if len(paths) > 1 and (problem := _several_sets_problem(cfg)):
        raise CrossSetError(f"data.roots lists {len(paths)} sets and {problem}.")
    resolved = [path.resolve() for path in paths]
    if twice := sorted({str(p) for p, r in zip(paths, resolved, strict=True) if resolved.count(r) > 1}):
        raise CrossSetError(
            f"data.roots lists the same folder more than once: {', '.join(twice)}. Drop the copies."
        )
    missing = [path for path in paths if not path.is_dir()]
    if missing:
        there = [path for path in paths if path.is_dir()]
        found = f"the entries that are: {_listed(there)}" if there else "no entry is one"
        raise CrossSetError(
            f"data.roots: not an existing folder: {_listed(missing)} ({found}). Fix the "
            f"path{'s' * (len(missing) > 1)} or drop {'it' if len(missing) == 1 else 'them'}."
        )
    if empty := [path for path in paths if not _has_image(path)]:
        raise CrossSetError(
            f"data.roots: {_listed(empty)} holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))}). Point "
            "each entry at a set: a Kaggle-layout tree (test/real, test/fake) or a folder of class folders "
            "(real/, fake/, or one of them)."
        )
    root = cfg.data.get("root")
    if root is not None and Path(os.path.expanduser(str(root))).resolve() not in resolved:
        raise CrossSetError(
            f"data.roots and data.root={root} are both set, and data.root is not among data.roots: "
            "data.roots would test its own sets and ignore it. Drop data.root, or add it to data.roots."
        )
    if len(paths) == 1:
        with open_dict(cfg):
            cfg.data.root = str(paths[0])
        return None
    return paths


def set_names(roots: Sequence[Path]) -> list[str]:
    """Each set's name: its folder's name, with as many parent folders (joined by '-') as tell apart sets
    whose folders are named alike (``/a/faces``, ``/b/faces`` -> ``a-faces``, ``b-faces``)."""
    depth = [1] * len(roots)
    while True:
        names = [
            "-".join(root.parts[-d:]).lstrip("/") or "root" for root, d in zip(roots, depth, strict=True)
        ]
        alike = [
            i for i, name in enumerate(names) if names.count(name) > 1 and depth[i] < len(roots[i].parts)
        ]
        if not alike:
            return names
        for i in alike:
            depth[i] += 1


def _index_sets(cfg: DictConfig, roots: Sequence[Path], names: Sequence[str]) -> list[FacesDataModule]:
    """A data module per set, indexed now: a set that cannot be read stops the run before any is tested,
    with every such set named in one message."""
    datamodules, problems = [], []
    for name, root in zip(names, roots, strict=True):
        data = OmegaConf.merge(cfg.data, {"root": str(root)})
        try:
            datamodule = instantiate(data, _convert_="all")
            datamodule.one_class_test = True  # e.g. a folder of another generator's fakes
            datamodule.setup("test")
        except USER_ERRORS as error:
            problems.append(f"set {name} ({root}): {error}")
            continue
        datamodules.append(datamodule)
    if problems:
        raise CrossSetError("data.roots: " + " ".join(problems))
    return datamodules


def _config_for_set(cfg: DictConfig, name: str, root: Path) -> DictConfig:
    """The run's config for one set: its root, its report in report/<name>/, its own logger version."""
    run = cfg.copy()
    with open_dict(run):
        run.data.root = str(root)
        run.callbacks.report.output_dir = str(Path(cfg.callbacks.report.output_dir) / name)
        for logger in (run.get("logger") or {}).values():
            if logger is not None and "version" in logger:
                logger.version = name
    return run


def _trained_on(model: DeepfakeClassifier, root: Path) -> bool:
    card_root = (model.notes.get("card") or {}).get("data_root")
    return bool(card_root) and Path(card_root).resolve() == root.resolve()


def set_row(name: str, root: Path, summary: dict[str, Any], trained_on: bool, report: Path) -> dict[str, Any]:
    """One set's row, from its report's summary (``ffd.report.write_report``): the ranking metrics, and the
    accuracy at the stored decision (its metrics_at_chosen_threshold when the checkpoint stores one)."""
    counts, metrics = summary["counts"], summary["metrics"]
    decided = summary.get("metrics_at_chosen_threshold") or metrics
    one_class = not (counts["real"] and counts["fake"])
    return json_safe(
        {
            "set": name,
            "root": str(root),
            "trained_on": trained_on,
            "images": counts["images"],
            "real": counts["real"],
            "fake": counts["fake"],
            "auroc": metrics["auroc"],
            "ap": metrics["auprc"],
            "eer": metrics["eer"],
            "tpr_at_1pct_fpr": metrics["tpr_at_fpr_1%"],
            "accuracy": None if one_class else decided["accuracy"],
            "share_caught": decided["accuracy"] if one_class else None,
            "caught": ("fakes called fake" if counts["fake"] else "reals called real") if one_class else None,
            "report": str(report),
        }
    )


def the_decision(model: DeepfakeClassifier, report_threshold: float) -> Decision:
    """The decision the reports' accuracy is at: the checkpoint's stored one, else the report's threshold."""
    if "threshold" in (model.notes.get("decision") or {}):
        return decision_for(model.notes, None)
    return Decision(report_threshold, 1.0, "callbacks.report.threshold: the checkpoint stores no decision")


def cross_set_table(rows: Sequence[dict[str, Any]], decision: Decision) -> Table:
    """The rows as a rich table; n/a where a set cannot give a metric (one class, too few reals)."""
    table = Table(
        title="Cross-set test",
        caption=(
            f"accuracy and share caught at threshold {decision.threshold:.4g}, T={decision.temperature:.3g} "
            f"({decision.source}); * the set the model was trained on"
        ),
    )
    for column in ("set", "images (real / fake)", "AUROC", "AP", "EER", "TPR @ 1% FPR", "accuracy"):
        table.add_column(column, justify="left" if column == "set" else "right", overflow="fold")
    table.add_column("share caught")
    for row in rows:
        caught = "" if row["share_caught"] is None else f"{row['share_caught']:.4f} ({row['caught']})"
        numbers = [row[key] for key in ("auroc", "ap", "eer", "tpr_at_1pct_fpr")]
        table.add_row(
            Text(row["set"] + (" *" if row["trained_on"] else "")),
            f"{row['images']} ({row['real']} / {row['fake']})",
            *map(_shown, numbers),
            "" if row["accuracy"] is None else _shown(row["accuracy"]),
            caught,
        )
    return table


def write_results(output_dir: Path, rows: list[dict[str, Any]], about: dict[str, Any]) -> None:
    """cross_set.json (the rows and what they were measured with) and cross_set.csv (the rows)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe({**about, "sets": rows}), indent=2, allow_nan=False)
    (output_dir / JSON_FILE).write_text(text + "\n")
    with (output_dir / CSV_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if row[key] is None else row[key] for key in COLUMNS])


def evaluate_sets(cfg: DictConfig, roots: Sequence[Path], model: DeepfakeClassifier) -> dict[str, float]:
    """Test ``model`` on each set's test split, write the table and its files; return each set's logged
    test metrics as ``<set>/test/<metric>``."""
    names = set_names(roots)
    datamodules = _index_sets(cfg, roots, names)
    rows, logged, zero = [], {}, True
    for name, root, datamodule in zip(names, roots, datamodules, strict=True):
        run = _config_for_set(cfg, name, root)
        trainer = make_trainer(
            run, instantiate_all(run.get("logger"), "logger"), {"model": model.describe(), "set": name}
        )
        trainer.test(model, datamodule=datamodule, verbose=False)  # each report prints its own table
        zero = trainer.is_global_zero
        logged |= {f"{name}/{key}": float(value) for key, value in trainer.callback_metrics.items()}
        writer = next(callback for callback in trainer.callbacks if isinstance(callback, ReportWriter))
        if writer.summary is not None:  # rank 0 alone has it
            rows.append(set_row(name, root, writer.summary, _trained_on(model, root), writer.output_dir))
    if not zero:
        return logged
    decision = the_decision(model, float(cfg.callbacks.report.threshold))
    about = {
        "checkpoint": str(cfg.ckpt_path),
        "decision": {
            "threshold": decision.threshold,
            "temperature": decision.temperature,
            "source": decision.source,
        },
        "labels": {"0": "real", "1": "fake", "probability": "P(fake)"},
    }
    output_dir = Path(cfg.paths.output_dir)
    write_results(output_dir, rows, about)
    console = table_console()
    console.print(cross_set_table(rows, decision))
    console.print(f"Cross-set results written to [bold]{output_dir / JSON_FILE}[/bold] and {CSV_FILE}")
    return logged
