"""TLS to the outbound destinations: one client SSLContext per destination, built once.

Built when the sender is made (daemon start) and by ``mwl-bridge check-config``,
so a missing or unreadable certificate, key or CA file stops start-up with the
setting and the file named (``outbound.destinations[0].tls.ca_file: ... is not
a readable file``), as ``mllp.tls`` and ``dicom.tls`` do, instead of failing on
the first status message. Shape errors (a certificate without its key, a
listener-only key) are found earlier, by the config loader, with file and line.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from bridge.outbound.settings import OutboundDestination
from bridge.tls import client_context


def destination_contexts(destinations: Sequence[OutboundDestination]
                         ) -> dict[str, ssl.SSLContext | None]:
    """Each enabled destination's context by name; None for plain MLLP.

    ``destinations`` is the whole configured list (its positions name the
    settings in errors). Raises bridge.tls.TlsConfigError.
    """
    return {d.name: client_context(d.tls, f"outbound.destinations[{i}].tls")
            for i, d in enumerate(destinations) if d.enabled}


def server_name(destination: OutboundDestination) -> str:
    """The name the receiver's certificate must carry: ``tls.server_hostname``, else the host."""
    return destination.tls.server_hostname or destination.host
