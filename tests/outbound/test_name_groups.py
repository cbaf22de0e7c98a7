"""A PN with ideographic and phonetic component groups goes back to the RIS as XPN
repetitions with name representation codes (XPN-8: A, I, P) and name type L (XPN-7),
in the destination's character set; a plain name is written as before.

The order comes from tests' Japanese fixture through the shipped inbound mapping, as
in test_golden.py; the output is parsed back with hl7apy (STRICT, against the message
structure for v2.5.1) and with python-hl7.
"""

from __future__ import annotations

import os
from datetime import datetime

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_segment
from pydicom import Dataset

from bridge.hl7.charset import codec_for
from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import load_profiles
from bridge.outbound.profile import convert, name_repetitions
from bridge.steps import StatusChange, order_key

from .test_golden import (
    PROFILE_NAMES,
    V251,
    build,
    check_structure,
    golden_path,
    mpps,
    order,
    profiles,
    write_golden,
)
from .test_profiles import HEAD

JAPANESE = "orm-o01-japanese-name-groups.hl7"
GROUPS = [("Yamada", "Tarou", "A"), ("山田", "太郎", "I"), ("やまだ", "たろう", "P")]
# PS3.5 Annex H, H.3.1: the same name in ISO 2022 IR 87, group by group.
ANNEX_H_REPETITIONS = (b"Yamada^Tarou^^^^^L^A~\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B^^^^^L^I"
                       b"~\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B^^^^^L^P")
CHARSETS = {"utf8": "UNICODE UTF-8", "iso-ir87": "ISO IR87"}


def japanese(profile_name: str, charset: str) -> tuple[bytes, str]:
    payload, codec, _ = build(profile_name, "ip", fixture=JAPANESE, charset=charset)
    return payload, codec


@pytest.mark.parametrize("charset", sorted(CHARSETS))
@pytest.mark.parametrize("profile_name", PROFILE_NAMES)
def test_golden_japanese_three_group_name(profile_name, charset):
    payload, codec = japanese(profile_name, CHARSETS[charset])
    text = payload.decode(codec)
    assert text.split("\r")[0].endswith("|" + CHARSETS[charset])  # MSH-18
    path = golden_path(profile_name, f"ip-japanese-{charset}")
    if os.environ.get("UPDATE_GOLDEN"):
        write_golden(path, text.replace("\r", "\n"))
    assert text.replace("\r", "\n") == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("profile_name", PROFILE_NAMES)
def test_iso_ir87_bytes_switch_to_jis_for_each_ideographic_and_phonetic_part(profile_name):
    payload, codec = japanese(profile_name, "ISO IR87")
    assert codec == "iso2022_jp"
    assert b"|" + ANNEX_H_REPETITIONS + b"|" in payload
    assert max(payload) < 0x80  # 7-bit: ESC $ B ... ESC ( B, nothing else


@pytest.mark.parametrize("charset", sorted(CHARSETS))
@pytest.mark.parametrize("profile_name", PROFILE_NAMES)
def test_python_hl7_reads_three_pid5_repetitions_with_their_codes(profile_name, charset):
    payload, codec = japanese(profile_name, CHARSETS[charset])
    pid5 = hl7.parse(payload.decode(codec)).segment("PID")[5]
    assert len(pid5) == 3
    for rep, (family, given, code) in zip(pid5, GROUPS, strict=True):
        assert (str(rep[0]), str(rep[1]), str(rep[6]), str(rep[7])) == \
            (family, given, "L", code)


def strict_pid(text: str, version: str):
    """The PID segment of ``text`` parsed by hl7apy with strict validation."""
    pid = next(s for s in text.split("\r") if s.startswith("PID|"))
    segment = parse_segment(pid, version=version, validation_level=VALIDATION_LEVEL.STRICT)
    segment.validate()
    return segment


