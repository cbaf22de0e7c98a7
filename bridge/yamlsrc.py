"""YAML loading that remembers where every key came from.

Config and mapping files are validated with pydantic; an error that only says
``mllp.port: Input should be a valid integer`` leaves an engineer hunting. This
module keeps the line of each mapping key and sequence item so that errors can
say ``bridge.yaml:12: mllp.port: Input should be a valid integer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class SourceError(ValueError):
    """A problem in a file, located by file, line and key."""

    def __init__(self, path: Path | str, line: int | None, key: str, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        self.problem = problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclass
class YamlDoc:
    """Parsed YAML data plus the line (1-based) of each key path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of ``loc``."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def error(self, loc: Sequence[str | int], problem: str) -> SourceError:
        return SourceError(self.path, self.line_of(loc), format_loc(loc), problem)


class FileChecker:
    """Checks one YAML file, collecting every located error instead of stopping at
    the first: the base of the mapping and outbound profile compilers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = YamlDoc(path=path, data={}, lines={})
        self.errors: list[SourceError] = []

    def error(self, loc: Loc, problem: str) -> None:
        self.errors.append(self.doc.error(loc, problem))

    def model(self, model: type[M], data: Any, loc: Loc) -> M | None:
        """``data`` validated as ``model``, or None with its errors recorded."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.errors.extend(validation_errors(self.doc, exc, prefix=loc))
            return None


def format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


YAML_SUFFIXES = (".yaml", ".yml")


def collect_yaml_files(paths: Iterable[Path | str], kind: str
                       ) -> tuple[list[Path], list[SourceError]]:
    """Files named directly plus every *.yaml/*.yml directly inside named folders.

    Sub-folders are not entered (they hold lookup tables, cases, other kinds of
    file); ``kind`` ("mapping", "outbound profile") words the errors.
    """
    files: list[Path] = []
    errors: list[SourceError] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in YAML_SUFFIXES)
            if not found:
                errors.append(SourceError(path, None, "", f"no *.yaml {kind} files in folder"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(SourceError(path, None, "", f"no such {kind} file or folder"))
    return files, errors


def load_yaml(path: Path | str) -> YamlDoc:
    """Load one YAML document; raise SourceError for unreadable or malformed files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(path, None, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, None, "", f"cannot read file: {exc}") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path | str = "<string>") -> YamlDoc:
    path = Path(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SourceError(path, line, "", f"invalid YAML: {problem}") from None
    if node is None:
        return YamlDoc(path=path, data={}, lines={(): 1})
    lines: dict[Loc, int] = {}
    _index(node, (), lines)
    data = yaml.safe_load(text)
    return YamlDoc(path=path, data=data, lines=lines)


def _index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _index(value_node, (*loc, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines)


def validation_errors(doc: YamlDoc, exc: ValidationError,
                      prefix: Sequence[str | int] = ()) -> list[SourceError]:
    """Turn a pydantic ValidationError into located SourceErrors.

    pydantic adds the name of a union member or tagged-union tag into ``loc``;
    those parts are not keys in the file, so they are dropped when they do not
    resolve to a line.
    """
    out = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        clean = _file_loc(doc, loc)
        out.append(SourceError(doc.path, doc.line_of(clean), format_loc(clean), err["msg"]))
    return out


def _file_loc(doc: YamlDoc, loc: Loc) -> Loc:
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        candidate = (*kept, part)
        is_last = i == len(loc) - 1
        if candidate in doc.lines or isinstance(part, int) or not _internal(part) or is_last:
            kept.append(part)
    return tuple(kept)


_PYDANTIC_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none", "tuple"}


def _internal(part: str) -> bool:
    """pydantic's names for union members and validators, which are not file keys."""
    return (part in _PYDANTIC_TYPE_NAMES or "[" in part or "(" in part
            or part.startswith(("function-", "tagged-union", "json-or-python")))
