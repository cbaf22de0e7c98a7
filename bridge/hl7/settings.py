"""The ``mllp`` configuration section: the HL7 listener, its senders and character sets."""

from __future__ import annotations

import codecs

from pydantic import Field, field_validator, model_validator

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
    # A connection that completes no frame for this long is closed; bytes that
    # are not a frame (noise, a trickle) do not keep it open.
    idle_timeout_s: float = Field(default=600.0, gt=0)
    # A frame must arrive whole within this many seconds of its first byte: a
    # sender trickling one byte at a time can't hold a buffer for ever.
    frame_timeout_s: float = Field(default=60.0, gt=0)
    # Connections open at once, in all and from one IP address; more are closed
    # at accept, before TLS and before anything is read.
    max_connections: int = Field(default=128, ge=1)
    max_connections_per_host: int = Field(default=32, ge=1)
    # Bytes held at once for frames still arriving or being answered, over all
    # connections: what a crowd of unfinished 4 MB frames could otherwise cost.
    max_buffered_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # The most structure one message may have; more is answered AE with an ERR
    # naming the limit and where (docs/hl7-interface.md, "Limits").
    max_segments: int = Field(default=2000, ge=10)
    max_fields: int = Field(default=256, ge=64)  # per segment (OBR and PV1 have 50 or more)
    max_repetitions: int = Field(default=100, ge=1)  # per field
    max_components: int = Field(default=100, ge=30)  # per repetition; sub-components too
    # MSH-18 empty means ASCII in the standard; many senders mean Latin-1.
    default_charset: str = "ascii"
    # Non-standard MSH-18 values seen in the field, mapped to Python codecs.
    charset_aliases: dict[str, str] = Field(default_factory=lambda: {
        "UTF-8": "utf-8", "UTF8": "utf-8", "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
        "LATIN1": "iso8859-1", "LATIN-1": "iso8859-1", "ISO-8859-1": "iso8859-1",
    })
    # Senders (MSH-3.1, compared case-insensitively) whose ACKs carry ERR-1 (ELD)
    # and ERR-2..8 whatever their MSH-12; every other sender gets the ERR of its
    # own version (docs/hl7-interface.md, section 6). "*" means every sender.
    ack_err_both: list[str] = Field(default_factory=list)
    # Senders (MSH-3.1, case-insensitive; "*" every sender) whose MSH-15/MSH-16 are
    # honoured (enhanced acknowledgement mode: an accept ACK CA/CE/CR, then the
    # application ACK as MSH-16 asks). Others get the original-mode ACK whatever
    # MSH-15/16 say, as most RIS that send "AL|NE" expect (docs/hl7-interface.md, 6).
    enhanced_ack: list[str] = Field(default_factory=list)
    tls: TlsSettings = TlsSettings()
    allow: MllpAllowSettings = MllpAllowSettings()

    @model_validator(mode="after")
    def _budget_holds_a_frame(self) -> MllpSettings:
        if self.max_buffered_bytes < self.max_frame_bytes:
            raise ValueError(f"max_buffered_bytes ({self.max_buffered_bytes}) must be at "
                             f"least max_frame_bytes ({self.max_frame_bytes}), or no frame "
                             "of the largest size could ever be received")
        if self.max_connections_per_host > self.max_connections:
            raise ValueError("max_connections_per_host must not exceed max_connections")
        return self

    @field_validator("default_charset")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown character set codec {value!r}") from None
        return value
