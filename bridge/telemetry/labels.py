"""Bounded label values: a peer must not be able to grow the metrics without end.

Calling AE titles and HL7 message types come from the network. ``LabelCap``
lets through the values it is told about (the configured AEs), plus the first
``extra`` other distinct values it sees; every later newcomer is ``other``.
A value that does not look like what it should (``pattern``) is ``other`` too,
so a label never carries arbitrary bytes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

OTHER = "other"


class LabelCap:
    """Maps raw values to at most ``len(known) + extra + 1`` label values. Thread-safe."""

    def __init__(self, known: Iterable[str] = (), *, extra: int = 16,
                 pattern: str | None = None, empty: str = "none") -> None:
        self._pattern = re.compile(pattern) if pattern else None
        self._known = frozenset(v for v in known if self._valid(v))
        self._extra = extra
        self._seen: set[str] = set()
        self._empty = empty
        self._lock = threading.Lock()

    def _valid(self, value: str) -> bool:
        return self._pattern is None or self._pattern.fullmatch(value) is not None

    def __call__(self, value: str) -> str:
        value = value.strip()
        if not value:
            return self._empty
        if value in self._known:
            return value
        if not self._valid(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._extra:
                self._seen.add(value)
                return value
        return OTHER

    @property
    def values(self) -> frozenset[str]:
        """Every label value handed out besides ``other`` and the empty one."""
        with self._lock:
            return self._known | frozenset(self._seen)
