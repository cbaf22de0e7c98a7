"""Golden cases for every shipped outbound profile, and the v2.5.1 output parsed back
with hl7apy against its message structure.

The order comes from a fixture HL7 message through the shipped inbound mapping
(the real path); the MPPS is the one a CT console sends. Expected messages are in
tests/outbound/golden/<profile>/<case>.hl7 (LF between segments for reading).
Regenerate after a deliberate profile change with UPDATE_GOLDEN=1, then review the diff.

<case>.hand-written.hl7 files were written by hand from the IHE tables
(../shared/domain/ihe-hl7-to-mwl.md, "MPPS -> outbound HL7 status"), one per profile at
least; UPDATE_GOLDEN never writes them (write_golden refuses), so a regeneration cannot
bless a regression.
"""

from __future__ import annotations

import functools
import os
from datetime import datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message as hl7apy_parse
from pydicom import Dataset

from bridge.hl7 import decode_frame, parse_message
from bridge.hl7.charset import codec_for
from bridge.mapping import load_mappings
from bridge.mpps.unscheduled import order_from_mpps
from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import ProfileSet, load_profiles
from bridge.steps import StatusChange, order_key

from .conftest import PROFILES, REPO

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 28, 9, 45, 3).astimezone()
PROFILE_NAMES = ["ihe-swf-orm-o01-v231-status", "ihe-swf-omg-o19-v251-status",
                 "ihe-swf-omi-o23-v251-status", "oru-r01-v251-status"]
CASES = ["ip", "cm", "dc", "unscheduled-ip"]


@functools.cache
def profiles() -> ProfileSet:
    return load_profiles([PROFILES])


@functools.cache
def order(fixture: str) -> Dataset:
    mappings = load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")
    text = decode_frame((REPO / "fixtures" / "hl7" / fixture).read_bytes(), default="ascii",
                        aliases={}).text
    return mappings.map(parse_message(text)).items[0]


def mpps(status: str, step: Dataset | None) -> Dataset:
    ds = Dataset()
    ds.PatientName = step.PatientName if step is not None else "WALK^IN^^^"
    ds.PatientID = step.PatientID if step is not None else "PAT-WALKIN"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepID = "PPS0001"
    ds.Modality = "CT"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepStartDate = "20261128"
    ds.PerformedProcedureStepStartTime = "093512.250000"
    item = Dataset()
    item.StudyInstanceUID = step.StudyInstanceUID if step is not None \
        else "1.2.826.0.1.3680043.8.498.4242"
    item.AccessionNumber = ""
    ds.ScheduledStepAttributesSequence = [item]
    if status != "IN PROGRESS":
        ds.PerformedProcedureStepEndDate = "20261128"
        ds.PerformedProcedureStepEndTime = "094230"
    return ds


def build(profile_name: str, case: str, *, fixture: str = "orm-o01-ihe-ct.hl7",
          charset: str = "UNICODE UTF-8") -> tuple[bytes, str, list[str]]:
    profile = profiles().get(profile_name)
    assert profile is not None
    codec = codec_for(charset, default="ascii", aliases={})
    dest = Destination("ris", profile, charset, codec, "RIS", "HOSP")
    messages = StatusMessages([dest], sending_application="MWLBRIDGE",
                              sending_facility="RADIOLOGY", control_ids=lambda now: "GOLDEN0001")
    event, status, sps = {"ip": ("IP", "IN PROGRESS", "STARTED"),
                          "cm": ("CM", "COMPLETED", "COMPLETED"),
                          "dc": ("DC", "DISCONTINUED", "DISCONTINUED"),
                          "unscheduled-ip": ("IP", "IN PROGRESS", "STARTED")}[case]
    if case.startswith("unscheduled"):
        m = mpps(status, None)
        change = StatusChange(order_from_mpps(m), m, event, sps, scheduled=False,
                              order_key="mpps:1")
    else:
        step = order(fixture)
        change = StatusChange(step, mpps(status, step), event, sps, scheduled=True,
                              order_key=order_key(step, "step:1"))
    (row,) = messages.for_change(change, now=NOW)
    assert not row.dead_reason, row.dead_reason
    return row.payload, codec, [row.message_type, row.order_key]


HAND_WRITTEN = ".hand-written.hl7"


def golden_path(profile_name: str, case: str) -> Path:
    return GOLDEN / profile_name / f"{case}.hl7"


def write_golden(path: Path, text: str) -> None:
    """What UPDATE_GOLDEN does; never to a hand-written file."""
    if path.name.endswith(HAND_WRITTEN):
        raise PermissionError(f"{path.name} is written by hand; UPDATE_GOLDEN does not "
                              "overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


HAND_WRITTEN_CASES = sorted((p.parent.name, p.name[:-len(HAND_WRITTEN)])
                            for p in GOLDEN.glob(f"*/*{HAND_WRITTEN}"))


# OMI needs the IPC keys an unscheduled MPPS lacks: see test_omi_unscheduled_...
GOLDEN_CASES = [(p, c) for p in PROFILE_NAMES for c in CASES
                if not (p.startswith("ihe-swf-omi") and c.startswith("unscheduled"))]


@pytest.mark.parametrize(("profile_name", "case"), GOLDEN_CASES)
def test_golden(profile_name, case):
    payload, codec, _ = build(profile_name, case)
    text = payload.decode(codec).replace("\r", "\n")
    path = golden_path(profile_name, case)
    if os.environ.get("UPDATE_GOLDEN"):
        write_golden(path, text)
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("profile_name", "case"), HAND_WRITTEN_CASES)
def test_hand_written_golden(profile_name, case):
    payload, codec, _ = build(profile_name, case)
    expected = GOLDEN / profile_name / f"{case}{HAND_WRITTEN}"
    assert payload.decode(codec).replace("\r", "\n") == expected.read_text(encoding="utf-8")


