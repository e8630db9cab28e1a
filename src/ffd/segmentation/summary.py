"""What an ffd.segment run did, counted as it goes: images segmented, skipped and why, faces found, timings,
the summary.json and the closing table. Kept apart from running the backends (ffd.segmentation.pipeline)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ffd import record as run_record

NO_FACE = "no face found"
SMALL_FACES = (
    "MediaPipe's face detector misses faces smaller than about a tenth of the image side; crop such an "
    "image around the face"
)
SKIPPED = ("unreadable", "failed")  # statuses of files with no output
AT_LIMIT = "images at landmarks.num_faces"  # a total: images that gave as many faces as were looked for


@dataclass
class Summary:
    """What a run did, for summary.json, the console and the run's log. ``face_limit`` is
    landmarks.num_faces, the most faces looked for per image, or None for a backend that finds no faces
    (parsing labels pixels)."""

    backend: str
    input: str
    model: str
    output: str
    face_limit: int | None
    earlier_outputs_skipped: int = 0
    complete: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def processed(self) -> int:
        return len(self.records) - sum(self.count(status) for status in SKIPPED)

    def totals(self) -> dict[str, Any]:
        done = [r for r in self.records if r["status"] not in SKIPPED]
        times = [r["ms"] for r in done]
        finds_faces = self.face_limit is not None
        return {
            "images": len(done),
            "faces found": sum(r["faces"] for r in done) if finds_faces else None,
            "no-face images": self.count("no_face") if finds_faces else None,
            AT_LIMIT: sum(r["faces"] == self.face_limit for r in done) if finds_faces else None,
            "unreadable files": self.count("unreadable"),
            "failed files": self.count("failed"),
            "earlier outputs skipped": self.earlier_outputs_skipped,
            "ms per image (median)": round(statistics.median(times), 1) if times else None,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "totals": self.totals()}, indent=2))

    def notes(self) -> list[str]:
        """What the counts mean for the user: faces that may have been missed."""
        totals, notes = self.totals(), []
        if totals[AT_LIMIT]:
            notes.append(
                f"{totals[AT_LIMIT]} image(s) gave {self.face_limit} face(s), as many "
                f"as landmarks.num_faces={self.face_limit} looks for: there may be more. Pass a larger "
                f"landmarks.num_faces (e.g. landmarks.num_faces={self.face_limit * 4}) to look for them."
            )
        if totals["no-face images"]:
            notes.append(f"{totals['no-face images']} image(s) with {NO_FACE}: {SMALL_FACES}.")
        return notes

    def print(self, console: Console) -> None:
        """The totals, the notes, the files skipped, and last the output folder on a line of its own: never
        wrapped, so that it can be copied whole."""
        table = Table(title=f"ffd.segment: backend={self.backend}", show_header=False)
        table.add_column("total")
        table.add_column("value", justify="right")
        for name, value in self.totals().items():
            table.add_row(name, "n/a" if value is None else str(value))
        console.print(table)
        for note in self.notes():
            console.print(Text(note))
        skipped = [r for r in self.records if r["status"] in SKIPPED]
        if skipped:
            listing = Table(title="Files skipped (no output)")
            listing.add_column("file", overflow="fold")
            listing.add_column("reason", overflow="fold")
            for row in skipped:
                listing.add_row(Text(row["file"]), Text(row["reason"]))  # [x] in a name is no markup
            console.print(listing)
        console.print(Text(f"Annotated images, their JSON and summary.json in {self.output}"), soft_wrap=True)

    def log(self) -> None:
        """One line for the run's log file (segment.log), which the console's table does not reach."""
        totals = ", ".join(
            f"{name} {'n/a' if value is None else value}" for name, value in self.totals().items()
        )
        run_record.info(
            "ffd.segment%s: input %s; backend %s; model %s; %s; written to %s",
            "" if self.complete else " (stopped early)",
            self.input,
            self.backend,
            self.model,
            totals,
            self.output,
        )


def face_note(faces: int | None, face_limit: int | None) -> str | None:
    """The per-image JSON's note on faces that may have been missed."""
    if faces == 0:
        return f"{NO_FACE}; {SMALL_FACES}"
    if faces is not None and faces == face_limit:
        return (
            f"faces found reached landmarks.num_faces={face_limit}, the most looked for; pass a larger "
            "landmarks.num_faces to look for more"
        )
    return None
