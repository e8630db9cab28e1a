"""The console that ffd's tables print to.

On a terminal, rich fits a table to its width. Piped into a file or a CI log, rich would assume 80
columns and fold file names and sampled values mid-word; there the tables get 140 columns instead
(COLUMNS, when set, still wins)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPED_WIDTH = 140


def table_console() -> Console:
    """A rich Console at the terminal's width, or PIPED_WIDTH columns when the output is not a terminal."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPED_WIDTH if piped else None)
