"""Patient-level attributes: read from a PID with a mapping's own rules, applied to items.

ADT messages carry no order, so no mapping routes them. Their PID is read with
the patient rules of an order mapping (``orders.adt.patient_mapping``, by
default the first mapping, through Mapping.reader): a site that picks its
Patient ID from the HOSP repetition of PID-3, or reorders names, gets the same
values from ADT as from its orders, without a second mapping to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import Dataset
from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag

from bridge.mapping import AttributeReader, MappingSet
from bridge.mapping.engine import Mapping
from bridge.store.names import normalise_name

# The DICOM Patient Identification / Demographic attributes a worklist item
# carries for its patient. Visit and order attributes (admission, medical
# alerts, pregnancy, weight and size, which orders take from OBX) are not here:
# an ADT update must not blank what only orders carry.
PATIENT_KEYWORDS = (
    "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence", "PatientName", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "EthnicGroup", "PatientComments", "PatientReligiousPreference", "PatientSpeciesDescription",
    "PatientBreedDescription", "ResponsiblePerson", "OtherPatientNames",
)

_TAGS: dict[str, BaseTag] = {k: Tag(keyword_dict[k]) for k in PATIENT_KEYWORDS}


def patient_keywords(attributes: Iterable[str]) -> tuple[str, ...]:
    """The patient attributes among a mapping's (MappingResult.attributes), in its order."""
    return tuple(k for k in attributes if k in _TAGS)


def choose_patient_mapping(mappings: MappingSet, name: str) -> Mapping:
    """The named mapping, or the first one that maps PatientID."""
    for mapping in mappings.mappings:
        if name and mapping.name == name:
            return mapping
        if not name and "PatientID" in mapping.attributes:
            return mapping
    if name:
        raise LookupError(f"orders.adt.patient_mapping names {name!r}, which is not loaded")
    raise LookupError("no loaded mapping maps PatientID, so ADT messages cannot be read")


def patient_reader(mapping: Mapping) -> AttributeReader:
    """The patient rules of one mapping, to apply to any message context."""
    return mapping.reader(PATIENT_KEYWORDS)


def patient_part(item: Dataset, keywords: Iterable[str] = PATIENT_KEYWORDS) -> Dataset:
    """The patient-level attributes of a worklist item (elements shared, not copied)."""
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    for keyword in keywords:
        tag = _TAGS[keyword]
        if tag in item:
            elements[tag] = item[tag]
    return Dataset(elements)


def with_patient(item: Dataset, patient: Dataset, keywords: Iterable[str]) -> Dataset:
    """A copy of ``item`` whose ``keywords`` come from ``patient`` (absent there: removed)."""
    elements = dict(item.items())
    for keyword in keywords:
        tag = _TAGS[keyword]
        if tag in patient:
            elements[tag] = patient[tag]
        else:
            elements.pop(tag, None)
    return Dataset(elements)


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def patient_key(ds: Dataset) -> tuple[str, str]:
    """(Patient ID, Issuer of Patient ID): the identity the store keys patients by."""
    return text(ds, "PatientID"), text(ds, "IssuerOfPatientID")


def family_name(ds: Dataset) -> str:
    return text(ds, "PatientName").split("^", 1)[0].strip()


def same_name(a: str, b: str) -> bool:
    """Names compared as consoles match them: case and accents folded, trailing ^ ignored."""
    return normalise_name(a).rstrip("^ ") == normalise_name(b).rstrip("^ ")
