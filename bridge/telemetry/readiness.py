"""Readiness: may traffic be sent to this daemon now?

The application layer states the facts as callables (the store answers a
query, the MLLP listener and the DICOM SCP are listening, a mapping set is
loaded); ``Readiness.check`` asks each one. A check that raises is failed,
with the exception's type as its detail (never its message, which may quote
data). Liveness (/healthz) asks nothing: the process answers, that is all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    """One fact: ``probe`` returns True when it holds (False or an exception: not ready)."""

    name: str
    probe: Callable[[], bool]
    what: str = ""  # shown in the details, e.g. "store reachable"


class Readiness:
    def __init__(self, checks: Sequence[Check]) -> None:
        self.checks = tuple(checks)

    def check(self) -> tuple[bool, dict[str, object]]:
        """(every check passed, {name: {"ok": bool, "detail": str}}).

        Blocking (the store check queries the store): call it off the event loop.
        """
        details: dict[str, object] = {}
        ok = True
        for c in self.checks:
            try:
                passed = bool(c.probe())
                detail = c.what if passed else f"not {c.what}" if c.what else "failed"
            except Exception as exc:  # noqa: BLE001 - a failing probe is a failed check
                passed, detail = False, f"{type(exc).__name__}"
            details[c.name] = {"ok": passed, "detail": detail}
            ok = ok and passed
        return ok, details

    def results(self) -> dict[str, bool]:
        """Each check's result only (for the mwl_bridge_ready metric)."""
        _, details = self.check()
        return {name: bool(d["ok"]) for name, d in details.items() if isinstance(d, dict)}
