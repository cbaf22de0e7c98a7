"""Golden cases: a message and the worklist items a mapping must make of it.

Authors keep them beside their mappings, one folder per profile:

    mappings/cases/<profile>/<case>.hl7              the message, in the bytes a RIS sends
    mappings/cases/<profile>/<case>.expected.yaml    what the mapping must make of it

The expected file names the mapping that must route the message and lists the
items by DICOM keyword (sequences as lists of items), or the error the message
must be rejected with:

    mapping: ihe-swf-orm-v231
    ignore: [StudyInstanceUID]          # optional: keywords not compared (a random UID)
    items:
      - AccessionNumber: ACC1
        ScheduledProcedureStepSequence:
          - Modality: CT

    mapping: ihe-swf-orm-v231
    error: {ack: AE, code: 102, location: OBR^1^18, attribute: AccessionNumber}

An expected file with ``hand-written: true`` was written by hand from the IHE tables,
not from the mapping's output: ``mwl-bridge mapping test --update`` refuses to
overwrite it, so that a regeneration cannot bless a regression. Each shipped profile
keeps at least one such case.

``<case>.expected.json`` may instead hold DICOM JSON (PS3.18 F.2): a list of
items, or ``{"mapping": ..., "items": [...]}``. Items are compared whole: an
attribute the mapping adds or drops is a difference, so a mapping change shows
up in every case it touches. The ``cases`` folder is a sub-folder, so the
mapping loader never reads it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.tag import BaseTag

from bridge.hl7 import CharsetError, HL7ParseError, decode_frame, parse_message, split_messages
from bridge.hl7.message import Message
from bridge.mapping.engine import MappingSet
from bridge.mapping.errors import MappingError
from bridge.mapping.vr import TEXT_VRS
from bridge.yamlsrc import SourceError, YamlDoc, load_yaml, validation_errors

CASES_FOLDER = "cases"
MESSAGE_SUFFIX = ".hl7"
YAML_SUFFIX = ".expected.yaml"
JSON_SUFFIX = ".expected.json"

Status = Literal["pass", "fail", "new", "broken"]


class CaseError(ValueError):
    """A case that cannot be run: unreadable message, malformed expected file."""


class HandWrittenCase(CaseError):
    """--update was asked to overwrite an expected file written by hand."""


@dataclass(frozen=True, slots=True)
class Case:
    message: Path

    @property
    def stem(self) -> str:
        return self.message.name[:-len(MESSAGE_SUFFIX)]

    @property
    def yaml_path(self) -> Path:
        return self.message.with_name(self.stem + YAML_SUFFIX)

    @property
    def json_path(self) -> Path:
        return self.message.with_name(self.stem + JSON_SUFFIX)

    def expected_path(self) -> Path | None:
        for path in (self.yaml_path, self.json_path):
            if path.is_file():
                return path
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    status: Status
    detail: str = ""  # the diff, or what is wrong
    mapping: str = ""  # the mapping that routed the message
    items: int = 0
    actual: dict[str, Any] | None = None  # what --update writes


# -- finding cases --------------------------------------------------------------------

def default_case_paths(mapping_paths: list[Path]) -> list[Path]:
    """The ``cases`` folders beside the configured mapping files and folders."""
    out: list[Path] = []
    for path in mapping_paths:
        folder = path if path.is_dir() else path.parent
        cases = folder / CASES_FOLDER
        if cases.is_dir() and cases not in out:
            out.append(cases)
    return out


def discover(paths: list[Path]) -> list[Case]:
    """Every ``*.hl7`` under the given folders (recursively), or the given files."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob("*" + MESSAGE_SUFFIX)))
        elif path.is_file() and path.name.endswith(MESSAGE_SUFFIX):
            found.append(path)
        elif path.is_file() and path.name.endswith((YAML_SUFFIX, JSON_SUFFIX)):
            suffix = YAML_SUFFIX if path.name.endswith(YAML_SUFFIX) else JSON_SUFFIX
            found.append(path.with_name(path.name[:-len(suffix)] + MESSAGE_SUFFIX))
        else:
            raise CaseError(f"{path}: no such case file or folder (cases are *.hl7 files)")
    return [Case(p) for p in dict.fromkeys(found)]


# -- the message ---------------------------------------------------------------------

