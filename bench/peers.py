"""The file-based worklist servers sites migrate from, run beside our daemon.

DCMTK ``wlmscpfs`` (forks a process per association, re-reads every ``.wl`` file
per query) and Orthanc's worklist plugin (Debian's ``orthanc`` package:
/usr/sbin/Orthanc with /usr/share/orthanc/plugins/libModalityWorklists.so),
configured as ``../shared/bench-peers/run.sh`` configures them: ``--keep-char-set``
for wlmscpfs, ``"DefaultEncoding": "Utf8"`` and worklist queries from any AE for
Orthanc, both bound to loopback by that folder's ``loopback_bind.c`` shim (neither
has a DICOM bind-address option). bench/cfind.py writes the same items it loads
into our store as ``.wl`` files (``write_wl``), so all servers answer the same data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from bench.common import DCMTK, REPO, dcmtk_env, free_port

PEER_AE = "MWLSCP"
PEERS = ("wlmscpfs", "orthanc")
PEERS_DIR = REPO.parent / "shared" / "bench-peers"
ORTHANC_BIN = Path("/usr/sbin/Orthanc")
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
MWL_FIND = "1.2.840.10008.5.1.4.31"


def wl_folder(root: Path) -> Path:
    """Where the .wl files go: wlmscpfs wants <data-files-path>/<AE>/ with a lockfile;
    Orthanc's plugin reads the same folder."""
    return root / "wl" / PEER_AE


def write_wl(folder: Path, i: int, ds: Dataset) -> None:
    """One stored item as a .wl file (the store's form has no charset: UTF-8 here)."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    out.update(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MWL_FIND)
    meta.MediaStorageSOPInstanceUID = UID(f"1.2.826.0.1.3680043.8.498.7.{i}")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    out.save_as(folder / f"wl_{i:08d}.wl", enforce_file_format=True)


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if not (PEERS_DIR / "loopback_bind.c").is_file() or not shutil.which("cc"):
        return f"no {PEERS_DIR / 'loopback_bind.c'} or no cc (the loopback shim)"
    if peer == "wlmscpfs" and not (DCMTK / "wlmscpfs").is_file():
        return "no /usr/bin/wlmscpfs (apt-get install dcmtk)"
    if peer == "orthanc":
        if not ORTHANC_BIN.is_file():
            return f"no {ORTHANC_BIN} (apt-get install orthanc)"
        if not ORTHANC_PLUGIN.is_file():
            return f"no {ORTHANC_PLUGIN}: Debian's orthanc package lacks the worklist plugin"
    return None


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (wlmscpfs' forked children), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            continue
    return out


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class RssSampler:
    """Peak RSS of a process tree, sampled every 20 ms while a series runs: the
    only way to see a forking server's per-association children."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, tree_rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self.peak = tree_rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ae_title: str = PEER_AE

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: forked children too
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _shim(work: Path) -> Path:
    shim = work / "loopback_bind.so"
    if not shim.exists():
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                        str(PEERS_DIR / "loopback_bind.c"), "-ldl"], check=True,
                       capture_output=True)
    return shim


def start(peer: str, root: Path) -> Peer:
    """Start ``peer`` on the .wl files under ``root`` (``wl_folder``), wait until it
    accepts connections."""
    port = free_port()
    env = {**dcmtk_env(), "LD_PRELOAD": str(_shim(root))}
    log = (root / f"{peer}.log").open("wb")
    if peer == "wlmscpfs":
        (wl_folder(root) / "lockfile").touch()
        cmd = [str(DCMTK / "wlmscpfs"), "--keep-char-set", "--data-files-path",
               str(wl_folder(root).parent), str(port)]
    else:
        work = root / "orthanc"
        (work / "db").mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "MWL-BENCH", "StorageDirectory": str(work / "db"),
            "IndexDirectory": str(work / "db"), "Plugins": [str(ORTHANC_PLUGIN)],
            "HttpServerEnabled": True, "HttpPort": free_port(), "RemoteAccessAllowed": False,
            "DicomServerEnabled": True, "DicomAet": PEER_AE, "DicomPort": port,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True,
            "DicomThreadsCount": 4, "DefaultEncoding": "Utf8",
            "Worklists": {"Enable": True, "Database": str(wl_folder(root)),
                          "FilterIssuerAet": False, "LimitAnswers": 0},
        }
        (work / "orthanc.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        cmd = [str(ORTHANC_BIN), str(work / "orthanc.json")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    log.close()
    p = Peer(peer, proc, port)
    try:
        _wait_echo(p, root / f"{peer}.log")
    except BaseException:
        p.stop()
        raise
    return p


def _wait_echo(p: Peer, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"{p.name} exited at start: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", p.port), timeout=1):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        done = subprocess.run([str(DCMTK / "echoscu"), "-aec", p.ae_title, "-to", "5",
                               "127.0.0.1", str(p.port)], capture_output=True, env=dcmtk_env())
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{p.name} did not answer C-ECHO within {timeout:.0f} s")
