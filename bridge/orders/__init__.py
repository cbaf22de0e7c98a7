"""Order intake: what an accepted HL7 message does to the worklist."""

from bridge.orders.ingest import Ingest

__all__ = ["Ingest"]
