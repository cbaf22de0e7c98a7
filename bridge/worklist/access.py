"""Who may associate, and how each calling AE is served.

``AccessPolicy.refuse_address`` runs first, when the server accepts a TCP
connection and before any byte of it is read: an address that no setting lets
in (``dicom.allowed_hosts``; with ``dicom.require_known_ae``, the ``hosts`` of
the known AEs) is closed there, so a stranger cannot make the SCP read its
A-ASSOCIATE-RQ at all.

``AccessPolicy.check`` runs on every A-ASSOCIATE-RQ (pynetdicom's
EVT_REQUESTED, in the association's thread) before pynetdicom's own
negotiation; it returns the A-ASSOCIATE-RJ to send, or None to go on.
pynetdicom then applies the total limit (``dicom.max_associations``) itself.
An A-ASSOCIATE-RQ whose AE titles are not valid AE titles never gets here:
guard.py rejects it before pynetdicom decodes it.

Rejections (PS3.8 9.3.4; result, source, reason):

=================================  ==============================  ===========================
situation                          A-ASSOCIATE-RJ                  setting
=================================  ==============================  ===========================
peer address not allowed           1 permanent, 1 user, 1 none     dicom.allowed_hosts
                                   (closed at accept already; kept here as a second wall)
calling AE title unknown           1 permanent, 1 user, 3 calling  dicom.require_known_ae
known AE from another address      1 permanent, 1 user, 3 calling  dicom.known_aes.<AE>.hosts
called AE title is not ours        1 permanent, 1 user, 7 called   dicom.require_called_ae
too many associations of this AE   2 transient, 3 provider, 2 lim  max_associations per AE
too many associations in total     2 transient, 3 provider, 2 lim  dicom.max_associations
=================================  ==============================  ===========================

``PeerProfile`` is what a calling AE gets: its answer character set, the
policy for names that set can't hold, whether its AE title stands in for an
empty station key, and which stations, modalities and worklist labels it may
see. Unknown AEs (when allowed at all) get the global defaults.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from bridge.addresses import address_in, networks
from bridge.logsafe import shown
from bridge.worklist.settings import CalledAeView, DicomPeer, DicomSettings

LOGGER = logging.getLogger(__name__)

REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_PROVIDER_PRESENTATION = 0x03
REASON_NONE = 0x01
REASON_CALLING_AE = 0x03
REASON_CALLED_AE = 0x07
REASON_LOCAL_LIMIT = 0x02


@dataclass(frozen=True, slots=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send, and why (for the log: AE titles and address only)."""

    result: int
    source: int
    reason: int
    why: str


@dataclass(frozen=True, slots=True)
class PeerProfile:
    """How one calling AE is served."""

    ae_title: str
    known: bool
    character_set: str
    unencodable: str  # "utf8" or "transliterate"
    station_from_calling_ae: bool = False
    stations: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    worklist_labels: tuple[str, ...] = ()
    max_associations: int = 0  # 0: no per-AE limit
    max_answers: int | None = None  # None: worklist.max_answers; 0: no cap
    # Whether character_set is this AE's own setting (dicom.known_aes.<AE>.character_set).
    # When not, a query that names its (0008,0005) is answered in that set where the
    # item fits it (bridge/worklist/scp.py, docs/conformance-statement.md section 5).
    own_character_set: bool = False


