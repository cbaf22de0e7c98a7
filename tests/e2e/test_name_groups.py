"""Japanese and Korean names in all three PN component groups, end to end (issue 14).

PID-5 and PV1-8 repeated with name representation codes (XPN-8, XCN-15: A, I,
P) go in over MLLP (UTF-8, and KS X 1001 for the Korean order); DCMTK's findscu
is the console, naming its character set in the query as a Japanese or Korean
modality does. The answers are compared byte for byte with the examples of
PS3.5 Annex H (ISO 2022 IR 87) and Annex I (ISO 2022 IR 149): escape sequences
before each ideographic or phonetic run and back to ASCII before every "^" and
"=" and at the end of the value (PS3.5 6.1.2.5.3). The console's own matching
keys, in its set, are matched group by group.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from tests.e2e.conftest import (
    DCMTK,
    FIXTURES,
    RunningDaemon,
    dcmtk_env,
    start_daemon,
    stop_daemon,
    write_config,
)
from tests.findstatus import check_status

JAPANESE = FIXTURES / "orm-o01-japanese-name-groups.hl7"
KOREAN = FIXTURES / "orm-o01-korean-name-groups.hl7"
CHINESE = FIXTURES / "orm-o01-chinese-gb18030.hl7"  # MSH-4 has a "|" trail byte
JAPANESE_ACCESSION = "ACC20261129401"
KOREAN_ACCESSION = "ACC20261129402"
MORI_ACCESSION = "ACC20261129403"
CHINESE_ACCESSION = "ACC20261129404"

# PS3.5 Annex H, H.3.1 Example 1: "Yamada^Tarou=山田^太郎=やまだ^たろう" in ISO 2022 IR 87.
ANNEX_H = (b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B="
           b"\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B")
# PS3.5 Annex I, I.2: "Hong^Gildong=洪^吉洞=홍^길동" in ISO 2022 IR 149.
ANNEX_I = (b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7="
           b"\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf")
# PS3.5 Annex J: "Wang^XiaoDong=王^小东" in GB18030.
ANNEX_J = b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab"
# 鷗 is in JIS X 0212 (IR 159) only: designated with ESC $ ( D, 森 and 外 with ESC $ B.
MORI = "Mori^Ougai=森^鷗外=もり^おうがい"
MORI_IR159 = (b"Mori^Ougai=\x1b$B?9\x1b(B^\x1b$(Dl?\x1b$B30\x1b(B="
              b"\x1b$B$b$j\x1b(B^\x1b$B$*$&$,$$\x1b(B")
JIS = "\\ISO 2022 IR 87"
KOREAN_SET = "\\ISO 2022 IR 149"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("name-groups")
    d = start_daemon(write_config(tmp), tmp / "data")
    # The Japanese order once more, as Mori Ougai, whose 鷗 only IR 159 holds.
    mori = tmp / "mori.hl7"
    mori.write_bytes(JAPANESE.read_bytes().decode("utf-8")
                     .replace("Yamada^Tarou", "Mori^Ougai").replace("山田^太郎", "森^鷗外")
                     .replace("やまだ^たろう", "もり^おうがい").replace("29401", "29403")
                     .replace("MSG-20261129-0101", "MSG-20261129-0103").encode("utf-8"))
    sent = d.send(JAPANESE, KOREAN, mori, CHINESE)
    assert sent.returncode == 0 and sent.stdout.count(": AA") == 4, (
        sent.stdout + sent.stderr + "\n".join(d.log[-20:]))
    yield d
    assert stop_daemon(d) == 0, "\n".join(d.log[-30:])


def findscu(d: RunningDaemon, tmp: Path, character_set: str,
            *keys: str | bytes) -> list[Dataset]:
    """findscu -W with the console's Specific Character Set; keys may be bytes,
    already in that set, as a console would send them."""
    out = tmp / f"rsp-{time.monotonic_ns()}"
    out.mkdir()
    args: list[str | bytes] = [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out),
                               "-aec", d.ae_title,
                               "-k", f"SpecificCharacterSet={character_set}"]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(d.dicom_port)]
    res = subprocess.run(args, capture_output=True, timeout=60, env=dcmtk_env())
    log = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0, log
    check_status(log)  # findscu exits 0 on a failed query too
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def raw(ds: Dataset, keyword: str) -> bytes:
    """The value's bytes as the console received them (findscu -X stores them as sent)."""
    elem = ds.get_item(keyword)
    assert elem is not None
    value = elem.value
    assert isinstance(value, bytes)
    return value.rstrip(b" ")


