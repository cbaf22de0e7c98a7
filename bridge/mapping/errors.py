"""The two ways a mapping says no: at load time (the file) and at map time (the message)."""

from __future__ import annotations

from bridge.hl7.ack import echo
from bridge.yamlsrc import SourceError

# HL7 table 0357 (message error condition codes) used by the mapping.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_VERSION_ID = 203
APPLICATION_INTERNAL_ERROR = 207


class MappingError(Exception):
    """A message the mapping rejects; the HL7 side answers it with an AE/AR and an ERR.

    ``text`` is specific and may quote the offending value: it goes back to the
    sender in the ACK. ``log_text`` is the same sentence without values, for
    logs at INFO and above (no patient data there). ``str(exc)`` is ``text``.
    """

    def __init__(self, code: int, log_text: str, *, location: str = "", attribute: str = "",
                 ack_code: str = "AE", value: str | None = None,
                 text: str | None = None) -> None:
        self.code = code
        self.location = location
        self.attribute = attribute
        self.ack_code = ack_code
        self._log_text = log_text
        # The value is quoted cut short (bridge.hl7.ack.echo): a 1 MB value must not
        # travel back whole in ERR-8.
        # ``text``, when given, is the sentence for a RIS operator (ERR-8, MSA-3);
        # ``log_text`` may then say more about the mapping (its source expression).
        said = text if text is not None else log_text
        self.text = f"{said}; got {echo(value)}" if value else said
        super().__init__(self.text)

    @property
    def log_text(self) -> str:
        return self._log_text

    def __repr__(self) -> str:
        return (f"MappingError(code={self.code}, location={self.location!r}, "
                f"attribute={self.attribute!r}, ack_code={self.ack_code!r}, "
                f"log_text={self._log_text!r})")


class MappingLoadError(Exception):
    """One or more mapping files are invalid; every problem is located by file, line and key."""

    def __init__(self, errors: list[SourceError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
