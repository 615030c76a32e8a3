"""MkDocs hook: publish every ``spec-notes/*.md`` of the repository under ``spec-notes/``.

The notes live beside the code, where they are written; this adds them to
the site at build time (and an index page listing them), so a new note needs
no page of its own here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def _notes() -> list[tuple[Path, str]]:
    notes = []
    for note in sorted((ROOT / "spec-notes").glob("*.md")):
        match = re.search(r"^#\s+(.+)$", note.read_text(), re.M)
        notes.append((note, match.group(1).strip() if match else note.stem))
    return notes


def on_config(config: Any) -> Any:
    """List every note under the "Spec notes" entry of the navigation."""
    section = [{"About the notes": "spec-notes/index.md"}]
    section += [{title: f"spec-notes/{note.name}"} for note, title in _notes()]
    config["nav"] = [
        {"Spec notes": section} if entry == {"Spec notes": "spec-notes/index.md"} else entry
        for entry in config["nav"]
    ]
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the notes, and a page listing them, to the site."""
    lines = [
        "# Spec notes",
        "",
        "Our decisions where the specifications are silent or the peers disagree,",
        "one note per decision, numbered in the order they were written.",
        "",
    ]
    for note, title in _notes():
        lines.append(f"* [{title}]({note.name})")
        files.append(File.generated(config, f"spec-notes/{note.name}", content=note.read_text()))
    files.append(File.generated(config, "spec-notes/index.md", content="\n".join(lines) + "\n"))
    return files
