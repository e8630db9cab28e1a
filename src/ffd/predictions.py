"""What an ffd.predict run produced and how it is shown: one Prediction per image or face, the bounded
console table, predictions.csv, predictions.json and bad_files.txt, and the run's lines in the log file.
Kept apart from the run itself (ffd.inference), which decodes and scores."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ffd import LABELS, record
from ffd.report import FILE_NAMES, write_bad_files

OUTPUT_FILES = ("predictions.csv", "predictions.json", "bad_files.txt")
# The test report's columns less the label, in its order, so that the two files line up.
PREDICTION_COLUMNS = ("path", "p_fake", "verdict", "confidence")
# What predict adds: the face judged (empty: the whole image), its box in the photo, and the notes.
FACE_COLUMNS = ("face", "box", "notes")


def shown(path: str) -> str:
    """``path`` relative to the current folder when it lies below it, else as it is.

    For the console only: it is read in the shell the command ran from, where the short path resolves
    (as the input typed there did); the files, read from the run folder, keep absolute paths."""
    relative = os.path.relpath(path)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


@dataclass
class Prediction:
    path: str  # absolute, symbolic links kept
    p_fake: float
    verdict: str  # "real" or "fake"
    confidence: float  # the probability of the verdict's class
    face: int | None = None  # the face's index in the photo; None: the whole image was judged
    box: list[float] | None = None  # x0, y0, x1, y1 of the face in the original photo's pixels
    notes: str = ""  # what the verdict rests on: resizing, faces left out, a fallback ("; "-joined)
    regions: dict[str, float] | None = None  # explain=true: the heatmap's share per face region


@dataclass
class PredictRun:
    """What a run produced; ``write`` and ``print`` present it."""

    model: dict[str, Any]
    input: str
    threshold: float
    rows: list[Prediction] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    no_face: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): read, but nothing judged
    settings: dict[str, Any] = field(default_factory=dict)  # face mode, fallback, model card
    complete: bool = False  # False in the files of a run that stopped early (an interrupt, an error)

    def counts(self) -> dict[str, int]:
        verdicts = [row.verdict for row in self.rows]
        return {
            "images": len(self.rows),  # what the model judged: faces and whole photos
            "photos": len({row.path for row in self.rows}),
            "faces": sum(row.face is not None for row in self.rows),
            **{name: verdicts.count(name) for name in LABELS.values()},
            "no_face": len(self.no_face),
            "unreadable": len(self.bad),
        }

    def write(self, output: Path) -> None:
        output.mkdir(parents=True, exist_ok=True)
        regions = sorted({name for row in self.rows for name in (row.regions or {})})
        with (output / "predictions.csv").open("w", newline="", errors=FILE_NAMES) as handle:
            writer = csv.writer(handle)
            writer.writerow([*PREDICTION_COLUMNS, *FACE_COLUMNS, *(f"share_{name}" for name in regions)])
            for row in self.rows:
                # repr: every digit, so that a P(fake) just under the threshold never reads as equal to it
                box = "" if row.box is None else " ".join(f"{value:g}" for value in row.box)
                shares = [repr((row.regions or {}).get(name, "")) if row.regions else "" for name in regions]
                face = "" if row.face is None else row.face
                writer.writerow(
                    [
                        row.path,
                        repr(row.p_fake),
                        row.verdict,
                        repr(row.confidence),
                        face,
                        box,
                        row.notes,
                        *shares,
                    ]
                )
        summary = {
            "input": self.input,
            "model": self.model,
            "threshold": self.threshold,
            **self.settings,
            "complete": self.complete,
            "labels": {str(key): name for key, name in LABELS.items()} | {"probability": "P(fake)"},
            "counts": self.counts(),
            "predictions": [vars(row) for row in self.rows],
            "no_face": [{"path": path, "reason": reason} for path, reason in self.no_face],
            "unreadable": [{"path": path, "reason": reason} for path, reason in self.bad],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (output / "predictions.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_bad_files(output / "bad_files.txt", self.bad + self.no_face)

    def print(self, console: Console, max_rows: int, output: Path | None = None) -> None:
        # an ONNX file names its precision (fp32, fp16, int8); a checkpoint has none
        how = ", ".join(filter(None, (self.model["runtime"], self.model.get("precision"))))
        table = Table(title=f"ffd.predict: {self.model['name']} ({how})")
        faces = any(row.face is not None for row in self.rows)
        noted = any(row.notes for row in self.rows)
        table.add_column("file", overflow="fold")
        if faces:
            table.add_column("face", justify="right")
        table.add_column("verdict")
        table.add_column("confidence", justify="right")
        table.add_column("P(fake)", justify="right")
        if noted:
            table.add_column("notes", overflow="fold")
        for row in self.rows[:max_rows]:
            style = "red" if row.verdict == LABELS[1] else "green"
            said = f"[{style}]{row.verdict.capitalize()}[/]"
            # Text: a [x] in a file name is shown, not read as markup
            face = [str("" if row.face is None else row.face)] if faces else []
            notes = [Text(row.notes)] if noted else []
            cells = [Text(shown(row.path)), *face, said, f"{row.confidence:.4f}", f"{row.p_fake:.4f}", *notes]
            table.add_row(*cells)
        if len(self.rows) > max_rows:
            table.caption = f"first {max_rows} of {len(self.rows)} rows; predictions.csv has them all"
        if self.rows:
            console.print(table)
        for title, listed in (("Unreadable files (skipped)", self.bad), ("No face judged", self.no_face)):
            if not listed:
                continue
            listing = Table(title=title)
            listing.add_column("file", overflow="fold")
            listing.add_column("reason", overflow="fold")
            for path, reason in listed[:max_rows]:
                listing.add_row(Text(shown(path)), Text(reason))
            if len(listed) > max_rows:
                listing.caption = f"first {max_rows} of {len(listed)}; bad_files.txt has them all"
            console.print(listing)
        counts = self.counts()
        faces = f" ({counts['faces']} face(s) in {counts['photos']} photo(s))" if counts["faces"] else ""
        no_face = f"{counts['no_face']} photo(s) with no face judged; " if self.no_face else ""
        console.print(
            f"{counts['images']} image(s): {counts['real']} real, {counts['fake']} fake{faces} "
            f"(threshold {self.threshold:g}); {no_face}{counts['unreadable']} unreadable file(s) skipped."
            + (f" Written to {output}: {', '.join(OUTPUT_FILES)}." if output else "")
        )

    def log(self, output: Path) -> None:
        """What was done, for the run's log file (predict.log), which the console's table does not reach."""
        counts = self.counts()
        record.info(
            "ffd.predict%s: input %s; model %s; threshold %g; %d image(s): %d real, %d fake; %d unreadable "
            "file(s) skipped; written to %s: %s",
            "" if self.complete else " (stopped early)",
            self.input,
            json.dumps(self.model),
            self.threshold,
            *(counts[key] for key in ("images", "real", "fake", "unreadable")),
            output,
            ", ".join(OUTPUT_FILES),
        )
