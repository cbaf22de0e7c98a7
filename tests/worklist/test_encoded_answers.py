"""Answers from pre-encoded elements (bridge/worklist/encoded.py) are byte for byte
the answers pynetdicom encodes from shape_answer's Dataset.

In-process on every fixture item, query shape, character set and transfer syntax;
then on the wire, the same queries to two SCPs on one store, one of them on the
old path (``encoded_answers=False``), the identifiers compared as received.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_ECHO_RSP, C_FIND_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from bridge.store.items import StoredItem, dumps_item
from bridge.store.sqlite import SqliteStore
from bridge.worklist import WorklistSCP
from bridge.worklist.answer import shape_answer
from bridge.worklist.encoded import AnswerCache, EncodedAnswer, answer_shape, command_set
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.e2e.test_worklist_matrix import MATRIX, RETURN
from tests.e2e.test_worklist_matrix import dataset as matrix_items
from tests.worklist.test_worklist_answer import query as answer_query
from tests.worklist.test_worklist_answer import stored_item

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

CHARACTER_SETS = ["ISO_IR 192", "ISO_IR 100", "", "\\ISO 2022 IR 87", "ISO_IR 144",
                  "ISO 2022 IR 6\\ISO 2022 IR 100"]
SYNTAXES = [(True, True), (False, True), (False, False)]  # implicit LE, explicit LE, BE


def identifier_from_keys(keys: list[str]) -> Dataset:
    """A findscu ``-k`` list (``A=v``, ``Seq[0].B=v``) as an identifier."""
    identifier = Dataset()
    for key in keys:
        path, _, value = key.partition("=")
        target = identifier
        found = re.fullmatch(r"(\w+)\[0\]\.(\w+)", path)
        if found is not None:
            seq, path = found.groups()
            if seq not in target:
                setattr(target, seq, [Dataset()])
            target = target[seq].value[0]
        tag = tag_for_keyword(path)
        assert tag is not None, path
        vr = str(dictionary_VR(tag))
        target.add(DataElement(tag, vr, Sequence() if vr == "SQ" else value))
    return identifier


def _answer_queries() -> list[Dataset]:
    code = Dataset()
    code.CodeValue = ""
    with_code_keys = answer_query("PatientName", sps=["Modality"])
    with_code_keys.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [code]
    whole = answer_query("PatientName", "AccessionNumber")
    whole.ScheduledProcedureStepSequence = []
    one_empty = answer_query("PatientID")
    one_empty.ScheduledProcedureStepSequence = [Dataset()]
    unknown = answer_query("PatientName", "PatientWeight", "OtherPatientIDsSequence",
                           "InstitutionName", "ReferencedStudySequence")
    unknown.add(DataElement(0x00091010, "LO", ""))  # private: neither matched nor returned
    unknown.add(DataElement(0x00280010, "US", None))
    return [
        answer_query("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
                     sps=["ScheduledStationAETitle", "Modality",
                          "ScheduledProcedureStepStartDate",
                          "ScheduledProcedureStepDescription",
                          "ScheduledProtocolCodeSequence"]),
        with_code_keys, whole, one_empty, unknown,
        *(identifier_from_keys([*RETURN, *keys]) for _, keys, _ in MATRIX),
    ]


def _items() -> list[Dataset]:
    return [stored_item(), stored_item("山田^太郎=やまだ^たろう"), stored_item("Łukasz^Żółw"),
            stored_item("Петров^Иван"), *matrix_items()[:12]]


QUERIES = _answer_queries()
ITEMS = [dumps_item(i) for i in _items()]


def old_bytes(text: str, identifier: Dataset, character_set: str, policy: str,
              syntax: tuple[bool, bool]) -> bytes:
    answer = shape_answer(StoredItem(text).dataset, identifier, character_set, policy)
    encoded = encode(answer, *syntax)
    assert encoded
    return encoded


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["implicit", "explicit", "big-endian"])
@pytest.mark.parametrize("policy", ["utf8", "transliterate"])
@pytest.mark.parametrize("character_set", CHARACTER_SETS)
def test_encoded_answers_equal_the_datasets_pynetdicom_encodes(character_set, policy, syntax):
    cache = AnswerCache()
    encoded = 0
    for identifier in QUERIES:
        shape = answer_shape(identifier)
        expected = [old_bytes(text, identifier, character_set, policy, syntax)
                    for text in ITEMS]
        for _ in range(2):  # the second round is answered from the cache
            for text, want in zip(ITEMS, expected, strict=True):
                got = cache.answer(StoredItem(text), identifier, shape, character_set, policy,
                                   *syntax)
                if isinstance(got, EncodedAnswer):
                    encoded += 1
                    assert got.data == want
                else:  # an item the set can't hold: shape_answer's own Dataset
                    assert encode(got, *syntax) == want
    # Most answers come from the cache's bytes, not from the fallback.
    assert encoded > len(QUERIES) * len(ITEMS)


def test_an_unencodable_item_keeps_its_policy_and_warning(caplog):
    text = dumps_item(stored_item("Łukasz^Żółw"))
    identifier = QUERIES[0]
    cache = AnswerCache()
    with caplog.at_level(logging.WARNING, logger="bridge.worklist.answer"):
        got = cache.answer(StoredItem(text), identifier, answer_shape(identifier),
                           "ISO_IR 100", "utf8", True, True)
    assert isinstance(got, Dataset)
    assert got.SpecificCharacterSet == "ISO_IR 192"
    assert "(0010,0010)" in caplog.text and "Łukasz" not in caplog.text
    got = cache.answer(StoredItem(text), identifier, answer_shape(identifier),
                       "ISO_IR 100", "transliterate", True, True)
    assert isinstance(got, Dataset)
    assert str(got.PatientName) == "Lukasz^Zólw"  # ó is in Latin-1, Ł and ż are not


def test_a_changed_item_is_not_answered_from_the_old_bytes():
    identifier = answer_query("PatientName")
    shape = answer_shape(identifier)
    cache = AnswerCache()
    before = cache.answer(StoredItem(dumps_item(stored_item("Old^Name"))), identifier, shape,
                          "ISO_IR 192", "utf8", True, True)
    after = cache.answer(StoredItem(dumps_item(stored_item("New^Name"))), identifier, shape,
                         "ISO_IR 192", "utf8", True, True)
    assert isinstance(before, EncodedAnswer) and isinstance(after, EncodedAnswer)
    assert b"Old^Name" in before.data and b"New^Name" in after.data


def test_the_cache_keeps_at_most_its_capacity():
    cache = AnswerCache(capacity=3)
    identifier = answer_query("PatientName")
    for n in range(10):
        cache.answer(StoredItem(dumps_item(stored_item(f"N{n}^X"))), identifier,
                     answer_shape(identifier), "ISO_IR 192", "utf8", True, True)
    assert len(cache) == 3


# --- on the wire: both paths through a real SCP ---

@pytest.fixture(scope="module")
def two_scps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    tmp: Path = tmp_path_factory.mktemp("encoded")
    store = SqliteStore(tmp / "store.sqlite3")
    store.migrate()
    store.upsert_steps([*_items()[:4], *matrix_items()])
    # The second is the SCP before issue 16: pynetdicom encodes every response.
    scps = [WorklistSCP(store, DicomSettings(port=0), WorklistSettings(max_answers=50),
                        encoded_answers=flag, waking_reactors=flag) for flag in (True, False)]
    for scp in scps:
        scp.start()
    yield scps[0].port, scps[1].port
    for scp in scps:
        scp.stop()
    store.close()


def wire_identifiers(port: int, identifier: Dataset, explicit: bool, max_pdu: int
                     ) -> list[tuple[int, bytes, bytes]]:
    """(status, command set bytes, identifier bytes) of every C-FIND response, as
    received; then a C-ECHO's."""
    received: list[tuple[int, bytes, bytes]] = []

    def on_recv(event: evt.Event) -> None:
        msg = event.message
        if msg.command_set.CommandField in (0x8020, 0x8030):
            data = msg.data_set.getvalue() if msg.data_set is not None else b""
            received.append((int(msg.command_set.Status), msg.encoded_command_set.getvalue(),
                             data))

    ae = AE(ae_title="CONSOLE")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(ModalityWorklistInformationFind,
                             ["1.2.840.10008.1.2.1"] if explicit else ["1.2.840.10008.1.2"])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBRIDGE",
                         evt_handlers=[(evt.EVT_DIMSE_RECV, on_recv)])
    assert assoc.is_established
    try:
        statuses = [int(s.Status) for s, _ in
                    assoc.send_c_find(identifier, ModalityWorklistInformationFind)]
        statuses.append(int(assoc.send_c_echo().Status))
    finally:
        assoc.release()
    assert statuses[-2:] == [0x0000, 0x0000]
    assert [s for s, _, _ in received] == statuses
    return received


