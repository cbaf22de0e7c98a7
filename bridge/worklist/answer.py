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
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from bridge.worklist.charset import TEXT_VRS, encodable, python_codecs, transliterate
from bridge.worklist.query import SPECIFIC_CHARACTER_SET, KeyUse, key_use

__all__ = ["FALLBACK_CHARACTER_SET", "python_codecs", "shape_answer"]

LOGGER = logging.getLogger(__name__)

# The one set that encodes every Unicode string; used when the configured one can't.
FALLBACK_CHARACTER_SET = "ISO_IR 192"
UNENCODABLE_POLICIES = ("utf8", "transliterate")


def shape_answer(item: Dataset, identifier: Dataset, character_set: str,
                 unencodable: str = "utf8") -> Dataset:
    """The answer to ``identifier`` from ``item``, in ``character_set``.

    pydicom would silently write ``?`` for a value the set cannot encode, so
    such values are found first and handled by the ``unencodable`` policy:
    "utf8" answers this item in ISO_IR 192, "transliterate" replaces only the
    characters the set lacks with ASCII look-alikes. Either way a warning
    names the attribute and the policy, never the value.
    """
    if unencodable not in UNENCODABLE_POLICIES:
        raise ValueError(f"unknown unencodable policy {unencodable!r}")
    codecs = python_codecs(character_set)
    answer = _shape(item, identifier)
    offending = _unencodable(answer, codecs)
    if offending is not None:
        if unencodable == "transliterate":
            LOGGER.warning("a value of %s cannot be encoded in %s; transliterated to ASCII "
                           "where needed (unencodable: transliterate)", offending, character_set)
            _transliterate(answer, codecs)
        else:
            LOGGER.warning("a value of %s cannot be encoded in %s; answering that item in %s "
                           "(unencodable: utf8)", offending, character_set,
                           FALLBACK_CHARACTER_SET)
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
            items = [_shape(i, template) if template is not None else _expanded(tag, i)
                     for i in stored.value]
            shaped.add(DataElement(tag, "SQ", Sequence(items)))
        else:
            shaped.add(_rebuilt(stored))
    return shaped


def _template(key: DataElement) -> Dataset | None:
    """The sub-keys a sequence key asks for; None means the whole items."""
    if key.VR != "SQ" or not key.value or len(key.value[0]) == 0:
        return None
    items: Sequence = key.value
    return items[0]


# What an empty sequence key (no item, or one empty item) returns, as DCMTK's wlmscpfs
# does (PS3.4 C.2.2.2.6: every attribute of the sequence's item is then asked for):
# these attributes, empty where the item has no value, and every other attribute the
# stored item has. Sequences not listed here return their stored items whole.
_CODE_ITEM = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")
_REFERENCE_ITEM = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID")
EXPANDED_SEQUENCES: dict[str, tuple[str, ...]] = {
    "ScheduledProcedureStepSequence": (
        "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime", "Modality", "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepDescription", "ScheduledStationName",
        "ScheduledProcedureStepLocation", "PreMedication", "ScheduledProcedureStepID",
        "RequestedContrastAgent", "CommentsOnTheScheduledProcedureStep",
        "ScheduledProcedureStepStatus", "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime", "ScheduledProtocolCodeSequence"),
    "ScheduledProtocolCodeSequence": _CODE_ITEM,
    "RequestedProcedureCodeSequence": _CODE_ITEM,
    "ReferencedStudySequence": _REFERENCE_ITEM,
    "ReferencedPatientSequence": _REFERENCE_ITEM,
}
_EXPANDED_TAGS = {Tag(keyword): names for keyword, names in EXPANDED_SEQUENCES.items()}


def _expanded(tag: BaseTag, item: Dataset) -> Dataset:
    """A stored sequence item for an empty sequence key (see EXPANDED_SEQUENCES)."""
    names = _EXPANDED_TAGS.get(tag)
    if names is None:
        return _whole(item)
    template = Dataset()
    for name in names:
        sub = Tag(name)
        vr = str(dictionary_VR(sub))
        template.add(DataElement(sub, vr, Sequence() if vr == "SQ" else None))
    for elem in item:
        if elem.tag not in template:
            template.add(DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None))
    return _shape(item, template)


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
        elif elem.VR in TEXT_VRS and not all(encodable(t, codecs) for t in _texts(elem.value)):
            return f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return None


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _transliterate(ds: Dataset, codecs: tuple[str, ...]) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for sub in elem.value:
                _transliterate(sub, codecs)
        elif elem.VR in TEXT_VRS and elem.value is not None:
            if isinstance(elem.value, MultiValue | list):
                elem.value = [transliterate(t, codecs) for t in _texts(elem.value)]
            else:
                elem.value = transliterate(str(elem.value), codecs)
