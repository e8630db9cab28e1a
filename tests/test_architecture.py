"""The package's structure (docs/architecture.md): every module imports, the imports between ffd modules
form no cycle, the ground floor (ffd.errors; ffd.options and ffd.outputs above it) imports nothing else of
ffd, and no file grows past 400 lines without saying why."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import ffd

PACKAGE = Path(ffd.__file__).parent
# The ffd modules each ground-floor module may import: any module may import these, so they import nothing
# of ffd above them.
GROUND_FLOOR = {"ffd.errors": set(), "ffd.options": {"ffd.errors"}, "ffd.outputs": {"ffd.errors"}}
MAX_LINES = 400
# Files allowed past MAX_LINES for now, and why; each must still be over it (else drop it from here).
LONG_FOR_NOW: dict[str, str] = {}


def module_files() -> dict[str, Path]:
    """Every ffd module's dotted name -> its source file (packages by their __init__.py)."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The ffd modules ``name`` imports anywhere in its source, deferred imports inside functions included
    (they can close a cycle at run time too). ``from ffd.x import y`` counts as ffd.x.y when that is a
    module, else as ffd.x."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            )
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def test_every_module_imports() -> None:
    names = [info.name for info in pkgutil.walk_packages(ffd.__path__, "ffd.")]
    assert len(names) > 40  # the walk found the package, not an empty folder
    for name in names:
        importlib.import_module(name)


def test_the_graph_sees_an_import_written_in_either_form(tmp_path) -> None:
    source = tmp_path / "pkg.py"
    source.write_text(
        "from ffd import errors\nfrom .options import count_problem\n\ndef f():\n    import ffd.images\n"
    )
    known = {"ffd", "ffd.errors", "ffd.options", "ffd.images", "ffd.pkg"}
    assert imported_modules("ffd.pkg", source, known) == {"ffd.errors", "ffd.options", "ffd.images"}


def test_no_cycle_among_ffd_modules() -> None:
    graph = import_graph()
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


@pytest.mark.parametrize("name", GROUND_FLOOR)
def test_the_ground_floor_imports_no_other_ffd_module(name) -> None:
    assert import_graph()[name] == GROUND_FLOOR[name]


def test_no_file_is_over_400_lines_unless_its_docstring_says_why() -> None:
    too_long, lengths = [], {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        lengths[name] = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if (
            lengths[name] > MAX_LINES
            and "over 400 lines because" not in docstring
            and name not in LONG_FOR_NOW
        ):
            too_long.append(f"{name} ({lengths[name]} lines)")
    assert not too_long, f"over {MAX_LINES} lines with no reason in the docstring: {', '.join(too_long)}"
    assert all(lengths.get(name, 0) > MAX_LINES for name in LONG_FOR_NOW), "LONG_FOR_NOW: drop a short file"