def read_message(path: Path, *, default_charset: str, aliases: dict[str, str]) -> Message:
    """One HL7 message from a file, decoded per its MSH-18 as the listener does."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        frames = split_messages(raw)
    except ValueError as exc:
        raise CaseError(f"{path}: not an HL7 message: {exc}") from None
    if len(frames) != 1:
        raise CaseError(f"{path}: holds {len(frames)} messages; a case holds exactly one")
    try:
        decoded = decode_frame(frames[0], default=default_charset, aliases=aliases)
        return parse_message(decoded.text, codec=decoded.codec)
    except (CharsetError, HL7ParseError) as exc:
        raise CaseError(f"{path}: {exc}") from None


# -- values as plain data --------------------------------------------------------------

def plain_item(ds: Dataset) -> dict[str, Any]:
    """A Dataset as keyword -> value (text, number, list of values, list of items)."""
    out: dict[str, Any] = {}
    for elem in ds:
        keyword = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            out[keyword] = [plain_item(item) for item in elem.value]
        else:
            out[keyword] = _plain_value(elem.VR, elem.value)
    return out


def _plain_value(vr: str, value: Any) -> Any:
    if value is None:
        return "" if vr in TEXT_VRS else None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        values = [_plain_value(vr, v) for v in value]
        return values[0] if len(values) == 1 else values
    if vr in TEXT_VRS:
        return str(value)
    return value


def _expected_items(doc: YamlDoc, items: list[Any], ignore: set[str], loc: tuple[Any, ...]
                    ) -> list[dict[str, Any]]:
    return [_expected_item(doc, item, ignore, (*loc, i)) for i, item in enumerate(items)]


def _expected_item(doc: YamlDoc, item: Any, ignore: set[str], loc: tuple[Any, ...]
                   ) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise doc.error(loc, "an item is a mapping of DICOM keywords to values")
    out: dict[str, Any] = {}
    for keyword, value in item.items():
        kloc = (*loc, keyword)
        if not isinstance(keyword, str) or keyword not in keyword_dict:
            hint = difflib.get_close_matches(str(keyword), keyword_dict, n=1)
            raise doc.error(kloc, f"unknown DICOM keyword {keyword!r}"
                            + (f"; did you mean {hint[0]}?" if hint else ""))
        if keyword in ignore:
            continue
        vr = dictionary_VR(BaseTag(keyword_dict[keyword]))
        if vr == "SQ":
            if not isinstance(value, list):
                raise doc.error(kloc, f"{keyword} is a sequence: give a list of items")
            out[keyword] = _expected_items(doc, value, ignore, kloc)
        else:
            out[keyword] = _expected_value(vr, value)
    return _by_tag(out)


def _expected_value(vr: str, value: Any) -> Any:
    # YAML reads 20261128 as a number and ~ as null; in an expected item they are values.
    if isinstance(value, list):
        values = [_expected_value(vr, v) for v in value]
        return values[0] if len(values) == 1 else values
    if value is None:
        return "" if vr in TEXT_VRS else None
    if vr in TEXT_VRS and not isinstance(value, str):
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    return value


def _by_tag(item: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(item.items(), key=lambda kv: keyword_dict.get(kv[0], 0xFFFFFFFF)))


def _without(item: dict[str, Any], ignore: set[str]) -> dict[str, Any]:
    return {k: ([_without(i, ignore) for i in v] if isinstance(v, list) and v
                and isinstance(v[0], dict) else v)
            for k, v in item.items() if k not in ignore}


# -- expected files --------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorSpec(_Strict):
    ack: Literal["AE", "AR"] | None = None
    code: int | None = None
    location: str | None = None
    attribute: str | None = None
    text: str | None = None


class CaseSpec(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    mapping: str | None = Field(default=None, description="the mapping that must route it")
    hand_written: bool = Field(default=False, alias="hand-written",
                               description="written by hand: --update never overwrites it")
    ignore: list[str] = Field(default_factory=list, description="keywords not compared")
    items: list[Any] | None = None
    error: ErrorSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> CaseSpec:
        if (self.items is None) == (self.error is None):
            raise ValueError("give items: (the expected worklist items) or error: (the "
                             "expected rejection), not both")
        return self


@dataclass(frozen=True, slots=True)
class Expected:
    mapping: str | None
    items: list[dict[str, Any]] | None
    error: ErrorSpec | None
    ignore: set[str]
    hand_written: bool = False


def load_expected(path: Path) -> Expected:
    """Read an expected file; raise SourceError (file, line, key) when it is malformed."""
    if path.name.endswith(JSON_SUFFIX):
        return _load_json(path)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "an expected file is a mapping with mapping: and items: or error:")
    try:
        spec = CaseSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_errors(doc, exc)[0] from None
    ignore = set(spec.ignore)
    for i, keyword in enumerate(spec.ignore):
        if keyword not in keyword_dict:
            raise doc.error(("ignore", i), f"unknown DICOM keyword {keyword!r}")
    items = _expected_items(doc, spec.items, ignore, ("items",)) \
        if spec.items is not None else None
    return Expected(spec.mapping, items, spec.error, ignore, spec.hand_written)


def is_hand_written(path: Path) -> bool:
    """Whether an expected file says ``hand-written: true`` (read leniently: a file that
    does not parse is not taken for a generated one either, when it names the key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = json.loads(text) if path.name.endswith(JSON_SUFFIX) else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return "hand-written" in text
    return isinstance(data, dict) and data.get("hand-written") is True


def _load_json(path: Path) -> Expected:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, None, "", f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(path, exc.lineno, "", f"invalid JSON: {exc.msg}") from None
    mapping = None
    hand = isinstance(data, dict) and data.get("hand-written") is True
    if isinstance(data, dict):
        unknown = set(data) - {"mapping", "items", "hand-written"}
        if unknown or "items" not in data:
            raise SourceError(path, None, ", ".join(sorted(unknown)) or "items",
                              'a DICOM JSON case is a list of items or {"mapping": ..., '
                              '"items": [...]}')
        mapping, data = data.get("mapping"), data["items"]
    if not isinstance(data, list):
        raise SourceError(path, None, "items", "expected a list of DICOM JSON items")
    items = []
    for i, entry in enumerate(data):
        try:
            items.append(_by_tag(plain_item(Dataset.from_json(entry))))
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for bad JSON
            raise SourceError(path, None, f"items[{i}]",
                              f"not a DICOM JSON dataset: {exc}") from None
    return Expected(mapping, items, None, set(), hand)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False,
                          width=10**6)


