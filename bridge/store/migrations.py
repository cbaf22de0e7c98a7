"""Schema migrations, numbered from 1; each runs once, in its own transaction.

Written in the SQL subset SQLite and PostgreSQL share; the few differences
(row id type, binary type) are filled in per dialect. Never edit a migration
that has shipped: add the next one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    row_id: str  # an auto-incrementing primary key column type
    blob: str


SQLITE = Dialect(name="sqlite", row_id="INTEGER PRIMARY KEY", blob="BLOB")
POSTGRESQL = Dialect(name="postgresql", row_id="BIGSERIAL PRIMARY KEY", blob="BYTEA")

_STEP_INDEXED = (
    "station_aet", "modality", "sps_start_date", "sps_start_time", "sps_start", "patient_id",
    "issuer_of_patient_id", "patient_name_norm", "accession_number", "requested_procedure_id",
    "study_instance_uid", "sps_id", "sps_status",
)


def _v1(d: Dialect) -> list[str]:
    text_cols = ",\n  ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in (
        *_STEP_INDEXED, "placer_order_number", "filler_order_number"))
    stmts = [
        f"""CREATE TABLE message_log (
  id {d.row_id},
  received_at TEXT NOT NULL,
  peer TEXT NOT NULL,
  sending_application TEXT NOT NULL,
  sending_facility TEXT NOT NULL,
  control_id TEXT NOT NULL,
  message_type TEXT NOT NULL,
  ack_code TEXT NOT NULL,
  error TEXT NOT NULL,
  mapping TEXT NOT NULL,
  raw {d.blob} NOT NULL,
  ack {d.blob} NOT NULL
)""",
        "CREATE INDEX ix_message_sender ON message_log "
        "(sending_application, sending_facility, control_id)",
        "CREATE INDEX ix_message_outcome ON message_log (ack_code, received_at)",
        f"""CREATE TABLE procedure_step (
  id {d.row_id},
  {text_cols},
  item TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  message_id BIGINT REFERENCES message_log (id)
)""",
        # The stable keys a modality copies into every image identify a step.
        "CREATE UNIQUE INDEX ux_step_key ON procedure_step "
        "(study_instance_uid, requested_procedure_id, sps_id)",
        # The console's broad query is station (or modality) plus a day; with
        # both columns in one index SQLite picks it without needing ANALYZE
        # statistics (measured: 28 ms -> 0.02 ms at 100,000 items).
        "CREATE INDEX ix_step_station_day ON procedure_step "
        "(station_aet, sps_start_date, sps_start_time)",
        "CREATE INDEX ix_step_modality_day ON procedure_step "
        "(modality, sps_start_date, sps_start_time)",
        "CREATE INDEX ix_step_day ON procedure_step (sps_start_date, sps_start_time)",
    ]
    for col in _STEP_INDEXED:
        if col not in ("station_aet", "modality", "sps_start_date", "sps_start_time"):
            stmts.append(f"CREATE INDEX ix_step_{col} ON procedure_step ({col})")
    return stmts


MIGRATIONS = (_v1,)


def latest_version() -> int:
    return len(MIGRATIONS)


def statements(version: int, dialect: Dialect) -> list[str]:
    """The statements that take the schema from ``version - 1`` to ``version``."""
    return MIGRATIONS[version - 1](dialect)
