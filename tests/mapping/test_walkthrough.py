"""The walkthrough of docs/mapping.md works as written: CARERIS adapted from the IHE profile."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.hl7.message import parse_message
from bridge.mapping import load_mappings
from bridge.mapping.explain import explain

from .mapping_helpers import DEFAULT_MAPPING, MAPPINGS

MESSAGE = "\r".join([
    "MSH|^~\\&|CARERIS|WEST|MWLBRIDGE|RAD|20261130081500||ORM^O01|CR-88121|P|2.3.1",
    "PID|1||W-20331^^^WEST^MR||NGUYEN^LAN^THI||19880214|F",
    "PV1|1|O|||||||||||||||||V-556",
    "ORC|NW|PO-7781|CR-2026-7781||SC||^^^202611300930^^R",
    "OBR|1|PO-7781|CR-2026-7781|CTAB^CT abdomen^CARE",
    "ZPR|ROOM 4|CT-WEST-2",
])

HEADER = """name: careris-west
description: CARERIS (West Clinic) orders
match:
  message_type: ORM^O01
  sending_application: CARERIS
  sending_facility: WEST
  priority: 20                  # tried before the shipped profiles
group_by: ORC
vars:
  primary_authority: WEST       # PID-3 repetition with authority WEST is the Patient ID
study_uid:
  missing: derive
  derive_from: [AccessionNumber]
  namespace: west-clinic        # its filler numbers may repeat another site's
lookups:
  procedures: {file: lookups/careris-procedures.csv, key: code}
stations:
  rules:
    - name: zpr-room            # ZPR-2: the room's AE title, ZPR-1 its name
      priority: 100
      aet: ZPR-2
      station_name: ZPR-1
    - name: procedure-table
      priority: 50
      aet: {from: OBR-4.1, lookup: procedures.station}
  default:
    aet: $default_station_aet
"""


def careris(folder: Path) -> Path:
    profile = DEFAULT_MAPPING.read_text(encoding="utf-8")
    attributes = profile[profile.index("attributes:"):]
    for old, new in [
        ("    from: OBR-18\n    required: true", "    from: OBR-18 | ORC-3.1\n    required: true"),
        ("    from: OBR-19 | OBR-18\n", "    from: OBR-19 | ORC-3.1\n"),
        ("      Modality: {from: OBR-24, case: upper, required: true}",
         "      Modality:\n        first:\n          - {from: OBR-24, case: upper}\n"
         "          - {from: OBR-4.1, lookup: procedures.modality, lookup_miss: error}\n"
         "        required: true"),
        ("        from: OBR-20 | OBR-19 | OBR-18\n", "        from: OBR-20 | ORC-3.1\n"),
    ]:
        assert old in attributes, old
        attributes = attributes.replace(old, new)
    path = folder / "careris-west.yaml"
    path.write_text(HEADER + attributes, encoding="utf-8")
    (folder / "lookups" / "careris-procedures.csv").write_text(
        "code,modality,station\nCTAB,CT,CT-WEST-1\nCTHD,CT,CT-WEST-1\nMRKN,MR,MR-WEST-1\n",
        encoding="utf-8")
    return path


def test_the_walkthrough_mapping_takes_careris_orders(tmp_path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder, ignore=shutil.ignore_patterns("cases"))
    message = parse_message(MESSAGE)
    before = load_mappings([folder], default_station_aet="UNASSIGNED")
    exp = explain(before, message)
    assert exp.mapping is not None and exp.mapping.name == "orm-no-ihe-extras"   # step 1
    assert exp.error is not None and exp.error.code == 103
    careris(folder)
    after = load_mappings([folder], default_station_aet="UNASSIGNED")
    assert after.names[0] == "careris-west"                                     # step 4
    result = after.map(message)
    [ds] = result.items
    sps = ds.ScheduledProcedureStepSequence[0]
    assert (ds.AccessionNumber, ds.RequestedProcedureID, sps.ScheduledProcedureStepID) == (
        "CR-2026-7781", "CR-2026-7781", "CR-2026-7781")
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledStationName) == (
        "CT", "CT-WEST-2", "ROOM 4")
    # Without the ZPR room, the procedure table decides.
    no_room = after.map(parse_message(MESSAGE.rsplit("\r", 1)[0])).items[0]
    assert no_room.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT-WEST-1"
