"""HL7 v2 order -> DICOM Modality Worklist records, driven by declarative mapping files.

    mappings = load_mappings([Path("mappings")], default_station_aet="UNASSIGNED")
    result = mappings.map(message)      # bridge.hl7.message.Message
    result.mapping, result.steps        # routed mapping name, one Dataset per SPS

``map`` is pure (no I/O) and raises MappingError for a message the mapping
rejects; ``load_mappings`` raises MappingLoadError listing every problem with
file, line and key. The file format is described in docs/mapping.md.
"""

from bridge.mapping.engine import MappingResult, MappingSet
from bridge.mapping.errors import MappingError, MappingLoadError
from bridge.mapping.loader import load_mappings

__all__ = ["MappingError", "MappingLoadError", "MappingResult", "MappingSet", "load_mappings"]
