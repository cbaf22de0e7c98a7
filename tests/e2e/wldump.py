"""Worklist files made as sites make them for wlmscpfs and Orthanc: a ``dump2dcm``
text turned into a DICOM file by DCMTK (tests/e2e/test_import.py, tests/orders/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

DUMP2DCM = Path("/usr/bin/dump2dcm")

WL_DUMP = """\
# A worklist item as DCMTK's wlistdb examples write it
(0008,0005) CS [{charset}]
(0008,0050) SH [{accession}]
(0008,0090) PN [HOUSE^GREGORY^^DR]
(0010,0010) PN [{name}]
(0010,0020) LO [{patient_id}]
(0010,0021) LO [HOSP]
(0010,0030) DA [19700101]
(0010,0040) CS [F]
(0010,1030) DS [61.5]
(0020,000d) UI [1.2.826.0.1.3680043.8.498.91.{n}]
(0032,1060) LO [MR BRAIN]
(0032,1064) SQ
  (fffe,e000) na
    (0008,0100) SH [MRBRAIN]
    (0008,0102) SH [99ORD]
    (0008,0104) LO [MR BRAIN]
  (fffe,e00d) na
(fffe,e0dd) na
(0040,0100) SQ
  (fffe,e000) na
    (0008,0060) CS [MR]
    (0040,0001) AE [{station}]
    (0040,0002) DA [{date}]
    (0040,0003) TM [1015]
    (0040,0006) PN [GREY^MEREDITH]
    (0040,0007) LO [MR BRAIN WITH CONTRAST]
    (0040,0009) SH [SPS{n}]
    (0040,0010) SH [MR Suite 1]
    (0040,0011) SH [RAD-MR-1]
    (0040,0020) CS [{status}]
  (fffe,e00d) na
(fffe,e0dd) na
(0040,1001) SH [RP{n}]
(0040,1003) SH [ROUTINE]
"""


def wl_dump(n: int, *, name: str = "", charset: str = "ISO_IR 192", station: str = "MR01",
            date: str = "20261201", status: str = "SCHEDULED", patient_id: str = "",
            accession: str = "") -> str:
    return WL_DUMP.format(n=n, name=name or f"WL^PATIENT{n}", charset=charset,
                          station=station, date=date, status=status,
                          patient_id=patient_id or f"WLP{n:04d}",
                          accession=accession or f"WLACC{n:04d}")


def dump2dcm(dump: str, out: Path, *options: str) -> Path:
    """``dump2dcm [options] dump out``; the dump text is written beside ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".dump")
    src.write_bytes(dump.encode("utf-8"))
    res = subprocess.run([str(DUMP2DCM), *options, str(src), str(out)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    src.unlink()
    return out
