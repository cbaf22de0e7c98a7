"""Lookup tables (procedure code -> modality, station, ...) read once, when mappings load."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bridge.yamlsrc import SourceError, load_yaml

# The column of a YAML table whose entries are plain values (``CT001: CT``).
VALUE_COLUMN = "value"


@dataclass(frozen=True, slots=True)
class LookupTable:
    path: Path
    columns: tuple[str, ...]
    rows: dict[str, dict[str, str]]
    lines: dict[str, int]  # key -> line in the file, for errors about a row's values

    def column(self, name: str) -> dict[str, str]:
        return {key: row.get(name, "") for key, row in self.rows.items()}


def load_table(path: Path, key: str | None) -> LookupTable:
    """Read a CSV (header row) or YAML (mapping) table; raise SourceError naming file and line."""
    if path.suffix.lower() in (".yaml", ".yml"):
        if key is not None:
            raise SourceError(path, None, "", "key: is for CSV tables; a YAML table is keyed "
                                              "by its own keys")
        return _yaml_table(path)
    return _csv_table(path, key)


def _csv_table(path: Path, key: str | None) -> LookupTable:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SourceError(path, None, "", "lookup file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, None, "", f"cannot read lookup file: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = tuple(c.strip() for c in reader.fieldnames or ())
    if not columns:
        raise SourceError(path, 1, "", "a CSV lookup table needs a header row")
    key_column = key or columns[0]
    if key_column not in columns:
        raise SourceError(path, 1, key_column,
                          f"no such column; the header has {', '.join(columns)}")
    rows: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    for raw in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        value = row.get(key_column, "")
        if value in rows:
            raise SourceError(path, reader.line_num, key_column,
                              f"duplicate key (first on line {lines[value]})")
        rows[value] = row
        lines[value] = reader.line_num
    return LookupTable(path, columns, rows, lines)


def _yaml_table(path: Path) -> LookupTable:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a YAML lookup table is a mapping of keys to values")
    rows: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    columns: dict[str, None] = {}
    for k, v in doc.data.items():
        if isinstance(v, dict):
            row = {str(c): "" if x is None else str(x) for c, x in v.items()}
        elif v is None or isinstance(v, str | int | float):
            row = {VALUE_COLUMN: "" if v is None else str(v)}
        else:
            raise doc.error((k,), "an entry is a value or a mapping of column: value")
        columns.update(dict.fromkeys(row))
        rows[str(k)] = row
        lines[str(k)] = doc.line_of((k,)) or 0
    return LookupTable(path, tuple(columns), rows, lines)
