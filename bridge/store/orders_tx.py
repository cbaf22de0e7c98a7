"""The store side of the order lifecycle: what its write jobs read and write.

Everything here runs inside one ``Store.write`` job, on the single writer
(see the threading rule in base.py). So the reads a decision is based on and
the writes that carry it out are one atomic unit, and two messages about the
same new patient or order, arriving on two connections, are decided one
after the other: the second sees the first one's rows.

Plain SQL in the subset SQLite and PostgreSQL share; the parameter mark is the
backend's (``store.param``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset

from bridge.store.base import InboundMessage, StoreTx, UpsertOutcome
from bridge.store.items import loads_item
from bridge.store.sqltx import POSTGRESQL, for_update

# The first key of message-key advisory locks (the second is the key's hash).
_MESSAGE_LOCK_SPACE = 0x4D574C
ACCEPTED = ("AA",)
REJECTED = ("AE", "AR", "")  # "" is a frame that was not HL7 at all


@dataclass(frozen=True, slots=True)
class AppliedMessage:
    """An accepted message, as far as replay detection needs it."""

    id: int
    content_hash: str
    ack: bytes


@dataclass(frozen=True, slots=True)
class StoredStep:
    id: int
    item: Dataset
    status: str
    patient_id: str
    issuer: str
    accession: str


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """What the bridge knows about one Patient ID (within its issuer)."""

    patient_id: str
    issuer: str
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    attributes: str = ""  # the patient-level attributes last applied, as DICOM JSON
    merged_into_id: str = ""
    merged_into_issuer: str = ""
    merge_event: str = ""  # A40 (merged) or A47 (identifier changed)
    flags: str = ""

    @property
    def merged(self) -> bool:
        return bool(self.merged_into_id)


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One row of the message log, for ``mwl-bridge messages``."""

    id: int
    received_at: str
    peer: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    ack_code: str
    error: str
    mapping: str
    flags: str
    outcome: str
    replay_of: int | None
    raw: bytes = b""
    ack: bytes = b""


MESSAGE_COLUMNS = ("id, received_at, peer, sending_application, sending_facility, control_id,"
                    " message_type, ack_code, error, mapping, flags, outcome, replay_of")
_STEP_SELECT = ("SELECT id, item, sps_status, patient_id, issuer_of_patient_id, accession_number"
                " FROM procedure_step")
_PATIENT_SELECT = ("SELECT patient_id, issuer, name, birth_date, sex, attributes, merged_into_id,"
                   " merged_into_issuer, merge_event, flags FROM patient")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bytes(value: Any) -> bytes:
    return bytes(value) if value is not None else b""


