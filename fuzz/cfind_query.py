"""Fuzz the C-FIND identifier -> store query planner (bridge/worklist/query.py
build_query), on the way the SCP serves a query (bridge/worklist/scp.py
``WorklistSCP._on_find``), without the network.

Input: byte 0 picks the transfer syntax (``% 3``: implicit VR LE, explicit VR
LE, explicit VR BE), the calling AE's profile (``// 3 % 3``: plain UTF-8;
Latin-1 with transliteration, station default and restrictions; ISO 2022 IR 87
with stations) and the worklist settings (``// 9 % 4``: name matching
insensitive/exact, no cap/a cap of 2); the rest is the identifier.

Contract checked:
- decoding the identifier (pynetdicom's decode, then the undeclared character
  set re-decode of ``WorklistSCP._identifier``) and ``build_query`` either give a
  PlannedQuery or fail; the SCP answers any such failure 0xA900/0xC000, defined
  answers. One caveat is printed, not raised: an exception that the catch-alls
  turn into 0xC000 "the identifier cannot be decoded" but that the
  repository's own code raised (a planner bug behind the safety net);
- a query the planner accepted runs in the store (SQLite, with items mapped
  from fixtures/hl7/) and its rows can be post-filtered (``PlannedQuery.accepts``)
  and shaped into answers (``shape_answer``) with the profile's character set.
  A failure there is a crash: the SCP would send 0xC001 "the worklist store
  failed" or 0xC002 "a worklist item cannot be answered" for a peer's query.

    python fuzz/cfind_query.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import (
    PYDICOM_DECODING,
    REPO,
    SYNTAXES,
    decode_dataset,
    instrumented,
    main,
    note,
    raised_in_bridge,
)

with instrumented(__name__, extra=PYDICOM_DECODING):
    from pydicom import Dataset
    from pydicom.charset import convert_encodings
    from pynetdicom.dsutils import decode

    from bridge.hl7.charset import decode_frame
    from bridge.hl7.message import parse_message
    from bridge.hl7.settings import MllpSettings
    from bridge.mapping import load_mappings
    from bridge.store.sqlite import SqliteStore
    from bridge.worklist.access import PeerProfile
    from bridge.worklist.answer import shape_answer
    from bridge.worklist.charset import undeclared_character_set
    from bridge.worklist.query import QueryError, QueryScope, build_query
    from bridge.worklist.settings import WorklistSettings

PROFILES = (
    PeerProfile(ae_title="ANYSCU", known=False, character_set="ISO_IR 192", unencodable="utf8"),
    PeerProfile(ae_title="CT01", known=True, character_set="ISO_IR 100",
                unencodable="transliterate", station_from_calling_ae=True,
                modalities=("CT", "MR"), worklist_labels=("RAD",)),
    PeerProfile(ae_title="MR01", known=True, character_set="ISO 2022 IR 6\\ISO 2022 IR 87",
                unencodable="utf8", stations=("MR01", "CT01")),
)
SETTINGS = tuple(WorklistSettings(patient_name_matching=matching, max_answers=cap)
                 for cap in (0, 2) for matching in ("insensitive", "exact"))
# Stored items: what the shipped mappings make of these fixtures.
FIXTURES = ("orm-o01-ihe-ct.hl7", "orm-o01-latin1-mr.hl7", "orm-o01-utf8-greek-escapes.hl7",
            "orm-o01-two-groups.hl7", "omi-o23-three-ipc.hl7", "omg-o19-ct.hl7",
            "orm-noextras-two-procedures.hl7", "orm-o01-no-zds-tz.hl7")


def _items() -> list[Dataset]:
    mappings = load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")
    mllp = MllpSettings()
    items = []
    for name in FIXTURES:
        payload = (REPO / "fixtures" / "hl7" / name).read_bytes()
        text = decode_frame(payload, default=mllp.default_charset,
                            aliases=mllp.charset_aliases).text
        items.extend(mappings.map(parse_message(text)).items)
    for number, item in enumerate(items):  # some statuses and labels to match on
        item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus = (
            "SCHEDULED", "ARRIVED", "STARTED", "COMPLETED")[number % 4]
        if number % 2:
            item.WorklistLabel = "RAD"
    return items


def _open_store() -> SqliteStore:
    folder = tempfile.mkdtemp(prefix="fuzz-cfind-")
    atexit.register(shutil.rmtree, folder, True)
    store = SqliteStore(Path(folder) / "worklist.sqlite3")
    atexit.register(store.close)
    store.migrate()
    store.upsert_steps(_items())
    return store


STORE = _open_store()


def _identifier(identifier: Dataset, encoded: bytes, selector: int,
                profile: PeerProfile) -> Dataset:
    """``WorklistSCP._identifier``: re-decode in the set an undeclared identifier needs."""
    chosen = undeclared_character_set(identifier, profile.character_set)
    if chosen is None:
        return identifier
    implicit, little = SYNTAXES[selector % len(SYNTAXES)]
    fresh = decode(BytesIO(encoded), implicit, little)
    fresh.SpecificCharacterSet = chosen
    fresh.set_original_encoding(implicit, little, convert_encodings(chosen.split("\\")))
    return fresh


def one_input(data: bytes) -> None:
    if not data:
        return
    selector = data[0]
    profile = PROFILES[selector // 3 % len(PROFILES)]
    settings = SETTINGS[selector // 9 % len(SETTINGS)]
    scope = QueryScope(calling_ae=profile.ae_title,
                       station_from_calling_ae=profile.station_from_calling_ae,
                       stations=profile.stations, modalities=profile.modalities,
                       worklist_labels=profile.worklist_labels)
    try:
        identifier = _identifier(decode_dataset(selector, data[1:]), data[1:], selector,
                                 profile)
        plan = build_query(identifier, settings, scope)
    except QueryError as exc:  # 0xA900 / 0xC000 with its comment
        cause = exc.__cause__
        if cause is not None and raised_in_bridge(cause):
            note("masked planner fault (answered 0xC000 'cannot be decoded')", cause)
        return
    except Exception as exc:  # noqa: BLE001 - the SCP answers 0xC000 "cannot be decoded"
        if raised_in_bridge(exc):
            note("masked identifier fault (answered 0xC000 'cannot be decoded')", exc)
        return
    for item in STORE.query(plan.query):
        if plan.accepts(item):
            shape_answer(item, identifier, profile.character_set, profile.unencodable)


if __name__ == "__main__":
    main(one_input)
