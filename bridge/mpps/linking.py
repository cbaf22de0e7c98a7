"""Which stored procedure steps an MPPS is about. Pure: it says what to look for;
the handler looks it up inside its transaction.

Each item of the Scheduled Step Attributes Sequence (0040,0270) carries the
keys the modality copied from the worklist item. The configured key order
(``mpps.match_keys``) is tried per item, and the first key that finds steps
wins for that item:

- ``study_sps``: Study Instance UID + Scheduled Procedure Step ID;
- ``accession``: Accession Number (narrowed to the item's SPS ID, then its
  Requested Procedure ID, when those still find something);
- ``study``: Study Instance UID alone;
- ``order_numbers``: placer and/or filler order number.

An MPPS whose items find nothing (or that has no items) is unscheduled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeVar

from pydicom import Dataset

S = TypeVar("S")
MatchKey = Literal["study_sps", "accession", "study", "order_numbers"]
MATCH_KEYS: tuple[MatchKey, ...] = ("study_sps", "accession", "study", "order_numbers")
DEFAULT_MATCH_KEYS: tuple[MatchKey, ...] = ("study_sps", "accession")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def key_columns(item: Dataset, key: MatchKey) -> dict[str, str]:
    """The procedure-step columns and values ``key`` looks for; empty when it cannot apply."""
    study = _text(item, "StudyInstanceUID")
    sps = _text(item, "ScheduledProcedureStepID")
    if key == "study_sps":
        return {"study_instance_uid": study, "sps_id": sps} if study and sps else {}
    if key == "accession":
        accession = _text(item, "AccessionNumber")
        return {"accession_number": accession} if accession else {}
    if key == "study":
        return {"study_instance_uid": study} if study else {}
    placer = _text(item, "PlacerOrderNumberImagingServiceRequest")
    filler = _text(item, "FillerOrderNumberImagingServiceRequest")
    where = {}
    if placer:
        where["placer_order_number"] = placer
    if filler:
        where["filler_order_number"] = filler
    return where


def _narrow(steps: list[Dataset], item: Dataset, attribute: str, keyword: str,
            ) -> list[Dataset]:
    wanted = _text(item, keyword)
    if not wanted:
        return steps
    kept = [s for s in steps if _step_value(s, attribute) == wanted]
    return kept or steps


def _step_value(step: Dataset, keyword: str) -> str:
    if keyword == "ScheduledProcedureStepID":
        seq = step.get("ScheduledProcedureStepSequence")
        return _text(seq[0], keyword) if seq else ""
    return _text(step, keyword)


def link_item(item: Dataset, keys: Sequence[MatchKey],
                 find: Callable[[dict[str, str]], list[S]],
                 item_of: Callable[[S], Dataset]) -> tuple[MatchKey | None, list[S]]:
    """The steps one Scheduled Step Attributes item refers to, and the key that found them."""
    for key in keys:
        where = key_columns(item, key)
        if not where:
            continue
        found = find(where)
        if not found:
            continue
        if key == "accession" and len(found) > 1:
            by_item = {id(item_of(s)): s for s in found}
            narrowed = _narrow([item_of(s) for s in found], item, "ScheduledProcedureStepID",
                               "ScheduledProcedureStepID")
            narrowed = _narrow(narrowed, item, "RequestedProcedureID", "RequestedProcedureID")
            found = [by_item[id(ds)] for ds in narrowed]
        return key, found
    return None, []


def scheduled_items(mpps: Dataset) -> list[Dataset]:
    seq = mpps.get("ScheduledStepAttributesSequence")
    return list(seq) if seq else []


def unique_by_id(records: Iterable[S], ident: Callable[[S], int]) -> list[S]:
    seen: set[int] = set()
    out = []
    for record in records:
        key = ident(record)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out
