"""Helpers shared by the mapping tests (fixtures, ad-hoc messages, small mappings)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from bridge.hl7.message import Message, parse_message
from bridge.mapping import MappingSet, load_mappings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "hl7"
MAPPINGS = ROOT / "mappings"
DEFAULT_MAPPING = MAPPINGS / "ihe-swf-orm-v231.yaml"

# MSH-18 -> codec, for the fixtures only (decoding proper belongs to bridge.hl7).
_CODECS = {"": "ascii", "ASCII": "ascii", "8859/1": "iso8859-1", "UNICODE UTF-8": "utf-8"}


def decode_fixture(raw: bytes) -> str:
    first = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r", 1)[0]
    fields = first.split(b"|")
    charset = fields[17].decode("ascii") if len(fields) > 17 else ""
    return raw.decode(_CODECS[charset])


def read_fixture(name: str) -> Message:
    return parse_message(decode_fixture((FIXTURES / name).read_bytes()))


def er7(*segments: str) -> Message:
    """A message from segment strings (CR-joined)."""
    return parse_message("\r".join(segments))


MSH = "MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RAD|20261128083015||ORM^O01|CTRL1|P|2.3.1"


# A minimal valid mapping body; tests add attributes with the {extra} slot.
MINIMAL = """
name: {name}
match:
  message_type: ORM^O01
group_by: ORC
attributes:
  PatientID: {{from: PID-3.1, required: true}}
  AccessionNumber: OBR-18
  RequestedProcedureID: OBR-19 | OBR-18
{extra}
  ScheduledProcedureStepSequence:
    - ScheduledProcedureStepID: OBR-20 | OBR-18
      Modality: OBR-24
"""


def minimal(extra: str = "", name: str = "test") -> str:
    """The minimal mapping with extra top-level attribute lines (indented two spaces)."""
    lines = textwrap.dedent(extra).strip("\n").splitlines()
    return MINIMAL.format(name=name, extra="\n".join("  " + ln for ln in lines))


def load_text(write: Callable[..., Path], text: str, station: str = "UNASSIGNED") -> MappingSet:
    return load_mappings([write(text)], default_station_aet=station)


# An order the minimal mapping takes.
ORDER_SEGMENTS = (
    MSH,
    "PID|1||PAT1^^^HOSP^MR||DOE^JOHN",
    "ORC|NW|PLC1|FIL1",
    "OBR|1|PLC1|FIL1|CT1^Head CT^L||||||||||||||ACC1|RP1|SPS1||||CT",
)