def write_expected(case: Case, actual: dict[str, Any]) -> Path:
    """Write what the mapping makes of the case as its expected YAML file.

    Raises HandWrittenCase, and writes nothing, when the case's expected file (YAML or
    JSON) is marked ``hand-written: true``."""
    for path in (case.yaml_path, case.json_path):
        if path.is_file() and is_hand_written(path):
            raise HandWrittenCase(f"{path}: written by hand (hand-written: true); --update "
                                  "does not overwrite it: fix the mapping, or edit the "
                                  "file by hand from the IHE tables")
    header = (f"# Golden case for {case.message.name}: what the mapping must make of it.\n"
              "# Written by `mwl-bridge mapping test --update`: read it before you commit it.\n")
    case.yaml_path.write_text(header + dump_yaml(actual), encoding="utf-8")
    return case.yaml_path


# -- running ---------------------------------------------------------------------------

def run_case(mappings: MappingSet, case: Case, *, default_charset: str,
             aliases: dict[str, str]) -> Outcome:
    try:
        message = read_message(case.message, default_charset=default_charset, aliases=aliases)
    except CaseError as exc:
        return Outcome(case, "broken", str(exc))
    routed = ""
    try:
        routed = mappings.route(message).name
        result = mappings.map(message)
    except MappingError as exc:
        actual = _error_document(routed, exc)
        items: list[dict[str, Any]] | None = None
        error: MappingError | None = exc
    else:
        items = [_by_tag(plain_item(ds)) for ds in result.items]
        actual = {"mapping": result.mapping, "items": items}
        error = None
    path = case.expected_path()
    if path is None:
        return Outcome(case, "new", f"no expected file ({case.yaml_path.name}); run "
                                    "with --update to write one from the current output",
                       routed, len(items or ()), actual)
    try:
        expected = load_expected(path)
    except SourceError as exc:
        return Outcome(case, "broken", str(exc), routed, len(items or ()), actual)
    problems = _compare(expected, routed, items, error, path)
    if expected.ignore and "ignore" not in actual:
        actual = {**actual, "ignore": sorted(expected.ignore)}
    return Outcome(case, "fail" if problems else "pass", "\n".join(problems), routed,
                   len(items or ()), actual)


def _error_document(routed: str, exc: MappingError) -> dict[str, Any]:
    error: dict[str, Any] = {"ack": exc.ack_code, "code": exc.code}
    if exc.location:
        error["location"] = exc.location
    if exc.attribute:
        error["attribute"] = exc.attribute
    error["text"] = exc.text
    return {"mapping": routed, "error": error} if routed else {"error": error}


def _compare(expected: Expected, routed: str, items: list[dict[str, Any]] | None,
             error: MappingError | None, path: Path) -> list[str]:
    problems = []
    if expected.mapping is not None and expected.mapping != routed:
        problems.append(f"routed to mapping {routed or '(none)'!r}, expected "
                        f"{expected.mapping!r}")
    if expected.error is not None:
        if error is None:
            problems.append(f"accepted ({len(items or ())} item(s)), expected a rejection: "
                            + _error_text(expected.error))
            return problems
        for key in ("ack", "code", "location", "attribute", "text"):
            want = getattr(expected.error, key)
            got = error.ack_code if key == "ack" else getattr(error, key)
            if want is not None and want != got:
                problems.append(f"error {key}: got {got!r}, expected {want!r}")
        return problems
    if error is not None:
        where = f" at {error.location}" if error.location else ""
        problems.append(f"rejected: {error.ack_code} {error.code}{where}: {error.text}")
        return problems
    assert expected.items is not None and items is not None
    actual = [_without(i, expected.ignore) for i in items]
    if actual != expected.items:
        diff = difflib.unified_diff(
            dump_yaml(expected.items).splitlines(), dump_yaml(actual).splitlines(),
            fromfile=f"expected ({path.name})", tofile="actual", lineterm="", n=3)
        problems.extend(diff)
    return problems


def _error_text(spec: ErrorSpec) -> str:
    parts = [f"{k} {v}" for k, v in spec.model_dump(exclude_none=True).items() if k != "text"]
    return ", ".join(parts) or "any error"