@pytest.mark.parametrize("charset", sorted(CHARSETS))
@pytest.mark.parametrize("profile_name", PROFILE_NAMES)
def test_hl7apy_strict_parses_the_messages_and_their_pid5(profile_name, charset):
    payload, codec = japanese(profile_name, CHARSETS[charset])
    text = payload.decode(codec)
    profile = profiles().get(profile_name)
    if profile_name in V251:  # the whole message against its structure, as test_golden
        assert check_structure(text) == profile.message_type.split("^")[2]
    pid5 = strict_pid(text, profile.version).pid_5
    assert len(pid5) == 3
    for rep, (family, given, code) in zip(pid5, GROUPS, strict=True):
        assert rep.xpn_1.to_er7() == family and rep.xpn_2.to_er7() == given
        assert rep.xpn_7.to_er7() == "L" and rep.xpn_8.to_er7() == code


@pytest.mark.parametrize(("pn", "expected"), [
    ("DOE^JOHN^Q^DR^JR", [["DOE", "JOHN", "Q", "JR", "DR"]]),
    # an empty trailing group is still a plain name: no codes, as before
    ("DOE^JOHN=", [["DOE", "JOHN", "", "", ""]]),
    ("DOE^JOHN==", [["DOE", "JOHN", "", "", ""]]),
    ("Yamada^Tarou=山田^太郎", [["Yamada", "Tarou", "", "", "", "", "L", "A"],
                               ["山田", "太郎", "", "", "", "", "L", "I"]]),
    # no alphabetic group: the repetitions name what they are
    ("=山田^太郎=やまだ^たろう", [["山田", "太郎", "", "", "", "", "L", "I"],
                              ["やまだ", "たろう", "", "", "", "", "L", "P"]]),
    ("Yamada^Tarou==やまだ^たろう", [["Yamada", "Tarou", "", "", "", "", "L", "A"],
                                   ["やまだ", "たろう", "", "", "", "", "L", "P"]]),
    ("", []),
])
def test_xpn_repetitions_of_a_pn(pn, expected):
    assert name_repetitions("XPN", pn) == expected


def test_xcn_repetitions_put_the_codes_in_xcn_10_and_xcn_15():
    reps = name_repetitions("XCN", "Yamamoto^Ichirou=山本^一郎")
    assert [len(r) for r in reps] == [15, 15]
    assert reps[1][:3] == ["", "山本", "一郎"]
    assert (reps[0][9], reps[0][14], reps[1][9], reps[1][14]) == ("L", "A", "L", "I")
    # plain: the components written before, nothing more
    assert name_repetitions("XCN", "Yamamoto^Ichirou") == [
        ["", "Yamamoto", "Ichirou", "", "", ""]]


def test_where_one_repetition_fits_the_first_group_is_written():
    assert convert("XPN", "Yamada^Tarou=山田^太郎") == ["Yamada", "Tarou", "", "", ""]
    assert convert("XCN", "Yamada^Tarou=山田^太郎") == ["", "Yamada", "Tarou", "", "", ""]


def built(pn: str, charset: str, profile_name: str = "ihe-swf-omg-o19-v251-status",
          ) -> tuple[str, tuple[str, ...]]:
    """The message for an order whose PatientName is ``pn``, and the warnings."""
    profile = profiles().get(profile_name)
    codec = codec_for(charset, default="ascii", aliases={})
    step: Dataset = order(JAPANESE).copy()
    step.PatientName = pn
    m = mpps("IN PROGRESS", step)
    data_vars = {"status": "IP", "order_control": "SC", "scheduled": "Y"}
    result = profile.build(step, m, data_vars, control_id="C1", msh18=charset, codec=codec)
    return result.text, result.warnings


def test_delimiters_inside_a_name_are_escaped_in_every_repetition():
    text, warnings = built("O|B&C~D^JOHN=山|田^太~郎", "UNICODE UTF-8")
    assert not warnings
    pid = next(s for s in text.split("\r") if s.startswith("PID|"))
    assert pid.split("|")[5] == ("O\\F\\B\\T\\C\\R\\D^JOHN^^^^^L^A"
                                 "~山\\F\\田^太\\R\\郎^^^^^L^I")
    pid5 = hl7.parse(text).segment("PID")[5]
    assert len(pid5) == 2  # the escaped "~" did not start a repetition
    assert [r.xpn_8.to_er7() for r in strict_pid(text, "2.5.1").pid_5] == ["A", "I"]


