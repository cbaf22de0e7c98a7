"""The shape of an outbound profile file, in pydantic (see docs/mpps-outbound.md).

An outbound profile is the inbound mapping turned around: its keys are HL7
field paths in the same syntax as inbound mapping files (bridge.mapping.paths),
and its values say which DICOM attribute of the stored order (``order.``) or
of the MPPS (``mpps.``), or which variable (``$status``), fills them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)


def _scalar(value: Any) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a word or a number (quote words like yes/no/on/off)")
    return str(value)


def _word_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int | float) and not isinstance(k, bool) else k: v
                for k, v in value.items()}
    return value


Scalar = Annotated[str, PlainValidator(_scalar)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
SegmentId = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{2}$")]
Conversion = Literal["XPN", "XCN", "TS", "CE", "DA", "TM"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class FieldSpec(_Strict):
    """One HL7 position's value: a source (from, const or concat), then the steps in
    this order: map, as, default; then required."""

    from_: str | None = Field(default=None, alias="from",
                              description="order.Keyword | mpps.Keyword | $variable, "
                                          "' | ' between fallbacks")
    const: Scalar | None = None
    concat: list[Any] | None = None
    separator: str = ""
    map: Annotated[dict[str, Scalar | None], BeforeValidator(_word_keys)] | None = None
    as_: Conversion | None = Field(default=None, alias="as")
    default: Scalar | None = None
    required: bool = False
    when: str | None = Field(default=None, description="a source that must have a value")
    unless: str | None = Field(default=None, description="a source that must have none")

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [k for k, v in (("from", self.from_), ("const", self.const),
                                ("concat", self.concat)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one source: from, const or concat"
                             + (f" (found {', '.join(given)})" if given else ""))
        return self


class SegmentSpec(_Strict):
    segment: SegmentId
    when: str | None = Field(default=None, description="write the segment only when this "
                                                       "source has a value")
    unless: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class ProfileSpec(_Strict):
    name: Name
    description: str = ""
    message_type: str = Field(pattern=r"^[A-Z0-9]{3}\^[A-Z0-9]{3}(\^[A-Z0-9_]+)?$",
                              description="MSH-9, e.g. ORM^O01 or OMI^O23^OMI_O23")
    version: str = Field(pattern=r"^2\.\d(\.\d)?$", description="MSH-12, e.g. 2.3.1")
    vars: Annotated[dict[str, Scalar | None], BeforeValidator(_word_keys)] = Field(
        default_factory=dict)
    segments: list[SegmentSpec] = Field(min_length=1)

    @field_validator("segments")
    @classmethod
    def _msh_first(cls, value: list[SegmentSpec]) -> list[SegmentSpec]:
        if value and value[0].segment != "MSH":
            raise ValueError("the first segment is MSH")
        return value
