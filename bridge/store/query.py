"""The worklist query as the store understands it: a conjunction of matches
on indexed columns, independent of DICOM and of SQL.

The worklist package turns a C-FIND identifier into a ``WorklistQuery``; each
store backend turns it into SQL. Keeping this in between means matching rules
are tested once, and a new backend only has to translate five match kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Column(StrEnum):
    """Indexed columns of the procedure-step table, each one MWL matching key."""

    STATION_AET = "station_aet"              # (0040,0100)>(0040,0001)
    MODALITY = "modality"                    # (0040,0100)>(0008,0060)
    SPS_START_DATE = "sps_start_date"        # (0040,0100)>(0040,0002) YYYYMMDD
    SPS_START_TIME = "sps_start_time"        # (0040,0100)>(0040,0003) HHMMSS (zero padded)
    SPS_START = "sps_start"                  # date+time combined, YYYYMMDDHHMMSS
    PATIENT_ID = "patient_id"                # (0010,0020)
    ISSUER_OF_PATIENT_ID = "issuer_of_patient_id"  # (0010,0021)
    PATIENT_NAME_NORM = "patient_name_norm"  # (0010,0010), see store.names.normalise_name
    ACCESSION_NUMBER = "accession_number"    # (0008,0050)
    REQUESTED_PROCEDURE_ID = "requested_procedure_id"  # (0040,1001)
    STUDY_INSTANCE_UID = "study_instance_uid"  # (0020,000D)
    SPS_ID = "sps_id"                        # (0040,0100)>(0040,0009)
    SPS_STATUS = "sps_status"                # (0040,0100)>(0040,0020)


@dataclass(frozen=True, slots=True)
class ItemPath:
    """A single-valued text attribute inside the stored item, by tag path.

    For keys without a column: the store evaluates the match on the item
    itself (JSON functions), so only candidate rows leave the database. The
    worklist still checks those rows exactly; a match on an ItemPath may
    therefore be a superset, never a subset, of the true answer.
    ``tags`` runs from the top level down, through the first item of each
    sequence, e.g. (0x00400100, 0x00400006).
    """

    tags: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NamePath:
    """A single-valued person name other than the patient's, by tag path, matched
    on its normalised form (``store.names.normalise_name``): the pattern given
    must be normalised the same way. Like ItemPath, a pre-filter: a superset."""

    tags: tuple[int, ...]


Target = Column | ItemPath | NamePath


@dataclass(frozen=True, slots=True)
class Exact:
    """Single value matching: the column equals ``value`` (case-sensitive)."""

    column: Target
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """DICOM wildcard matching: ``*`` any run of characters, ``?`` one character."""

    column: Target
    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive range on a fixed-width string column; ``None`` leaves that side open."""

    column: Target
    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class AnyOf:
    """List of UIDs matching: the column equals one of ``values``."""

    column: Target
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoneOf:
    """The column equals none of ``values`` (hidden statuses)."""

    column: Target
    values: tuple[str, ...]


Match = Exact | Wildcard | Range | AnyOf | NoneOf


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """All matches must hold. Results come ordered by SPS start, then insertion."""

    matches: tuple[Match, ...] = field(default_factory=tuple)
    limit: int | None = None
