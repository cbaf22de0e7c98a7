"""Loading outbound profiles: every problem is reported with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from bridge.app.settings import load_settings
from bridge.mapping.errors import MappingLoadError
from bridge.outbound.destinations import resolve_destinations
from bridge.outbound.er7 import SegmentWriter
from bridge.outbound.loader import load_profiles

from .conftest import PROFILES

HEAD = """name: site-status
message_type: ORM^O01
version: "2.3.1"
segments:
  - segment: MSH
    fields:
      MSH-3: $sending_application
"""


def problems(tmp_path: Path, body: str, head: str = HEAD) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(head + body, encoding="utf-8")
    with pytest.raises(MappingLoadError) as caught:
        load_profiles([path])
    return [str(e).replace(str(tmp_path) + "/", "") for e in caught.value.errors]


@pytest.mark.parametrize(("body", "expected"), [
    ("  - segment: ORC\n    fields:\n      ORC-99: {const: SC}\n",
     "site.yaml:10: segments[1].fields.ORC-99: ORC-99: ORC has 24 fields in HL7 2.3.1"),
    ("  - segment: ORC\n    fields:\n      OBR-18: order.AccessionNumber\n",
     "site.yaml:10: segments[1].fields.OBR-18: OBR-18 is not a field of this ORC segment"),
    ("  - segment: ORC\n    fields:\n      ORC-2.1: order.AccesionNumber\n",
     "site.yaml:10: segments[1].fields.ORC-2.1: 'order.AccesionNumber': 'AccesionNumber' is "
     "not a DICOM keyword (see the DICOM data dictionary)"),
    ("  - segment: ORC\n    fields:\n      ORC-5: $state\n",
     "site.yaml:10: segments[1].fields.ORC-5: unknown variable $state; known: "),
    ("  - segment: ORC\n    fields:\n      ORC-5: AccessionNumber\n",
     "site.yaml:10: segments[1].fields.ORC-5: 'AccessionNumber': a source is order.Keyword, "
     "mpps.Keyword or $variable (use const: for a literal)"),
    ("  - segment: ORC\n    fields:\n      ORC(2)-5: $status\n",
     "site.yaml:10: segments[1].fields.ORC(2)-5: an outbound key addresses one position"),
    ("  - segment: IPC\n    fields:\n      IPC-1: order.AccessionNumber\n",
     "site.yaml:8: segments[1].segment: IPC: segment IPC does not exist in HL7 2.3.1 (site "
     "segments start with Z)"),
    ("  - segment: ORC\n    fields:\n      ORC-5: {from: $status, const: IP}\n",
     "site.yaml:10: segments[1].fields.ORC-5: Value error, give exactly one source: from, "
     "const or concat (found from, const)"),
    ("  - segment: ORC\n    fields:\n      ORC-5: {from: $status, as: XYZ}\n",
     "site.yaml:10: segments[1].fields.ORC-5.as: Input should be"),
])
def test_a_broken_profile_names_file_line_and_key(tmp_path, body, expected):
    found = problems(tmp_path, body)
    assert any(p.startswith(expected) for p in found), found


def test_the_builders_own_msh_fields_are_refused(tmp_path):
    found = problems(tmp_path, "", head=HEAD + "      MSH-10: {const: X}\n")
    assert found == ["site.yaml:8: segments[0].fields.MSH-10: MSH-10 (message control ID) "
                     "is written by the bridge"]


def test_msh_comes_first(tmp_path):
    head = HEAD.replace("  - segment: MSH\n    fields:\n      MSH-3: $sending_application\n",
                        "  - segment: PID\n")
    found = problems(tmp_path, "", head=head)
    assert [f.split(": ", 1)[1] for f in found] == [
        "segments: Value error, the first segment is MSH"]


def test_a_profile_name_is_unique_across_files(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(HEAD, encoding="utf-8")
    with pytest.raises(MappingLoadError) as caught:
        load_profiles([tmp_path])
    assert "profile name 'site-status' is already used by" in str(caught.value)


def test_destinations_resolve_to_their_profile_or_say_why_not(tmp_path):
    settings = load_settings(None, environ={
        "MWL_BRIDGE_OUTBOUND__PROFILES": f"[{PROFILES}]",
        "MWL_BRIDGE_OUTBOUND__DESTINATIONS":
            "[{name: a, port: 1, message_type: OMI^O23, charset: '8859/1'},"
            " {name: b, port: 2, message_type: ORM^O01, profile: oru-r01-v251-status},"
            " {name: c, port: 3, message_type: ORU^R01, profile: no-such-profile}]"})
    profiles = load_profiles(settings.outbound.profiles)
    with pytest.raises(MappingLoadError) as caught:
        resolve_destinations(settings.outbound, profiles)
    assert [str(e) for e in caught.value.errors] == [
        "<config>: outbound.destinations[1].profile: profile oru-r01-v251-status builds "
        "ORU^R01, but message_type is ORM^O01",
        f"<config>: outbound.destinations[2]: no outbound profile: profile 'no-such-profile' "
        f"is not in {PROFILES}",
    ]
    ok = load_settings(None, environ={
        "MWL_BRIDGE_OUTBOUND__PROFILES": f"[{PROFILES}]",
        "MWL_BRIDGE_OUTBOUND__DESTINATIONS":
            "[{name: a, port: 1, message_type: OMI^O23, charset: '8859/1'}]"})
    (dest,) = resolve_destinations(ok.outbound, profiles)
    assert (dest.profile.name, dest.codec, dest.msh18) == (
        "ihe-swf-omi-o23-v251-status", "iso8859-1", "8859/1")


def test_a_destination_charset_outside_table_0211_is_a_config_error():
    from bridge.app.settings import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"MWL_BRIDGE_OUTBOUND__DESTINATIONS":
                                     "[{name: a, port: 1, charset: KLINGON}]"})
    assert "'KLINGON' is not an HL7 table 0211 character set" in str(caught.value)


def test_the_writer_escapes_delimiters_and_trims_empty_tails():
    seg = SegmentWriter("OBR")
    seg.set(4, "CT|chest", comp=2)
    seg.set(4, "A^B&C~D\\E", comp=5)
    seg.set(9, "")
    assert seg.render() == "OBR||||^CT\\F\\chest^^^A\\S\\B\\T\\C\\R\\D\\E\\E"
    msh = SegmentWriter("MSH")
    msh.set(3, "APP")
    assert msh.render() == "MSH|^~\\&|APP"


def test_sources_walk_sequences_with_an_optional_index(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "  - segment: OBR\n    fields:\n"
                    "      OBR-4.1: order.RequestedProcedureCodeSequence[1].CodeValue\n"
                    "      OBR-24: order.ScheduledProcedureStepSequence.Modality\n"
                    "      OBR-25: {from: order.Nothing | $status, map: {IP: I, '*': X}}\n"
                    .replace("order.Nothing", "order.AdmissionID"), encoding="utf-8")
    (profile,) = load_profiles([path])
    order = Dataset()
    codes = []
    for code in ("FIRST", "SECOND"):
        item = Dataset()
        item.CodeValue = code
        codes.append(item)
    order.RequestedProcedureCodeSequence = codes
    sps = Dataset()
    sps.Modality = "MR"
    order.ScheduledProcedureStepSequence = [sps]
    built = profile.build(order, Dataset(), {"status": "CM", "sending_application": "B"},
                          control_id="C1")
    assert built.text.split("\r")[1] == "OBR||||SECOND" + "|" * 20 + "MR|X"
