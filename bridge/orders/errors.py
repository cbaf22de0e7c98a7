"""How the order side says no: a Rejection carries the ACK code and one ERR.

``text`` goes back to the sender in ERR-8 and may quote the offending value;
``log_text`` is the same sentence without patient data, for logs at INFO and
above. The table of every rejection, with its code and location, is in
docs/orders.md.
"""

from __future__ import annotations

from bridge.hl7 import ErrorDetail

# HL7 table 0357 codes used by the order side.
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
VALUE_TOO_LONG = 104
UNSUPPORTED_EVENT_CODE = 201
UNKNOWN_KEY = 204
DUPLICATE_KEY = 205
INTERNAL_ERROR = 207


class Rejection(Exception):
    """A message the order side refuses; answered with ``ack_code`` and one ERR."""

    def __init__(self, ack_code: str, code: int, location: str, text: str, *,
                 log_text: str | None = None) -> None:
        self.ack_code = ack_code
        self.code = code
        self.location = location
        self.text = text
        self.log_text = log_text if log_text is not None else text
        super().__init__(text)

    def __reduce__(self) -> tuple[type[Rejection], tuple[str, int, str, str], dict[str, str]]:
        # Exceptions pickle their args; a worker process sends this one back whole.
        return (type(self), (self.ack_code, self.code, self.location, self.text),
                {"log_text": self.log_text})

    @property
    def error(self) -> ErrorDetail:
        return ErrorDetail(code=self.code, location=self.location, text=self.text)

    def __repr__(self) -> str:
        return (f"Rejection({self.ack_code}, {self.code}, {self.location!r}, "
                f"{self.log_text!r})")
