"""A stored worklist item shaped into one C-FIND answer.

The answer holds exactly the keys the identifier asked for: the item's value,
or an empty value when the item has none. A sequence key with one item asks
for those sub-keys of every stored item; a sequence key with no item (or one
empty item) asks for the whole sequence (PS3.4 C.2.2.2.6).

Elements are rebuilt from their decoded values rather than copied, so no
bytes or cached encodings from the store leak into an answer encoded with a
different Specific Character Set.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from bridge.worklist.query import SPECIFIC_CHARACTER_SET, KeyUse, key_use

LOGGER = logging.getLogger(__name__)

# The one set that encodes every Unicode string; used when the configured one can't.
FALLBACK_CHARACTER_SET = "ISO_IR 192"
# Value representations whose encoding follows Specific Character Set (PS3.5 6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
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


def shape_answer(item: Dataset, identifier: Dataset, character_set: str) -> Dataset:
    """The answer to ``identifier`` from ``item``, in ``character_set``.

    If a value cannot be encoded in ``character_set`` the answer uses
    ISO_IR 192 instead (pydicom would silently write ``?``), and a warning
    names the attribute, never its value.
    """
    codecs = python_codecs(character_set)
    answer = _shape(item, identifier)
    offending = _unencodable(answer, codecs)
    if offending is not None:
        LOGGER.warning(
            "a value of %s cannot be encoded in %s; answering that item in %s",
            offending, character_set, FALLBACK_CHARACTER_SET)
        character_set = FALLBACK_CHARACTER_SET
    answer[SPECIFIC_CHARACTER_SET] = DataElement(
        SPECIFIC_CHARACTER_SET, "CS", _multi(character_set))
    return answer


def _shape(item: Dataset, request: Dataset) -> Dataset:
    shaped = Dataset()
    for key in request:
        if key_use(key) is not KeyUse.KEY:
            continue
        tag = key.tag
        stored = item[tag] if tag in item else None
        if stored is None:
            shaped.add(_empty(tag, key))
        elif stored.VR == "SQ":
            template = _template(key)
            items = [_shape(i, template) if template is not None else _whole(i)
                     for i in stored.value]
            shaped.add(DataElement(tag, "SQ", Sequence(items)))
        else:
            shaped.add(_rebuilt(stored))
    return shaped


def _template(key: DataElement) -> Dataset | None:
    """The sub-keys a sequence key asks for; None means the whole items."""
    if key.VR != "SQ" or not key.value or len(key.value[0]) == 0:
        return None
    return key.value[0]


def _whole(item: Dataset) -> Dataset:
    whole = Dataset()
    for elem in item:
        if elem.VR == "SQ":
            whole.add(DataElement(elem.tag, "SQ", Sequence(_whole(i) for i in elem.value)))
        else:
            whole.add(_rebuilt(elem))
    return whole


def _rebuilt(elem: DataElement) -> DataElement:
    return DataElement(elem.tag, elem.VR, _plain(elem.value))


def _plain(value: Any) -> Any:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, MultiValue | list):
        return [_plain(v) for v in value]
    return value


def _empty(tag: BaseTag, key: DataElement) -> DataElement:
    # The dictionary VR wins over the one the SCU sent, except where the
    # dictionary is ambiguous ("US or SS") and the SCU's VR is not.
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        vr = str(key.VR)
    if " or " in vr:
        vr = str(key.VR) if " or " not in str(key.VR) else vr.split(" or ")[0]
    return DataElement(tag, vr, Sequence() if vr == "SQ" else None)


def _multi(character_set: str) -> str | list[str]:
    terms = [t.strip() for t in character_set.split("\\")]
    return terms if len(terms) > 1 else terms[0]


def _unencodable(ds: Dataset, codecs: tuple[str, ...]) -> str | None:
    """The first attribute (as "(gggg,eeee)") whose value ``codecs`` can't encode."""
    for elem in ds:
        if elem.VR == "SQ":
            for sub in elem.value:
                found = _unencodable(sub, codecs)
                if found is not None:
                    return found
        elif elem.VR in _TEXT_VRS and not _encodable(elem.value, codecs):
            return f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return None


def _encodable(value: Any, codecs: tuple[str, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, MultiValue | list):
        return all(_encodable(v, codecs) for v in value)
    text = str(value)
    if text.isascii():
        return True  # every DICOM character set holds ASCII
    if len(codecs) == 1 and codecs[0] != "shift_jis":
        try:
            text.encode(codecs[0])
        except UnicodeError:
            return False
        return True
    # With code extensions (ISO 2022) every character may come from a
    # different set, so each one needs some set that holds it.
    return all(_char_encodable(c, codecs) for c in text)


def _char_encodable(char: str, codecs: tuple[str, ...]) -> bool:
    for codec in codecs:
        try:
            encoded = char.encode(codec)
        except UnicodeError:
            continue
        # pydicom encodes ISO 2022 IR 13 as JIS X 0201 only (one byte per
        # character), while Python's shift_jis also takes two-byte kanji.
        if codec == "shift_jis" and len(encoded) > 1:
            continue
        return True
    return False
