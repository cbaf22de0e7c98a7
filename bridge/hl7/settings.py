"""The ``mllp`` configuration section: the HL7 listener, its senders and character sets."""

from __future__ import annotations

import codecs

from pydantic import Field, field_validator

from bridge.section import Port, Section, networks
from bridge.tls import TlsSettings


class MllpSender(Section):
    """One allowed HL7 sender: MSH-3.1 (and MSH-4.1 unless empty), optionally by address."""

    application: str = Field(min_length=1)
    facility: str = ""
    hosts: list[str] = Field(default_factory=list)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: networks(v)))


class MllpAllowSettings(Section):
    # Empty lists allow everyone; a refused message is answered AR (bridge/hl7/access.py).
    hosts: list[str] = Field(default_factory=list)
    senders: list[MllpSender] = Field(default_factory=list)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: networks(v)))


class MllpSettings(Section):
    host: str = "127.0.0.1"
    port: Port = 2575
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    idle_timeout_s: float = Field(default=600.0, gt=0)
    # MSH-18 empty means ASCII in the standard; many senders mean Latin-1.
    default_charset: str = "ascii"
    # Non-standard MSH-18 values seen in the field, mapped to Python codecs.
    charset_aliases: dict[str, str] = Field(default_factory=lambda: {
        "UTF-8": "utf-8", "UTF8": "utf-8", "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
        "LATIN1": "iso8859-1", "LATIN-1": "iso8859-1", "ISO-8859-1": "iso8859-1",
    })
    tls: TlsSettings = TlsSettings()
    allow: MllpAllowSettings = MllpAllowSettings()

    @field_validator("default_charset")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown character set codec {value!r}") from None
        return value
