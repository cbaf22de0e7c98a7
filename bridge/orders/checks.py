"""Patient checks: pure functions of the mapped patient, the PID and the known patient.

Format checks (``check_patient``) run before anything is stored, on the loop.
Identity checks (merged IDs, a known ID with another person's name and birth
date) need what the store knows and run inside the write job. Each check has
its own error, listed in docs/orders.md; the mapping itself already rejects a
missing PID-3 (101), a birth date that is not a date (102) and a Patient ID
longer than DICOM's LO allows (102), all with the field's position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pydicom import Dataset

from bridge.hl7 import Segment
from bridge.orders import errors
from bridge.orders.errors import Rejection
from bridge.orders.patients import family_name, patient_key, same_name, text
from bridge.orders.settings import PatientChecks
from bridge.store.orders_tx import PatientRecord

PID_ID = "PID^1^3^1^1"


def _id_repetition(pid: Segment | None, patient_id: str) -> int:
    """The PID-3 repetition the Patient ID came from (1 when it cannot be told)."""
    if pid is None:
        return 1
    for n, rep in enumerate(pid.field(3), start=1):
        if rep and rep[0] and rep[0][0] == patient_id:
            return n
    return 1


def check_patient(patient: Dataset, pid: Segment | None, settings: PatientChecks, *,
                  today: date) -> None:
    """Raise a Rejection for the first patient problem found."""
    patient_id, issuer = patient_key(patient)
    if not patient_id:
        # A mapping without `required: true` on PatientID still must not store an
        # item no modality can file images against.
        raise Rejection("AE", errors.REQUIRED_FIELD_MISSING, PID_ID,
                        "Patient ID missing (PID-3)")
    if settings.trusted_issuers and issuer not in settings.trusted_issuers:
        rep = _id_repetition(pid, patient_id)
        raise Rejection("AE", errors.TABLE_VALUE_NOT_FOUND, f"PID^1^3^{rep}^4",
                        f"IssuerOfPatientID (PID-3.4) {issuer!r} is not a trusted issuer "
                        "(orders.patients.trusted_issuers)",
                        log_text="IssuerOfPatientID (PID-3.4) is not a trusted issuer")
    if settings.require_family_name and not family_name(patient):
        raise Rejection("AE", errors.REQUIRED_FIELD_MISSING, "PID^1^5^1^1",
                        "PatientName has no family name (PID-5.1 is empty)")
    sex = pid.value(8).strip() if pid is not None else ""
    if settings.sex_codes and sex and sex not in settings.sex_codes:
        raise Rejection("AE", errors.TABLE_VALUE_NOT_FOUND, "PID^1^8",
                        f"PatientSex (PID-8) {sex!r} is not one of "
                        f"{', '.join(settings.sex_codes)} (orders.patients.sex_codes)",
                        log_text="PatientSex (PID-8) is not in orders.patients.sex_codes")
    birth = text(patient, "PatientBirthDate")
    if settings.reject_future_birth_date and birth and birth > f"{today:%Y%m%d}":
        raise Rejection("AE", errors.DATA_TYPE_ERROR, "PID^1^7",
                        f"PatientBirthDate (PID-7) {birth} is in the future",
                        log_text="PatientBirthDate (PID-7) is in the future")


@dataclass(frozen=True, slots=True)
class Identity:
    """Where an incoming Patient ID leads once merges are followed."""

    key: tuple[str, str]  # the ID to store the data under
    record: PatientRecord | None  # what the store knows about that ID
    redirected_from: tuple[str, str] | None = None


Lookup = Callable[[str, str], "PatientRecord | None"]


def final_record(record: PatientRecord, lookup: Lookup) -> PatientRecord | None:
    """Follow a merge chain to the surviving record (None if it leads nowhere or loops)."""
    seen = {(record.patient_id, record.issuer)}
    current: PatientRecord | None = record
    while current is not None and current.merged:
        key = (current.merged_into_id, current.merged_into_issuer)
        if key in seen:
            return None
        seen.add(key)
        current = lookup(*key)
    return current


def resolve_identity(key: tuple[str, str], lookup: Lookup, settings: PatientChecks,
                     *, location: str = PID_ID) -> Identity:
    """The identity to store under: the ID itself, or its survivor when merged and the
    policy redirects; a Rejection when merged and the policy rejects."""
    record = lookup(*key)
    if record is None or not record.merged:
        return Identity(key, record)
    into = f"{record.merged_into_id}" + (f" ({record.merged_into_issuer})"
                                         if record.merged_into_issuer else "")
    how = "merged into" if record.merge_event != "A47" else "replaced by"
    if settings.merged_ids == "redirect":
        final = final_record(record, lookup)
        if final is not None:
            return Identity((final.patient_id, final.issuer), final, redirected_from=key)
    raise Rejection("AE", errors.UNKNOWN_KEY, location,
                    f"Patient ID {key[0]!r} was {how} {into} ({record.merge_event}); "
                    "send messages for the surviving ID",
                    log_text=f"Patient ID was {how} another ({record.merge_event})")


def demographics_conflict(known: PatientRecord, incoming: Dataset) -> bool:
    """A different name AND a different birth date: probably another person.

    One of the two changing is an ordinary correction (marriage, typo); an empty
    value on either side is unknown, not different.
    """
    name, birth = text(incoming, "PatientName"), text(incoming, "PatientBirthDate")
    if not (known.name and name and known.birth_date and birth):
        return False
    return not same_name(known.name, name) and known.birth_date != birth


def conflict_rejection() -> Rejection:
    return Rejection("AR", errors.DUPLICATE_KEY, PID_ID,
                     "Patient ID is known with a different name and birth date "
                     "(orders.patients.demographics_conflict: reject)")
