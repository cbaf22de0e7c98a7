"""The ``audit`` section: the IHE ATNA audit trail (docs/audit.md).

Off by default. ``enabled: true`` with no repository keeps the local copy only
(``mwl-bridge audit list``); each repository gets every event too, over syslog.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bridge.section import Port, Section
from bridge.tls import TlsSettings


class RepositoryTls(TlsSettings):
    """TLS to one Audit Record Repository (RFC 5425): the bridge is the client; the
    repository is always verified (``ca_file``, else the system's trust store)."""

    server_hostname: str = ""  # the name its certificate must carry; "" means the host

    @model_validator(mode="after")
    def _client_side(self) -> RepositoryTls:
        if "require_peer_cert" in self.model_fields_set:
            raise ValueError("require_peer_cert is a listener setting; the repository's "
                             "certificate is always verified (ca_file)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (our client certificate)")
        return self


class AuditRepository(Section):
    """One Audit Record Repository: a syslog receiver."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)
    host: str = "127.0.0.1"
    port: Port = 6514
    # tls: RFC 5425 (octet-counted frames over TLS; what IHE ATNA requires);
    # udp: RFC 5426 (one datagram per event; no delivery confirmation at all).
    transport: Literal["tls", "udp"] = "tls"
    tls: RepositoryTls = RepositoryTls()
    connect_timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _tls_on_for_tls(self) -> AuditRepository:
        if self.transport == "tls" and not self.tls.enabled:
            raise ValueError("transport tls needs tls.enabled: true (and tls.ca_file)")
        return self


class AuditSettings(Section):
    enabled: bool = False
    # AuditSourceIdentification: this daemon's AuditSourceID (also the syslog
    # APP-NAME's neighbour HOSTNAME is the machine's) and the site's enterprise ID.
    source_id: str = Field(default="MWLBRIDGE", min_length=1, max_length=64)
    enterprise_site_id: str = ""
    repositories: list[AuditRepository] = Field(default_factory=list)
    # Events waiting in memory for the spool writer; beyond it an event is dropped
    # (counted, and a Security Alert follows): clinical traffic never waits for audit.
    queue_size: int = Field(default=10000, ge=10)
    # The local copy (and the spool) keep events this long; undelivered ones too.
    retention_days: int = Field(default=90, ge=1)
    # Undelivered events per repository beyond this are given up, oldest first
    # (counted, and a Security Alert follows).
    max_pending: int = Field(default=1_000_000, ge=100)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    batch: int = Field(default=200, ge=1, le=5000)

    @model_validator(mode="after")
    def _unique_names(self) -> AuditSettings:
        names = [r.name for r in self.repositories]
        if len(names) != len(set(names)):
            raise ValueError("audit.repositories: names must be unique")
        return self