def test_every_shipped_profile_has_golden_cases():
    assert sorted(profiles().names) == sorted(PROFILE_NAMES)
    for name in PROFILE_NAMES:
        assert sorted(p.stem for p in (GOLDEN / name).glob("*.hl7"))
    # ... and at least one written by hand, for a case the generated goldens also hold.
    assert sorted({p for p, _ in HAND_WRITTEN_CASES}) == sorted(PROFILE_NAMES)
    assert all((p, c) in GOLDEN_CASES for p, c in HAND_WRITTEN_CASES)


def test_update_golden_refuses_to_overwrite_a_hand_written_file(tmp_path):
    hand = tmp_path / f"cm{HAND_WRITTEN}"
    hand.write_text("MSH|by hand\n", encoding="utf-8")
    with pytest.raises(PermissionError, match=r"^cm\.hand-written\.hl7 is written by hand; "
                                              r"UPDATE_GOLDEN does not overwrite it$"):
        write_golden(hand, "MSH|regenerated\n")
    assert hand.read_text(encoding="utf-8") == "MSH|by hand\n"
    write_golden(tmp_path / "cm.hl7", "MSH|regenerated\n")  # a generated one may be
    assert (tmp_path / "cm.hl7").read_text(encoding="utf-8") == "MSH|regenerated\n"


def test_omi_unscheduled_without_an_accession_is_a_dead_letter_naming_the_field():
    profile = profiles().get("ihe-swf-omi-o23-v251-status")
    dest = Destination("ris", profile, "UNICODE UTF-8", "utf-8")
    m = mpps("IN PROGRESS", None)
    change = StatusChange(order_from_mpps(m), m, "IP", "STARTED", scheduled=False,
                          order_key="mpps:1")
    (row,) = StatusMessages([dest], sending_application="B", sending_facility="R") \
        .for_change(change, now=NOW)
    assert row.payload == b""
    assert row.dead_reason == "cannot build: IPC-1.1 is required but has no value"


def test_latin1_destination_gets_latin1_bytes_and_msh18():
    payload, codec, _ = build("ihe-swf-orm-o01-v231-status", "ip",
                              fixture="orm-o01-latin1-mr.hl7", charset="8859/1")
    assert codec == "iso8859-1"
    assert "Müller".encode("iso8859-1") in payload
    text = payload.decode("iso8859-1")
    assert text.split("\r")[0].endswith("|8859/1")
    path = golden_path("ihe-swf-orm-o01-v231-status", "ip-latin1")
    if os.environ.get("UPDATE_GOLDEN"):
        write_golden(path, text.replace("\r", "\n"))
    assert text.replace("\r", "\n") == path.read_text(encoding="utf-8")


def test_an_ascii_destination_gets_question_marks_and_a_warning(caplog):
    payload, codec, _ = build("ihe-swf-orm-o01-v231-status", "ip",
                              fixture="orm-o01-latin1-mr.hl7", charset="")
    assert codec == "ascii"
    assert b"PID|||" in payload and b"M?ller" in payload
    warning = next(r for r in caplog.records if r.levelname == "WARNING")
    assert "PID-5: characters the destination's character set (ascii) cannot hold were " \
           "replaced by '?'" in warning.getMessage()
    assert "ller" not in warning.getMessage()  # no patient data in the log


V251 = [n for n in PROFILE_NAMES if "v251" in n]


def check_structure(text: str) -> str:
    """Parse ER7 with hl7apy against its message structure (strict validation) and
    return the structure name. hl7apy's parser places segments into their groups
    whatever their order, so the order is checked by serialising the parsed
    message back (hl7apy writes groups in the structure's order) and comparing."""
    message = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    ours = [s[:3] for s in text.split("\r") if s]
    canonical = [s[:3] for s in message.to_er7().split("\r") if s]
    if ours != canonical:
        raise AssertionError(f"segment order {ours} is not the structure's {canonical}")
    return str(message.name)


@pytest.mark.parametrize("case", ["ip", "cm", "dc"])
@pytest.mark.parametrize("profile_name", V251)
def test_v251_output_parses_back_against_its_message_structure(profile_name, case):
    payload, codec, _ = build(profile_name, case)
    structure = profiles().get(profile_name).message_type.split("^")[2]
    assert check_structure(payload.decode(codec)) == structure


@pytest.mark.parametrize("profile_name", ["ihe-swf-omg-o19-v251-status",
                                          "ihe-swf-omi-o23-v251-status"])
def test_tq1_before_obr_is_what_the_structure_check_enforces(profile_name):
    """The check has teeth: the same message with OBR before TQ1 fails it."""
    payload, codec, _ = build(profile_name, "ip")
    segments = payload.decode(codec).split("\r")
    tq1 = next(i for i, s in enumerate(segments) if s.startswith("TQ1|"))
    obr = next(i for i, s in enumerate(segments) if s.startswith("OBR|"))
    assert tq1 < obr
    segments[tq1], segments[obr] = segments[obr], segments[tq1]
    with pytest.raises(AssertionError, match="is not the structure's"):
        check_structure("\r".join(segments))


def test_a_missing_required_segment_fails_the_structure_check():
    payload, codec, _ = build("ihe-swf-omi-o23-v251-status", "ip")
    without_ipc = "\r".join(s for s in payload.decode(codec).split("\r")
                             if not s.startswith("IPC|"))
    with pytest.raises(HL7apyException, match=r"Missing required child OMI_O23_ORDER\.IPC"):
        check_structure(without_ipc)
