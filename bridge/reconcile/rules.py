"""What a study found at the PACS means for its worklist item. Pure, no I/O.

The rules (docs/completion.md):

1. **Found by Study Instance UID.** A study whose Patient ID differs from the
   item's is a conflict (``patient_id``): flagged, never completed.
2. **Found only by Accession Number.** A study under the item's accession with
   another Study Instance UID is a conflict (``study_uid``): the modality did
   not take the UID from the worklist, or the accession was reused; an
   operator decides. With the item's own UID it counts as found by UID.
3. **Settled.** A found study completes its item once it is stable: its
   NumberOfStudyRelatedInstances unchanged over two answers (``polls``), or
   unchanged for a settle time (``time``). A push (IAN, Orthanc's stable
   study) is settled when it arrives: the PACS said so.
4. **Trust.** Completing goes through ``bridge.steps.change_status``: a
   terminal status (an MPPS COMPLETED or DISCONTINUED, an HL7 cancel) is never
   changed by the PACS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class StudyAnswer:
    """One study as the PACS describes it (a C-FIND answer, an IAN, a push)."""

    study_uid: str
    accession: str = ""
    patient_id: str = ""
    series: int = -1  # NumberOfStudyRelatedSeries; -1 when not said
    instances: int = -1  # NumberOfStudyRelatedInstances
    modalities: str = ""  # ModalitiesInStudy, as answered


@dataclass(frozen=True, slots=True)
class Expected:
    """What the worklist item says the study must be."""

    study_uid: str
    accession: str
    patient_id: str


class Kind(StrEnum):
    NOT_FOUND = "not found"
    FOUND = "found"
    CONFLICT = "conflict"


class ConflictKind(StrEnum):
    STUDY_UID = "study_uid"
    PATIENT_ID = "patient_id"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    study: StudyAnswer | None = None
    conflict: ConflictKind | None = None
    detail: str = ""  # names attributes, never values: it is logged


def judge(expected: Expected, by_uid: Sequence[StudyAnswer],
          by_accession: Sequence[StudyAnswer] = ()) -> Verdict:
    """The verdict on what the PACS answered for ``expected`` (rules 1 and 2)."""
    mine = [s for s in (*by_uid, *by_accession)
            if expected.study_uid and s.study_uid == expected.study_uid]
    if mine:
        study = mine[0]
        if expected.patient_id and study.patient_id and study.patient_id != expected.patient_id:
            return Verdict(Kind.CONFLICT, study, ConflictKind.PATIENT_ID,
                           "the study at the PACS has another Patient ID than the item")
        return Verdict(Kind.FOUND, study)
    others = [s for s in by_accession if s.study_uid and s.study_uid != expected.study_uid]
    if others:
        return Verdict(Kind.CONFLICT, others[0], ConflictKind.STUDY_UID,
                       f"{len(others)} study(ies) under the item's Accession Number with "
                       "another Study Instance UID")
    return Verdict(Kind.NOT_FOUND)


@dataclass(frozen=True, slots=True)
class Settle:
    """The settle policy (reconcile.settle, settle_time_s)."""

    mode: str  # polls or time
    settle_time: timedelta


def settled(policy: Settle, *, previous: int, seen_at: datetime | None, study: StudyAnswer,
            now: datetime) -> bool:
    """Whether a study found again with ``study.instances`` is complete (rule 3).

    ``previous`` is the count of the last answer (-1: none), ``seen_at`` when that
    count was first answered.
    """
    if study.instances <= 0 or study.instances != previous:
        return False
    if policy.mode == "polls":
        return True
    return seen_at is not None and now - seen_at >= policy.settle_time
