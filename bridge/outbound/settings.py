"""The ``outbound`` configuration section: status message destinations.

Kept beside the code it configures; ``bridge.app.settings.Settings`` holds it as
``outbound``. Documented in docs/mpps-outbound.md and mwl-bridge.example.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bridge.section import Section
from bridge.tls import TlsSettings

Port = Annotated[int, Field(ge=1, le=65535)]
MESSAGE_TYPES = ("ORM^O01", "OMG^O19", "OMI^O23", "ORU^R01")
# ORC-5 values: IP, CM, DC from MPPS and idle rules; CA, HD, SC from the operator
# console's cancel, hold and release (docs/console.md).
Event = Literal["IP", "CM", "DC", "CA", "HD", "SC"]


def _all_events() -> list[Event]:
    return ["IP", "CM", "DC", "CA", "HD", "SC"]


class DestinationTls(TlsSettings):
    """TLS to one destination: the bridge is the client (bridge/outbound/tls.py).

    The receiver is always verified (against ``ca_file``, else the system's trust
    store, and by name unless ``check_hostname`` is off); ``cert_file``/``key_file``
    are our client certificate for mutual TLS. The handshake may take
    ``handshake_timeout_s`` on top of the destination's ``connect_timeout_s``.
    """

    # The name the receiver's certificate must carry (and SNI); "" means the host.
    server_hostname: str = ""

    @model_validator(mode="after")
    def _client_side(self) -> DestinationTls:
        if "require_peer_cert" in self.model_fields_set:
            raise ValueError("require_peer_cert is a listener setting; a destination always "
                             "verifies the receiver's certificate (ca_file)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (our client certificate "
                             "for mutual TLS)")
        return self


class OutboundDestination(Section):
    """One MLLP receiver of status messages (usually the RIS)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port
    # The shipped profile for this message type is used, unless `profile` names another.
    message_type: Literal["ORM^O01", "OMG^O19", "OMI^O23", "ORU^R01"] = "ORM^O01"
    profile: str = Field(default="", description="an outbound profile name; overrides "
                                                 "message_type's shipped profile")
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    # MSH-18, HL7 table 0211; the message is encoded in it. "" means ASCII.
    charset: str = "UNICODE UTF-8"
    events: list[Event] = Field(default_factory=_all_events, min_length=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    ack_timeout_s: float = Field(default=30.0, gt=0)
    # Retry after a timeout or a lost connection: initial, doubling, capped.
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    # Orders sent side by side (one connection each); one order's messages never overlap.
    max_connections: int = Field(default=2, ge=1, le=64)
    # An idle connection is closed after this long (many receivers drop idle ones anyway).
    idle_close_s: float = Field(default=60.0, gt=0)
    # MLLP over TLS to this receiver (docs/mpps-outbound.md, "TLS").
    tls: DestinationTls = DestinationTls()

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        from bridge.hl7.charset import CharsetError, codec_for

        try:
            codec_for(value, default="ascii", aliases={})
        except CharsetError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _backoff(self) -> OutboundDestination:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s is below backoff_initial_s")
        return self


class OutboundSettings(Section):
    # Folders or files of outbound profiles (every *.yaml directly inside, in name order).
    profiles: list[Path] = Field(default_factory=lambda: [Path("mappings/outbound")])
    sending_application: str = "MWLBRIDGE"  # MSH-3
    sending_facility: str = "RADIOLOGY"  # MSH-4
    processing_id: Literal["P", "D", "T"] = "P"  # MSH-11
    # How often the sender looks at the outbox without being woken (messages
    # re-queued by `mwl-bridge outbox retry` from another process are seen then).
    poll_interval_s: float = Field(default=2.0, gt=0)
    destinations: list[OutboundDestination] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, value: list[OutboundDestination]) -> list[OutboundDestination]:
        names = [d.name for d in value]
        if len(set(names)) != len(names):
            raise ValueError("destination names must be unique")
        return value
