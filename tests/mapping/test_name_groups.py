"""XPN/XCN repetitions with name representation codes (XPN-8, XCN-15) become the
Alphabetic, Ideographic and Phonetic component groups of one DICOM PN (issue 14)."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingError, MappingSet
from bridge.mapping.conversions import XPN_FIELDS, name_run

from .mapping_helpers import MSH, er7, load_text, minimal

JAPANESE = "YAMADA^TARO^^^^^L^A~山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P"


def order(pid5: str, pv1_8: str = "") -> list[str]:
    return [
        MSH,
        f"PID|1||PAT1^^^HOSP^MR||{pid5}||19750312|F",
        f"PV1|1|O||||||{pv1_8}",
        "ORC|NW|PLC1|FIL1||SC||^^^202611280930^^S",
        "OBR|1|PLC1|FIL1|CT1^Head CT^LOCAL||||||||||||||ACC1|RP1|SPS1||||CT",
    ]


@pytest.fixture
def names(write_mapping) -> MappingSet:
    return load_text(write_mapping, minimal("""
        PatientName: {from: PID-5, as: PN}
        OtherPatientNames: {from: 'PID-5[*]', as: PN}
        ReferringPhysicianName: {from: PV1-8, as: PN_XCN}
    """))


def mapped(mappings: MappingSet, pid5: str, pv1_8: str = ""):
    return mappings.map(er7(*order(pid5, pv1_8))).items[0]


def test_three_repetitions_become_three_component_groups(names) -> None:
    ds = mapped(names, JAPANESE)
    assert str(ds.PatientName) == "YAMADA^TARO=山田^太郎=やまだ^たろう"
    assert ds.PatientName.ideographic == "山田^太郎"
    assert ds.PatientName.phonetic == "やまだ^たろう"
    # Every repetition as its own value would be three names; grouped, they are one.
    assert str(ds.OtherPatientNames) == "YAMADA^TARO=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize(("pid5", "expected"), [
    # order of the repetitions does not matter, the codes do
    ("山田^太郎^^^^^L^I~YAMADA^TARO^^^^^L^A", "YAMADA^TARO=山田^太郎"),
    # no alphabetic repetition: the first group stays empty
    ("山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P", "=山田^太郎=やまだ^たろう"),
    # a first repetition without a code is the alphabetic group; lower-case codes
    ("Hong^Gildong~洪^吉洞^^^^^^i~홍^길동^^^^^^p", "Hong^Gildong=洪^吉洞=홍^길동"),
    # without codes each repetition is another name: only the first is the patient's
    ("DOE^JOHN~DOE^J", "DOE^JOHN"),
    # a second alphabetic repetition starts the next name
    ("DOE^JOHN^^^^^L^A~SMITH^JOHN^^^^^L^A", "DOE^JOHN"),
    # another name type (M maiden) is another name, whatever its code
    ("YAMADA^HANAKO^^^^^L^A~鈴木^花子^^^^^M^I", "YAMADA^HANAKO"),
])
def test_which_repetitions_form_one_name(names, pid5: str, expected: str) -> None:
    assert str(mapped(names, pid5).PatientName) == expected


def test_several_names_each_with_their_groups(names) -> None:
    ds = mapped(names, JAPANESE + "~SUZUKI^HANAKO^^^^^M^A~鈴木^花子^^^^^M^I")
    assert [str(n) for n in ds.OtherPatientNames] == [
        "YAMADA^TARO=山田^太郎=やまだ^たろう", "SUZUKI^HANAKO=鈴木^花子"]


def test_xcn_groups_from_xcn_15(names) -> None:
    doctor = ("7788^YAMAMOTO^ICHIRO^^^^^^^L^^^^^A"
              "~7788^山本^一郎^^^^^^^L^^^^^I~7788^やまもと^いちろう^^^^^^^L^^^^^P")
    ds = mapped(names, "DOE^JOHN", doctor)
    assert str(ds.ReferringPhysicianName) == "YAMAMOTO^ICHIRO=山本^一郎=やまもと^いちろう"


def test_each_group_is_checked_and_the_error_names_its_repetition(names) -> None:
    with pytest.raises(MappingError) as info:
        mapped(names, "YAMADA^TARO^^^^^L^A~" + "山" * 65 + "^太郎^^^^^L^I")
    assert info.value.attribute == "PatientName"
    assert "64" in info.value.text and "component group" in info.value.text


def test_name_run_counts_the_repetitions_of_one_name() -> None:
    def reps(text: str):
        return [tuple(tuple(c.split("&")) for c in r.split("^")) for r in text.split("~")]
    assert name_run(reps(JAPANESE), XPN_FIELDS) == 3
    assert name_run(reps("A^B^^^^^L^X~C^D^^^^^L^I"), XPN_FIELDS) == 1  # unknown code
    assert name_run(reps("A^B^^^^^^I~C^D^^^^^L^I"), XPN_FIELDS) == 1    # group taken
    assert name_run(reps("A^B^^^^^L^A~C^D^^^^^^I"), XPN_FIELDS) == 2    # empty type joins
    assert name_run([], XPN_FIELDS) == 0


@pytest.mark.parametrize("pid5", ["DOE\\X0D\\^JOHN", "DOE^JOHN\\X0D\\", "DOE^JOHN\\X09\\"])
def test_a_control_character_from_an_escape_is_refused_naming_the_field(names, pid5) -> None:
    # Never stripped away with the white space: the VR check names the field.
    with pytest.raises(MappingError) as info:
        mapped(names, pid5)
    assert (info.value.code, info.value.attribute) == (102, "PatientName")
    assert info.value.location.startswith("PID^1^5")
    assert "control character" in info.value.text