def accessions(answers: list[Dataset]) -> list[str]:
    return sorted(str(a.AccessionNumber) for a in answers)


def test_a_jis_console_gets_the_three_groups_byte_for_byte_as_annex_h(daemon, tmp_path):
    (answer,) = findscu(daemon, tmp_path, JIS, f"AccessionNumber={JAPANESE_ACCESSION}",
                        "PatientName", "ReferringPhysicianName")
    assert raw(answer, "PatientName") == ANNEX_H
    assert list(answer.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert str(answer.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert str(answer.ReferringPhysicianName) == "Yamamoto^Ichirou=山本^一郎=やまもと^いちろう"


def test_a_korean_console_gets_the_three_groups_byte_for_byte_as_annex_i(daemon, tmp_path):
    # The order came in KS X 1001 (MSH-18), so this is Korean end to end.
    (answer,) = findscu(daemon, tmp_path, KOREAN_SET, f"AccessionNumber={KOREAN_ACCESSION}",
                        "PatientName", "RequestedProcedureDescription")
    assert raw(answer, "PatientName") == ANNEX_I
    assert list(answer.SpecificCharacterSet) == ["", "ISO 2022 IR 149"]
    assert str(answer.PatientName) == "Hong^Gildong=洪^吉洞=홍^길동"


def test_a_chinese_order_in_gb18030_reaches_a_gb18030_console_as_annex_j(daemon, tmp_path):
    # MSH-18 was found behind MSH-4's 億 (83 7C) and the frame decoded in GB 18030.
    (answer,) = findscu(daemon, tmp_path, "GB18030", f"AccessionNumber={CHINESE_ACCESSION}",
                        "PatientName", "RequestedProcedureDescription")
    assert raw(answer, "PatientName") == ANNEX_J
    assert answer.SpecificCharacterSet == "GB18030"
    assert str(answer.RequestedProcedureDescription) == "胸部CT"


def test_a_utf8_console_gets_the_groups_in_utf8(daemon, tmp_path):
    (answer,) = findscu(daemon, tmp_path, "ISO_IR 192", f"AccessionNumber={KOREAN_ACCESSION}",
                        "PatientName")
    assert raw(answer, "PatientName") == "Hong^Gildong=洪^吉洞=홍^길동".encode()


def test_jis_x_0212_characters_are_answered_in_ir_159(daemon, tmp_path):
    (answer,) = findscu(daemon, tmp_path, JIS + "\\ISO 2022 IR 159",
                        f"AccessionNumber={MORI_ACCESSION}", "PatientName")
    assert raw(answer, "PatientName") == MORI_IR159
    assert str(answer.PatientName) == MORI


def test_a_set_that_cannot_hold_the_name_follows_the_unencodable_policy(daemon, tmp_path):
    # IR 159 alone has no 森 (JIS X 0208): never "?", the item is answered in UTF-8.
    (answer,) = findscu(daemon, tmp_path, "\\ISO 2022 IR 159",
                        f"AccessionNumber={MORI_ACCESSION}", "PatientName")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert raw(answer, "PatientName") == MORI.encode()


@pytest.mark.parametrize(("name", "found"), [
    # one group: any group of the stored name; Latin letters case-insensitively
    ("YAMADA*", [JAPANESE_ACCESSION]),
    ("山田^太郎", [JAPANESE_ACCESSION]),
    ("山田*", [JAPANESE_ACCESSION]),
    ("やまだ*", [JAPANESE_ACCESSION]),
    ("*鷗*", [MORI_ACCESSION]),
    ("山本*", []),
    # groups: each against its own group
    ("Yamada*=山田*", [JAPANESE_ACCESSION]),
    ("=山田^太郎", [JAPANESE_ACCESSION]),
    ("==やまだ^たろう", [JAPANESE_ACCESSION]),
    ("=やまだ^たろう", []),
    ("Mori*=山田*", []),
])
def test_a_jis_consoles_name_query_matches_group_by_group(daemon, tmp_path, name, found):
    character_set = JIS + "\\ISO 2022 IR 159"
    # Encoded as the console does, each group on its own (PS3.5 6.1.2.5.3).
    encoded = "=".join(g.encode("iso2022_jp_2").decode("latin-1") for g in name.split("="))
    key = b"PatientName=" + encoded.encode("latin-1")
    answers = findscu(daemon, tmp_path, character_set, key, "AccessionNumber")
    assert accessions(answers) == found
