"""The IHE ATNA audit trail: who saw and changed which patient's data (docs/audit.md).

    codes.py     the coded values (EventID, EventTypeCode, roles, object types)
    events.py    AuditEvent and one builder per kind of event
    message.py   an event as the DICOM PS3.15 A.5 XML audit message
    syslog.py    RFC 5424 framing; TLS (RFC 5425) and UDP (RFC 5426) transports
    trail.py     AuditTrail: what the domain packages record to (never blocks)
    offline.py   what commands run outside the daemon record (straight to the spool)
    service.py   AuditService: the spool and delivery threads
    metrics.py   its metrics on the daemon's registry
    settings.py  the ``audit`` section
"""

from bridge.audit.events import AuditEvent, Local
from bridge.audit.settings import AuditRepository, AuditSettings
from bridge.audit.trail import NO_AUDIT, AuditTrail

__all__ = ["NO_AUDIT", "AuditEvent", "AuditRepository", "AuditSettings", "AuditTrail", "Local"]
