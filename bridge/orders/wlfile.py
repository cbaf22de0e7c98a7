"""One worklist file of DCMTK ``wlmscpfs`` or Orthanc's worklist plugin, read as a
candidate for the store (bridge/orders/bulk.py loads the candidates).

Both servers keep one DICOM file per worklist item (``*.wl``: a dataset with a
Scheduled Procedure Step Sequence, usually with DICOM file meta information,
sometimes without). The item is brought to the store's form: text decoded per
its Specific Character Set and kept as Unicode without that element, no file
meta, no group lengths; each SPS item becomes a step of its own (the store
holds one row per Scheduled Procedure Step), and a step without a status
becomes SCHEDULED, as a new order does.

Before anything is stored each step gets the checks an order's item gets
(bridge/orders/checks.py ``check_patient``; the item's stored size,
orders.max_item_bytes), plus what only a file can get wrong: not DICOM, cut
short, no Scheduled Procedure Step Sequence, no Study Instance UID (the store's
key, and what every image of the procedure carries), a birth date or sex that
is not DICOM's. No store, no shared state: the importer runs it in worker
processes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from bridge.orders.checks import check_patient
from bridge.orders.dicomfile import NotLean, read_item_json
from bridge.orders.errors import Rejection
from bridge.orders.patients import PATIENT_KEYWORDS, patient_part, text
from bridge.orders.settings import PatientChecks
from bridge.store.bulk_tx import StepRowValues, Unusual, step_row, step_row_json
from bridge.store.items import dumps_item, loads_item

T = TypeVar("T")

_CHARSET = 0x00080005
_SPS = 0x00400100
_SPS_KEY, _STATUS_KEY = "00400100", "00400020"
_DATE = re.compile(r"\d{8}")
_DICOM_SEX = ("M", "F", "O")


@dataclass(frozen=True, slots=True)
class PatientFacts:
    name: str
    birth_date: str
    sex: str
    attributes: str  # the patient-level attributes, as DICOM JSON (the patient table's)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A step to load, or why it cannot be loaded (``kind``: the reason's short form,
    counted in the summary; ``reason``: the sentence for the operator)."""

    origin: str  # the file (and SPS item), or the HL7 file and message number
    row: StepRowValues | None = None
    patient: PatientFacts | None = None
    kind: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ItemRules:
    """The checks of orders.patients and orders.max_item_bytes, picklable."""

    patients: PatientChecks = field(default_factory=PatientChecks)
    max_item_bytes: int = 256 * 1024
    today: date = field(default_factory=date.today)


def rejected(origin: str, kind: str, reason: str) -> Candidate:
    return Candidate(origin, kind=kind, reason=reason)


def read_wl(path: Path, rules: ItemRules, *, lean_first: bool = True) -> list[Candidate]:
    """The candidates of one .wl file: one per SPS item, or one rejection.

    The lean reader (bridge/orders/dicomfile.py) first, pydicom for what it leaves;
    ``lean_first=False``: pydicom only (the tests compare the two)."""
    origin = str(path)
    try:
        if not lean_first:
            raise NotLean("pydicom asked for")
        lean = _read_lean(path)
    except NotLean as exc:
        if exc.broken:  # pydicom would read on past the end of a file cut short
            return [rejected(origin, "corrupt DICOM file",
                             f"{origin}: cannot read the DICOM file (cut short or corrupt): "
                             f"{exc.reason}")]
    except OSError as exc:
        return [rejected(origin, "unreadable file",
                         f"{origin}: cannot read: {exc.strerror or exc}")]
    else:
        if not lean:
            return [_no_sps(origin)]
        return [check_tree(tree, text, where, rules)
                for where, (tree, text) in _origins(origin, lean)]
    try:
        ds = dcmread(path, force=_no_preamble(path))
        # Every element now, so that a file cut short fails here, not in a later read.
        items: list[Dataset] = [_store_form(ds, sps) for sps in _sps_items(ds)]
    except InvalidDicomError:
        return [rejected(origin, "not a DICOM file",
                         f"{origin}: not a DICOM file (no 'DICM' after the 128-byte preamble, "
                         "and it does not start like a dataset)")]
    except _NoSps:
        return [_no_sps(origin)]
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, LookupError) as exc:
        what = str(exc) or type(exc).__name__
        return [rejected(origin, "corrupt DICOM file",
                         f"{origin}: cannot read the DICOM file (cut short or corrupt): "
                         f"{what[:200]}")]
    return [check_item(item, where, rules) for where, item in _origins(origin, items)]


def _no_sps(origin: str) -> Candidate:
    return rejected(origin, "no Scheduled Procedure Step Sequence",
                    f"{origin}: the file has no Scheduled Procedure Step Sequence (0040,0100) "
                    "item: it is no worklist item")


def _origins(origin: str, items: list[T]) -> list[tuple[str, T]]:
    if len(items) == 1:
        return [(origin, items[0])]
    return [(f"{origin} (SPS item {n})", item) for n, item in enumerate(items, start=1)]


# What the checks read of an item: the patient's attributes and the Study Instance UID.
_CHECKED_KEYS = tuple(f"{Tag(k):08X}" for k in (*PATIENT_KEYWORDS, "StudyInstanceUID"))


