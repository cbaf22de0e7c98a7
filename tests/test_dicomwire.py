"""bridge.dicomwire: only well-formed data sets pass, in every transfer syntax."""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from bridge.dicomwire import MAX_DEPTH, MalformedDataSet, check_data_set, inflate

SYNTAXES = [(True, True), (False, True), (False, False)]  # implicit LE, explicit LE, BE


def encode(ds: Dataset, implicit_vr: bool = True, little_endian: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit_vr, little_endian
    write_dataset(fp, ds)
    return fp.getvalue()


def identifier() -> Dataset:
    sps = Dataset()
    sps.ScheduledStationAETitle = "CT01"
    sps.ScheduledProcedureStepStartDate = "20261128"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = ""
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


@pytest.mark.parametrize(("implicit_vr", "little_endian"), SYNTAXES)
def test_a_well_formed_identifier_passes(implicit_vr, little_endian):
    data = encode(identifier(), implicit_vr, little_endian)
    assert check_data_set(data, implicit_vr=implicit_vr, little_endian=little_endian) == data
    assert check_data_set(b"", implicit_vr=implicit_vr, little_endian=little_endian) == b""


def undefined_length_sequence() -> bytes:
    # (0040,0100) SQ of undefined length, one undefined-length item, implicit VR LE.
    inner = encode(_modality())
    return (struct.pack("<HHL", 0x0040, 0x0100, 0xFFFFFFFF)
            + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))


def _modality() -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    return ds


def test_undefined_lengths_with_their_delimiters_pass():
    check_data_set(undefined_length_sequence(), implicit_vr=True, little_endian=True)


@pytest.mark.parametrize(("name", "mangle", "reason"), [
    ("truncated value", lambda d: d[:-3], "overruns by 3 bytes"),
    ("truncated header", lambda d: d + b"\x10\x00", "header cut off"),
    ("4 GB claim", lambda d: d[:4] + b"\xf0\xff\xff\xff" + d[8:],
     r"\(0008,0005\) overruns by 4294967202 bytes"),
    ("garbage", lambda d: bytes(range(7, 107)), r"\(0807,0A09\) overruns"),
    ("trailing bytes", lambda d: d + b"\x01\x02\x03\x04\x05\x06\x07\x08\x09", "overruns"),
])
def test_malformed_implicit_data_sets_are_refused(name, mangle, reason):
    with pytest.raises(MalformedDataSet, match=reason):
        check_data_set(mangle(encode(identifier())), implicit_vr=True, little_endian=True)


def test_an_item_that_overruns_its_sequence_is_refused():
    data = bytearray(encode(identifier()))
    at = data.index(struct.pack("<HH", 0xFFFE, 0xE000))
    data[at + 4:at + 8] = struct.pack("<L", 1000)
    with pytest.raises(MalformedDataSet, match="an item of \\(0040,0100\\) overruns by 972 bytes"):
        check_data_set(bytes(data), implicit_vr=True, little_endian=True)


def test_undelimited_sequences_and_items_are_refused():
    whole = undefined_length_sequence()
    for cut in (8, 16, len(whole) - 8, len(whole) - 16):
        with pytest.raises(MalformedDataSet, match=r"an item without its Item Delimitation"
                                                    r"|element header cut off at byte"):
            check_data_set(whole[:cut], implicit_vr=True, little_endian=True)


def test_explicit_vr_needs_a_real_vr():
    data = bytearray(encode(identifier(), False, True))
    data[4:6] = b"ZZ"
    with pytest.raises(MalformedDataSet, match="no valid VR"):
        check_data_set(bytes(data), implicit_vr=False, little_endian=True)


def test_nesting_is_bounded():
    ds = Dataset()
    inner = ds
    for _ in range(MAX_DEPTH + 1):
        child = Dataset()
        inner.ScheduledProcedureStepSequence = [child]
        inner = child
    with pytest.raises(MalformedDataSet, match="nest over 16 deep"):
        check_data_set(encode(ds), implicit_vr=True, little_endian=True)


def test_deflated_is_inflated_with_a_bound():
    plain = encode(identifier(), False, True)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(plain) + packer.flush()
    assert check_data_set(deflated, implicit_vr=False, little_endian=True, deflated=True,
                          limit=4096) == plain
    bomb_packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = bomb_packer.compress(b"\0" * 50_000_000) + bomb_packer.flush()
    assert len(bomb) < 100_000
    with pytest.raises(MalformedDataSet, match="inflates to more than 1048576 bytes"):
        inflate(bomb, 1 << 20)
    with pytest.raises(MalformedDataSet, match="cannot be inflated"):
        inflate(b"\xff" * 64, 1 << 20)
