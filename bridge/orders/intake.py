"""From a parsed message to its Work (or its Rejection), before anything is stored.

Everything here is pure (no store, no loop): routing by message type, the
mapping, the order control table, the patient format checks, and the size of
each item to be stored (orders.max_item_bytes). Ingest runs it in a worker
process (bridge.orders.workers), or on the event loop for small frames and in a
worker thread for large ones. What needs the
store (replays, duplicates, merges, known patients) happens in the write job
(bridge.orders.apply).

    ADT^A01/A04/A05/A08/A28/A31  -> PatientUpdateWork   (orders.adt.update_events)
    ADT^A40                      -> MergeWork           (orders.adt.merge_events)
    ADT^A47                      -> MergeWork, change   (orders.adt.change_id_events)
    ORU^R01                      -> ResultWork          (orders.results.enabled)
    anything else                -> the mappings: OrderWork, or their AR 200/201/203
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pydicom import Dataset

from bridge.hl7 import Message, Segment
from bridge.logsafe import shown
from bridge.mapping import AttributeReader, MappingError, MappingSet
from bridge.mapping.engine import Mapping
from bridge.mapping.paths import Chain, PathSyntax
from bridge.mapping.scope import Context, message_contexts
from bridge.orders import errors
from bridge.orders.apply import (
    MergePair,
    MergeWork,
    OrderStep,
    OrderWork,
    PatientUpdateWork,
    ResultGroup,
    ResultWork,
    Work,
)
from bridge.orders.checks import check_patient
from bridge.orders.errors import Rejection
from bridge.orders.lifecycle import ControlTable
from bridge.orders.patients import (
    choose_patient_mapping,
    patient_key,
    patient_keywords,
    patient_reader,
)
from bridge.orders.settings import OrdersSettings
from bridge.store.items import dumps_item

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    work: Work | Rejection
    mapping: str = ""  # the mapping that routed or read the message


def from_mapping_error(exc: MappingError) -> Rejection:
    return Rejection(exc.ack_code, exc.code, exc.location, exc.text, log_text=exc.log_text)


class Intake:
    """Decides what each message is; holds only what it compiled from the settings."""

    def __init__(self, mappings: Callable[[], MappingSet], settings: OrdersSettings,
                 today: Callable[[], date] = date.today) -> None:
        self._mappings = mappings
        self.settings = settings
        self._today = today
        self._table = ControlTable(settings.order_control)
        syntax = PathSyntax({})
        r = settings.results
        self._accession: Chain | None = syntax.chain(r.accession)[0] if r.accession else None
        self._rpid: Chain | None = (syntax.chain(r.requested_procedure_id)[0]
                                    if r.requested_procedure_id else None)
        # Readers are compiled per mapping object, so a hot reload gets fresh ones.
        self._readers: dict[int, tuple[Mapping, AttributeReader]] = {}

    def _reader(self, mapping: Mapping) -> AttributeReader:
        cached = self._readers.get(id(mapping))
        if cached is None or cached[0] is not mapping:
            if len(self._readers) > 64:
                self._readers.clear()
            cached = (mapping, patient_reader(mapping))
            self._readers[id(mapping)] = cached
        return cached[1]

    def prepare(self, message: Message) -> Prepared:
        code, event = message.msh.value(9, 1), message.msh.value(9, 2)
        adt = self.settings.adt
        try:
            if code == "ADT" and event in adt.update_events:
                return self._patient_update(message)
            if code == "ADT" and (event in adt.merge_events or event in adt.change_id_events):
                return self._merge(message, event, change_id=event in adt.change_id_events)
            if code == "ORU" and event == "R01" and self.settings.results.enabled:
                return Prepared(self._results(message))
            return self._order(message)
        except Rejection as rejection:
            return Prepared(rejection)

    # --- orders ---------------------------------------------------------------------

    def _order(self, message: Message) -> Prepared:
        mapping_set = self._mappings()
        try:
            too_many = self._too_many_groups(mapping_set.route(message), message)
            if too_many is not None:
                return too_many
            result = mapping_set.map(message)
        except MappingError as exc:
            if exc.__cause__ is not None:  # an engine fault: keep the traceback for a bug report
                log.error("mapping fault on message %s", shown(message.control_id),
                          exc_info=exc.__cause__)
            return Prepared(from_mapping_error(exc))
        if not result.steps:
            return Prepared(Rejection("AE", errors.SEGMENT_SEQUENCE_ERROR, "",
                                      f"mapping {result.mapping} made no worklist item"),
                            result.mapping)
        most = self.settings.max_items_per_message
        if len(result.steps) > most:
            first_over = result.steps[most].order_control
            return Prepared(Rejection(
                "AE", errors.SEGMENT_SEQUENCE_ERROR, f"ORC^{first_over.orc_seq}",
                f"the message makes {len(result.steps)} worklist items; at most {most} are "
                "accepted from one message (orders.max_items_per_message)"), result.mapping)
        steps = []
        for mapped in result.steps:
            self._check_size(mapped.item, mapped.locate)
            control = mapped.order_control
            steps.append(OrderStep(mapped, self._table.lookup(control), control))
        check_patient(result.steps[0].item, message.first("PID"), self.settings.patients,
                      today=self._today())
        return Prepared(OrderWork(steps, self.settings, patient_keywords(result.attributes)),
                        result.mapping)

    def _too_many_groups(self, mapping: Mapping, message: Message) -> Prepared | None:
        """More groups than orders.max_items_per_message, counted before the mapping
        spends its time on each (490 groups: a third of a second); each group makes
        at least one item. The count of items after mapping stays the authority."""
        most = self.settings.max_items_per_message
        if not mapping.group_by:
            return None
        unit = mapping.group_by[-1]
        count = sum(1 for segment in message.segments if segment.name == unit)
        if count <= most:
            return None
        return Prepared(Rejection(
            "AE", errors.SEGMENT_SEQUENCE_ERROR, f"{unit}^{most + 1}",
            f"the message has {count} {unit} groups, each making a worklist item; at most "
            f"{most} are accepted from one message (orders.max_items_per_message)"),
            mapping.name)

    def _check_size(self, item: Dataset, locate: Callable[[str], str]) -> None:
        """Reject an item whose stored form would exceed orders.max_item_bytes.

        Checked here, before the write job, so that the store's single writer
        never spends its time (and every other sender's commit) on a huge item.
        """
        limit = self.settings.max_item_bytes
        size = len(dumps_item(item).encode("utf-8"))
        if size <= limit:
            return
        # Only on the way out: which attribute made it big, so the sender can fix it.
        keyword, biggest = "", 0
        for element in item:
            part = Dataset()
            part.add(element)
            n = len(dumps_item(part).encode("utf-8"))
            if n > biggest:
                keyword, biggest = element.keyword or str(element.tag), n
        location = locate(keyword) if keyword else ""
        parts = location.split("^")  # an ERL: segment^sequence^field^...
        where = f" ({parts[0]}-{parts[2]})" if len(parts) >= 3 else ""
        text = (f"the worklist item would be {size} bytes stored, more than the "
                f"{limit} accepted (orders.max_item_bytes); its largest attribute is "
                f"{keyword}{where}, {biggest} bytes")
        raise Rejection("AE", errors.VALUE_TOO_LONG, location, text)

    # --- ADT ------------------------------------------------------------------------

    def _patient_reader(self) -> AttributeReader:
        try:
            mapping = choose_patient_mapping(self._mappings(), self.settings.adt.patient_mapping)
        except LookupError as exc:
            raise Rejection("AR", errors.INTERNAL_ERROR, "", str(exc)) from None
        return self._reader(mapping)

    def _read_patient(self, reader: AttributeReader, ctx: Context, pid: Segment | None
                      ) -> Dataset:
        try:
            patient = reader.read(ctx)
        except MappingError as exc:
            raise from_mapping_error(exc) from None
        check_patient(patient, pid, self.settings.patients, today=self._today())
        return patient

    def _patient_update(self, message: Message) -> Prepared:
        reader = self._patient_reader()
        whole, _ = message_contexts(message)
        patient = self._read_patient(reader, whole, message.first("PID"))
        self._check_size(patient, lambda keyword: "")
        return Prepared(PatientUpdateWork(patient, reader.keywords, self.settings),
                        reader.mapping)

    def _merge(self, message: Message, event: str, *, change_id: bool) -> Prepared:
        reader = self._patient_reader()
        _, groups = message_contexts(message, ["PID"])
        if not groups:
            raise Rejection("AE", errors.REQUIRED_FIELD_MISSING, "PID^1^3^1^1",
                            f"ADT^{event} has no PID segment")
        pairs = []
        for ctx in groups:
            pid = ctx.scope["PID"][0]
            patient = self._read_patient(reader, ctx, pid.segment)
            mrgs = ctx.scope.get("MRG")
            mrg = mrgs[0] if mrgs else None
            mrg_seq = mrg.seq if mrg is not None else pid.seq
            prior = _prior_id(mrg.segment if mrg is not None else None, patient_key(patient)[1])
            if not prior[0]:
                raise Rejection("AE", errors.REQUIRED_FIELD_MISSING, f"MRG^{mrg_seq}^1^1^1",
                                f"ADT^{event} needs MRG-1 (the prior patient identifier)")
            pairs.append(MergePair(patient, prior, pid.seq, mrg_seq))
        return Prepared(MergeWork(pairs, reader.keywords, self.settings, change_id=change_id,
                                  event=event), reader.mapping)

    # --- ORU ------------------------------------------------------------------------

    def _results(self, message: Message) -> ResultWork:
        _, groups = message_contexts(message, ["OBR"])
        if not groups:
            raise Rejection("AE", errors.SEGMENT_SEQUENCE_ERROR, "OBR^1",
                            "ORU^R01 has no OBR segment")
        out = []
        for ctx in groups:
            obr = ctx.scope["OBR"][0]
            accession, where = _first(self._accession, ctx)
            rpid, _ = _first(self._rpid, ctx)
            out.append(ResultGroup(status=obr.segment.value(25).strip().upper(),
                                   accession=accession, requested_procedure_id=rpid,
                                   accession_location=where or f"OBR^{obr.seq}^18"))
        return ResultWork(out, self.settings)


def _first(chain: Chain | None, ctx: Context) -> tuple[str, str]:
    if chain is None:
        return "", ""
    hit = chain.first_hit(ctx, None, False)
    return (hit.text(), hit.location()) if hit is not None else ("", "")


def _prior_id(mrg: Segment | None, issuer: str) -> tuple[str, str]:
    """MRG-1: the repetition with the survivor's issuer if there is one, else the first."""
    if mrg is None:
        return "", ""
    reps = [r for r in mrg.field(1) if r and r[0] and r[0][0]]
    if not reps:
        return "", ""

    def comp(rep: tuple[tuple[str, ...], ...], n: int) -> str:
        return rep[n - 1][0] if len(rep) >= n and rep[n - 1] else ""

    chosen = next((r for r in reps if comp(r, 4) == issuer), reps[0])
    return comp(chosen, 1), comp(chosen, 4)
