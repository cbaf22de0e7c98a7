"""The waking association threads (bridge/worklist/reactor.py): every association ends,
timers still fire, and the old polling reactors stay selectable."""

from __future__ import annotations

import threading
import time
from copy import deepcopy
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from bridge.worklist import WorklistSCP
from bridge.worklist.reactor import ContextList, WakingAssociation, WakingDUL
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.worklist import pdus


def settled(check: Any, seconds: float = 10.0) -> bool:
    """Whether ``check()`` becomes true within ``seconds`` (threads end on their own)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def scu() -> AE:
    ae = AE(ae_title="CONSOLE")
    ae.add_requested_context(Verification)
    ae.add_requested_context(ModalityWorklistInformationFind)
    return ae


def served(scp: WorklistSCP) -> list[Association]:
    """The SCP's established associations (a released one may still be ending)."""
    assert scp._server is not None
    return [a for a in scp._server.active_associations if a.is_established]


def test_associations_run_on_the_waking_reactors_and_all_their_threads_end(new_store,
                                                                           start_scp):
    scp = start_scp(new_store([]))
    before = threading.active_count()
    for _ in range(5):
        assoc = scu().associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        (ours,) = served(scp)
        assert type(ours) is WakingAssociation and type(ours.dul) is WakingDUL
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
    assert settled(lambda: scp.open_associations == 0)
    assert settled(lambda: threading.active_count() <= before)


def test_a_peer_abort_ends_the_association(new_store, start_scp):
    scp = start_scp(new_store([]))
    assoc = scu().associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    (ours,) = served(scp)
    assoc.abort()
    assert settled(lambda: ours.is_aborted and not ours.dul.is_alive())
    assert settled(lambda: scp.open_associations == 0)


def test_a_silent_association_still_ends_at_the_network_timeout(new_store, start_scp):
    # The reactors wait for work now: the idle timer must still be looked at.
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, network_timeout_s=1))
    with pdus.established(scp.port) as peer:
        assert pdus.closed_within(peer, 10)
    assert settled(lambda: scp.open_associations == 0)


def test_the_polling_reactors_stay_selectable(new_store):
    scp = WorklistSCP(new_store([]), DicomSettings(port=0), WorklistSettings(),
                      waking_reactors=False)
    scp.start()
    try:
        assoc = scu().associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        (ours,) = served(scp)
        assert type(ours) is Association
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert settled(lambda: scp.open_associations == 0)
    finally:
        scp.stop()


def test_context_copies_are_deep_copies():
    contexts = ContextList([build_context(Verification),
                            build_context(ModalityWorklistInformationFind)])
    for context_id, context in zip((1, 3), contexts, strict=True):
        context.context_id = context_id
    copies = deepcopy(contexts)
    assert [(c.context_id, c.abstract_syntax, c.transfer_syntax) for c in copies] == \
        [(c.context_id, c.abstract_syntax, c.transfer_syntax) for c in contexts]
    copies[1].transfer_syntax = ["1.2.840.10008.1.2.1"]
    copies[0].context_id = 5
    assert contexts[1].transfer_syntax != copies[1].transfer_syntax
    assert contexts[0].context_id == 1
    assert all(c is not o for c, o in zip(copies, contexts, strict=True))
