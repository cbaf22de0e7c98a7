"""Every repository file that the CLI help, module docstrings and the docs name exists.

Paths in help texts and docstrings go stale when files move (the CLI's quick start
once named a fixture that never existed). Examples of a site's own files, which
the docs show but the repository does not ship, are listed by name.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"(?<![\w/.-])(?:bridge|tests|fixtures|docs|bench|mappings)/[A-Za-z0-9_./-]+"
                   r"\.(?:py|hl7|md|yaml)\b")
# A site's own mapping, cases and hook, shown in docs/mapping.md as examples.
SITE_EXAMPLES = frozenset({
    "mappings/careris-west.yaml", "mappings/site.yaml",
    "mappings/hooks/site.py", "mappings/cases/careris-west/ct-abdomen.expected.yaml",
    "mappings/cases/careris-west/ct-abdomen.hl7",
    "mappings/cases/careris-west/reject-no-code.expected.yaml",
    "mappings/cases/careris-west/reject-no-code.hl7",
})


def _sources() -> list[Path]:
    return [*sorted((REPO / "bridge").rglob("*.py")), REPO / "README.md",
            REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_named_file_exists() -> None:
    missing = []
    for source in _sources():
        for lineno, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            for name in NAMED.findall(line):
                if name not in SITE_EXAMPLES and not (REPO / name).exists():
                    missing.append(f"{source.relative_to(REPO)}:{lineno}: {name}")
    assert not missing, "named files that do not exist:\n" + "\n".join(missing)
