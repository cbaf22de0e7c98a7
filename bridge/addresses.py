"""IP allow-lists shared by the DICOM and MLLP listeners.

Entries are IP addresses or CIDR networks (validated in bridge/section.py). Host
names are not accepted: resolving them on every connection would put DNS
on the admission path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def address_in(address: str, allowed: tuple[Network, ...]) -> bool:
    """Whether ``address`` (IPv4, IPv6 or IPv4-mapped IPv6) lies in one of ``allowed``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allowed)
