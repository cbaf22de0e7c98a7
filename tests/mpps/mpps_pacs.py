"""A test PACS: a real pynetdicom MPPS SCP that records every N-CREATE/N-SET it gets
(the bytes as received and their transfer syntax), answers a chosen status, and can
be stopped and started again on the same port."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from pynetdicom.status import code_to_category

MPPS = ModalityPerformedProcedureStep


@dataclass(frozen=True)
class Got:
    operation: str  # N-CREATE or N-SET
    uid: str
    calling_ae: str
    raw: bytes
    transfer_syntax: str

    @property
    def ds(self) -> Dataset:
        from pydicom.uid import UID

        ts = UID(self.transfer_syntax)
        return decode(BytesIO(self.raw), ts.is_implicit_VR, ts.is_little_endian,
                      ts.is_deflated)


# (operation, uid) -> (status, error comment)
Answer = Callable[[str, str], tuple[int, str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PacsScp:
    ae_title: str = "PACS"
    port: int = field(default_factory=free_port)
    answer: Answer = lambda op, uid: (0x0000, "")
    received: list[Got] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None  # DICOM TLS
    _server: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(MPPS)
        ae.require_called_aet = True
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, ssl_context=self.ssl_context,
            evt_handlers=[(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server = None

    def operations(self, uid: str) -> list[str]:
        with self._lock:
            return [g.operation for g in self.received if g.uid == uid]

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def _handle(self, event: evt.Event, operation: str, uid: str, encoded: BytesIO
                ) -> tuple[Dataset, Dataset | None]:
        status, comment = self.answer(operation, uid)
        with self._lock:
            self.received.append(Got(operation, uid, str(event.assoc.requestor.ae_title),
                                     encoded.getvalue(), str(event.context.transfer_syntax)))
        reply = Dataset()
        reply.Status = status
        if comment:
            reply.ErrorComment = comment
        ok = code_to_category(status) in ("Success", "Warning")
        return reply, (Dataset() if ok else None)

    def _on_create(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        req = event.request
        return self._handle(event, "N-CREATE", str(req.AffectedSOPInstanceUID),
                            req.AttributeList)

    def _on_set(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        req = event.request
        return self._handle(event, "N-SET", str(req.RequestedSOPInstanceUID),
                            req.ModificationList)
