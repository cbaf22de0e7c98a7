"""C-FIND identifiers that are not well-formed data sets, sent over a raw socket, and
the answer cap (issue 10).

pydicom reads a garbled identifier as a shorter one without a word: garbage
became a universal query (every item answered), a truncated element or one
claiming 4 GB answered 0x0000 with no matches. The conformance statement
promises 0xC000 with an Error Comment.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from bridge.worklist.settings import DicomPeer, DicomSettings, WorklistSettings

from . import pdus
from .test_worklist_scp import items

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def encoded(ds: Dataset, implicit_vr: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit_vr, True
    write_dataset(fp, ds)
    return fp.getvalue()


def patient_query() -> bytes:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = "P1"
    ds.AccessionNumber = ""
    return encoded(ds)


def find(port: int, identifier: bytes) -> list[tuple[int, str]]:
    with pdus.established(port) as peer:
        peer.sendall(pdus.c_find_rq(identifier))
        return pdus.responses(peer)


@pytest.mark.parametrize(("name", "identifier", "comment"), [
    ("garbage", bytes(range(7, 107)), "malformed identifier: (0807,0A09) overruns by"),
    ("truncated element", patient_query()[:-1],
     "malformed identifier: (0010,0020) overruns by 1 bytes"),
    ("4 GB element", patient_query()[:-10] + struct.pack("<HHL", 0x0010, 0x0020, 0xFFFFFFF0)
     + b"P1", "malformed identifier: (0010,0020) overruns by 4294967278 bytes"),
    ("trailing bytes", patient_query() + b"\x10\x00\x20",
     "malformed identifier: element header cut off at byte 26"),
])
def test_a_malformed_identifier_is_0xc000_and_the_association_stays(
        new_store, start_scp, item, caplog, name, identifier, comment):
    scp = start_scp(new_store(items(item, 3)))
    with pdus.established(scp.port) as peer:
        peer.sendall(pdus.c_find_rq(identifier))
        ((status, error),) = pdus.responses(peer)
        assert status == 0xC000
        assert error.startswith(comment), error
        # The same association answers a good query afterwards.
        peer.sendall(pdus.c_find_rq(patient_query()))
        assert [s for s, _ in pdus.responses(peer)] == [0xFF00, 0x0000]
    assert "C-FIND from CONSOLE refused (0xC000): malformed identifier" in caplog.text


def test_the_well_formed_query_before_it_answers(new_store, start_scp, item):
    # Control for the test above: the untouched identifier finds its one item.
    scp = start_scp(new_store(items(item, 3)))
    assert [s for s, _ in find(scp.port, patient_query())] == [0xFF00, 0x0000]


def test_a_deflate_bomb_is_0xc000_not_inflated(new_store, start_scp, caplog):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_message_bytes=1 << 20))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = packer.compress(b"\x00" * (256 << 20)) + packer.flush()  # 256 MB in ~250 kB
    with pdus.established(scp.port, contexts=(pdus.MWL_FIND,),
                          syntax=b"1.2.840.10008.1.2.1.99") as peer:
        peer.sendall(pdus.c_find_rq(bomb, context_id=1))
        ((status, error),) = pdus.responses(peer)
    assert status == 0xC000
    assert error == "malformed identifier: inflates to more than 1048576 bytes"


# --- the answer cap -------------------------------------------------------------------

def test_the_default_cap_is_1000_answers(new_store, start_scp, item, findscu, caplog):
    scp = start_scp(new_store(items(item, 1005)))
    result = findscu(scp.port, ["PatientID", "AccessionNumber"])
    assert result.returncode == 0
    assert len(result.answers) == 1000
    # Success after the last answer, as documented (section 3.3).
    assert "Final Find Response (Success)" in result.log
    assert "C-FIND from CONSOLE: answer cut after 1000 item(s) (worklist.max_answers)" \
        in caplog.text


def test_a_known_ae_has_its_own_cap(new_store, start_scp, item, findscu, caplog):
    dicom = DicomSettings(port=0, known_aes={"CONSOLE": DicomPeer(max_answers=3)})
    scp = start_scp(new_store(items(item, 10)), dicom=dicom,
                    worklist=WorklistSettings(max_answers=5))
    result = findscu(scp.port, ["PatientID"])
    assert len(result.answers) == 3 and "Final Find Response (Success)" in result.log
    assert "answer cut after 3 item(s) (dicom.known_aes.<AE>.max_answers)" in caplog.text


def test_a_known_ae_may_have_no_cap(new_store, start_scp, item, findscu):
    dicom = DicomSettings(port=0, known_aes={"CONSOLE": DicomPeer(max_answers=0)})
    scp = start_scp(new_store(items(item, 10)), dicom=dicom,
                    worklist=WorklistSettings(max_answers=5))
    assert len(findscu(scp.port, ["PatientID"]).answers) == 10
