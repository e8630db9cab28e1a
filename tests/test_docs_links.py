"""README.md's relative links and images point at files that exist, and its anchors at headings that exist
(in README.md itself, or in the Markdown file linked), so that moving a section into docs/ cannot leave the
README pointing at nothing; and docs/architecture.md names every module. The docs/ pages' own links are
checked by CI's `mkdocs build --strict`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the text may wrap onto the next lines, the target may carry a "title".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where a link or heading is one."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, each space a hyphen,
    a repeated heading suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def broken_links(path: Path) -> list[str]:
    """Each relative link or image of ``path`` whose file, or whose anchor in that file, does not exist."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for target in LINK.findall(prose(text)):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in github_anchors(linked.read_text("utf-8")):
            problems.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    return problems


def test_every_relative_link_and_anchor_of_the_readme_resolves() -> None:
    assert LINK.findall(prose(README.read_text(encoding="utf-8"))), "found no link at all: the pattern broke"
    problems = broken_links(README)
    assert not problems, "README.md links to what is not there (moved?):\n" + "\n".join(problems)


def test_the_checker_finds_a_missing_file_a_missing_anchor_and_a_wrapped_image(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## The metrics\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n## Blur + JPEG: measured\n\n"
        "[ok](#blur--jpeg-measured) [ok](docs/page.md#the-metrics) [web](https://example.org/x.md)\n"
        "[gone](#quick-start) [gone](docs/page.md#speed) [gone](docs/moved.md)\n"
        "![an alt text that wraps\nonto a second line](docs/missing.png)\n"
        "```\n[in code](nothing.md)\n```\n`[inline](nothing.md)`\n"
    )
    problems = broken_links(tmp_path / "README.md")
    assert [problem.split(":")[0] for problem in problems] == [
        "#quick-start",
        "docs/page.md#speed",
        "docs/moved.md",
        "docs/missing.png",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        (
            "### Serving the ONNX file (onnxruntime and numpy only, no ffd)",
            "serving-the-onnx-file-onnxruntime-and-numpy-only-no-ffd",
        ),
        (
            '## Data: the Kaggle "140k real and fake faces" set',
            "data-the-kaggle-140k-real-and-fake-faces-set",
        ),
        (
            "## Training that survives it: `data.augment.blur_jpeg_prob`",
            "training-that-survives-it-dataaugmentblur_jpeg_prob",
        ),
    ],
)
def test_anchors_are_those_github_gives(heading: str, anchor: str) -> None:
    assert anchor in github_anchors(heading + "\n")


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md has a line per file of src/ffd: a new module gets its line with it."""
    package = README.parent / "src" / "ffd"
    page = (README.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(path.relative_to(package).as_posix() for path in package.rglob("*.py"))
    assert len(modules) > 40  # the walk found the package
    missing = [name for name in modules if f"`{name}`" not in page]
    assert not missing, f"docs/architecture.md names no line for: {', '.join(missing)} (add `path` | what)"
