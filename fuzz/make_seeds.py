"""Write the seed corpora: fuzz/corpus/<target>/seed-* (crash-* files are left alone).

HL7 targets take messages from fixtures/hl7/ (and a few hand-made edge cases);
the DICOM targets take C-FIND identifiers and MPPS data sets built here with
pydicom, encoded as the harness reads them (a selector byte, then the data set).

    python fuzz/make_seeds.py
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from pydicom import Dataset
from pydicom.tag import Tag

from fuzz._common import CORPUS, REPO, encode_dataset

FIXTURES = REPO / "fixtures" / "hl7"
MAX_SEED_BYTES = 64 * 1024

# One of each kind: charsets, line ends, profiles, rejections, lifecycle, ADT, results.
HL7_FIXTURES = (
    "orm-o01-ihe-ct.hl7", "orm-o01-latin1-mr.hl7", "orm-o01-utf8-greek-escapes.hl7",
    "orm-o01-two-groups.hl7", "orm-o01-no-zds-tz.hl7", "omi-o23-three-ipc.hl7",
    "omi-o23-two-orders.hl7", "omi-o23-no-ipc.hl7", "omg-o19-ct.hl7", "omg-o19-no-accession.hl7",
    "orm-noextras-ct.hl7", "orm-noextras-two-procedures.hl7", "orm-noextras-unknown-code.hl7",
    "orm-missing-pid3.hl7", "orm-long-accession.hl7", "orm-bad-birthdate.hl7",
    "orm-cancel-ca.hl7", "adt-a01.hl7", "adt-a08-update.hl7", "adt-a40-merge.hl7",
    "adt-a47-change-id.hl7", "lifecycle-sc-ip.hl7", "lifecycle-xo-reschedule.hl7",
    "lifecycle-oru-r01-final.hl7", "lifecycle-omg-o19-dc.hl7", "check-sex-code.hl7",
    "not-hl7.txt",
)

# Hand-made edge cases for the tokenizer and the charset reader.
MSH = b"MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|20261128094956||ORM^O01|X1|P|2.3.1"
HL7_EDGES = {
    "escapes": MSH + b"\rPID|||P1^^^HOSP||A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\X41C3A9\\"
                     b"\\.br\\\\H\\x\\N\\\\Z1\\\\X0D\\\\.sp2\\\r",
    "odd-delimiters": b"MSH#$%*@#RIS#HOSP###20261128##ORM$O01#X2#P#2.5.1\nPID###P1$$$HOSP\n",
    "truncation-char": b"MSH|^~\\&#|RIS|HOSP|||20261128||ORM^O01^ORM_O01|X3|P|2.7\r",
    "bom-crlf": b"\xef\xbb\xbf" + MSH + b"\r\nPID|||P1\r\n\r\n",
    "lone-escape": MSH + b"\rNTE|1||\\X4\\ \\Xzz\\ \\ trailing\\\r",
}
CHARSET_EDGES = {
    "iso2022-jp": b"MSH|^~\\&|RIS|\x1b$B;3ED\x1b(B|MWL|R|20261128||ORM^O01|J1|P|2.5.1|||||JPN|"
                  b"~ISO IR87\rPID|||P1||\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B\r",
    "iso-ir159": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|J2|P|2.5.1|||||JPN|ISO IR6~ISO IR159\r",
    "utf16-refused": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|U1|P|2.5.1|||||DEU|UNICODE UTF-16\r",
    "alias-cp1252": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|W1|P|2.3.1|||||DEU|WINDOWS-1252\r"
                    b"PID|||P1||M\xfcller\x80\r",
    "gb18030": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|G1|P|2.5|||||CHN|GB 18030-2000\r"
               b"PID|||P1||" + "张^三".encode("gb18030") + b"\r",
    "big5-no-dicom-term": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|B1|P|2.5|||||TWN|BIG-5\r",
    "bad-utf8": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|E1|P|2.5|||||DEU|UNICODE UTF-8\r"
                b"PID|||P1||\xc3\x28\r",
    "unknown": b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|E2|P|2.5|||||DEU|KLINGON\r",
}


def _framed(*payloads: bytes) -> bytes:
    return b"".join(b"\x0b" + p + b"\x1c\r" for p in payloads)


def mllp_seeds() -> dict[str, bytes]:
    ct = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
    adt = (FIXTURES / "adt-a08-update.hl7").read_bytes()
    return {
        # byte 0: max_frame_bytes - 1 (mod 64); byte 1: chunking seed, odd = small head
        "two-frames": bytes([63, 0]) + _framed(b"MSH|a", b"MSH|b"),
        "noise-bom-lf": bytes([40, 2]) + b"\xef\xbb\xbf\n" + _framed(b"MSH|x") + b"\n\n",
        "fs-without-cr": bytes([20, 4]) + b"\x0bMSH|1\x1c\x0bMSH|2\x1c",
        "cut-off-frame": bytes([30, 6]) + b"\x0bMSH|lost" + _framed(b"MSH|kept"),
        "oversize": bytes([7, 1]) + _framed(b"MSH|" + b"A" * 40, b"MSH|ok"),
        "oversize-cut": bytes([9, 3]) + b"\x0b" + b"B" * 30 + _framed(b"C" * 12),
        "fixtures": bytes([63, 8]) + _framed(ct[:60], adt[:60]),
    }


def cfind_seeds() -> dict[str, bytes]:
    def sps(**keys: object) -> Dataset:
        item = Dataset()
        for keyword, value in keys.items():
            setattr(item, keyword, value)
        return item

    def identifier(items: list[Dataset] | None = None, **keys: object) -> Dataset:
        ds = Dataset()
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        if items is not None:
            ds.ScheduledProcedureStepSequence = items
        return ds

    readme = identifier([sps(ScheduledStationAETitle="CT01",
                             ScheduledProcedureStepStartDate="20261128")],
                        PatientName="", PatientID="", AccessionNumber="", StudyInstanceUID="")
    broad = identifier([sps(ScheduledStationAETitle="", Modality="CT",
                            ScheduledProcedureStepStartDate="20261127-20261129",
                            ScheduledProcedureStepStartTime="0800-1200",
                            ScheduledProcedureStepDescription="",
                            ScheduledProcedureStepID="", ScheduledProcedureStepStatus="",
                            ScheduledPerformingPhysicianName="")],
                       PatientName="DOE*", PatientBirthDate="", PatientSex="",
                       RequestedProcedureID="", ReferencedStudySequence=[],
                       RequestedProcedureCodeSequence=[])
    exact = identifier(PatientName="Doe^John", PatientID="PAT10001",
                       IssuerOfPatientID="HOSP", AccessionNumber="ACC20261128001",
                       StudyInstanceUID="1.2.3.4\\1.2.840.113619.2.55.3.604688119.969"
                                        ".1764318615.101")
    groups = identifier(PatientName="Yamada^Taro=山田^太郎", ReferringPhysicianName="*",
                        SpecificCharacterSet="ISO_IR 192")
    jis = identifier(PatientName="Yamada^Taro=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B",
                     SpecificCharacterSet=["", "ISO 2022 IR 87"])
    wildcard = identifier([sps(Modality="C?", ScheduledStationAETitle="*",
                               ScheduledProcedureStepStartTime="10")],
                          PatientName="m?ller*", AccessionNumber="ACC*",
                          InstitutionName="[St*", PatientWeight="70.5", PatientAge="045Y",
                          PatientSize="1.8", AdmissionID="")
    keys = identifier(QueryRetrieveLevel="", PatientBirthDate="19750101-",
                      PatientBirthTime="-1200", RequestingPhysician="Smith",
                      ReferencedPatientSequence=[Dataset()],
                      OtherPatientIDsSequence=[sps(PatientID="X", IssuerOfPatientID="")])
    keys.add_new(Tag(0x0011, 0x0010), "LO", "ACME 1.0")
    keys.add_new(Tag(0x0011, 0x1001), "LO", "private")
    keys.add_new(Tag(0x0009, 0x0000), "UL", 0)
    bad = identifier(QueryRetrieveLevel="PATIENT", PatientName="")
    seeds = {
        "readme-findscu": encode_dataset(0, readme),
        "broad-explicit": encode_dataset(1 + 3 * 1, broad),
        "exact-uid-list-big-endian": encode_dataset(2 + 9 * 1, exact),
        "name-groups-utf8": encode_dataset(0 + 9 * 2, groups),
        "iso2022-ir87": encode_dataset(1 + 3 * 2, jis),
        "wildcards-numbers": encode_dataset(0 + 3 * 1 + 9 * 3, wildcard),
        "other-keys-private": encode_dataset(1, keys),
        "query-retrieve-level": encode_dataset(0, bad),
    }
    # Non-ASCII without a Specific Character Set: UTF-8, then Latin-1 bytes.
    for name, text in (("undeclared-utf8", "Müller^Jürgen"), ("undeclared-latin1", None)):
        ds = identifier(PatientName="PLACEHOLDERPLACE", AccessionNumber="")
        data = encode_dataset(0, ds)
        raw = "Müller^Jürgen".encode("utf-8" if text else "latin-1")
        data = data.replace(b"PLACEHOLDERPLACE", raw.ljust(16, b" ")[:16])
        seeds[name] = data
    return seeds


def mpps_seeds() -> dict[str, bytes]:
    from fuzz.mpps_validate import in_progress

    create = in_progress()
    completed = Dataset()
    completed.PerformedProcedureStepStatus = "COMPLETED"
    completed.PerformedProcedureStepEndDate = "20261128"
    completed.PerformedProcedureStepEndTime = "094512.123"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5"
    series.ReferencedImageSequence = []
    series.PerformingPhysicianName = "Müller^Hans"
    completed.PerformedSeriesSequence = [series]
    discontinued = Dataset()
    discontinued.PerformedProcedureStepStatus = "DISCONTINUED"
    discontinued.PerformedProcedureStepEndDate = "20261128"
    discontinued.PerformedProcedureStepEndTime = "0945"
    discontinued.PerformedProcedureStepDiscontinuationReasonCodeSequence = []
    whole = in_progress()  # the whole data set again, one value changed
    whole.PerformedProcedureStepStatus = "COMPLETED"
    whole.PatientID = "OTHER"
    bad = in_progress()
    bad.PerformedProcedureStepStartDate = "2026-11-28"
    bad.PerformedStationAETitle = "A\\B"
    bad.SpecificCharacterSet = "ISO_IR 100"
    return {
        "create-implicit": encode_dataset(0, create),
        "create-explicit": encode_dataset(1, create),
        "create-big-endian": encode_dataset(2, create),
        "set-completed": encode_dataset(1, completed),
        "set-discontinued": encode_dataset(0, discontinued),
        "set-whole-changed": encode_dataset(0, whole),
        "create-bad-values": encode_dataset(1, bad),
    }


def _fixtures(names: tuple[str, ...]) -> dict[str, bytes]:
    return {Path(n).stem: (FIXTURES / n).read_bytes() for n in names}


TARGETS: dict[str, Callable[[], dict[str, bytes]]] = {
    "mllp_framer": mllp_seeds,
    "er7_tokenizer": lambda: {**_fixtures(HL7_FIXTURES[:18]), **HL7_EDGES},
    "msh18_charset": lambda: {**_fixtures(("orm-o01-ihe-ct.hl7", "orm-o01-latin1-mr.hl7",
                                           "orm-o01-utf8-greek-escapes.hl7", "omg-o19-ct.hl7",
                                           "not-hl7.txt")),
                              **CHARSET_EDGES},
    "mapping_engine": lambda: _fixtures(HL7_FIXTURES),
    "cfind_query": cfind_seeds,
    "mpps_validate": mpps_seeds,
}


def write_seeds() -> None:
    warnings.simplefilter("ignore")  # pydicom on the deliberately invalid values
    for target, make in TARGETS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        seeds = make()
        for name, data in seeds.items():
            if len(data) > MAX_SEED_BYTES:
                raise ValueError(f"{target}/{name} is {len(data)} bytes")
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    write_seeds()
