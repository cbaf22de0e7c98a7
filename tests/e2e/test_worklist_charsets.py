"""Character sets end to end: HL7 in Latin-1, UTF-8 and ISO-2022-JP, out in each console's set.

Three orders with non-ASCII names go in over MLLP, each in its own MSH-18
charset; three consoles (calling AE titles with their own configured
Specific Character Set) read every one back with DCMTK's findscu.
"""

from __future__ import annotations

import pytest

from .conftest import start_daemon, stop_daemon, write_config

SPS = "ScheduledProcedureStepSequence[0]"
TEMPLATE = (
    "MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|20261128083015||ORM^O01|{cid}|P|2.3.1|||AL|NE||{msh18}\r"
    "PID|1||{pid}^^^HOSP^MR||{name}||19750312|M\r"
    "ORC|NW|PLC{n}^RIS|FIL{n}^RIS||SC||1^once^^20261128093000^^S\r"
    "OBR|1|PLC{n}^RIS|FIL{n}^RIS|CTCHEST^CT Chest^LOCAL||||||||||||||ACC{n}|RP{n}|SPS{n}"
    "||||CT|||1^once^^20261128093000^^S\r"
    "ZDS|1.2.826.0.1.3680043.10.99.{n}^RIS^Application^DICOM\r"
)
# (n, MSH-18, codec, HL7 name XPN, DICOM name PN)
ORDERS = [
    (1, "8859/1", "iso8859-1", "Müller^Jürgen", "Müller^Jürgen"),
    (2, "UNICODE UTF-8", "utf-8", "Łukasiewicz^Zoë", "Łukasiewicz^Zoë"),
    (3, "~ISO IR87", "iso2022_jp", "山田^太郎", "山田^太郎"),
]
CONSOLES = """\
dicom:
  host: 127.0.0.1
  port: 0
  ae_title: MWLBRIDGE
  unencodable: utf8
  known_aes:
    LATIN1CT: {character_set: ISO_IR 100}
    UTF8CT: {character_set: ISO_IR 192}
    JAPANCT: {character_set: '\\ISO 2022 IR 87'}
    TRANSCT: {character_set: ISO_IR 100, unencodable: transliterate}
"""
# calling AE -> {order n: (expected (0008,0005), expected name)}
EXPECTED = {
    "LATIN1CT": {1: ("ISO_IR 100", "Müller^Jürgen"), 2: ("ISO_IR 192", "Łukasiewicz^Zoë"),
                 3: ("ISO_IR 192", "山田^太郎")},
    "UTF8CT": {n: ("ISO_IR 192", name) for n, *_, name in ORDERS},
    "JAPANCT": {1: ("ISO_IR 192", "Müller^Jürgen"), 2: ("ISO_IR 192", "Łukasiewicz^Zoë"),
                3: ("\\ISO 2022 IR 87", "山田^太郎")},
    "TRANSCT": {1: ("ISO_IR 100", "Müller^Jürgen"), 2: ("ISO_IR 100", "Lukasiewicz^Zoë"),
                3: ("ISO_IR 100", "ShanTian^TaiLang")},
}


@pytest.fixture(scope="module")
def charset_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("charsets")
    cfg = write_config(tmp)
    # write_config's dicom section is replaced by one with the consoles.
    text = cfg.read_text(encoding="utf-8")
    start = text.index("dicom:")
    end = text.index("mapping:")
    cfg.write_text(text[:start] + CONSOLES + text[end:], encoding="utf-8")
    d = start_daemon(cfg, tmp / "data")
    files = []
    for n, msh18, codec, name, _ in ORDERS:
        path = tmp / f"order{n}.hl7"
        text = TEMPLATE.format(cid=f"CS{n}", msh18=msh18, pid=f"PCS{n}", name=name, n=n)
        path.write_bytes(text.encode(codec))
        files.append(path)
    sent = d.send(*files)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    yield d
    assert stop_daemon(d) == 0


@pytest.mark.parametrize("console", sorted(EXPECTED))
def test_each_console_reads_every_name_in_its_set(charset_daemon, tmp_path, console):
    answers = charset_daemon.findscu(
        tmp_path, "PatientName", "PatientID", "AccessionNumber", f"{SPS}.Modality=CT",
        extra=("-aet", console))
    got = {int(str(a.AccessionNumber)[3:]): a for a in answers}
    assert sorted(got) == [1, 2, 3]
    for n, (character_set, name) in EXPECTED[console].items():
        answer = got[n]
        declared = answer.SpecificCharacterSet
        declared = "\\".join(declared) if not isinstance(declared, str) else declared
        assert (declared, str(answer.PatientName)) == (character_set, name), (console, n)


def test_fallbacks_are_logged_without_the_names(charset_daemon):
    log = "\n".join(charset_daemon.log)
    assert "cannot be encoded in ISO_IR 100; answering that item in ISO_IR 192" in log
    assert "transliterated to ASCII" in log
    assert "Łukasiewicz" not in log and "山田" not in log
