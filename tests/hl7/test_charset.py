import pytest

from bridge.hl7.charset import (
    CharsetError,
    codec_for,
    decode_frame,
    dicom_charset_for,
    encode_text,
    read_msh18,
)
from bridge.hl7.message import parse_message

ALIASES = {"UTF-8": "utf-8", "WINDOWS-1252": "cp1252"}


def msh(msh18: str, *, sep: str = "|", enc: str = "^~\\&") -> str:
    fields = ["MSH", enc, "RIS", "HOSP", "MWL", "HOSP", "20261128120000", "",
              "ORM^O01", "MSG1", "P", "2.3.1", "", "", "", "", "", msh18]
    return sep.join(fields)


def frame(msh18: str, pid_name: str, codec: str, *, prefix: bytes = b"") -> bytes:
    text = f"{msh(msh18)}\rPID|1||12345||{pid_name}^Hans\r"
    return prefix + text.encode(codec)


def decode(data: bytes, default: str = "ascii") -> tuple[str, str]:
    decoded = decode_frame(data, default=default, aliases=ALIASES)
    return parse_message(decoded.text).first("PID").value(5), decoded.codec


def test_latin1_with_8859_1():
    assert decode(frame("8859/1", "Müller", "latin-1")) == ("Müller", "iso8859-1")


def test_utf8_with_unicode_utf8():
    assert decode(frame("UNICODE UTF-8", "Müller", "utf-8")) == ("Müller", "utf-8")


def test_iso_ir87_japanese():
    name, codec = decode(frame("ISO IR87", "山田", "iso2022_jp"))
    assert (name, codec) == ("山田", "iso2022_jp")


def test_iso_2022_code_extension_after_empty_first_repetition():
    data = frame("~ISO IR87", "山田", "iso2022_jp")
    assert read_msh18(data) == ""
    decoded = decode_frame(data, default="ascii", aliases={})
    assert decoded.codec == "iso2022_jp"
    assert decoded.msh18 == "~ISO IR87"
    assert parse_message(decoded.text).first("PID").value(5) == "山田"


def test_japanese_sending_facility_does_not_shift_msh18():
    # JIS X 0208 bytes include "|" (0x7C); they must not count as separators.
    text = msh("ISO IR87").replace("|HOSP|MWL", "|厚生病院|MWL") + "\rPID|1\r"
    data = text.encode("iso2022_jp")
    assert b"|" in data.split(b"\x1b$B", 1)[1].split(b"\x1b(B", 1)[0]
    assert read_msh18(data) == "ISO IR87"
    assert parse_message(decode_frame(data, default="ascii", aliases={}).text).msh.value(4) \
        == "厚生病院"


def test_alias_is_case_insensitive_and_checked_first():
    assert decode(frame("utf-8", "Müller", "utf-8")) == ("Müller", "utf-8")
    assert codec_for("8859/1", default="ascii", aliases={"8859/1": "cp1252"}) == "cp1252"


def test_empty_msh18_uses_default():
    assert decode(frame("", "Müller", "latin-1"), default="latin-1") == ("Müller", "iso8859-1")
    assert codec_for("", default="ascii", aliases={}) == "ascii"


def test_table_0211_values():
    table = {"8859/2": "iso8859-2", "8859/9": "iso8859-9", "8859/15": "iso8859-15",
             "UNICODE": "utf-8", "ISO IR159": "iso2022_jp_2", "GB 18030-2000": "gb18030",
             "KS X 1001": "euc_kr", "ASCII": "ascii", " unicode  utf-8 ": "utf-8"}
    for value, codec in table.items():
        assert codec_for(value, default="ascii", aliases={}) == codec


def test_unknown_value_raises():
    with pytest.raises(CharsetError, match="KLINGON") as info:
        decode_frame(frame("KLINGON", "X", "ascii"), default="ascii", aliases=ALIASES)
    assert info.value.msh18 == "KLINGON"


def test_utf16_is_refused_with_reason():
    with pytest.raises(CharsetError, match="MLLP"):
        codec_for("UNICODE UTF-16", default="ascii", aliases={})


def test_alias_to_unknown_codec_raises():
    with pytest.raises(CharsetError, match="alias"):
        codec_for("X", default="ascii", aliases={"x": "no-such-codec"})


def test_unknown_default_raises():
    with pytest.raises(CharsetError, match="default"):
        codec_for("", default="no-such-codec", aliases={})


def test_invalid_bytes_name_charset_and_offset_not_data():
    data = frame("UNICODE UTF-8", "Müller", "latin-1")
    offset = data.index(b"\xfc")
    with pytest.raises(CharsetError) as info:
        decode_frame(data, default="ascii", aliases={})
    message = str(info.value)
    assert f"byte offset {offset}" in message and "utf-8" in message
    assert "M" + "ller" not in message and "12345" not in message