@pytest.mark.parametrize(("charset", "codec", "ideographic", "phonetic"), [
    ("", "ascii", "??^??", "???^???"),
    ("8859/1", "iso8859-1", "??^??", "???^???"),
])
def test_a_charset_without_kanji_gets_question_marks_and_one_warning_per_repetition(
        charset, codec, ideographic, phonetic):
    """The outbound policy for any text the destination cannot hold: '?' and a warning
    naming the position (no patient data), the message still sent."""
    text, warnings = built("Yamada^Tarou=山田^太郎=やまだ^たろう", charset)
    pid = next(s for s in text.split("\r") if s.startswith("PID|"))
    assert pid.split("|")[5] == (f"Yamada^Tarou^^^^^L^A~{ideographic}^^^^^L^I"
                                 f"~{phonetic}^^^^^L^P")
    assert list(warnings) == [
        f"PID-5 repetition {n}: characters the destination's character set ({codec}) "
        "cannot hold were replaced by '?'" for n in (2, 3)]


def test_the_status_message_row_logs_the_warnings_without_the_name(caplog):
    profile = profiles().get("ihe-swf-orm-o01-v231-status")
    dest = Destination("ris", profile, "", "ascii", "RIS", "HOSP")
    step = order(JAPANESE)
    change = StatusChange(step, mpps("IN PROGRESS", step), "IP", "STARTED", scheduled=True,
                          order_key=order_key(step, "step:1"))
    (row,) = StatusMessages([dest], sending_application="B", sending_facility="R") \
        .for_change(change, now=datetime(2026, 11, 28, 9, 45).astimezone())
    assert not row.dead_reason
    assert b"|Yamada^Tarou^^^^^L^A~??^??^^^^^L^I~???^???^^^^^L^P|" in row.payload
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("PID-5 repetition 2" in m for m in logged)
    assert not any("Yamada" in m or "Tarou" in m for m in logged)


def test_an_xcn_field_a_site_profile_fills_from_a_pn_gets_its_repetitions(tmp_path):
    """ORC-12 (ordering provider, XCN) from the order's referring physician, as a site
    profile may map it: XCN-10 L and XCN-15 A/I/P, an ID set by position stays in the
    first repetition."""
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + """  - segment: ORC
    fields:
      ORC-1: {const: SC}
      ORC-5: $status
      ORC-12: {from: order.ReferringPhysicianName, as: XCN}
      ORC-12.1: {const: "5501"}
""", encoding="utf-8")
    profile = load_profiles([path]).get("site-status")
    step = order(JAPANESE)
    assert str(step.ReferringPhysicianName) == "Yamamoto^Ichirou=山本^一郎=やまもと^いちろう"
    text = profile.build(step, mpps("IN PROGRESS", step), {"status": "IP"}, control_id="C1",
                         msh18="ISO IR87", codec="iso2022_jp").text
    orc = next(s for s in text.split("\r") if s.startswith("ORC|"))
    assert orc.split("|")[12] == ("5501^Yamamoto^Ichirou^^^^^^^L^^^^^A"
                                  "~^山本^一郎^^^^^^^L^^^^^I~^やまもと^いちろう^^^^^^^L^^^^^P")
    orc12 = strict_orc(text).orc_12
    assert [(r.xcn_2.to_er7(), r.xcn_10.to_er7(), r.xcn_15.to_er7()) for r in orc12] == [
        ("Yamamoto", "L", "A"), ("山本", "L", "I"), ("やまもと", "L", "P")]


def strict_orc(text: str):
    orc = next(s for s in text.split("\r") if s.startswith("ORC|"))
    segment = parse_segment(orc, version="2.3.1", validation_level=VALIDATION_LEVEL.STRICT)
    segment.validate()
    return segment
