"""The Modality Worklist SCP: C-FIND identifiers in, store queries, shaped answers out."""

from bridge.worklist.answer import shape_answer
from bridge.worklist.query import PlannedQuery, QueryError, build_query
from bridge.worklist.scp import WorklistSCP

__all__ = ["PlannedQuery", "QueryError", "WorklistSCP", "build_query", "shape_answer"]