class AccessPolicy:
    """Association admission and per-AE profiles, from ``DicomSettings``."""

    def __init__(self, dicom: DicomSettings) -> None:
        self._dicom = dicom
        self._allowed = networks(dicom.allowed_hosts)
        self._peer_hosts = {ae: networks(p.hosts) for ae, p in dicom.known_aes.items()}
        self._profiles = {ae: self._profile(ae, p) for ae, p in dicom.known_aes.items()}
        # Serialises admission so two simultaneous requests of one AE can't
        # both see room for one more association.
        self._lock = threading.Lock()

    def _profile(self, ae_title: str, peer: DicomPeer | None) -> PeerProfile:
        d = self._dicom
        if peer is None:
            return PeerProfile(ae_title=ae_title, known=False, character_set=d.character_set,
                               unencodable=d.unencodable,
                               max_associations=d.max_associations_per_ae)
        return PeerProfile(
            ae_title=ae_title, known=True,
            character_set=peer.character_set or d.character_set,
            own_character_set=peer.character_set is not None,
            unencodable=peer.unencodable or d.unencodable,
            station_from_calling_ae=peer.station_from_calling_ae,
            stations=tuple(peer.stations), modalities=tuple(peer.modalities),
            worklist_labels=tuple(peer.worklist_labels),
            max_associations=peer.max_associations or d.max_associations_per_ae,
            max_answers=peer.max_answers)

    def profile(self, calling_ae: str) -> PeerProfile:
        found = self._profiles.get(calling_ae.strip())
        return found if found is not None else self._profile(calling_ae.strip(), None)

    def view(self, called_ae: str) -> CalledAeView | None:
        """The worklist view of a called AE title in dicom.called_aes (None: all of it)."""
        if called_ae.strip() == self._dicom.ae_title:
            return None
        return self._dicom.called_aes.get(called_ae.strip())

    @property
    def character_sets(self) -> set[str]:
        """Every answer character set in use (validated at start-up)."""
        return {self._dicom.character_set, *(p.character_set for p in self._profiles.values())}

    def refuse_address(self, address: str) -> str | None:
        """Why a TCP connection from ``address`` is closed at accept, or None to read it.

        Only what no A-ASSOCIATE-RQ could change: the allow-list, and with
        ``require_known_ae`` the known AEs' hosts when every known AE has a
        list (a known AE without one may come from any allowed address).
        """
        if self._allowed and not address_in(address, self._allowed):
            return f"address {address} is not in dicom.allowed_hosts"
        if self._dicom.require_known_ae:
            if not self._profiles:
                return "dicom.require_known_ae is on and dicom.known_aes is empty"
            lists = [self._peer_hosts.get(ae, ()) for ae in self._profiles]
            if all(lists) and not any(address_in(address, hosts) for hosts in lists):
                return (f"address {address} is not in the hosts of any AE of "
                        f"dicom.known_aes (dicom.require_known_ae)")
        return None

    def check(self, calling_ae: str, called_ae: str, address: str,
              active_of_same_ae: int) -> Rejection | None:
        """The rejection for this request, or None to accept it.

        ``active_of_same_ae`` counts the other live associations whose calling
        AE title is ``calling_ae``; callers hold ``lock`` while counting and
        checking, so the count can't go stale in between.
        """
        calling, called = calling_ae.strip(), called_ae.strip()
        d = self._dicom
        if self._allowed and not address_in(address, self._allowed):
            return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_NONE,
                             f"address {address} is not in dicom.allowed_hosts")
        known = calling in self._profiles
        if d.require_known_ae and not known:
            return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE,
                             f"calling AE '{shown(calling)}' is not in dicom.known_aes")
        hosts = self._peer_hosts.get(calling, ())
        if hosts and not address_in(address, hosts):
            return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE,
                             f"calling AE '{shown(calling)}' is not allowed from {address}")
        if d.require_called_ae and called != d.ae_title and called not in d.called_aes:
            also = " nor in dicom.called_aes" if d.called_aes else ""
            return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLED_AE,
                             f"called AE '{shown(called)}' is not '{d.ae_title}'{also}")
        limit = self.profile(calling).max_associations
        if limit and active_of_same_ae >= limit:
            return Rejection(REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION,
                             REASON_LOCAL_LIMIT,
                             f"calling AE '{shown(calling)}' already has {active_of_same_ae} "
                             f"association(s), its limit")
        return None

    @property
    def lock(self) -> threading.Lock:
        return self._lock