@pytest.mark.parametrize(("explicit", "max_pdu"), [(False, 16382), (True, 0), (True, 300)],
                         ids=["implicit", "explicit-unlimited-pdu", "explicit-fragmented"])
def test_both_paths_send_the_same_bytes(two_scps, explicit, max_pdu):
    encoded_port, dataset_port = two_scps
    charset_query = identifier_from_keys([*RETURN, "ScheduledProcedureStepSequence[0]."
                                                   "Modality=CT"])
    charset_query.SpecificCharacterSet = "ISO_IR 100"  # some names need the utf8 fallback
    answered = 0
    for identifier in [*QUERIES[:5], charset_query,
                       *(identifier_from_keys([*RETURN, *keys]) for _, keys, _ in MATRIX)]:
        got = wire_identifiers(encoded_port, identifier, explicit, max_pdu)
        expected = wire_identifiers(dataset_port, identifier, explicit, max_pdu)
        assert got == expected
        answered += len(got) - 2
    assert answered > 50


@pytest.mark.parametrize("status", [0x0000, 0xFF00, 0xFF01, 0xFE00])
@pytest.mark.parametrize("message_id", [1, 255, 256, 65535])
def test_templated_command_sets_equal_pynetdicoms(status, message_id):
    for kind in (C_FIND, C_ECHO):
        for has_data in ((True, False) if kind is C_FIND else (False,)):
            rsp = kind()
            rsp.MessageID = message_id  # as pynetdicom's providers set it
            rsp.MessageIDBeingRespondedTo = message_id
            rsp.AffectedSOPClassUID = (ModalityWorklistInformationFind if kind is C_FIND
                                       else Verification)
            rsp.Status = status
            if has_data:
                rsp.Identifier = BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00")
            msg = C_FIND_RSP() if kind is C_FIND else C_ECHO_RSP()
            msg.primitive_to_message(rsp)
            assert command_set(rsp, has_data) == encode(msg.command_set, True, True)
