"""What every configuration section shares: the frozen, strict base model and the
field checks more than one package needs (AE titles, networks, character sets).

Ground floor: each package's ``settings.py`` builds on this module, and
``bridge.app.settings`` composes those sections into the one ``Settings``.
Nothing here imports another package of the bridge.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Port = Annotated[int, Field(ge=0, le=65535)]


class Section(BaseModel):
    """A configuration section: unknown keys are errors (a typo must not pass
    silently), and settings never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def ae_title(value: str) -> str:
    if not value or len(value) > 16 or not value.isascii() or "\\" in value:
        raise ValueError("an AE title is 1-16 ASCII characters without backslash")
    if value != value.strip():
        raise ValueError("an AE title has no leading or trailing spaces")
    return value


def networks(values: list[str]) -> list[str]:
    """IP addresses or CIDR networks (host names would need DNS on every connection)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return values


def dicom_charset(value: str) -> str:
    from pydicom.charset import python_encoding  # pydicom is heavy; only when validating

    for term in (t.strip() for t in value.split("\\")):
        if term not in python_encoding:
            raise ValueError(f"unknown Specific Character Set term {term!r}")
    return value


_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # DICOM VR CS: what an SPS status may hold


def sps_status(value: str) -> str:
    if not _CS.match(value):
        raise ValueError("an SPS status is 1-16 characters A-Z, 0-9, _ or space (VR CS)")
    return value