class OrdersTx:
    """The lifecycle's view of one write transaction."""

    def __init__(self, tx: StoreTx) -> None:
        self.tx = tx
        self._cur = tx.cur
        self._p = tx.param

    def _marks(self, n: int) -> str:
        return ", ".join([self._p] * n)

    # Savepoints inside the job's own: a message whose work is rejected halfway is
    # rolled back to here and recorded as rejected instead.
    def savepoint(self, name: str) -> None:
        self._cur.execute(f"SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self._cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
        self._cur.execute(f"RELEASE SAVEPOINT {name}")

    def release(self, name: str) -> None:
        self._cur.execute(f"RELEASE SAVEPOINT {name}")

    # --- the message log ---------------------------------------------------------

    def lock_message_key(self, application: str, facility: str, control_id: str) -> None:
        """Hold the message key (MSH-3/MSH-4/MSH-10) until the commit (PostgreSQL): the
        same message arriving at two instances at once is decided one after the other,
        so the second finds the first and answers with its ACK. SQLite has one writer."""
        if self.tx.dialect == POSTGRESQL:
            self._cur.execute(
                f"SELECT pg_advisory_xact_lock({_MESSAGE_LOCK_SPACE}, hashtext({self._p}))",
                ("\x1f".join((application, facility, control_id)),))

    def find_applied(self, application: str, facility: str, control_id: str
                     ) -> AppliedMessage | None:
        """The accepted message with this MSH-3/MSH-4/MSH-10, if any (the first one)."""
        p = self._p
        self._cur.execute(
            "SELECT id, content_hash, ack FROM message_log WHERE sending_application = "
            f"{p} AND sending_facility = {p} AND control_id = {p} AND ack_code = 'AA'"
            " ORDER BY id LIMIT 1", (application, facility, control_id))
        row = self._cur.fetchone()
        return AppliedMessage(int(row[0]), row[1], _bytes(row[2])) if row else None

    def record(self, message: InboundMessage, *, content_hash: str = "", flags: str = "",
               outcome: str = "", replay_of: int | None = None) -> int:
        return self.tx.record_message(message, content_hash=content_hash, flags=flags,
                                      outcome=outcome, replay_of=replay_of)

    def set_outcome(self, message_id: int, outcome: str, flags: str) -> None:
        p = self._p
        self._cur.execute(f"UPDATE message_log SET outcome = {p}, flags = {p} WHERE id = {p}",
                          (outcome, flags, message_id))

    def recent_applied(self, limit: int) -> list[tuple[str, str, str, str, bytes]]:
        """(MSH-3, MSH-4, MSH-10, content hash, ACK) of the newest accepted messages,
        oldest first."""
        self._cur.execute(
            "SELECT sending_application, sending_facility, control_id, content_hash, ack"
            " FROM message_log WHERE ack_code = 'AA' AND control_id <> ''"
            f" ORDER BY id DESC LIMIT {int(limit)}")
        rows = self._cur.fetchall()
        return [(r[0], r[1], r[2], r[3], _bytes(r[4])) for r in reversed(rows)]

    def list_messages(self, *, rejected: bool = False, flagged: bool = False,
                      control_id: str = "", since: str = "", limit: int = 50
                      ) -> list[LoggedMessage]:
        p = self._p
        where: list[str] = []
        params: list[Any] = []
        if rejected:
            where.append(f"ack_code IN ({self._marks(len(REJECTED))})")
            params.extend(REJECTED)
        if flagged:
            where.append("flags <> ''")
        if control_id:
            where.append(f"control_id = {p}")
            params.append(control_id)
        if since:
            where.append(f"received_at >= {p}")
            params.append(since)
        sql = f"SELECT {MESSAGE_COLUMNS} FROM message_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        self._cur.execute(sql, params)
        return [logged_message(r) for r in self._cur.fetchall()]

    def get_message(self, message_id: int) -> LoggedMessage | None:
        self._cur.execute(f"SELECT {MESSAGE_COLUMNS}, raw, ack FROM message_log WHERE id = "
                          f"{self._p}", (message_id,))
        row = self._cur.fetchone()
        if row is None:
            return None
        return logged_message(row, raw=_bytes(row[13]), ack=_bytes(row[14]))

    def replays_of(self, message_id: int) -> list[LoggedMessage]:
        self._cur.execute(f"SELECT {MESSAGE_COLUMNS} FROM message_log WHERE replay_of = "
                          f"{self._p} ORDER BY id", (message_id,))
        return [logged_message(r) for r in self._cur.fetchall()]

    def purge_messages(self, ack_codes: Sequence[str], before: str, limit: int) -> int:
        """Delete up to ``limit`` of the oldest messages with these ACK codes received
        before ``before`` (ISO 8601, UTC). Steps keep their data; only their link to the
        message that last changed them is cleared."""
        p = self._p
        self._cur.execute(
            f"SELECT id FROM message_log WHERE ack_code IN ({self._marks(len(ack_codes))})"
            f" AND received_at < {p} ORDER BY id LIMIT {int(limit)}", (*ack_codes, before))
        ids = [int(r[0]) for r in self._cur.fetchall()]
        if not ids:
            return 0
        marks = self._marks(len(ids))
        self._cur.execute(f"UPDATE procedure_step SET message_id = NULL WHERE message_id IN "
                          f"({marks})", ids)
        self._cur.execute(f"DELETE FROM message_log WHERE id IN ({marks})", ids)
        return len(ids)

    # --- procedure steps ---------------------------------------------------------

    def _steps(self, where: str, params: Sequence[Any]) -> list[StoredStep]:
        # Locked until the commit (PostgreSQL): another instance's change of the same
        # step waits, then decides on what this one wrote.
        self._cur.execute(f"{_STEP_SELECT} WHERE {where} ORDER BY id{for_update(self.tx)}",
                          params)
        return [StoredStep(id=int(r[0]), item=loads_item(r[1]), status=r[2], patient_id=r[3],
                           issuer=r[4], accession=r[5]) for r in self._cur.fetchall()]

    def step_by_order(self, accession: str, requested_procedure_id: str, sps_id: str
                      ) -> StoredStep | None:
        """The step an order message names by Accession Number, RP ID and SPS ID."""
        if not accession:
            return None
        p = self._p
        found = self._steps(f"accession_number = {p} AND requested_procedure_id = {p}"
                            f" AND sps_id = {p}", (accession, requested_procedure_id, sps_id))
        return found[0] if found else None

    def step_by_key(self, study_uid: str, requested_procedure_id: str, sps_id: str
                    ) -> StoredStep | None:
        """The step with this unique key (Study Instance UID, RP ID, SPS ID)."""
        p = self._p
        found = self._steps(f"study_instance_uid = {p} AND requested_procedure_id = {p}"
                            f" AND sps_id = {p}", (study_uid, requested_procedure_id, sps_id))
        return found[0] if found else None

    def accession_owners(self, accession: str) -> set[tuple[str, str]]:
        """(Patient ID, issuer) of every stored step with this Accession Number."""
        self._cur.execute("SELECT DISTINCT patient_id, issuer_of_patient_id FROM procedure_step"
                          f" WHERE accession_number = {self._p}", (accession,))
        return {(r[0], r[1]) for r in self._cur.fetchall()}

    def steps_by_accession(self, accession: str) -> list[StoredStep]:
        return self._steps(f"accession_number = {self._p}", (accession,))

    def steps_by_patient(self, patient_id: str, issuer: str) -> list[StoredStep]:
        p = self._p
        return self._steps(f"patient_id = {p} AND issuer_of_patient_id = {p}",
                           (patient_id, issuer))

    def insert_step(self, item: Dataset, message_id: int | None) -> UpsertOutcome:
        return self.tx.upsert_step(item, message_id)

    def replace_step(self, step_id: int, item: Dataset, message_id: int | None
                     ) -> UpsertOutcome:
        return self.tx.replace_step(step_id, item, message_id)

    # --- patients ----------------------------------------------------------------

    def patient(self, patient_id: str, issuer: str) -> PatientRecord | None:
        p = self._p
        self._cur.execute(f"{_PATIENT_SELECT} WHERE patient_id = {p} AND issuer = {p}",
                          (patient_id, issuer))
        r = self._cur.fetchone()
        if r is None:
            return None
        return PatientRecord(patient_id=r[0], issuer=r[1], name=r[2], birth_date=r[3], sex=r[4],
                             attributes=r[5],
                             merged_into_id=r[6], merged_into_issuer=r[7], merge_event=r[8],
                             flags=r[9])

    def save_patient(self, record: PatientRecord, message_id: int | None, *,
                     exists: bool | None = None) -> None:
        """Insert or update the row for (patient_id, issuer); ``exists`` (when the caller
        just read it) saves the statement that would find out."""
        p = self._p
        values = (record.name, record.birth_date, record.sex, record.attributes,
                  record.merged_into_id, record.merged_into_issuer, record.merge_event,
                  record.flags, _now(), message_id)
        if exists is not False:
            self._cur.execute(
                f"UPDATE patient SET name = {p}, birth_date = {p}, sex = {p}, attributes = {p},"
                f" merged_into_id = {p}, merged_into_issuer = {p}, merge_event = {p},"
                f" flags = {p}, updated_at = {p}, message_id = {p}"
                f" WHERE patient_id = {p} AND issuer = {p}",
                (*values, record.patient_id, record.issuer))
            if exists or self._cur.rowcount:
                return
        self._cur.execute(
            "INSERT INTO patient (name, birth_date, sex, attributes, merged_into_id,"
            " merged_into_issuer, merge_event, flags, updated_at, message_id, patient_id,"
            f" issuer, created_at) VALUES ({self._marks(13)})",
            (*values, record.patient_id, record.issuer, values[8]))

    def repoint_merged(self, old: tuple[str, str], new: tuple[str, str]) -> None:
        """Patients merged into ``old`` now point at ``new`` (merge chains stay one hop)."""
        p = self._p
        self._cur.execute(
            f"UPDATE patient SET merged_into_id = {p}, merged_into_issuer = {p} WHERE "
            f"merged_into_id = {p} AND merged_into_issuer = {p}", (*new, *old))

    def count_patients(self) -> int:
        self._cur.execute("SELECT COUNT(*) FROM patient")
        return int(self._cur.fetchone()[0])


def logged_message(r: Sequence[Any], *, raw: bytes = b"", ack: bytes = b"") -> LoggedMessage:
    """A message_log row selected as MESSAGE_COLUMNS (plus raw and ack when read)."""
    return LoggedMessage(id=int(r[0]), received_at=r[1], peer=r[2], sending_application=r[3],
                         sending_facility=r[4], control_id=r[5], message_type=r[6],
                         ack_code=r[7], error=r[8], mapping=r[9], flags=r[10], outcome=r[11],
                         replay_of=int(r[12]) if r[12] is not None else None, raw=raw, ack=ack)
