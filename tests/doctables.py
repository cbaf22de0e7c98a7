"""Reading the key tables of docs/*.md, for the tests that hold the docs to the code."""

from __future__ import annotations

import re
from pathlib import Path

from pydicom.tag import BaseTag, Tag


def markdown_table(doc: Path, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with ``header_start``."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def tag_of(text: str) -> BaseTag:
    """``(0040,0100)`` as a tag; fails the test on anything else."""
    match = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", text)
    assert match, text
    return Tag(int(match[1], 16), int(match[2], 16))
