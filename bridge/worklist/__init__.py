"""The Modality Worklist SCP: C-FIND identifiers in, store queries, shaped answers out."""

from bridge.worklist.answer import shape_answer
from bridge.worklist.query import PlannedQuery, QueryError, build_query
from bridge.worklist.scp import DicomService, WorklistSCP

__all__ = [
    "DicomService", "PlannedQuery", "QueryError", "WorklistSCP", "build_query", "shape_answer",
]
