"""The ``mpps`` configuration section.

Kept beside the code it configures; ``bridge.app.settings.Settings`` holds it.
Documented in docs/mpps-outbound.md and mwl-bridge.example.yaml.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bridge.section import Section, ae_title
from bridge.tls import TlsSettings

# The same names as bridge.mpps.linking.MatchKey (settings import no code they configure).
MatchKey = Literal["study_sps", "accession", "study", "order_numbers"]


def _default_match_keys() -> list[MatchKey]:
    return ["study_sps", "accession"]


Port = Annotated[int, Field(ge=1, le=65535)]


class ForwardTls(TlsSettings):
    """DICOM TLS to one forwarding destination: the bridge is the client.

    The peer is always verified (against ``ca_file``, else the system's trust store,
    and by name unless ``check_hostname`` is off); ``cert_file``/``key_file`` are our
    client certificate for mutual TLS.
    """

    # The name the peer's certificate must carry (and SNI); "" means the host.
    server_hostname: str = ""

    @model_validator(mode="after")
    def _client_side(self) -> ForwardTls:
        if "require_peer_cert" in self.model_fields_set:
            raise ValueError("require_peer_cert is a listener setting; a forwarding "
                             "destination always verifies the peer's certificate (ca_file)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (our client certificate "
                             "for mutual TLS)")
        return self


class ForwardDestination(Section):
    """One MPPS SCP every accepted N-CREATE/N-SET is forwarded to (bridge/mpps/forward.py)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    enabled: bool = True
    ae_title: str  # the peer's (called) AE title
    host: str = "127.0.0.1"
    port: Port
    # Our (calling) AE title; "" means dicom.ae_title.
    calling_ae_title: str = ""
    # TCP connect plus association negotiation; then each N-CREATE/N-SET's response.
    connect_timeout_s: float = Field(default=10.0, gt=0)
    response_timeout_s: float = Field(default=30.0, gt=0)
    # Retry after a network error (refused, timed out, association rejected or
    # aborted): initial, doubling, capped; after max_attempts a dead letter.
    # A failure status from the peer is a dead letter at once.
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=100, ge=1)
    # MPPS instances forwarded side by side (one association each); one instance's
    # requests never overlap and go in the order they were received.
    max_associations: int = Field(default=1, ge=1, le=16)
    # An idle association is released after this long.
    idle_release_s: float = Field(default=30.0, gt=0)
    tls: ForwardTls = ForwardTls()

    _check_aet = field_validator("ae_title")(classmethod(lambda cls, v: ae_title(v)))

    @field_validator("calling_ae_title")
    @classmethod
    def _calling(cls, value: str) -> str:
        return ae_title(value) if value else value

    @model_validator(mode="after")
    def _backoff(self) -> ForwardDestination:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s is below backoff_initial_s")
        return self


class MppsForwardSettings(Section):
    """Forwarding of every accepted MPPS to other MPPS SCPs (docs/mpps-outbound.md,
    "Forwarding MPPS")."""

    # How often the forwarder looks at its queue without being woken (rows re-queued
    # by `mwl-bridge mpps forward retry` from another process are seen then).
    poll_interval_s: float = Field(default=2.0, gt=0)
    destinations: list[ForwardDestination] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, value: list[ForwardDestination]) -> list[ForwardDestination]:
        names = [d.name for d in value]
        if len(set(names)) != len(names):
            raise ValueError("destination names must be unique")
        return value


class MppsSettings(Section):
    """The MPPS SCP on the worklist's AE (bridge/mpps/service.py)."""

    enabled: bool = True
    # How an MPPS finds its worklist items: per Scheduled Step Attributes item, the
    # first key that finds steps wins (bridge/mpps/linking.py).
    match_keys: list[MatchKey] = Field(default_factory=_default_match_keys, min_length=1)
    # An MPPS that matches no worklist item: "emit" stores it and sends status
    # messages built from its own attributes (ORC-16 UNSCHEDULED); "store" only stores.
    unscheduled: Literal["emit", "store"] = "emit"
    # COMPLETED/DISCONTINUED must carry PPS End Date/Time (COMPLETED also a
    # Performed Series Sequence item), as PS3.4 F.7.2 requires.
    final_state_checks: bool = True
    # Forward every accepted N-CREATE/N-SET to these MPPS SCPs (a PACS, a second RIS).
    forward: MppsForwardSettings = MppsForwardSettings()

    @field_validator("match_keys")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each match key at most once")
        return value