def test_invalid_bytes_with_empty_msh18_mention_default():
    with pytest.raises(CharsetError, match="default 'ascii'"):
        decode_frame(frame("", "Müller", "latin-1"), default="ascii", aliases={})


def test_bom_is_stripped_and_offsets_count_it():
    data = frame("UNICODE UTF-8", "Müller", "utf-8", prefix=b"\xef\xbb\xbf")
    decoded = decode_frame(data, default="ascii", aliases={})
    assert decoded.text.startswith("MSH|")
    bad = b"\xef\xbb\xbf" + frame("ASCII", "Müller", "latin-1")
    offset = bad.index(b"\xfc")
    with pytest.raises(CharsetError, match=f"byte offset {offset} "):
        decode_frame(bad, default="ascii", aliases={})


def test_read_msh18_edge_cases():
    assert read_msh18(frame("8859/1", "X", "ascii")) == "8859/1"
    assert read_msh18(b"\xef\xbb\xbf" + frame(" 8859/1 ~ISO IR87", "X", "ascii")) == "8859/1"
    assert read_msh18(b"MSH|^~\\&|A|B\rPID|1") == ""  # MSH too short to hold MSH-18
    assert read_msh18(b"PID|1|") == ""
    assert read_msh18(b"") == ""
    assert read_msh18(msh("8859/1", sep="#", enc="$%\\*").encode()) == "8859/1"
    assert read_msh18(b"\n\r" + frame("8859/1", "X", "ascii").replace(b"\r", b"\n")) == "8859/1"


def test_dicom_charset_for():
    assert dicom_charset_for("ascii") is None
    assert dicom_charset_for("latin-1") == "ISO_IR 100"
    assert dicom_charset_for("utf-8") == "ISO_IR 192"
    assert dicom_charset_for("iso2022_jp") == "ISO 2022 IR 87"
    assert dicom_charset_for("iso8859-9") == "ISO_IR 148"
    assert dicom_charset_for("euc_kr") == "ISO 2022 IR 149"
    with pytest.raises(CharsetError, match="cp1252"):
        dicom_charset_for("cp1252")
    with pytest.raises(CharsetError, match="unknown Python codec 'no-such-codec'"):
        dicom_charset_for("no-such-codec")


def test_encode_text_in_message_charset():
    assert encode_text("Müller", "iso8859-1") == b"M\xfcller"
    assert encode_text("山田", "iso2022_jp").decode("iso2022_jp") == "山田"
    # Our own ACK text only: what the charset cannot hold becomes "?".
    assert encode_text("Müller", "ascii") == b"M?ller"
    with pytest.raises(CharsetError, match="unknown Python codec 'no-such-codec'"):
        encode_text("x", "no-such-codec")


@pytest.mark.parametrize(("msh18", "codec", "facility"), [
    ("BIG-5", "big5", "四海醫院"),     # 四 is A5 7C in Big5
    ("GB 18030-2000", "gb18030", "亅億医院"),  # 亅 81 7C, 億 83 7C in GB 18030
])
def test_a_trail_byte_equal_to_the_separator_does_not_hide_msh18(msh18, codec, facility):
    text = msh(msh18).replace("|HOSP|MWL", f"|{facility}|MWL") + "\rPID|1||12345||王^小明\r"
    data = text.encode(codec)
    assert data.split(b"\r")[0].count(b"|") > text.split("\r")[0].count("|")  # the trap
    assert read_msh18(data) == msh18
    decoded = decode_frame(data, default="ascii", aliases={})
    assert decoded.codec == codec
    message = parse_message(decoded.text)
    assert message.msh.value(4) == facility
    assert message.first("PID").value(5) == "王"


def test_a_site_alias_with_such_trail_bytes_is_read_the_same_way():
    facility = "ポ院"  # ポ is 83 7C in Shift_JIS
    assert "ポ".encode("shift_jis") == b"\x83|"
    text = msh("SJIS").replace("|HOSP|MWL", f"|{facility}|MWL") + "\rPID|1\r"
    data = text.encode("shift_jis")
    decoded = decode_frame(data, default="ascii", aliases={"SJIS": "shift_jis"})
    assert (decoded.codec, decoded.msh18) == ("shift_jis", "SJIS")
    assert parse_message(decoded.text).msh.value(4) == facility


def test_a_latin1_line_is_still_split_as_bytes():
    text = msh("8859/1").replace("|HOSP|MWL", "|Hôpital Sainte-Thérèse|MWL") + "\rPID|1\r"
    assert read_msh18(text.encode("latin-1")) == "8859/1"
    assert read_msh18(text.encode("utf-8").replace(b"8859/1", b"UNICODE UTF-8")) \
        == "UNICODE UTF-8"
