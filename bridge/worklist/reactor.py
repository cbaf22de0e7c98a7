"""pynetdicom's association threads, woken by work instead of polling every millisecond.

pynetdicom 3.0 runs two threads per association, and both poll: the DUL
reactor (``DULServiceProvider.run_reactor``) sleeps 1 ms whenever a pass found
nothing to do, and the acceptor's reactor (``Association._run_reactor``)
sleeps 1 ms before every pass. Each PDU in and each PDU out waits for the next
pass, so an echo association (A-ASSOCIATE, C-ECHO, A-RELEASE) spent ~5-8 ms
in those sleeps, the most of what DCMTK's wlmscpfs does not spend
(docs/performance.md has the measurements).

Here both reactors run the same passes, but wait between them:
- the DUL in ``select`` on the peer's socket and on a wake-up socket pair,
  written when a primitive is queued to be sent or the DUL is told to stop;
- the association on an Event that the DUL sets after every state machine
  action (a DIMSE message, a release or an abort for the user) and when it ends.
Both still wake at least every ``IDLE_WAIT_S`` to check their timers (ARTIM,
network timeout), as the polling did.

The classes take over pynetdicom's objects in place (``adopt``): pynetdicom
builds them inside its request handler, and copying that construction would
tie us to more of its internals than the two loops below. The upstream fix
each stands for is in docs/performance.md.
"""

from __future__ import annotations

import copy
import logging
import queue
import select
import socket
import ssl
import threading
from typing import TYPE_CHECKING, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler

from bridge.worklist.encoded import TemplateDIMSE

if TYPE_CHECKING:
    from pynetdicom.transport import AssociationSocket

# The reactors' messages go where pynetdicom's own would.
LOGGER = logging.getLogger("pynetdicom.dul")
_ASSOC_LOGGER = logging.getLogger("pynetdicom.association")

# The longest wait without work: the timers' resolution (pynetdicom's own is 1 ms,
# but its timeouts are tens of seconds).
IDLE_WAIT_S = 0.05


def adopt(assoc: Association) -> None:
    """Make a new acceptor ``assoc`` (not started) and its DUL wake on work, and
    its DIMSE provider send plain responses' command sets from templates."""
    assoc.__class__ = WakingAssociation
    cast(WakingAssociation, assoc).work = threading.Event()
    assoc.dimse.__class__ = TemplateDIMSE  # C-ECHO/C-FIND responses' command sets
    assoc.dul.__class__ = WakingDUL
    dul = cast(WakingDUL, assoc.dul)
    dul.wake_r, dul.wake_w = socket.socketpair()
    dul.wake_w.setblocking(False)  # a full pair already holds a wake-up


class WakingDUL(DULServiceProvider):
    """The DUL reactor of pynetdicom 3.0, waiting in ``select`` instead of sleeping."""

    wake_r: socket.socket
    wake_w: socket.socket

    def run(self) -> None:
        # pynetdicom made the thread's target its own run_reactor, bound before adopt().
        self.run_reactor()

    def send_pdu(self, primitive: object) -> None:
        super().send_pdu(primitive)  # type: ignore[arg-type]
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
        return super().stop_dul()

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"\0")
        except OSError:  # closed: the reactor has ended; full: a wake-up is pending
            pass

    def run_reactor(self) -> None:
        """pynetdicom's ``run_reactor`` with ``_wait`` where it sleeps."""
        self._idle_timer.start()
        sock = cast("AssociationSocket", self.socket)
        assoc = cast(WakingAssociation, self.assoc)
        try:
            while True:
                if not assoc._dul_ready.is_set():
                    assoc._dul_ready.set()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:
                    LOGGER.error("Exception in DUL.run(), aborting association")
                    LOGGER.exception(exc)
                    abort_pdu = A_ABORT_RQ()
                    abort_pdu.source = 0x02
                    abort_pdu.reason_diagnostic = 0x00
                    sock.send(abort_pdu.encode())
                    assoc.is_aborted = True
                    assoc.is_established = False
                    assoc._kill = True
                    self._kill_thread = True
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait(sock)
                    continue
                self.state_machine.do_action(event)
                assoc.work.set()
        finally:
            assoc.work.set()  # the association reactor sees that the DUL ended
            self.wake_r.close()
            self.wake_w.close()

    def _wait(self, sock: AssociationSocket) -> None:
        """Until the peer sends, a primitive is queued, the DUL is stopped, or
        IDLE_WAIT_S passes."""
        if self._kill_thread or not self.to_provider_queue.empty():
            return
        raw = sock.socket
        waiting: list[socket.socket] = [self.wake_r]
        if raw is not None and sock._is_connected:
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return  # decrypted bytes that select cannot see
            waiting.append(raw)
        try:
            ready, _, _ = select.select(waiting, [], [], IDLE_WAIT_S)
        except (OSError, ValueError):
            return  # the socket closed meanwhile: the next pass sees it
        if self.wake_r in ready:
            try:
                self.wake_r.recv(4096)
            except OSError:
                pass


class WakingAssociation(Association):
    """An acceptor whose reactor waits for its DUL's work instead of sleeping 1 ms."""

    work: threading.Event

    def kill(self) -> None:
        self.work.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor ``_run_reactor`` with ``work.wait`` where it sleeps."""
        self._is_paused = False
        self.work.set()  # a first pass for what came before the reactor started
        while not self._kill:
            self.work.wait(IDLE_WAIT_S)
            self.work.clear()  # before the checks: work arriving during them is kept

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                self.work.set()  # another message may have come while serving

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _ASSOC_LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                _ASSOC_LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _ASSOC_LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class WakingRequestHandler(RequestHandler):
    """pynetdicom's request handler, making waking associations.

    It also starts the DUL thread itself, beside the association's thread:
    pynetdicom starts it from the association's thread and waits there until it
    runs, one thread start after the other.
    """

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        adopt(assoc)
        return assoc

    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.dul.start()
        assoc._started_dul = True
        assoc.start()


class ContextList(list[PresentationContext]):
    """The server's presentation contexts, copied cheaply for each association.

    pynetdicom gives every association a ``deepcopy`` of them (its own copy is
    changed by the negotiation and by ``prefer_requested_syntaxes``): 0.2 ms of
    a 1 ms association start. A context's only mutable part is its list of
    transfer syntaxes (UIDs are immutable strings), so a shallow copy with its
    own list is the same copy.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list[PresentationContext]:
        copies = []
        for context in self:
            dup = copy.copy(context)
            dup._transfer_syntax = list(context._transfer_syntax)
            copies.append(dup)
        return copies