def check_tree(tree: dict[str, Any], stored: str, origin: str, rules: ItemRules
               ) -> Candidate:
    """``check_item`` for an item the lean reader gave as JSON (``stored``, and ``tree``
    parsed): only the few attributes the checks read become a Dataset, and the index
    values come from the JSON (bridge/store/bulk_tx.py ``index_from_json``)."""
    checked = loads_item(json.dumps({k: tree[k] for k in _CHECKED_KEYS if k in tree}))
    problem = _problem(checked, origin, rules)
    if problem is not None:
        return problem
    try:
        row = step_row_json(tree, stored)
    except Unusual:
        row = step_row(loads_item(stored), stored)
    return _accepted(origin, row, checked, rules)


def _read_lean(path: Path) -> list[tuple[dict[str, Any], str]]:
    """Each step of the file (as JSON, and its stored text), by the lean reader;
    [] without SPS."""
    tree = read_item_json(path.read_bytes())
    sps = tree.get(_SPS_KEY, {}).get("Value") or []
    out = []
    for one in sps:
        step = dict(one)
        if not step.get(_STATUS_KEY, {}).get("Value"):
            step[_STATUS_KEY] = {"vr": "CS", "Value": ["SCHEDULED"]}
        one = {**tree, _SPS_KEY: {"vr": "SQ", "Value": [step]}}
        out.append((one, json.dumps(one, sort_keys=True, ensure_ascii=False,
                                    separators=(",", ":"))))
    return out


def check_item(item: Dataset, origin: str, rules: ItemRules, *, stored: str | None = None
               ) -> Candidate:
    """An item in the store's form, checked as an order's item is; the candidate."""
    problem = _problem(item, origin, rules)
    if problem is not None:
        return problem
    return _accepted(origin, step_row(item, stored), item, rules)


def _problem(item: Dataset, origin: str, rules: ItemRules) -> Candidate | None:
    try:
        check_patient(item, None, rules.patients, today=rules.today)
    except Rejection as r:
        return rejected(origin, _patient_kind(r), f"{origin}: {r.text}")
    problem = _dicom_problem(item)
    if problem is not None:
        return rejected(origin, problem[0], f"{origin}: {problem[1]}")
    return None


def _accepted(origin: str, row: StepRowValues, patient: Dataset, rules: ItemRules
              ) -> Candidate:
    size = len(row.item.encode("utf-8"))
    if size > rules.max_item_bytes:
        return rejected(origin, "item too large",
                        f"{origin}: the item would be {size} bytes stored, more than the "
                        f"{rules.max_item_bytes} accepted (orders.max_item_bytes)")
    facts = PatientFacts(text(patient, "PatientName"), text(patient, "PatientBirthDate"),
                         text(patient, "PatientSex"),
                         dumps_item(patient_part(patient, PATIENT_KEYWORDS)))
    return Candidate(origin, row=row, patient=facts)


def _patient_kind(r: Rejection) -> str:
    """The summary's short form of a patient check's rejection (its ERR location)."""
    parts = r.location.split("^")
    field_ = parts[2] if len(parts) > 2 else ""
    if field_ == "3":
        return "issuer not trusted" if parts[-1] == "4" else "Patient ID missing"
    return {"5": "no family name", "7": "birth date in the future"}.get(field_, "patient data")


def _dicom_problem(item: Dataset) -> tuple[str, str] | None:
    if not text(item, "StudyInstanceUID"):
        return ("Study Instance UID missing",
                "StudyInstanceUID (0020,000D) is missing or empty; the modality copies it "
                "into every image, so the source must give one")
    birth = text(item, "PatientBirthDate")
    if birth and not (_DATE.fullmatch(birth) and _valid_date(birth)):
        return ("birth date not a date",
                f"PatientBirthDate (0010,0030) {birth!r} is not a date (YYYYMMDD)")
    sex = text(item, "PatientSex")
    if sex and sex not in _DICOM_SEX:
        return ("sex not M, F or O",
                f"PatientSex (0010,0040) {sex!r} is not one of M, F, O")
    return None


def _valid_date(value: str) -> bool:
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


class _NoSps(Exception):
    pass


def _no_preamble(path: Path) -> bool:
    """Read without the DICM preamble only a file that starts like a dataset (an
    (0008,xxxx) tag, little endian): some sites write bare datasets."""
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] != b"DICM" and head[:2] == b"\x08\x00"


def _sps_items(ds: Dataset) -> list[Dataset]:
    seq = ds.get(_SPS)
    if seq is None or seq.VR != "SQ" or not seq.value:
        # Touch every element first: a file cut short says so rather than "no SPS".
        for _ in ds.iterall():
            pass
        raise _NoSps
    return list(seq.value)


def _store_form(ds: Dataset, sps: Dataset) -> Dataset:
    """One step: top level and this SPS item, text decoded, no charset or file meta."""
    item = Dataset()
    for elem in ds:  # decodes each value with the dataset's Specific Character Set
        tag = elem.tag
        if tag == _CHARSET or tag.group == 0x0002 or tag.element == 0:
            continue
        if tag == _SPS:
            one = Dataset()
            for sub in sps:
                if sub.tag.element != 0:
                    one.add(sub)
            _drop_group_lengths(one)
            if not text(one, "ScheduledProcedureStepStatus"):
                one.ScheduledProcedureStepStatus = "SCHEDULED"
            item.add_new(_SPS, "SQ", Sequence([one]))
            continue
        if elem.VR == "SQ":
            for nested in elem.value:  # decoded now too: a broken nested item fails here
                _drop_group_lengths(nested)
        item.add(elem)
    return item


def _drop_group_lengths(ds: Dataset) -> None:
    """Without (gggg,0000) at any depth: they describe an encoding, not the item."""
    for elem in list(ds):
        if elem.tag.element == 0:
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for nested in elem.value:
                _drop_group_lengths(nested)
