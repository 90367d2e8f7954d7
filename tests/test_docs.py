"""The reference in docs/ stays true to the code: every setting and its environment variable
in docs/configuration.md, every Socket.IO event in docs/socketio-events.md, every link between
the documents (files and #anchors) resolves, every repository path they name exists, and the
project cites only itself: no comment or document points at files outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from engine.events import EVENT_NAMES
from engine.settings import Settings, environment_name

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCUMENTS = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A repository path in backquotes: `engine/store/recipients.py`, `api/static/`.
PATH = re.compile(r"`((?:engine|api|tests|benchmarks|config|docs|\.ci)/[\w./-]*)`")
# Made by make or by the tests, and gitignored: absent from a fresh clone.
GENERATED = ("api/static/vendor/", "tests/artifacts/")
# Citations of documents that are not in the repository.
OUTSIDE = re.compile(r"\bCONTRACT\b(?!_)|MEASUREMENTS\.md|\.\./shared")
SOURCES = ("engine", "api", "tests", "benchmarks", "config", "docs")
SOURCE_SUFFIXES = {".py", ".js", ".html", ".css", ".sql", ".toml", ".md"}


def settings_keys() -> list[tuple[str, str]]:
    return [
        (section.name, key.name)
        for section in msgspec.structs.fields(Settings)
        for key in msgspec.structs.fields(section.type)
    ]


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    return {anchor(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def test_configuration_documents_every_key_and_its_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [
        f"{section}.{key} ({environment_name(section, key)})"
        for section, key in settings_keys()
        if f"`{section}.{key}`" not in text or f"`{environment_name(section, key)}`" not in text
    ]
    assert missing == [], "docs/configuration.md does not describe: " + ", ".join(missing)


def test_socketio_events_document_every_event() -> None:
    text = (DOCS / "socketio-events.md").read_text()
    assert [name for name in EVENT_NAMES if f"`{name}`" not in text] == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve(document: Path) -> None:
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check
        path, _, fragment = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(target)
    assert broken == [], f"{document.name}: broken links {broken}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist(document: Path) -> None:
    named = set(PATH.findall(document.read_text()))
    missing = sorted(p for p in named if not p.startswith(GENERATED) and not (ROOT / p).exists())
    assert missing == [], f"{document.name} names paths that do not exist: {missing}"


def test_nothing_cites_documents_outside_the_repository() -> None:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for top in SOURCES:
        files += [
            path
            for path in (ROOT / top).rglob("*")
            if path.suffix in SOURCE_SUFFIXES
            and not {"node_modules", "artifacts", "__pycache__"} & set(path.parts)
        ]
    cited = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert cited == [], "cite docs/ instead:\n" + "\n".join(cited)
