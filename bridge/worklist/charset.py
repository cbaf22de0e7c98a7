"""Character sets on the query side, and transliteration on the answer side.

Queries: a C-FIND identifier's text is decoded with its own Specific
Character Set (0008,0005), as pydicom does. Some consoles send non-ASCII
bytes without declaring any set; pydicom would then read them as Latin-1 and
a UTF-8 "Müller" would become "MÃ¼ller", matching nothing. For such
identifiers ``undeclared_character_set`` picks the set to read them with:
UTF-8 when every non-ASCII value is valid UTF-8 (Latin-1 text almost never
is), else the calling AE's configured set when it decodes the values, else
ISO_IR 100.

Answers: ``transliterate`` replaces the characters an answer's character set
can't hold with ASCII look-alikes (anyascii: "ł" -> "l", "Ø" -> "O"), keeping
every character the set can hold; it is one of the two policies for
unencodable values (the other answers the item in UTF-8).
"""

from __future__ import annotations

from collections.abc import Iterator

from anyascii import anyascii
from pydicom import Dataset
from pydicom.charset import custom_encoders, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
# Value representations decoded with Specific Character Set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
# pydicom maps the default repertoire to Latin-1, which would accept what
# ASCII can't; the check must be strict.
_DEFAULT_REPERTOIRE = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})


def python_codecs(character_set: str) -> tuple[str, ...]:
    """Python codecs for a (possibly multi-valued) Specific Character Set value.

    Raises ValueError for a term pydicom doesn't know.
    """
    codecs = []
    for term in (t.strip() for t in character_set.split("\\")):
        if term in _DEFAULT_REPERTOIRE:
            codecs.append("ascii")
        elif term in python_encoding:
            codecs.append(python_encoding[term])
        else:
            raise ValueError(f"unknown Specific Character Set term {term!r}")
    return tuple(codecs)


def encodable(text: str, codecs: tuple[str, ...]) -> bool:
    """Whether ``text`` can be written in the set whose codecs are ``codecs``."""
    if text.isascii():
        return True  # every DICOM character set holds ASCII
    if len(codecs) == 1 and codecs[0] not in custom_encoders:
        try:
            text.encode(codecs[0])
        except UnicodeError:
            return False
        return True
    # With code extensions (ISO 2022) every character may come from a
    # different set, so each one needs some set that holds it.
    return all(holds(c, codecs) for c in text)


def undeclared_character_set(identifier: Dataset, configured: str) -> str | None:
    """The set to decode an identifier that declares none but holds non-ASCII text.

    None when the identifier declares a set, or all its text is ASCII.
    Reads raw values only, so ``identifier`` should be decoded afresh with
    the set returned (elements already read keep their first decoding).
    """
    declared = identifier.get_item(SPECIFIC_CHARACTER_SET)
    if declared is not None and _raw_bytes(declared).strip(b" \0"):
        return None
    values = [v for v in _raw_texts(identifier) if not v.isascii()]
    if not values:
        return None
    for candidate in (UTF8, configured, LATIN1):
        if _decodes(values, candidate):
            return candidate
    return LATIN1  # Latin-1 decodes every byte; reached only for a broken configured set


def _raw_bytes(elem: object) -> bytes:
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        return value
    return str(value or "").encode("latin-1", "replace")


def _raw_texts(ds: Dataset) -> Iterator[bytes]:
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        vr = elem.VR if elem is not None else None
        if vr is None or vr == "UN":
            try:
                vr = str(dictionary_VR(tag))
            except KeyError:
                continue
        if vr == "SQ":
            for item in ds[tag].value or ():
                yield from _raw_texts(item)
        elif vr in TEXT_VRS and isinstance(elem, RawDataElement) and elem.value:
            yield bytes(elem.value)


def _decodes(values: list[bytes], character_set: str) -> bool:
    try:
        codecs = python_codecs(character_set)
    except ValueError:
        return False
    if len(codecs) != 1:
        # ISO 2022 sets switch by escape sequences; none appear in undeclared text.
        return False
    try:
        for value in values:
            value.decode(codecs[0])
    except (UnicodeError, LookupError):
        return False
    return True


def transliterate(text: str, codecs: tuple[str, ...]) -> str:
    """``text`` with every character that none of ``codecs`` holds turned to ASCII."""
    return "".join(c if c.isascii() or holds(c, codecs) else anyascii(c) for c in text)


def holds(char: str, codecs: tuple[str, ...]) -> bool:
    for codec in codecs:
        # The Japanese sets are narrower than their Python codecs, and pydicom
        # writes them with encoders of its own: ISO 2022 IR 13 is JIS X 0201 only,
        # IR 87 JIS X 0208, IR 159 JIS X 0212 (the codec iso2022_jp_2 would take
        # JIS X 0208 too, and pydicom would then write "?").
        encoder = custom_encoders.get(codec)
        try:
            if encoder is not None:
                encoder(char)
            else:
                char.encode(codec)
        except UnicodeError:
            continue
        return True
    return False
